//! What one code costs the CPU: an Argon2id hash (sending a code) and a check
//! (verifying one), keyed with the server secret, at the cost settings of the
//! environment (`OTP_HASH_MEMORY_KIB`, `OTP_HASH_ITERATIONS`; by default 512 and 1).
//!
//!   cargo bench --bench otp_hash
//!   OTP_HASH_MEMORY_KIB=4096 OTP_HASH_ITERATIONS=2 cargo bench --bench otp_hash

#![allow(clippy::expect_used, reason = "a benchmark stops at the first surprise")]

use criterion::{Criterion, criterion_group, criterion_main};
use sesame::auth::otp::{OtpCode, OtpHasher};

fn otp_hash(c: &mut Criterion) {
    // Only the cost settings come from the environment; everything else is a default.
    let config = sesame::config::Config::from_lookup(|name| {
        matches!(name, "OTP_HASH_MEMORY_KIB" | "OTP_HASH_ITERATIONS")
            .then(|| std::env::var(name).ok())
            .flatten()
    })
    .expect("OTP_HASH_MEMORY_KIB and OTP_HASH_ITERATIONS are valid");
    let hasher = OtpHasher::new(
        config.login.otp_secret.expose().as_bytes(),
        config.login.otp_hash_memory_kib,
        config.login.otp_hash_iterations,
    )
    .expect("the cost parameters are valid");
    let code = OtpCode::generate(config.login.otp_length);
    let phc = hasher.hash(&code).expect("hashes");
    let params = format!(
        "Argon2id m={} KiB t={} p=1, keyed",
        config.login.otp_hash_memory_kib, config.login.otp_hash_iterations
    );
    c.bench_function(&format!("otp hash ({params})"), |b| {
        b.iter(|| hasher.hash(std::hint::black_box(&code)));
    });
    c.bench_function(&format!("otp verify ({params})"), |b| {
        b.iter(|| hasher.verify(std::hint::black_box(&code), &phc));
    });
}

criterion_group!(benches, otp_hash);
criterion_main!(benches);
