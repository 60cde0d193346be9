//! The default per-client limit of the operations without their own, and the
//! deployment's cap on emails.

use std::time::Duration;

use reqwest::Method;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, at},
    mailbox::SmtpSink,
    rate_limits::{assert_limited, limited},
};

/// Every audit event so far: (event, metadata).
async fn events(pool: &sqlx::PgPool) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as("SELECT event, coalesce(metadata, '{}'::jsonb) FROM audit_events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn garbage_logouts_are_limited_per_client_and_stop_writing_audit_rows(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.default_per_ip_per_minute = 3;
    let app = TestApp::spawn_with(config).await;

    for _ in 0..3 {
        assert_eq!(app.logout(&"G".repeat(43)).await.status, 200);
    }
    let before = events(&pool).await;
    assert_eq!(before.len(), 3, "one auth.logout failure each: {before:?}");
    let retry_after = assert_limited(&app.logout(&"G".repeat(43)).await, "default_per_ip_minute");
    assert_eq!(retry_after, 60);
    assert_limited(&app.logout(&"H".repeat(43)).await, "default_per_ip_minute");
    let after = events(&pool).await;
    assert_eq!(after.len(), 5, "{after:?}");
    for (event, metadata) in &after[3..] {
        assert_eq!(event, "rate_limit.exceeded", "nothing but the refusal is written");
        assert_eq!(metadata["limit"], "default_per_ip_minute");
        assert_eq!(metadata["keyKind"], "ip");
    }
    app.state.clock.advance(Duration::from_secs(60));
    assert_eq!(app.logout(&"G".repeat(43)).await.status, 200, "released after a minute");
}

#[sqlx::test]
async fn the_bearer_operations_share_the_default_limit_and_count_before_the_token_check(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.default_per_ip_per_minute = 5;
    config.rate_limits.verify_per_ip_per_minute = 100;
    let app = TestApp::spawn_with(config).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let token = at(&pair);

    assert_eq!(app.bearer(Method::GET, "/auth/me", token).await.status, 200);
    assert_eq!(app.bearer(Method::GET, "/auth/sessions", token).await.status, 200);
    let other = format!("/auth/sessions/{}", uuid::Uuid::new_v4());
    assert_eq!(app.bearer(Method::DELETE, &other, token).await.status, 404);
    assert_eq!(app.bearer(Method::GET, "/auth/me", "garbage").await.status, 401);
    assert_eq!(app.logout(&"G".repeat(43)).await.status, 200);
    // Not limited: health, the key set, the document, the docs and the page.
    for path in [
        "/health",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/docs",
        "/auth/verify?token=x",
    ] {
        assert_ne!(app.get(path).await.status, 429, "{path}");
    }
    for (method, path, token) in [
        (Method::GET, "/auth/me", token),
        (Method::GET, "/auth/me", "garbage"),
        (Method::GET, "/auth/sessions", token),
        (Method::DELETE, other.as_str(), token),
        (Method::POST, "/auth/logout-all", token),
    ] {
        assert_limited(&app.bearer(method, path, token).await, "default_per_ip_minute");
    }
    // The sign-in operations keep their own limits.
    assert_eq!(app.verify_code("ada@example.com", "0000000").await.status, 401);
    app.state.clock.advance(Duration::from_secs(60));
    let all = app.bearer(Method::POST, "/auth/logout-all", token).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(all.json["revoked"], 1, "the refused logout-all ended nothing");
}

#[sqlx::test]
async fn the_email_cap_holds_for_the_whole_deployment(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = limited(db.clone(), &sink);
    config.rate_limits.emails_per_hour = 3;
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;

    assert_eq!(a.send_code("ada@example.com").await.status, 200);
    assert_eq!(b.send_magic_link("bob@example.com", None).await.status, 200);
    // Refused by another limit: does not use the cap.
    assert_limited(&a.send_code("ada@example.com").await, "send_per_address_interval");
    assert_eq!(b.send_code("carol@example.com").await.status, 200);
    let resp = a.send_code("dave@example.com").await;
    let retry_after = assert_limited(&resp, "emails_per_hour");
    assert_eq!(retry_after, 3600);
    assert!(
        resp.json["error"].as_str().unwrap().contains("at most 3"),
        "{}",
        resp.text
    );
    assert_limited(&b.send_magic_link("erin@example.com", None).await, "emails_per_hour");
    assert_eq!(sink.messages().len(), 3);
    let refusals: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT metadata FROM audit_events WHERE event = 'rate_limit.exceeded' AND metadata->>'limit' = 'emails_per_hour'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(refusals.len(), 2);
    assert_eq!(refusals[0]["keyKind"], "global");
    assert_eq!(refusals[0]["retryAfter"], 3600);

    a.state.clock.advance(Duration::from_secs(3600));
    b.state.clock.advance(Duration::from_secs(3600));
    assert_eq!(a.send_code("dave@example.com").await.status, 200, "a new hour");
}

#[sqlx::test]
async fn unknown_addresses_use_the_email_cap_like_known_ones(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db.clone(), &sink);
    let signup = TestApp::spawn_with(config.clone()).await;
    signup.sign_in(&sink, "known@example.com").await;
    signup.stop().await;
    // The closed deployment, an hour later: a fresh cap.
    config.login.allow_signup = false;
    config.rate_limits.emails_per_hour = 3;
    config.rate_limits.verify_per_ip_per_minute = 100;
    let app = TestApp::spawn_with(config).await;
    app.state.clock.advance(Duration::from_secs(3600));

    assert_eq!(app.send_code("stranger1@example.com").await.status, 200);
    assert_eq!(app.send_code("stranger2@example.com").await.status, 200);
    assert_eq!(app.send_code("known@example.com").await.status, 200);
    assert_limited(&app.send_code("stranger3@example.com").await, "emails_per_hour");
    assert_limited(&app.send_magic_link("known@example.com", None).await, "emails_per_hour");
    assert_eq!(sink.to("known@example.com").len(), 2, "the sign-in's and one more");
    assert!(sink.to("stranger1@example.com").is_empty());
}
