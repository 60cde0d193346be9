//! Signing in with a one-time code: `POST /auth/send-code` and `POST /auth/verify-code`.
//!
//! Clients see one generic 401 for every refused code; the precise reason goes
//! to the audit event `otp.verification.detail`.

use poem::Request;
use poem_openapi::{Object, OpenApi, payload::Json, types::Example};
use time::OffsetDateTime;

use super::{
    ApiTags,
    bodies::{SendResponse, TokenPair, pick_locale},
    request_context,
    sign_in::{Sent, Source, Withheld, deliver, limit, parse_email, refusal, start_session, withhold},
    types::{Code, Email, Locale, Optional},
};
use crate::{
    audit::{AuditEvent, AuditTx, Event, RequestContext, timestamp},
    auth::{
        email_address::EmailAddress,
        login::{CodeCheck, CodeRecord, CodeVerdict, code_check, code_verdict},
        otp::OtpCode,
    },
    error::{ApiError, ErrorCode, Errors, SendErrors, VerifyErrors},
    rate_limit::{self, Limit},
    state::AppState,
    store::{self, otp::StoredCode},
};

pub struct LoginCodeApi {
    pub state: AppState,
}

/// An address to send a one-time code to.
#[derive(Object, Debug)]
#[oai(example)]
pub struct SendCodeRequest {
    /// The address; trimmed and lower-cased. A value that is not an address
    /// is 400 `invalid_email`.
    pub email: Email,
    /// The language of the email, a BCP 47 tag (`de`, `pt-BR`); without it,
    /// `Accept-Language` decides, then `EMAIL_DEFAULT_LOCALE`. A tag without
    /// templates falls back to its shorter form (`pt-BR` → `pt`), then the default.
    pub locale: Optional<Locale>,
}

/// A code received by email.
#[derive(Object, Debug)]
#[oai(example)]
pub struct VerifyCodeRequest {
    pub email: Email,
    /// The digits; spaces and dashes are ignored (`123 456`, `123-456`). A
    /// code of another length is answered 401 `invalid_code`, as a wrong one.
    pub code: Code,
}

#[OpenApi]
impl LoginCodeApi {
    /// Send a one-time code by email.
    ///
    /// Answers the same 200 whether or not the address has an account, in about
    /// the same time. A new code replaces the previous one, but the count of
    /// wrong tries does not start over within `OTP_EXPIRY`. The email is in
    /// the language of `locale`, else of `Accept-Language`, else
    /// `EMAIL_DEFAULT_LOCALE`; a `locale` that is not a language tag is 400
    /// `invalid_request`.
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
        let locale = pick_locale(state, req, body.locale.as_ref())?;
        limit(state, &ctx, &rate_limit::for_send(email.as_str(), &ctx), Some(&email)).await?;
        let config = &state.config;
        let code = OtpCode::generate(config.login.otp_length);
        // Rendered before anything is stored: a template error stores no code.
        let message = state
            .mailer
            .templates()
            .code(&locale, email.as_str(), code.expose(), config.login.otp_expiry)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("rendering the code email: {e}")))?;
        let hash = hash_code(state, code.clone()).await?;
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        if let Some(why) = refusal(&mut tx, state, &email).await? {
            // The round trip that storing the code takes, storing nothing.
            store::otp::find_for_update(&mut tx, &email).await?;
            withhold(tx, state, &ctx, &email, Withheld::Code, why).await?;
            return Ok(Json(SendResponse::sent()));
        }

        let now = state.clock.now();
        let expiry = crate::clock::span(config.login.otp_expiry);
        let id = store::otp::replace(&mut tx, &email, &hash, now, now + expiry, expiry).await?;
        tx.record(
            AuditEvent::success(Event::OtpGenerated, &ctx, now)
                .email(email.as_str())
                .meta("emailDomain", email.domain()),
        )
        .await?;
        tx.commit().await?;

        deliver(state, &ctx, &email, &message, Sent::Code(id)).await?;
        Ok(Json(SendResponse::sent()))
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
        let checks = rate_limit::for_client(Limit::VerifyPerIpMinute, &ctx);
        limit(state, &ctx, &checks, Some(&email)).await?;
        let typed = OtpCode::parse(body.code.as_str(), state.config.login.otp_length);

        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let stored = store::otp::find_for_update(&mut tx, &email).await?;
        let now = state.clock.now();
        let record = stored.as_ref().map(code_record);
        let max_attempts = state.config.login.otp_max_attempts;
        let check = code_check(record.as_ref(), now, max_attempts, typed.is_some());
        let matches = match (check, typed, &stored) {
            (CodeCheck::Compare, Some(code), Some(s)) => check_code(state, code, s.code_hash.clone()).await?,
            _ => imitate_check(state).await.map(|()| false)?,
        };
        let verdict = code_verdict(record.as_ref(), now, max_attempts, matches);
        let (CodeVerdict::Right, Some(stored)) = (verdict, &stored) else {
            refuse(&mut tx, &ctx, &email, verdict, stored.as_ref(), now).await?;
            tx.commit().await?;
            return Err(ApiError::from(ErrorCode::InvalidCode).into());
        };
        store::otp::consume(&mut tx, stored.id, now).await?;
        tx.record(AuditEvent::success(Event::OtpVerification, &ctx, now).email(email.as_str()))
            .await?;
        let pair = start_session(&mut tx, state, &ctx, &email, Source::Otp, now).await?;
        tx.commit().await?;
        Ok(Json(pair))
    }
}

