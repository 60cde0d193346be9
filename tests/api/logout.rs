//! `POST /auth/logout` ends the session of a refresh token, idempotently.

use serde_json::json;
use sesame::auth::refresh::RefreshToken;
use sqlx::{
    PgPool, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::helpers::TestApp;

struct Fixture {
    user_id: Uuid,
    session_id: Uuid,
    token: String,
}

/// A user with one live session and its refresh token, written as the login flow would.
async fn signed_in_user(pool: &PgPool) -> Fixture {
    let (user_id, session_id, token_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let token = "T".repeat(43);
    let hash = RefreshToken::parse(&token).unwrap().hash();
    sqlx::query("INSERT INTO users (id, email) VALUES ($1, 'ada@example.com')")
        .bind(user_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, now() + interval '30 days')")
        .bind(session_id)
        .bind(user_id)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO refresh_tokens (id, token_hash, session_id, expires_at) VALUES ($1, $2, $3, now() + interval '30 days')")
        .bind(token_id)
        .bind(hash.as_slice())
        .bind(session_id)
        .execute(pool)
        .await
        .unwrap();
    Fixture {
        user_id,
        session_id,
        token,
    }
}

#[sqlx::test]
async fn logout_ends_the_session_and_records_the_event(pool: PgPoolOptions, db: PgConnectOptions) {
    let pool = pool.connect_with(db.clone()).await.unwrap();
    let f = signed_in_user(&pool).await;
    let app = TestApp::spawn(db).await;

    let resp = app.logout(&f.token).await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    assert_eq!(resp.json, json!({ "success": true }));

    let s = sqlx::query("SELECT revoked_at IS NOT NULL AS revoked, revoke_reason FROM sessions WHERE id = $1")
        .bind(f.session_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(s.get::<bool, _>("revoked"));
    assert_eq!(s.get::<Option<String>, _>("revoke_reason").as_deref(), Some("logout"));
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE session_id = $1 AND revoked_at IS NULL")
            .bind(f.session_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(live, 0, "every token of the session is revoked");

    let e = sqlx::query("SELECT success, user_id, metadata->>'sessionId' AS sid, request_id FROM audit_events WHERE event = 'auth.logout'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(e.get::<bool, _>("success"));
    assert_eq!(e.get::<Option<Uuid>, _>("user_id"), Some(f.user_id));
    assert_eq!(e.get::<Option<String>, _>("sid"), Some(f.session_id.to_string()));
    assert_eq!(
        e.get::<Option<String>, _>("request_id").as_deref(),
        resp.header("x-request-id")
    );
}

#[sqlx::test]
async fn logout_is_idempotent_and_reveals_nothing_about_unknown_tokens(pool: PgPoolOptions, db: PgConnectOptions) {
    let pool = pool.connect_with(db.clone()).await.unwrap();
    let f = signed_in_user(&pool).await;
    let app = TestApp::spawn(db).await;

    assert_eq!(app.logout(&f.token).await.status, 200);
    let again = app.logout(&f.token).await;
    let unknown = app.logout(&"U".repeat(43)).await;
    // A value that is not token-shaped is refused by the documented shape.
    app.logout("not-a-token").await.assert_error(400, "invalid_request");
    for resp in [&again, &unknown] {
        assert_eq!(resp.status, 200, "{}", resp.text);
        assert_eq!(resp.json, json!({ "success": true }));
    }

    let reasons: Vec<(bool, Option<String>)> =
        sqlx::query_as("SELECT success, error FROM audit_events WHERE event = 'auth.logout' ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        reasons,
        vec![
            (true, None),
            (false, Some("Session already ended".to_owned())),
            (false, Some("Unknown refresh token".to_owned())),
        ]
    );
    let all_events =
        sqlx::query_scalar::<_, String>("SELECT coalesce(metadata::text, '') || coalesce(error, '') FROM audit_events")
            .fetch_all(&pool)
            .await
            .unwrap()
            .concat();
    assert!(!all_events.contains(&f.token), "no token in the audit trail");
}

#[sqlx::test]
async fn logout_of_one_session_leaves_other_sessions_alone(pool: PgPoolOptions, db: PgConnectOptions) {
    let pool = pool.connect_with(db.clone()).await.unwrap();
    let f = signed_in_user(&pool).await;
    let other = Uuid::new_v4();
    sqlx::query("INSERT INTO sessions (id, user_id, expires_at) VALUES ($1, $2, now() + interval '1 day')")
        .bind(other)
        .bind(f.user_id)
        .execute(&pool)
        .await
        .unwrap();
    let app = TestApp::spawn(db).await;
    assert_eq!(app.logout(&f.token).await.status, 200);
    let revoked: bool = sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1")
        .bind(other)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!revoked);
}
