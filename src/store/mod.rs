//! Persistence: one [`Store`] trait and one module per backend. The backend is chosen by the DSN at
//! start-up. Stores hold bytes and ids; they know nothing of vendors' rules or of HTTP.

mod codec;
mod postgres;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use codec::read_blob;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::vendor::ApiId;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with that key exists already (or the compare-and-swap version did not match).
    #[error("conflict")]
    Conflict,
    /// The referenced row does not exist.
    #[error("not found")]
    NotFound,
    /// The backend failed (I/O, corruption, connection lost).
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub api: ApiId,
    pub id: String,
    pub tenant: String,
    /// Increases by one with every write; the ETag.
    pub version: i64,
    /// The exact bytes the public GET returns.
    pub body: Bytes,
    /// The stored document when it differs from `body` (Anam secrets); `None` means "same as body".
    pub doc: Option<Bytes>,
}

impl SessionRow {
    /// The stored document (with secrets), as JSON bytes.
    pub fn doc_bytes(&self) -> &Bytes {
        self.doc.as_ref().unwrap_or(&self.body)
    }
}

/// What the public GET reads of a stored session: whose it is and the bytes it returns.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicSession {
    pub tenant: String,
    pub body: Bytes,
}

/// A stored tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: String,
    pub created_at: String,
    /// Last number handed out by the tenant's sequence.
    pub seq: i64,
}

/// A stored API key: only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub api: ApiId,
    pub tenant: String,
    pub hash: [u8; 32],
    pub created_at: String,
    pub revoked: bool,
}

/// A write that may have happened on another node sharing the store: caches must forget it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Session {
        api: ApiId,
        id: String,
    },
    Key {
        hash: [u8; 32],
    },
    /// Changes may have been missed (e.g. the notification connection was re-established).
    All,
}

/// A page of sessions; `next` is the cursor of the following page.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<SessionRow>,
    pub next: Option<i64>,
}

/// A session id stored twice in a bulk load (see [`Store::end_bulk`]): the later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkDuplicate {
    /// Which [`Store::insert_sessions`] call of the load stored it (from 0)...
    pub call: usize,
    /// ...and where in that call's rows.
    pub index: usize,
    pub id: String,
}

