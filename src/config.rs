//! Settings: one typed [`Config`], read once from the environment at start-up.
//!
//! Every setting is an environment variable (a `.env` file is read first by the
//! binary, if present). The settings come in sections ([`ServerSettings`],
//! [`DatabaseSettings`], [`TokenSettings`], [`LoginSettings`], [`EmailSettings`],
//! [`AuditSettings`], [`RateLimits`], [`WebhookSettings`]), each read by its own function in `sections`
//! through one shared `Reader`. Reading never stops at the first problem: all bad
//! values are collected, and start-up fails with one line per variable naming what
//! was expected. Secrets live in [`Secret`], whose `Debug` is redacted, and their
//! values are never echoed in error messages.

mod reader;
mod sections;
#[cfg(test)]
mod tests;

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use sqlx::postgres::PgConnectOptions;
use url::Url;

use self::reader::Reader;

/// The `JWT_SECRET` shipped in `.env.example`; refused in production.
pub const EXAMPLE_JWT_SECRET: &str = "change-me-to-a-random-string-of-at-least-32-bytes";

/// The placeholder `JWT_SECRET` of the TypeScript design's example settings; refused in
/// production like ours, since a deployment copied from it would sign with a public key.
pub const DESIGN_EXAMPLE_JWT_SECRET: &str = "your-super-secret-jwt-key-change-this-in-production";

/// The shortest `JWT_SECRET` accepted in production: 256 bits for HS256.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The shortest `ADMIN_TOKEN` accepted: 256 bits, like `JWT_SECRET`.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// Largest request body accepted; larger bodies are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest duration a setting may take (10 years): beyond it, adding it to the
/// current time would leave the range of timestamps.
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Where the process runs: decides which defaults are safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

impl AppEnv {
    /// Production refuses weak secrets and the console email transport.
    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

/// How log lines are formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Which transport delivers email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailProvider {
    /// Print the message (code and link included) to the log: development only.
    Console,
    Smtp,
    Resend,
}

/// Where audit events go besides the `audit_events` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    Console,
    File,
    Both,
    None,
}

/// A secret string: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Every setting of sesame, validated, one field per section.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server listens, how it logs, whom it trusts.
    pub server: ServerSettings,
    /// The PostgreSQL connection and its pool.
    pub database: DatabaseSettings,
    /// Signing and lifetimes of access and refresh tokens.
    pub tokens: TokenSettings,
    /// One-time codes, magic links and who may sign in.
    pub login: LoginSettings,
    /// The email transport and sender.
    pub email: EmailSettings,
    /// The audit trail's extra outputs, its retention and the cleanup job.
    pub audit: AuditSettings,
    /// Per-address and per-client limits.
    pub rate_limits: RateLimits,
    /// Where audit events are POSTed, how they are signed and retried.
    pub webhooks: WebhookSettings,
    /// The operators' listener: metrics, health and the admin API.
    pub admin: AdminSettings,
}

/// The admin listener: `/metrics`, `/health` and the admin API under `/admin/`.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Address the admin listener binds (`ADMIN_HOST`, default 127.0.0.1).
    pub host: IpAddr,
    /// Port of the admin listener; `None` when off (`ADMIN_PORT`, default 3002; 0 turns it off).
    /// `Some(0)`, set only in code, picks a free port.
    pub port: Option<u16>,
    /// Bearer token of the admin API, at least 32 bytes (`ADMIN_TOKEN`, default none; the admin API answers 401).
    pub token: Option<Secret>,
}

/// The HTTP server: where it listens, how it logs, whom it trusts.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where the process runs (`APP_ENV`, default development; `NODE_ENV` is read when it is unset).
    pub app_env: AppEnv,
    /// Address to bind (`HOST`, default 127.0.0.1).
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free one (`PORT`, default 3001).
    pub port: u16,
    /// How long a client may take to send a request body, 408 after (`REQUEST_BODY_TIMEOUT`, default 10s).
    pub request_body_timeout: Duration,
    /// Log line format (`LOG_FORMAT`, default pretty).
    pub log_format: LogFormat,
    /// Log filter in tracing `EnvFilter` syntax (`RUST_LOG`, default info).
    pub rust_log: String,
    /// Whether the client IP is the first `X-Forwarded-For` hop (`TRUST_PROXY_HEADERS`, default false).
    pub trust_proxy_headers: bool,
    /// Origins allowed by CORS (`CORS_ALLOWED_ORIGINS`, default the origin of `FRONTEND_URL`).
    pub cors_allowed_origins: Vec<String>,
}

