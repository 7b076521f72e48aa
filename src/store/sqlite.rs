//! The embedded SQLite backend: one file in WAL mode, one writer connection, a small pool of
//! readers. Every write is one transaction committed with `synchronous = FULL`, so an acknowledged
//! write survives `kill -9` and power loss. Blocking calls run on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::{KeyRow, Page, SessionRow, Store, StoreError, StoreResult};
use crate::vendor::ApiId;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/sqlite/0001_init.sql")];
const READERS: usize = 8;

pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this sessiond ({}); upgrade sessiond",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .with_context(|| format!("migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        configure(&writer)?;
        migrate(&mut writer)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(StoreError::backend)?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open(&inner.path).map_err(StoreError::backend)?;
                    configure(&c).map_err(StoreError::backend)?;
                    c
                }
            };
            let out = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn api_of(s: &str) -> rusqlite::Result<ApiId> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn session_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    let api: String = r.get("api")?;
    Ok(SessionRow {
        api: api_of(&api)?,
        id: r.get("id")?,
        tenant: r.get("tenant")?,
        version: r.get("version")?,
        body: Bytes::from(r.get::<_, Vec<u8>>("body")?),
        doc: r.get::<_, Option<Vec<u8>>>("doc")?.map(Bytes::from),
    })
}

fn key_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    let api: String = r.get("api")?;
    let hash: Vec<u8> = r.get("hash")?;
    Ok(KeyRow {
        id: r.get("id")?,
        api: api_of(&api)?,
        tenant: r.get("tenant")?,
        hash: hash.try_into().map_err(|_| {
            rusqlite::Error::InvalidColumnType(0, "hash".into(), rusqlite::types::Type::Blob)
        })?,
        created_at: r.get("created_at")?,
        revoked: r.get::<_, Option<String>>("revoked_at")?.is_some(),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, api: ApiId, id: &str, created_at: &str) -> StoreResult<()> {
        let (id, created_at) = (id.to_owned(), created_at.to_owned());
        self.write(move |c| {
            match c.execute(
                "INSERT INTO tenants (api, id, created_at) VALUES (?1, ?2, ?3)",
                params![api.as_str(), id, created_at],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict),
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn tenant_exists(&self, api: ApiId, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.read(move |c| {
            c.query_row(
                "SELECT 1 FROM tenants WHERE api = ?1 AND id = ?2",
                params![api.as_str(), id],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(backend)
        })
        .await
    }

    async fn list_tenants(&self, api: ApiId) -> StoreResult<Vec<String>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT id FROM tenants WHERE api = ?1 ORDER BY created_at, id")
                .map_err(backend)?;
            st.query_map([api.as_str()], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(backend)
        })
        .await
    }

    async fn next_seq(&self, api: ApiId, tenant: &str) -> StoreResult<i64> {
        let tenant = tenant.to_owned();
        self.write(move |c| {
            c.query_row(
                "UPDATE tenants SET seq = seq + 1 WHERE api = ?1 AND id = ?2 RETURNING seq",
                params![api.as_str(), tenant],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn create_key(&self, key: &KeyRow) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |c| {
            match c.execute(
                "INSERT INTO api_keys (id, api, tenant, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key.id, key.api.as_str(), key.tenant, &key.hash[..], key.created_at],
            ) {
                Ok(_) => Ok(()),
                // Unknown tenant (foreign key) or a duplicate: both are constraint failures; the
                // service checks the tenant first, so here it is a duplicate id or hash.
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict),
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn revoke_key(&self, api: ApiId, tenant: &str, key_id: &str) -> StoreResult<[u8; 32]> {
        let (tenant, key_id) = (tenant.to_owned(), key_id.to_owned());
        let now = crate::vendor::iso_millis(chrono::Utc::now());
        self.write(move |c| {
            let hash: Option<Vec<u8>> = c
                .query_row(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?4)
                     WHERE api = ?1 AND tenant = ?2 AND id = ?3 RETURNING hash",
                    params![api.as_str(), tenant, key_id, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            hash.and_then(|h| h.try_into().ok())
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn find_key(&self, hash: &[u8; 32]) -> StoreResult<Option<KeyRow>> {
        let hash = *hash;
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM api_keys WHERE hash = ?1")
                .and_then(|mut st| st.query_row([&hash[..]], key_from).optional())
                .map_err(backend)
        })
        .await
    }

    async fn list_keys(&self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT * FROM api_keys WHERE api = ?1 AND tenant = ?2 ORDER BY created_at, id",
                )
                .map_err(backend)?;
            st.query_map(params![api.as_str(), tenant], key_from)
                .and_then(|rows| rows.collect())
                .map_err(backend)
        })
        .await
    }

    async fn insert_session(&self, row: &SessionRow) -> StoreResult<()> {
        let row = row.clone();
        self.write(move |c| {
            match c.execute(
                "INSERT INTO sessions (api, id, tenant, version, body, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.api.as_str(),
                    row.id,
                    row.tenant,
                    row.version,
                    &row.body[..],
                    row.doc.as_deref()
                ],
            ) {
                Ok(_) => Ok(()),
                Err(e) if is_constraint(&e) => Err(StoreError::Conflict),
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn update_session(&self, row: &SessionRow) -> StoreResult<()> {
        let row = row.clone();
        self.write(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT version FROM sessions WHERE api = ?1 AND id = ?2",
                    params![row.api.as_str(), row.id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            match current {
                None => return Err(StoreError::NotFound),
                Some(v) if v != row.version - 1 => return Err(StoreError::Conflict),
                Some(_) => {}
            }
            tx.execute(
                "UPDATE sessions SET version = ?3, body = ?4, doc = ?5 WHERE api = ?1 AND id = ?2",
                params![
                    row.api.as_str(),
                    row.id,
                    row.version,
                    &row.body[..],
                    row.doc.as_deref()
                ],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn delete_session(&self, api: ApiId, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            match c
                .execute(
                    "DELETE FROM sessions WHERE api = ?1 AND id = ?2",
                    params![api.as_str(), id],
                )
                .map_err(backend)?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn get_session(&self, api: ApiId, id: &str) -> StoreResult<Option<SessionRow>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM sessions WHERE api = ?1 AND id = ?2")
                .and_then(|mut st| {
                    st.query_row(params![api.as_str(), id], session_from)
                        .optional()
                })
                .map_err(backend)
        })
        .await
    }

    async fn list_sessions(
        &self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT * FROM sessions WHERE api = ?1 AND tenant = ?2 AND pk > ?3
                     ORDER BY pk LIMIT ?4",
                )
                .map_err(backend)?;
            let mut rows = st
                .query(params![
                    api.as_str(),
                    tenant,
                    after.unwrap_or(0),
                    limit as i64 + 1
                ])
                .map_err(backend)?;
            let mut out = Vec::with_capacity(limit.min(1000));
            let mut last_pk = None;
            let mut more = false;
            while let Some(r) = rows.next().map_err(backend)? {
                if out.len() == limit {
                    more = true;
                    break;
                }
                last_pk = Some(r.get::<_, i64>("pk").map_err(backend)?);
                out.push(session_from(r).map_err(backend)?);
            }
            Ok(Page {
                rows: out,
                next: if more { last_pk } else { None },
            })
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }
}
