//! The `audit_file_pending` table: the JSON Lines file's outbox (see `audit::file`).
//! A row per transaction that committed events: `event_id` (its smallest event
//! id, the row's key) and `more_ids` (the others; NULL when it committed one).

use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::event::{AuditEvent, RequestContext};

/// Forgets the rows, by key, whose lines `writer`'s file holds (one statement
/// for any number of rows).
pub async fn delete_written(conn: &mut PgConnection, writer: Uuid, keys: &[i64]) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM audit_file_pending WHERE event_id = ANY($2) AND writer = $1",
        writer,
        keys,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A row a replay appends: its key and its events still in the table, in id order.
#[derive(Debug)]
pub struct PendingTransaction {
    pub key: i64,
    pub events: Vec<AuditEvent>,
}

/// Up to `limit` rows with keys after `after_key` that processes before `boot`
/// committed for `writer`'s file and never confirmed written, oldest first.
pub async fn pending_before(
    conn: &mut PgConnection,
    writer: Uuid,
    boot: Uuid,
    after_key: i64,
    limit: i64,
) -> Result<Vec<PendingTransaction>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT p.event_id AS "key!", a.id AS "id?", a.event AS "event?", a.success AS "success?",
               a.user_id, a.email, a.error, a.metadata, a.created_at AS "created_at?"
        FROM (
            SELECT event_id, more_ids FROM audit_file_pending
            WHERE writer = $1 AND boot <> $2 AND event_id > $3
            ORDER BY event_id
            LIMIT $4
        ) p
        CROSS JOIN LATERAL unnest(p.event_id || coalesce(p.more_ids, '{}')) AS x(id)
        LEFT JOIN audit_events a ON a.id = x.id
        ORDER BY p.event_id, x.id
        "#,
        writer,
        boot,
        after_key,
        limit,
    )
    .fetch_all(conn)
    .await?;
    let mut out: Vec<PendingTransaction> = Vec::new();
    for r in rows {
        if out.last().is_none_or(|t| t.key != r.key) {
            out.push(PendingTransaction {
                key: r.key,
                events: Vec::new(),
            });
        }
        // An event the retention dropped has nothing left to append.
        let (Some(_), Some(name), Some(success), Some(created_at)) = (r.id, r.event, r.success, r.created_at) else {
            continue;
        };
        let metadata = match r.metadata {
            Some(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        };
        if let Some(t) = out.last_mut() {
            t.events.push(AuditEvent {
                event: name.into(),
                success,
                user_id: r.user_id,
                email: r.email,
                error: r.error,
                metadata,
                context: RequestContext::none(),
                timestamp: created_at,
            });
        }
    }
    Ok(out)
}
