//! Errors raised outside typed handlers (by poem and poem-openapi before a
//! handler runs: bad JSON, missing fields, unknown routes, wrong methods,
//! wrong content types) rewritten into the one error envelope.

use poem::{
    Response,
    error::{MethodNotAllowedError, NotFoundError},
    http::{StatusCode, header},
};
use poem_openapi::error::{
    AuthorizationError, ContentTypeError, ParseParamError, ParsePathError, ParseRequestPayloadError,
};

use super::ErrorCode;

/// Rewrites any error that reached the edge of the app into the error envelope.
pub fn render(err: poem::Error) -> Response {
    if err.is_from_response() {
        // Already an ApiError (or another typed response): keep it as it is.
        return err.into_response();
    }
    let (status, code, message) = classify(&err);
    if status.is_server_error() {
        tracing::error!(error = %err, "unhandled error");
    }
    let mut resp = envelope(status, code, &message);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, poem::http::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// A response with the error envelope, for the places outside typed handlers.
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    envelope(code.status(), code, message)
}

fn envelope(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "success": false, "error": message, "code": code.as_str() });
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body.to_string())
}

/// The status, code and message for an error poem or poem-openapi raised.
fn classify(err: &poem::Error) -> (StatusCode, ErrorCode, String) {
    if let Some((code, message)) = known(err) {
        return (code.status(), code, message);
    }
    let code = match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ErrorCode::InvalidToken,
        // Any other 4xx keeps poem's own status; the code says only "bad request".
        s if s.is_client_error() => return (s, ErrorCode::BadRequest, ErrorCode::BadRequest.message().to_owned()),
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        _ => ErrorCode::InternalError,
    };
    (code.status(), code, code.message().to_owned())
}

/// The errors of known types, with a message naming what was wrong.
fn known(err: &poem::Error) -> Option<(ErrorCode, String)> {
    if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
        return Some((ErrorCode::InvalidRequest, describe_payload_error(&e.reason)));
    }
    if let Some(e) = err.downcast_ref::<ParseParamError>() {
        let message = format!("invalid parameter `{}`: {}", e.name, e.reason);
        return Some((ErrorCode::InvalidRequest, message));
    }
    if let Some(e) = err.downcast_ref::<ParsePathError>() {
        return Some((ErrorCode::InvalidRequest, format!("invalid path segment `{}`", e.name)));
    }
    if let Some(e) = err.downcast_ref::<ContentTypeError>() {
        let message = match e {
            ContentTypeError::NotSupported { .. } => ErrorCode::UnsupportedMediaType.message(),
            ContentTypeError::ExpectContentType => "the `Content-Type: application/json` header is required",
        };
        return Some((ErrorCode::UnsupportedMediaType, message.to_owned()));
    }
    if err.is::<AuthorizationError>() {
        return Some((ErrorCode::InvalidToken, "a bearer access token is required".to_owned()));
    }
    if err.is::<NotFoundError>() {
        return Some((ErrorCode::NotFound, "no such route".to_owned()));
    }
    if err.is::<MethodNotAllowedError>() {
        return Some((
            ErrorCode::MethodNotAllowed,
            ErrorCode::MethodNotAllowed.message().to_owned(),
        ));
    }
    None
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
    // A known field whose value is outside its documented shape (pattern,
    // lengths): `failed to parse "locale": not a valid `locale` (…)`.
    if let Some(field) = reason
        .strip_prefix("failed to parse \"")
        .and_then(|r| r.split('"').next())
    {
        let field: String = field.chars().take(64).collect();
        return format!("field `{field}`{within} is not of its documented shape (see the schema)");
    }
    format!("a field{within} has an invalid value")
}
