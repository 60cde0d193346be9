//! Rate limits in PostgreSQL: thresholds, windows, Retry-After, two instances,
//! bursts, restarts, the hashed subjects, and which client IP counts.

use std::time::Duration;

use serde_json::json;
use sesame::config::Config;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinSet;

use crate::{
    helpers::{ServerProcess, TestApp, TestResponse, smtp_config, temp_dir},
    mailbox::SmtpSink,
};

/// An SMTP-backed config with limits on (the documented defaults unless changed).
pub fn limited(db: PgConnectOptions, sink: &SmtpSink) -> Config {
    let mut config = smtp_config(db, sink);
    config.rate_limits.enabled = true;
    config
}

pub fn assert_limited(resp: &TestResponse, limit: &str) -> u64 {
    assert_eq!(resp.status, 429, "{}", resp.text);
    assert_eq!(resp.json["code"], "rate_limited");
    assert_eq!(resp.json["success"], false);
    assert_eq!(resp.json["limit"], limit, "{}", resp.text);
    let retry_after: u64 = resp.header("retry-after").expect("Retry-After").parse().unwrap();
    assert_eq!(resp.json["retryAfter"], retry_after);
    assert!(
        resp.json["error"]
            .as_str()
            .unwrap()
            .contains(&format!("retry in {retry_after}s")),
        "{}",
        resp.text
    );
    retry_after
}

pub async fn post_from(app: &TestApp, path: &str, body: serde_json::Value, forwarded_for: &str) -> TestResponse {
    let resp = app
        .client
        .post(app.url(path))
        .header("x-forwarded-for", forwarded_for)
        .json(&body)
        .send()
        .await
        .unwrap();
    TestResponse::from(resp).await
}

#[sqlx::test]
async fn one_send_per_address_per_interval_shared_by_codes_and_links(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(limited(db, &sink)).await;

    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    assert_eq!(
        assert_limited(&app.send_code("ada@example.com").await, "send_per_address_interval"),
        60
    );
    app.state.clock.advance(Duration::from_secs(20));
    assert_eq!(
        assert_limited(
            &app.send_magic_link("ADA@example.com", None).await,
            "send_per_address_interval"
        ),
        40
    );
    assert_eq!(sink.to("ada@example.com").len(), 1, "a refused request sends nothing");
    assert_eq!(
        app.send_code("bob@example.com").await.status,
        200,
        "other addresses are not held back"
    );

    app.state.clock.advance(Duration::from_secs(40));
    assert_eq!(
        app.send_magic_link("ada@example.com", None).await.status,
        200,
        "released after the window"
    );

    let events: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT metadata FROM audit_events WHERE event = 'rate_limit.exceeded' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["limit"], "send_per_address_interval");
    assert_eq!(events[0]["keyKind"], "address");
}

#[sqlx::test]
async fn hourly_limits_per_address_and_per_client(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.send_interval = Duration::ZERO;
    config.rate_limits.send_per_address_per_hour = 3;
    config.rate_limits.send_per_ip_per_hour = 5;
    let app = TestApp::spawn_with(config).await;

    for _ in 0..3 {
        assert_eq!(app.send_code("ada@example.com").await.status, 200);
    }
    let wait = assert_limited(&app.send_code("ada@example.com").await, "send_per_address_hour");
    assert_eq!(wait, 3600);
    assert_eq!(app.send_code("bob@example.com").await.status, 200);
    // The client has sent 4 times (the refusal counted nothing): one more.
    assert_eq!(app.send_code("carol@example.com").await.status, 200);
    assert_limited(&app.send_code("dave@example.com").await, "send_per_ip_hour");
    app.state.clock.advance(Duration::from_secs(3600));
    assert_eq!(app.send_code("ada@example.com").await.status, 200);
}

