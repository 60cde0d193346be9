//! The `audit_events` table.

use sqlx::{PgConnection, types::ipnetwork::IpNetwork};

use crate::audit::AuditEvent;

/// Inserts one event.
pub async fn insert(conn: &mut PgConnection, e: &AuditEvent) -> Result<(), sqlx::Error> {
    let metadata = e.metadata.clone().map(serde_json::Value::Object);
    let ip = e.context.ip.map(IpNetwork::from);
    sqlx::query!(
        r#"
        INSERT INTO audit_events (event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        "#,
        e.event,
        e.success,
        e.user_id,
        e.email,
        e.error,
        metadata,
        ip,
        e.context.user_agent,
        e.context.request_id,
        e.timestamp,
    )
    .execute(conn)
    .await?;
    Ok(())
}
