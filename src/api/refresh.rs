//! Keeping and ending a session with its refresh token: `POST /auth/refresh`
//! (rotation, with reuse detection) and `POST /auth/logout`.

mod at_once;

use poem::Request;
use poem_openapi::{Object, OpenApi, payload::Json, types::Example};
use time::OffsetDateTime;

use super::{
    ApiTags,
    bodies::{SuccessResponse, TokenPair},
    request_context,
    sign_in::{SessionOf, Source, TokenKind, limit, record_tokens, token_pair},
    types::Token,
};
use crate::{
    audit::{AuditEvent, AuditTx, Event, RequestContext},
    auth::{
        Reason,
        refresh::RefreshToken,
        session::{RefreshDecision, SessionRecord, TokenRecord, refresh_decision, session_decision, session_expiry},
    },
    error::{ApiError, ErrorCode, Errors, LogoutErrors, VerifyErrors},
    rate_limit::{self, Limit},
    state::AppState,
    store::{
        self,
        sessions::{LockedSession, RevokeReason},
        users::User,
    },
};

pub struct RefreshApi {
    pub state: AppState,
}

/// A refresh token to exchange.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", example)]
pub struct RefreshRequest {
    /// The latest refresh token of the session.
    pub refresh_token: Token,
}

/// A refresh token to end the session of.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
#[oai(example)]
pub struct LogoutRequest {
    /// The refresh token of the session to end.
    pub refresh_token: Token,
}

