//! The test harness: an in-process server on ephemeral ports ([`TestServer`]), the real binary
//! ([`process::ProcessServer`]), and one HTTP client ([`Client`]) that knows the admin API and every
//! vendor's route and credential header. Every response of a vendor route that passes through the
//! client is checked against the vendor's contract (see [`Client::vendor_call`]).
//!
//! Store backends: [`per_api!`] and [`per_backend!`] run a test once on SQLite and once on
//! PostgreSQL ([`Backend`]); the servers a test starts keep their data in [`Storage`] of that
//! backend (a temp dir, plus a schema of its own on PostgreSQL: see [`postgres`]).

#![allow(dead_code, reason = "not every test module uses every helper")]

pub mod fixtures;
pub mod postgres;
pub mod process;
pub mod proxy;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::Path;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sessiond::ApiId;
use sessiond::spec::Contracts;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The vendor contracts, loaded once: the oracle every vendor-route response is checked against.
pub static CONTRACTS: LazyLock<Contracts> =
    LazyLock::new(|| Contracts::load(None).expect("the embedded contracts load"));

/// Generates, for each `async fn check(api: ApiId)`, one `#[tokio::test]` per store backend and
/// api, named `<module>::<check>::<backend>::<api>` (so `cargo test postgres` selects PostgreSQL).
macro_rules! per_api {
    ($($check:ident),+ $(,)?) => {$(
        mod $check {
            per_api!(@backend $check, sqlite, Sqlite);
            per_api!(@backend $check, postgres, Postgres);
        }
    )+};
    (@backend $check:ident, $name:ident, $backend:ident) => {
        mod $name {
            use sessiond::ApiId;
            use $crate::common::Backend;
            #[tokio::test]
            async fn salesnip() { Backend::$backend.run(super::super::$check(ApiId::Salesnip)).await }
            #[tokio::test]
            async fn opencx() { Backend::$backend.run(super::super::$check(ApiId::Opencx)).await }
            #[tokio::test]
            async fn funnelfox() { Backend::$backend.run(super::super::$check(ApiId::Funnelfox)).await }
            #[tokio::test]
            async fn alcamine() { Backend::$backend.run(super::super::$check(ApiId::Alcamine)).await }
            #[tokio::test]
            async fn anam() { Backend::$backend.run(super::super::$check(ApiId::Anam)).await }
        }
    };
}

/// Generates, for each `async fn check()`, one `#[tokio::test]` per store backend, named
/// `<module>::<check>::<backend>`.
macro_rules! per_backend {
    ($($check:ident),+ $(,)?) => {$(
        mod $check {
            use $crate::common::Backend;
            #[tokio::test]
            async fn sqlite() { Backend::Sqlite.run(super::$check()).await }
            #[tokio::test]
            async fn postgres() { Backend::Postgres.run(super::$check()).await }
        }
    )+};
}

// ---- store backends -----------------------------------------------------------------------------

/// Where the servers of a test keep their data. Tests written with [`per_api!`] or
/// [`per_backend!`] run once per backend; everything they start ([`TestServer`], [`Storage`])
/// uses the backend of the run. Other tests use SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded store: `sessiond.db` in the server's data dir.
    Sqlite,
    /// A schema of its own in the server named by `SESSIOND_TEST_POSTGRES_URL`.
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

impl Backend {
    /// The backend of the running test.
    pub fn current() -> Backend {
        BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
    }

    /// Runs a test on this backend. Without `SESSIOND_TEST_POSTGRES_URL` a PostgreSQL test is
    /// skipped (it passes and says so), except under CI, where it fails.
    pub async fn run(self, test: impl Future<Output = ()>) {
        if self == Backend::Postgres && postgres::url().is_none() {
            let name = std::thread::current().name().unwrap_or("a test").to_owned();
            postgres::skip(&name);
            return;
        }
        BACKEND.scope(self, test).await
    }
}

/// The data of one store: a data dir (admin token; the SQLite file) and, on PostgreSQL, a schema
/// of its own. Dropping it deletes both.
pub struct Storage {
    dir: TempDir,
    schema: Option<postgres::Schema>,
}

impl Storage {
    /// Fresh, empty storage on the current backend.
    pub async fn new() -> Storage {
        let schema = match Backend::current() {
            Backend::Sqlite => None,
            Backend::Postgres => Some(postgres::Schema::create().await),
        };
        Storage {
            dir: tempfile::tempdir().unwrap(),
            schema,
        }
    }

