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
        e.event.as_ref(),
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

/// Which events `list` returns.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub event: Option<String>,
    pub user_id: Option<uuid::Uuid>,
    pub email: Option<String>,
}

/// An event as stored, with its row id.
#[derive(Debug)]
pub struct StoredEvent {
    pub id: i64,
    pub event: AuditEvent,
}

/// The newest `limit` events after row `after_id` matching `filter`, oldest first.
pub async fn list(
    conn: &mut PgConnection,
    filter: &Filter,
    after_id: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT * FROM (
            SELECT id, event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at
            FROM audit_events
            WHERE id > $1
              AND ($2::text IS NULL OR event = $2)
              AND ($3::uuid IS NULL OR user_id = $3)
              AND ($4::text IS NULL OR email = lower($4))
            ORDER BY id DESC
            LIMIT $5
        ) newest
        ORDER BY id
        "#,
        after_id,
        filter.event,
        filter.user_id,
        filter.email,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredEvent {
            id: r.id,
            event: AuditEvent {
                event: r.event.into(),
                success: r.success,
                user_id: r.user_id,
                email: r.email,
                error: r.error,
                metadata: match r.metadata {
                    Some(serde_json::Value::Object(m)) => Some(m),
                    _ => None,
                },
                context: crate::audit::RequestContext {
                    ip: r.ip.map(|n| n.ip()),
                    user_agent: r.user_agent,
                    request_id: r.request_id,
                },
                timestamp: r.created_at,
            },
        })
        .collect())
}
