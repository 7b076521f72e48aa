//! Durability: tenants, keys, revocations and sessions survive a clean restart on the same data
//! dir, and every acknowledged write survives `kill -9` of the real binary; after a clean stop the
//! embedded store is whole in its one database file.

use std::collections::BTreeMap;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{Value, json};
use sessiond::ApiId;

use crate::common::process::{ProcessServer, cli_ok, seeded_data_dir};
use crate::common::{Client, Storage, TestServer, fixtures};

per_backend!(
    clean_restart_keeps_tenants_keys_revocations_and_sessions,
    acknowledged_writes_survive_kill_9,
);

/// What one api's data looked like when it was acknowledged.
struct Acknowledged {
    api: ApiId,
    tenant: String,
    live_key: String,
    revoked_key: String,
    /// Session id → the body and ETag last acknowledged for it.
    sessions: BTreeMap<String, (Bytes, String)>,
    deleted: String,
}

/// Per api: a tenant, a live and a revoked key, three sessions (one patched, one deleted).
async fn write_everything(server: &Client, api: ApiId) -> Acknowledged {
    let tenant = server.create_tenant(api).await;
    let (_, live_key) = server.create_key(api, &tenant).await;
    let (revoked_id, revoked_key) = server.create_key(api, &tenant).await;
    let mut sessions = BTreeMap::new();
    for n in 0..3 {
        let created = server
            .create_session(api, &tenant, &fixtures::labelled(api, &format!("s{n}")))
            .await
            .expect(201);
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let etag = created.header("etag").unwrap().to_owned();
        sessions.insert(id, (created.body, etag));
    }
    // Warm any key cache, then revoke.
    let first = sessions.keys().next().unwrap().clone();
    server
        .public_get(api, &first, Some(&revoked_key))
        .await
        .expect(200);
    server.revoke_key(api, &tenant, &revoked_id).await;

    let patched = server
        .patch_session(api, &first, fixtures::labelled(api, "patched"))
        .await
        .expect(200);
    let etag = patched.header("etag").unwrap().to_owned();
    sessions.insert(first, (patched.body, etag));

    let deleted = sessions.keys().last().unwrap().clone();
    sessions.remove(&deleted);
    server
        .admin_session(Method::DELETE, api, &deleted)
        .await
        .expect(204);
    Acknowledged {
        api,
        tenant,
        live_key,
        revoked_key,
        sessions,
        deleted,
    }
}

async fn assert_survived(server: &Client, ack: &Acknowledged) {
    let api = ack.api;
    for (id, (body, etag)) in &ack.sessions {
        let public = server.public_get(api, id, Some(&ack.live_key)).await;
        assert_eq!(public.status, 200, "{api}: session {id} is gone");
        assert_eq!(&public.body, body, "{api}: session {id} changed");
        let admin = server.admin_session(Method::GET, api, id).await.expect(200);
        assert_eq!(
            admin.header("etag"),
            Some(etag.as_str()),
            "{api}: ETag of {id}"
        );
        let revoked = server.public_get(api, id, Some(&ack.revoked_key)).await;
        assert_eq!(revoked.status, 401, "{api}: the revoked key works again");
    }
    server
        .admin_session(Method::GET, api, &ack.deleted)
        .await
        .expect(404);
    let listed: Vec<Value> = server.list_all(api, &ack.tenant, 2).await;
    let expected: Vec<Value> = ack
        .sessions
        .values()
        .map(|(b, _)| serde_json::from_slice(b).unwrap())
        .collect();
    let sort = |mut v: Vec<Value>| {
        v.sort_by_key(|s| s["id"].as_str().unwrap().to_owned());
        v
    };
    assert_eq!(sort(listed), sort(expected), "{api}: the listing changed");
}

async fn tenants_and_keys(server: &Client, ack: &Acknowledged) -> (Value, Value) {
    let api = ack.api;
    let tenants = server
        .admin(Method::GET, &format!("/admin/v1/{api}/tenants"), None)
        .await
        .expect(200)
        .json();
    let keys = server
        .admin(
            Method::GET,
            &format!("/admin/v1/{api}/tenants/{}/keys", ack.tenant),
            None,
        )
        .await
        .expect(200)
        .json();
    (tenants, keys)
}