/// What the verdict needs of a stored code.
fn code_record(s: &StoredCode) -> CodeRecord {
    CodeRecord {
        expires_at: s.expires_at,
        attempts: u32::try_from(s.attempts).unwrap_or(0),
        consumed: s.consumed_at.is_some(),
    }
}

/// Records a refused code: a wrong one counts as a try; the detail event
/// carries the reason, the tries so far and, for an expired code, its expiry.
async fn refuse(
    tx: &mut AuditTx,
    ctx: &RequestContext,
    email: &EmailAddress,
    verdict: CodeVerdict,
    stored: Option<&StoredCode>,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let reason = verdict.reason().unwrap_or(crate::auth::Reason::WrongCode);
    let mut detail = AuditEvent::failure(Event::OtpVerificationDetail, reason, ctx, now).email(email.as_str());
    let mut summary = AuditEvent::failure(Event::OtpVerification, reason, ctx, now).email(email.as_str());
    let attempts = match (verdict, stored) {
        (CodeVerdict::Wrong, Some(s)) => Some(store::otp::add_failed_attempt(tx, s.id).await?),
        (CodeVerdict::BudgetSpent, Some(s)) => Some(s.attempts),
        (CodeVerdict::Expired, Some(s)) => {
            detail = detail.meta("expiredAt", timestamp(s.expires_at));
            None
        }
        _ => None,
    };
    // Both events carry the tries so far, as the TypeScript design's failed
    // `otp.verification` does.
    if let Some(attempts) = attempts {
        detail = detail.meta("attempts", attempts);
        summary = summary.meta("attempts", attempts);
    }
    tx.record(detail).await?;
    tx.record(summary).await?;
    Ok(())
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
async fn check_code(state: &AppState, code: OtpCode, phc: String) -> Result<bool, ApiError> {
    let hasher = state.otp.clone();
    state
        .hash_queue
        .run(move || hasher.verify(&code, &phc))
        .await
        .map_err(|_| ApiError::overloaded())
}

/// Costs what a real check costs, when there is nothing to compare.
async fn imitate_check(state: &AppState) -> Result<(), ApiError> {
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
            email: Email::new("ada@example.com"),
            locale: Optional(Some(Locale::new("de"))),
        }
    }
}

impl Example for VerifyCodeRequest {
    fn example() -> Self {
        Self {
            email: Email::new("ada@example.com"),
            code: Code::new("123456"),
        }
    }
}
