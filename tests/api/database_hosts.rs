//! A `DATABASE_URL` with several hosts: sesame uses whichever is the primary
//! (the failover with a real standby is `tests/deploy/run.sh failover`).

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, smtp_config},
    mailbox::SmtpSink,
};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[sqlx::test]
async fn a_first_host_that_is_down_is_skipped_for_the_next_one(_: PgPoolOptions, db: PgConnectOptions) {
    // The same database twice: once behind a dead port, listed first.
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db.clone().host("127.0.0.1").port(closed_port()), &sink);
    config.database.other_hosts = vec![db];
    let app = TestApp::spawn_with(config).await;
    let started = Instant::now();
    let mut health = app.health().await;
    while health.status != 200 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = app.health().await;
    }
    assert_eq!(health.status, 200, "{}", health.text);
    let pair = app.sign_in(&sink, "two-hosts@example.com").await;
    let refreshed = app.refresh(pair["refreshToken"].as_str().expect("refresh token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    app.stop().await;
}

#[sqlx::test]
async fn the_servers_connections_run_without_jit_with_one_host_or_several(opts: PgPoolOptions, db: PgConnectOptions) {
    // New sessions of this database start with JIT on, whatever the server's default.
    let name = db.get_database().expect("a test database").to_owned();
    let pool = opts.connect_with(db.clone()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{name}\" SET jit = on")))
        .execute(&pool)
        .await
        .unwrap();
    let sink = SmtpSink::start().await;
    let one = TestApp::spawn_with(smtp_config(db.clone(), &sink)).await;
    let mut config = smtp_config(db.clone(), &sink);
    config.database.other_hosts = vec![db];
    let two = TestApp::spawn_with(config).await;
    for app in [&one, &two] {
        let jit: String = sqlx::query_scalar("SHOW jit")
            .fetch_one(app.state.db.pool())
            .await
            .unwrap();
        assert_eq!(jit, "off");
    }
    one.stop().await;
    two.stop().await;
}
