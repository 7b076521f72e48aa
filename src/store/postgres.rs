//! The PostgreSQL backend, for several sessiond nodes sharing one database.
//!
//! Connections come from a pool; each statement is prepared once per connection. Every write is
//! one transaction: a single statement where it can be (data-modifying CTEs), an explicit
//! transaction where a write needs what it found. Commits use the server's `synchronous_commit`
//! (on by default): an acknowledged write is on disk, as with SQLite. PostgreSQL group-commits
//! concurrent transactions by itself, so there is no writer queue here.
//!
//! Cache coherence: every write that a cache may hold also runs `pg_notify` on the schema's channel
//! (`sessiond_changes:SCHEMA`) inside its transaction, so every node (this one too) hears of it
//! exactly when it commits. A dedicated connection `LISTEN`s and turns notifications into
//! [`Change`]s. When that connection is lost the store reports [`Change::All`] at once and again
//! once it listens anew (reconnecting with backoff), so a notification missed meanwhile cannot
//! leave a stale entry behind; until then `ping` fails, so `/readyz` takes the node out of
//! rotation.
//!
//! Every call is bounded by [`StoreOptions::timeout`] (pool wait, connect, server-side
//! `statement_timeout`, and the call as a whole), so a database that is gone fails requests fast.
//! The schema is the DSN's `search_path` (`?options=-csearch_path%3DNAME`); migrations run at start
//! under an advisory lock. TLS is not supported yet: connections use `NoTls`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::{
    Change, Dsn, KeyRow, Page, PublicSession, SessionRow, Snapshot, Store, StoreError,
    StoreOptions, StoreResult, TenantRow,
};
use crate::vendor::ApiId;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// The notification channel of a schema: writes notify it, every node using the schema listens on
/// it. Per schema, so that deployments (and tests) sharing a database do not hear each other.
fn channel(schema: &str) -> String {
    let channel = format!("sessiond_changes:{schema}");
    // Longer names are refused by `pg_notify` (and cut short by `LISTEN`).
    const MAX_IDENTIFIER: usize = 63;
    if channel.len() <= MAX_IDENTIFIER {
        return channel;
    }
    let digest = Sha256::digest(schema.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sessiond_changes:{hex}")
}

/// How often the listening connection proves it is alive (a silent network partition does not
/// close it).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pauses between attempts to listen again: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

pub struct PostgresStore {
    pool: Pool,
    timeout: Duration,
    /// See [`channel`].
    channel: String,
    /// Whether the notification connection is up (else caches may miss changes: not ready).
    listening: Arc<AtomicBool>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    /// Dropped with the store, which stops the listener task.
    _stop: watch::Sender<()>,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("PostgreSQL did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("no connection from the pool")]
    Pool(#[source] PoolError),
    #[error("not listening for changes: the notification connection is down")]
    NotListening,
    #[error("a stored key hash is not 32 bytes")]
    BadHash,
}

/// Why the listening connection was given up.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("the connection closed")]
    Closed,
    #[error("the connection failed")]
    Failed(#[source] tokio_postgres::Error),
    #[error("no answer to the heartbeat within {0:?}")]
    Silent(Duration),
    #[error("the connection task ended")]
    Task(#[source] tokio::task::JoinError),
}

/// A spawned task that is aborted when this handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The connection settings of `dsn`, with sessiond's bounds added: the connect timeout (unless the
/// DSN sets one), and `statement_timeout` and `idle_in_transaction_session_timeout` as server
/// options placed before the DSN's own `options`, so that the DSN can override them.
fn connect_config(dsn: &Dsn, timeout: Duration) -> anyhow::Result<tokio_postgres::Config> {
    // The parse error names the offending option, never a value.
    let mut config: tokio_postgres::Config = dsn.expose().parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("sessiond");
    }
    let ms = timeout.as_millis();
    let ours = format!("-c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}");
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{ours} {theirs}"),
        _ => ours,
    };
    config.options(options);
    Ok(config)
}

async fn connect(
    config: &tokio_postgres::Config,
    timeout: Duration,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
)> {
    tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| Failure::TimedOut(timeout))?
        .context("connecting")
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The advisory lock that serializes migrations of one schema across nodes.
fn migration_lock(schema: &str) -> i64 {
    let digest = Sha256::digest(format!("sessiond migrations of {schema}"));
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Brings the schema up to date: one transaction under an advisory lock, so nodes starting at
/// once apply each migration exactly once, and the others wait and then find nothing to do.
/// Returns the schema's name.
async fn migrate(config: &tokio_postgres::Config, timeout: Duration) -> anyhow::Result<String> {
    let (mut client, connection) = connect(config, timeout).await?;
    let _driver = AbortOnDrop(tokio::spawn(connection));
    let tx = client.transaction().await?;
    // Migrating, and waiting for another node's migration, may take longer than a request.
    tx.batch_execute(
        "SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0",
    )
    .await?;
    let schema: Option<String> = tx.query_one("SELECT current_schema()", &[]).await?.get(0);
    let schema = schema.context(
        "no schema of the search_path exists: create it (CREATE SCHEMA …) or fix \
         `options=-csearch_path%3D…` in the DSN",
    )?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&migration_lock(&schema)],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS sessiond_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM sessiond_migrations",
            &[],
        )
        .await?
        .get(0);
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        anyhow::bail!(
            "schema `{schema}` is at version {current}, newer than this sessiond ({}); upgrade sessiond",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i32::try_from(i + 1).expect("few migrations");
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "INSERT INTO sessiond_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(schema, version, "applied a PostgreSQL migration");
    }
    tx.commit().await?;
    Ok(schema)
}

impl PostgresStore {
    /// Connects, brings the schema up to date, and starts listening for changes.
    pub async fn open(dsn: &Dsn, options: StoreOptions) -> anyhow::Result<PostgresStore> {
        let timeout = options.timeout;
        let config = connect_config(dsn, timeout)
            .with_context(|| format!("invalid PostgreSQL DSN {dsn}"))?;
        let schema = migrate(&config, timeout)
            .await
            .with_context(|| format!("preparing the schema at {dsn}"))?;
        let channel = channel(&schema);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .context("building the connection pool")?;
        let (changes_tx, changes_rx) = mpsc::unbounded_channel();
        let listener = Listener::connect(&config, timeout, &channel, changes_tx.clone())
            .await
            .with_context(|| format!("listening for changes at {dsn}"))?;
        let listening = Arc::new(AtomicBool::new(true));
        let (stop, stopped) = watch::channel(());
        tokio::spawn(follow(
            config,
            timeout,
            channel.clone(),
            changes_tx,
            listening.clone(),
            stopped,
            listener,
        ));
        tracing::info!(store = %dsn, schema, "using PostgreSQL");
        Ok(PostgresStore {
            pool,
            timeout,
            channel,
            listening,
            changes: Mutex::new(Some(changes_rx)),
            _stop: stop,
        })
    }

    /// Runs `op`, failing it if it takes longer than the store timeout.
    async fn bounded<T>(&self, op: impl Future<Output = StoreResult<T>> + Send) -> StoreResult<T> {
        bounded(self.timeout, op).await
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::backend(Failure::Pool(e)))
    }

    /// One statement (prepared once per connection), in a transaction of its own.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        self.bounded(async { run(&*self.client().await?, sql, params).await })
            .await
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// Runs `op`, failing it if it takes longer than `timeout`.
async fn bounded<T>(
    timeout: Duration,
    op: impl Future<Output = StoreResult<T>> + Send,
) -> StoreResult<T> {
    tokio::time::timeout(timeout, op)
        .await
        .unwrap_or_else(|_| Err(StoreError::backend(Failure::TimedOut(timeout))))
}

/// One statement on `client`, prepared once per connection.
async fn run(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> StoreResult<Vec<Row>> {
    let statement = client.prepare_cached(sql).await.map_err(classify)?;
    client.query(&statement, params).await.map_err(classify)
}

/// [`Store::list_tenants`]: `$1` the api.
const LIST_TENANTS: &str =
    "SELECT id, created_at, seq FROM tenants WHERE api = $1 ORDER BY created_at, id";
/// [`Store::list_keys`]: `$1` the api, `$2` the tenant.
const LIST_KEYS: &str = "SELECT id, api, tenant, hash, created_at, revoked_at FROM api_keys
     WHERE api = $1 AND tenant = $2 ORDER BY created_at, id";
/// [`Store::list_sessions`]: `$1` the api, `$2` the tenant, `$3` the cursor, `$4` one more than the
/// page's size ([`page_limit`]; see [`page_of`]).
const LIST_SESSIONS: &str = "SELECT pk, api, id, tenant, version, body, doc FROM sessions
     WHERE api = $1 AND tenant = $2 AND pk > $3 ORDER BY pk LIMIT $4";

fn tenant_from(row: &Row) -> StoreResult<TenantRow> {
    Ok(TenantRow {
        id: col(row, "id")?,
        created_at: col(row, "created_at")?,
        seq: col(row, "seq")?,
    })
}

/// `$4` of [`LIST_SESSIONS`]: a row past the page tells whether another follows.
fn page_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

/// The page of [`LIST_SESSIONS`]'s `rows`.
fn page_of(rows: &[Row], limit: usize) -> StoreResult<Page> {
    let more = rows.len() > limit;
    let rows = &rows[..rows.len().min(limit)];
    Ok(Page {
        next: match rows.last() {
            Some(last) if more => Some(col(last, "pk")?),
            _ => None,
        },
        rows: rows.iter().map(session_from).collect::<StoreResult<_>>()?,
    })
}

/// Where the listings read: the pool (each statement a transaction of its own), or a snapshot's
/// connection.
trait Reads {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>>;
}

impl Reads for PostgresStore {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        PostgresStore::query(self, sql, params).await
    }
}

async fn list_tenants(from: &impl Reads, api: ApiId) -> StoreResult<Vec<TenantRow>> {
    from.query(LIST_TENANTS, &[&api.as_str()])
        .await?
        .iter()
        .map(tenant_from)
        .collect()
}

async fn list_keys(from: &impl Reads, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
    from.query(LIST_KEYS, &[&api.as_str(), &tenant])
        .await?
        .iter()
        .map(key_from)
        .collect()
}

async fn list_sessions(
    from: &impl Reads,
    api: ApiId,
    tenant: &str,
    after: Option<i64>,
    limit: usize,
) -> StoreResult<Page> {
    let params: [&(dyn ToSql + Sync); 4] = [
        &api.as_str(),
        &tenant,
        &after.unwrap_or(0),
        &page_limit(limit),
    ];
    page_of(&from.query(LIST_SESSIONS, &params).await?, limit)
}

/// [`Store::snapshot`]: a pooled connection in a `REPEATABLE READ`, read-only transaction.
struct PostgresSnapshot {
    /// `None` once dropped.
    client: Option<deadpool_postgres::Object>,
    timeout: Duration,
}

impl Reads for PostgresSnapshot {
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self
            .client
            .as_ref()
            .expect("a snapshot has its connection until dropped");
        bounded(self.timeout, run(client, sql, params)).await
    }
}