#[sqlx::test]
async fn verifications_and_refreshes_per_client_per_minute(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.verify_per_ip_per_minute = 3;
    config.rate_limits.refresh_per_ip_per_minute = 2;
    let app = TestApp::spawn_with(config).await;

    app.verify_code("ada@example.com", "000000").await;
    app.verify_magic_link(&"N".repeat(43)).await;
    app.verify_code("bob@example.com", "000000").await;
    let refused = app.verify_magic_link(&"N".repeat(43)).await;
    assert_limited(&refused, "verify_per_ip_minute");
    assert_limited(&app.verify_code("carol@example.com", "1").await, "verify_per_ip_minute");
    app.state.clock.advance(Duration::from_secs(60));
    assert_eq!(
        app.verify_code("carol@example.com", "000000").await.status,
        401,
        "released: back to normal answers"
    );

    assert_eq!(app.refresh(&"A".repeat(43)).await.status, 401);
    assert_eq!(app.refresh(&"B".repeat(43)).await.status, 401);
    assert_limited(&app.refresh(&"C".repeat(43)).await, "refresh_per_ip_minute");
}

#[sqlx::test]
async fn limits_hold_across_two_instances(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let a = TestApp::spawn_with(limited(db.clone(), &sink)).await;
    let b = TestApp::spawn_with(limited(db, &sink)).await;
    assert_eq!(a.send_code("ada@example.com").await.status, 200);
    assert_limited(&b.send_code("ada@example.com").await, "send_per_address_interval");
}

/// Small limits, each exceeded once by [`exceed_every_limit`]: one send per
/// address per minute, 2 per address and 3 per client per hour, 2
/// verifications and 2 refreshes per client per minute.
fn small_limits(db: PgConnectOptions, sink: &SmtpSink, enabled: bool) -> Config {
    let mut config = limited(db, sink);
    config.rate_limits.enabled = enabled;
    config.rate_limits.send_interval = Duration::from_secs(60);
    config.rate_limits.send_per_address_per_hour = 2;
    config.rate_limits.send_per_ip_per_hour = 3;
    config.rate_limits.verify_per_ip_per_minute = 2;
    config.rate_limits.refresh_per_ip_per_minute = 2;
    config
}

/// Requests that go over each limit of [`small_limits`] once, from one client,
/// sending to the addresses `[a, b, c]`: `(request, answer)` in order. With
/// limits on, the 429s name, in turn, the per-address interval, the
/// per-address hour, the per-client hour, the verifications and the refreshes
/// (a refused request counts nothing, so each 429 comes from counted sends).
async fn exceed_every_limit(app: &TestApp, [a, b, c]: [&str; 3]) -> Vec<(&'static str, TestResponse)> {
    let minute = Duration::from_secs(60);
    let mut answers = vec![
        ("send 1 to a", app.send_code(a).await),
        ("send 2 to a (interval)", app.send_magic_link(a, None).await),
    ];
    app.state.clock.advance(minute);
    answers.push(("send 3 to a", app.send_code(a).await));
    app.state.clock.advance(minute);
    answers.push(("send 4 to a (address hour)", app.send_code(a).await));
    answers.push(("send 1 to b", app.send_code(b).await));
    answers.push(("send 1 to c (client hour)", app.send_code(c).await));
    answers.extend([
        ("verify 1", app.verify_code(a, "0000000").await),
        ("verify 2", app.verify_magic_link(&"V".repeat(43)).await),
        ("verify 3", app.verify_code(b, "0000000").await),
        ("refresh 1", app.refresh(&"A".repeat(43)).await),
        ("refresh 2", app.refresh(&"B".repeat(43)).await),
        ("refresh 3", app.refresh(&"C".repeat(43)).await),
    ]);
    answers
}

async fn post(url: String, body: serde_json::Value) -> TestResponse {
    TestResponse::from(reqwest::Client::new().post(url).json(&body).send().await.unwrap()).await
}

/// One request of each limited kind to a `sesame serve` process, from 127.0.0.1.
async fn send_verify_refresh(server: &ServerProcess, email: &str) -> [TestResponse; 3] {
    [
        post(server.url("/auth/send-code"), json!({ "email": email })).await,
        post(
            server.url("/auth/verify-code"),
            json!({ "email": email, "code": "0000000" }),
        )
        .await,
        post(server.url("/auth/refresh"), json!({ "refreshToken": "R".repeat(43) })).await,
    ]
}

