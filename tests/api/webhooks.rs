//! Webhooks to a real receiver in the test process: signed the Standard Webhooks
//! way, delivered in order after an outage, retried with the same id, never sent
//! for a rolled-back change, failed after `WEBHOOK_MAX_AGE` and retried by an
//! operator, and delivered once by two instances.

use std::time::Duration;

use sesame::{
    audit::{AuditEvent, AuditTx, Event, RequestContext},
    config::WebhookEvents,
    store,
};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    helpers::{TestApp, free_port, set_database_reachable, smtp_config},
    mailbox::SmtpSink,
    webhooks_support::{Receiver, deliveries, new_secret, verify, wait_deliveries, webhook_config},
};

fn default_events() -> WebhookEvents {
    sesame::config::Config::from_lookup(|_| None).unwrap().webhooks.events
}

#[sqlx::test]
async fn a_sign_up_is_posted_with_a_verifiable_standard_webhooks_signature(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, default_events());
    let app = TestApp::spawn_with(config).await;

    let pair = app.sign_in(&sink, "ada@example.com").await;

    let got = receiver.wait_for(1).await;
    assert_eq!(got.len(), 1, "only user.created is selected by default: {got:?}");
    let hook = &got[0];
    assert!(verify(&secret, hook), "signature does not verify: {hook:?}");
    assert!(!verify(&new_secret(), hook), "another secret must not verify it");
    assert!(hook.id.starts_with("msg_"), "{}", hook.id);
    assert_eq!(hook.content_type, "application/json");
    let body = hook.json();
    assert_eq!(body["type"], "user.created");
    // `data` is the event's JSON Lines record, as the file writes it.
    let row = store::audit::list(&mut pool.acquire().await.unwrap(), &Default::default(), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event.event == "user.created")
        .unwrap();
    let line: serde_json::Value = serde_json::from_str(&sesame::audit::json_line(&row.event)).unwrap();
    assert_eq!(body["data"], line);
    assert_eq!(body["timestamp"], line["timestamp"]);
    assert_eq!(body["data"]["userId"], pair["user"]["id"]);
    assert_eq!(body["data"]["email"], "ada@example.com");
    wait_deliveries(&pool, "delivered", |d| d == [("delivered".to_owned(), 1)]).await;

    // A second sign-in creates no user: nothing more is sent.
    app.sign_in(&sink, "ada@example.com").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[sqlx::test]
async fn a_receiver_down_for_a_while_then_up_gets_every_event_in_order(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    // A port with nothing listening: connections are refused.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[url], &secret, default_events());
    let app = TestApp::spawn_with(config).await;

    let emails: Vec<String> = (0..4).map(|i| format!("user{i}@example.com")).collect();
    for email in &emails {
        app.sign_in(&sink, email).await;
    }
    // The head was tried and refused; the ones behind it wait, untried.
    wait_deliveries(&pool, "the head tried", |d| d.first().is_some_and(|h| h.1 >= 1)).await;
    app.state.clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        app.metric("sesame_webhook_oldest_pending_age_seconds").await >= 3600.0,
        "the gauge shows the backlog's age"
    );
    let d = deliveries(&pool).await;
    assert_eq!(d.len(), 4);
    assert!(d.iter().all(|(s, _)| s == "pending"), "{d:?}");
    assert!(d[1..].iter().all(|(_, a)| *a == 0), "nothing passes the head: {d:?}");

    let receiver = Receiver::start_on(port).await;
    app.state.clock.advance(Duration::from_secs(3600));
    let got = receiver.wait_for(4).await;
    let order: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, emails, "in commit order");
    assert!(got.iter().all(|r| verify(&secret, r)));
    wait_deliveries(&pool, "all delivered", |d| d.iter().all(|(s, _)| s == "delivered")).await;
}

