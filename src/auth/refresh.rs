//! Refresh tokens: 32 bytes, base64url, known to the server only by their SHA-256.
//!
//! The first token of a session is random. Each later one is derived from its
//! parent and a random value stored with the parent (its [`RotationSalt`]; a
//! rotation may replace it by the fresh one it derived the child with):
//! `child = base64url(HMAC-SHA256(key, salt ‖ parent))`, with a server key.
//! So when racing tabs present the same parent within `REFRESH_REUSE_INTERVAL`,
//! the server can answer every one of them with the same child without ever
//! storing a token in plain text; and computing a child takes the key, the
//! parent and the database: a leaked `JWT_SECRET` with an old token (a log, a
//! browser backup) does not give the session's later tokens. Tokens issued
//! before the salt existed have none stored; their child is derived as it was
//! then, `HMAC-SHA256(key, parent)`, so sessions live across the upgrade keep
//! refreshing (and their next token has a salt).

use std::{fmt, sync::Arc};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use rand::Rng as _;
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

/// The random value stored with a refresh token and mixed into the derivation
/// of its child. Not a secret on its own (it is useless without the key and the
/// token), but it is never logged nor put in an event; `Debug` never shows it.
/// Stored as `bytea`; a stored value of another length fails to decode.
#[derive(Clone, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct RotationSalt([u8; 32]);

impl RotationSalt {
    /// 32 bytes from the OS-seeded CSPRNG, drawn when a token is issued, and
    /// when it is rotated in one statement (`store::sessions::rotate_live`
    /// stores the one the child was derived with).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for RotationSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotationSalt(<redacted>)")
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

    /// The one child of `parent`, under the salt stored with it; `None` for a
    /// token issued before salts existed (the derivation of that time).
    pub fn child(&self, parent: &RefreshToken, salt: Option<&RotationSalt>) -> RefreshToken {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(self.key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        // Both parts have a fixed length (32 and 43 bytes), so the input is
        // unambiguous, and never the 43 bytes of an unsalted input.
        if let Some(salt) = salt {
            mac.update(&salt.0);
        }
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
        let salt = RotationSalt::generate();
        let child = chain.child(&parent, Some(&salt));
        assert_eq!(
            child,
            chain.child(&parent, Some(&salt.clone())),
            "the same parent and salt always have the same child"
        );
        assert!(
            RefreshToken::parse(child.expose()).is_some(),
            "a child has the shape of a token"
        );
        assert_ne!(chain.child(&child, Some(&salt)), child);
        assert_ne!(
            RefreshChain::new(b"other").child(&parent, Some(&salt)),
            child,
            "the key matters"
        );
    }

    #[test]
    fn the_child_depends_on_the_stored_salt() {
        let chain = RefreshChain::new(b"secret");
        let parent = RefreshToken::generate();
        let (a, b) = (RotationSalt([1; 32]), RotationSalt([2; 32]));
        let child = chain.child(&parent, Some(&a));
        assert_ne!(chain.child(&parent, Some(&b)), child, "another salt, another child");
        assert_ne!(
            chain.child(&parent, None),
            child,
            "the key and the parent alone do not give the child"
        );
        assert_ne!(RotationSalt::generate(), RotationSalt::generate());
    }

    #[test]
    fn a_token_without_a_salt_has_the_child_of_the_unsalted_derivation() {
        let chain = RefreshChain::new(b"secret");
        let parent = RefreshToken::parse(&"p".repeat(REFRESH_TOKEN_LEN)).expect("well formed");
        let mut key = Sha256::new();
        key.update(b"sesame refresh-token chain v1\0secret");
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key.finalize()).expect("any key length");
        mac.update(parent.expose().as_bytes());
        let unsalted = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(chain.child(&parent, None).expose(), unsalted);
    }

    #[test]
    fn a_salts_debug_is_redacted() {
        let salt = RotationSalt::generate();
        assert_eq!(format!("{salt:?}"), "RotationSalt(<redacted>)");
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
