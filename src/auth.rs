//! Domain logic of authentication: no HTTP, no SQL.

pub mod refresh;
