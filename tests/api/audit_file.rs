//! The JSON Lines file: lines reach the disk intact and within a second; none is
//! written when metrics are off; a file that cannot be written (unwritable, full,
//! stalled) never fails or slows a request, and its errors are counted and logged
//! at most once a minute; a file rotated away is reopened.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;
use sesame::config::MetricsFormat;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    audit_support::count_events,
    helpers::{ServerProcess, TestApp, file_config, read_json_lines, temp_dir},
};

#[sqlx::test]
async fn fifty_concurrent_requests_write_fifty_intact_lines(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let path = temp_dir("concurrent").join("nested/dir/metrics.jsonl");
    let app = TestApp::spawn_with(file_config(db, &path)).await;

    app.concurrent_logouts(50).await;
    app.stop().await; // graceful shutdown drains the writer

    assert_eq!(count_events(&pool, "auth.logout").await, 50);
    let lines = read_json_lines(&path);
    assert_eq!(lines.len(), 50);
    for l in &lines {
        assert_eq!(l["event"], "auth.logout");
        assert_eq!(l["success"], false);
        assert_eq!(l["error"], "Unknown refresh token");
    }
}

#[sqlx::test]
async fn metrics_format_none_or_disabled_writes_no_file_but_always_the_table(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    for (enabled, format) in [
        (true, MetricsFormat::None),
        (false, MetricsFormat::File),
        (false, MetricsFormat::Both),
    ] {
        let path = temp_dir("none").join("metrics.jsonl");
        let mut config = file_config(db.clone(), &path);
        config.audit.metrics_enabled = enabled;
        config.audit.metrics_format = format;
        let app = TestApp::spawn_with(config).await;
        assert_eq!(app.logout(&"N".repeat(43)).await.status, 200);
        app.stop().await;
        assert!(!path.exists(), "{enabled} {format:?}: no file");
    }
    assert_eq!(
        count_events(&pool, "auth.logout").await,
        3,
        "the table is always written"
    );
}

