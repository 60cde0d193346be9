//! The committed `openapi.yaml` is what the code generates, and the server serves it.

use sesame::app::AppState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::TestApp;

fn generated_yaml() -> String {
    sesame::api::service(&AppState::offline()).spec_yaml()
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

#[tokio::test]
async fn every_operation_documents_its_error_body() {
    let spec: serde_json::Value = serde_json::from_str(&sesame::api::service(&AppState::offline()).spec()).unwrap();
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.contains_key("/health") && paths.contains_key("/auth/logout"));
    let logout = &spec["paths"]["/auth/logout"]["post"];
    assert_eq!(logout["operationId"], "logout");
    for status in ["400", "408", "413", "415", "500", "503"] {
        let schema = &logout["responses"][status]["content"]["application/json; charset=utf-8"]["schema"]["$ref"];
        assert_eq!(
            schema, "#/components/schemas/ErrorBody",
            "{status}: {}",
            logout["responses"][status]
        );
    }
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
    assert!(
        !docs.text.contains("unpkg.com") && !docs.text.contains("cdn.jsdelivr"),
        "no CDN"
    );
}
