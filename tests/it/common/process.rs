//! The real `sessiond` binary: the CLI, and `serve` as a child process that can be `kill -9`ed.

use std::net::SocketAddr;
use std::ops::Deref;
use std::process::{Output, Stdio};

use sessiond::ApiId;
use tempfile::{NamedTempFile, TempDir};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{ADMIN_TOKEN, Client, Storage};

pub const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

/// Settings the binary reads from the environment; the children of the tests see none of ours.
const ENV: [&str; 11] = [
    "SESSIOND_DATA_DIR",
    "SESSIOND_CACHE_MB",
    "SESSIOND_NO_PREWARM",
    "SESSIOND_STORE",
    "SESSIOND_STORE_TIMEOUT_MS",
    "SESSIOND_SPECS_DIR",
    "SESSIOND_LISTEN",
    "SESSIOND_ADMIN_LISTEN",
    "SESSIOND_ADMIN_TOKEN",
    "SESSIOND_SALESNIP_URL_BASE",
    "SESSIOND_LOG",
];

fn command() -> Command {
    let mut c = Command::new(BIN);
    for var in ENV {
        c.env_remove(var);
    }
    c.kill_on_drop(true);
    c
}

/// Runs `sessiond ARGS` to completion.
pub async fn cli(args: &[&str]) -> Output {
    command()
        .args(args)
        .output()
        .await
        .expect("running the sessiond binary")
}

/// Runs `sessiond ARGS` to completion as the user `uid` (and group `uid`): the test must then be
/// run by root.
pub async fn cli_as(uid: u32, args: &[&str]) -> Output {
    command()
        .args(args)
        .uid(uid)
        .gid(uid)
        .output()
        .await
        .expect("running the sessiond binary")
}

/// Runs `sessiond ARGS` to completion with `input` on its stdin.
pub async fn cli_with_input(args: &[&str], input: &[u8]) -> Output {
    let mut child = command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the sessiond binary");
    let mut stdin = child.stdin.take().expect("a piped stdin");
    let input = input.to_vec();
    // Fed while the output is read, so that neither side waits for the other; dropping the pipe
    // ends the input.
    let feed = tokio::spawn(async move { stdin.write_all(&input).await });
    let out = child
        .wait_with_output()
        .await
        .expect("waiting for the sessiond binary");
    match feed.await.expect("the stdin writer panicked") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            panic!("writing to sessiond's stdin: {e}")
        }
        _ => out,
    }
}

/// `sessiond ARGS` running, with its stdin open (to be fed by the test) and its output piped.
pub struct RunningCli {
    child: Child,
    stdin: Option<tokio::process::ChildStdin>,
}

impl RunningCli {
    /// Starts `sessiond ARGS` with the variables `env` set.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> RunningCli {
        let mut child = command()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running the sessiond binary");
        let stdin = child.stdin.take();
        RunningCli { child, stdin }
    }

    /// Writes `input` to its stdin, which stays open.
    pub async fn feed(&mut self, input: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(input)
            .await
            .expect("writing to sessiond's stdin");
        stdin.flush().await.expect("writing to sessiond's stdin");
    }

    /// Its stderr, line by line (taken: call once).
    pub fn stderr_lines(
        &mut self,
    ) -> tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>> {
        use tokio::io::AsyncBufReadExt;
        let stderr = self.child.stderr.take().expect("stderr is taken once");
        tokio::io::BufReader::new(stderr).lines()
    }

    /// Its stdout (taken: call once).
    pub fn stdout(&mut self) -> tokio::process::ChildStdout {
        self.child.stdout.take().expect("stdout is taken once")
    }

    /// `kill SIGNAL` the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the child is running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Waits (bounded) for it to exit, its stdin still open (the end of its input is not what
    /// ends it); its output (stderr empty if taken).
    pub async fn output(mut self) -> Output {
        let _stdin = self.stdin.take();
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            self.child.wait_with_output(),
        )
        .await
        .expect("sessiond did not exit")
        .expect("waiting for the sessiond binary")
    }
}

/// A new SQLite data dir in which the CLI made an `api` tenant and seeded `count` sessions of it:
/// the dir, its path, the tenant.
pub async fn seeded_data_dir(api: ApiId, count: u64) -> (TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().expect("a UTF-8 temp dir").to_owned();
    let tenant = cli_ok(&[
        "tenants",
        "create",
        "--api",
        api.as_str(),
        "--data-dir",
        &path,
    ])
    .await
    .trim()
    .to_owned();
    let mut seed = seed_words(api, &tenant, count);
    seed.extend(["--data-dir".to_owned(), path.clone()]);
    cli_ok(&seed.iter().map(String::as_str).collect::<Vec<_>>()).await;
    (dir, path, tenant)
}

