//! Refresh tokens: 32 random bytes, base64url, known to the server only by their SHA-256.

use std::fmt;

use sha2::{Digest, Sha256};

/// Length of a refresh token: 32 bytes in unpadded base64url.
pub const REFRESH_TOKEN_LEN: usize = 43;

/// A refresh token as presented by a client; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    /// Accepts only the shape sesame issues; anything else cannot match a stored hash.
    pub fn parse(s: &str) -> Option<Self> {
        super::is_token_shaped(s).then(|| Self(s.to_owned()))
    }

    /// A new random token.
    pub fn generate() -> Self {
        Self(super::random_token())
    }

    /// The token itself, for the response body only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 under which the token is stored.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_parse() {
        let good = "A".repeat(REFRESH_TOKEN_LEN);
        assert!(RefreshToken::parse(&good).is_some());
        assert!(RefreshToken::parse(&"A".repeat(REFRESH_TOKEN_LEN - 1)).is_none());
        assert!(RefreshToken::parse(&format!("{}=", "A".repeat(REFRESH_TOKEN_LEN - 1))).is_none());
        assert!(RefreshToken::parse("").is_none());
    }

    #[test]
    fn the_hash_is_sha256_and_debug_is_redacted() {
        let t = RefreshToken::parse(&"x".repeat(REFRESH_TOKEN_LEN)).expect("well formed");
        assert_eq!(
            t.hash(),
            <[u8; 32]>::from(Sha256::digest("x".repeat(REFRESH_TOKEN_LEN).as_bytes()))
        );
        assert!(!format!("{t:?}").contains("xxx"));
    }
}
