//! Signing in with a magic link; and email through the Resend API.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use sesame::auth::magic_link;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::{sync::Barrier, task::JoinSet};

use crate::{
    helpers::{TestApp, resend_config, smtp_config, spawn_with_smtp, users_and_sessions},
    mailbox::{ResendStandIn, SmtpSink, link_in, token_of},
};

#[sqlx::test]
async fn a_link_from_the_email_signs_in_once(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;

    let sent = app.send_magic_link("Ada@Example.com", None).await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    let mail = sink.last_to("ada@example.com");
    assert_eq!(mail.subject(), "sesame: Your sign-in link");
    let link = mail.link();
    assert!(link.starts_with("http://localhost:3000/auth/verify?token="), "{link}");
    assert!(
        mail.html().contains(&link.replace('&', "&amp;")),
        "the HTML part has the link"
    );
    let token = token_of(&link);
    assert_eq!(token.len(), 43);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM magic_links")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        stored,
        sesame::auth::magic_link::hash(&token).to_vec(),
        "only the SHA-256 is stored"
    );

    // Opening the page (as a mail scanner would) does not use the link.
    for path in ["/auth/verify-magic-link", "/auth/verify"] {
        let page = app.get(&format!("{path}?token={token}")).await;
        assert_eq!(page.status, 200);
        assert!(page.header("content-type").unwrap().starts_with("text/html"));
        assert!(page.text.contains("<button"), "{}", page.text);
        assert!(
            page.header("content-security-policy")
                .unwrap()
                .contains("script-src 'nonce-")
        );
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    }
    let consumed: bool = sqlx::query_scalar("SELECT consumed_at IS NOT NULL FROM magic_links")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!consumed, "a GET never consumes the link");

    let resp = app.verify_magic_link(&token).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["user"]["email"], "ada@example.com");
    assert_eq!(resp.json["tokenType"], "Bearer");
    let claims = app.state.jwt.verify(resp.json["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.email, "ada@example.com");
    let method: String = sqlx::query_scalar("SELECT metadata->>'method' FROM audit_events WHERE event = 'auth.login'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(method, "magic-link");

    let again = app.verify_magic_link(&token).await;
    again.assert_error(401, "invalid_link");
    // Not token-shaped: refused by the documented shape, before any work.
    app.verify_magic_link("nonsense")
        .await
        .assert_error(400, "invalid_request");
    app.verify_magic_link(&"A".repeat(43))
        .await
        .assert_error(401, "invalid_link");
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT error FROM audit_events WHERE event = 'magic_link.verification' AND NOT success ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reasons, ["Link already used", "Link not found"]);
}

#[sqlx::test]
async fn a_page_without_a_usable_token_offers_no_button(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    for path in [
        "/auth/verify-magic-link",
        "/auth/verify-magic-link?token=%3Cscript%3E",
        "/auth/verify",
    ] {
        let page = app.get(path).await;
        assert_eq!(page.status, 200);
        assert!(
            !page.text.contains("<button") && !page.text.contains("<script>"),
            "{}",
            page.text
        );
    }
}

#[sqlx::test]
async fn links_expire(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    app.send_magic_link("ada@example.com", None).await;
    let token = token_of(&sink.last_to("ada@example.com").link());
    app.state.clock.advance(Duration::from_secs(15 * 60 + 1));
    app.verify_magic_link(&token).await.assert_error(401, "invalid_link");
    let reason: String = sqlx::query_scalar("SELECT error FROM audit_events WHERE event = 'magic_link.verification'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "Link expired");
}

#[sqlx::test]
async fn only_allow_listed_redirects_are_used(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.login.redirect_allow_list = vec!["https://admin.example.com".to_owned()];
    let app = TestApp::spawn_with(config).await;

    let ok = app
        .send_magic_link("ada@example.com", Some("https://admin.example.com/welcome"))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let link = sink.last_to("ada@example.com").link();
    assert!(link.starts_with("https://admin.example.com/welcome?token="), "{link}");

    for foreign in [
        "https://evil.example.com/",
        "https://admin.example.com.evil.io/",
        "javascript:alert(1)",
        "/welcome",
    ] {
        app.send_magic_link("bob@example.com", Some(foreign))
            .await
            .assert_error(400, "invalid_redirect");
    }
    assert!(
        sink.to("bob@example.com").is_empty(),
        "nothing is sent for a refused redirect"
    );
}

#[sqlx::test]
async fn two_first_logins_of_one_address_make_one_user(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    for _ in 0..2 {
        let sent = app.send_magic_link("twin@example.com", None).await;
        assert_eq!(sent.status, 200, "{}", sent.text);
    }
    let tokens: Vec<String> = sink
        .to("twin@example.com")
        .iter()
        .map(|m| token_of(&m.link()))
        .collect();
    assert_eq!(tokens.len(), 2, "both links were delivered");
    assert_ne!(tokens[0], tokens[1], "two different links");
    let users = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(users().await, 0, "no user before the first login");

    // One client (so one connection) per request, already connected, so that
    // each request goes out as soon as it is sent; a barrier starts both at once.
    let barrier = Arc::new(Barrier::new(tokens.len()));
    let mut set = JoinSet::new();
    for token in tokens {
        let client = reqwest::Client::new();
        assert_eq!(client.get(app.url("/health")).send().await.unwrap().status(), 200);
        let (url, barrier) = (app.url("/auth/verify-magic-link"), barrier.clone());
        set.spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let resp = client.post(url).json(&json!({ "token": token })).send().await.unwrap();
            let answered = Instant::now();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (sent, answered, status, body["user"]["id"].clone())
        });
    }
    let results = set.join_all().await;
    assert!(results.iter().all(|r| r.2 == 200), "{results:?}");
    assert!(
        results[0].3.is_string() && results[0].3 == results[1].3,
        "one user id: {results:?}"
    );
    let last_sent = results.iter().map(|r| r.0).max().unwrap();
    let first_answer = results.iter().map(|r| r.1).min().unwrap();
    assert!(
        last_sent < first_answer,
        "the two verifications raced: both were sent before either answer arrived ({results:?})"
    );
    assert_eq!(users().await, 1, "exactly one user row");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions, 2, "each login has its own session");
}

