//! `sessiond check`: probes a server — sessiond, the vendor itself, another mock — against one
//! api's contract, the way a client sees it, and reports what it found.
//!
//! Each probe is one GET of the contract's get-session route, on a connection of its own:
//! - a stored session (each `--id`) with the key: 200, `application/json`, a body valid against
//!   the contract's 200 schema, its `id` the one asked for;
//! - without a credential, and with a key nobody issued: refused with a 4xx;
//! - with the key, a well-formed id that names no session, and an id the vendor's format rejects:
//!   a 4xx.
//!
//! Every answer is checked against what the contract declares: a status it declares with a JSON
//! schema must come with a body valid against that schema (failure otherwise), a status it does
//! not declare is a note (the contracts leave out most error statuses: the finding is the
//! contract's gap, not the server's), any 5xx is a failure. The refusals are also compared with
//! what sessiond's vendor profile answers (`src/vendor/*.rs`): against sessiond they agree, against
//! the vendor a difference is a note that the profile may have drifted from the vendor.
//!
//! The key is never printed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper::http::uri::{Scheme, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::auth::Secret;
use crate::spec::{Contract, Contracts, Credential};
use crate::vendor::{ApiId, PublicError};

/// Bodies larger than this are not read whole (no session comes near it).
const MAX_BODY: usize = 8 << 20;

/// An id no vendor's format admits: it has a space, which no vendor's id alphabet holds.
pub const MALFORMED_ID: &str = "not a session id";

/// What a path segment cannot hold as it is (RFC 3986: not `pchar`), escaped in an id.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Where `serve --demo` answers by default.
pub const DEMO_ROOT: &str = "http://127.0.0.1:8080";

/// What to probe: one api of one server.
#[derive(Debug)]
pub struct Target {
    pub api: ApiId,
    /// The base URL a client of the vendor would be given: the contract's server URL
    /// (`https://api.funnelfox.io/public/v1`) or its stand-in
    /// (`http://127.0.0.1:8080/funnelfox/public/v1`); the contract's route is appended to it.
    pub base_url: String,
    pub key: Option<Secret>,
    /// Ids of sessions the server holds for the key's tenant.
    pub ids: Vec<String>,
}

/// The five apis of a `serve --demo` whose vendor routes are at `root`, with the demo keys and
/// sessions.
pub fn demo_targets(root: &str, contracts: &Contracts) -> Vec<Target> {
    let root = root.trim_end_matches('/');
    ApiId::ALL
        .into_iter()
        .map(|api| Target {
            api,
            base_url: format!("{root}/{api}{}", contracts.get(api).base_path),
            key: Some(crate::auth::demo_key(api)),
            ids: api
                .profile()
                .demo_sessions()
                .iter()
                .filter_map(|doc| doc["id"].as_str().map(str::to_owned))
                .collect(),
        })
        .collect()
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As the contract says.
    Ok,
    /// Not as the contract says (or no answer at all).
    Fail,
    /// Worth knowing, and not a breach of the contract: a status the contract does not declare, an
    /// answer other than sessiond's profile gives, a probe that could not run.
    Note,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Verdict::Ok => "ok",
            Verdict::Fail => "FAIL",
            Verdict::Note => "note",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub verdict: Verdict,
    /// The probe, e.g. "without a credential".
    pub probe: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.verdict, self.probe, self.detail)
    }
}