    pub fn backend(&self) -> Backend {
        match self.schema {
            None => Backend::Sqlite,
            Some(_) => Backend::Postgres,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The store DSN (`None`: the data dir's SQLite file).
    pub fn dsn(&self) -> Option<String> {
        self.schema.as_ref().map(postgres::Schema::dsn)
    }

    /// The PostgreSQL schema; panics on SQLite.
    pub fn schema(&self) -> &postgres::Schema {
        self.schema
            .as_ref()
            .expect("a PostgreSQL test (this storage is SQLite)")
    }

    /// The command-line options that point the binary at this storage.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--data-dir".to_owned(),
            self.data_dir()
                .to_str()
                .expect("a UTF-8 temp dir")
                .to_owned(),
        ];
        if let Some(dsn) = self.dsn() {
            args.extend(["--store".to_owned(), dsn]);
        }
        args
    }

    /// The document the store keeps for a session (with secrets, unlike any API response), read
    /// behind the server's back.
    pub async fn stored_document(&self, api: ApiId, id: &str) -> Option<Value> {
        if let Some(schema) = &self.schema {
            return schema.stored_document(api, id).await;
        }
        let conn = rusqlite::Connection::open(self.data_dir().join("sessiond.db")).unwrap();
        let bytes: Option<Vec<u8>> = conn
            .query_row(
                "SELECT COALESCE(doc, body) FROM sessions WHERE api = ?1 AND id = ?2",
                [api.as_str(), id],
                |r| r.get(0),
            )
            .ok();
        bytes.map(|b| {
            let json = sessiond::store::read_blob(&conn, b).expect("a readable stored blob");
            serde_json::from_slice(&json).expect("the stored document is JSON")
        })
    }

    /// Makes the store fail every query from now on while the server keeps running: the tables
    /// are dropped behind the server's back, through a connection of our own.
    pub async fn break_store(&self) {
        if let Some(schema) = &self.schema {
            return schema.drop_tables().await;
        }
        let conn = rusqlite::Connection::open(self.data_dir().join("sessiond.db")).unwrap();
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!tables.is_empty(), "the store has no tables to break");
        for table in tables {
            conn.execute_batch(&format!("DROP TABLE \"{table}\""))
                .unwrap();
        }
    }
}

// ---- responses ----------------------------------------------------------------------------------

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Reply {
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("reading the response body"),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// Asserts the status (showing the body when it differs) and hands the reply on.
    #[track_caller]
    pub fn expect(self, status: u16) -> Reply {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// The JSON pointers of a 422 body's `violations`.
    #[track_caller]
    pub fn violation_pointers(&self) -> Vec<String> {
        assert_eq!(self.status, 422, "expected 422; body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error"], "invalid_document", "{body}");
        body["violations"]
            .as_array()
            .unwrap_or_else(|| panic!("no violations array: {body}"))
            .iter()
            .map(|v| {
                v["pointer"]
                    .as_str()
                    .expect("pointer is a string")
                    .to_owned()
            })
            .collect()
    }

    /// `(status, content-type, body)`: what must be identical for two answers to be
    /// indistinguishable.
    pub fn observable(&self) -> (u16, Option<String>, Bytes) {
        (
            self.status,
            self.content_type().map(str::to_owned),
            self.body.clone(),
        )
    }
}

/// Checks a response of a vendor route: JSON content type always; a 200 body valid against the
/// contract's 200 schema; an error body valid against the schema the contract declares for its
/// status, if it declares one.
#[track_caller]
pub fn check_vendor_reply(api: ApiId, method: &Method, reply: &Reply) {
    assert_eq!(
        reply.content_type(),
        Some("application/json"),
        "{api}: every vendor response is application/json (status {}, body {})",
        reply.status,
        reply.text()
    );
    if *method == Method::HEAD {
        assert!(reply.body.is_empty(), "{api}: HEAD answered with a body");
        return;
    }
    let body = reply.json();
    let contract = CONTRACTS.get(api);
    if reply.status == 200 {
        let violations = contract.violations(&body);
        assert!(
            violations.is_empty(),
            "{api}: 200 body violates the vendor's contract: {violations:?}\nbody: {body}"
        );
    } else if let Some(Err(e)) = contract.check_error_body(reply.status, &body) {
        panic!(
            "{api}: {} body violates the contract's error schema: {e}\nbody: {body}",
            reply.status
        );
    }
}

