//! The audit trail as it is written: an event commits with its change (one rolled
//! back leaves no row and no line; a committed one is a line in the documented
//! shape), and fans out to the console and Prometheus as well.

use serde_json::json;
use sesame::{
    app::AppState,
    audit::{AuditEvent, AuditTx, Event, RequestContext},
    clock::Clock,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    audit_support::count_events,
    helpers::{ServerProcess, TestApp, file_config, read_json_lines, temp_dir},
};

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
    let resp = app.admin_get("/metrics").await;
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(resp.text.contains("# TYPE sesame_events_total counter"));
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
