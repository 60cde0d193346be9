//! The one error envelope: `{"success": false, "error": "<message>", "code": "<code>"}`.
//!
//! Handlers return [`ApiError`], an `ApiResponse` enum, so every error status is
//! in the OpenAPI document with the [`ErrorBody`] schema. Errors poem and
//! poem-openapi raise before a handler runs (bad JSON, missing fields, unknown
//! routes, wrong methods, wrong content types) are rewritten into the same body
//! by [`render`]. Clients get a stable `code`; the cause chain of a 500 or 503
//! goes to the log once, never to the client.

use poem::{
    Response,
    error::{MethodNotAllowedError, NotFoundError},
    http::{StatusCode, header},
};
use std::marker::PhantomData;

use poem_openapi::{
    ApiResponse, Object,
    error::{AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError},
    payload::Json,
    registry::{MetaResponses, Registry},
};

use crate::rate_limit::LimitError;

/// The body of every error response.
#[derive(Object, Debug, Clone, PartialEq, Eq)]
#[oai(example)]
pub struct ErrorBody {
    /// Always `false`.
    pub success: bool,
    /// A human-readable message; wording may change.
    pub error: String,
    /// A stable machine-readable code, e.g. `invalid_request`, `rate_limited`.
    pub code: String,
}

impl ErrorBody {
    pub fn new(code: &str, error: impl Into<String>) -> Self {
        Self {
            success: false,
            error: error.into(),
            code: code.to_owned(),
        }
    }
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        Self::new(
            "invalid_request",
            "a required field in SendCodeRequest is missing or null",
        )
    }
}

/// The body of a 429: the error envelope, plus which limit and when to retry.
#[derive(Object, Debug, Clone, PartialEq, Eq)]
#[oai(rename_all = "camelCase")]
pub struct RateLimitedBody {
    /// Always `false`.
    pub success: bool,
    /// What the limit is and when to retry.
    pub error: String,
    /// `rate_limited`.
    pub code: String,
    /// Which limit, e.g. `send_per_address_interval`.
    pub limit: String,
    /// Seconds until the request will be allowed again (also in `Retry-After`).
    pub retry_after: u64,
}

/// Every error an operation can answer with.
#[derive(ApiResponse, Debug)]
pub enum ApiError {
    /// The request is malformed: not JSON, a missing or mistyped field, or an invalid value.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, invalid or expired credentials.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// Always `Bearer`.
        #[oai(header = "WWW-Authenticate")]
        String,
    ),
    /// The resource does not exist (or is not the caller's).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The body did not arrive within `REQUEST_BODY_TIMEOUT` (`request_timeout`);
    /// the connection is closed.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// The body is larger than 64 KiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json`.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A rate limit was hit; retry after the given number of seconds.
    #[oai(status = 429)]
    RateLimited(
        Json<RateLimitedBody>,
        /// Seconds until the limit allows the request again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// An unexpected server error; details are in the server log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// The email could not be delivered (`email_failed`); nothing usable was issued.
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// The database is unreachable (`database_unavailable`) or the server is
    /// shedding load (`overloaded`); retry shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl ApiError {
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::BadRequest(Json(ErrorBody::new(code, message)))
    }

    pub fn unauthorized(code: &str, message: impl Into<String>) -> Self {
        // RFC 6750 §3: say why a presented bearer token was refused.
        let challenge = if code == "invalid_token" {
            r#"Bearer error="invalid_token""#
        } else {
            "Bearer"
        };
        Self::Unauthorized(Json(ErrorBody::new(code, message)), challenge.to_owned())
    }

    pub fn rate_limited(limit: &str, message: &str, retry_after: u64) -> Self {
        Self::RateLimited(
            Json(RateLimitedBody {
                success: false,
                error: message.to_owned(),
                code: "rate_limited".to_owned(),
                limit: limit.to_owned(),
                retry_after,
            }),
            retry_after,
        )
    }

    pub fn email_failed() -> Self {
        Self::BadGateway(Json(ErrorBody::new(
            "email_failed",
            "the email could not be sent; try again later",
        )))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(Json(ErrorBody::new("not_found", message)))
    }

    /// A failure the client cannot fix; logged here, once, with its cause chain.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        tracing::error!(error = format!("{err:#}"), "internal error");
        Self::Internal(Json(ErrorBody::new("internal_error", "internal server error")))
    }

    /// Too much work queued (code hashing); the client should retry shortly.
    pub fn overloaded() -> Self {
        tracing::warn!("shedding load: the code-hashing queue is full");
        Self::Unavailable(Json(ErrorBody::new("overloaded", "the server is busy; retry shortly")))
    }

    /// The database could not be reached; logged here with its cause.
    pub fn database_unavailable(err: &sqlx::Error) -> Self {
        tracing::warn!(error = %err, "database unavailable");
        Self::Unavailable(Json(ErrorBody::new(
            "database_unavailable",
            "the database is unavailable; retry shortly",
        )))
    }
}

/// The error statuses one operation can answer with: what its entry in the
/// OpenAPI document lists (the fuzzing checks that it answers no other).
pub trait ErrorSet: Send + Sync + 'static {
    const STATUSES: &'static [u16];
}

/// An [`ApiError`], documented with only the statuses of `S`.
pub struct Errors<S: ErrorSet>(pub ApiError, PhantomData<S>);

impl<S: ErrorSet> std::fmt::Debug for Errors<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: ErrorSet> From<ApiError> for Errors<S> {
    fn from(err: ApiError) -> Self {
        Self(err, PhantomData)
    }
}

impl<S: ErrorSet> From<sqlx::Error> for Errors<S> {
    fn from(err: sqlx::Error) -> Self {
        Self(err.into(), PhantomData)
    }
}

