//! Disabling and enabling users, and ending all their sessions, through the
//! admin API: each takes effect at once on live tokens and on signing in.

use reqwest::Method;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    admin_users::admin_events,
    helpers::{at, rt, spawn_with_smtp},
};

#[sqlx::test]
async fn disabling_ends_sessions_and_stops_live_tokens_at_once(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let phone = app.sign_in(&sink, "ada@example.com").await;
    let laptop = app.sign_in(&sink, "ada@example.com").await;
    let other = app.sign_in(&sink, "bob@example.com").await;
    let id = phone["user"]["id"].as_str().unwrap();
    assert_eq!(app.bearer(Method::GET, "/auth/me", at(&phone)).await.status, 200);

    let resp = app
        .admin(Method::POST, &format!("/admin/users/{id}/disable"), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let disabled_at = resp.json["user"]["disabledAt"].clone();
    assert!(disabled_at.as_str().is_some(), "{}", resp.text);
    assert_eq!(resp.json["user"]["sessions"], 0);
    for pair in [&phone, &laptop] {
        app.bearer(Method::GET, "/auth/me", at(pair))
            .await
            .assert_error(401, "invalid_token");
        app.refresh(rt(pair)).await.assert_error(401, "invalid_refresh_token");
    }
    // Nobody else is touched.
    assert_eq!(app.bearer(Method::GET, "/auth/me", at(&other)).await.status, 200);
    assert_eq!(app.refresh(rt(&other)).await.status, 200);

    // Idempotent: the same answer, no second event.
    let again = app
        .admin(Method::POST, &format!("/admin/users/{id}/disable"), None)
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json["user"]["disabledAt"], disabled_at);
    let events = admin_events(&app).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "admin.user.disabled");
    assert_eq!(events[0].1.map(|u| u.to_string()).as_deref(), Some(id));
    assert_eq!(events[0].3.as_deref(), Some("admin"));
    let revoked: Option<i64> = sqlx::query_scalar(
        "SELECT (metadata->>'revoked')::bigint FROM audit_events WHERE event = 'admin.user.disabled'",
    )
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(revoked, Some(2));
    let shown = app.admin(Method::GET, &format!("/admin/users/{id}"), None).await;
    assert_eq!(shown.json["user"]["disabledAt"], disabled_at);
    assert_eq!(shown.json["sessions"], Value::Array(vec![]));
}

#[sqlx::test]
async fn a_disabled_user_cannot_sign_in_until_enabled(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let id = pair["user"]["id"].as_str().unwrap();
    // A code and a link sent before the user is disabled.
    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    let code = sink.last_to("ada@example.com").code();
    assert_eq!(app.send_magic_link("ada@example.com", None).await.status, 200);
    let token = crate::mailbox::token_of(&sink.last_to("ada@example.com").link());
    assert_eq!(
        app.admin(Method::POST, &format!("/admin/users/{id}/disable"), None)
            .await
            .status,
        200
    );
    app.verify_code("ada@example.com", &code)
        .await
        .assert_error(401, "invalid_code");
    app.verify_magic_link(&token).await.assert_error(401, "invalid_link");
    // The send operations answer as for anyone, and send nothing.
    let mails = sink.messages().len();
    let unknown = app.send_code("nobody@example.com").await;
    assert_eq!(sink.messages().len(), mails + 1);
    let code_resp = app.send_code("ada@example.com").await;
    let link_resp = app.send_magic_link("ada@example.com", None).await;
    assert_eq!((code_resp.status, link_resp.status), (200, 200));
    assert_eq!(code_resp.json, unknown.json);
    assert_eq!(link_resp.json, unknown.json);
    assert_eq!(
        sink.messages().len(),
        mails + 1,
        "nothing was sent to the disabled user"
    );

    let resp = app
        .admin(Method::POST, &format!("/admin/users/{id}/enable"), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["user"]["disabledAt"], Value::Null);
    let again = app
        .admin(Method::POST, &format!("/admin/users/{id}/enable"), None)
        .await;
    assert_eq!(again.status, 200);
    let names: Vec<String> = admin_events(&app).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["admin.user.disabled", "admin.user.enabled"]);
    let back = app.sign_in(&sink, "ada@example.com").await;
    assert_eq!(back["user"]["id"], id);
}

#[sqlx::test]
async fn a_user_disabled_in_sql_is_refused_by_the_bearer_check(_: PgPoolOptions, db: PgConnectOptions) {
    // An operator who sets users.disabled_at by hand, without ending sessions:
    // the bearer check itself refuses the user's access tokens.
    let (app, sink) = spawn_with_smtp(db).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    sqlx::query("UPDATE users SET disabled_at = now()")
        .execute(app.state.db.pool())
        .await
        .unwrap();
    app.bearer(Method::GET, "/auth/me", at(&pair))
        .await
        .assert_error(401, "invalid_token");
}

#[sqlx::test]
async fn revoking_sessions_ends_them_all_and_answers_the_count(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let phone = app.sign_in(&sink, "ada@example.com").await;
    let laptop = app.sign_in(&sink, "ada@example.com").await;
    let id = phone["user"]["id"].as_str().unwrap();
    let path = format!("/admin/users/{id}/sessions");
    let resp = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["revoked"], 2);
    for pair in [&phone, &laptop] {
        app.bearer(Method::GET, "/auth/me", at(pair))
            .await
            .assert_error(401, "invalid_token");
        app.refresh(rt(pair)).await.assert_error(401, "invalid_refresh_token");
    }
    // Not disabled: it signs in again.
    let back = app.sign_in(&sink, "ada@example.com").await;
    assert_eq!(app.bearer(Method::GET, "/auth/me", at(&back)).await.status, 200);
    let resp = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(resp.json["revoked"], 1);
    let resp = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(resp.json["revoked"], 0);
    let names: Vec<String> = admin_events(&app).await.into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["admin.sessions.revoked"; 3]);
}

#[sqlx::test]
async fn unknown_and_malformed_ids_are_404_and_400(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, _sink) = spawn_with_smtp(db).await;
    let unknown = uuid::Uuid::new_v4();
    for (method, path) in [
        (Method::POST, format!("/admin/users/{unknown}/disable")),
        (Method::POST, format!("/admin/users/{unknown}/enable")),
        (Method::DELETE, format!("/admin/users/{unknown}/sessions")),
    ] {
        app.admin(method.clone(), &path, None)
            .await
            .assert_error(404, "not_found");
        let malformed = path.replace(&unknown.to_string(), "12345");
        app.admin(method, &malformed, None)
            .await
            .assert_error(400, "invalid_request");
    }
    assert!(admin_events(&app).await.is_empty());
}
