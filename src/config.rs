//! Server configuration: compiled-in defaults, overridden by `SESSIOND_*` environment variables and
//! command-line flags (both handled by clap in `cli.rs`), then checked by [`Config::validate`].

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::Secret;
use crate::service::ServiceOptions;
use crate::store::{Dsn, StoreOptions};

/// [`Config::header_timeout`] unless set (hyper's default header timeout), and `serve`'s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `run` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the SQLite file and the generated admin token live.
    pub data_dir: PathBuf,
    /// Store DSN (`sqlite://PATH`, `postgres://…`); `None`: `sessiond.db` in `data_dir`.
    pub store: Option<Dsn>,
    pub store_options: StoreOptions,
    /// Read the contracts from here instead of the embedded copies.
    pub specs_dir: Option<PathBuf>,
    /// The admin token; `None`: read or generate `data_dir/admin-token`.
    pub admin_token: Option<Secret>,
    /// Create the demo tenants, keys and sessions (idempotent) and print curl lines.
    pub demo: bool,
    /// Read the store's session id index into memory in the background once serving
    /// ([`crate::store::Store::prewarm`]).
    pub prewarm: bool,
    /// How long a connection may go without beginning a request before it is closed (within
    /// twice this long): idle keep-alive connections, and clients trickling a request head;
    /// `None`: no bound.
    pub header_timeout: Option<Duration>,
    pub service: ServiceOptions,
}

impl Config {
    /// Defaults, with the data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store: None,
            store_options: StoreOptions::default(),
            specs_dir: None,
            admin_token: None,
            demo: false,
            prewarm: true,
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            service: ServiceOptions::default(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.data_dir.as_os_str().is_empty(),
            "--data-dir must not be empty"
        );
        anyhow::ensure!(
            self.service.salesnip_url_base.starts_with("http://")
                || self.service.salesnip_url_base.starts_with("https://"),
            "--salesnip-url-base must be an http(s) URL"
        );
        anyhow::ensure!(
            !self.store_options.timeout.is_zero(),
            "--store-timeout-ms must be more than 0"
        );
        Ok(())
    }
}
