//! Erasing a person through the admin API, and reading the audit trail over HTTP.

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    admin_users::create_id,
    helpers::{TestApp, TestResponse, smtp_config, spawn_with_smtp},
    mailbox::SmtpSink,
};

const ERASED: &str = "erase.me@example.com";
const IP_CODE: &str = "203.0.113.7";
const IP_LINK: &str = "198.51.100.23";

/// A POST as if from client `ip` (through a trusted proxy).
async fn post_from(app: &TestApp, path: &str, body: &Value, ip: &str) -> TestResponse {
    let resp = app
        .client
        .post(app.url(path))
        .header("x-forwarded-for", ip)
        .json(body)
        .send()
        .await
        .unwrap();
    TestResponse::from(resp).await
}

/// Signs `email` in with a code, from `ip`; returns the token pair.
async fn sign_in_from(app: &TestApp, sink: &SmtpSink, email: &str, ip: &str) -> Value {
    let sent = post_from(app, "/auth/send-code", &json!({ "email": email }), ip).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let code = sink.last_to(email).code();
    let resp = post_from(app, "/auth/verify-code", &json!({ "email": email, "code": code }), ip).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json
}

/// The rate-limit subject the limiter counts `key` of `kind` under.
fn subject(kind: &str, key: &str) -> Vec<u8> {
    Sha256::digest(format!("{kind}:{key}").as_bytes()).to_vec()
}

/// Rows of every table (as text) that mention `needle`, as "table: row".
async fn rows_mentioning(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 7, "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let sql = format!(r#"SELECT t::text FROM "{table}" t WHERE t::text ILIKE '%' || $1 || '%'"#);
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needle)
            .fetch_all(pool)
            .await
            .unwrap();
        found.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
    }
    found
}

