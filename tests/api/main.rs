//! Integration tests: the real app on a random port against a fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod cli;
mod errors;
mod faults_instances;
mod faults_outage;
mod faults_secrets;
mod faults_shutdown;
mod faults_support;
mod health;
mod helpers;
mod hostile_bodies;
mod hostile_control_characters;
mod hostile_sql;
mod hostile_support;
mod login_code;
mod login_link;
mod logout;
mod mailbox;
mod openapi;
mod rate_limits;
mod refresh;
mod sessions;
mod tokens;
