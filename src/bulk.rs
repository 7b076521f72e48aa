//! Bulk data: `seed` (generated sessions), and `export` / `import` as NDJSON.
//!
//! Both directions stream: memory stays bounded by one batch whatever the file size. Every imported
//! or seeded session goes through the same checks as an admin write; a batch is stored whole or
//! not at all, and a bad line is reported with its line number.
//!
//! The NDJSON format, one object per line:
//! `{"kind":"tenant","api":"anam","id":"…","created_at":"…","seq":0}`
//! `{"kind":"key","api":"anam","tenant":"…","id":"key_…","hash":"<hex SHA-256>","created_at":"…","revoked":false}`
//! `{"kind":"session","api":"anam","tenant":"…","session":{…the stored document…}}`
//! The export holds the stored documents, secrets included (Anam `personaConfig`): treat it like
//! a database backup. Keys appear only as hashes.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::service::{
    AdminError, BatchError, NewDoc, NewSession, Origin, PreparedBatch, SeqBlock, Service,
};
use crate::store::{KeyRow, Page, Snapshot, StoreError, StoreResult};
use crate::vendor::fake::Fake;
use crate::vendor::{ApiId, MAX_SEQ};

/// Sessions per transaction: import stores them all or none. Random ids put every insert at a
/// random leaf of the `(api, id)` index, and each commit writes every leaf its batch touched: so
/// fewer, larger batches write fewer pages. 5000 rather than 2000: with the checkpoints off the
/// writer, 4 alternated imports of 50 000 sessions went from a median of ~81 k to ~95 k/s.
pub const BATCH: usize = 5000;

/// The longest line `import` reads (its newline included): a longer one is refused, named,
/// rather than read whole (input with no newline, `/dev/zero` or a binary file, took all memory).
/// 32 times the admin API's request limit, so that a session grown by patches still imports.
pub const MAX_LINE: usize = 64 << 20;

/// An import's batch also ends once its lines hold this many bytes, and a chunk of the reader
/// once it holds this many: with [`MAX_LINE`], what waits in memory is bounded in bytes, not
/// only in lines, whatever the sessions' size.
const BATCH_BYTES: usize = 64 << 20;
const CHUNK_BYTES: usize = 8 << 20;

/// Totals of a bulk run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub tenants: u64,
    pub keys: u64,
    pub sessions: u64,
}

/// Asks a bulk run (`seed`, `import`) to stop early: the CLI's on Ctrl-C or SIGTERM. The run stops
/// between batches: the batch being stored ends, those waiting are dropped, and a bulk load (one
/// transaction, [`crate::store::Store::begin_bulk`]) is rolled back whole. The default never
/// comes.
#[derive(Clone, Debug, Default)]
pub struct Stop(Option<tokio::sync::watch::Receiver<bool>>);

impl Stop {
    /// A stop that comes when `true` is sent.
    pub fn on(requests: tokio::sync::watch::Receiver<bool>) -> Stop {
        Stop(Some(requests))
    }

    /// Whether a stop was asked for.
    fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|r| *r.borrow())
    }

    /// Resolves once a stop is asked for (never, if the sender is gone first).
    async fn asked(&self) {
        let Some(mut requests) = self.0.clone() else {
            return std::future::pending().await;
        };
        if requests.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Where a stopped bulk run left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// What stays stored.
    pub totals: Totals,
    /// The run was a bulk load, rolled back whole: the store is as it was before it.
    pub rolled_back: bool,
    /// `import`: the first input line of which nothing is stored (tenant lines after it may be,
    /// as they are stored when read): importing the input again from this line completes it.
    pub resume_line: Option<u64>,
}

/// Why a bulk run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// A [`Stop`] was asked for.
    #[error("stopped before the end")]
    Stopped(Stopped),
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    /// A generated session (`seed`; counted from 1) that could not be stored.
    #[error("generated session {n}: {message}")]
    Generated { n: u64, message: String },
    // Transparent: the cause is the source, printed once by the caller's error chain.
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("I/O")]
    Io(#[from] std::io::Error),
}

