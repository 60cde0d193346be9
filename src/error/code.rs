//! Every error code sesame answers with: its HTTP status and default message
//! in one place. `docs/API.md` and the README list the same codes (a test
//! compares them).

use poem::http::StatusCode;

/// The stable, machine-readable `code` of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not valid JSON, or repeats a key.
    InvalidJson,
    /// The body could not be read from the connection.
    InvalidBody,
    /// A field is missing, null, of the wrong type or invalid.
    InvalidRequest,
    /// Any other malformed request the framework refuses.
    BadRequest,
    /// `email` is not a plausible address.
    InvalidEmail,
    /// `redirectTo` is not an absolute http(s) URL on the allow list.
    InvalidRedirect,
    /// A one-time code was refused (one answer for every reason).
    InvalidCode,
    /// A magic link was refused (one answer for every reason).
    InvalidLink,
    /// A refresh token was refused (one answer for every reason).
    InvalidRefreshToken,
    /// The bearer access token is missing, invalid or expired.
    InvalidToken,
    /// The admin API was called while `ADMIN_TOKEN` is not set.
    AdminTokenRequired,
    /// The admin bearer token is missing or wrong.
    InvalidAdminToken,
    /// Unknown route, or a resource that is not the caller's.
    NotFound,
    /// Known route, wrong method.
    MethodNotAllowed,
    /// An admin API create for an address that already has a user.
    UserExists,
    /// The body did not arrive within `REQUEST_BODY_TIMEOUT`.
    RequestTimeout,
    /// The body is over 64 KiB.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// A rate limit was hit.
    RateLimited,
    /// A bug; details only in the server log.
    InternalError,
    /// The email could not be delivered.
    EmailFailed,
    /// The database is unreachable.
    DatabaseUnavailable,
    /// Too many codes wait to be hashed.
    Overloaded,
    /// Any other 503 the framework answers.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order of the documentation tables.
    pub const ALL: &'static [Self] = &[
        Self::InvalidJson,
        Self::InvalidBody,
        Self::InvalidRequest,
        Self::BadRequest,
        Self::InvalidEmail,
        Self::InvalidRedirect,
        Self::InvalidCode,
        Self::InvalidLink,
        Self::InvalidRefreshToken,
        Self::InvalidToken,
        Self::AdminTokenRequired,
        Self::InvalidAdminToken,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::UserExists,
        Self::RequestTimeout,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::RateLimited,
        Self::InternalError,
        Self::EmailFailed,
        Self::DatabaseUnavailable,
        Self::Overloaded,
        Self::Unavailable,
    ];

    /// The `code` field, e.g. `invalid_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidRequest => "invalid_request",
            Self::BadRequest => "bad_request",
            Self::InvalidEmail => "invalid_email",
            Self::InvalidRedirect => "invalid_redirect",
            Self::InvalidCode => "invalid_code",
            Self::InvalidLink => "invalid_link",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::InvalidToken => "invalid_token",
            Self::AdminTokenRequired => "admin_token_required",
            Self::InvalidAdminToken => "invalid_admin_token",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UserExists => "user_exists",
            Self::RequestTimeout => "request_timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::InternalError => "internal_error",
            Self::EmailFailed => "email_failed",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
        }
    }

    /// The HTTP status answered with this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson
            | Self::InvalidBody
            | Self::InvalidRequest
            | Self::BadRequest
            | Self::InvalidEmail
            | Self::InvalidRedirect => StatusCode::BAD_REQUEST,
            Self::InvalidCode
            | Self::InvalidLink
            | Self::InvalidRefreshToken
            | Self::InvalidToken
            | Self::AdminTokenRequired
            | Self::InvalidAdminToken => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UserExists => StatusCode::CONFLICT,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::EmailFailed => StatusCode::BAD_GATEWAY,
            Self::DatabaseUnavailable | Self::Overloaded | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The message a client gets when the place that raises the code has
    /// nothing more precise to say.
    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidJson => "the request body is not valid JSON",
            Self::InvalidBody => "the request body could not be read",
            Self::InvalidRequest | Self::BadRequest => "the request is invalid",
            Self::InvalidEmail => "`email` is not a valid email address",
            Self::InvalidRedirect => "`redirectTo` is not on the allow list",
            Self::InvalidCode => "the code is invalid or has expired",
            Self::InvalidLink => "the link is invalid, used or expired",
            Self::InvalidRefreshToken => "the refresh token is invalid, used or expired",
            Self::InvalidToken => "the access token is missing, invalid or expired",
            Self::AdminTokenRequired => "the admin API is off: set ADMIN_TOKEN to use it",
            Self::InvalidAdminToken => "the admin token is missing or wrong",
            Self::NotFound => "not found",
            Self::MethodNotAllowed => "method not allowed on this route",
            Self::UserExists => "a user with this address already exists",
            Self::RequestTimeout => "the request body did not arrive in time",
            Self::PayloadTooLarge => "the request body is larger than 64 KiB",
            Self::UnsupportedMediaType => "the body must be sent as `Content-Type: application/json`",
            Self::RateLimited => "too many requests",
            Self::InternalError => "internal server error",
            Self::EmailFailed => "the email could not be sent; try again later",
            Self::DatabaseUnavailable => "the database is unavailable; retry shortly",
            Self::Overloaded => "the server is busy; retry shortly",
            Self::Unavailable => "the service is unavailable; retry shortly",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes in the first column of the table under `heading` in a Markdown file.
    fn documented_codes(doc: &str, heading: &str) -> Vec<String> {
        let table = doc
            .split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("the document has a `{heading}` section"));
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(2))
            .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
            .collect()
    }

    fn assert_lists_every_code(doc: &str, heading: &str, file: &str) {
        let mut documented = documented_codes(doc, heading);
        documented.sort();
        documented.dedup();
        let mut codes: Vec<String> = ErrorCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
        codes.sort();
        assert_eq!(documented, codes, "the error table of {file} and ErrorCode differ");
    }

    #[test]
    fn the_readme_error_table_lists_exactly_the_error_codes() {
        assert_lists_every_code(include_str!("../../README.md"), "| status | code | when |", "README.md");
    }

    #[test]
    fn the_api_doc_error_table_lists_exactly_the_error_codes() {
        assert_lists_every_code(
            include_str!("../../docs/API.md"),
            "| status | code | when |",
            "docs/API.md",
        );
    }

    #[test]
    fn every_code_is_distinct_snake_case_with_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(
                code.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{code}"
            );
            assert!(!code.message().is_empty());
        }
    }
}
