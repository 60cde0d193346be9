//! Several instances: three under mixed traffic behave as one, and one session
//! raced by several clients across them, round after round, never has two live
//! refresh tokens.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::task::JoinSet;

use crate::{
    faults_support::post,
    helpers::{TestApp, smtp_config},
    mailbox::SmtpSink,
};

/// How many clients present one refresh token at once in a race round.
const RACERS: usize = 6;

/// Presents `token` from [`RACERS`] clients at once, spread over `urls`, and
/// returns their answers. So that they really race, the test holds the
/// session's row lock (the one every refresh of a session takes) until all of
/// them are queued behind it, then lets them go together.
async fn race(pool: &PgPool, urls: &[String], token: &str) -> Vec<(u16, Value)> {
    let mut hold = pool.begin().await.unwrap();
    let holder: i32 = sqlx::query_scalar(
        "SELECT pg_backend_pid() FROM sessions
         WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8')))
         FOR UPDATE",
    )
    .bind(token)
    .fetch_one(&mut *hold)
    .await
    .unwrap();
    let mut racers = JoinSet::new();
    for i in 0..RACERS {
        racers.spawn(post(
            format!("{}/auth/refresh", urls[i % urls.len()]),
            json!({ "refreshToken": token }),
        ));
    }
    // Queued: blocked by the holder, directly or behind another racer.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let queued: i64 = sqlx::query_scalar(
            "WITH RECURSIVE blocked(pid) AS (
                 SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))
                 UNION
                 SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid))
             ) SELECT count(*) FROM blocked",
        )
        .bind(holder)
        .fetch_one(pool)
        .await
        .unwrap();
        if queued == RACERS as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{queued} of {RACERS} racers reached the session lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hold.rollback().await.unwrap();
    racers.join_all().await
}

/// Asserts that no session has more than one live refresh token.
async fn assert_no_session_has_two_live_tokens(pool: &PgPool, when: &str) {
    let sessions: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT session_id FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL
         GROUP BY session_id HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        sessions.is_empty(),
        "{when}: sessions with two live tokens: {sessions:?}"
    );
}