/// The documented subject of a counter: SHA-256 of the key kind, `:` and the key.
fn documented_subject(kind: &str, key: &str) -> Vec<u8> {
    Sha256::digest(format!("{kind}:{key}").as_bytes()).to_vec()
}

#[sqlx::test]
async fn limits_hold_across_a_restart_and_store_only_sha256_subjects(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let dir = temp_dir("restart");
    let vars = [
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_URL", &*sink.url()),
        ("RATE_LIMIT_ENABLED", "true"),
        ("RATE_LIMIT_VERIFY_PER_IP_PER_MINUTE", "1"),
        ("RATE_LIMIT_REFRESH_PER_IP_PER_MINUTE", "1"),
    ];

    // Each process is stopped before its answers are checked: a failed
    // assertion must not leave it running.
    let first = ServerProcess::start(&db, &dir, &vars);
    first.wait_ready().await;
    let [sent, verified, refreshed] = send_verify_refresh(&first, " Ada@Example.COM").await;
    assert!(first.terminate().await.status.success());
    assert_eq!(sent.status, 200, "{}", sent.text);
    assert_eq!(verified.status, 401, "{}", verified.text);
    assert_eq!(refreshed.status, 401, "{}", refreshed.text);

    // A new process on the same database: every counter is still there (and
    // the address was counted in its normalised form).
    let second = ServerProcess::start(&db, &dir, &vars);
    second.wait_ready().await;
    let [sent, verified, refreshed] = send_verify_refresh(&second, "ada@example.com").await;
    assert!(second.terminate().await.status.success());
    assert_limited(&sent, "send_per_address_interval");
    assert_limited(&verified, "verify_per_ip_minute");
    assert_limited(&refreshed, "refresh_per_ip_minute");
    assert_eq!(sink.to("ada@example.com").len(), 1, "the restart sent nothing more");

    let rows: Vec<(String, Vec<u8>, String)> =
        sqlx::query_as("SELECT bucket, subject, rate_limits::text FROM rate_limits ORDER BY bucket")
            .fetch_all(&pool)
            .await
            .unwrap();
    let address = documented_subject("address", "ada@example.com");
    let ip = documented_subject("ip", "127.0.0.1");
    let global = documented_subject("global", "");
    let subjects: Vec<(&str, &[u8])> = rows.iter().map(|(b, s, _)| (b.as_str(), s.as_slice())).collect();
    assert_eq!(
        subjects,
        [
            ("emails_per_hour", global.as_slice()),
            ("refresh_per_ip_minute", ip.as_slice()),
            ("send_per_address_hour", address.as_slice()),
            ("send_per_address_interval", address.as_slice()),
            ("send_per_ip_hour", ip.as_slice()),
            ("verify_per_ip_minute", ip.as_slice()),
        ],
        "each subject is SHA-256(kind:key)"
    );
    for (bucket, subject, row) in &rows {
        assert_eq!(subject.len(), 32, "{bucket}");
        for raw in ["ada@example.com", "Ada@Example.COM", "ada", "example", "127.0.0.1"] {
            assert!(!row.contains(raw), "{raw} in {row}");
            assert!(
                !subject.windows(raw.len()).any(|w| w == raw.as_bytes()),
                "{raw} in the subject of {bucket}"
            );
        }
        assert!(
            !subject.windows(4).any(|w| w == [127, 0, 0, 1]),
            "the IP's bytes in the subject of {bucket}"
        );
    }
}

