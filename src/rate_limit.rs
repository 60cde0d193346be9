//! Rate limits, kept in PostgreSQL so that every instance shares them.
//!
//! A request names the limits it falls under; one statement counts a hit on
//! each ([`store::rate_limits::hit`]) and the request is refused when any is
//! over, before it does any work (no email, no hash). A refusal is a
//! [`LimitError::Exceeded`] naming the limit and when it clears (the API
//! answers it with a 429 `rate_limited` and `Retry-After`), and the event
//! `rate_limit.exceeded` records which limit and what kind of key, never the
//! raw key in logs.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

use crate::{
    audit::{self, AuditEvent, AuditSink, Event, RequestContext},
    auth::Reason,
    clock::Clock,
    config::RateLimits,
    store,
};

/// The limits of `docs/API.md`, each counted per address or per client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// One send (code or link) per address per `RATE_LIMIT_SEND_INTERVAL`.
    SendPerAddressInterval,
    /// `RATE_LIMIT_SEND_PER_ADDRESS_PER_HOUR`.
    SendPerAddressHour,
    /// `RATE_LIMIT_SEND_PER_IP_PER_HOUR`.
    SendPerIpHour,
    /// `RATE_LIMIT_VERIFY_PER_IP_PER_MINUTE` (codes and links).
    VerifyPerIpMinute,
    /// `RATE_LIMIT_REFRESH_PER_IP_PER_MINUTE`.
    RefreshPerIpMinute,
    /// Wrong admin tokens per client IP per minute ([`ADMIN_AUTH_PER_IP_PER_MINUTE`]).
    AdminAuthPerIpMinute,
}

/// Wrong admin tokens a client may present per minute: an operator mistyping
/// gets a few tries; guessing a 32-byte token is hopeless anyway, this keeps
/// the log and the database quiet.
pub const ADMIN_AUTH_PER_IP_PER_MINUTE: u32 = 10;

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

impl Limit {
    /// The name in the `rate_limits` table, the 429 body and the audit event.
    pub fn name(self) -> &'static str {
        match self {
            Self::SendPerAddressInterval => "send_per_address_interval",
            Self::SendPerAddressHour => "send_per_address_hour",
            Self::SendPerIpHour => "send_per_ip_hour",
            Self::VerifyPerIpMinute => "verify_per_ip_minute",
            Self::RefreshPerIpMinute => "refresh_per_ip_minute",
            Self::AdminAuthPerIpMinute => "admin_auth_per_ip_minute",
        }
    }

    /// `address` or `ip`.
    pub fn key_kind(self) -> &'static str {
        match self {
            Self::SendPerAddressInterval | Self::SendPerAddressHour => "address",
            _ => "ip",
        }
    }

    /// (allowed hits, window) under the settings `l`.
    fn quota(self, l: &RateLimits) -> (u32, Duration) {
        match self {
            Self::SendPerAddressInterval => (1, l.send_interval),
            Self::SendPerAddressHour => (l.send_per_address_per_hour, HOUR),
            Self::SendPerIpHour => (l.send_per_ip_per_hour, HOUR),
            Self::VerifyPerIpMinute => (l.verify_per_ip_per_minute, MINUTE),
            Self::RefreshPerIpMinute => (l.refresh_per_ip_per_minute, MINUTE),
            Self::AdminAuthPerIpMinute => (ADMIN_AUTH_PER_IP_PER_MINUTE, MINUTE),
        }
    }

    fn describe(self, max: u32, window: Duration) -> String {
        let per = crate::config::compact_duration(window);
        match self {
            Self::SendPerAddressInterval => format!("at most one code or link per address every {per}"),
            Self::SendPerAddressHour => format!("at most {max} codes or links per address per {per}"),
            Self::SendPerIpHour => format!("at most {max} codes or links per client per {per}"),
            Self::VerifyPerIpMinute => format!("at most {max} verifications per client per {per}"),
            Self::RefreshPerIpMinute => format!("at most {max} refreshes per client per {per}"),
            Self::AdminAuthPerIpMinute => format!("at most {max} wrong admin tokens per client per {per}"),
        }
    }
}

