//! Session ids spelled another way than they are stored. A UUID names one session whatever the
//! case of its hex digits (RFC 9562; Swift's `UUID().uuidString` is upper case), so OpenCX and
//! Anam answer an upper-case id like the lower-case one it spells, store a UUID sent in upper case
//! in lower case, and still find a session a store holds under an upper-case id. The other
//! vendors' ids are case-sensitive: another case is another id. The same holds for tenant ids
//! that are UUIDs (OpenCX's, and Anam's organization ids when they are UUIDs).

use std::sync::Arc;

use bytes::Bytes;
use reqwest::Method;
use serde_json::{Value, json};
use sessiond::ApiId;
use sessiond::store::{Dsn, SessionRow, Store, StoreOptions};

use crate::common::{Storage, TestServer, fixtures};

per_api!(an_id_in_upper_case_on_the_vendor_route);
per_backend!(
    a_uuid_sent_in_upper_case_is_stored_in_lower_case,
    a_session_stored_under_an_upper_case_uuid_is_still_found,
    a_uuid_tenant_named_in_upper_case_is_its_lower_case_tenant,
);

/// The uuid apis: their ids are read in any case.
const UUID_APIS: [ApiId; 2] = [ApiId::Opencx, ApiId::Anam];

async fn an_id_in_upper_case_on_the_vendor_route(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let upper = session.id.to_ascii_uppercase();
    assert_ne!(
        upper, session.id,
        "{api}: the test needs an id with letters"
    );
    let mixed: String = session
        .id
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let stored = server
        .public_get(api, &session.id, Some(&session.key))
        .await
        .expect(200);
    for spelling in [&upper, &mixed] {
        let reply = server.public_get(api, spelling, Some(&session.key)).await;
        if UUID_APIS.contains(&api) {
            // The cache holds the lower-case id; the answer is the same either way.
            let again = server.public_get(api, spelling, Some(&session.key)).await;
            assert_eq!(reply.expect(200).body, stored.body, "{api}: {spelling}");
            assert_eq!(again.expect(200).body, stored.body, "{api}: {spelling}");
        } else {
            // Another id: whatever this vendor answers to an id it does not hold.
            let unknown = if api.profile().check_session_id(spelling).is_ok() {
                api.profile().new_session_id()
            } else {
                "not-an-id".to_owned()
            };
            let expected = server.public_get(api, &unknown, Some(&session.key)).await;
            assert_eq!(reply.status / 100, 4, "{api}: {spelling}");
            assert_eq!(
                reply.observable(),
                expected.observable(),
                "{api}: {spelling}"
            );
        }
    }
    // Another tenant's key learns nothing from the spelling.
    let (_, stranger) = server.tenant_with_key(api).await;
    let theirs = server.public_get(api, &upper, Some(&stranger)).await;
    let unknown = server
        .public_get(
            api,
            &api.profile().new_session_id().to_ascii_uppercase(),
            Some(&stranger),
        )
        .await;
    assert_eq!(theirs.observable(), unknown.observable(), "{api}");
    assert_eq!(theirs.status, 404, "{api}");
}

async fn a_uuid_sent_in_upper_case_is_stored_in_lower_case() {
    let server = TestServer::start().await;
    for api in UUID_APIS {
        let (tenant, key) = server.tenant_with_key(api).await;
        let lower = api.profile().new_session_id();
        let upper = lower.to_ascii_uppercase();
        let mut doc = fixtures::minimal(api);
        doc["id"] = Value::from(upper.clone());
        let created = server.create_session(api, &tenant, &doc).await.expect(201);
        assert_eq!(created.json()["id"], lower.as_str(), "{api}");
        assert!(
            created
                .header("location")
                .is_some_and(|l| l.ends_with(&lower)),
            "{api}: {:?}",
            created.header("location")
        );
        assert_eq!(
            server.storage().stored_document(api, &lower).await.unwrap()["id"],
            lower.as_str(),
            "{api}"
        );
        assert!(
            server
                .storage()
                .stored_document(api, &upper)
                .await
                .is_none(),
            "{api}"
        );

        // The same UUID in the other case is the same session: a conflict, nothing written.
        let mut twin = fixtures::minimal(api);
        twin["id"] = Value::from(lower.clone());
        server.create_session(api, &tenant, &twin).await.expect(409);

        // Every admin route takes it in either case.
        let read = server
            .admin_session(Method::GET, api, &upper)
            .await
            .expect(200);
        assert_eq!(read.body, created.body, "{api}");
        let mut replacement = read.json();
        replacement["id"] = Value::from(upper.clone());
        server
            .admin(
                Method::PUT,
                &format!("/admin/v1/{api}/sessions/{upper}"),
                Some(replacement),
            )
            .await
            .expect(200);
        let public = server.public_get(api, &lower, Some(&key)).await.expect(200);
        assert_eq!(public.json()["id"], lower.as_str(), "{api}");
        server
            .admin_session(Method::DELETE, api, &upper)
            .await
            .expect(204);
        server.public_get(api, &lower, Some(&key)).await.expect(404);
        server.public_get(api, &upper, Some(&key)).await.expect(404);
    }
}

