//! The `user.created` event: recorded once, by the first sign-in of an address,
//! in the transaction that creates the user.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::spawn_with_smtp;

#[sqlx::test]
async fn a_first_sign_in_records_user_created_once_with_the_user(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;

    let first = app.sign_in(&sink, "ada@example.com").await;
    app.sign_in(&sink, "ada@example.com").await;

    let rows: Vec<(Option<uuid::Uuid>, Option<String>, bool, serde_json::Value)> = sqlx::query_as(
        "SELECT user_id, email, success, metadata FROM audit_events WHERE event = 'user.created' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "only the first sign-in creates the user: {rows:?}");
    let (user_id, email, success, metadata) = &rows[0];
    assert_eq!(user_id.map(|u| u.to_string()).as_deref(), first["user"]["id"].as_str());
    assert_eq!(email.as_deref(), Some("ada@example.com"));
    assert!(success);
    assert_eq!(metadata["method"], "otp");

    // Recorded before the sign-in's auth.login, in the same transaction (adjacent ids).
    let order: Vec<String> = sqlx::query_scalar("SELECT event FROM audit_events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let at = order.iter().position(|e| e == "user.created").unwrap();
    assert_eq!(order[at + 1], "auth.login", "{order:?}");
}
