//! A revoked session's access token stops working at sesame itself: the bearer
//! operations (`/auth/me`, `/auth/sessions`, `DELETE /auth/sessions/{id}`,
//! `/auth/logout-all`) accept a token only while its session is live and its
//! user exists, however the session ended.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, at, rt, sid, smtp_config},
    mailbox::SmtpSink,
};

/// The control: `token` is accepted by the bearer operations that change
/// nothing (the delete names a session that does not exist: 404, not 401).
async fn assert_accepted(app: &TestApp, token: &str) {
    let me = app.bearer(Method::GET, "/auth/me", token).await;
    assert_eq!(me.status, 200, "me: {}", me.text);
    let listed = app.bearer(Method::GET, "/auth/sessions", token).await;
    assert_eq!(listed.status, 200, "sessions: {}", listed.text);
    app.bearer(Method::DELETE, &format!("/auth/sessions/{}", Uuid::new_v4()), token)
        .await
        .assert_error(404, "not_found");
}

/// `token` is refused by each of the four bearer operations, the delete
/// aimed at `target` (a live session of the same user, which must survive).
async fn assert_refused_everywhere(app: &TestApp, token: &str, target: Uuid) {
    let delete = format!("/auth/sessions/{target}");
    for (method, path) in [
        (Method::GET, "/auth/me"),
        (Method::GET, "/auth/sessions"),
        (Method::DELETE, delete.as_str()),
        (Method::POST, "/auth/logout-all"),
    ] {
        let resp = app.bearer(method.clone(), path, token).await;
        resp.assert_error(401, "invalid_token");
        assert_eq!(
            resp.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{method} {path}"
        );
    }
}

/// `pair`'s session is untouched: its refresh token still rotates.
async fn assert_live(app: &TestApp, pair: &Value) {
    let resp = app.refresh(rt(pair)).await;
    assert_eq!(resp.status, 200, "the victim's other session goes on: {}", resp.text);
}

async fn spawn(db: PgConnectOptions) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(smtp_config(db, &sink)).await;
    (app, sink)
}

#[sqlx::test]
async fn after_logout_the_access_token_of_the_session_is_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db).await;
    let stolen = app.sign_in(&sink, "ada@example.com").await;
    let other = app.sign_in(&sink, "ada@example.com").await;
    assert_accepted(&app, at(&stolen)).await;

    assert_eq!(app.logout(rt(&stolen)).await.status, 200);
    assert_refused_everywhere(&app, at(&stolen), sid(&app, &other)).await;
    assert_live(&app, &other).await;
}

#[sqlx::test]
async fn after_logout_all_every_access_token_of_the_user_is_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db).await;
    let stolen = app.sign_in(&sink, "ada@example.com").await;
    let phone = app.sign_in(&sink, "ada@example.com").await;
    assert_accepted(&app, at(&stolen)).await;

    let all = app.bearer(Method::POST, "/auth/logout-all", at(&phone)).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(all.json["revoked"], 2);
    // The user signs in again; the old tokens cannot touch the new session.
    let fresh = app.sign_in(&sink, "ada@example.com").await;
    for old in [&stolen, &phone] {
        assert_refused_everywhere(&app, at(old), sid(&app, &fresh)).await;
    }
    assert_live(&app, &fresh).await;
}

#[sqlx::test]
async fn after_its_session_is_deleted_from_another_session_the_token_is_refused(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let (app, sink) = spawn(db).await;
    let stolen = app.sign_in(&sink, "ada@example.com").await;
    let laptop = app.sign_in(&sink, "ada@example.com").await;
    assert_accepted(&app, at(&stolen)).await;

    let ended = app
        .bearer(
            Method::DELETE,
            &format!("/auth/sessions/{}", sid(&app, &stolen)),
            at(&laptop),
        )
        .await;
    assert_eq!(ended.status, 200, "{}", ended.text);
    assert_refused_everywhere(&app, at(&stolen), sid(&app, &laptop)).await;
    assert_accepted(&app, at(&laptop)).await;
    assert_live(&app, &laptop).await;
}

#[sqlx::test]
async fn after_reuse_detection_the_access_tokens_of_the_session_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.tokens.refresh_reuse_interval = Duration::ZERO;
    let app = TestApp::spawn_with(config).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let other = app.sign_in(&sink, "ada@example.com").await;
    let rotated = app.refresh(rt(&first)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    assert_accepted(&app, at(&rotated.json)).await;

    // The rotated token comes back: reuse, the session ends.
    app.refresh(rt(&first)).await.assert_error(401, "invalid_refresh_token");
    for token in [at(&first), at(&rotated.json)] {
        assert_refused_everywhere(&app, token, sid(&app, &other)).await;
    }
    assert_live(&app, &other).await;
}

#[sqlx::test]
async fn after_the_session_expires_its_access_token_is_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    // The session ends long before the access token would.
    config.tokens.refresh_token_expiry = Duration::from_secs(10 * 60);
    config.tokens.access_token_expiry = Duration::from_secs(3600);
    let app = TestApp::spawn_with(config).await;
    let idle = app.sign_in(&sink, "ada@example.com").await;
    assert_accepted(&app, at(&idle)).await;

    app.state.clock.advance(Duration::from_secs(11 * 60));
    let fresh = app.sign_in(&sink, "ada@example.com").await;
    assert_refused_everywhere(&app, at(&idle), sid(&app, &fresh)).await;
    assert_accepted(&app, at(&fresh)).await;
}

#[sqlx::test]
async fn after_the_user_is_deleted_the_access_token_is_refused(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn(db).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    assert_accepted(&app, at(&pair)).await;

    let user_id: Uuid = pair["user"]["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user_id)
        .execute(&pool)
        .await
        .unwrap();
    assert_refused_everywhere(&app, at(&pair), sid(&app, &pair)).await;
}