/// A store written before ids were stored canonically may hold a session under an upper-case
/// UUID: the vendor route and the admin routes still find it under that spelling.
async fn a_session_stored_under_an_upper_case_uuid_is_still_found() {
    let server = TestServer::start().await;
    let mut legacy = Vec::new();
    for api in UUID_APIS {
        let (tenant, key) = server.tenant_with_key(api).await;
        let (_, body) = server
            .new_session(api, &tenant, &fixtures::minimal(api))
            .await;
        let upper = api.profile().new_session_id().to_ascii_uppercase();
        let mut doc: Value = serde_json::from_slice(&body).unwrap();
        doc["id"] = Value::from(upper.clone());
        legacy.push((api, tenant, key, upper, doc));
    }
    let storage = server.stop().await;
    {
        let store = open_store(&storage).await;
        for (api, tenant, _, upper, doc) in &legacy {
            let row = SessionRow {
                api: *api,
                id: upper.clone(),
                tenant: tenant.clone(),
                version: 1,
                body: Bytes::from(serde_json::to_vec(doc).unwrap()),
                doc: None,
            };
            store.insert_session(&row).await.expect("the legacy row");
        }
    }

    let server = TestServer::start_in(storage).await;
    for (api, _, key, upper, doc) in &legacy {
        let reply = server.public_get(*api, upper, Some(key)).await.expect(200);
        assert_eq!(reply.json(), *doc, "{api}");
        let admin = server
            .admin_session(Method::GET, *api, upper)
            .await
            .expect(200);
        assert_eq!(admin.json(), *doc, "{api}");
        server
            .patch_session(*api, upper, serde_json::json!({}))
            .await
            .expect(200);
        server
            .admin_session(Method::DELETE, *api, upper)
            .await
            .expect(204);
        server.public_get(*api, upper, Some(key)).await.expect(404);
    }
}

/// A UUID tenant id given in upper case is created in lower case, and every admin route takes it
/// in either case (it made a second tenant). A tenant a store holds under an upper-case UUID
/// (created before tenant ids were canonical) is still found under that spelling.
async fn a_uuid_tenant_named_in_upper_case_is_its_lower_case_tenant() {
    let server = TestServer::start().await;
    let mut legacy = Vec::new();
    for api in UUID_APIS {
        let lower = api.profile().new_tenant_id();
        let upper = lower.to_ascii_uppercase();
        let tenants = format!("/admin/v1/{api}/tenants");
        let created = server
            .admin(Method::POST, &tenants, Some(json!({ "id": upper })))
            .await
            .expect(201);
        assert_eq!(created.json()["id"], lower.as_str(), "{api}");
        server
            .admin(Method::POST, &tenants, Some(json!({ "id": lower })))
            .await
            .expect(409);
        let listed = server.admin(Method::GET, &tenants, None).await.expect(200);
        let ids: Vec<Value> = listed.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect();
        assert_eq!(ids, [json!(lower)], "{api}");

        // Keys and sessions under either spelling belong to the one tenant.
        let (key_id, key) = server.create_key(api, &upper).await;
        let keys = server
            .admin(Method::GET, &format!("{tenants}/{lower}/keys"), None)
            .await
            .expect(200)
            .json();
        assert_eq!(keys["items"][0]["id"], key_id.as_str(), "{api}: {keys}");
        let mut doc = fixtures::minimal(api);
        if let Some(field) = api.profile().tenant_field() {
            doc[field] = Value::from(upper.clone());
        }
        let (id, body) = server.new_session(api, &upper, &doc).await;
        if let Some(field) = api.profile().tenant_field() {
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body[field], lower.as_str(), "{api}");
        }
        server.public_get(api, &id, Some(&key)).await.expect(200);
        assert_eq!(server.list_all(api, &upper, 10).await.len(), 1, "{api}");
        assert_eq!(server.list_all(api, &lower, 10).await.len(), 1, "{api}");
        server.revoke_key(api, &upper, &key_id).await;
        server.public_get(api, &id, Some(&key)).await.expect(401);

        legacy.push((api, api.profile().new_tenant_id().to_ascii_uppercase()));
    }

    let storage = server.stop().await;
    {
        let store = open_store(&storage).await;
        for (api, upper) in &legacy {
            store
                .create_tenant(*api, upper, "2026-01-01T00:00:00.000Z")
                .await
                .expect("the legacy tenant");
        }
    }
    let server = TestServer::start_in(storage).await;
    for (api, upper) in &legacy {
        // It exists in every spelling, and each names it.
        let lower = upper.to_ascii_lowercase();
        for spelling in [upper, &lower] {
            server
                .admin(
                    Method::POST,
                    &format!("/admin/v1/{api}/tenants"),
                    Some(json!({ "id": spelling })),
                )
                .await
                .expect(409);
        }
        let (key_id, _) = server.create_key(*api, &lower).await;
        server.revoke_key(*api, &lower, &key_id).await;
        let (_, key) = server.create_key(*api, upper).await;
        let (id, _) = server
            .new_session(*api, upper, &fixtures::minimal(*api))
            .await;
        server.public_get(*api, &id, Some(&key)).await.expect(200);
        assert_eq!(server.list_all(*api, upper, 10).await.len(), 1, "{api}");
        assert_eq!(server.list_all(*api, &lower, 10).await.len(), 1, "{api}");
        let tenants = server
            .admin(Method::GET, &format!("/admin/v1/{api}/tenants"), None)
            .await
            .expect(200)
            .json();
        assert!(
            !tenants.to_string().contains(&lower),
            "{api}: a second tenant: {tenants}"
        );
    }
}

/// The store of a stopped server, opened directly: to write what an older sessiond left.
async fn open_store(storage: &Storage) -> Arc<dyn Store> {
    let dsn = storage.dsn().map(Dsn::new);
    sessiond::store::open(dsn.as_ref(), storage.data_dir(), StoreOptions::default())
        .await
        .expect("opening the store")
}
