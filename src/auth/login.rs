//! The verdicts on a one-time code and on a magic link: pure functions over
//! what the store holds and the clock, so every branch is tested without a
//! database.

use time::OffsetDateTime;

use super::Reason;

/// What the store holds about an address's latest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRecord {
    pub expires_at: OffsetDateTime,
    /// Wrong tries within the attempt window (which survives resends).
    pub attempts: u32,
    pub consumed: bool,
}

/// What to do with a typed code before the verdict. Every verification does
/// the work of one hash check, whatever the stored state, so the time of an
/// answer tells nothing about the address (no code, used, expired, out of
/// tries, or a malformed typed code all cost what a wrong code costs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    /// Compare it with the stored hash.
    Compare,
    /// Comparing would tell nothing: do the same work against a dummy hash.
    Imitate,
}

/// The verdict on a typed code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeVerdict {
    /// No code was sent to the address, or it was used.
    NoCode,
    /// The code's expiry has passed.
    Expired,
    /// The address used up its wrong tries.
    BudgetSpent,
    /// Not the code that was sent: counts as a wrong try.
    Wrong,
    /// The code that was sent: sign in.
    Right,
}

impl CodeVerdict {
    /// Why it was refused; `None` for [`CodeVerdict::Right`].
    pub fn reason(self) -> Option<Reason> {
        match self {
            Self::NoCode => Some(Reason::NoCode),
            Self::Expired => Some(Reason::CodeExpired),
            Self::BudgetSpent => Some(Reason::AttemptsExhausted),
            Self::Wrong => Some(Reason::WrongCode),
            Self::Right => None,
        }
    }
}

/// Whether the typed code must be compared with the stored hash: only when
/// it is well formed and the stored code could still be accepted.
pub fn code_check(stored: Option<&CodeRecord>, now: OffsetDateTime, max_attempts: u32, well_formed: bool) -> CodeCheck {
    match code_verdict(stored, now, max_attempts, true) {
        CodeVerdict::Right if well_formed => CodeCheck::Compare,
        _ => CodeCheck::Imitate,
    }
}

/// The verdict on a code, once `matches` says whether the typed code matched
/// the stored hash (`false` when it was not compared). The order matters: a
/// used code is "no code", and an expired or exhausted one is refused even
/// when it matches.
pub fn code_verdict(stored: Option<&CodeRecord>, now: OffsetDateTime, max_attempts: u32, matches: bool) -> CodeVerdict {
    match stored {
        None => CodeVerdict::NoCode,
        Some(c) if c.consumed => CodeVerdict::NoCode,
        Some(c) if c.expires_at <= now => CodeVerdict::Expired,
        Some(c) if c.attempts >= max_attempts => CodeVerdict::BudgetSpent,
        Some(_) if matches => CodeVerdict::Right,
        Some(_) => CodeVerdict::Wrong,
    }
}

/// What the store holds about a magic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRecord {
    pub expires_at: OffsetDateTime,
    pub consumed: bool,
}

/// The verdict on a presented magic-link token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkVerdict {
    /// No link has this token (or it is not shaped like one).
    NotFound,
    /// The link was used already.
    Used,
    /// The link's expiry has passed.
    Expired,
    /// Sign in.
    Valid,
}

impl LinkVerdict {
    /// Why it was refused; `None` for [`LinkVerdict::Valid`].
    pub fn reason(self) -> Option<Reason> {
        match self {
            Self::NotFound => Some(Reason::LinkNotFound),
            Self::Used => Some(Reason::LinkUsed),
            Self::Expired => Some(Reason::LinkExpired),
            Self::Valid => None,
        }
    }
}

/// The verdict on a link: used before expired, so a reused link says "used".
pub fn link_verdict(stored: Option<&LinkRecord>, now: OffsetDateTime) -> LinkVerdict {
    match stored {
        None => LinkVerdict::NotFound,
        Some(l) if l.consumed => LinkVerdict::Used,
        Some(l) if l.expires_at <= now => LinkVerdict::Expired,
        Some(_) => LinkVerdict::Valid,
    }
}