/// rustls' *ring* provider. rustls 0.23.48 deprecated it for its lack of post-quantum key exchange,
/// in favour of aws-lc-rs, whose C library would take most of a clean build on two cores; a probe
/// that sends a key once over classical ECDHE (X25519, P-256) does not need one.
#[expect(
    deprecated,
    reason = "ring: no post-quantum key exchange, which a probe does not need"
)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTP/1.1 client of one request per connection, `http` and `https` (rustls, the Mozilla
/// roots of `webpki-roots`, plus any given CA).
pub struct Client {
    tls: TlsConnector,
    timeout: Duration,
}

impl Client {
    /// `ca_file`: PEM certificates to trust besides the public roots (a private CA, a test's).
    pub fn new(timeout: Duration, ca_file: Option<&Path>) -> anyhow::Result<Client> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut added = 0;
            for cert in certs {
                let cert = cert.with_context(|| format!("reading {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("a certificate of {}", path.display()))?;
                added += 1;
            }
            anyhow::ensure!(added > 0, "{} holds no PEM certificate", path.display());
        }
        let mut config = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// GET `url` with these extra headers; the whole answer, or why there is none.
    async fn get(&self, url: &Uri, credential: Option<&(&str, String)>) -> anyhow::Result<Reply> {
        tokio::time::timeout(self.timeout, self.exchange(url, credential))
            .await
            .map_err(|_| anyhow!("no answer within {} s", self.timeout.as_secs_f64()))?
    }

    async fn exchange(
        &self,
        url: &Uri,
        credential: Option<&(&str, String)>,
    ) -> anyhow::Result<Reply> {
        let authority = url.authority().context("the URL names no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let tls = match url.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => bail!("the URL's scheme is neither http nor https"),
        };
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        tcp.set_nodelay(true)?;

        let mut request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(HOST, authority.as_str())
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("sessiond-check/", env!("CARGO_PKG_VERSION")),
            );
        if let Some((name, value)) = credential {
            let value = HeaderValue::from_str(value)
                .map_err(|_| anyhow!("the key is not a valid header value"))?;
            request = request.header(*name, value);
        }
        // `&[u8]` chunks and a split stream: types of the client's own, so that less of hyper's
        // connection code is shared with the server's (see the release profile in Cargo.toml).
        let request = request.body(Empty::<&'static [u8]>::new())?;

        if tls {
            let name = ServerName::try_from(host.to_owned())
                .with_context(|| format!("`{host}` is not a TLS server name"))?;
            let stream = self
                .tls
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS with {host}:{port}"))?;
            send(TokioIo::new(stream), request).await
        } else {
            let (read, write) = tcp.into_split();
            send(TokioIo::new(tokio::io::join(read, write)), request).await
        }
    }
}

/// One request on a fresh connection; the answer read whole.
async fn send<I>(io: I, request: Request<Empty<&'static [u8]>>) -> anyhow::Result<Reply>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the body: {e}"))?
        .to_bytes();
    connection.abort();
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// An answer as a client sees it.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: Bytes,
}

impl Reply {
    fn is_json(&self) -> bool {
        self.content_type.as_deref().is_some_and(|ct| {
            let media = ct.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/json")
        })
    }

    /// The body as text for a report: at most 200 characters of it.
    fn excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        match text.char_indices().nth(200) {
            Some((at, _)) => format!("{}…", &text[..at]),
            None if text.is_empty() => "(empty body)".to_owned(),
            None => text.to_owned(),
        }
    }
}

/// What a probe expects.
enum Expect {
    /// 200 and the session of the probe's id.
    Session,
    /// A refusal, which sessiond's profile answers as this kind of error.
    Refusal(PublicError),
}

/// One GET to make.
struct Probe<'a> {
    name: String,
    id: String,
    /// The credential header, if one is sent.
    credential: Option<(&'a str, String)>,
    expect: Expect,
}

/// Runs every probe against `target`; the findings in the order they were made.
pub async fn run(client: &Client, contract: &Contract, target: &Target) -> Vec<Finding> {
    let mut findings = Vec::new();
    let credential = |key: &str| -> (&str, String) {
        match &contract.credential {
            Credential::Header(name) => (name.as_str(), key.to_owned()),
            Credential::Bearer => (AUTHORIZATION.as_str(), format!("Bearer {key}")),
        }
    };
    let key = target.key.as_ref().map(|k| credential(k.expose()));
    let unknown = target.api.profile().new_session_id();
    // The refusals of a credential ask for a stored session where there is one, so that only the
    // credential is wrong.
    let some_id = target.ids.first().unwrap_or(&unknown);

    let mut probes = Vec::new();
    match &key {
        Some(_) if target.ids.is_empty() => findings.push(note(
            "a stored session",
            "no --id given: no 200 body was checked".to_owned(),
        )),
        Some(key) => probes.extend(target.ids.iter().map(|id| Probe {
            name: format!("session {id} with the key"),
            id: id.clone(),
            credential: Some(key.clone()),
            expect: Expect::Session,
        })),
        None => findings.push(note(
            "with the key",
            "no --key given: only requests without a valid key were probed".to_owned(),
        )),
    }
    probes.push(Probe {
        name: "without a credential".to_owned(),
        id: some_id.clone(),
        credential: None,
        expect: Expect::Refusal(PublicError::MissingCredential),
    });
    probes.push(Probe {
        name: "with a key nobody issued".to_owned(),
        id: some_id.clone(),
        // The shape of sessiond's keys, 190 random bits.
        credential: Some(credential(&format!(
            "sk_{}_{}",
            target.api,
            crate::vendor::random_alphanumeric(32)
        ))),
        expect: Expect::Refusal(PublicError::InvalidCredential),
    });
    if let Some(key) = &key {
        probes.push(Probe {
            name: format!("unknown id {unknown}"),
            id: unknown.clone(),
            credential: Some(key.clone()),
            expect: Expect::Refusal(PublicError::NotFound),
        });
        probes.push(Probe {
            name: format!("malformed id `{MALFORMED_ID}`"),
            id: MALFORMED_ID.to_owned(),
            credential: Some(key.clone()),
            expect: Expect::Refusal(PublicError::MalformedId),
        });
    }

    let base = target.base_url.trim_end_matches('/');
    for probe in probes {
        let id = percent_encoding::utf8_percent_encode(&probe.id, PATH_SEGMENT);
        let path = contract
            .session_path
            .replace(&format!("{{{}}}", contract.id_param), &id.to_string());
        let url = match format!("{base}{path}").parse::<Uri>() {
            Ok(url) => url,
            Err(e) => {
                findings.push(fail(&probe.name, format!("`{base}` is not a URL: {e}")));
                break;
            }
        };
        match client.get(&url, probe.credential.as_ref()).await {
            Ok(reply) => judge(contract, &probe, &reply, &mut findings),
            Err(e) => findings.push(fail(&probe.name, format!("GET {url}: {e:#}"))),
        }
    }
    findings
}

fn note(probe: &str, detail: String) -> Finding {
    Finding {
        verdict: Verdict::Note,
        probe: probe.to_owned(),
        detail,
    }
}

fn ok(probe: &str, detail: String) -> Finding {
    Finding {
        verdict: Verdict::Ok,
        probe: probe.to_owned(),
        detail,
    }
}

fn fail(probe: &str, detail: String) -> Finding {
    Finding {
        verdict: Verdict::Fail,
        probe: probe.to_owned(),
        detail,
    }
}

/// The findings of one answer.
fn judge(contract: &Contract, probe: &Probe<'_>, reply: &Reply, out: &mut Vec<Finding>) {
    let (status, id) = (reply.status, probe.id.as_str());
    let probe_name = probe.name.as_str();
    match probe.expect {
        Expect::Session => {
            if status != 200 {
                out.push(fail(
                    probe_name,
                    format!("expected 200, got {status}: {}", reply.excerpt()),
                ));
                return;
            }
            let Some(doc) = json_body(reply) else {
                out.push(fail(probe_name, not_json(reply)));
                return;
            };
            let violations = contract.violations(&doc);
            if !violations.is_empty() {
                let found = list(violations.iter().map(|v| {
                    let at = if v.pointer.is_empty() {
                        "/"
                    } else {
                        &v.pointer
                    };
                    format!("{at}: {}", v.message)
                }));
                out.push(fail(
                    probe_name,
                    format!(
                        "200, the body is not valid against the contract's 200 schema: {found}"
                    ),
                ));
                return;
            }
            match doc.get("id").and_then(Value::as_str) {
                Some(got) if got != id => {
                    out.push(fail(
                        probe_name,
                        format!("200, but the body is session `{got}`"),
                    ));
                }
                _ => out.push(ok(
                    probe_name,
                    format!(
                        "200, {} bytes of JSON valid against the 200 schema",
                        reply.body.len()
                    ),
                )),
            }
        }
        Expect::Refusal(kind) => {
            if !(400..500).contains(&status) {
                out.push(fail(
                    probe_name,
                    format!(
                        "expected a refusal (4xx), got {status}: {}",
                        reply.excerpt()
                    ),
                ));
                return;
            }
            refusal_body(contract, probe_name, reply, out);
            let profile = contract.api.profile().error(kind);
            let same =
                profile.status == status && json_body(reply).is_some_and(|b| b == profile.body);
            if !same {
                out.push(note(
                    probe_name,
                    format!(
                        "sessiond's {} profile answers {} {}; this server answered {status} {}",
                        contract.api,
                        profile.status,
                        profile.body,
                        reply.excerpt()
                    ),
                ));
            }
        }
    }
}

/// Checks a refusal's body against what the contract declares for its status.
fn refusal_body(contract: &Contract, probe: &str, reply: &Reply, out: &mut Vec<Finding>) {
    let status = reply.status;
    if !contract.declared_statuses.contains(&status) {
        out.push(ok(
            probe,
            format!("refused with {status}: {}", reply.excerpt()),
        ));
        out.push(note(
            probe,
            format!(
                "the contract declares no {status} for this operation: the body was not checked"
            ),
        ));
        return;
    }
    if !contract.declares_error_schema(status) {
        out.push(ok(
            probe,
            format!("refused with {status}, which the contract declares with no JSON body"),
        ));
        return;
    }
    let Some(body) = json_body(reply) else {
        out.push(fail(
            probe,
            format!(
                "the contract declares a JSON body for {status}: {}",
                not_json(reply)
            ),
        ));
        return;
    };
    match contract.check_error_body(status, &body) {
        Some(Err(e)) => out.push(fail(
            probe,
            format!(
                "{status}, the body is not valid against the contract's {status} schema ({e}): {}",
                reply.excerpt()
            ),
        )),
        _ => out.push(ok(
            probe,
            format!("refused with {status}, the body valid against the contract's {status} schema"),
        )),
    }
}

/// The body as JSON, if it is labelled and parses as such.
fn json_body(reply: &Reply) -> Option<Value> {
    reply
        .is_json()
        .then(|| serde_json::from_slice(&reply.body).ok())
        .flatten()
}

/// Why [`json_body`] found none.
fn not_json(reply: &Reply) -> String {
    match &reply.content_type {
        Some(_) if reply.is_json() => format!("the body is not JSON: {}", reply.excerpt()),
        Some(ct) => format!(
            "Content-Type {ct}, not application/json: {}",
            reply.excerpt()
        ),
        None => format!("no Content-Type: {}", reply.excerpt()),
    }
}

/// At most five items, `; `-separated, with how many more there were.
fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > 5 {
        text.push_str(&format!("; and {} more", items.len() - 5));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(content_type: Option<&str>, body: &str) -> Reply {
        Reply {
            status: 200,
            content_type: content_type.map(str::to_owned),
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn the_malformed_id_is_malformed_for_every_vendor() {
        for api in ApiId::ALL {
            assert!(
                api.profile().check_session_id(MALFORMED_ID).is_err(),
                "{api}"
            );
        }
    }

    #[test]
    fn json_is_told_by_the_media_type() {
        assert!(reply(Some("application/json"), "{}").is_json());
        assert!(reply(Some("Application/JSON; charset=utf-8"), "{}").is_json());
        assert!(!reply(Some("text/plain"), "{}").is_json());
        assert!(!reply(None, "{}").is_json());
        assert_eq!(json_body(&reply(Some("application/json"), "{")), None);
    }

    #[test]
    fn an_excerpt_is_short() {
        assert_eq!(reply(None, "  ").excerpt(), "(empty body)");
        assert_eq!(reply(None, " {\"a\":1}\n").excerpt(), "{\"a\":1}");
        let long = "é".repeat(300);
        assert_eq!(
            reply(None, &long).excerpt(),
            format!("{}…", "é".repeat(200))
        );
    }

    #[test]
    fn the_demo_targets_carry_the_demo_sessions() {
        let contracts = Contracts::load(None).unwrap();
        let targets = demo_targets("http://h:1/", &contracts);
        assert_eq!(targets.len(), 5);
        for t in &targets {
            assert_eq!(t.ids.len(), 3, "{}", t.api);
            assert!(t.key.is_some());
        }
        assert_eq!(targets[2].base_url, "http://h:1/funnelfox/public/v1");
        assert_eq!(targets[4].base_url, "http://h:1/anam");
    }
}