#[sqlx::test]
async fn a_failure_inside_a_backlog_keeps_the_deliveries_before_it_and_holds_back_the_rest(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let port = free_port();
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(
        smtp_config(db, &sink),
        &[format!("http://127.0.0.1:{port}/hook")],
        &secret,
        default_events(),
    );
    let app = TestApp::spawn_with(config).await;
    let emails: Vec<String> = (0..5).map(|i| format!("user{i}@example.com")).collect();
    for email in &emails {
        app.sign_in(&sink, email).await;
    }
    wait_deliveries(&pool, "the head tried", |d| d.len() == 5 && d[0].1 >= 1).await;

    // The backlog goes out in one pass; the third answer is a 500.
    let receiver = Receiver::start_on(port).await;
    receiver.answer_next(&[200, 200, 500]);
    app.state.clock.advance(Duration::from_secs(3600));
    receiver.wait_for(3).await;
    wait_deliveries(&pool, "two delivered, the third retrying", |d| {
        d[..2].iter().all(|(s, _)| s == "delivered") && d[2] == ("pending".to_owned(), 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = deliveries(&pool).await;
    assert!(
        d[3..].iter().all(|(s, a)| s == "pending" && *a == 0),
        "nothing passes the retrying row: {d:?}"
    );
    assert_eq!(receiver.received().len(), 3);

    app.state.clock.advance(Duration::from_secs(3600));
    let got = receiver.wait_for(6).await;
    let order: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["email"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = [0, 1, 2, 2, 3, 4].iter().map(|&i| emails[i].clone()).collect();
    assert_eq!(order, expected);
    wait_deliveries(&pool, "all delivered", |d| d.iter().all(|(s, _)| s == "delivered")).await;
}

#[sqlx::test]
async fn a_receiver_answering_500_then_200_gets_the_same_webhook_id_again(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    receiver.answer_next(&[500]);
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, default_events());
    let app = TestApp::spawn_with(config).await;

    app.sign_in(&sink, "ada@example.com").await;
    receiver.wait_for(1).await;
    wait_deliveries(&pool, "one failed attempt", |d| d == [("pending".to_owned(), 1)]).await;
    let last_error: Option<String> = sqlx::query_scalar("SELECT last_error FROM webhook_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(last_error.as_deref(), Some("HTTP 500"));

    // The retry is due within seconds; move the clock rather than wait.
    app.state.clock.advance(Duration::from_secs(10));
    let got = receiver.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, got[1].id, "the same webhook-id on a retry");
    assert_eq!(got[0].body, got[1].body);
    assert!(verify(&secret, &got[1]));
    wait_deliveries(&pool, "delivered on the second attempt", |d| {
        d == [("delivered".to_owned(), 2)]
    })
    .await;
}

#[sqlx::test]
async fn a_rolled_back_transaction_sends_nothing(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, WebhookEvents::All);
    let app = TestApp::spawn_with(config).await;
    let state = &app.state;
    let event =
        |email: &str| AuditEvent::success(Event::UserCreated, &RequestContext::none(), state.clock.now()).email(email);

    let mut tx = AuditTx::begin(&state.db, &state.audit).await.unwrap();
    tx.record(event("rolled@example.com")).await.unwrap();
    drop(tx);
    let mut tx = AuditTx::begin(&state.db, &state.audit).await.unwrap();
    tx.record(event("kept@example.com")).await.unwrap();
    tx.commit().await.unwrap();

    let got = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_now = receiver.received();
    assert_eq!(got_now.len(), 1, "{got:?}");
    assert_eq!(got_now[0].json()["data"]["email"], "kept@example.com");
    assert_eq!(
        deliveries(&pool).await.len(),
        1,
        "no outbox row for the rolled-back event"
    );
}

#[sqlx::test]
async fn past_webhook_max_age_a_delivery_is_failed_and_an_operator_retry_delivers_it(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    receiver.answer_always(503);
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let mut config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, default_events());
    config.webhooks.max_age = Duration::from_secs(3600);
    let app = TestApp::spawn_with(config).await;

    app.sign_in(&sink, "ada@example.com").await;
    receiver.wait_for(1).await;
    wait_deliveries(&pool, "one failed attempt", |d| d == [("pending".to_owned(), 1)]).await;
    // Past the window, the next failed attempt gives up.
    app.state.clock.advance(Duration::from_secs(2 * 3600));
    wait_deliveries(&pool, "failed", |d| d == [("failed".to_owned(), 2)]).await;
    assert_eq!(
        app.metric(r#"sesame_webhook_attempts_total{result="failed"}"#).await,
        1.0
    );
    let mut conn = pool.acquire().await.unwrap();
    let failed = store::webhooks::list(&mut conn, Some(store::webhooks::Status::Failed), 0, 10)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event, "user.created");
    assert_eq!(failed[0].last_error.as_deref(), Some("HTTP 503"));
    let pending = store::webhooks::list(&mut conn, Some(store::webhooks::Status::Pending), 0, 10)
        .await
        .unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    app.state.clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "a failed delivery is not tried again by itself"
    );

    receiver.answer_always(200);
    assert!(
        store::webhooks::retry(&mut conn, failed[0].id, app.state.clock.now())
            .await
            .unwrap()
    );
    let got = receiver.wait_for(3).await;
    assert_eq!(got[2].json()["data"]["email"], "ada@example.com");
    assert_eq!(got[2].id, got[0].id, "a replay keeps its webhook-id");
    wait_deliveries(&pool, "delivered", |d| d == [("delivered".to_owned(), 3)]).await;
    assert!(
        !store::webhooks::retry(&mut conn, failed[0].id, app.state.clock.now())
            .await
            .unwrap(),
        "a delivered one is not retried"
    );
}

