//! The `sessions` and `refresh_tokens` tables: refresh-token families.

use sqlx::{PgConnection, types::ipnetwork::IpNetwork};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{audit::FileOutbox, users::User, webhooks::Routes};
use crate::{
    audit::AuditEvent,
    auth::{
        ids::{SessionId, UserId},
        refresh::RotationSalt,
    },
};

/// Why a session ended; stored in `sessions.revoke_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// `POST /auth/logout` with one of its tokens.
    Logout,
    /// `POST /auth/logout-all`.
    LogoutAll,
    /// `DELETE /auth/sessions/{id}`.
    Revoked,
    /// A rotated refresh token was presented again.
    ReuseDetected,
    /// Refreshed past its `SESSION_MAX_AGE`, set or lowered since it began.
    Expired,
    /// An operator disabled its user.
    Disabled,
    /// An operator ended every session of its user.
    Admin,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::Revoked => "revoked",
            Self::ReuseDetected => "reuse_detected",
            Self::Expired => "expired",
            Self::Disabled => "disabled",
            Self::Admin => "admin",
        }
    }
}

/// A new refresh token's id: time-ordered (UUIDv7), so each new token's entries
/// in the primary key and in `parent_id`'s index (its child's) go at the right
/// end of those indexes, on pages that stay in memory, rather than on a random
/// page of an index of millions. Token ids never leave the database.
fn new_token_id() -> Uuid {
    Uuid::now_v7()
}

/// Revokes a session and every live token of it.
pub async fn revoke(
    conn: &mut PgConnection,
    session_id: SessionId,
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
        session_id.as_uuid(),
        now,
        reason.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Starts a session (refresh-token family) with its first token, and draws
/// the salt its child will be derived with.
pub async fn create(
    conn: &mut PgConnection,
    user_id: UserId,
    token_hash: &[u8; 32],
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
    user_agent: Option<&str>,
    ip: Option<std::net::IpAddr>,
) -> Result<SessionId, sqlx::Error> {
    let session_id = SessionId::generate();
    let salt = RotationSalt::generate();
    sqlx::query!(
        r#"
        WITH s AS (
            INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
            VALUES ($1, $2, $4, $4, $5, $6, $7)
        )
        INSERT INTO refresh_tokens (id, token_hash, session_id, issued_at, expires_at, rotation_salt)
        VALUES ($8, $3, $1, $4, $5, $9)
        "#,
        session_id.as_uuid(),
        user_id.as_uuid(),
        token_hash.as_slice(),
        now,
        expires_at,
        user_agent,
        ip.map(sqlx::types::ipnetwork::IpNetwork::from),
        new_token_id(),
        salt.as_bytes().as_slice(),
    )
    .execute(conn)
    .await?;
    Ok(session_id)
}

/// What a refresh needs to know about a token that was not live.
#[derive(Debug, Clone)]
pub struct TokenState {
    pub token_id: Uuid,
    pub rotated_at: Option<OffsetDateTime>,
    /// Rotated, or ended with its session.
    pub revoked: bool,
    pub expires_at: OffsetDateTime,
    /// The salt its child is derived with, as committed now (a rotation in
    /// one statement, [`rotate_live`], stores the salt it derived with).
    pub salt: Option<RotationSalt>,
}

/// A session locked for this transaction, with its user.
#[derive(Debug, Clone)]
pub struct LockedSession {
    pub session_id: SessionId,
    pub session_created_at: OffsetDateTime,
    pub session_expires_at: OffsetDateTime,
    pub session_revoked: bool,
    pub user_id: UserId,
    pub email: String,
    pub user_created_at: OffsetDateTime,
    /// The salt stored with the presented token, for deriving its child;
    /// `None` for a token issued before salts existed. Read before the lock
    /// was granted: right for a token still live, which no one rotated (the
    /// salt changes only with a rotation, [`rotate_live`]); a token found not
    /// live has its salt re-read by [`find_token_state`].
    pub token_salt: Option<RotationSalt>,
}

/// Locks the session of the token with this hash, so that every refresh of
/// one session runs one at a time, on every instance; `None` when no token
/// has this hash. The token's state must be read (or updated) by a later
/// statement: in READ COMMITTED a locking join re-checks only the locked row
/// (hence [`LockedSession::token_salt`]'s caveat).
pub async fn lock_by_token_hash(
    conn: &mut PgConnection,
    token_hash: &[u8; 32],
) -> Result<Option<LockedSession>, sqlx::Error> {
    sqlx::query_as!(
        LockedSession,
        r#"
        SELECT s.id AS "session_id: SessionId", s.created_at AS session_created_at,
               s.expires_at AS session_expires_at, s.revoked_at IS NOT NULL AS "session_revoked!",
               u.id AS "user_id: UserId", u.email, u.created_at AS user_created_at,
               t.rotation_salt AS "token_salt: RotationSalt"
        FROM refresh_tokens t
        JOIN sessions s ON s.id = t.session_id
        JOIN users u ON u.id = s.user_id
        WHERE t.token_hash = $1
        FOR UPDATE OF s
        "#,
        token_hash.as_slice(),
    )
    .fetch_optional(conn)
    .await
}

/// Rotates the token with this hash if it is live (not rotated, revoked or
/// expired): retires it, inserts its child with a fresh salt for the child's
/// own child, and extends the session to `expires_at`, in one statement.
/// `false` when the token was not live.
pub async fn rotate_if_live(
    conn: &mut PgConnection,
    token_hash: &[u8; 32],
    child_hash: &[u8; 32],
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let salt = RotationSalt::generate();
    sqlx::query_scalar!(
        r#"
        WITH parent AS (
            UPDATE refresh_tokens SET rotated_at = $3, revoked_at = $3
            WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > $3
            RETURNING id, session_id
        ), child AS (
            INSERT INTO refresh_tokens (id, token_hash, session_id, parent_id, issued_at, expires_at, rotation_salt)
            SELECT $5, $2, session_id, id, $3, $4, $6 FROM parent
            RETURNING session_id
        ), session AS (
            UPDATE sessions SET last_used_at = $3, expires_at = $4
            WHERE id = (SELECT session_id FROM parent)
        )
        SELECT count(*) > 0 AS "rotated!" FROM child
        "#,
        token_hash.as_slice(),
        child_hash.as_slice(),
        now,
        expires_at,
        new_token_id(),
        salt.as_bytes().as_slice(),
    )
    .fetch_one(conn)
    .await
}

/// A rotation in one statement ([`rotate_live`]): the presented token, the
/// child, and the events recording it.
#[derive(Debug)]
pub struct Rotation<'a> {
    pub token_hash: [u8; 32],
    /// The salt the child was derived with, stored on the parent as it is retired.
    pub parent_salt: &'a RotationSalt,
    pub child_hash: [u8; 32],
    pub now: OffsetDateTime,
    /// The session's expiry after the rotation (`now` + `REFRESH_TOKEN_EXPIRY`).
    pub expires_at: OffsetDateTime,
    /// With `SESSION_MAX_AGE` set: the earliest start of a session whose cap
    /// does not cut `expires_at` short (a later cap is the slow path's).
    pub begun_at_or_after: Option<OffsetDateTime>,
    /// The events of the rotation without their user, email and `sessionId`,
    /// which the statement takes from the session it rotated.
    pub events: &'a [AuditEvent],
    pub routes: &'a Routes,
    pub file: Option<FileOutbox>,
}

