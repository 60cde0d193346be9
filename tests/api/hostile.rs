//! Hostile input: every request gets a 4xx with the error envelope (never a 5xx),
//! and the server keeps serving.

use std::time::{Duration, Instant};

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

#[sqlx::test]
async fn huge_values_and_bodies_are_refused_before_any_work(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let long = "a".repeat(10_000);
    let cases = [
        ("/auth/send-code", json!({ "email": format!("{long}@example.com") })),
        ("/auth/verify-code", json!({ "email": "ada@example.com", "code": long })),
        (
            "/auth/send-magic-link",
            json!({ "email": "ada@example.com", "redirectTo": format!("https://x.example/{long}") }),
        ),
        ("/auth/verify-magic-link", json!({ "token": long })),
        ("/auth/refresh", json!({ "refreshToken": long })),
        ("/auth/logout", json!({ "refreshToken": long })),
    ];
    for (path, body) in cases {
        assert_4xx(&app.post_json(path, &body).await, path);
    }
    let two_mib = vec![b' '; 2 * 1024 * 1024];
    for (path, _) in endpoints() {
        app.post_raw(path, Some("application/json"), two_mib.clone())
            .await
            .assert_error(413, "payload_too_large");
    }
    assert!(sink.messages().is_empty());
    let rows: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM otp_codes) + (SELECT count(*) FROM magic_links)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "nothing was stored");
    still_serving(&app).await;
}

#[sqlx::test]
async fn nul_bytes_and_control_characters_never_reach_the_database_as_errors(_: PgPoolOptions, db: PgConnectOptions) {
    let mut config = test_config(db);
    config.login.redirect_allow_list = vec!["https://app.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;
    let nul = "\u{0}";
    let cases = [
        ("/auth/send-code", json!({ "email": format!("ada{nul}@example.com") })),
        (
            "/auth/verify-code",
            json!({ "email": "ada@example.com", "code": format!("123{nul}456") }),
        ),
        (
            "/auth/send-magic-link",
            json!({ "email": "ada@example.com", "redirectTo": format!("https://app.example.com/a{nul}b\r\nx") }),
        ),
        (
            "/auth/verify-magic-link",
            json!({ "token": format!("{}{nul}", "A".repeat(42)) }),
        ),
        (
            "/auth/refresh",
            json!({ "refreshToken": format!("{}{nul}", "A".repeat(42)) }),
        ),
        ("/auth/logout", json!({ "refreshToken": nul })),
    ];
    for (path, body) in cases {
        let resp = app.post_json(path, &body).await;
        assert!(resp.status < 500, "{path}: {} {}", resp.status, resp.text);
    }
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
