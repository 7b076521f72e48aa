//! The embedded SQLite backend: one file in WAL mode, one writer thread, a small pool of readers.
//!
//! Writes are group-committed: the writer thread takes every write that is waiting, runs each in
//! its own savepoint (so one failing write does not undo the others), commits them in one
//! transaction with `synchronous = FULL`, and only then answers each caller. An acknowledged write
//! therefore survives `kill -9` and power loss, and many concurrent writers share one fsync.
//! Reads run on reader threads, each with its own connection; a thread that wakes takes several
//! waiting reads at once, so under load a read costs a fraction of a thread switch. A few threads
//! suffice while the data is in memory; when reads wait on the disk (a store larger than RAM),
//! more threads start, up to [`READERS_PER_CORE`] a core, so that many reads wait on the disk at once.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OptionalExtension, params};

use super::codec::Codecs;
use super::{
    BuildRow, BulkDuplicate, KeyRow, Page, PublicSession, SessionRow, Snapshot, Store, StoreError,
    StoreOptions, StoreResult, TenantRow,
};
use crate::vendor::ApiId;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_codecs.sql"),
    include_str!("../../migrations/sqlite/0003_session_indexes.sql"),
];
/// Batches at least this large are compressed on every core (rayon) rather than on the caller.
const PARALLEL_PACK: usize = 64;
/// Reader threads that always run: enough for reads served from memory, which are CPU-bound.
const MIN_READERS: usize = 4;
/// Most reader threads per core the process may run on: how many reads may wait on the disk at
/// once. Reads that wait on the disk still cost CPU (the system call, the device's doorbell and
/// interrupt, thread switches: 35-100 µs a request on a VM's virtio disk, most of them misses),
/// so one core serves ~10 000-25 000 of them a second, and 8 in flight cover a disk latency of
/// 0.8 ms at 10 000 a second. More threads only add switching and memory, and the readers that
/// share a core with the runtime thread make both wait for it: misses spend more time handed
/// between threads than reading (the `sessiond::store::handoff` log). On a cold 10 M-session store,
/// sessiond on one core (session 18, Xeon, a disk answering random 4 KiB reads in 0.06 ms):
/// 64 connections of random GETs served 270-284 k requests in 10 s with 4 readers, 246-257 k with
/// 8, 202-213 k with 16; at a fixed 11 000/s the server used 5.96-6.10, 6.47 and 7.21 s of CPU in
/// 15 s and the p50 was 0.43-0.45, 0.51 and 0.65 ms (2 alternated runs each). Session 15's host: 16 against
/// 64 gave 1.12x the req/s at 0.88x the CPU per request and 143 against 194 MiB of peak RSS. 8
/// rather than 4 leaves room for slower disks (each reader keeps ~1.6 MiB: its allocator pages,
/// its page cache, its decompression context).
const READERS_PER_CORE: usize = 8;
/// Most reader threads in all, however many cores.
const MAX_READERS: usize = 64;

/// How many reader threads may run: [`READERS_PER_CORE`] for each core the process may run on
/// (its CPU affinity), between that and [`MAX_READERS`].
fn max_readers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (READERS_PER_CORE * cores).clamp(READERS_PER_CORE, MAX_READERS)
}
/// Most reads one reader thread takes per wake-up (the rest wake another thread).
const READ_BATCH: usize = 16;
/// Another reader starts when every reader is busy, the oldest waiting read has waited this
/// long, and reads wait on the disk (see [`DISK_BOUND_PERMILLE`]).
const GROW_AFTER: Duration = Duration::from_millis(1);
/// Reads wait on the disk when at least this many of a thousand recent ones blocked their
/// thread (a voluntary context switch: a `pread` of a page the OS does not have in memory).
/// Time alone would not tell: on a busy core a read served from memory also takes long, waiting
/// for the CPU, and more threads would only add switching there.
const DISK_BOUND_PERMILLE: u64 = 250;
/// A reader beyond [`MIN_READERS`] that has had nothing to do this long stops.
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Most writes committed together.
const MAX_GROUP: usize = 1024;

/// Answers one caller once the group its write belongs to is committed (or not).
type Finisher = Box<dyn FnOnce(Result<(), String>) + Send>;
/// One write: runs inside its savepoint, says whether to keep it, and how to answer.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finisher) + Send>;

pub struct SqliteStore {
    readers: Arc<Readers>,
    jobs: mpsc::Sender<Job>,
    /// A bulk load under way, or not (see [`Store::begin_bulk`]); shared with the writer thread.
    bulk: Arc<Mutex<Bulk>>,
    /// Whether `bulk` is [`Bulk::On`]: reads then go to the writer, whose transaction holds the
    /// load (and read it without taking the lock).
    bulk_on: Arc<std::sync::atomic::AtomicBool>,
    /// Opened for a bulk tool ([`StoreOptions::bulk_tool`]): every read goes to the writer (no
    /// reader threads).
    bulk_tool: bool,
    /// The store was opened by a bulk tool, to be loaded in bulk ([`bulk_fits`]), and left WAL
    /// mode: a load writes the database file directly (see [`write_directly`]), and the writer
    /// goes back to WAL mode as it ends. The tool then has the store to itself.
    direct: bool,
    /// Compression of the stored documents (see [`super::codec`]).
    codecs: Arc<Codecs>,
    /// The writer and checkpointer threads, joined when the store is dropped; each hands back
    /// its connection, to be closed after the others (see the `Drop`).
    threads: Vec<StoreThread>,
    /// The thread reading the id index at start (see [`Store::prewarm`]), and how to stop it.
    prewarmer: Mutex<Option<(rusqlite::InterruptHandle, StoreThread)>>,
}

/// A thread of the store; it ends handing back its connection, if it still has one.
type StoreThread = JoinHandle<Option<Connection>>;

/// One read, run on a reader thread's connection.
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The queue of the reader threads.
struct Readers {
    /// The database file, for the connections of readers started later.
    path: PathBuf,
    /// Most reader threads ([`max_readers`]).
    max_threads: usize,
    queue: Mutex<ReadQueue>,
    wake: Condvar,
    /// Of a thousand recent reads, how many blocked on the disk (a moving average, over the
    /// reader threads' batches and the reads run inline).
    blocked_permille: AtomicU64,
    /// The reader threads, joined when the store is dropped (those that stopped on their own
    /// are let go as others start).
    threads: Mutex<Vec<StoreThread>>,
}

#[derive(Default)]
struct ReadQueue {
    /// Waiting reads, with the time each was submitted.
    jobs: VecDeque<(Instant, ReadJob)>,
    /// Reader threads waiting on `wake` (so a submit costs no wake-up syscall while all are busy).
    idle: usize,
    /// Reader threads running or starting.
    threads: usize,
    closed: bool,
}

/// The name of reader thread `id`: Linux keeps 15 bytes of a thread's name, and `top -H`, perf and
/// /proc show those; "sqlite-reader-10" to "-16" all showed as "sqlite-reader-1".
fn reader_name(id: usize) -> String {
    format!("sqlite-read-{id}")
}

/// Which of a runtime thread's inline reads count whether they blocked: one in
/// [`INLINE_SAMPLE_EVERY`], and every one after a counted read that blocked, so that a store that
/// starts to wait on the disk is still noticed within a few reads. Counting takes two
/// `getrusage` calls, 2 % of a warm miss's CPU when every read was counted.
struct InlineSampler {
    reads: std::cell::Cell<u32>,
    last_blocked: std::cell::Cell<bool>,
}

impl InlineSampler {
    /// Whether the next read is counted.
    fn next(&self) -> bool {
        let n = self.reads.get();
        self.reads.set(n.wrapping_add(1));
        self.last_blocked.get() || n.is_multiple_of(INLINE_SAMPLE_EVERY)
    }
}

thread_local! {
    static INLINE_SAMPLER: InlineSampler = const {
        InlineSampler { reads: std::cell::Cell::new(0), last_blocked: std::cell::Cell::new(false) }
    };
}

/// One inline read in this many counts whether it blocked (see [`InlineSampler`]).
const INLINE_SAMPLE_EVERY: u32 = 16;

/// Voluntary context switches of the calling thread so far (0 if the OS will not say).
fn blocking_waits() -> u64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_THREAD).map_or(0, |u| u.voluntary_context_switches() as u64)
}

impl Readers {
    /// Whether recent reads blocked on the disk.
    fn disk_bound(&self) -> bool {
        self.blocked_permille.load(Ordering::Relaxed) >= DISK_BOUND_PERMILLE
    }

    /// Folds `ran` reads, `blocked` of which blocked on the disk, into the moving average.
    /// (Concurrent updates may lose one another's: the average only steers, it does not count.)
    fn count_blocked(&self, ran: u64, blocked: u64) {
        if let Some(permille) = (blocked * 1000).checked_div(ran) {
            let old = self.blocked_permille.load(Ordering::Relaxed);
            let new = (old * 7 + permille.min(1000)) / 8;
            self.blocked_permille.store(new, Ordering::Relaxed);
        }
    }

    /// Runs `read` on the calling thread, on a connection of that thread's own, and counts
    /// whether it blocked; `Err(panic)` if it panicked. `read` comes back if no connection
    /// could be opened.
    fn inline<T, F: FnOnce(&Connection) -> T>(
        self: &Arc<Self>,
        read: F,
    ) -> Result<std::thread::Result<T>, F> {
        thread_local! {
            /// The calling thread's connection to each open store (a process may open several).
            static CONNECTIONS: std::cell::RefCell<InlineConnections> =
                const { std::cell::RefCell::new(InlineConnections(Vec::new())) };
        }
        CONNECTIONS.with_borrow_mut(|InlineConnections(conns)| {
            // Connections to stores that were closed go with them.
            for (_, conn) in conns.extract_if(.., |(store, _)| store.strong_count() == 0) {
                close(conn);
            }
            let me = Arc::as_ptr(self);
            let at = match conns.iter().position(|(store, _)| store.as_ptr() == me) {
                Some(at) => at,
                None => match open_reader(&self.path) {
                    Ok(conn) => {
                        conns.push((Arc::downgrade(self), conn));
                        conns.len() - 1
                    }
                    Err(_) => return Err(read),
                },
            };
            let conn = &conns[at].1;
            let read = std::panic::AssertUnwindSafe(|| read(conn));
            if !INLINE_SAMPLER.with(InlineSampler::next) {
                return Ok(std::panic::catch_unwind(read));
            }
            let waits = blocking_waits();
            let out = std::panic::catch_unwind(read);
            let blocked = blocking_waits().saturating_sub(waits);
            INLINE_SAMPLER.with(|s| s.last_blocked.set(blocked > 0));
            self.count_blocked(1, blocked);
            Ok(out)
        })
    }

    fn submit(self: &Arc<Self>, job: ReadJob) {
        let now = Instant::now();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.jobs.push_back((now, job));
        if q.idle > 0 {
            self.wake.notify_one();
            return;
        }
        let waited = q.jobs.front().map_or(Duration::ZERO, |(at, _)| now - *at);
        if q.threads < self.max_threads && waited >= GROW_AFTER && self.disk_bound() {
            q.threads += 1;
            let id = q.threads;
            drop(q);
            self.start(id);
        }
    }

