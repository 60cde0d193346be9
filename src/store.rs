//! All SQL of sesame, as compile-time checked queries in small named functions.
//!
//! Functions take `&mut PgConnection` (or an executor) so that a flow can
//! compose several of them inside one transaction; times come from the
//! injected clock, never from SQL `now()`, so expiry can be tested.

pub mod audit;
pub mod audit_file;
pub mod audit_stats;
pub mod cleanup;
pub mod db;
pub mod health;
pub mod magic_links;
pub mod migrations;
pub mod otp;
pub mod pool;
pub mod rate_limits;
pub mod sessions;
pub mod users;
pub mod webhooks;

pub use db::Db;
