//! The one error envelope: `{"success": false, "error": "<message>", "code": "<code>"}`.
//!
//! Handlers return [`ApiError`], an `ApiResponse` enum, so every error status is
//! in the OpenAPI document with the [`ErrorBody`] schema. Errors poem and
//! poem-openapi raise before a handler runs (bad JSON, missing fields, unknown
//! routes, wrong methods, wrong content types) are rewritten into the same body
//! by [`render`]. Clients get a stable `code`; the cause chain of a 500 or 503
//! goes to the log once, never to the client.

mod code;
mod render;

use std::marker::PhantomData;

use poem::{Response, http::StatusCode};
use poem_openapi::{
    ApiResponse, Object,
    payload::Json,
    registry::{MetaResponses, Registry},
};

use crate::rate_limit::LimitError;
pub use code::ErrorCode;
pub use render::{error_response, render};

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
    pub fn new(code: ErrorCode, error: impl Into<String>) -> Self {
        Self {
            success: false,
            error: error.into(),
            code: code.as_str().to_owned(),
        }
    }
}

impl poem_openapi::types::Example for ErrorBody {
    fn example() -> Self {
        Self::new(
            ErrorCode::InvalidRequest,
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
    /// The resource already exists (`user_exists`).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
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
    /// An error with `code`, its status and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let body = Json(ErrorBody::new(code, message));
        match code.status() {
            StatusCode::UNAUTHORIZED => {
                // RFC 6750 §3: say why a presented bearer token was refused.
                let challenge = if code == ErrorCode::InvalidToken {
                    r#"Bearer error="invalid_token""#
                } else {
                    "Bearer"
                };
                Self::Unauthorized(body, challenge.to_owned())
            }
            StatusCode::NOT_FOUND => Self::NotFound(body),
            StatusCode::CONFLICT => Self::Conflict(body),
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout(body),
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(body),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(body),
            StatusCode::BAD_GATEWAY => Self::BadGateway(body),
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable(body),
            s if s.is_client_error() => Self::BadRequest(body),
            _ => Self::Internal(body),
        }
    }

    /// A 429 for `limit`, retryable after `retry_after` seconds.
    pub fn rate_limited(limit: &str, message: &str, retry_after: u64) -> Self {
        Self::RateLimited(
            Json(RateLimitedBody {
                success: false,
                error: message.to_owned(),
                code: ErrorCode::RateLimited.as_str().to_owned(),
                limit: limit.to_owned(),
                retry_after,
            }),
            retry_after,
        )
    }

    /// A failure the client cannot fix; logged here, once, with its cause chain.
    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        let err = err.into();
        tracing::error!(error = format!("{err:#}"), "internal error");
        ErrorCode::InternalError.into()
    }

    /// Too much work queued (code hashing); the client should retry shortly.
    pub fn overloaded() -> Self {
        tracing::warn!("shedding load: the code-hashing queue is full");
        ErrorCode::Overloaded.into()
    }

    /// The database could not be reached; logged here with its cause.
    pub fn database_unavailable(err: &sqlx::Error) -> Self {
        tracing::warn!(error = %err, "database unavailable");
        ErrorCode::DatabaseUnavailable.into()
    }
}

/// The error with the code's own message.
impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, code.message())
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
    LogoutErrors = [400, 408, 413, 415, 429, 500, 503];
    /// Operations behind the bearer token.
    BearerErrors = [400, 401, 408, 413, 429, 500, 503];
    /// Ending one session by id.
    DeleteSessionErrors = [400, 401, 404, 408, 413, 429, 500, 503];
    /// Admin API reads and changes behind the admin token (429: wrong tokens).
    AdminErrors = [400, 401, 408, 413, 429, 500, 503];
    /// Admin API operations on one user by id.
    AdminUserErrors = [400, 401, 404, 408, 413, 429, 500, 503];
    /// Creating a user through the admin API.
    AdminCreateErrors = [400, 401, 408, 409, 413, 415, 429, 500, 503];
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
            // 55000: database does not allow connections; 25006: read-only
            // transaction (a server that became a standby under us).
            code.starts_with("08") || code.starts_with("57P") || ["53300", "55000", "25006"].contains(&code.as_ref())
        }),
        _ => false,
    }
}
