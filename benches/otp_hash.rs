//! What one code costs the CPU: an Argon2id hash (sending a code) and a check
//! (verifying one), keyed with the server secret, at the default cost settings
//! (`OTP_HASH_MEMORY_KIB=512`, `OTP_HASH_ITERATIONS=1`).
//!
//!   cargo bench --bench otp_hash

#![allow(clippy::expect_used, reason = "a benchmark stops at the first surprise")]

use criterion::{Criterion, criterion_group, criterion_main};
use sesame::auth::otp::{OtpCode, OtpHasher};

fn otp_hash(c: &mut Criterion) {
    let config = sesame::config::Config::from_lookup(|_| None).expect("defaults are valid");
    let hasher = OtpHasher::new(
        config.login.otp_secret.expose().as_bytes(),
        config.login.otp_hash_memory_kib,
        config.login.otp_hash_iterations,
    )
    .expect("default parameters are valid");
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
