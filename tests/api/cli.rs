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

/// A `DATABASE_URL` that is well formed (nothing listens there): start-up must stop
/// on the other settings before it would connect.
const SOME_DATABASE: (&str, &str) = ("DATABASE_URL", "postgres://sesame@127.0.0.1:1/sesame");
const EXAMPLE_SECRET: &str = "change-me-to-a-random-string-of-at-least-32-bytes";

/// Settings, and the start of each problem line they must produce (in any order).
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// The README: "A bad value stops start-up with exit code 1 and one line per
/// problem, naming the variable and the form expected [...]. Secret values are
/// never echoed."
#[test]
fn a_bad_setting_stops_start_up_naming_the_variable() {
    const PRODUCTION_EMAIL: [&str; 2] = [
        "EMAIL_PROVIDER: expected `smtp` or `resend`",
        "FROM_EMAIL: expected a sender address",
    ];
    let cases: &[Case] = &[
        (
            &[SOME_DATABASE, ("PORT", "http")],
            &["PORT: expected a port number from 0 to 65535, got \"http\""],
        ),
        (
            &[SOME_DATABASE, ("OTP_EXPIRY", "soon")],
            &["OTP_EXPIRY: expected a duration"],
        ),
        (
            &[SOME_DATABASE, ("METRICS_FORMAT", "xml")],
            &["METRICS_FORMAT: expected one of `console`, `file`, `both`, `none`"],
        ),
        // Every problem at once, each on its own line.
        (
            &[
                SOME_DATABASE,
                ("PORT", "http"),
                ("OTP_EXPIRY", "soon"),
                ("METRICS_FORMAT", "xml"),
            ],
            &[
                "PORT: expected a port number",
                "OTP_EXPIRY: expected a duration",
                "METRICS_FORMAT: expected one of",
            ],
        ),
        (
            &[SOME_DATABASE, ("APP_ENV", "production")],
            &[
                "JWT_SECRET: expected a random secret of at least 32 bytes",
                PRODUCTION_EMAIL[0],
                PRODUCTION_EMAIL[1],
            ],
        ),
        (
            &[SOME_DATABASE, ("APP_ENV", "production"), ("JWT_SECRET", "short")],
            &[
                "JWT_SECRET: expected at least 32 bytes",
                PRODUCTION_EMAIL[0],
                PRODUCTION_EMAIL[1],
            ],
        ),
        (
            &[
                SOME_DATABASE,
                ("APP_ENV", "production"),
                ("JWT_SECRET", EXAMPLE_SECRET),
                ("EMAIL_PROVIDER", "smtp"),
                ("SMTP_URL", "smtp://127.0.0.1:1"),
                ("FROM_EMAIL", "noreply@example.com"),
            ],
            &["JWT_SECRET: expected a random secret of your own"],
        ),
        (&[], &["DATABASE_URL: not set"]),
    ];
    for (vars, problems) in cases {
        let out = serve_with(vars);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{vars:?} must stop with exit code 1:\n{stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{vars:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let mut lines = stderr.lines();
        assert_eq!(lines.next(), Some("sesame: invalid configuration:"), "{stderr}");
        let lines: Vec<&str> = lines.map(|l| l.strip_prefix("  ").unwrap_or(l)).collect();
        assert_eq!(lines.len(), problems.len(), "{vars:?}: one line per problem:\n{stderr}");
        for problem in *problems {
            let matching = lines.iter().filter(|l| l.starts_with(problem)).count();
            assert_eq!(matching, 1, "{vars:?}: one line starts with {problem:?}:\n{stderr}");
        }
        for (name, value) in *vars {
            if *name == "JWT_SECRET" {
                assert!(!stderr.contains(value), "the secret is not echoed:\n{stderr}");
            }
        }
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

#[sqlx::test(migrations = false)]
async fn migrate_takes_sqlx_s_migration_lock_for_its_transaction_only(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sesame::store::migrations::lock(&mut holder).await.unwrap();
    // sqlx's migrator (a session lock) waits for it: the key is the same.
    let by_sqlx = tokio::spawn({
        let pool = pool.clone();
        async move { sesame::MIGRATOR.run(&pool).await }
    });
    let mut by_sesame = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", crate::helpers::database_url(&db))
        .env("LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(!by_sqlx.is_finished(), "sqlx's migrator waits for the lock");
    assert!(
        by_sesame.try_wait().unwrap().is_none(),
        "`sesame migrate` waits for the lock"
    );
    // Ending the holder's transaction releases it: nothing to unlock.
    holder.rollback().await.unwrap();
    by_sqlx.await.unwrap().unwrap();
    let status = tokio::task::spawn_blocking(move || by_sesame.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "sesame migrate: {status}");
    let locks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(locks, 0, "no advisory lock is left held");
}
