//! Deleting what has expired, in batches, under an advisory lock.

use sqlx::PgConnection;
use time::OffsetDateTime;

/// The advisory lock that lets one instance at a time run the cleanup job.
const LOCK_KEY: i64 = 0x5e5a_3e00_c1ea;

/// Takes the cleanup lock until the end of the transaction `tx` is in, if no
/// one else holds it. Transaction-scoped, never a session lock: behind a
/// transaction-mode pooler (PgBouncer) the next statement may run on another
/// server connection, so a session lock could be left held there forever.
pub async fn try_lock(tx: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#, LOCK_KEY)
        .fetch_one(tx)
        .await
}

/// Deletes up to `batch` audit events created before `cutoff`; returns how many.
pub async fn delete_audit_events_before(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        DELETE FROM audit_events
        WHERE id IN (SELECT id FROM audit_events WHERE created_at < $1 ORDER BY id LIMIT $2)
        "#,
        cutoff,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `batch` one-time codes that expired before `now`.
pub async fn delete_expired_otp_codes(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM otp_codes WHERE id IN (SELECT id FROM otp_codes WHERE expires_at < $1 LIMIT $2)",
        now,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `batch` magic links that expired before `now`.
pub async fn delete_expired_magic_links(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM magic_links WHERE id IN (SELECT id FROM magic_links WHERE expires_at < $1 LIMIT $2)",
        now,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `batch` rate-limit windows that ended before `now`.
pub async fn delete_expired_rate_limits(
    conn: &mut PgConnection,
    now: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        DELETE FROM rate_limits
        WHERE (bucket, subject) IN (
            SELECT bucket, subject FROM rate_limits WHERE expires_at < $1 LIMIT $2
        )
        "#,
        now,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `batch` sessions (with their tokens) that expired or were
/// ended before `cutoff`.
pub async fn delete_ended_sessions(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        DELETE FROM sessions WHERE id IN (
            SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1 LIMIT $2
        )
        "#,
        cutoff,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `batch` refresh tokens of live sessions that expired before `cutoff`.
pub async fn delete_expired_refresh_tokens(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM refresh_tokens WHERE id IN (SELECT id FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
        cutoff,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
