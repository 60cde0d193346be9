//! Rate limits, kept in PostgreSQL so that every instance shares them.
//!
//! A request names the limits it falls under and is counted against all of
//! them at once, or against none: one short transaction counts a hit on each
//! counter ([`store::rate_limits::hit`], which locks the counters in one fixed
//! order) and commits only when no limit is over; a refused request rolls back,
//! so it counts against no limit, not even the one that refused it, and an
//! attacker's refused requests cannot use up a victim's budget. A request
//! under a single limit (verify, refresh, logout, the Bearer operations) needs
//! no transaction: one conditional statement counts it only when it stays
//! within ([`store::rate_limits::hit_within`]). A refused
//! request does no work (no email, no hash). A refusal is a
//! [`LimitError::Exceeded`] naming the limit and when it clears (the API
//! answers it with a 429 `rate_limited` and `Retry-After`), and the event
//! `rate_limit.exceeded` records which limit and what kind of key, never the
//! raw key in logs.
//!
//! Keys: an address counts as its mailbox ([`canonical_mailbox`]: lower case,
//! no `+tag`), an IPv6 client as its `RATE_LIMIT_IPV6_PREFIX` network and an
//! IPv4-mapped IPv6 address as its IPv4 address ([`ip_key`]); the email cap
//! has one counter for the whole deployment.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::Duration,
};

use sha2::{Digest as _, Sha256};

use crate::{
    audit::{self, AuditEvent, AuditSink, Event, RequestContext},
    auth::{Reason, email_address::canonical_mailbox},
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
    /// `RATE_LIMIT_DEFAULT_PER_IP_PER_MINUTE`: every other `/auth` operation.
    DefaultPerIpMinute,
    /// `RATE_LIMIT_EMAILS_PER_HOUR`: sends by the whole deployment.
    EmailsPerHour,
    /// Wrong admin tokens per client IP per minute ([`ADMIN_AUTH_PER_IP_PER_MINUTE`]).
    AdminAuthPerIpMinute,
}

/// Whom a limit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// An address's mailbox ([`canonical_mailbox`]).
    Mailbox(String),
    /// A client IP (counted per [`ip_key`]).
    Ip(IpAddr),
    /// The whole deployment.
    Global,
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
            Self::DefaultPerIpMinute => "default_per_ip_minute",
            Self::EmailsPerHour => "emails_per_hour",
            Self::AdminAuthPerIpMinute => "admin_auth_per_ip_minute",
        }
    }

    /// `address`, `ip` or `global`.
    pub fn key_kind(self) -> &'static str {
        match self {
            Self::SendPerAddressInterval | Self::SendPerAddressHour => "address",
            Self::EmailsPerHour => "global",
            _ => "ip",
        }
    }

    /// (allowed hits, window) under the settings `l`; `None` when the limit is
    /// off (a zero window or a zero count).
    fn quota(self, l: &RateLimits) -> Option<(u32, Duration)> {
        let (max, window) = match self {
            Self::SendPerAddressInterval => (1, l.send_interval),
            Self::SendPerAddressHour => (l.send_per_address_per_hour, HOUR),
            Self::SendPerIpHour => (l.send_per_ip_per_hour, HOUR),
            Self::VerifyPerIpMinute => (l.verify_per_ip_per_minute, MINUTE),
            Self::RefreshPerIpMinute => (l.refresh_per_ip_per_minute, MINUTE),
            Self::DefaultPerIpMinute => (l.default_per_ip_per_minute, MINUTE),
            Self::EmailsPerHour => (l.emails_per_hour, HOUR),
            Self::AdminAuthPerIpMinute => (ADMIN_AUTH_PER_IP_PER_MINUTE, MINUTE),
        };
        (max > 0 && !window.is_zero()).then_some((max, window))
    }

    fn describe(self, max: u32, window: Duration) -> String {
        let per = crate::config::compact_duration(window);
        match self {
            Self::SendPerAddressInterval => format!("at most one code or link per address every {per}"),
            Self::SendPerAddressHour => format!("at most {max} codes or links per address per {per}"),
            Self::SendPerIpHour => format!("at most {max} codes or links per client per {per}"),
            Self::VerifyPerIpMinute => format!("at most {max} verifications per client per {per}"),
            Self::RefreshPerIpMinute => format!("at most {max} refreshes per client per {per}"),
            Self::DefaultPerIpMinute => format!("at most {max} requests per client per {per}"),
            Self::EmailsPerHour => format!("at most {max} codes or links per {per} for the whole service"),
            Self::AdminAuthPerIpMinute => format!("at most {max} wrong admin tokens per client per {per}"),
        }
    }
}

