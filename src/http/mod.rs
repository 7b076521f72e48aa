//! HTTP: the public (vendor) routers, the admin router, and the request log. Handlers are thin:
//! they parse, call the service, and hand the outcome to `error.rs` / the body writers.

pub mod admin;
pub mod drain;
pub mod error;
pub mod openapi;
pub mod public;

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// One log line per request: method, route template (never the raw path: it may carry ids), status,
/// latency. Headers, and with them any key, are never logged.
pub async fn log_request(request: Request, next: Next) -> Response {
    if !tracing::enabled!(target: "sessiond::request", tracing::Level::INFO) {
        // Logging off (e.g. SESSIOND_LOG=warn): no clock reads, no copies.
        return next.run(request).await;
    }
    let start = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    tracing::info!(
        target: "sessiond::request",
        %method,
        route = route.as_ref().map_or("<unmatched>", MatchedPath::as_str),
        status = response.status().as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
    );
    response
}