/// The PostgreSQL connection pool.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Where to connect (`DATABASE_URL`, default none; the commands that need it say so);
    /// with several hosts, the first of them.
    pub url: Option<PgConnectOptions>,
    /// The further hosts of a multi-host `DATABASE_URL` (`postgres://u@h1:5432,h2:5432/db`),
    /// in order: sesame uses whichever of them all is not in recovery (see `store::pool`).
    pub other_hosts: Vec<PgConnectOptions>,
    /// Largest number of pooled connections (`DATABASE_MAX_CONNECTIONS`, default 10).
    pub max_connections: u32,
    /// How long a request waits for a connection before 503 (`DATABASE_ACQUIRE_TIMEOUT`, default 3s).
    pub acquire_timeout: Duration,
    /// Prepared statements kept per connection (`DATABASE_STATEMENT_CACHE`, default 100).
    /// `0` is the mode for a transaction-mode pooler (PgBouncer
    /// `pool_mode=transaction`, Supavisor, RDS Proxy): no statement outlives
    /// its transaction and every use of the database is a transaction (see
    /// `store::Db`).
    pub statement_cache: u32,
}

/// Access tokens (JWT) and refresh tokens: keys, claims, lifetimes.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// HS256 signing secret (`JWT_SECRET`, default a random one per process in development).
    pub jwt_secret: Secret,
    /// `iss` of access tokens, checked on verification (`JWT_ISSUER`, default sesame).
    pub jwt_issuer: String,
    /// `aud` of access tokens, checked on verification (`JWT_AUDIENCE`, default sesame).
    pub jwt_audience: String,
    /// Lifetime of an access token (`ACCESS_TOKEN_EXPIRY`, default 1h).
    pub access_token_expiry: Duration,
    /// Lifetime of a refresh token, renewed on every refresh (`REFRESH_TOKEN_EXPIRY`, default 30d).
    pub refresh_token_expiry: Duration,
    /// A rotated refresh token replayed within this gets the same answer (`REFRESH_REUSE_INTERVAL`, default 10s).
    pub refresh_reuse_interval: Duration,
    /// Absolute limit on a session from its first login (`SESSION_MAX_AGE`, default none; sliding expiry only).
    pub session_max_age: Option<Duration>,
    /// Ed25519 private key (PKCS#8 PEM) for EdDSA signing (`JWT_PRIVATE_KEY_FILE`, default none; HS256).
    pub jwt_private_key_file: Option<PathBuf>,
    /// Retired Ed25519 public keys still served and accepted (`JWT_PREVIOUS_PUBLIC_KEY_FILES`, default none).
    pub jwt_previous_public_key_files: Vec<PathBuf>,
}

/// Signing in: one-time codes, magic links, sign-up and where links lead.
#[derive(Debug, Clone)]
pub struct LoginSettings {
    /// Digits in a one-time code (`OTP_LENGTH`, default 6).
    pub otp_length: u32,
    /// How long a code stays valid (`OTP_EXPIRY`, default 10m).
    pub otp_expiry: Duration,
    /// Wrong tries allowed per address within the code's life (`OTP_MAX_ATTEMPTS`, default 5).
    pub otp_max_attempts: u32,
    /// The Argon2 secret input (pepper) of code hashes (`OTP_SECRET`, default derived from `JWT_SECRET`).
    pub otp_secret: Secret,
    /// Argon2id memory cost of a code hash, in KiB (`OTP_HASH_MEMORY_KIB`, default 512).
    pub otp_hash_memory_kib: u32,
    /// Argon2id iterations of a code hash (`OTP_HASH_ITERATIONS`, default 1).
    pub otp_hash_iterations: u32,
    /// How long a magic link stays valid (`MAGIC_LINK_EXPIRY`, default 15m).
    pub magic_link_expiry: Duration,
    /// Whether an address without an account may sign up by signing in (`ALLOW_SIGNUP`, default true).
    pub allow_signup: bool,
    /// The app that receives magic links (`FRONTEND_URL`, default http://localhost:3000).
    pub frontend_url: Url,
    /// Exact origins that `redirectTo` may point at (`REDIRECT_ALLOW_LIST`, default none).
    pub redirect_allow_list: Vec<String>,
}