/// What [`rotate_live`] rotated: the session, its user, and the ids of the
/// events it inserted, in order.
#[derive(Debug)]
pub struct Rotated {
    pub session_id: SessionId,
    pub user: User,
    pub event_ids: Vec<i64>,
}

/// The common refresh, in one statement and its own transaction (one round
/// trip): locks the session of the token with this hash (first, as every
/// refresh does, so no two wait on each other), and, if the session is live
/// and its cap does not bind and the token is live and salted, retires the
/// token storing the salt its child was derived with, inserts the child with a
/// fresh salt of its own, extends the session, and inserts the events with
/// their webhook-delivery and file-outbox rows, as `store::audit::insert_many`
/// would. `None` when any condition fails: nothing was written, and the
/// caller takes the slow path (lock, decide, act), which sees the same rows.
pub async fn rotate_live(conn: &mut PgConnection, r: &Rotation<'_>) -> Result<Option<Rotated>, sqlx::Error> {
    let child_salt = RotationSalt::generate();
    let e = r.events;
    let names: Vec<&str> = e.iter().map(|e| e.event.as_ref()).collect();
    let success: Vec<bool> = e.iter().map(|e| e.success).collect();
    let errors: Vec<Option<&str>> = e.iter().map(|e| e.error.as_deref()).collect();
    let metadata: Vec<serde_json::Value> = e
        .iter()
        .map(|e| serde_json::Value::Object(e.metadata.clone().unwrap_or_default()))
        .collect();
    let ips: Vec<Option<IpNetwork>> = e.iter().map(|e| e.context.ip.map(IpNetwork::from)).collect();
    let agents: Vec<Option<&str>> = e.iter().map(|e| e.context.user_agent.as_deref()).collect();
    let request_ids: Vec<Option<&str>> = e.iter().map(|e| e.context.request_id.as_deref()).collect();
    let times: Vec<OffsetDateTime> = e.iter().map(|e| e.timestamp).collect();
    let row = sqlx::query!(
        r#"
        WITH locked AS (
            SELECT s.id AS session_id, u.id AS user_id, u.email, u.created_at AS user_created_at
            FROM refresh_tokens t
            JOIN sessions s ON s.id = t.session_id
            JOIN users u ON u.id = s.user_id
            WHERE t.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $3
              AND ($5::timestamptz IS NULL OR s.created_at >= $5)
            FOR UPDATE OF s
        ), parent AS (
            UPDATE refresh_tokens SET rotated_at = $3, revoked_at = $3, rotation_salt = $6
            WHERE token_hash = $1 AND session_id = (SELECT session_id FROM locked)
              AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > $3 AND rotation_salt IS NOT NULL
            RETURNING id, session_id
        ), child AS (
            INSERT INTO refresh_tokens (id, token_hash, session_id, parent_id, issued_at, expires_at, rotation_salt)
            SELECT $7, $2, session_id, id, $3, $4, $8 FROM parent
        ), session AS (
            UPDATE sessions SET last_used_at = $3, expires_at = $4
            WHERE id = (SELECT session_id FROM parent)
        ), rotated AS (
            SELECT locked.* FROM locked WHERE EXISTS (SELECT FROM parent)
        ), inserted AS (
            INSERT INTO audit_events (event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at)
            SELECT x.e, x.s, r.user_id, r.email, x.er, x.md || jsonb_build_object('sessionId', r.session_id::text), x.i, x.a, x.rq, x.t
            FROM rotated r CROSS JOIN unnest($9::text[], $10::bool[], $11::text[], $12::jsonb[], $13::inet[], $14::text[], $15::text[], $16::timestamptz[])
                WITH ORDINALITY AS x(e, s, er, md, i, a, rq, t, n)
            ORDER BY x.n
            RETURNING id, event, created_at
        ), hooks AS (
            INSERT INTO webhook_deliveries (event_id, endpoint, next_attempt_at, retry_since, created_at)
            SELECT inserted.id, endpoint, inserted.created_at, inserted.created_at, inserted.created_at
            FROM inserted CROSS JOIN unnest($17::text[]) AS endpoints(endpoint)
            WHERE $18 OR inserted.event = ANY($19::text[])
            ORDER BY inserted.id, endpoint
        ), file AS (
            INSERT INTO audit_file_pending (writer, event_id, boot, more_ids)
            SELECT $20::uuid, ids[1], $21::uuid, NULLIF(ids[2:], '{}')
            FROM (SELECT array_agg(id ORDER BY id) AS ids FROM inserted) AS tx
            WHERE $20::uuid IS NOT NULL AND ids IS NOT NULL
        )
        SELECT session_id AS "session_id!: SessionId", user_id AS "user_id!: UserId", email AS "email!",
               user_created_at AS "user_created_at!", ARRAY(SELECT id FROM inserted ORDER BY id) AS "event_ids!"
        FROM rotated
        "#,
        r.token_hash.as_slice(),
        r.child_hash.as_slice(),
        r.now,
        r.expires_at,
        r.begun_at_or_after,
        r.parent_salt.as_bytes().as_slice(),
        new_token_id(),
        child_salt.as_bytes().as_slice(),
        &names as &[&str],
        &success,
        &errors as &[Option<&str>],
        &metadata,
        &ips as &[Option<IpNetwork>],
        &agents as &[Option<&str>],
        &request_ids as &[Option<&str>],
        &times,
        &r.routes.endpoints,
        r.routes.all_events,
        &r.routes.events,
        r.file.map(|f| f.writer),
        r.file.map(|f| f.boot),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Rotated {
        session_id: row.session_id,
        user: User {
            id: row.user_id,
            email: row.email,
            created_at: row.user_created_at,
        },
        event_ids: row.event_ids,
    }))
}

