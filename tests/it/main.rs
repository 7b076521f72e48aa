//! Integration tests of sessiond: the in-process server (`sessiond::run` on ephemeral ports) and
//! the real binary, driven over HTTP. Every response of a vendor route is checked against the
//! vendor's contract by the harness in `common`.

#[macro_use]
mod common;

mod admin;
mod api_listen;
mod cli;
mod contract;
mod errors;
mod isolation;
mod persistence;
mod profiles;
mod validation;