/// Makes the row of a numbered session from its number (see [`Store::insert_numbered`]).
pub type BuildRow = Box<dyn FnOnce(i64) -> SessionRow + Send>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a tenant; [`StoreError::Conflict`] if it exists.
    async fn create_tenant(&self, api: ApiId, id: &str, created_at: &str) -> StoreResult<()>;
    async fn tenant_exists(&self, api: ApiId, id: &str) -> StoreResult<bool>;
    async fn list_tenants(&self, api: ApiId) -> StoreResult<Vec<TenantRow>>;
    /// Reserves `count` numbers of the tenant's sequence (1, 2, …) and returns the first; no
    /// number is ever handed out twice. [`StoreError::NotFound`] if the tenant does not exist.
    async fn reserve_seq(&self, api: ApiId, tenant: &str, count: i64) -> StoreResult<i64>;
    /// Gives back numbers `first..first + count` of [`Store::reserve_seq`] whose sessions were not
    /// stored, if they are still the last handed out: whether they were.
    async fn release_seq(
        &self,
        api: ApiId,
        tenant: &str,
        first: i64,
        count: i64,
    ) -> StoreResult<bool>;
    /// Makes sure the tenant's sequence continues after `at_least` (restoring an export).
    async fn raise_seq(&self, api: ApiId, tenant: &str, at_least: i64) -> StoreResult<()>;

    /// Stores a key (revoked or not); [`StoreError::Conflict`] if its id or hash exists.
    async fn create_key(&self, key: &KeyRow) -> StoreResult<()>;
    /// Revokes a key of the tenant; returns its hash, [`StoreError::NotFound`] if there is none.
    async fn revoke_key(&self, api: ApiId, tenant: &str, key_id: &str) -> StoreResult<[u8; 32]>;
    /// The key with this hash, revoked or not.
    async fn find_key(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRow>>;
    /// The key with this id, revoked or not.
    async fn find_key_by_id(&self, id: &str) -> StoreResult<Option<KeyRow>>;
    async fn list_keys(&self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>>;

    /// Inserts a session (version must be 1); [`StoreError::Conflict`] if the id is taken.
    async fn insert_session(&self, row: &SessionRow) -> StoreResult<()>;
    /// Inserts a session that takes the tenant's next sequence number: `build(n)` makes the row
    /// for number `n`. A number is used up only by a session that was stored
    /// ([`StoreError::Conflict`] if the id is taken, [`StoreError::NotFound`] if the tenant is
    /// missing). This default takes three round trips; a backend may do it in one transaction.
    async fn insert_numbered(
        &self,
        api: ApiId,
        tenant: &str,
        id: &str,
        build: BuildRow,
    ) -> StoreResult<SessionRow> {
        if self.get_session(api, id).await?.is_some() {
            return Err(StoreError::Conflict);
        }
        let row = build(self.reserve_seq(api, tenant, 1).await?);
        self.insert_session(&row).await?;
        Ok(row)
    }
    /// Inserts many sessions in one transaction: all or none. [`StoreError::Conflict`] if an id
    /// is taken.
    async fn insert_sessions(&self, rows: Vec<SessionRow>) -> StoreResult<()>;
    /// Starts a bulk load (import, seed) into a store that holds no session, or that a bulk tool
    /// has to itself and loads with many sessions beside those it holds
    /// ([`StoreOptions::bulk_expected`]): a backend may drop its session indexes, and build them
    /// once at [`Store::end_bulk`], rather than updating them row by row. Until then what is
    /// written is one transaction, which nobody else sees (a server sharing the store waits to
    /// write, and reads what was there before), and sessions are stored by
    /// [`Store::insert_sessions`] alone. `false`: no bulk load (the store holds sessions, or the
    /// backend has no such mode); writes go on as usual.
    async fn begin_bulk(&self) -> StoreResult<bool> {
        Ok(false)
    }
    /// Ends a bulk load: builds the indexes and commits. Ids are checked only now: if two sessions
    /// share one, the later is returned, and neither it nor anything stored after the start of its
    /// [`Store::insert_sessions`] call is kept. Nothing to do without a bulk load.
    async fn end_bulk(&self) -> StoreResult<Option<BulkDuplicate>> {
        Ok(None)
    }
    /// Abandons a bulk load: rolls back everything written since [`Store::begin_bulk`], and
    /// writes go on as usual. Nothing to do without a bulk load.
    async fn abort_bulk(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Replaces a session if its stored version is `row.version - 1`; else [`StoreError::Conflict`]
    /// ([`StoreError::NotFound`] if it is gone).
    async fn update_session(&self, row: &SessionRow) -> StoreResult<()>;
    /// Deletes a session; [`StoreError::NotFound`] if there is none. With `version`, only if the
    /// stored one is that ([`StoreError::Conflict`] if not): a delete conditional on what the
    /// caller read cannot remove a change made since.
    async fn delete_session(&self, api: ApiId, id: &str, version: Option<i64>) -> StoreResult<()>;
    async fn get_session(&self, api: ApiId, id: &str) -> StoreResult<Option<SessionRow>>;
    /// The part of [`Store::get_session`] a public GET answers with: not the stored document
    /// (which differs from the body where secrets are hidden), so that a cache miss neither
    /// reads nor decodes it.
    async fn get_public(&self, api: ApiId, id: &str) -> StoreResult<Option<PublicSession>>;
    /// Sessions of a tenant in insertion order, after the cursor.
    async fn list_sessions(
        &self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page>;

    /// A read-only view of the whole store as it is now, which writes made afterwards (by this
    /// process or another sharing the store) do not change: what `export` reads, so that an
    /// export made beside a running server is the store at one moment.
    async fn snapshot(&self) -> StoreResult<Box<dyn Snapshot>>;

    /// Whether the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Starts reading, in the background, what a GET that misses the session cache looks up
    /// first (the index from session id to row) into memory, so that after a restart such a GET
    /// waits on the disk for its row alone. `serve` calls it once, after it starts listening;
    /// requests are answered meanwhile. Nothing to do for a backend with a cache of its own
    /// that outlives the server (PostgreSQL's shared buffers).
    fn prewarm(&self) {}

    /// Changes made by other processes sharing this store, for backends that can report them
    /// (PostgreSQL `LISTEN/NOTIFY`). Called once at start-up; `None`: nothing to report (SQLite:
    /// one server per file; the offline CLI only adds rows, and key revocations it makes reach
    /// the server through the key cache's TTL).
    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }
}

/// A view of the store as it was when [`Store::snapshot`] made it: a read transaction of a
/// connection of its own (SQLite: one read transaction of the WAL; PostgreSQL: `REPEATABLE READ`),
/// held until the snapshot is dropped. The [`Store`] methods of the same names, read from it.
///
/// Held long, it has a cost: SQLite cannot start its WAL over while the snapshot reads an older
/// state, so the WAL grows by whatever is written meanwhile (it is cut back once the snapshot is
/// dropped); PostgreSQL's vacuum keeps the row versions it may still read.
#[async_trait]
pub trait Snapshot: Send {
    async fn list_tenants(&mut self, api: ApiId) -> StoreResult<Vec<TenantRow>>;
    async fn list_keys(&mut self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>>;
    async fn list_sessions(
        &mut self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page>;
}

/// A store DSN: `sqlite://PATH`, or `postgres://…` / `postgresql://…`. `Debug` and `Display` hide
/// any password it carries; only [`Dsn::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Dsn(String);

impl Dsn {
    pub fn new(dsn: impl Into<String>) -> Dsn {
        Dsn(dsn.into())
    }

    /// The DSN as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn is_postgres(&self) -> bool {
        self.0.starts_with("postgres://") || self.0.starts_with("postgresql://")
    }
}

impl From<String> for Dsn {
    fn from(s: String) -> Dsn {
        Dsn(s)
    }
}

impl From<&str> for Dsn {
    fn from(s: &str) -> Dsn {
        Dsn(s.to_owned())
    }
}

impl fmt::Display for Dsn {
    /// The DSN with the password of its user info and any `password=` parameter replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dsn = self.0.as_str();
        let (scheme, rest) = dsn.split_once("://").unwrap_or(("", dsn));
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !scheme.is_empty() {
            write!(f, "{scheme}://")?;
        }
        // The user info ends at the last `@` before the query (a raw `@` in a password too).
        match main.rsplit_once('@') {
            Some((userinfo, host_and_path)) => match userinfo.split_once(':') {
                Some((user, _)) => write!(f, "{user}:***@{host_and_path}")?,
                None => write!(f, "{userinfo}@{host_and_path}")?,
            },
            None => f.write_str(main)?,
        }
        for (i, param) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
            f.write_str(if i == 0 { "?" } else { "&" })?;
            match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => write!(f, "{key}=***")?,
                _ => f.write_str(param)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dsn({self})")
    }
}

/// How the store talks to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bound on each store call (PostgreSQL: waiting for a pooled connection, connecting, and each
    /// statement), so that a database that is gone fails requests fast instead of hanging them.
    pub timeout: Duration,
    /// The process is a bulk tool (`seed`, `import`), not a server: SQLite reads on its writer's
    /// connection, and a bulk load writes the database file directly rather than through the
    /// WAL (see `SqliteStore::open_with`). PostgreSQL ignores it.
    pub bulk_tool: bool,
    /// How many sessions the bulk tool expects to store, if it knows (a seed's count, or a lower
    /// bound from the size of an import's file). SQLite loads a store that already holds
    /// sessions in bulk too when this is large enough beside them (see `SqliteStore::open_with`);
    /// without it, only a store without sessions.
    pub bulk_expected: Option<u64>,
    /// The process only reads the store (`export`, `tenants list`, `keys list`): a SQLite store
    /// that it cannot open to write (a read-only file, directory or mount) is opened with a
    /// connection that cannot write, unless its schema must be brought up to date first.
    /// PostgreSQL ignores it.
    pub read_only: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: Duration::from_millis(2000),
            bulk_tool: false,
            bulk_expected: None,
            read_only: false,
        }
    }
}

