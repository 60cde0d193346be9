//! When a session ends, and what a presented refresh token earns: pure
//! functions over what the store holds and the clock.

use time::{Duration, OffsetDateTime};

use super::Reason;

/// A session's expiry after a sign-in or a refresh at `now`: it slides
/// `refresh_ttl` forward, but never past `created_at + max_age`
/// (`SESSION_MAX_AGE`, when set). For a session older than `max_age` (the
/// setting was set or lowered since it began) this is already past:
/// [`session_decision`] ends such a session instead of refreshing it.
pub fn session_expiry(
    created_at: OffsetDateTime,
    now: OffsetDateTime,
    refresh_ttl: Duration,
    max_age: Option<Duration>,
) -> OffsetDateTime {
    let sliding = now + refresh_ttl;
    match max_age {
        Some(max_age) => sliding.min(created_at + max_age),
        None => sliding,
    }
}

/// What the store holds about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    pub revoked: bool,
    pub expires_at: OffsetDateTime,
}

/// Why a session can no longer be used, if it cannot.
pub fn session_end(session: &SessionRecord, now: OffsetDateTime) -> Option<Reason> {
    if session.revoked {
        Some(Reason::SessionEnded)
    } else if session.expires_at <= now {
        Some(Reason::SessionExpired)
    } else {
        None
    }
}

/// What the store holds about a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    /// When it was exchanged for its child, if it was.
    pub rotated_at: Option<OffsetDateTime>,
    /// Revoked: rotated, or its session ended.
    pub revoked: bool,
    pub expires_at: OffsetDateTime,
}

/// What a refresh does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// The token is live: exchange it for its child.
    Rotate,
    /// It was exchanged within the reuse interval and its child is still the
    /// live token: a race between tabs, answer the same child again.
    SameChild,
    /// It was exchanged before: reuse. End the whole session.
    Reuse {
        /// How long ago it was exchanged.
        rotated_ago: Duration,
    },
    /// The session is past its absolute limit under the present settings
    /// (`SESSION_MAX_AGE` set or lowered since it began), though its stored
    /// expiry is not: end it, and refuse with [`Reason::SessionExpired`].
    Expire,
    /// Refuse, ending nothing.
    Refuse(Reason),
}

