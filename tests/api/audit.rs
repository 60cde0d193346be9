//! The audit trail: rows commit with their change, then fan out to the file,
//! the console and Prometheus; the documented SQL answers the design's questions.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sesame::{
    app::AppState,
    audit::{AuditEvent, AuditTx, Event, RequestContext},
    clock::Clock,
    config::MetricsFormat,
};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::helpers::{ServerProcess, TestApp, database_url, file_config, read_json_lines, temp_dir, test_config};

async fn count_events(pool: &PgPool, event: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn event(name: Event) -> AuditEvent {
    AuditEvent::success(name, &RequestContext::none(), Clock::system().now())
        .email("ada@example.com")
        .meta("emailDomain", "example.com")
}

#[sqlx::test]
async fn an_event_in_a_rolled_back_transaction_leaves_no_row_and_no_line(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let path = temp_dir("rollback").join("metrics.jsonl");
    let state = AppState::new(file_config(db, &path), Clock::system()).unwrap();

    let mut tx = AuditTx::begin(&state.db, &state.audit).await.unwrap();
    tx.record(event(Event::OtpGenerated)).await.unwrap();
    drop(tx); // rolled back

    let mut tx = AuditTx::begin(&state.db, &state.audit).await.unwrap();
    tx.record(event(Event::OtpSent)).await.unwrap();
    tx.commit().await.unwrap();

    state.audit.close().await;
    assert_eq!(count_events(&pool, "otp.generated").await, 0);
    assert_eq!(count_events(&pool, "otp.sent").await, 1);
    let lines = read_json_lines(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "otp.sent");
    assert_eq!(lines[0]["success"], true);
    assert_eq!(lines[0]["email"], "ada@example.com");
    assert_eq!(lines[0]["metadata"], json!({ "emailDomain": "example.com" }));
    let ts = lines[0]["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "timestamp like 2025-01-15T10:30:00.000Z, got {ts}"
    );
    let raw = std::fs::read_to_string(&path).unwrap();
    let at = |key: &str| {
        raw.find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} in {raw}"))
    };
    let order = ["event", "timestamp", "email", "success", "metadata"].map(at);
    assert!(order.is_sorted(), "the documented key order: {raw}");
    assert!(
        !raw.contains("userId") && !raw.contains("\"error\""),
        "absent fields are omitted: {raw}"
    );
}

#[sqlx::test]
async fn fifty_concurrent_requests_write_fifty_intact_lines(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let path = temp_dir("concurrent").join("nested/dir/metrics.jsonl");
    let app = TestApp::spawn_with(file_config(db, &path)).await;

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (client, url) = (app.client.clone(), app.url("/auth/logout"));
        requests.spawn(async move {
            client
                .post(url)
                .json(&json!({ "refreshToken": format!("{i:0>43}") }))
                .send()
                .await
        });
    }
    for resp in requests.join_all().await {
        assert_eq!(resp.unwrap().status(), 200);
    }
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
            .get(server.url("/metrics"))
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

#[sqlx::test]
async fn metrics_counters_move_with_events_and_requests(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let events = r#"sesame_events_total{event="auth.logout",success="false"}"#;
    let requests = r#"sesame_http_requests_total{operation="logout",status="200"}"#;
    let latency = r#"sesame_http_request_duration_seconds_count{operation="logout"}"#;
    assert_eq!(app.metric(events).await, 0.0);
    app.logout(&"M".repeat(43)).await;
    app.logout(&"M".repeat(43)).await;
    assert_eq!(app.metric(events).await, 2.0);
    assert_eq!(app.metric(requests).await, 2.0);
    assert_eq!(app.metric(latency).await, 2.0);
    let resp = app.get("/metrics").await;
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(resp.text.contains("# TYPE sesame_events_total counter"));
}