    /// Starts reader thread `id` (its connection is opened on the thread). A reader that cannot
    /// start leaves the others to do the work.
    fn start(self: &Arc<Self>, id: usize) {
        let readers = self.clone();
        let started = std::thread::Builder::new()
            .name(reader_name(id))
            .spawn(move || match open_reader(&readers.path) {
                Ok(conn) => readers.run(conn),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start another SQLite reader");
                    readers.exit();
                    None
                }
            });
        match started {
            Ok(thread) => self.keep(thread),
            Err(_) => self.exit(),
        }
    }

    fn keep(&self, thread: StoreThread) {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }

    fn exit(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.threads -= 1;
    }

    /// A reader thread: runs reads until the store is dropped, then hands back its connection
    /// (or, beyond the first [`MIN_READERS`], until it has been idle for [`IDLE_EXIT`]: it then
    /// closes its connection itself).
    fn run(&self, conn: Connection) -> Option<Connection> {
        let mut batch = Vec::with_capacity(READ_BATCH);
        // Reads in the last batch, and how often they blocked.
        let (mut ran, mut blocked) = (0u64, 0u64);
        loop {
            {
                self.count_blocked(ran, blocked);
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                while q.jobs.is_empty() && !q.closed {
                    q.idle += 1;
                    let (guard, timeout) = self
                        .wake
                        .wait_timeout(q, IDLE_EXIT)
                        .unwrap_or_else(|p| p.into_inner());
                    q = guard;
                    q.idle -= 1;
                    if timeout.timed_out() && q.jobs.is_empty() && q.threads > MIN_READERS {
                        q.threads -= 1;
                        drop(q);
                        close(conn);
                        return None;
                    }
                }
                if q.jobs.is_empty() {
                    q.threads -= 1;
                    return Some(conn); // closed and drained
                }
                // Reads that wait on the disk one at a time, so that they wait side by side.
                let n = q
                    .jobs
                    .len()
                    .min(if self.disk_bound() { 1 } else { READ_BATCH });
                batch.extend(q.jobs.drain(..n).map(|(_, job)| job));
                if !q.jobs.is_empty() && q.idle > 0 {
                    self.wake.notify_one();
                }
            }
            let waits = blocking_waits();
            ran = batch.len() as u64;
            for job in batch.drain(..) {
                // A read that panics answers its caller with an error (its sender is dropped);
                // the thread and its connection stay.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
            }
            // Answering wakes a task, which does not block; a switch here is a wait.
            blocked = blocking_waits().saturating_sub(waits);
        }
    }
}

fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    configure(&conn, READER_CACHE_KIB)?;
    Ok(conn)
}

/// A thread's connections for inline reads, closed by [`close`] as the thread ends.
struct InlineConnections(Vec<(Weak<Readers>, Connection)>);

impl Drop for InlineConnections {
    fn drop(&mut self) {
        for (_, conn) in self.0.drain(..) {
            close(conn);
        }
    }
}

/// Closes `conn` while no other connection of this process is closing. SQLite checkpoints the
/// WAL into the database file and deletes it when the closing connection finds no other open;
/// two closing side by side each see the other, and neither does. (A store's threads closing
/// their connections side by side left the WAL in 8 of 20 runs of `sessiond seed`, and a server
/// stopped after reads on several of its runtime's threads, whose inline connections close as
/// the threads end, in 2 of 5.)
fn close(conn: Connection) {
    static CLOSING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = CLOSING.lock().unwrap_or_else(|p| p.into_inner());
    drop(conn);
}

/// Closing: every thread of the store finishes what it was given and hands back its connection,
/// which is closed (by [`close`]) before the drop returns. The last connection to close moves the
/// WAL into the database file and deletes it; a process that exits first leaves the WAL beside
/// the file (safe, it is read back at the next open, but the database file alone, copied as a
/// backup, would miss every write since the last checkpoint). Connections of other threads'
/// inline reads close as those threads end, the last of them then being the one.
impl Drop for SqliteStore {
    fn drop(&mut self) {
        {
            let mut q = self.readers.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.closed = true;
            self.readers.wake.notify_all();
        }
        // The writer commits what it was sent, then stops: its queue has no sender left. It
        // stops the checkpointer as it ends.
        drop(std::mem::replace(&mut self.jobs, mpsc::channel().0));
        let readers = std::mem::take(
            &mut *self
                .readers
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        // A store closing does not wait for the whole index to be read. The interrupted
        // connection closes first: SQLite's checkpoint on close would stop at the interrupt, so
        // as the last one to close it would leave the WAL.
        let prewarmer = self
            .prewarmer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|(interrupt, thread)| {
                interrupt.interrupt();
                thread
            });
        let me = std::thread::current().id();
        let mut connections = Vec::new();
        for thread in prewarmer
            .into_iter()
            .chain(self.threads.drain(..))
            .chain(readers)
        {
            // (A store dropped on one of its own threads cannot wait for that one.)
            if thread.thread().id() == me {
                continue;
            }
            match thread.join() {
                Ok(conn) => connections.extend(conn),
                Err(_) => tracing::warn!("a SQLite thread panicked"),
            }
        }
        connections.into_iter().for_each(close);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("commit failed: {0}")]
struct CommitFailed(String);

#[derive(Debug, thiserror::Error)]
#[error("the read was abandoned by its reader thread")]
struct ReadFailed;

/// A bulk load (see [`Store::begin_bulk`]): one transaction on the writer, kept open from group to
/// group until the load ends.
#[derive(Debug, Default)]
enum Bulk {
    #[default]
    Off,
    /// Loading, the session indexes dropped.
    On {
        /// The statements that create the dropped indexes, in their order.
        indexes: Vec<String>,
        /// The `pk` of the first row of each `insert_sessions` call, in order.
        starts: Vec<i64>,
    },
    /// Ending the load failed: the writer rolls its transaction back (and turns this `Off`).
    Abort,
    /// The load's transaction failed and was rolled back: nothing of it is stored.
    Lost(String),
}

fn lock(bulk: &Mutex<Bulk>) -> std::sync::MutexGuard<'_, Bulk> {
    bulk.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, thiserror::Error)]
#[error("the bulk load failed and was rolled back: {0}")]
struct BulkLost(String);

/// The writer thread: group commit until every sender is gone. While a bulk load is on, groups
/// are not committed: the load is one transaction, committed when it ends.
fn writer_loop(
    mut conn: Connection,
    jobs: mpsc::Receiver<Job>,
    bulk: Arc<Mutex<Bulk>>,
    direct: bool,
) -> Option<Connection> {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        loop {
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if group.len() >= MAX_GROUP {
                break;
            }
            // Let the threads that produce writes run before committing: when they share this
            // thread's core (a pinned or busy machine), a woken writer would otherwise preempt
            // them after every write and commit groups of a few, an fsync each. Yielding costs
            // one syscall when nobody else is waiting for the core.
            std::thread::yield_now();
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut finishers = Vec::with_capacity(group.len());
        let outcome = (|| -> rusqlite::Result<()> {
            if conn.is_autocommit() {
                conn.prepare_cached("BEGIN")?.execute([])?;
            }
            // The job's savepoint by cached statements: rusqlite's `Savepoint` prepares its
            // SQL on every write (~4 000 instructions a create, callgrind). A failure here ends
            // the transaction, which is rolled back below.
            for job in group.drain(..) {
                conn.prepare_cached("SAVEPOINT job")?.execute([])?;
                let (keep, finish) = job(&conn);
                finishers.push(finish);
                if !keep {
                    conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
                }
                conn.prepare_cached("RELEASE job")?.execute([])?;
            }
            match *lock(&bulk) {
                Bulk::On { .. } => Ok(()), // the load's transaction goes on
                Bulk::Abort => Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                    Some("the bulk load was abandoned".into()),
                )),
                Bulk::Off | Bulk::Lost(_) => conn.prepare_cached("COMMIT")?.execute([]).map(drop),
            }
        })();
        if let Err(e) = &outcome {
            // (SQLite itself rolls back on some errors: I/O, a full disk.)
            if !conn.is_autocommit()
                && let Err(e) = conn.execute_batch("ROLLBACK")
            {
                tracing::warn!(error = %e, "rollback failed");
            }
            let mut state = lock(&bulk);
            if matches!(*state, Bulk::On { .. }) {
                *state = Bulk::Lost(e.to_string());
            } else if matches!(*state, Bulk::Abort) {
                *state = Bulk::Off;
            }
        }
        let outcome = outcome.map_err(|e| e.to_string());
        tracing::debug!(target: "sessiond::store", writes = finishers.len(), "group committed");
        for finish in finishers {
            finish(outcome.clone());
        }
        // Jobs not reached because the transaction failed to start are dropped: their callers
        // see the channel closed, which is reported as a backend failure.
    }
    // Dropping the WAL hook drops the checkpointer's wake-up sender: it stops.
    if let Err(e) = conn.wal_hook(None::<fn(&mut Wal, i32) -> rusqlite::Result<()>>) {
        tracing::warn!(error = %e, "removing the WAL hook failed");
    }
    if direct {
        // (Should this fail, or the process end before, the next open sets WAL mode again.)
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => {}
            Ok(mode) => tracing::warn!(%mode, "the store did not go back to WAL mode"),
            Err(e) => tracing::warn!(error = %e, "the store did not go back to WAL mode"),
        }
    }
    Some(conn)
}

/// Page cache of the writer's connection, in KiB. Inserts land at random places of the id index;
/// once that index outgrows the cache, every insert reads and rewrites pages of it.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
/// Page cache of each reader's connection, in KiB: the top levels of the B-trees (the OS page
/// cache serves the rest, and the session cache, `--cache-mb`, the documents). With up to
/// [`MAX_READERS`] connections, this bounds their caches together to 16 MiB.
const READER_CACHE_KIB: i64 = 256;

/// WAL pages (4 KiB each) after which the checkpointer thread copies the WAL into the database
/// file. SQLite's own automatic checkpoint runs on the committing thread every 1000 pages, so
/// every write behind it waited; and rarer checkpoints write a page changed by several
/// transactions once. Measured against it (4 alternated imports of 50 000 sessions; 3 alternated
/// 5 s runs of 256 clients creating Anam sessions): import median ~72 k -> ~81 k sessions/s,
/// creates about the same (11.3-12.1 k -> 10.9-12.5 k/s), slowest create 73-88 -> 44-59 ms.
const CHECKPOINT_AFTER_PAGES: i32 = 4096;
/// Bytes the WAL file is cut back to when SQLite starts it over after a complete checkpoint: a
/// burst of writes (an import) may grow it far beyond [`CHECKPOINT_AFTER_PAGES`], and SQLite
/// otherwise keeps the file at its largest size until the store closes.
const WAL_SIZE_LIMIT: i64 = CHECKPOINT_AFTER_PAGES as i64 * 4096;
/// WAL pages after which the writer checkpoints itself, should the checkpointer fall behind.
const CHECKPOINT_INLINE_PAGES: i32 = 16 * CHECKPOINT_AFTER_PAGES;
/// Page cache of the checkpointer's connection, in KiB (a checkpoint copies pages through the
/// OS, not through this cache).
const CHECKPOINTER_CACHE_KIB: i64 = 256;

