//! Reading each section of [`Config`](super::Config): variable names, defaults, and
//! the checks that span variables. Every section reads through the one shared
//! [`Reader`], so its problems join the others'; what a section needs from another
//! (the environment, `JWT_SECRET`, `FRONTEND_URL`) arrives as a parameter.

use std::{net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use sqlx::postgres::PgConnectOptions;
use url::Url;

use super::{
    AdminSettings, AppEnv, AuditSettings, DESIGN_EXAMPLE_JWT_SECRET, DatabaseSettings, EXAMPLE_JWT_SECRET,
    EmailProvider, EmailSettings, LogFormat, LoginSettings, MIN_ADMIN_TOKEN_BYTES, MIN_JWT_SECRET_BYTES, MetricsFormat,
    RateLimits, Secret, ServerSettings, TokenSettings, WebhookEvents, WebhookSettings, origin_of, reader::Reader,
};

/// `APP_ENV` (`NODE_ENV` when unset): read first, since production tightens other checks.
pub(super) fn app_env(r: &mut Reader<'_>) -> AppEnv {
    match r.raw("APP_ENV").or_else(|| r.raw("NODE_ENV")) {
        None => AppEnv::Development,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "development" | "dev" | "test" => AppEnv::Development,
            "production" | "prod" => AppEnv::Production,
            _ => {
                r.problem("APP_ENV", "`development` or `production`", Some(&v));
                AppEnv::Development
            }
        },
    }
}

impl ServerSettings {
    /// `frontend_url` gives the default CORS origin.
    pub(super) fn read(r: &mut Reader<'_>, app_env: AppEnv, frontend_url: &Url) -> Self {
        Self {
            app_env,
            host: r.parse(
                "HOST",
                IpAddr::from([127, 0, 0, 1]),
                "an IP address such as 127.0.0.1 or 0.0.0.0",
            ),
            port: r.parse("PORT", 3001u16, "a port number from 0 to 65535"),
            request_body_timeout: r.duration("REQUEST_BODY_TIMEOUT", "10s", Duration::from_millis(100)),
            log_format: r.choice(
                "LOG_FORMAT",
                LogFormat::Pretty,
                &[("pretty", LogFormat::Pretty), ("json", LogFormat::Json)],
            ),
            rust_log: rust_log(r),
            trust_proxy_headers: r.bool("TRUST_PROXY_HEADERS", false),
            cors_allowed_origins: r
                .origins("CORS_ALLOWED_ORIGINS")
                .unwrap_or_else(|| vec![origin_of(frontend_url)]),
        }
    }
}

fn rust_log(r: &mut Reader<'_>) -> String {
    let rust_log = r.string("RUST_LOG", "info");
    if tracing_subscriber::EnvFilter::try_new(&rust_log).is_err() {
        r.problem(
            "RUST_LOG",
            "a tracing filter such as `info` or `sesame=debug,info`",
            Some(&rust_log),
        );
    }
    rust_log
}

impl DatabaseSettings {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        let mut hosts = database_url(r).into_iter();
        Self {
            url: hosts.next(),
            other_hosts: hosts.collect(),
            max_connections: r.int_in("DATABASE_MAX_CONNECTIONS", 10, 1, 1000),
            acquire_timeout: r.duration("DATABASE_ACQUIRE_TIMEOUT", "3s", Duration::from_millis(100)),
            statement_cache: r.int_in("DATABASE_STATEMENT_CACHE", 100, 0, 10_000),
        }
    }
}

/// One set of options per host of `DATABASE_URL`, in order (none when unset).
/// The URL holds a password: a bad one is not echoed.
fn database_url(r: &mut Reader<'_>) -> Vec<PgConnectOptions> {
    let Some(v) = r.raw("DATABASE_URL") else {
        return Vec::new();
    };
    let hosts = (v.starts_with("postgres://") || v.starts_with("postgresql://"))
        .then(|| split_hosts(&v))
        .flatten()
        .and_then(|urls| {
            urls.iter()
                .map(|u| PgConnectOptions::from_str(u).ok())
                .collect::<Option<Vec<_>>>()
        });
    hosts.unwrap_or_else(|| {
        r.secret_problem(
            "DATABASE_URL",
            "a PostgreSQL URL such as postgres://user:pass@127.0.0.1:5432/sesame, or with several hosts postgres://user:pass@db1:5432,db2:5432/sesame",
        );
        Vec::new()
    })
}

