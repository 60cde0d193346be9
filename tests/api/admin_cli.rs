//! `sesame users …`: the admin operations from the command line, with the
//! same effects and audit events (`metadata.actor = "cli"`).

use std::process::{Command, Output, Stdio};

use reqwest::Method;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    admin_users::admin_events,
    helpers::{at, database_url, spawn_with_smtp},
};

/// Runs `sesame users ARGS` against `db`, with nothing on stdin.
fn users(db: &PgConnectOptions, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
        .arg("users")
        .args(args)
        .env_clear()
        .env("DATABASE_URL", database_url(db))
        .env("METRICS_FORMAT", "none")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[sqlx::test]
async fn the_cli_manages_users_like_the_admin_api(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db.clone()).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let id = pair["user"]["id"].as_str().unwrap().to_owned();

    let created = stdout(&users(&db, &["create", "Grace@Example.com"]));
    assert!(
        created.starts_with("created ") && created.contains("grace@example.com"),
        "{created}"
    );
    let again = users(&db, &["create", "grace@example.com"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let listed = stdout(&users(&db, &["list", "--json"]));
    let listed: Vec<Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["email"], "grace@example.com", "newest first");
    assert_eq!(listed[1]["id"], id.as_str());
    assert_eq!(listed[1]["sessions"], 1);
    let found = stdout(&users(&db, &["list", "--query", "ADA"]));
    assert_eq!(found.lines().count(), 1);
    assert!(found.contains(&id));

    // By address or by id, as the operator has it.
    let disabled = stdout(&users(&db, &["disable", "ada@example.com"]));
    assert!(disabled.contains("sessions 0"), "{disabled}");
    app.bearer(Method::GET, "/auth/me", at(&pair))
        .await
        .assert_error(401, "invalid_token");
    let shown = stdout(&users(&db, &["show", &id]));
    assert!(!shown.contains("disabled -"), "{shown}");
    stdout(&users(&db, &["enable", &id]));
    let back = app.sign_in(&sink, "ada@example.com").await;
    let revoked = stdout(&users(&db, &["sessions", "revoke", "ada@example.com"]));
    assert_eq!(revoked.trim(), "revoked 1 sessions");
    app.bearer(Method::GET, "/auth/me", at(&back))
        .await
        .assert_error(401, "invalid_token");

    // Deleting asks first; without an answer nothing happens.
    let refused = users(&db, &["delete", "ada@example.com"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not deleted"));
    stdout(&users(&db, &["show", &id]));
    let deleted = stdout(&users(&db, &["delete", "ada@example.com", "--yes"]));
    assert!(deleted.starts_with(&format!("deleted {id}")), "{deleted}");
    let gone = users(&db, &["show", &id]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no such user"));
    let unknown = users(&db, &["disable", "nobody@example.com"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no user has this address"));

    let events = admin_events(&app).await;
    let names: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "admin.user.created",
            "admin.user.disabled",
            "admin.user.enabled",
            "admin.sessions.revoked",
            "admin.user.deleted"
        ]
    );
    assert!(events.iter().all(|e| e.3.as_deref() == Some("cli")), "{events:?}");
}