#[sqlx::test]
async fn an_unwritable_file_never_fails_a_request_and_is_counted(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    // A path below a regular file cannot be created, even by root.
    let blocker = temp_dir("unwritable").join("a-file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let app = TestApp::spawn_with(file_config(db, &blocker.join("metrics.jsonl"))).await;

    for _ in 0..3 {
        let resp = app.logout(&"W".repeat(43)).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
    }
    assert_eq!(count_events(&pool, "auth.logout").await, 3, "the rows land");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("sesame_audit_file_errors_total").await < 3.0 {
        assert!(Instant::now() < deadline, "file errors were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[sqlx::test]
async fn a_line_reaches_the_disk_within_a_second_while_the_server_runs(_: PgPoolOptions, db: PgConnectOptions) {
    let path = temp_dir("within-a-second").join("metrics.jsonl");
    let app = TestApp::spawn_with(file_config(db, &path)).await;
    for i in 0..3 {
        // From before the request: the event happens during it, so this
        // bounds the time from the event to the disk from above.
        let before = Instant::now();
        assert_eq!(app.logout(&format!("{i:0>43}")).await.status, 200);
        while read_json_lines(&path).len() < i + 1 {
            assert!(
                before.elapsed() < Duration::from_secs(2),
                "line {i} was not in the file after 2 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = before.elapsed();
        assert!(took < Duration::from_secs(1), "line {i} took {took:?}");
    }
    app.stop().await;
}

#[sqlx::test]
async fn a_full_disk_never_fails_a_request_and_every_lost_line_is_counted(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    // /dev/full opens like a file and fails every write with ENOSPC.
    let app = TestApp::spawn_with(file_config(db, std::path::Path::new("/dev/full"))).await;

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (client, url) = (app.client.clone(), app.url("/auth/logout"));
        requests.spawn(async move {
            let body = json!({ "refreshToken": format!("{i:0>43}") });
            client.post(url).json(&body).send().await.unwrap().status().as_u16()
        });
    }
    assert!(
        requests.join_all().await.iter().all(|s| *s == 200),
        "every request succeeds"
    );
    assert_eq!(count_events(&pool, "auth.logout").await, 20, "the rows land");
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("sesame_audit_file_errors_total").await < 1.0 {
        assert!(Instant::now() < deadline, "no file error on /metrics");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = app.state.metrics.clone();
    app.stop().await; // drains the writer: every line has been tried
    assert_eq!(metrics.audit_file_errors(), 20, "each lost event is counted once");
}

#[sqlx::test]
async fn a_stalled_file_never_slows_a_request(_: PgPoolOptions, db: PgConnectOptions) {
    // A FIFO without a reader: opening it for writing blocks, like a disk that
    // hangs. The writer thread is stuck until the reader below comes, after
    // 3 s whatever happens (so the app can always be stopped).
    let fifo = temp_dir("stalled").join("metrics.jsonl");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let app = TestApp::spawn_with(file_config(db, &fifo)).await;
    let path = fifo.clone();
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        let opened = Instant::now();
        // Reads until the writer closes the file (at shutdown).
        (opened, std::fs::read_to_string(&path).unwrap())
    });

    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let before = Instant::now();
        assert_eq!(app.logout(&format!("{i:0>43}")).await.status, 200);
        slowest = slowest.max(before.elapsed());
    }
    let answered = Instant::now();
    app.stop().await; // waits for the writer, which the reader unblocks
    let (opened, text) = reader.join().unwrap();
    assert!(
        answered < opened,
        "all 20 requests were answered while the writer could not open the file"
    );
    assert!(slowest < Duration::from_secs(1), "slowest request: {slowest:?}");
    assert_eq!(text.lines().count(), 20, "the stalled lines arrive once the disk moves");
}

#[sqlx::test]
async fn file_errors_are_logged_at_most_once_a_minute(_: PgPoolOptions, db: PgConnectOptions) {
    // The real binary, so its log can be read as an operator would.
    let server = ServerProcess::start(
        &db,
        &temp_dir("error-log"),
        &[("METRICS_FORMAT", "file"), ("METRICS_FILE_PATH", "/dev/full")],
    );
    server.wait_ready().await;
    let client = reqwest::Client::new();
    let errors = || async {
        let text = client
            .get(server.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("sesame_audit_file_errors_total "))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap())
    };
    // Five failures, one after the other (each its own failed write), within
    // a few seconds: well inside one minute.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 1..=5 {
        let body = json!({ "refreshToken": format!("{i:0>43}") });
        statuses.push(
            client
                .post(server.url("/auth/logout"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while errors().await < i && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let counted = errors().await;
    let out = server.terminate().await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| s.is_success()), "{statuses:?}");
    assert_eq!(counted, 5, "five lost lines");
    assert!(elapsed < Duration::from_secs(60), "the failures took {elapsed:?}");
    let log = String::from_utf8(out.stderr).unwrap();
    let logged = log
        .lines()
        .filter(|l| l.contains("cannot write the audit JSON Lines file"))
        .count();
    assert_eq!(logged, 1, "one log line for five failures within a minute:\n{log}");
}

#[sqlx::test]
async fn the_file_is_reopened_after_it_is_rotated_away(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("rotate");
    let path = dir.join("metrics.jsonl");
    let rotated = dir.join("metrics.jsonl.1");
    let app = TestApp::spawn_with(file_config(db, &path)).await;

    app.logout(&"A".repeat(43)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_json_lines(&path).is_empty() {
        assert!(Instant::now() < deadline, "first line never reached the disk");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&path, &rotated).unwrap(); // what logrotate does

    // Keep logging until a line shows up in a new file at the original path.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = 1;
    while read_json_lines(&path).is_empty() {
        assert!(Instant::now() < deadline, "the writer never reopened the path");
        app.logout(&"B".repeat(43)).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
    // Lines written before the writer noticed went to the moved file: none lost.
    let (old, new) = (read_json_lines(&rotated), read_json_lines(&path));
    assert_eq!(old.len() + new.len(), sent, "every event is in one of the two files");
    assert!(!new.is_empty());
}
