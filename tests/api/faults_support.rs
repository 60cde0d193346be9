//! What the fault tests share: a JSON POST, signing in against a server
//! process the way a client would, and a burst of sign-ins cut by a SIGKILL.

use serde_json::{Value, json};

use crate::{helpers::ServerProcess, mailbox::SmtpSink};

/// POSTs `body` as JSON to `url`: the status and the JSON answer (`Null` if none).
pub(crate) async fn post(url: String, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Signs in against a server process, reading the code from `sink`.
pub(crate) async fn sign_in(server: &ServerProcess, sink: &SmtpSink, email: &str) -> Value {
    let (status, _) = post(server.url("/auth/send-code"), json!({ "email": email })).await;
    assert_eq!(status, 200);
    let code = sink.last_to(email).code();
    let (status, pair) = post(server.url("/auth/verify-code"), json!({ "email": email, "code": code })).await;
    assert_eq!(status, 200, "{pair}");
    pair
}

/// Sends a code to `burst0@example.com` … `burst15@example.com`, then verifies all
/// sixteen at once and SIGKILLs the server once four answered 200 (no shutdown code
/// runs): a burst of first sign-ins cut short.
pub(crate) async fn sign_in_burst_then_kill(server: ServerProcess, sink: &SmtpSink) {
    let emails: Vec<String> = (0..16).map(|i| format!("burst{i}@example.com")).collect();
    let mut codes = Vec::new();
    for email in &emails {
        let (status, _) = post(server.url("/auth/send-code"), json!({ "email": email })).await;
        assert_eq!(status, 200);
        codes.push(sink.last_to(email).code());
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for (email, code) in emails.iter().zip(&codes) {
        let (url, body, done) = (
            server.url("/auth/verify-code"),
            json!({ "email": email, "code": code }),
            done_tx.clone(),
        );
        tokio::spawn(async move {
            if let Ok(resp) = reqwest::Client::new().post(url).json(&body).send().await {
                let _ = done.send(resp.status().as_u16());
            }
        });
    }
    for _ in 0..4 {
        assert_eq!(done_rx.recv().await, Some(200));
    }
    let mut child = server.child;
    child.kill().unwrap();
    child.wait().unwrap();
}
