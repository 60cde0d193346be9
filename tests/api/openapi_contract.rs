//! The documents as a contract: every example is answered as documented, the
//! schemas' constraints are the server's (a value on each side of each line),
//! 405 and `OPTIONS` list the route's methods, and the links name operations
//! and fields that exist.

use reqwest::Method;
use serde_json::{Value, json};
use sesame::app::AppState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, test_config};

fn public() -> Value {
    sesame::api::document::public(&AppState::offline())
}

fn admin() -> Value {
    sesame::api::document::admin(&AppState::offline())
}

/// Every operation of `doc` with a JSON request body that has an example:
/// (operation id, method, path, example).
fn request_examples(doc: &Value) -> Vec<(String, Method, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(schema_ref) = op["requestBody"]["content"]["application/json; charset=utf-8"]["schema"]["$ref"]
                .as_str()
                .or_else(|| op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str())
            else {
                continue;
            };
            let name = schema_ref.rsplit('/').next().unwrap();
            let example = &doc["components"]["schemas"][name]["example"];
            if example.is_null() {
                continue;
            }
            found.push((
                op["operationId"].as_str().unwrap().to_owned(),
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                path.clone(),
                example.clone(),
            ));
        }
    }
    found
}

/// Every request example of both documents, sent to a server with the
/// development defaults, gets the answer its operation documents for it. The
/// examples' code and tokens were never issued, so those operations answer
/// their documented 401 (logout its 200): the example is well-formed, not
/// refused as a 400.
#[sqlx::test]
async fn every_example_is_answered_as_documented_with_the_default_settings(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let expected = [
        ("send_code", 200, None),
        ("send_magic_link", 200, None),
        ("verify_code", 401, Some("invalid_code")),
        ("verify_magic_link", 401, Some("invalid_link")),
        ("refresh", 401, Some("invalid_refresh_token")),
        ("logout", 200, None),
        ("create_user", 201, None),
    ];
    let mut sent = Vec::new();
    for (doc, on_admin) in [(public(), false), (admin(), true)] {
        for (id, method, path, example) in request_examples(&doc) {
            let (_, status, code) = expected
                .iter()
                .find(|(op, ..)| *op == id)
                .unwrap_or_else(|| panic!("{id} has an example: say what it answers"));
            let resp = if on_admin {
                app.admin(method, &path, Some(&example)).await
            } else {
                let resp = app
                    .client
                    .request(method, app.url(&path))
                    .json(&example)
                    .send()
                    .await
                    .unwrap();
                crate::helpers::TestResponse::from(resp).await
            };
            match code {
                Some(code) => resp.assert_error(*status, code),
                None => assert_eq!(resp.status, *status, "{id}: {}", resp.text),
            }
            sent.push(id);
        }
    }
    sent.sort();
    let mut all: Vec<String> = expected.iter().map(|(id, ..)| (*id).to_owned()).collect();
    all.sort();
    assert_eq!(sent, all, "every listed example was sent");
}

/// The error body's example is what a body without its required field answers.
#[sqlx::test]
async fn the_error_example_is_the_answer_to_a_missing_field(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let example = public()["components"]["schemas"]["ErrorBody"]["example"].clone();
    let resp = app.post_json("/auth/send-code", &json!({})).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json, example);
}