#[OpenApi]
impl RefreshApi {
    /// Exchange a refresh token for a new pair (rotation).
    ///
    /// Each refresh token works once: the answer carries its successor in the
    /// same session, and the session's expiry slides forward
    /// (`REFRESH_TOKEN_EXPIRY`, capped by `SESSION_MAX_AGE`). Presenting a token
    /// that was already exchanged is reuse: the whole session is ended and every
    /// token of it stops working, except within `REFRESH_REUSE_INTERVAL` (10s)
    /// of the exchange, when the same successor is answered again, so that
    /// racing browser tabs converge on one token. A session already older
    /// than a `SESSION_MAX_AGE` set or lowered since it began is ended by the
    /// attempt. Every failure is 401 `invalid_refresh_token`.
    #[oai(
        path = "/auth/refresh",
        method = "post",
        operation_id = "refresh",
        tag = "ApiTags::Auth"
    )]
    async fn refresh(
        &self,
        req: &Request,
        body: Json<RefreshRequest>,
    ) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
        let state = &self.state;
        let ctx = request_context(req, state);
        limit(
            state,
            &ctx,
            &rate_limit::for_client(Limit::RefreshPerIpMinute, &ctx),
            None,
        )
        .await?;
        let presented = RefreshToken::parse(body.refresh_token.as_str());
        if let Some(token) = &presented
            && let Some(pair) = at_once::rotate(state, &ctx, token).await?
        {
            return Ok(Json(pair));
        }
        // The slow path: not live, not known, or a case the one statement
        // leaves to the refresh rule. Lock the session, decide, act.
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let locked = match &presented {
            Some(t) => store::sessions::lock_by_token_hash(&mut tx, &t.hash()).await?,
            None => None,
        };
        let now = state.clock.now();
        let (Some(token), Some(s)) = (presented, locked) else {
            let event = AuditEvent::failure(Event::TokenRefresh, Reason::UnknownRefreshToken, &ctx, now);
            return refused(tx, event).await;
        };
        let r = Refresh {
            state,
            ctx: &ctx,
            user: User {
                id: s.user_id,
                email: s.email.clone(),
                created_at: s.user_created_at,
            },
            session: &s,
            token: &token,
            next_expiry: session_expiry(
                s.session_created_at,
                now,
                crate::clock::span(state.config.tokens.refresh_token_expiry),
                state.config.tokens.session_max_age.map(crate::clock::span),
            ),
            now,
        };
        // The child under the salt stored with the token (read before the
        // lock, right while the token is live: only a rotation changes it).
        let child = state.refresh_chain.child(&token, s.token_salt.as_ref());
        if let Some(decision) = session_decision(&session_record(&s), r.next_expiry, now) {
            return r.settle(tx, decision, &child).await;
        }
        // A live token the one statement left here (a session cap that cuts
        // the expiry short, a token without a salt): rotate it under the lock
        // (the `Rotate` branch of `refresh_decision`, checked by the SQL).
        if store::sessions::rotate_if_live(&mut tx, &token.hash(), &child.hash(), now, r.next_expiry).await? {
            return r.answer(tx, &child, false).await;
        }
        r.not_live(tx).await
    }

    /// End the session of a refresh token.
    ///
    /// Revokes the session (refresh-token family) the token belongs to, so no
    /// token of it can be refreshed again, and its access tokens stop working
    /// at sesame's bearer operations at once. Idempotent: an unknown or
    /// already-ended token also answers 200, so the answer reveals nothing (a
    /// value that is not token-shaped is 400 `invalid_request`).
    /// Resource servers that verify access tokens offline against the JWKS
    /// cannot see the logout and accept them until they expire; keep them
    /// short-lived.
    #[oai(
        path = "/auth/logout",
        method = "post",
        operation_id = "logout",
        tag = "ApiTags::Auth"
    )]
    async fn logout(
        &self,
        req: &Request,
        body: Json<LogoutRequest>,
    ) -> Result<Json<SuccessResponse>, Errors<LogoutErrors>> {
        let ctx = request_context(req, &self.state);
        let checks = rate_limit::for_client(Limit::DefaultPerIpMinute, &ctx);
        limit(&self.state, &ctx, &checks, None).await?;
        let now = self.state.clock.now();
        let mut tx = AuditTx::begin(&self.state.db, &self.state.audit).await?;
        let owner = match RefreshToken::parse(body.refresh_token.as_str()) {
            Some(token) => store::sessions::lock_by_token_hash(&mut tx, &token.hash()).await?,
            None => None,
        };
        let event = match owner {
            Some(owner) if !owner.session_revoked => {
                store::sessions::revoke(&mut tx, owner.session_id, RevokeReason::Logout, now).await?;
                AuditEvent::success(Event::AuthLogout, &ctx, now)
                    .user(owner.user_id)
                    .meta("sessionId", owner.session_id.to_string())
            }
            Some(owner) => AuditEvent::failure(Event::AuthLogout, Reason::SessionAlreadyEnded, &ctx, now)
                .user(owner.user_id)
                .meta("sessionId", owner.session_id.to_string()),
            None => AuditEvent::failure(Event::AuthLogout, Reason::UnknownRefreshToken, &ctx, now),
        };
        tx.record(event).await?;
        tx.commit().await?;
        Ok(Json(SuccessResponse::ok()))
    }
}

/// What the decision needs of a locked session.
fn session_record(s: &LockedSession) -> SessionRecord {
    SessionRecord {
        revoked: s.session_revoked,
        expires_at: s.session_expires_at,
    }
}

/// Records `event`, commits, and refuses.
async fn refused(mut tx: AuditTx, event: AuditEvent) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
    tx.record(event).await?;
    tx.commit().await?;
    Err(ApiError::from(ErrorCode::InvalidRefreshToken).into())
}

/// One refresh of a locked session.
struct Refresh<'a> {
    state: &'a AppState,
    ctx: &'a RequestContext,
    user: User,
    session: &'a LockedSession,
    token: &'a RefreshToken,
    /// The session's expiry after a rotation now, under the present settings.
    next_expiry: OffsetDateTime,
    now: OffsetDateTime,
}