async fn clean_restart_keeps_tenants_keys_revocations_and_sessions() {
    let server = TestServer::start().await;
    let mut acks = Vec::new();
    let mut before = Vec::new();
    for api in ApiId::ALL {
        let ack = write_everything(&server, api).await;
        before.push(tenants_and_keys(&server, &ack).await);
        acks.push(ack);
    }
    let storage = server.stop().await;

    let server = TestServer::start_in(storage).await;
    for (ack, before) in acks.iter().zip(before) {
        assert_survived(&server, ack).await;
        assert_eq!(tenants_and_keys(&server, ack).await, before, "{}", ack.api);
    }
    // OpenCX's ticket sequence goes on where it stopped (three sessions were numbered).
    let opencx = acks.iter().find(|a| a.api == ApiId::Opencx).unwrap();
    let next = server
        .create_session(ApiId::Opencx, &opencx.tenant, &json!({}))
        .await
        .expect(201)
        .json();
    assert_eq!(next["ticket_number"], 4, "{next}");
}

async fn acknowledged_writes_survive_kill_9() {
    let storage = Storage::new().await;
    let server = ProcessServer::spawn(&storage).await;
    let mut acks = Vec::new();
    for api in ApiId::ALL {
        acks.push(write_everything(&server, api).await);
    }
    server.kill9().await;

    let server = ProcessServer::spawn(&storage).await;
    for ack in &acks {
        assert_survived(&server, ack).await;
    }
}

/// Stopping the server closes keep-alive connections that sit idle after their last answer, and
/// every request sent before the stop is answered.
#[tokio::test]
async fn stopping_closes_idle_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (server, one) = TestServer::with_one_session(ApiId::Anam).await;
    let request = format!(
        "GET /anam/v1/sessions/{} HTTP/1.1\r\nHost: sessiond\r\nAuthorization: Bearer {}\r\n\r\n",
        one.id, one.key
    );
    // Several connections, each answered once and then left open.
    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut conn = tokio::net::TcpStream::connect(server.public).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        while !received.ends_with(&one.body) {
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer: {received:?}");
            received.extend_from_slice(&buf[..n]);
        }
        assert!(received.starts_with(b"HTTP/1.1 200 "), "{received:?}");
        connections.push(conn);
    }
    // A hang here (the server waiting for its idle connections) fails the test instead of CI.
    tokio::time::timeout(std::time::Duration::from_secs(60), server.stop())
        .await
        .expect("the server stopped");
    for mut conn in connections {
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing more after the stop: {rest:?}");
    }
}

/// The SQLite file as the previous schema version (1) wrote it: every document as plain JSON,
/// no `codecs` table. Done behind the server's back, through a connection of our own.
fn downgrade_to_plain_json(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = conn
        .prepare("SELECT pk, body, doc FROM sessions")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(!rows.is_empty());
    for (pk, body, doc) in rows {
        let plain = |blob: Vec<u8>| sessiond::store::read_blob(&conn, blob).unwrap();
        conn.execute(
            "UPDATE sessions SET body = ?2, doc = ?3 WHERE pk = ?1",
            rusqlite::params![pk, plain(body), doc.map(plain)],
        )
        .unwrap();
    }
    conn.execute_batch("DROP TABLE codecs; PRAGMA user_version = 1;")
        .unwrap();
}

