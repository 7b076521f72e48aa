//! A TCP proxy that a test can cut and restore, to take a database away from a server and give it
//! back without touching the database.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Default)]
struct State {
    cut: bool,
    /// The connections being forwarded.
    forwarding: JoinSet<()>,
    /// Connections accepted while cut: held open, never answered.
    held: Vec<TcpStream>,
}

/// Forwards connections on a loopback port to `upstream` until cut.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone()));
        Proxy {
            addr,
            state,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Like a network partition that also resets what was open: every forwarded connection is
    /// closed, and new ones are accepted but never answered (connecting hangs).
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        state.forwarding.abort_all();
    }

    /// Forwards new connections again; the ones held while cut are closed.
    pub fn restore(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = false;
        state.held.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        let mut state = state.lock().unwrap();
        if state.cut {
            state.held.push(inbound);
            continue;
        }
        while state.forwarding.try_join_next().is_some() {}
        state.forwarding.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
