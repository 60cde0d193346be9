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
    // Moved 100 days back, before the migration's first month partition: in the
    // default partition, whose rows past retention are deleted one by one
    // (whole months are dropped: audit_partitions.rs).
    sqlx::query("UPDATE audit_events SET created_at = created_at - interval '100 days' WHERE created_at < now() - interval '24 hours'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at) VALUES
         (gen_random_uuid(), 'old@example.com', '$argon2id$x', now() - interval '1 hour', now() - interval '1 minute'),
         (gen_random_uuid(), 'new@example.com', '$argon2id$x', now(), now() + interval '10 minutes')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let mut config = test_config(db.clone());
    config.audit.audit_retention = Some(Duration::from_secs(90 * 24 * 3600));
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
    let mut holder = pool.begin().await.unwrap();
    assert!(sesame::store::cleanup::try_lock(&mut holder).await.unwrap());
    let state = AppState::new(test_config(db), Clock::system()).unwrap();
    assert_eq!(
        sesame::cleanup::run_once(&state).await.unwrap(),
        None,
        "another instance holds the lock"
    );
    // The lock ends with the holder's transaction: nothing to unlock.
    holder.rollback().await.unwrap();
    assert!(sesame::cleanup::run_once(&state).await.unwrap().is_some());
}

#[sqlx::test]
async fn cleanup_holds_its_lock_only_inside_the_transaction_of_its_deletes(opts: PgPoolOptions, db: PgConnectOptions) {
    // Behind a transaction-mode pooler each transaction may run on another
    // server connection: a lock taken in one transaction and relied on in the
    // next (a session lock) would stay held on a connection the job no longer
    // has. So the job's lock and its deletes must share one transaction.
    let pool = opts.connect_with(db.clone()).await.unwrap();
    sqlx::query(
        "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at)
         VALUES (gen_random_uuid(), 'old@example.com', '$argon2id$x', now() - interval '2 days', now() - interval '1 day')",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Hold the job at its delete of expired codes: DELETE waits for SHARE.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE otp_codes IN SHARE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let state = AppState::new(test_config(db), Clock::system()).unwrap();
    let job = tokio::spawn({
        let state = state.clone();
        async move { sesame::cleanup::run_once(&state).await }
    });
    let waiting = async {
        loop {
            // The job's backend, waiting in its delete, and whether that delete
            // began its own transaction (autocommit) while the lock was held.
            let row: Option<(bool, bool)> = sqlx::query_as(
                "SELECT a.xact_start = a.query_start,
                        EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)
                 FROM pg_stat_activity a
                 WHERE a.wait_event_type = 'Lock' AND a.query LIKE '%DELETE FROM otp_codes%'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            if let Some(row) = row {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (own_transaction, holds_lock) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the job reached its delete of expired codes");
    blocker.rollback().await.unwrap();
    let report = job.await.unwrap().unwrap().expect("no one else holds the lock");
    assert_eq!(report.otp_codes, 1);
    assert!(holds_lock, "the job deletes while holding the cleanup lock");
    assert!(
        !own_transaction,
        "the delete ran in a transaction of its own, after the one that took the lock"
    );
}
