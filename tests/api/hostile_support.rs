//! What the hostile-input tests share: every JSON endpoint with a valid body, a
//! check that the server keeps serving, a signed-in user whose credentials they
//! tamper with, the footprint that shows whether a request did any work, and a
//! POST they can find again in the audit trail.

use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    helpers::{TestApp, TestResponse},
    mailbox::{SmtpSink, token_of},
};

/// Every JSON endpoint with a valid body of its own.
pub(crate) fn endpoints() -> Vec<(&'static str, Value)> {
    vec![
        ("/auth/send-code", json!({ "email": "ada@example.com" })),
        (
            "/auth/verify-code",
            json!({ "email": "ada@example.com", "code": "123456" }),
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": "ada@example.com", "redirectTo": "https://app.example.com/x" }),
        ),
        ("/auth/verify-magic-link", json!({ "token": "A".repeat(43) })),
        ("/auth/refresh", json!({ "refreshToken": "A".repeat(43) })),
        ("/auth/logout", json!({ "refreshToken": "A".repeat(43) })),
    ]
}

/// Asserts that the server still answers `/health` with 200.
pub(crate) async fn still_serving(app: &TestApp) {
    assert_eq!(app.health().await.status, 200, "the server keeps serving");
}

/// The tables a request can write (everything but `audit_events`, counted apart).
const WRITTEN: [&str; 6] = [
    "users",
    "otp_codes",
    "magic_links",
    "sessions",
    "refresh_tokens",
    "rate_limits",
];

/// What a request that does work leaves behind: every row of the tables requests
/// write (as text), the number of audit events, and the number of emails sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Footprint {
    pub(crate) rows: Vec<(&'static str, Vec<String>)>,
    pub(crate) audit_events: i64,
    pub(crate) emails: usize,
}

async fn rows_of(pool: &PgPool, table: &str) -> Vec<String> {
    let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// What the app has left behind so far (see [`Footprint`]).
pub(crate) async fn footprint(pool: &PgPool, sink: &SmtpSink) -> Footprint {
    let mut rows = Vec::new();
    for table in WRITTEN {
        rows.push((table, rows_of(pool, table).await));
    }
    let audit_events = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(pool)
        .await
        .unwrap();
    Footprint {
        rows,
        audit_events,
        emails: sink.messages().len(),
    }
}

/// What a signed-in user holds: a session (token pair), a live code and an unused link.
pub(crate) struct Seeded {
    pub(crate) email: &'static str,
    pair: Value,
    pub(crate) code: String,
    pub(crate) link_token: String,
}

impl Seeded {
    pub(crate) fn refresh_token(&self) -> &str {
        self.pair["refreshToken"].as_str().unwrap()
    }

    pub(crate) fn access_token(&self) -> &str {
        self.pair["token"].as_str().unwrap()
    }
}

/// Signs ada in, then sends her a code and a link that stay unused (see [`Seeded`]).
pub(crate) async fn seed(app: &TestApp, sink: &SmtpSink) -> Seeded {
    let email = "ada@example.com";
    let pair = app.sign_in(sink, email).await;
    assert_eq!(app.send_code(email).await.status, 200);
    let code = sink.last_to(email).code();
    assert_eq!(app.send_magic_link(email, None).await.status, 200);
    let link_token = token_of(&sink.last_to(email).link());
    Seeded {
        email,
        pair,
        code,
        link_token,
    }
}

/// A POST with its own `User-Agent` and `X-Request-Id` (to find its audit rows again).
pub(crate) async fn post_as(
    app: &TestApp,
    path: &str,
    body: &Value,
    user_agent: &HeaderValue,
    request_id: &str,
) -> TestResponse {
    let resp = app
        .client
        .post(app.url(path))
        .header("user-agent", user_agent.clone())
        .header("x-request-id", request_id)
        .json(body)
        .send()
        .await
        .unwrap();
    TestResponse::from(resp).await
}