/// Generates `count` sessions of `tenant` (created if missing) from `seed` and the tenant's id,
/// in batches.
/// `progress` is called with the number of sessions stored so far.
pub async fn seed(
    service: &Arc<Service>,
    api: ApiId,
    tenant: &str,
    count: u64,
    seed: u64,
    progress: &dyn Fn(u64),
    stop: &Stop,
) -> Result<Totals, BulkError> {
    use rayon::prelude::*;
    let mut totals = Totals::default();
    // The tenant as stored: its canonical spelling (an upper-case UUID names the lower-case one).
    let tenant = &match service.create_tenant(api, Some(tenant.to_owned())).await {
        Ok(id) => {
            totals.tenants = 1;
            id
        }
        Err(AdminError::Conflict(_)) => service.resolve_tenant(api, tenant).await?,
        Err(e) => return Err(e.into()),
    };
    // Batches are stored (on the store's writer) while the next ones are generated and checked.
    let mut storing = Storing::start(service, |first: &u64, e| BulkError::Generated {
        n: first + e.index as u64 + 1,
        message: match &e.error {
            // The same seed and tenant give the same sessions, ids included.
            AdminError::Conflict(_) => format!(
                "{} (was this tenant seeded with this --seed before? another --seed gives other sessions)",
                describe(&e.error)
            ),
            error => describe(error),
        },
    })
    .await?;
    let profile = api.profile();
    // The tenant's share of the seed: two tenants seeded with one seed get sessions (and ids) of
    // their own, the same ones every time.
    let tenant_hash = crate::auth::hash_key(tenant);
    let seed = session_seed(
        seed,
        u64::from_le_bytes(tenant_hash[..8].try_into().expect("8 bytes")),
    );
    let mut generated = 0;
    while generated < count {
        if stop.requested() {
            let stopped = storing.abandon(generated).await?;
            return Err(BulkError::Stopped(Stopped {
                // The tenant was created before the load began: it stays.
                totals: Totals {
                    tenants: totals.tenants,
                    ..stopped.totals
                },
                resume_line: None,
                ..stopped
            }));
        }
        let n = (count - generated).min(BATCH as u64);
        // Generated on every core: session `i` has a generator of its own, seeded from `seed`
        // and `i`, so the output does not depend on how the work is split.
        let first = generated;
        let items: Vec<NewSession> = (first..first + n)
            .into_par_iter()
            .map(|i| {
                let mut rng = StdRng::seed_from_u64(session_seed(seed, i));
                NewSession {
                    api,
                    tenant: tenant.to_owned(),
                    doc: NewDoc::Parsed(profile.generate(&mut Fake { rng: &mut rng }, tenant)),
                }
            })
            .collect();
        let prepared = service.prepare_batch(items, Origin::Client).await;
        storing.push(prepared, first, first).await?;
        progress(storing.stored());
        generated += n;
    }
    totals.sessions = storing.finish().await?;
    progress(totals.sessions);
    Ok(totals)
}

/// The generator seed of the `i`-th session of a seed run (SplitMix64 of the pair: neighbouring
/// runs and sessions get unrelated streams).
fn session_seed(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes every tenant, key and session of `apis` as NDJSON, all read from one
/// [`Store::snapshot`](crate::store::Store::snapshot): the store as it was when the export began,
/// whatever is written to it meanwhile. A [`Stop`] ends it between pages of sessions
/// ([`BulkError::Stopped`]: the output is cut short).
pub async fn export(
    service: &Service,
    apis: &[ApiId],
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
    stop: &Stop,
) -> Result<Totals, BulkError> {
    let mut snapshot = service.store().snapshot().await.map_err(AdminError::from)?;
    let mut totals = Totals::default();
    for &api in apis {
        let tenants = snapshot.list_tenants(api).await.map_err(AdminError::from)?;
        for t in &tenants {
            writeln!(
                out,
                "{}",
                json!({ "kind": "tenant", "api": api, "id": t.id, "created_at": t.created_at, "seq": t.seq })
            )?;
            totals.tenants += 1;
            for k in snapshot
                .list_keys(api, &t.id)
                .await
                .map_err(AdminError::from)?
            {
                let hash: String = k.hash.iter().map(|b| format!("{b:02x}")).collect();
                writeln!(
                    out,
                    "{}",
                    json!({ "kind": "key", "api": api, "tenant": t.id, "id": k.id, "hash": hash, "created_at": k.created_at, "revoked": k.revoked })
                )?;
                totals.keys += 1;
            }
        }
        for t in &tenants {
            let prefix = format!(
                "{{\"kind\":\"session\",\"api\":\"{api}\",\"tenant\":{},\"session\":",
                Value::String(t.id.clone())
            );
            let mut reading = read_page(snapshot, api, &t.id, None);
            snapshot = loop {
                let (back, page) = reading
                    .await
                    .map_err(|e| AdminError::from(StoreError::backend(e)))?;
                let page = page.map_err(AdminError::from)?;
                // The next page is read while this one is written.
                let next = match page.next {
                    Some(n) => ControlFlow::Continue(read_page(back, api, &t.id, Some(n))),
                    None => ControlFlow::Break(back),
                };
                for row in &page.rows {
                    // The stored bytes go out as they are: no parse, no re-serialization.
                    out.write_all(prefix.as_bytes())?;
                    out.write_all(row.doc_bytes())?;
                    out.write_all(b"}\n")?;
                }
                totals.sessions += page.rows.len() as u64;
                progress(totals.sessions);
                if stop.requested() {
                    return Err(BulkError::Stopped(Stopped {
                        totals,
                        rolled_back: false,
                        resume_line: None,
                    }));
                }
                match next {
                    ControlFlow::Continue(ahead) => reading = ahead,
                    ControlFlow::Break(back) => break back,
                }
            };
        }
    }
    out.flush()?;
    Ok(totals)
}

/// A page of a tenant's sessions being read from `snapshot` on a task of its own, which hands
/// the snapshot back with the page.
type PageRead = tokio::task::JoinHandle<(Box<dyn Snapshot>, StoreResult<Page>)>;

fn read_page(
    mut snapshot: Box<dyn Snapshot>,
    api: ApiId,
    tenant: &str,
    after: Option<i64>,
) -> PageRead {
    let tenant = tenant.to_owned();
    tokio::spawn(async move {
        let page = snapshot.list_sessions(api, &tenant, after, BATCH).await;
        (snapshot, page)
    })
}

impl serde::Serialize for ApiId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ApiId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One NDJSON record. Parsed via [`parse_line`]: an internally tagged serde enum would buffer the
/// whole (large) session twice.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum Line {
    Tenant {
        api: ApiId,
        id: String,
        created_at: String,
        #[serde(default)]
        seq: i64,
    },
    Key {
        api: ApiId,
        tenant: String,
        id: String,
        hash: String,
        created_at: String,
        #[serde(default)]
        revoked: bool,
    },
    /// Read by [`parse_line`] itself.
    #[serde(skip_deserializing)]
    Session {
        api: ApiId,
        tenant: String,
        session: NewDoc,
    },
}

