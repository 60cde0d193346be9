//! The steps the sign-in flows share: checking the address, counting the
//! request against its limits, delivering the email, and starting a session
//! with its first token pair.

use std::time::Instant;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    bodies::TokenPair,
    types::{Email, EmailShape, Shape as _},
};
use crate::{
    audit::{AuditEvent, AuditTx, Event, RequestContext, record_alone},
    auth::{email_address::EmailAddress, ids::SessionId, refresh::RefreshToken, session::session_expiry},
    config::compact_duration,
    email::Message,
    error::{ApiError, ErrorCode},
    rate_limit::{Key, Limit},
    state::AppState,
    store::{self, users::User},
};

/// The address of a request body, trimmed and lower-cased; 400 `invalid_email` if implausible.
pub fn parse_email(raw: &Email) -> Result<EmailAddress, ApiError> {
    // Exactly the documented shape (`EmailShape`), which `EmailAddress` trims.
    EmailShape::fits(raw.as_str())
        .then(|| EmailAddress::parse(raw.as_str()))
        .flatten()
        .ok_or_else(|| ErrorCode::InvalidEmail.into())
}

/// Counts the request against `checks`, all or nothing; 429 when a limit is over.
pub async fn limit(
    state: &AppState,
    ctx: &RequestContext,
    checks: &[(Limit, Key)],
    email: Option<&EmailAddress>,
) -> Result<(), ApiError> {
    Ok(state
        .limiter
        .check(ctx, checks, email.map(EmailAddress::as_str))
        .await?)
}

/// Why a sign-in message is withheld from an address (the `error` of
/// `otp.withheld` and `magic_link.withheld`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `ALLOW_SIGNUP=false` and the address has no account.
    NoAccount,
    /// The address's user is disabled.
    Disabled,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoAccount => "No account (sign-up closed)",
            Self::Disabled => "User disabled",
        }
    }
}

/// Whether `email` may not receive a sign-in message, and why: its user is
/// disabled, or `ALLOW_SIGNUP=false` and the address has no account. Asked
/// inside the send's transaction, so every answer takes the same steps up to
/// the mailer.
pub async fn refusal(
    conn: &mut PgConnection,
    state: &AppState,
    email: &EmailAddress,
) -> Result<Option<Refusal>, ApiError> {
    Ok(match store::users::is_disabled(conn, email).await? {
        Some(true) => Some(Refusal::Disabled),
        Some(false) => None,
        None => (!state.config.login.allow_signup).then_some(Refusal::NoAccount),
    })
}

/// What an email carries: the id of its code or link.
pub enum Sent {
    Code(Uuid),
    Link(Uuid),
}

/// Sends `message` and records `otp.sent` / `magic_link.sent` either way. On
/// failure the code or link is made unusable and the client gets 502.
pub async fn deliver(
    state: &AppState,
    ctx: &RequestContext,
    email: &EmailAddress,
    message: &Message,
    sent: Sent,
) -> Result<(), ApiError> {
    let event = match sent {
        Sent::Code(_) => Event::OtpSent,
        Sent::Link(_) => Event::MagicLinkSent,
    };
    let started = Instant::now();
    let e = match state.mailer.send(message).await {
        Ok(delivery) => {
            let mut done = AuditEvent::success(event, ctx, state.clock.now())
                .email(email.as_str())
                .meta("attempts", delivery.attempts);
            if let Some(code) = delivery.reply_code {
                done = done.meta("replyCode", code);
            }
            record_alone(&state.db, &state.audit, done).await?;
            state.mailer.note_delivery(started.elapsed());
            return Ok(());
        }
        Err(e) => e,
    };
    // The error is redacted: the reply code and the server's words, no address.
    tracing::warn!(code = e.code(), error = %e, event = event.as_str(), "email delivery failed");
    let now = state.clock.now();
    let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
    match sent {
        Sent::Code(id) => store::otp::consume(&mut tx, id, now).await?,
        Sent::Link(id) => store::magic_links::consume(&mut tx, id, now).await?,
    }
    let mut failed = AuditEvent::failure(event, e.to_string(), ctx, now)
        .email(email.as_str())
        .meta("attempts", e.attempts());
    if let Some(code) = e.code() {
        failed = failed.meta("replyCode", code);
    }
    tx.record(failed).await?;
    tx.commit().await?;
    Err(ErrorCode::EmailFailed.into())
}

/// A sign-in message withheld (see [`Refusal`]).
#[derive(Debug, Clone, Copy)]
pub enum Withheld {
    Code,
    Link,
}

/// Ends a send to an address that may not sign in in the steps of a real one,
/// storing and sending nothing: records `otp.withheld` / `magic_link.withheld`
/// in `tx` (where a real send records its `*.generated`) and commits, waits as
/// long as a delivery step takes, then counts on `/metrics` the `*.sent` a
/// delivery would have. `/metrics` counts the withheld event as `*.generated`
/// (see `metrics::as_counted`), so its counters move as for an account; the
/// audit trail says what happened.
pub async fn withhold(
    mut tx: AuditTx,
    state: &AppState,
    ctx: &RequestContext,
    email: &EmailAddress,
    withheld: Withheld,
    why: Refusal,
) -> Result<(), ApiError> {
    let (event, sent) = match withheld {
        Withheld::Code => (Event::OtpWithheld, Event::OtpSent),
        Withheld::Link => (Event::MagicLinkWithheld, Event::MagicLinkSent),
    };
    tx.record(
        AuditEvent::failure(event, why.reason(), ctx, state.clock.now())
            .email(email.as_str())
            .meta("emailDomain", email.domain()),
    )
    .await?;
    tx.commit().await?;
    state.mailer.imitate_send().await;
    state.metrics.event(sent.as_str(), true);
    Ok(())
}

