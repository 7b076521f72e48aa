//! Invalid writes: 422 with every problem listed by JSON pointer, and nothing changes in the store
//! (the tenant's listing, the session's body and ETag, the OpenCX ticket sequence). Malformed JSON
//! is a 400; unknown apis and tenants are 404; client-chosen ids are checked and unique.

use reqwest::Method;
use serde_json::{Value, json};
use sessiond::ApiId;

use crate::common::{Client, Reply, TestServer, fixtures};

per_api!(
    wrong_id_format_is_422_at_id,
    client_chosen_id_is_used_and_unique,
    failed_patch_changes_nothing,
    malformed_json_is_400,
    unknown_tenant_is_404,
    tenant_id_of_another_type_is_400,
);

per_backend!(
    every_violation_is_listed_and_nothing_is_stored,
    tenant_field_must_be_the_tenant,
    failed_create_does_not_use_up_a_ticket_number,
);

/// Everything the admin API shows of a tenant's sessions.
async fn snapshot(server: &Client, api: ApiId, tenant: &str) -> Vec<Value> {
    server.list_all(api, tenant, 1000).await
}

#[track_caller]
fn assert_pointers(reply: &Reply, expected: &[&str]) {
    let mut got = reply.violation_pointers();
    got.sort();
    let mut expected: Vec<String> = expected.iter().map(|p| (*p).to_owned()).collect();
    expected.sort();
    assert_eq!(got, expected, "violations: {}", reply.text());
}

async fn every_violation_is_listed_and_nothing_is_stored() {
    let api = ApiId::Salesnip;
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    server
        .new_session(api, &tenant, &fixtures::minimal(api))
        .await;
    let before = snapshot(&server, api, &tenant).await;

    let doc = json!({
        "currency": "XYZ",
        "products": [
            { "id": "a", "name": "A", "price": { "initial": 100, "current": 50, "minimum": 80 } },
            { "id": "b", "price": { "initial": 10, "minimum": 5 } },
            { "id": "c", "name": "C", "price": { "initial": 10, "minimum": 5 },
              "quantity": { "initial": 5, "maximum": 3 } }
        ]
    });
    let reply = server.create_session(api, &tenant, &doc).await;
    assert_pointers(
        &reply,
        &[
            "/currency",
            "/products/0/price",
            "/products/1",
            "/products/2/quantity/current",
            "/products/2/quantity/initial",
        ],
    );
    let reply = server
        .create_session(api, &tenant, &json!({ "currency": "EUR" }))
        .await;
    let violations = reply.json()["violations"].clone();
    assert_eq!(
        reply.violation_pointers(),
        [""],
        "missing products: {violations}"
    );
    assert!(violations.to_string().contains("products"), "{violations}");

    assert_eq!(snapshot(&server, api, &tenant).await, before);
}

async fn wrong_id_format_is_422_at_id(api: ApiId) {
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    for bad in [json!("not an id"), json!(42)] {
        let mut doc = fixtures::minimal(api);
        doc["id"] = bad;
        let reply = server.create_session(api, &tenant, &doc).await;
        assert_pointers(&reply, &["/id"]);
    }
    assert_eq!(snapshot(&server, api, &tenant).await, Vec::<Value>::new());
}

async fn client_chosen_id_is_used_and_unique(api: ApiId) {
    let server = TestServer::start().await;
    let (tenant, key) = server.tenant_with_key(api).await;
    let id = api.profile().new_session_id();
    let mut doc = fixtures::labelled(api, "first");
    doc["id"] = json!(id);
    let created = server.create_session(api, &tenant, &doc).await.expect(201);
    assert_eq!(created.json()["id"], id);
    let before = snapshot(&server, api, &tenant).await;

    // The same id again, in the same tenant or in another one: 409, the first one stays.
    let other = server.create_tenant(api).await;
    let mut again = fixtures::labelled(api, "second");
    again["id"] = json!(id);
    for t in [&tenant, &other] {
        server.create_session(api, t, &again).await.expect(409);
    }
    let served = server.public_get(api, &id, Some(&key)).await.expect(200);
    assert_eq!(served.body, created.body);
    assert_eq!(snapshot(&server, api, &tenant).await, before);
    assert_eq!(snapshot(&server, api, &other).await, Vec::<Value>::new());
}

/// A patch that breaks the document or changes the id: 422, and the body and ETag stay.
async fn failed_patch_changes_nothing(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (tenant, id, body) = (session.tenant, session.id, session.body);
    let before = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    let before_list = snapshot(&server, api, &tenant).await;

    let bad_field = match api {
        ApiId::Salesnip => json!({ "currency": "XYZ" }),
        ApiId::Opencx => json!({ "status": "maybe" }),
        ApiId::Funnelfox => json!({ "created_at": "yesterday" }),
        ApiId::Alcamine => json!({ "status": "SOMETIMES" }),
        ApiId::Anam => json!({ "startTime": "yesterday" }),
    };
    let pointer = format!("/{}", bad_field.as_object().unwrap().keys().next().unwrap());
    let reply = server.patch_session(api, &id, bad_field).await;
    assert_pointers(&reply, &[&pointer]);
    let other_id = api.profile().new_session_id();
    let reply = server
        .patch_session(api, &id, json!({ "id": other_id }))
        .await;
    assert_pointers(&reply, &["/id"]);

    let after = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    assert_eq!(after.body, body);
    assert_eq!(after.header("etag"), before.header("etag"));
    assert_eq!(snapshot(&server, api, &tenant).await, before_list);
    server
        .admin_session(Method::GET, api, &other_id)
        .await
        .expect(404);
}