/// One single-host URL per host of a multi-host URL, in order, each with the
/// same user, database and parameters: `postgres://u@a:1,b/db?x=y` gives
/// `postgres://u@a:1/db?x=y` and `postgres://u@b/db?x=y` (libpq's form; sqlx
/// reads one host only). A URL with one host comes back as it is; `None` when a
/// host between commas is empty.
pub(super) fn split_hosts(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // The user and password end at the last `@` (a password may hold a comma).
    let (userinfo, hosts) = authority.split_at(authority.rfind('@').map_or(0, |i| i + 1));
    if !hosts.contains(',') {
        return Some(vec![url.to_owned()]);
    }
    hosts
        .split(',')
        .map(|host| (!host.is_empty()).then(|| format!("{scheme}://{userinfo}{host}{tail}")))
        .collect()
}

impl TokenSettings {
    pub(super) fn read(r: &mut Reader<'_>, app_env: AppEnv) -> Self {
        let jwt_secret = jwt_secret(r, app_env);
        let jwt_issuer = r.string("JWT_ISSUER", "sesame");
        let jwt_audience = r.string("JWT_AUDIENCE", "sesame");
        let access_token_expiry = r.duration("ACCESS_TOKEN_EXPIRY", "1h", Duration::from_secs(1));
        let refresh_token_expiry = r.duration("REFRESH_TOKEN_EXPIRY", "30d", Duration::from_secs(1));
        let refresh_reuse_interval = r.duration("REFRESH_REUSE_INTERVAL", "10s", Duration::ZERO);
        let session_max_age = r.optional_duration("SESSION_MAX_AGE", "none", "90d", Duration::from_secs(60));
        let jwt_private_key_file = r.raw("JWT_PRIVATE_KEY_FILE").map(PathBuf::from);
        let jwt_previous_public_key_files = previous_public_key_files(r, jwt_private_key_file.is_some());
        Self {
            jwt_secret,
            jwt_issuer,
            jwt_audience,
            access_token_expiry,
            refresh_token_expiry,
            refresh_reuse_interval,
            session_max_age,
            jwt_private_key_file,
            jwt_previous_public_key_files,
        }
    }
}