#[async_trait]
impl Snapshot for PostgresSnapshot {
    async fn list_tenants(&mut self, api: ApiId) -> StoreResult<Vec<TenantRow>> {
        list_tenants(self, api).await
    }

    async fn list_keys(&mut self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
        list_keys(self, api, tenant).await
    }

    async fn list_sessions(
        &mut self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page> {
        list_sessions(self, api, tenant, after, limit).await
    }
}

/// The connection leaves the pool and closes, which ends its transaction: given back, the next
/// user of the pool would find itself inside the snapshot (a `Drop` cannot wait for a `ROLLBACK`).
impl Drop for PostgresSnapshot {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

/// A constraint violation is a conflict (as in SQLite: a taken id or hash, or an unknown tenant);
/// anything else is the backend failing.
fn classify(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(code)
            if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION =>
        {
            StoreError::Conflict
        }
        _ => StoreError::backend(e),
    }
}

fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> StoreResult<T> {
    row.try_get(name).map_err(StoreError::backend)
}

fn api_of(row: &Row) -> StoreResult<ApiId> {
    col::<&str>(row, "api")?
        .parse()
        .map_err(StoreError::backend)
}

fn hash_of(bytes: &[u8]) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::backend(Failure::BadHash))
}

fn session_from(row: &Row) -> StoreResult<SessionRow> {
    Ok(SessionRow {
        api: api_of(row)?,
        id: col(row, "id")?,
        tenant: col(row, "tenant")?,
        version: col(row, "version")?,
        body: Bytes::from(col::<Vec<u8>>(row, "body")?),
        doc: col::<Option<Vec<u8>>>(row, "doc")?.map(Bytes::from),
    })
}