impl Refresh<'_> {
    fn of(&self) -> SessionOf<'_> {
        SessionOf {
            user: &self.user,
            session_id: self.session.session_id,
            expires_at: self.next_expiry,
        }
    }

    fn event(&self, event: AuditEvent) -> AuditEvent {
        self.of().mark(event)
    }

    fn failure(&self, reason: Reason) -> AuditEvent {
        self.event(AuditEvent::failure(Event::TokenRefresh, reason, self.ctx, self.now))
    }

    /// The token was not live: expired, ended, or presented again after its
    /// rotation; decide between answering the same child and ending the session.
    async fn not_live(self, mut tx: AuditTx) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
        let t = store::sessions::find_token_state(&mut tx, &self.token.hash())
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a locked session lost its token")))?;
        // The salt as committed now: a rotation in one statement stored the
        // one it derived the child with after the lock's read.
        let child = &self.state.refresh_chain.child(self.token, t.salt.as_ref());
        let child_is_live = match t.rotated_at {
            Some(_) => store::sessions::find_child(&mut tx, t.token_id)
                .await?
                .is_some_and(|c| c.live && c.token_hash == child.hash()),
            None => false,
        };
        let token = TokenRecord {
            rotated_at: t.rotated_at,
            revoked: t.revoked,
            expires_at: t.expires_at,
        };
        let interval = crate::clock::span(self.state.config.tokens.refresh_reuse_interval);
        let decision = refresh_decision(
            &session_record(self.session),
            self.next_expiry,
            &token,
            child_is_live,
            self.now,
            interval,
        );
        self.settle(tx, decision, child).await
    }

    /// Carries out a decision other than a rotation (which the store did).
    async fn settle(
        self,
        mut tx: AuditTx,
        decision: RefreshDecision,
        child: &RefreshToken,
    ) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
        match decision {
            RefreshDecision::SameChild => {
                store::sessions::touch(&mut tx, self.session.session_id, self.now).await?;
                self.answer(tx, child, true).await
            }
            RefreshDecision::Reuse { rotated_ago } => {
                let session_id = self.session.session_id;
                store::sessions::revoke(&mut tx, session_id, RevokeReason::ReuseDetected, self.now).await?;
                let reuse = AuditEvent::failure(
                    Event::TokenReuseDetected,
                    Reason::RefreshTokenReused,
                    self.ctx,
                    self.now,
                );
                tx.record(self.event(reuse).meta("rotatedSecondsAgo", rotated_ago.whole_seconds()))
                    .await?;
                refused(tx, self.failure(Reason::RefreshTokenReused)).await
            }
            RefreshDecision::Expire => {
                let session_id = self.session.session_id;
                store::sessions::revoke(&mut tx, session_id, RevokeReason::Expired, self.now).await?;
                refused(tx, self.failure(Reason::SessionExpired)).await
            }
            RefreshDecision::Refuse(reason) => refused(tx, self.failure(reason)).await,
            // Only `not_live` can decide to rotate (`session_decision` never
            // does): the session is locked and the rotation just found the
            // token not live, so a decision to rotate means the two disagree.
            RefreshDecision::Rotate => Err(ApiError::internal(anyhow::anyhow!(
                "a refresh token was not live to the store but live to the refresh rule"
            ))
            .into()),
        }
    }

    /// Answers `child` with a fresh access token and records the refresh: a
    /// rotation issued both tokens; an answer within the reuse interval only
    /// a new access token.
    async fn answer(
        self,
        mut tx: AuditTx,
        child: &RefreshToken,
        within_reuse_interval: bool,
    ) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
        let pair = token_pair(self.state, self.of(), child, self.now)?;
        let mut event = self.event(AuditEvent::success(Event::TokenRefresh, self.ctx, self.now));
        let kinds: &[TokenKind] = if within_reuse_interval {
            event = event.meta("withinReuseInterval", true);
            &[TokenKind::Access]
        } else {
            &[TokenKind::Access, TokenKind::Refresh]
        };
        tx.record(event).await?;
        record_tokens(
            &mut tx,
            self.state,
            self.ctx,
            self.of(),
            Source::Refresh,
            kinds,
            self.now,
        )
        .await?;
        tx.commit().await?;
        Ok(Json(pair))
    }
}

impl Example for RefreshRequest {
    fn example() -> Self {
        Self {
            refresh_token: Token::new("B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq"),
        }
    }
}

impl Example for LogoutRequest {
    fn example() -> Self {
        Self {
            refresh_token: Token::new("B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq"),
        }
    }
}
