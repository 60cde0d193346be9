//! `sesame webhooks status|retry`: an operator sees failed deliveries and retries one.

use std::process::{Command, Output, Stdio};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{helpers::database_url, webhooks_support::insert_failed_delivery};

fn sesame_webhooks(db: &PgConnectOptions, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
        .arg("webhooks")
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", database_url(db))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[sqlx::test]
async fn an_operator_lists_failed_deliveries_and_retries_one(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let delivery = insert_failed_delivery(&pool, "HTTP 503").await;

    let status = sesame_webhooks(&db, &["status"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let text = String::from_utf8(status.stdout).unwrap();
    assert!(text.contains("deliveries: 1 failed"), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("user.created"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.trim_start().starts_with(&delivery.to_string()), "{row}");
    assert!(
        row.contains("https://app.example.com/hooks") && row.contains("HTTP 503"),
        "{row}"
    );

    let retried = sesame_webhooks(&db, &["retry", &delivery.to_string()]);
    assert!(retried.status.success(), "{}", String::from_utf8_lossy(&retried.stderr));
    let (state, seq, fresh): (String, Option<i64>, bool) = sqlx::query_as(
        "SELECT status, seq, retry_since > now() - interval '1 minute' FROM webhook_deliveries WHERE id = $1",
    )
    .bind(delivery)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (state.as_str(), seq, fresh),
        ("pending", None, true),
        "pending again, to be placed at the end of the queue, with a fresh window"
    );
    let pending = String::from_utf8(sesame_webhooks(&db, &["status", "--status", "pending"]).stdout).unwrap();
    assert!(
        pending.contains("deliveries: 1 pending") && pending.contains("oldest pending: 2d old"),
        "{pending}"
    );

    let unknown = sesame_webhooks(&db, &["retry", "999999"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no failed or pending delivery 999999"));
}
