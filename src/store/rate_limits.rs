//! The `rate_limits` table: hit counters shared by every instance.

use sqlx::PgConnection;
use time::OffsetDateTime;

/// One counter to bump: which limit, whose (hashed) key, and its window length.
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub bucket: &'a str,
    pub subject: [u8; 32],
    pub window: time::Duration,
}

/// A counter after the hit.
#[derive(Debug, Clone)]
pub struct Count {
    pub bucket: String,
    pub hits: i32,
    pub expires_at: OffsetDateTime,
}

/// Counts one hit on each counter in one statement and returns the counts: a
/// window opens at its first hit and is reset in place once it has passed.
/// Each counter's row stays locked until the caller's transaction ends, so the
/// caller can still roll the hits back (a refused request counts nothing) and
/// no other instance counts in between. Rows are locked in one fixed order,
/// (bucket, subject), whatever the order of `hits`, so two requests never wait
/// on each other's rows (no deadlock).
pub async fn hit(conn: &mut PgConnection, hits: &[Hit<'_>], now: OffsetDateTime) -> Result<Vec<Count>, sqlx::Error> {
    let buckets: Vec<String> = hits.iter().map(|h| h.bucket.to_owned()).collect();
    let subjects: Vec<Vec<u8>> = hits.iter().map(|h| h.subject.to_vec()).collect();
    let ends: Vec<OffsetDateTime> = hits.iter().map(|h| now + h.window).collect();
    sqlx::query_as!(
        Count,
        r#"
        INSERT INTO rate_limits (bucket, subject, window_start, hits, expires_at)
        SELECT b, s, $3, 1, e FROM unnest($1::text[], $2::bytea[], $4::timestamptz[]) AS h(b, s, e)
        ORDER BY b, s
        ON CONFLICT (bucket, subject) DO UPDATE SET
            window_start = CASE WHEN rate_limits.expires_at <= $3 THEN EXCLUDED.window_start ELSE rate_limits.window_start END,
            hits = CASE WHEN rate_limits.expires_at <= $3 THEN 1 ELSE rate_limits.hits + 1 END,
            expires_at = CASE WHEN rate_limits.expires_at <= $3 THEN EXCLUDED.expires_at ELSE rate_limits.expires_at END
        RETURNING bucket, hits, expires_at
        "#,
        &buckets,
        &subjects,
        now,
        &ends,
    )
    .fetch_all(conn)
    .await
}

/// Counts one hit on a single counter only if that keeps it within `max`, in
/// one statement (the row is locked while it decides): `Ok(None)` when the
/// hit would go over, and then nothing is counted. The one-limit case of
/// [`hit`] without a transaction.
pub async fn hit_within(
    conn: &mut PgConnection,
    hit: &Hit<'_>,
    max: i32,
    now: OffsetDateTime,
) -> Result<Option<Count>, sqlx::Error> {
    sqlx::query_as!(
        Count,
        r#"
        INSERT INTO rate_limits (bucket, subject, window_start, hits, expires_at)
        VALUES ($1, $2, $3, 1, $4)
        ON CONFLICT (bucket, subject) DO UPDATE SET
            window_start = CASE WHEN rate_limits.expires_at <= $3 THEN EXCLUDED.window_start ELSE rate_limits.window_start END,
            hits = CASE WHEN rate_limits.expires_at <= $3 THEN 1 ELSE rate_limits.hits + 1 END,
            expires_at = CASE WHEN rate_limits.expires_at <= $3 THEN EXCLUDED.expires_at ELSE rate_limits.expires_at END
        WHERE rate_limits.expires_at <= $3 OR rate_limits.hits < $5
        RETURNING bucket, hits, expires_at
        "#,
        hit.bucket,
        &hit.subject[..],
        now,
        now + hit.window,
        max,
    )
    .fetch_optional(conn)
    .await
}

/// When the window of the counter of `bucket` and `subject` ends (read after
/// [`hit_within`] refused), if the counter still exists.
pub async fn expires_at(
    conn: &mut PgConnection,
    bucket: &str,
    subject: &[u8; 32],
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT expires_at FROM rate_limits WHERE bucket = $1 AND subject = $2",
        bucket,
        &subject[..],
    )
    .fetch_optional(conn)
    .await
}

/// Deletes the counters of these subjects, in every bucket (erasing a person).
pub async fn delete_subjects(conn: &mut PgConnection, subjects: &[[u8; 32]]) -> Result<u64, sqlx::Error> {
    let subjects: Vec<Vec<u8>> = subjects.iter().map(|s| s.to_vec()).collect();
    let done = sqlx::query!("DELETE FROM rate_limits WHERE subject = ANY($1)", &subjects)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