/// Moves WAL checkpoints off the writer: a thread with a connection of its own runs a passive
/// checkpoint (it blocks neither readers nor the writer) once the WAL holds
/// [`CHECKPOINT_AFTER_PAGES`]; it stops when the writer drops its WAL hook.
fn start_checkpointer(path: &Path, writer: &mut Connection) -> anyhow::Result<StoreThread> {
    let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    configure(&conn, CHECKPOINTER_CACHE_KIB)?;
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("sqlite-checkpointer".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            Some(conn)
        })
        .context("starting the SQLite checkpointer thread")?;
    // (Replaces SQLite's automatic checkpoint, which is a WAL hook too.)
    writer.wal_hook(Some(move |wal: &mut Wal, pages: i32| {
        if pages >= CHECKPOINT_INLINE_PAGES {
            // Busy: the checkpointer is at it.
            match wal.checkpoint() {
                Err(e) if e.sqlite_error_code() != Some(rusqlite::ErrorCode::DatabaseBusy) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                _ => {}
            }
        } else if pages >= CHECKPOINT_AFTER_PAGES {
            let _ = wake.try_send(()); // full: a checkpoint is already due
        }
        Ok(())
    }))?;
    Ok(thread)
}

/// Size of the one allocation [`keep_freed_memory`] makes and frees.
const MALLOC_THRESHOLD_BYTES: i64 = 1 << 20;

/// Stops the C allocator from handing memory back to the OS after each write.
///
/// SQLite allocates with the C library's `malloc`, not with this program's allocator. Each write
/// runs in a savepoint, whose sub-journal (a copy of every page the write changes, ~24 KiB for a
/// create) is freed when the savepoint is released. glibc then trims its heap (it holds more than
/// 128 KiB free at the top), an `madvise` per write, and the next write faults the pages back in,
/// zeroed: one `madvise` per create (strace -c), 1.9 % of the server's samples under a create
/// load, and page faults (all causes) 3.1 % (perf). glibc raises both of those thresholds when a block it
/// had to `mmap` is freed (mallopt(3), "dynamic mmap threshold"): the trim threshold becomes twice
/// the block. One 1 MiB block, allocated and freed by SQLite here, makes it 2 MiB: what the heap
/// keeps is bounded by that, and writes reuse it. On other C libraries this changes nothing.
fn keep_freed_memory(conn: &Connection) -> rusqlite::Result<()> {
    // `substr` makes the zero blob real (a memset, and a copy); `randomblob(4 MiB)` cost ~70 M
    // instructions of random bytes at every open (callgrind of an import: 1 846 M against 1 774 M).
    conn.query_row(
        "SELECT length(substr(zeroblob(?1), 1))",
        [MALLOC_THRESHOLD_BYTES],
        |_| Ok(()),
    )
}

/// How long a connection waits for another's lock before it fails with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store that holds sessions is loaded in bulk when the load brings at least one session for
/// every [`BULK_SHARE`] it holds. Building the indexes again reads every row, old and new, once,
/// in order; inserting a row into the id index of a store far larger than the writer's cache
/// reads and writes a page at a random place of it. Seeding 2 M sessions into a store of 2 M
/// (each api a tenant of its own) took 97.5 s row by row, 25.4 s into an empty store.
const BULK_SHARE: u64 = 4;

/// Whether a bulk load of `expected` sessions (unknown: `None`) into the store of `conn` drops
/// and builds again its indexes: when it holds no session, or `expected` is large beside what it
/// holds ([`BULK_SHARE`]). What it holds is bounded by its largest `pk` (found without a scan:
/// sessions deleted since only make this more cautious).
fn bulk_fits(conn: &Connection, expected: Option<u64>) -> rusqlite::Result<bool> {
    let held: Option<i64> = conn.query_row("SELECT max(pk) FROM sessions", [], |r| r.get(0))?;
    let held = held.map_or(0, |pk| u64::try_from(pk).unwrap_or(u64::MAX));
    let empty = held == 0
        || conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM sessions)", [], |r| {
            r.get(0)
        })?;
    Ok(empty || expected.is_some_and(|n| n.saturating_mul(BULK_SHARE) >= held))
}

/// Whether a bulk tool's store, just opened, leaves WAL mode for a rollback journal: it does when
/// the tool is to load it in bulk ([`bulk_fits`]) and no other connection has the file open (a
/// running server keeps it in WAL mode: that server then reads what was there until the load
/// ends, as in WAL mode).
///
/// A bulk load ([`Store::begin_bulk`]) is one transaction. In WAL mode
/// every page of it goes to the WAL first, and the checkpoint at its end copies them all into the
/// database file: for 10 M sessions, a 4.7 GB WAL, and a 16 s checkpoint on one core at the end of
/// a 124 s import. A rollback journal records only the pages that existed when the transaction
/// began; the load's new pages are written to the database file once, and a failed or
/// interrupted load is undone all the same (the file is cut back to its size before). While the
/// load runs, other processes cannot open the store (they wait [`BUSY_TIMEOUT`], then fail).
fn write_directly(conn: &Connection, expected: Option<u64>) -> anyhow::Result<bool> {
    if !bulk_fits(conn, expected)? {
        return Ok(false);
    }
    // Another connection to the file (a server) holds a lock: leaving WAL mode fails at once.
    conn.busy_timeout(Duration::ZERO)?;
    let mode =
        conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get::<_, String>(0));
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match mode {
        Ok(mode) if mode.eq_ignore_ascii_case("delete") => {
            tracing::debug!("a bulk load: it writes the database file directly");
            Ok(true)
        }
        Ok(mode) => {
            tracing::info!(%mode, "the store stays in its journal mode");
            Ok(false)
        }
        Err(e) => {
            tracing::info!(error = %e, "the store stays in WAL mode (another process has it open)");
            Ok(false)
        }
    }
}

fn configure(conn: &Connection, cache_kib: i64) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Negative: a size in KiB rather than in pages.
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The schema version of the store of `conn`, which this binary must know.
fn schema_version(conn: &Connection) -> anyhow::Result<usize> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this sessiond ({}); upgrade sessiond",
            MIGRATIONS.len()
        );
    }
    Ok(current)
}

/// For a tool that only reads a store (`export`, `tenants list`, `keys list`) that it cannot
/// open to write (a read-only file, directory or mount, another user's): a connection that
/// cannot write. `None` when the store's schema is older than this binary's (bringing it up to
/// date takes writing).
///
/// A store in WAL mode is read through its WAL and shared-memory files, which SQLite creates if
/// they are missing (a store closed cleanly has neither). Where it cannot, the directory is
/// read-only and nobody writes the store (a writer would have made them): then it is read as
/// immutable, without them.
fn open_read_only(path: &Path) -> anyhow::Result<Option<Connection>> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let opening = || format!("opening {} to read it", path.display());
    let conn = Connection::open_with_flags(path, flags).with_context(opening)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let (conn, version) = match schema_version(&conn) {
        Ok(version) => (conn, version),
        Err(e) if wal_missing(path) => {
            let Some(uri) = immutable_uri(path) else {
                return Err(e.context(opening()));
            };
            drop(conn);
            let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                .with_context(opening)?;
            let version = schema_version(&conn).with_context(opening)?;
            tracing::debug!("the store is read as immutable: its WAL files cannot be made");
            (conn, version)
        }
        Err(e) => return Err(e.context(opening())),
    };
    if version < MIGRATIONS.len() {
        return Ok(None);
    }
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    Ok(Some(conn))
}

/// Whether the store at `path` has no WAL file beside it.
fn wal_missing(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    !Path::new(&wal).exists()
}

