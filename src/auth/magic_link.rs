//! Magic links: a random token in a URL, known to the server only by its SHA-256.

use sha2::{Digest as _, Sha256};
use url::Url;

use crate::config::origin_of;

/// Longest `redirectTo` kept, after normalisation (the `magic_links.redirect_to`
/// column holds no more): percent-encoding can make a URL within the request's
/// 2048-character limit several times longer.
pub const MAX_REDIRECT_LEN: usize = 2048;

/// The SHA-256 under which a token is stored.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Why a `redirectTo` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RedirectError {
    NotAUrl,
    NotAllowed,
    /// Longer than [`MAX_REDIRECT_LEN`] once normalised.
    TooLong,
}

/// Where a link leads, checked: `redirect_to` when its origin is on the allow
/// list (exact match), else `FRONTEND_URL/auth/verify`. The URL is the parsed,
/// normalised one (control characters and the like are escaped), which is
/// also what gets stored.
pub fn target(frontend_url: &Url, allow_list: &[String], redirect_to: Option<&str>) -> Result<Url, RedirectError> {
    match redirect_to {
        Some(raw) => {
            let url = Url::parse(raw).map_err(|_| RedirectError::NotAUrl)?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(RedirectError::NotAUrl);
            }
            // Credentials in the URL could disguise the real host from a reader.
            if !url.username().is_empty() || url.password().is_some() {
                return Err(RedirectError::NotAllowed);
            }
            if !allow_list.iter().any(|o| *o == origin_of(&url)) {
                return Err(RedirectError::NotAllowed);
            }
            if url.as_str().len() > MAX_REDIRECT_LEN {
                return Err(RedirectError::TooLong);
            }
            Ok(url)
        }
        None => frontend_url.join("auth/verify").map_err(|_| RedirectError::NotAUrl),
    }
}

/// `target` with the token added as its `token` query parameter.
pub fn with_token(target: &Url, token: &str) -> Url {
    let mut url = target.clone();
    url.query_pairs_mut().append_pair("token", token);
    url
}

/// The link of an email: [`target`] plus the token.
pub fn link(
    frontend_url: &Url,
    allow_list: &[String],
    redirect_to: Option<&str>,
    token: &str,
) -> Result<Url, RedirectError> {
    target(frontend_url, allow_list, redirect_to).map(|t| with_token(&t, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frontend() -> Url {
        Url::parse("https://app.example.com").expect("valid")
    }

    #[test]
    fn the_default_link_points_at_the_frontend_verify_route() {
        let url = link(&frontend(), &[], None, "tok").expect("ok");
        assert_eq!(url.as_str(), "https://app.example.com/auth/verify?token=tok");
        let nested = Url::parse("https://example.com/app/").expect("valid");
        assert_eq!(
            link(&nested, &[], None, "t").expect("ok").as_str(),
            "https://example.com/app/auth/verify?token=t"
        );
    }

    #[test]
    fn only_allow_listed_origins_may_be_redirected_to() {
        let allow = vec!["https://admin.example.com".to_owned()];
        let ok = link(&frontend(), &allow, Some("https://admin.example.com/welcome?x=1"), "t").expect("allowed");
        assert_eq!(ok.as_str(), "https://admin.example.com/welcome?x=1&token=t");
        for (bad, why) in [
            ("https://evil.example.com/", RedirectError::NotAllowed),
            ("http://admin.example.com/", RedirectError::NotAllowed),
            ("https://admin.example.com:8443/", RedirectError::NotAllowed),
            ("https://admin.example.com.evil.io/", RedirectError::NotAllowed),
            ("https://user@admin.example.com/", RedirectError::NotAllowed),
            ("javascript:alert(1)", RedirectError::NotAUrl),
            ("//admin.example.com/", RedirectError::NotAUrl),
            ("/relative", RedirectError::NotAUrl),
        ] {
            assert_eq!(link(&frontend(), &allow, Some(bad), "t"), Err(why), "{bad}");
        }
    }

    #[test]
    fn a_redirect_longer_than_the_column_once_normalised_is_refused() {
        let allow = vec!["https://admin.example.com".to_owned()];
        let origin = "https://admin.example.com/";
        // 1 000 characters, each percent-encoded into six.
        let expands = format!("{origin}{}", "é".repeat(1000));
        assert_eq!(target(&frontend(), &allow, Some(&expands)), Err(RedirectError::TooLong));
        let fits = format!("{origin}{}", "a".repeat(MAX_REDIRECT_LEN - origin.len()));
        assert_eq!(
            target(&frontend(), &allow, Some(&fits)).map(|u| u.as_str().len()),
            Ok(MAX_REDIRECT_LEN)
        );
    }
}
