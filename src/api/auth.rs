//! The `Auth` tag: signing in, refreshing and ending sessions.

use poem::Request;
use poem_openapi::{Object, OpenApi, payload::Json};

use super::{ApiTags, SuccessResponse, request_context, types::Text};
use crate::{
    app::AppState,
    audit::{AuditEvent, AuditTx},
    auth::refresh::RefreshToken,
    error::ApiError,
    store::{self, sessions::RevokeReason},
};

pub struct AuthApi {
    pub state: AppState,
}

/// A refresh token to end the session of.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct LogoutRequest {
    /// The refresh token of the session to end.
    #[oai(validator(max_length = 1024))]
    pub refresh_token: Text,
}

#[OpenApi]
impl AuthApi {
    /// End the session of a refresh token.
    ///
    /// Revokes the session (refresh-token family) the token belongs to, so no
    /// token of it can be refreshed again. Idempotent: an unknown, malformed or
    /// already-ended token also answers 200, so the answer reveals nothing.
    /// Access tokens already issued stay valid until they expire (they are
    /// stateless JWTs); keep them short-lived.
    #[oai(
        path = "/auth/logout",
        method = "post",
        operation_id = "logout",
        tag = "ApiTags::Auth"
    )]
    async fn logout(&self, req: &Request, body: Json<LogoutRequest>) -> Result<Json<SuccessResponse>, ApiError> {
        let ctx = request_context(req, &self.state);
        let now = self.state.clock.now();
        let mut tx = AuditTx::begin(&self.state.db, &self.state.audit).await?;
        let owner = match RefreshToken::parse(body.refresh_token.as_str()) {
            Some(token) => store::sessions::find_by_token_hash_for_update(&mut tx, &token.hash()).await?,
            None => None,
        };
        let event = match owner {
            Some(owner) if !owner.session_revoked => {
                store::sessions::revoke(&mut tx, owner.session_id, RevokeReason::Logout, now).await?;
                AuditEvent::success("auth.logout", &ctx, now)
                    .user(owner.user_id)
                    .meta("sessionId", owner.session_id.to_string())
            }
            Some(owner) => AuditEvent::failure("auth.logout", "Session already ended", &ctx, now)
                .user(owner.user_id)
                .meta("sessionId", owner.session_id.to_string()),
            None => AuditEvent::failure("auth.logout", "Unknown refresh token", &ctx, now),
        };
        tx.record(event).await?;
        tx.commit().await?;
        Ok(Json(SuccessResponse::ok()))
    }
}