/// The URI that opens the file at `path` as immutable (`None` for a path that is not UTF-8).
fn immutable_uri(path: &Path) -> Option<String> {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    // What a URI's path may not hold as it is (RFC 3986; SQLite decodes `%HH`).
    const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'#').add(b'%').add(b'?');
    let path = std::path::absolute(path).ok()?;
    let path = path.to_str()?;
    Some(format!(
        "file:{}?immutable=1",
        utf8_percent_encode(path, ESCAPED)
    ))
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current = schema_version(conn)?;
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
        SqliteStore::open_with(path, StoreOptions::default())
    }

    /// [`SqliteStore::open`], for a server or, with [`StoreOptions::bulk_tool`], for a bulk
    /// tool: then the store has no reader threads (the writer reads), and a store the tool is
    /// to load in bulk ([`bulk_fits`]) leaves WAL mode while the tool runs (see
    /// [`write_directly`]); its writer is then the only connection.
    pub fn open_with(path: &Path, options: StoreOptions) -> anyhow::Result<SqliteStore> {
        if options.read_only {
            let writable = StoreOptions {
                read_only: false,
                ..options
            };
            return SqliteStore::open_with(path, writable).or_else(|e| {
                let locked = e.chain().any(|e| {
                    e.downcast_ref::<rusqlite::Error>()
                        .and_then(rusqlite::Error::sqlite_error_code)
                        == Some(rusqlite::ErrorCode::DatabaseBusy)
                });
                match open_read_only(path) {
                    Ok(Some(conn)) if !locked => {
                        tracing::debug!(error = %e, "the store is opened read-only");
                        let codecs =
                            Codecs::read(&conn).context("loading the compression dictionaries")?;
                        // No reader threads: the one connection reads.
                        let one = StoreOptions {
                            bulk_tool: true,
                            ..options
                        };
                        SqliteStore::start(path, conn, codecs, one, false, None)
                    }
                    // Its schema must be brought up to date, which takes writing.
                    _ => Err(e),
                }
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        configure(&writer, WRITER_CACHE_KIB).map_err(|e| {
            let locked = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
            let e = anyhow::Error::new(e);
            if locked {
                e.context(format!(
                    "{} is locked by another process (an `import` or `seed` loading it in bulk \
                     holds it until it ends)",
                    path.display()
                ))
            } else {
                e
            }
        })?;
        keep_freed_memory(&writer)?;
        migrate(&mut writer)?;
        let direct = options.bulk_tool && write_directly(&writer, options.bulk_expected)?;
        // Opened after the writer left WAL mode, or did not: until then it had to be the only
        // connection. A store out of WAL mode has no WAL to checkpoint.
        let checkpointer = if direct {
            None
        } else {
            Some(start_checkpointer(path, &mut writer)?)
        };
        let codecs = Codecs::load(&mut writer).context("loading the compression dictionaries")?;
        SqliteStore::start(path, writer, codecs, options, direct, checkpointer)
    }

    /// The store's threads, on `writer` (the connection opened, configured and brought up to
    /// date) and `checkpointer` (if the store is in WAL mode and writes).
    fn start(
        path: &Path,
        writer: Connection,
        codecs: Codecs,
        options: StoreOptions,
        direct: bool,
        checkpointer: Option<StoreThread>,
    ) -> anyhow::Result<SqliteStore> {
        let min_readers = if options.bulk_tool { 0 } else { MIN_READERS };
        let codecs = Arc::new(codecs);
        let readers = Arc::new(Readers {
            path: path.to_owned(),
            max_threads: max_readers(),
            queue: Mutex::new(ReadQueue {
                threads: min_readers,
                ..ReadQueue::default()
            }),
            wake: Condvar::new(),
            blocked_permille: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        for i in 1..=min_readers {
            // Opened here, so that a file that cannot be read fails `open`.
            let conn = open_reader(path)?;
            let reader = readers.clone();
            let thread = std::thread::Builder::new()
                .name(reader_name(i))
                .spawn(move || reader.run(conn))
                .context("starting a SQLite reader thread")?;
            readers.keep(thread);
        }
        let (jobs, rx) = mpsc::channel();
        let bulk = Arc::new(Mutex::new(Bulk::Off));
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn({
                let bulk = bulk.clone();
                move || writer_loop(writer, rx, bulk, direct)
            })
            .context("starting the SQLite writer thread")?;
        Ok(SqliteStore {
            readers,
            jobs,
            bulk,
            bulk_on: Arc::default(),
            bulk_tool: options.bulk_tool,
            direct,
            codecs,
            // The writer first: it stops the checkpointer as it ends.
            threads: std::iter::once(writer).chain(checkpointer).collect(),
            prewarmer: Mutex::new(None),
        })
    }

    /// Runs `f` on the writer thread in its own savepoint; answers after the group commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let out = f(conn);
            let keep = out.is_ok();
            let finish: Finisher = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => out,
                    Err(e) => Err(StoreError::backend(CommitFailed(e))),
                });
            });
            (keep, finish)
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::backend(CommitFailed("writer thread is gone".into())))?;
        rx.await
            .map_err(|_| StoreError::backend(CommitFailed("write abandoned".into())))?
    }

    /// Runs `f` on a reader connection. While reads are served from memory (the store is in the
    /// OS page cache), that is on the calling thread: a read then takes microseconds, less than
    /// the two thread switches of handing it to a reader thread and back, which were most of a
    /// cache miss's CPU. Once reads block on the disk, a read that waits would stall every
    /// connection of the calling (runtime) thread, so they go to the reader threads, which
    /// many reads can wait on side by side. Both kinds count their blocking, so the choice
    /// follows the store's state either way.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.bulk_tool || self.bulk_on.load(Ordering::Relaxed) {
            // Only the writer's connection sees what the load has written so far (and a bulk
            // tool has no other).
            return self.write(f).await;
        }
        let f = if self.readers.disk_bound() {
            f
        } else {
            match self.readers.inline(f) {
                Ok(Ok(out)) => return out,
                // A read that panics is an error, as on a reader thread.
                Ok(Err(_panic)) => return Err(StoreError::backend(ReadFailed)),
                // No connection here: the reader threads have theirs.
                Err(f) => f,
            }
        };
        self.read_on_readers(f).await
    }

    /// Runs `f` on a reader thread. With the `sessiond::store::handoff` target at debug, each
    /// such read logs where its time went: `queue_us` from the hand-off until a reader took it,
    /// `read_us` on the reader, `back_us` from the reader's answer until this task ran again
    /// (`bench/cold_side_by_side.sh` prints their percentiles).
    async fn read_on_readers<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let timed = tracing::enabled!(target: "sessiond::store::handoff", tracing::Level::DEBUG);
        let submitted = timed.then(Instant::now);
        self.readers.submit(Box::new(move |conn| {
            let started = timed.then(Instant::now);
            let out = f(conn);
            let _ = tx.send((out, started.map(|s| (s, Instant::now()))));
        }));
        let (out, times) = rx.await.map_err(|_| StoreError::backend(ReadFailed))?;
        if let (Some(submitted), Some((started, done))) = (submitted, times) {
            let us = |d: Duration| d.as_micros() as u64;
            tracing::debug!(
                target: "sessiond::store::handoff",
                queue_us = us(started - submitted),
                read_us = us(done - started),
                back_us = us(done.elapsed()),
            );
        }
        out
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

/// A session row read through `conn` (whose `codecs` table names any codec that `codecs` lacks).
fn session_from(
    r: &rusqlite::Row<'_>,
    codecs: &Codecs,
    conn: &Connection,
) -> rusqlite::Result<SessionRow> {
    let api: String = r.get("api")?;
    let unpack = |blob: Vec<u8>| {
        codecs
            .unpack(blob, conn)
            .map(Bytes::from)
            .map_err(undecodable)
    };
    Ok(SessionRow {
        api: api_of(&api)?,
        id: r.get("id")?,
        tenant: r.get("tenant")?,
        version: r.get("version")?,
        body: unpack(r.get("body")?)?,
        doc: r
            .get::<_, Option<Vec<u8>>>("doc")?
            .map(unpack)
            .transpose()?,
    })
}

/// A stored document that [`Codecs`] cannot decode, as a row's conversion error.
fn undecodable(e: super::codec::CodecError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
}

/// A session row as stored: its documents compressed.
struct PackedRow {
    api: ApiId,
    id: String,
    tenant: String,
    version: i64,
    body: Vec<u8>,
    doc: Option<Vec<u8>>,
}

impl PackedRow {
    fn new(row: &SessionRow, codecs: &Codecs) -> PackedRow {
        PackedRow {
            api: row.api,
            id: row.id.clone(),
            tenant: row.tenant.clone(),
            version: row.version,
            body: codecs.pack(row.api, &row.body),
            doc: row.doc.as_ref().map(|d| codecs.pack(row.api, d)),
        }
    }
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

fn backend_msg(message: &'static str) -> StoreError {
    StoreError::Backend(message.into())
}

/// The end of a bulk load: runs `indexes` (the statements of the session indexes dropped for the
/// load). If two rows share an id, the later row of the first such pair, and everything stored
/// from the start of its `insert_sessions` call on (`starts`: the first `pk` of each call), are
/// deleted before the indexes are built again; that row is returned.
fn build_indexes(
    c: &Connection,
    indexes: &[String],
    starts: &[i64],
) -> StoreResult<Option<BulkDuplicate>> {
    let build = || -> rusqlite::Result<()> {
        // One helper thread sorts runs of keys while this one reads the table. 10 M sessions
        // (4.4 GB, in the OS page cache), `CREATE UNIQUE INDEX` on `(api, id)` with a 32 MiB
        // cache: 12.0 s with none, 9.1 s with one, 9.9 s with two, on 2 cores.
        c.pragma_update(None, "threads", 1)?;
        let built = indexes.iter().try_for_each(|sql| c.execute_batch(sql));
        c.pragma_update(None, "threads", 0)?;
        built
    };
    match build() {
        Ok(()) => return Ok(None),
        Err(e) if !is_constraint(&e) => return Err(backend(e)),
        Err(_) => {}
    }
    // (A sort of the whole table, as the index build was: no index helps here.)
    let (pk, id): (i64, String) = c
        .query_row(
            "SELECT pk, id FROM (
                 SELECT pk, id, row_number() OVER (PARTITION BY api, id ORDER BY pk) AS n
                 FROM sessions)
             WHERE n = 2 ORDER BY pk LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(backend)?;
    let call = starts
        .partition_point(|&start| start <= pk)
        .checked_sub(1)
        .ok_or_else(|| backend_msg("a duplicate session id before the bulk load's first row"))?;
    c.execute("DELETE FROM sessions WHERE pk >= ?1", [starts[call]])
        .map_err(backend)?;
    build().map_err(backend)?;
    Ok(Some(BulkDuplicate {
        call,
        index: (pk - starts[call]) as usize,
        id,
    }))
}

fn insert_row(c: &Connection, row: &PackedRow) -> StoreResult<()> {
    let mut st = c
        .prepare_cached(
            "INSERT INTO sessions (api, id, tenant, version, body, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(backend)?;
    match st.execute(params![
        row.api.as_str(),
        row.id,
        row.tenant,
        row.version,
        row.body,
        row.doc
    ]) {
        Ok(_) => Ok(()),
        Err(e) if is_constraint(&e) => Err(StoreError::Conflict),
        Err(e) => Err(backend(e)),
    }
}

/// The tenants of `api`, oldest first.
fn tenants_of(c: &Connection, api: ApiId) -> StoreResult<Vec<TenantRow>> {
    let mut st = c
        .prepare_cached(
            "SELECT id, created_at, seq FROM tenants WHERE api = ?1 ORDER BY created_at, id",
        )
        .map_err(backend)?;
    st.query_map([api.as_str()], |r| {
        Ok(TenantRow {
            id: r.get(0)?,
            created_at: r.get(1)?,
            seq: r.get(2)?,
        })
    })
    .and_then(|rows| rows.collect())
    .map_err(backend)
}

/// The keys of a tenant, oldest first.
fn keys_of(c: &Connection, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
    let mut st = c
        .prepare_cached(
            "SELECT * FROM api_keys WHERE api = ?1 AND tenant = ?2 ORDER BY created_at, id",
        )
        .map_err(backend)?;
    st.query_map(params![api.as_str(), tenant], key_from)
        .and_then(|rows| rows.collect())
        .map_err(backend)
}

/// A page of [`Store::list_sessions`].
fn sessions_of(
    c: &Connection,
    codecs: &Codecs,
    api: ApiId,
    tenant: &str,
    after: Option<i64>,
    limit: usize,
) -> StoreResult<Page> {
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
        out.push(session_from(r, codecs, c).map_err(backend)?);
    }
    Ok(Page {
        rows: out,
        next: if more { last_pk } else { None },
    })
}

/// A connection of its own that cannot write, in a read transaction that has read: SQLite's
/// snapshot of the WAL is taken at a transaction's first read, not at `BEGIN`.
fn begin_snapshot(path: &Path) -> anyhow::Result<Connection> {
    let conn = open_read_only(path)?
        .context("the store's schema is older than this sessiond's: open it with a server first")?;
    // Read in `pk` order, each page once: a reader's page cache (the B-trees' top levels) will do.
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    conn.execute_batch("BEGIN")?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
    Ok(conn)
}

/// [`Store::snapshot`]: its connection is used on a blocking thread, one read at a time.
struct SqliteSnapshot {
    /// `None` once dropped.
    conn: Arc<Mutex<Option<Connection>>>,
    codecs: Arc<Codecs>,
}

impl SqliteSnapshot {
    async fn read<T, F>(&mut self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Codecs) -> StoreResult<T> + Send + 'static,
    {
        let (conn, codecs) = (self.conn.clone(), self.codecs.clone());
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(
                conn.as_ref().ok_or(StoreError::backend(ReadFailed))?,
                &codecs,
            )
        })
        .await
        .map_err(|_| StoreError::backend(ReadFailed))?
    }
}

#[async_trait]
impl Snapshot for SqliteSnapshot {
    async fn list_tenants(&mut self, api: ApiId) -> StoreResult<Vec<TenantRow>> {
        self.read(move |c, _| tenants_of(c, api)).await
    }

    async fn list_keys(&mut self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
        let tenant = tenant.to_owned();
        self.read(move |c, _| keys_of(c, api, &tenant)).await
    }

    async fn list_sessions(
        &mut self,
        api: ApiId,
        tenant: &str,
        after: Option<i64>,
        limit: usize,
    ) -> StoreResult<Page> {
        let tenant = tenant.to_owned();
        self.read(move |c, codecs| sessions_of(c, codecs, api, &tenant, after, limit))
            .await
    }
}

