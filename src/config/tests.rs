//! Unit tests of reading settings: the defaults, each refusal and its message, and the
//! agreement of the code, its field docs and `.env.example`.

use std::{collections::HashMap, str::FromStr as _};

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
    assert_eq!(c.server.app_env, AppEnv::Development);
    assert_eq!(c.server.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(c.server.port, 3001);
    assert!(c.database.url.is_none());
    assert_eq!(c.server.log_format, LogFormat::Pretty);
    assert_eq!(c.server.rust_log, "info");
    assert_eq!(c.tokens.access_token_expiry, Duration::from_secs(3600));
    assert_eq!(c.tokens.refresh_token_expiry, Duration::from_secs(30 * 86_400));
    assert_eq!(c.tokens.refresh_reuse_interval, Duration::from_secs(10));
    assert_eq!(c.tokens.session_max_age, None);
    assert!(c.tokens.jwt_private_key_file.is_none() && c.tokens.jwt_previous_public_key_files.is_empty());
    assert_eq!(c.login.otp_length, 6);
    assert_eq!(c.login.otp_expiry, Duration::from_secs(600));
    assert_eq!(c.login.otp_max_attempts, 5);
    assert_eq!(c.login.magic_link_expiry, Duration::from_secs(900));
    assert!(c.login.allow_signup);
    assert_eq!(
        (c.tokens.jwt_issuer.as_str(), c.tokens.jwt_audience.as_str()),
        ("sesame", "sesame")
    );
    assert_eq!(c.login.frontend_url.as_str(), "http://localhost:3000/");
    assert_eq!(c.server.cors_allowed_origins, vec!["http://localhost:3000".to_owned()]);
    assert_eq!(c.email.provider, EmailProvider::Console);
    assert!(c.audit.metrics_enabled);
    assert_eq!(c.audit.metrics_format, MetricsFormat::Both);
    assert_eq!(c.audit.metrics_file_path, PathBuf::from("./logs/metrics.jsonl"));
    assert_eq!(c.audit.cleanup_interval, Duration::from_secs(3600));
    assert_eq!(c.audit.audit_retention, None);
    let c = load(&[("AUDIT_RETENTION", "90d")]).expect("valid");
    assert_eq!(c.audit.audit_retention, Some(Duration::from_secs(90 * 86_400)));
    assert!(c.rate_limits.enabled);
    assert_eq!(c.rate_limits.send_interval, Duration::from_secs(60));
    assert_eq!(c.rate_limits.send_per_address_per_hour, 10);
    assert_eq!(c.rate_limits.send_per_ip_per_hour, 30);
    assert_eq!(c.rate_limits.verify_per_ip_per_minute, 30);
    assert_eq!(c.rate_limits.refresh_per_ip_per_minute, 300);
    assert_eq!(c.rate_limits.default_per_ip_per_minute, 600);
    assert_eq!(c.rate_limits.emails_per_hour, 1000);
    assert_eq!(c.rate_limits.ipv6_prefix, 64);
    assert!(!c.server.trust_proxy_headers);
    assert!(
        c.tokens.jwt_secret.expose().len() >= MIN_JWT_SECRET_BYTES,
        "development generates a strong secret"
    );
}

#[test]
fn a_valid_production_config_loads() {
    let c = load(PROD_OK).expect("valid production config");
    assert_eq!(c.server.app_env, AppEnv::Production);
    assert_eq!(c.email.provider, EmailProvider::Smtp);
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
        ("DATABASE_STATEMENT_CACHE", "-1", "a whole number from 0 to 10000"),
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
        (
            "RATE_LIMIT_DEFAULT_PER_IP_PER_MINUTE",
            "-1",
            "a whole number from 0 to 1000000",
        ),
        (
            "RATE_LIMIT_EMAILS_PER_HOUR",
            "lots",
            "a whole number from 0 to 100000000",
        ),
        ("RATE_LIMIT_IPV6_PREFIX", "0", "a whole number from 1 to 128"),
        ("RATE_LIMIT_IPV6_PREFIX", "129", "a whole number from 1 to 128"),
        ("RATE_LIMIT_IPV6_PREFIX", "/64", "a whole number from 1 to 128"),
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
    for secret in ["", "too-short", EXAMPLE_JWT_SECRET, DESIGN_EXAMPLE_JWT_SECRET] {
        let p = problems(&prod_with(&[("JWT_SECRET", secret)]));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("JWT_SECRET: expected"), "{}", p[0]);
        if !secret.is_empty() {
            assert!(!p[0].contains(secret), "the secret must not be echoed: {}", p[0]);
        }
    }
    assert!(
        DESIGN_EXAMPLE_JWT_SECRET.len() >= MIN_JWT_SECRET_BYTES,
        "the design's placeholder is long enough to pass the length check: only its own rule refuses it"
    );
    assert_eq!(
        DESIGN_EXAMPLE_JWT_SECRET,
        "your-super-secret-jwt-key-change-this-in-production"
    );
    load(&[("JWT_SECRET", DESIGN_EXAMPLE_JWT_SECRET)]).expect("development accepts it");
}

