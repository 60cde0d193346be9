//! The `otp_codes` table: one live code per address.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::email_address::EmailAddress;

/// The stored code of an address.
#[derive(Debug, Clone)]
pub struct StoredCode {
    pub id: Uuid,
    pub code_hash: String,
    pub expires_at: OffsetDateTime,
    pub attempts: i32,
    pub consumed_at: Option<OffsetDateTime>,
}

/// Stores a new code for `email`, replacing the previous one. The count of
/// failed tries carries over while the attempt window (`window` long) that
/// began at the first code is still open: a resend buys no new attempts.
pub async fn replace(
    conn: &mut PgConnection,
    email: &EmailAddress,
    code_hash: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    window: time::Duration,
) -> Result<Uuid, sqlx::Error> {
    let window_open_since = now - window;
    sqlx::query_scalar!(
        r#"
        INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at, attempts, attempts_since)
        VALUES ($1, $2, $3, $4, $5, 0, $4)
        ON CONFLICT (email) DO UPDATE SET
            id = EXCLUDED.id,
            code_hash = EXCLUDED.code_hash,
            created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at,
            consumed_at = NULL,
            attempts = CASE WHEN otp_codes.attempts_since > $6 THEN otp_codes.attempts ELSE 0 END,
            attempts_since = CASE WHEN otp_codes.attempts_since > $6 THEN otp_codes.attempts_since ELSE EXCLUDED.created_at END
        RETURNING id
        "#,
        Uuid::new_v4(),
        email.as_str(),
        code_hash,
        now,
        expires_at,
        window_open_since,
    )
    .fetch_one(conn)
    .await
}

/// The code of `email`, locked for this transaction.
pub async fn find_for_update(conn: &mut PgConnection, email: &EmailAddress) -> Result<Option<StoredCode>, sqlx::Error> {
    sqlx::query_as!(
        StoredCode,
        "SELECT id, code_hash, expires_at, attempts, consumed_at FROM otp_codes WHERE email = $1 FOR UPDATE",
        email.as_str(),
    )
    .fetch_optional(conn)
    .await
}

/// Counts one failed try; returns the new count.
pub async fn add_failed_attempt(conn: &mut PgConnection, id: Uuid) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar!(
        "UPDATE otp_codes SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        id
    )
    .fetch_one(conn)
    .await
}

/// Marks a code used (or, after a failed send, unusable).
pub async fn consume(conn: &mut PgConnection, id: Uuid, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE otp_codes SET consumed_at = $2 WHERE id = $1", id, now)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Deletes every code of `email` (erasing a person); returns how many.
pub async fn delete_for_email(conn: &mut PgConnection, email: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM otp_codes WHERE email = lower($1)", email)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
