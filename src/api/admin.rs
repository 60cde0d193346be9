//! The admin API: what operators use, served only on the admin listener
//! (`ADMIN_HOST:ADMIN_PORT`), with its own OpenAPI document.
//!
//! Every request under `/admin/` carries `Authorization: Bearer <ADMIN_TOKEN>`,
//! checked by [`require_token`] before routing: without `ADMIN_TOKEN` set the
//! admin API answers 401 `admin_token_required`; a missing or wrong token is
//! 401 `invalid_admin_token`, and wrong tokens count against the per-client
//! limit `admin_auth_per_ip_minute`. `/metrics`, `/health` and the document
//! itself need no token.

use std::sync::Arc;

use poem::{Endpoint, IntoResponse as _, Request, Response};
use poem_openapi::{OpenApi, OpenApiService, SecurityScheme, Tags, auth::Bearer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

pub mod audit;
pub mod cursor;
pub mod dashboard;
pub mod stats;
pub mod users;
pub mod webhooks;

use super::{health, request_context};
use crate::{
    error::{ApiError, ErrorCode},
    rate_limit::{self, Limit},
    state::AppState,
};

/// The groups operations are listed under in the admin document.
#[derive(Tags)]
pub enum AdminTags {
    /// Finding, creating, disabling and erasing users; ending their sessions.
    Users,
    /// The audit trail, listed and counted.
    Audit,
    /// Webhook deliveries: listing and retrying them.
    Webhooks,
    /// Liveness of the server and its database.
    Health,
}

/// `Authorization: Bearer <ADMIN_TOKEN>`: checked for every `/admin/` path
/// before routing (see the module doc), so an operation only declares it.
#[derive(SecurityScheme)]
#[oai(ty = "bearer")]
pub struct AdminAuth(#[expect(dead_code, reason = "checked by require_token before the operation runs")] Bearer);

/// `GET /health` on the admin listener, listed in the admin document.
pub struct AdminHealthApi {
    pub state: AppState,
}

#[OpenApi]
impl AdminHealthApi {
    /// Check the server and its database.
    ///
    /// The same check as `GET /health` on the public port: 503 while the
    /// database is unreachable, 200 again as soon as it is back.
    #[oai(
        path = "/health",
        method = "get",
        operation_id = "get_health",
        tag = "AdminTags::Health"
    )]
    async fn get_health(&self) -> health::HealthResponse {
        health::check(&self.state).await
    }
}

/// Every API of the admin document.
pub type AdminApis = (
    users::UsersApi,
    audit::AuditApi,
    stats::StatsApi,
    webhooks::WebhooksApi,
    AdminHealthApi,
);

/// The admin OpenAPI service: routes and the generated document.
pub fn service(state: &AppState) -> OpenApiService<AdminApis, ()> {
    OpenApiService::new(
        (
            users::UsersApi { state: state.clone() },
            audit::AuditApi { state: state.clone() },
            stats::StatsApi { state: state.clone() },
            webhooks::WebhooksApi { state: state.clone() },
            AdminHealthApi { state: state.clone() },
        ),
        "sesame admin",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "The operators' API of sesame, served only on the admin listener (ADMIN_HOST:ADMIN_PORT). \
         Every operation under `/admin/` needs `Authorization: Bearer <ADMIN_TOKEN>`. Every \
         error answers `{\"success\": false, \"error\": \"…\", \"code\": \"…\"}` with a stable `code`.",
    )
}

/// A text query parameter, refused (400) when it holds a NUL character,
/// which PostgreSQL text cannot store or compare.
pub fn text_param(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.contains('\0') => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid parameter `{name}`: it holds a NUL character"),
        )),
        v => Ok(v),
    }
}

/// Whether `path` belongs to the admin API (and so needs the token).
fn is_admin_path(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Whether `presented` is `expected`, in time independent of where they differ
/// (both are hashed first, so not even the length shows).
fn token_matches(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// The bearer token of `req`, if it carries one.
fn bearer_of(req: &Request) -> Option<&str> {
    let value = req.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Refuses `/admin/` requests without the admin token; see the module doc.
pub async fn require_token<E: Endpoint<Output = Response>>(ep: Arc<E>, req: Request) -> poem::Result<Response> {
    if !is_admin_path(req.uri().path()) {
        return ep.call(req).await;
    }
    let Some(state) = req.data::<Arc<AppState>>().cloned() else {
        return Ok(ApiError::internal(anyhow::anyhow!("AppState is not attached to requests")).into_response());
    };
    let Some(expected) = state.config.admin.token.as_ref() else {
        return Ok(ApiError::from(ErrorCode::AdminTokenRequired).into_response());
    };
    if bearer_of(&req).is_some_and(|t| token_matches(t, expected.expose())) {
        return ep.call(req).await;
    }
    let ctx = request_context(&req, &state);
    let checks = rate_limit::for_client(Limit::AdminAuthPerIpMinute, &ctx);
    if let Err(e) = state.limiter.check(&ctx, &checks, None).await {
        return Ok(ApiError::from(e).into_response());
    }
    tracing::info!("admin request refused: missing or wrong admin token");
    Ok(ApiError::from(ErrorCode::InvalidAdminToken).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal() {
        let token = "0123456789abcdef0123456789abcdef";
        assert!(token_matches(token, token));
        assert!(!token_matches("0123456789abcdef0123456789abcdeF", token));
        assert!(!token_matches("", token));
        assert!(!token_matches(&format!("{token}x"), token));
    }

    #[test]
    fn only_admin_paths_need_the_token() {
        assert!(is_admin_path("/admin"));
        assert!(is_admin_path("/admin/users"));
        assert!(!is_admin_path("/administrator"));
        assert!(!is_admin_path("/metrics"));
        assert!(!is_admin_path("/health"));
    }
}