#[test]
fn development_accepts_any_jwt_secret() {
    let c = load(&[("JWT_SECRET", "short")]).expect("development allows a short secret");
    assert_eq!(c.tokens.jwt_secret.expose(), "short");
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
fn a_resend_key_without_a_provider_selects_resend_in_development_and_production() {
    let c = load(&[("RESEND_API_KEY", "re_123")]).expect("valid development config");
    assert_eq!(c.email.provider, EmailProvider::Resend);
    let c = load(&prod_with(&[("EMAIL_PROVIDER", ""), ("RESEND_API_KEY", "re_123")])).expect("valid production config");
    assert_eq!(c.email.provider, EmailProvider::Resend);
    // An explicit choice wins over the key.
    let c = load(&[("RESEND_API_KEY", "re_123"), ("EMAIL_PROVIDER", "console")]).expect("valid");
    assert_eq!(c.email.provider, EmailProvider::Console);
    let c = load(&prod_with(&[("RESEND_API_KEY", "re_123")])).expect("valid");
    assert_eq!(c.email.provider, EmailProvider::Smtp);
    // Without the key, production still needs a provider.
    let p = problems(&prod_with(&[("EMAIL_PROVIDER", "")]));
    assert!(p.iter().any(|m| m.starts_with("EMAIL_PROVIDER: expected")), "{p:?}");
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
    assert_eq!(load(&vars).expect("valid").server.app_env, AppEnv::Production);
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
        c.login.redirect_allow_list,
        vec!["https://app.example.com", "http://localhost:5173"]
    );
}

