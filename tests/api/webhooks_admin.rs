//! The admin API's webhook deliveries: listing them (by status, in keyset
//! pages) and an operator's retry of a failed one, delivered to a real
//! receiver; `user.created` for users that operators create.

use std::{
    collections::HashSet,
    process::{Command, Output, Stdio},
    time::Duration,
};

use reqwest::Method;
use serde_json::Value;
use sesame::config::WebhookEvents;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    admin_users::create_id,
    helpers::{TestApp, TestResponse, database_url, smtp_config, test_config},
    mailbox::SmtpSink,
    webhooks_support::{Receiver, insert_failed_delivery, new_secret, wait_deliveries, webhook_config},
};

fn default_events() -> WebhookEvents {
    sesame::config::Config::from_lookup(|_| None).unwrap().webhooks.events
}

/// `POST /admin/webhooks/deliveries/{id}/retry`.
async fn retry(app: &TestApp, id: &str) -> TestResponse {
    app.admin(Method::POST, &format!("/admin/webhooks/deliveries/{id}/retry"), None)
        .await
}

/// The deliveries of a `GET /admin/webhooks/deliveries` page.
fn deliveries(page: &TestResponse) -> Vec<Value> {
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.json["success"], true);
    page.json["deliveries"].as_array().unwrap().clone()
}

/// `(event, metadata)` of every event named `name`, in id order.
async fn events_named(app: &TestApp, name: &str) -> Vec<(String, Option<Value>)> {
    sqlx::query_as("SELECT event, metadata FROM audit_events WHERE event = $1 ORDER BY id")
        .bind(name)
        .fetch_all(app.state.db.pool())
        .await
        .unwrap()
}

