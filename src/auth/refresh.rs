//! Refresh tokens: 32 bytes, base64url, known to the server only by their SHA-256.
//!
//! The first token of a session is random. Each later one is derived from its
//! parent: `child = base64url(HMAC-SHA256(key, parent))`, with a server key.
//! So when racing tabs present the same parent within `REFRESH_REUSE_INTERVAL`,
//! the server can answer every one of them with the same child without ever
//! storing a token in plain text; and without the key, a token says nothing
//! about its child.

use std::{fmt, sync::Arc};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
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

/// Derives children of refresh tokens with the server key.
#[derive(Clone)]
pub struct RefreshChain {
    key: Arc<[u8; 32]>,
}

impl fmt::Debug for RefreshChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshChain(<key>)")
    }
}

impl RefreshChain {
    /// The key is derived from `secret` (`JWT_SECRET`), separated from its other uses.
    pub fn new(secret: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"sesame refresh-token chain v1\0");
        h.update(secret);
        Self {
            key: Arc::new(h.finalize().into()),
        }
    }

    /// The one child of `parent`.
    pub fn child(&self, parent: &RefreshToken) -> RefreshToken {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(parent.0.as_bytes());
        RefreshToken(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
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
    fn children_are_derived_deterministically_and_only_with_the_key() {
        let chain = RefreshChain::new(b"secret");
        let parent = RefreshToken::generate();
        let child = chain.child(&parent);
        assert_eq!(child, chain.child(&parent), "the same parent always has the same child");
        assert!(
            RefreshToken::parse(child.expose()).is_some(),
            "a child has the shape of a token"
        );
        assert_ne!(chain.child(&child), child);
        assert_ne!(RefreshChain::new(b"other").child(&parent), child, "the key matters");
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
