//! The OpenAPI documents as served (`/openapi.json`, `/openapi.yaml`) and
//! printed (`sesame openapi`): poem-openapi's output plus what it cannot
//! express, the links that tell a client (or a fuzzer) which answer feeds
//! which operation: a token pair's `refreshToken` to `refresh` and `logout`,
//! a session id to `delete_session`, and in the admin document a user id to
//! the user operations and a delivery id to its retry.
#![expect(
    clippy::expect_used,
    reason = "built once at start-up from poem-openapi's own output (tests build both documents): \
              a document that cannot be built is a bug to stop on"
)]

use serde_json::{Map, Value, json};

use crate::state::AppState;

/// A link: from the answer `status` of `from`, named `name`, to operation
/// `to`, with its path parameters or request body taken from the answer.
struct Link {
    from: &'static str,
    status: &'static str,
    name: &'static str,
    to: &'static str,
    /// `parameters` (path parameter → runtime expression) or `requestBody`.
    with: fn() -> (&'static str, Value),
    description: &'static str,
}

fn refresh_token() -> (&'static str, Value) {
    ("requestBody", json!({ "refreshToken": "$response.body#/refreshToken" }))
}

fn first_session() -> (&'static str, Value) {
    ("parameters", json!({ "id": "$response.body#/sessions/0/id" }))
}

fn first_user() -> (&'static str, Value) {
    ("parameters", json!({ "id": "$response.body#/users/0/id" }))
}

fn the_user() -> (&'static str, Value) {
    ("parameters", json!({ "id": "$response.body#/user/id" }))
}

fn first_delivery() -> (&'static str, Value) {
    ("parameters", json!({ "id": "$response.body#/deliveries/0/id" }))
}

/// The operations answering a token pair.
const PAIRS: [&str; 3] = ["verify_code", "verify_magic_link", "refresh"];

fn public_links() -> Vec<Link> {
    let mut links = Vec::new();
    for from in PAIRS {
        links.push(Link {
            from,
            status: "200",
            name: "Refresh",
            to: "refresh",
            with: refresh_token,
            description: "Exchange the pair's `refreshToken` for the next pair.",
        });
        links.push(Link {
            from,
            status: "200",
            name: "Logout",
            to: "logout",
            with: refresh_token,
            description: "End the session of the pair's `refreshToken`.",
        });
    }
    links.push(Link {
        from: "list_sessions",
        status: "200",
        name: "DeleteSession",
        to: "delete_session",
        with: first_session,
        description: "End a listed session (the first here; any `sessions[i].id`).",
    });
    links
}

/// The operations taking a user id in their path.
const USER_OPERATIONS: [(&str, &str); 5] = [
    ("GetUser", "get_user"),
    ("DisableUser", "disable_user"),
    ("EnableUser", "enable_user"),
    ("RevokeUserSessions", "revoke_user_sessions"),
    ("DeleteUser", "delete_user"),
];

fn admin_links() -> Vec<Link> {
    let mut links = Vec::new();
    for (name, to) in USER_OPERATIONS {
        links.push(Link {
            from: "list_users",
            status: "200",
            name,
            to,
            with: first_user,
            description: "A listed user (the first here; any `users[i].id`).",
        });
        links.push(Link {
            from: "create_user",
            status: "201",
            name,
            to,
            with: the_user,
            description: "The user just created.",
        });
    }
    for from in ["get_user", "disable_user", "enable_user"] {
        for (name, to) in USER_OPERATIONS.into_iter().filter(|(_, to)| *to != from) {
            links.push(Link {
                from,
                status: "200",
                name,
                to,
                with: the_user,
                description: "The same user.",
            });
        }
    }
    links.push(Link {
        from: "list_webhook_deliveries",
        status: "200",
        name: "RetryWebhookDelivery",
        to: "retry_webhook_delivery",
        with: first_delivery,
        description: "Retry a listed delivery (the first here; any `deliveries[i].id`).",
    });
    links
}

/// Adds `links` to the responses of `doc`. Panics when a link names an
/// operation or answer the document lacks (a test builds both documents).
fn add_links(doc: &mut Value, links: &[Link]) {
    let paths = doc["paths"].as_object_mut().expect("the document has paths");
    let known: Vec<String> = paths
        .values()
        .filter_map(Value::as_object)
        .flat_map(|item| {
            item.values()
                .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
        })
        .collect();
    for link in links {
        assert!(known.iter().any(|id| id == link.to), "no operation {}", link.to);
        let response = paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .find(|op| op["operationId"] == link.from)
            .and_then(|op| op["responses"].get_mut(link.status))
            .unwrap_or_else(|| panic!("no answer {} of {}", link.status, link.from));
        let links = response
            .as_object_mut()
            .expect("a response object")
            .entry("links")
            .or_insert_with(|| Value::Object(Map::new()));
        let (field, value) = (link.with)();
        links[link.name] = json!({
            "operationId": link.to,
            field: value,
            "description": link.description,
        });
    }
}

/// The public document.
pub fn public(state: &AppState) -> Value {
    let mut doc: Value = serde_json::from_str(&super::service(state).spec()).expect("poem-openapi writes JSON");
    add_links(&mut doc, &public_links());
    doc
}

/// The admin document.
pub fn admin(state: &AppState) -> Value {
    let mut doc: Value = serde_json::from_str(&super::admin::service(state).spec()).expect("poem-openapi writes JSON");
    add_links(&mut doc, &admin_links());
    doc
}

/// A document as JSON, as `/openapi.json` serves it.
pub fn to_json(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).expect("a JSON value prints")
}

/// A document as YAML, as `openapi.yaml` is committed.
pub fn to_yaml(doc: &Value) -> String {
    serde_yaml::to_string(doc).expect("a JSON value prints as YAML")
}

/// Swagger UI showing `doc`: poem-openapi's page, whose embedded document
/// (`generated`, the service's own) is swapped for `doc`, links included.
pub fn swagger_ui(page: &str, generated: &str, doc: &Value) -> poem::Route {
    let html = page.replacen(generated, &to_json(doc), 1);
    poem::Route::new().at("/", poem::endpoint::make_sync(move |_| poem::web::Html(html.clone())))
}
