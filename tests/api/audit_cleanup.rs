//! Cleanup: audit rows past their retention and expired codes are deleted, and
//! nothing else, by one instance at a time.

use std::time::Duration;

use sesame::{app::AppState, clock::Clock};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{audit_support::insert_events, helpers::test_config};

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
