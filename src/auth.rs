//! Domain logic of authentication: no HTTP, no SQL, no IO. The rules that
//! decide who gets in are pure functions here ([`login`], [`session`]), over
//! plain data and the time the caller passes in.

pub mod email_address;
pub mod ids;
pub mod jwt;
pub mod login;
pub mod magic_link;
pub mod otp;
mod reason;
pub mod refresh;
pub mod session;

pub use reason::Reason;

use base64::Engine as _;
use rand::Rng as _;

/// 32 bytes from the OS-seeded CSPRNG, base64url without padding (43 characters):
/// the form of magic-link and refresh tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of [`random_token`]'s output.
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
