//! `GET /admin/stats`: the audit trail counted in buckets. Its totals equal SQL
//! written here independently of the endpoint's query, over the same window.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    audit_support::insert_events,
    helpers::{TestApp, rt, smtp_config},
    mailbox::{SmtpSink, token_of},
};

/// The totals' plain numbers, in the order of [`sql_totals`].
const FIELDS: [&str; 8] = [
    "codesSent",
    "linksSent",
    "logins",
    "verificationFailures",
    "refreshes",
    "reuseDetected",
    "rateLimited",
    "newUsers",
];

fn instant(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

/// The documented definitions (docs/API.md, "Statistics"), as SQL over `[from, until]`:
/// the plain numbers, logins by method and failures by reason.
async fn sql_totals(pool: &PgPool, from: OffsetDateTime, until: OffsetDateTime) -> Value {
    let row: (i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event = 'otp.sent' AND success),
                count(*) FILTER (WHERE event = 'magic_link.sent' AND success),
                count(*) FILTER (WHERE event = 'auth.login'),
                count(*) FILTER (WHERE event IN ('otp.verification', 'magic_link.verification') AND NOT success),
                count(*) FILTER (WHERE event = 'token.refresh' AND success),
                count(*) FILTER (WHERE event = 'token.reuse_detected'),
                count(*) FILTER (WHERE event = 'rate_limit.exceeded'),
                count(*) FILTER (WHERE event = 'user.created')
         FROM audit_events WHERE created_at >= $1 AND created_at <= $2",
    )
    .bind(from)
    .bind(until)
    .fetch_one(pool)
    .await
    .unwrap();
    let by = |sql: &'static str| async move {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql)
            .bind(from)
            .bind(until)
            .fetch_all(pool)
            .await
            .unwrap();
        rows.into_iter()
            .map(|(k, n)| (k, json!(n)))
            .collect::<serde_json::Map<_, _>>()
    };
    let methods = by("SELECT metadata->>'method', count(*) FROM audit_events
         WHERE event = 'auth.login' AND created_at >= $1 AND created_at <= $2 GROUP BY 1")
    .await;
    let reasons = by("SELECT error, count(*) FROM audit_events
         WHERE event IN ('otp.verification', 'magic_link.verification') AND NOT success
           AND created_at >= $1 AND created_at <= $2 GROUP BY 1")
    .await;
    json!({
        "codesSent": row.0, "linksSent": row.1, "logins": row.2, "verificationFailures": row.3,
        "refreshes": row.4, "reuseDetected": row.5, "rateLimited": row.6, "newUsers": row.7,
        "loginsByMethod": methods, "verificationFailuresByReason": reasons,
    })
}

/// The endpoint's totals with the zero entries of the breakdowns left out.
fn nonzero(totals: &Value) -> Value {
    let mut t = totals.clone();
    for key in ["loginsByMethod", "verificationFailuresByReason"] {
        t[key].as_object_mut().unwrap().retain(|_, n| n.as_i64() != Some(0));
    }
    t
}

/// Every bucket's numbers summed, per field.
fn bucket_sums(stats: &Value) -> Vec<i64> {
    FIELDS
        .iter()
        .map(|f| {
            stats["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b[f].as_i64().unwrap())
                .sum()
        })
        .collect()
}

async fn stats(app: &TestApp, query: &str) -> Value {
    let resp = app
        .admin(reqwest::Method::GET, &format!("/admin/stats{query}"), None)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.json
}

/// Two sign-ins with codes (one after a wrong code), one with a link that is then
/// used again, a refresh and the reuse of the rotated token.
async fn scripted_mix(app: &TestApp, sink: &SmtpSink) {
    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    let code = sink.last_to("ada@example.com").code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    app.verify_code("ada@example.com", wrong)
        .await
        .assert_error(401, "invalid_code");
    let ada = app.verify_code("ada@example.com", &code).await.json;
    app.sign_in(sink, "bob@example.com").await;
    assert_eq!(app.send_magic_link("cy@example.com", None).await.status, 200);
    let token = token_of(&sink.last_to("cy@example.com").link());
    assert_eq!(app.verify_magic_link(&token).await.status, 200);
    assert_ne!(app.verify_magic_link(&token).await.status, 200);
    assert_eq!(app.refresh(rt(&ada)).await.status, 200);
    assert_eq!(app.refresh(rt(&ada)).await.status, 401);
}

async fn spawn(db: PgConnectOptions) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    // Any second presentation of a refresh token is reuse.
    config.tokens.refresh_reuse_interval = Duration::ZERO;
    (TestApp::spawn_with(config).await, sink)
}

#[sqlx::test]
async fn stats_totals_equal_the_sql_answers_and_the_buckets_sum_to_them(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn(db).await;
    scripted_mix(&app, &sink).await;

    let s = stats(&app, "?since=24h&bucket=1h").await;
    assert_eq!(s["success"], true);
    assert_eq!(s["bucket"], "1h");
    let t = &s["totals"];
    let known = [2, 1, 3, 2, 1, 1, 0, 3];
    for (f, n) in FIELDS.iter().zip(known) {
        assert_eq!(t[f], n, "{f} of the scripted mix: {t}");
    }
    assert_eq!(t["loginsByMethod"], json!({ "otp": 2, "magic-link": 1 }));
    assert_eq!(t["verificationFailuresByReason"]["Invalid code"], 1);
    assert_eq!(t["verificationFailuresByReason"]["Link already used"], 1);
    assert_eq!(
        t["verificationFailuresByReason"]["OTP expired"], 0,
        "known reasons are listed"
    );
    let (from, until) = (instant(&s["from"]), instant(&s["until"]));
    assert_eq!(until - from, time::Duration::hours(24));
    assert_eq!(nonzero(t), sql_totals(&pool, from, until).await);
    assert_eq!(bucket_sums(&s), known);
    // 24 hours of hourly buckets: 25 when the window does not start on the hour.
    let n = s["buckets"].as_array().unwrap().len();
    assert!(n == 24 || n == 25, "{n} buckets");

    // Events of other days (some outside the last 24 hours) count only inside the window.
    insert_events(&pool).await;
    for query in [
        "?since=24h&bucket=1h",
        "?since=3d&bucket=1h",
        "?since=90d&bucket=1d",
        "?since=26h&bucket=15m",
    ] {
        let s = stats(&app, query).await;
        let (from, until) = (instant(&s["from"]), instant(&s["until"]));
        assert_eq!(nonzero(&s["totals"]), sql_totals(&pool, from, until).await, "{query}");
        let sums = bucket_sums(&s);
        for (f, n) in FIELDS.iter().zip(sums) {
            assert_eq!(s["totals"][f], n, "{query}: the buckets' {f} sum to the total");
        }
    }
    let day = stats(&app, "?since=24h&bucket=1h").await;
    let three = stats(&app, "?since=3d&bucket=1h").await;
    assert_eq!(day["totals"]["logins"], 6, "the login 30 hours ago is outside");
    assert_eq!(three["totals"]["logins"], 7);
    assert_eq!(three["totals"]["reuseDetected"], 4);
}

#[sqlx::test]
async fn an_empty_window_has_zero_buckets_and_zero_totals(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db).await;
    scripted_mix(&app, &sink).await;
    // Two hours later, the last hour holds nothing.
    app.state.clock.advance(Duration::from_secs(2 * 3600));
    let s = stats(&app, "?since=1h&bucket=5m").await;
    let buckets = s["buckets"].as_array().unwrap();
    assert!(buckets.len() == 12 || buckets.len() == 13, "{} buckets", buckets.len());
    for f in FIELDS {
        assert_eq!(s["totals"][f], 0, "{f}");
        assert!(buckets.iter().all(|b| b[f] == 0), "{f} in every bucket");
    }
    assert_eq!(s["totals"]["loginsByMethod"], json!({ "otp": 0, "magic-link": 0 }));
    // Buckets are consecutive, aligned, oldest first.
    let starts: Vec<i64> = buckets.iter().map(|b| instant(&b["start"]).unix_timestamp()).collect();
    assert!(starts.iter().all(|s| s % 300 == 0));
    assert!(starts.windows(2).all(|w| w[1] - w[0] == 300));
    // A narrower window is as empty.
    assert_eq!(stats(&app, "?since=10m&bucket=1m").await["totals"]["logins"], 0);
}

