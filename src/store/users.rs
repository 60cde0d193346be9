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
/// user, and only one of them is told it created it.
pub async fn upsert_on_login(
    conn: &mut PgConnection,
    email: &EmailAddress,
    now: OffsetDateTime,
) -> Result<(User, bool), sqlx::Error> {
    // `xmax = 0` on the returned row: it was inserted, not updated by the conflict arm.
    let row = sqlx::query!(
        r#"
        INSERT INTO users (id, email, created_at, last_login_at)
        VALUES ($1, $2, $3, $3)
        ON CONFLICT ((lower(email))) DO UPDATE SET last_login_at = EXCLUDED.last_login_at
        RETURNING id AS "id: UserId", email, created_at, (xmax = 0) AS "created!"
        "#,
        Uuid::new_v4(),
        email.as_str(),
        now,
    )
    .fetch_one(conn)
    .await?;
    let user = User {
        id: row.id,
        email: row.email,
        created_at: row.created_at,
    };
    Ok((user, row.created))
}

/// Whether an account exists for `email`.
pub async fn exists(conn: &mut PgConnection, email: &EmailAddress) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = $1) AS "exists!""#,
        email.as_str()
    )
    .fetch_one(conn)
    .await
}
