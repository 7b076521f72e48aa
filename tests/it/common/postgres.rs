//! PostgreSQL for the tests: the server named by `SESSIOND_TEST_POSTGRES_URL`, one schema per test
//! server (or per group of servers that share a store), dropped when the test ends, passed or not.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::Value;
use sessiond::ApiId;
use tokio_postgres::NoTls;

/// The variable that enables the PostgreSQL tests, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub const URL_VAR: &str = "SESSIOND_TEST_POSTGRES_URL";

/// Schemas of runs that died without cleaning up are dropped once they are this old.
const ABANDONED_AFTER_SECS: u64 = 3600;

/// The server the PostgreSQL tests use, if they are enabled.
pub fn url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|u| !u.trim().is_empty())
}

/// What a PostgreSQL test does without a server: fail under CI (`CI` set), where the PostgreSQL
/// tests must run; elsewhere pass, saying once per test binary, past the output capture, why.
pub fn skip(test: &str) {
    if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
        panic!("{test}: {URL_VAR} is not set, but CI is: the PostgreSQL tests must run in CI");
    }
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        // Straight to the file descriptor: the test harness captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "note: PostgreSQL tests skipped: set {URL_VAR} \
             (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run them"
        );
    });
    println!("skipped: set {URL_VAR} to run {test}");
}

/// A connection to the test server, driven on the current runtime.
async fn connect() -> tokio_postgres::Client {
    let url = url().unwrap_or_else(|| panic!("{URL_VAR} is not set"));
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {URL_VAR}: {e}"));
    tokio::spawn(connection);
    client
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `base` (a `postgres://` URL) with the query parameters `params` added and, if given, another
/// host and port.
fn dsn(base: &str, addr: Option<SocketAddr>, params: &[(&str, &str)]) -> String {
    let (scheme, rest) = base
        .split_once("://")
        .unwrap_or_else(|| panic!("{URL_VAR} must be a postgres:// URL"));
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = main.split_at(main.find('/').unwrap_or(main.len()));
    let authority = match addr {
        None => authority.to_owned(),
        Some(addr) => match authority.rsplit_once('@') {
            Some((userinfo, _)) => format!("{userinfo}@{addr}"),
            None => addr.to_string(),
        },
    };
    let mut out = format!("{scheme}://{authority}{path}");
    let ours = params.iter().map(|(k, v)| {
        let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
        format!("{k}={v}")
    });
    let all: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .chain(ours)
        .collect();
    if !all.is_empty() {
        out.push('?');
        out.push_str(&all.join("&"));
    }
    out
}

/// A schema of its own, dropped (with everything in it) when this guard is dropped.
pub struct Schema {
    name: String,
}

impl Schema {
    pub async fn create() -> Schema {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let name = format!("it_{secs}_{:08x}", rand::rng().random::<u32>());
        let client = connect().await;
        sweep_abandoned(&client, secs).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {}", quoted(&name)))
            .await
            .unwrap_or_else(|e| panic!("creating schema {name}: {e}"));
        Schema { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The DSN sessiond gets: the schema as its search path, and as the application name of its
    /// connections (so that the guard can end them).
    pub fn dsn(&self) -> String {
        self.dsn_at(None)
    }

    /// [`Schema::dsn`], but connecting to `addr` (a proxy in front of the server).
    pub fn dsn_via(&self, addr: SocketAddr) -> String {
        self.dsn_at(Some(addr))
    }

    fn dsn_at(&self, addr: Option<SocketAddr>) -> String {
        let base = url().unwrap_or_else(|| panic!("{URL_VAR} is not set"));
        dsn(
            &base,
            addr,
            &[
                ("options", &format!("-csearch_path={}", self.name)),
                ("application_name", &self.name),
            ],
        )
    }

    /// The address of the server (for a proxy in front of it).
    pub fn server_addr() -> SocketAddr {
        let base = url().unwrap_or_else(|| panic!("{URL_VAR} is not set"));
        let config: tokio_postgres::Config = base.parse().expect("a valid URL");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            _ => panic!("{URL_VAR} must name a TCP host"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .expect("resolving the PostgreSQL host")
            .next()
            .expect("an address of the PostgreSQL host")
    }

    /// The stored document of a session (`doc`, else `body`), read behind the server's back.
    pub async fn stored_document(&self, api: ApiId, id: &str) -> Option<Value> {
        let row = connect()
            .await
            .query_opt(
                &format!(
                    "SELECT COALESCE(doc, body) FROM {}.sessions WHERE api = $1 AND id = $2",
                    quoted(&self.name)
                ),
                &[&api.as_str(), &id],
            )
            .await
            .expect("reading a stored session");
        row.map(|r| {
            serde_json::from_slice(r.get::<_, &[u8]>(0)).expect("the stored document is JSON")
        })
    }

    /// Drops every table of the schema behind the server's back.
    pub async fn drop_tables(&self) {
        let client = connect().await;
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                &[&self.name],
            )
            .await
            .expect("listing the tables")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(!tables.is_empty(), "the store has no tables to break");
        let names: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{}", quoted(&self.name), quoted(t)))
            .collect();
        client
            .batch_execute(&format!("DROP TABLE {} CASCADE", names.join(", ")))
            .await
            .expect("dropping the tables");
    }
}

/// Ends the connections of servers that used `schema` and drops it.
async fn drop_schema(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name LIKE $1 || '%' AND pid <> pg_backend_pid()",
            &[&schema],
        )
        .await?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quoted(schema)))
        .await
}

/// Drops, once per test binary, schemas that runs killed before their guards ran left behind.
async fn sweep_abandoned(client: &tokio_postgres::Client, now: u64) {
    static SWEPT: AtomicBool = AtomicBool::new(false);
    if SWEPT.swap(true, Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname ~ '^it_[0-9]+_[0-9a-f]+$'",
            &[],
        )
        .await
        .expect("listing test schemas")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in names {
        let born: u64 = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(now);
        if now.saturating_sub(born) > ABANDONED_AFTER_SECS {
            let _ = drop_schema(client, &name).await;
        }
    }
}

impl Drop for Schema {
    /// Drops the schema synchronously, on a thread with a runtime of its own: the test's runtime
    /// may be single-threaded, and this runs while a test unwinds too.
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the schema");
            runtime.block_on(async {
                let client = connect().await;
                drop_schema(&client, &name).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not drop test schema {}: {dropped:?}",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dsn_adds_parameters_and_replaces_the_address() {
        let addr = "127.0.0.1:6000".parse().unwrap();
        assert_eq!(
            super::dsn(
                "postgres://u:p@h:5432/db",
                Some(addr),
                &[("options", "-csearch_path=s")]
            ),
            "postgres://u:p@127.0.0.1:6000/db?options=%2Dcsearch%5Fpath%3Ds"
        );
        assert_eq!(
            super::dsn(
                "postgres://h/db?sslmode=disable",
                None,
                &[("application_name", "a")]
            ),
            "postgres://h/db?sslmode=disable&application_name=a"
        );
    }
}