// ---- the client ---------------------------------------------------------------------------------

/// The credential header of an api, with `key` in it.
pub fn credential_header(api: ApiId, key: &str) -> (&'static str, String) {
    match api {
        ApiId::Salesnip => ("X-Api-Key", key.to_owned()),
        ApiId::Funnelfox => ("Fox-Secret", key.to_owned()),
        ApiId::Opencx | ApiId::Alcamine | ApiId::Anam => ("Authorization", format!("Bearer {key}")),
    }
}

/// The vendor path of a session (without the `/{api}` prefix of the combined listener).
pub fn vendor_path(api: ApiId, id: &str) -> String {
    match api {
        ApiId::Salesnip => format!("/v1/sessions/{id}"),
        ApiId::Opencx => format!("/chat/sessions/{id}"),
        ApiId::Funnelfox => format!("/public/v1/sessions/{id}"),
        ApiId::Alcamine => format!("/sessions/{id}"),
        ApiId::Anam => format!("/v1/sessions/{id}"),
    }
}

/// A running sessiond, seen from outside: its addresses and an HTTP client.
#[derive(Debug, Clone)]
pub struct Client {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// Apis served at their bare vendor paths, each on its own port.
    pub apis: Vec<(ApiId, SocketAddr)>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(public: SocketAddr, admin: SocketAddr, apis: Vec<(ApiId, SocketAddr)>) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("building the HTTP client");
        Client {
            public,
            admin,
            apis,
            http,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    // ---- admin API ----

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// An admin request with the admin token, for tests that add headers or a raw body.
    pub fn admin_request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn send(request: reqwest::RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("sending the request")).await
    }

    /// An admin API call with the admin token and an optional JSON body.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self.admin_request(method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        Client::send(request).await
    }

    pub async fn create_tenant(&self, api: ApiId) -> String {
        let reply = self
            .admin(
                Method::POST,
                &format!("/admin/v1/{api}/tenants"),
                Some(json!({})),
            )
            .await
            .expect(201);
        reply.json()["id"].as_str().expect("tenant id").to_owned()
    }

    /// A new key of the tenant: `(key id, secret)`.
    pub async fn create_key(&self, api: ApiId, tenant: &str) -> (String, String) {
        let body = self
            .admin(
                Method::POST,
                &format!("/admin/v1/{api}/tenants/{tenant}/keys"),
                None,
            )
            .await
            .expect(201)
            .json();
        (
            body["id"].as_str().expect("key id").to_owned(),
            body["key"].as_str().expect("key secret").to_owned(),
        )
    }

    pub async fn revoke_key(&self, api: ApiId, tenant: &str, key_id: &str) {
        self.admin(
            Method::DELETE,
            &format!("/admin/v1/{api}/tenants/{tenant}/keys/{key_id}"),
            None,
        )
        .await
        .expect(204);
    }

    /// A fresh tenant and a key of it: `(tenant, secret)`.
    pub async fn tenant_with_key(&self, api: ApiId) -> (String, String) {
        let tenant = self.create_tenant(api).await;
        let (_, key) = self.create_key(api, &tenant).await;
        (tenant, key)
    }

    /// `POST /admin/v1/{api}/tenants/{tenant}/sessions` with `doc`, whatever the outcome.
    pub async fn create_session(&self, api: ApiId, tenant: &str, doc: &Value) -> Reply {
        self.admin(
            Method::POST,
            &format!("/admin/v1/{api}/tenants/{tenant}/sessions"),
            Some(doc.clone()),
        )
        .await
    }

    /// Creates a session that must be accepted: `(id, body)`.
    pub async fn new_session(&self, api: ApiId, tenant: &str, doc: &Value) -> (String, Bytes) {
        let reply = self.create_session(api, tenant, doc).await.expect(201);
        let id = reply.json()["id"].as_str().expect("session id").to_owned();
        (id, reply.body)
    }

    pub async fn admin_session(&self, method: Method, api: ApiId, id: &str) -> Reply {
        self.admin(method, &format!("/admin/v1/{api}/sessions/{id}"), None)
            .await
    }

    pub async fn patch_session(&self, api: ApiId, id: &str, patch: Value) -> Reply {
        self.admin(
            Method::PATCH,
            &format!("/admin/v1/{api}/sessions/{id}"),
            Some(patch),
        )
        .await
    }

    /// Every session of a tenant, walking the pages of `limit`: the bodies, in listed order.
    pub async fn list_all(&self, api: ApiId, tenant: &str, limit: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/admin/v1/{api}/tenants/{tenant}/sessions?limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self
                .admin(Method::GET, &path, None)
                .await
                .expect(200)
                .json();
            let items = page["items"].as_array().expect("items").clone();
            assert!(items.len() <= limit, "a page longer than its limit: {page}");
            out.extend(items);
            match &page["next_cursor"] {
                Value::Null => return out,
                Value::String(c) => cursor = Some(c.clone()),
                other => panic!("next_cursor is neither null nor a string: {other}"),
            }
        }
    }

    // ---- vendor routes ----

    /// A request to a vendor route at `url`, with `key` in the api's credential header, checked
    /// against the api's contract.
    pub async fn vendor_call(
        &self,
        api: ApiId,
        method: Method,
        url: &str,
        key: Option<&str>,
    ) -> Reply {
        let mut request = self.http.request(method.clone(), url);
        if let Some(key) = key {
            let (name, value) = credential_header(api, key);
            request = request.header(name, value);
        }
        let reply = Client::send(request).await;
        check_vendor_reply(api, &method, &reply);
        reply
    }

    /// `{method} /{api}{path}` on the public listener.
    pub async fn public_request(
        &self,
        api: ApiId,
        method: Method,
        path: &str,
        key: Option<&str>,
    ) -> Reply {
        let url = format!("http://{}/{api}{path}", self.public);
        self.vendor_call(api, method, &url, key).await
    }

    /// The vendor's Get-Session on the public listener.
    pub async fn public_get(&self, api: ApiId, id: &str, key: Option<&str>) -> Reply {
        self.public_request(api, Method::GET, &vendor_path(api, id), key)
            .await
    }

    /// The URL of `path` on the listener that serves `api` at its bare vendor paths.
    pub fn own_port_url(&self, api: ApiId, path: &str) -> String {
        let (_, addr) = self
            .apis
            .iter()
            .find(|(a, _)| *a == api)
            .unwrap_or_else(|| panic!("{api} has no listener of its own"));
        format!("http://{addr}{path}")
    }

    /// A request outside every vendor route, on the public listener (not contract-checked).
    pub async fn public_raw(&self, method: Method, path: &str) -> Reply {
        Client::send(
            self.http
                .request(method, format!("http://{}{path}", self.public)),
        )
        .await
    }
}

