//! What the one-time-code tests share: the audit rows they read, and the one
//! answer every failed verification gets.

use sqlx::PgPool;

/// `(event, success, error)` of every audit row, in order.
pub(crate) async fn events(pool: &PgPool) -> Vec<(String, bool, Option<String>)> {
    sqlx::query_as("SELECT event, success, error FROM audit_events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The reason of every `otp.verification.detail` row, in order.
pub(crate) async fn detail_reasons(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT error FROM audit_events WHERE event = 'otp.verification.detail' ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Asserts the one answer of every failed verification: 401 `invalid_code`, the
/// same words, and `WWW-Authenticate: Bearer`.
pub(crate) fn assert_generic_401(resp: &crate::helpers::TestResponse) {
    resp.assert_error(401, "invalid_code");
    assert_eq!(resp.json["error"], "the code is invalid or has expired");
    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
}
