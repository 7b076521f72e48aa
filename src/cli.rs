//! The command line: `serve`, and offline tenant/key management on a data dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::auth::Secret;
use crate::service::ServiceOptions;
use crate::store::{Dsn, StoreOptions};
use crate::vendor::ApiId;
use crate::{App, Config, Listeners};

#[derive(Parser, Debug)]
#[command(
    name = "sessiond",
    version,
    about = "Serves the Get-Session APIs of SaleSnip, OpenCX, FunnelFox, Alcamine and Anam exactly as their OpenAPI contracts say"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: vendor routes on --listen, the admin API on --admin-listen.
    Serve(ServeArgs),
    /// Manage tenants in the data dir (works offline).
    #[command(subcommand)]
    Tenants(TenantsCmd),
    /// Manage API keys in the data dir (works offline).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Generate realistic, valid sessions for a tenant (created if missing); deterministic per --seed.
    Seed(SeedArgs),
    /// Write tenants, keys (as hashes) and sessions as NDJSON (stored documents, secrets included).
    Export(ExportArgs),
    /// Read NDJSON written by `export` (or by hand) into the store, validated, in atomic batches.
    Import(ImportArgs),
    /// Print the admin API's OpenAPI 3.1 document.
    Openapi,
    /// Probe a server (sessiond, the vendor itself, another mock) against an api's contract: a
    /// stored session, requests without a valid key, an unknown id, a malformed one. Exits 1 if
    /// an answer breaks the contract.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// The api whose contract the server is checked against.
    #[arg(long, required_unless_present = "demo")]
    api: Option<ApiId>,
    /// The server's base URL, as a client of the vendor is given it (the contract's route is
    /// appended), e.g. http://127.0.0.1:8080/anam; for FunnelFox
    /// http://127.0.0.1:8080/funnelfox/public/v1. Default: the contract's server URL (the vendor
    /// itself); with --demo, http://127.0.0.1:8080, the server's root.
    #[arg(long)]
    url: Option<String>,
    /// A key of a tenant of that server. Without one, only requests without a valid key are
    /// probed. Never printed.
    #[arg(long, env = "SESSIOND_CHECK_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The id of a session the key's tenant holds (repeatable): its GET must be a valid 200.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// Check all five apis of a `sessiond serve --demo` at --url, with the demo keys and sessions.
    #[arg(long, conflicts_with_all = ["api", "key", "ids"])]
    demo: bool,
    /// PEM certificates to trust for https besides the public (Mozilla) roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
    /// Load the vendor contracts from this directory ({api}.yaml) instead of the embedded copies.
    #[arg(long, env = "SESSIOND_SPECS_DIR")]
    specs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SeedArgs {
    #[arg(long)]
    api: ApiId,
    /// Tenant id (vendor format); created if it does not exist.
    #[arg(long)]
    tenant: String,
    /// Number of sessions.
    #[arg(long)]
    count: u64,
    /// RNG seed: the same seed gives the same sessions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Only these apis (repeatable); all if omitted.
    #[arg(long)]
    api: Vec<ApiId>,
    /// Output file; `-` for stdout.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Debug)]
struct ImportArgs {
    /// Input file; `-` for stdin.
    #[arg(long, short, default_value = "-")]
    input: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args, Debug, Clone)]
