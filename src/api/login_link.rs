//! Signing in with a magic link: `POST /auth/send-magic-link`,
//! `POST /auth/verify-magic-link`, and the page behind
//! `GET /auth/verify-magic-link` that POSTs the token when its button is pressed.

use poem::Request;
use poem_openapi::{Object, OpenApi, param::Query, payload::Json, types::Example};

use super::{
    ApiTags,
    bodies::{SendResponse, TokenPair, pick_locale},
    page::{PageResponse, PageSettings, magic_link_page},
    request_context,
    sign_in::{Sent, Source, Withheld, deliver, limit, parse_email, refusal, start_session, withhold},
    types::{Email, Locale, Optional, RedirectShape, RedirectUrl, Shape as _, Token},
};
use crate::{
    audit::{AuditEvent, AuditTx, Event},
    auth::{
        Reason,
        email_address::EmailAddress,
        is_token_shaped,
        login::{LinkRecord, link_verdict},
        magic_link::{self, RedirectError},
        random_token,
    },
    config::origin_of,
    error::{ApiError, ErrorCode, Errors, SendErrors, VerifyErrors},
    rate_limit::{self, Limit},
    state::AppState,
    store,
};

pub struct LoginLinkApi {
    pub state: AppState,
}

/// An address to send a magic link to.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
#[oai(example)]
pub struct SendMagicLinkRequest {
    /// The address; trimmed and lower-cased. A value that is not an address
    /// is 400 `invalid_email`.
    pub email: Email,
    /// Where the link should lead instead of `FRONTEND_URL/auth/verify`: an
    /// absolute http(s) URL whose origin is on `REDIRECT_ALLOW_LIST` (empty by
    /// default, so that any `redirectTo` is then 400 `invalid_redirect`).
    pub redirect_to: Optional<RedirectUrl>,
    /// The language of the email and of the sign-in page, a BCP 47 tag (`de`,
    /// `pt-BR`); without it, `Accept-Language` decides, then
    /// `EMAIL_DEFAULT_LOCALE`. A tag without templates falls back to its
    /// shorter form (`pt-BR` → `pt`), then the default. A link in another
    /// language than the default carries it as `lang=<tag>`.
    pub locale: Optional<Locale>,
}

/// The token from a magic link.
#[derive(Object, Debug)]
#[oai(example)]
pub struct VerifyMagicLinkRequest {
    /// The `token` query parameter of the link.
    pub token: Token,
}

