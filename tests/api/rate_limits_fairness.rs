//! Limits an attacker cannot turn against a user: a refused request counts
//! against no limit, IPv6 clients are counted per prefix, and an address's
//! `+tag` variants share its budget.

use std::time::Duration;

use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::TestApp,
    mailbox::SmtpSink,
    rate_limits::{assert_limited, limited, post_from},
};

/// The hits of the counter `bucket` (the sum over its subjects).
async fn hits(pool: &sqlx::PgPool, bucket: &str) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(hits), 0)::bigint FROM rate_limits WHERE bucket = $1")
        .bind(bucket)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn refused_sends_leave_the_hourly_address_budget_untouched(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(limited(db, &sink)).await;

    // An attacker asks 11 times in a minute for the victim: one email goes out.
    assert_eq!(app.send_code("victim@example.com").await.status, 200);
    for _ in 0..10 {
        assert_limited(&app.send_code("victim@example.com").await, "send_per_address_interval");
    }
    assert_eq!(hits(&pool, "send_per_address_hour").await, 1, "only the send counted");
    assert_eq!(hits(&pool, "send_per_ip_hour").await, 1);
    assert_eq!(hits(&pool, "send_per_address_interval").await, 1);

    // A minute later the victim can still sign in, nine more times this hour.
    app.state.clock.advance(Duration::from_secs(60));
    for i in 0..9 {
        let resp = app.send_code("victim@example.com").await;
        assert_eq!(resp.status, 200, "send {i}: {}", resp.text);
        app.state.clock.advance(Duration::from_secs(60));
    }
    assert_limited(&app.send_code("victim@example.com").await, "send_per_address_hour");
    assert_eq!(sink.to("victim@example.com").len(), 10);
}

#[sqlx::test]
async fn a_refused_request_counts_against_no_limit_not_even_its_own(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.send_interval = Duration::ZERO;
    config.rate_limits.send_per_address_per_hour = 2;
    config.rate_limits.send_per_ip_per_hour = 3;
    let app = TestApp::spawn_with(config).await;

    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    for _ in 0..5 {
        assert_limited(&app.send_code("ada@example.com").await, "send_per_address_hour");
    }
    assert_eq!(hits(&pool, "send_per_address_hour").await, 2);
    assert_eq!(hits(&pool, "send_per_ip_hour").await, 2, "five refusals spent nothing");
    // So the client still has one send left for another address.
    assert_eq!(app.send_code("bob@example.com").await.status, 200);
    assert_limited(&app.send_code("carol@example.com").await, "send_per_ip_hour");
    assert_eq!(
        hits(&pool, "send_per_address_hour").await,
        3,
        "carol's refusal left no count"
    );
}

#[sqlx::test]
async fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.server.trust_proxy_headers = true;
    config.rate_limits.send_per_ip_per_hour = 1;
    let app = TestApp::spawn_with(config).await;
    let send = |i: usize, from: &'static str| {
        let app = &app;
        async move {
            post_from(
                app,
                "/auth/send-code",
                json!({ "email": format!("u{i}@example.com") }),
                from,
            )
            .await
        }
    };

    assert_eq!(send(1, "2001:db8:1:2::1").await.status, 200);
    // Another address of the same /64: the same client.
    assert_limited(&send(2, "2001:db8:1:2:ffff:ffff:ffff:ffff").await, "send_per_ip_hour");
    // The next /64 is another client.
    assert_eq!(send(3, "2001:db8:1:3::1").await.status, 200);

    assert_eq!(send(4, "203.0.113.9").await.status, 200);
    assert_limited(&send(5, "::ffff:203.0.113.9").await, "send_per_ip_hour");
    assert_eq!(send(6, "203.0.113.10").await.status, 200, "IPv4 stays per address");
}

#[sqlx::test]
async fn plus_tags_share_the_address_budget_and_mail_goes_to_the_address_as_typed(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.send_interval = Duration::ZERO;
    config.rate_limits.send_per_address_per_hour = 2;
    let app = TestApp::spawn_with(config).await;

    assert_eq!(app.send_code("Ada+1@Example.com").await.status, 200);
    assert_eq!(app.send_magic_link("ada+2@example.com", None).await.status, 200);
    assert_limited(&app.send_code("ada@example.com").await, "send_per_address_hour");
    assert_limited(&app.send_code("ADA+3@example.com").await, "send_per_address_hour");
    assert_eq!(app.send_code("bob+1@example.com").await.status, 200, "another mailbox");

    assert_eq!(sink.to("ada+1@example.com").len(), 1, "sent to the address as typed");
    assert_eq!(sink.to("ada+2@example.com").len(), 1);
    assert_eq!(sink.to("ada@example.com").len(), 0);
    assert_eq!(sink.to("bob+1@example.com").len(), 1);
}

#[sqlx::test]
async fn a_single_limit_counts_only_the_requests_it_lets_through_even_in_a_burst(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = limited(db, &sink);
    config.rate_limits.verify_per_ip_per_minute = 2;
    config.rate_limits.default_per_ip_per_minute = 10;
    let app = TestApp::spawn_with(config).await;

    for _ in 0..2 {
        assert_eq!(app.verify_magic_link(&"V".repeat(43)).await.status, 401);
    }
    for _ in 0..3 {
        let wait = assert_limited(&app.verify_magic_link(&"V".repeat(43)).await, "verify_per_ip_minute");
        assert_eq!(wait, 60);
    }
    assert_eq!(hits(&pool, "verify_per_ip_minute").await, 2);

    let mut set = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (client, url) = (app.client.clone(), app.url("/auth/logout"));
        set.spawn(async move {
            let resp = client
                .post(url)
                .json(&json!({ "refreshToken": "G".repeat(43) }))
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        });
    }
    let statuses = set.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);
    assert_eq!(hits(&pool, "default_per_ip_minute").await, 10);
}
