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

/// The user of `email`, created if this is their first sign-in; records the
/// sign-in time. Race-safe: two first logins of one address make one user.
pub async fn upsert_on_login(
    conn: &mut PgConnection,
    email: &EmailAddress,
    now: OffsetDateTime,
) -> Result<User, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"
        INSERT INTO users (id, email, created_at, last_login_at)
        VALUES ($1, $2, $3, $3)
        ON CONFLICT ((lower(email))) DO UPDATE SET last_login_at = EXCLUDED.last_login_at
        RETURNING id AS "id: UserId", email, created_at
        "#,
        Uuid::new_v4(),
        email.as_str(),
        now,
    )
    .fetch_one(conn)
    .await
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