fn key_from(row: &Row) -> StoreResult<KeyRow> {
    Ok(KeyRow {
        id: col(row, "id")?,
        api: api_of(row)?,
        tenant: col(row, "tenant")?,
        hash: hash_of(col(row, "hash")?)?,
        created_at: col(row, "created_at")?,
        revoked: col::<Option<&str>>(row, "revoked_at")?.is_some(),
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_tenant(&self, api: ApiId, id: &str, created_at: &str) -> StoreResult<()> {
        self.query(
            "INSERT INTO tenants (api, id, created_at) VALUES ($1, $2, $3)",
            &[&api.as_str(), &id, &created_at],
        )
        .await
        .map(drop)
    }

    async fn tenant_exists(&self, api: ApiId, id: &str) -> StoreResult<bool> {
        self.query_opt(
            "SELECT 1 FROM tenants WHERE api = $1 AND id = $2",
            &[&api.as_str(), &id],
        )
        .await
        .map(|row| row.is_some())
    }

    async fn list_tenants(&self, api: ApiId) -> StoreResult<Vec<TenantRow>> {
        list_tenants(self, api).await
    }

    async fn reserve_seq(&self, api: ApiId, tenant: &str, count: i64) -> StoreResult<i64> {
        // The row lock orders concurrent reservations, on every node.
        let row = self
            .query_opt(
                "UPDATE tenants SET seq = seq + $3 WHERE api = $1 AND id = $2 RETURNING seq",
                &[&api.as_str(), &tenant, &count],
            )
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(col::<i64>(&row, "seq")? - count + 1)
    }

    async fn release_seq(
        &self,
        api: ApiId,
        tenant: &str,
        first: i64,
        count: i64,
    ) -> StoreResult<bool> {
        let row = self
            .query_opt(
                "UPDATE tenants SET seq = $3::bigint - 1
                 WHERE api = $1 AND id = $2 AND seq = $3::bigint + $4::bigint - 1
                 RETURNING 1",
                &[&api.as_str(), &tenant, &first, &count],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn raise_seq(&self, api: ApiId, tenant: &str, at_least: i64) -> StoreResult<()> {
        self.query_opt(
            "UPDATE tenants SET seq = GREATEST(seq, $3) WHERE api = $1 AND id = $2 RETURNING 1",
            &[&api.as_str(), &tenant, &at_least],
        )
        .await?
        .map(drop)
        .ok_or(StoreError::NotFound)
    }

    async fn create_key(&self, key: &KeyRow) -> StoreResult<()> {
        self.query(
            "WITH created AS (
                 INSERT INTO api_keys (id, api, tenant, hash, created_at, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN $5 END)
                 RETURNING 1
             )
             SELECT pg_notify($7, $8) FROM created",
            &[
                &key.id,
                &key.api.as_str(),
                &key.tenant,
                &&key.hash[..],
                &key.created_at,
                &key.revoked,
                &self.channel,
                &payload::key(&key.hash),
            ],
        )
        .await
        .map(drop)
    }

    async fn revoke_key(&self, api: ApiId, tenant: &str, key_id: &str) -> StoreResult<[u8; 32]> {
        let now = crate::vendor::iso_millis(chrono::Utc::now());
        // The notification names the hash, which only the update finds: two statements, one
        // transaction (dropped uncommitted, it rolls back).
        self.bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(classify)?;
            let revoke = tx
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $4)
                     WHERE api = $1 AND tenant = $2 AND id = $3 RETURNING hash",
                )
                .await
                .map_err(classify)?;
            let row = tx
                .query_opt(&revoke, &[&api.as_str(), &tenant, &key_id, &now])
                .await
                .map_err(classify)?
                .ok_or(StoreError::NotFound)?;
            let hash = hash_of(col(&row, "hash")?)?;
            let notify = tx
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .map_err(classify)?;
            tx.execute(&notify, &[&self.channel, &payload::key(&hash)])
                .await
                .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            Ok(hash)
        })
        .await
    }

    async fn find_key(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRow>> {
        self.query_opt(
            "SELECT id, api, tenant, hash, created_at, revoked_at FROM api_keys WHERE hash = $1",
            &[&&hash[..]],
        )
        .await?
        .as_ref()
        .map(key_from)
        .transpose()
    }

    async fn find_key_by_id(&self, id: &str) -> StoreResult<Option<KeyRow>> {
        self.query_opt(
            "SELECT id, api, tenant, hash, created_at, revoked_at FROM api_keys WHERE id = $1",
            &[&id],
        )
        .await?
        .as_ref()
        .map(key_from)
        .transpose()
    }

    async fn list_keys(&self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
        list_keys(self, api, tenant).await
    }

    async fn insert_session(&self, row: &SessionRow) -> StoreResult<()> {
        self.query(
            "WITH inserted AS (
                 INSERT INTO sessions (api, id, tenant, version, body, doc)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING 1
             )
             SELECT pg_notify($7, $8) FROM inserted",
            &[
                &row.api.as_str(),
                &row.id,
                &row.tenant,
                &row.version,
                &&row.body[..],
                &row.doc.as_deref(),
                &self.channel,
                &payload::session(row.api, &row.id),
            ],
        )
        .await
        .map(drop)
    }

    async fn insert_sessions(&self, rows: Vec<SessionRow>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let apis: Vec<&str> = rows.iter().map(|r| r.api.as_str()).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let tenants: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
        let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|r| &r.body[..]).collect();
        let docs: Vec<Option<&[u8]>> = rows.iter().map(|r| r.doc.as_deref()).collect();
        let notes = payload::pack(rows.iter().map(|r| payload::session(r.api, &r.id)));
        // One statement: all rows or none, in the given order (the paging order), and their
        // notifications with them.
        self.query(
            "WITH inserted AS (
                 INSERT INTO sessions (api, id, tenant, version, body, doc)
                 SELECT api, id, tenant, version, body, doc
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bytea[],
                             $6::bytea[])
                      WITH ORDINALITY AS batch (api, id, tenant, version, body, doc, n)
                 ORDER BY n
             )
             SELECT pg_notify($7, note) FROM unnest($8::text[]) AS note",
            &[
                &apis,
                &ids,
                &tenants,
                &versions,
                &bodies,
                &docs,
                &self.channel,
                &notes,
            ],
        )
        .await
        .map(drop)
    }

    async fn update_session(&self, row: &SessionRow) -> StoreResult<()> {
        let updated = self
            .query(
                "WITH updated AS (
                     UPDATE sessions SET version = $3::bigint, body = $4, doc = $5
                     WHERE api = $1 AND id = $2 AND version = $3::bigint - 1
                     RETURNING 1
                 )
                 SELECT pg_notify($6, $7) FROM updated",
                &[
                    &row.api.as_str(),
                    &row.id,
                    &row.version,
                    &&row.body[..],
                    &row.doc.as_deref(),
                    &self.channel,
                    &payload::session(row.api, &row.id),
                ],
            )
            .await?;
        if !updated.is_empty() {
            return Ok(());
        }
        let exists = self
            .query_opt(
                "SELECT 1 FROM sessions WHERE api = $1 AND id = $2",
                &[&row.api.as_str(), &row.id],
            )
            .await?
            .is_some();
        Err(if exists {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        })
    }

    async fn delete_session(&self, api: ApiId, id: &str, version: Option<i64>) -> StoreResult<()> {
        let deleted = self
            .query_opt(
                "WITH deleted AS (DELETE FROM sessions WHERE api = $1 AND id = $2
                                  AND ($5::bigint IS NULL OR version = $5) RETURNING 1)
                 SELECT pg_notify($3, $4) FROM deleted",
                &[
                    &api.as_str(),
                    &id,
                    &self.channel,
                    &payload::session(api, id),
                    &version,
                ],
            )
            .await?;
        if deleted.is_some() {
            return Ok(());
        }
        // Nothing deleted: gone, or (with a version) changed since.
        let exists = self
            .query_opt(
                "SELECT 1 FROM sessions WHERE api = $1 AND id = $2",
                &[&api.as_str(), &id],
            )
            .await?;
        Err(if exists.is_some() {
            StoreError::Conflict
        } else {
            StoreError::NotFound
        })
    }

    async fn get_session(&self, api: ApiId, id: &str) -> StoreResult<Option<SessionRow>> {
        self.query_opt(
            "SELECT api, id, tenant, version, body, doc FROM sessions WHERE api = $1 AND id = $2",
            &[&api.as_str(), &id],
        )
        .await?
        .as_ref()
        .map(session_from)
        .transpose()
    }

    async fn get_public(&self, api: ApiId, id: &str) -> StoreResult<Option<PublicSession>> {
        self.query_opt(
            "SELECT tenant, body FROM sessions WHERE api = $1 AND id = $2",
            &[&api.as_str(), &id],
        )
        .await?
        .map(|row| {
            Ok(PublicSession {
                tenant: col(&row, "tenant")?,
                body: Bytes::from(col::<Vec<u8>>(&row, "body")?),
            })
        })
        .transpose()
    }

    async fn list_sessions(
        &self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page> {
        list_sessions(self, api, tenant, after, limit).await
    }

    async fn snapshot(&self) -> StoreResult<Box<dyn Snapshot>> {
        // Made first, so that a failed `BEGIN` also takes its connection out of the pool.
        let snapshot = PostgresSnapshot {
            client: Some(self.bounded(self.client()).await?),
            timeout: self.timeout,
        };
        // The snapshot is taken by the first statement after `BEGIN`, not by `BEGIN` itself.
        let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1";
        let client = snapshot.client.as_ref().expect("just taken");
        self.bounded(async { client.batch_execute(begin).await.map_err(classify) })
            .await?;
        Ok(Box::new(snapshot))
    }

    async fn ping(&self) -> StoreResult<()> {
        if !self.listening.load(Ordering::SeqCst) {
            return Err(StoreError::backend(Failure::NotListening));
        }
        self.query("SELECT 1", &[]).await.map(drop)
    }

    fn changes(&self) -> Option<mpsc::UnboundedReceiver<Change>> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

// ---- the change feed ----------------------------------------------------------------------------

/// A connection that `LISTEN`s; its driver task turns notifications into [`Change`]s.
struct Listener {
    client: tokio_postgres::Client,
    driver: AbortOnDrop<Result<(), tokio_postgres::Error>>,
}

impl Listener {
    async fn connect(
        config: &tokio_postgres::Config,
        timeout: Duration,
        channel: &str,
        changes: mpsc::UnboundedSender<Change>,
    ) -> anyhow::Result<Listener> {
        let (client, mut connection) = connect(config, timeout).await?;
        let ours = channel.to_owned();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) if n.channel() == ours => {
                        for change in payload::parse(n.payload()) {
                            let _ = changes.send(change);
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        let listener = Listener {
            client,
            driver: AbortOnDrop(driver),
        };
        tokio::time::timeout(
            timeout,
            listener
                .client
                .batch_execute(&format!("LISTEN {}", quoted(channel))),
        )
        .await
        .map_err(|_| Failure::TimedOut(timeout))?
        .context("LISTEN")?;
        Ok(listener)
    }

    /// Proves the connection alive every [`HEARTBEAT`] until it is not; why it was lost.
    async fn watch(mut self, timeout: Duration) -> Lost {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ended = &mut self.driver.0 => return match ended {
                    Ok(Ok(())) => Lost::Closed,
                    Ok(Err(e)) => Lost::Failed(e),
                    Err(e) => Lost::Task(e),
                },
                _ = beat.tick() => {
                    match tokio::time::timeout(timeout, self.client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Lost::Failed(e),
                        Err(_) => return Lost::Silent(timeout),
                    }
                }
            }
        }
    }
}

