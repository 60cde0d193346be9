//! Reading the trail as an operator does: the documented queries (what `sesame
//! audit summary` prints) answer the design's questions, and `sesame audit
//! summary` and `tail` (also `--follow`) answer from the table.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{audit_support::insert_events, helpers::database_url};

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
async fn the_summaries_answer_the_same_from_the_hourly_rollups_over_a_day_a_week_and_a_month(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    use sesame::{
        audit::report::{self, Cell},
        store::audit_stats::roll_up,
    };
    let pool = opts.connect_with(db).await.unwrap();
    // 600 events over the last 12 days, one every 29 minutes, of every counted
    // event and breakdown; no window below has an event within 9 minutes of its start.
    sqlx::query(
        r#"
        INSERT INTO audit_events (event, success, error, metadata, created_at)
        SELECT v.event, v.success, v.error, v.metadata::jsonb, now() - i * interval '29 minutes' - interval '10 seconds'
        FROM generate_series(1, 600) i
        JOIN (VALUES (0, 'auth.login', true, NULL, '{"method": "otp"}'),
                     (1, 'auth.login', true, NULL, '{"method": "magic-link"}'),
                     (2, 'otp.verification', false, 'Invalid code', '{}'),
                     (3, 'otp.verification', true, NULL, '{}'),
                     (4, 'otp.verification.detail', false, 'OTP expired', '{}'),
                     (5, 'token.refresh', true, NULL, '{}'),
                     (6, 'token.refresh', false, 'Session ended', '{}'),
                     (7, 'rate_limit.exceeded', false, 'rate limited', '{"limit": "verify_per_address"}'),
                     (8, 'token.reuse_detected', false, 'Refresh token reused', '{"sessionId": "s8"}'),
                     (9, 'magic_link.verification', false, 'Link expired', '{}'),
                     (10, 'otp.sent', true, NULL, '{}')) v(k, event, success, error, metadata)
          ON v.k = i % 11
        "#,
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let windows = [1, 7, 30].map(|days| Duration::from_secs(days * 24 * 3600));
    let answers = async |conn: &mut sqlx::PgConnection| {
        let mut all = Vec::new();
        for q in report::queries() {
            for w in windows {
                all.push((q.name.clone(), w, report::run(conn, &q, w).await.unwrap()));
            }
        }
        all
    };
    let before = answers(&mut conn).await;
    // Before any rollup the answers are the table's: a week's successful refreshes.
    let refreshes = |all: &[(String, Duration, report::Table)]| match &all
        .iter()
        .find(|(name, w, _)| name == "refresh_rate" && *w == windows[1])
        .unwrap()
        .2
        .rows[0][0]
    {
        Cell::Int(n) => *n,
        other => panic!("{other:?}"),
    };
    let in_table: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE event = 'token.refresh' AND success AND created_at >= now() - interval '7 days'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(in_table > 20, "{in_table}");
    assert_eq!(refreshes(&before), in_table);

    while roll_up(&mut conn, time::OffsetDateTime::now_utc()).await.unwrap() {}
    let hours: i64 = sqlx::query_scalar("SELECT count(DISTINCT hour) FROM audit_counts_hourly")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(hours > 250, "12 days of hours with events are rolled up: {hours}");
    assert_eq!(answers(&mut conn).await, before, "the same answers from the rollups");

    // The week's answer reads the rollups: a change to them shows.
    sqlx::query("UPDATE audit_counts_hourly SET count = count + 1000 WHERE event = 'token.refresh' AND success")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(refreshes(&answers(&mut conn).await) >= in_table + 1000);
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