/// The limits of sending a code or a link to `email`: its mailbox's, the
/// client's, and the deployment's email cap.
pub fn for_send(email: &str, ctx: &RequestContext) -> Vec<(Limit, Key)> {
    let mailbox = canonical_mailbox(email);
    let mut checks = vec![
        (Limit::SendPerAddressInterval, Key::Mailbox(mailbox.clone())),
        (Limit::SendPerAddressHour, Key::Mailbox(mailbox)),
    ];
    if let Some(ip) = ctx.ip {
        checks.push((Limit::SendPerIpHour, Key::Ip(ip)));
    }
    checks.push((Limit::EmailsPerHour, Key::Global));
    checks
}

/// The per-client limit `limit` of this request.
pub fn for_client(limit: Limit, ctx: &RequestContext) -> Vec<(Limit, Key)> {
    ctx.ip.map(|ip| vec![(limit, Key::Ip(ip))]).unwrap_or_default()
}

/// The key of a client IP: an IPv4 address as it is, an IPv4-mapped IPv6
/// address as its IPv4 address, any other IPv6 address as its network of
/// `ipv6_prefix` bits (`2001:db8:1:2::/64`): one host usually owns a whole /64,
/// so per-address keys would limit nothing.
pub fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    let v6 = match ip {
        IpAddr::V4(v4) => return v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => return v4.to_string(),
            None => v6,
        },
    };
    let prefix = ipv6_prefix.clamp(1, 128);
    let mask = u128::MAX << (128 - u32::from(prefix));
    format!("{}/{prefix}", Ipv6Addr::from(u128::from(v6) & mask))
}