/// Production refuses a missing, short or example secret (ours or the TypeScript
/// design's); development makes one up.
fn jwt_secret(r: &mut Reader<'_>, app_env: AppEnv) -> Secret {
    let production = app_env.is_production();
    match r.raw("JWT_SECRET") {
        Some(v) if production && (v == EXAMPLE_JWT_SECRET || v == DESIGN_EXAMPLE_JWT_SECRET) => {
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
    }
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

/// Retired keys only make sense next to a signing key of the same kind.
fn previous_public_key_files(r: &mut Reader<'_>, has_private_key: bool) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = r
        .raw("JWT_PREVIOUS_PUBLIC_KEY_FILES")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if !has_private_key && !files.is_empty() {
        r.problem(
            "JWT_PREVIOUS_PUBLIC_KEY_FILES",
            "to be used together with JWT_PRIVATE_KEY_FILE (EdDSA signing)",
            None,
        );
    }
    files
}

impl LoginSettings {
    /// `jwt_secret` seeds the OTP pepper when `OTP_SECRET` is unset.
    pub(super) fn read(r: &mut Reader<'_>, app_env: AppEnv, jwt_secret: &Secret) -> Self {
        Self {
            otp_length: r.int_in("OTP_LENGTH", 6, 4, 10),
            otp_expiry: r.duration("OTP_EXPIRY", "10m", Duration::from_secs(1)),
            otp_max_attempts: r.int_in("OTP_MAX_ATTEMPTS", 5, 1, 100),
            otp_secret: otp_secret(r, app_env, jwt_secret),
            otp_hash_memory_kib: r.int_in("OTP_HASH_MEMORY_KIB", 512, 8, 4 * 1024 * 1024),
            otp_hash_iterations: r.int_in("OTP_HASH_ITERATIONS", 1, 1, 100),
            magic_link_expiry: r.duration("MAGIC_LINK_EXPIRY", "15m", Duration::from_secs(1)),
            allow_signup: r.bool("ALLOW_SIGNUP", true),
            frontend_url: r.http_url("FRONTEND_URL", "http://localhost:3000"),
            redirect_allow_list: r.origins("REDIRECT_ALLOW_LIST").unwrap_or_default(),
        }
    }
}

/// The pepper of code hashes: set, or derived from `JWT_SECRET`.
fn otp_secret(r: &mut Reader<'_>, app_env: AppEnv, jwt_secret: &Secret) -> Secret {
    match r.raw("OTP_SECRET") {
        Some(v) if app_env.is_production() && v.len() < MIN_JWT_SECRET_BYTES => {
            r.secret_problem(
                "OTP_SECRET",
                "at least 32 bytes in production, or unset to derive it from JWT_SECRET",
            );
            Secret::new(v)
        }
        Some(v) => Secret::new(v),
        None => Secret::new(format!("sesame-otp-pepper:{}", jwt_secret.expose())),
    }
}

impl EmailSettings {
    /// Production needs a real transport and a sender; each transport needs its settings.
    pub(super) fn read(r: &mut Reader<'_>, app_env: AppEnv) -> Self {
        let resend_api_key = r.raw("RESEND_API_KEY").map(Secret::new);
        let provider = email_provider(r, app_env, resend_api_key.is_some());
        let smtp_url = smtp_url(r, app_env);
        if provider == EmailProvider::Smtp && smtp_url.is_none() {
            r.problem(
                "SMTP_URL",
                "a URL such as smtp://127.0.0.1:2525 (required when EMAIL_PROVIDER=smtp)",
                None,
            );
        }
        if provider == EmailProvider::Resend && resend_api_key.is_none() {
            r.problem(
                "RESEND_API_KEY",
                "your Resend API key (required when EMAIL_PROVIDER=resend)",
                None,
            );
        }
        let default_locale = default_locale(r);
        let templates_dir = templates_dir(r, &r.string("APP_NAME", "sesame"), &default_locale);
        Self {
            provider,
            smtp_url,
            resend_api_key,
            resend_api_url: r.http_url("RESEND_API_URL", "https://api.resend.com"),
            from_email: from_email(r, app_env),
            app_name: app_name(r),
            templates_dir,
            default_locale,
            smtp_ca_file: smtp_ca_file(r),
        }
    }
}

/// One line of text: it goes into subjects.
fn app_name(r: &mut Reader<'_>) -> String {
    let v = r.string("APP_NAME", "sesame");
    if v.contains(['\r', '\n']) || v.chars().count() > 100 {
        r.problem("APP_NAME", "one line of at most 100 characters", Some(&v));
    }
    v
}

/// A language tag such as `en`, `de` or `pt-BR`.
fn default_locale(r: &mut Reader<'_>) -> String {
    let v = r.string("EMAIL_DEFAULT_LOCALE", "en");
    crate::email::locale::parse_tag(&v).unwrap_or_else(|| {
        r.problem(
            "EMAIL_DEFAULT_LOCALE",
            "a language tag such as `en`, `de` or `pt-BR`",
            Some(&v),
        );
        "en".to_owned()
    })
}

/// The templates are loaded and rendered once here, so that a broken one
/// stops start-up naming its file and line.
fn templates_dir(r: &mut Reader<'_>, app_name: &str, default_locale: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(r.raw("EMAIL_TEMPLATES_DIR")?);
    if !dir.is_dir() {
        r.problem(
            "EMAIL_TEMPLATES_DIR",
            "a folder of templates",
            Some(&dir.display().to_string()),
        );
        return Some(dir);
    }
    if let Err(problems) = crate::email::templates::Templates::load(Some(&dir), app_name, default_locale) {
        for p in problems {
            r.line(format!("EMAIL_TEMPLATES_DIR: {p}"));
        }
    }
    Some(dir)
}

/// A readable PEM file with at least one certificate.
fn smtp_ca_file(r: &mut Reader<'_>) -> Option<PathBuf> {
    let path = PathBuf::from(r.raw("SMTP_CA_FILE")?);
    match std::fs::read_to_string(&path) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
        Ok(_) => r.problem(
            "SMTP_CA_FILE",
            "a PEM file of certificates (-----BEGIN CERTIFICATE-----)",
            Some(&path.display().to_string()),
        ),
        Err(e) => r.problem(
            "SMTP_CA_FILE",
            &format!("a readable PEM file ({e})"),
            Some(&path.display().to_string()),
        ),
    }
    Some(path)
}

/// Unset, a Resend key selects Resend, as in the TypeScript design; else console
/// (refused in production).
fn email_provider(r: &mut Reader<'_>, app_env: AppEnv, has_resend_key: bool) -> EmailProvider {
    let production = app_env.is_production();
    let Some(v) = r.raw("EMAIL_PROVIDER") else {
        if has_resend_key {
            return EmailProvider::Resend;
        }
        if production {
            r.problem(
                "EMAIL_PROVIDER",
                "`smtp` or `resend`, or a RESEND_API_KEY (required in production)",
                None,
            );
        }
        return EmailProvider::Console;
    };
    match v.to_ascii_lowercase().as_str() {
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
    }
}

/// The URL may hold a password: a bad one is not echoed. In production,
/// credentials travel only over TLS that cannot be stripped: `smtps://`, or
/// `smtp://…?tls=required` (with the default, opportunistic STARTTLS, a man in
/// the middle who removes the STARTTLS offer gets the password and every code).
fn smtp_url(r: &mut Reader<'_>, app_env: AppEnv) -> Option<Secret> {
    let v = r.raw("SMTP_URL")?;
    let Some(url) = Url::parse(&v)
        .ok()
        .filter(|u| matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some())
    else {
        r.secret_problem(
            "SMTP_URL",
            "a URL such as smtp://127.0.0.1:2525 or smtps://user:pass@host:465",
        );
        return Some(Secret::new(v));
    };
    let has_credentials = !url.username().is_empty() || url.password().is_some();
    let tls_required = url.scheme() == "smtps" || url.query_pairs().any(|(k, v)| k == "tls" && v == "required");
    if app_env.is_production() && has_credentials && !tls_required {
        r.secret_problem(
            "SMTP_URL",
            "TLS that cannot be stripped when it carries credentials in production: \
             smtps://user:pass@host:465 or smtp://user:pass@host:587?tls=required",
        );
    }
    Some(Secret::new(v))
}

/// One line with an `@`: the header it becomes must not be split.
fn from_email(r: &mut Reader<'_>, app_env: AppEnv) -> String {
    match r.raw("FROM_EMAIL") {
        Some(v) if v.contains('@') && !v.contains(['\r', '\n']) => v,
        Some(v) => {
            r.problem(
                "FROM_EMAIL",
                "a sender address such as `Sesame <noreply@example.com>`",
                Some(&v),
            );
            v
        }
        None if app_env.is_production() => {
            r.problem(
                "FROM_EMAIL",
                "a sender address such as `noreply@example.com` (required in production)",
                None,
            );
            String::new()
        }
        None => "sesame@localhost".to_owned(),
    }
}

impl AuditSettings {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        Self {
            metrics_enabled: r.bool("METRICS_ENABLED", true),
            metrics_format: r.choice(
                "METRICS_FORMAT",
                // Both, so that every event reaches the file as well as the table; the
                // TypeScript design's default was `console`.
                MetricsFormat::Both,
                &[
                    ("console", MetricsFormat::Console),
                    ("file", MetricsFormat::File),
                    ("both", MetricsFormat::Both),
                    ("none", MetricsFormat::None),
                ],
            ),
            metrics_file_path: PathBuf::from(r.string("METRICS_FILE_PATH", "./logs/metrics.jsonl")),
            cleanup_interval: r.duration("CLEANUP_INTERVAL", "1h", Duration::from_secs(1)),
            audit_retention: r.optional_duration("AUDIT_RETENTION", "forever", "1d", Duration::from_secs(3600)),
        }
    }
}