/// What the session alone decides, before its token is looked at: refuse an
/// ended or expired one, end one that a refresh could not move past `now`.
/// `next_expiry` is the expiry a rotation at `now` would give it
/// ([`session_expiry`] under the present settings). `None`: the token decides.
pub fn session_decision(
    session: &SessionRecord,
    next_expiry: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<RefreshDecision> {
    if let Some(reason) = session_end(session, now) {
        Some(RefreshDecision::Refuse(reason))
    } else if next_expiry <= now {
        Some(RefreshDecision::Expire)
    } else {
        None
    }
}

/// The refresh rule: first [`session_decision`] (`next_expiry` is the
/// session's expiry after a rotation at `now`), then the token's.
/// `child_is_live` says whether the token's child is still the session's live
/// token (only asked of a rotated token); `reuse_interval` is
/// `REFRESH_REUSE_INTERVAL` (zero: every reuse ends the session). The
/// interval's end is inclusive.
pub fn refresh_decision(
    session: &SessionRecord,
    next_expiry: OffsetDateTime,
    token: &TokenRecord,
    child_is_live: bool,
    now: OffsetDateTime,
    reuse_interval: Duration,
) -> RefreshDecision {
    if let Some(decision) = session_decision(session, next_expiry, now) {
        return decision;
    }
    if token.expires_at <= now {
        return RefreshDecision::Refuse(Reason::RefreshTokenExpired);
    }
    match token.rotated_at {
        None if token.revoked => RefreshDecision::Refuse(Reason::SessionEnded),
        None => RefreshDecision::Rotate,
        Some(at) => {
            let ago = now - at;
            if !reuse_interval.is_zero() && ago <= reuse_interval && child_is_live {
                RefreshDecision::SameChild
            } else {
                RefreshDecision::Reuse { rotated_ago: ago }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);
    const INTERVAL: Duration = Duration::seconds(10);

    fn live_session() -> SessionRecord {
        SessionRecord {
            revoked: false,
            expires_at: NOW + Duration::days(1),
        }
    }

    fn token(rotated_ago: Option<Duration>, revoked: bool, expires_in: Duration) -> TokenRecord {
        TokenRecord {
            rotated_at: rotated_ago.map(|ago| NOW - ago),
            revoked,
            expires_at: NOW + expires_in,
        }
    }

    #[test]
    fn every_branch_of_the_refresh_decision() {
        use RefreshDecision::*;
        let day = Duration::days(1);
        let ended = SessionRecord {
            revoked: true,
            ..live_session()
        };
        let expired = SessionRecord {
            revoked: false,
            expires_at: NOW,
        };
        let rotated = |ago| token(Some(ago), true, day);
        // The expiry a rotation now would give: a day on, or a cap that has passed.
        let (slides, capped_now, cap_passed) = (NOW + day, NOW, NOW - Duration::hours(1));
        #[rustfmt::skip]
        let cases = [
            // session,       next expiry, token,                                 child live, interval,  decision
            (live_session(),  slides,     token(None, false, day),                    false, INTERVAL,       Rotate),
            (ended,           slides,     token(None, false, day),                    false, INTERVAL,       Refuse(Reason::SessionEnded)),
            (expired,         slides,     token(None, false, day),                    false, INTERVAL,       Refuse(Reason::SessionExpired)),
            (live_session(),  slides,     token(None, false, Duration::ZERO),         false, INTERVAL,       Refuse(Reason::RefreshTokenExpired)),
            (live_session(),  slides,     token(Some(Duration::SECOND), true, -day),  true,  INTERVAL,       Refuse(Reason::RefreshTokenExpired)),
            (live_session(),  slides,     token(None, true, day),                     false, INTERVAL,       Refuse(Reason::SessionEnded)),
            (live_session(),  slides,     rotated(Duration::SECOND),                  true,  INTERVAL,       SameChild),
            // The interval's end is inclusive; one nanosecond later is reuse.
            (live_session(),  slides,     rotated(INTERVAL),                          true,  INTERVAL,       SameChild),
            (live_session(),  slides,     rotated(INTERVAL + Duration::NANOSECOND),   true,  INTERVAL,
                Reuse { rotated_ago: INTERVAL + Duration::NANOSECOND }),
            // Within the interval, but the child was itself rotated or revoked.
            (live_session(),  slides,     rotated(Duration::SECOND),                  false, INTERVAL,
                Reuse { rotated_ago: Duration::SECOND }),
            // No interval: any reuse ends the session, even at once.
            (live_session(),  slides,     rotated(Duration::ZERO),                    true,  Duration::ZERO,
                Reuse { rotated_ago: Duration::ZERO }),
            // An ended session is refused before any reuse is considered.
            (ended,           slides,     rotated(Duration::minutes(5)),              false, INTERVAL,       Refuse(Reason::SessionEnded)),
            // A cap that a rotation cannot move past now (SESSION_MAX_AGE set
            // or lowered since the sign-in) ends the session, whatever the token.
            (live_session(),  cap_passed, token(None, false, day),                    false, INTERVAL,       Expire),
            (live_session(),  capped_now, token(None, false, day),                    false, INTERVAL,       Expire),
            (live_session(),  NOW + Duration::NANOSECOND,
                                          token(None, false, day),                    false, INTERVAL,       Rotate),
            (live_session(),  cap_passed, rotated(Duration::SECOND),                  true,  INTERVAL,       Expire),
            (live_session(),  cap_passed, rotated(Duration::minutes(5)),              false, INTERVAL,       Expire),
            (live_session(),  cap_passed, token(None, false, Duration::ZERO),         false, INTERVAL,       Expire),
            // Already ended or expired as stored: refused, nothing more to end.
            (ended,           cap_passed, token(None, false, day),                    false, INTERVAL,       Refuse(Reason::SessionEnded)),
            (expired,         cap_passed, token(None, false, day),                    false, INTERVAL,       Refuse(Reason::SessionExpired)),
        ];
        for (n, (session, next_expiry, token, child_is_live, interval, decision)) in cases.into_iter().enumerate() {
            assert_eq!(
                refresh_decision(&session, next_expiry, &token, child_is_live, NOW, interval),
                decision,
                "case {n}"
            );
        }
    }

    #[test]
    fn a_session_ends_when_revoked_or_expired() {
        assert_eq!(session_end(&live_session(), NOW), None);
        let revoked = SessionRecord {
            revoked: true,
            ..live_session()
        };
        assert_eq!(session_end(&revoked, NOW), Some(Reason::SessionEnded));
        let at_expiry = SessionRecord {
            revoked: false,
            expires_at: NOW,
        };
        assert_eq!(session_end(&at_expiry, NOW), Some(Reason::SessionExpired));
        let just_before = SessionRecord {
            revoked: false,
            expires_at: NOW + Duration::NANOSECOND,
        };
        assert_eq!(session_end(&just_before, NOW), None);
    }

    #[test]
    fn the_expiry_slides_and_stops_at_the_absolute_cap() {
        let ttl = Duration::days(30);
        let created = NOW - Duration::days(80);
        // No cap: only the sliding expiry.
        assert_eq!(session_expiry(created, NOW, ttl, None), NOW + ttl);
        // Far from the cap: the sliding expiry.
        assert_eq!(session_expiry(NOW, NOW, ttl, Some(Duration::days(90))), NOW + ttl);
        // Near the cap: the cap.
        assert_eq!(
            session_expiry(created, NOW, ttl, Some(Duration::days(90))),
            created + Duration::days(90)
        );
        // Past the cap: the cap, which is already over, so the session ends
        // even though its stored expiry (from before the cap) is not.
        let old = NOW - Duration::days(100);
        let capped = session_expiry(old, NOW, ttl, Some(Duration::days(90)));
        assert!(capped < NOW);
        assert_eq!(
            session_decision(&live_session(), capped, NOW),
            Some(RefreshDecision::Expire)
        );
        assert_eq!(session_decision(&live_session(), NOW + ttl, NOW), None);
        // A first sign-in with a cap shorter than the refresh lifetime.
        assert_eq!(
            session_expiry(NOW, NOW, ttl, Some(Duration::days(7))),
            NOW + Duration::days(7)
        );
    }
}