async fn malformed_json_is_400(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (tenant, id, body) = (session.tenant, session.id, session.body);
    let session = format!("/admin/v1/{api}/sessions/{id}");
    let requests = [
        (Method::POST, format!("/admin/v1/{api}/tenants")),
        (
            Method::POST,
            format!("/admin/v1/{api}/tenants/{tenant}/sessions"),
        ),
        (Method::PATCH, session.clone()),
        (Method::PUT, session.clone()),
    ];
    for (method, path) in &requests {
        for raw in ["{", "{\"a\":}", "nope", "[1,2"] {
            let reply = Client::send(
                server
                    .admin_request(method.clone(), path)
                    .header("content-type", "application/json")
                    .body(raw),
            )
            .await;
            assert_eq!(
                reply.status,
                400,
                "{method} {path} {raw:?}: {}",
                reply.text()
            );
            assert_eq!(reply.content_type(), Some("application/json"));
            assert_eq!(reply.json()["error"], "bad_request");
        }
    }
    // Valid JSON that is not an object is a bad request too.
    for (method, path) in &requests[1..] {
        let reply = server.admin(method.clone(), path, Some(json!([1]))).await;
        assert_eq!(reply.status, 400, "{method} {path}: {}", reply.text());
    }
    let after = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    assert_eq!(after.body, body);
    assert_eq!(snapshot(&server, api, &tenant).await.len(), 1);
}

async fn unknown_tenant_is_404(api: ApiId) {
    let server = TestServer::start().await;
    let nobody = api.profile().new_tenant_id();
    let paths = [
        (
            Method::POST,
            format!("/admin/v1/{api}/tenants/{nobody}/sessions"),
        ),
        (
            Method::GET,
            format!("/admin/v1/{api}/tenants/{nobody}/sessions"),
        ),
        (
            Method::POST,
            format!("/admin/v1/{api}/tenants/{nobody}/keys"),
        ),
        (
            Method::GET,
            format!("/admin/v1/{api}/tenants/{nobody}/keys"),
        ),
        (
            Method::DELETE,
            format!("/admin/v1/{api}/tenants/{nobody}/keys/key_x"),
        ),
    ];
    assert_all_not_found(&server, &paths, &fixtures::minimal(api)).await;
}

/// A tenant's `id`, when given, is a string (the admin contract's `TenantCreate`): `null`, a
/// number or an object is a 400 and creates no tenant; `{}` creates one with an id of the api's.
async fn tenant_id_of_another_type_is_400(api: ApiId) {
    let server = TestServer::start().await;
    let path = format!("/admin/v1/{api}/tenants");
    for body in [
        json!({ "id": null }),
        json!({ "id": 5 }),
        json!({ "id": {} }),
    ] {
        let reply = server.admin(Method::POST, &path, Some(body.clone())).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
        assert_eq!(reply.json()["error"], "bad_request", "{body}");
    }
    let tenants = server.admin(Method::GET, &path, None).await.expect(200);
    assert_eq!(tenants.json()["items"], json!([]), "no tenant was created");
    let created = server.admin(Method::POST, &path, Some(json!({}))).await;
    let id = created.expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(api.profile().check_tenant_id(&id).is_ok(), "{id}");
}

/// Each request (with `body`) is the admin API's JSON 404.
async fn assert_all_not_found(server: &Client, requests: &[(Method, String)], body: &Value) {
    for (method, path) in requests {
        let reply = server.admin(method.clone(), path, Some(body.clone())).await;
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
        assert_eq!(reply.json()["error"], "not_found");
    }
}

#[tokio::test]
async fn unknown_api_is_404() {
    let server = TestServer::start().await;
    let requests = [
        (Method::POST, "/admin/v1/stripe/tenants"),
        (Method::GET, "/admin/v1/stripe/tenants"),
        (Method::POST, "/admin/v1/stripe/tenants/t/sessions"),
        (Method::GET, "/admin/v1/stripe/sessions/x"),
        (Method::PATCH, "/admin/v1/stripe/sessions/x"),
    ]
    .map(|(m, p)| (m, p.to_owned()));
    assert_all_not_found(&server, &requests, &json!({})).await;
}

async fn tenant_field_must_be_the_tenant() {
    let server = TestServer::start().await;
    for (api, field) in [
        (ApiId::Salesnip, "project"),
        (ApiId::Alcamine, "workspaceId"),
        (ApiId::Anam, "organizationId"),
    ] {
        let tenant = server.create_tenant(api).await;
        let other = server.create_tenant(api).await;
        let mut doc = fixtures::minimal(api);
        doc[field] = json!(other);
        let reply = server.create_session(api, &tenant, &doc).await;
        assert_pointers(&reply, &[&format!("/{field}")]);
        doc[field] = json!(tenant);
        let (_, body) = server.new_session(api, &tenant, &doc).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body[field], tenant);
    }
}

/// A rejected create leaves no trace, not even in the per-tenant ticket sequence.
async fn failed_create_does_not_use_up_a_ticket_number() {
    let api = ApiId::Opencx;
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    let ticket = |body: bytes::Bytes| {
        serde_json::from_slice::<Value>(&body).unwrap()["ticket_number"].clone()
    };
    let (_, first) = server.new_session(api, &tenant, &json!({})).await;
    assert_eq!(ticket(first), 1);
    server
        .create_session(api, &tenant, &json!({ "status": "maybe" }))
        .await
        .expect(422);
    let (_, second) = server.new_session(api, &tenant, &json!({})).await;
    assert_eq!(
        ticket(second),
        2,
        "a rejected write used up ticket number 2"
    );
}
