//! The vendor routes: `GET {vendor path}` per api, with the credential rule from its contract.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use super::error::{PublicErrors, json_response};
use crate::service::Service;
use crate::spec::Credential;
use crate::vendor::{ApiId, PublicError};

struct PublicApi {
    api: ApiId,
    service: Arc<Service>,
    credential: Credential,
    errors: PublicErrors,
}

/// The presented credential: `None` when absent; `Some("")` never matches a key.
fn credential<'h>(rule: &Credential, headers: &'h HeaderMap) -> Option<&'h str> {
    match rule {
        Credential::Header(name) => headers
            .get(name.as_str())
            .map(|v| v.to_str().unwrap_or_default())
            .filter(|v| !v.is_empty()),
        Credential::Bearer => {
            let value = headers
                .get(header::AUTHORIZATION)?
                .to_str()
                .unwrap_or_default();
            match value.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(token.trim())
                }
                _ => Some(""),
            }
        }
    }
}

async fn get_session(
    State(st): State<Arc<PublicApi>>,
    id: Result<Path<String>, PathRejection>,
    // The request itself rather than a `HeaderMap` extractor, which would copy every header.
    request: Request,
) -> Response {
    let key = credential(&st.credential, request.headers());
    let Ok(Path(id)) = id else {
        // An id that is not valid UTF-8 after percent-decoding cannot name a session.
        return st.errors.response(match key {
            None => PublicError::MissingCredential,
            Some(_) => PublicError::NotFound,
        });
    };
    match st.service.public_get(st.api, key, &id).await {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(kind) => st.errors.response(kind),
    }
}

fn api_state(api: ApiId, service: Arc<Service>) -> Arc<PublicApi> {
    Arc::new(PublicApi {
        api,
        credential: service.contract(api).credential.clone(),
        errors: PublicErrors::new(api),
        service,
    })
}

/// `GET` (and `HEAD`) of the session route; any other method gets the vendor's 405.
fn session_route(state: Arc<PublicApi>) -> MethodRouter {
    let not_allowed = state.clone();
    get(get_session)
        .fallback(move || {
            let st = not_allowed.clone();
            async move { st.errors.response(PublicError::MethodNotAllowed) }
        })
        .with_state(state)
}

/// The router of one api at its bare vendor paths (`/v1/sessions/{id}`), with its own JSON 404
/// and 405 bodies.
pub fn router(api: ApiId, service: Arc<Service>) -> Router {
    let route = service.contract(api).route();
    let state = api_state(api, service);
    let not_found = state.clone();
    Router::new()
        .route(&route, session_route(state))
        .fallback(move || {
            let st = not_found.clone();
            async move { st.errors.response(PublicError::RouteNotFound) }
        })
}

/// The main public router: every api under its id (`/anam/v1/sessions/{id}`). The full paths are
/// registered on one router (no nesting, so no per-request URI rewriting on the read path).
pub fn combined_router(service: Arc<Service>) -> Router {
    let mut app = Router::new();
    for api in ApiId::ALL {
        let route = format!("/{api}{}", service.contract(api).route());
        app = app.route(&route, session_route(api_state(api, service.clone())));
    }
    let errors: Arc<Vec<(ApiId, PublicErrors)>> = Arc::new(
        ApiId::ALL
            .into_iter()
            .map(|api| (api, PublicErrors::new(api)))
            .collect(),
    );
    // Any other path under an api's prefix gets that vendor's 404 body.
    app.fallback(move |uri: Uri| {
        let errors = errors.clone();
        async move {
            let first = uri.path().trim_start_matches('/').split('/').next().unwrap_or_default();
            match errors.iter().find(|(api, _)| api.as_str() == first) {
                Some((_, e)) => e.response(PublicError::RouteNotFound),
                None => super::error::admin_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "no such route; vendor routes live under /salesnip, /opencx, /funnelfox, /alcamine and /anam",
                ),
            }
        }
    })
}