/// Keeps a listening connection until the store is dropped; reports [`Change::All`] whenever
/// changes may have gone unheard (the connection lost, and listening again).
async fn follow(
    config: tokio_postgres::Config,
    timeout: Duration,
    channel: String,
    changes: mpsc::UnboundedSender<Change>,
    listening: Arc<AtomicBool>,
    mut stop: watch::Receiver<()>,
    mut listener: Listener,
) {
    loop {
        listening.store(true, Ordering::SeqCst);
        let lost = tokio::select! {
            lost = listener.watch(timeout) => lost,
            _ = stop.changed() => return,
            () = changes.closed() => return,
        };
        listening.store(false, Ordering::SeqCst);
        tracing::warn!(error = %lost, source = ?std::error::Error::source(&lost),
            "lost the PostgreSQL notification connection; caches are flushed, reconnecting");
        if changes.send(Change::All).is_err() {
            return;
        }
        listener = tokio::select! {
            listener = listen_again(&config, timeout, &channel, &changes) => listener,
            _ = stop.changed() => return,
        };
        tracing::info!("listening for PostgreSQL notifications again");
        if changes.send(Change::All).is_err() {
            return;
        }
    }
}

/// Tries to listen again, with backoff, until it works.
async fn listen_again(
    config: &tokio_postgres::Config,
    timeout: Duration,
    channel: &str,
    changes: &mpsc::UnboundedSender<Change>,
) -> Listener {
    let mut pause = BACKOFF.0;
    loop {
        tokio::time::sleep(pause).await;
        match Listener::connect(config, timeout, channel, changes.clone()).await {
            Ok(listener) => return listener,
            Err(e) => tracing::debug!(error = format!("{e:#}"), "cannot listen yet"),
        }
        pause = (pause * 2).min(BACKOFF.1);
    }
}

