//! Settings: one typed [`Config`], read once from the environment at start-up.
//!
//! Every setting is an environment variable (a `.env` file is read first by the
//! binary, if present). Reading never stops at the first problem: all bad values
//! are collected, and start-up fails with one line per variable naming what was
//! expected. Secrets live in [`Secret`], whose `Debug` is redacted, and their
//! values are never echoed in error messages.

use std::{fmt, net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use sqlx::postgres::PgConnectOptions;
use url::Url;

/// The `JWT_SECRET` shipped in `.env.example`; refused in production.
pub const EXAMPLE_JWT_SECRET: &str = "change-me-to-a-random-string-of-at-least-32-bytes";

/// The shortest `JWT_SECRET` accepted in production: 256 bits for HS256.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

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

/// Per-address and per-client limits (SPEC "Rules").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub enabled: bool,
    /// At most one send (code or link) per address within this interval.
    pub send_interval: Duration,
    pub send_per_address_per_hour: u32,
    pub send_per_ip_per_hour: u32,
    pub verify_per_ip_per_minute: u32,
    pub refresh_per_ip_per_minute: u32,
}

/// Every setting of sesame, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub app_env: AppEnv,
    pub host: IpAddr,
    pub port: u16,
    /// `None` when `DATABASE_URL` is unset; commands that need it say so.
    pub database: Option<PgConnectOptions>,
    pub database_max_connections: u32,
    pub database_acquire_timeout: Duration,
    /// How long a client may take to send a request body (408 after).
    pub request_body_timeout: Duration,
    pub log_format: LogFormat,
    pub rust_log: String,
    pub jwt_secret: Secret,
    /// `iss` of access tokens, checked on verification.
    pub jwt_issuer: String,
    /// `aud` of access tokens, checked on verification.
    pub jwt_audience: String,
    pub access_token_expiry: Duration,
    pub refresh_token_expiry: Duration,
    pub refresh_reuse_interval: Duration,
    /// Absolute limit on a session's life from its first login; `None` = only sliding expiry.
    pub session_max_age: Option<Duration>,
    /// Ed25519 private key (PKCS#8 PEM): when set, access tokens are EdDSA-signed.
    pub jwt_private_key_file: Option<PathBuf>,
    /// Retired Ed25519 public keys (PEM) still served in the JWKS and accepted.
    pub jwt_previous_public_key_files: Vec<PathBuf>,
    pub otp_length: u32,
    pub otp_expiry: Duration,
    pub otp_max_attempts: u32,
    /// The Argon2 secret input (pepper) for code hashes; derived from
    /// `JWT_SECRET` when unset.
    pub otp_secret: Secret,
    /// Argon2id memory cost for code hashes, in KiB.
    pub otp_hash_memory_kib: u32,
    /// Argon2id iterations for code hashes.
    pub otp_hash_iterations: u32,
    pub magic_link_expiry: Duration,
    /// Whether an address without an account may sign up by signing in.
    pub allow_signup: bool,
    pub frontend_url: Url,
    /// Exact origins (`scheme://host[:port]`) that `redirectTo` may point at.
    pub redirect_allow_list: Vec<String>,
    /// Origins allowed by CORS; defaults to the origin of `FRONTEND_URL`.
    pub cors_allowed_origins: Vec<String>,
    pub email_provider: EmailProvider,
    pub smtp_url: Option<Secret>,
    pub resend_api_key: Option<Secret>,
    pub resend_api_url: Url,
    pub from_email: String,
    pub metrics_enabled: bool,
    pub metrics_format: MetricsFormat,
    pub metrics_file_path: PathBuf,
    pub cleanup_interval: Duration,
    /// Audit rows older than this are deleted by the cleanup job; `None` keeps them forever.
    pub audit_retention: Option<Duration>,
    pub rate_limits: RateLimits,
    pub trust_proxy_headers: bool,
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
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };

        let app_env = match r.raw("APP_ENV").or_else(|| r.raw("NODE_ENV")) {
            None => AppEnv::Development,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "development" | "dev" | "test" => AppEnv::Development,
                "production" | "prod" => AppEnv::Production,
                _ => {
                    r.problem("APP_ENV", "`development` or `production`", Some(&v));
                    AppEnv::Development
                }
            },
        };
        let production = app_env == AppEnv::Production;

        let host = r.parse(
            "HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address such as 127.0.0.1 or 0.0.0.0",
        );
        let port = r.parse("PORT", 3001u16, "a port number from 0 to 65535");

        let database = match r.raw("DATABASE_URL") {
            None => None,
            Some(v) => match PgConnectOptions::from_str(&v) {
                Ok(opts) if v.starts_with("postgres://") || v.starts_with("postgresql://") => Some(opts),
                _ => {
                    r.secret_problem(
                        "DATABASE_URL",
                        "a PostgreSQL URL such as postgres://user:pass@127.0.0.1:5432/sesame",
                    );
                    None
                }
            },
        };
        let database_max_connections = r.int_in("DATABASE_MAX_CONNECTIONS", 10, 1, 1000);
        let database_acquire_timeout = r.duration("DATABASE_ACQUIRE_TIMEOUT", "3s", Duration::from_millis(100));
        let request_body_timeout = r.duration("REQUEST_BODY_TIMEOUT", "10s", Duration::from_millis(100));

        let log_format = r.choice(
            "LOG_FORMAT",
            LogFormat::Pretty,
            &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
        );
        let rust_log = r.raw("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&rust_log).is_err() {
            r.problem(
                "RUST_LOG",
                "a tracing filter such as `info` or `sesame=debug,info`",
                Some(&rust_log),
            );
        }

        let jwt_secret = match r.raw("JWT_SECRET") {
            Some(v) if production && v == EXAMPLE_JWT_SECRET => {
                r.secret_problem(
                    "JWT_SECRET",
                    "a random secret of your own; the example value is refused in production",
                );
                Secret::new(v)
            }
            Some(v) if production && v.len() < MIN_JWT_SECRET_BYTES => {
                r.secret_problem(
                    "JWT_SECRET",
                    "at least 32 bytes in production (e.g. `openssl rand -base64 48`)",
                );
                Secret::new(v)
            }
            Some(v) => Secret::new(v),
            None if production => {
                r.secret_problem(
                    "JWT_SECRET",
                    "a random secret of at least 32 bytes; it is required in production",
                );
                Secret::new(String::new())
            }
            // Development: a per-process random secret, so nothing guessable signs tokens.
            None => Secret::new(random_hex(32)),
        };

        let jwt_issuer = r.raw("JWT_ISSUER").unwrap_or_else(|| "sesame".to_owned());
        let jwt_audience = r.raw("JWT_AUDIENCE").unwrap_or_else(|| "sesame".to_owned());
        let access_token_expiry = r.duration("ACCESS_TOKEN_EXPIRY", "1h", Duration::from_secs(1));
        let refresh_token_expiry = r.duration("REFRESH_TOKEN_EXPIRY", "30d", Duration::from_secs(1));
        let refresh_reuse_interval = r.duration("REFRESH_REUSE_INTERVAL", "10s", Duration::ZERO);
        let session_max_age = match r.raw("SESSION_MAX_AGE") {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("none") => None,
            Some(_) => Some(r.duration("SESSION_MAX_AGE", "90d", Duration::from_secs(60))),
        };
        let jwt_private_key_file = r.raw("JWT_PRIVATE_KEY_FILE").map(PathBuf::from);
        let jwt_previous_public_key_files: Vec<PathBuf> = r
            .raw("JWT_PREVIOUS_PUBLIC_KEY_FILES")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect()
            })
            .unwrap_or_default();
        if jwt_private_key_file.is_none() && !jwt_previous_public_key_files.is_empty() {
            r.problem(
                "JWT_PREVIOUS_PUBLIC_KEY_FILES",
                "to be used together with JWT_PRIVATE_KEY_FILE (EdDSA signing)",
                None,
            );
        }
        let otp_length = r.int_in("OTP_LENGTH", 6, 4, 10);
        let otp_expiry = r.duration("OTP_EXPIRY", "10m", Duration::from_secs(1));
        let otp_max_attempts = r.int_in("OTP_MAX_ATTEMPTS", 5, 1, 100);
        let otp_secret = match r.raw("OTP_SECRET") {
            Some(v) if production && v.len() < MIN_JWT_SECRET_BYTES => {
                r.secret_problem(
                    "OTP_SECRET",
                    "at least 32 bytes in production, or unset to derive it from JWT_SECRET",
                );
                Secret::new(v)
            }
            Some(v) => Secret::new(v),
            None => Secret::new(format!("sesame-otp-pepper:{}", jwt_secret.expose())),
        };
        let otp_hash_memory_kib = r.int_in("OTP_HASH_MEMORY_KIB", 512, 8, 4 * 1024 * 1024);
        let otp_hash_iterations = r.int_in("OTP_HASH_ITERATIONS", 1, 1, 100);
        let magic_link_expiry = r.duration("MAGIC_LINK_EXPIRY", "15m", Duration::from_secs(1));
        let allow_signup = r.bool("ALLOW_SIGNUP", true);

        let frontend_url = r.http_url("FRONTEND_URL", "http://localhost:3000");
        let redirect_allow_list = r.origins("REDIRECT_ALLOW_LIST").unwrap_or_default();
        let cors_allowed_origins = r
            .origins("CORS_ALLOWED_ORIGINS")
            .unwrap_or_else(|| vec![origin_of(&frontend_url)]);

        let email_provider = match r.raw("EMAIL_PROVIDER") {
            None if production => {
                r.problem("EMAIL_PROVIDER", "`smtp` or `resend` (required in production)", None);
                EmailProvider::Console
            }
            None => EmailProvider::Console,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "console" if production => {
                    r.problem(
                        "EMAIL_PROVIDER",
                        "`smtp` or `resend`; `console` prints codes to the log and is refused in production",
                        Some(&v),
                    );
                    EmailProvider::Console
                }
                "console" => EmailProvider::Console,
                "smtp" => EmailProvider::Smtp,
                "resend" => EmailProvider::Resend,
                _ => {
                    r.problem("EMAIL_PROVIDER", "`console`, `smtp` or `resend`", Some(&v));
                    EmailProvider::Console
                }
            },
        };
        let smtp_url = match r.raw("SMTP_URL") {
            None => None,
            Some(v) => {
                let ok = Url::parse(&v)
                    .map(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some())
                    .unwrap_or(false);
                if !ok {
                    r.secret_problem(
                        "SMTP_URL",
                        "a URL such as smtp://127.0.0.1:2525 or smtps://user:pass@host:465",
                    );
                }
                Some(Secret::new(v))
            }
        };
        if email_provider == EmailProvider::Smtp && smtp_url.is_none() {
            r.problem(
                "SMTP_URL",
                "a URL such as smtp://127.0.0.1:2525 (required when EMAIL_PROVIDER=smtp)",
                None,
            );
        }
        let resend_api_key = r.raw("RESEND_API_KEY").map(Secret::new);
        if email_provider == EmailProvider::Resend && resend_api_key.is_none() {
            r.problem(
                "RESEND_API_KEY",
                "your Resend API key (required when EMAIL_PROVIDER=resend)",
                None,
            );
        }
        let resend_api_url = r.http_url("RESEND_API_URL", "https://api.resend.com");
        let from_email = match r.raw("FROM_EMAIL") {
            Some(v) if v.contains('@') && !v.contains(['\r', '\n']) => v,
            Some(v) => {
                r.problem(
                    "FROM_EMAIL",
                    "a sender address such as `Sesame <noreply@example.com>`",
                    Some(&v),
                );
                v
            }
            None if production => {
                r.problem(
                    "FROM_EMAIL",
                    "a sender address such as `noreply@example.com` (required in production)",
                    None,
                );
                String::new()
            }
            None => "sesame@localhost".to_owned(),
        };

        let metrics_enabled = r.bool("METRICS_ENABLED", true);
        let metrics_format = r.choice(
            "METRICS_FORMAT",
            MetricsFormat::Console,
            &[
                ("console", MetricsFormat::Console),
                ("file", MetricsFormat::File),
                ("both", MetricsFormat::Both),
                ("none", MetricsFormat::None),
            ],
        );
        let metrics_file_path = PathBuf::from(
            r.raw("METRICS_FILE_PATH")
                .unwrap_or_else(|| "./logs/metrics.jsonl".to_owned()),
        );
        let cleanup_interval = r.duration("CLEANUP_INTERVAL", "1h", Duration::from_secs(1));
        let audit_retention = match r.raw("AUDIT_RETENTION") {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("forever") => None,
            Some(_) => Some(r.duration("AUDIT_RETENTION", "1d", Duration::from_secs(3600))),
        };

        let rate_limits = RateLimits {
            enabled: r.bool("RATE_LIMIT_ENABLED", true),
            send_interval: r.duration("RATE_LIMIT_SEND_INTERVAL", "60s", Duration::ZERO),
            send_per_address_per_hour: r.int_in("RATE_LIMIT_SEND_PER_ADDRESS_PER_HOUR", 10, 1, 1_000_000),
            send_per_ip_per_hour: r.int_in("RATE_LIMIT_SEND_PER_IP_PER_HOUR", 30, 1, 1_000_000),
            verify_per_ip_per_minute: r.int_in("RATE_LIMIT_VERIFY_PER_IP_PER_MINUTE", 30, 1, 1_000_000),
            refresh_per_ip_per_minute: r.int_in("RATE_LIMIT_REFRESH_PER_IP_PER_MINUTE", 300, 1, 1_000_000),
        };
        let trust_proxy_headers = r.bool("TRUST_PROXY_HEADERS", false);

        if !r.problems.is_empty() {
            return Err(ConfigError { problems: r.problems });
        }
        Ok(Self {
            app_env,
            host,
            port,
            database,
            database_max_connections,
            database_acquire_timeout,
            request_body_timeout,
            log_format,
            rust_log,
            jwt_secret,
            jwt_issuer,
            jwt_audience,
            access_token_expiry,
            refresh_token_expiry,
            refresh_reuse_interval,
            session_max_age,
            jwt_private_key_file,
            jwt_previous_public_key_files,
            otp_length,
            otp_expiry,
            otp_max_attempts,
            otp_secret,
            otp_hash_memory_kib,
            otp_hash_iterations,
            magic_link_expiry,
            allow_signup,
            frontend_url,
            redirect_allow_list,
            cors_allowed_origins,
            email_provider,
            smtp_url,
            resend_api_key,
            resend_api_url,
            from_email,
            metrics_enabled,
            metrics_format,
            metrics_file_path,
            cleanup_interval,
            audit_retention,
            rate_limits,
            trust_proxy_headers,
        })
    }

    /// The database to connect to, or an error naming the missing setting.
    pub fn database(&self) -> Result<&PgConnectOptions, ConfigError> {
        self.database.as_ref().ok_or_else(|| ConfigError {
            problems: vec![
                "DATABASE_URL: not set; expected a PostgreSQL URL such as postgres://user:pass@127.0.0.1:5432/sesame (scripts/dev.sh starts a private one)"
                    .to_owned(),
            ],
        })
    }
}