/// The state of the token with this hash as committed now (call after
/// [`lock_by_token_hash`]; the slow path of a refresh).
pub async fn find_token_state(
    conn: &mut PgConnection,
    token_hash: &[u8; 32],
) -> Result<Option<TokenState>, sqlx::Error> {
    sqlx::query_as!(
        TokenState,
        r#"
        SELECT id AS token_id, rotated_at, revoked_at IS NOT NULL AS "revoked!", expires_at,
               rotation_salt AS "salt: RotationSalt"
        FROM refresh_tokens WHERE token_hash = $1
        "#,
        token_hash.as_slice(),
    )
    .fetch_optional(conn)
    .await
}

/// The child of a token, if it was rotated.
#[derive(Debug, Clone)]
pub struct Child {
    pub token_hash: Vec<u8>,
    /// Whether the child is still the session's live token.
    pub live: bool,
}

pub async fn find_child(conn: &mut PgConnection, parent_id: Uuid) -> Result<Option<Child>, sqlx::Error> {
    sqlx::query_as!(
        Child,
        r#"
        SELECT token_hash, (rotated_at IS NULL AND revoked_at IS NULL) AS "live!"
        FROM refresh_tokens WHERE parent_id = $1
        "#,
        parent_id,
    )
    .fetch_optional(conn)
    .await
}

