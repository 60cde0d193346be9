//! Access tokens under attack, EdDSA keys, the JWKS, and verification by an
//! independent JWT library (jose, in Node), as a resource server would.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use ed25519_dalek::{VerifyingKey, pkcs8::DecodePublicKey as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use sesame::auth::jwt::generate_ed25519;
use sha2::{Digest as _, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, smtp_config, spawn_with_smtp, temp_dir},
    mailbox::SmtpSink,
};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Writes a new key pair into `dir`; returns (private path, public path, kid).
fn key_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let (private, public, kid) = generate_ed25519().unwrap();
    let (a, b) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.pub.pem")));
    std::fs::write(&a, private).unwrap();
    std::fs::write(&b, public).unwrap();
    (a, b, kid)
}

async fn eddsa_app(db: PgConnectOptions, sink: &SmtpSink, private: &Path, previous: &[PathBuf]) -> TestApp {
    let mut config = smtp_config(db, sink);
    config.tokens.jwt_private_key_file = Some(private.to_owned());
    config.tokens.jwt_previous_public_key_files = previous.to_vec();
    TestApp::spawn_with(config).await
}

async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.bearer(Method::GET, "/auth/me", token).await.status
}

#[sqlx::test]
async fn forged_tampered_and_stale_hs256_tokens_are_refused(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let good = pair["token"].as_str().unwrap();
    assert_eq!(me_status(&app, good).await, 200);
    let claims = app.state.jwt.verify(good).unwrap();
    let secret = app.state.config.tokens.jwt_secret.expose().to_owned();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sign = |header: Header, claims: &Value| {
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    };
    let base = serde_json::to_value(&claims).unwrap();
    let with = |patch: Value| {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };

    let (head, _) = good.split_once('.').unwrap();
    let sig = good.rsplit('.').next().unwrap();
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(base.to_string().as_bytes())
            ),
        ),
        (
            "tampered payload",
            format!(
                "{head}.{}.{sig}",
                b64(with(json!({ "sub": uuid::Uuid::new_v4() })).to_string().as_bytes())
            ),
        ),
        (
            "expired",
            sign(
                Header::new(Algorithm::HS256),
                &with(json!({ "iat": now - 7200, "exp": now - 3600 })),
            ),
        ),
        (
            "not yet valid (nbf)",
            sign(Header::new(Algorithm::HS256), &with(json!({ "nbf": now + 3600 }))),
        ),
        (
            "issued in the future",
            sign(
                Header::new(Algorithm::HS256),
                &with(json!({ "iat": now + 3600, "exp": now + 7200 })),
            ),
        ),
        (
            "wrong issuer",
            sign(Header::new(Algorithm::HS256), &with(json!({ "iss": "someone-else" }))),
        ),
        (
            "wrong audience",
            sign(Header::new(Algorithm::HS256), &with(json!({ "aud": "another-app" }))),
        ),
        ("HS512 instead of HS256", sign(Header::new(Algorithm::HS512), &base)),
        (
            "another secret",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &base,
                &EncodingKey::from_secret(b"guess-guess-guess-guess-guess-gu"),
            )
            .unwrap(),
        ),
        (
            "huge header",
            format!(
                "{}.{}.{sig}",
                b64(&vec![b'a'; 10_000]),
                b64(base.to_string().as_bytes())
            ),
        ),
    ];
    for (name, token) in attacks {
        let resp = app.bearer(Method::GET, "/auth/me", &token).await;
        assert_eq!(resp.status, 401, "{name}: {}", resp.text);
        assert_eq!(resp.json["code"], "invalid_token", "{name}");
    }
}

/// Claims to set to the current time plus an offset in seconds.
type Offsets = &'static [(&'static str, i64)];