/// Whether `token` is the one live refresh token of its session.
async fn is_the_live_token(pool: &PgPool, token: &str) -> bool {
    sqlx::query_scalar(
        "SELECT rotated_at IS NULL AND revoked_at IS NULL FROM refresh_tokens
         WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(token)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(false)
}

/// Races one session across `urls` for `rounds` rounds with the default
/// `REFRESH_REUSE_INTERVAL`: every racer of a round gets the same child, which
/// is the session's one live token and the token of the next round.
async fn race_one_session(pool: &PgPool, urls: &[String], first: &str, rounds: usize) {
    let mut token = first.to_owned();
    for round in 0..rounds {
        let answers = race(pool, urls, &token).await;
        assert_no_session_has_two_live_tokens(pool, &format!("round {round}")).await;
        assert!(
            answers.iter().all(|(s, _)| *s == 200),
            "round {round}: every racing presenter is answered: {answers:?}"
        );
        let child = answers[0].1["refreshToken"].as_str().unwrap().to_owned();
        assert!(
            answers.iter().all(|(_, b)| b["refreshToken"] == child.as_str()),
            "round {round}: all with the same child: {answers:?}"
        );
        assert!(
            is_the_live_token(pool, &child).await,
            "round {round}: the child is the live token"
        );
        token = child;
    }
}

#[sqlx::test]
async fn three_instances_under_mixed_traffic_behave_as_one(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db.clone(), &sink);
    config.rate_limits.enabled = true;
    config.rate_limits.send_per_ip_per_hour = 1000;
    config.rate_limits.verify_per_ip_per_minute = 1000;
    config.rate_limits.refresh_per_ip_per_minute = 1000;
    let apps = [
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config.clone()).await,
    ];
    let urls: Vec<String> = apps.iter().map(|a| a.url("")).collect();
    let mut pairs = Vec::new();
    for i in 0..6 {
        pairs.push(apps[i % 3].sign_in(&sink, &format!("user{i}@example.com")).await);
    }
    let raced = apps[0].sign_in(&sink, "raced@example.com").await;

    let mut traffic = JoinSet::new();
    for (i, pair) in pairs.iter().enumerate() {
        let urls = urls.clone();
        let first = pair["refreshToken"].as_str().unwrap().to_owned();
        traffic.spawn(async move {
            // A chain of refreshes hopping between instances...
            let mut token = first.clone();
            for step in 0..5 {
                let (status, next) = post(
                    format!("{}/auth/refresh", urls[(i + step) % 3]),
                    json!({ "refreshToken": token }),
                )
                .await;
                assert_eq!(status, 200, "{next}");
                token = next["refreshToken"].as_str().unwrap().to_owned();
            }
            // ...then half of the users replay their first token: a theft.
            if i % 2 == 0 {
                let (status, _) = post(
                    format!("{}/auth/refresh", urls[i % 3]),
                    json!({ "refreshToken": first }),
                )
                .await;
                assert_eq!(status, 401);
            }
            // And everyone sends codes to one shared address from every instance.
            let (status, _) = post(
                format!("{}/auth/send-code", urls[i % 3]),
                json!({ "email": "shared@example.com" }),
            )
            .await;
            (i, status, token)
        });
    }
    // Meanwhile one session is raced across the instances, round after round,
    // and every session is checked after each round.
    race_one_session(&pool, &urls, raced["refreshToken"].as_str().unwrap(), 5).await;
    let results = traffic.join_all().await;
    let sends_ok = results.iter().filter(|(_, s, _)| *s == 200).count();
    assert_eq!(
        sends_ok, 1,
        "one send per address per minute, across instances: {results:?}"
    );
    assert_eq!(sink.to("shared@example.com").len(), 1, "one email");

    for (i, _, token) in &results {
        let resp = apps[0].refresh(token).await;
        let expected = if i % 2 == 0 { 401 } else { 200 };
        assert_eq!(resp.status, expected, "user {i}: reuse ends the session; others go on");
    }
    assert_no_session_has_two_live_tokens(&pool, "after the traffic").await;
    let reuse: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'token.reuse_detected'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reuse, 3);

    // With REFRESH_REUSE_INTERVAL=0, racing presenters are reuse: one wins,
    // the next ends the session. A fresh session per round.
    config.tokens.refresh_reuse_interval = Duration::ZERO;
    let strict = [
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config.clone()).await,
        TestApp::spawn_with(config).await,
    ];
    let strict_urls: Vec<String> = strict.iter().map(|a| a.url("")).collect();
    for (round, app) in strict.iter().enumerate() {
        let pair = app.sign_in(&sink, &format!("strict{round}@example.com")).await;
        let answers = race(&pool, &strict_urls, pair["refreshToken"].as_str().unwrap()).await;
        assert_no_session_has_two_live_tokens(&pool, &format!("strict round {round}")).await;
        let ok = answers.iter().filter(|(s, _)| *s == 200).count();
        assert_eq!(ok, 1, "strict round {round}: exactly one racer wins: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(s, b)| *s == 200 || (*s == 401 && b["code"] == "invalid_refresh_token")),
            "strict round {round}: the others are refused: {answers:?}"
        );
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL
             AND session_id = (SELECT session_id FROM refresh_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8')))",
        )
        .bind(pair["refreshToken"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(live, 0, "strict round {round}: the reuse ended the session");
    }

    // Every instance runs the cleanup job at once: none fails, at least one gets the
    // lock (that only one holds it at a time is audit_cleanup::cleanup_runs_on_one_instance_at_a_time).
    let mut cleanups = JoinSet::new();
    for app in &apps {
        let state = app.state.clone();
        cleanups.spawn(async move { sesame::cleanup::run_once(&state).await });
    }
    let reports = cleanups.join_all().await;
    assert!(reports.iter().all(Result::is_ok), "{reports:?}");
    assert!(reports.iter().any(|r| matches!(r, Ok(Some(_)))), "{reports:?}");
}