async fn subjects_present(pool: &PgPool, subjects: &[Vec<u8>]) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT subject) FROM rate_limits WHERE subject = ANY($1)")
        .bind(subjects)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn deleting_a_user_erases_the_address_and_its_ips_from_every_table(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.server.trust_proxy_headers = true;
    config.rate_limits.enabled = true;
    config.rate_limits.send_interval = std::time::Duration::ZERO;
    let app = TestApp::spawn_with(config).await;
    let pool = app.state.db.pool().clone();

    let pair = sign_in_from(&app, &sink, ERASED, IP_CODE).await;
    let id = pair["user"]["id"].as_str().unwrap().to_owned();
    // A live code, a wrong try, a live link from another IP.
    post_from(&app, "/auth/send-code", &json!({ "email": ERASED }), IP_CODE).await;
    post_from(
        &app,
        "/auth/verify-code",
        &json!({ "email": ERASED, "code": "000000" }),
        IP_CODE,
    )
    .await;
    let link = post_from(&app, "/auth/send-magic-link", &json!({ "email": ERASED }), IP_LINK).await;
    assert_eq!(link.status, 200, "{}", link.text);
    // Someone else, who must be untouched.
    let other = sign_in_from(&app, &sink, "keep@example.com", "192.0.2.1").await;

    let subjects = [
        subject("address", ERASED),
        subject("ip", IP_CODE),
        subject("ip", IP_LINK),
    ];
    assert_eq!(subjects_present(&pool, &subjects).await, 3, "the limiter counted them");
    for needle in [ERASED, IP_CODE, IP_LINK] {
        assert!(
            !rows_mentioning(&pool, needle).await.is_empty(),
            "{needle} is stored before"
        );
    }

    let resp = app.admin(Method::DELETE, &format!("/admin/users/{id}"), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["sessions"], 1);
    assert_eq!(
        (resp.json["codes"].as_u64(), resp.json["links"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(resp.json["auditRows"].as_u64().unwrap() >= 5, "{}", resp.text);

    for needle in [ERASED, IP_CODE, IP_LINK] {
        let left = rows_mentioning(&pool, needle).await;
        assert!(left.is_empty(), "{needle} is still stored: {left:#?}");
    }
    assert_eq!(subjects_present(&pool, &subjects).await, 0);
    // The record remains, pseudonymised: the user id, no address, no IP.
    let (rows, named): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE email IS NOT NULL OR ip IS NOT NULL)
         FROM audit_events WHERE user_id = $1::uuid AND event <> 'admin.user.deleted'",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(rows >= 5 && named == 0, "{rows} rows, {named} still naming");
    let deleted: (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT email, metadata->>'actor' FROM audit_events WHERE event = 'admin.user.deleted' AND user_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(deleted, (None, Some("admin".to_owned())));

    // Gone for the API, and its tokens with it.
    app.admin(Method::GET, &format!("/admin/users/{id}"), None)
        .await
        .assert_error(404, "not_found");
    app.admin(Method::DELETE, &format!("/admin/users/{id}"), None)
        .await
        .assert_error(404, "not_found");
    app.refresh(pair["refreshToken"].as_str().unwrap())
        .await
        .assert_error(401, "invalid_refresh_token");
    // The other person is untouched.
    assert_eq!(app.refresh(other["refreshToken"].as_str().unwrap()).await.status, 200);
    assert!(!rows_mentioning(&pool, "keep@example.com").await.is_empty());
    // The address may sign up again, as a new user.
    let again = sign_in_from(&app, &sink, ERASED, IP_CODE).await;
    assert_ne!(again["user"]["id"], id.as_str());
}

#[sqlx::test]
async fn the_audit_trail_pages_newest_first_with_filters(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let user_id = pair["user"]["id"].as_str().unwrap();
    let created = create_id(&app, "bob@example.com").await;
    let list = |q: String| {
        let app = &app;
        async move { app.admin(Method::GET, &format!("/admin/audit?{q}"), None).await }
    };
    let all = list(String::new()).await;
    assert_eq!(all.status, 200, "{}", all.text);
    let events = all.json["events"].as_array().unwrap();
    assert_eq!(events[0]["event"], "admin.user.created", "newest first");
    assert_eq!(events[0]["userId"], created.as_str());
    assert_eq!(events[0]["metadata"]["actor"], "admin");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    for field in ["id", "event", "success", "createdAt"] {
        assert!(!events[0][field].is_null(), "{field}");
    }

    let logins = list("event=auth.login".to_owned()).await;
    assert_eq!(logins.json["events"].as_array().unwrap().len(), 1);
    let mine = list(format!("userId={user_id}")).await;
    assert!(
        mine.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["userId"] == user_id)
    );
    let by_email = list("email=ADA%40example.com".to_owned()).await;
    let by_email = by_email.json["events"].as_array().unwrap();
    assert!(!by_email.is_empty() && by_email.iter().all(|e| e["email"] == "ada@example.com"));
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
            .replace('+', "%2B")
    };
    let after = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let window = list(format!("since={}&until={}", fmt(before), fmt(after))).await;
    assert_eq!(window.json["events"], all.json["events"]);
    let future = list(format!("since={}", fmt(after))).await;
    assert_eq!(future.json["events"], json!([]));
    assert_eq!(list(format!("until={}", fmt(before))).await.json["events"], json!([]));

    // Pages of 2, while new events are recorded: each event once, in order.
    let total = ids.len();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".to_owned(),
        };
        let page = list(q).await;
        assert_eq!(page.status, 200, "{}", page.text);
        if cursor.is_none() {
            app.logout(&"M".repeat(43)).await; // a newer event
        }
        seen.extend(
            page.json["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match page.json["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "{total} events");
    for bad in [
        "limit=0",
        "limit=201",
        "cursor=x",
        "since=yesterday",
        "userId=12",
        "event=%00",
        "email=a%00",
    ] {
        list(bad.to_owned()).await.assert_error(400, "invalid_request");
    }
    // Reads are not audited.
    let again = list(String::new()).await;
    assert_eq!(again.json["events"].as_array().unwrap().len(), total + 1);
}
