//! The hourly counts of the audit trail (`audit_counts_hourly`), and the
//! statistics of `GET /admin/stats` read through them: counts of audit events
//! by kind in time buckets. `sesame audit summary` reads them through the SQL
//! function `audit_counts` (docs/audit-queries.sql), on the same rules.
//!
//! # Rollups, and why they never disagree with the table
//!
//! [`roll_up`] (run by the cleanup job) counts whole hours of the view
//! `audit_counts_events` (every event by name, outcome and breakdown) into
//! `audit_counts_hourly` and moves `audit_stats_progress.rolled_until` past
//! them. It only rolls up hours that ended more than [`SEAL`] ago: an event is
//! stamped when its transaction writes it and becomes visible when it commits,
//! so an hour is final once no transaction that started in it can still
//! commit. sesame's transactions last seconds (each ends within its request's
//! timeouts), far less than an hour.
//!
//! [`stats`] reads, in one statement, the rollups for the whole hours of the
//! window that are rolled up and the raw events for the rest (the window's
//! ragged ends, the hours not rolled up yet). Rollups are only read when the
//! bucket is a whole number of hours (every hour then lies in one bucket), and
//! only for hours after the one holding the oldest event left in the table:
//! retention deletes from the old end, and an hour it cut into, or emptied, is
//! counted from the table (which is what is left) rather than from its rollup.
//! The SQL functions `audit_stats_kind` and `audit_stats_detail` say what an
//! event counts for, for the raw events (the view `audit_stats_events`) and the
//! rollups alike.

use sqlx::PgConnection;
use time::OffsetDateTime;

/// How long after an hour ends it may be rolled up.
pub const SEAL: time::Duration = time::Duration::hours(1);
/// The most hours one [`roll_up`] statement counts (a day).
const HOURS_PER_STEP: i32 = 24;

/// One count of [`stats`]: the events of one kind (and breakdown) in one bucket.
#[derive(Debug)]
pub struct StatsRow {
    /// The bucket's start: `created_at` binned from the Unix epoch.
    pub bucket: OffsetDateTime,
    /// What the events count for: `codesSent`, `linksSent`, `logins`,
    /// `verificationFailures`, `refreshes`, `reuseDetected`, `rateLimited` or `newUsers`.
    pub kind: String,
    /// The method of a login, the reason of a verification failure, else `None`.
    pub detail: Option<String>,
    pub count: i64,
}

