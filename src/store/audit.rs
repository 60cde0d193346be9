//! The `audit_events` table.

use sqlx::{PgConnection, types::ipnetwork::IpNetwork};
use time::OffsetDateTime;

use crate::{audit::event::AuditEvent, store::webhooks::Routes};

/// The JSON Lines file an instance writes, as its outbox rows name it.
#[derive(Debug, Clone, Copy)]
pub struct FileOutbox {
    /// The file's id, from its position file.
    pub writer: uuid::Uuid,
    /// This process.
    pub boot: uuid::Uuid,
}

/// Inserts events, in order, in one statement (one round trip, however many),
/// with a `webhook_deliveries` row for each event `routes` sends and each endpoint,
/// and one `audit_file_pending` row for all of them when `file` is set (its
/// `event_id` the smallest id: the key `audit::file` confirms). Returns the
/// events' ids, in order.
pub async fn insert_many(
    conn: &mut PgConnection,
    events: &[AuditEvent],
    routes: &Routes,
    file: Option<FileOutbox>,
) -> Result<Vec<i64>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = events.iter().map(|e| e.event.as_ref()).collect();
    let success: Vec<bool> = events.iter().map(|e| e.success).collect();
    let user_ids: Vec<Option<uuid::Uuid>> = events.iter().map(|e| e.user_id).collect();
    let emails: Vec<Option<&str>> = events.iter().map(|e| e.email.as_deref()).collect();
    let errors: Vec<Option<&str>> = events.iter().map(|e| e.error.as_deref()).collect();
    // jsonb[] cannot hold SQL NULLs through the driver; JSON null stands in and is turned back.
    let metadata: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            e.metadata
                .clone()
                .map_or(serde_json::Value::Null, serde_json::Value::Object)
        })
        .collect();
    let ips: Vec<Option<IpNetwork>> = events.iter().map(|e| e.context.ip.map(IpNetwork::from)).collect();
    let agents: Vec<Option<&str>> = events.iter().map(|e| e.context.user_agent.as_deref()).collect();
    let request_ids: Vec<Option<&str>> = events.iter().map(|e| e.context.request_id.as_deref()).collect();
    let times: Vec<time::OffsetDateTime> = events.iter().map(|e| e.timestamp).collect();
    // The outbox rows go in the same statement: no extra round trip, and none
    // at all when no endpoint or file is configured (every CTE runs either way).
    sqlx::query_scalar!(
        r#"
        WITH inserted AS (
            INSERT INTO audit_events (event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at)
            SELECT e, s, u, m, er, CASE WHEN jsonb_typeof(md) = 'null' THEN NULL ELSE md END, i, a, r, t
            FROM unnest($1::text[], $2::bool[], $3::uuid[], $4::text[], $5::text[], $6::jsonb[], $7::inet[], $8::text[], $9::text[], $10::timestamptz[])
                WITH ORDINALITY AS x(e, s, u, m, er, md, i, a, r, t, n)
            ORDER BY n
            RETURNING id, event, created_at
        ), hooks AS (
            INSERT INTO webhook_deliveries (event_id, endpoint, next_attempt_at, retry_since, created_at)
            SELECT inserted.id, endpoint, inserted.created_at, inserted.created_at, inserted.created_at
            FROM inserted CROSS JOIN unnest($11::text[]) AS endpoints(endpoint)
            WHERE $12 OR inserted.event = ANY($13::text[])
            ORDER BY inserted.id, endpoint
        ), file AS (
            INSERT INTO audit_file_pending (writer, event_id, boot, more_ids)
            SELECT $14::uuid, ids[1], $15::uuid, NULLIF(ids[2:], '{}')
            FROM (SELECT array_agg(id ORDER BY id) AS ids FROM inserted) AS tx
            WHERE $14::uuid IS NOT NULL AND ids IS NOT NULL
        )
        SELECT id AS "id!" FROM inserted ORDER BY id
        "#,
        &names as &[&str],
        &success,
        &user_ids as &[Option<uuid::Uuid>],
        &emails as &[Option<&str>],
        &errors as &[Option<&str>],
        &metadata,
        &ips as &[Option<IpNetwork>],
        &agents as &[Option<&str>],
        &request_ids as &[Option<&str>],
        &times,
        &routes.endpoints,
        routes.all_events,
        &routes.events,
        file.map(|f| f.writer),
        file.map(|f| f.boot),
    )
    .fetch_all(conn)
    .await
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

/// A [`StoredEvent`] from a row of `SELECT id, event, success, user_id, email,
/// error, metadata, ip, user_agent, request_id, created_at` (each `query!` has
/// its own row type, hence a macro).
macro_rules! stored_event {
    ($r:expr) => {{
        let r = $r;
        StoredEvent {
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
                context: crate::audit::event::RequestContext {
                    ip: r.ip.map(|n| n.ip()),
                    user_agent: r.user_agent,
                    request_id: r.request_id,
                },
                timestamp: r.created_at,
            },
        }
    }};
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
              AND ($4::text IS NULL OR lower(email) = lower(btrim($4)))
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
    Ok(rows.into_iter().map(|r| stored_event!(r)).collect())
}

/// The client IPs of the events of the person with `user_id` or `email`.
pub async fn ips_of(
    conn: &mut PgConnection,
    user_id: uuid::Uuid,
    email: &str,
) -> Result<Vec<std::net::IpAddr>, sqlx::Error> {
    let ips = sqlx::query_scalar!(
        r#"
        SELECT DISTINCT ip AS "ip!" FROM audit_events
        WHERE (user_id = $1 OR lower(email) = lower($2)) AND ip IS NOT NULL
        "#,
        user_id,
        email,
    )
    .fetch_all(conn)
    .await?;
    Ok(ips.into_iter().map(|n| n.ip()).collect())
}

/// Pseudonymises the events of the person with `user_id` or `email`: the
/// address and the client IP are removed, and the user id is kept (or set, on
/// the events that named only the address), so the record stays whole
/// without naming anyone. Returns how many rows.
pub async fn pseudonymise(conn: &mut PgConnection, user_id: uuid::Uuid, email: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        UPDATE audit_events SET email = NULL, ip = NULL, user_id = coalesce(user_id, $1)
        WHERE user_id = $1 OR lower(email) = lower($2)
        "#,
        user_id,
        email,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Which events [`list_page`] returns; the filters combine.
#[derive(Debug, Default, Clone)]
pub struct PageFilter {
    pub event: Option<String>,
    pub user_id: Option<uuid::Uuid>,
    pub email: Option<String>,
    /// At or after this time.
    pub since: Option<OffsetDateTime>,
    /// Before this time.
    pub until: Option<OffsetDateTime>,
}

/// Up to `limit` events matching `filter`, newest first (by row id), older than
/// row `before_id` of an earlier page.
pub async fn list_page(
    conn: &mut PgConnection,
    filter: &PageFilter,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT id, event, success, user_id, email, error, metadata, ip, user_agent, request_id, created_at
        FROM audit_events
        WHERE ($1::bigint IS NULL OR id < $1)
          AND ($2::text IS NULL OR event = $2)
          AND ($3::uuid IS NULL OR user_id = $3)
          AND ($4::text IS NULL OR lower(email) = lower(btrim($4)))
          AND ($5::timestamptz IS NULL OR created_at >= $5)
          AND ($6::timestamptz IS NULL OR created_at < $6)
        ORDER BY id DESC
        LIMIT $7
        "#,
        before_id,
        filter.event,
        filter.user_id,
        filter.email,
        filter.since,
        filter.until,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| stored_event!(r)).collect())
}
