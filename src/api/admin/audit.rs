//! The `Audit` tag of the admin API: the audit trail over HTTP, for teams
//! that prefer it to SQL.

use poem_openapi::{Object, OpenApi, param::Query, payload::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AdminAuth, AdminTags, cursor, text_param};
use crate::{
    api::types::Nullable,
    error::{AdminErrors, ApiError, ErrorCode, Errors},
    state::AppState,
    store::{self, audit::PageFilter},
};

/// Events per page unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

pub struct AuditApi {
    pub state: AppState,
}

/// One audit event, as the `audit_events` table holds it.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AuditEventBody {
    pub id: i64,
    /// The event name, e.g. `auth.login`.
    pub event: String,
    pub success: bool,
    pub user_id: Nullable<Uuid>,
    pub email: Nullable<String>,
    /// Why it failed, on failures.
    pub error: Nullable<String>,
    /// Event-specific fields (`docs/API.md`, "Audit events").
    pub metadata: Nullable<serde_json::Value>,
    pub ip: Nullable<String>,
    pub user_agent: Nullable<String>,
    pub request_id: Nullable<String>,
    pub created_at: OffsetDateTime,
}

/// One page of events, newest first.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AuditEventsResponse {
    /// Always `true`.
    pub success: bool,
    pub events: Vec<AuditEventBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

#[OpenApi]
impl AuditApi {
    /// List audit events, newest first.
    ///
    /// Keyset-paginated like `GET /admin/users`: events recorded meanwhile
    /// never shift a page. The filters combine; `since` is inclusive,
    /// `until` exclusive. Reads are not audited.
    #[oai(
        path = "/admin/audit",
        method = "get",
        operation_id = "list_audit_events",
        tag = "AdminTags::Audit"
    )]
    #[expect(clippy::too_many_arguments, reason = "one per query parameter of the contract")]
    async fn list_audit_events(
        &self,
        _auth: AdminAuth,
        /// Only this event, e.g. `auth.login`.
        #[oai(validator(max_length = 320, pattern = r"^[^\u0000]*$"))]
        event: Query<Option<String>>,
        /// Only events of this user id.
        #[oai(name = "userId")]
        user_id: Query<Option<Uuid>>,
        /// Only events of this address.
        #[oai(validator(max_length = 320, pattern = r"^[^\u0000]*$"))]
        email: Query<Option<String>>,
        /// Only events at or after this time (RFC 3339).
        since: Query<Option<OffsetDateTime>>,
        /// Only events before this time (RFC 3339).
        until: Query<Option<OffsetDateTime>>,
        /// Events per page (1 to 200, default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `nextCursor` of the previous page.
        #[oai(validator(min_length = 1, max_length = 200, pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditEventsResponse>, Errors<AdminErrors>> {
        let before = match cursor.0.as_deref() {
            None => None,
            Some(c) => Some(cursor::decode_event(c).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "invalid parameter `cursor`: not a cursor of this list",
                )
            })?),
        };
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let filter = PageFilter {
            event: text_param("event", event.0)?,
            user_id: user_id.0,
            email: text_param("email", email.0)?,
            since: since.0,
            until: until.0,
        };
        let mut rows = self
            .state
            .db
            .run(async |conn| store::audit::list_page(conn, &filter, before, i64::from(limit) + 1).await)
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more.then(|| rows.last().map(|r| cursor::encode_event(r.id))).flatten();
        let events = rows
            .into_iter()
            .map(|r| AuditEventBody {
                id: r.id,
                event: r.event.event.to_string(),
                success: r.event.success,
                user_id: r.event.user_id.into(),
                email: r.event.email.into(),
                error: r.event.error.into(),
                metadata: r.event.metadata.map(serde_json::Value::Object).into(),
                ip: r.event.context.ip.map(|ip| ip.to_string()).into(),
                user_agent: r.event.context.user_agent.into(),
                request_id: r.event.context.request_id.into(),
                created_at: r.event.timestamp,
            })
            .collect();
        Ok(Json(AuditEventsResponse {
            success: true,
            events,
            next_cursor: next_cursor.into(),
        }))
    }
}
