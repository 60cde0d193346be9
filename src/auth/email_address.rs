//! Email addresses, parsed once at the edge: trimmed, lower-cased, checked.

use std::fmt;

/// Longest address accepted (RFC 5321's path limit less the brackets).
pub const MAX_LEN: usize = 254;
/// Longest local part (RFC 5321).
const MAX_LOCAL_LEN: usize = 64;

/// A normalised email address: trimmed and lower-cased.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Trims and lower-cases `raw`, then checks it is a plausible address
    /// (`local@domain.tld`, printable ASCII, no spaces, within RFC lengths;
    /// a top-level domain starts with a letter). The API documents the same
    /// rule as a pattern (`api::types::EmailShape`), which cannot count the
    /// dots of a local part: a doubled dot is let through.
    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim().to_ascii_lowercase();
        if s.len() > MAX_LEN || !s.is_ascii() {
            return None;
        }
        let (local, domain) = s.rsplit_once('@')?;
        let local_ok = !local.is_empty()
            && local.len() <= MAX_LOCAL_LEN
            && !local.starts_with('.')
            && !local.ends_with('.')
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
            && labels
                .last()
                .is_some_and(|tld| tld.len() >= 2 && tld.starts_with(|c: char| c.is_ascii_alphabetic()));
        (local_ok && domain_ok).then_some(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The mailbox this address delivers to, the key of per-address limits:
    /// see [`canonical_mailbox`].
    pub fn mailbox(&self) -> String {
        canonical_mailbox(&self.0)
    }
}

/// The mailbox an address delivers to: lower-cased, and its local part cut at
/// the first `+` (sub-addressing: `ada+news@x` and `ada+1@x` reach `ada@x`), so
/// that the `+tag` variants of one address share its per-address limits. A
/// local part that starts with `+` is kept whole (there is nothing before the
/// tag). Only the limits use this key: email still goes to the address as typed.
pub fn canonical_mailbox(address: &str) -> String {
    let address = address.to_ascii_lowercase();
    match address.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _tag)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => address,
        },
        None => address,
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EmailAddress {
    /// Only the domain: addresses are personal data and stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmailAddress(…@{})", self.domain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_trimmed_and_lower_cased() {
        let e = EmailAddress::parse("  Ada.Lovelace+Test@Example.COM \n").expect("valid");
        assert_eq!(e.as_str(), "ada.lovelace+test@example.com");
        assert_eq!(e.domain(), "example.com");
        assert!(!format!("{e:?}").contains("ada"));
    }

    #[test]
    fn the_mailbox_drops_the_plus_tag_and_the_case() {
        for (address, mailbox) in [
            ("ada@example.com", "ada@example.com"),
            ("ada+1@example.com", "ada@example.com"),
            ("ada+2@example.com", "ada@example.com"),
            ("Ada+News@Example.COM", "ada@example.com"),
            ("ada+a+b@example.com", "ada@example.com"),
            ("ada+@example.com", "ada@example.com"),
            ("a.da@example.com", "a.da@example.com"),
            ("ada-1@example.com", "ada-1@example.com"),
            ("+tag@example.com", "+tag@example.com"),
            ("ada@plus+domain.example", "ada@plus+domain.example"),
        ] {
            assert_eq!(canonical_mailbox(address), mailbox, "{address}");
        }
        let e = EmailAddress::parse(" Ada+1@Example.com").expect("valid");
        assert_eq!(e.mailbox(), "ada@example.com");
        assert_eq!(e.as_str(), "ada+1@example.com", "the address itself keeps its tag");
    }

    #[test]
    fn implausible_addresses_are_refused() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@example",
            "ada@@example.com",
            "ada lovelace@example.com",
            "ada@exa mple.com",
            ".ada@example.com",
            "ada.@example.com",
            "ada@example.1a",
            "ada@-example.com",
            "ada@example..com",
            "ada@example.c",
            "ada@1.2.3.4",
            "ädä@example.com",
            "ada@example.com\u{0}",
            "\"ada\"@example.com",
            "ada<script>@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_none(), "{bad:?} must be refused");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long_local).is_none());
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(EmailAddress::parse(&long).is_none());
    }
}