struct StoreArgs {
    /// Directory of the embedded store and the generated admin token.
    #[arg(long, env = "SESSIOND_DATA_DIR", default_value = "./sessiond-data")]
    data_dir: PathBuf,
    /// Store DSN instead of the data dir's SQLite file: sqlite://PATH, or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?options=-csearch_path%3DSCHEMA] (no TLS yet).
    #[arg(long, env = "SESSIOND_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Bound on each store call in milliseconds (PostgreSQL: pool wait, connect, statement); when
    /// the database is gone, requests fail with the vendor's 500 after at most about this long
    /// [default: 2000; for `seed` and `import`, whose calls store 5000 sessions each, 60000].
    #[arg(long, env = "SESSIOND_STORE_TIMEOUT_MS")]
    store_timeout_ms: Option<u64>,
    /// Load the vendor contracts from this directory ({api}.yaml) instead of the embedded copies.
    #[arg(long, env = "SESSIOND_SPECS_DIR")]
    specs_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address of the vendor routes (/{api}/…).
    #[arg(long, env = "SESSIOND_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, env = "SESSIOND_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    admin_listen: SocketAddr,
    /// Also serve one api at its bare vendor paths: API=ADDR (repeatable), e.g. anam=127.0.0.1:8085.
    #[arg(long = "api-listen", value_name = "API=ADDR", value_parser = parse_api_listen)]
    api_listen: Vec<(ApiId, SocketAddr)>,
    /// Create a demo tenant, a fixed key and a few sessions per api (idempotent); print curl lines.
    #[arg(long)]
    demo: bool,
    /// Admin API bearer token; if unset, read or generated in the data dir.
    #[arg(long, env = "SESSIOND_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Base of SaleSnip's hosted session url.
    #[arg(
        long,
        env = "SESSIOND_SALESNIP_URL_BASE",
        default_value = "https://chat.salesnip.com/#"
    )]
    salesnip_url_base: String,
    /// Size of the session read cache in MiB (0 disables it).
    #[arg(long, env = "SESSIOND_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
    /// Do not read the SQLite store's session id index into memory at start. By default it is
    /// read in the background, so that a GET missing the cache after a restart waits on the disk
    /// for its row alone. The variable: 1, true, yes or on turn the prewarm off; 0, false, no, off
    /// or unset leave it on.
    #[arg(
        long,
        env = "SESSIOND_NO_PREWARM",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    no_prewarm: bool,
    /// Seconds a connection (vendor routes and admin API) may go without beginning a request: an
    /// idle keep-alive connection, or a client that sends its request head too slowly, is closed
    /// between this long and twice this long. 0 turns it off.
    #[arg(long, env = "SESSIOND_HEADER_TIMEOUT_SECS", default_value_t = 30)]
    header_timeout_secs: u64,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Subcommand, Debug)]