/// Ends the read transaction (and with it what holds the WAL back) by closing the connection.
impl Drop for SqliteSnapshot {
    fn drop(&mut self) {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(conn) = conn {
            close(conn);
        }
    }
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
            c.prepare_cached("SELECT 1 FROM tenants WHERE api = ?1 AND id = ?2")
                .and_then(|mut st| st.query_row(params![api.as_str(), id], |_| Ok(())))
                .optional()
                .map(|o| o.is_some())
                .map_err(backend)
        })
        .await
    }

    async fn list_tenants(&self, api: ApiId) -> StoreResult<Vec<TenantRow>> {
        self.read(move |c| tenants_of(c, api)).await
    }

    async fn reserve_seq(&self, api: ApiId, tenant: &str, count: i64) -> StoreResult<i64> {
        let tenant = tenant.to_owned();
        self.write(move |c| {
            c.query_row(
                "UPDATE tenants SET seq = seq + ?3 WHERE api = ?1 AND id = ?2 RETURNING seq",
                params![api.as_str(), tenant, count],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(backend)?
            .map(|last| last - count + 1)
            .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn release_seq(
        &self,
        api: ApiId,
        tenant: &str,
        first: i64,
        count: i64,
    ) -> StoreResult<bool> {
        let tenant = tenant.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE tenants SET seq = ?3 - 1 WHERE api = ?1 AND id = ?2 AND seq = ?3 + ?4 - 1",
                params![api.as_str(), tenant, first, count],
            )
            .map(|changed| changed == 1)
            .map_err(backend)
        })
        .await
    }

    async fn insert_numbered(
        &self,
        api: ApiId,
        tenant: &str,
        _id: &str,
        build: BuildRow,
    ) -> StoreResult<SessionRow> {
        // One job on the writer thread: the number and the row are kept or undone together
        // (a failed insert rolls back the job's savepoint, and with it the reservation). The
        // row is built from the number, so it is compressed here, on the writer thread.
        let tenant = tenant.to_owned();
        let codecs = self.codecs.clone();
        self.write(move |c| {
            // (Cached: preparing it on every create cost ~26 000 instructions, a tenth of one.)
            let n = c
                .prepare_cached(
                    "UPDATE tenants SET seq = seq + 1 WHERE api = ?1 AND id = ?2 RETURNING seq",
                )
                .and_then(|mut st| {
                    st.query_row(params![api.as_str(), tenant], |r| r.get::<_, i64>(0))
                })
                .optional()
                .map_err(backend)?
                .ok_or(StoreError::NotFound)?;
            let row = build(n);
            insert_row(c, &PackedRow::new(&row, &codecs))?;
            Ok(row)
        })
        .await
    }

    async fn raise_seq(&self, api: ApiId, tenant: &str, at_least: i64) -> StoreResult<()> {
        let tenant = tenant.to_owned();
        self.write(move |c| {
            match c
                .execute(
                    "UPDATE tenants SET seq = max(seq, ?3) WHERE api = ?1 AND id = ?2",
                    params![api.as_str(), tenant, at_least],
                )
                .map_err(backend)?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn create_key(&self, key: &KeyRow) -> StoreResult<()> {
        let key = key.clone();
        self.write(move |c| {
            match c.execute(
                "INSERT INTO api_keys (id, api, tenant, hash, created_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 THEN ?5 END)",
                params![
                    key.id,
                    key.api.as_str(),
                    key.tenant,
                    &key.hash[..],
                    key.created_at,
                    key.revoked
                ],
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

    async fn find_key_by_id(&self, id: &str) -> StoreResult<Option<KeyRow>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM api_keys WHERE id = ?1")
                .and_then(|mut st| st.query_row([&id], key_from).optional())
                .map_err(backend)
        })
        .await
    }

    async fn list_keys(&self, api: ApiId, tenant: &str) -> StoreResult<Vec<KeyRow>> {
        let tenant = tenant.to_owned();
        self.read(move |c| keys_of(c, api, &tenant)).await
    }

    async fn insert_session(&self, row: &SessionRow) -> StoreResult<()> {
        let row = PackedRow::new(row, &self.codecs);
        self.write(move |c| insert_row(c, &row)).await
    }

    async fn insert_sessions(&self, rows: Vec<SessionRow>) -> StoreResult<()> {
        let rows = if rows.len() < PARALLEL_PACK {
            rows.iter()
                .map(|r| PackedRow::new(r, &self.codecs))
                .collect()
        } else {
            // Compressed on every core, not on the writer thread nor on this async task.
            let codecs = self.codecs.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            rayon::spawn(move || {
                use rayon::prelude::*;
                let packed: Vec<PackedRow> = rows
                    .par_iter()
                    .map(|r| PackedRow::new(r, &codecs))
                    .collect();
                let _ = tx.send(packed);
            });
            rx.await
                .map_err(|_| StoreError::backend(CommitFailed("compression failed".into())))?
        };
        // One job, so one savepoint: a conflict anywhere leaves nothing of the batch.
        let bulk = self.bulk.clone();
        self.write(move |c| {
            let mut state = lock(&bulk);
            let start = match &mut *state {
                Bulk::Off => None,
                Bulk::On { starts, .. } => Some(starts),
                Bulk::Abort | Bulk::Lost(_) => {
                    return Err(backend_msg("the bulk load failed and was rolled back"));
                }
            };
            if let Some(starts) = start {
                // The load appends to an empty table: its rows' `pk`s follow one another.
                let next: i64 = c
                    .query_row("SELECT coalesce(max(pk), 0) + 1 FROM sessions", [], |r| {
                        r.get(0)
                    })
                    .map_err(backend)?;
                rows.iter().try_for_each(|row| insert_row(c, row))?;
                starts.push(next);
                return Ok(());
            }
            drop(state);
            rows.iter().try_for_each(|row| insert_row(c, row))
        })
        .await
    }

    async fn begin_bulk(&self) -> StoreResult<bool> {
        let (bulk, on, direct) = (self.bulk.clone(), self.bulk_on.clone(), self.direct);
        self.write(move |c| {
            let mut state = lock(&bulk);
            if !matches!(*state, Bulk::Off) {
                return Err(backend_msg("a bulk load is under way"));
            }
            // A store with sessions is loaded in bulk only by a bulk tool that has it to itself
            // and found, as it opened it, that the load is large beside them (`direct`). A
            // server sharing the store could not write until the indexes of them all are built
            // again.
            let held: bool = c
                .query_row("SELECT EXISTS (SELECT 1 FROM sessions)", [], |r| r.get(0))
                .map_err(backend)?;
            // (An index without SQL is a table constraint's, which cannot be dropped.)
            let indexes: Vec<(String, Option<String>)> = c
                .prepare(
                    "SELECT name, sql FROM sqlite_schema
                     WHERE type = 'index' AND tbl_name = 'sessions' ORDER BY rowid",
                )
                .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(backend)?;
            if (held && !direct) || indexes.iter().any(|(_, sql)| sql.is_none()) {
                return Ok(false);
            }
            // Kept: a load's rows come in `pk` order, so each lands at the end of its tenant's
            // range of this index (a few hot pages), where building it at the end would scan
            // the whole table once more and sort it.
            let indexes: Vec<_> = indexes
                .into_iter()
                .filter(|(name, _)| name != "sessions_by_tenant")
                .collect();
            for (name, _) in &indexes {
                c.execute_batch(&format!("DROP INDEX \"{name}\""))
                    .map_err(backend)?;
            }
            *state = Bulk::On {
                indexes: indexes.into_iter().filter_map(|(_, sql)| sql).collect(),
                starts: Vec::new(),
            };
            on.store(true, Ordering::Relaxed);
            Ok(true)
        })
        .await
    }

    async fn end_bulk(&self) -> StoreResult<Option<BulkDuplicate>> {
        let (bulk, on) = (self.bulk.clone(), self.bulk_on.clone());
        let ended = self
            .write(move |c| {
                let mut state = lock(&bulk);
                on.store(false, Ordering::Relaxed);
                let (indexes, starts) = match std::mem::take(&mut *state) {
                    Bulk::On { indexes, starts } => (indexes, starts),
                    Bulk::Off => return Ok(None),
                    Bulk::Lost(e) => return Err(StoreError::backend(BulkLost(e))),
                    Bulk::Abort => {
                        *state = Bulk::Abort; // still to be rolled back, after this group
                        return Err(backend_msg("the bulk load failed and was rolled back"));
                    }
                };
                // `Off` now: the writer commits this group, unless building the indexes fails.
                let started = Instant::now();
                let built = build_indexes(c, &indexes, &starts);
                tracing::debug!(
                    ms = started.elapsed().as_millis() as u64,
                    "bulk load: session indexes built"
                );
                if built.is_err() {
                    *state = Bulk::Abort;
                }
                built.map(Some)
            })
            .await?;
        let Some(duplicate) = ended else {
            return Ok(None);
        };
        if self.direct {
            return Ok(duplicate); // no WAL: the load was written to the database file
        }
        // The load went through the WAL whole: a file as large as the rows. Copied into the
        // database file and cut back now, not at some later checkpoint (or at the next open,
        // which would first read all of it).
        let path = self.readers.path.clone();
        let checkpoint = tokio::task::spawn_blocking(move || {
            let conn = open_reader(&path)?;
            let done = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .context("checkpointing the WAL");
            close(conn);
            done
        })
        .await;
        if let Ok(Err(e)) = checkpoint {
            tracing::warn!(error = %e, "the WAL is left for a later checkpoint");
        }
        Ok(duplicate)
    }

    async fn abort_bulk(&self) -> StoreResult<()> {
        let (bulk, on) = (self.bulk.clone(), self.bulk_on.clone());
        // Marked `Abort` in a write of its own: the writer rolls the load's transaction back as
        // that write's group ends (and then turns it `Off`), so the write itself fails.
        let marked = self
            .write(move |_| {
                let mut state = lock(&bulk);
                on.store(false, Ordering::Relaxed);
                match &*state {
                    Bulk::Off => {}
                    Bulk::On { .. } | Bulk::Abort => *state = Bulk::Abort,
                    // Already rolled back.
                    Bulk::Lost(_) => *state = Bulk::Off,
                }
                Ok(())
            })
            .await;
        match &*lock(&self.bulk) {
            Bulk::Off => Ok(()),
            _ => Err(marked
                .err()
                .unwrap_or_else(|| backend_msg("the bulk load was not rolled back"))),
        }
    }

    async fn update_session(&self, row: &SessionRow) -> StoreResult<()> {
        let row = PackedRow::new(row, &self.codecs);
        self.write(move |c| {
            let changed = c
                .execute(
                    "UPDATE sessions SET version = ?3, body = ?4, doc = ?5
                     WHERE api = ?1 AND id = ?2 AND version = ?3 - 1",
                    params![row.api.as_str(), row.id, row.version, row.body, row.doc],
                )
                .map_err(backend)?;
            if changed == 1 {
                return Ok(());
            }
            let exists = c
                .query_row(
                    "SELECT 1 FROM sessions WHERE api = ?1 AND id = ?2",
                    params![row.api.as_str(), row.id],
                    |_| Ok(()),
                )
                .optional()
                .map_err(backend)?
                .is_some();
            Err(if exists {
                StoreError::Conflict
            } else {
                StoreError::NotFound
            })
        })
        .await
    }

    async fn delete_session(&self, api: ApiId, id: &str, version: Option<i64>) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |c| {
            let deleted = c
                .execute(
                    "DELETE FROM sessions WHERE api = ?1 AND id = ?2 AND (?3 IS NULL OR version = ?3)",
                    params![api.as_str(), id, version],
                )
                .map_err(backend)?;
            if deleted > 0 {
                return Ok(());
            }
            // Nothing deleted: gone, or (with a version) changed since.
            let exists = c
                .prepare_cached("SELECT 1 FROM sessions WHERE api = ?1 AND id = ?2")
                .and_then(|mut st| st.exists(params![api.as_str(), id]))
                .map_err(backend)?;
            Err(if exists {
                StoreError::Conflict
            } else {
                StoreError::NotFound
            })
        })
        .await
    }

    async fn get_session(&self, api: ApiId, id: &str) -> StoreResult<Option<SessionRow>> {
        let id = id.to_owned();
        let codecs = self.codecs.clone();
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM sessions WHERE api = ?1 AND id = ?2")
                .and_then(|mut st| {
                    st.query_row(params![api.as_str(), id], |r| session_from(r, &codecs, c))
                        .optional()
                })
                .map_err(backend)
        })
        .await
    }

    async fn get_public(&self, api: ApiId, id: &str) -> StoreResult<Option<PublicSession>> {
        let id = id.to_owned();
        let codecs = self.codecs.clone();
        self.read(move |c| {
            c.prepare_cached("SELECT tenant, body FROM sessions WHERE api = ?1 AND id = ?2")
                .and_then(|mut st| {
                    st.query_row(params![api.as_str(), id], |r| {
                        let body = codecs.unpack_ref(r.get_ref(1)?.as_blob()?, c);
                        Ok(PublicSession {
                            tenant: r.get(0)?,
                            body: body.map_err(undecodable)?.into(),
                        })
                    })
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
        let codecs = self.codecs.clone();
        self.read(move |c| sessions_of(c, &codecs, api, &tenant, after, limit))
            .await
    }

    async fn snapshot(&self) -> StoreResult<Box<dyn Snapshot>> {
        let path = self.readers.path.clone();
        let conn = tokio::task::spawn_blocking(move || begin_snapshot(&path))
            .await
            .map_err(|_| StoreError::backend(ReadFailed))?
            .map_err(|e| StoreError::Backend(e.into()))?;
        Ok(Box::new(SqliteSnapshot {
            conn: Arc::new(Mutex::new(Some(conn))),
            codecs: self.codecs.clone(),
        }))
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(backend))
            .await
    }

    /// Reads every page of the id index once, on a thread and connection of its own: SQLite
    /// reads them into the OS page cache, where a cache miss then finds them. Its own page cache
    /// stays small ([`READER_CACHE_KIB`]), so the process's memory does not grow.
    fn prewarm(&self) {
        let mut slot = self.prewarmer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let conn = match open_reader(&self.readers.path) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "the session id index is not prewarmed");
                return;
            }
        };
        let interrupt = conn.get_interrupt_handle();
        let thread = std::thread::Builder::new()
            .name("sqlite-prewarm".into())
            .spawn(move || {
                let started = Instant::now();
                match read_id_index(&conn) {
                    Ok(sessions) => tracing::info!(
                        sessions,
                        ms = started.elapsed().as_millis() as u64,
                        "store: session id index read into memory"
                    ),
                    // The store is closing: it closes this connection first (see the `Drop`).
                    Err(e)
                        if e.sqlite_error_code()
                            == Some(rusqlite::ErrorCode::OperationInterrupted) =>
                    {
                        return Some(conn);
                    }
                    Err(e) => tracing::warn!(error = %e, "the session id index is not prewarmed"),
                }
                close(conn); // (while the store's own connections are open: never the last)
                None
            });
        match thread {
            Ok(thread) => *slot = Some((interrupt, thread)),
            Err(e) => tracing::warn!(error = %e, "the session id index is not prewarmed"),
        }
    }
}

