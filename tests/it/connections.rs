//! Connections of every listener: one on which no request begins within the header timeout
//! (idle between keep-alive requests, or trickling its request head) is closed. The tests wait
//! for the close itself, so they assert no timing beyond the generous [`HANG`] bound.

use std::time::Duration;

use sessiond::ApiId;

use crate::common::{HANG, KeepAlive, Options, TestServer};

/// Short, so that the tests wait little, and long beside the few steps a test takes between
/// opening a connection and sending on it; what is asserted does not depend on it.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

async fn server() -> TestServer {
    TestServer::start_with(Options {
        api_listeners: vec![ApiId::Anam],
        header_timeout: Some(HEADER_TIMEOUT),
    })
    .await
}

/// A connection to the combined listener, a SaleSnip key, and a SaleSnip id nobody stored.
async fn salesnip_connection(server: &TestServer) -> (KeepAlive, String, String) {
    let (_, key) = server.tenant_with_key(ApiId::Salesnip).await;
    let unknown = ApiId::Salesnip.profile().new_session_id();
    (KeepAlive::open(server.public).await, key, unknown)
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = server().await;
    let (mut conn, key, unknown) = salesnip_connection(&server).await;
    conn.get(ApiId::Salesnip, &unknown, &key).await.expect(404);
    conn.wait_for_close().await;
}

/// Requests at a tenth of the timeout, for several timeouts: the connection serves them all.
#[tokio::test]
async fn a_connection_with_requests_stays_open() {
    let server = server().await;
    let (mut conn, key, unknown) = salesnip_connection(&server).await;
    for _ in 0..25 {
        conn.get(ApiId::Salesnip, &unknown, &key).await.expect(404);
        tokio::time::sleep(HEADER_TIMEOUT / 10).await;
    }
    conn.wait_for_close().await;
}

#[tokio::test]
async fn a_connection_that_trickles_its_head_is_closed() {
    let server = server().await;
    let mut conn = KeepAlive::open(server.public).await;
    conn.send_raw(b"GET /anam/v1/sessions/x HTTP/1.1\r\nHost: sessiond\r\n")
        .await
        .expect("sending the request line");
    // One header line every tenth of the timeout: the head never ends, and the server must not
    // wait for it forever.
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(HEADER_TIMEOUT / 10).await;
        if conn.send_raw(b"X-Slow: 1\r\n").await.is_err() {
            break; // closed (and reset) by the server
        }
        assert!(
            started.elapsed() < HANG,
            "the server waited for the head forever"
        );
        if started.elapsed() > HEADER_TIMEOUT * 4 {
            conn.wait_for_close().await;
            break;
        }
    }
}

#[tokio::test]
async fn an_api_listener_closes_idle_connections_too() {
    let server = server().await;
    let (_, addr) = server.apis[0];
    let mut conn = KeepAlive::open(addr).await;
    conn.send_raw(b"GET /v1/sessions/x HTTP/1.1\r\nHost: sessiond\r\n\r\n")
        .await
        .expect("sending");
    // The answer (Anam's 401), then the close.
    let answer = conn.read_until_close().await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
}

#[tokio::test]
async fn the_admin_listener_closes_idle_connections_too() {
    let server = server().await;
    let mut conn = KeepAlive::open(server.admin).await;
    conn.send_raw(b"GET /healthz HTTP/1.1\r\nHost: sessiond\r\n\r\n")
        .await
        .expect("sending");
    let answer = conn.read_until_close().await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
}
