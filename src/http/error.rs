//! The one place where outcomes become status codes and error bodies.
//!
//! Policy: inside request handling errors are typed (`PublicError`, `AdminError`, `StoreError`);
//! `anyhow` is used only at start-up and in the CLI. A 5xx body never carries internals: the cause
//! is logged here and the client gets the vendor's (or the admin API's) generic body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::service::AdminError;
use crate::vendor::{ApiId, PublicError};

/// What every public route answers with `405`.
pub const ALLOW_GET: &str = "GET, HEAD";

/// A vendor's error responses, rendered once at start-up.
#[derive(Debug, Clone)]
pub struct PublicErrors {
    table: Vec<(PublicError, StatusCode, Bytes)>,
}

impl PublicErrors {
    pub fn new(api: ApiId) -> Self {
        let profile = api.profile();
        let table = PublicError::ALL
            .into_iter()
            .map(|kind| {
                let reply = profile.error(kind);
                let status =
                    StatusCode::from_u16(reply.status).expect("vendor error statuses are valid");
                (kind, status, Bytes::from(reply.body.to_string()))
            })
            .collect();
        PublicErrors { table }
    }

    pub fn response(&self, kind: PublicError) -> super::public::PublicResponse {
        let (_, status, body) = self
            .table
            .iter()
            .find(|(k, _, _)| *k == kind)
            .expect("every kind is rendered");
        super::public::error_response(*status, body.clone(), kind)
    }
}

/// A response with a JSON body given as bytes.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The admin API's error body: `{"error": code, "message": text, "violations"?: [...]}`.
pub fn admin_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        Bytes::from(json!({ "error": code, "message": message }).to_string()),
    )
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::NotFound(m) => admin_error(StatusCode::NOT_FOUND, "not_found", &m),
            AdminError::Conflict(m) => admin_error(StatusCode::CONFLICT, "conflict", &m),
            AdminError::BadRequest(m) => admin_error(StatusCode::BAD_REQUEST, "bad_request", &m),
            AdminError::PreconditionFailed => admin_error(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the session changed since the ETag given in If-Match",
            ),
            AdminError::Invalid(violations) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                Bytes::from(
                    json!({
                        "error": "invalid_document",
                        "message": format!("{} problem(s) with the session document", violations.len()),
                        "violations": violations,
                    })
                    .to_string(),
                ),
            ),
            AdminError::Store(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store failed on the admin API");
                admin_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log",
                )
            }
        }
    }
}
