//! Several nodes on one PostgreSQL schema: two real `sessiond serve` processes, started at the same
//! time (so their migrations race). A write or a revocation through one node is seen by the other
//! (its caches hear of it through LISTEN/NOTIFY), and OpenCX ticket numbers stay unique per tenant
//! under concurrent creates on both. Propagation times are measured and printed, never asserted:
//! each check polls up to [`DEADLINE`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use sessiond::ApiId;

use crate::common::process::ProcessServer;
use crate::common::{Backend, CONTRACTS, Client, Storage, fixtures};

/// How long a change may take to reach the other node before the test fails.
const DEADLINE: Duration = Duration::from_secs(5);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(2);

/// Polls `probe` until it yields a value (bounded by [`DEADLINE`]); the value and how long it took.
pub async fn poll<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut probe: impl FnMut() -> F,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not seen within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Two nodes on `storage`, started concurrently, each with a pooled connection open, and the
/// contracts the client checks answers against loaded (so that the times printed are about
/// propagation, not about connecting or loading).
async fn two_nodes(storage: &Storage) -> (ProcessServer, ProcessServer) {
    std::sync::LazyLock::force(&CONTRACTS);
    let nodes = tokio::join!(ProcessServer::spawn(storage), ProcessServer::spawn(storage));
    for node in [&nodes.0, &nodes.1] {
        Client::send(node.http().get(node.admin_url("/readyz")))
            .await
            .expect(200);
    }
    nodes
}

#[tokio::test]
async fn writes_and_revocations_on_one_node_reach_the_other() {
    Backend::Postgres
        .run(writes_and_revocations_propagate())
        .await
}

async fn writes_and_revocations_propagate() {
    let storage = Storage::new().await;
    let (one, two) = two_nodes(&storage).await;
    let api = ApiId::Anam;
    let (tenant, key_id, key) = {
        let tenant = one.create_tenant(api).await;
        let (key_id, key) = one.create_key(api, &tenant).await;
        (tenant, key_id, key)
    };

    // Create on node 1 → GET on node 2.
    let (id, created) = one
        .new_session(api, &tenant, &fixtures::labelled(api, "v1"))
        .await;
    let (_, took) = poll("a session created on node 1, read on node 2", || async {
        let reply = two.public_get(api, &id, Some(&key)).await;
        (reply.status == 200).then(|| assert_eq!(reply.body, created))
    })
    .await;
    println!("multi-node: create on node 1 → GET on node 2: {took:?}");

    // Node 1 caches the session; a patch on node 2 → GET on node 1 sees the new body.
    for _ in 0..3 {
        let reply = one.public_get(api, &id, Some(&key)).await.expect(200);
        assert_eq!(reply.body, created);
    }
    let patched = two
        .patch_session(api, &id, fixtures::labelled(api, "v2"))
        .await
        .expect(200)
        .body;
    let (_, took) = poll("a patch on node 2, read on node 1", || async {
        let reply = one.public_get(api, &id, Some(&key)).await.expect(200);
        (reply.body == patched).then_some(())
    })
    .await;
    println!("multi-node: patch on node 2 → new body on node 1: {took:?}");

    // Node 2 caches the key; a revocation on node 1 → 401 on node 2.
    two.public_get(api, &id, Some(&key)).await.expect(200);
    one.revoke_key(api, &tenant, &key_id).await;
    let (_, took) = poll("a revocation on node 1, on node 2", || async {
        let reply = two.public_get(api, &id, Some(&key)).await;
        (reply.status == 401).then_some(())
    })
    .await;
    println!("multi-node: revoke on node 1 → 401 on node 2: {took:?}");

    // A delete on node 1 → 404 on node 2 (which has it cached).
    let (_, key) = one.create_key(api, &tenant).await;
    two.public_get(api, &id, Some(&key)).await.expect(200);
    one.admin_session(reqwest::Method::DELETE, api, &id)
        .await
        .expect(204);
    let (_, took) = poll("a delete on node 1, on node 2", || async {
        let reply = two.public_get(api, &id, Some(&key)).await;
        (reply.status == 404).then_some(())
    })
    .await;
    println!("multi-node: delete on node 1 → 404 on node 2: {took:?}");
}

#[tokio::test]
async fn ticket_numbers_stay_unique_under_concurrent_creates_on_both_nodes() {
    Backend::Postgres.run(ticket_numbers_stay_unique()).await
}

async fn ticket_numbers_stay_unique() {
    const CREATES: usize = 60;
    let storage = Storage::new().await;
    let (one, two) = two_nodes(&storage).await;
    let api = ApiId::Opencx;
    let tenant = one.create_tenant(api).await;
    let nodes: [Client; 2] = [(*one).clone(), (*two).clone()];
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..CREATES {
        let (node, tenant) = (nodes[i % 2].clone(), tenant.clone());
        creates.spawn(async move {
            let body = node
                .create_session(api, &tenant, &json!({}))
                .await
                .expect(201)
                .json();
            body["ticket_number"].as_i64().expect("a ticket number")
        });
    }
    let numbers = creates.join_all().await;
    let distinct: BTreeSet<i64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        CREATES,
        "a number was handed out twice: {numbers:?}"
    );
    assert_eq!(distinct, (1..=CREATES as i64).collect(), "numbers skipped");
    // Both nodes list all of them.
    for node in &nodes {
        assert_eq!(node.list_all(api, &tenant, 25).await.len(), CREATES);
    }
}
