//! `GET /health`: is the server up, and can it reach its database?

use std::time::Duration;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{state::AppState, store};

/// How long a health check waits for the database before calling it unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub struct HealthApi {
    pub state: AppState,
}

/// The server and its database are up.
#[derive(Object, Debug)]
pub struct HealthBody {
    /// `ok`.
    pub status: String,
    /// `ok`.
    pub database: String,
}

/// The database cannot be reached.
#[derive(Object, Debug)]
pub struct HealthUnavailableBody {
    /// Always `false`.
    pub success: bool,
    /// `error`.
    pub status: String,
    /// `unreachable`.
    pub database: String,
    /// What went wrong, without internals.
    pub error: String,
    /// `database_unavailable`.
    pub code: String,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The server and its database are up.
    #[oai(status = 200)]
    Ok(Json<HealthBody>),
    /// The database cannot be reached; the server keeps retrying by itself.
    #[oai(status = 503)]
    Unavailable(Json<HealthUnavailableBody>),
}

#[OpenApi]
impl HealthApi {
    /// Check the server and its database.
    ///
    /// Runs one query against PostgreSQL. Answers 503 while the database is
    /// unreachable and 200 again as soon as it is back, without a restart.
    #[oai(
        path = "/health",
        method = "get",
        operation_id = "get_health",
        tag = "ApiTags::Health"
    )]
    async fn get_health(&self) -> HealthResponse {
        check(&self.state).await
    }
}

/// Pings the database: 200 when it answers within [`PING_TIMEOUT`], else 503.
pub async fn check(state: &AppState) -> HealthResponse {
    let outcome = tokio::time::timeout(PING_TIMEOUT, store::health::ping(&state.db)).await;
    let error = match outcome {
        Ok(Ok(())) => {
            return HealthResponse::Ok(Json(HealthBody {
                status: "ok".to_owned(),
                database: "ok".to_owned(),
            }));
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {}s", PING_TIMEOUT.as_secs()),
    };
    tracing::warn!(%error, "health check: database unreachable");
    HealthResponse::Unavailable(Json(HealthUnavailableBody {
        success: false,
        status: "error".to_owned(),
        database: "unreachable".to_owned(),
        error: "the database is unreachable".to_owned(),
        code: "database_unavailable".to_owned(),
    }))
}
