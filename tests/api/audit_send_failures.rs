//! A failed send is logged and recorded with the server's reply code and its
//! words, never with the recipient's address that servers echo.

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    faults_support::post,
    helpers::{ServerProcess, TestApp, resend_config, temp_dir},
    mailbox::{ResendStandIn, SmtpSink},
};

/// What a Postfix-like server's refusal of `victim@example.com` becomes.
const REFUSED: &str = "SMTP 550: 5.1.1 <[address]>: Recipient address rejected: User unknown in virtual mailbox table";

/// The failure reasons of `otp.sent` and `magic_link.sent`, in order.
async fn send_failures(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT event, error FROM audit_events WHERE event IN ('otp.sent', 'magic_link.sent') AND NOT success ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_refused_recipient_is_logged_and_recorded_with_its_reply_code_and_without_the_address(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    sink.refuse_recipients(true);
    let dir = temp_dir("send-failures");
    let file = dir.join("metrics.jsonl");
    let (smtp_url, file_path) = (sink.url(), file.to_str().unwrap().to_owned());
    // The console audit sink prints addresses by design: off, the file keeps the events.
    let server = ServerProcess::start(
        &db,
        &dir,
        &[
            ("EMAIL_PROVIDER", "smtp"),
            ("SMTP_URL", &smtp_url),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
            ("METRICS_FORMAT", "file"),
            ("METRICS_FILE_PATH", &file_path),
            // A code and a link to one address within the send interval.
            ("RATE_LIMIT_ENABLED", "false"),
        ],
    );
    server.wait_ready().await;
    let email = json!({ "email": "victim@example.com" });
    let mut answers = Vec::new();
    for path in ["/auth/send-code", "/auth/send-magic-link"] {
        answers.push(post(server.url(path), email.clone()).await);
    }
    // Stopped before any assertion, so a failing test leaves no server behind.
    let out = server.terminate().await;
    for (status, body) in answers {
        assert_eq!((status, &body["code"]), (502, &json!("email_failed")), "{body}");
    }
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The log line: the reply code as a field, and the redacted words.
    let failures: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "email delivery failed")
        .collect();
    assert_eq!(failures.len(), 2, "one warning per failed send:\n{logs}");
    for (line, event) in failures.iter().zip(["otp.sent", "magic_link.sent"]) {
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["code"], 550, "{line}");
        assert_eq!(line["error"], REFUSED, "{line}");
        assert_eq!(line["event"], event, "{line}");
    }
    assert!(!logs.contains("victim"), "the address reached the logs:\n{logs}");

    // The failure reason, in the table and the file.
    let expected = [
        ("otp.sent".to_owned(), REFUSED.to_owned()),
        ("magic_link.sent".to_owned(), REFUSED.to_owned()),
    ];
    assert_eq!(send_failures(&pool).await, expected);
    let in_file: Vec<(String, String)> = crate::helpers::read_json_lines(&file)
        .into_iter()
        .filter(|r| r["success"] == false && r["event"].as_str().is_some_and(|e| e.ends_with(".sent")))
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_owned(),
                r["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(in_file, expected);
}

#[sqlx::test]
async fn a_provider_refusal_is_recorded_with_its_status_and_without_the_address(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let resend = ResendStandIn::start().await;
    let app = TestApp::spawn_with(resend_config(db, &resend)).await;
    resend.answer_with(422);
    app.send_code("victim@example.com")
        .await
        .assert_error(502, "email_failed");
    // The stand-in's refusal named the recipient, as providers' do.
    assert_eq!(resend.requests().len(), 1);
    assert_eq!(
        send_failures(&pool).await,
        [(
            "otp.sent".to_owned(),
            "Resend API: HTTP 422: the test refused <[address]>".to_owned()
        )]
    );
}
