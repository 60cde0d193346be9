//! `TestApp`: the real application, bound to a random port, on its own database.

use std::time::Duration;

use serde_json::Value;
use sesame::{
    app::{AppState, Application},
    clock::Clock,
    config::{Config, EmailProvider, MetricsFormat, Secret},
};
use sqlx::postgres::PgConnectOptions;
use tokio::sync::oneshot;

use crate::mailbox::SmtpSink;

/// The `ADMIN_TOKEN` of test apps.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";

pub struct TestApp {
    pub address: String,
    /// The admin listener (`/metrics`, `/health`, `/admin/…`), on its own random port.
    pub admin_address: String,
    pub client: reqwest::Client,
    /// The app's own state: its clock (to move time) and keys.
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A development config pointed at `db`, on a random port, quiet.
pub fn test_config(db: PgConnectOptions) -> Config {
    // One secret for every app of a test, as instances of one deployment share it.
    let mut config =
        Config::from_lookup(|k| (k == "JWT_SECRET").then(|| "test-only-secret-0123456789abcdef0123".to_owned()))
            .expect("defaults are valid");
    config.database.url = Some(db);
    config.server.port = 0;
    config.admin.port = Some(0);
    config.admin.token = Some(Secret::new(ADMIN_TOKEN));
    config.database.acquire_timeout = Duration::from_secs(1);
    // Tests that look at the console or the file turn them on themselves.
    config.audit.metrics_format = MetricsFormat::None;
    // Most tests send many codes quickly; the rate-limit tests turn limits on.
    config.rate_limits.enabled = false;
    // SESAME_TEST_STATEMENT_CACHE=0 runs the suite as behind a transaction-mode pooler.
    if let Some(n) = std::env::var("SESAME_TEST_STATEMENT_CACHE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.database.statement_cache = n;
    }
    config
}

/// `test_config` delivering email to `sink` over SMTP.
pub fn smtp_config(db: PgConnectOptions, sink: &SmtpSink) -> Config {
    let mut config = test_config(db);
    config.email.provider = EmailProvider::Smtp;
    config.email.smtp_url = Some(Secret::new(sink.url()));
    config.email.from_email = "Sesame <noreply@sesame.test>".to_owned();
    config
}

/// An app that sends email to a fresh SMTP sink.
pub async fn spawn_with_smtp(db: PgConnectOptions) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(smtp_config(db, &sink)).await;
    (app, sink)
}

/// `test_config` writing audit lines to `path`.
pub fn file_config(db: PgConnectOptions, path: &std::path::Path) -> Config {
    let mut config = test_config(db);
    config.audit.metrics_format = MetricsFormat::File;
    config.audit.metrics_file_path = path.to_owned();
    config
}

/// A fresh empty folder under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sesame-test-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The lines of a JSON Lines file, each parsed (panics on a torn line).
pub fn read_json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn or invalid line {l:?}: {e}")))
        .collect()
}

/// A parsed response: status, headers and JSON body (Null when not JSON).
pub struct TestResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl TestResponse {
    pub async fn from(resp: reqwest::Response) -> Self {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error envelope (`docs/API.md`) with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(self.json["success"], Value::Bool(false), "body: {}", self.text);
        assert_eq!(self.json["code"], Value::String(code.to_owned()), "body: {}", self.text);
        assert!(
            self.json["error"].as_str().is_some_and(|m| !m.is_empty()),
            "error message; body: {}",
            self.text
        );
        assert!(
            self.header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json")),
            "content type of {}",
            self.text
        );
    }
}

impl TestApp {
    pub async fn spawn(db: PgConnectOptions) -> Self {
        Self::spawn_with(test_config(db)).await
    }