#[sqlx::test]
async fn events_on_either_side_of_a_bucket_boundary_land_in_their_buckets(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn(db).await;
    app.sign_in(&sink, "ada@example.com").await;
    let first = app.state.clock.now();
    // One hour later: the next hourly bucket, whatever the minute now.
    app.state.clock.advance(Duration::from_secs(3600));
    app.sign_in(&sink, "bob@example.com").await;
    app.sign_in(&sink, "cy@example.com").await;

    let s = stats(&app, "?since=3h&bucket=1h").await;
    assert_eq!(s["totals"]["logins"], 3);
    let hour = |t: OffsetDateTime| t.unix_timestamp() - t.unix_timestamp().rem_euclid(3600);
    let logins_at = |start: i64| {
        s["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| instant(&b["start"]).unix_timestamp() == start)
            .map(|b| (b["logins"].as_i64().unwrap(), b["newUsers"].as_i64().unwrap()))
    };
    assert_eq!(logins_at(hour(first)), Some((1, 1)));
    assert_eq!(logins_at(hour(first) + 3600), Some((2, 2)));
    let (from, until) = (instant(&s["from"]), instant(&s["until"]));
    assert_eq!(nonzero(&s["totals"]), sql_totals(&pool, from, until).await);

    // A window that starts after the first sign-in leaves it out.
    let s = stats(&app, "?since=30m&bucket=1m").await;
    assert_eq!(s["totals"]["logins"], 2);
}

#[sqlx::test]
async fn bad_windows_and_too_many_buckets_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for query in [
        "?since=24h&bucket=1m",
        "?since=90d&bucket=1h",
        "?since=501m&bucket=1m",
        "?since=91d&bucket=1d",
        "?since=0s",
        "?since=soon",
        "?since=-1h",
        "?bucket=30s",
        "?bucket=2d",
        "?since=1h&bucket=",
    ] {
        let resp = app
            .admin(reqwest::Method::GET, &format!("/admin/stats{query}"), None)
            .await;
        resp.assert_error(400, "invalid_request");
        assert!(
            resp.json["error"].as_str().unwrap().contains("bucket")
                || resp.json["error"].as_str().unwrap().contains("since"),
            "{query}: {}",
            resp.text
        );
    }
    assert_eq!(stats(&app, "?since=500m&bucket=1m").await["bucket"], "1m");
    assert_eq!(stats(&app, "").await["bucket"], "1h", "defaults: 24h in 1h buckets");
}