/// Known events: inside the last 24 hours unless `hours_ago` says otherwise.
async fn insert_events(pool: &PgPool) {
    let rows: &[(&str, bool, Option<&str>, Value, i32)] = &[
        ("otp.verification", true, None, json!({}), 1),
        ("otp.verification", true, None, json!({}), 2),
        ("otp.verification", false, Some("Invalid code"), json!({}), 2),
        ("magic_link.verification", true, None, json!({}), 3),
        ("magic_link.verification", false, Some("Link expired"), json!({}), 3),
        (
            "otp.verification.detail",
            false,
            Some("Invalid code"),
            json!({ "attempts": 1 }),
            2,
        ),
        (
            "otp.verification.detail",
            false,
            Some("Invalid code"),
            json!({ "attempts": 2 }),
            2,
        ),
        ("otp.verification.detail", false, Some("OTP expired"), json!({}), 4),
        ("auth.login", true, None, json!({ "method": "otp" }), 1),
        ("auth.login", true, None, json!({ "method": "otp" }), 2),
        ("auth.login", true, None, json!({ "method": "magic-link" }), 3),
        ("token.refresh", true, None, json!({}), 1),
        ("token.refresh", true, None, json!({}), 5),
        ("token.refresh", true, None, json!({}), 6),
        ("token.refresh", false, Some("Refresh token reused"), json!({}), 6),
        (
            "token.reuse_detected",
            false,
            Some("Refresh token reused"),
            json!({ "sessionId": "s1" }),
            6,
        ),
        (
            "token.reuse_detected",
            false,
            Some("Refresh token reused"),
            json!({ "sessionId": "s1" }),
            7,
        ),
        (
            "rate_limit.exceeded",
            false,
            Some("rate limited"),
            json!({ "limit": "send_per_address" }),
            1,
        ),
        // Outside the window: must not be counted.
        ("auth.login", true, None, json!({ "method": "otp" }), 30),
        ("otp.verification", false, Some("Invalid code"), json!({}), 48),
        (
            "token.reuse_detected",
            false,
            Some("Refresh token reused"),
            json!({ "sessionId": "s9" }),
            25,
        ),
    ];
    for (event, success, error, metadata, hours_ago) in rows {
        sqlx::query(
            "INSERT INTO audit_events (event, success, error, metadata, created_at)
             VALUES ($1, $2, $3, $4, now() - make_interval(hours => $5))",
        )
        .bind(event)
        .bind(success)
        .bind(error)
        .bind(metadata)
        .bind(hours_ago)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[sqlx::test]
async fn every_documented_audit_query_answers_correctly(opts: PgPoolOptions, db: PgConnectOptions) {
    use sesame::audit::report::{self, Cell::*};
    let pool = opts.connect_with(db).await.unwrap();
    insert_events(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    let t = |s: &str| Text(s.to_owned());

    let queries = report::queries();
    let names: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "events_by_outcome",
            "login_success_rate",
            "logins_by_method",
            "otp_failures_by_reason",
            "refresh_rate",
            "reuse_detections",
            "rate_limit_hits"
        ]
    );
    let mut answers = std::collections::HashMap::new();
    for q in &queries {
        assert!(!q.description.is_empty(), "{} has a comment", q.name);
        let table = report::run(&mut conn, q, Duration::from_secs(24 * 3600)).await.unwrap();
        answers.insert(q.name.clone(), table);
    }

    let events = &answers["events_by_outcome"];
    assert_eq!(events.columns, ["event", "success", "events"]);
    assert_eq!(
        events.rows,
        vec![
            vec![t("auth.login"), Bool(true), Int(3)],
            vec![t("magic_link.verification"), Bool(true), Int(1)],
            vec![t("magic_link.verification"), Bool(false), Int(1)],
            vec![t("otp.verification"), Bool(true), Int(2)],
            vec![t("otp.verification"), Bool(false), Int(1)],
            vec![t("otp.verification.detail"), Bool(false), Int(3)],
            vec![t("rate_limit.exceeded"), Bool(false), Int(1)],
            vec![t("token.refresh"), Bool(true), Int(3)],
            vec![t("token.refresh"), Bool(false), Int(1)],
            vec![t("token.reuse_detected"), Bool(false), Int(2)],
        ]
    );
    assert_eq!(
        answers["login_success_rate"].rows,
        vec![vec![Int(5), Int(3), Int(2), Float(60.0)]]
    );
    assert_eq!(
        answers["logins_by_method"].rows,
        vec![vec![t("otp"), Int(2)], vec![t("magic-link"), Int(1)]]
    );
    assert_eq!(
        answers["otp_failures_by_reason"].rows,
        vec![vec![t("Invalid code"), Int(2)], vec![t("OTP expired"), Int(1)]]
    );
    assert_eq!(answers["refresh_rate"].rows, vec![vec![Int(3), Int(1), Float(0.13)]]);
    assert_eq!(answers["reuse_detections"].rows, vec![vec![Int(2), Int(1)]]);
    assert_eq!(
        answers["rate_limit_hits"].rows,
        vec![vec![t("send_per_address"), Int(1)]]
    );
}

#[sqlx::test]
async fn cleanup_deletes_old_audit_rows_and_expired_codes_only(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    insert_events(&pool).await; // 3 of them are 25 to 48 hours old
    sqlx::query(
        "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at) VALUES
         (gen_random_uuid(), 'old@example.com', '$argon2id$x', now() - interval '1 hour', now() - interval '1 minute'),
         (gen_random_uuid(), 'new@example.com', '$argon2id$x', now(), now() + interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let mut config = test_config(db.clone());
    config.audit.audit_retention = Some(Duration::from_secs(24 * 3600));
    let state = AppState::new(config, Clock::system()).unwrap();
    let report = sesame::cleanup::run_once(&state)
        .await
        .unwrap()
        .expect("the lock was free");
    assert_eq!(report.audit_events, 3);
    assert_eq!(report.otp_codes, 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 18);
    let codes: Vec<String> = sqlx::query_scalar("SELECT email FROM otp_codes")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(codes, ["new@example.com"]);

    // Without a retention, audit rows are kept forever.
    let forever = AppState::new(test_config(db), Clock::system()).unwrap();
    let report = sesame::cleanup::run_once(&forever).await.unwrap().unwrap();
    assert_eq!(report.audit_events, 0);
}

#[sqlx::test]
async fn cleanup_runs_on_one_instance_at_a_time(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let mut holder = pool.acquire().await.unwrap();
    assert!(sesame::store::cleanup::try_lock(&mut holder).await.unwrap());
    let state = AppState::new(test_config(db), Clock::system()).unwrap();
    assert_eq!(
        sesame::cleanup::run_once(&state).await.unwrap(),
        None,
        "another instance holds the lock"
    );
    sesame::store::cleanup::unlock(&mut holder).await.unwrap();
    assert!(sesame::cleanup::run_once(&state).await.unwrap().is_some());
}

/// `sesame audit …` against `db`, as an operator runs it.
fn sesame_audit(db: &PgConnectOptions, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .arg("audit")
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", database_url(db))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[sqlx::test]
async fn the_audit_commands_answer_from_the_table(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    insert_events(&pool).await;

    let summary = sesame_audit(&db, &["summary", "--since", "24h"]);
    assert!(summary.contains("login_success_rate"), "{summary}");
    assert!(
        summary.lines().any(|l| l.split_whitespace().eq(["5", "3", "2", "60"])),
        "{summary}"
    );
    assert!(summary.lines().any(|l| l.trim() == "Invalid code  2"), "{summary}");

    let tail = sesame_audit(&db, &["tail", "--event", "auth.login", "--json"]);
    let lines: Vec<Value> = tail.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["event"] == "auth.login"));
    let methods: Vec<&str> = lines
        .iter()
        .map(|l| l["metadata"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["otp", "otp", "magic-link", "otp"], "in the order recorded");

    let text = sesame_audit(&db, &["tail", "-n", "2"]);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("[METRIC] ❌ token.reuse_detected         | error=Refresh token reused, sessionId=s9"),
        "{text}"
    );
}

#[sqlx::test]
async fn console_and_both_formats_print_metric_lines(_: PgPoolOptions, db: PgConnectOptions) {
    // The real binary, so its stdout can be read as a person would.
    for format in ["console", "both"] {
        let dir = temp_dir("console");
        let path = dir.join("metrics.jsonl");
        let file = path.to_str().unwrap();
        let server = ServerProcess::start(&db, &dir, &[("METRICS_FORMAT", format), ("METRICS_FILE_PATH", file)]);
        server.wait_ready().await;
        let logout = reqwest::Client::new()
            .post(server.url("/auth/logout"))
            .json(&json!({ "refreshToken": "C".repeat(43) }))
            .send()
            .await
            .unwrap();
        assert_eq!(logout.status(), 200);
        let out = server.terminate().await;
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout
            .lines()
            .find(|l| l.contains("auth.logout"))
            .unwrap_or_else(|| panic!("{format}: {stdout}"));
        assert!(line.starts_with("[METRIC] ❌ auth.logout"), "{line}");
        assert!(line.ends_with("| error=Unknown refresh token"), "{line}");
        assert!(!line.contains('\u{1b}'), "no colour when stdout is not a terminal");
        let lines = read_json_lines(&path);
        assert_eq!(lines.len(), usize::from(format == "both"), "{format}");
    }
}

#[sqlx::test]
async fn audit_tail_follow_prints_new_events_as_they_are_recorded(opts: PgPoolOptions, db: PgConnectOptions) {
    use std::io::BufRead as _;
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let insert = |error: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO audit_events (event, success, error) VALUES ('auth.logout', false, $1)")
                .bind(error)
                .execute(&pool)
                .await
                .unwrap();
        }
    };
    insert("before").await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["audit", "tail", "--follow", "--json", "--event", "auth.logout"])
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", database_url(&db))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    assert_eq!(next_line(&mut rx).await["error"], "before");
    insert("after").await;
    assert_eq!(
        next_line(&mut rx).await["error"],
        "after",
        "a new event is printed while following"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The next JSON line a child printed, within 10 s.
async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    serde_json::from_str(&line.expect("a line within 10 s").expect("the child is running")).unwrap()
}
