//! The vendor routes: `GET {vendor path}` per api, with the credential rule from its contract.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::get;

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

/// The router of one api at its bare vendor paths (`/v1/sessions/{id}`), with its own JSON 404
/// and 405 bodies.
pub fn router(api: ApiId, service: Arc<Service>) -> Router {
    let contract = service.contract(api);
    let route = contract.route();
    let state = Arc::new(PublicApi {
        api,
        credential: contract.credential.clone(),
        errors: PublicErrors::new(api),
        service,
    });
    let not_allowed = state.clone();
    let not_found = state.clone();
    Router::new()
        .route(
            &route,
            get(get_session).fallback(move || {
                let st = not_allowed.clone();
                async move { st.errors.response(PublicError::MethodNotAllowed) }
            }),
        )
        .fallback(move || {
            let st = not_found.clone();
            async move { st.errors.response(PublicError::RouteNotFound) }
        })
        .with_state(state)
}

/// The main public router: every api under its id (`/anam/v1/sessions/{id}`).
pub fn combined_router(service: Arc<Service>) -> Router {
    let mut app = Router::new();
    for api in ApiId::ALL {
        app = app.nest(&format!("/{api}"), router(api, service.clone()));
    }
    let errors: Arc<Vec<(ApiId, PublicErrors)>> = Arc::new(
        ApiId::ALL
            .into_iter()
            .map(|api| (api, PublicErrors::new(api)))
            .collect(),
    );
    // Paths the nested routers do not see (`/anam/`, `/anam` + nothing) still belong to an api.
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