/// Reads every page of the `(api, id)` index (counting its entries walks all of them, without
/// decoding a row): how many entries it has.
fn read_id_index(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT count(*) FROM sessions INDEXED BY sessions_by_id",
        [],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(store: &SqliteStore) -> usize {
        store.readers.queue.lock().unwrap().threads
    }

    /// One inline read in [`INLINE_SAMPLE_EVERY`] counts whether it blocked, and every read
    /// after a counted one that blocked, until one does not.
    #[test]
    fn inline_reads_count_one_in_n_and_every_one_after_a_block() {
        let s = InlineSampler {
            reads: std::cell::Cell::new(0),
            last_blocked: std::cell::Cell::new(false),
        };
        let counted: Vec<usize> = (0..3 * INLINE_SAMPLE_EVERY as usize)
            .filter(|_| s.next())
            .collect();
        let every = INLINE_SAMPLE_EVERY as usize;
        assert_eq!(counted, [0, every, 2 * every]);
        s.last_blocked.set(true);
        assert!((0..5).all(|_| s.next()), "after a block, every read counts");
        s.last_blocked.set(false);
        let next = (0..every).filter(|_| s.next()).count();
        assert_eq!(next, 1, "back to one in {every}");
    }

    /// Writes committed together: one that fails half way (its second statement breaks a
    /// constraint) or asks to be undone leaves nothing, and the writes around it are kept. The
    /// jobs are queued before the writer starts, so they are one group, one transaction.
    #[test]
    fn a_write_undone_in_a_group_leaves_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("g.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .unwrap();
        let (tx, rx) = mpsc::channel::<Job>();
        let (answers_tx, answers) = mpsc::channel::<(&str, Result<(), String>)>();
        fn insert(c: &Connection, k: &str) -> rusqlite::Result<usize> {
            c.execute("INSERT INTO t (k) VALUES (?1)", [k])
        }
        type Write = (&'static str, fn(&Connection) -> bool);
        let jobs: [Write; 4] = [
            ("a", |c| insert(c, "a").is_ok()),
            // `b`, then `a` again: the second insert fails, and `b` must go with it.
            ("b", |c| insert(c, "b").is_ok() && insert(c, "a").is_ok()),
            ("c", |c| {
                insert(c, "c").unwrap();
                false // written, then undone by asking
            }),
            ("d", |c| insert(c, "d").is_ok()),
        ];
        for (name, job) in jobs {
            let answers_tx = answers_tx.clone();
            tx.send(Box::new(move |c: &Connection| {
                let keep = job(c);
                let finish: Finisher = Box::new(move |r| answers_tx.send((name, r)).unwrap());
                (keep, finish)
            }))
            .unwrap();
        }
        drop(tx);
        let conn_path = dir.path().join("g.db");
        writer_loop(conn, rx, Arc::default(), false);
        drop(answers_tx);
        // One group: every job was answered with the group's (successful) commit.
        let answered: Vec<_> = answers.iter().collect();
        assert_eq!(answered.len(), 4);
        assert!(answered.iter().all(|(_, r)| r.is_ok()), "{answered:?}");
        let conn = Connection::open(conn_path).unwrap();
        let mut st = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
        let kept: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept, ["a", "d"]);
    }

    /// The WAL is copied into the database file while the store is open (by the checkpointer
    /// thread, which replaces SQLite's automatic checkpoint), not only when it closes.
    #[test]
    fn the_wal_is_checkpointed_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let db_size = || std::fs::metadata(&path).unwrap().len();
        let before = db_size();
        // 6 000 pages of WAL.
        write_filler(&store, &rt, 6000, 500);
        // At least the pages the checkpointer is woken for reach the file, whenever it runs.
        let copied = CHECKPOINT_AFTER_PAGES as u64 * 4096;
        // (A bound on waiting for the checkpointer, not a measure of it.)
        let deadline = Instant::now() + Duration::from_secs(120);
        while db_size() < before + copied {
            assert!(
                Instant::now() < deadline,
                "the database file is still {} bytes (it was {before}); the WAL holds the rows",
                db_size()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A dropped store leaves its whole content in the database file, no WAL beside it: its
    /// connections are closed one at a time, and the last one checkpoints and deletes the WAL.
    /// (Closed by their threads side by side, each saw another still open; `sessiond seed` left
    /// the WAL in 8 of 20 runs.)
    #[test]
    fn a_dropped_store_leaves_no_wal() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let store = SqliteStore::open(&path).unwrap();
            write_filler(&store, &rt, 300, 100);
            if round % 2 == 0 {
                store.prewarm(); // its connection too is closed one at a time
            }
            drop(store);
            let wal = dir.path().join("s.db-wal");
            assert!(
                !wal.exists(),
                "round {round}: the WAL is left beside the database file"
            );
            let conn = Connection::open(&path).unwrap();
            let rows: i64 = conn
                .query_row("SELECT count(*) FROM filler", [], |r| r.get(0))
                .unwrap();
            assert_eq!(rows, 300, "round {round}");
        }
    }

    /// Writes `rows` rows of 3 000 random bytes, about a 4 KiB page each, into table `filler`
    /// (created if missing), in writes (so commits) of up to `per_write` rows.
    fn write_filler(
        store: &SqliteStore,
        rt: &tokio::runtime::Runtime,
        rows: usize,
        per_write: usize,
    ) {
        rt.block_on(async {
            store
                .write(|c| {
                    c.execute_batch("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
                        .map_err(backend)
                })
                .await
                .unwrap();
            for first in (0..rows).step_by(per_write) {
                let n = (rows - first).min(per_write);
                store
                    .write(move |c| {
                        for _ in 0..n {
                            c.execute("INSERT INTO filler VALUES (randomblob(3000))", [])
                                .map_err(backend)?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
        });
    }

    /// After a burst of writes has grown the WAL past [`WAL_SIZE_LIMIT`] and been checkpointed, the
    /// next write starts the WAL over and cuts the file back to the limit.
    #[test]
    fn a_wal_grown_by_a_burst_is_cut_back_once_checkpointed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let wal = dir.path().join("s.db-wal");
        let store = SqliteStore::open(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // 1.5 times the limit in pages, in one commit: the WAL must hold all of it whenever the
        // checkpointer runs. (In commits of 500 rows, a checkpointer that kept up could start the
        // WAL over between two of them, and it never grew past the limit: seen on a busy machine.)
        let pages = (WAL_SIZE_LIMIT as usize / 4096) * 3 / 2;
        write_filler(&store, &rt, pages, pages);
        let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        let grown = wal_size();
        assert!(
            grown > WAL_SIZE_LIMIT as u64,
            "the WAL grew to {grown} bytes only"
        );
        // Each write starts the WAL over once the checkpointer has copied all of it.
        // (A bound on waiting for the checkpointer, not a measure of it.)
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            write_filler(&store, &rt, 1, 1);
            if wal_size() <= WAL_SIZE_LIMIT as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the WAL is still {} bytes (limit {WAL_SIZE_LIMIT})",
                wal_size()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every reader's name fits the 15 bytes Linux keeps, so each shows apart in `top -H` and perf.
    #[test]
    fn reader_names_fit_a_linux_thread_name() {
        assert!(
            reader_name(MAX_READERS).len() <= 15,
            "{}",
            reader_name(MAX_READERS)
        );
        assert_ne!(reader_name(1), reader_name(10));
    }

    /// Reads that block (as reads of a cold disk do) start more readers once every reader is busy
    /// and a read has waited; every read is answered. The reads block on channels the test
    /// controls, so the steps below happen in this order on any machine, however loaded.
    #[test]
    fn blocking_reads_start_more_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let readers = &store.readers;
        assert_eq!(threads(&store), MIN_READERS);
        let disk_bound = || readers.disk_bound();
        assert!(!disk_bound(), "a new store assumes reads from memory");

        // Reads that sleep teach the readers that reads block. Each reader folds its last
        // batch into the average right after answering, so this takes a few reads.
        let (taught_tx, taught_rx) = std::sync::mpsc::channel();
        let mut taught = 0;
        while !disk_bound() {
            assert!(taught < 1000, "sleeping reads never counted as blocking");
            let taught_tx = taught_tx.clone();
            readers.submit(Box::new(move |_| {
                std::thread::sleep(Duration::from_millis(1));
                taught_tx.send(()).unwrap();
            }));
            taught_rx.recv().unwrap();
            taught += 1;
        }
        assert_eq!(
            threads(&store),
            MIN_READERS,
            "reads one at a time start no reader"
        );

        // A read that blocks until the test lets it go, then answers on `done`.
        let (started_tx, started) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let mut gates = Vec::new();
        let mut submit_gated = || {
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let (started_tx, done_tx) = (started_tx.clone(), done_tx.clone());
            readers.submit(Box::new(move |c| {
                started_tx.send(()).unwrap();
                let _ = wait.recv();
                let seven: i64 = c.query_row("SELECT 7", [], |r| r.get(0)).unwrap();
                done_tx.send(seven).unwrap();
            }));
            gates.push(go);
        };
        // Every reader busy: disk-bound readers take one read each.
        for _ in 0..MIN_READERS {
            submit_gated();
        }
        for _ in 0..MIN_READERS {
            started.recv().unwrap();
        }
        assert_eq!(threads(&store), MIN_READERS);
        // One read waits in the queue; one arriving before it has waited starts no reader...
        submit_gated();
        assert_eq!(threads(&store), MIN_READERS, "nothing has waited yet");
        // ...one arriving after it has waited GROW_AFTER does.
        std::thread::sleep(2 * GROW_AFTER);
        submit_gated();
        assert_eq!(threads(&store), MIN_READERS + 1);
        started.recv().unwrap(); // the new reader took the read that waited

        drop(gates);
        let answers: Vec<i64> = done.iter().take(MIN_READERS + 2).collect();
        assert_eq!(answers, vec![7; MIN_READERS + 2]);
    }

    /// Reads served from memory never start more readers, however many queue up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_reads_from_memory_start_no_readers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        for _ in 0..20 {
            let reads: Vec<_> = (0..500)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store
                            .read_on_readers(|c| {
                                c.query_row("SELECT COUNT(*) FROM sessions", [], |r| {
                                    r.get::<_, i64>(0)
                                })
                                .map_err(backend)
                            })
                            .await
                    })
                })
                .collect();
            for read in reads {
                assert_eq!(read.await.unwrap().unwrap(), 0);
            }
        }
        assert_eq!(threads(&store), MIN_READERS);
    }

    /// The name of the thread a read ran on.
    async fn read_thread(store: &SqliteStore) -> String {
        store
            .read(|_| Ok(std::thread::current().name().unwrap_or("").to_owned()))
            .await
            .unwrap()
    }

    /// While reads do not block, a read runs on the calling thread (no switch to a reader
    /// and back); once they block on the disk, on the reader threads, and inline again once they
    /// stop blocking. A read that panics is an error, and the connection stays usable.
    #[test]
    fn reads_run_inline_until_they_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        // A current-thread runtime polls on this thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let caller = std::thread::current().name().unwrap().to_owned();
        rt.block_on(async {
            assert_eq!(read_thread(&store).await, caller);
            let session = store.get_session(ApiId::Anam, "x").await.unwrap();
            assert!(session.is_none());

            // Inline reads that block (sleeping is a voluntary switch, as a disk read is)
            // soon send reads to the reader threads.
            let mut blocked = 0;
            while !store.readers.disk_bound() {
                assert!(blocked < 1000, "blocking inline reads never counted");
                store
                    .read(|_| {
                        std::thread::sleep(Duration::from_millis(1));
                        Ok(())
                    })
                    .await
                    .unwrap();
                blocked += 1;
            }
            assert!(read_thread(&store).await.starts_with("sqlite-read-"));

            // Reads that do not block bring them back.
            let mut fast = 0;
            while store.readers.disk_bound() {
                assert!(fast < 1000, "fast reads never counted");
                read_thread(&store).await;
                fast += 1;
            }
            assert_eq!(read_thread(&store).await, caller);

            let panicked = store.read::<(), _>(|_| panic!("a bug in a read")).await;
            assert!(matches!(panicked, Err(StoreError::Backend(_))));
            // (Printing the panic may have blocked, so the next read may run on a reader.)
            assert!(store.get_session(ApiId::Anam, "x").await.unwrap().is_none());
        });
    }

    /// The prewarm reads the id index, on a thread the store stops and joins when dropped: the
    /// last connection to close then still moves the WAL into the database file.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_prewarm_reads_the_id_index_and_ends_with_the_store() {
        let (dir, store) = store_with_tenant().await;
        let path = dir.path().join("s.db");
        let ids: Vec<String> = (0..3000).map(|i| format!("s{i:04}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        store.insert_sessions(sessions(&ids)).await.unwrap();
        let conn = open_reader(&path).unwrap();
        assert_eq!(read_id_index(&conn).unwrap(), 3000);
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT count(*) FROM sessions INDEXED BY sessions_by_id",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert_eq!(plan, "SCAN sessions USING COVERING INDEX sessions_by_id");
        close(conn);
        store.prewarm();
        store.prewarm(); // a second call starts nothing
        tokio::task::block_in_place(|| drop(store));
        assert!(!dir.path().join("s.db-wal").exists(), "the WAL is left");
        assert_eq!(stored_ids(&path).len(), 3000);
        assert_integrity(&path);
    }

    fn session(id: &str) -> SessionRow {
        SessionRow {
            api: ApiId::Anam,
            id: id.into(),
            tenant: "t".into(),
            version: 1,
            body: Bytes::from(format!(r#"{{"id":"{id}"}}"#)),
            doc: None,
        }
    }

    fn sessions(ids: &[&str]) -> Vec<SessionRow> {
        ids.iter().map(|id| session(id)).collect()
    }

    /// The ids of the stored sessions in `pk` order, read through a connection of its own (as
    /// another process would).
    fn stored_ids(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut st = conn.prepare("SELECT id FROM sessions ORDER BY pk").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn session_indexes(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut st = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'sessions' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Both session indexes are there, and SQLite's own check finds the file whole.
    fn assert_whole(path: &Path) {
        assert_eq!(
            session_indexes(path),
            ["sessions_by_id", "sessions_by_tenant"]
        );
        assert_integrity(path);
    }

    /// SQLite's own check of the file: every index holds exactly its table's rows.
    fn assert_integrity(path: &Path) {
        let conn = Connection::open(path).unwrap();
        let report: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(report, "ok");
    }

    /// A new store in a temporary dir (`s.db`) with Anam tenant `t`.
    async fn store_with_tenant() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        store
            .create_tenant(ApiId::Anam, "t", "2026-12-02T00:00:00.000Z")
            .await
            .unwrap();
        (dir, store)
    }

    /// A bulk load into an empty store is one transaction that others see only once it ends, its
    /// own reads see its rows, and the indexes are back when it ends: ids are unique again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_load_is_seen_whole_once_it_ends_with_its_indexes() {
        let (dir, store) = store_with_tenant().await;
        let path = dir.path().join("s.db");
        assert!(store.begin_bulk().await.unwrap());
        assert_eq!(
            session_indexes(&path),
            ["sessions_by_id", "sessions_by_tenant"],
            "nor is the indexes' drop"
        );
        store.insert_sessions(sessions(&["a", "b"])).await.unwrap();
        store.insert_sessions(sessions(&["c"])).await.unwrap();
        assert!(
            stored_ids(&path).is_empty(),
            "others see the load only once it ends"
        );
        let read = store.get_session(ApiId::Anam, "c").await.unwrap();
        assert_eq!(read.map(|r| r.body), Some(session("c").body));
        let page = store
            .list_sessions(ApiId::Anam, "t", None, 10)
            .await
            .unwrap();
        assert_eq!(page.rows.len(), 3);
        assert_eq!(store.end_bulk().await.unwrap(), None);
        assert_eq!(stored_ids(&path), ["a", "b", "c"]);
        // (The tenant index is kept through the load, the id index built at its end.)
        assert_whole(&path);
        assert!(matches!(
            store.insert_session(&session("b")).await,
            Err(StoreError::Conflict)
        ));
        // Ending again, or a load into a store that holds sessions: nothing to do.
        assert_eq!(store.end_bulk().await.unwrap(), None);
        assert!(!store.begin_bulk().await.unwrap());
        store.insert_sessions(sessions(&["d"])).await.unwrap();
        assert_eq!(stored_ids(&path), ["a", "b", "c", "d"]);
    }

    /// An id stored twice in a bulk load is found when it ends: the later one is named (its call
    /// and place), and the calls before its call are kept, committed, with their indexes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_id_stored_twice_in_a_bulk_load_is_named_and_the_calls_before_it_are_kept() {
        let (dir, store) = store_with_tenant().await;
        let path = dir.path().join("s.db");
        assert!(store.begin_bulk().await.unwrap());
        store.insert_sessions(sessions(&["a", "b"])).await.unwrap();
        store.insert_sessions(Vec::new()).await.unwrap();
        store
            .insert_sessions(sessions(&["c", "d", "a", "e"]))
            .await
            .unwrap();
        // A second duplicate, later: the first one is named.
        store.insert_sessions(sessions(&["f", "c"])).await.unwrap();
        let duplicate = store.end_bulk().await.unwrap();
        assert_eq!(
            duplicate,
            Some(BulkDuplicate {
                call: 2,
                index: 2,
                id: "a".into()
            })
        );
        assert_eq!(stored_ids(&path), ["a", "b"]);
        assert_whole(&path);
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.get_session(ApiId::Anam, "b").await.unwrap().is_some());
        assert!(store.get_session(ApiId::Anam, "c").await.unwrap().is_none());
    }

    /// Anam session `id`, read through `store`.
    async fn anam_session(store: &SqliteStore, id: &str) -> Option<SessionRow> {
        store.get_session(ApiId::Anam, id).await.unwrap()
    }

    /// Bytes 18 and 19 of a database file's header: 2 in WAL mode, 1 with a rollback journal.
    fn file_format(path: &Path) -> [u8; 2] {
        let header = std::fs::read(path).unwrap();
        [header[18], header[19]]
    }

    /// What is beside `path` (`s.db`) in its dir: `-wal`, `-shm`, `-journal`.
    fn beside(path: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("s.db") && n != "s.db")
            .collect();
        names.sort();
        names
    }

    async fn bulk_tool_store(path: &Path) -> SqliteStore {
        bulk_tool_store_expecting(path, None).await
    }

    /// A bulk tool's store that expects to load `expected` sessions.
    async fn bulk_tool_store_expecting(path: &Path, expected: Option<u64>) -> SqliteStore {
        let options = StoreOptions {
            bulk_tool: true,
            bulk_expected: expected,
            ..StoreOptions::default()
        };
        let store = SqliteStore::open_with(path, options).unwrap();
        // (Made by the first tool or server.)
        match store
            .create_tenant(ApiId::Anam, "t", "2026-12-02T00:00:00.000Z")
            .await
        {
            Ok(()) | Err(StoreError::Conflict) => store,
            Err(e) => panic!("{e}"),
        }
    }

    /// A bulk tool's store in a new temporary dir (`s.db`), with Anam tenant `t`.
    async fn new_bulk_tool_store() -> (tempfile::TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = bulk_tool_store(&path).await;
        (dir, path, store)
    }

    /// A bulk tool's load into a store without sessions writes the database file, not the WAL:
    /// a rollback journal is beside the file while the load runs, and no WAL. Once the tool
    /// closes the store it is in WAL mode again, the load and both indexes in the file, nothing
    /// beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_tool_loads_an_empty_store_past_the_wal_and_leaves_it_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(SqliteStore::open(&path).unwrap()); // made by a server: WAL mode
        assert_eq!(file_format(&path), [2, 2]);
        let store = bulk_tool_store(&path).await;
        assert!(store.begin_bulk().await.unwrap());
        store.insert_sessions(sessions(&["a", "b"])).await.unwrap();
        assert_eq!(file_format(&path), [1, 1]);
        assert_eq!(beside(&path), ["s.db-journal"]);
        store.insert_sessions(sessions(&["c"])).await.unwrap();
        assert_eq!(store.end_bulk().await.unwrap(), None);
        assert_eq!(
            anam_session(&store, "c").await.map(|r| r.body),
            Some(session("c").body)
        );
        drop(store);
        assert_eq!(file_format(&path), [2, 2]);
        assert_eq!(beside(&path), Vec::<String>::new());
        assert_eq!(stored_ids(&path), ["a", "b", "c"]);
        assert_whole(&path);
    }

    /// While a bulk tool loads a store past the WAL, a server cannot open it, and says why; once
    /// the tool is done, it can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_cannot_open_a_store_a_bulk_tool_loads_past_the_wal_and_says_why() {
        let (_dir, path, tool) = new_bulk_tool_store().await;
        assert!(tool.begin_bulk().await.unwrap());
        tool.insert_sessions(sessions(&["a"])).await.unwrap();
        let error = match SqliteStore::open(&path) {
            Ok(_) => panic!("a server opened the store during the load"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            error.contains("is locked by another process (an `import` or `seed`"),
            "{error}"
        );
        assert_eq!(tool.end_bulk().await.unwrap(), None);
        drop(tool);
        let server = SqliteStore::open(&path).unwrap();
        assert!(anam_session(&server, "a").await.is_some());
    }

    /// A store that holds sessions, or that a server has open, stays in WAL mode for a bulk
    /// tool: the server reads what was there until the load ends, then sees it whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_tool_keeps_wal_mode_for_a_store_with_sessions_or_a_server() {
        let (dir, server) = store_with_tenant().await;
        let path = dir.path().join("s.db");
        let tool = bulk_tool_store(&path).await;
        assert!(tool.begin_bulk().await.unwrap());
        tool.insert_sessions(sessions(&["a"])).await.unwrap();
        assert_eq!(file_format(&path), [2, 2]);
        assert!(anam_session(&server, "a").await.is_none());
        assert_eq!(tool.end_bulk().await.unwrap(), None);
        assert!(anam_session(&server, "a").await.is_some());
        drop(tool);
        drop(server);
        let tool = bulk_tool_store(&path).await;
        assert!(!tool.begin_bulk().await.unwrap(), "it holds a session");
        tool.insert_sessions(sessions(&["b"])).await.unwrap();
        assert_eq!(file_format(&path), [2, 2]);
        drop(tool);
        assert_eq!(stored_ids(&path), ["a", "b"]);
        assert_integrity(&path);
    }

    /// A store that holds sessions is loaded in bulk by a bulk tool that has it to itself and
    /// expects a load large beside them, past the WAL like an empty store: an id it holds
    /// already is found as the load ends, and the calls before its call are kept with what was
    /// there. A load it does not expect to be large is stored row by row, in WAL mode.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_tool_loads_a_store_with_sessions_in_bulk_when_the_load_is_large_beside_them() {
        let (dir, server) = store_with_tenant().await;
        let path = dir.path().join("s.db");
        server
            .insert_sessions(sessions(&["a", "b", "c", "d"]))
            .await
            .unwrap();
        drop(server);
        let tool = bulk_tool_store_expecting(&path, Some(0)).await;
        assert!(!tool.begin_bulk().await.unwrap(), "a load of none beside 4");
        assert_eq!(file_format(&path), [2, 2]);
        drop(tool);

        let tool = bulk_tool_store_expecting(&path, Some(1)).await;
        assert!(tool.begin_bulk().await.unwrap(), "1 for every 4 held");
        tool.insert_sessions(sessions(&["e"])).await.unwrap();
        assert_eq!(file_format(&path), [1, 1]);
        assert_eq!(beside(&path), ["s.db-journal"]);
        assert!(anam_session(&tool, "e").await.is_some());
        tool.insert_sessions(sessions(&["f", "a"])).await.unwrap();
        assert_eq!(
            tool.end_bulk().await.unwrap(),
            Some(BulkDuplicate {
                call: 1,
                index: 1,
                id: "a".into()
            })
        );
        drop(tool);
        assert_eq!(stored_ids(&path), ["a", "b", "c", "d", "e"]);
        assert_whole(&path);
        assert_eq!(file_format(&path), [2, 2]);
        assert_eq!(beside(&path), Vec::<String>::new());
    }

    /// A bulk tool's load that stops half way (the process killed, the machine down) is undone
    /// when the store is next opened: its pages already in the file are cut off, and the id
    /// index it dropped is back. The files are copied while the load's transaction is open,
    /// after the writer had to move pages of it into the database file (its cache is made small
    /// for that), as they would be found after a crash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_tool_load_cut_off_half_way_is_undone_at_the_next_open() {
        assert_cut_off_load_is_undone(&[]).await;
    }

    /// The same for a store that held sessions: the pages of the id index it dropped, which the
    /// load wrote over, are restored from the journal.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bulk_load_cut_off_half_way_into_a_store_with_sessions_is_undone() {
        let held: Vec<String> = (0..3000).map(|i| format!("held-session-{i:05}")).collect();
        assert_cut_off_load_is_undone(&held).await;
    }

    /// Loads 4 MiB of sessions in bulk into a store holding sessions `held`, copies the files
    /// half way, and opens the copy: `held` and nothing else, indexes and integrity whole.
    async fn assert_cut_off_load_is_undone(held: &[String]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        if !held.is_empty() {
            let server = SqliteStore::open(&path).unwrap();
            server
                .create_tenant(ApiId::Anam, "t", "2026-12-02T00:00:00.000Z")
                .await
                .unwrap();
            let ids: Vec<&str> = held.iter().map(String::as_str).collect();
            server.insert_sessions(sessions(&ids)).await.unwrap();
        }
        let store = bulk_tool_store_expecting(&path, Some(held.len() as u64)).await;
        let size_before = std::fs::metadata(&path).unwrap().len();
        store
            .write(|c| c.pragma_update(None, "cache_size", -256).map_err(backend))
            .await
            .unwrap();
        assert!(store.begin_bulk().await.unwrap());
        // Incompressible bodies of 64 KiB each: 4 MiB in all, sixteen times the cache.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        let rows = (0..64)
            .map(|i| {
                let noise: String = (0..64 * 1024)
                    .map(|_| char::from(rand::Rng::random_range(&mut rng, b'!'..=b'~')))
                    .filter(|c| *c != '"' && *c != '\\')
                    .collect();
                SessionRow {
                    body: Bytes::from(format!(r#"{{"id":"s{i}","noise":"{noise}"}}"#)),
                    ..session(&format!("s{i}"))
                }
            })
            .collect();
        store.insert_sessions(rows).await.unwrap();
        assert!(
            std::fs::metadata(&path).unwrap().len() > size_before + (1 << 20),
            "the load is partly in the database file"
        );
        let crashed = tempfile::tempdir().unwrap();
        let copy = crashed.path().join("s.db");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::copy(
            dir.path().join("s.db-journal"),
            crashed.path().join("s.db-journal"),
        )
        .unwrap();

        let reopened = SqliteStore::open(&copy).unwrap();
        assert!(
            anam_session(&reopened, "s0").await.is_none(),
            "nothing of the load"
        );
        drop(reopened);
        assert_eq!(stored_ids(&copy), held);
        assert_whole(&copy);
        assert_eq!(file_format(&copy), [2, 2]);
        assert_eq!(std::fs::metadata(&copy).unwrap().len(), size_before);
        // The load itself goes on.
        assert_eq!(store.end_bulk().await.unwrap(), None);
        drop(store);
        assert_eq!(stored_ids(&path).len(), held.len() + 64);
        assert_integrity(&path);
    }

    /// A store of schema version 2 (its id index part of the table) is migrated: same rows, same
    /// `pk`s, the indexes now of their own, and ids still unique.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_of_schema_version_2_gets_indexes_that_a_bulk_load_can_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 2;
                 INSERT INTO tenants (api, id, created_at) VALUES ('anam', 't', 'now');
                 INSERT INTO sessions (pk, api, id, tenant, version, body)
                 VALUES (7, 'anam', 'x', 't', 1, CAST('{\"id\":\"x\"}' AS BLOB)),
                        (9, 'anam', 'y', 't', 2, CAST('{\"id\":\"y\"}' AS BLOB));",
            )
            .unwrap();
            assert_eq!(
                session_indexes(&path),
                ["sessions_by_tenant", "sqlite_autoindex_sessions_1"]
            );
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            session_indexes(&path),
            ["sessions_by_id", "sessions_by_tenant"]
        );
        let conn = Connection::open(&path).unwrap();
        let rows: Vec<(i64, String, i64)> = conn
            .prepare("SELECT pk, id, version FROM sessions ORDER BY pk")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [(7, "x".into(), 1), (9, "y".into(), 2)]);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert!(matches!(
            store.insert_session(&session("x")).await,
            Err(StoreError::Conflict)
        ));
        let page = store
            .list_sessions(ApiId::Anam, "t", None, 10)
            .await
            .unwrap();
        assert_eq!(page.rows.len(), 2);
        // It holds sessions: no bulk load.
        assert!(!store.begin_bulk().await.unwrap());
    }
}
