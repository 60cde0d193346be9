//! Typed ids for the things that cross layers (token claims, handlers, store,
//! audit), so a session id can never be passed where a user id is meant.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random (v4) id.
            pub fn generate() -> Self {
                Self(Uuid::new_v4())
            }

            /// The UUID, for SQL parameters and response bodies.
            pub fn as_uuid(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id! {
    /// The id of a user (`users.id`, the `sub` of an access token).
    UserId
}

id! {
    /// The id of a session, a refresh-token family (`sessions.id`, the `sid`
    /// of an access token).
    SessionId
}