    pub async fn spawn_with(config: Config) -> Self {
        sesame::install_crypto_provider();
        // TEST_LOG=1 shows the server's logs (e.g. the cause of a 500).
        if std::env::var_os("TEST_LOG").is_some() {
            sesame::telemetry::init(sesame::config::LogFormat::Pretty, "info,sesame=debug");
        }
        let app = Application::build(config, Clock::system()).await.expect("app builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let admin_address = app
            .admin_port()
            .map_or_else(String::new, |port| format!("http://127.0.0.1:{port}"));
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            address,
            admin_address,
            client: reqwest::Client::new(),
            state,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `n` logouts at once, each of a different token sesame never issued (of
    /// the documented shape); every one must answer 200.
    pub async fn concurrent_logouts(&self, n: usize) {
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..n {
            let (client, url) = (self.client.clone(), self.url("/auth/logout"));
            requests.spawn(async move {
                client
                    .post(url)
                    .json(&serde_json::json!({ "refreshToken": format!("{i:0>43}") }))
                    .send()
                    .await
            });
        }
        for resp in requests.join_all().await {
            assert_eq!(resp.unwrap().status(), 200);
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        TestResponse::from(self.client.get(self.url(path)).send().await.expect("request")).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> TestResponse {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        TestResponse::from(resp).await
    }

    /// POSTs raw bytes with the given content type (or none).
    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> TestResponse {
        let mut req = self.client.post(self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        TestResponse::from(req.send().await.expect("request")).await
    }

    /// A GET on the admin listener, without a token.
    pub async fn admin_get(&self, path: &str) -> TestResponse {
        let resp = self
            .client
            .get(format!("{}{path}", self.admin_address))
            .send()
            .await
            .expect("request");
        TestResponse::from(resp).await
    }

    /// A request to the admin API with the admin token and, if given, a JSON body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> TestResponse {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.admin_address))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(body);
        }
        TestResponse::from(req.send().await.expect("request")).await
    }

    /// The value of one Prometheus series on the admin listener's `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin_get("/metrics").await.text;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub async fn send_code(&self, email: &str) -> TestResponse {
        self.post_json("/auth/send-code", &serde_json::json!({ "email": email }))
            .await
    }

    pub async fn verify_code(&self, email: &str, code: &str) -> TestResponse {
        self.post_json(
            "/auth/verify-code",
            &serde_json::json!({ "email": email, "code": code }),
        )
        .await
    }

    pub async fn send_magic_link(&self, email: &str, redirect_to: Option<&str>) -> TestResponse {
        let mut body = serde_json::json!({ "email": email });
        if let Some(r) = redirect_to {
            body["redirectTo"] = r.into();
        }
        self.post_json("/auth/send-magic-link", &body).await
    }

    pub async fn verify_magic_link(&self, token: &str) -> TestResponse {
        self.post_json("/auth/verify-magic-link", &serde_json::json!({ "token": token }))
            .await
    }

    /// Signs `email` in with a code read from `sink`; returns the token pair.
    pub async fn sign_in(&self, sink: &SmtpSink, email: &str) -> Value {
        let sent = self.send_code(email).await;
        assert_eq!(sent.status, 200, "{}", sent.text);
        let code = sink.last_to(email).code();
        let resp = self.verify_code(email, &code).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        resp.json
    }

    pub async fn refresh(&self, refresh_token: &str) -> TestResponse {
        self.post_json("/auth/refresh", &serde_json::json!({ "refreshToken": refresh_token }))
            .await
    }

    /// A request with `Authorization: Bearer <token>`.
    pub async fn bearer(&self, method: reqwest::Method, path: &str, token: &str) -> TestResponse {
        let resp = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        TestResponse::from(resp).await
    }

    pub async fn health(&self) -> TestResponse {
        self.get("/health").await
    }

    pub async fn logout(&self, refresh_token: &str) -> TestResponse {
        self.post_json("/auth/logout", &serde_json::json!({ "refreshToken": refresh_token }))
            .await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stops cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A connection to the server's maintenance database (`DATABASE_URL`), for
/// doing things to a test database from outside, as an operator would.
pub async fn admin_connection() -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    sqlx::PgConnection::connect(&url).await.expect("admin connection")
}

/// Takes database `name` away (refuses new connections and cuts the open
/// ones), or gives it back: a real outage, as an operator would cause it.
pub async fn set_database_reachable(name: &str, reachable: bool) {
    let mut admin = admin_connection().await;
    let alter = format!(r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {reachable}"#);
    sqlx::query(sqlx::AssertSqlSafe(alter))
        .execute(&mut admin)
        .await
        .unwrap();
    if !reachable {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(name)
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// The URL of test database `db`, on the server of `DATABASE_URL`.
pub fn database_url(db: &PgConnectOptions) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    let server = base.rsplit_once('/').expect("DATABASE_URL names a database").0;
    format!("{server}/{}", db.get_database().expect("test database name"))
}

/// The real `sesame serve` binary, on a free port, in `dir`, with exactly `vars`
/// (plus `DATABASE_URL`, `PORT` and `ADMIN_PORT`) in its environment.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub port: u16,
    pub admin_port: u16,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ServerProcess {
    pub fn start(db: &PgConnectOptions, dir: &std::path::Path, vars: &[(&str, &str)]) -> Self {
        use std::process::{Command, Stdio};
        sesame::install_crypto_provider();
        let (port, admin_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_sesame"))
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("DATABASE_URL", database_url(db))
            .env("PORT", port.to_string())
            .env("ADMIN_PORT", admin_port.to_string())
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            admin_port,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Waits (up to 30 s) until `/health` answers, and returns that answer.
    pub async fn wait_ready(&self) -> reqwest::Response {
        let started = std::time::Instant::now();
        loop {
            if let Ok(resp) = reqwest::get(self.url("/health")).await {
                return resp;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits (up to 15 s) for the process to exit.
    pub async fn terminate(mut self) -> std::process::Output {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "sesame did not stop within 15 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child.wait_with_output().unwrap()
    }
}

/// The access token of a token-pair body.
pub fn at(pair: &Value) -> &str {
    pair["token"].as_str().unwrap()
}

/// The refresh token of a token-pair body.
pub fn rt(pair: &Value) -> &str {
    pair["refreshToken"].as_str().unwrap()
}

/// The session id `pair`'s access token carries, verified at `app`'s own time.
pub fn sid(app: &TestApp, pair: &Value) -> uuid::Uuid {
    app.state
        .jwt
        .verify_at(at(pair), app.state.clock.now())
        .unwrap()
        .sid
        .as_uuid()
}

/// A config that sends email through `resend` (the stand-in for the Resend API).
pub fn resend_config(db: PgConnectOptions, resend: &crate::mailbox::ResendStandIn) -> Config {
    let mut config = test_config(db);
    config.email.provider = sesame::config::EmailProvider::Resend;
    config.email.resend_api_key = Some(sesame::config::Secret::new("re_test_key"));
    config.email.resend_api_url = url::Url::parse(&resend.url()).unwrap();
    config.email.from_email = "Sesame <noreply@sesame.test>".to_owned();
    config
}

/// How many users and sessions the database holds: (0, 0) means nobody signed in.
pub async fn users_and_sessions(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM sessions)")
        .fetch_one(pool)
        .await
        .unwrap()
}
