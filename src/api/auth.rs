//! The `Auth` tag: signing in with a code or a magic link, and ending sessions.
//!
//! Each flow: parse → begin → store calls → audit events → commit → side
//! effects (email). Clients see one generic 401 for every failed
//! verification; the precise reason goes to the audit trail.

use poem::Request;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Query,
    payload::{Html, Json},
    types::Example,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ApiTags, SuccessResponse, request_context, types::Text};
use crate::{
    app::AppState,
    audit::{self, AuditEvent, AuditTx, RequestContext},
    auth::{email_address::EmailAddress, magic_link, otp::OtpCode, random_token, refresh::RefreshToken},
    email::templates,
    error::{ApiError, Errors, LogoutErrors, SendErrors, VerifyErrors},
    rate_limit::{self, Limit},
    store::{self, sessions::RevokeReason},
};

pub struct AuthApi {
    pub state: AppState,
}

/// The answer of both send endpoints, whether or not the address has an account.
const SENT_MESSAGE: &str = "If the address can sign in, a message is on its way.";

/// An address to send a one-time code to.
#[derive(Object, Debug)]
#[oai(example)]
pub struct SendCodeRequest {
    /// The address; trimmed and lower-cased.
    #[oai(validator(max_length = 320))]
    pub email: Text,
}

/// An address to send a magic link to.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
#[oai(example)]
pub struct SendMagicLinkRequest {
    /// The address; trimmed and lower-cased.
    #[oai(validator(max_length = 320))]
    pub email: Text,
    /// Where the link should lead instead of `FRONTEND_URL/auth/verify`; its
    /// origin must be on `REDIRECT_ALLOW_LIST`.
    #[oai(validator(max_length = 2048))]
    pub redirect_to: Option<Text>,
}

/// The answer of the send endpoints.
#[derive(Object, Debug)]
#[oai(example)]
pub struct SendResponse {
    /// Always `true`.
    pub success: bool,
    pub message: String,
}

/// A code received by email.
#[derive(Object, Debug)]
#[oai(example)]
pub struct VerifyCodeRequest {
    #[oai(validator(max_length = 320))]
    pub email: Text,
    /// The digits; spaces and dashes are ignored (`123 456`, `123-456`).
    #[oai(validator(max_length = 64))]
    pub code: Text,
}

/// The token from a magic link.
#[derive(Object, Debug)]
#[oai(example)]
pub struct VerifyMagicLinkRequest {
    #[oai(validator(max_length = 1024))]
    pub token: Text,
}

/// A user as the API shows it.
#[derive(Object, Debug, Clone)]
#[oai(rename_all = "camelCase")]
pub struct UserBody {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
}

impl From<store::users::User> for UserBody {
    fn from(u: store::users::User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            created_at: u.created_at,
        }
    }
}

/// An access token and the refresh token of its session.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
#[oai(example)]
pub struct TokenPair {
    /// Always `true`.
    pub success: bool,
    /// The access token: a JWT to send as `Authorization: Bearer …`.
    pub token: String,
    /// Single use: exchange it at `/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserBody,
}

/// A refresh token to exchange.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase", example)]
pub struct RefreshRequest {
    /// The latest refresh token of the session.
    #[oai(validator(max_length = 1024))]
    pub refresh_token: Text,
}

/// A refresh token to end the session of.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
#[oai(example)]
pub struct LogoutRequest {
    /// The refresh token of the session to end.
    #[oai(validator(max_length = 1024))]
    pub refresh_token: Text,
}

