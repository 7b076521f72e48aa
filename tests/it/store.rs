//! The `Store` contract, straight through the trait, on every backend: conflicts, compare-and-swap
//! on the version, sequences, all-or-none batches, listing order and paging, and the change feed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sessiond::ApiId;
use sessiond::store::{
    Change, Dsn, KeyRow, PublicSession, SessionRow, Snapshot, Store, StoreError, StoreOptions,
};

use crate::common::{Backend, Storage};

per_backend!(
    tenants_conflict_and_list_in_bytewise_order,
    sequences_never_hand_out_a_number_twice,
    keys_conflict_on_id_and_hash_and_revoke_once,
    session_writes_compare_and_swap_on_the_version,
    batches_are_all_or_nothing_and_page_in_insertion_order,
    a_snapshot_reads_the_store_as_it_was_when_taken,
    the_change_feed_reports_other_nodes_writes,
);

const API: ApiId = ApiId::Anam;
const CREATED: &str = "2026-01-05T10:00:00.000Z";

async fn open(storage: &Storage) -> Arc<dyn Store> {
    let dsn = storage.dsn().map(Dsn::new);
    sessiond::store::open(dsn.as_ref(), storage.data_dir(), StoreOptions::default())
        .await
        .expect("opening the store")
}

/// Fresh storage and a store on it, with one tenant `t`.
async fn store_with_tenant() -> (Storage, Arc<dyn Store>) {
    let storage = Storage::new().await;
    let store = open(&storage).await;
    store.create_tenant(API, "t", CREATED).await.unwrap();
    (storage, store)
}

fn session(id: &str, version: i64, body: &str) -> SessionRow {
    SessionRow {
        api: API,
        id: id.to_owned(),
        tenant: "t".to_owned(),
        version,
        body: Bytes::from(body.to_owned()),
        doc: None,
    }
}

fn key(id: &str, fill: u8) -> KeyRow {
    KeyRow {
        id: id.to_owned(),
        api: API,
        tenant: "t".to_owned(),
        hash: [fill; 32],
        created_at: CREATED.to_owned(),
        revoked: false,
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Conflict)),
        "expected a conflict, got {result:?}"
    );
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "expected not found, got {result:?}"
    );
}

async fn tenants_conflict_and_list_in_bytewise_order() {
    let (_storage, store) = store_with_tenant().await;
    // Same creation time: the ids decide, compared as bytes (upper case before `_` before lower).
    for id in ["b", "_x", "B", "a-1", "a_1", "A"] {
        store.create_tenant(API, id, CREATED).await.unwrap();
    }
    assert_conflict(store.create_tenant(API, "t", CREATED).await);
    store
        .create_tenant(ApiId::Opencx, "t", CREATED)
        .await
        .expect("tenant ids are per api");
    assert!(store.tenant_exists(API, "b").await.unwrap());
    assert!(!store.tenant_exists(API, "nope").await.unwrap());
    let listed: Vec<String> = store
        .list_tenants(API)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, ["A", "B", "_x", "a-1", "a_1", "b", "t"]);
}

async fn sequences_never_hand_out_a_number_twice() {
    let (_storage, store) = store_with_tenant().await;
    assert_eq!(store.reserve_seq(API, "t", 1).await.unwrap(), 1);
    assert_eq!(store.reserve_seq(API, "t", 5).await.unwrap(), 2);
    assert_eq!(store.reserve_seq(API, "t", 1).await.unwrap(), 7);
    store.raise_seq(API, "t", 100).await.unwrap();
    store.raise_seq(API, "t", 50).await.unwrap();
    assert_eq!(store.reserve_seq(API, "t", 1).await.unwrap(), 101);
    assert_not_found(store.reserve_seq(API, "nope", 1).await);
    assert_not_found(store.raise_seq(API, "nope", 1).await);

    // Concurrent reservations, through two stores on the same data (two nodes on PostgreSQL).
    let other = match Backend::current() {
        Backend::Sqlite => store.clone(),
        Backend::Postgres => open(&_storage).await,
    };
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        racers.spawn(async move { store.reserve_seq(API, "t", 3).await.unwrap() });
    }
    let mut numbers = BTreeSet::new();
    for first in racers.join_all().await {
        for n in first..first + 3 {
            assert!(numbers.insert(n), "{n} was handed out twice");
        }
    }
    assert_eq!(numbers, (102..102 + 120).collect());
}

