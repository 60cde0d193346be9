//! The bearer security scheme: `Authorization: Bearer <access token>`.

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use crate::{
    auth::jwt::Claims,
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// A valid access token (JWT) from `/auth/verify-code`, `/auth/verify-magic-link` or `/auth/refresh`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_bearer")]
pub struct BearerAuth(pub Claims);

async fn check_bearer(req: &Request, bearer: Bearer) -> poem::Result<Claims> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState is not attached to requests")))?;
    state.jwt.verify_at(&bearer.token, state.clock.now()).map_err(|e| {
        tracing::debug!(error = %e, "bearer token refused");
        ApiError::from(ErrorCode::InvalidToken).into()
    })
}