/// Notification payloads: one change per line, `s|API|ID` (a session), `k|HEX` (a key's hash), or
/// `*` (anything may have changed: what cannot be said in a line). PostgreSQL caps a payload at
/// 8000 bytes; the ids sessiond makes are far shorter.
mod payload {
    use std::fmt::Write;

    use super::Change;

    /// Bytes a payload may have.
    const MAX: usize = 7999;
    const ALL: &str = "*";

    pub fn session(api: crate::vendor::ApiId, id: &str) -> String {
        let line = format!("s|{api}|{id}");
        if line.len() > MAX || id.contains('\n') {
            ALL.to_owned()
        } else {
            line
        }
    }

    pub fn key(hash: &[u8; 32]) -> String {
        let mut line = String::with_capacity(66);
        line.push_str("k|");
        for b in hash {
            let _ = write!(line, "{b:02x}");
        }
        line
    }

    /// Packs lines into as few payloads as the size cap allows.
    pub fn pack(lines: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for line in lines {
            match out.last_mut() {
                Some(last) if last.len() + 1 + line.len() <= MAX => {
                    last.push('\n');
                    last.push_str(&line);
                }
                _ => out.push(line),
            }
        }
        out
    }

    /// The changes a payload names; anything unreadable means [`Change::All`].
    pub fn parse(payload: &str) -> Vec<Change> {
        payload
            .split('\n')
            .map(line)
            .collect::<Option<Vec<_>>>()
            .unwrap_or_else(|| vec![Change::All])
    }

