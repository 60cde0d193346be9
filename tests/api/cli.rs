//! The real binary: bad settings stop start-up with a clear message; SIGTERM stops it cleanly.

use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::ServerProcess;

/// Runs `sesame serve` in an empty folder with exactly `vars` set.
fn serve_with(vars: &[(&str, &str)]) -> std::process::Output {
    let dir = std::env::temp_dir();
    Command::new(env!("CARGO_BIN_EXE_sesame"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("PORT", "http")],
            "PORT: expected a port number from 0 to 65535, got \"http\"",
        ),
        (&[("OTP_EXPIRY", "soon")], "OTP_EXPIRY: expected a duration"),
        (
            &[("METRICS_FORMAT", "xml")],
            "METRICS_FORMAT: expected one of `console`, `file`, `both`, `none`",
        ),
        (
            &[("APP_ENV", "production")],
            "JWT_SECRET: expected a random secret of at least 32 bytes",
        ),
        (
            &[("APP_ENV", "production"), ("JWT_SECRET", "short")],
            "JWT_SECRET: expected at least 32 bytes",
        ),
        (
            &[
                ("APP_ENV", "production"),
                ("JWT_SECRET", "change-me-to-a-random-string-of-at-least-32-bytes"),
            ],
            "JWT_SECRET: expected a random secret of your own",
        ),
        (&[], "DATABASE_URL: not set"),
    ];
    for (vars, message) in cases {
        let out = serve_with(vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{vars:?} must not start");
        assert!(
            stderr.contains(message),
            "{vars:?}: stderr lacks {message:?}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[sqlx::test(migrations = false)]
async fn the_binary_migrates_serves_and_stops_cleanly_on_sigterm(_: PgPoolOptions, db: PgConnectOptions) {
    // A fresh, empty database: `serve` must apply the migrations itself.
    let server = ServerProcess::start(&db, &std::env::temp_dir(), &[("LOG_FORMAT", "json")]);
    assert_eq!(server.wait_ready().await.status(), 200);
    let out = server.terminate().await;
    let status = out.status;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(status.success(), "exit status {status}:\n{stderr}");
    assert!(stderr.contains("sesame stopped"), "{stderr}");
    // JSON logs: every line is an object.
    for line in stderr.lines().filter(|l| !l.is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}