/// `scheme://host[:port]` of a URL, the form CORS and the allow-list compare.
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn random_hex(bytes: usize) -> String {
    // uuid v4 draws from the OS CSPRNG; two of them give 244 random bits.
    let mut s = String::with_capacity(bytes * 2);
    while s.len() < bytes * 2 {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(bytes * 2);
    s
}

/// Reads variables and collects every problem instead of stopping at the first.
struct Reader<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    /// The trimmed value; unset and empty both mean "use the default".
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, name: &str, expected: &str, got: Option<&str>) {
        self.problems.push(match got {
            Some(v) => format!("{name}: expected {expected}, got {v:?}"),
            None => format!("{name}: expected {expected}"),
        });
    }

    /// A problem with a secret: the value is not repeated.
    fn secret_problem(&mut self, name: &str, expected: &str) {
        self.problem(name, expected, None);
    }

    fn parse<T: FromStr>(&mut self, name: &str, default: T, expected: &str) -> T {
        match self.raw(name) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.problem(name, expected, Some(&v));
                default
            }),
        }
    }

    fn int_in(&mut self, name: &str, default: u32, min: u32, max: u32) -> u32 {
        let expected = format!("a whole number from {min} to {max}");
        match self.raw(name) {
            None => default,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (min..=max).contains(&n) => n,
                _ => {
                    self.problem(name, &expected, Some(&v));
                    default
                }
            },
        }
    }

    fn bool(&mut self, name: &str, default: bool) -> bool {
        match self.raw(name) {
            None => default,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    self.problem(name, "`true` or `false`", Some(&v));
                    default
                }
            },
        }
    }

    fn choice<T: Copy>(&mut self, name: &str, default: T, options: &[(&str, T)]) -> T {
        let Some(v) = self.raw(name) else {
            return default;
        };
        if let Some((_, t)) = options.iter().find(|(k, _)| k.eq_ignore_ascii_case(&v)) {
            return *t;
        }
        let names: Vec<String> = options.iter().map(|(k, _)| format!("`{k}`")).collect();
        self.problem(name, &format!("one of {}", names.join(", ")), Some(&v));
        default
    }

    /// A duration such as `90s`, `15m`, `1h`, `30d` (a bare number is seconds).
    fn duration(&mut self, name: &str, default: &str, min: Duration) -> Duration {
        let fallback = parse_duration(default).unwrap_or(min);
        let Some(v) = self.raw(name) else {
            return fallback;
        };
        match parse_duration(&v) {
            Some(d) if d >= min && d <= MAX_DURATION => d,
            _ => {
                let expected = if min.is_zero() {
                    "a duration such as 30s, 15m, 1h or 30d, at most 3650d".to_owned()
                } else {
                    format!(
                        "a duration such as 30s, 15m, 1h or 30d, at least {} and at most 3650d",
                        humantime::format_duration(min)
                    )
                };
                self.problem(name, &expected, Some(&v));
                fallback
            }
        }
    }

    #[expect(
        clippy::expect_used,
        reason = "defaults are literals checked by defaults_match_the_spec"
    )]
    fn http_url(&mut self, name: &str, default: &str) -> Url {
        let fallback = Url::parse(default).expect("default URL is valid");
        let Some(v) = self.raw(name) else {
            return fallback;
        };
        match Url::parse(&v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                self.problem(
                    name,
                    "an absolute http(s) URL such as https://app.example.com",
                    Some(&v),
                );
                fallback
            }
        }
    }

    /// A comma-separated list of origins (`https://app.example.com`); `None` when unset.
    fn origins(&mut self, name: &str) -> Option<Vec<String>> {
        let v = self.raw(name)?;
        let mut out = Vec::new();
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match Url::parse(item) {
                Ok(u)
                    if matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && matches!(u.path(), "" | "/")
                        && u.query().is_none() =>
                {
                    out.push(origin_of(&u))
                }
                _ => self.problem(
                    name,
                    "a comma-separated list of origins such as https://app.example.com,http://localhost:3000",
                    Some(item),
                ),
            }
        }
        Some(out)
    }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn problems(vars: &[(&str, &str)]) -> Vec<String> {
        match load(vars) {
            Ok(_) => panic!("expected {vars:?} to be refused"),
            Err(e) => e.problems,
        }
    }

    const PROD_OK: &[(&str, &str)] = &[
        ("APP_ENV", "production"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef-long-enough"),
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_URL", "smtp://127.0.0.1:2525"),
        ("FROM_EMAIL", "noreply@example.com"),
    ];

    fn prod_with(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = PROD_OK
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .copied()
            .collect();
        v.extend(overrides.iter().filter(|(_, val)| !val.is_empty()).copied());
        v
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = load(&[]).expect("empty environment is a valid development config");
        assert_eq!(c.app_env, AppEnv::Development);
        assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.port, 3001);
        assert!(c.database.is_none());
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.rust_log, "info");
        assert_eq!(c.access_token_expiry, Duration::from_secs(3600));
        assert_eq!(c.refresh_token_expiry, Duration::from_secs(30 * 86_400));
        assert_eq!(c.refresh_reuse_interval, Duration::from_secs(10));
        assert_eq!(c.session_max_age, None);
        assert!(c.jwt_private_key_file.is_none() && c.jwt_previous_public_key_files.is_empty());
        assert_eq!(c.otp_length, 6);
        assert_eq!(c.otp_expiry, Duration::from_secs(600));
        assert_eq!(c.otp_max_attempts, 5);
        assert_eq!(c.magic_link_expiry, Duration::from_secs(900));
        assert!(c.allow_signup);
        assert_eq!((c.jwt_issuer.as_str(), c.jwt_audience.as_str()), ("sesame", "sesame"));
        assert_eq!(c.frontend_url.as_str(), "http://localhost:3000/");
        assert_eq!(c.cors_allowed_origins, vec!["http://localhost:3000".to_owned()]);
        assert_eq!(c.email_provider, EmailProvider::Console);
        assert!(c.metrics_enabled);
        assert_eq!(c.metrics_format, MetricsFormat::Console);
        assert_eq!(c.metrics_file_path, PathBuf::from("./logs/metrics.jsonl"));
        assert_eq!(c.cleanup_interval, Duration::from_secs(3600));
        assert_eq!(c.audit_retention, None);
        let c = load(&[("AUDIT_RETENTION", "90d")]).expect("valid");
        assert_eq!(c.audit_retention, Some(Duration::from_secs(90 * 86_400)));
        assert!(c.rate_limits.enabled);
        assert_eq!(c.rate_limits.send_interval, Duration::from_secs(60));
        assert_eq!(c.rate_limits.send_per_address_per_hour, 10);
        assert_eq!(c.rate_limits.send_per_ip_per_hour, 30);
        assert_eq!(c.rate_limits.verify_per_ip_per_minute, 30);
        assert!(!c.trust_proxy_headers);
        assert!(
            c.jwt_secret.expose().len() >= MIN_JWT_SECRET_BYTES,
            "development generates a strong secret"
        );
    }

    #[test]
    fn a_valid_production_config_loads() {
        let c = load(PROD_OK).expect("valid production config");
        assert_eq!(c.app_env, AppEnv::Production);
        assert_eq!(c.email_provider, EmailProvider::Smtp);
    }

    #[test]
    fn each_bad_value_names_its_variable_and_the_expected_form() {
        let cases: &[(&str, &str, &str)] = &[
            ("APP_ENV", "staging", "`development` or `production`"),
            ("HOST", "localhost:80", "an IP address"),
            ("PORT", "70000", "a port number"),
            ("PORT", "abc", "a port number"),
            ("DATABASE_URL", "mysql://x", "a PostgreSQL URL"),
            ("DATABASE_MAX_CONNECTIONS", "0", "a whole number from 1 to 1000"),
            ("DATABASE_ACQUIRE_TIMEOUT", "soon", "a duration"),
            ("REQUEST_BODY_TIMEOUT", "0", "a duration"),
            ("LOG_FORMAT", "xml", "one of `pretty`, `json`"),
            ("RUST_LOG", "info,[", "a tracing filter"),
            ("ACCESS_TOKEN_EXPIRY", "1 fortnight", "a duration"),
            ("ACCESS_TOKEN_EXPIRY", "0s", "at least 1s"),
            ("REFRESH_TOKEN_EXPIRY", "-5", "a duration"),
            ("REFRESH_REUSE_INTERVAL", "ten", "a duration"),
            ("REFRESH_TOKEN_EXPIRY", "100000y", "at most 3650d"),
            ("RATE_LIMIT_SEND_INTERVAL", "99999999999999", "at most 3650d"),
            ("SESSION_MAX_AGE", "10s", "at least 1m"),
            (
                "JWT_PREVIOUS_PUBLIC_KEY_FILES",
                "old.pem",
                "together with JWT_PRIVATE_KEY_FILE",
            ),
            ("OTP_LENGTH", "3", "a whole number from 4 to 10"),
            ("OTP_EXPIRY", "x", "a duration"),
            ("OTP_MAX_ATTEMPTS", "0", "a whole number from 1 to 100"),
            ("OTP_HASH_MEMORY_KIB", "4", "a whole number from 8 to"),
            ("OTP_HASH_ITERATIONS", "0", "a whole number from 1 to 100"),
            ("ALLOW_SIGNUP", "nope", "`true` or `false`"),
            ("MAGIC_LINK_EXPIRY", "1y2", "a duration"),
            ("FRONTEND_URL", "localhost:3000", "an absolute http(s) URL"),
            ("FRONTEND_URL", "ftp://example.com", "an absolute http(s) URL"),
            (
                "REDIRECT_ALLOW_LIST",
                "https://ok.example.com,not a url",
                "a comma-separated list of origins",
            ),
            (
                "REDIRECT_ALLOW_LIST",
                "https://example.com/path",
                "a comma-separated list of origins",
            ),
            ("CORS_ALLOWED_ORIGINS", "*", "a comma-separated list of origins"),
            ("EMAIL_PROVIDER", "pigeon", "`console`, `smtp` or `resend`"),
            ("SMTP_URL", "http://mail", "smtp://"),
            ("RESEND_API_URL", "api.resend.com", "an absolute http(s) URL"),
            ("FROM_EMAIL", "nobody", "a sender address"),
            ("METRICS_ENABLED", "maybe", "`true` or `false`"),
            ("METRICS_FORMAT", "syslog", "one of `console`, `file`, `both`, `none`"),
            ("CLEANUP_INTERVAL", "0", "at least 1s"),
            ("AUDIT_RETENTION", "10m", "at least 1h"),
            ("AUDIT_RETENTION", "always", "a duration"),
            ("RATE_LIMIT_ENABLED", "2", "`true` or `false`"),
            ("RATE_LIMIT_SEND_INTERVAL", "later", "a duration"),
            ("RATE_LIMIT_SEND_PER_ADDRESS_PER_HOUR", "0", "a whole number"),
            ("RATE_LIMIT_SEND_PER_IP_PER_HOUR", "-1", "a whole number"),
            ("RATE_LIMIT_VERIFY_PER_IP_PER_MINUTE", "many", "a whole number"),
            ("RATE_LIMIT_REFRESH_PER_IP_PER_MINUTE", "1.5", "a whole number"),
            ("TRUST_PROXY_HEADERS", "sometimes", "`true` or `false`"),
        ];
        for (name, value, expected) in cases {
            let p = problems(&[(name, value)]);
            assert_eq!(p.len(), 1, "{name}={value}: {p:?}");
            assert!(
                p[0].starts_with(&format!("{name}: expected")),
                "{name}={value}: {}",
                p[0]
            );
            assert!(p[0].contains(expected), "{name}={value}: {} lacks {expected:?}", p[0]);
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let p = problems(&[("PORT", "x"), ("OTP_LENGTH", "99"), ("LOG_FORMAT", "xml")]);
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn production_refuses_a_missing_short_or_example_jwt_secret() {
        for secret in ["", "too-short", EXAMPLE_JWT_SECRET] {
            let p = problems(&prod_with(&[("JWT_SECRET", secret)]));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].starts_with("JWT_SECRET: expected"), "{}", p[0]);
            if !secret.is_empty() {
                assert!(!p[0].contains(secret), "the secret must not be echoed: {}", p[0]);
            }
        }
    }

    #[test]
    fn development_accepts_any_jwt_secret() {
        let c = load(&[("JWT_SECRET", "short")]).expect("development allows a short secret");
        assert_eq!(c.jwt_secret.expose(), "short");
    }

    #[test]
    fn production_refuses_console_email_and_needs_a_sender() {
        let p = problems(&prod_with(&[("EMAIL_PROVIDER", "console"), ("SMTP_URL", "")]));
        assert!(p.iter().any(|m| m.starts_with("EMAIL_PROVIDER: expected")), "{p:?}");
        let p = problems(&prod_with(&[("FROM_EMAIL", "")]));
        assert!(p.iter().any(|m| m.starts_with("FROM_EMAIL: expected")), "{p:?}");
    }

    #[test]
    fn a_transport_needs_its_settings() {
        let p = problems(&[("EMAIL_PROVIDER", "smtp")]);
        assert_eq!(
            p,
            vec!["SMTP_URL: expected a URL such as smtp://127.0.0.1:2525 (required when EMAIL_PROVIDER=smtp)"]
        );
        let p = problems(&[("EMAIL_PROVIDER", "resend")]);
        assert_eq!(
            p,
            vec!["RESEND_API_KEY: expected your Resend API key (required when EMAIL_PROVIDER=resend)"]
        );
    }

    #[test]
    fn secrets_are_not_echoed_or_debug_printed() {
        let p = problems(&[("SMTP_URL", "ftp://user:hunter2@mail")]);
        assert!(!p[0].contains("hunter2"), "{}", p[0]);
        let c = load(&[("JWT_SECRET", "hunter2-hunter2")]).expect("valid");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn node_env_is_read_when_app_env_is_unset() {
        let mut vars = prod_with(&[("APP_ENV", "")]);
        vars.push(("NODE_ENV", "production"));
        assert_eq!(load(&vars).expect("valid").app_env, AppEnv::Production);
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("soon"), None);
        for (secs, text) in [(30 * 86_400, "30d"), (3600, "1h"), (900, "15m"), (90, "90s"), (0, "0s")] {
            assert_eq!(compact_duration(Duration::from_secs(secs)), text);
        }
    }

    #[test]
    fn origin_lists_are_normalised() {
        let c = load(&[(
            "REDIRECT_ALLOW_LIST",
            " https://App.example.com/ , http://localhost:5173 ",
        )])
        .expect("valid");
        assert_eq!(
            c.redirect_allow_list,
            vec!["https://app.example.com", "http://localhost:5173"]
        );
    }

    /// `.env.example` lists every setting the code reads, and its values are the defaults.
    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let example: HashMap<String, String> = include_str!("../.env.example")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let source = include_str!("config.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let read: Vec<&str> = code
            .split('"')
            .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .filter(|w| w.contains('_') || *w == "PORT" || *w == "HOST")
            .collect();
        assert!(read.len() >= 35, "found only {read:?}");
        for name in &read {
            if *name == "NODE_ENV" {
                continue; // a fallback alias of APP_ENV
            }
            assert!(example.contains_key(*name), ".env.example lacks {name}");
        }
        for name in example.keys() {
            assert!(
                read.contains(&name.as_str()),
                ".env.example lists {name}, which the code does not read"
            );
        }
        let from_example = Config::from_lookup(|k| example.get(k).cloned()).expect(".env.example is a valid config");
        let defaults = load(&[]).expect("defaults");
        let (mut a, mut b) = (from_example, defaults);
        (a.database, b.database) = (None, None);
        (a.jwt_secret, b.jwt_secret) = (Secret::new(""), Secret::new(""));
        (a.otp_secret, b.otp_secret) = (Secret::new(""), Secret::new(""));
        assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            ".env.example values must be the defaults"
        );
    }
}