/// How email leaves: the transport and the sender.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// The transport (`EMAIL_PROVIDER`, default console, or resend when `RESEND_API_KEY` is set;
    /// required in production unless `RESEND_API_KEY` is set).
    pub provider: EmailProvider,
    /// SMTP server for the smtp transport (`SMTP_URL`, default none).
    pub smtp_url: Option<Secret>,
    /// Resend API key for the resend transport (`RESEND_API_KEY`, default none); selects
    /// resend when `EMAIL_PROVIDER` is unset.
    pub resend_api_key: Option<Secret>,
    /// Base URL of the Resend API (`RESEND_API_URL`, default https://api.resend.com).
    pub resend_api_url: Url,
    /// Sender address (`FROM_EMAIL`, default sesame@localhost; required in production).
    pub from_email: String,
    /// The product name in every subject and body and on the magic-link page (`APP_NAME`, default sesame).
    pub app_name: String,
    /// Folder of templates overriding the built-in ones, `<dir>/<locale>/code.subject.txt` etc.
    /// (`EMAIL_TEMPLATES_DIR`, default none).
    pub templates_dir: Option<PathBuf>,
    /// Language of a message when the request names none we have (`EMAIL_DEFAULT_LOCALE`, default en).
    pub default_locale: String,
    /// PEM file of certificate authorities trusted for the SMTP connection, besides the
    /// public ones (`SMTP_CA_FILE`, default none).
    pub smtp_ca_file: Option<PathBuf>,
}

/// The audit trail's console and file outputs, and the cleanup job that prunes it.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Whether the console and file outputs are on (`METRICS_ENABLED`, default true).
    pub metrics_enabled: bool,
    /// Which outputs besides the table (`METRICS_FORMAT`, default both, i.e. console and file).
    pub metrics_format: MetricsFormat,
    /// JSON Lines file of the file output (`METRICS_FILE_PATH`, default ./logs/metrics.jsonl).
    pub metrics_file_path: PathBuf,
    /// How often the cleanup job runs (`CLEANUP_INTERVAL`, default 1h).
    pub cleanup_interval: Duration,
    /// Age past which the cleanup job deletes audit rows (`AUDIT_RETENTION`, default forever, as `None`).
    pub audit_retention: Option<Duration>,
}

/// Per-address and per-client limits (`docs/API.md`, "Rate limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Whether any limit applies (`RATE_LIMIT_ENABLED`, default true).
    pub enabled: bool,
    /// At most one send (code or link) per address within this (`RATE_LIMIT_SEND_INTERVAL`, default 60s).
    pub send_interval: Duration,
    /// Sends per address per hour (`RATE_LIMIT_SEND_PER_ADDRESS_PER_HOUR`, default 10).
    pub send_per_address_per_hour: u32,
    /// Sends per client IP per hour (`RATE_LIMIT_SEND_PER_IP_PER_HOUR`, default 30).
    pub send_per_ip_per_hour: u32,
    /// Code and link verifications per client IP per minute (`RATE_LIMIT_VERIFY_PER_IP_PER_MINUTE`, default 30).
    pub verify_per_ip_per_minute: u32,
    /// Refreshes per client IP per minute (`RATE_LIMIT_REFRESH_PER_IP_PER_MINUTE`, default 300).
    pub refresh_per_ip_per_minute: u32,
    /// Requests per client IP per minute to every other `/auth` operation (`RATE_LIMIT_DEFAULT_PER_IP_PER_MINUTE`, default 600; 0 turns it off).
    pub default_per_ip_per_minute: u32,
    /// Sends (codes and links) per hour for the whole deployment (`RATE_LIMIT_EMAILS_PER_HOUR`, default 1000; 0 turns it off).
    pub emails_per_hour: u32,
    /// IPv6 clients are counted per network of this prefix length (`RATE_LIMIT_IPV6_PREFIX`, default 64).
    pub ipv6_prefix: u8,
}