/// The SQLite file `dsn` names (`sqlite://PATH`), or the one in `data_dir` when there is no
/// DSN; `None` for any other store.
fn sqlite_path(dsn: Option<&Dsn>, data_dir: &Path) -> Option<PathBuf> {
    match dsn {
        None => Some(data_dir.join("sessiond.db")),
        Some(dsn) => dsn.expose().strip_prefix("sqlite://").map(PathBuf::from),
    }
}

/// Opens the store named by `dsn` (`sqlite://PATH`, `postgres://…`), or the SQLite file in
/// `data_dir`.
pub async fn open(
    dsn: Option<&Dsn>,
    data_dir: &Path,
    options: StoreOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    match (sqlite_path(dsn, data_dir), dsn) {
        (Some(path), _) => Ok(Arc::new(SqliteStore::open_with(&path, options)?)),
        (None, Some(dsn)) if dsn.is_postgres() => {
            Ok(Arc::new(PostgresStore::open(dsn, options).await?))
        }
        (None, other) => anyhow::bail!(
            "unsupported store `{}` (expected sqlite://PATH or postgres://USER@HOST:PORT/DB)",
            other.map(ToString::to_string).unwrap_or_default()
        ),
    }
}

/// A SQLite store's claim to be served by this process alone, held while it is (see
/// [`ServeLock::take`]).
#[derive(Debug)]
pub struct ServeLock {
    _file: std::fs::File,
}