impl<S: ErrorSet> From<Errors<S>> for poem::Error {
    fn from(err: Errors<S>) -> Self {
        err.0.into()
    }
}

impl<S: ErrorSet> poem::IntoResponse for Errors<S> {
    fn into_response(self) -> Response {
        poem::Error::from(self.0).into_response()
    }
}

impl<S: ErrorSet> ApiResponse for Errors<S> {
    fn meta() -> MetaResponses {
        let mut meta = ApiError::meta();
        meta.responses
            .retain(|r| r.status.is_some_and(|s| S::STATUSES.contains(&s)));
        meta
    }

    fn register(registry: &mut Registry) {
        ApiError::register(registry);
    }
}

macro_rules! error_sets {
    ($($(#[$doc:meta])* $name:ident = [$($status:literal),+];)+) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl ErrorSet for $name {
                const STATUSES: &'static [u16] = &[$($status),+];
            }
        )+
    };
}

// Any request with a body can get 400 (not JSON), 408 (too slow) and 413 (too
// large) from the body checks; every operation that uses the database can get
// 500 and 503.
error_sets! {
    /// Sending a code or a link.
    SendErrors = [400, 408, 413, 415, 429, 500, 502, 503];
    /// Exchanging a code, a link or a refresh token for tokens.
    VerifyErrors = [400, 401, 408, 413, 415, 429, 500, 503];
    /// Logging out with a refresh token.
    LogoutErrors = [400, 408, 413, 415, 500, 503];
    /// Operations behind the bearer token.
    BearerErrors = [400, 401, 408, 413, 500, 503];
    /// Ending one session by id.
    DeleteSessionErrors = [400, 401, 404, 408, 413, 500, 503];
}

impl<S: ErrorSet> From<LimitError> for Errors<S> {
    fn from(err: LimitError) -> Self {
        Self(err.into(), PhantomData)
    }
}

impl From<LimitError> for ApiError {
    /// Over a limit: 429 `rate_limited` with `Retry-After`.
    fn from(err: LimitError) -> Self {
        match err {
            LimitError::Exceeded {
                limit,
                retry_after,
                message,
            } => Self::rate_limited(limit.name(), &message, retry_after),
            LimitError::Database(err) => err.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if is_connection_error(&err) {
            Self::database_unavailable(&err)
        } else {
            Self::internal(err)
        }
    }
}

/// Whether a database error means "unreachable" (503) rather than a bug (500).
pub fn is_connection_error(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: admin shutdown, crash
            // shutdown, cannot connect now; 53300: too many connections;
            // 55000: database does not allow connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "55000"
        }),
        _ => false,
    }
}

/// Rewrites any error that reached the edge of the app into the SPEC body.
pub fn render(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Already an ApiError (or another typed response): keep it as it is.
        return err.into_response();
    }
    let (status, code, message) = classify(&err);
    if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
    }
    let mut resp = error_response(status, code, &message);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, poem::http::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// A response with the SPEC error body, for the places outside typed handlers.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "success": false, "error": message, "code": code });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body.to_string())
}

fn classify(err: &poem::Error) -> (StatusCode, &'static str, String) {
    if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        return (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            describe_payload_error(&e.reason),
        );
    }
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        return (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid parameter `{}`: {}", e.name, e.reason),
        );
    }
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        return (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid path segment `{}`", e.name),
        );
    }
    if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        let message = match e {
            ContentTypeError::NotSupported { .. } => "the body must be sent as `Content-Type: application/json`",
            ContentTypeError::ExpectContentType => "the `Content-Type: application/json` header is required",
        };
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message.to_owned(),
        );
    }
    if err.is::<AuthorizationError>() {
        return (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "a bearer access token is required".to_owned(),
        );
    }
    if err.is::<NotFoundError>() {
        return (StatusCode::NOT_FOUND, "not_found", "no such route".to_owned());
    }
    if err.is::<MethodNotAllowedError>() {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        );
    }
    let status = err.status();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            status,
            "payload_too_large",
            "the request body is larger than 64 KiB".to_owned(),
        ),
        StatusCode::NOT_FOUND => (status, "not_found", "not found".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            status,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, "unsupported_media_type", "unsupported content type".to_owned()),
        StatusCode::UNAUTHORIZED => (status, "invalid_token", "a valid bearer token is required".to_owned()),
        s if s.is_client_error() => (s, "bad_request", "the request is invalid".to_owned()),
        s if s == StatusCode::SERVICE_UNAVAILABLE => {
            (s, "unavailable", "the service is unavailable; retry shortly".to_owned())
        }
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error".to_owned(),
        ),
    }
}

/// Turns poem-openapi's parse messages into one a client developer can act on,
/// without echoing the submitted values back.
fn describe_payload_error(reason: &str) -> String {
    // The messages look like `Type "string" expects an input value. (occurred
    // while parsing "LogoutRequest")` or `Expected input type "string", found 5.`.
    let quoted: Vec<&str> = reason.split('"').skip(1).step_by(2).collect();
    let within = match quoted.last() {
        Some(outer) if quoted.len() > 1 => format!(" in {outer}"),
        _ => String::new(),
    };
    if reason.contains("expects an input value") {
        return format!("a required field{within} is missing or null");
    }
    if reason.starts_with("Expected input type") {
        let ty = quoted.first().copied().unwrap_or("object");
        if quoted.len() > 1 {
            return format!("a field{within} has the wrong type: expected {ty}");
        }
        return format!("expected a JSON {ty}");
    }
    if let Some(field) = reason.split("unknown field `").nth(1).and_then(|s| s.split('`').next()) {
        let field: String = field.chars().take(64).collect();
        return format!("unknown field `{field}`{within}");
    }
    format!("a field{within} has an invalid value")
}
