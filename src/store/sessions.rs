//! The `sessions` and `refresh_tokens` tables: refresh-token families.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a session ended; stored in `sessions.revoke_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
}

impl RevokeReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
        }
    }
}

/// The session a refresh token belongs to.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub session_revoked: bool,
}

/// Finds the session of the refresh token with this hash, locking the session row.
pub async fn find_by_token_hash_for_update(
    conn: &mut PgConnection,
    token_hash: &[u8; 32],
) -> Result<Option<TokenOwner>, sqlx::Error> {
    sqlx::query_as!(
        TokenOwner,
        r#"
        SELECT s.id AS session_id, s.user_id, s.revoked_at IS NOT NULL AS "session_revoked!"
        FROM refresh_tokens t
        JOIN sessions s ON s.id = t.session_id
        WHERE t.token_hash = $1
        FOR UPDATE OF s
        "#,
        token_hash.as_slice(),
    )
    .fetch_optional(conn)
    .await
}

/// Revokes a session and every live token of it.
pub async fn revoke(
    conn: &mut PgConnection,
    session_id: Uuid,
    reason: RevokeReason,
    now: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        WITH s AS (
            UPDATE sessions SET revoked_at = $2, revoke_reason = $3
            WHERE id = $1 AND revoked_at IS NULL
        )
        UPDATE refresh_tokens SET revoked_at = $2
        WHERE session_id = $1 AND revoked_at IS NULL
        "#,
        session_id,
        now,
        reason.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Starts a session (refresh-token family) with its first token.
pub async fn create(
    conn: &mut PgConnection,
    user_id: Uuid,
    token_hash: &[u8; 32],
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    user_agent: Option<&str>,
    ip: Option<std::net::IpAddr>,
) -> Result<Uuid, sqlx::Error> {
    let session_id = Uuid::new_v4();
    sqlx::query!(
        r#"
        WITH s AS (
            INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
            VALUES ($1, $2, $4, $4, $5, $6, $7)
        )
        INSERT INTO refresh_tokens (id, token_hash, session_id, issued_at, expires_at)
        VALUES ($8, $3, $1, $4, $5)
        "#,
        session_id,
        user_id,
        token_hash.as_slice(),
        now,
        expires_at,
        user_agent,
        ip.map(sqlx::types::ipnetwork::IpNetwork::from),
        Uuid::new_v4(),
    )
    .execute(conn)
    .await?;
    Ok(session_id)
}
