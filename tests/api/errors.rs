//! Every error the framework raises answers with the error envelope of `docs/API.md` and a stable code.

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, test_config};

#[sqlx::test]
async fn malformed_json_is_400_invalid_json(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for body in [&b"{"[..], b"{\"refreshToken\": }", b"not json", b"\xff\xfe"] {
        let resp = app
            .post_raw("/auth/logout", Some("application/json"), body.to_vec())
            .await;
        resp.assert_error(400, "invalid_json");
    }
}

#[sqlx::test]
async fn a_missing_field_is_400_invalid_request(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let resp = app.post_json("/auth/logout", &json!({})).await;
    resp.assert_error(400, "invalid_request");
    let resp = app.post_json("/auth/logout", &json!({ "refreshToken": null })).await;
    resp.assert_error(400, "invalid_request");
    let resp = app.post_raw("/auth/logout", Some("application/json"), Vec::new()).await;
    resp.assert_error(400, "invalid_request");
}

#[sqlx::test]
async fn a_wrongly_typed_field_is_400_invalid_request(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for body in [
        json!({ "refreshToken": 5 }),
        json!({ "refreshToken": ["a"] }),
        json!([1, 2]),
        json!("x"),
    ] {
        let resp = app.post_json("/auth/logout", &body).await;
        resp.assert_error(400, "invalid_request");
        assert!(
            !resp.text.contains("\"a\""),
            "the submitted value is not echoed: {}",
            resp.text
        );
    }
}

#[sqlx::test]
async fn an_unknown_route_is_404_not_found(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    app.get("/no/such/route").await.assert_error(404, "not_found");
    app.post_json("/auth/nothing", &json!({}))
        .await
        .assert_error(404, "not_found");
}

#[sqlx::test]
async fn a_wrong_method_is_405_method_not_allowed(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    app.get("/auth/logout").await.assert_error(405, "method_not_allowed");
    app.post_json("/health", &json!({}))
        .await
        .assert_error(405, "method_not_allowed");
}

#[sqlx::test]
async fn a_body_over_64_kib_is_413_payload_too_large(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let big = format!(r#"{{"refreshToken":"{}"}}"#, "a".repeat(65 * 1024));
    let resp = app
        .post_raw("/auth/logout", Some("application/json"), big.into_bytes())
        .await;
    resp.assert_error(413, "payload_too_large");
    // Exactly at the limit is still read (and then judged on its content).
    let at_limit = format!(r#"{{"refreshToken":"{}"}}"#, "a".repeat(64 * 1024 - 19));
    assert_eq!(at_limit.len(), 64 * 1024);
    let resp = app
        .post_raw("/auth/logout", Some("application/json"), at_limit.into_bytes())
        .await;
    resp.assert_error(400, "invalid_request");
}

#[sqlx::test]
async fn a_chunked_body_over_64_kib_is_413_too(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let port = app.address.rsplit(':').next().unwrap();
    let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let head = "POST /auth/logout HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        let sent = async {
            stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await?;
            stream.write_all(&chunk).await?;
            stream.write_all(b"\r\n").await
        };
        if sent.await.is_err() {
            break; // the server may answer and close before reading it all
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
}

#[sqlx::test]
async fn a_wrong_or_missing_content_type_is_415(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let body = br#"{"refreshToken":"x"}"#.to_vec();
    app.post_raw("/auth/logout", Some("text/plain"), body.clone())
        .await
        .assert_error(415, "unsupported_media_type");
    app.post_raw(
        "/auth/logout",
        Some("application/x-www-form-urlencoded"),
        b"refreshToken=x".to_vec(),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    app.post_raw("/auth/logout", None, body)
        .await
        .assert_error(415, "unsupported_media_type");
}

#[sqlx::test]
async fn every_response_carries_a_request_id(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let ok = app.health().await;
    let not_found = app.get("/nope").await;
    let (a, b) = (
        ok.header("x-request-id").unwrap(),
        not_found.header("x-request-id").unwrap(),
    );
    assert!(
        uuid::Uuid::parse_str(a).is_ok() && uuid::Uuid::parse_str(b).is_ok(),
        "{a} {b}"
    );
    assert_ne!(a, b);

    // A well-formed id from the client is kept, so traces join up; a hostile one is replaced.
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "edge-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "edge-42.abc");
    let resp = app
        .client
        .get(app.url("/health"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    assert!(uuid::Uuid::parse_str(resp.headers()["x-request-id"].to_str().unwrap()).is_ok());
}

#[sqlx::test]
async fn cors_allows_the_frontend_origin_only(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.server.cors_allowed_origins = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;

    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/logout"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let simple = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    let foreign = app
        .client
        .get(app.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 200, "served, but without CORS headers");
    assert!(foreign.headers().get("access-control-allow-origin").is_none());
}