/// A session record, its document kept as text (checked to be JSON, not parsed into a tree).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRecord {
    #[expect(dead_code, reason = "only matched: `session` is its one value")]
    kind: SessionKind,
    api: ApiId,
    tenant: String,
    session: Box<serde_json::value::RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum SessionKind {
    Session,
}

fn parse_line(text: &str) -> Result<Line, String> {
    // Nearly every line is a session: read as one without building its document's tree, which
    // is parsed where it is checked (see `NewDoc::Text`). Any other line, or a session line
    // these do not take, goes the general way below, whose errors name what is wrong.
    if let Some(line) = exported_session_line(text) {
        return Ok(line);
    }
    if let Ok(r) = serde_json::from_str::<SessionRecord>(text) {
        return Ok(Line::Session {
            api: r.api,
            tenant: r.tenant,
            session: NewDoc::Text(r.session.into()),
        });
    }
    let mut value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.get("kind") == Some(&Value::from("session")) {
        let obj = value.as_object_mut().expect("has a key, so an object");
        let session = obj.remove("session").ok_or("missing field `session`")?;
        let api = serde_json::from_value(obj.remove("api").ok_or("missing field `api`")?)
            .map_err(|e| format!("api: {e}"))?;
        let tenant = match obj.remove("tenant") {
            Some(Value::String(t)) => t,
            _ => return Err("missing or non-string field `tenant`".into()),
        };
        obj.remove("kind");
        if let Some(extra) = obj.keys().next() {
            return Err(format!("unknown field `{extra}`"));
        }
        return Ok(Line::Session {
            api,
            tenant,
            session: NewDoc::Parsed(session),
        });
    }
    match value.get("kind").and_then(Value::as_str) {
        Some("tenant" | "key") | None => serde_json::from_value(value).map_err(|e| e.to_string()),
        // serde would name only the kinds it reads itself.
        Some(other) => Err(format!(
            "unknown kind `{other}`, expected `tenant`, `key` or `session`"
        )),
    }
}

