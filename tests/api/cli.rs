//! The real binary: bad settings stop start-up with a clear message; SIGTERM stops it cleanly.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = db.get_database().unwrap();
    let base = std::env::var("DATABASE_URL").unwrap();
    let url = format!("{}/{name}", base.rsplit_once('/').unwrap().0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .arg("serve")
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("PORT", port.to_string())
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let started = Instant::now();
    let health = loop {
        if let Ok(resp) = client.get(format!("http://127.0.0.1:{port}/health")).send().await {
            break resp;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health.status(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sesame did not stop within 15 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = child.wait_with_output().unwrap();
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