#[OpenApi]
impl LoginLinkApi {
    /// Send a magic link by email.
    ///
    /// The link points at `FRONTEND_URL/auth/verify?token=…`, or at `redirectTo`
    /// when its origin is on `REDIRECT_ALLOW_LIST` (anything else is 400
    /// `invalid_redirect`, never an open redirect). Answers the same 200 whether
    /// or not the address has an account. `locale` chooses the language of the
    /// email and of the sign-in page, as for `send_code`.
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
        let locale = pick_locale(state, req, body.locale.as_ref())?;
        let config = &state.config;
        let token = random_token();
        let redirect_to = body.redirect_to.as_ref().map(RedirectUrl::as_str);
        if redirect_to.is_some_and(|r| !RedirectShape::fits(r)) {
            return Err(ApiError::new(ErrorCode::InvalidRedirect, redirect_message(&RedirectError::NotAUrl)).into());
        }
        let target = magic_link::target(
            &config.login.frontend_url,
            &config.login.redirect_allow_list,
            redirect_to,
        )
        .map_err(|e| ApiError::new(ErrorCode::InvalidRedirect, redirect_message(&e)))?;
        // Store the parsed URL, never the raw input.
        let redirect_to = redirect_to.map(|_| target.as_str());
        let mut url = magic_link::with_token(&target, &token);
        if locale != state.mailer.templates().default_locale() {
            url.query_pairs_mut().append_pair("lang", &locale);
        }
        // Rendered before anything is stored: a template error stores no link.
        let message = state
            .mailer
            .templates()
            .magic_link(&locale, email.as_str(), url.as_str(), config.login.magic_link_expiry)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("rendering the link email: {e}")))?;
        limit(state, &ctx, &rate_limit::for_send(email.as_str(), &ctx), Some(&email)).await?;
        let hash = magic_link::hash(&token);
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        if let Some(why) = refusal(&mut tx, state, &email).await? {
            // The round trip that storing the link takes, storing nothing.
            store::magic_links::find_for_update(&mut tx, &hash).await?;
            withhold(tx, state, &ctx, &email, Withheld::Link, why).await?;
            return Ok(Json(SendResponse::sent()));
        }

        let now = state.clock.now();
        let expires_at = now + crate::clock::span(config.login.magic_link_expiry);
        let id = store::magic_links::insert(&mut tx, &email, &hash, redirect_to, now, expires_at).await?;
        let mut event = AuditEvent::success(Event::MagicLinkGenerated, &ctx, now)
            .email(email.as_str())
            .meta("emailDomain", email.domain());
        if redirect_to.is_some() {
            event = event.meta("redirectOrigin", origin_of(&url));
        }
        tx.record(event).await?;
        tx.commit().await?;

        deliver(state, &ctx, &email, &message, Sent::Link(id)).await?;
        Ok(Json(SendResponse::sent()))
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
        limit(
            state,
            &ctx,
            &rate_limit::for_client(Limit::VerifyPerIpMinute, &ctx),
            None,
        )
        .await?;
        let mut tx = AuditTx::begin(&state.db, &state.audit).await?;
        let stored = match is_token_shaped(token) {
            true => store::magic_links::find_for_update(&mut tx, &magic_link::hash(token)).await?,
            false => None,
        };
        let now = state.clock.now();
        let record = stored.as_ref().map(|l| LinkRecord {
            expires_at: l.expires_at,
            consumed: l.consumed_at.is_some(),
        });
        let verdict = link_verdict(record.as_ref(), now);
        let link = match (stored, verdict.reason()) {
            (Some(link), None) => link,
            (stored, reason) => {
                let reason = reason.unwrap_or(Reason::LinkNotFound);
                let mut event = AuditEvent::failure(Event::MagicLinkVerification, reason, &ctx, now);
                if let Some(link) = stored {
                    event = event.email(link.email);
                }
                tx.record(event).await?;
                tx.commit().await?;
                return Err(ApiError::from(ErrorCode::InvalidLink).into());
            }
        };
        let email = EmailAddress::parse(&link.email)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a stored magic link has an invalid address")))?;
        store::magic_links::consume(&mut tx, link.id, now).await?;
        tx.record(AuditEvent::success(Event::MagicLinkVerification, &ctx, now).email(email.as_str()))
            .await?;
        let pair = start_session(&mut tx, state, &ctx, &email, Source::MagicLink, now).await?;
        tx.commit().await?;
        Ok(Json(pair))
    }

    /// A page that signs in with a magic link when its button is pressed.
    ///
    /// For teams without a frontend route for the link: send links here with
    /// `redirectTo` (sesame's origin on `REDIRECT_ALLOW_LIST`); the page is
    /// also served at `/auth/verify`. Opening it does not use the link — mail
    /// scanners that prefetch URLs cannot burn it; the button POSTs the token
    /// to `/auth/verify-magic-link` and, on success, hands the tokens to
    /// `FRONTEND_URL` (the app, never sesame itself) in the URL fragment
    /// (`#access_token=…&refresh_token=…&token_type=bearer&expires_in=…`).
    #[oai(
        path = "/auth/verify-magic-link",
        method = "get",
        operation_id = "magic_link_page",
        tag = "ApiTags::Auth"
    )]
    async fn magic_link_page(
        &self,
        req: &Request,
        token: Query<Option<String>>,
        /// The page's language (`de`); the link carries it when the email was
        /// not in the default language. Without it, `Accept-Language` decides.
        lang: Query<Option<String>>,
    ) -> PageResponse {
        let config = &self.state.config;
        let settings = PageSettings {
            frontend_url: &config.login.frontend_url,
            app_name: &config.email.app_name,
            default_locale: &config.email.default_locale,
        };
        magic_link_page(
            &settings,
            token.0.as_deref(),
            lang.0.as_deref(),
            req.header("accept-language"),
        )
    }
}

fn redirect_message(e: &RedirectError) -> &'static str {
    match e {
        RedirectError::NotAUrl => "`redirectTo` must be an absolute http(s) URL",
        RedirectError::NotAllowed => "`redirectTo` is not on the allow list",
        RedirectError::TooLong => "`redirectTo` is longer than 2048 characters once percent-encoded",
    }
}

impl Example for SendMagicLinkRequest {
    fn example() -> Self {
        Self {
            email: Email::new("ada@example.com"),
            redirect_to: Optional(None),
            locale: Optional(Some(Locale::new("de"))),
        }
    }
}

impl Example for VerifyMagicLinkRequest {
    fn example() -> Self {
        Self {
            token: Token::new("q3Zr9yV0mJ8bK2xW7tH5nL1cP4sD6fG0aE9uR3iO8kY"),
        }
    }
}
