//! The `users` table.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{email_address::EmailAddress, ids::UserId};

/// A user as the API shows it.
#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub created_at: OffsetDateTime,
}

/// The user of `email`, created if this is their first sign-in (then `true`);
/// records the sign-in time. Race-safe: two first logins of one address make one
/// user, and only one of them is told it created it. `None` when the user is
/// disabled: it may not sign in.
pub async fn upsert_on_login(
    conn: &mut PgConnection,
    email: &EmailAddress,
    now: OffsetDateTime,
) -> Result<Option<(User, bool)>, sqlx::Error> {
    // `xmax = 0` on the returned row: it was inserted, not updated by the conflict arm.
    let row = sqlx::query!(
        r#"
        INSERT INTO users (id, email, created_at, last_login_at)
        VALUES ($1, $2, $3, $3)
        ON CONFLICT ((lower(email))) DO UPDATE SET last_login_at = EXCLUDED.last_login_at
            WHERE users.disabled_at IS NULL
        RETURNING id AS "id: UserId", email, created_at, (xmax = 0) AS "created!"
        "#,
        Uuid::new_v4(),
        email.as_str(),
        now,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| {
        let user = User {
            id: row.id,
            email: row.email,
            created_at: row.created_at,
        };
        (user, row.created)
    }))
}

/// Whether the user of `email` is disabled; `None` when the address has no user.
pub async fn is_disabled(conn: &mut PgConnection, email: &EmailAddress) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT disabled_at IS NOT NULL AS "disabled!" FROM users WHERE lower(email) = $1"#,
        email.as_str()
    )
    .fetch_optional(conn)
    .await
}

/// A user as the admin API shows it: its state and how many live sessions it has.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub email: String,
    pub created_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
    pub disabled_at: Option<OffsetDateTime>,
    /// Sessions neither ended nor expired.
    pub sessions: i64,
}

/// Which users [`list`] returns; the filters combine.
#[derive(Debug, Clone, Default)]
pub struct UserFilter<'a> {
    /// Exactly this address (case-insensitive).
    pub email: Option<&'a str>,
    /// Addresses containing this text (case-insensitive, taken literally).
    pub query: Option<&'a str>,
}

/// `text` as a `LIKE … ESCAPE '\'` pattern matching it anywhere, literally:
/// `%`, `_` and `\` in it match only themselves.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Up to `limit` users matching `filter`, newest first (`created_at`, then `id`),
/// strictly after the position `after` of an earlier page.
pub async fn list(
    conn: &mut PgConnection,
    filter: &UserFilter<'_>,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
    now: OffsetDateTime,
) -> Result<Vec<UserRecord>, sqlx::Error> {
    let pattern = filter.query.map(contains_pattern);
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        UserRecord,
        r#"
        SELECT u.id AS "id: UserId", u.email, u.created_at, u.last_login_at, u.disabled_at,
               (SELECT count(*) FROM sessions s
                WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > $6) AS "sessions!"
        FROM users u
        WHERE ($1::text IS NULL OR lower(u.email) = lower(btrim($1)))
          AND ($2::text IS NULL OR lower(u.email) LIKE $2 ESCAPE '\')
          AND ($3::timestamptz IS NULL OR (u.created_at, u.id) < ($3, $4::uuid))
        ORDER BY u.created_at DESC, u.id DESC
        LIMIT $5
        "#,
        filter.email,
        pattern,
        after_at,
        after_id,
        limit,
        now,
    )
    .fetch_all(conn)
    .await
}

/// The user `id`, with its live-session count.
pub async fn find(conn: &mut PgConnection, id: UserId, now: OffsetDateTime) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query_as!(
        UserRecord,
        r#"
        SELECT u.id AS "id: UserId", u.email, u.created_at, u.last_login_at, u.disabled_at,
               (SELECT count(*) FROM sessions s
                WHERE s.user_id = u.id AND s.revoked_at IS NULL AND s.expires_at > $2) AS "sessions!"
        FROM users u
        WHERE u.id = $1
        "#,
        id.as_uuid(),
        now,
    )
    .fetch_optional(conn)
    .await
}

/// The id of the user of `email`, if there is one.
pub async fn find_id_by_email(conn: &mut PgConnection, email: &EmailAddress) -> Result<Option<UserId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT id AS "id: UserId" FROM users WHERE lower(email) = $1"#,
        email.as_str()
    )
    .fetch_optional(conn)
    .await
}

/// Creates a user for `email` that has never signed in; `None` when the address has one.
pub async fn create(
    conn: &mut PgConnection,
    email: &EmailAddress,
    now: OffsetDateTime,
) -> Result<Option<UserId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO users (id, email, created_at)
        VALUES ($1, $2, $3)
        ON CONFLICT ((lower(email))) DO NOTHING
        RETURNING id AS "id: UserId"
        "#,
        Uuid::new_v4(),
        email.as_str(),
        now,
    )
    .fetch_optional(conn)
    .await
}

/// Disables (`disabled`) or enables the user `id`, locking its row; `None` when
/// there is no such user, else whether this changed it (both are idempotent).
pub async fn set_disabled(
    conn: &mut PgConnection,
    id: UserId,
    disabled: bool,
    now: OffsetDateTime,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        WITH before AS (SELECT id, disabled_at FROM users WHERE id = $1 FOR UPDATE)
        UPDATE users u SET disabled_at = CASE WHEN $2 THEN coalesce(before.disabled_at, $3) END
        FROM before
        WHERE u.id = before.id
        RETURNING (before.disabled_at IS NULL) = $2 AS "changed!"
        "#,
        id.as_uuid(),
        disabled,
        now,
    )
    .fetch_optional(conn)
    .await
}

/// Locks the row of the user `id` for this transaction; its address, or
/// `None` when there is no such user.
pub async fn lock(conn: &mut PgConnection, id: UserId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!("SELECT email FROM users WHERE id = $1 FOR UPDATE", id.as_uuid())
        .fetch_optional(conn)
        .await
}

/// Deletes the user `id` (its sessions and tokens go with it); whether it existed.
pub async fn delete(conn: &mut PgConnection, id: UserId) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!("DELETE FROM users WHERE id = $1", id.as_uuid())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}
