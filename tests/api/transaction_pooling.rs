//! `DATABASE_STATEMENT_CACHE=0`, the mode for a transaction-mode pooler
//! (`store::Db`): every use of the database is a transaction that begins with
//! nothing left prepared, and what a request writes outside a transaction of
//! its own (`Db::run`) is still committed. (Through a real PgBouncer in
//! `pool_mode=transaction`: the deploy check `pgbouncer_transaction`.)

use serde_json::json;
use sesame::store::Db;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, at, rt, smtp_config},
    mailbox::SmtpSink,
    rate_limits::assert_limited,
};

async fn prepared(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// A pool of one connection without a statement cache: as a pooler hands one
/// server connection to client after client.
async fn one_connection(db: PgConnectOptions) -> sqlx::PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.statement_cache_capacity(0))
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_transaction_begins_with_nothing_left_prepared(_opts: PgPoolOptions, db: PgConnectOptions) {
    // One connection, so the second transaction gets the first one's session.
    let pool = one_connection(db).await;
    let db = Db::new(pool, true);

    let before = db
        .run(async |conn| {
            for i in 0..3 {
                let n: i32 = sqlx::query_scalar("SELECT $1::int4")
                    .bind(i)
                    .fetch_one(&mut *conn)
                    .await?;
                assert_eq!(n, i);
            }
            Ok(prepared(conn).await)
        })
        .await
        .unwrap();
    // Uncached statements stay prepared for the rest of the session...
    assert!(before >= 4, "the three statements and this one: {before}");

    // ...until the next transaction's BEGIN: then only the statement asking.
    let mut tx = db.begin().await.unwrap();
    assert_eq!(prepared(&mut tx).await, 1);
    tx.commit().await.unwrap();
    assert_eq!(db.run(async |conn| Ok(prepared(conn).await)).await.unwrap(), 1);
}

#[sqlx::test]
async fn a_transaction_runs_without_jit_whatever_the_session_says(_opts: PgPoolOptions, db: PgConnectOptions) {
    // A plain pool (not the server's, which also turns JIT off per connection):
    // the server connection a pooler hands out may come with JIT on.
    let pool = one_connection(db).await;
    let show = async |conn: &mut sqlx::PgConnection| sqlx::query_scalar::<_, String>("SHOW jit").fetch_one(conn).await;
    let mut plain = pool.acquire().await.unwrap();
    sqlx::raw_sql("SET jit = on").execute(&mut *plain).await.unwrap();
    drop(plain);
    let db = Db::new(pool, true);
    assert_eq!(db.run(async |conn| show(conn).await).await.unwrap(), "off");
    // SET LOCAL: the session (the one connection) is left as it was.
    assert_eq!(show(&mut *db.pool().acquire().await.unwrap()).await.unwrap(), "on");
}

#[sqlx::test]
async fn every_flow_commits_what_it_did(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.database.statement_cache = 0;
    config.rate_limits.enabled = true;
    config.rate_limits.refresh_per_ip_per_minute = 4;
    let app = TestApp::spawn_with(config).await;

    // Sign-in, the bearer check, a one-statement rotation, the sessions list.
    let pair = app.sign_in(&sink, "pooled@example.com").await;
    let me = app.bearer(reqwest::Method::GET, "/auth/me", at(&pair)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    let next = app.refresh(rt(&pair)).await;
    assert_eq!(next.status, 200, "{}", next.text);
    let sessions = app.bearer(reqwest::Method::GET, "/auth/sessions", at(&next.json)).await;
    assert_eq!(
        sessions.json["sessions"].as_array().map(Vec::len),
        Some(1),
        "{}",
        sessions.text
    );
    // The rotation committed: the parent is spent (a replay within the reuse
    // interval gets the same child), and the child rotates on.
    let child = app.refresh(rt(&next.json)).await;
    assert_eq!(child.status, 200, "{}", child.text);
    let rotated: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rotated, 2);

    // A one-limit rate check counts in a statement of its own: its counter
    // committed, so the fifth refresh in the minute is refused, and the
    // refusal's event (recorded alone) is in the table.
    let mut current = child;
    for _ in 0..2 {
        current = app.refresh(rt(&current.json)).await;
        assert_eq!(current.status, 200, "{}", current.text);
    }
    assert_limited(&app.refresh(rt(&current.json)).await, "refresh_per_ip_minute");
    let refusals: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'rate_limit.exceeded'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(refusals, 1);

    // Logout, in a transaction of its own: the session is over.
    let out = app
        .post_json("/auth/logout", &json!({ "refreshToken": rt(&current.json) }))
        .await;
    assert_eq!(out.status, 200, "{}", out.text);
    let ended: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE revoke_reason = 'logout'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ended, 1);
    let me = app.bearer(reqwest::Method::GET, "/auth/me", at(&current.json)).await;
    assert_eq!(me.status, 401, "{}", me.text);
    app.stop().await;
}
