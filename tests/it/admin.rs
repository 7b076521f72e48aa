//! The admin API: merge patch, ETags and If-Match, replace, delete, pagination, the admin token,
//! health endpoints, and its OpenAPI document (served, complete, and equal to the committed
//! snapshot `specs/admin-openapi.json`).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};
use sessiond::ApiId;

use crate::common::{Client, Reply, TestServer, fixtures};

per_api!(
    etag_on_every_session_response,
    if_match_is_honoured,
    put_replaces_the_document,
    delete_removes_from_admin_and_public_routes,
    pagination_walks_every_session_once,
);

per_backend!(
    patch_is_an_rfc_7396_merge_patch,
    admin_token_is_required_and_health_is_open,
    every_documented_operation_exists,
    racing_conditional_patches_have_one_winner,
    a_conditional_delete_racing_a_patch_loses_no_change,
    sessions_belong_to_their_api,
);

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/specs/admin-openapi.json");

fn etag(reply: &Reply) -> String {
    reply
        .header("etag")
        .unwrap_or_else(|| panic!("no ETag on a {} session response", reply.status))
        .to_owned()
}

/// Conditional writes (`If-Match`) to one session through the admin API.
struct Conditional<'a> {
    server: &'a Client,
    api: ApiId,
    id: &'a str,
}

impl Conditional<'_> {
    async fn send(&self, method: Method, tag: &str, body: Option<Value>) -> Reply {
        let path = format!("/admin/v1/{}/sessions/{}", self.api, self.id);
        let mut request = self
            .server
            .admin_request(method, &path)
            .header("if-match", tag);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        Client::send(request).await
    }
}

async fn patch_is_an_rfc_7396_merge_patch() {
    let api = ApiId::Salesnip;
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    let mut doc = fixtures::minimal(api);
    doc["metadata"] = json!({ "keep": "k", "drop": "d", "nested": { "a": 1, "b": 2 } });
    let (id, _) = server.new_session(api, &tenant, &doc).await;

    let patched = server
        .patch_session(
            api,
            &id,
            json!({ "metadata": { "drop": null, "nested": { "b": null, "c": 3 }, "new": true } }),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        patched["metadata"],
        json!({ "keep": "k", "nested": { "a": 1, "c": 3 }, "new": true })
    );
    // Arrays are replaced as a whole; null removes a top-level field.
    let patched = server
        .patch_session(
            api,
            &id,
            json!({ "metadata": null, "products": [
                { "id": "q", "name": "Q", "price": { "initial": 5, "minimum": 5 } }
            ] }),
        )
        .await
        .expect(200)
        .json();
    assert!(patched.get("metadata").is_none(), "{patched}");
    assert_eq!(patched["products"].as_array().unwrap().len(), 1);
    assert_eq!(patched["products"][0]["id"], "q");
    assert_eq!(patched["currency"], "USD");
}

async fn etag_on_every_session_response(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let id = session.id;
    let mut tags = vec![session.etag];
    let got = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    assert_eq!(etag(&got), tags[0], "GET and 201 disagree on the ETag");

    let patched = server
        .patch_session(api, &id, fixtures::labelled(api, "one"))
        .await
        .expect(200);
    tags.push(etag(&patched));
    let put = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/{api}/sessions/{id}"),
            Some(fixtures::labelled(api, "two")),
        )
        .await
        .expect(200);
    tags.push(etag(&put));
    let got = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    assert_eq!(etag(&got), tags[2]);
    assert_eq!(
        tags.iter().collect::<BTreeSet<_>>().len(),
        3,
        "every change gives a new ETag: {tags:?}"
    );
}