/// The counts per bucket of `bucket_secs`, kind and detail, of the events
/// stamped from `since` to `until` (both included). One statement.
pub async fn stats(
    conn: &mut PgConnection,
    since: OffsetDateTime,
    until: OffsetDateTime,
    bucket_secs: i64,
) -> Result<Vec<StatsRow>, sqlx::Error> {
    #[expect(clippy::cast_precision_loss, reason = "a bucket is at most a day of seconds")]
    let secs = bucket_secs as f64;
    // The whole hours inside the window: from the first hour start at or after
    // `since` to the last hour end at or before `until`.
    let hour = 3600;
    let first_hour = since.unix_timestamp().div_euclid(hour) * hour
        + if since.unix_timestamp().rem_euclid(hour) == 0 && since.nanosecond() == 0 {
            0
        } else {
            hour
        };
    let end_hour = until.unix_timestamp().div_euclid(hour) * hour;
    let use_rollups = bucket_secs % hour == 0 && first_hour < end_hour;
    let first_hour = OffsetDateTime::from_unix_timestamp(first_hour).unwrap_or(since);
    let end_hour = OffsetDateTime::from_unix_timestamp(end_hour).unwrap_or(until);
    sqlx::query_as!(
        StatsRow,
        r#"
        WITH hours AS (
            SELECT greatest($4::timestamptz,
                            coalesce((SELECT date_bin('1 hour', min(created_at), timestamptz 'epoch') + interval '1 hour'
                                      FROM audit_events), 'infinity')) AS lo,
                   least($5::timestamptz,
                         coalesce((SELECT rolled_until FROM audit_stats_progress), '-infinity')) AS hi
        ), parts AS (
            -- raw events before `a`, rollups in [a, z), raw events from `z` on.
            SELECT CASE WHEN $6 AND lo < hi THEN lo ELSE 'infinity' END AS a,
                   CASE WHEN $6 AND lo < hi THEN hi ELSE 'infinity' END AS z
            FROM hours
        )
        SELECT date_bin(make_interval(secs => $3::float8), t, timestamptz 'epoch') AS "bucket!",
               kind AS "kind!", detail, sum(n)::bigint AS "count!"
        FROM (
            SELECT e.created_at AS t, e.kind, e.detail, 1::bigint AS n
            FROM audit_stats_events e, parts
            WHERE e.created_at >= $1 AND e.created_at <= $2 AND e.created_at < parts.a
            UNION ALL
            SELECT h.hour, audit_stats_kind(h.event, h.success), audit_stats_detail(h.event, nullif(h.detail, '')), h.count
            FROM audit_counts_hourly h, parts
            WHERE h.hour >= parts.a AND h.hour < parts.z AND audit_stats_kind(h.event, h.success) IS NOT NULL
            UNION ALL
            SELECT e.created_at, e.kind, e.detail, 1::bigint
            FROM audit_stats_events e, parts
            WHERE e.created_at >= parts.z AND e.created_at <= $2
        ) counted
        GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        "#,
        since,
        until,
        secs,
        first_hour,
        end_hour,
        use_rollups,
    )
    .fetch_all(conn)
    .await
}

/// Rolls up at most a day of hours that ended more than [`SEAL`] before `now`,
/// continuing where the last call stopped (at first, at the oldest event);
/// whether more hours are ready. Run under the cleanup lock.
pub async fn roll_up(conn: &mut PgConnection, now: OffsetDateTime) -> Result<bool, sqlx::Error> {
    let ready = now - SEAL;
    let row = sqlx::query!(
        r#"
        WITH span AS (
            SELECT start, least(start + make_interval(hours => $2), date_bin('1 hour', $1::timestamptz, timestamptz 'epoch')) AS stop
            FROM (SELECT coalesce((SELECT rolled_until FROM audit_stats_progress),
                                  (SELECT date_bin('1 hour', min(created_at), timestamptz 'epoch') FROM audit_events)) AS start) s
        ), counted AS (
            INSERT INTO audit_counts_hourly (hour, event, success, detail, count)
            SELECT date_bin('1 hour', e.created_at, timestamptz 'epoch'), e.event, e.success, coalesce(e.detail, ''), count(*)
            FROM audit_counts_events e, span
            WHERE e.created_at >= span.start AND e.created_at < span.stop
            GROUP BY 1, 2, 3, 4
            ON CONFLICT (hour, event, success, detail) DO UPDATE SET count = EXCLUDED.count
        )
        INSERT INTO audit_stats_progress (only_row, rolled_until)
        SELECT true, stop FROM span WHERE stop > start
        ON CONFLICT (only_row) DO UPDATE SET rolled_until = EXCLUDED.rolled_until
        RETURNING rolled_until
        "#,
        ready,
        HOURS_PER_STEP,
    )
    .fetch_optional(&mut *conn)
    .await?;
    let ready_hour = ready.unix_timestamp().div_euclid(3600) * 3600;
    Ok(row.is_some_and(|r| r.rolled_until.unix_timestamp() < ready_hour))
}

/// Deletes the rollups of hours before the one holding the oldest event (after
/// retention deleted their events); how many. Run under the cleanup lock.
pub async fn prune(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        DELETE FROM audit_counts_hourly
        WHERE hour < coalesce((SELECT date_bin('1 hour', min(created_at), timestamptz 'epoch') FROM audit_events),
                              'infinity')
        "#
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
