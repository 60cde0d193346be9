//! Hostile input: every request gets a 4xx with the error envelope (never a 5xx),
//! and the server keeps serving.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, TestResponse, spawn_with_smtp, test_config};

/// Every JSON endpoint with a valid body of its own.
fn endpoints() -> Vec<(&'static str, Value)> {
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

fn assert_4xx(resp: &TestResponse, what: &str) {
    assert!(
        (400..500).contains(&resp.status),
        "{what}: {} {}",
        resp.status,
        resp.text
    );
    assert_eq!(resp.json["success"], false, "{what}: {}", resp.text);
    assert!(
        resp.json["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: {}",
        resp.text
    );
}

async fn still_serving(app: &TestApp) {
    assert_eq!(app.health().await.status, 200, "the server keeps serving");
}

#[sqlx::test]
async fn malformed_truncated_mistyped_and_null_bodies_are_4xx(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, _sink) = spawn_with_smtp(db).await;
    for (path, valid) in endpoints() {
        let text = valid.to_string();
        let mut bodies: Vec<Vec<u8>> = vec![
            text.as_bytes()[..text.len() / 2].to_vec(),
            text.replace(':', "").into_bytes(),
            b"{\"a\":}".to_vec(),
            b"[]".to_vec(),
            b"null".to_vec(),
            b"123".to_vec(),
            b"\"str\"".to_vec(),
            b"{}".to_vec(),
            b"{\"email\": \"\xff\xfe\"}".to_vec(),
            b"\x00\x00\x00".to_vec(),
        ];
        for key in valid.as_object().unwrap().keys() {
            for bad in [json!(null), json!(1), json!(true), json!([]), json!({}), json!(1.5e300)] {
                if key == "redirectTo" && bad.is_null() {
                    continue; // optional: null means absent
                }
                let mut body = valid.clone();
                body[key] = bad;
                bodies.push(body.to_string().into_bytes());
            }
        }
        for body in bodies {
            let resp = app.post_raw(path, Some("application/json"), body.clone()).await;
            assert_4xx(&resp, &format!("{path} {:?}", String::from_utf8_lossy(&body)));
        }
    }
    still_serving(&app).await;
}

#[sqlx::test]
async fn duplicated_keys_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let body = br#"{"email":"ada@example.com","email":"eve@example.com"}"#.to_vec();
    let resp = app.post_raw("/auth/send-code", Some("application/json"), body).await;
    resp.assert_error(400, "invalid_json");
    assert!(resp.text.contains("duplicated key"), "{}", resp.text);
    let nested = br#"{"token":"x","x":{"a":1,"a":2}}"#.to_vec();
    app.post_raw("/auth/verify-magic-link", Some("application/json"), nested)
        .await
        .assert_error(400, "invalid_json");
}

#[sqlx::test]
async fn huge_values_and_bodies_are_refused_before_any_work(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let long = "a".repeat(10_000);
    let cases = [
        ("/auth/send-code", json!({ "email": format!("{long}@example.com") })),
        ("/auth/verify-code", json!({ "email": "ada@example.com", "code": long })),
        (
            "/auth/send-magic-link",
            json!({ "email": "ada@example.com", "redirectTo": format!("https://x.example/{long}") }),
        ),
        ("/auth/verify-magic-link", json!({ "token": long })),
        ("/auth/refresh", json!({ "refreshToken": long })),
        ("/auth/logout", json!({ "refreshToken": long })),
    ];
    for (path, body) in cases {
        assert_4xx(&app.post_json(path, &body).await, path);
    }
    let two_mib = vec![b' '; 2 * 1024 * 1024];
    for (path, _) in endpoints() {
        app.post_raw(path, Some("application/json"), two_mib.clone())
            .await
            .assert_error(413, "payload_too_large");
    }
    assert!(sink.messages().is_empty());
    let rows: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM otp_codes) + (SELECT count(*) FROM magic_links)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing was stored");
    still_serving(&app).await;
}

#[sqlx::test]
async fn nul_bytes_and_control_characters_never_reach_the_database_as_errors(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.login.redirect_allow_list = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;
    let nul = "\u{0}";
    let cases = [
        ("/auth/send-code", json!({ "email": format!("ada{nul}@example.com") })),
        (
            "/auth/verify-code",
            json!({ "email": "ada@example.com", "code": format!("123{nul}456") }),
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": "ada@example.com", "redirectTo": format!("https://app.example.com/a{nul}b\r\nx") }),
        ),
        (
            "/auth/verify-magic-link",
            json!({ "token": format!("{}{nul}", "A".repeat(42)) }),
        ),
        (
            "/auth/refresh",
            json!({ "refreshToken": format!("{}{nul}", "A".repeat(42)) }),
        ),
        ("/auth/logout", json!({ "refreshToken": nul })),
    ];
    for (path, body) in cases {
        let resp = app.post_json(path, &body).await;
        assert!(resp.status < 500, "{path}: {} {}", resp.status, resp.text);
    }
    still_serving(&app).await;
}

#[sqlx::test]
async fn sql_in_every_string_field_is_just_data(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, _sink) = spawn_with_smtp(db).await;
    let injections = [
        "' OR '1'='1",
        "'; DROP TABLE users; --",
        "\"; SELECT pg_sleep(10); --",
        "a@example.com' UNION SELECT token_hash FROM refresh_tokens --",
        "$1$2::text",
    ];
    for (path, valid) in endpoints() {
        for key in valid.as_object().unwrap().keys() {
            for sql in injections {
                let mut body = valid.clone();
                body[key] = json!(sql);
                let started = Instant::now();
                let resp = app.post_json(path, &body).await;
                assert!(resp.status < 500, "{path} {key}={sql}: {}", resp.text);
                assert!(started.elapsed() < Duration::from_secs(5), "no injected sleep ran");
            }
        }
    }
    for table in ["users", "sessions", "refresh_tokens", "audit_events"] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists, "{table} is still there");
    }
}

#[sqlx::test]
async fn a_huge_authorization_header_is_401(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let huge = format!("{}.{}.{}", "e".repeat(16_000), "e".repeat(16_000), "e".repeat(100));
    app.bearer(Method::GET, "/auth/me", &huge)
        .await
        .assert_error(401, "invalid_token");
    let resp = app
        .client
        .get(app.url("/auth/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    still_serving(&app).await;
}

#[sqlx::test]
async fn a_body_that_never_finishes_is_timed_out_while_others_are_served(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.server.request_body_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(config).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let head = "POST /auth/send-code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":";
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // Meanwhile others are served at once.
    let started = Instant::now();
    still_serving(&app).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not held up by the slow clients"
    );

    for mut stream in slow {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server closed the slow connection");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    }
    still_serving(&app).await;
}
