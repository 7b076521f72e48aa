//! The vendor and admin listeners' connections: graceful shutdown, and the close of idle ones.
//!
//! On shutdown every connection finishes the request it is serving and closes, idle keep-alive
//! connections at once. hyper-util's `GracefulShutdown` does the same by polling a `watch`
//! channel's `changed()` on every wake-up of every connection, which takes the channel's waiter
//! lock each time (visible in a callgrind profile of cached GETs, `bench/callgrind_get.sh`). Here a
//! connection registers its waker once and then pays one atomic load per wake-up; shutdown sets
//! the flag and wakes every registered connection.
//!
//! With an idle timeout, one sweeper per listener ([`Drain::close_idle`]) looks at every
//! connection once per timeout and closes those on which no request began since its previous
//! look, so within one to two timeouts of idleness. A timer per connection (a `Sleep` raced
//! against the connection) was polled on every wake-up of the connection: 150 user-space
//! instructions of a cached GET (`bench/callgrind_get.sh`), and a timer-wheel entry per
//! connection; a connection now pays a second atomic load per wake-up.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;

/// The connections of one listener.
pub struct Drain {
    stopping: AtomicBool,
    /// Every connection that has been polled and not yet dropped.
    conns: Mutex<HashMap<u64, Registered>>,
    next_id: AtomicU64,
    /// Every watched connection holds a receiver: shutdown ends when none is left.
    open: tokio::sync::watch::Sender<()>,
}

/// What a connection shares with its listener's [`Drain`].
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests begun on the connection (bumped by the connection's service).
    started: AtomicU64,
    /// Set by the sweeper: the connection is to close.
    idle: AtomicBool,
}

impl Activity {
    /// Counts a request that begins.
    pub fn request_began(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }
}

/// A connection as the drain knows it.
struct Registered {
    waker: Waker,
    activity: Arc<Activity>,
    /// `started` at the sweeper's previous look (`None`: not looked at yet).
    seen: Option<u64>,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            open: tokio::sync::watch::Sender::new(()),
        })
    }

    /// `conn`, told to shut down gracefully once [`Drain::shutdown`] is called, and ended by
    /// [`Drain::close_idle`] if no request begins on it (`activity`, which its service bumps).
    pub fn watch<C: GracefulConnection + Unpin>(
        self: &Arc<Self>,
        conn: C,
        activity: Arc<Activity>,
    ) -> Draining<C> {
        Draining {
            conn,
            activity,
            drain: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            waker: None,
            told: false,
            _open: self.open.subscribe(),
        }
    }

    /// Tells every connection to finish and close, and waits until all have.
    pub async fn shutdown(&self) {
        // Set before waking: a connection that registers after the wake-ups below (under the
        // same lock) sees the flag when it checks it right after registering.
        self.stopping.store(true, Ordering::SeqCst);
        for conn in self.lock().values() {
            conn.waker.wake_by_ref();
        }
        self.open.closed().await;
    }

    /// Runs until dropped: every `timeout`, ends each connection on which no request began since
    /// the previous round (so after one to two timeouts without one; a connection accepted
    /// between two rounds is first only looked at).
    pub async fn close_idle(self: Arc<Self>, timeout: Duration) {
        let mut rounds = tokio::time::interval(timeout);
        rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rounds.tick().await; // the first tick is immediate
        loop {
            rounds.tick().await;
            for conn in self.lock().values_mut() {
                let started = conn.activity.started.load(Ordering::Relaxed);
                if conn.seen == Some(started) {
                    conn.activity.idle.store(true, Ordering::Release);
                    conn.waker.wake_by_ref();
                }
                conn.seen = Some(started);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Registered>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection watched by a [`Drain`]: its output, or `None` when it was closed as idle (the
/// connection is dropped with it, which closes the socket without an answer).
pub struct Draining<C> {
    conn: C,
    activity: Arc<Activity>,
    drain: Arc<Drain>,
    id: u64,
    /// The waker registered with the drain (a task's waker does not change between polls).
    waker: Option<Waker>,
    /// Whether the connection has been told to shut down.
    told: bool,
    _open: tokio::sync::watch::Receiver<()>,
}

impl<C: GracefulConnection + Unpin> Future for Draining<C> {
    type Output = Option<C::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<C::Output>> {
        let this = &mut *self;
        if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            let mut conns = this.drain.lock();
            let seen = conns.get(&this.id).and_then(|c| c.seen);
            conns.insert(
                this.id,
                Registered {
                    waker: waker.clone(),
                    activity: this.activity.clone(),
                    seen,
                },
            );
            this.waker = Some(waker);
        }
        if this.activity.idle.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if !this.told && this.drain.stopping.load(Ordering::SeqCst) {
            this.told = true;
            Pin::new(&mut this.conn).graceful_shutdown();
        }
        Pin::new(&mut this.conn).poll(cx).map(Some)
    }
}

impl<C> Drop for Draining<C> {
    fn drop(&mut self) {
        if self.waker.is_some() {
            self.drain.lock().remove(&self.id);
        }
    }
}
