//! The command line, through the real binary: offline tenant and key management on a data dir,
//! `--help` everywhere, `openapi`; a server started on that data dir honours what the CLI did.

use reqwest::Method;
use serde_json::Value;
use sessiond::ApiId;

use crate::common::process::{cli, cli_ok};
use crate::common::{Storage, TestServer};

per_backend!(keys_made_and_revoked_by_the_cli_work_on_the_server,);

/// Every (sub)command, as the words that name it.
const COMMANDS: [&[&str]; 10] = [
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
