//! [`AppState`]: everything a request handler, the cleanup job or a command
//! may use, built once from the [`Config`].

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;

use crate::{
    audit::AuditSink,
    auth::jwt::JwtKeys,
    auth::{otp::OtpHasher, refresh::RefreshChain},
    clock::Clock,
    config::Config,
    email::Mailer,
    hash_queue::HashQueue,
    metrics::Metrics,
    rate_limit::RateLimiter,
    store::Db,
};

/// Everything a request handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The connection pool; connects lazily, so the server starts and
    /// answers (503) while the database is down; with several hosts in
    /// `DATABASE_URL`, to the primary among them (`store::pool`).
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: Clock,
    /// Counters and histograms served on `/metrics`.
    pub metrics: Metrics,
    /// Where committed audit events fan out to.
    pub audit: AuditSink,
    /// Signs and verifies access tokens.
    pub jwt: JwtKeys,
    /// Derives each refresh token's child from it (see `auth::refresh`).
    pub refresh_chain: RefreshChain,
    /// Counts requests against the rate limits of the config.
    pub limiter: RateLimiter,
    /// Hashes and checks one-time codes.
    pub otp: OtpHasher,
    /// Where hashing runs: bounded, one job per core.
    pub hash_queue: HashQueue,
    pub mailer: Mailer,
}

impl AppState {
    /// State for `config`, with a lazily connecting pool to its database.
    pub fn new(config: Config, clock: Clock) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let db = Db::new(
            crate::store::pool::connect_lazy(&config.database)?,
            config.database.transaction_pooling(),
        );
        let metrics = Metrics::default();
        let audit = AuditSink::new(&config, metrics.clone()).context("starting the audit file writer")?;
        Self::assemble(config, db, clock, metrics, audit)
    }

    fn assemble(config: Config, db: Db, clock: Clock, metrics: Metrics, audit: AuditSink) -> anyhow::Result<Self> {
        let jwt = crate::keys::load(&config)?;
        let refresh_chain = RefreshChain::new(config.tokens.jwt_secret.expose().as_bytes());
        let otp = OtpHasher::new(
            config.login.otp_secret.expose().as_bytes(),
            config.login.otp_hash_memory_kib,
            config.login.otp_hash_iterations,
        )
        .map_err(|e| anyhow::anyhow!("OTP_HASH_MEMORY_KIB / OTP_HASH_ITERATIONS: {e}"))?;
        let mailer = Mailer::from_config(&config).context("setting up the email transport")?;
        let limiter = RateLimiter::new(db.clone(), config.rate_limits.clone(), clock.clone(), audit.clone());
        Ok(Self {
            db,
            config: Arc::new(config),
            clock,
            metrics,
            audit,
            jwt,
            refresh_chain,
            limiter,
            otp,
            hash_queue: HashQueue::for_this_machine(),
            mailer,
        })
    }

    /// The present `SESSION_MAX_AGE` as the session queries take it: a session
    /// begun longer ago is over, whatever its stored expiry.
    pub fn session_cap(&self) -> Option<time::Duration> {
        self.config.tokens.session_max_age.map(crate::clock::span)
    }

    /// State that never touches a database: for printing the OpenAPI document.
    pub fn offline() -> Self {
        let mut config = Config::from_lookup(|_| None).unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"));
        config.audit.metrics_enabled = false;
        let db = Db::new(
            PgPoolOptions::new().connect_lazy_with(sqlx::postgres::PgConnectOptions::new()),
            false,
        );
        let metrics = Metrics::default();
        let audit = AuditSink::new(&config, metrics.clone()).unwrap_or_else(|e| unreachable!("no file to open: {e}"));
        Self::assemble(config, db, Clock::system(), metrics, audit)
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}
