//! What wraps every request: a request id and its tracing span, CORS, and the
//! body checks (size and JSON syntax) that run before any handler or database work.

use std::{sync::Arc, time::Instant};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::{config::MAX_BODY_BYTES, error::error_response as error, metrics::Metrics};

/// The id of a request: the client's `X-Request-Id` when well-formed, else a new UUID.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const REQUEST_ID_HEADER: &str = "x-request-id";
const MAX_REQUEST_ID_LEN: usize = 128;

fn request_id_of(req: &Request) -> RequestId {
    let given = req.header(REQUEST_ID_HEADER).filter(|v| {
        !v.is_empty()
            && v.len() <= MAX_REQUEST_ID_LEN
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    RequestId(given.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned))
}

/// Gives the request an id, runs it in a span carrying that id, logs its
/// outcome, and echoes the id in `X-Request-Id` on every response.
pub async fn trace<E: Endpoint<Output = Response>>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let id = request_id_of(&req);
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!("request", request_id = %id.0, method = %req.method(), path = %req.uri().path());
    async move {
        let started = Instant::now();
        let metrics = req.data::<Metrics>().cloned();
        let mut resp = ep.call(req).await?;
        let status = resp.status().as_u16();
        let elapsed = started.elapsed();
        let ms = elapsed.as_secs_f64() * 1000.0;
        if let Some(metrics) = metrics {
            let operation = resp.data::<OperationId>().map_or("unmatched", |op| op.0);
            metrics.request(operation, status, elapsed);
        }
        if status >= 500 {
            tracing::warn!(status, ms, "request failed");
        } else {
            tracing::info!(status, ms, "request");
        }
        if let Ok(v) = HeaderValue::from_str(&id.0) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}

/// Refuses bodies over [`MAX_BODY_BYTES`] with 413 (declared or streamed) and
/// JSON bodies that do not parse with 400 `invalid_json`, before any handler runs.
pub async fn check_body<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let declared = req.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than 64 KiB",
        ));
    }
    let has_body = declared.is_some_and(|len| len > 0) || req.header(header::TRANSFER_ENCODING).is_some();
    if has_body {
        let bytes = match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
            Ok(bytes) => bytes,
            Err(poem::error::ReadBodyError::PayloadTooLarge) => {
                return Ok(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than 64 KiB",
                ));
            }
            Err(_) => {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                ));
            }
        };
        let is_json = req.content_type().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if is_json && !bytes.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
            return Ok(error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the request body is not valid JSON",
            ));
        }
        req.set_body(bytes);
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// CORS for the configured origins. A request from any other origin is served
/// without CORS headers (the browser then withholds the answer) rather than
/// refused, so same-origin pages such as `/docs` keep working.
#[derive(Clone)]
pub struct Cors {
    allowed: Arc<[String]>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        Self {
            allowed: origins.into(),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.allowed.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    pub async fn handle<E: Endpoint<Output = Response>>(&self, ep: Arc<E>, req: Request) -> poem::Result<Response> {
        let origin = req.header(header::ORIGIN).filter(|o| self.allows(o)).map(str::to_owned);
        let preflight = req.method() == Method::OPTIONS && req.header(header::ACCESS_CONTROL_REQUEST_METHOD).is_some();
        let mut resp = match (&origin, preflight) {
            (Some(_), true) => {
                let mut resp = Response::builder().status(StatusCode::NO_CONTENT).finish();
                let h = resp.headers_mut();
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("authorization, content-type, x-request-id"),
                );
                h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                resp
            }
            _ => ep.call(req).await?,
        };
        let h = resp.headers_mut();
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after, x-request-id, www-authenticate"),
            );
        }
        Ok(resp)
    }
}