/// The limits of sending a code or a link to `email`.
pub fn for_send(email: &str, ctx: &RequestContext) -> Vec<(Limit, String)> {
    let mut checks = vec![
        (Limit::SendPerAddressInterval, email.to_owned()),
        (Limit::SendPerAddressHour, email.to_owned()),
    ];
    if let Some(ip) = ctx.ip {
        checks.push((Limit::SendPerIpHour, ip.to_string()));
    }
    checks
}

/// The per-client limit `limit` of this request.
pub fn for_client(limit: Limit, ctx: &RequestContext) -> Vec<(Limit, String)> {
    ctx.ip.map(|ip| vec![(limit, ip.to_string())]).unwrap_or_default()
}

fn subject(limit: Limit, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(limit.key_kind().as_bytes());
    h.update(b":");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// Counts requests against the limits of [`RateLimits`]; holds only what that needs.
#[derive(Clone)]
pub struct RateLimiter {
    db: PgPool,
    limits: RateLimits,
    clock: Clock,
    audit: AuditSink,
}

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// A limit is over: which one, seconds until it clears, and a human message.
    #[error("{message}")]
    Exceeded {
        limit: Limit,
        retry_after: u64,
        message: String,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl RateLimiter {
    /// A limiter counting in `db` under `limits`, recording refusals to `audit`.
    pub fn new(db: PgPool, limits: RateLimits, clock: Clock, audit: AuditSink) -> Self {
        Self {
            db,
            limits,
            clock,
            audit,
        }
    }

    /// Counts this request against `checks`; refuses when any limit is over.
    /// `email` goes into the audit event of a refusal (the trail is where emails belong).
    pub async fn check(
        &self,
        ctx: &RequestContext,
        checks: &[(Limit, String)],
        email: Option<&str>,
    ) -> Result<(), LimitError> {
        if !self.limits.enabled || checks.is_empty() {
            return Ok(());
        }
        let hits: Vec<store::rate_limits::Hit<'_>> = checks
            .iter()
            .filter(|(limit, _)| !limit.quota(&self.limits).1.is_zero())
            .map(|(limit, key)| store::rate_limits::Hit {
                bucket: limit.name(),
                subject: subject(*limit, key),
                window: crate::clock::span(limit.quota(&self.limits).1),
            })
            .collect();
        if hits.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let counts = {
            let mut conn = self.db.acquire().await?;
            store::rate_limits::hit(&mut conn, &hits, now).await?
        };
        let Some((limit, max, window, retry_after)) = self.most_restrictive(checks, &counts, now) else {
            return Ok(());
        };
        let mut event = AuditEvent::failure(Event::RateLimitExceeded, Reason::RateLimited, ctx, now)
            .meta("limit", limit.name())
            .meta("keyKind", limit.key_kind())
            .meta("retryAfter", retry_after);
        if let Some(email) = email {
            event = event.email(email);
        }
        audit::record_alone(&self.db, &self.audit, event).await?;
        tracing::info!(
            limit = limit.name(),
            key_kind = limit.key_kind(),
            retry_after,
            "rate limited"
        );
        Err(LimitError::Exceeded {
            limit,
            retry_after,
            message: format!(
                "too many requests: {}; retry in {retry_after}s",
                limit.describe(max, window)
            ),
        })
    }

    /// Of the limits that are over, the one that clears last: (limit, allowed
    /// hits, window, seconds until it clears).
    fn most_restrictive(
        &self,
        checks: &[(Limit, String)],
        counts: &[store::rate_limits::Count],
        now: time::OffsetDateTime,
    ) -> Option<(Limit, u32, Duration, u64)> {
        checks
            .iter()
            .filter_map(|(limit, _)| {
                let (max, window) = limit.quota(&self.limits);
                let count = counts.iter().find(|c| c.bucket == limit.name())?;
                (count.hits > i32::try_from(max).unwrap_or(i32::MAX)).then(|| {
                    let wait = u64::try_from((count.expires_at - now).whole_milliseconds()).unwrap_or(0);
                    let retry_after = wait.div_ceil(1000).max(1);
                    (*limit, max, window, retry_after)
                })
            })
            .max_by_key(|(_, _, _, retry_after)| *retry_after)
    }
}
