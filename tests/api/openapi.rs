//! The committed `openapi.yaml` is what the code generates, and the server serves it.

use serde_json::Value;
use sesame::app::AppState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::TestApp;

fn generated_yaml() -> String {
    sesame::api::document::to_yaml(&sesame::api::document::public(&AppState::offline()))
}

fn generated_admin_yaml() -> String {
    sesame::api::document::to_yaml(&sesame::api::document::admin(&AppState::offline()))
}

#[tokio::test]
async fn committed_openapi_admin_yaml_is_current() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi-admin.yaml"))
        .expect("openapi-admin.yaml exists");
    assert!(
        committed == generated_admin_yaml(),
        "openapi-admin.yaml differs from the code: run \
         `cargo run -q -- openapi --admin --yaml > openapi-admin.yaml` and commit it"
    );
}

#[tokio::test]
async fn the_binary_prints_the_admin_document_without_a_database() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["openapi", "--admin", "--yaml"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), generated_admin_yaml());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["openapi", "--admin", "--json"])
        .env_clear()
        .output()
        .unwrap();
    let spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec["info"]["title"], "sesame admin");
}

#[sqlx::test]
async fn the_admin_listener_serves_the_admin_document(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let served = app.admin_get("/openapi.json").await;
    assert_eq!(served.status, 200);
    let generated: Value = sesame::api::document::admin(&AppState::offline());
    assert_eq!(served.json, generated);
    assert!(app.admin_get("/docs").await.text.contains("SwaggerUIBundle"));
}

#[tokio::test]
async fn committed_openapi_yaml_is_current() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).expect("openapi.yaml exists");
    assert!(
        committed == generated_yaml(),
        "openapi.yaml differs from the code: run `cargo run -q -- openapi --yaml > openapi.yaml` and commit it"
    );
}

#[tokio::test]
async fn the_binary_prints_the_same_document_without_a_database() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["openapi", "--yaml"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), generated_yaml());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["openapi", "--json"])
        .env_clear()
        .output()
        .unwrap();
    let spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spec["info"]["title"], "sesame");
}

const JSON: &str = "application/json; charset=utf-8";

/// The operations whose errors are documented differently, and what they document.
/// `/health` answers its own 503 body (the error envelope plus `status` and
/// `database`, for load balancers); the magic-link page is always 200 HTML
/// (`docs/API.md`), so it documents no error status.
const HEALTH: &str = "get_health";
const PAGE: &str = "magic_link_page";

/// The `$ref` of the schema of `response` as JSON (panics when it is anything else).
fn json_schema_ref<'a>(response: &'a Value, what: &str) -> &'a str {
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no content"));
    assert_eq!(
        content.keys().collect::<Vec<_>>(),
        [JSON],
        "{what}: an error answers JSON only"
    );
    content[JSON]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the schema is not a named component: {response}"))
}

/// Every operation (path × method) lists at least one error status, and every error
/// status it lists answers the error body: `ErrorBody`, or `RateLimitedBody` for 429.
#[tokio::test]
async fn every_operation_documents_its_error_body() {
    let spec: Value = sesame::api::document::public(&AppState::offline());
    let seen = inspect_error_bodies(&spec);
    for id in [
        "send_code",
        "verify_code",
        "send_magic_link",
        "verify_magic_link",
        PAGE,
        "refresh",
        "logout",
        "get_me",
        "list_sessions",
        "delete_session",
        "logout_all",
        HEALTH,
    ] {
        assert!(seen.iter().any(|s| s == id), "{id} was inspected: {seen:?}");
    }
}