/// How long a test waits for what must happen before it calls it a hang: far longer than any
/// wait a test sets up, so it never decides a test on a loaded machine.
pub const HANG: Duration = Duration::from_secs(60);

/// One HTTP/1.1 connection to a public listener that stays open between requests, for what must
/// hold on a connection that lives on (reqwest's pool may or may not reuse one). Its answers are
/// checked against the contract like [`Client::vendor_call`]'s.
pub struct KeepAlive {
    stream: tokio::net::TcpStream,
    /// Bytes read past the end of the last answer.
    read: Vec<u8>,
}

impl KeepAlive {
    pub async fn open(listener: SocketAddr) -> KeepAlive {
        KeepAlive {
            stream: tokio::net::TcpStream::connect(listener)
                .await
                .expect("connecting"),
            read: Vec::new(),
        }
    }

    /// `GET /{api}{vendor path of id}` with `key`, on this connection.
    pub async fn get(&mut self, api: ApiId, id: &str, key: &str) -> Reply {
        use tokio::io::AsyncWriteExt;
        let (name, value) = credential_header(api, key);
        let path = vendor_path(api, id);
        let request =
            format!("GET /{api}{path} HTTP/1.1\r\nHost: sessiond\r\n{name}: {value}\r\n\r\n");
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("sending");
        let head_end = loop {
            if let Some(at) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8(self.read[..head_end].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP/1.1 status line: {head}"));
        let mut headers = HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').expect("a header line");
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.trim().parse().expect("a header value"),
            );
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("every answer of sessiond has a content-length");
        while self.read.len() < head_end + length {
            self.fill().await;
        }
        let body = Bytes::copy_from_slice(&self.read[head_end..head_end + length]);
        self.read.drain(..head_end + length);
        let reply = Reply {
            status,
            headers,
            body,
        };
        check_vendor_reply(api, &Method::GET, &reply);
        reply
    }

    /// Waits until the server closes the connection, reading nothing else (the bytes of an
    /// answer would be a failure).
    pub async fn wait_for_close(&mut self) {
        let rest = self.read_until_close().await;
        assert!(
            rest.is_empty(),
            "read {:?} instead of a close",
            String::from_utf8_lossy(&rest)
        );
    }

    /// Every byte the server sends until it closes the connection (a reset counts as a close);
    /// panics after [`HANG`], which only a hang reaches.
    pub async fn read_until_close(&mut self) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut all = std::mem::take(&mut self.read);
        let mut buf = [0u8; 8192];
        loop {
            let read = tokio::time::timeout(HANG, self.stream.read(&mut buf)).await;
            match read.expect("the server never closed the connection") {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
                Err(e) => panic!("reading: {e}"),
            }
        }
    }