/// The stored subject of a counter: SHA-256 of the key kind, `:` and the key.
fn subject(limit: Limit, key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(limit.key_kind().as_bytes());
    h.update(b":");
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The stored subjects of one person's counters: their mailbox and every
/// client IP they used, keyed as the limits key them (so that erasing the
/// person finds the counters).
pub fn person_subjects(email: &str, ips: &[IpAddr], ipv6_prefix: u8) -> Vec<[u8; 32]> {
    let mut subjects = vec![subject(Limit::SendPerAddressHour, &canonical_mailbox(email))];
    subjects.extend(
        ips.iter()
            .map(|ip| subject(Limit::SendPerIpHour, &ip_key(*ip, ipv6_prefix))),
    );
    subjects
}

/// A limit of this request that is on: its allowed hits, window and key.
struct Active {
    limit: Limit,
    max: u32,
    window: Duration,
    subject: [u8; 32],
}

/// Counts requests against the limits of [`RateLimits`]; holds only what that needs.
#[derive(Clone)]
pub struct RateLimiter {
    db: store::Db,
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
    pub fn new(db: store::Db, limits: RateLimits, clock: Clock, audit: AuditSink) -> Self {
        Self {
            db,
            limits,
            clock,
            audit,
        }
    }

    /// Counts this request against `checks`, all or nothing: refuses (and
    /// counts nothing) when any limit would go over. `email` goes into the
    /// audit event of a refusal (the trail is where emails belong).
    pub async fn check(
        &self,
        ctx: &RequestContext,
        checks: &[(Limit, Key)],
        email: Option<&str>,
    ) -> Result<(), LimitError> {
        if !self.limits.enabled {
            return Ok(());
        }
        let active: Vec<Active> = checks
            .iter()
            .filter_map(|(limit, key)| {
                let (max, window) = limit.quota(&self.limits)?;
                let subject = subject(*limit, &self.key(key));
                Some(Active {
                    limit: *limit,
                    max,
                    window,
                    subject,
                })
            })
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let hits: Vec<store::rate_limits::Hit<'_>> = active
            .iter()
            .map(|a| store::rate_limits::Hit {
                bucket: a.limit.name(),
                subject: a.subject,
                window: crate::clock::span(a.window),
            })
            .collect();
        let now = self.clock.now();
        let counts = match (&active[..], &hits[..]) {
            // One limit: one conditional statement, no transaction.
            ([one], [hit]) => {
                let max = i32::try_from(one.max).unwrap_or(i32::MAX);
                let refused = self
                    .db
                    .run(async |conn| {
                        if store::rate_limits::hit_within(conn, hit, max, now).await?.is_some() {
                            return Ok(None);
                        }
                        // Refused, nothing counted: read when the window clears
                        // (a counter deleted since by cleanup clears at once).
                        store::rate_limits::expires_at(conn, hit.bucket, &hit.subject)
                            .await
                            .map(Some)
                    })
                    .await?;
                let Some(expires_at) = refused else {
                    return Ok(());
                };
                vec![store::rate_limits::Count {
                    bucket: hit.bucket.to_owned(),
                    hits: max.saturating_add(1),
                    expires_at: expires_at.unwrap_or(now),
                }]
            }
            _ => {
                let mut tx = self.db.begin().await?;
                let counts = store::rate_limits::hit(&mut tx, &hits, now).await?;
                if most_restrictive(&active, &counts, now).is_none() {
                    tx.commit().await?;
                    return Ok(());
                }
                // The request is refused: none of its hits count.
                tx.rollback().await?;
                counts
            }
        };
        let Some((limit, max, window, retry_after)) = most_restrictive(&active, &counts, now) else {
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

    /// The counted form of `key` (see [`Key`]).
    fn key(&self, key: &Key) -> String {
        match key {
            Key::Mailbox(mailbox) => mailbox.clone(),
            Key::Ip(ip) => ip_key(*ip, self.limits.ipv6_prefix),
            Key::Global => String::new(),
        }
    }
}

/// Of the limits that would go over with this request's hit, the one that
/// clears last: (limit, allowed hits, window, seconds until it clears).
fn most_restrictive(
    active: &[Active],
    counts: &[store::rate_limits::Count],
    now: time::OffsetDateTime,
) -> Option<(Limit, u32, Duration, u64)> {
    active
        .iter()
        .filter_map(|a| {
            let count = counts.iter().find(|c| c.bucket == a.limit.name())?;
            (count.hits > i32::try_from(a.max).unwrap_or(i32::MAX)).then(|| {
                let wait = u64::try_from((count.expires_at - now).whole_milliseconds()).unwrap_or(0);
                let retry_after = wait.div_ceil(1000).max(1);
                (a.limit, a.max, a.window, retry_after)
            })
        })
        .max_by_key(|(_, _, _, retry_after)| *retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        let a = ip_key(ip("2001:db8:1:2::1"), 64);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(
            ip_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64),
            a,
            "one /64, one key"
        );
        assert_ne!(ip_key(ip("2001:db8:1:3::1"), 64), a, "another /64, another key");
        assert_eq!(ip_key(ip("2001:db8:1:3::1"), 48), "2001:db8:1::/48");
        assert_eq!(ip_key(ip("2001:db8:1:2::1"), 48), ip_key(ip("2001:db8:1:ffff::1"), 48));
        assert_eq!(ip_key(ip("2001:db8::1"), 128), "2001:db8::1/128");
        assert_ne!(ip_key(ip("2001:db8::1"), 128), ip_key(ip("2001:db8::2"), 128));
        assert_eq!(ip_key(ip("2001:db8::1"), 1), "::/1");
        assert_eq!(ip_key(ip("::1"), 64), "::/64");
    }

    #[test]
    fn ipv4_and_ipv4_mapped_addresses_are_keyed_as_ipv4() {
        assert_eq!(ip_key(ip("203.0.113.9"), 64), "203.0.113.9");
        assert_eq!(ip_key(ip("::ffff:203.0.113.9"), 64), "203.0.113.9");
        assert_eq!(ip_key(ip("::ffff:203.0.113.9"), 128), "203.0.113.9");
        assert_ne!(ip_key(ip("203.0.113.9"), 64), ip_key(ip("203.0.113.10"), 64));
        assert_eq!(
            ip_key(ip("127.0.0.1"), 64),
            "127.0.0.1",
            "the documented subject of a test"
        );
    }

    #[test]
    fn sends_count_the_mailbox_the_client_and_the_deployment() {
        let ctx = RequestContext {
            ip: Some(ip("198.51.100.7")),
            ..RequestContext::none()
        };
        let checks = for_send("ada+news@example.com", &ctx);
        assert_eq!(
            checks,
            [
                (
                    Limit::SendPerAddressInterval,
                    Key::Mailbox("ada@example.com".to_owned())
                ),
                (Limit::SendPerAddressHour, Key::Mailbox("ada@example.com".to_owned())),
                (Limit::SendPerIpHour, Key::Ip(ip("198.51.100.7"))),
                (Limit::EmailsPerHour, Key::Global),
            ]
        );
        let no_ip = for_send("ada@example.com", &RequestContext::none());
        assert!(no_ip.iter().all(|(l, _)| *l != Limit::SendPerIpHour));
        assert!(no_ip.contains(&(Limit::EmailsPerHour, Key::Global)));
    }

    #[test]
    fn a_zero_count_or_window_turns_a_limit_off() {
        let mut l = crate::config::Config::from_lookup(|_| None)
            .expect("defaults")
            .rate_limits;
        assert_eq!(Limit::DefaultPerIpMinute.quota(&l), Some((600, MINUTE)));
        assert_eq!(Limit::EmailsPerHour.quota(&l), Some((1000, HOUR)));
        (l.default_per_ip_per_minute, l.emails_per_hour, l.send_interval) = (0, 0, Duration::ZERO);
        assert_eq!(Limit::DefaultPerIpMinute.quota(&l), None);
        assert_eq!(Limit::EmailsPerHour.quota(&l), None);
        assert_eq!(Limit::SendPerAddressInterval.quota(&l), None);
        assert_eq!(Limit::EmailsPerHour.key_kind(), "global");
        assert_eq!(Limit::DefaultPerIpMinute.key_kind(), "ip");
    }
}
