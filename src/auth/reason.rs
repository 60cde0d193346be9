//! Why a sign-in, refresh or logout was refused: the text written to the
//! `error` field of its audit event (`docs/API.md` lists them), so teams can
//! query and alert on it.

/// Why something was refused, as written to an event's `error` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No live code for the address (none sent, or already used).
    NoCode,
    /// The code's `OTP_EXPIRY` has passed.
    CodeExpired,
    /// `OTP_MAX_ATTEMPTS` wrong tries were made within `OTP_EXPIRY`.
    AttemptsExhausted,
    /// The typed code is not the one sent.
    WrongCode,
    /// No link has this token.
    LinkNotFound,
    /// The link was used already.
    LinkUsed,
    /// The link's `MAGIC_LINK_EXPIRY` has passed.
    LinkExpired,
    /// No session has this refresh token.
    UnknownRefreshToken,
    /// The session was ended (logout, revocation, reuse).
    SessionEnded,
    /// The session passed its expiry.
    SessionExpired,
    /// The refresh token passed its expiry.
    RefreshTokenExpired,
    /// A rotated refresh token was presented again.
    RefreshTokenReused,
    /// Logout of a session that had ended already.
    SessionAlreadyEnded,
    /// A rate limit refused the request.
    RateLimited,
}

impl Reason {
    /// The text stored in `audit_events.error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCode => "No OTP found for email",
            Self::CodeExpired => "OTP expired",
            Self::AttemptsExhausted => "Max attempts exceeded",
            Self::WrongCode => "Invalid code",
            Self::LinkNotFound => "Link not found",
            Self::LinkUsed => "Link already used",
            Self::LinkExpired => "Link expired",
            Self::UnknownRefreshToken => "Unknown refresh token",
            Self::SessionEnded => "Session ended",
            Self::SessionExpired => "Session expired",
            Self::RefreshTokenExpired => "Refresh token expired",
            Self::RefreshTokenReused => "Refresh token reused",
            Self::SessionAlreadyEnded => "Session already ended",
            Self::RateLimited => "rate limited",
        }
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct() {
        let reasons = [
            Reason::NoCode,
            Reason::CodeExpired,
            Reason::AttemptsExhausted,
            Reason::WrongCode,
            Reason::LinkNotFound,
            Reason::LinkUsed,
            Reason::LinkExpired,
            Reason::UnknownRefreshToken,
            Reason::SessionEnded,
            Reason::SessionExpired,
            Reason::RefreshTokenExpired,
            Reason::RefreshTokenReused,
            Reason::SessionAlreadyEnded,
            Reason::RateLimited,
        ];
        let texts: std::collections::HashSet<_> = reasons.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts.len(), reasons.len());
    }
}
