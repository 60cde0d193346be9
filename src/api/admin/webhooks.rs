//! The `Webhooks` tag of the admin API: the webhook outbox
//! (`webhook_deliveries`) seen and fixed over HTTP, as `sesame webhooks
//! status|retry` does on the command line.

use poem::Request;
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use time::OffsetDateTime;

use super::{AdminAuth, AdminTags, cursor};
use crate::{
    admin::{self, Actor, Retried},
    api::{request_context, types::Nullable},
    error::{AdminErrors, AdminUserErrors, ApiError, ErrorCode, Errors},
    state::AppState,
    store::{self, webhooks::Status},
};

/// Deliveries per page unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

pub struct WebhooksApi {
    pub state: AppState,
}

/// A delivery's state.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet: due at `nextAttemptAt`, or waiting behind its endpoint's head.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Still failing `WEBHOOK_MAX_AGE` after its event (or after an operator's retry).
    Failed,
}

impl From<DeliveryStatus> for Status {
    fn from(s: DeliveryStatus) -> Self {
        match s {
            DeliveryStatus::Pending => Self::Pending,
            DeliveryStatus::Delivered => Self::Delivered,
            DeliveryStatus::Failed => Self::Failed,
        }
    }
}

/// One delivery of one event to one endpoint.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct DeliveryBody {
    pub id: i64,
    /// The `webhook-id` header: the same on every attempt.
    pub webhook_id: String,
    /// The audit event delivered (`GET /admin/audit` lists it under this id).
    pub event_id: i64,
    /// Its name, the payload's `type`, e.g. `user.created`.
    pub event: String,
    /// The URL it is sent to (one of `WEBHOOK_URLS`).
    pub endpoint: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Why the last attempt failed (`HTTP 503`, `timed out`, `connection failed`, …);
    /// `null` if none failed or it was delivered since.
    pub last_error: Nullable<String>,
    /// The HTTP status of the last failed attempt when the endpoint answered one.
    pub last_status_code: Nullable<u16>,
    pub last_attempt_at: Nullable<OffsetDateTime>,
    /// When the next attempt is due; `null` unless pending.
    pub next_attempt_at: Nullable<OffsetDateTime>,
    pub delivered_at: Nullable<OffsetDateTime>,
    /// When its event was recorded.
    pub created_at: OffsetDateTime,
}

/// The HTTP status in a failed attempt's reason (`HTTP 503`, as the worker writes it).
fn status_code(last_error: &str) -> Option<u16> {
    let code: u16 = last_error.strip_prefix("HTTP ")?.parse().ok()?;
    (100..=599).contains(&code).then_some(code)
}

impl From<store::webhooks::Delivery> for DeliveryBody {
    fn from(d: store::webhooks::Delivery) -> Self {
        let pending = d.status == Status::Pending.as_str();
        Self {
            id: d.id,
            // As `webhooks::message_id` writes it for the header.
            webhook_id: format!("msg_{}", d.webhook_id.simple()),
            event_id: d.event_id,
            event: d.event,
            endpoint: d.endpoint,
            status: d.status,
            attempts: d.attempts,
            last_status_code: d.last_error.as_deref().and_then(status_code).into(),
            last_error: d.last_error.into(),
            last_attempt_at: d.last_attempt_at.into(),
            next_attempt_at: pending.then_some(d.next_attempt_at).into(),
            delivered_at: d.delivered_at.into(),
            created_at: d.created_at,
        }
    }
}

/// One page of deliveries, oldest first.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct DeliveriesResponse {
    /// Always `true`.
    pub success: bool,
    pub deliveries: Vec<DeliveryBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// The delivery an operation changed.
#[derive(Object, Debug)]
pub struct DeliveryResponse {
    /// Always `true`.
    pub success: bool,
    pub delivery: DeliveryBody,
}

#[OpenApi]
impl WebhooksApi {
    /// List webhook deliveries, oldest first.
    ///
    /// Keyset-paginated like `GET /admin/users`. `status` keeps one status
    /// (every status when absent). Reads are not audited.
    #[oai(
        path = "/admin/webhooks/deliveries",
        method = "get",
        operation_id = "list_webhook_deliveries",
        tag = "AdminTags::Webhooks"
    )]
    async fn list_webhook_deliveries(
        &self,
        _auth: AdminAuth,
        /// Only deliveries in this status.
        status: Query<Option<DeliveryStatus>>,
        /// Deliveries per page (1 to 200, default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `nextCursor` of the previous page.
        #[oai(validator(min_length = 1, max_length = 200, pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveriesResponse>, Errors<AdminErrors>> {
        let after = match cursor.0.as_deref() {
            None => 0,
            Some(c) => cursor::decode_delivery(c).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "invalid parameter `cursor`: not a cursor of this list",
                )
            })?,
        };
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let status = status.0.map(Status::from);
        let mut rows = self
            .state
            .db
            .run(async |conn| store::webhooks::list(conn, status, after, i64::from(limit) + 1).await)
            .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|d| cursor::encode_delivery(d.id)))
            .flatten();
        Ok(Json(DeliveriesResponse {
            success: true,
            deliveries: rows.into_iter().map(Into::into).collect(),
            next_cursor: next_cursor.into(),
        }))
    }

    /// Retry a webhook delivery now.
    ///
    /// A failed delivery becomes pending again at the end of its endpoint's
    /// queue, with a fresh `WEBHOOK_MAX_AGE` and the same `webhook-id`; a
    /// pending one is made due at once. 404 `not_found` for an unknown id and
    /// for a delivery already delivered (nothing to retry). Recorded as
    /// `admin.webhook.retried`.
    #[oai(
        path = "/admin/webhooks/deliveries/:id/retry",
        method = "post",
        operation_id = "retry_webhook_delivery",
        tag = "AdminTags::Webhooks"
    )]
    async fn retry_webhook_delivery(
        &self,
        req: &Request,
        _auth: AdminAuth,
        id: Path<i64>,
    ) -> Result<Json<DeliveryResponse>, Errors<AdminUserErrors>> {
        let ctx = request_context(req, &self.state);
        match admin::retry_delivery(&self.state, Actor::Admin, &ctx, id.0).await? {
            Retried::Due(d) => Ok(Json(DeliveryResponse {
                success: true,
                delivery: d.into(),
            })),
            Retried::Unknown => Err(ApiError::new(ErrorCode::NotFound, "no such delivery").into()),
            Retried::Delivered => Err(ApiError::new(
                ErrorCode::NotFound,
                "this delivery was delivered already: nothing to retry",
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_code_is_read_only_from_an_http_answer() {
        assert_eq!(status_code("HTTP 503"), Some(503));
        assert_eq!(status_code("HTTP 404"), Some(404));
        assert_eq!(status_code("timed out"), None);
        assert_eq!(status_code("connection failed"), None);
        assert_eq!(status_code("HTTP 5033"), None);
        assert_eq!(status_code("HTTP x"), None);
    }
}
