//! The messages sesame sends, each as plain text and HTML.

use super::Message;

fn minutes(d: std::time::Duration) -> u64 {
    d.as_secs().div_ceil(60).max(1)
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn html_page(body: &str) -> String {
    format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;max-width:32em;margin:2em auto;color:#222\">{body}\
         <p style=\"color:#777;font-size:.9em\">If you did not ask for this, ignore this email.</p></body></html>"
    )
}

/// The email with a one-time code; the code is in the subject and the body.
pub fn code(to: &str, code: &str, valid_for: std::time::Duration) -> Message {
    let m = minutes(valid_for);
    Message {
        to: to.to_owned(),
        subject: format!("Your sign-in code: {code}"),
        text: format!(
            "Your sign-in code is {code}\n\nIt is valid for {m} minutes and can be used once.\nIf you did not ask for this, ignore this email.\n"
        ),
        html: html_page(&format!(
            "<p>Your sign-in code is</p><p style=\"font-size:2em;letter-spacing:.2em;font-weight:bold\">{}</p>\
             <p>It is valid for {m} minutes and can be used once.</p>",
            escape(code)
        )),
    }
}

/// The email with a magic link.
pub fn magic_link(to: &str, link: &str, valid_for: std::time::Duration) -> Message {
    let m = minutes(valid_for);
    let href = escape(link);
    Message {
        to: to.to_owned(),
        subject: "Your sign-in link".to_owned(),
        text: format!(
            "Sign in with this link:\n\n{link}\n\nIt is valid for {m} minutes and can be used once.\nIf you did not ask for this, ignore this email.\n"
        ),
        html: html_page(&format!(
            "<p><a href=\"{href}\" style=\"display:inline-block;padding:.6em 1.2em;background:#222;color:#fff;\
             text-decoration:none;border-radius:4px\">Sign in</a></p>\
             <p>Or paste this link into your browser:<br><span style=\"word-break:break-all\">{href}</span></p>\
             <p>It is valid for {m} minutes and can be used once.</p>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_is_in_the_subject_and_both_bodies() {
        let m = code("a@example.com", "123456", std::time::Duration::from_secs(600));
        assert_eq!(m.subject, "Your sign-in code: 123456");
        assert!(m.text.contains("123456") && m.text.contains("10 minutes"));
        assert!(m.html.contains("123456"));
    }

    #[test]
    fn links_are_escaped_in_html() {
        let m = magic_link(
            "a@example.com",
            "https://x.example/v?token=a&b=\"c\"",
            std::time::Duration::from_secs(900),
        );
        assert!(m.text.contains("https://x.example/v?token=a&b=\"c\""));
        assert!(m.html.contains("https://x.example/v?token=a&amp;b=&quot;c&quot;"));
        assert!(m.text.contains("15 minutes"));
    }
}