/// `seed --api API --tenant TENANT --count COUNT`.
pub fn seed_words(api: ApiId, tenant: &str, count: u64) -> Vec<String> {
    let count = count.to_string();
    [
        "seed",
        "--api",
        api.as_str(),
        "--tenant",
        tenant,
        "--count",
        &count,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `sessiond ARGS`, which must succeed; its stdout.
pub async fn cli_ok(args: &[&str]) -> String {
    let out = cli(args).await;
    assert!(
        out.status.success(),
        "sessiond {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The address after `key=` in the server's "sessiond listening" log line.
fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(key)? + key.len();
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// `sessiond serve` as a child process.
pub struct ProcessServer {
    client: Client,
    child: Child,
    log: NamedTempFile,
}

impl Deref for ProcessServer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

/// How many times readiness is polled before giving up, and the pause between polls.
const READY_ATTEMPTS: usize = 600;
const READY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

impl ProcessServer {
    /// Starts `sessiond serve` on `storage` and waits (bounded) until `/healthz` answers.
    pub async fn spawn(storage: &Storage) -> ProcessServer {
        ProcessServer::spawn_with(&storage.args()).await
    }

    /// Starts `sessiond serve ARGS` (`ARGS` name the storage: see [`Storage::args`]) and waits
    /// (bounded) until `/healthz` answers.
    pub async fn spawn_with(args: &[String]) -> ProcessServer {
        ProcessServer::spawn_with_env(args, &[]).await
    }

    /// [`ProcessServer::spawn_with`], with these environment variables set too.
    ///
    /// The server binds port 0 and the addresses it got are read from its log, so that no other
    /// test can take a port between its choice and its bind.
    pub async fn spawn_with_env(args: &[String], env: &[(&str, &str)]) -> ProcessServer {
        let log = NamedTempFile::new().unwrap();
        let mut child = command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("SESSIOND_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .expect("spawning sessiond serve");
        let (public, admin) = Self::wait_listening(&mut child, &log).await;
        let mut server = ProcessServer {
            client: Client::new(public, admin, Vec::new()),
            child,
            log,
        };
        server.wait_ready().await;
        server
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits (bounded) for the log line that names the bound addresses: (public, admin).
    async fn wait_listening(child: &mut Child, log: &NamedTempFile) -> (SocketAddr, SocketAddr) {
        let read = || std::fs::read_to_string(log.path()).unwrap_or_default();
        for _ in 0..READY_ATTEMPTS {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("sessiond exited early ({status}); its log:\n{}", read());
            }
            let text = read();
            // Whole lines only: the server may be writing the last one as it is read.
            let listening = text
                .split_inclusive('\n')
                .find(|l| l.ends_with('\n') && l.contains("sessiond listening"));
            if let Some(line) = listening {
                match (
                    logged_addr(line, "public_addr="),
                    logged_addr(line, "admin_addr="),
                ) {
                    (Some(public), Some(admin)) => return (public, admin),
                    _ => panic!("no addresses in the line {line:?}; log:\n{text}"),
                }
            }
            tokio::time::sleep(READY_PAUSE).await;
        }
        panic!(
            "sessiond did not log its addresses after {READY_ATTEMPTS} attempts; log:\n{}",
            read()
        );
    }

    async fn wait_ready(&mut self) {
        let url = self.admin_url("/healthz");
        for _ in 0..READY_ATTEMPTS {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sessiond exited early ({status}); its log:\n{}", self.log());
            }
            match self.http().get(&url).send().await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => panic!("/healthz answered {}; log:\n{}", r.status(), self.log()),
                Err(e) if e.is_connect() => tokio::time::sleep(READY_PAUSE).await,
                Err(e) => panic!("/healthz: {e}; log:\n{}", self.log()),
            }
        }
        panic!(
            "sessiond did not answer /healthz after {READY_ATTEMPTS} attempts; log:\n{}",
            self.log()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("the child is running")
    }

    /// Panics (showing the log) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("sessiond exited ({status}); its log:\n{}", self.log());
        }
    }

    /// `kill SIGNAL` the process.
    fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Stops the server as a service manager would (SIGTERM) and waits (bounded) for it to exit,
    /// which it must do successfully.
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let exit = tokio::time::timeout(std::time::Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("sessiond did not stop; its log:\n{}", self.log()))
            .unwrap();
        assert!(
            exit.success(),
            "sessiond stopped with {exit}; its log:\n{}",
            self.log()
        );
    }

    /// `kill -9` the process and reap it.
    pub async fn kill9(mut self) {
        self.signal("-9");
        let exit = self.child.wait().await.unwrap();
        assert!(!exit.success(), "sessiond survived kill -9: {exit}");
    }
}
