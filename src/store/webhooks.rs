//! The `webhook_deliveries` table: the webhook outbox.
//!
//! Rows are inserted by `store::audit::insert_many`, in the transaction of their
//! event. A worker then gives them their delivery order ([`sequence`]), claims
//! the head of one endpoint's queue ([`claim_head`]) and the rows behind it
//! ([`claim_following`]), and records the outcomes.

use serde_json::{Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::event::{AuditEvent, RequestContext};

/// The advisory lock under which one worker at a time assigns delivery order.
const SEQUENCE_LOCK_KEY: i64 = 0x5e5a_3e00_3eb0;

/// Which events get a delivery row, and for which endpoints (from the config).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub endpoints: Vec<String>,
    /// `WEBHOOK_EVENTS=*`.
    pub all_events: bool,
    pub events: Vec<String>,
}

impl Routes {
    /// Whether `event` gets any delivery row.
    pub fn sends(&self, event: &str) -> bool {
        !self.endpoints.is_empty() && (self.all_events || self.events.iter().any(|e| e == event))
    }
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// Gives every committed row without a place in the delivery order the next
/// places, oldest id first; returns how many. Run inside a transaction: the
/// lock (held to its end) lets one worker at a time do it, so a row that
/// commits after this statement's snapshot gets a later place than every row
/// placed here — delivery order is the order rows were seen committed.
pub async fn sequence(tx: &mut PgConnection) -> Result<u64, sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", SEQUENCE_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query!(
        r#"
        WITH todo AS (
            SELECT id, row_number() OVER (ORDER BY id) AS n FROM webhook_deliveries WHERE seq IS NULL
        ), top AS (
            SELECT coalesce(max(seq), 0) AS seq FROM webhook_deliveries
        )
        UPDATE webhook_deliveries d SET seq = top.seq + todo.n
        FROM todo, top
        WHERE d.id = todo.id
        "#
    )
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery claimed for one attempt, with its event.
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    /// Its place in the delivery order.
    pub seq: i64,
    pub webhook_id: Uuid,
    pub endpoint: String,
    /// Attempts before this one.
    pub attempts: i32,
    pub retry_since: OffsetDateTime,
    pub event: AuditEvent,
}

/// A [`Claimed`] from a row of [`claim_head`] or [`claim_following`].
macro_rules! claimed {
    ($r:expr) => {{
        let r = $r;
        Claimed {
            id: r.id,
            seq: r.seq,
            webhook_id: r.webhook_id,
            endpoint: r.endpoint,
            attempts: r.attempts,
            retry_since: r.retry_since,
            event: AuditEvent {
                event: r.event.into(),
                success: r.success,
                user_id: r.user_id,
                email: r.email,
                error: r.error,
                metadata: object(r.metadata),
                context: RequestContext::none(),
                timestamp: r.created_at,
            },
        }
    }};
}

/// Locks the first pending delivery of `endpoint` in delivery order if it is due
/// at `now`. `None` when there is none, when it is not due yet (later ones wait
/// behind it), or when another worker holds it (SKIP LOCKED: that worker is
/// delivering it, and the queue behind it waits). Run inside a transaction;
/// the lock lasts until the outcome is recorded and committed.
pub async fn claim_head(
    tx: &mut PgConnection,
    endpoint: &str,
    now: OffsetDateTime,
) -> Result<Option<Claimed>, sqlx::Error> {
    let row = sqlx::query!(
        r#"
        SELECT d.id, d.seq AS "seq!", d.webhook_id, d.endpoint, d.attempts, d.retry_since, d.next_attempt_at,
               a.event, a.success, a.user_id, a.email, a.error, a.metadata, a.created_at
        FROM webhook_deliveries d JOIN audit_events a ON a.id = d.event_id
        WHERE d.endpoint = $1 AND d.status = 'pending' AND d.next_attempt_at <= $2
          AND d.seq = (SELECT min(seq) FROM webhook_deliveries WHERE endpoint = $1 AND status = 'pending')
        FOR UPDATE OF d SKIP LOCKED
        "#,
        endpoint,
        now,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|r| claimed!(r)))
}