/// A session line in the layout `export` writes, `{"kind":"session","api":"…","tenant":"…",
/// "session":…}`, taken apart without reading its document: the document is read once, where it
/// is checked, which refuses it if it is not one JSON value (with whatever follows it on the line,
/// as in `…"session":{…},"x":1}`), and names the line. Reading the line with serde first went over
/// every document twice (4.5 % of an import's instructions, callgrind). An api or a tenant other
/// than plain JSON text (escapes, control characters), and any other layout: `None`.
fn exported_session_line(text: &str) -> Option<Line> {
    let rest = text.strip_prefix(r#"{"kind":"session","api":""#)?;
    let (api, rest) = rest.split_once('"')?;
    let (tenant, rest) = rest.strip_prefix(r#","tenant":""#)?.split_once('"')?;
    let session = rest.strip_prefix(r#","session":"#)?.strip_suffix('}')?;
    if tenant.bytes().any(|b| b == b'\\' || b < 0x20) {
        return None;
    }
    Some(Line::Session {
        api: api.parse().ok()?,
        tenant: tenant.to_owned(),
        session: NewDoc::Text(session.into()),
    })
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn describe(e: &AdminError) -> String {
    match e {
        AdminError::Invalid(v) => v
            .iter()
            .map(|v| {
                format!(
                    "{}: {}",
                    if v.pointer.is_empty() {
                        "/"
                    } else {
                        &v.pointer
                    },
                    v.message
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        // The whole chain of causes: the tool's user is the store's operator.
        AdminError::Store(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            format!("storage failed: {message}")
        }
        other => other.to_string(),
    }
}

/// Batches on their way to the store's writer: a task of their own stores them one after another,
/// in the order they were queued, while the caller prepares the next ones. `T` names a batch's
/// sessions in errors (the index of its first session, or the input line of each).
///
/// Up to [`STORE_AHEAD`] prepared batches wait for the writer. With only the one being stored,
/// preparing batch N+2 could not start before batch N was committed, and both cores idled through
/// every commit that took longer than a preparation.
struct Storing<T> {
    service: Arc<Service>,
    queue: Option<tokio::sync::mpsc::Sender<(PreparedBatch, T)>>,
    storer: Option<tokio::task::JoinHandle<Stored<T>>>,
    stored: Arc<AtomicU64>,
    fail: fn(&T, BatchError) -> BulkError,
    /// A bulk load began: [`Storing::finish`] ends it.
    bulk: bool,
    /// The sequence numbers reserved for each batch queued, in order: those of the batches that
    /// end up not stored are given back.
    reserved: Vec<Vec<SeqBlock>>,
    /// Where each batch queued starts (its first input line, or generated session), in order.
    starts: Vec<u64>,
    /// Set by [`Storing::abandon`]: the storer begins no other batch.
    abandoned: Arc<AtomicBool>,
}

/// What the storing task did: the names and sizes of the batches it stored while a bulk load
/// was on (a duplicate id is found only when the load ends), how many batches it stored, and
/// the first batch that failed.
type Stored<T> = (Vec<(T, usize)>, usize, Result<(), (T, BatchError)>);

/// Prepared batches that may wait for the store's writer, besides the one it is storing.
const STORE_AHEAD: usize = 1;

impl<T: Send + 'static> Storing<T> {
    /// Starts a bulk load if the store holds no session (see [`crate::store::Store::begin_bulk`]).
    async fn start(
        service: &Arc<Service>,
        fail: fn(&T, BatchError) -> BulkError,
    ) -> Result<Self, BulkError> {
        let bulk = service
            .store()
            .begin_bulk()
            .await
            .map_err(AdminError::from)?;
        let (queue, mut batches) = tokio::sync::mpsc::channel::<(PreparedBatch, T)>(STORE_AHEAD);
        let stored = Arc::new(AtomicU64::new(0));
        let abandoned = Arc::new(AtomicBool::new(false));
        let storer = tokio::spawn({
            let service = service.clone();
            let stored = stored.clone();
            let abandoned = abandoned.clone();
            async move {
                let (mut kept, mut batches_stored) = (Vec::new(), 0);
                while let Some((batch, names)) = batches.recv().await {
                    if abandoned.load(Ordering::Relaxed) {
                        break;
                    }
                    match service.store_batch(batch).await {
                        Ok(n) => {
                            stored.fetch_add(n as u64, Ordering::Relaxed);
                            batches_stored += 1;
                            if bulk {
                                kept.push((names, n));
                            }
                        }
                        Err(e) => return (kept, batches_stored, Err((names, e))),
                    }
                }
                (kept, batches_stored, Ok(()))
            }
        });
        Ok(Storing {
            service: service.clone(),
            queue: Some(queue),
            storer: Some(storer),
            stored,
            fail,
            bulk,
            reserved: Vec::new(),
            starts: Vec::new(),
            abandoned,
        })
    }

    /// Sessions stored so far.
    fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Queues a prepared batch behind the others; waits while [`STORE_AHEAD`] batches wait. A
    /// batch that failed its checks is the error unless a batch queued before it fails to store:
    /// its sessions come first.
    /// `start` is where the batch starts: its first input line, or generated session.
    async fn push(
        &mut self,
        prepared: Result<PreparedBatch, BatchError>,
        names: T,
        start: u64,
    ) -> Result<(), BulkError> {
        match prepared {
            Ok(batch) => {
                let queue = self
                    .queue
                    .as_ref()
                    .expect("batches are pushed before `finish`");
                self.reserved.push(batch.reserved().to_vec());
                self.starts.push(start);
                if queue.send((batch, names)).await.is_ok() {
                    return Ok(());
                }
                // The storer stopped at a batch that failed to store: that batch's error.
                self.finish().await?;
                Err(BulkError::Io(std::io::Error::other(
                    "the storing task stopped",
                )))
            }
            Err(e) => {
                self.finish().await?;
                Err((self.fail)(&names, e))
            }
        }
    }

    /// Waits until every queued batch is stored, and ends the bulk load if one is on: how many
    /// sessions were stored in all, or the error of the first bad session (nothing of its batch,
    /// nor of any batch after it, is stored).
    async fn finish(&mut self) -> Result<u64, BulkError> {
        let (kept, batches_stored, outcome) = self.storer_ended().await?;
        // The batches from this one on are not stored: their sequence numbers are given back.
        let mut unstored = batches_stored;
        let ended = if std::mem::take(&mut self.bulk) {
            let end = self.service.store().end_bulk().await;
            if end.is_err() {
                unstored = 0; // the whole load was rolled back
            }
            Some(end)
        } else {
            None
        };
        if let Some(Ok(Some(duplicate))) = &ended {
            unstored = duplicate.call;
        }
        self.give_back_from(unstored).await;
        if let Some(end) = ended {
            // A session id stored twice comes before whatever stopped the storing.
            if let Some(duplicate) = end.map_err(AdminError::from)? {
                let (names, _) = &kept[duplicate.call];
                let before = kept[..duplicate.call].iter().map(|(_, n)| *n as u64);
                self.stored.store(before.sum(), Ordering::Relaxed);
                return Err((self.fail)(
                    names,
                    BatchError {
                        index: duplicate.index,
                        error: AdminError::Conflict(format!("session {} exists", duplicate.id)),
                    },
                ));
            }
        }
        outcome.map_err(|(names, e)| (self.fail)(&names, e))?;
        Ok(self.stored())
    }

    /// Closes the queue and waits for the storer to end (once the queue is empty, or at once
    /// once abandoned): what it did.
    async fn storer_ended(&mut self) -> Result<Stored<T>, BulkError> {
        self.queue = None;
        match self.storer.take() {
            Some(storer) => storer
                .await
                .map_err(|e| BulkError::Io(std::io::Error::other(e))),
            None => Ok((Vec::new(), self.reserved.len(), Ok(()))),
        }
    }

    /// Gives back the sequence numbers reserved for the batches from the `first`-th on (not
    /// stored).
    async fn give_back_from(&mut self, first: usize) {
        let given_back: Vec<SeqBlock> = self
            .reserved
            .drain(first.min(self.reserved.len())..)
            .flatten()
            .collect();
        self.service.release_seqs(&given_back).await;
    }

    /// Stops storing (a [`Stop`]): waits for the batch being stored, drops those queued after it,
    /// and rolls a bulk load back whole. `next` is where the first batch not queued yet starts;
    /// `resume_line` is where the first batch not stored starts. The error of a batch that
    /// failed to store comes first.
    async fn abandon(&mut self, next: u64) -> Result<Stopped, BulkError> {
        self.abandoned.store(true, Ordering::Relaxed);
        let (_, mut batches_stored, outcome) = self.storer_ended().await?;
        let rolled_back = std::mem::take(&mut self.bulk);
        if rolled_back {
            self.service
                .store()
                .abort_bulk()
                .await
                .map_err(AdminError::from)?;
            batches_stored = 0;
            self.stored.store(0, Ordering::Relaxed);
        }
        self.give_back_from(batches_stored).await;
        // A batch that failed to store, unless the whole load is gone: then what it names
        // before it is not stored either, and the stop is the news.
        if !rolled_back {
            outcome.map_err(|(names, e)| (self.fail)(&names, e))?;
        }
        Ok(Stopped {
            totals: Totals {
                sessions: self.stored(),
                ..Totals::default()
            },
            rolled_back,
            resume_line: Some(if rolled_back {
                1
            } else {
                self.starts.get(batches_stored).copied().unwrap_or(next)
            }),
        })
    }
}

/// The input lines of a batch's sessions, as runs of consecutive numbers: a bulk load keeps them
/// for every batch until it ends, and a batch of an export's sessions is one run.
#[derive(Debug, Default)]
struct Lines(Vec<(u64, u64)>);

impl Lines {
    fn push(&mut self, line: u64) {
        match self.0.last_mut() {
            Some((first, n)) if *first + *n == line => *n += 1,
            _ => self.0.push((line, 1)),
        }
    }

    /// The `index`-th line (from 0).
    fn nth(&self, index: usize) -> u64 {
        let mut rest = index as u64;
        for &(first, n) in &self.0 {
            if rest < n {
                return first + rest;
            }
            rest -= n;
        }
        panic!("no line number {index} in the batch");
    }
}

/// Parsed records in chunks, with each line's number and length: `(line, _, None)` marks the end
/// of the input.
type Chunk = Vec<(u64, usize, Option<Line>)>;

/// Reads lines on a thread of its own and parses them on every core; blank lines are skipped.
fn spawn_reader(
    mut input: Box<dyn BufRead + Send>,
) -> tokio::sync::mpsc::Receiver<Result<Chunk, BulkError>> {
    use rayon::prelude::*;
    const CHUNK: usize = 512;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    std::thread::spawn(move || {
        let mut line_no = 0u64;
        let mut eof = false;
        // The chunk's lines, one after another in one buffer the thread keeps. Before, a `String`
        // per line was allocated here and freed on a rayon thread (5 alternated imports of 50 000
        // sessions: median CPU 1.32 s before, 1.26 s after).
        let mut text = String::new();
        let mut lines: Vec<(u64, std::ops::Range<usize>)> = Vec::with_capacity(CHUNK);
        let mut unreadable = None;
        while !eof {
            // Up to CHUNK lines, numbered.
            text.clear();
            lines.clear();
            while lines.len() < CHUNK && text.len() < CHUNK_BYTES {
                let start = text.len();
                let too_long = || BulkError::Line {
                    line: line_no + 1,
                    message: format!(
                        "longer than {} MiB (is this NDJSON, one record a line?)",
                        MAX_LINE >> 20
                    ),
                };
                let mut limited = std::io::Read::take(&mut input, MAX_LINE as u64);
                match limited.read_line(&mut text) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) if n == MAX_LINE && !text.ends_with('\n') => {
                        unreadable = Some(too_long());
                        text.truncate(start);
                        break;
                    }
                    // Cut at the limit inside a character: too long, before it is not UTF-8.
                    Err(e)
                        if e.kind() == std::io::ErrorKind::InvalidData && limited.limit() == 0 =>
                    {
                        unreadable = Some(too_long());
                        break;
                    }
                    Ok(_) => {
                        line_no += 1;
                        if text[start..].trim().is_empty() {
                            text.truncate(start);
                        } else {
                            lines.push((line_no, start..text.len()));
                        }
                    }
                    Err(e) => {
                        // The lines read before it are still sent: one of them may be the first
                        // bad line.
                        unreadable = Some(if e.kind() == std::io::ErrorKind::InvalidData {
                            BulkError::Line {
                                line: line_no + 1,
                                message: "not UTF-8 text".into(),
                            }
                        } else {
                            e.into()
                        });
                        break;
                    }
                }
            }
            let parsed: Vec<(u64, usize, Result<Line, String>)> = lines
                .par_iter()
                .map(|(n, range)| (*n, range.len(), parse_line(text[range.clone()].trim())))
                .collect();
            let mut chunk: Chunk = Vec::with_capacity(parsed.len() + 1);
            for (n, len, line) in parsed {
                match line {
                    Ok(line) => chunk.push((n, len, Some(line))),
                    Err(e) => {
                        // Before the unreadable line, if any: this one is named.
                        unreadable = Some(BulkError::Line {
                            line: n,
                            message: format!("not a valid record: {e}"),
                        });
                        break;
                    }
                }
            }
            // Everything before the bad line is stored; nothing after it.
            if let Some(e) = unreadable {
                let _ = tx.blocking_send(Ok(chunk));
                let _ = tx.blocking_send(Err(e));
                return;
            }
            if eof {
                chunk.push((line_no, 0, None));
            }
            if tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads NDJSON and stores it. Tenants and keys that exist already are kept (a key must then have
/// the same hash); sessions are created, in batches, as restored documents.
pub async fn import(
    service: &Arc<Service>,
    input: Box<dyn BufRead + Send>,
    progress: &dyn Fn(u64),
    stop: &Stop,
) -> Result<Totals, BulkError> {
    let fail = |lines: &Lines, e: BatchError| BulkError::Line {
        line: lines.nth(e.index),
        message: describe(&e.error),
    };
    // Batches are stored (on the store's writer) while the next ones are read and checked.
    let mut storing = Storing::start(service, fail).await?;
    let mut totals = Totals::default();
    let mut keys = PendingKeys::default();
    let read = read_into(
        service,
        input,
        &mut storing,
        &mut totals,
        &mut keys,
        progress,
        stop,
    )
    .await;
    let read = match read {
        Ok(None) => Ok(()),
        Ok(Some(next)) => {
            let mut stopped = storing.abandon(next).await?;
            if !stopped.rolled_back {
                // As after a bad line: the keys of the lines before the first one not stored.
                let resume = stopped.resume_line.unwrap_or(next);
                store_keys(service, keys, resume, &mut totals).await?;
                stopped.totals = Totals {
                    sessions: stopped.totals.sessions,
                    ..totals
                };
            }
            progress(stopped.totals.sessions);
            return Err(BulkError::Stopped(stopped));
        }
        Err(e) => Err(e),
    };
    // Whatever stopped the reading, the batches queued before it are stored first; a batch
    // that fails to store holds earlier lines than the one that stopped it, so its error wins.
    let stored = storing.finish().await;
    // Keys are stored last, once every session before them is: a key read after a bad line
    // never starts to work. Of a failed import, those before the line that stopped it are
    // stored, like its tenants; of one that failed otherwise (the store, the input), none.
    let stopped_at = match (&stored, &read) {
        (Ok(_), Ok(())) => u64::MAX,
        (Err(BulkError::Line { line, .. }), _) | (Ok(_), Err(BulkError::Line { line, .. })) => {
            *line
        }
        _ => 0,
    };
    store_keys(service, keys, stopped_at, &mut totals).await?;
    totals.sessions = stored?;
    progress(totals.sessions);
    read.map(|()| totals)
}

/// Stores the keys an import read before line `stopped_at` (`u64::MAX`: every one), counted in
/// `totals`. Of an import stopped before the end, a key that fails to store ends this quietly:
/// the import's own error is reported.
async fn store_keys(
    service: &Service,
    keys: PendingKeys,
    stopped_at: u64,
    totals: &mut Totals,
) -> Result<(), BulkError> {
    for (line, row) in keys
        .rows
        .into_iter()
        .take_while(|(line, _)| *line < stopped_at)
    {
        match store_key(service, row).await {
            Ok(created) => totals.keys += u64::from(created),
            Err(message) if stopped_at == u64::MAX => {
                return Err(BulkError::Line { line, message });
            }
            Err(_) => break,
        }
    }
    Ok(())
}

/// The error of an import stopped at a line (unreadable, or a tenant or key line that is bad):
/// a session before it is named first if one is bad (`batch`, not checked yet) or a batch being
/// stored fails; else the line's own `error`.
async fn stop_at(
    service: &Arc<Service>,
    storing: &mut Storing<Lines>,
    batch: Vec<NewSession>,
    batch_lines: &Lines,
    error: BulkError,
) -> BulkError {
    if let Err(e) = storing.finish().await {
        return e;
    }
    if !batch.is_empty()
        && let Err(e) = service.check_only(batch, Origin::Restore).await
    {
        return (storing.fail)(batch_lines, e);
    }
    error
}

/// A tenant line (stored now) or a key line (checked now, stored by [`import`] at its end).
async fn own_record(
    service: &Arc<Service>,
    record: Line,
    line_no: u64,
    totals: &mut Totals,
    keys: &mut PendingKeys,
) -> Result<(), BulkError> {
    match record {
        Line::Tenant {
            api,
            id,
            created_at,
            seq,
        } => {
            let line_err = |message: String| BulkError::Line {
                line: line_no,
                message,
            };
            api.profile().check_tenant_id(&id).map_err(line_err)?;
            if !(0..=MAX_SEQ).contains(&seq) {
                return Err(line_err(format!(
                    "`seq` must be a whole number from 0 to {MAX_SEQ}"
                )));
            }
            match service.store().create_tenant(api, &id, &created_at).await {
                Ok(()) => totals.tenants += 1,
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(AdminError::from(e).into()),
            }
            service
                .store()
                .raise_seq(api, &id, seq)
                .await
                .map_err(AdminError::from)?;
        }
        Line::Key {
            api,
            tenant,
            id,
            hash,
            created_at,
            revoked,
        } => {
            let line_err = |message: String| BulkError::Line {
                line: line_no,
                message,
            };
            let hash =
                parse_hash(&hash).ok_or_else(|| line_err("hash must be 64 hex digits".into()))?;
            if !service
                .store()
                .tenant_exists(api, &tenant)
                .await
                .map_err(AdminError::from)?
            {
                return Err(line_err(format!(
                    "key {id} names unknown {api} tenant {tenant}"
                )));
            }
            let row = KeyRow {
                id: id.clone(),
                api,
                tenant,
                hash,
                created_at,
                revoked,
            };
            // Checked now, stored once the sessions before it are (see `import`): a key of
            // the store or of an earlier line with this hash or this id must be this key.
            let same = |k: &KeyRow| {
                k.id == row.id && k.api == row.api && k.tenant == row.tenant && k.hash == row.hash
            };
            let store = service.store();
            let by_hash = store.find_key(&hash).await.map_err(AdminError::from)?;
            let clash = || line_err(format!("key {id} clashes with an existing key"));
            if by_hash.is_some_and(|k| !same(&k)) {
                return Err(clash());
            }
            let by_id = store.find_key_by_id(&id).await.map_err(AdminError::from)?;
            if by_id.is_some_and(|k| !same(&k)) {
                return Err(clash());
            }
            keys.add(line_no, row).map_err(|()| clash())?;
        }
        Line::Session { .. } => unreachable!("sessions are batched"),
    }
    Ok(())
}

/// The keys an import has read, in order, to be stored at its end; found by hash and by id.
#[derive(Default)]
struct PendingKeys {
    rows: Vec<(u64, KeyRow)>,
    by_hash: std::collections::HashMap<[u8; 32], usize>,
    by_id: std::collections::HashMap<String, usize>,
}

impl PendingKeys {
    /// Adds the key of line `line`, unless an earlier line gave its hash or its id to another
    /// key (`Err`); a line repeating an earlier one is fine.
    fn add(&mut self, line: u64, row: KeyRow) -> Result<(), ()> {
        let same = |k: &KeyRow| {
            k.id == row.id && k.api == row.api && k.tenant == row.tenant && k.hash == row.hash
        };
        for earlier in [self.by_hash.get(&row.hash), self.by_id.get(&row.id)]
            .into_iter()
            .flatten()
        {
            if !same(&self.rows[*earlier].1) {
                return Err(());
            }
        }
        self.by_hash.insert(row.hash, self.rows.len());
        self.by_id.insert(row.id.clone(), self.rows.len());
        self.rows.push((line, row));
        Ok(())
    }
}

/// Stores a key of an import: whether it is new (`false`: the store has it already, with the
/// same hash; revoked now if the line says so).
async fn store_key(service: &Service, row: KeyRow) -> Result<bool, String> {
    let clash = || format!("key {} clashes with an existing key", row.id);
    match service.store().create_key(&row).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => match service.store().find_key(&row.hash).await {
            Ok(Some(k)) if k.id == row.id && k.api == row.api && k.tenant == row.tenant => {
                if row.revoked && !k.revoked {
                    service
                        .revoke_key(row.api, &row.tenant, &row.id)
                        .await
                        .map_err(|e| describe(&e))?;
                }
                Ok(false)
            }
            Ok(_) => Err(clash()),
            Err(e) => Err(describe(&AdminError::from(e))),
        },
        Err(e) => Err(describe(&AdminError::from(e))),
    }
}

/// The reading half of [`import`]: every record of `input`, tenants and keys stored as they come,
/// sessions queued on `storing` in batches. On a [`Stop`], `Some` of the first line not queued
/// (the first line of the batch being gathered, or the line after the last one read).
async fn read_into(
    service: &Arc<Service>,
    input: Box<dyn BufRead + Send>,
    storing: &mut Storing<Lines>,
    totals: &mut Totals,
    keys: &mut PendingKeys,
    progress: &dyn Fn(u64),
    stop: &Stop,
) -> Result<Option<u64>, BulkError> {
    let mut batch: Vec<NewSession> = Vec::with_capacity(BATCH);
    let mut batch_lines = Lines::default();
    let mut batch_bytes = 0;
    let mut last_line = 0;
    // Reading and parsing run on their own thread, ahead of checking and storing.
    let mut records = spawn_reader(input);
    let mut chunk = std::collections::VecDeque::new();
    loop {
        let not_queued = |batch_lines: &Lines| batch_lines.0.first().map_or(last_line + 1, |r| r.0);
        // (A chunk may be empty: blank lines only, or the lines before a bad one.)
        while chunk.is_empty() {
            let next = tokio::select! {
                biased;
                () = stop.asked() => return Ok(Some(not_queued(&batch_lines))),
                next = records.recv() => next,
            };
            match next {
                Some(Ok(next)) => chunk = next.into(),
                Some(Err(unreadable)) => {
                    let batch = std::mem::take(&mut batch);
                    return Err(stop_at(service, storing, batch, &batch_lines, unreadable).await);
                }
                None => {
                    return Err(BulkError::Io(std::io::Error::other(
                        "the reader thread stopped",
                    )));
                }
            }
        }
        let (line_no, line_len, parsed) = chunk.pop_front().expect("refilled above");
        let eof = parsed.is_none();
        // Tenants and keys are stored as soon as they are read, so a batch of sessions only ends
        // at its size or at the end of the input: a file shorter than a batch is one batch.
        let flush = eof || batch.len() >= BATCH || batch_bytes >= BATCH_BYTES;
        if flush && !batch.is_empty() {
            if stop.requested() {
                return Ok(Some(not_queued(&batch_lines)));
            }
            batch_bytes = 0;
            let lines = std::mem::take(&mut batch_lines);
            let start = lines.nth(0);
            let prepared = service
                .prepare_batch(std::mem::take(&mut batch), Origin::Restore)
                .await;
            storing.push(prepared, lines, start).await?;
            progress(storing.stored());
        }
        last_line = line_no;
        match parsed {
            None => break,
            Some(record @ (Line::Tenant { .. } | Line::Key { .. })) => {
                if let Err(e) = own_record(service, record, line_no, totals, keys).await {
                    let batch = std::mem::take(&mut batch);
                    return Err(stop_at(service, storing, batch, &batch_lines, e).await);
                }
            }
            Some(Line::Session {
                api,
                tenant,
                session,
            }) => {
                batch.push(NewSession {
                    api,
                    tenant,
                    doc: session,
                });
                batch_lines.push(line_no);
                batch_bytes += line_len;
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_an_unknown_kind_names_every_kind() {
        let err = parse_line(r#"{"kind":"sesion","api":"anam"}"#)
            .err()
            .unwrap();
        assert_eq!(
            err,
            "unknown kind `sesion`, expected `tenant`, `key` or `session`"
        );
        assert!(
            parse_line(r#"{"api":"anam"}"#)
                .err()
                .unwrap()
                .contains("`kind`")
        );
    }
}
