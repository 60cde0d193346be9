//! Settings that shape stored state (sessions, codes, tokens), changed between
//! restarts: an app on the same database with the new settings answers a 4xx
//! with its documented code, or keeps working; never a 5xx.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use sesame::config::Config;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    helpers::{TestApp, at, rt, sid, smtp_config, temp_dir},
    login_code_support::{assert_generic_401, detail_reasons},
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

#[sqlx::test]
async fn a_session_past_a_newly_set_max_age_is_refused_by_the_bearer_operations_without_a_refresh(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let sink = SmtpSink::start().await;
    let old = session_from_before_the_restart(&db, &sink, "ada@example.com").await;

    let mut config = smtp_config(db, &sink);
    config.tokens.session_max_age = Some(Duration::from_secs(60));
    let after = TestApp::spawn_with(config).await;
    // Two minutes old under a one-minute cap; never refreshed, so its stored
    // expiry (30 days) is far off, and its access token (1h) still verifies.
    after.state.clock.advance(Duration::from_secs(2 * 60));
    for path in ["/auth/me", "/auth/sessions"] {
        let resp = after.bearer(Method::GET, path, at(&old)).await;
        resp.assert_error(401, "invalid_token");
    }
    // A session begun under the cap is served.
    let fresh = after.sign_in(&sink, "ada@example.com").await;
    let me = after.bearer(Method::GET, "/auth/me", at(&fresh)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    // Its session list leaves out the session past the cap.
    let listed = after.bearer(Method::GET, "/auth/sessions", at(&fresh)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let ids: Vec<&str> = listed.json["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    let fresh_sid = sid(&after, &fresh).to_string();
    assert_eq!(ids, [fresh_sid.as_str()], "only the session under the cap is listed");
}

/// The code of the message `sink` received last for `email`.
fn last_code(sink: &SmtpSink, email: &str) -> String {
    sink.last_to(email).code()
}

/// A code of the same length as `code` that is not it.
fn wrong(code: &str) -> String {
    code.bytes().map(|b| char::from(b'0' + (b - b'0' + 1) % 10)).collect()
}

/// Sends a code to `email` from an app with `config`, then stops it; returns the code.
async fn code_from_before_the_restart(config: Config, sink: &SmtpSink, email: &str) -> String {
    let before = TestApp::spawn_with(config).await;
    let sent = before.send_code(email).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    before.stop().await;
    last_code(sink, email)
}

/// A code sent under `OTP_LENGTH=from`, typed after a restart with `to`: a
/// wrong code (its length is not the configured one), counted as a try; a
/// new code has the new length and signs in.
async fn a_code_across_a_change_of_length(opts: PgPoolOptions, db: PgConnectOptions, from: u32, to: u32) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let email = "ada@example.com";
    let mut config = smtp_config(db.clone(), &sink);
    config.login.otp_length = from;
    let old = code_from_before_the_restart(config, &sink, email).await;
    assert_eq!(old.len(), from as usize);

    let mut config = smtp_config(db, &sink);
    config.login.otp_length = to;
    let after = TestApp::spawn_with(config).await;
    assert_generic_401(&after.verify_code(email, &old).await);
    assert_eq!(detail_reasons(&pool).await, ["Invalid code"], "{from} → {to}");
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM otp_codes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "{from} → {to}: the try counts");

    let sent = after.send_code(email).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let new = last_code(&sink, email);
    assert_eq!(new.len(), to as usize);
    let resp = after.verify_code(email, &new).await;
    assert_eq!(resp.status, 200, "{from} → {to}: {}", resp.text);
}

#[sqlx::test]
async fn a_code_sent_before_otp_length_grew_is_a_wrong_code_and_a_new_one_signs_in(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    a_code_across_a_change_of_length(opts, db, 6, 8).await;
}

#[sqlx::test]
async fn a_code_sent_before_otp_length_shrank_is_a_wrong_code_and_a_new_one_signs_in(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    a_code_across_a_change_of_length(opts, db, 8, 6).await;
}

#[sqlx::test]
async fn tries_used_before_a_change_of_otp_max_attempts_count_against_the_new_budget(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let email = "ada@example.com";
    let with_budget = |attempts: u32| {
        let mut config = smtp_config(db.clone(), &sink);
        config.login.otp_max_attempts = attempts;
        config
    };

    // Four wrong tries out of five.
    let before = TestApp::spawn_with(with_budget(5)).await;
    assert_eq!(before.send_code(email).await.status, 200);
    let code = last_code(&sink, email);
    for _ in 0..4 {
        assert_generic_401(&before.verify_code(email, &wrong(&code)).await);
    }
    before.stop().await;

    // Lowered to three, below the four already used: the budget is spent,
    // even for the right code, which is not counted as a try.
    let lowered = TestApp::spawn_with(with_budget(3)).await;
    assert_generic_401(&lowered.verify_code(email, &code).await);
    assert_eq!(
        detail_reasons(&pool).await.last().map(String::as_str),
        Some("Max attempts exceeded")
    );
    lowered.stop().await;

    // Raised to ten: six tries are left, and the right code signs in.
    let raised = TestApp::spawn_with(with_budget(10)).await;
    let resp = raised.verify_code(email, &code).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

/// `config` with another `JWT_SECRET`, and the code pepper the reader derives
/// from it (`OTP_SECRET` unset), as a restart with that secret would have.
fn with_jwt_secret(mut config: Config, secret: &str) -> Config {
    let read = Config::from_lookup(|k| (k == "JWT_SECRET").then(|| secret.to_owned())).unwrap();
    config.tokens.jwt_secret = read.tokens.jwt_secret;
    config.login.otp_secret = read.login.otp_secret;
    config
}

#[sqlx::test]
async fn a_new_jwt_secret_refuses_old_access_tokens_and_codes_while_sessions_and_links_go_on(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let before = TestApp::spawn_with(smtp_config(db.clone(), &sink)).await;
    let pair = before.sign_in(&sink, "ada@example.com").await;
    assert_eq!(before.send_code("bob@example.com").await.status, 200);
    let code = last_code(&sink, "bob@example.com");
    assert_eq!(before.send_magic_link("cy@example.com", None).await.status, 200);
    let link = crate::mailbox::token_of(&sink.last_to("cy@example.com").link());
    before.stop().await;

    let config = with_jwt_secret(smtp_config(db, &sink), "another-test-secret-fedcba9876543210");
    let after = TestApp::spawn_with(config).await;
    // The old access token no longer verifies.
    after
        .bearer(Method::GET, "/auth/me", at(&pair))
        .await
        .assert_error(401, "invalid_token");
    // The refresh token is found by its SHA-256: the session goes on, under the new secret.
    let rotated = after.refresh(rt(&pair)).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let me = after.bearer(Method::GET, "/auth/me", at(&rotated.json)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let again = after.refresh(rt(&rotated.json)).await;
    assert_eq!(again.status, 200, "the child chains on: {}", again.text);
    // A code hashed with the old pepper is a wrong code; a new one works.
    assert_generic_401(&after.verify_code("bob@example.com", &code).await);
    assert_eq!(detail_reasons(&pool).await, ["Invalid code"]);
    assert_eq!(after.send_code("bob@example.com").await.status, 200);
    let resp = after
        .verify_code("bob@example.com", &last_code(&sink, "bob@example.com"))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    // A link is stored by its plain SHA-256: it still signs in.
    let resp = after.verify_magic_link(&link).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

/// The `alg` of an access token's header.
fn alg(pair: &Value) -> jsonwebtoken::Algorithm {
    jsonwebtoken::decode_header(at(pair)).unwrap().alg
}

#[sqlx::test]
async fn switching_to_eddsa_and_back_refuses_the_other_kind_of_access_token_and_sessions_go_on(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    use jsonwebtoken::Algorithm::{EdDSA, HS256};
    let dir = temp_dir("restart-keys");
    let (private, _, _) = sesame::auth::jwt::generate_ed25519().unwrap();
    std::fs::write(dir.join("key.pem"), private).unwrap();
    let sink = SmtpSink::start().await;
    let hs256 = || smtp_config(db.clone(), &sink);
    let eddsa = || {
        let mut config = hs256();
        config.tokens.jwt_private_key_file = Some(dir.join("key.pem"));
        config
    };

    let before = TestApp::spawn_with(hs256()).await;
    let first = before.sign_in(&sink, "ada@example.com").await;
    assert_eq!(alg(&first), HS256);
    before.stop().await;

    let switched = TestApp::spawn_with(eddsa()).await;
    switched
        .bearer(Method::GET, "/auth/me", at(&first))
        .await
        .assert_error(401, "invalid_token");
    let second = switched.refresh(rt(&first)).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(alg(&second.json), EdDSA);
    let me = switched.bearer(Method::GET, "/auth/me", at(&second.json)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    switched.stop().await;

    let back = TestApp::spawn_with(hs256()).await;
    back.bearer(Method::GET, "/auth/me", at(&second.json))
        .await
        .assert_error(401, "invalid_token");
    let third = back.refresh(rt(&second.json)).await;
    assert_eq!(third.status, 200, "{}", third.text);
    assert_eq!(alg(&third.json), HS256);
    let me = back.bearer(Method::GET, "/auth/me", at(&third.json)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let _ = std::fs::remove_dir_all(dir);
}
