//! The JSON Lines file is as complete as the table after a crash: lines that
//! were committed but not written are appended by the next start, each once,
//! and bytes a crash left unconfirmed (a torn line) are cut first.

use std::{collections::HashMap, io::Write as _, time::Duration};

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    faults_support::sign_in_burst_then_kill,
    helpers::{ServerProcess, TestApp, file_config, read_json_lines, temp_dir},
    mailbox::SmtpSink,
};

/// Every row of the table as its JSON Lines record, in id order.
async fn table_lines(pool: &PgPool) -> Vec<Value> {
    let mut conn = pool.acquire().await.unwrap();
    sesame::store::audit::list(&mut conn, &Default::default(), 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(&sesame::audit::json_line(&e.event)).unwrap())
        .collect()
}

/// A record with its keys sorted: the table keeps metadata as `jsonb`, which
/// does not keep the order keys were written in, so a line recovered from it
/// may order them differently from the line the first process would have written.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: std::collections::BTreeMap<_, _> = m.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        other => other.clone(),
    }
}

/// How many times each record occurs.
fn counts(lines: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in lines {
        *m.entry(canonical(l).to_string()).or_default() += 1;
    }
    m
}

/// Waits until the file holds exactly the table's records (panics after 20 s).
async fn assert_file_matches_table(pool: &PgPool, path: &std::path::Path) {
    for _ in 0..200 {
        if counts(&read_json_lines(path)) == counts(&table_lines(pool).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (file, table) = (counts(&read_json_lines(path)), counts(&table_lines(pool).await));
    let extra: Vec<_> = file.iter().filter(|(l, n)| table.get(*l) != Some(n)).collect();
    let missing: Vec<_> = table.iter().filter(|(l, n)| file.get(*l) != Some(n)).collect();
    panic!("the file does not match the table:\nin the file: {extra:#?}\nin the table: {missing:#?}");
}

/// Waits until no outbox row is left (panics after 20 s).
async fn assert_outbox_empty(pool: &PgPool) {
    let mut pending: i64 = -1;
    for _ in 0..200 {
        pending = sqlx::query_scalar("SELECT count(*) FROM audit_file_pending")
            .fetch_one(pool)
            .await
            .unwrap();
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pending} outbox rows left");
}

#[sqlx::test]
async fn a_restart_cuts_a_torn_line_and_appends_each_unwritten_event_once(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let path = temp_dir("file-crash").join("metrics.jsonl");
    let sink = SmtpSink::start().await;
    let mut config = file_config(db.clone(), &path);
    config.email.provider = sesame::config::EmailProvider::Smtp;
    config.email.smtp_url = Some(sesame::config::Secret::new(sink.url()));
    let app = TestApp::spawn_with(config.clone()).await;
    app.sign_in(&sink, "ada@example.com").await;
    app.stop().await;
    assert_file_matches_table(&pool, &path).await;

    // What a kill -9 can leave: a line written after the last recorded batch
    // and a torn one (both unconfirmed), an event committed but never written,
    // and a confirmed line whose outbox row was not deleted yet.
    let pos: Value =
        serde_json::from_slice(&std::fs::read(sesame::audit::file::position_path(&path)).unwrap()).unwrap();
    let writer: uuid::Uuid = pos["writer"].as_str().unwrap().parse().unwrap();
    let unwritten: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (event, success, email, created_at) VALUES ('auth.logout', true, 'ada@example.com', now()) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO audit_file_pending (writer, event_id, boot) VALUES ($1, $2, gen_random_uuid())")
        .bind(writer)
        .bind(unwritten)
        .execute(&pool)
        .await
        .unwrap();
    let confirmed: i64 = sqlx::query_scalar("SELECT max(id) FROM audit_events WHERE event = 'auth.login'")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO audit_file_pending (writer, event_id, boot) VALUES ($1, $2, gen_random_uuid()) ON CONFLICT DO NOTHING",
    )
    .bind(writer)
    .bind(confirmed)
        .execute(&pool)
        .await
        .unwrap();
    // Ids the stopped instance had written but whose rows it had not deleted yet
    // (a slow machine) stay listed: only `confirmed` is added.
    let mut pos = pos;
    let mut written = pos["written"].as_array().cloned().unwrap_or_default();
    written.push(json!(confirmed));
    pos["written"] = Value::Array(written);
    std::fs::write(sesame::audit::file::position_path(&path), pos.to_string()).unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    let some_line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    writeln!(file, "{some_line}").unwrap();
    write!(file, "{{\"event\":\"auth.lo").unwrap();
    drop(file);

    let app = TestApp::spawn_with(config).await;
    assert_file_matches_table(&pool, &path).await;
    assert_outbox_empty(&pool).await;
    app.stop().await;
}

#[sqlx::test]
async fn a_server_killed_mid_burst_leaves_a_file_as_complete_as_the_table_after_a_restart(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let dir = temp_dir("file-kill");
    let path = dir.join("logs/metrics.jsonl");
    let vars = [
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_URL", &*sink.url()),
        ("JWT_SECRET", "crash-test-secret-0123456789abcdef"),
        ("METRICS_FORMAT", "file"),
    ];
    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;

    // The burst: every verification at once; the kill lands once a few answered.
    sign_in_burst_then_kill(server, &sink).await;

    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;
    let mut child = server.child;
    let checks = tokio::spawn(async move {
        // The table line by line, each once (a torn or repeated line fails).
        assert_file_matches_table(&pool, &path).await;
        assert_outbox_empty(&pool).await;
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic.into_panic());
    }
}
