//! Secrets hygiene: no code, link token, access or refresh token, JWT secret or
//! private key reaches the logs, the JSON Lines file or the audit table.

use serde_json::{Value, json};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::{
    faults_support::{post, sign_in},
    helpers::{ServerProcess, temp_dir},
    mailbox::SmtpSink,
};

/// The known `JWT_SECRET` of the hygiene test's runs (it also keys the
/// refresh-token chain and the code pepper, in both runs).
const HYGIENE_JWT_SECRET: &str = "hygiene-jwt-secret-9f3c2a71e5b84d06";

/// The `alg` in the header of access token `jwt`.
fn alg_of(jwt: &str) -> String {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    serde_json::from_slice::<Value>(&header).unwrap()["alg"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One run of the hygiene test: a server at debug level with JSON logs, the
/// console and the file, with `vars` added, through every flow that handles a
/// secret; then none of those secrets, nor `key_secrets`, may appear in its
/// logs (stdout and stderr), the JSON Lines file or the audit table.
async fn no_secret_reaches_the_logs(
    pool: &PgPool,
    db: &PgConnectOptions,
    run: &str,
    alg: &str,
    vars: &[(&str, &str)],
    key_secrets: &[String],
) {
    let sink = SmtpSink::start().await;
    let dir = temp_dir("hygiene");
    let file = dir.join("metrics.jsonl");
    let mut all_vars = vec![
        ("EMAIL_PROVIDER", "smtp"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "debug"),
        ("METRICS_FORMAT", "both"),
        ("JWT_SECRET", HYGIENE_JWT_SECRET),
    ];
    all_vars.extend_from_slice(vars);
    let (smtp_url, file_path) = (sink.url(), file.to_str().unwrap().to_owned());
    all_vars.extend([("SMTP_URL", &*smtp_url), ("METRICS_FILE_PATH", &*file_path)]);
    let server = ServerProcess::start(db, &dir, &all_vars);
    server.wait_ready().await;
    let mut secrets: Vec<String> = vec![HYGIENE_JWT_SECRET.to_owned()];
    secrets.extend_from_slice(key_secrets);

    let (ada, bob) = (format!("ada-{run}@example.com"), format!("bob-{run}@example.com"));
    let pair = sign_in(&server, &sink, &ada).await;
    assert_eq!(
        alg_of(pair["token"].as_str().unwrap()),
        alg,
        "{run}: signed with the key under test"
    );
    secrets.push(sink.last_to(&ada).code());
    let (status, _) = post(server.url("/auth/send-magic-link"), json!({ "email": bob })).await;
    assert_eq!(status, 200);
    let link_token = crate::mailbox::token_of(&sink.last_to(&bob).link());
    // The page a link opens carries the token in its query string.
    let page = reqwest::get(server.url(&format!("/auth/verify-magic-link?token={link_token}")))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains(&link_token),
        "{run}: the page holds the real token"
    );
    let (status, link_pair) = post(server.url("/auth/verify-magic-link"), json!({ "token": link_token })).await;
    assert_eq!(status, 200, "{link_pair}");
    secrets.push(link_token);
    let (status, refreshed) = post(
        server.url("/auth/refresh"),
        json!({ "refreshToken": pair["refreshToken"] }),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let me = reqwest::Client::new()
        .get(server.url("/auth/me"))
        .bearer_auth(refreshed["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let (status, _) = post(
        server.url("/auth/logout"),
        json!({ "refreshToken": refreshed["refreshToken"] }),
    )
    .await;
    assert_eq!(status, 200);
    for p in [&pair, &link_pair, &refreshed] {
        for key in ["token", "refreshToken"] {
            secrets.push(p[key].as_str().unwrap().to_owned());
        }
    }
    let out = server.terminate().await;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.lines().count() > 20, "{run}: debug logs were written");
    assert!(
        logs.contains("/auth/verify-magic-link"),
        "{run}: the page request is in the logs"
    );
    let jsonl = std::fs::read_to_string(&file).unwrap();
    let table: String = sqlx::query_scalar("SELECT string_agg(audit_events::text, E'\\n') FROM audit_events")
        .fetch_one(pool)
        .await
        .unwrap();
    for secret in &secrets {
        assert!(secret.len() >= 6);
        for (what, text) in [("logs", &logs), ("JSON Lines file", &jsonl), ("audit table", &table)] {
            assert!(
                !text.contains(secret.as_str()),
                "{run}: a secret reached the {what}: {secret}"
            );
        }
    }
}

#[sqlx::test]
async fn no_code_link_token_secret_or_key_reaches_the_logs_the_file_or_the_table(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    use base64::Engine as _;
    let pool = opts.connect_with(db.clone()).await.unwrap();
    no_secret_reaches_the_logs(&pool, &db, "hs256", "HS256", &[], &[]).await;

    // EdDSA, with a key made as the README says.
    let keys = temp_dir("hygiene-keys");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(["keys", "generate", "--out"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let private_key = keys.join("jwt-ed25519.pem");
    let pem = std::fs::read_to_string(&private_key).unwrap();
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body.concat()).unwrap();
    // PKCS#8 Ed25519: 14 bytes of header, then OCTET STRING (04 20) holding the 32-byte seed.
    assert_eq!(der[14..16], [0x04, 0x20], "a PKCS#8 Ed25519 private key");
    let seed = &der[16..48];
    let key_secrets = [
        // The PEM body, whole and its first line (which holds the seed; the
        // rest is the public key), and the seed as a JWK would carry it (`d`)
        // and in hex.
        body.concat(),
        body[0].to_owned(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
        seed.iter().map(|b| format!("{b:02x}")).collect(),
    ];
    let private_key = private_key.to_str().unwrap().to_owned();
    no_secret_reaches_the_logs(
        &pool,
        &db,
        "eddsa",
        "EdDSA",
        &[("JWT_PRIVATE_KEY_FILE", &private_key)],
        &key_secrets,
    )
    .await;
}
