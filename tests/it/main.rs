//! Integration tests of sessiond: the in-process server (`sessiond::run` on ephemeral ports) and
//! the real binary, driven over HTTP. Every response of a vendor route is checked against the
//! vendor's contract by the harness in `common`. Store-facing tests run once per store backend
//! (SQLite always; PostgreSQL when `SESSIOND_TEST_POSTGRES_URL` is set, see `common::postgres`).

#[macro_use]
mod common;

mod admin;
mod api_listen;
mod bulk;
mod check;
mod cli;
mod connections;
mod contract;
mod errors;
mod ids;
mod isolation;
mod metrics;
mod multi_node;
mod outage;
mod persistence;
mod profiles;
mod routes;
mod store;
mod validation;
