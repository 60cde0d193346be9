//! SMTP over TLS against a real TLS server with a private certificate
//! authority made here: STARTTLS (`?tls=required`) and `smtps://`, trusted
//! through `SMTP_CA_FILE`; without it, 502 and not one command in plain text.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use sesame::config::Secret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_rustls::TlsAcceptor;

use crate::{
    helpers::{TestApp, smtp_config, temp_dir},
    mailbox::{SinkTls, SmtpSink},
};

/// A private CA and a server certificate for `localhost` signed by it: the
/// acceptor serving it, and the CA's PEM file.
fn private_ca() -> (TlsAcceptor, std::path::PathBuf) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "sesame test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    let file = temp_dir("smtp-ca").join("ca.pem");
    std::fs::write(&file, ca_cert.pem()).unwrap();
    (TlsAcceptor::from(Arc::new(config)), file)
}

async fn app(db: PgConnectOptions, sink: &SmtpSink, url: String, ca: Option<std::path::PathBuf>) -> TestApp {
    let mut config = smtp_config(db, sink);
    config.email.smtp_url = Some(Secret::new(url));
    config.email.smtp_ca_file = ca;
    TestApp::spawn_with(config).await
}

#[sqlx::test]
async fn starttls_delivers_to_a_private_ca_given_in_smtp_ca_file(_: PgPoolOptions, db: PgConnectOptions) {
    let (acceptor, ca) = private_ca();
    let sink = SmtpSink::start_with(SinkTls::StartTls(acceptor)).await;
    for query in ["?tls=required", ""] {
        let app = app(db.clone(), &sink, sink.url_for_tls("smtp", query), Some(ca.clone())).await;
        let email = format!("ada{}@example.com", query.len());
        let resp = app.post_json("/auth/send-code", &json!({ "email": email })).await;
        assert_eq!(resp.status, 200, "{query}: {}", resp.text);
        let code = sink.last_to(&email).code();
        assert_eq!(app.verify_code(&email, &code).await.status, 200);
    }
    assert_eq!(sink.plaintext_mail(), 0, "every message went over TLS");
}

#[sqlx::test]
async fn without_the_ca_starttls_fails_with_502_and_nothing_in_plain_text(_: PgPoolOptions, db: PgConnectOptions) {
    let (acceptor, _) = private_ca();
    let sink = SmtpSink::start_with(SinkTls::StartTls(acceptor)).await;
    for query in ["?tls=required", ""] {
        let app = app(db.clone(), &sink, sink.url_for_tls("smtp", query), None).await;
        let resp = app
            .post_json("/auth/send-code", &json!({ "email": "ada@example.com" }))
            .await;
        resp.assert_error(502, "email_failed");
        assert!(sink.connections() > 0, "{query}: the server was reached");
    }
    assert!(sink.messages().is_empty());
    assert_eq!(sink.plaintext_mail(), 0, "no fallback to plain text");
}

#[sqlx::test]
async fn smtps_delivers_to_a_private_ca_and_refuses_an_unknown_one(_: PgPoolOptions, db: PgConnectOptions) {
    let (acceptor, ca) = private_ca();
    let sink = SmtpSink::start_with(SinkTls::Wrapper(acceptor)).await;
    let trusted = app(db.clone(), &sink, sink.url_for_tls("smtps", ""), Some(ca)).await;
    let resp = trusted
        .post_json("/auth/send-magic-link", &json!({ "email": "ada@example.com" }))
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert!(sink.last_to("ada@example.com").link().contains("token="));

    let untrusted = app(db, &sink, sink.url_for_tls("smtps", ""), None).await;
    let resp = untrusted
        .post_json("/auth/send-magic-link", &json!({ "email": "bob@example.com" }))
        .await;
    resp.assert_error(502, "email_failed");
    assert!(sink.to("bob@example.com").is_empty());
}