async fn if_match_is_honoured(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (id, first) = (&session.id, session.etag);
    let write = Conditional {
        server: &server,
        api,
        id,
    };
    let label = |l: &str| Some(fixtures::labelled(api, l));
    let second = etag(
        &write
            .send(Method::PATCH, &first, label("a"))
            .await
            .expect(200),
    );
    let current = server.admin_session(Method::GET, api, id).await.expect(200);
    assert_eq!(etag(&current), second);

    // The first ETag is stale now: every conditional write is refused and changes nothing.
    for (method, body) in [
        (Method::PATCH, label("b")),
        (Method::PUT, label("c")),
        (Method::DELETE, None),
    ] {
        let reply = write.send(method.clone(), &first, body).await;
        assert_eq!(
            reply.status,
            412,
            "{method} with a stale ETag: {}",
            reply.text()
        );
        assert_eq!(reply.json()["error"], "precondition_failed");
        let after = server.admin_session(Method::GET, api, id).await.expect(200);
        assert_eq!(after.body, current.body, "{method} changed the session");
        assert_eq!(etag(&after), second);
    }
    // `*` matches whatever is current, and so does a list that contains the current tag.
    let star = write
        .send(Method::PATCH, "*", label("star"))
        .await
        .expect(200);
    let list = format!("\"nope\", {}", etag(&star));
    let listed = write
        .send(Method::PATCH, &list, label("d"))
        .await
        .expect(200);
    write
        .send(Method::DELETE, &etag(&listed), None)
        .await
        .expect(204);
}

/// Fields the server owns: a PUT keeps them (or derives them again).
const SERVER_FIELDS: [&str; 8] = [
    "id",
    "created_at",
    "createdAt",
    "ticket_number",
    "project",
    "url",
    "workspaceId",
    "organizationId",
];

async fn put_replaces_the_document(api: ApiId) {
    let server = TestServer::start().await;
    let (tenant, key) = server.tenant_with_key(api).await;
    let label = "label-before-the-put";
    let (id, body) = server
        .new_session(api, &tenant, &fixtures::labelled(api, label))
        .await;
    let before: Value = serde_json::from_slice(&body).unwrap();
    let replaced = server
        .admin(
            Method::PUT,
            &format!("/admin/v1/{api}/sessions/{id}"),
            Some(fixtures::minimal(api)),
        )
        .await
        .expect(200);
    assert!(
        !replaced.text().contains(label),
        "the old document survived the PUT: {}",
        replaced.text()
    );
    let after = replaced.json();
    for field in SERVER_FIELDS {
        assert_eq!(after.get(field), before.get(field), "{field} changed");
    }
    let served = server.public_get(api, &id, Some(&key)).await.expect(200);
    assert_eq!(served.body, replaced.body);
}

async fn delete_removes_from_admin_and_public_routes(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (tenant, key, id) = (session.tenant, session.key, session.id);
    let (kept, kept_body) = server
        .new_session(api, &tenant, &fixtures::minimal(api))
        .await;
    server
        .admin_session(Method::DELETE, api, &id)
        .await
        .expect(204);
    server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(404);
    server.public_get(api, &id, Some(&key)).await.expect(404);
    server
        .admin_session(Method::DELETE, api, &id)
        .await
        .expect(404);
    server.patch_session(api, &id, json!({})).await.expect(404);
    let served = server.public_get(api, &kept, Some(&key)).await.expect(200);
    assert_eq!(served.body, kept_body);
    let listed = server.list_all(api, &tenant, 10).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], kept);
}

