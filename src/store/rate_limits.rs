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

/// Counts one hit on each counter, atomically, in one statement: a window
/// opens at its first hit and is reset in place once it has passed, so there
/// is no read-then-write race between instances.
pub async fn hit(conn: &mut PgConnection, hits: &[Hit<'_>], now: OffsetDateTime) -> Result<Vec<Count>, sqlx::Error> {
    let buckets: Vec<String> = hits.iter().map(|h| h.bucket.to_owned()).collect();
    let subjects: Vec<Vec<u8>> = hits.iter().map(|h| h.subject.to_vec()).collect();
    let ends: Vec<OffsetDateTime> = hits.iter().map(|h| now + h.window).collect();
    sqlx::query_as!(
        Count,
        r#"
        INSERT INTO rate_limits (bucket, subject, window_start, hits, expires_at)
        SELECT b, s, $3, 1, e FROM unnest($1::text[], $2::bytea[], $4::timestamptz[]) AS h(b, s, e)
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

/// Deletes the counters of these subjects, in every bucket (erasing a person).
pub async fn delete_subjects(conn: &mut PgConnection, subjects: &[[u8; 32]]) -> Result<u64, sqlx::Error> {
    let subjects: Vec<Vec<u8>> = subjects.iter().map(|s| s.to_vec()).collect();
    let done = sqlx::query!("DELETE FROM rate_limits WHERE subject = ANY($1)", &subjects)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