/// How a session's tokens came to be: the `method` of `auth.login` and the
/// `source` of `token.generated`.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Otp,
    MagicLink,
    Refresh,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Otp => "otp",
            Self::MagicLink => "magic-link",
            Self::Refresh => "refresh",
        }
    }
}

/// A kind of token, as `token.generated` names it.
#[derive(Debug, Clone, Copy)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// A user's session, as the token events describe it.
#[derive(Debug, Clone, Copy)]
pub struct SessionOf<'a> {
    pub user: &'a User,
    pub session_id: SessionId,
    /// When the session ends unless refreshed: its refresh token's real lifetime,
    /// which `SESSION_MAX_AGE` may cut short of `REFRESH_TOKEN_EXPIRY`.
    pub expires_at: OffsetDateTime,
}

/// Creates (or finds) the user, starts a session with its first refresh token,
/// signs an access token, and records `user.created` (on a first sign-in),
/// `auth.login` and `token.generated`.
pub async fn start_session(
    tx: &mut AuditTx,
    state: &AppState,
    ctx: &RequestContext,
    email: &EmailAddress,
    source: Source,
    now: OffsetDateTime,
) -> Result<TokenPair, ApiError> {
    let config = &state.config;
    let Some((user, created)) = store::users::upsert_on_login(tx, email, now).await? else {
        // Disabled since the code or link was sent: the generic refusal.
        tracing::info!("sign-in refused: the user is disabled");
        return Err(match source {
            Source::MagicLink => ErrorCode::InvalidLink,
            Source::Otp | Source::Refresh => ErrorCode::InvalidCode,
        }
        .into());
    };
    if created {
        tx.record(
            AuditEvent::success(Event::UserCreated, ctx, now)
                .user(user.id)
                .email(&user.email)
                .meta("method", source.as_str()),
        )
        .await?;
    }
    let refresh = RefreshToken::generate();
    let expires_at = session_expiry(
        now,
        now,
        crate::clock::span(config.tokens.refresh_token_expiry),
        config.tokens.session_max_age.map(crate::clock::span),
    );
    let (ua, ip) = (ctx.user_agent.as_deref(), ctx.ip);
    let session_id = store::sessions::create(tx, user.id, &refresh.hash(), now, expires_at, ua, ip).await?;
    tx.record(
        AuditEvent::success(Event::AuthLogin, ctx, now)
            .user(user.id)
            .email(&user.email)
            .meta("method", source.as_str())
            .meta("sessionId", session_id.to_string()),
    )
    .await?;
    let session = SessionOf {
        user: &user,
        session_id,
        expires_at,
    };
    record_tokens(
        tx,
        state,
        ctx,
        session,
        source,
        &[TokenKind::Access, TokenKind::Refresh],
        now,
    )
    .await?;
    token_pair(state, session, &refresh, now)
}

/// Records one `token.generated` per kind issued, each with the lifetime it really has.
pub async fn record_tokens(
    tx: &mut AuditTx,
    state: &AppState,
    ctx: &RequestContext,
    session: SessionOf<'_>,
    source: Source,
    kinds: &[TokenKind],
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    for event in token_events(state, ctx, session.expires_at, source, kinds, now) {
        tx.record(session.mark(event)).await?;
    }
    Ok(())
}

/// One `token.generated` per kind issued, before [`SessionOf::mark`] names
/// whose: a session ending at `expires_at` gives the refresh token's lifetime.
pub fn token_events(
    state: &AppState,
    ctx: &RequestContext,
    expires_at: OffsetDateTime,
    source: Source,
    kinds: &[TokenKind],
    now: OffsetDateTime,
) -> Vec<AuditEvent> {
    kinds
        .iter()
        .map(|kind| {
            let (name, ttl) = match kind {
                TokenKind::Access => ("access", state.config.tokens.access_token_expiry),
                TokenKind::Refresh => ("refresh", lifetime(expires_at, now)),
            };
            AuditEvent::success(Event::TokenGenerated, ctx, now)
                .meta("tokenType", name)
                .meta("source", source.as_str())
                .meta("expiresIn", compact_duration(ttl))
        })
        .collect()
}

impl SessionOf<'_> {
    /// `event` as of this session: its user, email and (last in the metadata) `sessionId`.
    pub fn mark(&self, event: AuditEvent) -> AuditEvent {
        event
            .user(self.user.id)
            .email(&self.user.email)
            .meta("sessionId", self.session_id.to_string())
    }
}

/// From `now` to `expires_at`, to the nearest second: a session's start is stored
/// to the microsecond, so its cap minus a later `now` may miss a whole number by a hair.
fn lifetime(expires_at: OffsetDateTime, now: OffsetDateTime) -> std::time::Duration {
    let millis = (expires_at - now).whole_milliseconds().max(0);
    std::time::Duration::from_secs(u64::try_from((millis + 500) / 1000).unwrap_or(u64::MAX))
}

/// A fresh access token with `refresh`, as the API answers them.
pub fn token_pair(
    state: &AppState,
    session: SessionOf<'_>,
    refresh: &RefreshToken,
    now: OffsetDateTime,
) -> Result<TokenPair, ApiError> {
    let ttl = state.config.tokens.access_token_expiry;
    let user = session.user;
    let access = state
        .jwt
        .issue(user.id, &user.email, session.session_id, now, ttl)
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