/// Marks a session used (a refresh answered within the reuse interval).
pub async fn touch(conn: &mut PgConnection, session_id: SessionId, now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE sessions SET last_used_at = $2 WHERE id = $1",
        session_id.as_uuid(),
        now
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// The user `user_id` if session `session_id` is theirs and live (not ended,
/// not expired at `now`, and, when `max_age` (`SESSION_MAX_AGE`) is set, begun
/// less than `max_age` ago): what a bearer operation checks of an access
/// token's `sid` and `sub`, in one statement that also answers `/auth/me`.
/// The cap is the present one: a session older than a `SESSION_MAX_AGE` set or
/// lowered since it began is refused although its stored expiry is not past.
pub async fn find_live_owner(
    conn: &mut PgConnection,
    session_id: SessionId,
    user_id: UserId,
    now: OffsetDateTime,
    max_age: Option<time::Duration>,
) -> Result<Option<User>, sqlx::Error> {
    // A cap reaching before the calendar's start caps nothing.
    let begun_after = max_age.and_then(|age| now.checked_sub(age));
    sqlx::query_as!(
        User,
        r#"
        SELECT u.id AS "id: UserId", u.email, u.created_at
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3
          AND ($4::timestamptz IS NULL OR s.created_at > $4)
          AND u.disabled_at IS NULL
        "#,
        session_id.as_uuid(),
        user_id.as_uuid(),
        now,
        begun_after,
    )
    .fetch_optional(conn)
    .await
}

/// A live session as `GET /auth/sessions` lists it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: SessionId,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<sqlx::types::ipnetwork::IpNetwork>,
}

/// The user's sessions that are neither ended nor expired (nor, when `max_age`
/// is set, begun longer ago than the present cap, as [`find_live_owner`]
/// judges them), most recently used first.
pub async fn list_live(
    conn: &mut PgConnection,
    user_id: UserId,
    now: OffsetDateTime,
    max_age: Option<time::Duration>,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let begun_after = max_age.and_then(|age| now.checked_sub(age));
    sqlx::query_as!(
        SessionRow,
        r#"
        SELECT id AS "id: SessionId", created_at, last_used_at, expires_at, user_agent, ip
        FROM sessions
        WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
          AND ($3::timestamptz IS NULL OR created_at > $3)
        ORDER BY last_used_at DESC, id
        "#,
        user_id.as_uuid(),
        now,
        begun_after,
    )
    .fetch_all(conn)
    .await
}

/// Ends one session of `user_id`; `None` when it is not theirs (or does not
/// exist), `Some(false)` when it had already ended.
pub async fn revoke_owned(
    conn: &mut PgConnection,
    user_id: UserId,
    session_id: SessionId,
    reason: RevokeReason,
    now: OffsetDateTime,
) -> Result<Option<bool>, sqlx::Error> {
    let owned = sqlx::query_scalar!(
        r#"SELECT revoked_at IS NULL AS "live!" FROM sessions WHERE id = $1 AND user_id = $2 FOR UPDATE"#,
        session_id.as_uuid(),
        user_id.as_uuid(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if owned == Some(true) {
        revoke(conn, session_id, reason, now).await?;
    }
    Ok(owned)
}

/// Ends every live session of `user_id`; returns how many.
pub async fn revoke_all(
    conn: &mut PgConnection,
    user_id: UserId,
    reason: RevokeReason,
    now: OffsetDateTime,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        WITH ended AS (
            UPDATE sessions SET revoked_at = $2, revoke_reason = $3
            WHERE user_id = $1 AND revoked_at IS NULL
            RETURNING id
        ), tokens AS (
            UPDATE refresh_tokens SET revoked_at = $2
            WHERE session_id IN (SELECT id FROM ended) AND revoked_at IS NULL
        )
        SELECT count(*) AS "count!" FROM ended
        "#,
        user_id.as_uuid(),
        now,
        reason.as_str(),
    )
    .fetch_one(conn)
    .await
}

/// The client IPs the sessions of `user_id` were started from.
pub async fn ips_of_user(conn: &mut PgConnection, user_id: UserId) -> Result<Vec<std::net::IpAddr>, sqlx::Error> {
    let ips = sqlx::query_scalar!(
        r#"SELECT DISTINCT ip AS "ip!" FROM sessions WHERE user_id = $1 AND ip IS NOT NULL"#,
        user_id.as_uuid()
    )
    .fetch_all(conn)
    .await?;
    Ok(ips.into_iter().map(|n| n.ip()).collect())
}

/// Deletes every session of `user_id` and, with them, their refresh tokens
/// (erasing a person); returns how many sessions.
pub async fn delete_of_user(conn: &mut PgConnection, user_id: UserId) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM sessions WHERE user_id = $1", user_id.as_uuid())
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
