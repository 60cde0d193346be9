//! `POST /auth/refresh`: rotation, reuse detection, the reuse interval, and
//! concurrency on one and on two instances.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::task::JoinSet;

use crate::{
    helpers::{TestApp, rt, smtp_config, spawn_with_smtp},
    mailbox::SmtpSink,
};

async fn session_revoke_reason(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT revoke_reason FROM sessions")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_refresh_rotates_the_token_in_the_same_session(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;

    let second = app.refresh(rt(&first)).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_ne!(rt(&second.json), rt(&first));
    assert_eq!(second.json["user"], first["user"]);
    assert_eq!(second.json["tokenType"], "Bearer");
    let a = app.state.jwt.verify(first["token"].as_str().unwrap()).unwrap();
    let b = app.state.jwt.verify(second.json["token"].as_str().unwrap()).unwrap();
    assert_eq!(a.sid, b.sid, "the same session");
    assert_ne!(a.jti, b.jti);

    let third = app.refresh(rt(&second.json)).await;
    assert_eq!(third.status, 200);
    let chain: Vec<(bool, bool)> = sqlx::query_as(
        "SELECT parent_id IS NOT NULL, rotated_at IS NOT NULL FROM refresh_tokens ORDER BY issued_at, parent_id NULLS FIRST",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        chain,
        [(false, true), (true, true), (true, false)],
        "one live token at the end of the chain"
    );
    let events: Vec<String> =
        sqlx::query_scalar("SELECT event FROM audit_events WHERE event LIKE 'token.%' AND metadata->>'source' IS DISTINCT FROM 'otp' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        events,
        [
            "token.refresh",
            "token.generated",
            "token.generated",
            "token.refresh",
            "token.generated",
            "token.generated"
        ]
    );
}

#[sqlx::test]
async fn reuse_ends_the_whole_session_including_the_newest_token(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let second = app.refresh(rt(&first)).await.json;

    // Later than the reuse interval, the old token comes back: a thief or a bug.
    app.state.clock.advance(Duration::from_secs(11));
    app.refresh(rt(&first)).await.assert_error(401, "invalid_refresh_token");
    app.refresh(rt(&second))
        .await
        .assert_error(401, "invalid_refresh_token");
    assert_eq!(session_revoke_reason(&pool).await.as_deref(), Some("reuse_detected"));
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(live, 0);
    let reuse: (bool, Value) =
        sqlx::query_as("SELECT success, metadata FROM audit_events WHERE event = 'token.reuse_detected'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!reuse.0);
    assert_eq!(reuse.1["rotatedSecondsAgo"], 11);
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT error FROM audit_events WHERE event = 'token.refresh' AND NOT success ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(reasons, ["Refresh token reused", "Session ended"]);
}

#[sqlx::test]
async fn within_the_reuse_interval_racing_tabs_get_the_same_token(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let second = app.refresh(rt(&first)).await.json;

    app.state.clock.advance(Duration::from_secs(9));
    let again = app.refresh(rt(&first)).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(rt(&again.json), rt(&second), "the same child, recomputed, never stored");
    assert_ne!(again.json["token"], second["token"], "a fresh access token");

    // Past the interval, the same presentation is reuse.
    app.state.clock.advance(Duration::from_secs(2));
    app.refresh(rt(&first)).await.assert_error(401, "invalid_refresh_token");
    app.refresh(rt(&second))
        .await
        .assert_error(401, "invalid_refresh_token");
    assert_eq!(session_revoke_reason(&pool).await.as_deref(), Some("reuse_detected"));
}

#[sqlx::test]
async fn an_older_ancestor_is_reuse_even_within_the_interval(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let second = app.refresh(rt(&first)).await.json;
    let third = app.refresh(rt(&second)).await.json;
    app.refresh(rt(&first)).await.assert_error(401, "invalid_refresh_token");
    app.refresh(rt(&third)).await.assert_error(401, "invalid_refresh_token");
    assert_eq!(session_revoke_reason(&pool).await.as_deref(), Some("reuse_detected"));
}

#[sqlx::test]
async fn with_the_interval_off_any_second_presentation_is_reuse(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.tokens.refresh_reuse_interval = Duration::ZERO;
    let app = TestApp::spawn_with(config).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    assert_eq!(app.refresh(rt(&first)).await.status, 200);
    app.refresh(rt(&first)).await.assert_error(401, "invalid_refresh_token");
    assert_eq!(session_revoke_reason(&pool).await.as_deref(), Some("reuse_detected"));
}

#[sqlx::test]
async fn unknown_and_malformed_tokens_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for token in ["", "x", &"A".repeat(43), &"A".repeat(2000)] {
        let resp = app.refresh(token).await;
        // Only a token-shaped value reaches the handler; the rest is 400.
        assert_eq!(resp.status, if token.len() == 43 { 401 } else { 400 }, "{}", resp.text);
    }
}

/// Sends `n` refreshes of `token` at once, spread over `apps`; returns the answers.
async fn concurrent_refreshes(apps: &[&TestApp], token: &str, n: usize) -> Vec<(u16, Value)> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let app = apps[i % apps.len()];
        let (client, url, token) = (app.client.clone(), app.url("/auth/refresh"), token.to_owned());
        set.spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({ "refreshToken": token }))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        });
    }
    set.join_all().await
}