#[sqlx::test]
async fn the_verifier_allows_five_seconds_of_clock_skew_and_no_more(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let base = serde_json::to_value(app.state.jwt.verify(pair["token"].as_str().unwrap()).unwrap()).unwrap();
    let secret = app.state.config.tokens.jwt_secret.expose().to_owned();
    // A real token's claims with times set to `now` plus an offset, signed
    // with the test config's secret: each is valid but for the one time it tests.
    let sign = |offsets: &[(&str, i64)]| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = base.clone();
        for (claim, offset) in offsets {
            claims[*claim] = json!(now + offset);
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let cases: [(&str, Offsets, u16); 6] = [
        ("expired 3 s ago", &[("iat", -3600), ("exp", -3)], 200),
        ("expired 8 s ago", &[("iat", -3600), ("exp", -8)], 401),
        ("valid from 3 s on (nbf)", &[("nbf", 3)], 200),
        ("valid from 8 s on (nbf)", &[("nbf", 8)], 401),
        ("issued 3 s from now", &[("iat", 3), ("exp", 3600)], 200),
        ("issued 8 s from now", &[("iat", 8), ("exp", 3600)], 401),
    ];
    for (name, offsets, status) in cases {
        let resp = app.bearer(Method::GET, "/auth/me", &sign(offsets)).await;
        assert_eq!(resp.status, status, "{name}: {}", resp.text);
        if status == 401 {
            assert_eq!(resp.json["code"], "invalid_token", "{name}");
        }
    }
}

/// The RFC 7638 thumbprint of an OKP public key, from the RFCs' definitions
/// alone: SHA-256 over the required members (RFC 8037 section 2: `crv`,
/// `kty`, `x`) in lexicographic order, as JSON without whitespace, base64url.
fn rfc7638_thumbprint(crv: &str, x: &str) -> String {
    let required: BTreeMap<&str, &str> = [("kty", "OKP"), ("crv", crv), ("x", x)].into();
    b64(&Sha256::digest(serde_json::to_string(&required).unwrap().as_bytes()))
}

#[test]
fn the_thumbprint_computation_gives_the_rfc_8037_example() {
    // RFC 8037, appendix A.3.
    assert_eq!(
        rfc7638_thumbprint("Ed25519", "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[sqlx::test]
async fn every_kid_in_the_jwks_is_the_rfc_7638_thumbprint_of_its_key(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("thumbprint");
    let (current, current_public, _) = key_files(&dir, "current");
    let (_, previous_public, _) = key_files(&dir, "previous");
    let sink = SmtpSink::start().await;
    let app = eddsa_app(db, &sink, &current, std::slice::from_ref(&previous_public)).await;

    let jwks = app.get("/.well-known/jwks.json").await.json;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (key, pem) in keys.iter().zip([&current_public, &previous_public]) {
        // `x` is the public key of the file, and the kid its thumbprint.
        let public = VerifyingKey::from_public_key_pem(&std::fs::read_to_string(pem).unwrap()).unwrap();
        let x = key["x"].as_str().unwrap();
        assert_eq!(x, b64(public.as_bytes()), "{key}");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["kid"], rfc7638_thumbprint("Ed25519", x), "{key}");
    }
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let header = jsonwebtoken::decode_header(pair["token"].as_str().unwrap()).unwrap();
    assert_eq!(header.kid.as_deref(), keys[0]["kid"].as_str(), "tokens carry it");
}

#[sqlx::test]
async fn eddsa_tokens_verify_and_algorithm_confusion_and_foreign_kids_do_not(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("keys");
    let (private, _, kid) = key_files(&dir, "current");
    let sink = SmtpSink::start().await;
    let app = eddsa_app(db, &sink, &private, &[]).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let token = pair["token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
    assert_eq!(me_status(&app, token).await, 200);

    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    let key = &jwks.json["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["kid"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some(kid.as_str()))
    );

    let claims = serde_json::to_value(app.state.jwt.verify(token).unwrap()).unwrap();
    // HS256 with the public key as the secret: the classic confusion attack.
    let x = key["x"].as_str().unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(x.as_bytes())).unwrap();
    assert_eq!(me_status(&app, &confused).await, 401, "HS/EdDSA confusion");
    // Signed by a key the server does not know, with its own kid or ours.
    let (rogue, _, _) = key_files(&dir, "rogue");
    let rogue_key = EncodingKey::from_ed_pem(&std::fs::read(&rogue).unwrap()).unwrap();
    for forged_kid in [None, Some(kid.clone()), Some("made-up".to_owned())] {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = forged_kid.clone();
        let forged = jsonwebtoken::encode(&h, &claims, &rogue_key).unwrap();
        assert_eq!(me_status(&app, &forged).await, 401, "kid {forged_kid:?}");
    }
}

#[sqlx::test]
async fn rotating_keys_keeps_tokens_of_the_previous_key_valid(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("rotation");
    let (old_private, old_public, old_kid) = key_files(&dir, "old");
    let (new_private, _, new_kid) = key_files(&dir, "new");
    let sink = SmtpSink::start().await;
    let before = eddsa_app(db.clone(), &sink, &old_private, &[]).await;
    let pair = before.sign_in(&sink, "ada@example.com").await;
    let old_token = pair["token"].as_str().unwrap().to_owned();
    before.stop().await;

    let after = eddsa_app(db.clone(), &sink, &new_private, &[old_public]).await;
    let kids: Vec<String> = after.get("/.well-known/jwks.json").await.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, [new_kid, old_kid]);
    assert_eq!(
        me_status(&after, &old_token).await,
        200,
        "a token of the previous key still verifies"
    );
    let fresh = after.refresh(pair["refreshToken"].as_str().unwrap()).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(me_status(&after, fresh.json["token"].as_str().unwrap()).await, 200);

    // Once the old key is dropped from the list, its tokens stop working.
    let dropped = eddsa_app(db, &sink, &new_private, &[]).await;
    assert_eq!(me_status(&dropped, &old_token).await, 401);
}

#[sqlx::test]
async fn hs256_mode_serves_an_empty_key_set(_: PgPoolOptions, db: PgConnectOptions) {
    let app = TestApp::spawn(db).await;
    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json, json!({ "keys": [] }));
}

#[sqlx::test]
#[ignore = "needs Node and tests/jwks; scripts/test.sh runs it"]
async fn an_independent_jwt_library_verifies_tokens_against_the_jwks(_: PgPoolOptions, db: PgConnectOptions) {
    let dir = temp_dir("jose");
    let (private, _, kid) = key_files(&dir, "current");
    let sink = SmtpSink::start().await;
    let app = eddsa_app(db, &sink, &private, &[]).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let token = pair["token"].as_str().unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwks/verify.mjs");
    let jwks_url = app.url("/.well-known/jwks.json");
    // Off the runtime's thread: the server under test runs on it.
    let run = |token: &str, audience: &str| {
        let args = [
            script.to_owned(),
            jwks_url.clone(),
            token.to_owned(),
            "sesame".to_owned(),
            audience.to_owned(),
        ];
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("node")
                    .args(&args)
                    .output()
                    .expect("node runs (scripts/test.sh installs tests/jwks)")
            })
            .await
            .unwrap()
        }
    };
    let out = run(token, "sesame").await;
    assert!(
        out.status.success(),
        "jose refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verified["header"]["kid"], kid.as_str());
    assert_eq!(verified["header"]["alg"], "EdDSA");
    assert_eq!(verified["payload"]["email"], "ada@example.com");
    assert_eq!(verified["payload"]["sub"], pair["user"]["id"]);

    assert!(
        !run(token, "another-audience").await.status.success(),
        "jose checks the audience too"
    );
    let mut tampered = token.to_owned();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert!(!run(&tampered, "sesame").await.status.success());
}
