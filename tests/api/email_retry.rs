//! A transient SMTP failure (a 4xx reply, a dropped connection) is tried once
//! more on a fresh connection within the request; a permanent one (5xx) is
//! not. The `*.sent` event says how many tries and the last reply code.

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{helpers::spawn_with_smtp, mailbox::SmtpSink};

/// The success and metadata of the latest `event`.
async fn last_event(pool: &PgPool, event: &str) -> (bool, Value) {
    let (success, metadata): (bool, Option<Value>) =
        sqlx::query_as("SELECT success, metadata FROM audit_events WHERE event = $1 ORDER BY id DESC LIMIT 1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
    (success, metadata.unwrap_or(Value::Null))
}

#[sqlx::test]
async fn one_421_is_tried_again_on_a_fresh_connection_and_delivered(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    sink.busy_for(1);
    let resp = app.send_code("ada@example.com").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let code = sink.last_to("ada@example.com").code();
    assert_eq!(sink.connections(), 2, "the second try is on a new connection");
    let (success, meta) = last_event(&pool, "otp.sent").await;
    assert!(success);
    assert_eq!(
        (meta["attempts"].clone(), meta["replyCode"].clone()),
        (json!(2), json!(250)),
        "{meta}"
    );
    assert_eq!(app.verify_code("ada@example.com", &code).await.status, 200);

    // A delivery at the first try says so too.
    let resp = app.send_magic_link("bob@example.com", None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let (_, meta) = last_event(&pool, "magic_link.sent").await;
    assert_eq!(
        (meta["attempts"].clone(), meta["replyCode"].clone()),
        (json!(1), json!(250)),
        "{meta}"
    );
}

#[sqlx::test]
async fn a_server_still_busy_at_the_second_try_is_502(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    sink.busy_for(3);
    app.send_magic_link("ada@example.com", None)
        .await
        .assert_error(502, "email_failed");
    assert_eq!(sink.connections(), 2, "one retry, no more");
    let (success, meta) = last_event(&pool, "magic_link.sent").await;
    assert!(!success);
    assert_eq!(
        (meta["attempts"].clone(), meta["replyCode"].clone()),
        (json!(2), json!(421)),
        "{meta}"
    );
}

#[sqlx::test]
async fn a_permanent_refusal_is_not_tried_again(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    sink.refuse_recipients(true);
    app.send_code("ada@example.com").await.assert_error(502, "email_failed");
    assert_eq!(sink.connections(), 1);
    let (_, meta) = last_event(&pool, "otp.sent").await;
    assert_eq!(
        (meta["attempts"].clone(), meta["replyCode"].clone()),
        (json!(1), json!(550)),
        "{meta}"
    );
}

#[sqlx::test]
async fn a_refused_connection_is_tried_twice_then_502(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    // A port nothing listens on.
    let sink = SmtpSink::start().await;
    let mut config = crate::helpers::smtp_config(db, &sink);
    let port = crate::helpers::free_port();
    config.email.smtp_url = Some(sesame::config::Secret::new(format!("smtp://127.0.0.1:{port}")));
    let app = crate::helpers::TestApp::spawn_with(config).await;
    app.send_code("ada@example.com").await.assert_error(502, "email_failed");
    let (_, meta) = last_event(&pool, "otp.sent").await;
    assert_eq!(meta["attempts"], json!(2), "{meta}");
    assert!(meta.get("replyCode").is_none(), "{meta}");
}