/// The settings `.env.example` assigns, name to value.
fn env_example() -> HashMap<String, String> {
    include_str!("../../.env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `.env.example` lists every setting the code reads, and its values are the defaults.
#[test]
fn env_example_lists_every_setting_with_its_default() {
    let example = env_example();
    let read: Vec<&str> = [
        include_str!("../config.rs"),
        include_str!("sections.rs"),
        include_str!("reader.rs"),
    ]
    .iter()
    .flat_map(|source| source.split('"'))
    .filter(|w| w.len() > 2 && w.starts_with(|c: char| c.is_ascii_uppercase()))
    .filter(|w| {
        w.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
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
    (a.database.url, b.database.url) = (None, None);
    (a.tokens.jwt_secret, b.tokens.jwt_secret) = (Secret::new(""), Secret::new(""));
    (a.login.otp_secret, b.login.otp_secret) = (Secret::new(""), Secret::new(""));
    assert_eq!(
        format!("{a:?}"),
        format!("{b:?}"),
        ".env.example values must be the defaults"
    );
}

/// Each setting has a field doc saying `(`NAME`, default VALUE …)`, and VALUE is the one
/// `.env.example` shows (whose `JWT_SECRET` and `DATABASE_URL` are examples, not defaults).
#[test]
fn field_docs_name_each_variable_and_its_default() {
    let docs: Vec<&str> = include_str!("../config.rs")
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("///"))
        .collect();
    for (name, value) in env_example() {
        let tag = format!("(`{name}`, default ");
        let Some(rest) = docs
            .iter()
            .find_map(|l| l.split_once(tag.as_str()).map(|(_, rest)| rest))
        else {
            panic!("no field doc says {tag}…)");
        };
        let mut documented = rest.split([' ', ',', ';', ')']).next().unwrap_or_default();
        if value.contains(',') {
            // A list default is written whole, without spaces.
            documented = rest.split([' ', ';', ')']).next().unwrap_or_default();
        }
        if !value.is_empty() && name != "JWT_SECRET" && name != "DATABASE_URL" {
            assert_eq!(documented, value, "the field doc of {name}");
        }
    }
}

#[test]
fn production_refuses_smtp_credentials_over_strippable_tls() {
    for refused in [
        "smtp://sesame:hunter2@mail.example.com:587",
        "smtp://sesame:hunter2@mail.example.com:587?tls=opportunistic",
        "smtp://sesame:hunter2@mail.example.com:25?tls=none",
        "smtp://sesame@mail.example.com:587",
    ] {
        let p = problems(&prod_with(&[("SMTP_URL", refused)]));
        assert_eq!(p.len(), 1, "{refused}: {p:?}");
        assert!(
            p[0].starts_with("SMTP_URL: expected TLS that cannot be stripped"),
            "{p:?}"
        );
        assert!(!p[0].contains("hunter2"), "the password is never echoed: {p:?}");
    }
    for accepted in [
        "smtps://sesame:hunter2@mail.example.com:465",
        "smtp://sesame:hunter2@mail.example.com:587?tls=required",
        // No credentials: nothing to steal but the mail itself.
        "smtp://127.0.0.1:2525",
    ] {
        assert!(load(&prod_with(&[("SMTP_URL", accepted)])).is_ok(), "{accepted}");
    }
    // Development keeps accepting a local sink with test credentials.
    assert!(load(&[("SMTP_URL", "smtp://user:pass@127.0.0.1:2525")]).is_ok());
}

#[test]
fn the_new_rate_limits_accept_zero_for_off_and_any_ipv6_prefix_length() {
    let c = load(&[
        ("RATE_LIMIT_DEFAULT_PER_IP_PER_MINUTE", "0"),
        ("RATE_LIMIT_EMAILS_PER_HOUR", "0"),
        ("RATE_LIMIT_IPV6_PREFIX", "128"),
    ])
    .expect("valid");
    assert_eq!(c.rate_limits.default_per_ip_per_minute, 0);
    assert_eq!(c.rate_limits.emails_per_hour, 0);
    assert_eq!(c.rate_limits.ipv6_prefix, 128);
    let c = load(&[("RATE_LIMIT_IPV6_PREFIX", "48"), ("RATE_LIMIT_EMAILS_PER_HOUR", "25")]).expect("valid");
    assert_eq!((c.rate_limits.ipv6_prefix, c.rate_limits.emails_per_hour), (48, 25));
}

#[test]
fn webhook_settings_default_to_none_and_refuse_bad_values_naming_the_variable() {
    let c = load(&[]).expect("defaults");
    assert!(c.webhooks.urls.is_empty() && c.webhooks.secret.is_none());
    assert_eq!(
        c.webhooks.events,
        WebhookEvents::Only(
            [
                "user.created",
                "admin.user.deleted",
                "admin.user.disabled",
                "token.reuse_detected"
            ]
            .map(str::to_owned)
            .to_vec()
        )
    );
    assert_eq!(c.webhooks.timeout, Duration::from_secs(5));
    assert_eq!(c.webhooks.max_age, Duration::from_secs(86_400));

    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let c = load(&[
        ("WEBHOOK_URLS", "https://a.example.com/hooks, http://127.0.0.1:9000/x"),
        ("WEBHOOK_SECRET", secret),
        ("WEBHOOK_EVENTS", "*"),
        ("WEBHOOK_TIMEOUT", "2s"),
        ("WEBHOOK_MAX_AGE", "1h"),
    ])
    .expect("valid");
    assert_eq!(c.webhooks.urls.len(), 2);
    assert_eq!(c.webhooks.events, WebhookEvents::All);
    assert!(c.webhooks.events.includes("auth.login"));
    assert_eq!(
        (c.webhooks.timeout, c.webhooks.max_age),
        (Duration::from_secs(2), Duration::from_secs(3600))
    );
    assert!(!format!("{c:?}").contains("MfKQ9r8"), "the secret is redacted");

    let refused = |vars: &[(&str, &str)], name: &str| {
        let p = problems(vars);
        assert!(p.iter().any(|l| l.starts_with(&format!("{name}: "))), "{vars:?}: {p:?}");
        assert!(
            !p.iter().any(|l| l.contains("MfKQ9r8") || l.contains("c2hvcnQ")),
            "secret echoed: {p:?}"
        );
    };
    refused(&[("WEBHOOK_URLS", "https://a.example.com/h")], "WEBHOOK_SECRET");
    refused(
        &[("WEBHOOK_URLS", "ftp://a.example.com/h"), ("WEBHOOK_SECRET", secret)],
        "WEBHOOK_URLS",
    );
    refused(
        &[("WEBHOOK_URLS", "not a url"), ("WEBHOOK_SECRET", secret)],
        "WEBHOOK_URLS",
    );
    refused(
        &[("WEBHOOK_SECRET", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        "WEBHOOK_SECRET",
    );
    refused(&[("WEBHOOK_SECRET", "whsec_c2hvcnQ=")], "WEBHOOK_SECRET");
    refused(&[("WEBHOOK_EVENTS", "user.created,user.exploded")], "WEBHOOK_EVENTS");
    refused(&[("WEBHOOK_TIMEOUT", "0s")], "WEBHOOK_TIMEOUT");
    refused(&[("WEBHOOK_MAX_AGE", "soon")], "WEBHOOK_MAX_AGE");
}

#[test]
fn the_admin_listener_defaults_to_loopback_port_3002_without_a_token() {
    let c = load(&[]).expect("defaults");
    assert_eq!(c.admin.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(c.admin.port, Some(3002));
    assert!(c.admin.token.is_none());
    let c = load(&[("ADMIN_PORT", "0")]).expect("0 turns it off");
    assert_eq!(c.admin.port, None);
    let c = load(&prod_with(&[])).expect("production on loopback needs no token");
    assert!(c.admin.token.is_none());
}

#[test]
fn an_admin_token_shorter_than_32_bytes_is_refused_without_echoing_it() {
    let p = problems(&[("ADMIN_TOKEN", "short-admin-token")]);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("ADMIN_TOKEN: expected at least 32 bytes"), "{p:?}");
    assert!(!p[0].contains("short-admin-token"), "{p:?}");
    let token = "a".repeat(MIN_ADMIN_TOKEN_BYTES);
    let c = load(&[("ADMIN_TOKEN", &token)]).expect("32 bytes are enough");
    assert_eq!(c.admin.token.as_ref().map(Secret::expose), Some(token.as_str()));
}

#[test]
fn production_refuses_a_public_admin_listener_without_a_token() {
    let p = problems(&prod_with(&[("ADMIN_HOST", "0.0.0.0")]));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("ADMIN_TOKEN: expected a token"), "{p:?}");
    let token = "0123456789abcdef0123456789abcdef";
    load(&prod_with(&[("ADMIN_HOST", "0.0.0.0"), ("ADMIN_TOKEN", token)])).expect("with a token");
    load(&prod_with(&[("ADMIN_HOST", "0.0.0.0"), ("ADMIN_PORT", "0")])).expect("turned off");
    load(&[("ADMIN_HOST", "0.0.0.0")]).expect("development allows it");
    let p = problems(&[("ADMIN_HOST", "localhost"), ("ADMIN_PORT", "x")]);
    assert_eq!(p.len(), 2, "{p:?}");
}

#[test]
fn email_branding_and_language_settings_are_read_and_checked() {
    let c = load(&[("APP_NAME", "Acme"), ("EMAIL_DEFAULT_LOCALE", "pt-BR")]).expect("valid");
    assert_eq!(c.email.app_name, "Acme");
    assert_eq!(c.email.default_locale, "pt-br");
    let d = load(&[]).expect("defaults");
    assert_eq!(
        (d.email.app_name.as_str(), d.email.default_locale.as_str()),
        ("sesame", "en")
    );
    assert_eq!(
        (d.email.templates_dir.clone(), d.email.smtp_ca_file.clone()),
        (None, None)
    );
    let p = problems(&[("EMAIL_DEFAULT_LOCALE", "de_DE")]);
    assert!(
        p[0].starts_with("EMAIL_DEFAULT_LOCALE: expected a language tag"),
        "{p:?}"
    );
    let p = problems(&[("EMAIL_TEMPLATES_DIR", "/nonexistent/templates")]);
    assert!(p[0].starts_with("EMAIL_TEMPLATES_DIR: expected a folder"), "{p:?}");
}

#[test]
fn a_broken_template_is_refused_naming_its_file_and_line() {
    let dir = std::env::temp_dir().join(format!("sesame-templates-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(dir.join("fr")).expect("mkdir");
    std::fs::write(dir.join("fr/code.txt"), "Bonjour\n{{ code }}\n{% if %}\n").expect("write");
    std::fs::write(dir.join("fr/link.txt"), "{{ link }}\n\n{{ token }}\n").expect("write");
    let p = problems(&[("EMAIL_TEMPLATES_DIR", dir.to_str().expect("utf-8"))]);
    let code = dir.join("fr/code.txt").display().to_string();
    let link = dir.join("fr/link.txt").display().to_string();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter()
            .any(|l| l.starts_with(&format!("EMAIL_TEMPLATES_DIR: {code}:3: syntax error"))),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with(&format!("EMAIL_TEMPLATES_DIR: {link}:3: undefined value"))),
        "{p:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn smtp_ca_file_must_hold_pem_certificates() {
    let dir = std::env::temp_dir().join(format!("sesame-ca-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("ca.pem");
    std::fs::write(&file, "not a certificate").expect("write");
    let p = problems(&[("SMTP_CA_FILE", file.to_str().expect("utf-8"))]);
    assert!(
        p[0].starts_with("SMTP_CA_FILE: expected a PEM file of certificates"),
        "{p:?}"
    );
    let p = problems(&[("SMTP_CA_FILE", "/nonexistent/ca.pem")]);
    assert!(p[0].starts_with("SMTP_CA_FILE: expected a readable PEM file"), "{p:?}");
    std::fs::write(&file, "-----BEGIN CERTIFICATE-----\n").expect("write");
    let c = load(&[("SMTP_CA_FILE", file.to_str().expect("utf-8"))]).expect("valid");
    assert_eq!(c.email.smtp_ca_file, Some(file));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_database_url_with_several_hosts_gives_one_url_per_host_in_order() {
    let split = |u: &str| super::sections::split_hosts(u);
    assert_eq!(
        split("postgres://u:p@db1:5432,db2:5433/sesame?sslmode=require").as_deref(),
        Some(
            &[
                "postgres://u:p@db1:5432/sesame?sslmode=require".to_owned(),
                "postgres://u:p@db2:5433/sesame?sslmode=require".to_owned(),
            ][..]
        )
    );
    // A password may hold commas and `@`s: the hosts begin after the last `@`.
    assert_eq!(
        split("postgresql://u:a,b@c@[::1]:5432,10.0.0.2").as_deref(),
        Some(
            &[
                "postgresql://u:a,b@c@[::1]:5432".to_owned(),
                "postgresql://u:a,b@c@10.0.0.2".to_owned()
            ][..]
        )
    );
    // One host: the URL as it is, even its password's commas.
    assert_eq!(
        split("postgres://u:x,y@db/sesame").as_deref(),
        Some(&["postgres://u:x,y@db/sesame".to_owned()][..])
    );
    assert_eq!(split("postgres://u@db1,,db2/sesame"), None);
    assert_eq!(split("postgres://u@db1,/sesame"), None);
    assert_eq!(split("db1,db2"), None);
}

#[test]
fn database_url_reads_several_hosts_and_refuses_an_empty_one() {
    let c = load(&[("DATABASE_URL", "postgres://app:pw@127.0.0.1:5432,db2:6000,db3/sesame")]).expect("valid");
    let hosts = c.database.hosts().expect("set");
    // A host without a port gets the driver's default (5432 unless PGPORT says otherwise).
    let default_port = PgConnectOptions::from_str("postgres://db3/sesame")
        .expect("valid")
        .get_port();
    let seen: Vec<(String, u16, String)> = hosts
        .iter()
        .map(|h| {
            (
                h.get_host().to_owned(),
                h.get_port(),
                h.get_database().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("127.0.0.1".to_owned(), 5432, "sesame".to_owned()),
            ("db2".to_owned(), 6000, "sesame".to_owned()),
            ("db3".to_owned(), default_port, "sesame".to_owned()),
        ]
    );
    assert!(hosts.iter().all(|h| h.get_username() == "app"));
    let one = load(&[("DATABASE_URL", "postgres://app@127.0.0.1:5432/sesame")]).expect("valid");
    assert_eq!(one.database.hosts().expect("set").len(), 1);
    assert!(one.database.other_hosts.is_empty());
    for bad in [
        "postgres://app:pw@db1,,db2/sesame",
        "postgres://app:pw@db1:5432,db2:x/sesame",
    ] {
        let p = problems(&[("DATABASE_URL", bad)]);
        assert!(
            p.len() == 1 && p[0].starts_with("DATABASE_URL: expected a PostgreSQL URL") && !p[0].contains("pw"),
            "{bad}: {p:?}"
        );
    }
}
