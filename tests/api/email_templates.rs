//! The messages as teams ship them: their product name (`APP_NAME`), their own
//! templates (`EMAIL_TEMPLATES_DIR`), and the reader's language (`locale`,
//! `Accept-Language`, `EMAIL_DEFAULT_LOCALE`), on the email and the sign-in page.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{ServerProcess, TestApp, TestResponse, smtp_config, temp_dir},
    mailbox::{Mail, SmtpSink, token_of},
};

async fn spawn(db: PgConnectOptions, edit: impl FnOnce(&mut sesame::config::Config)) -> (TestApp, SmtpSink) {
    let sink = SmtpSink::start().await;
    let mut config = smtp_config(db, &sink);
    edit(&mut config);
    (TestApp::spawn_with(config).await, sink)
}

/// POSTs `body` to `path` with an `Accept-Language` header, if given.
async fn post(app: &TestApp, path: &str, body: &Value, accept_language: Option<&str>) -> TestResponse {
    let mut req = app.client.post(app.url(path)).json(body);
    if let Some(lang) = accept_language {
        req = req.header("accept-language", lang);
    }
    TestResponse::from(req.send().await.unwrap()).await
}

async fn sent(app: &TestApp, sink: &SmtpSink, path: &str, body: Value, accept_language: Option<&str>) -> Mail {
    let email = body["email"].as_str().unwrap().to_owned();
    let resp = post(app, path, &body, accept_language).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    sink.last_to(&email)
}

#[sqlx::test]
async fn every_subject_and_body_carries_the_app_name(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db, |c| c.email.app_name = "Acme Cloud".to_owned()).await;
    let mail = sent(
        &app,
        &sink,
        "/auth/send-code",
        json!({ "email": "ada@example.com" }),
        None,
    )
    .await;
    assert_eq!(
        mail.subject(),
        format!("Acme Cloud: Your sign-in code: {}", mail.code())
    );
    assert!(
        mail.text().contains("Your Acme Cloud sign-in code is"),
        "{}",
        mail.text()
    );
    assert!(
        mail.html().contains("Your Acme Cloud sign-in code is"),
        "{}",
        mail.html()
    );

    let mail = sent(
        &app,
        &sink,
        "/auth/send-magic-link",
        json!({ "email": "bob@example.com" }),
        None,
    )
    .await;
    assert_eq!(mail.subject(), "Acme Cloud: Your sign-in link");
    assert!(mail.text().contains("Sign in to Acme Cloud"));
    assert!(mail.html().contains("Sign in to Acme Cloud</a>"));
    let page = app
        .get(&format!("/auth/verify-magic-link?token={}", token_of(&mail.link())))
        .await;
    assert!(
        page.text.contains("<title>Sign in to Acme Cloud</title>"),
        "{}",
        page.text
    );
}

#[sqlx::test]
async fn a_hostile_app_name_is_escaped_in_the_html_part_and_the_page(_: PgPoolOptions, db: PgConnectOptions) {
    let hostile = "<script>alert('pwned')</script>";
    let (app, sink) = spawn(db, |c| c.email.app_name = hostile.to_owned()).await;
    let mail = sent(
        &app,
        &sink,
        "/auth/send-magic-link",
        json!({ "email": "ada@example.com" }),
        None,
    )
    .await;
    let html = mail.html();
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;"),
        "{html}"
    );
    // The plain-text part and the subject are text: the name as it is.
    assert!(mail.text().contains(hostile));
    let page = app.get(&format!("/auth/verify?token={}", token_of(&mail.link()))).await;
    assert_eq!(
        page.text.matches("<script").count(),
        1,
        "only the page's own script: {}",
        page.text
    );
    assert!(
        page.text
            .contains("&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;")
    );
}

#[sqlx::test]
async fn a_template_from_the_folder_overrides_the_built_in_one(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("email-templates");
    std::fs::create_dir_all(dir.join("en")).unwrap();
    std::fs::write(
        dir.join("en/code.subject.txt"),
        "{{ app_name }} code for {{ email }}, {{ expires_in }} min: {{ code }}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("en/code.html"),
        "<p class=\"brand\">{{ app_name }}</p><b>{{ code }}</b>",
    )
    .unwrap();
    let (app, sink) = spawn(db, |c| {
        c.email.app_name = "Acme & Co".to_owned();
        c.email.templates_dir = Some(dir.clone());
    })
    .await;
    let mail = sent(
        &app,
        &sink,
        "/auth/send-code",
        json!({ "email": "ada@example.com" }),
        None,
    )
    .await;
    let code = mail.code();
    assert_eq!(
        mail.subject(),
        format!("Acme & Co code for ada@example.com, 10 min: {code}")
    );
    assert_eq!(
        mail.html(),
        format!("<p class=\"brand\">Acme &amp; Co</p><b>{code}</b>")
    );
    // Parts not overridden stay built in.
    assert!(
        mail.text().starts_with("Your Acme & Co sign-in code is"),
        "{}",
        mail.text()
    );
    // And a code from the overridden subject signs in.
    assert_eq!(app.verify_code("ada@example.com", &code).await.status, 200);
}

