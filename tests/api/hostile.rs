//! Hostile input: every request gets a 4xx with the error envelope (never a 5xx),
//! and the server keeps serving.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Method, header::HeaderValue};
use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    helpers::{TestApp, TestResponse, smtp_config, spawn_with_smtp, test_config},
    mailbox::{SmtpSink, token_of},
};

/// Every JSON endpoint with a valid body of its own.
fn endpoints() -> Vec<(&'static str, Value)> {
    vec![
        ("/auth/send-code", json!({ "email": "ada@example.com" })),
        (
            "/auth/verify-code",
            json!({ "email": "ada@example.com", "code": "123456" }),
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": "ada@example.com", "redirectTo": "https://app.example.com/x" }),
        ),
        ("/auth/verify-magic-link", json!({ "token": "A".repeat(43) })),
        ("/auth/refresh", json!({ "refreshToken": "A".repeat(43) })),
        ("/auth/logout", json!({ "refreshToken": "A".repeat(43) })),
    ]
}

fn assert_4xx(resp: &TestResponse, what: &str) {
    assert!(
        (400..500).contains(&resp.status),
        "{what}: {} {}",
        resp.status,
        resp.text
    );
    assert_eq!(resp.json["success"], false, "{what}: {}", resp.text);
    assert!(
        resp.json["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: {}",
        resp.text
    );
}

async fn still_serving(app: &TestApp) {
    assert_eq!(app.health().await.status, 200, "the server keeps serving");
}

#[sqlx::test]
async fn malformed_truncated_mistyped_and_null_bodies_are_4xx(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, _sink) = spawn_with_smtp(db).await;
    for (path, valid) in endpoints() {
        let text = valid.to_string();
        let mut bodies: Vec<Vec<u8>> = vec![
            text.as_bytes()[..text.len() / 2].to_vec(),
            text.replace(':', "").into_bytes(),
            b"{\"a\":}".to_vec(),
            b"[]".to_vec(),
            b"null".to_vec(),
            b"123".to_vec(),
            b"\"str\"".to_vec(),
            b"{}".to_vec(),
            b"{\"email\": \"\xff\xfe\"}".to_vec(),
            b"\x00\x00\x00".to_vec(),
        ];
        for key in valid.as_object().unwrap().keys() {
            for bad in [json!(null), json!(1), json!(true), json!([]), json!({}), json!(1.5e300)] {
                if key == "redirectTo" && bad.is_null() {
                    continue; // optional: null means absent
                }
                let mut body = valid.clone();
                body[key] = bad;
                bodies.push(body.to_string().into_bytes());
            }
        }
        for body in bodies {
            let resp = app.post_raw(path, Some("application/json"), body.clone()).await;
            assert_4xx(&resp, &format!("{path} {:?}", String::from_utf8_lossy(&body)));
        }
    }
    still_serving(&app).await;
}

#[sqlx::test]
async fn duplicated_keys_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let body = br#"{"email":"ada@example.com","email":"eve@example.com"}"#.to_vec();
    let resp = app.post_raw("/auth/send-code", Some("application/json"), body).await;
    resp.assert_error(400, "invalid_json");
    assert!(resp.text.contains("duplicated key"), "{}", resp.text);
    let nested = br#"{"token":"x","x":{"a":1,"a":2}}"#.to_vec();
    app.post_raw("/auth/verify-magic-link", Some("application/json"), nested)
        .await
        .assert_error(400, "invalid_json");
}

/// The tables a request can write (everything but `audit_events`, counted apart).
const WRITTEN: [&str; 6] = [
    "users",
    "otp_codes",
    "magic_links",
    "sessions",
    "refresh_tokens",
    "rate_limits",
];

/// What a request that does work leaves behind: every row of the tables requests
/// write (as text), the number of audit events, and the number of emails sent.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    rows: Vec<(&'static str, Vec<String>)>,
    audit_events: i64,
    emails: usize,
}

