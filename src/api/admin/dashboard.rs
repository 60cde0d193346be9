//! `GET /dashboard` on the admin listener: the operators' dashboard, one page
//! with its script and style built into the binary (no CDN, no build step).
//!
//! The page itself is public on the admin listener, like `/docs`; it holds no
//! data. It asks for the admin token in a form, keeps it in `sessionStorage`
//! (never in a URL) and reads `/admin/stats`, `/admin/users` and
//! `/admin/audit` with it. Its charts are inline SVG drawn by its own script
//! (no charting library: two chart kinds over at most ~500 points), each with
//! its numbers in a table beside it. A strict CSP allows only this listener.

use poem::{
    IntoResponse as _, Response, Route, get, handler,
    http::{HeaderValue, header},
};

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Only this listener: the page's own script and style, requests to its own
/// API, nothing inline, nothing framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `route` with the dashboard's three paths added.
pub fn mount(route: Route) -> Route {
    route
        .at("/dashboard", get(page))
        .at("/dashboard/app.js", get(script))
        .at("/dashboard/app.css", get(style))
}

/// One of the page's files, with the security headers every one carries.
fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.with_content_type(content_type).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary; an operator upgrading sees the new page at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[handler]
fn page() -> Response {
    file(PAGE, "text/html; charset=utf-8")
}

#[handler]
fn script() -> Response {
    file(SCRIPT, "text/javascript; charset=utf-8")
}

#[handler]
fn style() -> Response {
    file(STYLE, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_nothing_inline() {
        assert!(PAGE.contains(r#"<script src="/dashboard/app.js" defer></script>"#));
        assert!(PAGE.contains(r#"<link rel="stylesheet" href="/dashboard/app.css">"#));
        assert_eq!(PAGE.matches("<script").count(), 1, "one script, external");
        assert!(!PAGE.contains("style=\""), "no inline style (the CSP refuses it)");
        let handler = PAGE.split(' ').find(|w| {
            w.starts_with("on")
                && w.split('=')
                    .next()
                    .is_some_and(|a| a.len() > 2 && a.chars().all(|c| c.is_ascii_lowercase()))
                && w.contains('=')
        });
        assert_eq!(handler, None, "no inline event handlers");
        for text in [PAGE, SCRIPT, STYLE] {
            // The SVG namespace is a name, not a request.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "no other origin"
            );
        }
    }
}