#[sqlx::test]
async fn locale_de_writes_the_email_and_the_page_in_german(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db, |_| {}).await;
    let body = json!({ "email": "ada@example.com", "locale": "de" });
    let mail = sent(&app, &sink, "/auth/send-code", body, Some("en")).await;
    assert_eq!(mail.subject(), format!("sesame: Ihr Anmeldecode: {}", mail.code()));
    assert!(mail.text().contains("Minuten gültig"), "{}", mail.text());
    assert!(mail.html().contains("<html lang=\"de\">"));

    let body = json!({ "email": "bob@example.com", "locale": "de-AT" });
    let mail = sent(&app, &sink, "/auth/send-magic-link", body, None).await;
    assert_eq!(mail.subject(), "sesame: Ihr Anmeldelink");
    let link = mail.link();
    let lang = url::Url::parse(&link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "lang")
        .map(|(_, v)| v.into_owned());
    assert_eq!(lang.as_deref(), Some("de"), "the link carries the language: {link}");
    // The page behind the link, opened in a browser that prefers English, speaks German.
    let path = format!("/auth/verify-magic-link?token={}&lang=de", token_of(&link));
    let page = app
        .client
        .get(app.url(&path))
        .header("accept-language", "en")
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"de\">") && page.contains("Anmelden</button>"),
        "{page}"
    );
}

#[sqlx::test]
async fn accept_language_decides_without_a_locale(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db, |_| {}).await;
    let body = json!({ "email": "ada@example.com" });
    let mail = sent(
        &app,
        &sink,
        "/auth/send-code",
        body,
        Some("fr-CH, fr;q=0.9, de;q=0.8, en;q=0.7"),
    )
    .await;
    assert!(
        mail.subject().starts_with("sesame: Ihr Anmeldecode"),
        "{}",
        mail.subject()
    );

    // pt-BR → pt → the default, English.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let body = json!({ "email": "bob@example.com" });
    let mail = sent(&app, &sink, "/auth/send-magic-link", body, Some("pt-BR")).await;
    assert_eq!(mail.subject(), "sesame: Your sign-in link");
    assert!(
        !mail.link().contains("lang="),
        "the default language is not written into the link"
    );

    // The page honours the browser's language when the link names none.
    let page = app
        .client
        .get(app.url("/auth/verify?token=x"))
        .header("accept-language", "de")
        .send()
        .await
        .unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Dieser Link ist unvollständig"), "{page}");
}

#[sqlx::test]
async fn the_default_locale_applies_when_the_request_names_none(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db, |c| c.email.default_locale = "de".to_owned()).await;
    let mail = sent(
        &app,
        &sink,
        "/auth/send-code",
        json!({ "email": "ada@example.com" }),
        None,
    )
    .await;
    assert!(
        mail.subject().starts_with("sesame: Ihr Anmeldecode"),
        "{}",
        mail.subject()
    );
    let body = json!({ "email": "bob@example.com", "locale": "en" });
    let mail = sent(&app, &sink, "/auth/send-magic-link", body, None).await;
    assert_eq!(mail.subject(), "sesame: Your sign-in link");
    assert!(mail.link().contains("lang=en"), "{}", mail.link());
}

#[sqlx::test]
async fn a_malformed_locale_is_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn(db, |_| {}).await;
    for (path, locale) in [
        ("/auth/send-code", "de_DE"),
        ("/auth/send-magic-link", "<script>"),
        ("/auth/send-code", ""),
    ] {
        let resp = post(
            &app,
            path,
            &json!({ "email": "ada@example.com", "locale": locale }),
            None,
        )
        .await;
        resp.assert_error(400, "invalid_request");
        assert!(resp.json["error"].as_str().unwrap().contains("locale"), "{}", resp.text);
    }
    assert!(sink.messages().is_empty());
}

#[sqlx::test]
async fn a_broken_template_stops_start_up_naming_its_file(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("broken-templates");
    std::fs::create_dir_all(dir.join("de")).unwrap();
    let file = dir.join("de/link.html");
    std::fs::write(
        &file,
        "<p>{{ app_name }}</p>\n<a href=\"{{ link }}\">\n{{ linkk }}</a>\n",
    )
    .unwrap();
    let server = ServerProcess::start(
        &db,
        &dir,
        &[
            ("EMAIL_TEMPLATES_DIR", dir.to_str().unwrap()),
            ("METRICS_FORMAT", "none"),
        ],
    );
    let output = server.child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = format!("EMAIL_TEMPLATES_DIR: {}:3: undefined value", file.display());
    assert!(stderr.contains(&line), "{stderr}");
}
