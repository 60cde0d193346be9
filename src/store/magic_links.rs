//! The `magic_links` table.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::email_address::EmailAddress;

/// Stores a new link by the SHA-256 of its token.
pub async fn insert(
    conn: &mut PgConnection,
    email: &EmailAddress,
    token_hash: &[u8; 32],
    redirect_to: Option<&str>,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO magic_links (id, email, token_hash, redirect_to, created_at, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING id
        "#,
        Uuid::new_v4(),
        email.as_str(),
        token_hash.as_slice(),
        redirect_to,
        now,
        expires_at,
    )
    .fetch_one(conn)
    .await
}

/// A stored link.
#[derive(Debug, Clone)]
pub struct StoredLink {
    pub id: Uuid,
    pub email: String,
    pub expires_at: OffsetDateTime,
    pub consumed_at: Option<OffsetDateTime>,
}

/// The link with this token hash, locked for this transaction.
pub async fn find_for_update(
    conn: &mut PgConnection,
    token_hash: &[u8; 32],
) -> Result<Option<StoredLink>, sqlx::Error> {
    sqlx::query_as!(
        StoredLink,
        "SELECT id, email, expires_at, consumed_at FROM magic_links WHERE token_hash = $1 FOR UPDATE",
        token_hash.as_slice(),
    )
    .fetch_optional(conn)
    .await
}

/// Marks a link used (or, after a failed send, unusable).
pub async fn consume(conn: &mut PgConnection, id: Uuid, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE magic_links SET consumed_at = $2 WHERE id = $1", id, now)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Deletes every link of `email` (erasing a person); returns how many.
pub async fn delete_for_email(conn: &mut PgConnection, email: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM magic_links WHERE email = lower($1)", email)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
