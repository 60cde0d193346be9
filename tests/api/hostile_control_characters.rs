//! NUL bytes and control characters in the live credentials of a signed-in user
//! are refused (or, in a URL, escaped) before they reach a query: each request
//! answers its code and leaves only the documented trace of a failed attempt.

use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    helpers::{TestApp, smtp_config},
    hostile_support::{footprint, post_as, seed, still_serving},
    mailbox::SmtpSink,
};

/// The audit rows of one request: (event, success, error, email).
async fn events_of(pool: &PgPool, request_id: &str) -> Vec<(String, bool, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT event, success, error, email FROM audit_events WHERE request_id = $1 ORDER BY id")
        .bind(request_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// An audit row as `events_of` reads it: (event, success, error, email).
type Event<'a> = (&'a str, bool, Option<&'a str>, Option<&'a str>);

/// A request and what it must answer and record: (path, body, status, code, events).
type Case<'a> = (&'a str, Value, u16, Option<&'a str>, &'a [Event<'a>]);

/// NUL bytes and line breaks, in the live credentials of a signed-in user, are refused
/// (or, in a URL, escaped) before they reach a query. Each request answers its code;
/// the only work done is what the docs say a failed attempt records, and no table
/// changes but for the one link whose URL escaped them.
#[sqlx::test]
async fn nul_bytes_and_control_characters_never_reach_the_database_as_errors(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.login.redirect_allow_list = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;
    let ada = seed(&app, &sink).await;
    let rt = ada.refresh_token();
    let nul = "\u{0}";
    let (head, tail) = ada.code.split_at(3);
    let escaped = "https://app.example.com/a%00bx";
    let agent = HeaderValue::from_static("hostile-test");
    let cases: [Case; 8] = [
        (
            "/auth/send-code",
            json!({ "email": format!("ada{nul}@example.com") }),
            400,
            Some("invalid_email"),
            &[],
        ),
        (
            "/auth/send-code",
            json!({ "email": format!("{}{nul}", ada.email) }),
            400,
            Some("invalid_email"),
            &[],
        ),
        // A code, a link token or a refresh token outside its documented
        // shape is refused while the body is parsed: no try counted, nothing recorded.
        (
            "/auth/verify-code",
            json!({ "email": ada.email, "code": format!("{head}{nul}{tail}") }),
            400,
            Some("invalid_request"),
            &[],
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": ada.email, "redirectTo": format!("https://app.exa{nul}mple.com/") }),
            400,
            Some("invalid_redirect"),
            &[],
        ),
        // In a URL's path they are escaped (NUL) or dropped (CR, LF), as the URL
        // standard says, and the link is sent to the escaped URL.
        (
            "/auth/send-magic-link",
            json!({ "email": ada.email, "redirectTo": format!("https://app.example.com/a{nul}b\r\nx") }),
            200,
            None,
            &[
                ("magic_link.generated", true, None, Some(ada.email)),
                ("magic_link.sent", true, None, Some(ada.email)),
            ],
        ),
        (
            "/auth/verify-magic-link",
            json!({ "token": format!("{}{nul}", ada.link_token) }),
            400,
            Some("invalid_request"),
            &[],
        ),
        (
            "/auth/refresh",
            json!({ "refreshToken": format!("{rt}{nul}") }),
            400,
            Some("invalid_request"),
            &[],
        ),
        (
            "/auth/logout",
            json!({ "refreshToken": format!("{rt}{nul}") }),
            400,
            Some("invalid_request"),
            &[],
        ),
    ];
    let before = footprint(&pool, &sink).await;
    let mut recorded = 0;
    for (i, (path, body, status, code, events)) in cases.iter().enumerate() {
        let id = format!("nul-{i}");
        let resp = post_as(&app, path, body, &agent, &id).await;
        match code {
            Some(code) => resp.assert_error(*status, code),
            None => assert_eq!(resp.status, *status, "{path}: {}", resp.text),
        }
        let rows = events_of(&pool, &id).await;
        let rows: Vec<Event> = rows
            .iter()
            .map(|(e, ok, error, email)| (e.as_str(), *ok, error.as_deref(), email.as_deref()))
            .collect();
        assert_eq!(rows, *events, "{path} {body}");
        recorded += events.len();
    }

    let after = footprint(&pool, &sink).await;
    assert_eq!(
        after.audit_events,
        before.audit_events + i64::try_from(recorded).unwrap()
    );
    assert_eq!(after.emails, before.emails + 1, "only the escaped link was sent");
    assert!(sink.last_to(ada.email).link().starts_with(escaped));
    for ((table, then), (_, now)) in before.rows.iter().zip(&after.rows) {
        match *table {
            "magic_links" => {
                let new: Vec<&String> = now.iter().filter(|r| !then.contains(r)).collect();
                assert_eq!(new.len(), 1, "{new:?}");
                assert!(new[0].contains(escaped), "{}", new[0]);
                assert!(then.iter().all(|r| now.contains(r)), "the other links are untouched");
            }
            _ => assert_eq!(then, now, "{table} is untouched"),
        }
    }
    let (attempts, consumed): (i32, bool) =
        sqlx::query_as("SELECT attempts, consumed_at IS NOT NULL FROM otp_codes WHERE email = $1")
            .bind(ada.email)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (attempts, consumed),
        (0, false),
        "no try counted; the code is still live"
    );
    // The credentials themselves still work.
    assert_eq!(app.verify_code(ada.email, &ada.code).await.status, 200);
    assert_eq!(app.verify_magic_link(&ada.link_token).await.status, 200);
    assert_eq!(app.refresh(rt).await.status, 200);
    still_serving(&app).await;
}
