use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{TestApp, admin_connection};

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
    let mut admin = admin_connection().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&mut admin)
    .await
    .unwrap();

    let down = app.health().await;
    down.assert_error(503, "database_unavailable");
    assert_eq!(down.json["status"], "error");
    assert_eq!(down.json["database"], "unreachable");

    // Bring it back: the same server recovers on its own.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true"#
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let up = app.health().await;
    assert_eq!(up.status, 200, "{}", up.text);
    assert_eq!(up.json, json!({ "status": "ok", "database": "ok" }));
    app.stop().await;
}
