//! Logout, logout-all, the session list, ending one session, `/auth/me`, cleanup.

use reqwest::Method;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::helpers::{at, rt, spawn_with_smtp, test_config};

#[sqlx::test]
async fn me_answers_the_signed_in_user(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let pair = app.sign_in(&sink, "ada@example.com").await;
    let me = app.bearer(Method::GET, "/auth/me", at(&pair)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["success"], true);
    assert_eq!(me.json["user"], pair["user"]);

    let none = app.get("/auth/me").await;
    none.assert_error(401, "invalid_token");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    app.bearer(Method::GET, "/auth/me", "garbage")
        .await
        .assert_error(401, "invalid_token");
}

#[sqlx::test]
async fn logout_ends_one_session_and_logout_all_ends_every_one(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let phone = app.sign_in(&sink, "ada@example.com").await;
    let laptop = app.sign_in(&sink, "ada@example.com").await;
    let tablet = app.sign_in(&sink, "ada@example.com").await;

    assert_eq!(app.logout(rt(&phone)).await.status, 200);
    app.refresh(rt(&phone)).await.assert_error(401, "invalid_refresh_token");
    assert_eq!(app.refresh(rt(&laptop)).await.status, 200, "other sessions go on");

    let all = app.bearer(Method::POST, "/auth/logout-all", at(&tablet)).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(all.json["revoked"], 2);
    app.refresh(rt(&tablet))
        .await
        .assert_error(401, "invalid_refresh_token");
    // The access tokens of the ended sessions stop working at sesame at once.
    for pair in [&laptop, &tablet] {
        app.bearer(Method::GET, "/auth/me", at(pair))
            .await
            .assert_error(401, "invalid_token");
        app.bearer(Method::GET, "/auth/sessions", at(pair))
            .await
            .assert_error(401, "invalid_token");
    }
    app.post_json("/auth/logout-all", &serde_json::json!({}))
        .await
        .assert_error(401, "invalid_token");
}