#[sqlx::test]
async fn the_delivery_endpoints_need_the_admin_token_and_refuse_bad_ids_and_parameters(
    _: PgPoolOptions,
    db: PgConnectOptions,
) {
    let app = TestApp::spawn_with(test_config(db)).await;

    let list = app.admin_get("/admin/webhooks/deliveries").await;
    assert_eq!(list.status, 401, "{}", list.text);
    assert_eq!(list.json["code"], "invalid_admin_token");
    let unauthorised = app
        .client
        .post(format!("{}/admin/webhooks/deliveries/1/retry", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    // Not on the public port.
    assert_eq!(app.get("/admin/webhooks/deliveries").await.status, 404);

    let unknown = retry(&app, "4242").await;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert_eq!(unknown.json["code"], "not_found");
    assert_eq!(unknown.json["success"], false);
    for bad in ["abc", "1.5", "99999999999999999999"] {
        let malformed = retry(&app, bad).await;
        assert_eq!(malformed.status, 400, "{bad}: {}", malformed.text);
        assert_eq!(malformed.json["code"], "invalid_request", "{bad}");
    }
    for query in ["status=lost", "limit=0", "limit=201", "cursor=nope"] {
        let page = app
            .admin(Method::GET, &format!("/admin/webhooks/deliveries?{query}"), None)
            .await;
        assert_eq!(page.status, 400, "{query}: {}", page.text);
        assert_eq!(page.json["code"], "invalid_request", "{query}");
    }
    let empty = app.admin(Method::GET, "/admin/webhooks/deliveries", None).await;
    assert!(deliveries(&empty).is_empty());
    assert_eq!(empty.json["nextCursor"], Value::Null);
    assert!(
        events_named(&app, "admin.webhook.retried").await.is_empty(),
        "a refused retry records nothing"
    );
}

#[sqlx::test]
async fn a_failed_delivery_is_listed_then_retried_by_an_operator_and_delivered(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    receiver.answer_always(503);
    let sink = SmtpSink::start().await;
    let mut config = webhook_config(
        smtp_config(db, &sink),
        &[receiver.url()],
        &new_secret(),
        default_events(),
    );
    config.webhooks.max_age = Duration::from_secs(3600);
    let app = TestApp::spawn_with(config).await;

    app.sign_in(&sink, "ada@example.com").await;
    receiver.wait_for(1).await;
    wait_deliveries(&pool, "one failed attempt", |d| d == [("pending".to_owned(), 1)]).await;
    let pending = deliveries(
        &app.admin(Method::GET, "/admin/webhooks/deliveries?status=pending", None)
            .await,
    );
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["lastStatusCode"], 503);
    assert!(
        pending[0]["nextAttemptAt"].is_string(),
        "a pending one is due at a time"
    );
    // Past WEBHOOK_MAX_AGE, the next failed attempt gives up.
    app.state.clock.advance(Duration::from_secs(2 * 3600));
    wait_deliveries(&pool, "failed", |d| d == [("failed".to_owned(), 2)]).await;

    let failed = deliveries(
        &app.admin(Method::GET, "/admin/webhooks/deliveries?status=failed", None)
            .await,
    );
    assert_eq!(failed.len(), 1, "{failed:?}");
    let d = &failed[0];
    assert_eq!(d["status"], "failed");
    assert_eq!(d["event"], "user.created");
    assert_eq!(d["endpoint"], receiver.url());
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["lastError"], "HTTP 503");
    assert_eq!(d["lastStatusCode"], 503);
    assert_eq!(d["nextAttemptAt"], Value::Null, "a failed one is not due");
    assert_eq!(d["deliveredAt"], Value::Null);
    assert!(d["lastAttemptAt"].is_string() && d["createdAt"].is_string(), "{d}");
    assert_eq!(d["webhookId"], receiver.received()[0].id.as_str());
    let event: i64 = sqlx::query_scalar("SELECT id FROM audit_events WHERE event = 'user.created'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(d["eventId"], event);
    assert!(
        deliveries(
            &app.admin(Method::GET, "/admin/webhooks/deliveries?status=pending", None)
                .await
        )
        .is_empty()
    );

    receiver.answer_always(200);
    let id = d["id"].as_i64().unwrap().to_string();
    let retried = retry(&app, &id).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert_eq!(retried.json["success"], true);
    let after = &retried.json["delivery"];
    assert_eq!(after["id"], d["id"]);
    assert_eq!(after["status"], "pending");
    assert_eq!(after["webhookId"], d["webhookId"]);
    assert!(after["nextAttemptAt"].is_string(), "{after}");

    let got = receiver.wait_for(3).await;
    assert_eq!(got[2].id, got[0].id, "a replay keeps its webhook-id");
    assert_eq!(got[2].json()["data"]["email"], "ada@example.com");
    wait_deliveries(&pool, "delivered", |d| d == [("delivered".to_owned(), 3)]).await;
    let delivered = deliveries(
        &app.admin(Method::GET, "/admin/webhooks/deliveries?status=delivered", None)
            .await,
    );
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["lastError"], Value::Null);
    assert_eq!(delivered[0]["lastStatusCode"], Value::Null);
    assert!(delivered[0]["deliveredAt"].is_string());

    let again = retry(&app, &id).await;
    assert_eq!(again.status, 404, "a delivered one is not retried: {}", again.text);
    assert_eq!(again.json["code"], "not_found");
    assert!(again.json["error"].as_str().unwrap().contains("delivered already"));

    let audited = events_named(&app, "admin.webhook.retried").await;
    assert_eq!(audited.len(), 1, "only the retry that changed something: {audited:?}");
    let meta = audited[0].1.clone().unwrap();
    assert_eq!(meta["actor"], "admin");
    assert_eq!(meta["deliveryId"], d["id"]);
    assert_eq!(meta["eventId"], event);
    assert_eq!(meta["event"], "user.created");
    assert_eq!(meta["status"], "failed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 3, "nothing more is sent");
}

#[sqlx::test]
async fn deliveries_are_listed_oldest_first_in_keyset_pages(_: PgPoolOptions, db: PgConnectOptions) {
    let receiver = Receiver::start().await;
    receiver.answer_always(503);
    let sink = SmtpSink::start().await;
    let config = webhook_config(
        smtp_config(db, &sink),
        &[receiver.url()],
        &new_secret(),
        WebhookEvents::All,
    );
    let app = TestApp::spawn_with(config).await;
    // Each creation is two events (user.created, admin.user.created): ten deliveries.
    for n in 0..5 {
        create_id(&app, &format!("user{n}@example.com")).await;
    }

    let mut seen = Vec::new();
    let mut path = "/admin/webhooks/deliveries?limit=3".to_owned();
    for _ in 0..10 {
        let page = app.admin(Method::GET, &path, None).await;
        let rows = deliveries(&page);
        assert!(rows.len() <= 3);
        seen.extend(rows.iter().map(|d| d["id"].as_i64().unwrap()));
        match page.json["nextCursor"].as_str() {
            Some(cursor) => path = format!("/admin/webhooks/deliveries?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "oldest first, no repeat: {seen:?}"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10);
    let all = deliveries(
        &app.admin(Method::GET, "/admin/webhooks/deliveries?limit=200", None)
            .await,
    );
    let names: Vec<&str> = all.iter().map(|d| d["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["user.created", "admin.user.created"].repeat(5),
        "user.created comes first, in the same transaction"
    );
}

#[sqlx::test]
async fn a_user_created_by_an_operator_is_announced_as_user_created(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(
        smtp_config(db.clone(), &sink),
        &[receiver.url()],
        &secret,
        default_events(),
    );
    let app = TestApp::spawn_with(config).await;

    let id = create_id(&app, "grace@example.com").await;
    let got = receiver.wait_for(1).await;
    let body = got[0].json();
    assert_eq!(body["type"], "user.created");
    assert_eq!(body["data"]["userId"], id.as_str());
    assert_eq!(body["data"]["email"], "grace@example.com");
    assert_eq!(body["data"]["metadata"]["method"], "admin");

    // The command runs with the service's environment: the outbox rows are
    // written by whoever records the event, for the endpoints it knows.
    let url = receiver.url();
    let webhooks = [("WEBHOOK_URLS", url.as_str()), ("WEBHOOK_SECRET", secret.as_str())];
    let cli = sesame(&db, &["users", "create", "linus@example.com"], &webhooks);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].json()["data"]["email"], "linus@example.com");
    assert_eq!(got[1].json()["data"]["metadata"]["method"], "cli");

    // Each in the transaction of its user row, just before admin.user.created.
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT event, email, coalesce(metadata->>'method', metadata->>'actor') FROM audit_events ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let named = |e: &str, m: &str, a: &str| (e.to_owned(), Some(m.to_owned()), Some(a.to_owned()));
    assert_eq!(
        rows,
        [
            named("user.created", "grace@example.com", "admin"),
            named("admin.user.created", "grace@example.com", "admin"),
            named("user.created", "linus@example.com", "cli"),
            named("admin.user.created", "linus@example.com", "cli"),
        ]
    );
    // An address that already has a user creates nothing, so announces nothing.
    let twice = app
        .admin(
            Method::POST,
            "/admin/users",
            Some(&serde_json::json!({ "email": "grace@example.com" })),
        )
        .await;
    assert_eq!(twice.status, 409, "{}", twice.text);
    let user_created: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'user.created'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(user_created, 2);
}

/// Runs `sesame ARGS` against `db`, with `env` only.
fn sesame(db: &PgConnectOptions, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .envs(env.iter().copied())
        .env("DATABASE_URL", database_url(db))
        .env("METRICS_FORMAT", "none")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[sqlx::test]
async fn a_retry_from_the_command_line_is_recorded_with_actor_cli(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let delivery = insert_failed_delivery(&pool, "timed out").await;

    let out = sesame(&db, &["webhooks", "retry", &delivery.to_string()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = sqlx::query_scalar("SELECT metadata FROM audit_events WHERE event = 'admin.webhook.retried'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(meta["actor"], "cli");
    assert_eq!(meta["deliveryId"], delivery);
    assert_eq!(meta["status"], "failed");
}