/// How many stored session documents are compressed, and how many there are.
fn compressed_documents(db: &std::path::Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT SUM((substr(body, 1, 1) = x'00') + (doc IS NOT NULL AND substr(doc, 1, 1) = x'00')),
                SUM(1 + (doc IS NOT NULL))
         FROM sessions",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// A store written before documents were compressed (schema version 1) opens with this binary:
/// it is migrated, its plain-JSON rows serve the same bytes, and every new write is compressed.
#[tokio::test]
async fn a_store_of_schema_version_1_keeps_serving_its_plain_json_rows() {
    // A plain test runs on SQLite (compression is the SQLite store's; PostgreSQL compresses
    // large values itself).
    let server = TestServer::start().await;
    let mut acks = Vec::new();
    for api in ApiId::ALL {
        acks.push(write_everything(&server, api).await);
    }
    let storage = server.stop().await;
    let db = storage.data_dir().join("sessiond.db");
    let (compressed, all) = compressed_documents(&db);
    assert_eq!(compressed, all, "every document is stored compressed");
    downgrade_to_plain_json(&db);
    assert_eq!(compressed_documents(&db).0, 0);

    let server = TestServer::start_in(storage).await;
    for ack in &acks {
        assert_survived(&server, ack).await;
        let (id, _) = ack.sessions.iter().next().unwrap();
        assert!(
            server
                .storage()
                .stored_document(ack.api, id)
                .await
                .is_some()
        );
    }
    // A write after the upgrade is compressed, and reads back.
    let anam = acks.iter().find(|a| a.api == ApiId::Anam).unwrap();
    let (id, _) = anam.sessions.iter().next().unwrap();
    let patched = server
        .patch_session(ApiId::Anam, id, fixtures::labelled(ApiId::Anam, "upgraded"))
        .await
        .expect(200);
    let public = server
        .public_get(ApiId::Anam, id, Some(&anam.live_key))
        .await
        .expect(200);
    assert_eq!(public.body, patched.body);
    let storage = server.stop().await;
    let conn = rusqlite::Connection::open(storage.data_dir().join("sessiond.db")).unwrap();
    let (body_tag, doc_tag): (Vec<u8>, Option<Vec<u8>>) = conn
        .query_row(
            "SELECT substr(body, 1, 1), substr(doc, 1, 1) FROM sessions WHERE api = 'anam' AND id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(body_tag, [0], "the patched body is compressed");
    assert!(
        doc_tag.as_ref().is_none_or(|t| t == &[0]),
        "and so is its document"
    );
    // Nothing else was rewritten.
    let (compressed, _) = compressed_documents(&storage.data_dir().join("sessiond.db"));
    assert_eq!(compressed, 1 + i64::from(doc_tag.is_some()));
}

/// After a command that wrote (`seed`) and after a server's clean stop (SIGTERM), the SQLite store
/// is whole in its database file: no write-ahead log is left beside it, and a copy of the file
/// alone, as a backup would take, holds every session.
#[tokio::test]
async fn a_clean_stop_leaves_the_whole_sqlite_store_in_its_database_file() {
    let api = ApiId::Anam;
    let (dir, data_dir, tenant) = seeded_data_dir(api, 3000).await;
    assert_whole_in_its_file(dir.path(), 3000, "after `sessiond seed`").await;

    let server = ProcessServer::spawn_with(&["--data-dir".to_owned(), data_dir.clone()]).await;
    for n in 0..200 {
        server
            .create_session(api, &tenant, &fixtures::labelled(api, &format!("s{n}")))
            .await
            .expect(201);
    }
    server.stop().await;
    assert_whole_in_its_file(dir.path(), 3200, "after the server stopped").await;

    // Reads from the store (the cache starts empty) run on the runtime's threads, each with a
    // connection of its own that closes as its thread ends: the last of them to close is the one
    // that leaves the store whole in its file.
    let server = ProcessServer::spawn_with(&["--data-dir".to_owned(), data_dir.clone()]).await;
    let ids: Vec<String> = server
        .list_all(api, &tenant, 500)
        .await
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_owned())
        .collect();
    assert_eq!(ids.len(), 3200);
    let mut readers = tokio::task::JoinSet::new();
    for ids in ids.chunks(200) {
        let (client, ids) = ((*server).clone(), ids.to_vec());
        readers.spawn(async move {
            for id in ids {
                client
                    .admin_session(Method::GET, api, &id)
                    .await
                    .expect(200);
            }
        });
    }
    readers.join_all().await;
    server.stop().await;
    assert_whole_in_its_file(dir.path(), 3200, "after reads and a stop").await;
}

async fn assert_whole_in_its_file(data_dir: &std::path::Path, sessions: usize, when: &str) {
    let wal = data_dir.join("sessiond.db-wal");
    if let Ok(meta) = std::fs::metadata(&wal) {
        panic!("{when}: {} is left ({} bytes)", wal.display(), meta.len());
    }
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(
        data_dir.join("sessiond.db"),
        copy.path().join("sessiond.db"),
    )
    .unwrap();
    let export = cli_ok(&["export", "--data-dir", copy.path().to_str().unwrap()]).await;
    let stored = export
        .lines()
        .filter(|l| l.starts_with(r#"{"kind":"session""#))
        .count();
    assert_eq!(
        stored, sessions,
        "{when}: sessions in a copy of the database file"
    );
}
