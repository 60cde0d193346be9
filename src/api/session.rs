//! The `Sessions` tag: who am I, which sessions do I have, and ending them.
//!
//! Every operation here takes a bearer access token, accepted only while its
//! session is live (see [`security`](super::security)): ending a session stops
//! its refresh tokens and, at sesame, its access tokens at once.

use poem::Request;
use poem_openapi::{Object, OpenApi, param::Path, payload::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    ApiTags,
    bodies::{SuccessResponse, UserBody},
    request_context,
    security::{BearerAuth, Caller},
};
use crate::{
    audit::{AuditEvent, AuditTx, Event},
    auth::ids::SessionId,
    error::{ApiError, BearerErrors, DeleteSessionErrors, ErrorCode, Errors},
    state::AppState,
    store::{self, sessions::RevokeReason},
};

pub struct SessionApi {
    pub state: AppState,
}

/// The signed-in user.
#[derive(Object, Debug)]
pub struct MeResponse {
    /// Always `true`.
    pub success: bool,
    pub user: UserBody,
}

/// One sign-in session (refresh-token family).
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct SessionBody {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    /// When it ends unless refreshed (sliding), or its absolute limit.
    pub expires_at: OffsetDateTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// Whether this is the session of the access token making the request.
    pub current: bool,
}

/// The caller's live sessions.
#[derive(Object, Debug)]
pub struct SessionsResponse {
    /// Always `true`.
    pub success: bool,
    pub sessions: Vec<SessionBody>,
}

/// How many sessions were ended.
#[derive(Object, Debug)]
pub struct LogoutAllResponse {
    /// Always `true`.
    pub success: bool,
    pub revoked: i64,
}

#[OpenApi]
impl SessionApi {
    /// The signed-in user.
    #[oai(
        path = "/auth/me",
        method = "get",
        operation_id = "get_me",
        tag = "ApiTags::Sessions"
    )]
    async fn get_me(&self, auth: BearerAuth) -> Result<Json<MeResponse>, Errors<BearerErrors>> {
        // The bearer check read the user with the session: no further query.
        Ok(Json(MeResponse {
            success: true,
            user: auth.0.user.into(),
        }))
    }

    /// The caller's live sessions, most recently used first.
    #[oai(
        path = "/auth/sessions",
        method = "get",
        operation_id = "list_sessions",
        tag = "ApiTags::Sessions"
    )]
    async fn list_sessions(&self, auth: BearerAuth) -> Result<Json<SessionsResponse>, Errors<BearerErrors>> {
        let BearerAuth(Caller { claims, .. }) = auth;
        let (now, cap) = (self.state.clock.now(), self.state.session_cap());
        let rows = self
            .state
            .db
            .run(async |conn| store::sessions::list_live(conn, claims.sub, now, cap).await)
            .await?;
        let sessions = rows
            .into_iter()
            .map(|s| SessionBody {
                current: s.id == claims.sid,
                id: s.id.as_uuid(),
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
                user_agent: s.user_agent,
                ip: s.ip.map(|n| n.ip().to_string()),
            })
            .collect();
        Ok(Json(SessionsResponse {
            success: true,
            sessions,
        }))
    }

    /// End one of the caller's sessions.
    ///
    /// Its refresh tokens and, at sesame, its access tokens stop working at
    /// once (resource servers verifying tokens offline against the JWKS accept
    /// them until they expire). A session that is not the caller's is 404,
    /// like one that does not exist.
    #[oai(
        path = "/auth/sessions/:id",
        method = "delete",
        operation_id = "delete_session",
        tag = "ApiTags::Sessions"
    )]
    async fn delete_session(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<SuccessResponse>, Errors<DeleteSessionErrors>> {
        let BearerAuth(Caller { claims, .. }) = auth;
        let ctx = request_context(req, &self.state);
        let now = self.state.clock.now();
        let mut tx = AuditTx::begin(&self.state.db, &self.state.audit).await?;
        match store::sessions::revoke_owned(&mut tx, claims.sub, SessionId::from(id.0), RevokeReason::Revoked, now)
            .await?
        {
            None => return Err(ApiError::new(ErrorCode::NotFound, "no such session").into()),
            Some(false) => {}
            Some(true) => {
                tx.record(
                    AuditEvent::success(Event::AuthLogout, &ctx, now)
                        .user(claims.sub)
                        .email(&claims.email)
                        .meta("scope", "session")
                        .meta("sessionId", id.0.to_string()),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(Json(SuccessResponse::ok()))
    }

    /// End every session of the caller.
    ///
    /// Every refresh token of the user and, at sesame, every access token
    /// stops working at once (resource servers verifying tokens offline
    /// against the JWKS accept them until they expire).
    #[oai(
        path = "/auth/logout-all",
        method = "post",
        operation_id = "logout_all",
        tag = "ApiTags::Sessions"
    )]
    async fn logout_all(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<LogoutAllResponse>, Errors<BearerErrors>> {
        let BearerAuth(Caller { claims, .. }) = auth;
        let ctx = request_context(req, &self.state);
        let now = self.state.clock.now();
        let mut tx = AuditTx::begin(&self.state.db, &self.state.audit).await?;
        let revoked = store::sessions::revoke_all(&mut tx, claims.sub, RevokeReason::LogoutAll, now).await?;
        tx.record(
            AuditEvent::success(Event::AuthLogout, &ctx, now)
                .user(claims.sub)
                .email(&claims.email)
                .meta("scope", "all")
                .meta("revoked", revoked),
        )
        .await?;
        tx.commit().await?;
        Ok(Json(LogoutAllResponse { success: true, revoked }))
    }
}
