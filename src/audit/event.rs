//! One audit event and the request it came from: plain data, built by the
//! flows and written by `store::audit`.

use std::{borrow::Cow, net::IpAddr};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Event;
use crate::auth::ids::UserId;

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
    /// Dotted name, e.g. `auth.login` ([`Event`]; any text when read back from the table).
    pub event: Cow<'static, str>,
    pub success: bool,
    pub user_id: Option<Uuid>,
    pub email: Option<String>,
    /// The precise failure reason; never a secret.
    pub error: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub context: RequestContext,
    pub timestamp: OffsetDateTime,
}

impl RequestContext {
    /// No request: events of background jobs and commands.
    pub fn none() -> Self {
        Self::default()
    }
}

impl AuditEvent {
    /// A successful event at `now`.
    pub fn success(event: Event, context: &RequestContext, now: OffsetDateTime) -> Self {
        Self {
            event: Cow::Borrowed(event.as_str()),
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
    pub fn failure(event: Event, reason: impl Into<String>, context: &RequestContext, now: OffsetDateTime) -> Self {
        Self {
            success: false,
            error: Some(reason.into()),
            ..Self::success(event, context, now)
        }
    }

    pub fn user(mut self, user_id: UserId) -> Self {
        self.user_id = Some(user_id.as_uuid());
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
