//! The admin API's users: listing (filters, keyset pages), showing, creating.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, TestResponse, spawn_with_smtp};

/// `POST /admin/users` for `email`.
pub async fn create(app: &TestApp, email: &str) -> TestResponse {
    app.admin(Method::POST, "/admin/users", Some(&json!({ "email": email })))
        .await
}

/// The id of a user created for `email`.
pub async fn create_id(app: &TestApp, email: &str) -> String {
    let resp = create(app, email).await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    resp.json["user"]["id"].as_str().unwrap().to_owned()
}

/// The emails of a `GET /admin/users` page.
fn emails(page: &TestResponse) -> Vec<String> {
    assert_eq!(page.status, 200, "{}", page.text);
    page.json["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect()
}

/// The `admin.*` events recorded: (event, user id, email, actor).
pub async fn admin_events(app: &TestApp) -> Vec<(String, Option<uuid::Uuid>, Option<String>, Option<String>)> {
    sqlx::query_as(
        "SELECT event, user_id, email, metadata->>'actor' FROM audit_events WHERE event LIKE 'admin.%' ORDER BY id",
    )
    .fetch_all(app.state.db.pool())
    .await
    .unwrap()
}

#[sqlx::test]
async fn create_makes_a_user_that_never_signed_in_and_records_it(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let resp = create(&app, "  Grace@Example.com ").await;
    assert_eq!(resp.status, 201, "{}", resp.text);
    let user = &resp.json["user"];
    assert_eq!(user["email"], "grace@example.com");
    assert_eq!(user["sessions"], 0);
    assert_eq!(user["lastSignInAt"], Value::Null);
    assert_eq!(user["disabledAt"], Value::Null);
    assert!(user["createdAt"].as_str().is_some());
    let id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    assert!(sink.messages().is_empty(), "nothing is sent");
    assert_eq!(
        admin_events(&app).await,
        [(
            "admin.user.created".to_owned(),
            Some(id),
            Some("grace@example.com".to_owned()),
            Some("admin".to_owned())
        )]
    );
    // The same address, however written, already has a user.
    create(&app, "GRACE@example.com").await.assert_error(409, "user_exists");
    create(&app, "not an address").await.assert_error(400, "invalid_email");
    app.admin(Method::POST, "/admin/users", Some(&json!({})))
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(admin_events(&app).await.len(), 1, "refusals change nothing");
    // Signing in later is an ordinary sign-in into that user.
    let pair = app.sign_in(&sink, "grace@example.com").await;
    assert_eq!(pair["user"]["id"], id.to_string());
}

#[sqlx::test]
async fn show_answers_the_user_and_its_live_sessions_or_404_or_400(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    app.sign_in(&sink, "ada@example.com").await;
    app.logout(first["refreshToken"].as_str().unwrap()).await;
    let id = first["user"]["id"].as_str().unwrap();
    let resp = app.admin(Method::GET, &format!("/admin/users/{id}"), None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["user"]["id"], id);
    assert_eq!(resp.json["user"]["email"], "ada@example.com");
    assert_eq!(resp.json["user"]["sessions"], 1);
    assert!(resp.json["user"]["lastSignInAt"].as_str().is_some());
    let sessions = resp.json["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "the ended session is not listed");
    for field in ["id", "createdAt", "lastUsedAt", "expiresAt", "ip"] {
        assert!(sessions[0][field].as_str().is_some(), "{field}: {}", resp.text);
    }
    assert_eq!(sessions[0]["ip"], "127.0.0.1");

    let unknown = uuid::Uuid::new_v4();
    app.admin(Method::GET, &format!("/admin/users/{unknown}"), None)
        .await
        .assert_error(404, "not_found");
    app.admin(Method::GET, "/admin/users/not-a-uuid", None)
        .await
        .assert_error(400, "invalid_request");
}

#[sqlx::test]
async fn list_filters_by_exact_email_and_by_literal_substring(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for email in [
        "ada@example.com",
        "ada_l@example.org",
        "adaxl@example.org",
        "bob%1@example.com",
    ] {
        create_id(&app, email).await;
    }
    let get = |q: &str| {
        let path = format!("/admin/users?{q}");
        let app = &app;
        async move { app.admin(Method::GET, &path, None).await }
    };
    assert_eq!(
        emails(&get("").await),
        [
            "bob%1@example.com",
            "adaxl@example.org",
            "ada_l@example.org",
            "ada@example.com"
        ],
        "newest first"
    );
    assert_eq!(emails(&get("email=ADA%40example.com").await), ["ada@example.com"]);
    assert_eq!(emails(&get("email=ada").await), Vec::<String>::new(), "email is exact");
    // `_` and `%` are plain characters, not wildcards.
    assert_eq!(emails(&get("query=ada_").await), ["ada_l@example.org"]);
    assert_eq!(emails(&get("query=%25").await), ["bob%1@example.com"]);
    assert_eq!(
        emails(&get("query=EXAMPLE.ORG").await),
        ["adaxl@example.org", "ada_l@example.org"]
    );
    assert_eq!(
        emails(&get("query=ada&email=ada%40example.com").await),
        ["ada@example.com"]
    );
    let page = get("").await;
    assert_eq!(page.json["nextCursor"], Value::Null, "one page");
    let user = &page.json["users"][0];
    for field in ["id", "email", "createdAt", "lastSignInAt", "disabledAt", "sessions"] {
        assert!(user.get(field).is_some(), "{field} in {user}");
    }
    for bad in [
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=nonsense",
        "cursor=",
        "query=a%00b",
        "email=%00",
    ] {
        get(bad).await.assert_error(400, "invalid_request");
    }
    assert_eq!(emails(&get("limit=200").await).len(), 4);
}

#[sqlx::test]
async fn pages_are_stable_while_users_are_created(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let email = format!("user{i}@example.com");
        create_id(&app, &email).await;
        expected.insert(0, email);
    }
    let first = app.admin(Method::GET, "/admin/users?limit=3", None).await;
    assert_eq!(emails(&first), expected[..3]);
    let mut seen = emails(&first);
    let mut cursor = first.json["nextCursor"].as_str().unwrap().to_owned();
    // Newer users arrive while the pages are read, some at the very same time.
    let mut round = 0;
    loop {
        let path = format!("/admin/users?limit=3&cursor={cursor}");
        let (a, b) = (format!("new{round}a@example.com"), format!("new{round}b@example.com"));
        let (page, _, _) = tokio::join!(app.admin(Method::GET, &path, None), create(&app, &a), create(&app, &b));
        round += 1;
        seen.extend(emails(&page));
        match page.json["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, expected, "every user once, in order, none of the newer ones");
    let all = emails(&app.admin(Method::GET, "/admin/users?limit=200", None).await);
    assert_eq!(all.len(), 7 + 2 * round);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len());
}
