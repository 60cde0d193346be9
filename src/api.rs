//! The HTTP operations, one module per flow, and the middleware around them.
//!
//! A handler reads like its flow: parse → limit → load → decide (a pure
//! function in [`crate::auth`]) → store → record → answer.
//! - [`login_code`], [`login_link`]: signing in with a code or a magic link;
//!   [`sign_in`] holds the steps they share, [`page`] the magic-link page.
//! - [`refresh`]: rotating a refresh token, and logging out with one.
//! - [`session`]: the signed-in user and their sessions (bearer token).
//! - [`health`]: the server and its database.
//! - [`admin`]: the operators' API on the admin listener, with its own document.
//! - [`document`]: the OpenAPI documents as served, with their links.
//! - [`bodies`]: response bodies shared by several operations; [`types`]:
//!   strict request field types; [`security`]: the bearer scheme;
//!   [`middleware`]: request ids, body checks, CORS, tracing.

pub mod admin;
pub mod bodies;
pub mod document;
pub mod health;
pub mod login_code;
pub mod login_link;
pub mod middleware;
pub mod page;
pub mod refresh;
pub mod security;
pub mod session;
pub mod sign_in;
pub mod types;

use poem::Request;
use poem_openapi::{OpenApiService, Tags};

use crate::{audit::RequestContext, state::AppState};

/// The groups operations are listed under in the OpenAPI document.
#[derive(Tags)]
pub enum ApiTags {
    /// Signing in with an email code or a magic link, refreshing, and logging out.
    Auth,
    /// The signed-in user and their sessions (bearer access token).
    Sessions,
    /// Liveness of the server and its database.
    Health,
}

/// Every API of sesame, as one OpenAPI service.
pub type Apis = (
    login_code::LoginCodeApi,
    login_link::LoginLinkApi,
    refresh::RefreshApi,
    session::SessionApi,
    health::HealthApi,
);

/// The OpenAPI service: routes and the generated document.
pub fn service(state: &AppState) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            login_code::LoginCodeApi { state: state.clone() },
            login_link::LoginLinkApi { state: state.clone() },
            refresh::RefreshApi { state: state.clone() },
            session::SessionApi { state: state.clone() },
            health::HealthApi { state: state.clone() },
        ),
        "sesame",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Passwordless authentication: a person proves they own an email address with a \
         one-time code or a magic link and receives a short-lived JWT access token and a \
         rotating, single-use refresh token. Every error answers \
         `{\"success\": false, \"error\": \"…\", \"code\": \"…\"}` with a stable `code`.",
    )
}

/// Longest `User-Agent` kept with sessions and events.
const MAX_USER_AGENT_CHARS: usize = 512;

/// Who sent a request: client IP (the socket peer, or the first
/// `X-Forwarded-For` hop when `TRUST_PROXY_HEADERS=true`), user agent and request id.
pub fn request_context(req: &Request, state: &AppState) -> RequestContext {
    let forwarded = state
        .config
        .server
        .trust_proxy_headers
        .then(|| req.header("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.split(',').next())
        .and_then(|hop| hop.trim().parse().ok());
    let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
    RequestContext {
        ip: forwarded.or(peer),
        user_agent: req
            .header("user-agent")
            .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
        request_id: req.data::<middleware::RequestId>().map(|id| id.0.clone()),
    }
}
