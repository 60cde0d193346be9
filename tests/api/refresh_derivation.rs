//! How a refresh token's child is derived: from the server key, the parent and
//! a random value stored with the parent, so that `JWT_SECRET` and an old
//! token (a log, a browser backup) are not enough to compute a session's later
//! tokens; and sessions begun before that value existed keep refreshing across
//! the upgrade.

use std::time::Duration;

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};
use serde_json::Value;
use sesame::auth::refresh::RefreshToken;
use sha2::{Digest as _, Sha256};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::helpers::{TestApp, rt, spawn_with_smtp, test_config};

/// The last migration before the rotation value existed.
const BEFORE_ROTATION_SALT: i64 = 20261127000009;

/// The child as the key and the parent alone determine it: base64url of
/// HMAC-SHA256 over the parent, keyed with SHA-256 of a label and `JWT_SECRET`
/// (the derivation before the random value, written out independently here).
fn child_from_key_and_parent(secret: &str, parent: &str) -> String {
    let key = Sha256::new()
        .chain_update(b"sesame refresh-token chain v1\0")
        .chain_update(secret.as_bytes())
        .finalize();
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(parent.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret(app: &TestApp) -> &str {
    app.state.config.tokens.jwt_secret.expose()
}

/// Every row of every table, as text, with its table's name.
async fn every_row(pool: &PgPool) -> Vec<(String, String)> {
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(tables.iter().any(|t| t == "refresh_tokens"), "{tables:?}");
    let mut rows = Vec::new();
    for table in tables {
        let sql = format!("SELECT t::text FROM {table} t");
        let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap();
        rows.extend(texts.into_iter().map(|r| (table.clone(), r)));
    }
    rows
}

#[sqlx::test]
async fn the_key_and_an_old_token_do_not_give_the_next_token(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let second = app.refresh(rt(&first)).await.json;
    let third = app.refresh(rt(&second)).await.json;

    // Whoever holds JWT_SECRET and `first` cannot compute what followed it.
    for (parent, child) in [(&first, &second), (&second, &third)] {
        assert_ne!(
            child_from_key_and_parent(secret(&app), rt(parent)),
            rt(child),
            "the child is not HMAC(key, parent)"
        );
    }

    // Still, the server answers a replay within the reuse interval with the
    // same child, and the whole chain goes on working.
    app.state.clock.advance(Duration::from_secs(5));
    let again = app.refresh(rt(&second)).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(rt(&again.json), rt(&third), "the same child within the interval");
    let fourth = app.refresh(rt(&third)).await;
    assert_eq!(fourth.status, 200, "{}", fourth.text);

    // Each token row holds its own 32 random bytes for deriving its child.
    let salts: Vec<Option<Vec<u8>>> = sqlx::query_scalar("SELECT rotation_salt FROM refresh_tokens ORDER BY issued_at")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(salts.len(), 4);
    let salts: Vec<Vec<u8>> = salts.into_iter().map(|s| s.expect("a salt on every new row")).collect();
    assert!(salts.iter().all(|s| s.len() == 32), "32 bytes each");
    let mut distinct = salts.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), salts.len(), "a fresh value per token");

    // No column of any table holds a refresh token in plain text (as issued,
    // or as its raw bytes), and the values appear nowhere but on their rows.
    let tokens: Vec<&str> = [&first, &second, &third, &fourth.json].into_iter().map(rt).collect();
    let rows = every_row(&pool).await;
    assert!(
        rows.iter().any(|(t, _)| t == "audit_events"),
        "the audit trail was searched"
    );
    for (table, row) in &rows {
        for token in &tokens {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap();
            assert!(!row.contains(token), "{table} holds a refresh token: {row}");
            assert!(
                !row.contains(&hex(&raw)),
                "{table} holds a refresh token's bytes: {row}"
            );
        }
        if table != "refresh_tokens" {
            for salt in &salts {
                assert!(!row.contains(&hex(salt)), "{table} holds a rotation value: {row}");
            }
        }
    }
}

/// A session begun before the upgrade: its user, the session and one live
/// refresh token, written with the schema of that time; returns the token.
async fn session_before_the_upgrade(pool: &PgPool) -> String {
    let (user_id, session_id) = (Uuid::new_v4(), Uuid::new_v4());
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes().repeat(2));
    let hash = RefreshToken::parse(&token).unwrap().hash();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'ada@example.com')")
        .bind(user_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, now() - interval '1 day', now() + interval '29 days')",
    )
    .bind(session_id)
    .bind(user_id)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (id, token_hash, session_id, issued_at, expires_at)
         VALUES ($1, $2, $3, now() - interval '1 day', now() + interval '29 days')",
    )
    .bind(Uuid::new_v4())
    .bind(hash.as_slice())
    .bind(session_id)
    .execute(pool)
    .await
    .unwrap();
    token
}

#[sqlx::test(migrations = false)]
async fn a_session_begun_before_the_upgrade_keeps_refreshing_across_it(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    sesame::MIGRATOR.run_to(BEFORE_ROTATION_SALT, &pool).await.unwrap();
    let old = session_before_the_upgrade(&pool).await;
    sesame::MIGRATOR.run(&pool).await.unwrap();
    let app = TestApp::spawn_with(test_config(db)).await;

    // The token issued before the upgrade has no stored value: its child is
    // derived as it was then, so a replay on an instance not yet upgraded
    // (or this one) gets the same answer.
    let next = app.refresh(&old).await;
    assert_eq!(next.status, 200, "{}", next.text);
    assert_eq!(rt(&next.json), child_from_key_and_parent(secret(&app), &old));
    app.state.clock.advance(Duration::from_secs(5));
    let again = app.refresh(&old).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(rt(&again.json), rt(&next.json), "the same child within the interval");

    // From its first rotation on, the session uses the new derivation.
    let after: Value = app.refresh(rt(&next.json)).await.json;
    assert!(after["refreshToken"].is_string(), "{after}");
    assert_ne!(rt(&after), child_from_key_and_parent(secret(&app), rt(&next.json)));
    assert_eq!(app.refresh(rt(&after)).await.status, 200);
    let without: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE rotation_salt IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(without, 1, "only the token issued before the upgrade");
}