async fn pagination_walks_every_session_once(api: ApiId) {
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    let other = server.create_tenant(api).await;
    let mut created = Vec::new();
    for n in 0..7 {
        let (_, body) = server
            .new_session(api, &tenant, &fixtures::labelled(api, &n.to_string()))
            .await;
        created.push(serde_json::from_slice::<Value>(&body).unwrap());
        server
            .new_session(api, &other, &fixtures::minimal(api))
            .await;
    }
    for limit in [1, 3, 7, 50] {
        let listed = server.list_all(api, &tenant, limit).await;
        assert_eq!(
            listed, created,
            "limit {limit}: not every session once, in order"
        );
    }
    let first = server
        .admin(
            Method::GET,
            &format!("/admin/v1/{api}/tenants/{tenant}/sessions?limit=3"),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert!(first["next_cursor"].is_string(), "{first}");
    let last = server
        .admin(
            Method::GET,
            &format!("/admin/v1/{api}/tenants/{tenant}/sessions?limit=7"),
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        last["next_cursor"],
        Value::Null,
        "an exactly full last page"
    );

    for bad in ["limit=0", "limit=1001", "limit=x", "cursor=zzz"] {
        let path = format!("/admin/v1/{api}/tenants/{tenant}/sessions?{bad}");
        let reply = server.admin(Method::GET, &path, None).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
    }
}

async fn admin_token_is_required_and_health_is_open() {
    let server = TestServer::start().await;
    let tenant = server.create_tenant(ApiId::Anam).await;
    let paths = [
        (Method::GET, "/admin/v1/openapi.json".to_owned()),
        (Method::POST, "/admin/v1/anam/tenants".to_owned()),
        (
            Method::GET,
            format!("/admin/v1/anam/tenants/{tenant}/sessions"),
        ),
        (
            Method::POST,
            format!("/admin/v1/anam/tenants/{tenant}/keys"),
        ),
        (Method::GET, "/admin/v1/anam/sessions/x".to_owned()),
    ];
    for (method, path) in &paths {
        let url = server.admin_url(path);
        let anonymous = server.http().request(method.clone(), &url);
        let wrong = server
            .http()
            .request(method.clone(), &url)
            .bearer_auth("wrong-token");
        let basic = server
            .http()
            .request(method.clone(), &url)
            .basic_auth("admin", Some(crate::common::ADMIN_TOKEN));
        for request in [anonymous, wrong, basic] {
            let reply = Client::send(request).await;
            assert_eq!(reply.status, 401, "{method} {path}: {}", reply.text());
            assert_eq!(reply.content_type(), Some("application/json"));
            assert_eq!(reply.json()["error"], "unauthorized");
        }
    }
    for path in ["/healthz", "/readyz"] {
        let reply = Client::send(server.http().get(server.admin_url(path))).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.content_type(), Some("application/json"));
    }
    // Nothing was created by the refused requests.
    let tenants = server
        .admin(Method::GET, "/admin/v1/anam/tenants", None)
        .await
        .expect(200)
        .json();
    assert_eq!(tenants["items"].as_array().unwrap().len(), 1, "{tenants}");
}

#[tokio::test]
async fn admin_routes_answer_json_errors() {
    let server = TestServer::start().await;
    let reply = server.admin(Method::GET, "/admin/v1/nope", None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.content_type(), Some("application/json"));
    let reply = server
        .admin(Method::DELETE, "/admin/v1/openapi.json", None)
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.content_type(), Some("application/json"));

    // Refused before a handler runs: a body over the limit, a path segment that is not UTF-8.
    let tenant = server.create_tenant(ApiId::Anam).await;
    let big = json!({ "clientLabel": "x".repeat(2 << 20) });
    let path = format!("/admin/v1/anam/tenants/{tenant}/sessions");
    for (method, path, body, status, code) in [
        (
            Method::POST,
            path.as_str(),
            Some(big),
            413,
            "payload_too_large",
        ),
        (
            Method::GET,
            "/admin/v1/anam/sessions/%FF",
            None,
            400,
            "bad_request",
        ),
        (
            Method::GET,
            "/admin/v1/anam/tenants/%FF/sessions",
            None,
            400,
            "bad_request",
        ),
    ] {
        let reply = server.admin(method, path, body).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(reply.content_type(), Some("application/json"), "{path}");
        let error = reply.json();
        assert_eq!(error["error"], code, "{path}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");
    }
    // Nothing of the refused create was stored.
    let listed = server
        .admin(Method::GET, &path, None)
        .await
        .expect(200)
        .json();
    assert_eq!(listed["items"], json!([]));
}

async fn served_openapi(server: &Client) -> Value {
    server
        .admin(Method::GET, "/admin/v1/openapi.json", None)
        .await
        .expect(200)
        .json()
}

/// Path parameters filled with things that exist, so the operations can succeed.
async fn concrete_path(server: &Client, template: &str) -> String {
    let api = ApiId::Anam;
    let tenant = server.create_tenant(api).await;
    let (key_id, _) = server.create_key(api, &tenant).await;
    let (id, _) = server
        .new_session(api, &tenant, &fixtures::minimal(api))
        .await;
    template
        .replace("{api}", api.as_str())
        .replace("{tenant}", &tenant)
        .replace("{key_id}", &key_id)
        .replace("{id}", &id)
}

