//! What the webhook tests share: a receiver in the test process (a real HTTP
//! server on 127.0.0.1), an independent Standard Webhooks signature check, and
//! a config that sends to a receiver.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use poem::{EndpointExt as _, IntoResponse as _, Route, handler, http::StatusCode, web::Data};
use serde_json::Value;
use sesame::config::{Config, Secret, WebhookEvents};
use sqlx::PgPool;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub content_type: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    /// Statuses of the next answers; then `otherwise`.
    answers: Arc<Mutex<VecDeque<u16>>>,
    otherwise: Arc<std::sync::atomic::AtomicU16>,
    /// How long each answer takes, in milliseconds.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

#[handler]
async fn hook(req: &poem::Request, body: poem::Body, state: Data<&ReceiverState>) -> poem::Response {
    let delay = state.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let header = |name: &str| req.header(name).unwrap_or_default().to_owned();
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        content_type: header("content-type"),
        body: body.into_string().await.unwrap(),
    };
    state.got.lock().unwrap().push(received);
    let next = state.answers.lock().unwrap().pop_front();
    let status = next.unwrap_or_else(|| state.otherwise.load(std::sync::atomic::Ordering::SeqCst));
    "ok".with_status(StatusCode::from_u16(status).unwrap()).into_response()
}

/// A webhook receiver on 127.0.0.1.
pub(crate) struct Receiver {
    pub addr: SocketAddr,
    state: ReceiverState,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On `port` (0: any free one).
    pub async fn start_on(port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = ReceiverState {
            otherwise: Arc::new(200.into()),
            ..ReceiverState::default()
        };
        let app = Route::new().at("/hook", poem::post(hook)).data(state.clone());
        let acceptor = poem::listener::TcpAcceptor::from_std(listener).unwrap();
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next answers' statuses, in order (then 200).
    pub fn answer_next(&self, statuses: &[u16]) {
        self.state.answers.lock().unwrap().extend(statuses);
    }

    /// Makes each answer take `delay`.
    pub fn answer_after(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.state.delay_ms.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The status of every answer after the queued ones.
    pub fn answer_always(&self, status: u16) {
        self.state.otherwise.store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (panics after 20 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {n} webhook requests, got {:?}", self.received());
    }
}

/// A fresh random `whsec_` secret.
pub(crate) fn new_secret() -> String {
    let key: [u8; 32] = std::array::from_fn(|_| rand_byte());
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

/// The Standard Webhooks check, written from the specification, independently of
/// sesame's code: `v1,` + base64(HMAC-SHA256(base64-decoded secret after `whsec_`,
/// "{id}.{timestamp}.{body}")), the timestamp within five minutes of now.
pub(crate) fn verify(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let ts: i64 = r.timestamp.parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (now - ts).abs() <= 300 && r.signature.split(' ').any(|s| s == expected)
}

/// `config` sending `events` to `urls`, signed with `secret`.
pub(crate) fn webhook_config(mut config: Config, urls: &[String], secret: &str, events: WebhookEvents) -> Config {
    config.webhooks.urls = urls.iter().map(|u| u.parse().unwrap()).collect();
    config.webhooks.secret = Some(Secret::new(secret));
    config.webhooks.events = events;
    config.webhooks.timeout = Duration::from_secs(2);
    config
}

/// `(status, attempts)` of every delivery, in id order.
pub(crate) async fn deliveries(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT status, attempts FROM webhook_deliveries ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Waits until `check` holds for the deliveries (panics after 20 s).
pub(crate) async fn wait_deliveries(pool: &PgPool, what: &str, check: impl Fn(&[(String, i32)]) -> bool) {
    for _ in 0..200 {
        if check(&deliveries(pool).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: deliveries are {:?}", deliveries(pool).await);
}

/// Inserts a `user.created` event two days old and a delivery of it that failed
/// with `last_error` after 30 attempts; returns the delivery's id.
pub(crate) async fn insert_failed_delivery(pool: &PgPool, last_error: &str) -> i64 {
    let event: i64 = sqlx::query_scalar(
        "INSERT INTO audit_events (event, success, email, created_at) VALUES ('user.created', true, 'ada@example.com', now() - interval '2 days') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (event_id, endpoint, seq, status, attempts, next_attempt_at, retry_since, last_error, created_at)
         VALUES ($1, 'https://app.example.com/hooks', 1, 'failed', 30, now(), now() - interval '2 days', $2, now() - interval '2 days')
         RETURNING id",
    )
    .bind(event)
    .bind(last_error)
    .fetch_one(pool)
    .await
    .unwrap()
}