impl RateLimits {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        Self {
            enabled: r.bool("RATE_LIMIT_ENABLED", true),
            send_interval: r.duration("RATE_LIMIT_SEND_INTERVAL", "60s", Duration::ZERO),
            send_per_address_per_hour: r.int_in("RATE_LIMIT_SEND_PER_ADDRESS_PER_HOUR", 10, 1, 1_000_000),
            send_per_ip_per_hour: r.int_in("RATE_LIMIT_SEND_PER_IP_PER_HOUR", 30, 1, 1_000_000),
            verify_per_ip_per_minute: r.int_in("RATE_LIMIT_VERIFY_PER_IP_PER_MINUTE", 30, 1, 1_000_000),
            refresh_per_ip_per_minute: r.int_in("RATE_LIMIT_REFRESH_PER_IP_PER_MINUTE", 300, 1, 1_000_000),
            default_per_ip_per_minute: r.int_in("RATE_LIMIT_DEFAULT_PER_IP_PER_MINUTE", 600, 0, 1_000_000),
            emails_per_hour: r.int_in("RATE_LIMIT_EMAILS_PER_HOUR", 1000, 0, 100_000_000),
            ipv6_prefix: ipv6_prefix(r),
        }
    }
}

/// `RATE_LIMIT_IPV6_PREFIX`: 1 to 128 bits (a /64 is what one host usually gets).
fn ipv6_prefix(r: &mut Reader<'_>) -> u8 {
    u8::try_from(r.int_in("RATE_LIMIT_IPV6_PREFIX", 64, 1, 128)).unwrap_or(64)
}

