//! With `ALLOW_SIGNUP=false`, an address without an account looks, from outside,
//! exactly like one with an account: the same answer and the same movement of
//! every counter on `/metrics`. The audit trail still says what happened:
//! `otp.withheld` / `magic_link.withheld`, never a code or link that was not sent.

use std::collections::BTreeMap;

use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    helpers::{TestApp, smtp_config},
    mailbox::SmtpSink,
};

const MEMBER: &str = "member@example.com";
const STRANGER: &str = "stranger@example.com";

/// An app with sign-up closed, one account (`MEMBER`), and its SMTP sink.
async fn closed_app(opts: PgPoolOptions, db: PgConnectOptions) -> (TestApp, SmtpSink, PgPool) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    sqlx::query("INSERT INTO users (id, email) VALUES (gen_random_uuid(), $1)")
        .bind(MEMBER)
        .execute(&pool)
        .await
        .unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.login.allow_signup = false;
    (TestApp::spawn_with(config).await, sink, pool)
}

/// Every series on `/metrics` with its value.
async fn snapshot(app: &TestApp) -> BTreeMap<String, f64> {
    let text = app.admin_get("/metrics").await.text;
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The series that moved between two snapshots, and by how much. The latency
/// histogram's buckets and sum measure time, which a test cannot hold equal
/// (the benchmark `bench/signup-closed.sh` compares it); its count is kept.
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(series, _)| {
            !series.starts_with("sesame_http_request_duration_seconds_bucket")
                && !series.starts_with("sesame_http_request_duration_seconds_sum")
        })
        .map(|(series, v)| (series.clone(), v - before.get(series).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// What `/metrics` shows of one send to `email`: the answer and the counters that moved.
async fn one_send(app: &TestApp, email: &str, link: bool) -> (u16, serde_json::Value, BTreeMap<String, f64>) {
    let before = snapshot(app).await;
    let resp = match link {
        false => app.send_code(email).await,
        true => app.send_magic_link(email, None).await,
    };
    let after = snapshot(app).await;
    (resp.status, resp.json, moved(&before, &after))
}

/// Sends to the member, the stranger, and the member again, and asserts that
/// the stranger's send moved every counter as each of the member's did.
async fn assert_metrics_do_not_tell_them_apart(app: &TestApp, link: bool, sent: &str) {
    let member = one_send(app, MEMBER, link).await;
    let stranger = one_send(app, STRANGER, link).await;
    let member_again = one_send(app, MEMBER, link).await;
    assert_eq!(
        member
            .2
            .get(&format!("sesame_events_total{{event=\"{sent}\",success=\"true\"}}")),
        Some(&1.0),
        "the member's send is counted: {:#?}",
        member.2
    );
    assert_eq!((member.0, &member.1), (stranger.0, &stranger.1), "the same answer");
    assert_eq!(member.2, stranger.2, "the same counters moved, by the same amounts");
    assert_eq!(member_again.2, stranger.2);
}

#[sqlx::test]
async fn with_signup_closed_metrics_move_alike_for_a_code_to_a_member_and_to_a_stranger(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let (app, sink, _pool) = closed_app(opts, db).await;
    assert_metrics_do_not_tell_them_apart(&app, false, "otp.sent").await;
    assert_eq!(sink.to(MEMBER).len(), 2);
    assert!(sink.to(STRANGER).is_empty(), "the stranger is sent nothing");
}

#[sqlx::test]
async fn with_signup_closed_metrics_move_alike_for_a_link_to_a_member_and_to_a_stranger(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let (app, sink, _pool) = closed_app(opts, db).await;
    assert_metrics_do_not_tell_them_apart(&app, true, "magic_link.sent").await;
    assert_eq!(sink.to(MEMBER).len(), 2);
    assert!(sink.to(STRANGER).is_empty(), "the stranger is sent nothing");
}

#[sqlx::test]
async fn with_signup_closed_the_audit_trail_records_what_was_withheld(opts: PgPoolOptions, db: PgConnectOptions) {
    let (app, _sink, pool) = closed_app(opts, db).await;
    assert_eq!(app.send_code(STRANGER).await.status, 200);
    assert_eq!(app.send_magic_link(STRANGER, None).await.status, 200);

    let rows: Vec<(String, bool, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event, success, error, metadata->>'emailDomain' FROM audit_events WHERE email = $1 ORDER BY id",
    )
    .bind(STRANGER)
    .fetch_all(&pool)
    .await
    .unwrap();
    let reason = Some("No account (sign-up closed)".to_owned());
    let domain = Some("example.com".to_owned());
    assert_eq!(
        rows,
        [
            ("otp.withheld".to_owned(), false, reason.clone(), domain.clone()),
            ("magic_link.withheld".to_owned(), false, reason, domain),
        ],
        "one truthful row per send; no `generated` or `sent` for what was neither"
    );
    let stored: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM otp_codes WHERE email = $1) + (SELECT count(*) FROM magic_links WHERE email = $1)",
    )
    .bind(STRANGER)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "no code or link is stored for the stranger");
}