async fn keys_conflict_on_id_and_hash_and_revoke_once() {
    let (_storage, store) = store_with_tenant().await;
    store.create_key(&key("k1", 1)).await.unwrap();
    assert_conflict(store.create_key(&key("k1", 2)).await);
    assert_conflict(store.create_key(&key("k2", 1)).await);
    let revoked = KeyRow {
        revoked: true,
        ..key("k0", 3)
    };
    store.create_key(&revoked).await.unwrap();

    assert_eq!(store.find_key(&[1; 32]).await.unwrap(), Some(key("k1", 1)));
    assert_eq!(store.find_key(&[9; 32]).await.unwrap(), None);
    assert_eq!(store.revoke_key(API, "t", "k1").await.unwrap(), [1; 32]);
    assert_eq!(
        store.revoke_key(API, "t", "k1").await.unwrap(),
        [1; 32],
        "revoking twice is fine"
    );
    assert!(store.find_key(&[1; 32]).await.unwrap().unwrap().revoked);
    assert_not_found(store.revoke_key(API, "t", "nope").await);
    assert_not_found(store.revoke_key(ApiId::Opencx, "t", "k0").await);

    let listed: Vec<(String, bool)> = store
        .list_keys(API, "t")
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.revoked))
        .collect();
    assert_eq!(listed, [("k0".into(), true), ("k1".into(), true)]);
}