/// Locks up to `limit` pending deliveries of `endpoint` that follow `after`
/// (the seq of a head this transaction holds) in delivery order, and returns
/// the due ones up to the first that is not due (nothing overtakes a row that
/// waits for a retry). Without SKIP LOCKED: holding the head, this worker is
/// the only one claiming this queue, so the rows behind it are contiguous.
pub async fn claim_following(
    tx: &mut PgConnection,
    endpoint: &str,
    after: i64,
    limit: i64,
    now: OffsetDateTime,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT d.id, d.seq AS "seq!", d.webhook_id, d.endpoint, d.attempts, d.retry_since, d.next_attempt_at,
               a.event, a.success, a.user_id, a.email, a.error, a.metadata, a.created_at
        FROM webhook_deliveries d JOIN audit_events a ON a.id = d.event_id
        WHERE d.endpoint = $1 AND d.status = 'pending' AND d.seq > $2
        ORDER BY d.seq
        LIMIT $3
        FOR UPDATE OF d
        "#,
        endpoint,
        after,
        limit,
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .take_while(|r| r.next_attempt_at <= now)
        .map(|r| claimed!(r))
        .collect())
}

fn object(v: Option<Value>) -> Option<Map<String, Value>> {
    match v {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Records a 2xx for each of `ids`.
pub async fn mark_delivered(tx: &mut PgConnection, ids: &[i64], now: OffsetDateTime) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE webhook_deliveries
        SET status = 'delivered', attempts = attempts + 1, last_attempt_at = $2, delivered_at = $2, last_error = NULL
        WHERE id = ANY($1)
        "#,
        ids,
        now,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Records a failed attempt: retried at `next` or, with `None`, failed for good.
pub async fn mark_attempt_failed(
    tx: &mut PgConnection,
    id: i64,
    now: OffsetDateTime,
    error: &str,
    next: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    let error: String = error.chars().take(1000).collect();
    sqlx::query!(
        r#"
        UPDATE webhook_deliveries
        SET status = CASE WHEN $4::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
            attempts = attempts + 1, last_attempt_at = $2, last_error = $3,
            next_attempt_at = coalesce($4, next_attempt_at)
        WHERE id = $1
        "#,
        id,
        now,
        error,
        next,
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// A delivery as operators see it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: Uuid,
    pub event_id: i64,
    pub event: String,
    pub endpoint: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: OffsetDateTime,
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub delivered_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

/// Up to `limit` deliveries in `status` (all when `None`), oldest first, after row `after_id`.
pub async fn list(
    conn: &mut PgConnection,
    status: Option<Status>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as!(
        Delivery,
        r#"
        SELECT d.id, d.webhook_id, d.event_id, a.event, d.endpoint, d.status, d.attempts, d.next_attempt_at,
               d.last_attempt_at, d.last_error, d.delivered_at, d.created_at
        FROM webhook_deliveries d JOIN audit_events a ON a.id = d.event_id
        WHERE ($1::text IS NULL OR d.status = $1) AND d.id > $2
        ORDER BY d.id
        LIMIT $3
        "#,
        status.map(Status::as_str),
        after_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The delivery `id`, locked until the end of the transaction (an operator's
/// retry reads, changes and reports it in one transaction).
pub async fn find_for_update(conn: &mut PgConnection, id: i64) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as!(
        Delivery,
        r#"
        SELECT d.id, d.webhook_id, d.event_id, a.event, d.endpoint, d.status, d.attempts, d.next_attempt_at,
               d.last_attempt_at, d.last_error, d.delivered_at, d.created_at
        FROM webhook_deliveries d JOIN audit_events a ON a.id = d.event_id
        WHERE d.id = $1
        FOR UPDATE OF d
        "#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// How many deliveries are in each status.
pub async fn counts(conn: &mut PgConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows =
        sqlx::query!(r#"SELECT status, count(*) AS "count!" FROM webhook_deliveries GROUP BY status ORDER BY status"#)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// The creation time of the oldest pending delivery.
pub async fn oldest_pending(conn: &mut PgConnection) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar!("SELECT min(created_at) FROM webhook_deliveries WHERE status = 'pending'")
        .fetch_one(conn)
        .await
}

/// An operator's retry: a failed delivery is pending again, due at `now`, with a
/// fresh `WEBHOOK_MAX_AGE` window from `now` and a new place at the end of its
/// endpoint's queue (a replay, not a reordering of what was delivered since);
/// a pending one is made due at `now`. Returns whether the delivery exists and
/// was failed or pending (a delivered one is left alone).
pub async fn retry(conn: &mut PgConnection, id: i64, now: OffsetDateTime) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        r#"
        UPDATE webhook_deliveries
        SET seq = CASE WHEN status = 'failed' THEN NULL ELSE seq END,
            retry_since = CASE WHEN status = 'failed' THEN $2 ELSE retry_since END,
            status = 'pending',
            next_attempt_at = $2
        WHERE id = $1 AND status IN ('failed', 'pending')
        "#,
        id,
        now,
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
