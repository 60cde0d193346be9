//! Liveness of the database.

use sqlx::PgPool;

/// One round trip to the database.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
        .fetch_one(pool)
        .await
        .map(|_| ())
}
