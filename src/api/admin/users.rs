//! The `Users` tag of the admin API: finding users, creating them, and (in
//! later operations) disabling, ending sessions and erasing.

use poem::Request;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AdminAuth, AdminTags, cursor, text_param};
use crate::{
    admin::{self, Actor, AdminError},
    api::{
        request_context,
        sign_in::parse_email,
        types::{Email, Nullable},
    },
    auth::ids::UserId,
    error::{AdminCreateErrors, AdminErrors, AdminUserErrors, ApiError, ErrorCode, Errors},
    state::AppState,
    store::{self, users::UserFilter},
};

/// Users per page unless `limit` says otherwise.
const DEFAULT_PAGE: u32 = 50;

pub struct UsersApi {
    pub state: AppState,
}

/// A user as operators see it.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AdminUserBody {
    pub id: Uuid,
    pub email: String,
    pub created_at: OffsetDateTime,
    /// The last successful sign-in; `null` if it never signed in.
    pub last_sign_in_at: Nullable<OffsetDateTime>,
    /// When an operator disabled it; `null` while it may sign in.
    pub disabled_at: Nullable<OffsetDateTime>,
    /// How many live sessions it has.
    pub sessions: i64,
}

impl From<store::users::UserRecord> for AdminUserBody {
    fn from(u: store::users::UserRecord) -> Self {
        Self {
            id: u.id.as_uuid(),
            email: u.email,
            created_at: u.created_at,
            last_sign_in_at: u.last_login_at.into(),
            disabled_at: u.disabled_at.into(),
            sessions: u.sessions,
        }
    }
}

/// One page of users, newest first.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct UsersResponse {
    /// Always `true`.
    pub success: bool,
    pub users: Vec<AdminUserBody>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A live session of a user, as `GET /auth/sessions` shows it.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct AdminSessionBody {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    /// When it ends unless refreshed (sliding), or its absolute limit.
    pub expires_at: OffsetDateTime,
    pub user_agent: Nullable<String>,
    pub ip: Nullable<String>,
}

/// A user and its live sessions, most recently used first.
#[derive(Object, Debug)]
pub struct UserDetailResponse {
    /// Always `true`.
    pub success: bool,
    pub user: AdminUserBody,
    pub sessions: Vec<AdminSessionBody>,
}

/// An address to create a user for.
#[derive(Object, Debug)]
#[oai(example)]
pub struct CreateUserRequest {
    /// The address; trimmed and lower-cased. A value that is not an address
    /// is 400 `invalid_email`.
    pub email: Email,
}

/// The user an operation made or changed.
#[derive(Object, Debug)]
pub struct UserResponse {
    /// Always `true`.
    pub success: bool,
    pub user: AdminUserBody,
}

/// How many sessions were ended.
#[derive(Object, Debug)]
pub struct RevokeSessionsResponse {
    /// Always `true`.
    pub success: bool,
    pub revoked: i64,
}

/// What erasing a user removed.
#[derive(Object, Debug)]
#[oai(rename_all = "camelCase")]
pub struct DeleteUserResponse {
    /// Always `true`.
    pub success: bool,
    /// Sessions deleted (with their refresh tokens).
    pub sessions: u64,
    /// Codes and links of the address deleted.
    pub codes: u64,
    pub links: u64,
    /// Rate-limit counters of the address and of the user's IPs deleted.
    pub rate_limits: u64,
    /// Audit rows kept, with the address and IPs removed.
    pub audit_rows: u64,
}

#[derive(ApiResponse)]
pub enum CreateUserResponse {
    /// The user was created; nothing was sent to it.
    #[oai(status = 201)]
    Created(Json<UserResponse>),
}

impl From<AdminError> for ApiError {
    fn from(err: AdminError) -> Self {
        match err {
            AdminError::NotFound => Self::new(ErrorCode::NotFound, "no such user"),
            AdminError::UserExists => ErrorCode::UserExists.into(),
            AdminError::Database(e) => e.into(),
        }
    }
}

impl<S: crate::error::ErrorSet> From<AdminError> for Errors<S> {
    fn from(err: AdminError) -> Self {
        ApiError::from(err).into()
    }
}