/// `WEBHOOK_EVENTS` when unset: sign-ups, deletions, and stolen refresh tokens.
pub const DEFAULT_WEBHOOK_EVENTS: &str = "user.created,admin.user.deleted,admin.user.disabled,token.reuse_detected";

impl WebhookSettings {
    pub(super) fn read(r: &mut Reader<'_>) -> Self {
        let urls = webhook_urls(r);
        let secret = webhook_secret(r);
        if !urls.is_empty() && secret.is_none() {
            r.secret_problem(
                "WEBHOOK_SECRET",
                "a signing secret `whsec_` + base64 of at least 24 random bytes when WEBHOOK_URLS is set \
                 (e.g. `whsec_$(openssl rand -base64 32)`)",
            );
        }
        Self {
            urls,
            secret,
            events: webhook_events(r),
            timeout: r.duration("WEBHOOK_TIMEOUT", "5s", Duration::from_millis(100)),
            max_age: r.duration("WEBHOOK_MAX_AGE", "24h", Duration::from_secs(1)),
        }
    }
}

fn webhook_urls(r: &mut Reader<'_>) -> Vec<Url> {
    let Some(v) = r.raw("WEBHOOK_URLS") else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Url::parse(item) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => urls.push(u),
            _ => r.problem(
                "WEBHOOK_URLS",
                "a comma-separated list of absolute http(s) URLs such as https://app.example.com/hooks/sesame",
                Some(item),
            ),
        }
    }
    urls
}

fn webhook_secret(r: &mut Reader<'_>) -> Option<Secret> {
    let v = r.raw("WEBHOOK_SECRET")?;
    if crate::webhooks::signature::secret_key(&v).is_none() {
        r.secret_problem(
            "WEBHOOK_SECRET",
            "`whsec_` followed by the base64 of at least 24 random bytes (the Standard Webhooks format)",
        );
    }
    Some(Secret::new(v))
}

/// `*`, or known event names (the admin ones are sent once the admin API records them).
fn webhook_events(r: &mut Reader<'_>) -> WebhookEvents {
    let raw = r.raw("WEBHOOK_EVENTS");
    let v = raw.as_deref().unwrap_or(DEFAULT_WEBHOOK_EVENTS);
    if v == "*" {
        return WebhookEvents::All;
    }
    let known = |name: &str| {
        crate::audit::Event::ALL.iter().any(|e| e.as_str() == name)
            || DEFAULT_WEBHOOK_EVENTS.split(',').any(|d| d == name)
    };
    let mut names = Vec::new();
    for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if known(name) {
            names.push(name.to_owned());
        } else {
            r.problem(
                "WEBHOOK_EVENTS",
                "`*` or a comma-separated list of event names from docs/API.md such as user.created,token.reuse_detected",
                Some(name),
            );
        }
    }
    WebhookEvents::Only(names)
}

impl AdminSettings {
    /// `ADMIN_PORT=0` turns the listener off. In production an admin listener on a
    /// non-loopback address needs `ADMIN_TOKEN`: its metrics tell who has accounts.
    pub(super) fn read(r: &mut Reader<'_>, app_env: AppEnv) -> Self {
        let host: IpAddr = r.parse(
            "ADMIN_HOST",
            IpAddr::from([127, 0, 0, 1]),
            "an IP address such as 127.0.0.1 or 10.0.0.5",
        );
        let port = match r.parse(
            "ADMIN_PORT",
            3002u16,
            "a port number from 1 to 65535, or 0 to turn it off",
        ) {
            0 => None,
            p => Some(p),
        };
        let token = r.raw("ADMIN_TOKEN").map(Secret::new);
        if token.as_ref().is_some_and(|t| t.expose().len() < MIN_ADMIN_TOKEN_BYTES) {
            r.secret_problem("ADMIN_TOKEN", "at least 32 bytes, e.g. `openssl rand -hex 32`");
        }
        if app_env.is_production() && port.is_some() && !host.is_loopback() && token.is_none() {
            r.problem(
                "ADMIN_TOKEN",
                "a token of at least 32 bytes when ADMIN_HOST is not a loopback address in production \
                 (or ADMIN_HOST=127.0.0.1, or ADMIN_PORT=0 to turn the admin listener off)",
                None,
            );
        }
        Self { host, port, token }
    }
}