#[sqlx::test]
async fn stats_need_the_admin_token_and_live_only_on_the_admin_listener(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    app.admin_get("/admin/stats?since=1h&bucket=1m")
        .await
        .assert_error(401, "invalid_admin_token");
    let wrong = app
        .client
        .get(format!("{}/admin/stats", app.admin_address))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(app.get("/admin/stats").await.status, 404);
}

#[sqlx::test]
async fn the_dashboard_is_served_on_the_admin_listener_under_a_strict_csp(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let page = app.admin_get("/dashboard").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text.contains("operators' dashboard"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("connect-src 'self'")
    );
    assert!(!csp.contains("unsafe-inline") && !csp.contains("http"), "{csp}");
    for (path, ty) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let resp = app.admin_get(path).await;
        assert_eq!(resp.status, 200, "{path}");
        assert!(resp.header("content-type").unwrap().starts_with(ty), "{path}");
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    }
    assert_eq!(app.get("/dashboard").await.status, 404, "not on the public port");
}

#[sqlx::test]
async fn hours_rolled_up_by_the_cleanup_job_give_the_answers_of_the_raw_events(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn(db).await;
    app.sign_in(&sink, "early@example.com").await;
    app.state.clock.advance(Duration::from_secs(90 * 60));
    scripted_mix(&app, &sink).await;
    app.state.clock.advance(Duration::from_secs(2 * 3600));
    app.sign_in(&sink, "late@example.com").await;
    // Past the seal: every hour with an event is final.
    app.state.clock.advance(Duration::from_secs(2 * 3600));
    app.sign_in(&sink, "now@example.com").await;
    let queries = ["?since=24h&bucket=1h", "?since=7d&bucket=1d", "?since=8h&bucket=1m"];
    // The counts of an answer: its totals and its buckets with any (the clock
    // moves on between calls, so the window's ends differ a little).
    let counts = |s: Value| {
        let busy: Vec<Value> = s["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| FIELDS.iter().any(|f| b[f] != 0))
            .cloned()
            .collect();
        (s["totals"].clone(), busy)
    };
    let mut before = Vec::new();
    for q in queries {
        before.push(counts(stats(&app, q).await));
    }

    sesame::cleanup::run_once(&app.state).await.unwrap().unwrap();
    let hours: i64 = sqlx::query_scalar("SELECT count(DISTINCT hour) FROM audit_counts_hourly")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        hours >= 3,
        "the hours of the first three sign-in times are rolled up: {hours}"
    );
    for (q, b) in queries.iter().zip(&before) {
        assert_eq!(
            &counts(stats(&app, q).await),
            b,
            "{q}: the same answer from the rollups"
        );
    }
    // A second run changes nothing.
    sesame::cleanup::run_once(&app.state).await.unwrap().unwrap();
    assert_eq!(counts(stats(&app, queries[0]).await), before[0]);

    // The hourly windows read the rollups (the per-minute one does not).
    sqlx::query("UPDATE audit_counts_hourly SET count = count + 1000 WHERE event = 'auth.login'")
        .execute(&pool)
        .await
        .unwrap();
    let logins = |totals: &Value| totals["logins"].as_i64().unwrap();
    assert!(logins(&stats(&app, queries[0]).await["totals"]) >= logins(&before[0].0) + 1000);
    assert_eq!(counts(stats(&app, queries[2]).await), before[2]);
    sqlx::query("UPDATE audit_counts_hourly SET count = count - 1000 WHERE event = 'auth.login'")
        .execute(&pool)
        .await
        .unwrap();

    // Retention takes the oldest events (cutting into their hour): the answers
    // follow the table, and the rollups of emptied hours go.
    let first: OffsetDateTime = sqlx::query_scalar("SELECT min(created_at) FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE created_at <= $1 + interval '95 minutes'")
        .bind(first)
        .execute(&pool)
        .await
        .unwrap();
    sesame::cleanup::run_once(&app.state).await.unwrap().unwrap();
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_counts_hourly WHERE hour < date_bin('1 hour', (SELECT min(created_at) FROM audit_events), 'epoch')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stale, 0, "rollups of hours retention emptied are pruned");
    for q in queries {
        let s = stats(&app, q).await;
        let (from, until) = (instant(&s["from"]), instant(&s["until"]));
        assert_eq!(nonzero(&s["totals"]), sql_totals(&pool, from, until).await, "{q}");
    }
}
