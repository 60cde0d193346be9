//! Response bodies shared by several operations, and the `locale` field of
//! the send requests.

use poem::Request;
use poem_openapi::{Object, types::Example};
use time::OffsetDateTime;
use uuid::Uuid;

use super::types::Locale;
use crate::{
    email::locale,
    error::{ApiError, ErrorCode},
    state::AppState,
    store,
};

/// The language of a send's email: its `locale` field, else its
/// `Accept-Language`, else `EMAIL_DEFAULT_LOCALE` (see `Templates::pick`).
/// A `locale` that is not a language tag is 400 `invalid_request`.
pub fn pick_locale(state: &AppState, req: &Request, field: Option<&Locale>) -> Result<String, ApiError> {
    let wanted = locale::wanted(field.map(Locale::as_str), req.header("accept-language")).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "`locale` must be a language tag such as `de` or `pt-BR`",
        )
    })?;
    Ok(state.mailer.templates().pick(&wanted))
}

/// The answer of both send endpoints, whether or not the address has an account.
pub const SENT_MESSAGE: &str = "If the address can sign in, a message is on its way.";

/// A body that says only "it worked".
#[derive(Object, Debug, Clone)]
pub struct SuccessResponse {
    /// Always `true`.
    pub success: bool,
}

impl SuccessResponse {
    pub fn ok() -> Self {
        Self { success: true }
    }
}

/// The answer of the send endpoints.
#[derive(Object, Debug)]
#[oai(example)]
pub struct SendResponse {
    /// Always `true`.
    pub success: bool,
    pub message: String,
}

impl SendResponse {
    /// The one answer of a send, whatever happened to the address.
    pub fn sent() -> Self {
        Self {
            success: true,
            message: SENT_MESSAGE.to_owned(),
        }
    }
}

/// A user as the API shows it.
#[derive(Object, Debug, Clone)]
#[oai(rename_all = "camelCase")]
pub struct UserBody {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
}

impl From<store::users::User> for UserBody {
    fn from(u: store::users::User) -> Self {
        Self {
            id: u.id.as_uuid(),
            email: u.email,
            created_at: u.created_at,
        }
    }
}

/// An access token and the refresh token of its session.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
#[oai(example)]
pub struct TokenPair {
    /// Always `true`.
    pub success: bool,
    /// The access token: a JWT to send as `Authorization: Bearer …`.
    pub token: String,
    /// Single use: exchange it at `/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserBody,
}

impl Example for SendResponse {
    fn example() -> Self {
        Self::sent()
    }
}

impl Example for TokenPair {
    fn example() -> Self {
        Self {
            success: true,
            token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI…".to_owned(),
            refresh_token: "B8Ly4nQ_x2Vt7Rk9mPz3Wc5Hs1Jd6Fg0Ae8Ui4Oy2Tq".to_owned(),
            token_type: "Bearer".to_owned(),
            expires_in: 3600,
            user: UserBody {
                id: Uuid::nil(),
                email: "ada@example.com".to_owned(),
                created_at: OffsetDateTime::UNIX_EPOCH,
            },
        }
    }
}
