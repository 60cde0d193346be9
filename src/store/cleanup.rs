//! Deleting what has expired, in batches, under an advisory lock, and keeping
//! the month partitions of `audit_events` (created ahead, dropped past retention).

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

/// Creates the month partition of `audit_events` holding `at` unless it exists
/// (moving in that month's rows from the default partition). `Some(true)`:
/// created; `Some(false)`: it existed; `None`: the table was busy, retry later.
pub async fn create_audit_partition(conn: &mut PgConnection, at: OffsetDateTime) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!("SELECT audit_events_partition_create($1)", at)
        .fetch_one(conn)
        .await
}

/// The oldest month partition of `audit_events` whose month ended at or before
/// `cutoff`, if any.
pub async fn oldest_audit_partition_before(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        SELECT partition_name AS "partition_name!" FROM audit_events_partitions()
        WHERE ends_at <= $1 ORDER BY ends_at LIMIT 1
        "#,
        cutoff,
    )
    .fetch_optional(conn)
    .await
}

/// Deletes up to `batch` webhook deliveries and file-outbox rows of the events
/// of month partition `partition` (an outbox row goes with the month of its
/// key, the smallest id of its transaction's events); returns how many.
pub async fn delete_audit_partition_dependents(
    conn: &mut PgConnection,
    partition: &str,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let batch = i32::try_from(batch).unwrap_or(i32::MAX);
    let n = sqlx::query_scalar!(
        r#"SELECT audit_events_partition_delete_dependents($1, $2) AS "n!""#,
        partition,
        batch,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Drops month partition `partition`; returns how many events it held, or
/// `None` when the table was busy (retry later).
pub async fn drop_audit_partition(conn: &mut PgConnection, partition: &str) -> Result<Option<u64>, sqlx::Error> {
    let n = sqlx::query_scalar!("SELECT audit_events_partition_drop($1)", partition)
        .fetch_one(conn)
        .await?;
    Ok(n.map(|n| u64::try_from(n).unwrap_or(0)))
}

/// Deletes up to `batch` events created before `cutoff` from the default
/// partition (the rows of months without a partition of their own), with
/// their webhook deliveries and the file-outbox rows they key; returns how many events.
pub async fn delete_stray_audit_events_before(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let n = sqlx::query_scalar!(
        r#"
        WITH gone AS (
            DELETE FROM audit_events_default
            WHERE id IN (SELECT id FROM audit_events_default WHERE created_at < $1 ORDER BY id LIMIT $2)
            RETURNING id
        ), hooks AS (
            DELETE FROM webhook_deliveries WHERE event_id IN (SELECT id FROM gone)
        ), file AS (
            DELETE FROM audit_file_pending WHERE event_id IN (SELECT id FROM gone)
        )
        SELECT count(*) AS "n!" FROM gone
        "#,
        cutoff,
        batch,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
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

/// One step of a sweep over a table in its physical order ([`sweep_ended_sessions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Rows the step deleted.
    pub deleted: u64,
    /// The page the next step starts at; `None` once the step reached the
    /// table's last page.
    pub next: Option<i64>,
}

impl Swept {
    fn after(deleted: i64, from: i64, pages: i64, table_pages: i64) -> Self {
        let next = from + pages;
        Self {
            deleted: u64::try_from(deleted).unwrap_or(0),
            next: (next < table_pages).then_some(next),
        }
    }
}

/// Deletes the sessions (with their tokens) that expired or were ended before
/// `cutoff` among those stored on pages `[from, from + pages)`.
///
/// A sweep reads each page of the table once, by ranges of row addresses (a
/// TID range scan), where a batch of "up to N matching rows" has no index to
/// find them by (an index on `expires_at` or `revoked_at` would cost every
/// refresh its heap-only update) and would read again, each time, every page
/// the batches before it already cleared.
pub async fn sweep_ended_sessions(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    from: i64,
    pages: i64,
) -> Result<Swept, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        WITH gone AS (
            DELETE FROM sessions
            WHERE ctid >= format('(%s,0)', $2::bigint)::tid AND ctid < format('(%s,0)', $2::bigint + $3)::tid
              AND (expires_at < $1 OR revoked_at < $1)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) AS "deleted!",
               pg_relation_size('sessions') / current_setting('block_size')::bigint AS "pages!"
        "#,
        cutoff,
        from,
        pages,
    )
    .fetch_one(conn)
    .await?;
    Ok(Swept::after(row.deleted, from, pages, row.pages))
}

/// Deletes up to `batch` refresh tokens that expired before `cutoff`, the
/// oldest first, found by their expiry's index (a rotation's new token goes at
/// its right end; the cleanup takes from its left end, so a run with nothing to
/// delete reads a page of it).
pub async fn delete_expired_refresh_tokens(
    conn: &mut PgConnection,
    cutoff: OffsetDateTime,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        DELETE FROM refresh_tokens WHERE id IN (
            SELECT id FROM refresh_tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2
        )
        "#,
        cutoff,
        batch,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