#[sqlx::test]
async fn rate_limit_enabled_false_lifts_every_limit(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let off = TestApp::spawn_with(small_limits(db.clone(), &sink, false)).await;
    let answers = exceed_every_limit(&off, ["ada@example.com", "bob@example.com", "carl@example.com"]).await;
    for (request, resp) in &answers {
        assert_ne!(resp.status, 429, "{request}: {}", resp.text);
        assert!(resp.header("retry-after").is_none(), "{request}");
    }
    let statuses: Vec<u16> = answers.iter().map(|(_, r)| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 401, 401, 401, 401, 401, 401]);
    assert_eq!(sink.to("ada@example.com").len(), 4, "every send was delivered");
    assert_eq!(sink.to("bob@example.com").len(), 1);
    assert_eq!(sink.to("carl@example.com").len(), 1);
    let exceeded: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'rate_limit.exceeded'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(exceeded, 0, "no rate_limit.exceeded event");
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM rate_limits")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(counted, 0, "nothing is even counted");
    off.stop().await;

    // The control: the same requests with the same limits on go over each one.
    let on = TestApp::spawn_with(small_limits(db, &sink, true)).await;
    let answers = exceed_every_limit(&on, ["carol@example.com", "dave@example.com", "erin@example.com"]).await;
    let limits: Vec<(&str, String)> = answers
        .iter()
        .filter(|(_, r)| r.status == 429)
        .map(|(request, r)| (*request, r.json["limit"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        limits,
        [
            ("send 2 to a (interval)", "send_per_address_interval".to_owned()),
            ("send 4 to a (address hour)", "send_per_address_hour".to_owned()),
            ("send 1 to c (client hour)", "send_per_ip_hour".to_owned()),
            ("verify 3", "verify_per_ip_minute".to_owned()),
            ("refresh 3", "refresh_per_ip_minute".to_owned()),
        ]
    );
}

#[sqlx::test]
async fn a_burst_of_100_sends_to_one_address_sends_one_email(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.send_per_ip_per_hour = 1000;
    let app = TestApp::spawn_with(config).await;
    let mut set = JoinSet::new();
    for _ in 0..100 {
        let (client, url) = (app.client.clone(), app.url("/auth/send-code"));
        set.spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({ "email": "ada@example.com" }))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        });
    }
    let statuses = set.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 99);
    assert_eq!(sink.to("ada@example.com").len(), 1);
}

#[sqlx::test]
async fn x_forwarded_for_counts_only_when_trusted(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = limited(db.clone(), &sink);
    config.rate_limits.send_per_ip_per_hour = 2;
    let app = TestApp::spawn_with(config.clone()).await;
    for (i, spoofed) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"].iter().enumerate() {
        let resp = post_from(
            &app,
            "/auth/send-code",
            json!({ "email": format!("u{i}@example.com") }),
            spoofed,
        )
        .await;
        if i < 2 {
            assert_eq!(resp.status, 200);
        } else {
            assert_limited(&resp, "send_per_ip_hour");
        }
    }
    let ips: Vec<String> = sqlx::query_scalar("SELECT DISTINCT host(ip) FROM audit_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(ips, ["127.0.0.1"], "the socket peer, not the header");

    config.server.trust_proxy_headers = true;
    let proxied = TestApp::spawn_with(config).await;
    for (i, client) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"].iter().enumerate() {
        let resp = post_from(
            &proxied,
            "/auth/send-code",
            json!({ "email": format!("p{i}@example.com") }),
            &format!("{client}, 10.0.0.1"),
        )
        .await;
        assert_eq!(resp.status, 200, "each client has its own count: {}", resp.text);
    }
}

#[sqlx::test]
async fn the_code_budget_per_address_holds_whatever_the_client_ip(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.server.trust_proxy_headers = true;
    let app = TestApp::spawn_with(config).await;
    app.send_code("ada@example.com").await;
    let code = sink.last_to("ada@example.com").code();
    for i in 0..5 {
        let resp = post_from(
            &app,
            "/auth/verify-code",
            json!({ "email": "ada@example.com", "code": "0000000" }),
            &format!("192.0.2.{i}"),
        )
        .await;
        assert_eq!(resp.status, 401);
    }
    let resp = post_from(
        &app,
        "/auth/verify-code",
        json!({ "email": "ada@example.com", "code": code }),
        "192.0.2.99",
    )
    .await;
    assert_eq!(
        resp.status, 401,
        "five wrong tries from five clients exhaust the address's budget"
    );
    let last: String = sqlx::query_scalar(
        "SELECT error FROM audit_events WHERE event = 'otp.verification.detail' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(last, "Max attempts exceeded");
}
