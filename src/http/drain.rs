//! Graceful shutdown of the vendor listeners' connections: on shutdown every connection finishes
//! the request it is serving and closes, idle keep-alive connections at once.
//!
//! hyper-util's `GracefulShutdown` does the same by polling a `watch` channel's `changed()` on every
//! wake-up of every connection, which takes the channel's waiter lock each time (visible in a
//! callgrind profile of cached GETs, `bench/callgrind_get.sh`). Here a connection registers its
//! waker once and then pays one atomic load per wake-up; shutdown sets the flag and wakes every
//! registered connection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;

/// The connections of one listener.
pub struct Drain {
    stopping: AtomicBool,
    /// The waker of every connection that has been polled and not yet dropped.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
    /// Every watched connection holds a receiver: shutdown ends when none is left.
    open: tokio::sync::watch::Sender<()>,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            stopping: AtomicBool::new(false),
            wakers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            open: tokio::sync::watch::Sender::new(()),
        })
    }

    /// `conn`, told to shut down gracefully once [`Drain::shutdown`] is called.
    pub fn watch<C: GracefulConnection + Unpin>(self: &Arc<Self>, conn: C) -> Draining<C> {
        Draining {
            conn,
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
        for waker in self.lock().values() {
            waker.wake_by_ref();
        }
        self.open.closed().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection watched by a [`Drain`].
pub struct Draining<C> {
    conn: C,
    drain: Arc<Drain>,
    id: u64,
    /// The waker registered with the drain (a task's waker does not change between polls).
    waker: Option<Waker>,
    /// Whether the connection has been told to shut down.
    told: bool,
    _open: tokio::sync::watch::Receiver<()>,
}

impl<C: GracefulConnection + Unpin> Future for Draining<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if !this.told {
            if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                let waker = cx.waker().clone();
                this.drain.lock().insert(this.id, waker.clone());
                this.waker = Some(waker);
            }
            if this.drain.stopping.load(Ordering::SeqCst) {
                this.told = true;
                Pin::new(&mut this.conn).graceful_shutdown();
            }
        }
        Pin::new(&mut this.conn).poll(cx)
    }
}

impl<C> Drop for Draining<C> {
    fn drop(&mut self) {
        if self.waker.is_some() {
            self.drain.lock().remove(&self.id);
        }
    }
}