impl ServeLock {
    /// Claims the SQLite store `dsn` or `data_dir` names for this server: an exclusive lock
    /// (`flock`) on `FILE.lock` beside the database file, released when the lock is dropped or
    /// the process ends, however it ends. A second server on the same file would serve from a
    /// cache that never hears of the first one's writes (a session patched or deleted through one
    /// would stay as it was on the other), so it is refused, naming the server that holds the
    /// store. `seed`, `import` and the other commands do not take it: they may run beside a
    /// server. PostgreSQL stores take none (nodes hear of each other's writes); on a file system
    /// without `flock` the server warns and takes none.
    pub fn take(dsn: Option<&Dsn>, data_dir: &Path) -> anyhow::Result<Option<ServeLock>> {
        use anyhow::Context;
        use std::io::{Read, Seek, Write};
        let Some(db) = sqlite_path(dsn, data_dir) else {
            return Ok(None);
        };
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut path = db.clone().into_os_string();
        path.push(".lock");
        let path = PathBuf::from(path);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!("another sessiond (pid {pid})"),
                    Err(_) => "another sessiond".to_owned(),
                };
                anyhow::bail!(
                    "{} is served by {holder} ({} is locked): a SQLite store has one server; \
                     stop that one first, or give this one another --data-dir (several nodes \
                     share a PostgreSQL store)",
                    db.display(),
                    path.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                // A file system without `flock` (some network and FUSE ones): serve as before
                // the lock existed, saying so.
                tracing::warn!(
                    error = %e,
                    path = %path.display(),
                    "the store cannot be locked: nothing stops a second server on it"
                );
                return Ok(None);
            }
        }
        // Who holds it, for the message above (the file is left behind: removing it could let
        // two servers lock two files of one name).
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(ServeLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::{Dsn, ServeLock};

    /// One holder at a time per SQLite file (two opens in one process conflict as two processes
    /// do), free again once dropped; the file of a `sqlite://` DSN is locked, not the data dir's;
    /// PostgreSQL takes none.
    #[test]
    fn a_sqlite_store_is_locked_for_one_server() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = ServeLock::take(None, &data).unwrap().expect("a lock");
        let pid = std::process::id();
        let lock_file = data.join("sessiond.db.lock");
        assert_eq!(
            std::fs::read_to_string(&lock_file).unwrap(),
            format!("{pid}\n")
        );
        let refused = ServeLock::take(None, &data).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("is served by another sessiond (pid {pid})"))
                && refused.contains(&lock_file.display().to_string()),
            "{refused}"
        );
        let elsewhere = Dsn::new(format!("sqlite://{}/other/x.db", dir.path().display()));
        let other = ServeLock::take(Some(&elsewhere), &data)
            .unwrap()
            .expect("a lock");
        assert!(dir.path().join("other/x.db.lock").exists());
        assert!(ServeLock::take(Some(&elsewhere), &data).is_err());
        drop(first);
        let again = ServeLock::take(None, &data).unwrap();
        assert!(again.is_some());
        drop(other);
        let postgres = Dsn::new("postgres://u@127.0.0.1:1/db");
        assert!(ServeLock::take(Some(&postgres), &data).unwrap().is_none());
        assert!(ServeLock::take(Some(&postgres), &data).unwrap().is_none());
    }

    #[test]
    fn dsn_display_hides_passwords() {
        let cases = [
            (
                "postgres://app:s3cr%40t@db.example:5432/sessiond?options=-csearch_path%3Dx",
                "postgres://app:***@db.example:5432/sessiond?options=-csearch_path%3Dx",
            ),
            (
                "postgresql://app@db/sessiond?password=hunter2&application_name=a",
                "postgresql://app@db/sessiond?password=***&application_name=a",
            ),
            ("postgres://a:b:c@h", "postgres://a:***@h"),
            ("postgres://a:p@ss/w@h/db", "postgres://a:***@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ];
        for (dsn, shown) in cases {
            let dsn = Dsn::new(dsn);
            assert_eq!(dsn.to_string(), shown);
            assert_eq!(format!("{dsn:?}"), format!("Dsn({shown})"));
        }
    }
}
