//! Liveness of the database.

use sqlx::Executor as _;

use super::Db;

/// One round trip to the database, in the simple query protocol: nothing is
/// prepared, so it needs no transaction behind a transaction-mode pooler.
pub async fn ping(db: &Db) -> Result<(), sqlx::Error> {
    db.pool().execute("SELECT 1").await.map(|_| ())
}
