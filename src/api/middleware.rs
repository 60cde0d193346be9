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
    RequestId(given.map_or_else(new_request_id, str::to_owned))
}

/// A random UUID (v4) from the thread's generator: `Uuid::new_v4` asks the
/// kernel (a `getrandom` call) for every request.
fn new_request_id() -> String {
    use rand::Rng as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
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
/// refused, so same-origin pages such as `/docs` keep working. A preflight
/// from an allowed origin is 204 with the route's methods; any other
/// `OPTIONS` is answered by [`allow`].
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
                // The route's own methods, as `Allow` lists them.
                let methods = req
                    .data::<Arc<Methods>>()
                    .and_then(|m| m.allow(req.uri().path()))
                    .and_then(|a| HeaderValue::from_str(&a).ok())
                    .unwrap_or(HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
                let mut resp = Response::builder().status(StatusCode::NO_CONTENT).finish();
                let h = resp.headers_mut();
                h.insert(header::ALLOW, methods.clone());
                h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
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

/// The methods each route answers, for the `Allow` header of a 405 and the
/// answer to `OPTIONS` (RFC 9110): read from an OpenAPI document, plus the
/// routes it does not list. `HEAD` is answered wherever `GET` is (poem runs
/// the `GET` handler without its body), `OPTIONS` everywhere.
#[derive(Clone, Default)]
pub struct Methods {
    /// Path segments (`None` for a `{parameter}`) and their methods.
    routes: Vec<(Vec<Option<String>>, Vec<Method>)>,
}

impl Methods {
    /// The paths and methods of an OpenAPI document.
    pub fn of_document(doc: &serde_json::Value) -> Self {
        let mut methods = Self::default();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let listed: Vec<Method> = item
                .as_object()
                .into_iter()
                .flat_map(|ops| ops.keys())
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect();
            methods = methods.with(path, &listed);
        }
        methods
    }

    /// `path` (segments in braces are parameters) answers `methods`.
    pub fn with(mut self, path: &str, methods: &[Method]) -> Self {
        let segments = path
            .split('/')
            .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
            .collect();
        self.routes.push((segments, methods.to_vec()));
        self
    }

    /// The `Allow` value of `path`, or `None` when no route has it.
    pub fn allow(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let fits = |route: &[Option<String>]| {
            route.len() == segments.len()
                && route
                    .iter()
                    .zip(&segments)
                    .all(|(r, s)| r.as_deref().map_or(!s.is_empty(), |r| r == *s))
        };
        // A literal route wins over a parameter in the same place
        // (`/a/b` over `/a/{id}`), as in the router.
        let literal = self
            .routes
            .iter()
            .filter(|(route, _)| fits(route))
            .min_by_key(|(route, _)| route.iter().filter(|s| s.is_none()).count())?;
        let mut methods: Vec<&str> = Vec::new();
        for m in &literal.1 {
            if *m == Method::GET {
                methods.extend(["GET", "HEAD"]);
            } else {
                methods.push(m.as_str());
            }
        }
        let order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
        methods.sort_by_key(|m| order.iter().position(|o| o == m).unwrap_or(order.len()));
        methods.dedup();
        methods.push("OPTIONS");
        Some(methods.join(", "))
    }
}

/// Answers `OPTIONS` on a known route with 204 and `Allow`, and adds `Allow`
/// to every 405 (a method the route does not answer). Needs [`Methods`] in
/// the request data.
pub async fn allow<E: Endpoint<Output = Response>>(ep: Arc<E>, req: Request) -> poem::Result<Response> {
    // Looked up only for an OPTIONS or a 405, not on every request's way.
    let methods = req.data::<Arc<Methods>>().cloned();
    if req.method() == Method::OPTIONS
        && let Some(allowed) = methods.as_ref().and_then(|m| m.allow(req.uri().path()))
    {
        let mut resp = Response::builder().status(StatusCode::NO_CONTENT).finish();
        if let Ok(v) = HeaderValue::from_str(&allowed) {
            resp.headers_mut().insert(header::ALLOW, v);
        }
        return Ok(resp);
    }
    let uri = req.uri().clone();
    let mut resp = ep.call(req).await?;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(v) = methods
            .and_then(|m| m.allow(uri.path()))
            .and_then(|a| HeaderValue::from_str(&a).ok())
    {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    Ok(resp)
}
