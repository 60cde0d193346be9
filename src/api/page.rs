//! The sign-in page behind `GET /auth/verify-magic-link` and `GET /auth/verify`.
//!
//! Opening it never uses the link (mail scanners prefetch URLs); its button
//! POSTs the token, under a CSP that allows only this page's own script.

use poem_openapi::{ApiResponse, payload::Html};
use url::Url;

use crate::auth::{is_token_shaped, random_token};

/// The page with its button; `{{nonce}}`, `{{token}}` and `{{frontend}}` are filled in.
const PAGE: &str = include_str!("magic_link_page.html");

/// The page for a link whose token is missing or malformed.
const INCOMPLETE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
    <meta name=\"viewport\" content=\"width=device-width\"><title>Sign in</title></head><body>\
    <h1>Sign in</h1><p>This link is incomplete. Open the full link from your email.</p></body></html>";

#[derive(ApiResponse)]
pub enum PageResponse {
    /// A page with a "Sign in" button; the link is used only when it is pressed.
    #[oai(status = 200)]
    Page(
        Html<String>,
        #[oai(header = "Content-Security-Policy")] String,
        #[oai(header = "Referrer-Policy")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

/// The page for `token`, handing the tokens to `frontend_url` on success.
pub fn magic_link_page(frontend_url: &Url, token: Option<&str>) -> PageResponse {
    let nonce = random_token();
    let html = match token.filter(|t| is_token_shaped(t)) {
        // The token is base64url (checked above): safe inside the JS string.
        Some(token) => PAGE.replace("{{nonce}}", &nonce).replace("{{token}}", token).replace(
            "{{frontend}}",
            &serde_json::Value::String(frontend_url.to_string()).to_string(),
        ),
        None => INCOMPLETE.to_owned(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    PageResponse::Page(Html(html), csp, "no-referrer".to_owned(), "no-store".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn html(resp: PageResponse) -> (String, String) {
        let PageResponse::Page(Html(html), csp, ..) = resp;
        (html, csp)
    }

    #[test]
    fn the_page_carries_the_token_the_nonce_and_the_frontend() {
        let frontend = Url::parse("https://app.example.com/").expect("valid");
        let token = "q3Zr9yV0mJ8bK2xW7tH5nL1cP4sD6fG0aE9uR3iO8kY";
        let (html, csp) = html(magic_link_page(&frontend, Some(token)));
        assert!(!html.contains("{{"), "every placeholder is filled: {html}");
        assert!(html.contains(&format!("token: '{token}'")));
        assert!(html.contains(r#"location.replace("https://app.example.com/" + '#'"#));
        let nonce = csp
            .split("'nonce-")
            .nth(1)
            .and_then(|s| s.split('\'').next())
            .expect("the CSP names a nonce");
        assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
    }

    #[test]
    fn a_malformed_token_gets_the_incomplete_page_without_script() {
        let frontend = Url::parse("https://app.example.com/").expect("valid");
        for token in [None, Some("short"), Some("x'; alert(1); '")] {
            let (html, _) = html(magic_link_page(&frontend, token));
            assert!(html.contains("This link is incomplete"));
            assert!(!html.contains("<script"));
        }
    }
}