/// Webhooks (`docs/API.md`, "Webhooks"): endpoints, signing, which events, retries.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Endpoints every selected event is POSTed to (`WEBHOOK_URLS`, default none; comma-separated http(s) URLs).
    pub urls: Vec<Url>,
    /// Standard Webhooks signing secret (`WEBHOOK_SECRET`, default none; `whsec_` + base64 of
    /// at least 24 bytes; required with `WEBHOOK_URLS`).
    pub secret: Option<Secret>,
    /// Which events are sent (`WEBHOOK_EVENTS`, default user.created,admin.user.deleted,admin.user.disabled,token.reuse_detected).
    pub events: WebhookEvents,
    /// How long one delivery attempt may take (`WEBHOOK_TIMEOUT`, default 5s).
    pub timeout: Duration,
    /// How long a delivery is retried from its event before it is marked failed (`WEBHOOK_MAX_AGE`, default 24h).
    pub max_age: Duration,
}

/// The events `WEBHOOK_EVENTS` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvents {
    /// `*`: every event.
    All,
    /// These names only.
    Only(Vec<String>),
}

impl WebhookEvents {
    /// Whether `event` is sent.
    pub fn includes(&self, event: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n == event),
        }
    }
}

/// Everything wrong with the environment, one line per problem.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    ///
    /// `APP_ENV` comes first (production tightens other sections' checks); a section
    /// that needs a value of another (the OTP pepper derived from `JWT_SECRET`, the
    /// CORS default from `FRONTEND_URL`) is read after it and gets it as a parameter.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader::new(&lookup);
        let app_env = sections::app_env(&mut r);
        let database = DatabaseSettings::read(&mut r);
        let tokens = TokenSettings::read(&mut r, app_env);
        let login = LoginSettings::read(&mut r, app_env, &tokens.jwt_secret);
        let server = ServerSettings::read(&mut r, app_env, &login.frontend_url);
        let config = Self {
            server,
            database,
            tokens,
            login,
            email: EmailSettings::read(&mut r, app_env),
            audit: AuditSettings::read(&mut r),
            rate_limits: RateLimits::read(&mut r),
            webhooks: WebhookSettings::read(&mut r),
            admin: AdminSettings::read(&mut r, app_env),
        };
        r.finish(config)
    }
}

impl DatabaseSettings {
    /// Whether sesame runs behind a transaction-mode pooler
    /// (`DATABASE_STATEMENT_CACHE=0`).
    pub fn transaction_pooling(&self) -> bool {
        self.statement_cache == 0
    }

    /// The hosts to connect to, in the order `DATABASE_URL` lists them, or an
    /// error naming the missing setting.
    pub fn hosts(&self) -> Result<Vec<PgConnectOptions>, ConfigError> {
        let first = self.url.as_ref().ok_or_else(|| ConfigError {
            problems: vec![
                "DATABASE_URL: not set; expected a PostgreSQL URL such as postgres://user:pass@127.0.0.1:5432/sesame (scripts/dev.sh starts a private one)"
                    .to_owned(),
            ],
        })?;
        let cache = usize::try_from(self.statement_cache).unwrap_or(usize::MAX);
        Ok(std::iter::once(first)
            .chain(&self.other_hosts)
            .map(|host| host.clone().statement_cache_capacity(cache))
            .collect())
    }
}

/// `scheme://host[:port]` of a URL, the form CORS and the allow-list compare.
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A duration as a person writes it: `30d`, `1h`, `15m`, `90s`.
pub fn compact_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// `humantime` durations (`15m`, `1h 30m`, `30d`), or a bare number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).ok()
}
