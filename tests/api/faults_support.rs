//! What the fault tests share: a JSON POST, and signing in against a server
//! process the way a client would.

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
