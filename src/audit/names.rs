//! The names of audit events.
//!
//! They are part of the contract (`docs/API.md`): teams query them with SQL
//! and alert on them, so they are enums here and a test compares them with
//! the documentation.

/// The name of an audit event (`audit_events.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A code was created for an address.
    OtpGenerated,
    /// The email carrying a code was handed to the transport (or failed).
    OtpSent,
    /// No code was stored or sent: the address has no account and sign-up is closed.
    OtpWithheld,
    /// A code was checked: accepted or refused.
    OtpVerification,
    /// The precise reason a code was refused, with the attempt count.
    OtpVerificationDetail,
    /// A magic link was created for an address.
    MagicLinkGenerated,
    /// The email carrying a link was handed to the transport (or failed).
    MagicLinkSent,
    /// No link was stored or sent: the address has no account and sign-up is closed.
    MagicLinkWithheld,
    /// A magic link was presented: accepted or refused.
    MagicLinkVerification,
    /// A first sign-in created the user (committed with the user row).
    UserCreated,
    /// A session started (`metadata.method`: `otp` | `magic-link`).
    AuthLogin,
    /// One session or all of a user's sessions ended.
    AuthLogout,
    /// A token was issued (`metadata.tokenType`: `access` | `refresh`).
    TokenGenerated,
    /// A refresh token was presented: rotated, answered again, or refused.
    TokenRefresh,
    /// A rotated refresh token came back: its session was ended.
    TokenReuseDetected,
    /// A request was refused by a rate limit.
    RateLimitExceeded,
    /// An operator created a user (`metadata.actor`: `admin` | `cli`).
    AdminUserCreated,
    /// An operator disabled a user; its sessions ended (`metadata.revoked`).
    AdminUserDisabled,
    /// An operator enabled a disabled user.
    AdminUserEnabled,
    /// An operator ended every session of a user (`metadata.revoked`).
    AdminSessionsRevoked,
    /// An operator erased a user; its audit rows were pseudonymised.
    AdminUserDeleted,
    /// An operator retried a webhook delivery (`metadata.deliveryId`, `metadata.status`).
    AdminWebhookRetried,
}

impl Event {
    /// Every event, in the order of the documentation.
    pub const ALL: &'static [Self] = &[
        Self::OtpGenerated,
        Self::OtpSent,
        Self::OtpWithheld,
        Self::OtpVerification,
        Self::OtpVerificationDetail,
        Self::MagicLinkGenerated,
        Self::MagicLinkSent,
        Self::MagicLinkWithheld,
        Self::MagicLinkVerification,
        Self::UserCreated,
        Self::AuthLogin,
        Self::AuthLogout,
        Self::TokenGenerated,
        Self::TokenRefresh,
        Self::TokenReuseDetected,
        Self::RateLimitExceeded,
        Self::AdminUserCreated,
        Self::AdminUserDisabled,
        Self::AdminUserEnabled,
        Self::AdminSessionsRevoked,
        Self::AdminUserDeleted,
        Self::AdminWebhookRetried,
    ];

    /// The dotted name, e.g. `auth.login`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OtpGenerated => "otp.generated",
            Self::OtpSent => "otp.sent",
            Self::OtpWithheld => "otp.withheld",
            Self::OtpVerification => "otp.verification",
            Self::OtpVerificationDetail => "otp.verification.detail",
            Self::MagicLinkGenerated => "magic_link.generated",
            Self::MagicLinkSent => "magic_link.sent",
            Self::MagicLinkWithheld => "magic_link.withheld",
            Self::MagicLinkVerification => "magic_link.verification",
            Self::UserCreated => "user.created",
            Self::AuthLogin => "auth.login",
            Self::AuthLogout => "auth.logout",
            Self::TokenGenerated => "token.generated",
            Self::TokenRefresh => "token.refresh",
            Self::TokenReuseDetected => "token.reuse_detected",
            Self::RateLimitExceeded => "rate_limit.exceeded",
            Self::AdminUserCreated => "admin.user.created",
            Self::AdminUserDisabled => "admin.user.disabled",
            Self::AdminUserEnabled => "admin.user.enabled",
            Self::AdminSessionsRevoked => "admin.sessions.revoked",
            Self::AdminUserDeleted => "admin.user.deleted",
            Self::AdminWebhookRetried => "admin.webhook.retried",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backticked dotted names in the first column of the table under `heading`.
    fn table_events(doc: &str, heading: &str) -> Vec<String> {
        doc.split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("the document has a `{heading}` table"))
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('|').nth(1))
            .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
            .collect()
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names.dedup();
        names
    }

    fn all_events() -> Vec<String> {
        sorted(Event::ALL.iter().map(|e| e.as_str().to_owned()).collect())
    }

    #[test]
    fn the_readme_lists_exactly_the_events() {
        let readme = include_str!("../../README.md");
        let paragraph = readme
            .split("\nEvents: ")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("the README has an `Events: ` paragraph");
        // Event names, not the metadata fields named beside them.
        let named = paragraph
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|n| n.contains('.') && !n.starts_with("metadata."))
            .filter(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'))
            .map(str::to_owned)
            .collect();
        assert_eq!(sorted(named), all_events());
    }

    #[test]
    fn the_api_doc_lists_exactly_the_events() {
        let doc = include_str!("../../docs/API.md");
        assert_eq!(sorted(table_events(doc, "| event | when | metadata |")), all_events());
    }

    #[test]
    fn event_names_are_distinct() {
        let events: std::collections::HashSet<_> = Event::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(events.len(), Event::ALL.len());
    }
}
