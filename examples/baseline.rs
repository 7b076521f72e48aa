//! The benchmark baseline: a minimal hyper 1.x server that answers every request with the same
//! bytes, `content-type: application/json`, no auth, no lookup, no routing, no logging.
//!
//! `bench/run.sh` fetches the exact body sessiond returns for the benchmarked session, writes it
//! to a file and starts this server with it, under the same runtime configuration as sessiond
//! (tokio multi-thread runtime, worker count from `TOKIO_WORKER_THREADS`, which tokio itself reads,
//! exactly as it does for sessiond).
//!
//! Usage: `baseline --listen 127.0.0.1:18090 --body FILE`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn usage() -> ! {
    eprintln!("usage: baseline --listen ADDR --body FILE");
    std::process::exit(2)
}

fn main() {
    let mut listen: Option<SocketAddr> = None;
    let mut body_file: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().and_then(|v| v.parse().ok()),
            "--body" => body_file = args.next(),
            _ => usage(),
        }
    }
    let (Some(listen), Some(body_file)) = (listen, body_file) else {
        usage()
    };
    let body = match std::fs::read(&body_file) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("baseline: reading {body_file}: {e}");
            std::process::exit(1)
        }
    };
    // Same builder call as sessiond's `cli::main`: the worker count comes from TOKIO_WORKER_THREADS.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(serve(listen, body));
}

async fn serve(listen: SocketAddr, body: Bytes) {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| panic!("binding {listen}: {e}"));
    eprintln!("baseline listening on {listen} ({} byte body)", body.len());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("baseline: accept: {e}");
                continue;
            }
        };
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let mut response = Response::new(Full::new(body.clone()));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