async fn session_writes_compare_and_swap_on_the_version() {
    let (_storage, store) = store_with_tenant().await;
    let first = session("s", 1, r#"{"v":1}"#);
    store.insert_session(&first).await.unwrap();
    assert_conflict(store.insert_session(&first).await);
    assert_conflict(
        store
            .insert_session(&SessionRow {
                tenant: "nope".into(),
                ..session("s2", 1, "{}")
            })
            .await,
    );
    assert_eq!(
        store.get_session(API, "s").await.unwrap(),
        Some(first.clone())
    );

    // A stored document that differs from the body (secrets) comes back as it went in.
    let second = SessionRow {
        doc: Some(Bytes::from_static(br#"{"v":2,"secret":"x"}"#)),
        ..session("s", 2, r#"{"v":2}"#)
    };
    store.update_session(&second).await.unwrap();
    assert_eq!(
        store.get_session(API, "s").await.unwrap().as_ref(),
        Some(&second)
    );
    // The public read gives the body, never the stored document.
    assert_eq!(
        store.get_public(API, "s").await.unwrap(),
        Some(PublicSession {
            tenant: "t".into(),
            body: Bytes::from_static(br#"{"v":2}"#)
        })
    );
    assert_eq!(store.get_public(API, "none").await.unwrap(), None);
    assert_eq!(store.get_public(ApiId::Alcamine, "s").await.unwrap(), None);
    assert_conflict(store.update_session(&second).await);
    assert_conflict(store.update_session(&session("s", 9, "{}")).await);
    assert_not_found(store.update_session(&session("gone", 2, "{}")).await);

    // A delete conditional on a version deletes only that version.
    assert_conflict(store.delete_session(API, "s", Some(1)).await);
    assert_eq!(
        store.get_session(API, "s").await.unwrap().as_ref(),
        Some(&second)
    );
    assert_not_found(store.delete_session(API, "gone", Some(1)).await);
    store.delete_session(API, "s", Some(2)).await.unwrap();
    assert_not_found(store.delete_session(API, "s", None).await);
    store.insert_session(&first).await.unwrap();
    store.delete_session(API, "s", None).await.unwrap();
    assert_eq!(store.get_session(API, "s").await.unwrap(), None);
    assert_eq!(store.get_public(API, "s").await.unwrap(), None);
    store.ping().await.unwrap();
}

async fn batches_are_all_or_nothing_and_page_in_insertion_order() {
    let (_storage, store) = store_with_tenant().await;
    store.insert_session(&session("z", 1, "{}")).await.unwrap();
    // A taken id anywhere in the batch: nothing of it is stored.
    let bad = vec![session("y", 1, "{}"), session("z", 1, "{}")];
    assert_conflict(store.insert_sessions(bad).await);
    assert_eq!(store.get_session(API, "y").await.unwrap(), None);
    let twice = vec![session("x", 1, "{}"), session("x", 1, "{}")];
    assert_conflict(store.insert_sessions(twice).await);
    assert_eq!(store.get_session(API, "x").await.unwrap(), None);
    store.insert_sessions(Vec::new()).await.unwrap();

    // Ids not in sorted order, so that insertion order is what the listing shows.
    let ids = ["m", "c", "q", "a", "k"];
    let batch = ids
        .iter()
        .map(|id| SessionRow {
            doc: (*id == "q").then(|| Bytes::from_static(b"{\"doc\":true}")),
            ..session(id, 1, &format!("{{\"id\":\"{id}\"}}"))
        })
        .collect::<Vec<_>>();
    store.insert_sessions(batch.clone()).await.unwrap();
    store.insert_session(&session("b", 1, "{}")).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_sessions(API, "t", cursor, 2).await.unwrap();
        assert!(page.rows.len() <= 2);
        seen.extend(page.rows);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let seen_ids: Vec<&str> = seen.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(seen_ids, ["z", "m", "c", "q", "a", "k", "b"]);
    assert_eq!(&seen[1..6], &batch[..]);
    let all = store.list_sessions(API, "t", None, 7).await.unwrap();
    assert_eq!((all.rows.len(), all.next), (7, None));
    assert!(
        store
            .list_sessions(API, "other", None, 10)
            .await
            .unwrap()
            .rows
            .is_empty()
    );
}

/// Every session of tenant `t` in a snapshot, walking pages of 2: `(id, version)`.
async fn snapshot_sessions(snapshot: &mut dyn Snapshot) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = snapshot.list_sessions(API, "t", cursor, 2).await.unwrap();
        seen.extend(page.rows.into_iter().map(|r| (r.id, r.version)));
        match page.next {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
}

async fn a_snapshot_reads_the_store_as_it_was_when_taken() {
    let (_storage, store) = store_with_tenant().await;
    store.create_key(&key("k1", 1)).await.unwrap();
    let ids = ["a", "b", "c", "d"];
    store
        .insert_sessions(ids.iter().map(|id| session(id, 1, "{}")).collect())
        .await
        .unwrap();
    let mut snapshot = store.snapshot().await.unwrap();
    // Written after it was taken.
    store.delete_session(API, "a", None).await.unwrap();
    store
        .update_session(&session("c", 2, "{\"v\":2}"))
        .await
        .unwrap();
    store.insert_session(&session("e", 1, "{}")).await.unwrap();
    store.revoke_key(API, "t", "k1").await.unwrap();
    store.create_key(&key("k2", 2)).await.unwrap();
    store.create_tenant(API, "u", CREATED).await.unwrap();

    let was: Vec<(String, i64)> = ids.iter().map(|id| ((*id).to_owned(), 1)).collect();
    assert_eq!(snapshot_sessions(&mut *snapshot).await, was);
    let keys = snapshot.list_keys(API, "t").await.unwrap();
    assert_eq!(keys, [key("k1", 1)]);
    let tenants = snapshot.list_tenants(API).await.unwrap();
    assert_eq!(
        tenants.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t"]
    );
    // Read twice, it is the same.
    assert_eq!(snapshot_sessions(&mut *snapshot).await, was);
    // A second snapshot is of now.
    let mut now = store.snapshot().await.unwrap();
    let is = [("b", 1), ("c", 2), ("d", 1), ("e", 1)].map(|(id, v)| (id.to_owned(), v));
    assert_eq!(snapshot_sessions(&mut *now).await, is);
    drop((snapshot, now));

    // Done with, a snapshot holds no connection of the store's back in its past: every read,
    // on any pooled connection, sees the store as it is.
    for _ in 0..16 {
        let page = store.list_sessions(API, "t", None, 10).await.unwrap();
        let listed: Vec<&str> = page.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(listed, ["b", "c", "d", "e"]);
        assert_eq!(store.list_tenants(API).await.unwrap().len(), 2);
    }
}

/// Waits (bounded) until `changes` reports `expected`; other changes are skipped.
async fn wait_for(changes: &mut tokio::sync::mpsc::UnboundedReceiver<Change>, expected: &Change) {
    let deadline = Duration::from_secs(5);
    tokio::time::timeout(deadline, async {
        while let Some(change) = changes.recv().await {
            if &change == expected {
                return;
            }
        }
        panic!("the change feed ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no {expected:?} within {deadline:?}"));
}

async fn the_change_feed_reports_other_nodes_writes() {
    let (storage, store) = store_with_tenant().await;
    let Some(mut changes) = store.changes() else {
        assert_eq!(
            Backend::current(),
            Backend::Sqlite,
            "only SQLite reports none"
        );
        return;
    };
    assert!(store.changes().is_none(), "the feed is handed out once");
    // Another node writes; this one hears of every write a cache may hold.
    let other = open(&storage).await;
    let s = session("s", 1, "{}");
    other.insert_session(&s).await.unwrap();
    let changed = Change::Session {
        api: API,
        id: "s".into(),
    };
    wait_for(&mut changes, &changed).await;
    other.update_session(&session("s", 2, "{}")).await.unwrap();
    wait_for(&mut changes, &changed).await;
    other.delete_session(API, "s", None).await.unwrap();
    wait_for(&mut changes, &changed).await;
    other
        .insert_sessions(vec![session("b1", 1, "{}"), session("b2", 1, "{}")])
        .await
        .unwrap();
    for id in ["b1", "b2"] {
        let changed = Change::Session {
            api: API,
            id: id.into(),
        };
        wait_for(&mut changes, &changed).await;
    }
    other.create_key(&key("k", 7)).await.unwrap();
    wait_for(&mut changes, &Change::Key { hash: [7; 32] }).await;
    other.revoke_key(API, "t", "k").await.unwrap();
    wait_for(&mut changes, &Change::Key { hash: [7; 32] }).await;
    // A failed write notifies nobody: the next change is the one after it.
    assert_conflict(other.insert_session(&session("b1", 1, "{}")).await);
    other
        .insert_session(&session("after", 1, "{}"))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("a change within 5 s");
    assert_eq!(
        next,
        Some(Change::Session {
            api: API,
            id: "after".into()
        })
    );
}