#[sqlx::test]
async fn email_goes_through_the_resend_api(_: PgPoolOptions, db: PgConnectOptions) {
    let resend = ResendStandIn::start().await;
    let app = TestApp::spawn_with(resend_config(db, &resend)).await;

    assert_eq!(app.send_code("ada@example.com").await.status, 200);
    let req = resend.requests().pop().expect("one request to /emails");
    assert_eq!(req.authorization.as_deref(), Some("Bearer re_test_key"));
    assert!(req.content_type.unwrap().starts_with("application/json"));
    assert_eq!(req.body["from"], "Sesame <noreply@sesame.test>");
    assert_eq!(req.body["to"], json!(["ada@example.com"]));
    let subject = req.body["subject"].as_str().unwrap();
    let code = subject.strip_prefix("sesame: Your sign-in code: ").expect(subject);
    assert!(req.body["text"].as_str().unwrap().contains(code));
    assert!(req.body["html"].as_str().unwrap().contains(code));
    assert_eq!(app.verify_code("ada@example.com", code).await.status, 200);

    assert_eq!(app.send_magic_link("bob@example.com", None).await.status, 200);
    let req = resend.requests().pop().unwrap();
    let link = link_in(req.body["text"].as_str().unwrap());
    assert_eq!(app.verify_magic_link(&token_of(&link)).await.status, 200);

    resend.answer_with(500);
    app.send_code("carol@example.com")
        .await
        .assert_error(502, "email_failed");
}

#[sqlx::test]
async fn a_link_whose_delivery_failed_never_signs_in(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let resend = ResendStandIn::start().await;
    let app = TestApp::spawn_with(resend_config(db, &resend)).await;

    resend.answer_with(500);
    app.send_magic_link("ada@example.com", None)
        .await
        .assert_error(502, "email_failed");
    // The provider refused the message, but the stand-in kept it: the link
    // that never arrived, as someone who intercepted it would hold it.
    let tried = resend.requests().pop().expect("sesame tried to send the link");
    assert_eq!(tried.body["to"], json!(["ada@example.com"]));
    let token = token_of(&link_in(tried.body["text"].as_str().unwrap()));
    let (hash, consumed): (Vec<u8>, bool) =
        sqlx::query_as("SELECT token_hash, consumed_at IS NOT NULL FROM magic_links")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(hash, magic_link::hash(&token).to_vec(), "it is the stored link");
    assert!(consumed, "the link is marked used");
    app.verify_magic_link(&token).await.assert_error(401, "invalid_link");
    let reason: String = sqlx::query_scalar("SELECT error FROM audit_events WHERE event = 'magic_link.verification'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(reason, "Link already used");
    assert_eq!(users_and_sessions(&pool).await, (0, 0), "nobody signed in");

    // The control: the same steps with a delivery that succeeds sign in.
    resend.answer_with(200);
    assert_eq!(app.send_magic_link("ada@example.com", None).await.status, 200);
    let delivered = resend.requests().pop().unwrap();
    let token = token_of(&link_in(delivered.body["text"].as_str().unwrap()));
    let resp = app.verify_magic_link(&token).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}