    /// Sends `bytes` as they are; `Err` once the server has closed the connection.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    async fn fill(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8192];
        let n = self.stream.read(&mut buf).await.expect("reading");
        assert!(n > 0, "the server closed the connection");
        self.read.extend_from_slice(&buf[..n]);
    }
}

/// One session of a fresh tenant, with a key of that tenant.
#[derive(Debug, Clone)]
pub struct OneSession {
    pub tenant: String,
    pub key: String,
    pub id: String,
    /// The 201 body (the public GET body).
    pub body: Bytes,
    pub etag: String,
}

// ---- the in-process server ----------------------------------------------------------------------

/// Which extra listeners a [`TestServer`] gets.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Apis to serve at their bare vendor paths, each on a port of its own.
    pub api_listeners: Vec<ApiId>,
    /// The vendor listeners' header timeout (`serve --header-timeout-secs`), if not the default.
    pub header_timeout: Option<Duration>,
}

/// `sessiond::run` in a task of the test's runtime, on ephemeral ports, with its own storage.
pub struct TestServer {
    client: Client,
    /// `None` only after `stop` handed it back.
    storage: Option<Storage>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Deref for TestServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

async fn bind_ephemeral() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0")
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> TestServer {
        TestServer::launch(Storage::new().await, options).await
    }

    /// Starts on existing storage (a restart, or storage prepared by the CLI).
    pub async fn start_in(storage: Storage) -> TestServer {
        TestServer::launch(storage, Options::default()).await
    }

    async fn launch(storage: Storage, options: Options) -> TestServer {
        let mut config = sessiond::Config::new(storage.data_dir());
        config.store = storage.dsn().map(sessiond::store::Dsn::new);
        config.admin_token = Some(sessiond::auth::Secret::new(ADMIN_TOKEN));
        if let Some(timeout) = options.header_timeout {
            config.header_timeout = Some(timeout);
        }

        let public = bind_ephemeral().await;
        let admin = bind_ephemeral().await;
        let mut apis = Vec::new();
        for api in options.api_listeners {
            apis.push((api, bind_ephemeral().await));
        }
        let client = Client::new(
            public.local_addr().unwrap(),
            admin.local_addr().unwrap(),
            apis.iter()
                .map(|(api, l)| (*api, l.local_addr().unwrap()))
                .collect(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = sessiond::Listeners {
            public,
            admin,
            apis,
        };
        let task = tokio::spawn(sessiond::run(config, listeners, async {
            let _ = rx.await;
        }));
        TestServer {
            client,
            storage: Some(storage),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A fresh server with one tenant of `api`, a key of it, and a minimal session of it.
    pub async fn with_one_session(api: ApiId) -> (TestServer, OneSession) {
        let server = TestServer::start().await;
        let (tenant, key) = server.tenant_with_key(api).await;
        let created = server
            .create_session(api, &tenant, &fixtures::minimal(api))
            .await
            .expect(201);
        let session = OneSession {
            tenant,
            key,
            id: created.json()["id"]
                .as_str()
                .expect("session id")
                .to_owned(),
            etag: created
                .header("etag")
                .expect("a 201 has an ETag")
                .to_owned(),
            body: created.body,
        };
        (server, session)
    }

    pub fn storage(&self) -> &Storage {
        self.storage.as_ref().expect("the storage")
    }

    /// Shuts the server down, waits for it to finish, and hands back its storage.
    pub async fn stop(mut self) -> Storage {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("the server task");
        task.await
            .expect("the server task panicked")
            .expect("the server failed");
        self.storage.take().expect("the storage")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
