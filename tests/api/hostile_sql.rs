//! SQL in every string field is data: where sesame stores raw text, hostile
//! strings are read back exactly as sent (or as their documented normalisation
//! says); everywhere else they are refused, and no table is harmed.

use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use serde_json::json;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    helpers::{TestApp, sid, smtp_config},
    hostile_support::{endpoints, post_as, still_serving},
    mailbox::{SmtpSink, token_of},
};

/// The rows of `audit_events` written by one request: (event, email, user_agent).
async fn audit_rows_of(pool: &PgPool, request_id: &str) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT event, email, user_agent FROM audit_events WHERE request_id = $1 ORDER BY id")
        .bind(request_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Hostile strings go where sesame stores raw text: the `User-Agent` header (with
/// sessions and audit events), email local parts the address grammar accepts (users,
/// codes, links, events) and `redirectTo` on the allow list (links). Each is read back
/// from the database exactly as sent, or as its documented normalisation says.
#[sqlx::test]
async fn sql_in_every_string_field_is_just_data(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.login.redirect_allow_list = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;

    // Fields that never reach a query as text are refused, or answered as a failure.
    let injections = [
        "' OR '1'='1",
        "'; DROP TABLE users; --",
        "\"; SELECT pg_sleep(10); --",
        "a@example.com' UNION SELECT token_hash FROM refresh_tokens --",
        "$1$2::text",
    ];
    for (path, valid) in endpoints() {
        for key in valid.as_object().unwrap().keys() {
            for sql in injections {
                let mut body = valid.clone();
                body[key] = json!(sql);
                let started = Instant::now();
                let resp = app.post_json(path, &body).await;
                assert!(resp.status < 500, "{path} {key}={sql}: {}", resp.text);
                assert!(started.elapsed() < Duration::from_secs(5), "no injected sleep ran");
            }
        }
    }
    assert!(sink.messages().is_empty(), "none of those was a valid send");

    // (User-Agent sent, User-Agent stored): kept as sent up to 512 characters.
    let long_agent = "'".repeat(600);
    let agents: Vec<(HeaderValue, Option<String>)> = [
        "'; DROP TABLE sessions; --",
        "' OR '1'='1",
        "\\'; SELECT pg_sleep(10); --",
        "Robert'); DROP TABLE audit_events;--",
        "$1 $2 $$ E'\\x00' %s %n %27%3B {{7*7}} ${jndi:ldap://x} \"q\" `b` \\\\ \\",
        "tab\tinside",
        long_agent.as_str(),
    ]
    .into_iter()
    .map(|ua| (HeaderValue::from_str(ua).unwrap(), Some(ua.chars().take(512).collect())))
    // Bytes beyond ASCII (obs-text) are not read as a user agent: none is stored.
    .chain([(HeaderValue::from_bytes("Mozilla/5.0 ☃ é".as_bytes()).unwrap(), None)])
    .collect();
    // (address sent, address stored): trimmed and lower-cased, nothing else.
    let emails = [
        ("o'brien@example.com", "o'brien@example.com"),
        ("a+b@example.com", "a+b@example.com"),
        ("  O'Brien.Two@Example.COM ", "o'brien.two@example.com"),
        ("'or'1'='1'--@example.com", "'or'1'='1'--@example.com"),
        ("'/**/or/**/1=1#@example.com", "'/**/or/**/1=1#@example.com"),
        ("$1$2{}|^`~!%&*?=@example.com", "$1$2{}|^`~!%&*?=@example.com"),
        ("x'||'1@example.com", "x'||'1@example.com"),
        ("%27%3b--@example.com", "%27%3b--@example.com"),
    ];
    // (redirectTo sent, redirect stored): the parsed WHATWG URL, percent-encoded where
    // the URL standard says, never the raw input.
    let long_path = format!("https://app.example.com/{}", "'".repeat(2000));
    let redirects = [
        (
            "https://app.example.com/'; DROP TABLE users; --",
            "https://app.example.com/';%20DROP%20TABLE%20users;%20--",
        ),
        (
            "https://app.example.com/a?q=' OR '1'='1&x=\"y\"",
            "https://app.example.com/a?q=%27%20OR%20%271%27=%271&x=%22y%22",
        ),
        (
            "https://app.example.com/back\\slash\\..\\x",
            "https://app.example.com/back/x",
        ),
        (
            "https://app.example.com/ünï/☃?snow=☃#☃'",
            "https://app.example.com/%C3%BCn%C3%AF/%E2%98%83?snow=%E2%98%83#%E2%98%83'",
        ),
        (
            "https://app.example.com/%27%3B%20DROP%20TABLE%20users%3B--?a=%00%ZZ",
            "https://app.example.com/%27%3B%20DROP%20TABLE%20users%3B--?a=%00%ZZ",
        ),
        (
            "https://APP.example.com:443/x/../$1$2::text",
            "https://app.example.com/$1$2::text",
        ),
        ("https://app.example.com/x?$$;--", "https://app.example.com/x?$$;--"),
        (long_path.as_str(), long_path.as_str()),
    ];

    let mut stored_emails = Vec::new();
    let mut sessions: i64 = 0;
    for (i, (raw_email, email)) in emails.iter().enumerate() {
        let (agent, stored_agent) = &agents[i % agents.len()];
        let (redirect, stored_redirect) = redirects[i % redirects.len()];
        let ids = ["code", "verify", "link", "open"].map(|step| format!("sqli-{i}-{step}"));
        let started = Instant::now();

        let sent = post_as(&app, "/auth/send-code", &json!({ "email": raw_email }), agent, &ids[0]).await;
        assert_eq!(sent.status, 200, "{raw_email}: {}", sent.text);
        let code = sink.last_to(email).code();
        let body = json!({ "email": raw_email, "code": code });
        let by_code = post_as(&app, "/auth/verify-code", &body, agent, &ids[1]).await;
        assert_eq!(by_code.status, 200, "{raw_email}: {}", by_code.text);
        assert_eq!(by_code.json["user"]["email"], *email);

        let body = json!({ "email": raw_email, "redirectTo": redirect });
        let sent = post_as(&app, "/auth/send-magic-link", &body, agent, &ids[2]).await;
        assert_eq!(sent.status, 200, "{redirect}: {}", sent.text);
        let link = sink.last_to(email).link();
        assert!(link.starts_with(stored_redirect.split('#').next().unwrap()), "{link}");
        let body = json!({ "token": token_of(&link) });
        let by_link = post_as(&app, "/auth/verify-magic-link", &body, agent, &ids[3]).await;
        assert_eq!(by_link.status, 200, "{link}: {}", by_link.text);
        assert!(started.elapsed() < Duration::from_secs(5), "no injected sleep ran");
        sessions += 2;

        let users: Vec<String> = sqlx::query_scalar("SELECT email FROM users WHERE email = $1")
            .bind(email)
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(users, [*email], "one user, stored as normalised");
        for pair in [&by_code.json, &by_link.json] {
            let ua: Option<String> = sqlx::query_scalar("SELECT user_agent FROM sessions WHERE id = $1")
                .bind(sid(&app, pair))
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(&ua, stored_agent, "the session keeps the user agent");
        }
        let link_row: (String, Option<String>) =
            sqlx::query_as("SELECT email, redirect_to FROM magic_links WHERE email = $1")
                .bind(email)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(link_row, ((*email).to_owned(), Some(stored_redirect.to_owned())));
        let expected_events: [&[&str]; 4] = [
            &["otp.generated", "otp.sent"],
            &[
                "otp.verification",
                "user.created",
                "auth.login",
                "token.generated",
                "token.generated",
            ],
            &["magic_link.generated", "magic_link.sent"],
            &[
                "magic_link.verification",
                "auth.login",
                "token.generated",
                "token.generated",
            ],
        ];
        for (id, events) in ids.iter().zip(expected_events) {
            let rows = audit_rows_of(&pool, id).await;
            let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            assert_eq!(names, events, "{id}");
            for (event, row_email, ua) in &rows {
                assert_eq!(row_email.as_deref(), Some(*email), "{id} {event}");
                assert_eq!(ua, stored_agent, "{id} {event}");
            }
        }
        stored_emails.push(*email);
    }

    // A redirect within the 2048-character request limit that percent-encoding makes
    // longer than the column is refused, not a 500, and nothing is stored or sent.
    let before = sink.messages().len();
    let expands = format!("https://app.example.com/{}", "é".repeat(1000));
    app.send_magic_link("o'brien@example.com", Some(&expands))
        .await
        .assert_error(400, "invalid_redirect");
    assert_eq!(sink.messages().len(), before);

    // Every table is still there and holds exactly what was stored.
    for table in [
        "users",
        "otp_codes",
        "magic_links",
        "sessions",
        "refresh_tokens",
        "audit_events",
        "rate_limits",
    ] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(exists, "{table} is still there");
    }
    let mut users: Vec<String> = sqlx::query_scalar("SELECT email FROM users")
        .fetch_all(&pool)
        .await
        .unwrap();
    users.sort();
    stored_emails.sort_unstable();
    assert_eq!(users, stored_emails);
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sessions WHERE revoked_at IS NULL), \
         (SELECT count(*) FROM magic_links WHERE consumed_at IS NOT NULL), \
         (SELECT count(*) FROM otp_codes WHERE consumed_at IS NOT NULL)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let n = i64::try_from(emails.len()).unwrap();
    assert_eq!(counts, (sessions, n, n), "live sessions, used links, used codes");
    still_serving(&app).await;
}
