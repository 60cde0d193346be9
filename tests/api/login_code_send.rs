//! Sending a one-time code: invalid addresses are refused; new, existing and
//! (with signup off) unknown addresses get the same answer; a send that fails is
//! a recorded 502 whose code never signs in.

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, resend_config, smtp_config, spawn_with_smtp, users_and_sessions},
    login_code_support::{assert_generic_401, detail_reasons, events},
    mailbox::{ResendStandIn, SmtpSink},
};

#[sqlx::test]
async fn invalid_addresses_are_400_invalid_email(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    for bad in [
        "",
        "nobody",
        "a@b",
        "x@example.com\r\nBcc: victim@example.com",
        &"a".repeat(300),
    ] {
        app.send_code(bad).await.assert_error(400, "invalid_email");
        app.verify_code(bad, "123456").await.assert_error(400, "invalid_email");
        app.send_magic_link(bad, None).await.assert_error(400, "invalid_email");
    }
    assert!(sink.messages().is_empty());
}

#[sqlx::test]
async fn new_and_existing_addresses_get_the_same_answer(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    app.send_code("old@example.com").await;
    let code = sink.last_to("old@example.com").code();
    assert_eq!(app.verify_code("old@example.com", &code).await.status, 200);

    let existing = app.send_code("old@example.com").await;
    let new = app.send_code("new@example.com").await;
    assert_eq!((existing.status, &existing.json), (new.status, &new.json));
    let existing = app.send_magic_link("old@example.com", None).await;
    let new = app.send_magic_link("new@example.com", None).await;
    assert_eq!((existing.status, &existing.json), (new.status, &new.json));
}

#[sqlx::test]
async fn with_signup_off_unknown_addresses_get_nothing_but_the_same_answer(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    sqlx::query("INSERT INTO users (id, email) VALUES (gen_random_uuid(), 'member@example.com')")
        .execute(&pool)
        .await
        .unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.login.allow_signup = false;
    let app = TestApp::spawn_with(config).await;

    let member = app.send_code("member@example.com").await;
    let stranger = app.send_code("stranger@example.com").await;
    assert_eq!((member.status, &member.json), (stranger.status, &stranger.json));
    assert_eq!(sink.to("member@example.com").len(), 1);
    assert!(sink.to("stranger@example.com").is_empty());
    let link = app.send_magic_link("stranger@example.com", None).await;
    assert_eq!(link.status, 200);
    assert!(sink.to("stranger@example.com").is_empty());
    let codes: i64 = sqlx::query_scalar("SELECT count(*) FROM otp_codes WHERE email = 'stranger@example.com'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(codes, 0);
}

#[sqlx::test]
async fn a_failed_send_is_502_recorded_and_leaves_no_usable_code(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    sink.refuse_messages(true);

    app.send_code("ada@example.com").await.assert_error(502, "email_failed");
    let (event, success, error) = events(&pool).await.pop().unwrap();
    assert_eq!((event.as_str(), success), ("otp.sent", false));
    assert!(error.unwrap().contains("554"), "the SMTP reason is recorded");
    let consumed: bool = sqlx::query_scalar("SELECT consumed_at IS NOT NULL FROM otp_codes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(consumed, "the code that never arrived cannot be used");

    app.send_magic_link("ada@example.com", None)
        .await
        .assert_error(502, "email_failed");
    let (event, success, _) = events(&pool).await.pop().unwrap();
    assert_eq!((event.as_str(), success), ("magic_link.sent", false));
}

#[sqlx::test]
async fn tls_required_refuses_a_server_without_starttls(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.email.smtp_url = Some(sesame::config::Secret::new(format!("{}?tls=required", sink.url())));
    let app = TestApp::spawn_with(config).await;
    app.send_code("ada@example.com").await.assert_error(502, "email_failed");
    assert!(sink.messages().is_empty(), "nothing is sent in the clear");
    let (event, success, error) = events(&pool).await.pop().unwrap();
    assert_eq!((event.as_str(), success), ("otp.sent", false));
    assert!(error.unwrap().contains("STARTTLS"), "the reason is recorded");
}

#[sqlx::test]
async fn a_code_whose_delivery_failed_never_signs_in(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let resend = ResendStandIn::start().await;
    let app = TestApp::spawn_with(resend_config(db, &resend)).await;

    resend.answer_with(500);
    app.send_code("ada@example.com").await.assert_error(502, "email_failed");
    // The provider refused the message, but the stand-in kept it: the code
    // that never arrived, as someone who intercepted it would hold it.
    let tried = resend.requests().pop().expect("sesame tried to send the code");
    assert_eq!(tried.body["to"], json!(["ada@example.com"]));
    let subject = tried.body["subject"].as_str().unwrap();
    let code = subject.strip_prefix("sesame: Your sign-in code: ").expect(subject);
    assert_generic_401(&app.verify_code("ada@example.com", code).await);
    assert_eq!(detail_reasons(&pool).await, ["No OTP found for email"]);
    assert_eq!(users_and_sessions(&pool).await, (0, 0), "nobody signed in");

    // The control: the same steps with a delivery that succeeds sign in.
    resend.answer_with(200);
    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    let delivered = resend.requests().pop().unwrap();
    let subject = delivered.body["subject"].as_str().unwrap();
    let code = subject.strip_prefix("sesame: Your sign-in code: ").expect(subject);
    let resp = app.verify_code("ada@example.com", code).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}