#[OpenApi]
impl UsersApi {
    /// List users, newest first.
    ///
    /// Keyset-paginated: pass the `nextCursor` of a page as `cursor` for the
    /// next; users created meanwhile never shift a page. `email` matches one
    /// address exactly, `query` any address containing it (case-insensitive,
    /// literally: `%` and `_` are plain characters).
    #[oai(
        path = "/admin/users",
        method = "get",
        operation_id = "list_users",
        tag = "AdminTags::Users"
    )]
    async fn list_users(
        &self,
        _auth: AdminAuth,
        /// Only the user of exactly this address.
        #[oai(validator(max_length = 320, pattern = r"^[^\u0000]*$"))]
        email: Query<Option<String>>,
        /// Only users whose address contains this text.
        #[oai(validator(max_length = 320, pattern = r"^[^\u0000]*$"))]
        query: Query<Option<String>>,
        /// Users per page (1 to 200, default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u32>>,
        /// The `nextCursor` of the previous page.
        #[oai(validator(min_length = 1, max_length = 200, pattern = r"^[A-Za-z0-9_-]+$"))]
        cursor: Query<Option<String>>,
    ) -> Result<Json<UsersResponse>, Errors<AdminErrors>> {
        let after = match cursor.0.as_deref() {
            None => None,
            Some(c) => Some(cursor::decode_user(c).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "invalid parameter `cursor`: not a cursor of this list",
                )
            })?),
        };
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let (email, query) = (text_param("email", email.0)?, text_param("query", query.0)?);
        let filter = UserFilter {
            email: email.as_deref(),
            query: query.as_deref(),
        };
        let now = self.state.clock.now();
        let mut users = self
            .state
            .db
            .run(async |conn| store::users::list(conn, &filter, after, i64::from(limit) + 1, now).await)
            .await?;
        let more = users.len() > limit as usize;
        users.truncate(limit as usize);
        let next_cursor = more
            .then(|| users.last().map(|u| cursor::encode_user(u.created_at, u.id.as_uuid())))
            .flatten();
        Ok(Json(UsersResponse {
            success: true,
            users: users.into_iter().map(Into::into).collect(),
            next_cursor: next_cursor.into(),
        }))
    }

    /// A user and its live sessions.
    #[oai(
        path = "/admin/users/:id",
        method = "get",
        operation_id = "get_user",
        tag = "AdminTags::Users"
    )]
    async fn get_user(
        &self,
        _auth: AdminAuth,
        id: Path<Uuid>,
    ) -> Result<Json<UserDetailResponse>, Errors<AdminUserErrors>> {
        let user = admin::find_user(&self.state, UserId::from(id.0)).await?;
        let (now, cap) = (self.state.clock.now(), self.state.session_cap());
        let sessions = self
            .state
            .db
            .run(async |conn| store::sessions::list_live(conn, user.id, now, cap).await)
            .await?
            .into_iter()
            .map(|s| AdminSessionBody {
                id: s.id.as_uuid(),
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
                user_agent: s.user_agent.into(),
                ip: s.ip.map(|n| n.ip().to_string()).into(),
            })
            .collect();
        Ok(Json(UserDetailResponse {
            success: true,
            user: user.into(),
            sessions,
        }))
    }

    /// Create a user without sending anything (imports, invitations).
    ///
    /// The user signs in later as anyone does. 409 `user_exists` when the
    /// address already has a user. Recorded as `user.created` (`metadata.method`:
    /// `admin`, so webhooks announce it as any new user) and `admin.user.created`.
    #[oai(
        path = "/admin/users",
        method = "post",
        operation_id = "create_user",
        tag = "AdminTags::Users"
    )]
    async fn create_user(
        &self,
        req: &Request,
        _auth: AdminAuth,
        body: Json<CreateUserRequest>,
    ) -> Result<CreateUserResponse, Errors<AdminCreateErrors>> {
        let email = parse_email(&body.0.email)?;
        let ctx = request_context(req, &self.state);
        let user = admin::create_user(&self.state, Actor::Admin, &ctx, &email).await?;
        Ok(CreateUserResponse::Created(Json(UserResponse {
            success: true,
            user: user.into(),
        })))
    }

    /// Disable a user.
    ///
    /// Its sessions end at once: its refresh tokens and, at sesame, its access
    /// tokens stop working (resource servers verifying tokens offline accept
    /// them until they expire). It cannot sign in: the send operations answer
    /// as always and send nothing, the verify operations answer the generic
    /// 401. Idempotent. Recorded as `admin.user.disabled`.
    #[oai(
        path = "/admin/users/:id/disable",
        method = "post",
        operation_id = "disable_user",
        tag = "AdminTags::Users"
    )]
    async fn disable_user(
        &self,
        req: &Request,
        _auth: AdminAuth,
        id: Path<Uuid>,
    ) -> Result<Json<UserResponse>, Errors<AdminUserErrors>> {
        let ctx = request_context(req, &self.state);
        let user = admin::disable_user(&self.state, Actor::Admin, &ctx, UserId::from(id.0)).await?;
        Ok(Json(UserResponse {
            success: true,
            user: user.into(),
        }))
    }

    /// Enable a disabled user: it may sign in again.
    ///
    /// Sessions ended by disabling stay ended. Idempotent. Recorded as
    /// `admin.user.enabled`.
    #[oai(
        path = "/admin/users/:id/enable",
        method = "post",
        operation_id = "enable_user",
        tag = "AdminTags::Users"
    )]
    async fn enable_user(
        &self,
        req: &Request,
        _auth: AdminAuth,
        id: Path<Uuid>,
    ) -> Result<Json<UserResponse>, Errors<AdminUserErrors>> {
        let ctx = request_context(req, &self.state);
        let user = admin::enable_user(&self.state, Actor::Admin, &ctx, UserId::from(id.0)).await?;
        Ok(Json(UserResponse {
            success: true,
            user: user.into(),
        }))
    }

    /// End every session of a user.
    ///
    /// Its refresh tokens and, at sesame, its access tokens stop working at
    /// once; it may sign in again. Answers how many sessions were live.
    /// Recorded as `admin.sessions.revoked`.
    #[oai(
        path = "/admin/users/:id/sessions",
        method = "delete",
        operation_id = "revoke_user_sessions",
        tag = "AdminTags::Users"
    )]
    async fn revoke_user_sessions(
        &self,
        req: &Request,
        _auth: AdminAuth,
        id: Path<Uuid>,
    ) -> Result<Json<RevokeSessionsResponse>, Errors<AdminUserErrors>> {
        let ctx = request_context(req, &self.state);
        let revoked = admin::revoke_sessions(&self.state, Actor::Admin, &ctx, UserId::from(id.0)).await?;
        Ok(Json(RevokeSessionsResponse { success: true, revoked }))
    }

    /// Erase a user.
    ///
    /// In one transaction: the user, its sessions and refresh tokens, the
    /// codes and links of its address, and the rate-limit counters of its
    /// address and of the IPs it used are deleted; its audit rows are kept for
    /// the record but pseudonymised (address and IP removed, user id kept).
    /// Recorded as `admin.user.deleted`, naming the user id only.
    #[oai(
        path = "/admin/users/:id",
        method = "delete",
        operation_id = "delete_user",
        tag = "AdminTags::Users"
    )]
    async fn delete_user(
        &self,
        req: &Request,
        _auth: AdminAuth,
        id: Path<Uuid>,
    ) -> Result<Json<DeleteUserResponse>, Errors<AdminUserErrors>> {
        let ctx = request_context(req, &self.state);
        let erased = admin::delete_user(&self.state, Actor::Admin, &ctx, UserId::from(id.0)).await?;
        Ok(Json(DeleteUserResponse {
            success: true,
            sessions: erased.sessions,
            codes: erased.codes,
            links: erased.links,
            rate_limits: erased.rate_limits,
            audit_rows: erased.audit_rows,
        }))
    }
}

impl poem_openapi::types::Example for CreateUserRequest {
    fn example() -> Self {
        Self {
            email: Email::new("grace@example.com"),
        }
    }
}
