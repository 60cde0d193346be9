//! What the audit tests share: counting the rows of one event, and a known set of
//! events, some outside the last 24 hours, to report on and clean up.

use serde_json::{Value, json};
use sqlx::PgPool;

/// How many rows of `event` the audit table holds.
pub(crate) async fn count_events(pool: &PgPool, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Known events: inside the last 24 hours unless `hours_ago` says otherwise.
pub(crate) async fn insert_events(pool: &PgPool) {
    let rows: &[(&str, bool, Option<&str>, Value, i32)] = &[
        ("otp.verification", true, None, json!({}), 1),
        ("otp.verification", true, None, json!({}), 2),
        ("otp.verification", false, Some("Invalid code"), json!({}), 2),
        ("magic_link.verification", true, None, json!({}), 3),
        ("magic_link.verification", false, Some("Link expired"), json!({}), 3),
        (
            "otp.verification.detail",
            false,
            Some("Invalid code"),
            json!({ "attempts": 1 }),
            2,
        ),
        (
            "otp.verification.detail",
            false,
            Some("Invalid code"),
            json!({ "attempts": 2 }),
            2,
        ),
        ("otp.verification.detail", false, Some("OTP expired"), json!({}), 4),
        ("auth.login", true, None, json!({ "method": "otp" }), 1),
        ("auth.login", true, None, json!({ "method": "otp" }), 2),
        ("auth.login", true, None, json!({ "method": "magic-link" }), 3),
        ("token.refresh", true, None, json!({}), 1),
        ("token.refresh", true, None, json!({}), 5),
        ("token.refresh", true, None, json!({}), 6),
        ("token.refresh", false, Some("Refresh token reused"), json!({}), 6),
        (
            "token.reuse_detected",
            false,
            Some("Refresh token reused"),
            json!({ "sessionId": "s1" }),
            6,
        ),
        (
            "token.reuse_detected",
            false,
            Some("Refresh token reused"),
            json!({ "sessionId": "s1" }),
            7,
        ),
        (
            "rate_limit.exceeded",
            false,
            Some("rate limited"),
            json!({ "limit": "send_per_address" }),
            1,
        ),
        // Outside the window: must not be counted.
        ("auth.login", true, None, json!({ "method": "otp" }), 30),
        ("otp.verification", false, Some("Invalid code"), json!({}), 48),
        (
            "token.reuse_detected",
            false,
            Some("Refresh token reused"),
            json!({ "sessionId": "s9" }),
            25,
        ),
    ];
    for (event, success, error, metadata, hours_ago) in rows {
        sqlx::query(
            "INSERT INTO audit_events (event, success, error, metadata, created_at)
             VALUES ($1, $2, $3, $4, now() - make_interval(hours => $5))",
        )
        .bind(event)
        .bind(success)
        .bind(error)
        .bind(metadata)
        .bind(hours_ago)
        .execute(pool)
        .await
        .unwrap();
    }
}
