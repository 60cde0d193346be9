//! The admin listener: what it serves, what the public port no longer serves,
//! and the admin token (missing setting, missing or wrong token, the limit on
//! wrong tokens).

use reqwest::Method;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{ADMIN_TOKEN, TestApp, TestResponse, test_config};

/// A request to the admin listener with `authorization` as the header, if any.
async fn admin_with(app: &TestApp, path: &str, authorization: Option<&str>) -> TestResponse {
    let mut req = app.client.get(format!("{}{path}", app.admin_address));
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    TestResponse::from(req.send().await.unwrap()).await
}

#[sqlx::test]
async fn the_public_port_answers_404_for_metrics_and_the_admin_api(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for path in ["/metrics", "/admin/users", "/admin/audit", "/admin"] {
        app.get(path).await.assert_error(404, "not_found");
    }
    let resp = app.bearer(Method::GET, "/admin/users", ADMIN_TOKEN).await;
    resp.assert_error(404, "not_found");
}

#[sqlx::test]
async fn the_admin_listener_serves_metrics_health_and_its_document_without_a_token(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = TestApp::spawn(db).await;
    let metrics = app.admin_get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        metrics.text.contains("# TYPE sesame_events_total counter"),
        "{}",
        metrics.text
    );
    let health = app.admin_get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.json["database"], "ok");
    let spec = app.admin_get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.json["info"]["title"], "sesame admin");
    assert!(
        spec.json["paths"]["/auth/send-code"].is_null(),
        "the public API is not in it"
    );
    let docs = app.admin_get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(docs.text.contains("swagger"), "Swagger UI");
    // The public port keeps its own document, without the admin API.
    let public = app.get("/openapi.json").await;
    assert_eq!(public.json["info"]["title"], "sesame");
}

#[sqlx::test]
async fn without_admin_token_set_the_admin_api_answers_admin_token_required(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.admin.token = None;
    let app = TestApp::spawn_with(config).await;
    for auth in [None, Some("Bearer anything-at-all-0123456789abcdef0123")] {
        let resp = admin_with(&app, "/admin/users", auth).await;
        resp.assert_error(401, "admin_token_required");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    }
    // Metrics and health need no token.
    assert_eq!(app.admin_get("/metrics").await.status, 200);
    assert_eq!(app.admin_get("/health").await.status, 200);
}

#[sqlx::test]
async fn a_missing_or_wrong_admin_token_is_invalid_admin_token(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let near = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let basic = format!("Basic {ADMIN_TOKEN}");
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(near.as_str()),
        Some(basic.as_str()),
        Some("Bearer"),
    ] {
        let resp = admin_with(&app, "/admin/users", auth).await;
        resp.assert_error(401, "invalid_admin_token");
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"), "{auth:?}");
    }
    // The right token is let through (to the route, or its 404).
    let resp = app.admin(Method::GET, "/admin/no-such-thing", None).await;
    resp.assert_error(404, "not_found");
    // An access token of the public API is no admin token.
    let resp = admin_with(&app, "/admin/users", Some("Bearer eyJhbGciOiJIUzI1NiJ9.e30.x")).await;
    resp.assert_error(401, "invalid_admin_token");
}

#[sqlx::test]
async fn wrong_admin_tokens_are_rate_limited_per_client(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.rate_limits.enabled = true;
    let app = TestApp::spawn_with(config).await;
    let wrong = "Bearer wrong-admin-token-0123456789abcdef0123";
    for _ in 0..sesame::rate_limit::ADMIN_AUTH_PER_IP_PER_MINUTE {
        admin_with(&app, "/admin/users", Some(wrong))
            .await
            .assert_error(401, "invalid_admin_token");
    }
    let resp = admin_with(&app, "/admin/users", Some(wrong)).await;
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(resp.json["code"], "rate_limited");
    assert_eq!(resp.json["limit"], "admin_auth_per_ip_minute");
    assert!(resp.header("retry-after").is_some());
    // The operator with the right token is not locked out by someone guessing.
    let right = format!("Bearer {ADMIN_TOKEN}");
    admin_with(&app, "/admin/no-such-thing", Some(&right))
        .await
        .assert_error(404, "not_found");
}

#[sqlx::test]
async fn admin_port_off_binds_no_admin_listener(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.admin.port = None;
    let built = sesame::app::Application::build(config, sesame::clock::Clock::system())
        .await
        .unwrap();
    assert_eq!(built.admin_port(), None);
}
