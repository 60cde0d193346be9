use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, set_database_reachable};

#[sqlx::test]
async fn health_answers_ok_when_the_database_is_up(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let resp = app.health().await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json, json!({ "status": "ok", "database": "ok" }));
    app.stop().await;
}

#[sqlx::test]
async fn health_answers_503_while_the_database_is_unreachable_and_recovers_without_restart(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let name = db.get_database().expect("test database name").to_owned();
    let app = TestApp::spawn(db).await;
    assert_eq!(app.health().await.status, 200);

    // Take the database away: refuse new connections and cut the open ones.
    set_database_reachable(&name, false).await;

    let down = app.health().await;
    down.assert_error(503, "database_unavailable");
    assert_eq!(down.json["status"], "error");
    assert_eq!(down.json["database"], "unreachable");

    // Bring it back: the same server recovers on its own.
    set_database_reachable(&name, true).await;
    let up = app.health().await;
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.json, json!({ "status": "ok", "database": "ok" }));
    app.stop().await;
}