    fn line(line: &str) -> Option<Change> {
        match line.split_once('|') {
            Some(("s", rest)) => {
                let (api, id) = rest.split_once('|')?;
                Some(Change::Session {
                    api: api.parse().ok()?,
                    id: id.to_owned(),
                })
            }
            Some(("k", hex)) if hex.len() == 64 => {
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
                }
                Some(Change::Key { hash })
            }
            _ if line == ALL => Some(Change::All),
            _ => None,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::vendor::ApiId;

        #[test]
        fn channels_are_per_schema_and_fit_an_identifier() {
            assert_eq!(super::super::channel("public"), "sessiond_changes:public");
            let long = "s".repeat(63);
            let channel = super::super::channel(&long);
            assert!(channel.len() <= 63, "{channel}");
            assert_ne!(channel, super::super::channel(&"t".repeat(63)));
        }

        #[test]
        fn lines_round_trip() {
            let hash: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
            let lines = vec![
                session(ApiId::Anam, "8d2e0c4b-1f3a-4e5b-9c6d-7e8f9a0b1c2d"),
                key(&hash),
                session(ApiId::Salesnip, "session_a|b"),
            ];
            let packed = pack(lines);
            assert_eq!(packed.len(), 1);
            assert_eq!(
                parse(&packed[0]),
                vec![
                    Change::Session {
                        api: ApiId::Anam,
                        id: "8d2e0c4b-1f3a-4e5b-9c6d-7e8f9a0b1c2d".into()
                    },
                    Change::Key { hash },
                    Change::Session {
                        api: ApiId::Salesnip,
                        id: "session_a|b".into()
                    },
                ]
            );
        }

        #[test]
        fn packing_respects_the_cap() {
            let lines: Vec<String> = (0..2000)
                .map(|i| session(ApiId::Opencx, &format!("{i:036}")))
                .collect();
            let packed = pack(lines.clone());
            assert!(packed.len() > 1);
            assert!(packed.iter().all(|p| p.len() <= MAX));
            let parsed: Vec<Change> = packed.iter().flat_map(|p| parse(p)).collect();
            assert_eq!(parsed.len(), lines.len());
        }

        #[test]
        fn what_cannot_be_said_is_all() {
            assert_eq!(session(ApiId::Anam, "a\nk|00"), ALL);
            assert_eq!(session(ApiId::Anam, &"x".repeat(MAX)), ALL);
            for unreadable in ["", "s|nope|x", "k|zz", "k|00", "q|x", "s|anam"] {
                assert_eq!(parse(unreadable), vec![Change::All], "{unreadable:?}");
            }
            assert_eq!(parse(&format!("{}\nbad", key(&[0; 32]))), vec![Change::All]);
        }
    }
}
