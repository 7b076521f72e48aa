//! The vendor routes: `GET {vendor path}` per api, with the credential rule from its contract.
//!
//! This is the hot path, so it is served by hyper directly rather than through axum: the five
//! routes are fixed templates with one parameter, matched here by prefix and suffix, and a
//! response whose key and session are both cached is built synchronously, without boxing a
//! future, a body or a request extension. Misses take the async path to the store.

use std::borrow::Cow;
use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::error::{ALLOW_GET, PublicErrors};
use crate::cache::KeyMemo;
use crate::service::Service;
use crate::spec::Credential;
use crate::telemetry::Outcomes;
use crate::vendor::{ApiId, PublicError};

/// A response of the vendor routes: the body is always one buffer.
pub type PublicResponse = Response<Full<Bytes>>;

/// One api's session route, `{prefix}{id}{suffix}`.
struct Route {
    api: ApiId,
    /// The path template as the contract writes it (with the `/{api}` prefix when combined); logged.
    template: String,
    prefix: String,
    suffix: String,
    credential: KeyHeader,
    errors: PublicErrors,
    /// This api's response counters (`GET /metrics`).
    outcomes: Outcomes,
}

/// Where a route's key is presented, resolved once (a header name given as a string would be
/// parsed and lower-cased again on every request).
enum KeyHeader {
    /// A header holding the key itself.
    Named(header::HeaderName),
    /// `Authorization: Bearer <key>`.
    Bearer,
}

impl Route {
    fn new(api: ApiId, service: &Service, mount: &str) -> Route {
        let template = format!("{mount}{}", service.contract(api).route());
        let open = template
            .find('{')
            .expect("a session route has a path parameter");
        let close = template[open..].find('}').expect("the parameter is closed") + open;
        Route {
            api,
            prefix: template[..open].to_owned(),
            suffix: template[close + 1..].to_owned(),
            template,
            credential: match &service.contract(api).credential {
                Credential::Header(name) => KeyHeader::Named(
                    header::HeaderName::from_bytes(name.as_bytes())
                        .expect("the contract loader accepts only valid header names"),
                ),
                Credential::Bearer => KeyHeader::Bearer,
            },
            errors: PublicErrors::new(api),
            outcomes: service.telemetry().vendor(api),
        }
    }

    /// The vendor's response for `kind`, counted.
    fn error(&self, kind: PublicError) -> PublicResponse {
        self.outcomes.count(Err(kind));
        self.errors.response(kind)
    }

    /// The id if `path` is this route (one non-empty segment), percent-decoded. An id that is not
    /// valid UTF-8 once decoded names no session; decoded lossily (U+FFFD, which no vendor's id
    /// format admits), it takes the path of any other id that names none: the credential is
    /// checked first, then the vendor's answer to a malformed or unknown id.
    fn id<'p>(&self, path: &'p str) -> Option<Cow<'p, str>> {
        let id = path
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        if id.is_empty() {
            return None;
        }
        // One vectorized search for both bytes: stored ids have neither (callgrind: two
        // `contains` cost 176 user-space instructions of a cached GET).
        if memchr::memchr2(b'/', b'%', id.as_bytes()).is_none() {
            return Some(Cow::Borrowed(id));
        }
        if id.as_bytes().contains(&b'/') {
            return None;
        }
        Some(percent_encoding::percent_decode_str(id).decode_utf8_lossy())
    }
}

/// Where a path that matches no route goes.
enum Fallback {
    /// The combined listener: the vendor's 404 under `/{api}/…`, the admin-style 404 elsewhere.
    Combined,
    /// A bare per-api listener: that vendor's 404.
    Api,
}

/// The public routes of one listener.
pub struct PublicRoutes {
    service: Arc<Service>,
    routes: Vec<Route>,
    fallback: Fallback,
    /// Whether to write the per-request log line (fixed at start-up by the log filter).
    log: bool,
}

impl PublicRoutes {
    /// Every api under its id (`/anam/v1/sessions/{id}`).
    pub fn combined(service: Arc<Service>) -> Arc<PublicRoutes> {
        let routes = ApiId::ALL
            .into_iter()
            .map(|api| Route::new(api, &service, &format!("/{api}")))
            .collect();
        Self::with(service, routes, Fallback::Combined)
    }

    /// One api at its bare vendor paths (`/v1/sessions/{id}`).
    pub fn api(api: ApiId, service: Arc<Service>) -> Arc<PublicRoutes> {
        let routes = vec![Route::new(api, &service, "")];
        Self::with(service, routes, Fallback::Api)
    }

    fn with(service: Arc<Service>, routes: Vec<Route>, fallback: Fallback) -> Arc<PublicRoutes> {
        Arc::new(PublicRoutes {
            service,
            routes,
            fallback,
            log: tracing::enabled!(target: "sessiond::request", tracing::Level::INFO),
        })
    }