async fn every_documented_operation_exists() {
    let server = TestServer::start().await;
    let doc = served_openapi(&server).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), template.clone()));
        }
    }
    assert!(operations.len() >= 14, "{operations:?}");
    for (method, template) in operations {
        let path = concrete_path(&server, &template).await;
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
        let reply = server.admin(method.clone(), &path, body).await;
        assert!(
            ![404, 405].contains(&reply.status),
            "{method} {template} ({path}) answered {}: {}",
            reply.status,
            reply.text()
        );
    }
}

#[tokio::test]
async fn openapi_document_matches_the_committed_snapshot() {
    let server = TestServer::start().await;
    let served = served_openapi(&server).await;
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(SNAPSHOT).unwrap_or_else(|e| panic!("reading {SNAPSHOT}: {e}")),
    )
    .expect("the snapshot is JSON");
    assert!(
        served == committed,
        "the admin API's OpenAPI document differs from {SNAPSHOT}.\n\
         If the change is intended, regenerate the snapshot and commit it:\n    \
         cargo run -q -- openapi > specs/admin-openapi.json"
    );
}

/// Conditional patches racing with the same ETag: exactly one wins, the others get 412.
async fn racing_conditional_patches_have_one_winner() {
    let api = ApiId::Anam;
    let (server, session) = TestServer::with_one_session(api).await;
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..16 {
        let (client, id, tag) = (
            Client::clone(&server),
            session.id.clone(),
            session.etag.clone(),
        );
        racers.spawn(async move {
            let write = Conditional {
                server: &client,
                api,
                id: &id,
            };
            let label = Some(fixtures::labelled(api, &format!("racer {n}")));
            write.send(Method::PATCH, &tag, label).await
        });
    }
    let mut winners = Vec::new();
    while let Some(reply) = racers.join_next().await {
        let reply = reply.unwrap();
        match reply.status {
            200 => winners.push(reply),
            412 => {}
            other => panic!("a racing patch got {other}: {}", reply.text()),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "conditional patches with one ETag: one must win"
    );
    let now = server
        .admin_session(Method::GET, api, &session.id)
        .await
        .expect(200);
    assert_eq!(now.body, winners[0].body);
}

/// A patch and a delete sent at once with the same ETag: never both acknowledged (the delete,
/// checked against the version it read, must not remove the change the patch made), and what is
/// stored afterwards is what the winner said. A race may not happen in every round; the store
/// tests check the conditional delete itself.
async fn a_conditional_delete_racing_a_patch_loses_no_change() {
    let api = ApiId::Anam;
    let (server, first) = TestServer::with_one_session(api).await;
    for round in 0..30 {
        let created = server
            .create_session(api, &first.tenant, &fixtures::minimal(api))
            .await
            .expect(201);
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let tag = created.header("etag").unwrap().to_owned();
        let write = Conditional {
            server: &server,
            api,
            id: &id,
        };
        let label = fixtures::labelled(api, &format!("round {round}"));
        let (patched, deleted) = tokio::join!(
            write.send(Method::PATCH, &tag, Some(label)),
            write.send(Method::DELETE, &tag, None)
        );
        let after = server.admin_session(Method::GET, api, &id).await;
        match (patched.status, deleted.status) {
            (200, 412) => assert_eq!(after.expect(200).body, patched.body),
            (412 | 404, 204) => {
                after.expect(404);
            }
            (p, d) => panic!(
                "round {round}: patch {p} {}, delete {d} {}: one of them must fail",
                patched.text(),
                deleted.text()
            ),
        }
    }
}

/// Session ids live in their api's namespace: a uuid of OpenCX is unknown to Anam's admin routes.
async fn sessions_belong_to_their_api() {
    let (server, session) = TestServer::with_one_session(ApiId::Opencx).await;
    for method in [Method::GET, Method::DELETE] {
        server
            .admin_session(method, ApiId::Anam, &session.id)
            .await
            .expect(404);
    }
    server
        .patch_session(ApiId::Anam, &session.id, json!({}))
        .await
        .expect(404);
    let still = server
        .admin_session(Method::GET, ApiId::Opencx, &session.id)
        .await
        .expect(200);
    assert_eq!(still.body, session.body);
}
