//! The read path and the write path, in one place.
//!
//! Read: presented key → SHA-256 → cached key record (constant-time check) → stored bytes of the
//! session → tenant check. A session of another tenant answers exactly like an unknown id.
//!
//! Write: client document → vendor profile (ids, tenant field, timestamps, defaults, derived fields,
//! invariants, lifecycle) → required-but-nullable fields filled → contract validation → one atomic
//! store write → cache invalidation. Nothing is stored unless every check passes.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::{self, Secret};
use crate::cache::{CachedKey, CachedSession, KeyCache, KeyMemo, SessionCache};
use crate::spec::{Contract, Contracts};
use crate::store::{BuildRow, Change, KeyRow, SessionRow, Store, StoreError};
use crate::telemetry::Telemetry;
use crate::vendor::fake::Fake;
use crate::vendor::{ApiId, PublicError, Sent, Violation, WriteCtx, iso_millis};

/// Why an admin or CLI operation failed. Converted to a response in `http::error` only.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the document violates the contract or the vendor's rules")]
    Invalid(Vec<Violation>),
    #[error("the session changed since the ETag given in If-Match")]
    PreconditionFailed,
    #[error("storage failed")]
    Store(#[from] StoreError),
}

/// Where a created document comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's document: the server fills and checks everything it owns.
    Client,
    /// A client's partial document; every missing field is generated (realistic, valid).
    Fill,
    /// A restored export: values the server normally assigns (sequence numbers) are kept.
    Restore,
}

/// One session of a batch.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub api: ApiId,
    pub tenant: String,
    pub doc: NewDoc,
}

/// The document of a [`NewSession`].
#[derive(Debug, Clone)]
pub enum NewDoc {
    Parsed(Value),
    /// Still text (import), not known to be JSON yet: it is parsed where it is checked and
    /// encoded, so one thread builds, checks, serializes and frees the tree while it is in that
    /// core's cache. Parsing all of a batch first and encoding later cost ~20 % more for those
    /// steps alone (a harness); an import's CPU fell 12 % with this.
    Text(Box<str>),
}

/// A checked batch, ready to store.
#[derive(Debug)]
pub struct PreparedBatch {
    rows: Vec<SessionRow>,
    /// Restored sessions only: the highest sequence number per tenant, which the tenant's
    /// sequence continues after.
    restored_seqs: Vec<(ApiId, String, i64)>,
    /// The sequence numbers reserved for the batch: api, tenant, first, count.
    reserved: Vec<SeqBlock>,
}

/// Numbers of a tenant's sequence reserved for a batch: api, tenant, first, count.
pub type SeqBlock = (ApiId, String, i64, i64);

impl PreparedBatch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The sequence numbers reserved for the batch (given back with [`Service::release_seqs`]
    /// if it is not stored).
    pub fn reserved(&self) -> &[SeqBlock] {
        &self.reserved
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// A failed batch: which item, and why. Nothing of the batch was stored.
#[derive(Debug, thiserror::Error)]
#[error("item {index}: {error}")]
pub struct BatchError {
    pub index: usize,
    #[source]
    pub error: AdminError,
}

/// The outcome of a write: the stored row and its ETag.
#[derive(Debug, Clone)]
pub struct Written {
    pub row: SessionRow,
    pub etag: String,
}

/// A page of a tenant's sessions, as bodies.
#[derive(Debug, Clone)]
pub struct SessionPage {
    pub bodies: Vec<Bytes>,
    pub next_cursor: Option<String>,
}

/// Settings of the service that are not about listeners or storage.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Base of SaleSnip's hosted `url` (`https://chat.salesnip.com/#`).
    pub salesnip_url_base: String,
    /// Capacity of the session read cache in bytes (0: no cache).
    pub cache_bytes: u64,
    /// How long a cached key is trusted before it is re-checked against the store.
    pub key_ttl: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            salesnip_url_base: "https://chat.salesnip.com/#".into(),
            cache_bytes: 256 << 20,
            key_ttl: Duration::from_secs(1),
        }
    }
}

pub struct Service {
    contracts: Contracts,
    store: Arc<dyn Store>,
    keys: KeyCache,
    sessions: SessionCache,
    /// Tenants known to exist. Tenants are never deleted, so a positive entry never goes stale;
    /// it saves creates a store read each.
    known_tenants: std::sync::RwLock<std::collections::HashSet<(ApiId, String)>>,
    telemetry: Telemetry,
    options: ServiceOptions,
}

/// Most tenants remembered by `Service::known_tenants` (it starts over when full).
const KNOWN_TENANTS: usize = 100_000;

