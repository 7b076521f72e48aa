//! A database outage: node A reaches PostgreSQL through a TCP proxy that the test cuts (open
//! connections reset, new ones accepted but never answered) and restores; node B reaches it
//! directly and keeps writing. While cut, A answers the vendor's 500 (it does not hang), `/readyz`
//! says 503 and nothing crashes; once restored, A recovers on its own and serves what B wrote
//! meanwhile, although it missed those notifications.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use sessiond::ApiId;

use crate::common::postgres::Schema;
use crate::common::process::ProcessServer;
use crate::common::proxy::Proxy;
use crate::common::{Backend, Client, Reply, Storage, fixtures};
use crate::errors::table;
use crate::multi_node::poll;

/// The store timeout node A runs with.
const STORE_TIMEOUT_MS: u64 = 500;
/// A request not answered within this is a hang (it is far above what the timeout allows).
const HANG: Duration = Duration::from_secs(30);

/// One session per api, with a key of its tenant.
struct Probe {
    api: ApiId,
    key: String,
    id: String,
    body: Bytes,
}

async fn readyz(node: &Client) -> u16 {
    Client::send(node.http().get(node.admin_url("/readyz")))
        .await
        .status
}

/// `GET` the probe's session on `node`; panics if the node hangs.
async fn get(node: &Client, p: &Probe) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = tokio::time::timeout(HANG, node.public_get(p.api, &p.id, Some(&p.key)))
        .await
        .unwrap_or_else(|_| panic!("{}: no answer within {HANG:?}: a hang", p.api));
    (reply, started.elapsed())
}

#[tokio::test]
async fn a_database_outage_fails_fast_and_heals_on_its_own() {
    Backend::Postgres.run(outage()).await
}

async fn outage() {
    let storage = Storage::new().await;
    let proxy = Proxy::start(Schema::server_addr()).await;
    let through_proxy = [
        "--data-dir".to_owned(),
        storage.data_dir().to_str().unwrap().to_owned(),
        "--store".to_owned(),
        storage.schema().dsn_via(proxy.addr()),
        "--store-timeout-ms".to_owned(),
        STORE_TIMEOUT_MS.to_string(),
    ];
    let mut a = ProcessServer::spawn_with(&through_proxy).await;
    let b = ProcessServer::spawn(&storage).await;

    let mut probes = Vec::new();
    for api in ApiId::ALL {
        let (tenant, key) = b.tenant_with_key(api).await;
        let (id, body) = b.new_session(api, &tenant, &fixtures::minimal(api)).await;
        probes.push(Probe { api, key, id, body });
    }
    // A has every session and key cached.
    for p in &probes {
        let (reply, _) = get(&a, p).await;
        assert_eq!(reply.expect(200).body, p.body);
    }
    assert_eq!(readyz(&a).await, 200);

    proxy.cut();
    let cut_at = Instant::now();
    for p in &probes {
        // A flushes its caches as soon as it notices; until then a cached answer is fine.
        let ((reply, took), _) = poll("a 5xx while the database is away", || async {
            let (reply, took) = get(&a, p).await;
            (reply.status != 200).then_some((reply, took))
        })
        .await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (500, table(p.api).internal),
            "{}: the vendor's 500 while the database is away",
            p.api
        );
        println!(
            "outage: {} answered {} in {took:?} (store timeout {STORE_TIMEOUT_MS} ms)",
            p.api, reply.status
        );
    }
    let (_, took) = poll("/readyz 503 while the database is away", || async {
        (readyz(&a).await == 503).then_some(())
    })
    .await;
    println!("outage: /readyz 503 (polled {took:?} after the 500s)");

    // B writes meanwhile; A cannot hear of it.
    let changed = &probes[0];
    let patched = b
        .patch_session(
            changed.api,
            &changed.id,
            fixtures::labelled(changed.api, "during the outage"),
        )
        .await
        .expect(200)
        .body;
    a.assert_running();
    println!("outage: cut for {:?}", cut_at.elapsed());

    proxy.restore();
    let (_, took) = poll("/readyz 200 after the database is back", || async {
        (readyz(&a).await == 200).then_some(())
    })
    .await;
    println!("outage: /readyz 200 again {took:?} after the restore");
    for p in &probes {
        let expected = if p.id == changed.id {
            &patched
        } else {
            &p.body
        };
        let (_, took) = poll("the current body after the database is back", || async {
            let (reply, _) = get(&a, p).await;
            (reply.status == 200 && reply.body == expected).then_some(())
        })
        .await;
        println!("outage: {} served again after {took:?}", p.api);
    }
    // The admin API works again too.
    a.admin_session(Method::GET, changed.api, &changed.id)
        .await
        .expect(200);
    a.assert_running();
}
