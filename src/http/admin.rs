//! The admin API: tenants, keys and sessions, behind `Authorization: Bearer <admin token>`;
//! `/healthz`, `/readyz` and `/metrics` without a token. Its OpenAPI document is in `openapi.rs`.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{admin_error, json_response};
use crate::auth::{self, Secret};
use crate::service::{AdminError, Origin, Service, Written};
use crate::vendor::ApiId;

#[derive(Clone)]
struct AdminState {
    service: Arc<Service>,
    token_hash: [u8; 32],
}

/// The largest request body the admin API reads (axum's default, stated here so that the README
/// and the OpenAPI document can name it): a larger one is refused with 413.
pub const BODY_LIMIT: usize = 2 << 20;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

/// The admin router. `token` is compared (as a hash, in constant time) with every request's bearer.
pub fn router(service: Arc<Service>, token: &Secret) -> Router {
    let state = AdminState {
        service,
        token_hash: auth::hash_key(token.expose()),
    };
    let api = Router::new()
        .route(
            "/admin/v1/{api}/tenants",
            post(create_tenant).get(list_tenants),
        )
        .route(
            "/admin/v1/{api}/tenants/{tenant}/keys",
            post(create_key).get(list_keys),
        )
        .route(
            "/admin/v1/{api}/tenants/{tenant}/keys/{key_id}",
            delete(revoke_key),
        )
        .route(
            "/admin/v1/{api}/tenants/{tenant}/sessions",
            post(create_session).get(list_sessions),
        )
        .route(
            "/admin/v1/{api}/sessions/{id}",
            get(get_session)
                .patch(patch_session)
                .put(replace_session)
                .delete(delete_session),
        )
        .route("/admin/v1/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/healthz",
            get(|| async { json_ok(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .method_not_allowed_fallback(|| async {
            admin_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .fallback(|| async { admin_error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(errors_as_json))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_response,
        ))
        .with_state(state)
}

/// Every error in the `Error` shape: the refusals axum's extractors make before a handler runs
/// (a body over [`BODY_LIMIT`], a path segment that is not UTF-8) come as plain text; their text
/// becomes the message.
async fn errors_as_json(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large".to_owned(),
        other => other
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
            .replace([' ', '-'], "_"),
    };
    admin_error(status, &code, String::from_utf8_lossy(&text).trim())
}

/// Counts each response by method, route template (never the raw path) and status.
async fn count_response(State(st): State<AdminState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "<unmatched>".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    st.service
        .telemetry()
        .count_admin(method.as_str(), &route, response.status().as_u16());
    response
}

async fn metrics(State(st): State<AdminState>) -> Response {
    let mut response = st.service.render_metrics().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::telemetry::CONTENT_TYPE),
    );
    response
}

async fn require_token(State(st): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if auth::ct_eq(&auth::hash_key(token), &st.token_hash) => {
            next.run(request).await
        }
        _ => {
            let mut r = admin_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong admin token (Authorization: Bearer <token>)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn json_ok(v: Value) -> Response {
    json_response(StatusCode::OK, Bytes::from(v.to_string()))
}

async fn readyz(State(st): State<AdminState>) -> Response {
    if st.service.ready().await {
        json_ok(json!({ "status": "ready" }))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from(
                json!({ "status": "unavailable", "message": "the store does not answer" })
                    .to_string(),
            ),
        )
    }
}

async fn openapi() -> Response {
    json_ok(super::openapi::document())
}

fn parse_api(s: &str) -> Result<ApiId, AdminError> {
    s.parse()
        .map_err(|e: crate::vendor::UnknownApi| AdminError::NotFound(e.to_string()))
}

/// The body as JSON; an empty body counts as `{}` where `allow_empty`.
fn parse_json(body: &Bytes, allow_empty: bool) -> Result<Value, AdminError> {
    if allow_empty && body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| AdminError::BadRequest(format!("malformed JSON body: {e}")))
}

fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

fn session_response(status: StatusCode, w: &Written) -> Response {
    let mut r = json_response(status, w.row.body.clone());
    if let Ok(tag) = HeaderValue::from_str(&w.etag) {
        r.headers_mut().insert(header::ETAG, tag);
    }
    r
}

#[derive(Deserialize)]
struct TenantBody {
    id: Option<String>,
}

async fn create_tenant(
    Path(api): Path<String>,
    State(st): State<AdminState>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let body = parse_json(&body, true)?;
    // `{"id": null}` is not "no id": the contract's `id` is a string, when given.
    if body.get("id").is_some_and(Value::is_null) {
        return Err(AdminError::BadRequest(
            "invalid tenant: invalid type: null, expected a string".into(),
        ));
    }
    let body: TenantBody = serde_json::from_value(body)
        .map_err(|e| AdminError::BadRequest(format!("invalid tenant: {e}")))?;
    let id = st.service.create_tenant(api, body.id).await?;
    Ok(json_response(
        StatusCode::CREATED,
        Bytes::from(json!({ "id": id }).to_string()),
    ))
}

async fn list_tenants(
    Path(api): Path<String>,
    State(st): State<AdminState>,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let tenants = st.service.store().list_tenants(api).await?;
    let items: Vec<Value> = tenants
        .into_iter()
        .map(|t| json!({ "id": t.id, "created_at": t.created_at }))
        .collect();
    Ok(json_ok(json!({ "items": items })))
}

async fn create_key(
    Path((api, tenant)): Path<(String, String)>,
    State(st): State<AdminState>,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let (id, secret) = st.service.create_key(api, &tenant).await?;
    let mut r = json_response(
        StatusCode::CREATED,
        Bytes::from(json!({ "id": id, "key": secret.expose() }).to_string()),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn list_keys(
    Path((api, tenant)): Path<(String, String)>,
    State(st): State<AdminState>,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let keys = st.service.list_keys(api, &tenant).await?;
    let items: Vec<Value> = keys
        .into_iter()
        .map(|k| json!({ "id": k.id, "created_at": k.created_at, "revoked": k.revoked }))
        .collect();
    Ok(json_ok(json!({ "items": items })))
}

async fn revoke_key(
    Path((api, tenant, key_id)): Path<(String, String, String)>,
    State(st): State<AdminState>,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    st.service.revoke_key(api, &tenant, &key_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct CreateQuery {
    /// Generate every field the document leaves out (realistic, valid values).
    #[serde(default)]
    fill: bool,
}

async fn create_session(
    Path((api, tenant)): Path<(String, String)>,
    State(st): State<AdminState>,
    query: Result<Query<CreateQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let Query(q) = query.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let doc = parse_json(&body, true)?;
    let origin = if q.fill { Origin::Fill } else { Origin::Client };
    let w = st.service.create_session(api, &tenant, doc, origin).await?;
    let mut r = session_response(StatusCode::CREATED, &w);
    let contract = st.service.contract(api);
    let location = format!(
        "/{api}{}{}",
        contract.base_path,
        contract
            .session_path
            .replace(&format!("{{{}}}", contract.id_param), &w.row.id)
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_sessions(
    Path((api, tenant)): Path<(String, String)>,
    State(st): State<AdminState>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let Query(q) = query.map_err(|e| AdminError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let page = st
        .service
        .list_sessions(api, &tenant, limit, q.cursor.as_deref())
        .await?;
    // The stored bodies are spliced in as they are: no re-serialization.
    let mut out = Vec::with_capacity(page.bodies.iter().map(Bytes::len).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"items\":[");
    for (i, body) in page.bodies.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body);
    }
    out.extend_from_slice(b"],\"next_cursor\":");
    out.extend_from_slice(json!(page.next_cursor).to_string().as_bytes());
    out.push(b'}');
    Ok(json_response(StatusCode::OK, Bytes::from(out)))
}

async fn get_session(
    Path((api, id)): Path<(String, String)>,
    State(st): State<AdminState>,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let w = st.service.get_session(api, &id).await?;
    Ok(session_response(StatusCode::OK, &w))
}

async fn patch_session(
    Path((api, id)): Path<(String, String)>,
    State(st): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let patch = parse_json(&body, false)?;
    let w = st
        .service
        .patch_session(api, &id, patch, if_match(&headers))
        .await?;
    Ok(session_response(StatusCode::OK, &w))
}

async fn replace_session(
    Path((api, id)): Path<(String, String)>,
    State(st): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    let doc = parse_json(&body, false)?;
    let w = st
        .service
        .replace_session(api, &id, doc, if_match(&headers))
        .await?;
    Ok(session_response(StatusCode::OK, &w))
}

async fn delete_session(
    Path((api, id)): Path<(String, String)>,
    State(st): State<AdminState>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let api = parse_api(&api)?;
    st.service
        .delete_session(api, &id, if_match(&headers))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
