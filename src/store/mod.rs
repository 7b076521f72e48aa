//! Persistence: one [`Store`] trait and one module per backend. The backend is chosen by the DSN at
//! start-up. Stores hold bytes and ids; they know nothing of vendors' rules or of HTTP.

mod sqlite;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a tenant; [`StoreError::Conflict`] if it exists.
    async fn create_tenant(&self, api: ApiId, id: &str, created_at: &str) -> StoreResult<()>;
    async fn tenant_exists(&self, api: ApiId, id: &str) -> StoreResult<bool>;
    async fn list_tenants(&self, api: ApiId) -> StoreResult<Vec<TenantRow>>;
    /// Reserves `count` numbers of the tenant's sequence (1, 2, …) and returns the first; no
    /// number is ever handed out twice. [`StoreError::NotFound`] if the tenant does not exist.
    async fn reserve_seq(&self, api: ApiId, tenant: &str, count: i64) -> StoreResult<i64>;
    /// Makes sure the tenant's sequence continues after `at_least` (restoring an export).
    async fn raise_seq(&self, api: ApiId, tenant: &str, at_least: i64) -> StoreResult<()>;

    /// Stores a key (revoked or not); [`StoreError::Conflict`] if its id or hash exists.
    async fn create_key(&self, key: &KeyRow) -> StoreResult<()>;
    /// Revokes a key of the tenant; returns its hash, [`StoreError::NotFound`] if there is none.
    async fn revoke_key(&self, api: ApiId, tenant: &str, key_id: &str) -> StoreResult<[u8; 32]>;
    /// The key with this hash, revoked or not.
    async fn find_key(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRow>>;
    async fn list_keys(&self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>>;

    /// Inserts a session (version must be 1); [`StoreError::Conflict`] if the id is taken.
    async fn insert_session(&self, row: &SessionRow) -> StoreResult<()>;
    /// Inserts many sessions in one transaction: all or none. [`StoreError::Conflict`] if an id
    /// is taken.
    async fn insert_sessions(&self, rows: Vec<SessionRow>) -> StoreResult<()>;
    /// Replaces a session if its stored version is `row.version - 1`; else [`StoreError::Conflict`]
    /// ([`StoreError::NotFound`] if it is gone).
    async fn update_session(&self, row: &SessionRow) -> StoreResult<()>;
    /// Deletes a session; [`StoreError::NotFound`] if there is none.
    async fn delete_session(&self, api: ApiId, id: &str) -> StoreResult<()>;
    async fn get_session(&self, api: ApiId, id: &str) -> StoreResult<Option<SessionRow>>;
    /// Sessions of a tenant in insertion order, after the cursor.
    async fn list_sessions(
        &self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page>;

    /// Whether the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Changes made by other processes sharing this store, for backends that can report them
    /// (PostgreSQL `LISTEN/NOTIFY`). Called once at start-up; `None`: nothing to report (SQLite:
    /// one server per file; the offline CLI only adds rows, and key revocations it makes reach
    /// the server through the key cache's TTL).
    fn changes(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Change>> {
        None
    }
}

/// Opens the store named by `dsn` (`sqlite://PATH`), or the SQLite file in `data_dir`.
pub async fn open(dsn: Option<&str>, data_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
    match dsn {
        None => Ok(Arc::new(SqliteStore::open(&data_dir.join("sessiond.db"))?)),
        Some(dsn) if dsn.starts_with("sqlite://") => Ok(Arc::new(SqliteStore::open(Path::new(
            &dsn["sqlite://".len()..],
        ))?)),
        Some(other) => anyhow::bail!("unsupported store `{other}` (expected sqlite://PATH)"),
    }
}