async fn rows_of(pool: &PgPool, table: &str) -> Vec<String> {
    let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn footprint(pool: &PgPool, sink: &SmtpSink) -> Footprint {
    let mut rows = Vec::new();
    for table in WRITTEN {
        rows.push((table, rows_of(pool, table).await));
    }
    let audit_events = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(pool)
        .await
        .unwrap();
    Footprint {
        rows,
        audit_events,
        emails: sink.messages().len(),
    }
}

/// What a signed-in user holds: a session (token pair), a live code and an unused link.
struct Seeded {
    email: &'static str,
    pair: Value,
    code: String,
    link_token: String,
}

impl Seeded {
    fn refresh_token(&self) -> &str {
        self.pair["refreshToken"].as_str().unwrap()
    }

    fn access_token(&self) -> &str {
        self.pair["token"].as_str().unwrap()
    }
}

async fn seed(app: &TestApp, sink: &SmtpSink) -> Seeded {
    let email = "ada@example.com";
    let pair = app.sign_in(sink, email).await;
    assert_eq!(app.send_code(email).await.status, 200);
    let code = sink.last_to(email).code();
    assert_eq!(app.send_magic_link(email, None).await.status, 200);
    let link_token = token_of(&sink.last_to(email).link());
    Seeded {
        email,
        pair,
        code,
        link_token,
    }
}

/// Fills the app's code-hashing queue with jobs that wait until the returned sender
/// is dropped. While it is held, a request that would hash a code answers 503
/// `overloaded` at once: one that answers anything else hashed nothing.
async fn plug_hash_queue(app: &TestApp) -> std::sync::mpsc::Sender<()> {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = Arc::new(Mutex::new(wait));
    // Twice: the hashing threads take their first jobs off the queue meanwhile.
    for _ in 0..2 {
        loop {
            let wait = wait.clone();
            let job = app.state.hash_queue.run(move || {
                let _ = wait.lock().map(|w| w.recv());
            });
            // A refused job fails at its first poll; a queued one stays pending.
            match tokio::time::timeout(Duration::ZERO, job).await {
                Ok(refused) => {
                    assert!(refused.is_err(), "a plug job cannot finish while plugged");
                    break;
                }
                Err(_queued) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    release
}

/// `body` as JSON, then spaces up to 2 MiB: still valid JSON, 32 times the limit.
fn padded(body: &Value) -> Vec<u8> {
    let mut bytes = body.to_string().into_bytes();
    bytes.resize(2 * 1024 * 1024, b' ');
    bytes
}

/// Too-long fields and too-large bodies are refused before anything else happens.
/// The refused requests carry the live credentials of a signed-in user (padded or
/// lengthened), so that work on any of them would show: no row of any table
/// changes, no audit event is recorded, no email is sent, and no code is hashed
/// (the hash queue is plugged: a request that hashed would answer 503). Then the
/// same values unpadded do work, so the observation could have seen it.
#[sqlx::test]
async fn huge_values_and_bodies_are_refused_before_any_work(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let ada = seed(&app, &sink).await;
    let rt = ada.refresh_token();
    let valid = [
        ("/auth/send-code", json!({ "email": ada.email })),
        ("/auth/verify-code", json!({ "email": ada.email, "code": ada.code })),
        ("/auth/send-magic-link", json!({ "email": ada.email })),
        ("/auth/verify-magic-link", json!({ "token": ada.link_token })),
        ("/auth/refresh", json!({ "refreshToken": rt })),
        ("/auth/logout", json!({ "refreshToken": rt })),
    ];
    let long = "a".repeat(10_000);
    let too_long = [
        ("/auth/send-code", json!({ "email": format!("{long}@example.com") })),
        (
            "/auth/verify-code",
            json!({ "email": ada.email, "code": format!("{}{long}", ada.code) }),
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": ada.email, "redirectTo": format!("https://x.example/{long}") }),
        ),
        (
            "/auth/verify-magic-link",
            json!({ "token": format!("{}{long}", ada.link_token) }),
        ),
        ("/auth/refresh", json!({ "refreshToken": format!("{rt}{long}") })),
        ("/auth/logout", json!({ "refreshToken": format!("{rt}{long}") })),
    ];
    let before = footprint(&pool, &sink).await;
    let release = plug_hash_queue(&app).await;

    // `invalid_request`: refused by the field's length limit, before the handler
    // (which would answer `invalid_email`, `invalid_code`, `invalid_redirect`, …).
    for (path, body) in &too_long {
        app.post_json(path, body).await.assert_error(400, "invalid_request");
    }
    for (path, body) in &valid {
        app.post_raw(path, Some("application/json"), padded(body))
            .await
            .assert_error(413, "payload_too_large");
    }
    // The bearer operations refuse a large body too, before looking at the session.
    let sid = app.state.jwt.verify(ada.access_token()).unwrap().sid;
    for (method, path) in [
        (Method::POST, "/auth/logout-all".to_owned()),
        (Method::DELETE, format!("/auth/sessions/{sid}")),
    ] {
        let resp = app
            .client
            .request(method, app.url(&path))
            .bearer_auth(ada.access_token())
            .header("content-type", "application/json")
            .body(padded(&json!({})))
            .send()
            .await
            .unwrap();
        TestResponse::from(resp).await.assert_error(413, "payload_too_large");
    }
    assert_eq!(footprint(&pool, &sink).await, before, "no row, event or email");

    // The plug holds: a request that reaches the hashing answers 503 (and stores nothing).
    for (path, body) in &valid[..2] {
        app.post_json(path, body).await.assert_error(503, "overloaded");
    }
    assert_eq!(footprint(&pool, &sink).await, before);
    drop(release);

    // Unpadded, the same values work: the refused requests would have shown.
    let by_code = app.post_json(valid[1].0, &valid[1].1).await;
    assert_eq!(by_code.status, 200, "{}", by_code.text);
    assert_eq!(app.post_json(valid[3].0, &valid[3].1).await.status, 200);
    assert_eq!(app.post_json(valid[4].0, &valid[4].1).await.status, 200);
    let other = by_code.json["refreshToken"].as_str().unwrap();
    assert_eq!(app.logout(other).await.status, 200);
    assert_eq!(app.post_json(valid[0].0, &valid[0].1).await.status, 200);
    assert_eq!(app.post_json(valid[2].0, &valid[2].1).await.status, 200);
    let after = footprint(&pool, &sink).await;
    assert_eq!(after.emails, before.emails + 2);
    assert!(after.audit_events > before.audit_events);
    for ((table, then), (_, now)) in before.rows.iter().zip(&after.rows) {
        if *table != "rate_limits" {
            assert_ne!(then, now, "{table} changed once work was done");
        }
    }
    still_serving(&app).await;
}

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
/// changes but for the counted code try and the one link whose URL escaped them.
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
        // A refused code is a failed try, recorded and counted as the docs say.
        (
            "/auth/verify-code",
            json!({ "email": ada.email, "code": format!("{head}{nul}{tail}") }),
            401,
            Some("invalid_code"),
            &[
                ("otp.verification.detail", false, Some("Invalid code"), Some(ada.email)),
                ("otp.verification", false, Some("Invalid code"), Some(ada.email)),
            ],
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
        // Refused presentations of a link or a refresh token are recorded.
        (
            "/auth/verify-magic-link",
            json!({ "token": format!("{}{nul}", ada.link_token) }),
            401,
            Some("invalid_link"),
            &[("magic_link.verification", false, Some("Link not found"), None)],
        ),
        (
            "/auth/refresh",
            json!({ "refreshToken": format!("{rt}{nul}") }),
            401,
            Some("invalid_refresh_token"),
            &[("token.refresh", false, Some("Unknown refresh token"), None)],
        ),
        // Logout answers 200 whatever it is given (docs/API.md) and records the miss.
        (
            "/auth/logout",
            json!({ "refreshToken": format!("{rt}{nul}") }),
            200,
            None,
            &[("auth.logout", false, Some("Unknown refresh token"), None)],
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
            "otp_codes" => {} // the counted try, below
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
        (1, false),
        "one counted try; the code is still live"
    );
    // The credentials themselves still work.
    assert_eq!(app.verify_code(ada.email, &ada.code).await.status, 200);
    assert_eq!(app.verify_magic_link(&ada.link_token).await.status, 200);
    assert_eq!(app.refresh(rt).await.status, 200);
    still_serving(&app).await;
}

/// A POST with its own `User-Agent` and `X-Request-Id` (to find its audit rows again).
async fn post_as(app: &TestApp, path: &str, body: &Value, user_agent: &HeaderValue, request_id: &str) -> TestResponse {
    let resp = app
        .client
        .post(app.url(path))
        .header("user-agent", user_agent.clone())
        .header("x-request-id", request_id)
        .json(body)
        .send()
        .await
        .unwrap();
    TestResponse::from(resp).await
}

/// The rows of `audit_events` written by one request: (event, email, user_agent).
async fn audit_rows_of(pool: &PgPool, request_id: &str) -> Vec<(String, Option<String>, Option<String>)> {
    sqlx::query_as("SELECT event, email, user_agent FROM audit_events WHERE request_id = $1 ORDER BY id")
        .bind(request_id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The session id an access token carries.
fn sid_of(app: &TestApp, pair: &Value) -> uuid::Uuid {
    let token = pair["token"].as_str().unwrap();
    app.state.jwt.verify(token).unwrap().sid.as_uuid()
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
                .bind(sid_of(&app, pair))
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
            &["otp.verification", "auth.login", "token.generated", "token.generated"],
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

#[sqlx::test]
async fn a_huge_authorization_header_is_401(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let huge = format!("{}.{}.{}", "e".repeat(16_000), "e".repeat(16_000), "e".repeat(100));
    app.bearer(Method::GET, "/auth/me", &huge)
        .await
        .assert_error(401, "invalid_token");
    let resp = app
        .client
        .get(app.url("/auth/me"))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    still_serving(&app).await;
}

#[sqlx::test]
async fn a_body_that_never_finishes_is_timed_out_while_others_are_served(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.server.request_body_timeout = Duration::from_secs(1);
    let app = TestApp::spawn_with(config).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let mut slow = Vec::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let head = "POST /auth/send-code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":";
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // Meanwhile others are served at once.
    let started = Instant::now();
    still_serving(&app).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not held up by the slow clients"
    );

    for mut stream in slow {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "the server closed the slow connection");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
    }
    still_serving(&app).await;
}