#[sqlx::test]
async fn two_instances_deliver_each_event_once_in_order(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, default_events());
    let a = TestApp::spawn_with(config.clone()).await;
    let b = TestApp::spawn_with(config).await;

    let emails: Vec<String> = (0..8).map(|i| format!("user{i}@example.com")).collect();
    for (i, email) in emails.iter().enumerate() {
        let app = if i % 2 == 0 { &a } else { &b };
        app.sign_in(&sink, email).await;
    }
    receiver.wait_for(emails.len()).await;
    wait_deliveries(&pool, "all delivered", |d| d.iter().all(|(s, _)| s == "delivered")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.received();
    let order: Vec<String> = got
        .iter()
        .map(|r| r.json()["data"]["email"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, emails, "each once, in commit order");
    assert!(deliveries(&pool).await.iter().all(|(_, attempts)| *attempts == 1));
}

#[sqlx::test]
async fn the_worker_survives_a_database_outage(opts: PgPoolOptions, db: PgConnectOptions) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let name = db.get_database().unwrap().to_owned();
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, default_events());
    let app = TestApp::spawn_with(config).await;
    app.sign_in(&sink, "ada@example.com").await;
    receiver.wait_for(1).await;
    drop(pool);

    set_database_reachable(&name, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    set_database_reachable(&name, true).await;

    // Pooled connections cut by the outage fail once each (503) and are replaced.
    let mut signed_in = false;
    for _ in 0..50 {
        if app.send_code("bob@example.com").await.status == 200 {
            let code = sink.last_to("bob@example.com").code();
            if app.verify_code("bob@example.com", &code).await.status == 200 {
                signed_in = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(signed_in, "the app heals after the outage");
    let got = receiver.wait_for(2).await;
    let order: Vec<&str> = got.iter().map(|r| r.body.as_str()).collect();
    assert!(order[1].contains("bob@example.com"), "{order:?}");
}

#[sqlx::test]
async fn an_event_whose_transaction_commits_late_is_delivered_after_not_skipped(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let receiver = Receiver::start().await;
    let sink = SmtpSink::start().await;
    let secret = new_secret();
    let config = webhook_config(smtp_config(db, &sink), &[receiver.url()], &secret, WebhookEvents::All);
    let app = TestApp::spawn_with(config).await;
    let routes = store::webhooks::Routes {
        endpoints: vec![receiver.url()],
        all_events: true,
        events: Vec::new(),
    };
    let event = |email: &str| {
        AuditEvent::success(Event::UserCreated, &RequestContext::none(), app.state.clock.now()).email(email)
    };

    // The late transaction takes the smaller ids, then commits after the other one
    // was delivered: a cursor over ids would already be past it.
    let mut late = pool.begin().await.unwrap();
    let late_ids = store::audit::insert_many(&mut late, &[event("late@example.com")], &routes, None)
        .await
        .unwrap();
    let mut early = pool.begin().await.unwrap();
    let early_ids = store::audit::insert_many(&mut early, &[event("early@example.com")], &routes, None)
        .await
        .unwrap();
    early.commit().await.unwrap();
    assert!(late_ids[0] < early_ids[0]);
    receiver.wait_for(1).await;
    late.commit().await.unwrap();

    let got = receiver.wait_for(2).await;
    let order: Vec<&str> = got.iter().map(|r| r.body.as_str()).collect();
    assert!(
        order[0].contains("early@example.com") && order[1].contains("late@example.com"),
        "in commit order: {order:?}"
    );
    let seqs: Vec<(i64, Option<i64>)> = sqlx::query_as("SELECT event_id, seq FROM webhook_deliveries ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        seqs.iter().map(|s| s.0).collect::<Vec<_>>(),
        [early_ids[0], late_ids[0]]
    );
}
