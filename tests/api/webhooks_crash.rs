//! `kill -9` of the real binary in the middle of a burst of sign-ups: after a
//! restart every committed `user.created` reaches the receiver (a repeat keeps
//! its `webhook-id`), and none arrives for a sign-in that never committed.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::{
    faults_support::sign_in_burst_then_kill,
    helpers::{ServerProcess, temp_dir},
    mailbox::SmtpSink,
    webhooks_support::{Receiver, new_secret, verify},
};

#[sqlx::test]
async fn a_server_killed_mid_burst_delivers_every_committed_sign_up_after_a_restart(
    opts: PgPoolOptions,
    db: PgConnectOptions,
) {
    let pool = opts.connect_with(db.clone()).await.unwrap();
    let sink = SmtpSink::start().await;
    let receiver = Receiver::start().await;
    // Slow answers: deliveries are still queued, or in flight, at the kill.
    receiver.answer_after(Duration::from_millis(150));
    let secret = new_secret();
    let dir = temp_dir("webhooks-crash");
    let url = receiver.url();
    let vars = [
        ("EMAIL_PROVIDER", "smtp"),
        ("SMTP_URL", &*sink.url()),
        ("JWT_SECRET", "crash-test-secret-0123456789abcdef"),
        ("WEBHOOK_URLS", &*url),
        ("WEBHOOK_SECRET", &*secret),
        ("METRICS_FORMAT", "none"),
    ];
    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;

    // The burst: every verification at once; the kill lands once a few answered.
    sign_in_burst_then_kill(server, &sink).await;

    let committed: HashSet<String> = sqlx::query_scalar("SELECT email FROM audit_events WHERE event = 'user.created'")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(committed.len() >= 4, "{committed:?}");
    let before_restart = receiver.received().len();
    assert!(
        before_restart < committed.len(),
        "the kill should leave deliveries to make: {before_restart} of {}",
        committed.len()
    );

    receiver.answer_after(Duration::ZERO);
    let server = ServerProcess::start(&db, &dir, &vars);
    server.wait_ready().await;
    // Read again: a COMMIT the killed process had sent may have finished since.
    let committed_now = || async {
        sqlx::query_scalar::<_, String>("SELECT email FROM audit_events WHERE event = 'user.created'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect::<HashSet<String>>()
    };
    let undelivered = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for _ in 0..200 {
        ids.clear();
        for r in receiver.received() {
            assert!(verify(&secret, &r), "{r:?}");
            let email = r.json()["data"]["email"].as_str().unwrap().to_owned();
            ids.entry(email).or_default().insert(r.id.clone());
        }
        if undelivered().await == 0 && ids.len() >= committed_now().await.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received: HashSet<String> = ids.keys().cloned().collect();
    let committed = committed_now().await;
    assert_eq!(received, committed, "every committed sign-up, and only those");
    assert!(
        ids.values().all(|set| set.len() == 1),
        "a repeated delivery keeps its webhook-id: {ids:?}"
    );
    assert_eq!(undelivered().await, 0);
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
}
