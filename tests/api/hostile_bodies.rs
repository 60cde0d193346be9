//! Hostile requests by their shape: malformed, truncated, mistyped and
//! duplicated-key bodies, too-long fields and too-large bodies, a body that never
//! finishes and a huge `Authorization` header each get a 4xx with the error
//! envelope (never a 5xx), and the server keeps serving.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    helpers::{TestApp, TestResponse, spawn_with_smtp, test_config},
    hostile_support::{endpoints, footprint, seed, still_serving},
};

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

/// Waits until the hashing threads have drained the plug (its jobs return as
/// soon as the sender is dropped): a probe job is accepted and has run. On a
/// loaded machine that is not at once.
async fn unplugged(app: &TestApp) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.state.hash_queue.run(|| ()).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the plugged hash queue never drained"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fills the app's code-hashing queue with jobs that wait until the returned sender
/// is dropped. While it is held, a request that would hash a code answers 503
/// `overloaded` at once: one that answers anything else hashed nothing.
async fn plug_hash_queue(app: &TestApp) -> std::sync::mpsc::Sender<()> {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(Mutex::new(wait));
    // Twice: the hashing threads take their first jobs off the queue meanwhile.
    for _ in 0..2 {
        loop {
            let wait = wait.clone();
            let job = app.state.hash_queue.run(move || {
                let _ = wait.lock().map(|w| w.recv());
            });
            // A refused job fails at its first poll; a queued one stays pending.
            match tokio::time::timeout(Duration::ZERO, job).await {
                Ok(refused) => {
                    assert!(refused.is_err(), "a plug job cannot finish while plugged");
                    break;
                }
                Err(_queued) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release
}

/// `body` as JSON, then spaces up to 2 MiB: still valid JSON, 32 times the limit.
fn padded(body: &Value) -> Vec<u8> {
    let mut bytes = body.to_string().into_bytes();
    bytes.resize(2 * 1024 * 1024, b' ');
    bytes
}

/// Too-long fields and too-large bodies are refused before anything else happens.
/// The refused requests carry the live credentials of a signed-in user (padded or
/// lengthened), so that work on any of them would show: no row of any table
/// changes, no audit event is recorded, no email is sent, and no code is hashed
/// (the hash queue is plugged: a request that hashed would answer 503). Then the
/// same values unpadded do work, so the observation could have seen it.
#[sqlx::test]
async fn huge_values_and_bodies_are_refused_before_any_work(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let ada = seed(&app, &sink).await;
    let rt = ada.refresh_token();
    let valid = [
        ("/auth/send-code", json!({ "email": ada.email })),
        ("/auth/verify-code", json!({ "email": ada.email, "code": ada.code })),
        ("/auth/send-magic-link", json!({ "email": ada.email })),
        ("/auth/verify-magic-link", json!({ "token": ada.link_token })),
        ("/auth/refresh", json!({ "refreshToken": rt })),
        ("/auth/logout", json!({ "refreshToken": rt })),
    ];
    let long = "a".repeat(10_000);
    let too_long = [
        ("/auth/send-code", json!({ "email": format!("{long}@example.com") })),
        (
            "/auth/verify-code",
            json!({ "email": ada.email, "code": format!("{}{long}", ada.code) }),
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": ada.email, "redirectTo": format!("https://x.example/{long}") }),
        ),
        (
            "/auth/verify-magic-link",
            json!({ "token": format!("{}{long}", ada.link_token) }),
        ),
        ("/auth/refresh", json!({ "refreshToken": format!("{rt}{long}") })),
        ("/auth/logout", json!({ "refreshToken": format!("{rt}{long}") })),
    ];
    let before = footprint(&pool, &sink).await;
    let release = plug_hash_queue(&app).await;

    // `invalid_request`: refused by the field's length limit, before the handler
    // (which would answer `invalid_email`, `invalid_code`, `invalid_redirect`, …).
    for (path, body) in &too_long {
        app.post_json(path, body).await.assert_error(400, "invalid_request");
    }
    for (path, body) in &valid {
        app.post_raw(path, Some("application/json"), padded(body))
            .await
            .assert_error(413, "payload_too_large");
    }
    // The bearer operations refuse a large body too, before looking at the session.
    let sid = app.state.jwt.verify(ada.access_token()).unwrap().sid;
    for (method, path) in [
        (Method::POST, "/auth/logout-all".to_owned()),
        (Method::DELETE, format!("/auth/sessions/{sid}")),
    ] {
        let resp = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(ada.access_token())
            .header("content-type", "application/json")
            .body(padded(&json!({})))
            .send()
            .await
            .unwrap();
        TestResponse::from(resp).await.assert_error(413, "payload_too_large");
    }
    assert_eq!(footprint(&pool, &sink).await, before, "no row, event or email");

    // The plug holds: a request that reaches the hashing answers 503 (and stores nothing).
    for (path, body) in &valid[..2] {
        app.post_json(path, body).await.assert_error(503, "overloaded");
    }
    assert_eq!(footprint(&pool, &sink).await, before);
    drop(release);
    unplugged(&app).await;

    // Unpadded, the same values work: the refused requests would have shown.
    let by_code = app.post_json(valid[1].0, &valid[1].1).await;
    assert_eq!(by_code.status, 200, "{}", by_code.text);
    assert_eq!(app.post_json(valid[3].0, &valid[3].1).await.status, 200);
    assert_eq!(app.post_json(valid[4].0, &valid[4].1).await.status, 200);
    let other = by_code.json["refreshToken"].as_str().unwrap();
    assert_eq!(app.logout(other).await.status, 200);
    assert_eq!(app.post_json(valid[0].0, &valid[0].1).await.status, 200);
    assert_eq!(app.post_json(valid[2].0, &valid[2].1).await.status, 200);
    let after = footprint(&pool, &sink).await;
    assert_eq!(after.emails, before.emails + 2);
    assert!(after.audit_events > before.audit_events);
    for ((table, then), (_, now)) in before.rows.iter().zip(&after.rows) {
        if *table != "rate_limits" {
            assert_ne!(then, now, "{table} changed once work was done");
        }
    }
    still_serving(&app).await;
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
