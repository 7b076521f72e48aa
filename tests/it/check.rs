//! `sessiond check`, through the real binary: it passes sessiond (every api, the demo, over
//! https), and it names each answer of a server that breaks a contract, exiting 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use sessiond::ApiId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::process::{ProcessServer, cli};
use crate::common::{CONTRACTS, Storage, TestServer};

per_api!(passes_sessiond);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The base URL a client of `api` is given, for a server whose vendor routes are at `root`.
fn base_url(root: &str, api: ApiId) -> String {
    format!("{root}/{api}{}", CONTRACTS.get(api).base_path)
}

/// Lines of the report with this verdict.
fn lines<'a>(report: &'a str, verdict: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{verdict} ")))
        .collect()
}

async fn passes_sessiond(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let url = base_url(&format!("http://{}", server.public), api);
    let out = cli(&[
        "check",
        "--api",
        api.as_str(),
        "--url",
        &url,
        "--key",
        &session.key,
        "--id",
        &session.id,
    ])
    .await;
    let report = stdout(&out);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    assert!(lines(&report, "FAIL").is_empty(), "{report}");
    // The session, then the refusals: no credential, a key nobody issued, an unknown id, a
    // malformed one.
    let ok = lines(&report, "ok");
    assert_eq!(ok.len(), 5, "{report}");
    assert!(
        ok[0].contains(&format!("session {} with the key: 200", session.id)),
        "{report}"
    );
    assert!(
        report.contains(&format!("{api}: 5 ok, 0 failed")),
        "{report}"
    );
    // sessiond answers as its own profile says: no note of a difference.
    assert!(!report.contains("profile answers"), "{report}");
    assert!(!report.contains(&session.key) && !stderr(&out).contains(&session.key));
}

#[tokio::test]
async fn passes_the_demo() {
    let storage = Storage::new().await;
    let mut args = storage.args();
    args.push("--demo".to_owned());
    let server = ProcessServer::spawn_with(&args).await;
    let out = cli(&[
        "check",
        "--demo",
        "--url",
        &format!("http://{}", server.public),
    ])
    .await;
    let report = stdout(&out);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    for api in ApiId::ALL {
        // Three demo sessions and four refusals.
        assert!(
            report.contains(&format!("{api}: 7 ok, 0 failed")),
            "{report}"
        );
    }
    assert!(
        !report.contains("_demo"),
        "a demo key was printed: {report}"
    );
}

#[tokio::test]
async fn without_a_key_only_the_refusals_are_checked() {
    let (server, session) = TestServer::with_one_session(ApiId::Alcamine).await;
    let url = base_url(&format!("http://{}", server.public), ApiId::Alcamine);
    let out = cli(&[
        "check",
        "--api",
        "alcamine",
        "--url",
        &url,
        "--id",
        &session.id,
    ])
    .await;
    let report = stdout(&out);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    assert_eq!(lines(&report, "ok").len(), 2, "{report}");
    assert!(report.contains("no --key given"), "{report}");
}

/// The SaleSnip session the breaking server holds.
const STORED: &str = "session_gwKZLboVjktjO2HL9";

/// A server that breaks SaleSnip's contract in four ways and keeps it in one:
/// - the stored session's body misses required fields;
/// - without a key it answers 401, with an `error` the contract's enum does not hold;
/// - with any other key it answers 200;
/// - an unknown id is a 500;
/// - a malformed id is a 404 as SaleSnip's (a status the contract does not declare).
async fn breaking_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    addr
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let keyed = head.contains("\r\nx-api-key:");
    let stored = path.ends_with(&STORED.to_ascii_lowercase());
    let (status, body) = if !keyed {
        (401, r#"{"error":"Unauthorized"}"#.to_owned())
    } else if stored {
        (200, format!(r#"{{"id":"{STORED}","status":"open"}}"#))
    } else if path.contains("not%20a%20session%20id") {
        (404, r#"{"error":"Session not found"}"#.to_owned())
    } else {
        (500, r#"{"error":"boom"}"#.to_owned())
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

#[tokio::test]
async fn names_each_breach_and_exits_1() {
    let addr = breaking_server().await;
    let url = format!("http://{addr}");
    let out = cli(&[
        "check", "--api", "salesnip", "--url", &url, "--key", "sk_any", "--id", STORED,
    ])
    .await;
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}\n{}", stderr(&out));
    let failed = lines(&report, "FAIL");
    assert_eq!(failed.len(), 4, "{report}");
    let expect = [
        (
            "session",
            "200, the body is not valid against the contract's 200 schema",
        ),
        (
            "without a credential",
            "401, the body is not valid against the contract's 401 schema",
        ),
        (
            "with a key nobody issued",
            "expected a refusal (4xx), got 200",
        ),
        ("unknown id", "expected a refusal (4xx), got 500"),
    ];
    for ((probe, detail), line) in expect.iter().zip(&failed) {
        assert!(
            line.contains(probe) && line.contains(detail),
            "{line}\n{report}"
        );
    }
    // The malformed id's 404 is SaleSnip's own answer; the contract declares no 404.
    let ok = lines(&report, "ok");
    assert_eq!(ok.len(), 1, "{report}");
    assert!(
        ok[0].contains("malformed id") && ok[0].contains("404"),
        "{report}"
    );
    assert!(report.contains("the contract declares no 404"), "{report}");
    // The 401 differs from what sessiond's SaleSnip profile answers.
    assert!(report.contains("profile answers 401"), "{report}");
    assert!(
        stderr(&out).contains("4 of 5 checks failed"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_server_that_does_not_answer_fails_the_check() {
    // A port nothing listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let out = cli(&[
        "check",
        "--api",
        "anam",
        "--url",
        &format!("http://{addr}"),
        "--key",
        "sk_x",
    ])
    .await;
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("connecting to 127.0.0.1:{}", addr.port())),
        "{report}"
    );
}

// ---- https ----------------------------------------------------------------------------------------

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1 (tests/fixtures/tls).
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Terminates TLS on a port of its own and forwards the plain bytes to `upstream`.
async fn tls_front(upstream: SocketAddr) -> SocketAddr {
    let certs = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let config = ServerConfig::builder_with_provider(sessiond::check::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn checks_over_https() {
    let (server, session) = TestServer::with_one_session(ApiId::Anam).await;
    let front = tls_front(server.public).await;
    let url = base_url(&format!("https://localhost:{}", front.port()), ApiId::Anam);
    let args = |ca: bool| {
        let mut args = vec![
            "check".to_owned(),
            "--api".to_owned(),
            "anam".to_owned(),
            "--url".to_owned(),
            url.clone(),
            "--key".to_owned(),
            session.key.clone(),
            "--id".to_owned(),
            session.id.clone(),
        ];
        if ca {
            args.push("--ca-file".to_owned());
            args.push(fixture("ca.pem").display().to_string());
        }
        args
    };

    let out = cli(&as_strs(&args(true))).await;
    let report = stdout(&out);
    assert!(out.status.success(), "{report}\n{}", stderr(&out));
    assert!(report.contains("anam: 5 ok, 0 failed"), "{report}");

    // Without the test CA, the certificate is not trusted: every probe fails on it.
    let out = cli(&as_strs(&args(false))).await;
    let report = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let failed = lines(&report, "FAIL");
    assert_eq!(failed.len(), 5, "{report}");
    assert!(
        failed.iter().all(|l| l.contains("TLS with localhost")),
        "{report}"
    );
}
