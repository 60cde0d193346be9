//! What the JSON Lines file's outbox costs, counted rather than timed: a
//! transaction writes one `audit_file_pending` row however many events it
//! commits, and the writer deletes confirmed rows in batches (fewer `DELETE`
//! statements than rows in a burst; it confirms at most once per
//! `CONFIRM_INTERVAL`, which is not timed here). Statement triggers log every `INSERT` and
//! `DELETE` on the table, with the rows and events each one touched. And a
//! restart appends every event a transaction's row names, each once.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    helpers::{TestApp, file_config, temp_dir},
    mailbox::SmtpSink,
};

/// Logs each statement on the outbox in `outbox_log` (op, rows, events).
async fn log_outbox_statements(pool: &PgPool) {
    for sql in [
        "CREATE TABLE outbox_log (seq serial, op text, rows bigint, events bigint)",
        "CREATE FUNCTION outbox_log_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             INSERT INTO outbox_log (op, rows, events)
             SELECT 'INSERT', count(*), coalesce(sum(1 + coalesce(cardinality(more_ids), 0)), 0) FROM new_rows;
             RETURN NULL; END $$",
        "CREATE FUNCTION outbox_log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
             INSERT INTO outbox_log (op, rows, events)
             SELECT 'DELETE', count(*), coalesce(sum(1 + coalesce(cardinality(more_ids), 0)), 0) FROM old_rows;
             RETURN NULL; END $$",
        "CREATE TRIGGER outbox_log_insert AFTER INSERT ON audit_file_pending
             REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_log_insert()",
        "CREATE TRIGGER outbox_log_delete AFTER DELETE ON audit_file_pending
             REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_log_delete()",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
}

/// The logged statements of `op` after log entry `after` that touched rows:
/// (rows, events) each, in order.
async fn logged(pool: &PgPool, op: &str, after: i32) -> Vec<(i64, i64)> {
    sqlx::query_as("SELECT rows, events FROM outbox_log WHERE op = $1 AND rows > 0 AND seq > $2 ORDER BY seq")
        .bind(op)
        .bind(after)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The last log entry so far (0 when there is none).
async fn last_logged(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM outbox_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the outbox is empty (panics after 20 s).
async fn wait_outbox_empty(pool: &PgPool) {
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_file_pending")
            .fetch_one(pool)
            .await
            .unwrap();
        if n == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("outbox rows left");
}

#[sqlx::test]
async fn a_transaction_writes_one_outbox_row_and_confirmed_rows_go_in_batches(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    log_outbox_statements(&pool).await;
    let path = temp_dir("outbox-count").join("metrics.jsonl");
    let sink = SmtpSink::start().await;
    let mut config = file_config(db, &path);
    config.email.provider = sesame::config::EmailProvider::Smtp;
    config.email.smtp_url = Some(sesame::config::Secret::new(sink.url()));
    let app = TestApp::spawn_with(config).await;

    // A first sign-in: its verification commits several events (the user's creation too).
    let tokens = app.sign_in(&sink, "ada@example.com").await;
    let refreshed = app.refresh(tokens["refreshToken"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);
    wait_outbox_empty(&pool).await;
    let inserts = logged(&pool, "INSERT", 0).await;
    println!(
        "sign-in and refresh: {} events, outbox inserts (rows, events) {inserts:?}",
        events(&pool).await
    );
    assert!(
        inserts.iter().all(|&(rows, _)| rows == 1),
        "one row per statement: {inserts:?}"
    );
    assert!(
        inserts.iter().any(|&(_, events)| events > 1),
        "a transaction of several events still writes one row: {inserts:?}"
    );
    assert_eq!(inserts.iter().map(|&(_, e)| e).sum::<i64>(), events(&pool).await);

    // A burst: every confirmed row is deleted, by fewer statements than rows.
    let before = last_logged(&pool).await;
    let started = Instant::now();
    app.concurrent_logouts(100).await;
    wait_outbox_empty(&pool).await;
    let elapsed = started.elapsed();
    let (inserts, deletes) = (
        logged(&pool, "INSERT", before).await,
        logged(&pool, "DELETE", before).await,
    );
    let sum = |v: &[(i64, i64)]| (v.iter().map(|r| r.0).sum::<i64>(), v.iter().map(|r| r.1).sum::<i64>());
    println!(
        "after the burst ({elapsed:?}): {} insert statements {:?} (rows, events), {} delete statements {:?}",
        inserts.len(),
        sum(&inserts),
        deletes.len(),
        sum(&deletes)
    );
    assert_eq!(sum(&deletes), sum(&inserts), "every row written is deleted once");
    assert_eq!(sum(&inserts).1, 100, "one event per logout");
    let all = logged(&pool, "INSERT", 0).await;
    assert_eq!(sum(&all).1, events(&pool).await, "every event went through the outbox");
    assert!(
        deletes.len() < inserts.len(),
        "{} DELETEs for {} rows",
        deletes.len(),
        inserts.len()
    );
    app.stop().await;
}

#[sqlx::test]
async fn a_restart_appends_every_event_of_a_transactions_row_once(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let path = temp_dir("outbox-replay").join("metrics.jsonl");
    let config = file_config(db, &path);
    // A line written first, so the file has its position file and writer id.
    let app = TestApp::spawn_with(config.clone()).await;
    let resp = app
        .client
        .post(app.url("/auth/logout"))
        .json(&json!({ "refreshToken": "0".repeat(43) }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.stop().await;
    let pos: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sesame::audit::file::position_path(&path)).unwrap()).unwrap();
    let writer: uuid::Uuid = pos["writer"].as_str().unwrap().parse().unwrap();

    // What a crash leaves: a transaction of three events committed by an earlier
    // process, never written; one of them since dropped by the retention.
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO audit_events (event, success, email, created_at)
         SELECT 'auth.logout', true, 'tx' || n || '@example.com', now() FROM generate_series(1, 3) n
         ORDER BY n RETURNING id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_file_pending (writer, event_id, boot, more_ids) VALUES ($1, $2, gen_random_uuid(), $3)",
    )
    .bind(writer)
    .bind(ids[0])
    .bind(&ids[1..])
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE id = $1")
        .bind(ids[1])
        .execute(&pool)
        .await
        .unwrap();

    let app = TestApp::spawn_with(config).await;
    wait_outbox_empty(&pool).await;
    app.stop().await;
    let emails: Vec<String> = crate::helpers::read_json_lines(&path)
        .iter()
        .filter_map(|l| l["email"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        emails,
        ["tx1@example.com", "tx3@example.com"],
        "each surviving event once, in order"
    );
}
