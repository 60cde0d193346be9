//! Shutdown under load: `sesame serve` stopped by SIGTERM or SIGINT refuses new
//! connections, finishes the requests in flight, drains the JSON Lines file and
//! exits 0.

use std::{
    io::{BufRead as _, BufReader},
    time::{Duration, Instant},
};

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    faults_support::post,
    helpers::{ServerProcess, read_json_lines, temp_dir},
    mailbox::SmtpSink,
};

/// Reads the log (stderr) of a server process line by line, as it is written.
fn follow_log(server: &mut ServerProcess) -> mpsc::UnboundedReceiver<String> {
    let stderr = server.child.stderr.take().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        // Reads to the end even when nobody listens, so the server never blocks on a full pipe.
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits (up to 10 s) for a line of `log` containing `needle`; `seen` keeps every line read.
async fn wait_for_line(log: &mut mpsc::UnboundedReceiver<String>, seen: &mut Vec<String>, needle: &str) {
    let wait = async {
        while let Some(line) = log.recv().await {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return true;
            }
        }
        false
    };
    let found = tokio::time::timeout(Duration::from_secs(10), wait).await;
    assert!(
        matches!(found, Ok(true)),
        "the server did not log {needle:?}: {seen:#?}"
    );
}

/// How long the test's SMTP server holds every message: the time a request
/// stays in flight after its code is stored.
const SEND_DELAY: Duration = Duration::from_secs(2);

/// `sesame serve` gets `signal` (`TERM` or `INT`) while ten requests are in
/// flight: it refuses new connections at once (a connection error, not a
/// timeout) while it still runs, finishes the ten, drains the JSON Lines file
/// and exits 0.
async fn stop_under_load(opts: PgPoolOptions, db: PgConnectOptions, signal: &str) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    sink.delay(SEND_DELAY); // every send is in flight for a while
    let dir = temp_dir("shutdown");
    let file = dir.join("metrics.jsonl");
    let mut server = ServerProcess::start(
        &db,
        &dir,
        &[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_URL", &sink.url()),
            ("METRICS_FORMAT", "file"),
            ("METRICS_FILE_PATH", file.to_str().unwrap()),
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    );
    let mut log = follow_log(&mut server);
    let mut seen = Vec::new();
    server.wait_ready().await;

    let mut in_flight = JoinSet::new();
    for i in 0..10 {
        in_flight.spawn(post(
            server.url("/auth/send-code"),
            json!({ "email": format!("u{i}@example.com") }),
        ));
    }
    // In flight means inside the handler (the code is stored, the send is delayed), not
    // merely spawned: on a loaded machine some requests may not have reached the server yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let generated: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'otp.generated'")
            .fetch_one(&pool)
            .await
            .unwrap();
        if generated == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{generated} of 10 requests reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = server.url("/health");
    let mut child = server.child;
    let signalled = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    // Synchronised on the server's log, not a sleep: sesame says it is
    // stopping, then poem drops its listener and says it waits for the
    // connections still open (the ten in flight).
    wait_for_line(&mut log, &mut seen, "shutdown signal received").await;
    wait_for_line(&mut log, &mut seen, "wait for all connections to close").await;
    let refused = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    let delivered_by_then = sink.messages().len();
    let running = child.try_wait().unwrap().is_none();
    match refused {
        Err(e) if e.is_connect() => {}
        other => panic!("SIG{signal}: a new connection must be refused, not answered or left to time out: {other:?}"),
    }
    assert!(
        running,
        "SIG{signal}: refused while still stopping, not because it had exited"
    );
    assert!(
        delivered_by_then < 10,
        "SIG{signal}: requests were still in flight when the new one was refused"
    );

    let answers = in_flight.join_all().await;
    assert!(
        answers.iter().all(|(s, _)| *s == 200),
        "SIG{signal}: no request was cut: {answers:?}"
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "SIG{signal}: sesame did not stop within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while let Ok(line) = log.try_recv() {
        seen.push(line);
    }
    assert!(status.success(), "SIG{signal}: exit 0, not {status}: {seen:#?}");
    assert_eq!(sink.messages().len(), 10);
    let sent = read_json_lines(&file)
        .iter()
        .filter(|l| l["event"] == "otp.sent")
        .count();
    assert_eq!(sent, 10, "SIG{signal}: the JSON Lines writer was drained");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'otp.sent'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 10);
}

#[sqlx::test]
async fn sigterm_under_load_finishes_in_flight_requests_and_drains_the_file(opts: PgPoolOptions, db: PgConnectOptions) {
    stop_under_load(opts, db, "TERM").await;
}

/// Ctrl-C in a terminal: the same graceful stop as SIGTERM.
#[sqlx::test]
async fn sigint_under_load_finishes_in_flight_requests_and_drains_the_file(opts: PgPoolOptions, db: PgConnectOptions) {
    stop_under_load(opts, db, "INT").await;
}
