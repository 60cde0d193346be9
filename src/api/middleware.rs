//! What wraps every request: a request id and its tracing span, CORS, and the
//! body checks (size and JSON syntax) that run before any handler or database work.

use std::{sync::Arc, time::Instant};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::{
    config::MAX_BODY_BYTES,
    error::{ErrorCode, error_response as error},
    metrics::Metrics,
};

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
            ErrorCode::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        ));
    }
    let has_body = declared.is_some_and(|len| len > 0) || req.header(header::TRANSFER_ENCODING).is_some();
    if has_body {
        let timeout = req.data::<BodyTimeout>().map_or(DEFAULT_BODY_TIMEOUT, |t| t.0);
        let read = tokio::time::timeout(timeout, req.take_body().into_bytes_limit(MAX_BODY_BYTES)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => {
                return Ok(error(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than 64 KiB",
                ));
            }
            Ok(Err(_)) => {
                return Ok(error(ErrorCode::InvalidBody, "the request body could not be read"));
            }
            Err(_) => {
                let mut resp = error(ErrorCode::RequestTimeout, "the request body did not arrive in time");
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Ok(resp);
            }
        };
        let is_json = req.content_type().is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if is_json && !bytes.is_empty() {
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            let checked = serde::de::DeserializeSeed::deserialize(NoDuplicateKeys, &mut de).and_then(|()| de.end());
            if let Err(e) = checked {
                let message = if e.to_string().starts_with(DUPLICATE_KEY) {
                    "the request body has a duplicated key"
                } else {
                    "the request body is not valid JSON"
                };
                return Ok(error(ErrorCode::InvalidJson, message));
            }
        }
        req.set_body(bytes);
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

/// How long a client may take to send its body; slower ones get 408 and the
/// connection is closed (a slow-loris client cannot hold a worker).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub std::time::Duration);

const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

const DUPLICATE_KEY: &str = "duplicate key";

/// Walks a JSON document and fails on an object with a repeated key:
/// `{"email":"a@x.io","email":"b@y.io"}` would otherwise mean whatever the
/// last parser to read it decides.
struct NoDuplicateKeys;

impl<'de> serde::de::DeserializeSeed<'de> for NoDuplicateKeys {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicateKeys)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            map.next_value_seed(NoDuplicateKeys)?;
        }
        Ok(())
    }
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
