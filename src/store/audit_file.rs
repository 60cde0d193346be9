//! The `audit_file_pending` table: the JSON Lines file's outbox (see `audit::file`).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::event::{AuditEvent, RequestContext};

/// Forgets the rows of events whose lines `writer`'s file holds.
pub async fn delete_written(conn: &mut PgConnection, writer: Uuid, event_ids: &[i64]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM audit_file_pending WHERE writer = $1 AND event_id = ANY($2)",
        writer,
        event_ids,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Up to `limit` events after `after_id` that processes before `boot` committed for
/// `writer`'s file and never confirmed written, oldest first, with their ids.
pub async fn pending_before(
    conn: &mut PgConnection,
    writer: Uuid,
    boot: Uuid,
    after_id: i64,
    limit: i64,
) -> Result<Vec<(i64, AuditEvent)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT a.id, a.event, a.success, a.user_id, a.email, a.error, a.metadata, a.created_at
        FROM audit_file_pending p JOIN audit_events a ON a.id = p.event_id
        WHERE p.writer = $1 AND p.boot <> $2 AND p.event_id > $3
        ORDER BY p.event_id
        LIMIT $4
        "#,
        writer,
        boot,
        after_id,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let metadata = match r.metadata {
                Some(serde_json::Value::Object(m)) => Some(m),
                _ => None,
            };
            let event = AuditEvent {
                event: r.event.into(),
                success: r.success,
                user_id: r.user_id,
                email: r.email,
                error: r.error,
                metadata,
                context: RequestContext::none(),
                timestamp: r.created_at,
            };
            (r.id, event)
        })
        .collect())
}
