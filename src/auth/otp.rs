//! One-time codes: CSPRNG digits, stored only as a keyed Argon2id hash.
//!
//! The hash takes a server-side secret (Argon2's secret input), so a database
//! dump alone does not let anyone brute-force a 6-digit code: without the
//! secret every guess is wrong. The cost parameters are configurable; hashing
//! is CPU-bound, so the server runs it off the async threads (on
//! [`crate::hash_queue::HashQueue`]).

use std::{fmt, sync::Arc};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _},
};
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};

/// A code as typed by a person, normalised to its digits; `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct OtpCode(String);

impl OtpCode {
    /// A fresh code of `length` digits, uniformly drawn.
    pub fn generate(length: u32) -> Self {
        let mut rng = rand::rng();
        Self(
            (0..length)
                .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
                .collect(),
        )
    }

    /// Accepts `123456`, `123 456` or `123-456`: exactly `length` digits once
    /// spaces and dashes are dropped.
    pub fn parse(raw: &str, length: u32) -> Option<Self> {
        let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        (digits.len() == length as usize && digits.bytes().all(|b| b.is_ascii_digit())).then_some(Self(digits))
    }

    /// The digits, for the email only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(<redacted>)")
    }
}

/// Hashes and checks codes with Argon2id, keyed with the server secret.
#[derive(Clone)]
pub struct OtpHasher {
    secret: Arc<[u8]>,
    params: Params,
    /// A hash of a random code, checked when there is no real one (same cost).
    dummy: Arc<std::sync::OnceLock<String>>,
}

impl fmt::Debug for OtpHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtpHasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl OtpHasher {
    /// `secret` is reduced to 32 bytes with SHA-256; `memory_kib` and
    /// `iterations` are Argon2's m and t (p = 1).
    pub fn new(secret: &[u8], memory_kib: u32, iterations: u32) -> Result<Self, argon2::Error> {
        let params = Params::new(memory_kib, iterations, 1, None)?;
        Ok(Self {
            secret: Sha256::digest(secret).to_vec().into(),
            params,
            dummy: Arc::default(),
        })
    }

    fn argon2(&self) -> Result<Argon2<'_>, argon2::Error> {
        Argon2::new_with_secret(&self.secret, Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    /// The PHC string (`$argon2id$v=19$m=…`) of `code`, with a random salt. CPU-bound.
    pub fn hash(&self, code: &OtpCode) -> Result<String, argon2::password_hash::Error> {
        let argon2 = self.argon2().map_err(|_| argon2::password_hash::Error::Algorithm)?;
        Ok(argon2.hash_password(code.0.as_bytes())?.to_string())
    }

    /// Does the work of one [`verify`](Self::verify) against nothing real, so
    /// "no code" costs the same time as "wrong code". CPU-bound.
    pub fn verify_dummy(&self) {
        let code = OtpCode::generate(6);
        let phc = self.dummy.get_or_init(|| self.hash(&code).unwrap_or_default());
        let _ = self.verify(&code, phc);
    }

    /// Whether `code` matches `phc`. CPU-bound; a malformed hash is a mismatch.
    pub fn verify(&self, code: &OtpCode, phc: &str) -> bool {
        self.argon2()
            .is_ok_and(|a| a.verify_password(code.0.as_bytes(), phc).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_have_the_configured_digits() {
        for len in [4, 6, 10] {
            let c = OtpCode::generate(len);
            assert_eq!(c.expose().len(), len as usize);
            assert!(c.expose().bytes().all(|b| b.is_ascii_digit()));
        }
        let distinct: std::collections::HashSet<String> =
            (0..50).map(|_| OtpCode::generate(6).expose().to_owned()).collect();
        assert!(distinct.len() > 45, "codes are random");
    }

    #[test]
    fn typed_codes_are_normalised() {
        for ok in ["123456", "123 456", "123-456", " 12-34 56 "] {
            assert_eq!(OtpCode::parse(ok, 6).map(|c| c.0), Some("123456".to_owned()), "{ok:?}");
        }
        for bad in ["12345", "1234567", "12345a", "١٢٣٤٥٦", "123_456", ""] {
            assert!(OtpCode::parse(bad, 6).is_none(), "{bad:?}");
        }
        assert!(!format!("{:?}", OtpCode::parse("123456", 6)).contains("123"));
    }

    #[test]
    fn hashes_are_keyed_argon2id_and_verify() {
        let h = OtpHasher::new(b"server secret", 1024, 1).expect("params");
        let code = OtpCode::parse("123456", 6).expect("valid");
        let phc = h.hash(&code).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(!phc.contains("123456"));
        assert!(h.verify(&code, &phc));
        assert!(!h.verify(&OtpCode::parse("654321", 6).expect("valid"), &phc));
        assert_ne!(phc, h.hash(&code).expect("hash"), "salted");
        // Without the server secret the right code does not verify.
        let other = OtpHasher::new(b"another secret", 1024, 1).expect("params");
        assert!(!other.verify(&code, &phc));
        assert!(!h.verify(&code, "not a hash"));
    }
}
