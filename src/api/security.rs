//! The bearer security scheme: `Authorization: Bearer <access token>`.
//!
//! A token is accepted only while it verifies (signature, issuer, audience,
//! times) *and* its session (`sid`) is live and belongs to its user (`sub`):
//! ending a session (logout, logout-all, delete, reuse detection, expiry,
//! including passing a `SESSION_MAX_AGE` set or lowered since it began) or
//! deleting the user stops its access tokens at sesame at once. Resource
//! servers that verify tokens offline against the JWKS cannot see that and
//! accept them until `exp`.
//!
//! Every bearer request is first counted against the client's
//! `default_per_ip_minute` limit, before the token is verified or looked up,
//! so a flood of tokens costs the database one counter per request.

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::{request_context, sign_in::limit};
use crate::{
    auth::jwt::Claims,
    error::{ApiError, ErrorCode},
    rate_limit::{self, Limit},
    state::AppState,
    store::{self, users::User},
};

/// A valid access token (JWT) from `/auth/verify-code`, `/auth/verify-magic-link` or `/auth/refresh`, whose session is still live.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Caller);

/// Who is calling: the verified claims of a token whose session is live, and its user.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub user: User,
}

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Caller> {
    let state = req
        .data::<std::sync::Arc<AppState>>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not attached to requests")))?;
    let ctx = request_context(req, state);
    limit(
        state,
        &ctx,
        &rate_limit::for_client(Limit::DefaultPerIpMinute, &ctx),
        None,
    )
    .await?;
    let now = state.clock.now();
    let claims = state.jwt.verify_at(&bearer.token, now).map_err(|e| {
        tracing::debug!(error = %e, "bearer token refused");
        ApiError::from(ErrorCode::InvalidToken)
    })?;
    let cap = state.session_cap();
    let owner = state
        .db
        .run(async |conn| store::sessions::find_live_owner(conn, claims.sid, claims.sub, now, cap).await)
        .await
        .map_err(ApiError::from)?;
    let user = owner.ok_or_else(|| {
        tracing::debug!("bearer token refused: its session ended or its user is gone");
        ApiError::new(ErrorCode::InvalidToken, "the session of this token has ended")
    })?;
    Ok(Caller { claims, user })
}