/// Strong ETag of a body: its SHA-256, shortened.
pub fn etag_of(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(26);
    tag.push('"');
    for b in &digest[..12] {
        tag.push(char::from(HEX[usize::from(b >> 4)]));
        tag.push(char::from(HEX[usize::from(b & 15)]));
    }
    tag.push('"');
    tag
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

const MAX_CAS_RETRIES: usize = 8;

impl Service {
    /// A service over `store`. Call [`Service::follow_changes`] once the service is shared, so
    /// writes by other nodes reach its caches.
    pub fn new(contracts: Contracts, store: Arc<dyn Store>, options: ServiceOptions) -> Self {
        Service {
            contracts,
            store,
            keys: KeyCache::new(options.key_ttl),
            sessions: SessionCache::new(options.cache_bytes),
            known_tenants: Default::default(),
            telemetry: Telemetry::new(options.cache_bytes),
            options,
        }
    }

    /// Applies the store's change feed (other nodes' writes) to the caches, until the feed ends.
    pub fn follow_changes(self: &Arc<Self>) {
        let Some(mut changes) = self.store.changes() else {
            return;
        };
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(service) = this.upgrade() else { break };
                match change {
                    Change::Session { api, id } => service.sessions.invalidate(api, &id),
                    Change::Key { hash } => service.keys.invalidate(Some(&hash)),
                    Change::All => service.invalidate_all(),
                }
            }
        });
    }

    pub fn contracts(&self) -> &Contracts {
        &self.contracts
    }

    pub fn contract(&self, api: ApiId) -> &Contract {
        self.contracts.get(api)
    }

    /// This service's metrics (`GET /metrics`).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The metrics in Prometheus' text format, the session cache's gauges read now.
    pub fn render_metrics(&self) -> String {
        self.telemetry.render(self.sessions.usage())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // ---- read path ------------------------------------------------------------------------------

    /// The tenant the presented key belongs to, if it is a live key of `api`.
    async fn authenticate(&self, api: ApiId, presented: &str) -> Result<Arc<str>, PublicError> {
        let hash = auth::hash_key(presented);
        let key = match self.keys.get(&hash) {
            Some(k) => k,
            None => {
                let ticket = self.keys.ticket();
                let row = self
                    .store
                    .find_key(&hash)
                    .await
                    .map_err(|e| internal(&e))?
                    .filter(|k| !k.revoked)
                    .ok_or(PublicError::InvalidCredential)?;
                let k = CachedKey {
                    api: row.api,
                    tenant: row.tenant.into(),
                    hash: row.hash,
                };
                self.keys.fill(ticket, k.clone());
                k
            }
        };
        key.admits(api, &hash)?;
        Ok(key.tenant)
    }

    /// The public GET answered from the caches alone, or `None` when it needs the store: the key
    /// is not cached, the session is not cached, or the cached session is another tenant's (whose
    /// answer must cost the same store read as an unknown id's). `memo` is the connection's: see
    /// [`KeyCache::lookup`].
    pub fn cached_get(
        &self,
        api: ApiId,
        key: Option<&str>,
        id: &str,
        memo: &mut KeyMemo,
    ) -> Option<Result<Bytes, PublicError>> {
        let Some(key) = key else {
            return Some(Err(PublicError::MissingCredential));
        };
        let cached = self.keys.lookup(key, memo)?;
        if cached.api != api {
            return Some(Err(PublicError::InvalidCredential));
        }
        match self.sessions.get(api, id) {
            // Every stored id passed `check_session_id` when it was written (`prepare`), so a
            // cached session's id needs no second check.
            Some(s) if *s.tenant == *cached.tenant => Some(Ok(s.body)),
            _ => match check_public_id(api, id) {
                Err(e) => Some(Err(e)),
                Ok(()) => None,
            },
        }
    }

    /// The public GET: the stored body of session `id` of `api`, if `key` may read it.
    pub async fn public_get(
        &self,
        api: ApiId,
        key: Option<&str>,
        id: &str,
    ) -> Result<Bytes, PublicError> {
        let key = key.ok_or(PublicError::MissingCredential)?;
        let tenant = self.authenticate(api, key).await?;
        check_public_id(api, id)?;
        let canonical = api.profile().canonical_session_id(id);
        if let Some(body) = self.tenant_session(api, &canonical, &tenant).await? {
            return Ok(body);
        }
        // An id in another spelling than its canonical one (an upper-case UUID) is also looked up
        // as it is: a store written before ids were stored canonically may hold it so.
        if *canonical != *id
            && let Some(body) = self.tenant_session(api, id, &tenant).await?
        {
            return Ok(body);
        }
        Err(PublicError::NotFound)
    }

    /// The body of session `id` of `api` if it is `tenant`'s, from the cache or the store.
    async fn tenant_session(
        &self,
        api: ApiId,
        id: &str,
        tenant: &str,
    ) -> Result<Option<Bytes>, PublicError> {
        match self.sessions.get(api, id) {
            Some(s) if *s.tenant == *tenant => Ok(Some(s.body)),
            Some(_) => {
                self.telemetry.count_store_read(api);
                // Another tenant's session. Answer as slowly as for an unknown id (which always
                // reads the store: there is no negative cache), so that the time to answer does
                // not tell whether the id exists.
                let _ = self.store.get_public(api, id).await;
                Ok(None)
            }
            None => {
                self.telemetry.count_store_read(api);
                let ticket = self.sessions.ticket(api, id);
                match self.store.get_public(api, id).await {
                    Ok(Some(row)) => {
                        let s = CachedSession {
                            tenant: row.tenant.into(),
                            body: row.body,
                        };
                        self.sessions.fill(ticket, api, id, s.clone());
                        Ok((*s.tenant == *tenant).then_some(s.body))
                    }
                    Ok(None) => Ok(None),
                    Err(e) => Err(internal(&e)),
                }
            }
        }
    }

    /// Forgets cached state of one session (after a write by this or another node).
    pub fn invalidate_session(&self, api: ApiId, id: &str) {
        self.sessions.invalidate(api, id);
    }

    /// Forgets all cached sessions and keys (after invalidations may have been missed).
    pub fn invalidate_all(&self) {
        self.sessions.clear();
        self.keys.invalidate(None);
    }

    /// Bytes and entries in the session cache.
    pub fn cache_usage(&self) -> (u64, usize) {
        self.sessions.usage()
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    // ---- tenants and keys -----------------------------------------------------------------------

    pub async fn create_tenant(
        &self,
        api: ApiId,
        id: Option<String>,
    ) -> Result<String, AdminError> {
        let profile = api.profile();
        let id = match id {
            Some(id) => {
                profile
                    .check_tenant_id(&id)
                    .map_err(AdminError::BadRequest)?;
                // A tenant held under another spelling of the id (an older sessiond's, or an
                // import's) is this tenant: it exists.
                for spelling in tenant_spellings(api, &id).into_iter().skip(1) {
                    if self.store.tenant_exists(api, &spelling).await? {
                        return Err(AdminError::Conflict(format!("tenant {spelling} exists")));
                    }
                }
                profile.canonical_tenant_id(&id).into_owned()
            }
            None => profile.new_tenant_id(),
        };
        match self.store.create_tenant(api, &id, &iso_millis(now())).await {
            Ok(()) => Ok(id),
            Err(StoreError::Conflict) => Err(AdminError::Conflict(format!("tenant {id} exists"))),
            Err(e) => Err(e.into()),
        }
    }

    /// The stored spelling of the tenant a client names: its canonical one (see
    /// [`crate::vendor::Profile::canonical_tenant_id`]), or one a tenant created before tenant
    /// ids were canonical (or restored so) may have (see [`tenant_spellings`]). Unknown →
    /// [`AdminError::NotFound`], naming the tenant as given.
    pub async fn resolve_tenant(&self, api: ApiId, tenant: &str) -> Result<String, AdminError> {
        for spelling in tenant_spellings(api, tenant) {
            match self.require_tenant(api, &spelling).await {
                Ok(()) => return Ok(spelling),
                Err(AdminError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(AdminError::NotFound(format!("no {api} tenant {tenant}")))
    }

    /// The tenant exists under exactly this spelling.
    async fn require_tenant(&self, api: ApiId, tenant: &str) -> Result<(), AdminError> {
        let key = (api, tenant.to_owned());
        let known = |k| {
            self.known_tenants
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(k)
        };
        if known(&key) {
            return Ok(());
        }
        if self.store.tenant_exists(api, tenant).await? {
            let mut set = self
                .known_tenants
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if set.len() >= KNOWN_TENANTS {
                set.clear();
            }
            set.insert(key);
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("no {api} tenant {tenant}")))
        }
    }

    /// A new key of the tenant: its id and the secret, which is never shown again.
    pub async fn create_key(
        &self,
        api: ApiId,
        tenant: &str,
    ) -> Result<(String, Secret), AdminError> {
        let tenant = self.resolve_tenant(api, tenant).await?;
        let secret = auth::new_key(api);
        let id = auth::new_key_id();
        self.store_key(api, &tenant, &id, &secret).await?;
        Ok((id, secret))
    }

    /// Stores a key with a given secret (the demo's fixed key). Idempotent for the same secret.
    pub async fn ensure_key(
        &self,
        api: ApiId,
        tenant: &str,
        id: &str,
        secret: &Secret,
    ) -> Result<(), AdminError> {
        let tenant = &self.resolve_tenant(api, tenant).await?;
        match self
            .store
            .find_key(&auth::hash_key(secret.expose()))
            .await?
        {
            Some(k) if k.api == api && k.tenant == *tenant => Ok(()),
            Some(_) => Err(AdminError::Conflict(
                "that key belongs to another tenant".into(),
            )),
            None => self.store_key(api, tenant, id, secret).await,
        }
    }

    async fn store_key(
        &self,
        api: ApiId,
        tenant: &str,
        id: &str,
        secret: &Secret,
    ) -> Result<(), AdminError> {
        let row = KeyRow {
            id: id.to_owned(),
            api,
            tenant: tenant.to_owned(),
            hash: auth::hash_key(secret.expose()),
            created_at: iso_millis(now()),
            revoked: false,
        };
        self.store.create_key(&row).await.map_err(|e| match e {
            StoreError::Conflict => AdminError::Conflict(format!("key {id} exists")),
            e => e.into(),
        })
    }

    /// Revokes a key; effective for the very next request.
    pub async fn revoke_key(
        &self,
        api: ApiId,
        tenant: &str,
        key_id: &str,
    ) -> Result<(), AdminError> {
        let tenant = &self.resolve_tenant(api, tenant).await?;
        match self.store.revoke_key(api, tenant, key_id).await {
            Ok(hash) => {
                self.keys.invalidate(Some(&hash));
                Ok(())
            }
            Err(StoreError::NotFound) => Err(AdminError::NotFound(format!(
                "no key {key_id} of {api} tenant {tenant}"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_keys(&self, api: ApiId, tenant: &str) -> Result<Vec<KeyRow>, AdminError> {
        let tenant = self.resolve_tenant(api, tenant).await?;
        Ok(self.store.list_keys(api, &tenant).await?)
    }

    // ---- sessions -------------------------------------------------------------------------------

    /// Creates a session of `tenant` from a (partial) document.
    pub async fn create_session(
        &self,
        api: ApiId,
        tenant: &str,
        input: Value,
        origin: Origin,
    ) -> Result<Written, AdminError> {
        let input = into_object(input)?;
        let tenant = &self.resolve_tenant(api, tenant).await?;
        let new = self.prepare_new(api, tenant, input, origin)?;
        let id = new.id.clone();
        let restored_seq = new.restored_seq;
        let stored = if new.needs_seq {
            // Numbers are handed out only to documents that passed every check and were
            // stored, so a rejected create leaves no gap.
            let build: BuildRow = Box::new(move |n| {
                let mut new = new;
                api.profile().assign_sequence(&mut new.doc, n);
                encode(new)
            });
            self.store.insert_numbered(api, tenant, &id, build).await
        } else {
            let row = encode(new);
            self.store.insert_session(&row).await.map(|()| row)
        };
        self.sessions.invalidate(api, &id);
        match stored {
            Ok(row) => {
                // A restored session keeps its number; the tenant's sequence continues after it.
                if let Some(n) = restored_seq {
                    self.store.raise_seq(api, tenant, n).await?;
                }
                Ok(written(row))
            }
            Err(StoreError::Conflict) => Err(AdminError::Conflict(format!("session {id} exists"))),
            Err(StoreError::NotFound) => {
                Err(AdminError::NotFound(format!("no {api} tenant {tenant}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates many sessions: every document is checked first, then all are stored in one
    /// transaction. On failure nothing is stored and the error names the item.
    pub async fn create_batch(
        &self,
        items: Vec<NewSession>,
        origin: Origin,
    ) -> Result<usize, BatchError> {
        let batch = self.prepare_batch(items, origin).await?;
        self.store_batch(batch).await
    }

    /// Every document of a batch checked, and encoded when it needs no sequence number; nothing
    /// reserved or stored, so a failed batch changes nothing.
    async fn check_batch(
        &self,
        items: Vec<NewSession>,
        origin: Origin,
    ) -> Result<Vec<Staged>, BatchError> {
        let fail = |index: usize, error: AdminError| BatchError { index, error };
        let mut tenants: Vec<(ApiId, &str)> = Vec::new();
        let mut unknown_tenant = None;
        for (index, item) in items.iter().enumerate() {
            if !tenants.contains(&(item.api, item.tenant.as_str())) {
                if let Err(e) = self.require_tenant(item.api, &item.tenant).await {
                    unknown_tenant = Some(fail(index, e));
                    break;
                }
                tenants.push((item.api, &item.tenant));
            }
        }
        // The documents before the first of an unknown tenant are checked still: the first bad
        // one is named, whatever is wrong with it.
        let mut items = items;
        if let Some(e) = &unknown_tenant {
            items.truncate(e.index);
        }
        // CPU work, spread over the cores.
        let checked = parallel_map(items, |index, item| {
            let doc = match item.doc {
                NewDoc::Parsed(doc) => doc,
                NewDoc::Text(text) => crate::json::from_str(&text).map_err(|e| {
                    let message = e.to_string();
                    let at = format!(" at line {} column {}", e.line(), e.column());
                    let message = message.strip_suffix(&at).unwrap_or(&message);
                    let message = format!(
                        "cannot be read as JSON: {message} (column {} of the document)",
                        e.column()
                    );
                    fail(
                        index,
                        AdminError::Invalid(vec![Violation::new("", message)]),
                    )
                })?,
            };
            let p = into_object(doc)
                .and_then(|doc| self.prepare_new(item.api, &item.tenant, doc, origin))
                .map_err(|e| fail(index, e))?;
            Ok(if p.needs_seq {
                Staged::Waiting(p)
            } else {
                let restored_seq = p.restored_seq;
                Staged::Encoded(encode(p), restored_seq)
            })
        });
        let mut staged = Vec::with_capacity(checked.len());
        let mut error = None;
        for c in checked {
            match c {
                Ok(s) => staged.push(s),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        match error.or(unknown_tenant) {
            None => Ok(staged),
            // An id taken before the bad session (found only when a batch is stored) is the
            // first thing wrong with the batch.
            Some(e) => Err(Self::first_taken(&staged).unwrap_or(e)),
        }
    }

    /// The first of `staged` whose id an earlier one gave. Not the store's ids: looking each
    /// up took minutes for a batch during a bulk load, whose id index is dropped; a stored id
    /// is found when the batch is stored.
    fn first_taken(staged: &[Staged]) -> Option<BatchError> {
        let mut seen = std::collections::HashSet::new();
        staged.iter().enumerate().find_map(|(index, s)| {
            let (api, id) = match s {
                Staged::Encoded(row, _) => (row.api, &row.id),
                Staged::Waiting(p) => (p.api, &p.id),
            };
            (!seen.insert((api, id))).then(|| BatchError {
                index,
                error: AdminError::Conflict(format!("session {id} exists")),
            })
        })
    }

    /// The checking half of [`Service::create_batch`]: every document checked, numbered and
    /// encoded; nothing stored yet (sequence numbers are reserved, so storing can overlap the
    /// preparation of the next batch).
    pub async fn prepare_batch(
        &self,
        items: Vec<NewSession>,
        origin: Origin,
    ) -> Result<PreparedBatch, BatchError> {
        let fail = |index: usize, error: AdminError| BatchError { index, error };
        let mut staged = self.check_batch(items, origin).await?;
        let mut restored_seqs: Vec<(ApiId, String, i64)> = Vec::new();
        for s in &staged {
            let Staged::Encoded(row, Some(n)) = s else {
                continue;
            };
            match restored_seqs
                .iter_mut()
                .find(|(a, t, _)| *a == row.api && *t == row.tenant)
            {
                Some((_, _, h)) => *h = (*h).max(*n),
                None => restored_seqs.push((row.api, row.tenant.clone(), *n)),
            }
        }
        let mut blocks: Vec<(ApiId, String, i64, i64)> = Vec::new(); // api, tenant, count, next
        for p in Staged::waiting(&mut staged) {
            match blocks.iter_mut().find(|b| b.0 == p.api && b.1 == p.tenant) {
                Some(b) => b.2 += 1,
                None => blocks.push((p.api, p.tenant.clone(), 1, 0)),
            }
        }
        for b in &mut blocks {
            // Sessions restored with their numbers beside ones to number (an import of a file
            // that gives some numbers and leaves others out): the new numbers follow the
            // restored ones, which would otherwise be handed out again.
            if let Some((_, _, highest)) = restored_seqs
                .iter()
                .find(|(a, t, _)| *a == b.0 && *t == b.1)
            {
                self.store
                    .raise_seq(b.0, &b.1, *highest)
                    .await
                    .map_err(|e| fail(0, e.into()))?;
            }
            b.3 = self
                .store
                .reserve_seq(b.0, &b.1, b.2)
                .await
                .map_err(|e| fail(0, e.into()))?;
        }
        let reserved = blocks
            .iter()
            .map(|(api, tenant, count, first)| (*api, tenant.clone(), *first, *count))
            .collect();
        for p in Staged::waiting(&mut staged) {
            let b = blocks
                .iter_mut()
                .find(|b| b.0 == p.api && b.1 == p.tenant)
                .expect("reserved above");
            p.api.profile().assign_sequence(&mut p.doc, b.3);
            b.3 += 1;
        }
        let rows = parallel_map(staged, |_, s| match s {
            Staged::Encoded(row, _) => row,
            Staged::Waiting(p) => encode(p),
        });
        Ok(PreparedBatch {
            rows,
            restored_seqs,
            reserved,
        })
    }

    /// Gives back sequence numbers reserved for batches that were not stored, the latest first,
    /// so that a failed bulk run leaves no gap in a tenant's numbers. Numbers reserved since by
    /// someone else (a server sharing the store) stay used: the gap then stays too.
    pub async fn release_seqs(&self, blocks: &[SeqBlock]) {
        for (api, tenant, first, count) in blocks.iter().rev() {
            match self.store.release_seq(*api, tenant, *first, *count).await {
                Ok(true) => {}
                Ok(false) => tracing::info!(
                    %api, first, count,
                    "sequence numbers of sessions not stored stay used: later ones were handed out"
                ),
                Err(e) => tracing::warn!(%api, error = %e, "sequence numbers not given back"),
            }
        }
    }

    /// Whether every session of a batch could be created, changing nothing (import uses it to
    /// name the first bad line of a batch it will not store).
    pub async fn check_only(
        &self,
        items: Vec<NewSession>,
        origin: Origin,
    ) -> Result<(), BatchError> {
        let staged = self.check_batch(items, origin).await?;
        // Ids too: one the batch gives twice.
        match Self::first_taken(&staged) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The storing half of [`Service::create_batch`]: one transaction, all or nothing.
    pub async fn store_batch(&self, batch: PreparedBatch) -> Result<usize, BatchError> {
        let fail = |index: usize, error: AdminError| BatchError { index, error };
        let PreparedBatch {
            rows,
            restored_seqs,
            reserved: _,
        } = batch;
        let count = rows.len();
        let ids: Vec<(ApiId, String)> = rows.iter().map(|r| (r.api, r.id.clone())).collect();
        let stored = self.store.insert_sessions(rows).await;
        for (api, id) in &ids {
            self.sessions.invalidate(*api, id);
        }
        match stored {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                let mut index = 0;
                for (i, (api, id)) in ids.iter().enumerate() {
                    let dup_in_batch = ids[..i].contains(&(*api, id.clone()));
                    if dup_in_batch
                        || self
                            .store
                            .get_session(*api, id)
                            .await
                            .ok()
                            .flatten()
                            .is_some()
                    {
                        index = i;
                        break;
                    }
                }
                return Err(fail(
                    index,
                    AdminError::Conflict(format!("session {} exists", ids[index].1)),
                ));
            }
            Err(e) => return Err(fail(0, e.into())),
        }
        for (api, tenant, n) in restored_seqs {
            self.store
                .raise_seq(api, &tenant, n)
                .await
                .map_err(|e| fail(0, e.into()))?;
        }
        Ok(count)
    }

    /// A checked new document, not numbered or stored yet.
    fn prepare_new(
        &self,
        api: ApiId,
        tenant: &str,
        input: Map<String, Value>,
        origin: Origin,
    ) -> Result<Prepared, AdminError> {
        let profile = api.profile();
        let (doc, input) = match origin {
            Origin::Fill => {
                thread_local! {
                    // Seeded from the OS once per thread (ChaCha, like `rand::rng()`); seeding a
                    // generator per create cost a `getrandom` call each.
                    static FILL_RNG: std::cell::RefCell<rand::rngs::StdRng> =
                        std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
                }
                let mut generated =
                    FILL_RNG.with_borrow_mut(|rng| profile.generate(&mut Fake { rng }, tenant));
                if let Value::Object(generated) = &mut generated {
                    profile.fit(generated, &input);
                }
                let mut draw =
                    || FILL_RNG.with_borrow_mut(|rng| profile.generate(&mut Fake { rng }, tenant));
                let mut more = MoreElements {
                    draw: &mut draw,
                    draws: 0,
                    drawn: Vec::new(),
                };
                deep_merge(
                    &mut generated,
                    Value::Object(input.clone()),
                    &mut Vec::new(),
                    &mut more,
                );
                (into_object(generated)?, SentCopy::Object(input))
            }
            Origin::Client | Origin::Restore => {
                let snapshot = SentCopy::Scalars(scalar_snapshot(&input));
                (input, snapshot)
            }
        };
        let id = match doc.get("id") {
            // A null is "not set", as in a patch: the server gives the id (an import restores
            // what it reads: there a null is no id).
            None => profile.new_session_id(),
            Some(Value::Null) if origin != Origin::Restore => profile.new_session_id(),
            Some(Value::String(id)) => {
                profile
                    .check_session_id(id)
                    .map_err(|m| AdminError::Invalid(vec![Violation::new("/id", m)]))?;
                profile.canonical_session_id(id).into_owned()
            }
            Some(other) => {
                return Err(AdminError::Invalid(vec![Violation::new(
                    "/id",
                    format!("{other} is not a string"),
                )]));
            }
        };
        let restoring = origin == Origin::Restore;
        let doc = self.build(api, tenant, &id, None, input.as_sent(), doc, restoring)?;
        let restored_seq = if restoring && profile.uses_sequence() {
            profile.sequence_of(&doc).filter(|&n| n > 0)
        } else {
            None
        };
        let needs_seq = profile.uses_sequence() && restored_seq.is_none();
        Ok(Prepared {
            api,
            id,
            tenant: tenant.to_owned(),
            doc,
            needs_seq,
            restored_seq,
        })
    }

    /// A session of any tenant.
    pub async fn get_session(&self, api: ApiId, id: &str) -> Result<Written, AdminError> {
        self.find_session(api, id)
            .await?
            .map(written)
            .ok_or_else(|| AdminError::NotFound(format!("no {api} session {id}")))
    }

    /// The stored session `id` names: under its canonical spelling (see
    /// [`crate::vendor::Profile::canonical_session_id`]), or under `id` as given (a store
    /// written before ids were stored canonically).
    async fn find_session(&self, api: ApiId, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let canonical = api.profile().canonical_session_id(id);
        let found = self.store.get_session(api, &canonical).await?;
        if found.is_some() || *canonical == *id {
            return Ok(found);
        }
        self.store.get_session(api, id).await
    }

    /// The id under which session `id` of `api` is stored (see [`Service::find_session`]); its
    /// canonical spelling if none is. Reads the store only for a non-canonical id.
    async fn stored_id<'a>(&self, api: ApiId, id: &'a str) -> Result<Cow<'a, str>, StoreError> {
        let canonical = api.profile().canonical_session_id(id);
        if *canonical == *id {
            return Ok(canonical);
        }
        Ok(match self.find_session(api, id).await? {
            Some(row) => Cow::Owned(row.id),
            None => canonical,
        })
    }

    /// Applies an RFC 7396 merge patch.
    pub async fn patch_session(
        &self,
        api: ApiId,
        id: &str,
        patch: Value,
        if_match: Option<&str>,
    ) -> Result<Written, AdminError> {
        let patch = into_object(patch)?;
        self.rewrite(api, id, if_match, &patch, |current| {
            let mut doc = Value::Object(current.clone());
            merge_patch(&mut doc, &Value::Object(patch.clone()));
            match doc {
                Value::Object(m) => m,
                _ => unreachable!("merging an object patch into an object yields an object"),
            }
        })
        .await
    }

    /// Replaces the whole document (server fields are kept or recomputed as on create).
    pub async fn replace_session(
        &self,
        api: ApiId,
        id: &str,
        doc: Value,
        if_match: Option<&str>,
    ) -> Result<Written, AdminError> {
        let doc = into_object(doc)?;
        self.rewrite(api, id, if_match, &doc, |_| doc.clone()).await
    }

    async fn rewrite(
        &self,
        api: ApiId,
        id: &str,
        if_match: Option<&str>,
        input: &Map<String, Value>,
        next: impl Fn(&Map<String, Value>) -> Map<String, Value>,
    ) -> Result<Written, AdminError> {
        let id = &*self.stored_id(api, id).await?;
        for _ in 0..MAX_CAS_RETRIES {
            let current = self
                .store
                .get_session(api, id)
                .await?
                .ok_or_else(|| AdminError::NotFound(format!("no {api} session {id}")))?;
            check_if_match(if_match, &current.body)?;
            let prev = into_object(
                serde_json::from_slice(current.doc_bytes()).map_err(StoreError::backend)?,
            )?;
            let doc = self.build(
                api,
                &current.tenant,
                id,
                Some(&prev),
                Sent::Object(input),
                next(&prev),
                false,
            )?;
            let (body, doc) = serialize(api, &doc);
            let row = SessionRow {
                version: current.version + 1,
                body,
                doc,
                ..current
            };
            let stored = self.store.update_session(&row).await;
            self.sessions.invalidate(api, id);
            match stored {
                Ok(()) => return Ok(written(row)),
                Err(StoreError::Conflict) if if_match.is_some() => {
                    return Err(AdminError::PreconditionFailed);
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => {
                    return Err(AdminError::NotFound(format!("no {api} session {id}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AdminError::Conflict(format!(
            "session {id} is being changed concurrently; retry"
        )))
    }

    pub async fn delete_session(
        &self,
        api: ApiId,
        id: &str,
        if_match: Option<&str>,
    ) -> Result<(), AdminError> {
        let id = &*self.stored_id(api, id).await?;
        // With `If-Match`, the version whose body matched: deleted only if still stored, so that
        // a change made between the check and the delete is not lost (it fails the delete).
        let version = match if_match {
            Some(tag) => {
                let current = self
                    .store
                    .get_session(api, id)
                    .await?
                    .ok_or_else(|| AdminError::NotFound(format!("no {api} session {id}")))?;
                check_if_match(Some(tag), &current.body)?;
                Some(current.version)
            }
            None => None,
        };
        let deleted = self.store.delete_session(api, id, version).await;
        self.sessions.invalidate(api, id);
        match deleted {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound) => {
                Err(AdminError::NotFound(format!("no {api} session {id}")))
            }
            Err(StoreError::Conflict) => Err(AdminError::PreconditionFailed),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_sessions(
        &self,
        api: ApiId,
        tenant: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SessionPage, AdminError> {
        let tenant = &self.resolve_tenant(api, tenant).await?;
        let after = cursor
            .map(|c| {
                c.parse::<i64>()
                    .map_err(|_| AdminError::BadRequest(format!("invalid cursor `{c}`")))
            })
            .transpose()?;
        let page = self.store.list_sessions(api, tenant, after, limit).await?;
        Ok(SessionPage {
            bodies: page.rows.into_iter().map(|r| r.body).collect(),
            next_cursor: page.next.map(|n| n.to_string()),
        })
    }

    /// Runs the profile and the contract over a document and returns it checked. Any violation
    /// → [`AdminError::Invalid`], listing all of them.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per write kind, all named"
    )]
    fn build(
        &self,
        api: ApiId,
        tenant: &str,
        id: &str,
        prev: Option<&Map<String, Value>>,
        input: Sent<'_>,
        mut doc: Map<String, Value>,
        restoring: bool,
    ) -> Result<Value, AdminError> {
        let profile = api.profile();
        let contract = self.contract(api);
        let mut problems = Vec::new();
        // An id sent in another spelling of the same id (an upper-case UUID) is no change.
        // A null sent for a field the server owns is left out (a merge patch's "remove").
        if let Some(sent) = input.get("id").filter(|v| !v.is_null())
            && sent
                .as_str()
                .is_none_or(|s| s != id && profile.canonical_session_id(s) != id)
        {
            problems.push(Violation::new(
                "/id",
                format!("the id is `{id}` and cannot change"),
            ));
        }
        doc.insert("id".into(), Value::String(id.to_owned()));
        if let Some(field) = profile.tenant_field() {
            if let Some(sent) = input.get(field).filter(|v| !v.is_null())
                && sent.as_str().is_none_or(|s| {
                    // An import restores what it reads: the tenant's own spelling only.
                    s != tenant && (restoring || profile.canonical_tenant_id(s) != tenant)
                })
            {
                problems.push(Violation::new(
                    format!("/{field}"),
                    format!("must be the tenant `{tenant}` (or left out)"),
                ));
            }
            doc.insert(field.to_owned(), Value::String(tenant.to_owned()));
        }
        let ctx = WriteCtx {
            tenant,
            id,
            now: now(),
            prev,
            input,
            salesnip_url_base: &self.options.salesnip_url_base,
            restoring,
        };
        profile.prepare(&mut doc, &ctx, &mut problems);
        // Nulls first, then the order: a field is at its place however it got into the document.
        let mut doc = Value::Object(doc);
        contract.fill_required_nulls(&mut doc);
        let Value::Object(doc) = doc else {
            unreachable!("still an object")
        };
        let doc = Value::Object(order_like_schema(contract, doc));
        problems.extend(contract.violations(&doc));
        if !problems.is_empty() {
            problems.sort_by(|a, b| a.pointer.cmp(&b.pointer));
            problems.dedup();
            return Err(AdminError::Invalid(problems));
        }
        Ok(doc)
    }
}

/// The row of a prepared document: public body and stored document as bytes.
fn encode(p: Prepared) -> SessionRow {
    let (body, doc) = serialize(p.api, &p.doc);
    SessionRow {
        api: p.api,
        id: p.id,
        tenant: p.tenant,
        version: 1,
        body,
        doc,
    }
}

/// The public body, and the stored document if it differs (redacted secrets).
fn serialize(api: ApiId, doc: &Value) -> (Bytes, Option<Bytes>) {
    let profile = api.profile();
    let stored = json_bytes(doc);
    match profile.public_view(doc) {
        None => (stored, None),
        Some(view) => {
            let body = json_bytes(&view);
            if body == stored {
                (stored, None)
            } else {
                (body, Some(stored))
            }
        }
    }
}

/// `doc` as JSON bytes, in an allocation of exactly their size: serialized into a buffer each
/// thread keeps, since growing a fresh `Vec` step by step (a copy per doubling) cost a sixth of
/// an import's CPU.
fn json_bytes(doc: &Value) -> Bytes {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.clear();
        serde_json::to_writer(&mut *buf, doc).expect("JSON values serialize");
        let bytes = Bytes::copy_from_slice(buf);
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new(); // one huge document does not pin its buffer forever
        }
        bytes
    })
}

/// A checked new session waiting for its sequence number (if its vendor numbers sessions).
struct Prepared {
    api: ApiId,
    id: String,
    tenant: String,
    doc: Value,
    needs_seq: bool,
    /// A restored document's own sequence number: the tenant's sequence continues after it.
    restored_seq: Option<i64>,
}

/// A checked document of a batch: encoded (with its own sequence number if it was restored
/// with one), or waiting for the number it is given.
enum Staged {
    Encoded(SessionRow, Option<i64>),
    Waiting(Prepared),
}

impl Staged {
    fn waiting(staged: &mut [Staged]) -> impl Iterator<Item = &mut Prepared> {
        staged.iter_mut().filter_map(|s| match s {
            Staged::Waiting(p) => Some(p),
            Staged::Encoded(..) => None,
        })
    }
}

/// `f` over `items` on all cores (rayon's pool), results in order.
fn parallel_map<T: Send, R: Send>(
    items: Vec<T>,
    f: impl Fn(usize, T) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    if items.len() < 64 {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .collect();
    }
    items
        .into_par_iter()
        .enumerate()
        .map(|(i, t)| f(i, t))
        .collect()
}

fn written(row: SessionRow) -> Written {
    Written {
        etag: etag_of(&row.body),
        row,
    }
}

/// The vendor's answer to an id that cannot be one of its session ids.
fn check_public_id(api: ApiId, id: &str) -> Result<(), PublicError> {
    let profile = api.profile();
    match profile.check_session_id(id) {
        Ok(()) => Ok(()),
        Err(_) if profile.malformed_id_is_bad_request() => Err(PublicError::MalformedId),
        Err(_) => Err(PublicError::NotFound),
    }
}

fn internal(e: &StoreError) -> PublicError {
    tracing::error!(error = %e, source = ?std::error::Error::source(e), "store failed on the read path");
    PublicError::Internal
}

fn into_object(v: Value) -> Result<Map<String, Value>, AdminError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(AdminError::BadRequest(format!(
            "expected a JSON object, got {}",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => unreachable!(),
            }
        ))),
    }
}

fn check_if_match(if_match: Option<&str>, body: &[u8]) -> Result<(), AdminError> {
    let Some(header) = if_match else {
        return Ok(());
    };
    let current = etag_of(body);
    let ok = header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == current);
    if ok {
        Ok(())
    } else {
        Err(AdminError::PreconditionFailed)
    }
}

/// What a client sent, kept while its document is built (see [`Sent`]).
enum SentCopy {
    Object(Map<String, Value>),
    Scalars(Vec<(String, Value)>),
}

impl SentCopy {
    fn as_sent(&self) -> Sent<'_> {
        match self {
            SentCopy::Object(map) => Sent::Object(map),
            SentCopy::Scalars(fields) => Sent::Scalars(fields),
        }
    }
}

/// The top-level scalar fields of a document: all a profile consults of what a client sent on
/// create (see [`WriteCtx::input`]), without copying nested objects.
fn scalar_snapshot(doc: &Map<String, Value>) -> Vec<(String, Value)> {
    doc.iter()
        .filter(|(_, v)| !v.is_object() && !v.is_array())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The spellings under which a store may hold the tenant `id` names, the canonical one first:
/// then `id` as given, then, for a UUID, the upper-case one (Swift's `uuidString`), which an older
/// sessiond stored as given. Other formats are case-sensitive: `id` alone.
fn tenant_spellings(api: ApiId, id: &str) -> Vec<String> {
    let profile = api.profile();
    let canonical = profile.canonical_tenant_id(id).into_owned();
    let upper = canonical.to_ascii_uppercase();
    let mut spellings = vec![canonical];
    for other in [id.to_owned(), upper] {
        if !spellings.contains(&other) && profile.canonical_tenant_id(&other) == spellings[0] {
            spellings.push(other);
        }
    }
    spellings
}

/// Deep merge for `?fill=true`: objects merge key by key, arrays element by element (below),
/// anything else (null too) replaces. `path` is where `target` is in the document (object keys);
/// `more` gives the elements a given array has beyond the generated one (see [`MoreElements`]).
fn deep_merge(
    target: &mut Value,
    over: Value,
    path: &mut Vec<String>,
    more: &mut MoreElements<'_>,
) {
    match (target, over) {
        (Value::Object(t), Value::Object(o)) => {
            for (k, v) in o {
                match t.get_mut(&k) {
                    Some(slot) => {
                        path.push(k);
                        deep_merge(slot, v, path, more);
                        path.pop();
                    }
                    None => {
                        t.insert(k, v);
                    }
                }
            }
        }
        // The client's array, each object in it completed by the generated element at its place:
        // the members it leaves out are taken, those it gives are kept whole, so that what is
        // inside them is filled by the vendor's defaults, which agree with them (a product's
        // `quantity` of `{"maximum":2}` gets its other bounds by the rules, not drawn ones that
        // may break them). An element beyond the generated ones is completed by one of another
        // generated document (the generated array may even be empty).
        (Value::Array(t), Value::Array(o)) => {
            let generated = std::mem::take(t);
            *t = o
                .into_iter()
                .enumerate()
                .map(|(i, given)| {
                    let Value::Object(mut given) = given else {
                        return given;
                    };
                    let drawn;
                    let template = match generated.get(i) {
                        Some(element) => Some(element),
                        None => {
                            drawn = more.element(path, i, &generated);
                            drawn.as_ref()
                        }
                    };
                    let Some(Value::Object(template)) = template else {
                        return Value::Object(given);
                    };
                    let mut element: Map<String, Value> = template
                        .iter()
                        .map(|(k, v)| (k.clone(), given.remove(k).unwrap_or_else(|| v.clone())))
                        .collect();
                    element.extend(given);
                    Value::Object(element)
                })
                .collect();
        }
        (slot, v) => *slot = v,
    }
}

/// Elements for a `?fill=true` array longer than the generated one: taken from more documents
/// generated for the same tenant, the element at the same index where one of up to
/// [`MoreElements::TRIES`] documents has it (a FunnelFox reply's `screen_id` follows its place),
/// else the last element of one that has any. A client can send an array of thousands of `{}`:
/// past [`MoreElements::DRAWS`] documents in all, the elements drawn so far (or the generated ones)
/// are reused in turn.
struct MoreElements<'a> {
    draw: &'a mut dyn FnMut() -> Value,
    draws: usize,
    /// Elements drawn so far, to reuse once the draws are spent.
    drawn: Vec<Value>,
}

impl MoreElements<'_> {
    const DRAWS: usize = 32;
    const TRIES: usize = 8;

    fn element(&mut self, path: &[String], index: usize, generated: &[Value]) -> Option<Value> {
        let mut found = None;
        for _ in 0..Self::TRIES {
            if self.draws == Self::DRAWS {
                break;
            }
            self.draws += 1;
            let doc = (self.draw)();
            let Some(Value::Array(elements)) = path.iter().try_fold(&doc, |v, k| v.get(k)) else {
                continue;
            };
            if let Some(element) = elements.get(index) {
                found = Some(element.clone());
                break;
            }
            if let Some(last) = elements.last() {
                found = Some(last.clone());
            }
        }
        if let Some(element) = found {
            self.drawn.push(element.clone());
            return Some(element);
        }
        let pool = if self.drawn.is_empty() {
            generated
        } else {
            &self.drawn
        };
        (!pool.is_empty()).then(|| pool[index % pool.len()].clone())
    }
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!()
    };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Top-level keys in the order the contract lists them (what the vendor's serializer does), then
/// any others in the order given.
fn order_like_schema(contract: &Contract, doc: Map<String, Value>) -> Map<String, Value> {
    let ranks: Vec<usize> = doc.keys().map(|k| contract.property_rank(k)).collect();
    if ranks.is_sorted() {
        return doc; // the usual case: documents this server wrote or generated
    }
    let mut entries: Vec<(usize, (String, Value))> = ranks.into_iter().zip(doc).collect();
    entries.sort_by_key(|(rank, _)| *rank); // stable: unknown fields keep their order
    entries.into_iter().map(|(_, kv)| kv).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396 appendix A, a selection.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn fields_follow_the_contract_order_and_extras_keep_theirs() {
        let contracts = Contracts::load(None).unwrap();
        let anam = contracts.get(ApiId::Anam);
        let doc = json!({"zeta": 1, "updatedAt": "u", "alpha": 2, "id": "i", "createdAt": "c"});
        let Value::Object(doc) = doc else {
            unreachable!()
        };
        let ordered: Vec<String> = order_like_schema(anam, doc).keys().cloned().collect();
        assert_eq!(ordered, ["id", "createdAt", "updatedAt", "zeta", "alpha"]);
    }

    #[test]
    fn if_match() {
        let tag = etag_of(b"{}");
        // The first 12 bytes of SHA-256("{}"), in lowercase hex, quoted.
        assert_eq!(tag, "\"44136fa355b3678a1146ad16\"");
        assert!(check_if_match(None, b"{}").is_ok());
        assert!(check_if_match(Some(&tag), b"{}").is_ok());
        assert!(check_if_match(Some("*"), b"{}").is_ok());
        assert!(matches!(
            check_if_match(Some("\"nope\""), b"{}"),
            Err(AdminError::PreconditionFailed)
        ));
    }
}
