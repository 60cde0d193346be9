//! The lock that lets one process at a time apply migrations.

use sqlx::PgConnection;

/// Takes sqlx's migration lock of the current database until the end of the
/// transaction `tx` is in, waiting for whoever holds it.
///
/// sqlx's own migrator takes this lock for the session, and a
/// transaction-mode pooler (PgBouncer) may run its unlock on another server
/// connection, leaving the lock held and the next start-up waiting forever.
/// The key is sqlx's (so an instance that still locks the sqlx way and one
/// that locks this way exclude each other): CRC-32 of the database name times
/// 0x3d32ad9e.
pub async fn lock(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    let database = sqlx::query_scalar!(r#"SELECT current_database() AS "name!""#)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", lock_key(&database))
        .execute(tx)
        .await
        .map(|_| ())
}

/// sqlx's migration lock key for `database`.
pub fn lock_key(database: &str) -> i64 {
    0x3d32_ad9e * i64::from(crc32(database.as_bytes()))
}

/// CRC-32 (ISO-HDLC, the zlib one).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_zlib_one() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