/// The same for the admin document: every admin operation answers 401 (the
/// admin token) and 429 (wrong tokens) with the error bodies.
#[tokio::test]
async fn every_admin_operation_documents_its_error_body() {
    let spec: Value = sesame::api::document::admin(&AppState::offline());
    let seen = inspect_error_bodies(&spec);
    for (path, item) in spec["paths"].as_object().unwrap() {
        for operation in item.as_object().unwrap().values() {
            if path.starts_with("/admin/") {
                let responses = &operation["responses"];
                assert!(responses["401"].is_object() && responses["429"].is_object(), "{path}");
                assert!(operation["security"].is_array(), "{path} declares the admin token");
            }
        }
    }
    for id in [
        "list_users",
        "get_user",
        "create_user",
        "disable_user",
        "enable_user",
        "revoke_user_sessions",
        "delete_user",
        "list_audit_events",
        HEALTH,
    ] {
        assert!(seen.iter().any(|s| s == id), "{id} was inspected: {seen:?}");
    }
}

/// Checks the error responses of every operation of `spec`; returns their ids.
fn inspect_error_bodies(spec: &Value) -> Vec<String> {
    let schemas = spec["components"]["schemas"].as_object().unwrap();
    // The envelope's fields are in every error schema, with the same types.
    let envelope = &schemas["ErrorBody"];
    let required = envelope["required"].as_array().unwrap();
    assert_eq!(required, &["success", "error", "code"].map(Value::from));
    for name in ["ErrorBody", "RateLimitedBody", "HealthUnavailableBody"] {
        let schema = &schemas[name];
        for field in required {
            let field = field.as_str().unwrap();
            assert!(
                schema["required"].as_array().unwrap().contains(&field.into()),
                "{name}.{field}"
            );
            assert_eq!(
                schema["properties"][field]["type"], envelope["properties"][field]["type"],
                "{name}.{field}"
            );
        }
    }

    let mut seen = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                ["get", "put", "post", "delete", "patch", "head", "options", "trace"].contains(&method.as_str()),
                "{path}: {method} is not a method"
            );
            let id = operation["operationId"].as_str().unwrap();
            let what = format!("{method} {path} ({id})");
            let responses = operation["responses"].as_object().unwrap();
            let errors: Vec<&String> = responses
                .keys()
                .filter(|s| s.parse::<u16>().is_ok_and(|s| s >= 400))
                .collect();
            if id == PAGE {
                assert_eq!(responses.keys().collect::<Vec<_>>(), ["200"], "{what}");
                assert!(
                    responses["200"]["content"]["text/html; charset=utf-8"].is_object(),
                    "{what}"
                );
            } else {
                assert!(!errors.is_empty(), "{what} documents no error status");
            }
            for status in errors {
                let expected = match (id, status.as_str()) {
                    (HEALTH, "503") => "HealthUnavailableBody",
                    (_, "429") => "RateLimitedBody",
                    _ => "ErrorBody",
                };
                assert_eq!(
                    json_schema_ref(&responses[status], &format!("{what} {status}")),
                    format!("#/components/schemas/{expected}"),
                    "{what} {status}"
                );
                assert!(
                    responses[status]["description"].as_str().is_some_and(|d| !d.is_empty()),
                    "{what} {status} says when it happens"
                );
            }
            seen.push(id.to_owned());
        }
    }
    seen
}

#[sqlx::test]
async fn the_server_serves_the_spec_and_swagger_ui(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let json = app.get("/openapi.json").await;
    assert_eq!(json.status, 200);
    assert_eq!(json.json["info"]["title"], "sesame");
    let yaml = app.get("/openapi.yaml").await;
    assert_eq!(yaml.status, 200);
    assert_eq!(yaml.text, generated_yaml());
    let docs = app.get("/docs").await;
    assert_eq!(docs.status, 200);
    assert!(docs.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(docs.header("cache-control"), Some("public, max-age=300"));
    assert!(
        docs.text.contains("SwaggerUIBundle"),
        "Swagger UI is embedded, not loaded from a CDN"
    );
    let document = sesame::api::document::to_json(&sesame::api::document::public(&AppState::offline()));
    assert!(
        docs.text.contains(&document),
        "Swagger UI shows the document with its links"
    );
    assert!(
        !docs.text.contains("unpkg.com") && !docs.text.contains("cdn.jsdelivr"),
        "no CDN"
    );
}
