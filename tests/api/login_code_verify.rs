//! Verifying a one-time code read from a real SMTP conversation: the code signs
//! in; every failure (no code, wrong, used, expired, replaced, out of attempts,
//! lost in a race) is one generic 401 with its reason in the audit trail and the
//! JSON Lines file.

use std::time::Duration;

use serde_json::{Value, json};
use sesame::auth::refresh::RefreshToken;
use sqlx::{
    Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::task::JoinSet;

use crate::{
    helpers::{TestApp, file_config, read_json_lines, smtp_config, spawn_with_smtp, temp_dir},
    login_code_support::{assert_generic_401, detail_reasons, events},
    mailbox::SmtpSink,
};

#[sqlx::test]
async fn a_code_from_the_email_signs_a_new_user_in(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;

    let sent = app.send_code("ada@example.com").await;
    assert_eq!(sent.status, 200, "{}", sent.text);
    assert_eq!(sent.json["success"], true);
    assert!(sent.json["message"].as_str().is_some_and(|m| !m.is_empty()));

    let mail = sink.last_to("ada@example.com");
    assert_eq!(mail.from, "noreply@sesame.test");
    let code = mail.code();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    assert_eq!(mail.subject(), format!("sesame: Your sign-in code: {code}"));
    assert!(mail.text().contains(&code), "plain text part");
    assert!(mail.html().contains(&code), "HTML part");

    let resp = app.verify_code("ada@example.com", &code).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let b = &resp.json;
    assert_eq!(b["success"], true);
    assert_eq!(b["tokenType"], "Bearer");
    assert_eq!(b["expiresIn"], 3600);
    assert_eq!(b["user"]["email"], "ada@example.com");
    let user_id = b["user"]["id"].as_str().unwrap();
    assert!(b["user"]["createdAt"].as_str().is_some());

    let claims = app
        .state
        .jwt
        .verify(b["token"].as_str().unwrap())
        .expect("a valid access token");
    assert_eq!(claims.sub.to_string(), user_id);
    assert_eq!(claims.email, "ada@example.com");
    assert_eq!(claims.exp - claims.iat, 3600);
    assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("sesame", "sesame"));

    // The refresh token is stored only as its SHA-256, in a new session of this user.
    let refresh = RefreshToken::parse(b["refreshToken"].as_str().unwrap()).expect("43 base64url characters");
    let row = sqlx::query(
        "SELECT s.id, s.user_id::text AS user_id FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1",
    )
    .bind(refresh.hash().as_slice())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>("user_id"), user_id);
    assert_eq!(row.get::<uuid::Uuid, _>("id"), claims.sid.as_uuid());
    let code_hash: String = sqlx::query_scalar("SELECT code_hash FROM otp_codes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(code_hash.starts_with("$argon2id$"), "{code_hash}");

    let names: Vec<String> = events(&pool)
        .await
        .into_iter()
        .map(|(e, ok, _)| format!("{e}:{ok}"))
        .collect();
    assert_eq!(
        names,
        [
            "otp.generated:true",
            "otp.sent:true",
            "otp.verification:true",
            "user.created:true",
            "auth.login:true",
            "token.generated:true",
            "token.generated:true"
        ]
    );
    let meta: Vec<Value> =
        sqlx::query_scalar("SELECT metadata FROM audit_events WHERE metadata IS NOT NULL ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(meta[0]["emailDomain"], "example.com");
    assert_eq!(
        (meta[1]["attempts"].as_u64(), meta[1]["replyCode"].as_u64()),
        (Some(1), Some(250)),
        "otp.sent"
    );
    assert_eq!(meta[2]["method"], "otp", "user.created");
    assert_eq!(meta[3]["method"], "otp", "auth.login");
    assert_eq!(
        (meta[4]["tokenType"].as_str(), meta[5]["tokenType"].as_str()),
        (Some("access"), Some("refresh"))
    );
    let all: String = sqlx::query_scalar("SELECT string_agg(audit_events::text, ' ') FROM audit_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!all.contains(&code), "no code in the audit trail");
    assert!(
        !all.contains(b["refreshToken"].as_str().unwrap()),
        "no refresh token in the audit trail"
    );
    assert!(
        !all.contains(b["token"].as_str().unwrap()),
        "no access token in the audit trail"
    );
}

#[sqlx::test]
async fn addresses_are_normalised_and_codes_accept_spaces_and_dashes(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;

    assert_eq!(app.send_code("  Ada.Lovelace@Example.COM ").await.status, 200);
    let code = sink.last_to("ada.lovelace@example.com").code();
    let typed = format!("{}-{} ", &code[..3], &code[3..]);
    let resp = app.verify_code("ADA.LOVELACE@example.com", &typed).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json["user"]["email"], "ada.lovelace@example.com");

    // The same person again, differently typed: the same user.
    assert_eq!(app.send_code("ada.lovelace@EXAMPLE.com").await.status, 200);
    let code = sink.last_to("ada.lovelace@example.com").code();
    let again = app
        .verify_code("ada.lovelace@example.com", &format!("{} {}", &code[..3], &code[3..]))
        .await;
    assert_eq!(again.json["user"]["id"], resp.json["user"]["id"]);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[sqlx::test]
async fn every_failure_is_one_generic_401_with_the_reason_in_the_audit_trail(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;

    // No code was ever sent.
    assert_generic_401(&app.verify_code("nobody@example.com", "123456").await);

    app.send_code("ada@example.com").await;
    let code = sink.last_to("ada@example.com").code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_generic_401(&app.verify_code("ada@example.com", wrong).await);
    assert_generic_401(&app.verify_code("ada@example.com", "12345").await);

    // Used once, then gone.
    assert_eq!(app.verify_code("ada@example.com", &code).await.status, 200);
    assert_generic_401(&app.verify_code("ada@example.com", &code).await);

    // Expired (the app's clock moves; nobody sleeps).
    app.send_code("bob@example.com").await;
    let code = sink.last_to("bob@example.com").code();
    app.state.clock.advance(Duration::from_secs(10 * 60 + 1));
    assert_generic_401(&app.verify_code("bob@example.com", &code).await);

    assert_eq!(
        detail_reasons(&pool).await,
        [
            "No OTP found for email",
            "Invalid code",
            "Invalid code",
            "No OTP found for email",
            "OTP expired"
        ]
    );
    let attempts: Vec<Option<i64>> = sqlx::query_scalar(
        "SELECT (metadata->>'attempts')::int8 FROM audit_events WHERE event = 'otp.verification.detail' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, [None, Some(1), Some(2), None, None]);
}

#[sqlx::test]
async fn a_failed_verification_event_carries_the_tries_so_far(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;

    app.send_code("ada@example.com").await;
    let code = sink.last_to("ada@example.com").code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let attempts = || async {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT (metadata->>'attempts')::int8 FROM audit_events WHERE event = 'otp.verification' ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    assert_generic_401(&app.verify_code("ada@example.com", wrong).await);
    assert_eq!(attempts().await, [Some(1)]);
    assert_generic_401(&app.verify_code("ada@example.com", wrong).await);
    assert_eq!(attempts().await, [Some(1), Some(2)]);
    // A success carries no count.
    assert_eq!(app.verify_code("ada@example.com", &code).await.status, 200);
    assert_eq!(attempts().await, [Some(1), Some(2), None]);
}

#[sqlx::test]
async fn a_new_code_replaces_the_old_one(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    config.rate_limits.enabled = true; // as deployed: a resend waits out the send interval
    let app = TestApp::spawn_with(config).await;
    let email = "ada@example.com";

    assert_eq!(app.send_code(email).await.status, 200);
    let old = sink.last_to(email).code();
    // Past the one-minute send interval, well inside the old code's ten minutes.
    // (Should the new code happen to equal the old one, 1 in 10^6, send again.)
    let new = loop {
        app.state.clock.advance(Duration::from_secs(61));
        assert_eq!(app.send_code(email).await.status, 200);
        let code = sink.last_to(email).code();
        if code != old {
            break code;
        }
    };

    assert_generic_401(&app.verify_code(email, &old).await);
    assert_eq!(
        detail_reasons(&pool).await,
        ["Invalid code"],
        "the old code is simply wrong now, not expired"
    );
    let resp = app.verify_code(email, &new).await;
    assert_eq!(resp.status, 200, "the new code works: {}", resp.text);
}

#[sqlx::test]
async fn a_new_code_does_not_buy_new_attempts(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let email = "eve@example.com";

    app.send_code(email).await;
    for _ in 0..3 {
        assert_generic_401(&app.verify_code(email, "00000000").await);
    }
    // Resending keeps the count: two more wrong tries exhaust the budget of five.
    app.send_code(email).await;
    for _ in 0..2 {
        assert_generic_401(&app.verify_code(email, "0000000").await);
    }
    app.send_code(email).await;
    let code = sink.last_to(email).code();
    assert_generic_401(&app.verify_code(email, &code).await);
    assert_eq!(
        detail_reasons(&pool).await.last().map(String::as_str),
        Some("Max attempts exceeded")
    );

    // Once the window has passed, a new code works again.
    app.state.clock.advance(Duration::from_secs(10 * 60 + 1));
    app.send_code(email).await;
    let code = sink.last_to(email).code();
    let resp = app.verify_code(email, &code).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
}

#[sqlx::test]
async fn two_concurrent_verifications_of_one_code_give_one_token_pair(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    app.send_code("race@example.com").await;
    let code = sink.last_to("race@example.com").code();

    let mut set = JoinSet::new();
    for _ in 0..8 {
        let (client, url, code) = (app.client.clone(), app.url("/auth/verify-code"), code.clone());
        set.spawn(async move {
            let body = json!({ "email": "race@example.com", "code": code });
            client.post(url).json(&body).send().await.unwrap().status().as_u16()
        });
    }
    let mut statuses = set.join_all().await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401]);
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
}

#[sqlx::test]
async fn login_and_failures_reach_the_json_lines_file(_: PgPoolOptions, db: PgConnectOptions) {
    let sink = SmtpSink::start().await;
    let path = temp_dir("login-lines").join("metrics.jsonl");
    let mut config = smtp_config(db.clone(), &sink);
    let file = file_config(db, &path);
    (config.audit.metrics_format, config.audit.metrics_file_path) =
        (file.audit.metrics_format, file.audit.metrics_file_path);
    let app = TestApp::spawn_with(config).await;

    app.verify_code("ada@example.com", "123456").await;
    app.send_code("ada@example.com").await;
    let code = sink.last_to("ada@example.com").code();
    app.verify_code("ada@example.com", "0000000").await;
    let ok = app.verify_code("ada@example.com", &code).await;
    app.stop().await;

    let lines = read_json_lines(&path);
    let seen: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{}:{}:{}",
                l["event"].as_str().unwrap(),
                l["success"],
                l["error"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "otp.verification.detail:false:No OTP found for email",
            "otp.verification:false:No OTP found for email",
            "otp.generated:true:",
            "otp.sent:true:",
            "otp.verification.detail:false:Invalid code",
            "otp.verification:false:Invalid code",
            "otp.verification:true:",
            "user.created:true:",
            "auth.login:true:",
            "token.generated:true:",
            "token.generated:true:",
        ]
    );
    let login = &lines[8];
    assert_eq!(login["userId"], ok.json["user"]["id"]);
    assert_eq!(login["email"], "ada@example.com");
    assert_eq!(login["metadata"]["method"], "otp");
    let raw = std::fs::read_to_string(&path).unwrap();
    assert!(!raw.contains(&code) && !raw.contains(ok.json["refreshToken"].as_str().unwrap()));
}