#[sqlx::test]
async fn the_session_list_shows_live_sessions_and_one_can_be_ended(_: PgPoolOptions, db: PgConnectOptions) {
    let (app, sink) = spawn_with_smtp(db).await;
    let first = app.sign_in(&sink, "ada@example.com").await;
    let second = app.sign_in(&sink, "ada@example.com").await;
    let stranger = app.sign_in(&sink, "eve@example.com").await;

    // `current` marks the session of the token presented, whichever it is.
    let sid_of = |pair: &Value| app.state.jwt.verify(at(pair)).unwrap().sid.as_uuid().to_string();
    assert_ne!(sid_of(&first), sid_of(&second), "two sign-ins, two sessions");
    for pair in [&first, &second] {
        let listed = app.bearer(Method::GET, "/auth/sessions", at(pair)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let sessions = listed.json["sessions"].as_array().unwrap();
        let mut ids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
        ids.sort_unstable();
        let mut both = [sid_of(&first), sid_of(&second)];
        both.sort_unstable();
        assert_eq!(ids, both, "the user's two sessions, and no one else's");
        let current: Vec<&str> = sessions
            .iter()
            .filter(|s| s["current"].as_bool().unwrap())
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(current, [sid_of(pair)], "{}", listed.text);
    }

    let listed = app.bearer(Method::GET, "/auth/sessions", at(&second)).await;
    let sessions = listed.json["sessions"].as_array().unwrap();
    let s = &sessions[0];
    for field in ["id", "createdAt", "lastUsedAt", "expiresAt"] {
        assert!(s[field].is_string(), "{field}: {s}");
    }
    assert_eq!(s["ip"], "127.0.0.1");
    assert!(s["userAgent"].is_null() || s["userAgent"].is_string());

    let first_sid = app.state.jwt.verify(at(&first)).unwrap().sid;
    // Someone else's session is not found, as if it did not exist.
    app.bearer(Method::DELETE, &format!("/auth/sessions/{first_sid}"), at(&stranger))
        .await
        .assert_error(404, "not_found");
    app.bearer(
        Method::DELETE,
        &format!("/auth/sessions/{}", uuid::Uuid::new_v4()),
        at(&second),
    )
    .await
    .assert_error(404, "not_found");
    app.bearer(Method::DELETE, "/auth/sessions/not-a-uuid", at(&second))
        .await
        .assert_error(400, "invalid_request");

    let ended = app
        .bearer(Method::DELETE, &format!("/auth/sessions/{first_sid}"), at(&second))
        .await;
    assert_eq!(ended.status, 200, "{}", ended.text);
    app.refresh(rt(&first)).await.assert_error(401, "invalid_refresh_token");
    let listed = app.bearer(Method::GET, "/auth/sessions", at(&second)).await;
    assert_eq!(listed.json["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.refresh(rt(&stranger)).await.status,
        200,
        "the stranger's session is untouched"
    );
}

#[sqlx::test]
async fn cleanup_deletes_long_ended_sessions_and_nothing_live(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let (app, sink) = spawn_with_smtp(db.clone()).await;
    let ended = app.sign_in(&sink, "ada@example.com").await;
    let live = app.sign_in(&sink, "ada@example.com").await;
    let fresh_end = app.sign_in(&sink, "bob@example.com").await;
    app.logout(rt(&ended)).await;
    sqlx::query("UPDATE sessions SET revoked_at = now() - interval '2 days' WHERE revoked_at IS NOT NULL")
        .execute(&pool)
        .await
        .unwrap();
    app.logout(rt(&fresh_end)).await;

    let state = sesame::app::AppState::new(test_config(db), sesame::clock::Clock::system()).unwrap();
    let report = sesame::cleanup::run_once(&state).await.unwrap().unwrap();
    assert_eq!(report.sessions, 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 2, "the live one and the one ended minutes ago stay");
    assert_eq!(app.refresh(rt(&live)).await.status, 200);
}

/// A server with one person signed in whose tokens were then refreshed `times`
/// times, each with the token the last refresh gave.
async fn signed_in_and_refreshed(db: PgConnectOptions, times: usize) -> crate::helpers::TestApp {
    let (app, sink) = spawn_with_smtp(db).await;
    let mut pair = app.sign_in(&sink, "ada@example.com").await;
    for _ in 0..times {
        let resp = app.refresh(rt(&pair)).await;
        assert_eq!(resp.status, 200, "{}", resp.text);
        pair = resp.json;
    }
    app
}

/// A token's id is time-ordered (UUIDv7): every new token's entries in the
/// primary key and in the parent's index go at the right end of those indexes
/// (docs/BENCHMARKS.md: with random ids, the refreshes on a year's tokens ran
/// at 0.71 of an empty database's).
#[sqlx::test]
async fn token_ids_are_time_ordered_each_after_its_parent(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let _app = signed_in_and_refreshed(db, 3).await;
    let (tokens, v7, after_parent): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE substr(t.id::text, 15, 1) = '7'),
                count(*) FILTER (WHERE t.id > p.id)
         FROM refresh_tokens t LEFT JOIN refresh_tokens p ON p.id = t.parent_id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((tokens, v7, after_parent), (4, 4, 3));
}

/// A refresh updates its session (`last_used_at`, `expires_at`) and retires its
/// token (`rotated_at`, `revoked_at`, `rotation_salt`) without touching an
/// indexed column, so on a page with room both updates are heap-only (HOT): no
/// index gets a new entry. An index on one of those columns breaks this.
#[sqlx::test]
async fn refreshes_update_sessions_and_tokens_heap_only(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let _app = signed_in_and_refreshed(db, 5).await;
    // The server's connections report their statistics when they go idle:
    // wait until the five updates of each table have arrived.
    let counts = || async {
        sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT relname::text, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
             WHERE relname IN ('refresh_tokens', 'sessions') ORDER BY relname",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let mut seen = Vec::new();
    for _ in 0..300 {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&pool)
            .await
            .unwrap();
        seen = counts().await;
        if seen.len() == 2 && seen.iter().all(|(_, updated, _)| *updated >= 5) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        vec![("refresh_tokens".to_owned(), 5, 5), ("sessions".to_owned(), 5, 5)],
        "(table, updates, heap-only updates)"
    );
}

/// Sessions are found by sweeping their table a range of pages at a time (128
/// pages a step), expired tokens by their expiry's index in batches of 5 000:
/// tables of several ranges and batches, ended and live rows on every page,
/// lose every ended row and keep every live one.
#[sqlx::test]
async fn cleanup_sweeps_every_page_of_sessions_and_drains_expired_tokens(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    // 30 000 sessions, in turn live, expired two days ago, ended two days ago
    // (unexpired); a live session has an expired (rotated) token and its live
    // child, an ended one a token that expired or that its end revoked.
    sqlx::raw_sql(
        r"
        INSERT INTO users (id, email) VALUES ('00000000-0000-4000-8000-000000000001', 'sweep@example.com');
        INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at, revoke_reason)
        SELECT md5('s' || n)::uuid, '00000000-0000-4000-8000-000000000001', now() - interval '10 days',
               CASE n % 3 WHEN 1 THEN now() - interval '2 days' ELSE now() + interval '1 day' END,
               CASE n % 3 WHEN 2 THEN now() - interval '2 days' END,
               CASE n % 3 WHEN 2 THEN 'logout' END
        FROM generate_series(1, 30000) n;
        INSERT INTO refresh_tokens (id, token_hash, session_id, issued_at, rotated_at, expires_at)
        SELECT md5('t' || n || k)::uuid, sha256(convert_to(n || '/' || k, 'UTF8')), md5('s' || n)::uuid,
               now() - interval '10 days',
               CASE WHEN k = 0 AND n % 3 = 0 THEN now() - interval '3 days' END,
               CASE WHEN k = 1 OR n % 3 = 2 THEN now() + interval '1 day' ELSE now() - interval '2 days' END
        FROM generate_series(1, 30000) n, generate_series(0, 1) k
        WHERE k = 0 OR n % 3 = 0;
        ANALYZE sessions, refresh_tokens;
        ",
    )
    .execute(&pool)
    .await
    .unwrap();
    let session_pages: i64 = sqlx::query_scalar("SELECT pg_relation_size('sessions') / 8192")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        session_pages > 2 * 128,
        "sessions span several sweep steps: {session_pages} pages"
    );

    let state = sesame::app::AppState::new(test_config(db), sesame::clock::Clock::system()).unwrap();
    let report = sesame::cleanup::run_once(&state).await.unwrap().unwrap();
    assert_eq!(report.sessions, 20_000, "the expired and the ended sessions");
    assert_eq!(
        report.refresh_tokens, 20_000,
        "the rotated tokens of live sessions and the tokens of expired ones (an ended session's unexpired token goes with it)"
    );
    let (sessions, live_sessions, tokens, live_tokens): (i64, i64, i64, i64) = sqlx::query_as(
        r"
        SELECT (SELECT count(*) FROM sessions),
               (SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > now()),
               (SELECT count(*) FROM refresh_tokens),
               (SELECT count(*) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
                WHERE t.expires_at > now() AND t.rotated_at IS NULL AND s.revoked_at IS NULL)
        ",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((sessions, live_sessions), (10_000, 10_000), "every live session stays");
    assert_eq!(
        (tokens, live_tokens),
        (10_000, 10_000),
        "every live session's live token stays"
    );
}
