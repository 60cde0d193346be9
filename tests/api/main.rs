//! Integration tests: the real app on a random port against a fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod cli;
mod errors;
mod health;
mod helpers;
mod login_code;
mod login_link;
mod logout;
mod mailbox;
mod openapi;
mod refresh;
mod sessions;
mod tokens;
