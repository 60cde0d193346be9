//! Settings that shape stored sessions, changed between restarts: an app on
//! the same database with the new settings answers a 4xx with its documented
//! code, or keeps working; never a 5xx.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    helpers::{TestApp, at, rt, sid, smtp_config},
    mailbox::SmtpSink,
};

/// The failure reasons of `token.refresh`, oldest first, with their session.
async fn refresh_failures(pool: &PgPool) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT error, metadata->>'sessionId' FROM audit_events WHERE event = 'token.refresh' AND NOT success ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Signs `email` in on an app with the default settings (no `SESSION_MAX_AGE`,
/// `REFRESH_TOKEN_EXPIRY` 30d), then stops it: the state a restart finds.
async fn session_from_before_the_restart(db: &PgConnectOptions, sink: &SmtpSink, email: &str) -> Value {
    let before = TestApp::spawn_with(smtp_config(db.clone(), sink)).await;
    let pair = before.sign_in(sink, email).await;
    before.stop().await;
    pair
}

#[sqlx::test]
async fn a_session_older_than_a_newly_set_max_age_is_ended_at_its_next_refresh(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let old = session_from_before_the_restart(&db, &sink, "ada@example.com").await;

    let mut config = smtp_config(db, &sink);
    config.tokens.session_max_age = Some(Duration::from_secs(60));
    let after = TestApp::spawn_with(config).await;
    // The session is two minutes old; the new cap is one.
    after.state.clock.advance(Duration::from_secs(2 * 60));
    let old_sid = sid(&after, &old);

    after.refresh(rt(&old)).await.assert_error(401, "invalid_refresh_token");
    let (revoked, reason): (bool, Option<String>) =
        sqlx::query_as("SELECT revoked_at IS NOT NULL, revoke_reason FROM sessions WHERE id = $1")
            .bind(old_sid)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(revoked, "the session is ended");
    assert_eq!(reason.as_deref(), Some("expired"));
    assert_eq!(
        refresh_failures(&pool).await,
        [("Session expired".to_owned(), Some(old_sid.to_string()))]
    );

    // It is no longer listed; a new sign-in under the new settings is.
    let fresh = after.sign_in(&sink, "ada@example.com").await;
    let listed = after.bearer(Method::GET, "/auth/sessions", at(&fresh)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let ids: Vec<&str> = listed.json["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sid(&after, &fresh).to_string()]);
    // Presented again, the ended session is still a 401.
    after.refresh(rt(&old)).await.assert_error(401, "invalid_refresh_token");
}

#[sqlx::test]
async fn a_lowered_refresh_token_expiry_applies_from_the_next_rotation(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let old = session_from_before_the_restart(&db, &sink, "ada@example.com").await;

    let mut config = smtp_config(db, &sink);
    config.tokens.refresh_token_expiry = Duration::from_secs(3600);
    let after = TestApp::spawn_with(config).await;
    // Past the new lifetime, within the one the session was given: it keeps working.
    after.state.clock.advance(Duration::from_secs(2 * 3600));
    let rotated = after.refresh(rt(&old)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);

    // The rotation gave it the new lifetime, which then runs out.
    let lifetime: bool = sqlx::query_scalar("SELECT expires_at - last_used_at = interval '1 hour' FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(lifetime, "the session slid by the new REFRESH_TOKEN_EXPIRY");
    after.state.clock.advance(Duration::from_secs(61 * 60));
    after
        .refresh(rt(&rotated.json))
        .await
        .assert_error(401, "invalid_refresh_token");
    let reasons: Vec<String> = refresh_failures(&pool).await.into_iter().map(|(e, _)| e).collect();
    assert_eq!(reasons, ["Session expired"]);
}
