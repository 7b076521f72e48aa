//! A session created through the admin API (201, `ETag`, `Location`) is what the vendor route
//! serves at the `Location`, byte for byte, and it validates against the vendor's own contract
//! (checked by the harness on every vendor-route response).

use reqwest::Method;
use serde_json::Value;
use sessiond::ApiId;

use crate::common::{Reply, TestServer, check_vendor_reply, fixtures, vendor_path};

per_api!(
    minimal_session_round_trips,
    demo_sessions_round_trip,
    head_answers_like_get
);

/// Creates `doc`, then reads it at its `Location` with the tenant's key: the very bytes of the 201.
async fn round_trip(server: &TestServer, api: ApiId, tenant: &str, key: &str, doc: &Value) {
    let created = server.create_session(api, tenant, doc).await.expect(201);
    assert_eq!(created.content_type(), Some("application/json"));
    let etag = created
        .header("etag")
        .expect("a 201 has an ETag")
        .to_owned();
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "not a strong ETag: {etag}"
    );
    let id = created.json()["id"].as_str().expect("an id").to_owned();
    let location = created.header("location").expect("a 201 has a Location");
    assert_eq!(location, format!("/{api}{}", vendor_path(api, &id)));

    let path = location.strip_prefix(&format!("/{api}")).unwrap();
    let served = server
        .public_request(api, Method::GET, path, Some(key))
        .await
        .expect(200);
    assert_eq!(
        served.text(),
        created.text(),
        "{api}: the public GET differs from the 201 body"
    );

    let admin = server
        .admin_session(Method::GET, api, &id)
        .await
        .expect(200);
    assert_eq!(admin.body, created.body, "{api}: admin GET differs");
    assert_eq!(admin.header("etag"), Some(etag.as_str()));
}

async fn minimal_session_round_trips(api: ApiId) {
    let server = TestServer::start().await;
    let (tenant, key) = server.tenant_with_key(api).await;
    round_trip(&server, api, &tenant, &key, &fixtures::minimal(api)).await;
}

async fn demo_sessions_round_trip(api: ApiId) {
    let server = TestServer::start().await;
    let (tenant, key) = server.tenant_with_key(api).await;
    for doc in fixtures::demo_documents(api) {
        round_trip(&server, api, &tenant, &key, &doc).await;
    }
}

/// The vendor routes advertise `Allow: GET, HEAD`: HEAD answers with GET's status and type.
async fn head_answers_like_get(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (key, id) = (session.key, session.id);
    let path = vendor_path(api, &id);
    server
        .public_request(api, Method::HEAD, &path, Some(&key))
        .await
        .expect(200);
    let unknown = vendor_path(api, &api.profile().new_session_id());
    let get = server
        .public_request(api, Method::GET, &unknown, Some(&key))
        .await;
    let head = server
        .public_request(api, Method::HEAD, &unknown, Some(&key))
        .await;
    assert_eq!(head.status, get.status);
}

/// A made-up JSON answer of a SaleSnip route, run through the harness's check.
fn check_made_up_reply(status: u16, body: &'static str) {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    let reply = Reply {
        status,
        headers,
        body: body.into(),
    };
    check_vendor_reply(ApiId::Salesnip, &Method::GET, &reply);
}

/// The harness's contract check has teeth: a 200 body outside the contract fails the test.
#[test]
#[should_panic(expected = "violates the vendor's contract")]
fn harness_rejects_a_body_outside_the_contract() {
    check_made_up_reply(200, r#"{"id":"session_x","status":"MAYBE"}"#);
}

/// ... and so does an error body outside the schema the contract declares for its status.
#[test]
#[should_panic(expected = "violates the contract's error schema")]
fn harness_rejects_an_undeclared_error_body() {
    check_made_up_reply(401, r#"{"error":"Nope"}"#);
}
