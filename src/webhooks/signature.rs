//! Standard Webhooks signing (<https://www.standardwebhooks.com>): the secret's
//! format and the `webhook-signature` of a message. Pure: no I/O.

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The fewest key bytes accepted: 192 bits.
pub const MIN_KEY_BYTES: usize = 24;

/// The HMAC key of a `whsec_…` secret: the base64 after the prefix, decoded;
/// `None` unless it is well formed and at least [`MIN_KEY_BYTES`] long.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    let key = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    (key.len() >= MIN_KEY_BYTES).then_some(key)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the `webhook-signature` header.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    #[expect(clippy::expect_used, reason = "HMAC takes a key of any length")]
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' own tests.
    #[test]
    fn signs_like_the_reference_implementation() {
        let key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid secret");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_need_the_prefix_base64_and_24_bytes() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert!(secret_key(&format!("whsec_{}", b64(24))).is_some());
        assert!(secret_key(&format!("whsec_{}", b64(32))).is_some());
        assert!(secret_key(&format!("whsec_{}", b64(23))).is_none(), "too short");
        assert!(secret_key(&b64(32)).is_none(), "no prefix");
        assert!(secret_key("whsec_not base64!").is_none());
    }
}
