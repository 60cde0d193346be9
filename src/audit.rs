//! Audit events: what happened, to whom, and how it ended.
//!
//! An event is recorded with [`record`] inside the transaction of the state
//! change it describes, so the row commits or rolls back with that change.
//! Events with no state change of their own are written in a short
//! transaction of their own. The table is the source of truth that teams
//! query with SQL.

use std::net::IpAddr;

use serde_json::{Map, Value};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store;

/// Where a request came from, as recorded with its events.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// One audit event, as stored in `audit_events`.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Dotted name from SPEC, e.g. `auth.login`.
    pub event: &'static str,
    pub success: bool,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    /// The precise failure reason; never a secret.
    pub error: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub context: RequestContext,
    pub timestamp: OffsetDateTime,
}

impl AuditEvent {
    /// A successful event at `now`.
    pub fn success(event: &'static str, context: &RequestContext, now: OffsetDateTime) -> Self {
        Self {
            event,
            success: true,
            user_id: None,
            email: None,
            error: None,
            metadata: None,
            context: context.clone(),
            timestamp: now,
        }
    }

    /// A failed event at `now`, with its reason.
    pub fn failure(
        event: &'static str,
        reason: impl Into<String>,
        context: &RequestContext,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            success: false,
            error: Some(reason.into()),
            ..Self::success(event, context, now)
        }
    }

    pub fn user(mut self, user_id: Uuid) -> Self {
        self.user_id = Some(user_id);
        self
    }

    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Adds one metadata entry.
    pub fn meta(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.metadata
            .get_or_insert_with(Map::new)
            .insert(key.to_owned(), value.into());
        self
    }
}

/// Writes `event` on `conn`, normally inside the transaction of its change.
pub async fn record(conn: &mut PgConnection, event: &AuditEvent) -> Result<(), sqlx::Error> {
    store::audit::insert(conn, event).await
}
