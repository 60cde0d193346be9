//! The sign-in page behind `GET /auth/verify-magic-link` and `GET /auth/verify`.
//!
//! Opening it never uses the link (mail scanners prefetch URLs); its button
//! POSTs the token, under a CSP that allows only this page's own script.
//!
//! The page shows `APP_NAME` and speaks English or German: the link's `lang`
//! query parameter decides (a link sent in another language than the default
//! carries it), else the browser's `Accept-Language`, else `EMAIL_DEFAULT_LOCALE`.

use poem_openapi::{ApiResponse, payload::Html};
use url::Url;

use crate::{
    auth::{is_token_shaped, random_token},
    email::{locale, templates::BUILT_IN_FALLBACK},
};

/// The page with its button; its `{{…}}` placeholders are filled in.
const PAGE: &str = include_str!("magic_link_page.html");

/// The page for a link whose token is missing or malformed.
const INCOMPLETE: &str = "<!doctype html><html lang=\"{{lang}}\"><head><meta charset=\"utf-8\">\
    <meta name=\"viewport\" content=\"width=device-width\"><title>{{title}}</title></head><body>\
    <h1>{{title}}</h1><p>{{incomplete}}</p></body></html>";

/// The words of the page in one language.
struct Words {
    lang: &'static str,
    /// Heading and title; `{app}` is the escaped `APP_NAME`.
    title: &'static str,
    press: &'static str,
    button: &'static str,
    incomplete: &'static str,
    invalid: &'static str,
    done: &'static str,
    unreachable: &'static str,
}

const WORDS: &[Words] = &[
    Words {
        lang: "en",
        title: "Sign in to {app}",
        press: "Press the button to finish signing in.",
        button: "Sign in",
        incomplete: "This link is incomplete. Open the full link from your email.",
        invalid: "This link is invalid, used or expired. Ask for a new one.",
        done: "You are signed in.",
        unreachable: "Could not reach the server. Try again.",
    },
    Words {
        lang: "de",
        title: "Bei {app} anmelden",
        press: "Drücken Sie die Schaltfläche, um die Anmeldung abzuschließen.",
        button: "Anmelden",
        incomplete: "Dieser Link ist unvollständig. Öffnen Sie den vollständigen Link aus Ihrer E-Mail.",
        invalid: "Dieser Link ist ungültig, benutzt oder abgelaufen. Fordern Sie einen neuen an.",
        done: "Sie sind angemeldet.",
        unreachable: "Der Server ist nicht erreichbar. Versuchen Sie es erneut.",
    },
];

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

/// What the page is for and how it speaks.
pub struct PageSettings<'a> {
    pub frontend_url: &'a Url,
    pub app_name: &'a str,
    pub default_locale: &'a str,
}

/// The words for the `lang` query parameter, else `Accept-Language`, else the default locale.
fn words(lang: Option<&str>, accept_language: Option<&str>, default_locale: &str) -> &'static Words {
    let wanted = lang
        .and_then(locale::parse_tag)
        .map(|t| vec![t])
        .unwrap_or_else(|| accept_language.map(locale::accepted).unwrap_or_default());
    let find = |tag: &str| WORDS.iter().find(|w| w.lang == tag);
    wanted
        .iter()
        .flat_map(|t| locale::fallbacks(t))
        .chain(locale::fallbacks(default_locale))
        .find_map(find)
        .or_else(|| find(BUILT_IN_FALLBACK))
        .unwrap_or(&WORDS[0])
}

/// The page for `token`, handing the tokens to `frontend_url` on success, in
/// the language `lang` or `accept_language` asks for.
pub fn magic_link_page(
    settings: &PageSettings<'_>,
    token: Option<&str>,
    lang: Option<&str>,
    accept_language: Option<&str>,
) -> PageResponse {
    let nonce = random_token();
    let w = words(lang, accept_language, settings.default_locale);
    let title = w
        .title
        .replace("{app}", &crate::email::templates::escape(settings.app_name));
    let texts = serde_json::json!({ "invalid": w.invalid, "done": w.done, "unreachable": w.unreachable });
    let html = match token.filter(|t| is_token_shaped(t)) {
        // The token is base64url (checked above): safe inside the JS string.
        // The texts are ours; JSON inside a script is safe as they hold no `<`.
        Some(token) => PAGE
            .replace("{{nonce}}", &nonce)
            .replace("{{token}}", token)
            .replace("{{texts}}", &texts.to_string())
            .replace(
                "{{frontend}}",
                &serde_json::Value::String(settings.frontend_url.to_string()).to_string(),
            ),
        None => INCOMPLETE.replace("{{incomplete}}", w.incomplete),
    }
    .replace("{{lang}}", w.lang)
    .replace("{{press}}", w.press)
    .replace("{{button}}", w.button)
    // Last: the escaped app name cannot hold a placeholder's braces unescaped into one above.
    .replace("{{title}}", &title);
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

    fn settings<'a>(frontend_url: &'a Url, app_name: &'a str) -> PageSettings<'a> {
        PageSettings {
            frontend_url,
            app_name,
            default_locale: "en",
        }
    }

    #[test]
    fn the_page_carries_the_token_the_nonce_and_the_frontend() {
        let frontend = Url::parse("https://app.example.com/").expect("valid");
        let token = "q3Zr9yV0mJ8bK2xW7tH5nL1cP4sD6fG0aE9uR3iO8kY";
        let (html, csp) = html(magic_link_page(&settings(&frontend, "Acme"), Some(token), None, None));
        assert!(!html.contains("{{"), "every placeholder is filled: {html}");
        assert!(html.contains(&format!("token: '{token}'")));
        assert!(html.contains(r#"location.replace("https://app.example.com/" + '#'"#));
        assert!(html.contains("<title>Sign in to Acme</title>"));
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
            let (html, _) = html(magic_link_page(&settings(&frontend, "sesame"), token, None, None));
            assert!(html.contains("This link is incomplete"));
            assert!(!html.contains("<script"));
        }
    }

    #[test]
    fn the_app_name_is_escaped() {
        let frontend = Url::parse("https://app.example.com/").expect("valid");
        let token = "q3Zr9yV0mJ8bK2xW7tH5nL1cP4sD6fG0aE9uR3iO8kY";
        let hostile = "<script>alert(1)</script>{{token}}";
        let (html, _) = html(magic_link_page(&settings(&frontend, hostile), Some(token), None, None));
        assert!(
            html.contains("Sign in to &lt;script&gt;alert(1)&lt;/script&gt;{{token}}"),
            "{html}"
        );
        assert_eq!(html.matches("<script").count(), 1, "only the page's own script");
    }

    #[test]
    fn the_page_speaks_the_links_language_else_the_browsers() {
        let frontend = Url::parse("https://app.example.com/").expect("valid");
        let token = "q3Zr9yV0mJ8bK2xW7tH5nL1cP4sD6fG0aE9uR3iO8kY";
        let s = settings(&frontend, "Acme");
        let (de, _) = html(magic_link_page(&s, Some(token), Some("de"), Some("en")));
        assert!(
            de.contains("<html lang=\"de\">") && de.contains("Bei Acme anmelden"),
            "{de}"
        );
        let (browser, _) = html(magic_link_page(&s, Some(token), None, Some("de-AT, en;q=0.5")));
        assert!(browser.contains("Anmelden</button>"), "{browser}");
        let (fallback, _) = html(magic_link_page(&s, Some(token), Some("pt-BR"), None));
        assert!(fallback.contains("<html lang=\"en\">"));
    }
}