/// Values on both sides of each documented constraint: what the schema
/// allows is accepted (or answered with its documented business error), what
/// it forbids is 400.
#[sqlx::test]
async fn the_server_accepts_what_the_schemas_allow_and_refuses_the_rest(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let local64 = format!("{}@example.com", "a".repeat(64));
    let local65 = format!("{}@example.com", "a".repeat(65));
    let long = format!("a@{}.com", "b".repeat(250));
    for (email, ok) in [
        ("ada@example.com", true),
        ("ADA@Example.COM", true),
        ("a..da@example.com", true),
        ("o'hara+x@mail.example.xn--p1ai", true),
        (local64.as_str(), true),
        (local65.as_str(), false),
        (long.as_str(), false),
        (" ada@example.com", true),
        ("ada@example.com\r\n", true),
        ("\u{a0}ada@example.com", false),
        ("ada@example.com\u{b}", false),
        ("ada@example.1a", false),
        ("", false),
        ("ädä@example.com", false),
    ] {
        let resp = app.post_json("/auth/send-code", &json!({ "email": email })).await;
        if ok {
            assert_eq!(resp.status, 200, "{email:?}: {}", resp.text);
        } else {
            resp.assert_error(400, "invalid_email");
        }
    }
    for (locale, ok) in [
        (json!("pt-BR"), true),
        (json!(null), true),
        (json!(" de"), false),
        (json!("de_DE"), false),
    ] {
        let resp = app
            .post_json(
                "/auth/send-code",
                &json!({ "email": "ada@example.com", "locale": locale }),
            )
            .await;
        if ok {
            assert_eq!(resp.status, 200, "{locale}: {}", resp.text);
        } else {
            resp.assert_error(400, "invalid_request");
        }
    }
    for (code, status) in [("123 456", 401), ("1-2-3", 401), ("12a456", 400), ("", 400)] {
        let resp = app.verify_code("ada@example.com", code).await;
        assert_eq!(resp.status, status, "{code:?}: {}", resp.text);
    }
    let token = "A".repeat(43);
    for (value, shaped) in [
        (token.as_str(), true),
        (&token[..42], false),
        ("A+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false),
    ] {
        let refresh = app.refresh(value).await;
        let logout = app.logout(value).await;
        let link = app.verify_magic_link(value).await;
        if shaped {
            refresh.assert_error(401, "invalid_refresh_token");
            assert_eq!(logout.status, 200);
            link.assert_error(401, "invalid_link");
        } else {
            for resp in [refresh, logout, link] {
                resp.assert_error(400, "invalid_request");
            }
        }
    }
    for redirect in [
        json!("https://app.example.com/welcome"),
        json!("ftp://app.example.com/"),
        json!("https:app.example.com"),
    ] {
        let resp = app
            .post_json(
                "/auth/send-magic-link",
                &json!({ "email": "ada@example.com", "redirectTo": redirect }),
            )
            .await;
        resp.assert_error(400, "invalid_redirect");
    }
    let resp = app
        .post_json(
            "/auth/send-magic-link",
            &json!({ "email": "ada@example.com", "redirectTo": null }),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    for (query, status) in [
        ("/admin/users?cursor=", 400),
        ("/admin/users?email=%00", 400),
        ("/admin/stats?since=", 400),
        ("/admin/stats?since=1h30m", 400),
        ("/admin/stats?since=7d&bucket=1d", 200),
        ("/admin/stats?since=3600", 200),
    ] {
        let resp = app.admin(Method::GET, query, None).await;
        assert_eq!(resp.status, status, "{query}: {}", resp.text);
    }
}

/// The path of `doc` with its parameters filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| match s.starts_with('{') {
            true => "00000000-0000-0000-0000-000000000000",
            false => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `Allow` a path of `doc` should answer.
fn allow_of(item: &Value) -> String {
    let mut methods: Vec<String> = Vec::new();
    for m in ["get", "post", "put", "patch", "delete"] {
        if item.get(m).is_some() {
            methods.push(m.to_uppercase());
            if m == "get" {
                methods.push("HEAD".to_owned());
            }
        }
    }
    methods.push("OPTIONS".to_owned());
    methods.join(", ")
}

/// A method a route does not answer is 405 with `Allow` listing the
/// route's methods (RFC 9110), and `OPTIONS` is 204 with the same `Allow`,
/// for every path of both documents.
#[sqlx::test]
async fn a_405_and_options_list_the_methods_of_the_route(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for (doc, base) in [(public(), app.address.clone()), (admin(), app.admin_address.clone())] {
        for (path, item) in doc["paths"].as_object().unwrap() {
            let url = format!("{base}{}", concrete(path));
            let allow = allow_of(item);
            let auth = format!("Bearer {}", crate::helpers::ADMIN_TOKEN);
            let trace = app
                .client
                .request(Method::TRACE, &url)
                .header("authorization", &auth)
                .send()
                .await
                .unwrap();
            assert_eq!(trace.status(), 405, "TRACE {path}");
            assert_eq!(trace.headers()["allow"], allow.as_str(), "TRACE {path}");
            let body: Value = trace.json().await.unwrap();
            assert_eq!(body["code"], "method_not_allowed", "the error envelope stays");
            let options = app
                .client
                .request(Method::OPTIONS, &url)
                .header("authorization", &auth)
                .send()
                .await
                .unwrap();
            assert_eq!(options.status(), 204, "OPTIONS {path}");
            assert_eq!(options.headers()["allow"], allow.as_str(), "OPTIONS {path}");
        }
    }
    let head = app.client.head(app.url("/health")).send().await.unwrap();
    assert_eq!(head.status(), 200, "HEAD is answered where GET is");
}

/// A CORS preflight from an allowed origin is 204 and names the route's
/// methods; from another origin it is an `OPTIONS` like any other.
#[sqlx::test]
async fn a_preflight_names_the_methods_of_the_route(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.server.cors_allowed_origins = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/auth/refresh"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("content-type")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert_eq!(other.status(), 204);
    assert!(other.headers().get("access-control-allow-origin").is_none());
    assert_eq!(other.headers()["allow"], "POST, OPTIONS");
}

/// Follows a JSON pointer through `schema`'s `$ref`s, `properties` and `items`.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value, pointer: &str) -> Option<&'a Value> {
    for part in pointer.trim_start_matches('/').split('/') {
        while let Some(r) = schema["$ref"].as_str().or_else(|| schema["allOf"][0]["$ref"].as_str()) {
            schema = doc.pointer(r.trim_start_matches('#'))?;
        }
        schema = match part.parse::<usize>() {
            Ok(_) => schema.get("items")?,
            Err(_) => schema["properties"].get(part)?,
        };
    }
    Some(schema)
}

/// The links the issue asks for exist, name operations of their document, and
/// take fields the answer has: the pair's `refreshToken` to `refresh` and
/// `logout`, a session id to `delete_session`, a user id to each user operation.
#[tokio::test]
async fn the_links_join_answers_to_the_operations_that_take_them() {
    let mut found = Vec::new();
    for doc in [public(), admin()] {
        let ops: Vec<(&str, &Value)> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| (op["operationId"].as_str().unwrap(), op))
            .collect();
        for (from, op) in &ops {
            for (status, response) in op["responses"].as_object().unwrap() {
                for link in response["links"].as_object().into_iter().flat_map(|l| l.values()) {
                    let to = link["operationId"].as_str().unwrap();
                    let (_, target) = ops.iter().find(|(id, _)| *id == to).expect("the target exists");
                    let schema = &response["content"]["application/json; charset=utf-8"]["schema"];
                    let expressions: Vec<(&String, &Value)> = link["parameters"]
                        .as_object()
                        .into_iter()
                        .chain(link["requestBody"].as_object())
                        .flatten()
                        .collect();
                    assert!(!expressions.is_empty(), "{from} → {to}");
                    for (name, expression) in expressions {
                        let pointer = expression.as_str().unwrap().strip_prefix("$response.body#").unwrap();
                        let field = resolve(&doc, schema, pointer)
                            .unwrap_or_else(|| panic!("{from} {status} has no {pointer}"));
                        assert!(
                            field["type"] == "string" || field["type"] == "integer",
                            "{from} {pointer}"
                        );
                        let takes = target["parameters"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| p["name"] == name.as_str())
                            || link["requestBody"].is_object();
                        assert!(takes, "{to} takes {name}");
                    }
                    found.push(format!("{from}→{to}"));
                }
            }
        }
    }
    for pair in [
        "verify_code→refresh",
        "verify_code→logout",
        "verify_magic_link→refresh",
        "refresh→logout",
        "list_sessions→delete_session",
        "list_users→get_user",
        "list_users→disable_user",
        "list_users→enable_user",
        "list_users→revoke_user_sessions",
        "list_users→delete_user",
        "create_user→get_user",
    ] {
        assert!(found.iter().any(|f| f == pair), "{pair} in {found:?}");
    }
}