enum TenantsCmd {
    /// Create a tenant; prints its id.
    Create {
        #[arg(long)]
        api: ApiId,
        /// The id (vendor format); generated if omitted.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an api's tenants.
    List {
        #[arg(long)]
        api: ApiId,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create a key; prints its id and the secret (shown only this once).
    Create {
        #[arg(long)]
        api: ApiId,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key.
    Revoke {
        #[arg(long)]
        api: ApiId,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List a tenant's keys (ids, never secrets).
    List {
        #[arg(long)]
        api: ApiId,
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_api_listen(s: &str) -> Result<(ApiId, SocketAddr), String> {
    let (api, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected API=ADDR, got `{s}`"))?;
    let api = api.parse::<ApiId>().map_err(|e| e.to_string())?;
    let addr = addr
        .parse::<SocketAddr>()
        .map_err(|e| format!("`{addr}`: {e}"))?;
    Ok((api, addr))
}

/// The store timeout unless one is given: a server's calls each read or write a session.
const STORE_TIMEOUT_MS: u64 = 2000;
/// The store timeout of the bulk tools unless one is given: a call of theirs stores a batch of
/// 5000 sessions, which took PostgreSQL more than 2 s on this 2-core machine while the tests
/// built and ran beside it.
const BULK_STORE_TIMEOUT_MS: u64 = 60_000;

impl StoreArgs {
    fn config(&self) -> Config {
        self.config_with(STORE_TIMEOUT_MS)
    }

    /// [`StoreArgs::config`], with `timeout_ms` unless a timeout is given.
    fn config_with(&self, timeout_ms: u64) -> Config {
        let mut c = Config::new(&self.data_dir);
        c.store = self.store.clone().map(Dsn::new);
        c.store_options = StoreOptions {
            timeout: std::time::Duration::from_millis(self.store_timeout_ms.unwrap_or(timeout_ms)),
            ..StoreOptions::default()
        };
        c.specs_dir = self.specs_dir.clone();
        c
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sessiond: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond: {e:#}");
            match e.downcast_ref::<Interrupted>() {
                // As a shell reports a process ended by the signal: 130 for Ctrl-C, 143 for SIGTERM.
                Some(i) => ExitCode::from(128 + i.signal),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A `seed`, `import` or `export` stopped by Ctrl-C or SIGTERM; the message says what stays
/// stored (or written).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Interrupted {
    signal: u8,
    message: String,
}

/// Watches for Ctrl-C and SIGTERM while a `seed`, `import` or `export` runs: the first asks it to
/// stop between batches (see [`crate::bulk::Stop`]), so that it leaves the store as it says; a
/// second ends the process at once (what was not committed is rolled back: by PostgreSQL at once,
/// by SQLite when the store is next opened). The handlers are installed before this returns.
struct Interrupts {
    stop: crate::bulk::Stop,
    signal: std::sync::Arc<std::sync::atomic::AtomicU8>,
    shown: std::sync::Arc<std::sync::Mutex<Shown>>,
}

/// What the signal watcher must know of a run: the progress bar its "stopping" line is printed
/// above (a line written under a bar is drawn over), and the file a second signal removes
/// before the process exits (an export's `FILE.partial`).
#[derive(Default)]
struct Shown {
    bar: Option<indicatif::ProgressBar>,
    partial: Option<PathBuf>,
}

impl Interrupts {
    fn watch() -> anyhow::Result<Interrupts> {
        use tokio::signal::unix::{SignalKind, signal as on};
        let mut int = on(SignalKind::interrupt()).context("watching for Ctrl-C")?;
        let mut term = on(SignalKind::terminate()).context("watching for SIGTERM")?;
        let (ask, asked) = tokio::sync::watch::channel(false);
        let signal = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
        let shown = std::sync::Arc::new(std::sync::Mutex::new(Shown::default()));
        let (seen, watched) = (signal.clone(), shown.clone());
        tokio::spawn(async move {
            let mut next = async || {
                tokio::select! {
                    _ = int.recv() => 2,
                    _ = term.recv() => 15,
                }
            };
            seen.store(next().await, std::sync::atomic::Ordering::Relaxed);
            let _ = ask.send(true);
            // Once the stop is asked for: whoever reads this line knows the run will stop.
            let stopping = || eprintln!("sessiond: stopping (a second signal stops at once)");
            let bar = lock(&watched).bar.clone();
            match bar {
                Some(bar) => bar.suspend(stopping),
                None => stopping(),
            }
            let again: u8 = next().await;
            if let Some(partial) = lock(&watched).partial.take() {
                let _ = std::fs::remove_file(partial);
            }
            std::process::exit(128 + i32::from(again));
        });
        Ok(Interrupts {
            stop: crate::bulk::Stop::on(asked),
            signal,
            shown,
        })
    }

    /// Prints the "stopping" line above `bar` while it is drawn.
    fn show_above(&self, bar: &indicatif::ProgressBar) {
        lock(&self.shown).bar = Some(bar.clone());
    }

    /// Has a second signal remove `path` (a file only this run writes) before the process exits;
    /// `None` once it is complete or gone.
    fn remove_on_exit(&self, path: Option<&std::path::Path>) {
        lock(&self.shown).partial = path.map(ToOwned::to_owned);
    }

    /// The error of a run that a signal stopped, with the message `describe` gives.
    fn error(&self, describe: impl FnOnce() -> String) -> anyhow::Error {
        Interrupted {
            signal: match self.signal.load(std::sync::atomic::Ordering::Relaxed) {
                0 => 2,
                n => n,
            },
            message: describe(),
        }
        .into()
    }
}

/// The lock of `m`, also if a thread panicked while holding it (what it guards stays usable).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIOND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Openapi => {
            println!("{:#}", crate::http::openapi::document());
            Ok(())
        }
        Command::Tenants(cmd) => tenants(cmd).await,
        Command::Seed(args) => seed(args).await,
        Command::Export(args) => export(args).await,
        Command::Import(args) => import(args).await,
        Command::Keys(cmd) => keys(cmd).await,
        Command::Check(args) => check(args).await,
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<()> {
    use crate::check::{self, Target, Verdict};
    let contracts = crate::spec::Contracts::load(args.specs_dir.as_deref())?;
    let client = check::Client::new(
        std::time::Duration::from_secs(args.timeout_secs.max(1)),
        args.ca_file.as_deref(),
    )?;
    let targets = match args.api {
        _ if args.demo => {
            check::demo_targets(args.url.as_deref().unwrap_or(check::DEMO_ROOT), &contracts)
        }
        Some(api) => vec![Target {
            api,
            base_url: args
                .url
                .unwrap_or_else(|| contracts.get(api).server_url.clone()),
            key: args.key.map(Secret::new),
            ids: args.ids,
        }],
        None => anyhow::bail!("--api or --demo is required"),
    };
    let (mut failed, mut probes) = (0, 0);
    for target in &targets {
        let contract = contracts.get(target.api);
        println!(
            "{}: GET {}{} against the {} contract",
            target.api,
            target.base_url.trim_end_matches('/'),
            contract.session_path,
            target.api
        );
        let findings = check::run(&client, contract, target).await;
        for finding in &findings {
            println!("  {finding}");
        }
        let count = |v: Verdict| findings.iter().filter(|f| f.verdict == v).count();
        let notes = count(Verdict::Note);
        println!(
            "{}: {} ok, {} failed, {notes} note{}",
            target.api,
            count(Verdict::Ok),
            count(Verdict::Fail),
            if notes == 1 { "" } else { "s" }
        );
        failed += count(Verdict::Fail);
        probes += count(Verdict::Ok) + count(Verdict::Fail);
    }
    anyhow::ensure!(failed == 0, "{failed} of {probes} checks failed");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let mut config = args.store.config();
    config.demo = args.demo;
    config.prewarm = !args.no_prewarm;
    config.header_timeout = (args.header_timeout_secs > 0)
        .then(|| std::time::Duration::from_secs(args.header_timeout_secs));
    config.admin_token = args.admin_token.map(Secret::new);
    config.service = ServiceOptions {
        salesnip_url_base: args.salesnip_url_base,
        cache_bytes: args.cache_mb.saturating_mul(1 << 20),
        ..ServiceOptions::default()
    };
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    };
    let mut apis = Vec::new();
    for (api, addr) in args.api_listen {
        apis.push((api, bind(addr).await?));
    }
    let listeners = Listeners {
        public: bind(args.listen).await?,
        admin: bind(args.admin_listen).await?,
        apis,
    };
    crate::run(config, listeners, shutdown_signal()).await
}

/// Turns transparent huge pages off for this process. The allocator asks for them
/// (`MADV_HUGEPAGE`) and hands memory back to the OS a second after it is freed; a cache that
/// misses keeps freeing and refilling memory, and each 2 MiB page touched again is zeroed whole
/// by the fault that touches it, stalling every connection of that runtime thread: 0.35 ms per
/// page reused, 5 ms per page new to a VM (session 19, Xeon VM; 4 KiB pages: 2-3 µs each). Random
/// GETs of a 10 M-session store over one connection, page cache warm, 64 MiB cache: p99 5.2-6.1 ms
/// with huge pages, 0.9-1.6 ms without (5 alternated 8 s runs each, one binary with this call and
/// one without); cached GETs used 0.93-1.00 x the CPU per request of the build with huge pages
/// (`bench/get_side_by_side.sh`). Logged, not fatal, where the kernel refuses.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::info!(error = %e, "transparent huge pages stay on for this process");
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

async fn offline(store: &StoreArgs) -> anyhow::Result<App> {
    App::start(&store.config()).await
}

/// [`offline`], for the tools that only read a store: a SQLite file that does not exist is a
/// mistake (a mistyped `--data-dir`), not an empty store to create and report on; and one this
/// process may only read is read ([`StoreOptions::read_only`]).
async fn existing(store: &StoreArgs) -> anyhow::Result<App> {
    let file = match &store.store {
        None => Some(store.data_dir.join("sessiond.db")),
        Some(dsn) => dsn.strip_prefix("sqlite://").map(PathBuf::from),
    };
    if let Some(file) = file
        && !file.exists()
    {
        anyhow::bail!(
            "no store at {} (check --data-dir or --store)",
            file.display()
        );
    }
    let mut config = store.config();
    config.store_options.read_only = true;
    App::start(&config).await
}

/// [`offline`], for `seed` and `import`, about to store `expected` sessions if known (see
/// [`StoreOptions::bulk_tool`]).
async fn bulk_tool(store: &StoreArgs, expected: Option<u64>) -> anyhow::Result<App> {
    let mut config = store.config_with(BULK_STORE_TIMEOUT_MS);
    config.store_options.bulk_tool = true;
    config.store_options.bulk_expected = expected;
    App::start(&config).await
}

async fn tenants(cmd: TenantsCmd) -> anyhow::Result<()> {
    match cmd {
        TenantsCmd::Create { api, id, store } => {
            let app = offline(&store).await?;
            let id = app.service.create_tenant(api, id).await?;
            println!("{id}");
        }
        TenantsCmd::List { api, store } => {
            let app = existing(&store).await?;
            for t in app.service.store().list_tenants(api).await? {
                println!("{}\t{}", t.id, t.created_at);
            }
        }
    }
    Ok(())
}

async fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create { api, tenant, store } => {
            let app = offline(&store).await?;
            let (id, secret) = app.service.create_key(api, &tenant).await?;
            println!(
                "id:  {id}\nkey: {}\n(the key is shown only this once)",
                secret.expose()
            );
        }
        KeysCmd::Revoke {
            api,
            tenant,
            key_id,
            store,
        } => {
            let app = offline(&store).await?;
            app.service.revoke_key(api, &tenant, &key_id).await?;
            println!("revoked {key_id}");
        }
        KeysCmd::List { api, tenant, store } => {
            let app = existing(&store).await?;
            for k in app.service.list_keys(api, &tenant).await? {
                println!(
                    "{}\t{}\t{}",
                    k.id,
                    k.created_at,
                    if k.revoked { "revoked" } else { "active" }
                );
            }
        }
    }
    Ok(())
}

/// A progress bar on a terminal (stderr), nothing otherwise.
fn progress_bar(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{what} {{pos}} sessions ({{per_sec}})"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
    bar
}

fn summary(verb: &str, t: crate::bulk::Totals, started: std::time::Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{verb} {}, {}, {} in {secs:.2} s ({:.0} sessions/s)",
        counted(t.tenants, "tenant"),
        counted(t.keys, "key"),
        counted(t.sessions, "session"),
        t.sessions as f64 / secs.max(1e-9)
    );
}

/// `1 key`, `2 keys`.
fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

async fn seed(args: SeedArgs) -> anyhow::Result<()> {
    let interrupts = Interrupts::watch()?;
    let app = bulk_tool(&args.store, Some(args.count)).await?;
    let started = std::time::Instant::now();
    let bar = progress_bar(Some(args.count), "seeding");
    interrupts.show_above(&bar);
    let totals = crate::bulk::seed(
        &app.service,
        args.api,
        &args.tenant,
        args.count,
        args.seed,
        &|n| bar.set_position(n),
        &interrupts.stop,
    )
    .await;
    bar.finish_and_clear();
    match totals {
        Ok(totals) => summary("seeded", totals, started),
        Err(crate::bulk::BulkError::Stopped(s)) => {
            return Err(interrupts.error(|| {
                if s.rolled_back {
                    format!(
                        "interrupted: none of the sessions is stored (seeded into a store \
                         without sessions, they were one transaction, rolled back){}",
                        if s.totals.tenants > 0 {
                            "; the tenant it created stays"
                        } else {
                            ""
                        }
                    )
                } else {
                    format!(
                        "interrupted: {} of {} stored; seeding more for this tenant takes \
                         another --seed (this one gives the same sessions again)",
                        counted(s.totals.sessions, "session"),
                        args.count
                    )
                }
            }));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Bytes of NDJSON counted for one session when an import guesses its size from its file's:
/// more than the longest line of an exported seeded store (Alcamine's, ~3 100 bytes; 750 to
/// 1 500 for the other apis), so that the guess errs low, and a small load is not taken for a
/// large one (see [`StoreOptions::bulk_expected`]).
const NDJSON_BYTES_PER_SESSION: u64 = 4096;

/// How many sessions an import of `input` brings, guessed low from the size of its file (see
/// [`NDJSON_BYTES_PER_SESSION`]); nothing for stdin or what is not a regular file.
fn import_lower_bound(input: &std::path::Path) -> Option<u64> {
    if input.as_os_str() == "-" {
        return None;
    }
    let meta = std::fs::metadata(input).ok()?;
    meta.is_file()
        .then_some(meta.len() / NDJSON_BYTES_PER_SESSION)
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let interrupts = Interrupts::watch()?;
    let app = existing(&args.store).await?;
    let apis = if args.api.is_empty() {
        ApiId::ALL.to_vec()
    } else {
        // Each once, in the order given: an api named twice would be exported twice.
        let mut apis = Vec::new();
        for api in args.api {
            if !apis.contains(&api) {
                apis.push(api);
            }
        }
        apis
    };
    let started = std::time::Instant::now();
    let bar = progress_bar(None, "exporting");
    interrupts.show_above(&bar);
    let mut out = ExportOutput::create(&args.output)?;
    interrupts.remove_on_exit(out.partial.as_ref().map(|(partial, _)| partial.as_path()));
    let totals = crate::bulk::export(
        &app.service,
        &apis,
        &mut out.writer,
        &|n| bar.set_position(n),
        &interrupts.stop,
    )
    .await;
    bar.finish_and_clear();
    let written = match totals {
        Ok(totals) => out.finish().map(|()| totals),
        Err(crate::bulk::BulkError::Stopped(_)) => Err(interrupts.error(|| match &out.partial {
            Some(_) => format!(
                "interrupted: {} was not written (nor changed)",
                args.output.display()
            ),
            None => "interrupted: the output is cut short".to_owned(),
        })),
        Err(e) => Err(e.into()),
    };
    let done = match written {
        Ok(totals) => {
            summary("exported", totals, started);
            Ok(())
        }
        Err(e) => {
            out.discard();
            Err(e)
        }
    };
    interrupts.remove_on_exit(None);
    done
}

/// Where `export` writes: stdout, a file that is not a regular one (a pipe, `/dev/null`) as it
/// is, or a regular file through `FILE.partial`, renamed to FILE once complete and synced to the
/// disk, so that FILE is never a cut export (an interrupted or failed one leaves FILE as it was).
struct ExportOutput {
    writer: std::io::BufWriter<Box<dyn std::io::Write + Send>>,
    /// `(FILE.partial, FILE)` for a regular file.
    partial: Option<(PathBuf, PathBuf)>,
}

impl ExportOutput {
    fn create(output: &std::path::Path) -> anyhow::Result<ExportOutput> {
        let buffered =
            |w: Box<dyn std::io::Write + Send>| std::io::BufWriter::with_capacity(1 << 20, w);
        if output.as_os_str() == "-" {
            return Ok(ExportOutput {
                writer: buffered(Box::new(std::io::stdout())),
                partial: None,
            });
        }
        let creating = || format!("creating {}", output.display());
        if std::fs::metadata(output).is_ok_and(|m| !m.is_file()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(output)
                .with_context(creating)?;
            return Ok(ExportOutput {
                writer: buffered(Box::new(f)),
                partial: None,
            });
        }
        let mut partial = output.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let f = std::fs::File::create(&partial).with_context(creating)?;
        Ok(ExportOutput {
            writer: buffered(Box::new(f)),
            partial: Some((partial, output.to_owned())),
        })
    }

    /// Flushes the output; a file is synced and put in place, and its directory synced.
    fn finish(&mut self) -> anyhow::Result<()> {
        use std::io::Write;
        self.writer.flush().context("writing the export")?;
        if let Some((partial, output)) = self.partial.take() {
            // Reopened to sync it: the writer holds it as a plain `Write`.
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", partial.display()))?;
            std::fs::rename(&partial, &output).with_context(|| {
                format!("renaming {} to {}", partial.display(), output.display())
            })?;
            // The rename is durable once the directory is synced too.
            let dir = match output.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => std::path::Path::new("."),
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", dir.display()))?;
        }
        Ok(())
    }

    /// Removes what an export that did not finish wrote to a file.
    fn discard(&mut self) {
        if let Some((partial, _)) = self.partial.take()
            && let Err(e) = std::fs::remove_file(&partial)
        {
            tracing::warn!(error = %e, path = %partial.display(), "the cut export is left");
        }
    }
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let interrupts = Interrupts::watch()?;
    // The input first: a file that cannot be opened leaves no new store behind.
    let input: Box<dyn std::io::BufRead + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let app = bulk_tool(&args.store, import_lower_bound(&args.input)).await?;
    let started = std::time::Instant::now();
    let bar = progress_bar(None, "importing");
    interrupts.show_above(&bar);
    let totals = crate::bulk::import(
        &app.service,
        input,
        &|n| bar.set_position(n),
        &interrupts.stop,
    )
    .await;
    bar.finish_and_clear();
    match totals {
        Ok(totals) => summary("imported", totals, started),
        Err(crate::bulk::BulkError::Stopped(s)) => {
            let line = s.resume_line.unwrap_or(1);
            return Err(interrupts.error(|| {
                if s.rolled_back {
                    "interrupted: nothing of this import is stored (loaded in bulk, it was one \
                     transaction, rolled back); the store is as it was"
                        .to_owned()
                } else {
                    let t = s.totals;
                    let input = if args.input.as_os_str() == "-" {
                        "the input".to_owned()
                    } else {
                        args.input.display().to_string()
                    };
                    format!(
                        "interrupted at line {line}: stored {}, {}, {} from the lines before it, \
                         no session or key from it on; to complete the import, import {input} \
                         from line {line} on (e.g. `tail -n +{line} FILE | sessiond import` with \
                         the same store)",
                        counted(t.tenants, "tenant"),
                        counted(t.keys, "key"),
                        counted(t.sessions, "session"),
                    )
                }
            }));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
