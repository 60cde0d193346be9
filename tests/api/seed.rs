//! `bench/seed` keeps working: a scaled-down seed fills a migrated database
//! with a year of the documented shape, and sesame still signs people in and
//! answers the audit queries over it.

use std::{collections::BTreeSet, process::Command, time::Duration};

use sesame::audit::Event;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{database_url, rt, spawn_with_smtp};

/// Runs `bench/seed` on `db` with these row counts (`USERS`, `EVENTS`, …).
pub(crate) fn run_seed(db: &PgConnectOptions, counts: &[(&str, &str)]) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/seed"))
        .arg(database_url(db))
        .envs(counts.iter().copied())
        .output()
        .expect("bench/seed runs");
    assert!(
        out.status.success(),
        "bench/seed failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[sqlx::test]
async fn a_small_seed_fills_a_year_and_sign_in_and_the_audit_queries_still_work(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    run_seed(
        &db,
        &[
            ("USERS", "10000"),
            ("SESSIONS", "20000"),
            ("TOKENS", "70000"),
            ("EVENTS", "40000"),
        ],
    );

    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(count("SELECT count(*) FROM users").await, 10_000);
    assert_eq!(count("SELECT count(*) FROM sessions").await, 20_000);
    assert_eq!(count("SELECT count(*) FROM refresh_tokens").await, 70_000);
    assert_eq!(count("SELECT count(*) FROM audit_events").await, 40_000);
    // Expired codes and links for the cleanup job: one in 20 and one in 10 users.
    assert_eq!(
        count("SELECT count(*) FROM otp_codes WHERE expires_at < now()").await,
        500
    );
    assert_eq!(
        count("SELECT count(*) FROM magic_links WHERE expires_at < now()").await,
        1_000
    );
    // Tokens: one live (or revoked, or expired) head per session, the rest rotated.
    assert_eq!(
        count("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL").await,
        20_000
    );
    assert!(
        count("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NOT NULL").await > 3_000
    );
    assert!(
        count(
            "SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NULL AND revoked_at IS NULL AND expires_at < now()"
        )
        .await
            > 1_000
    );
    // The events span twelve months, each in its month's partition, with sesame's names.
    assert!(count("SELECT count(*) FROM audit_events WHERE created_at < now() - interval '360 days'").await > 0);
    assert_eq!(count("SELECT count(*) FROM audit_events_default").await, 0);
    assert!(
        count("SELECT count(DISTINCT tableoid) FROM audit_events").await >= 12,
        "a year of events fills a partition per month"
    );
    let names: BTreeSet<String> = sqlx::query_scalar("SELECT DISTINCT event FROM audit_events")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let known: BTreeSet<String> = Event::ALL.iter().map(|e| e.as_str().to_owned()).collect();
    assert!(names.is_subset(&known), "unknown names: {:?}", names.difference(&known));
    assert!(names.len() >= 15, "a mix of events: {names:?}");
    // Metadata shaped as sesame writes it.
    assert_eq!(
        count("SELECT count(*) FROM audit_events WHERE event = 'auth.login' AND NOT (metadata ?& array['method', 'sessionId'])").await,
        0
    );
    // The default WEBHOOK_EVENTS have their deliveries.
    assert_eq!(
        count(
            "SELECT count(*) FROM audit_events
             WHERE event IN ('user.created', 'admin.user.deleted', 'admin.user.disabled', 'token.reuse_detected')"
        )
        .await,
        count("SELECT count(*) FROM webhook_deliveries").await
    );

    // A seeded person signs in (as the user the seed made) and refreshes.
    let (app, sink) = spawn_with_smtp(db).await;
    let pair = app.sign_in(&sink, "user42@example.com").await;
    let seeded: uuid::Uuid = sqlx::query_scalar("SELECT md5('seed-user-42')::uuid")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pair["user"]["id"], seeded.to_string(), "{pair}");
    let refreshed = app.refresh(rt(&pair)).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.text);

    // The documented queries answer over the seeded year.
    let mut conn = pool.acquire().await.unwrap();
    for q in sesame::audit::report::queries() {
        let table = sesame::audit::report::run(&mut conn, &q, Duration::from_secs(400 * 24 * 3600))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", q.name));
        assert!(!table.rows.is_empty(), "{} answers", q.name);
    }
    let events_of_42 = app
        .admin(
            reqwest::Method::GET,
            "/admin/audit?email=user42@example.com&limit=200",
            None,
        )
        .await;
    assert_eq!(events_of_42.status, 200, "{}", events_of_42.text);
    assert!(
        events_of_42.json["events"].as_array().unwrap().len() > 5,
        "{}",
        events_of_42.text
    );
}
