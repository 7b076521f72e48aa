//! sessiond: serves the Get-Session APIs of five AI-product vendors exactly as their OpenAPI
//! contracts say, backed by a real store. `run` is what the binary and the tests start.

pub mod auth;
pub mod bulk;
pub mod cache;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod http;
pub mod json;
pub mod service;
pub mod spec;
pub mod store;
pub mod telemetry;
pub mod vendor;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;
pub use vendor::ApiId;

use crate::auth::Secret;
use crate::http::public::PublicRoutes;
use crate::service::Service;
use crate::spec::Contracts;

/// The sockets `run` serves on. Tests bind `127.0.0.1:0` and read the ports before calling `run`.
pub struct Listeners {
    /// All apis under `/{api}{vendor path}`.
    pub public: TcpListener,
    /// The admin API, `/healthz`, `/readyz`.
    pub admin: TcpListener,
    /// One api at its bare vendor paths, each on its own socket.
    pub apis: Vec<(ApiId, TcpListener)>,
}

/// A started application: the service over its store, ready to be served.
pub struct App {
    pub service: Arc<Service>,
}

impl App {
    /// Loads the contracts and opens the store.
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        config.validate()?;
        let contracts = Contracts::load(config.specs_dir.as_deref())?;
        let store = store::open(
            config.store.as_ref(),
            &config.data_dir,
            config.store_options,
        )
        .await?;
        let service = Arc::new(Service::new(contracts, store, config.service.clone()));
        service.follow_changes();
        Ok(App { service })
    }

    /// The vendor routes of the combined listener: every api under `/{api}`.
    pub fn public_routes(&self) -> Arc<PublicRoutes> {
        PublicRoutes::combined(self.service.clone())
    }

    /// One api's vendor routes at its bare paths.
    pub fn api_routes(&self, api: ApiId) -> Arc<PublicRoutes> {
        PublicRoutes::api(api, self.service.clone())
    }

    pub fn admin_router(&self, token: &Secret) -> axum::Router {
        with_request_log(http::admin::router(self.service.clone(), token))
    }
}

/// Adds the per-request log line, unless the log filter (fixed at start-up) drops it anyway:
/// then the layer would only cost time on the read path.
fn with_request_log(router: axum::Router) -> axum::Router {
    if tracing::enabled!(target: "sessiond::request", tracing::Level::INFO) {
        router.layer(axum::middleware::from_fn(http::log_request))
    } else {
        router
    }
}

/// Serves until `shutdown` completes, then drains in-flight requests.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Held until this returns: one server per SQLite store.
    let _serving = store::ServeLock::take(config.store.as_ref(), &config.data_dir)?;
    let app = App::start(&config).await?;
    let public_addr = listeners.public.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let (admin_token, generated) = auth::admin_token(config.admin_token.clone(), &config.data_dir)?;
    if generated {
        eprintln!(
            "sessiond: generated an admin token (stored in {}, mode 0600; shown only this once):\n  {}",
            config.data_dir.join("admin-token").display(),
            admin_token.expose()
        );
    }
    if config.demo {
        let demos = demo::seed(&app.service).await.context("seeding the demo")?;
        println!("sessiond demo: one tenant, one key and a few sessions per api. Try:");
        for d in &demos {
            println!(
                "  {}",
                demo::curl_line(&app.service, d, &format!("http://{public_addr}"))
            );
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut tasks = tokio::task::JoinSet::new();
    let header_timeout = config.header_timeout;
    tasks.spawn(serve_public(
        listeners.public,
        app.public_routes(),
        header_timeout,
        stopped(),
    ));
    tasks.spawn(serve_admin(
        listeners.admin,
        app.admin_router(&admin_token),
        header_timeout,
        stopped(),
    ));
    for (api, listener) in listeners.apis {
        tracing::info!(%api, addr = %listener.local_addr()?, "serving api at its bare vendor paths");
        tasks.spawn(serve_public(
            listener,
            app.api_routes(api),
            header_timeout,
            stopped(),
        ));
    }
    tracing::info!(%public_addr, %admin_addr, "sessiond listening");
    if config.prewarm {
        app.service.store().prewarm();
    }
    while let Some(done) = tasks.join_next().await {
        done.context("server task panicked")??;
    }
    Ok(())
}

/// Serves vendor routes with hyper's HTTP/1.1 connection driver until `stop`, then waits for the
/// open connections to finish their in-flight requests (see [`serve_http1`]).
async fn serve_public(
    listener: TcpListener,
    routes: Arc<PublicRoutes>,
    header_timeout: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = move || http::public::Connection::new(routes.clone());
    serve_http1(listener, service, header_timeout, stop).await
}

/// Serves the admin API as [`serve_public`] serves vendor routes (axum's own `serve` would hold
/// a connection that never sends a request forever).
async fn serve_admin(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let service = move || hyper_util::service::TowerToHyperService::new(router.clone());
    serve_http1(listener, service, header_timeout, stop).await
}

/// Serves `listener` with hyper's HTTP/1.1 connection driver, each connection answered by a
/// `service()` of its own, until `stop`; then waits for the open connections to finish their
/// in-flight requests.
///
/// With `idle_timeout`, a connection on which no request begins for that long is closed, within
/// twice that long: an idle keep-alive connection, or a client trickling its request head.
/// hyper's own `header_read_timeout` does this per request, and arming its timer for every
/// request cost 1 320 user-space instructions per cached GET (13 % of them; callgrind,
/// `bench/callgrind_get.sh`); this costs a counter increment per request, and one sweeper per
/// listener looks at every connection once per timeout ([`http::drain::Drain::close_idle`]).
async fn serve_http1<S, B>(
    listener: TcpListener,
    service: impl Fn() -> S,
    idle_timeout: Option<Duration>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let drain = http::drain::Drain::new();
    let sweeper = idle_timeout.map(|timeout| tokio::spawn(drain.clone().close_idle(timeout)));
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(http::drain::Activity::default());
        let service = Counted {
            inner: service(),
            activity: activity.clone(),
        };
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        // A client that goes away mid-request is not the server's error.
        tokio::spawn(drain.watch(connection, activity));
    }
    drop(listener);
    drain.shutdown().await;
    if let Some(sweeper) = sweeper {
        sweeper.abort();
    }
    Ok(())
}

/// A connection's service, counting the requests that begin on it.
struct Counted<S> {
    inner: S,
    activity: Arc<http::drain::Activity>,
}

impl<S: hyper::service::Service<R>, R> hyper::service::Service<R> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: R) -> S::Future {
        self.activity.request_began();
        self.inner.call(request)
    }
}