#[cfg(test)]
mod tests {
    use time::{Duration, macros::datetime};

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);
    const MAX: u32 = 5;

    fn code(expires_in: Duration, attempts: u32, consumed: bool) -> Option<CodeRecord> {
        Some(CodeRecord {
            expires_at: NOW + expires_in,
            attempts,
            consumed,
        })
    }

    #[test]
    fn every_branch_of_the_code_verdict() {
        let live = Duration::minutes(5);
        #[rustfmt::skip]
        let cases = [
            // stored,                                 matches, verdict,                  check
            (None,                                        true,  CodeVerdict::NoCode,      CodeCheck::Imitate),
            (code(live, 0, true),                         true,  CodeVerdict::NoCode,      CodeCheck::Imitate),
            (code(Duration::ZERO, 0, false),              true,  CodeVerdict::Expired,     CodeCheck::Imitate),
            (code(-Duration::SECOND, 0, false),           true,  CodeVerdict::Expired,     CodeCheck::Imitate),
            (code(Duration::SECOND, MAX, false),          true,  CodeVerdict::BudgetSpent, CodeCheck::Imitate),
            (code(live, MAX + 3, false),                  true,  CodeVerdict::BudgetSpent, CodeCheck::Imitate),
            (code(live, MAX - 1, false),                  false, CodeVerdict::Wrong,       CodeCheck::Compare),
            (code(live, MAX - 1, false),                  true,  CodeVerdict::Right,       CodeCheck::Compare),
            (code(Duration::NANOSECOND, 0, false),        true,  CodeVerdict::Right,       CodeCheck::Compare),
            // A used code that also expired and ran out of tries is still "no code".
            (code(-live, MAX, true),                      true,  CodeVerdict::NoCode,      CodeCheck::Imitate),
            // Expired wins over an exhausted budget.
            (code(-live, MAX, false),                     true,  CodeVerdict::Expired,     CodeCheck::Imitate),
        ];
        for (n, (stored, matches, verdict, check)) in cases.into_iter().enumerate() {
            assert_eq!(code_verdict(stored.as_ref(), NOW, MAX, matches), verdict, "case {n}");
            assert_eq!(code_check(stored.as_ref(), NOW, MAX, true), check, "case {n}");
            // A malformed typed code is never compared, whatever is stored.
            assert_eq!(
                code_check(stored.as_ref(), NOW, MAX, false),
                CodeCheck::Imitate,
                "case {n}"
            );
        }
    }

    #[test]
    fn each_refused_code_verdict_has_its_reason() {
        assert_eq!(CodeVerdict::NoCode.reason(), Some(Reason::NoCode));
        assert_eq!(CodeVerdict::Expired.reason(), Some(Reason::CodeExpired));
        assert_eq!(CodeVerdict::BudgetSpent.reason(), Some(Reason::AttemptsExhausted));
        assert_eq!(CodeVerdict::Wrong.reason(), Some(Reason::WrongCode));
        assert_eq!(CodeVerdict::Right.reason(), None);
    }

    #[test]
    fn every_branch_of_the_link_verdict() {
        let link = |expires_in: Duration, consumed| {
            Some(LinkRecord {
                expires_at: NOW + expires_in,
                consumed,
            })
        };
        #[rustfmt::skip]
        let cases = [
            (None,                                LinkVerdict::NotFound),
            (link(Duration::minutes(5), true),    LinkVerdict::Used),
            (link(-Duration::minutes(5), true),   LinkVerdict::Used),
            (link(Duration::ZERO, false),         LinkVerdict::Expired),
            (link(-Duration::SECOND, false),      LinkVerdict::Expired),
            (link(Duration::NANOSECOND, false),   LinkVerdict::Valid),
        ];
        for (n, (stored, verdict)) in cases.into_iter().enumerate() {
            assert_eq!(link_verdict(stored.as_ref(), NOW), verdict, "case {n}");
        }
        assert_eq!(LinkVerdict::NotFound.reason(), Some(Reason::LinkNotFound));
        assert_eq!(LinkVerdict::Used.reason(), Some(Reason::LinkUsed));
        assert_eq!(LinkVerdict::Expired.reason(), Some(Reason::LinkExpired));
        assert_eq!(LinkVerdict::Valid.reason(), None);
    }
}