async fn check_concurrency(apps: &[&TestApp], sink: &SmtpSink, pool: &PgPool, interval_on: bool) {
    let first = apps[0].sign_in(sink, "race@example.com").await;
    let answers = concurrent_refreshes(apps, rt(&first), 20).await;
    let ok: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 200).map(|(_, b)| b).collect();
    assert!(answers.iter().all(|(s, _)| *s == 200 || *s == 401), "{answers:?}");
    if interval_on {
        assert_eq!(ok.len(), 20, "every racing tab is answered");
        assert!(ok.iter().all(|b| rt(b) == rt(ok[0])), "all with the same refresh token");
        let children: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE parent_id IS NOT NULL")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(children, 1, "one child, however many answers");
        assert_eq!(apps[0].refresh(rt(ok[0])).await.status, 200, "and it works");
    } else {
        assert_eq!(ok.len(), 1, "exactly one refresh wins: {answers:?}");
    }
}

#[sqlx::test]
async fn twenty_concurrent_refreshes_on_one_instance(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(smtp_config(db.clone(), &sink)).await;
    check_concurrency(&[&app], &sink, &pool, true).await;

    sqlx::query("TRUNCATE users CASCADE").execute(&pool).await.unwrap();
    let mut config = smtp_config(db, &sink);
    config.tokens.refresh_reuse_interval = Duration::ZERO;
    let strict = TestApp::spawn_with(config).await;
    check_concurrency(&[&strict], &sink, &pool, false).await;
}

#[sqlx::test]
async fn twenty_concurrent_refreshes_across_two_instances(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let a = TestApp::spawn_with(smtp_config(db.clone(), &sink)).await;
    let b = TestApp::spawn_with(smtp_config(db.clone(), &sink)).await;
    check_concurrency(&[&a, &b], &sink, &pool, true).await;

    sqlx::query("TRUNCATE users CASCADE").execute(&pool).await.unwrap();
    let strict = |db| {
        let mut c = smtp_config(db, &sink);
        c.tokens.refresh_reuse_interval = Duration::ZERO;
        c
    };
    let a = TestApp::spawn_with(strict(db.clone())).await;
    let b = TestApp::spawn_with(strict(db)).await;
    check_concurrency(&[&a, &b], &sink, &pool, false).await;
}

#[sqlx::test]
async fn sessions_slide_and_stop_at_their_absolute_limit(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db.clone(), &sink);
    config.tokens.refresh_token_expiry = Duration::from_secs(3600);
    let app = TestApp::spawn_with(config).await;

    // Sliding: refreshed every 50 minutes, a 1-hour token lives on.
    let mut pair = app.sign_in(&sink, "ada@example.com").await;
    for _ in 0..3 {
        app.state.clock.advance(Duration::from_secs(50 * 60));
        let next = app.refresh(rt(&pair)).await;
        assert_eq!(next.status, 200, "{}", next.text);
        pair = next.json;
    }
    // Unused for more than an hour, it expires.
    app.state.clock.advance(Duration::from_secs(61 * 60));
    app.refresh(rt(&pair)).await.assert_error(401, "invalid_refresh_token");

    // Absolute: SESSION_MAX_AGE caps the slide.
    let mut config = smtp_config(db, &sink);
    config.tokens.refresh_token_expiry = Duration::from_secs(3600);
    config.tokens.session_max_age = Some(Duration::from_secs(90 * 60));
    let capped = TestApp::spawn_with(config).await;
    let pair = capped.sign_in(&sink, "bob@example.com").await;
    capped.state.clock.advance(Duration::from_secs(50 * 60));
    let pair = capped.refresh(rt(&pair)).await;
    assert_eq!(pair.status, 200);
    capped.state.clock.advance(Duration::from_secs(41 * 60));
    capped
        .refresh(rt(&pair.json))
        .await
        .assert_error(401, "invalid_refresh_token");
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT error FROM audit_events WHERE event = 'token.refresh' AND NOT success ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(reasons, ["Session expired", "Session expired"]);
}

#[sqlx::test]
async fn a_refresh_tokens_expires_in_is_its_lifetime_under_the_session_cap(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.tokens.refresh_token_expiry = Duration::from_secs(30 * 86_400);
    config.tokens.session_max_age = Some(Duration::from_secs(7 * 86_400));
    let app = TestApp::spawn_with(config).await;
    let expires_in = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT metadata->>'tokenType' || '=' || (metadata->>'expiresIn') FROM audit_events
             WHERE event = 'token.generated' ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };

    let pair = app.sign_in(&sink, "ada@example.com").await;
    assert_eq!(expires_in().await, ["access=1h", "refresh=7d"], "capped, not 30d");
    // A day later the rotated token lives only until the session's cap.
    app.state.clock.advance(Duration::from_secs(86_400));
    let next = app.refresh(rt(&pair)).await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(
        expires_in().await,
        ["access=1h", "refresh=7d", "access=1h", "refresh=6d"]
    );
}