    /// Answers one request of a connection whose key memo is `memo`: synchronously when
    /// everything it needs is cached.
    pub fn call(self: &Arc<Self>, request: Request<Incoming>, memo: &mut KeyMemo) -> Answer {
        let start = self.log.then(Instant::now);
        let path = request.uri().path();
        let Some((index, id)) = self
            .candidate(path)
            .and_then(|i| self.routes[i].id(path).map(|id| (i, id)))
        else {
            return self.done(start, &request, None, self.not_found(path));
        };
        let route = &self.routes[index];
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let response = route.error(PublicError::MethodNotAllowed);
            return self.done(start, &request, Some(route), response);
        }
        let key = credential(&route.credential, request.headers());
        if let Some(outcome) = self.service.cached_get(route.api, key, &id, memo) {
            let response = reply(route, outcome);
            return self.done(start, &request, Some(route), response);
        }
        // Something is not cached: read the store.
        let (key, id) = (key.map(str::to_owned), id.into_owned());
        let method = request.method().clone();
        let routes = self.clone();
        Answer::Pending(Box::pin(async move {
            let route = &routes.routes[index];
            let outcome = routes
                .service
                .public_get(route.api, key.as_deref(), &id)
                .await;
            let response = reply(route, outcome);
            if let Some(start) = start {
                log_line(start, &method, &route.template, response.status());
            }
            Ok(response)
        }))
    }

    /// The only route `path` can match. On the combined listener that is the route of the api
    /// `/{api}/…` names, told apart by where the second `/` is and the first letter, so one
    /// prefix is compared instead of up to five (callgrind: a search for the `/` cost more).
    fn candidate(&self, path: &str) -> Option<usize> {
        match self.fallback {
            Fallback::Api => Some(0),
            Fallback::Combined => {
                let path = path.as_bytes();
                self.routes.iter().position(|r| {
                    let name = r.api.as_str().as_bytes();
                    path.get(name.len() + 1) == Some(&b'/')
                        && path.get(1) == Some(&name[0])
                        && path[..=name.len()].ends_with(name)
                })
            }
        }
    }

    fn not_found(&self, path: &str) -> PublicResponse {
        match self.fallback {
            Fallback::Api => self.routes[0].error(PublicError::RouteNotFound),
            Fallback::Combined => {
                let first = path
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default();
                match self.routes.iter().find(|r| r.api.as_str() == first) {
                    Some(r) => r.error(PublicError::RouteNotFound),
                    None => {
                        self.service.telemetry().count_unrouted();
                        json(
                            StatusCode::NOT_FOUND,
                            Bytes::from_static(NO_SUCH_ROUTE.as_bytes()),
                        )
                    }
                }
            }
        }
    }

    fn done(
        &self,
        start: Option<Instant>,
        request: &Request<Incoming>,
        route: Option<&Route>,
        response: PublicResponse,
    ) -> Answer {
        if let Some(start) = start {
            let template = route.map_or("<unmatched>", |r| r.template.as_str());
            log_line(start, request.method(), template, response.status());
        }
        Answer::Ready(Some(response))
    }
}

/// The admin-style 404 body for paths outside every api's prefix.
const NO_SUCH_ROUTE: &str = r#"{"error":"not_found","message":"no such route; vendor routes live under /salesnip, /opencx, /funnelfox, /alcamine and /anam"}"#;

fn reply(route: &Route, outcome: Result<Bytes, PublicError>) -> PublicResponse {
    match outcome {
        Ok(body) => {
            route.outcomes.count(Ok(()));
            json(StatusCode::OK, body)
        }
        Err(kind) => route.error(kind),
    }
}

/// One log line per request: method, route template (never the raw path: it may carry ids),
/// status, latency. Headers, and with them any key, are never logged.
fn log_line(start: Instant, method: &Method, route: &str, status: StatusCode) {
    tracing::info!(
        target: "sessiond::request",
        %method,
        route,
        status = status.as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
    );
}

/// A JSON response.
pub fn json(status: StatusCode, body: Bytes) -> PublicResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A vendor error response (with `Allow` on 405).
pub fn error_response(status: StatusCode, body: Bytes, kind: PublicError) -> PublicResponse {
    let mut response = json(status, body);
    if kind == PublicError::MethodNotAllowed {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW_GET));
    }
    response
}

/// The answer to one request: ready, or waiting on the store.
pub enum Answer {
    Ready(Option<PublicResponse>),
    Pending(Pin<Box<dyn Future<Output = Result<PublicResponse, Infallible>> + Send>>),
}

impl Future for Answer {
    type Output = Result<PublicResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("an answer is polled once it is ready"))),
            Answer::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// The presented credential: `None` when absent; `Some("")` never matches a key.
fn credential<'h>(rule: &KeyHeader, headers: &'h HeaderMap) -> Option<&'h str> {
    match rule {
        KeyHeader::Named(name) => match headers.get(name)?.to_str() {
            // Empty: not given (as a vendor's `if (!req.headers[name])` would have it).
            Ok("") => None,
            Ok(key) => Some(key),
            // Not visible ASCII: given, and no key's text.
            Err(_) => Some(""),
        },
        KeyHeader::Bearer => {
            let value = headers
                .get(header::AUTHORIZATION)?
                .to_str()
                .unwrap_or_default();
            // (A byte search: `str::split_once(char)` costs a generic searcher per request.)
            match value.as_bytes().iter().position(|&b| b == b' ') {
                Some(space) if value[..space].eq_ignore_ascii_case("bearer") => {
                    // `to_str` admitted only visible ASCII, spaces and tabs: no Unicode to trim.
                    Some(value[space + 1..].trim_ascii())
                }
                _ => Some(""),
            }
        }
    }
}

/// The hyper service of one connection, with the memo of the last key it presented.
pub struct Connection {
    routes: Arc<PublicRoutes>,
    memo: RefCell<KeyMemo>,
}

impl Connection {
    pub fn new(routes: Arc<PublicRoutes>) -> Connection {
        Connection {
            routes,
            memo: RefCell::default(),
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = PublicResponse;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        // hyper calls the service of an HTTP/1 connection for one request at a time, and `call`
        // returns before the answer is awaited: the borrow never overlaps another.
        self.routes.call(request, &mut self.memo.borrow_mut())
    }
}
