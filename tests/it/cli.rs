//! The command line, through the real binary: offline tenant and key management on a data dir,
//! `--help` everywhere, `openapi`; a server started on that data dir honours what the CLI did.

use reqwest::Method;
use serde_json::Value;
use sessiond::ApiId;

use crate::common::process::{ProcessServer, cli, cli_ok, seeded_data_dir};
use crate::common::{Storage, TestServer};

per_backend!(keys_made_and_revoked_by_the_cli_work_on_the_server,);

/// Every (sub)command, as the words that name it.
const COMMANDS: [&[&str]; 11] = [
    &[],
    &["serve"],
    &["tenants"],
    &["tenants", "create"],
    &["tenants", "list"],
    &["keys"],
    &["keys", "create"],
    &["keys", "revoke"],
    &["keys", "list"],
    &["openapi"],
    &["check"],
];

#[tokio::test]
async fn help_works_on_every_subcommand() {
    for words in COMMANDS {
        let args: Vec<&str> = words.iter().copied().chain(["--help"]).collect();
        let out = cli_ok(&args).await;
        assert!(out.contains("Usage"), "sessiond {args:?}: {out}");
    }
}

/// `id:  key_…` and `key: sk_…` from the output of `keys create`.
fn parse_key(out: &str) -> (String, String) {
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{name}` line in: {out}"))
    };
    (field("id:"), field("key:"))
}

async fn keys_made_and_revoked_by_the_cli_work_on_the_server() {
    let storage = Storage::new().await;
    let store = storage.args();
    let base: Vec<&str> = ["--api", "anam"]
        .into_iter()
        .chain(store.iter().map(String::as_str))
        .collect();

    let tenant = cli_ok(&[&["tenants", "create"][..], &base[..]].concat())
        .await
        .trim()
        .to_owned();
    assert!(
        !tenant.is_empty() && !tenant.contains(char::is_whitespace),
        "{tenant:?}"
    );
    let listed = cli_ok(&[&["tenants", "list"][..], &base[..]].concat()).await;
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&tenant)),
        "{listed}"
    );

    let with_tenant = [&base[..], &["--tenant", &tenant]].concat();
    let (live_id, live) =
        parse_key(&cli_ok(&[&["keys", "create"][..], &with_tenant].concat()).await);
    let (dead_id, dead) =
        parse_key(&cli_ok(&[&["keys", "create"][..], &with_tenant].concat()).await);
    assert_ne!(live, dead);
    cli_ok(
        &[
            &["keys", "revoke"][..],
            &with_tenant,
            &["--key-id", &dead_id],
        ]
        .concat(),
    )
    .await;
    let keys = cli_ok(&[&["keys", "list"][..], &with_tenant].concat()).await;
    assert!(
        !keys.contains(&live) && !keys.contains(&dead),
        "keys list shows a secret: {keys}"
    );
    let status_of = |id: &str| {
        keys.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} not listed: {keys}"))
            .to_owned()
    };
    assert!(status_of(&live_id).ends_with("active"), "{keys}");
    assert!(status_of(&dead_id).ends_with("revoked"), "{keys}");

    let server = TestServer::start_in(storage).await;
    let (id, _) = server
        .new_session(ApiId::Anam, &tenant, &serde_json::json!({}))
        .await;
    server
        .public_get(ApiId::Anam, &id, Some(&live))
        .await
        .expect(200);
    server
        .public_get(ApiId::Anam, &id, Some(&dead))
        .await
        .expect(401);
}

#[tokio::test]
async fn cli_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for args in [
        vec!["tenants", "create", "--api", "stripe", "--data-dir", data],
        vec![
            "keys",
            "create",
            "--api",
            "anam",
            "--tenant",
            "nobody-here",
            "--data-dir",
            data,
        ],
        vec![
            "keys",
            "revoke",
            "--api",
            "anam",
            "--tenant",
            "t",
            "--key-id",
            "k",
            "--data-dir",
            data,
        ],
        vec!["no-such-command"],
    ] {
        let out = cli(&args).await;
        assert!(!out.status.success(), "sessiond {args:?} succeeded");
        assert!(!out.stderr.is_empty(), "sessiond {args:?} failed silently");
    }
}

#[tokio::test]
async fn openapi_command_prints_the_served_document() {
    let printed: Value = serde_json::from_str(&cli_ok(&["openapi"]).await).unwrap();
    let server = TestServer::start().await;
    let served = server
        .admin(Method::GET, "/admin/v1/openapi.json", None)
        .await
        .expect(200)
        .json();
    assert_eq!(printed, served);
}

/// `serve` runs without transparent huge pages (the flag the kernel shows in /proc/PID/status),
/// which would stall a thread for a whole 2 MiB page's zeroing each time the allocator reuses
/// memory it handed back (src/cli.rs, `no_transparent_huge_pages`); the CLI's other commands keep
/// the machine's setting.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn serve_turns_transparent_huge_pages_off_for_itself() {
    let thp_flag = |pid: u32| -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .unwrap_or_else(|| panic!("no THP_enabled in /proc/{pid}/status:\n{status}"))
            .trim()
            .to_owned()
    };
    assert_eq!(
        thp_flag(std::process::id()),
        "1",
        "the test process has them"
    );
    let dir = tempfile::tempdir().unwrap();
    let server =
        ProcessServer::spawn_with(&["--data-dir".into(), dir.path().display().to_string()]).await;
    assert_eq!(thp_flag(server.pid()), "0", "log:\n{}", server.log());
    server.stop().await;
}

/// A second `serve` of a SQLite store that a server holds exits at once, naming the server: its
/// session cache would never hear of the first one's writes (a session patched or deleted through
/// one would stay as it was on the other). The first server keeps serving. Once it has stopped,
/// or was killed with `kill -9`, a new one starts on the store.
#[tokio::test]
async fn a_second_server_of_a_sqlite_store_is_refused() {
    let (_dir, data_dir, _tenant) = seeded_data_dir(ApiId::Anam, 10).await;
    let args = vec!["--data-dir".to_owned(), data_dir.clone()];
    let first = ProcessServer::spawn_with(&args).await;
    let second = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        cli(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
            &data_dir,
        ]),
    )
    .await
    .expect("the second server exits");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "sessiond: {data_dir}/sessiond.db is served by another sessiond (pid {})",
            first.pid()
        )),
        "{err}"
    );
    let health = first
        .http()
        .get(first.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(health.status().is_success());
    first.stop().await;
    let after_stop = ProcessServer::spawn_with(&args).await;
    after_stop.kill9().await;
    let after_kill = ProcessServer::spawn_with(&args).await;
    after_kill.stop().await;
}

/// `serve` reads the SQLite store's id index once at start, in the background, and says so in its
/// log; `--no-prewarm`, or `SESSIOND_NO_PREWARM` set to a true value, turns that off, and a false
/// value (`0`) leaves it on.
#[tokio::test]
async fn serve_prewarms_the_id_index_unless_told_not_to() {
    const DONE: &str = "session id index read into memory";
    let (_dir, data_dir, tenant) = seeded_data_dir(ApiId::Anam, 1500).await;
    let args = |extra: &[&str]| -> Vec<String> {
        ["--data-dir", &data_dir]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };

    for env in [&[][..], &[("SESSIOND_NO_PREWARM", "0")][..]] {
        let server = ProcessServer::spawn_with_env(&args(&[]), env).await;
        let mut waited = 0;
        while !server.log().contains(DONE) {
            assert!(
                waited < 600,
                "no prewarm within 30 s ({env:?}); log:\n{}",
                server.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        let line = server
            .log()
            .lines()
            .find(|l| l.contains(DONE))
            .unwrap()
            .to_owned();
        assert!(line.contains("sessions=1500"), "{line}");
        server.stop().await;
    }

    for (extra, env) in [
        (&["--no-prewarm"][..], &[][..]),
        (&[][..], &[("SESSIOND_NO_PREWARM", "1")][..]),
        (&[][..], &[("SESSIOND_NO_PREWARM", "true")][..]),
    ] {
        let server = ProcessServer::spawn_with_env(&args(extra), env).await;
        // A read of the store (the session cache starts empty), then a clean stop: a prewarm
        // of 1 500 entries would have been done and logged long before.
        let sessions = server.list_all(ApiId::Anam, &tenant, 500).await;
        assert_eq!(sessions.len(), 1500);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let log = server.log();
        server.stop().await;
        assert!(
            !log.contains(DONE),
            "prewarmed with {extra:?} {env:?}:\n{log}"
        );
    }
}