#[derive(ApiResponse)]
pub enum PageResponse {
    /// A page with a "Sign in" button; the link is used only when it is pressed.
    #[oai(status = 200)]
    Page(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] String,
        #[oai(header = "Referrer-Policy")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

fn parse_email(raw: &Text) -> Result<EmailAddress, ApiError> {
    EmailAddress::parse(raw.as_str())
        .ok_or_else(|| ApiError::bad_request("invalid_email", "`email` is not a valid email address"))
}

fn sent() -> Json<SendResponse> {
    Json(SendResponse {
        success: true,
        message: SENT_MESSAGE.to_owned(),
    })
}

#[OpenApi]
impl AuthApi {
    /// Send a one-time code by email.
    ///
    /// Answers the same 200 whether or not the address has an account, in about
    /// the same time. A new code replaces the previous one, but the count of
    /// wrong tries does not start over within `OTP_EXPIRY`.
    #[oai(
        path = "/auth/send-code",
        method = "post",
        operation_id = "send_code",
        tag = "ApiTags::Auth"
    )]
    async fn send_code(
        &self,
        req: &Request,
        body: Json<SendCodeRequest>,
    ) -> Result<Json<SendResponse>, Errors<SendErrors>> {
        let state = &self.state;
        let ctx = request_context(req, state);
        let email = parse_email(&body.email)?;
        state
            .limiter
            .check(&ctx, &rate_limit::for_send(email.as_str(), &ctx), Some(email.as_str()))
            .await?;
        let config = &state.config;
        let code = OtpCode::generate(config.otp_length);
        let hash = hash_code(state, code.clone()).await?;
        if !may_sign_in(state, &email).await? {
            state.mailer.imitate_send().await;
            return Ok(sent());
        }

        let now = state.clock.now();
        let expiry = crate::clock::span(config.otp_expiry);
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let id = store::otp::replace(&mut tx, &email, &hash, now, now + expiry, expiry).await?;
        tx.record(
            AuditEvent::success("otp.generated", &ctx, now)
                .email(email.as_str())
                .meta("emailDomain", email.domain()),
        )
        .await?;
        tx.commit().await?;

        let message = templates::code(email.as_str(), code.expose(), config.otp_expiry);
        deliver(state, &ctx, &email, &message, Sent::Code(id)).await?;
        Ok(sent())
    }

    /// Exchange an emailed code for a token pair.
    ///
    /// Every failure (no code, expired, too many tries, wrong code) answers the
    /// same 401 `invalid_code`; the reason is recorded in the audit event
    /// `otp.verification.detail`. At most `OTP_MAX_ATTEMPTS` wrong tries per
    /// address within `OTP_EXPIRY`, whatever the number of resends. A code
    /// works once; signing in the first time creates the user.
    #[oai(
        path = "/auth/verify-code",
        method = "post",
        operation_id = "verify_code",
        tag = "ApiTags::Auth"
    )]
    async fn verify_code(
        &self,
        req: &Request,
        body: Json<VerifyCodeRequest>,
    ) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
        let state = &self.state;
        let ctx = request_context(req, state);
        let email = parse_email(&body.email)?;
        state
            .limiter
            .check(
                &ctx,
                &rate_limit::for_client(Limit::VerifyPerIpMinute, &ctx),
                Some(email.as_str()),
            )
            .await?;
        let code = OtpCode::parse(body.code.as_str(), state.config.otp_length);

        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let stored = store::otp::find_for_update(&mut tx, &email).await?;
        let now = state.clock.now();
        let failure = match &stored {
            None => {
                // The same work as a real check, so timing does not tell.
                dummy_verify(state).await?;
                Some(("No OTP found for email", None))
            }
            Some(s) if s.consumed_at.is_some() => {
                dummy_verify(state).await?;
                Some(("No OTP found for email", None))
            }
            Some(s) if s.expires_at <= now => Some(("OTP expired", None)),
            Some(s) if s.attempts >= i32::try_from(state.config.otp_max_attempts).unwrap_or(i32::MAX) => {
                Some(("Max attempts exceeded", Some(s.attempts)))
            }
            Some(s) => {
                let matches = match code {
                    Some(code) => verify_code_hash(state, code, s.code_hash.clone()).await?,
                    None => false,
                };
                if matches {
                    None
                } else {
                    let attempts = store::otp::add_failed_attempt(&mut tx, s.id).await?;
                    Some(("Invalid code", Some(attempts)))
                }
            }
        };

        if let Some((reason, attempts)) = failure {
            let mut detail = AuditEvent::failure("otp.verification.detail", reason, &ctx, now).email(email.as_str());
            if let Some(n) = attempts {
                detail = detail.meta("attempts", n);
            }
            if let Some(s) = stored.as_ref().filter(|_| reason == "OTP expired") {
                detail = detail.meta("expiredAt", audit::timestamp(s.expires_at));
            }
            tx.record(detail).await?;
            tx.record(AuditEvent::failure("otp.verification", reason, &ctx, now).email(email.as_str()))
                .await?;
            tx.commit().await?;
            return Err(ApiError::unauthorized("invalid_code", "the code is invalid or has expired").into());
        }

        if let Some(s) = &stored {
            store::otp::consume(&mut tx, s.id, now).await?;
        }
        tx.record(AuditEvent::success("otp.verification", &ctx, now).email(email.as_str()))
            .await?;
        let pair = start_session(&mut tx, state, &ctx, &email, "otp", now).await?;
        tx.commit().await?;
        Ok(Json(pair))
    }

    /// Send a magic link by email.
    ///
    /// The link points at `FRONTEND_URL/auth/verify?token=…`, or at `redirectTo`
    /// when its origin is on `REDIRECT_ALLOW_LIST` (anything else is 400
    /// `invalid_redirect`, never an open redirect). Answers the same 200 whether
    /// or not the address has an account.
    #[oai(
        path = "/auth/send-magic-link",
        method = "post",
        operation_id = "send_magic_link",
        tag = "ApiTags::Auth"
    )]
    async fn send_magic_link(
        &self,
        req: &Request,
        body: Json<SendMagicLinkRequest>,
    ) -> Result<Json<SendResponse>, Errors<SendErrors>> {
        let state = &self.state;
        let ctx = request_context(req, state);
        let email = parse_email(&body.email)?;
        let config = &state.config;
        let token = random_token();
        let redirect_to = body.redirect_to.as_ref().map(Text::as_str);
        let target = magic_link::target(&config.frontend_url, &config.redirect_allow_list, redirect_to).map_err(
            |e| match e {
                magic_link::RedirectError::NotAUrl => {
                    ApiError::bad_request("invalid_redirect", "`redirectTo` must be an absolute http(s) URL")
                }
                magic_link::RedirectError::NotAllowed => {
                    ApiError::bad_request("invalid_redirect", "`redirectTo` is not on the allow list")
                }
            },
        )?;
        // Store the parsed URL, never the raw input.
        let redirect_to = redirect_to.map(|_| target.as_str());
        let url = magic_link::with_token(&target, &token);
        state
            .limiter
            .check(&ctx, &rate_limit::for_send(email.as_str(), &ctx), Some(email.as_str()))
            .await?;
        if !may_sign_in(state, &email).await? {
            state.mailer.imitate_send().await;
            return Ok(sent());
        }

        let now = state.clock.now();
        let expiry = crate::clock::span(config.magic_link_expiry);
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let id = store::magic_links::insert(
            &mut tx,
            &email,
            &magic_link::hash(&token),
            redirect_to,
            now,
            now + expiry,
        )
        .await?;
        let mut event = AuditEvent::success("magic_link.generated", &ctx, now)
            .email(email.as_str())
            .meta("emailDomain", email.domain());
        if redirect_to.is_some() {
            event = event.meta("redirectOrigin", crate::config::origin_of(&url));
        }
        tx.record(event).await?;
        tx.commit().await?;

        let message = templates::magic_link(email.as_str(), url.as_str(), config.magic_link_expiry);
        deliver(state, &ctx, &email, &message, Sent::Link(id)).await?;
        Ok(sent())
    }

    /// Exchange a magic-link token for a token pair.
    ///
    /// A link works once and only through this POST. Every failure (unknown,
    /// used or expired link) answers the same 401 `invalid_link`.
    #[oai(
        path = "/auth/verify-magic-link",
        method = "post",
        operation_id = "verify_magic_link",
        tag = "ApiTags::Auth"
    )]
    async fn verify_magic_link(
        &self,
        req: &Request,
        body: Json<VerifyMagicLinkRequest>,
    ) -> Result<Json<TokenPair>, Errors<VerifyErrors>> {
        let state = &self.state;
        let ctx = request_context(req, state);
        let token = body.token.as_str();
        state
            .limiter
            .check(&ctx, &rate_limit::for_client(Limit::VerifyPerIpMinute, &ctx), None)
            .await?;
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let stored = if crate::auth::is_token_shaped(token) {
            store::magic_links::find_for_update(&mut tx, &magic_link::hash(token)).await?
        } else {
            None
        };
        let now = state.clock.now();
        let failure = match &stored {
            None => Some("Link not found"),
            Some(l) if l.consumed_at.is_some() => Some("Link already used"),
            Some(l) if l.expires_at <= now => Some("Link expired"),
            Some(_) => None,
        };
        let link = match (stored, failure) {
            (Some(link), None) => link,
            (stored, reason) => {
                let mut event =
                    AuditEvent::failure("magic_link.verification", reason.unwrap_or("Link not found"), &ctx, now);
                if let Some(link) = stored {
                    event = event.email(link.email);
                }
                tx.record(event).await?;
                tx.commit().await?;
                return Err(ApiError::unauthorized("invalid_link", "the link is invalid, used or expired").into());
            }
        };
        let email = EmailAddress::parse(&link.email)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a stored magic link has an invalid address")))?;
        store::magic_links::consume(&mut tx, link.id, now).await?;
        tx.record(AuditEvent::success("magic_link.verification", &ctx, now).email(email.as_str()))
            .await?;
        let pair = start_session(&mut tx, state, &ctx, &email, "magic-link", now).await?;
        tx.commit().await?;
        Ok(Json(pair))
    }

    /// A page that signs in with a magic link when its button is pressed.
    ///
    /// For teams without a frontend route: point `FRONTEND_URL` at sesame and
    /// links open this page (also served at `/auth/verify`). Opening it does
    /// not use the link — mail scanners that prefetch URLs cannot burn it; the
    /// button POSTs the token to `/auth/verify-magic-link` and, on success,
    /// hands the tokens to `FRONTEND_URL` in the URL fragment
    /// (`#access_token=…&refresh_token=…&token_type=bearer&expires_in=…`).
    #[oai(
        path = "/auth/verify-magic-link",
        method = "get",
        operation_id = "magic_link_page",
        tag = "ApiTags::Auth"
    )]
    async fn magic_link_page(&self, token: Query<Option<String>>) -> PageResponse {
        magic_link_page(&self.state, token.0.as_deref())
    }

    /// Exchange a refresh token for a new pair (rotation).
    ///
    /// Each refresh token works once: the answer carries its successor in the
    /// same session, and the session's expiry slides forward
    /// (`REFRESH_TOKEN_EXPIRY`, capped by `SESSION_MAX_AGE`). Presenting a token
    /// that was already exchanged is reuse: the whole session is ended and every
    /// token of it stops working, except within `REFRESH_REUSE_INTERVAL` (10s)
    /// of the exchange, when the same successor is answered again, so that
    /// racing browser tabs converge on one token. Every failure is 401
    /// `invalid_refresh_token`.
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
        let refused =
            || ApiError::unauthorized("invalid_refresh_token", "the refresh token is invalid, used or expired");
        state
            .limiter
            .check(&ctx, &rate_limit::for_client(Limit::RefreshPerIpMinute, &ctx), None)
            .await?;
        let presented = RefreshToken::parse(body.refresh_token.as_str());
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let locked = match &presented {
            Some(t) => store::sessions::lock_by_token_hash(&mut tx, &t.hash()).await?,
            None => None,
        };
        let now = state.clock.now();
        let (Some(token), Some(s)) = (presented, locked) else {
            tx.record(AuditEvent::failure("token.refresh", "Unknown refresh token", &ctx, now))
                .await?;
            tx.commit().await?;
            return Err(refused().into());
        };
        let user = store::users::User {
            id: s.user_id,
            email: s.email.clone(),
            created_at: s.user_created_at,
        };
        let fail = |reason: &str| {
            AuditEvent::failure("token.refresh", reason, &ctx, now)
                .user(user.id)
                .email(&user.email)
                .meta("sessionId", s.session_id.to_string())
        };
        let ended = if s.session_revoked {
            Some("Session ended")
        } else if s.session_expires_at <= now {
            Some("Session expired")
        } else {
            None
        };
        if let Some(reason) = ended {
            tx.record(fail(reason)).await?;
            tx.commit().await?;
            return Err(refused().into());
        }
        let child = state.refresh_chain.child(&token);

        // The common case, in one statement: the token is live, rotate it.
        // Sliding expiry, capped by the session's absolute limit.
        let mut expires_at = now + crate::clock::span(state.config.refresh_token_expiry);
        if let Some(max_age) = state.config.session_max_age {
            expires_at = expires_at.min(s.session_created_at + crate::clock::span(max_age));
        }
        if store::sessions::rotate_if_live(&mut tx, &token.hash(), &child.hash(), now, expires_at).await? {
            let pair = token_pair(state, &user, s.session_id, &child, now)?;
            tx.record(
                AuditEvent::success("token.refresh", &ctx, now)
                    .user(user.id)
                    .email(&user.email)
                    .meta("sessionId", s.session_id.to_string()),
            )
            .await?;
            record_token_events(
                &mut tx,
                &ctx,
                &user,
                s.session_id,
                "refresh",
                &["access", "refresh"],
                state,
                now,
            )
            .await?;
            tx.commit().await?;
            return Ok(Json(pair));
        }

        // Not live: expired, or presented again after its rotation.
        let t = store::sessions::find_token_state(&mut tx, &token.hash())
            .await?
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a locked session lost its token")))?;
        let Some(rotated_at) = t.rotated_at.filter(|_| t.expires_at > now) else {
            let reason = if t.expires_at <= now {
                "Refresh token expired"
            } else {
                "Session ended"
            };
            tx.record(fail(reason)).await?;
            tx.commit().await?;
            return Err(refused().into());
        };
        // Within the interval, and while its child is still the live token,
        // it is a race between tabs: answer the same child.
        let interval = crate::clock::span(state.config.refresh_reuse_interval);
        let live_child = store::sessions::find_child(&mut tx, t.token_id).await?;
        let same_child = live_child.is_some_and(|c| c.live && c.token_hash == child.hash());
        if !interval.is_zero() && now - rotated_at <= interval && same_child {
            store::sessions::touch(&mut tx, s.session_id, now).await?;
            let pair = token_pair(state, &user, s.session_id, &child, now)?;
            tx.record(
                AuditEvent::success("token.refresh", &ctx, now)
                    .user(user.id)
                    .email(&user.email)
                    .meta("sessionId", s.session_id.to_string())
                    .meta("withinReuseInterval", true),
            )
            .await?;
            record_token_events(&mut tx, &ctx, &user, s.session_id, "refresh", &["access"], state, now).await?;
            tx.commit().await?;
            return Ok(Json(pair));
        }
        store::sessions::revoke(&mut tx, s.session_id, RevokeReason::ReuseDetected, now).await?;
        tx.record(
            AuditEvent::failure("token.reuse_detected", "Refresh token reused", &ctx, now)
                .user(user.id)
                .email(&user.email)
                .meta("sessionId", s.session_id.to_string())
                .meta("rotatedSecondsAgo", (now - rotated_at).whole_seconds()),
        )
        .await?;
        tx.record(fail("Refresh token reused")).await?;
        tx.commit().await?;
        Err(refused().into())
    }

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
    async fn logout(
        &self,
        req: &Request,
        body: Json<LogoutRequest>,
    ) -> Result<Json<SuccessResponse>, Errors<LogoutErrors>> {
        let ctx = request_context(req, &self.state);
        let now = self.state.clock.now();
        let mut tx = AuditTx::begin(&self.state.db, &self.state.audit).await?;
        let owner = match RefreshToken::parse(body.refresh_token.as_str()) {
            Some(token) => store::sessions::lock_by_token_hash(&mut tx, &token.hash()).await?,
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

/// The page behind `GET /auth/verify-magic-link` and `GET /auth/verify`.
pub fn magic_link_page(state: &AppState, token: Option<&str>) -> PageResponse {
    let nonce = random_token();
    let body = match token.filter(|t| crate::auth::is_token_shaped(t)) {
        Some(token) => format!(
            r#"<h1>Sign in</h1><p>Press the button to finish signing in.</p>
<button id="go">Sign in</button><p id="msg" role="status"></p>
<script nonce="{nonce}">
document.getElementById('go').addEventListener('click', async function () {{
  this.disabled = true;
  const msg = document.getElementById('msg');
  try {{
    const r = await fetch('/auth/verify-magic-link', {{
      method: 'POST', headers: {{ 'content-type': 'application/json' }},
      body: JSON.stringify({{ token: '{token}' }})
    }});
    const b = await r.json();
    if (!r.ok) {{ msg.textContent = 'This link is invalid, used or expired. Ask for a new one.'; return; }}
    msg.textContent = 'You are signed in.';
    const f = new URLSearchParams({{ access_token: b.token, refresh_token: b.refreshToken, token_type: 'bearer', expires_in: String(b.expiresIn) }});
    location.replace({frontend} + '#' + f.toString());
  }} catch (e) {{ msg.textContent = 'Could not reach the server. Try again.'; this.disabled = false; }}
}});
</script>"#,
            frontend = serde_json::Value::String(state.config.frontend_url.to_string()),
        ),
        None => "<h1>Sign in</h1><p>This link is incomplete. Open the full link from your email.</p>".to_owned(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Sign in</title><style>body{{font-family:system-ui,sans-serif;max-width:28em;margin:3em auto}}\
         button{{font-size:1.1em;padding:.5em 1.5em}}</style></head><body>{body}</body></html>"
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    PageResponse::Page(Html(html), csp, "no-referrer".to_owned(), "no-store".to_owned())
}

/// Whether `email` may receive a sign-in message: always, unless
/// `ALLOW_SIGNUP=false` and the address has no account.
async fn may_sign_in(state: &AppState, email: &EmailAddress) -> Result<bool, ApiError> {
    if state.config.allow_signup {
        return Ok(true);
    }
    let mut conn = state.db.acquire().await?;
    Ok(store::users::exists(&mut conn, email).await?)
}

/// What an email carries: the id of its code or link.
enum Sent {
    Code(Uuid),
    Link(Uuid),
}

/// Sends `message` and records `otp.sent` / `magic_link.sent` either way. On
/// failure the code or link is made unusable and the client gets 502.
async fn deliver(
    state: &AppState,
    ctx: &RequestContext,
    email: &EmailAddress,
    message: &crate::email::Message,
    sent: Sent,
) -> Result<(), ApiError> {
    let event = match sent {
        Sent::Code(_) => "otp.sent",
        Sent::Link(_) => "magic_link.sent",
    };
    match state.mailer.send(message).await {
        Ok(()) => {
            let now = state.clock.now();
            audit::record_alone(
                &state.db,
                &state.audit,
                AuditEvent::success(event, ctx, now).email(email.as_str()),
            )
            .await?;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, event, "email delivery failed");
            let now = state.clock.now();
            let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
            match sent {
                Sent::Code(id) => store::otp::consume(&mut tx, id, now).await?,
                Sent::Link(id) => store::magic_links::consume(&mut tx, id, now).await?,
            }
            tx.record(AuditEvent::failure(event, e.to_string(), ctx, now).email(email.as_str()))
                .await?;
            tx.commit().await?;
            Err(ApiError::email_failed())
        }
    }
}

/// Creates (or finds) the user, starts a session with its first refresh token,
/// signs an access token, and records `auth.login` and `token.generated`.
async fn start_session(
    tx: &mut AuditTx,
    state: &AppState,
    ctx: &RequestContext,
    email: &EmailAddress,
    method: &'static str,
    now: OffsetDateTime,
) -> Result<TokenPair, ApiError> {
    let config = &state.config;
    let user = store::users::upsert_on_login(tx, email, now).await?;
    let refresh = RefreshToken::generate();
    let lifetime = match config.session_max_age {
        Some(max) => config.refresh_token_expiry.min(max),
        None => config.refresh_token_expiry,
    };
    let session_id = store::sessions::create(
        tx,
        user.id,
        &refresh.hash(),
        now,
        now + crate::clock::span(lifetime),
        ctx.user_agent.as_deref(),
        ctx.ip,
    )
    .await?;
    tx.record(
        AuditEvent::success("auth.login", ctx, now)
            .user(user.id)
            .email(&user.email)
            .meta("method", method)
            .meta("sessionId", session_id.to_string()),
    )
    .await?;
    record_token_events(tx, ctx, &user, session_id, method, &["access", "refresh"], state, now).await?;
    token_pair(state, &user, session_id, &refresh, now)
}

/// Records one `token.generated` per kind (`access`, `refresh`).
#[expect(clippy::too_many_arguments, reason = "the event's fields, named")]
async fn record_token_events(
    tx: &mut AuditTx,
    ctx: &RequestContext,
    user: &store::users::User,
    session_id: Uuid,
    source: &'static str,
    kinds: &[&'static str],
    state: &AppState,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let config = &state.config;
    for kind in kinds {
        let ttl = if *kind == "access" {
            config.access_token_expiry
        } else {
            config.refresh_token_expiry
        };
        tx.record(
            AuditEvent::success("token.generated", ctx, now)
                .user(user.id)
                .email(&user.email)
                .meta("tokenType", *kind)
                .meta("source", source)
                .meta("expiresIn", crate::config::compact_duration(ttl))
                .meta("sessionId", session_id.to_string()),
        )
        .await?;
    }
    Ok(())
}

/// A fresh access token with `refresh`, as the API answers them.
fn token_pair(
    state: &AppState,
    user: &store::users::User,
    session_id: Uuid,
    refresh: &RefreshToken,
    now: OffsetDateTime,
) -> Result<TokenPair, ApiError> {
    let ttl = state.config.access_token_expiry;
    let access = state
        .jwt
        .issue(user.id, &user.email, session_id, now, ttl)
        .map_err(ApiError::internal)?;
    Ok(TokenPair {
        success: true,
        token: access.token,
        refresh_token: refresh.expose().to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: ttl.as_secs(),
        user: user.clone().into(),
    })
}

/// Hashes a code on the bounded hash queue.
async fn hash_code(state: &AppState, code: OtpCode) -> Result<String, ApiError> {
    let hasher = state.otp.clone();
    state
        .hash_queue
        .run(move || hasher.hash(&code))
        .await
        .map_err(|_| ApiError::overloaded())?
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing a code: {e}")))
}

/// Checks a code against its hash on the bounded hash queue.
async fn verify_code_hash(state: &AppState, code: OtpCode, phc: String) -> Result<bool, ApiError> {
    let hasher = state.otp.clone();
    state
        .hash_queue
        .run(move || hasher.verify(&code, &phc))
        .await
        .map_err(|_| ApiError::overloaded())
}

/// Costs what a real check costs, for addresses with no live code.
async fn dummy_verify(state: &AppState) -> Result<(), ApiError> {
    let hasher = state.otp.clone();
    state
        .hash_queue
        .run(move || hasher.verify_dummy())
        .await
        .map_err(|_| ApiError::overloaded())
}

impl Example for SendCodeRequest {
    fn example() -> Self {
        Self {
            email: Text("ada@example.com".to_owned()),
        }
    }
}

impl Example for SendMagicLinkRequest {
    fn example() -> Self {
        Self {
            email: Text("ada@example.com".to_owned()),
            redirect_to: Some(Text("https://app.example.com/welcome".to_owned())),
        }
    }
}

impl Example for SendResponse {
    fn example() -> Self {
        Self {
            success: true,
            message: SENT_MESSAGE.to_owned(),
        }
    }
}

impl Example for VerifyCodeRequest {
    fn example() -> Self {
        Self {
            email: Text("ada@example.com".to_owned()),
            code: Text("123456".to_owned()),
        }
    }
}

impl Example for VerifyMagicLinkRequest {
    fn example() -> Self {
        Self {
            token: Text("q3Zr9yV0mJ8bK2xW7tH5nL1cP4sD6fG0aE9uR3iO8kY".to_owned()),
        }
    }
}

impl Example for LogoutRequest {
    fn example() -> Self {
        Self {
            refresh_token: Text("B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq".to_owned()),
        }
    }
}

impl Example for TokenPair {
    fn example() -> Self {
        Self {
            success: true,
            token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI…".to_owned(),
            refresh_token: "B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq".to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: 3600,
            user: UserBody {
                id: Uuid::nil(),
                email: "ada@example.com".to_owned(),
                created_at: OffsetDateTime::UNIX_EPOCH,
            },
        }
    }
}

impl Example for RefreshRequest {
    fn example() -> Self {
        Self {
            refresh_token: Text("B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq".to_owned()),
        }
    }
}
