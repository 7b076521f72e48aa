//! The error table of every vendor route, with exact bodies: the vendor's documented ones
//! (DESIGN.md "Error behaviour per vendor") and ours for what the vendors leave open. The harness
//! checks on top that every answer is `application/json` and matches the contract's error schema
//! where the contract declares one.

use reqwest::Method;
use sessiond::ApiId;

use crate::common::{KeepAlive, Reply, TestServer, fixtures, vendor_path};

per_api!(
    missing_credential,
    wrong_credential,
    revoked_key,
    keys_on_one_open_connection,
    key_of_another_api,
    a_key_that_is_not_text_is_a_wrong_key,
    unknown_id,
    another_tenants_id_answers_like_an_unknown_id,
    malformed_id,
    an_id_that_is_not_utf8_after_decoding,
    other_methods_are_405_with_allow,
    unknown_routes_under_the_api_prefix,
    api_prefix_with_trailing_slash,
    storage_fault_gives_the_vendors_500,
);

/// One vendor's error answers: `(status, exact body)`.
pub(crate) struct Table {
    missing_credential: (u16, &'static str),
    invalid_credential: (u16, &'static str),
    not_found: (u16, &'static str),
    malformed_id: (u16, &'static str),
    method_not_allowed: &'static str,
    route_not_found: &'static str,
    pub(crate) internal: &'static str,
}

/// Alcamine and Anam share the `{"error", "message"}` shape and most of the texts.
const SESSION_NOT_FOUND: &str = r#"{"error":"Not Found","message":"Session not found"}"#;

fn error_message_table(
    unauthorized: &'static str,
    malformed_id: (u16, &'static str),
    internal: &'static str,
) -> Table {
    Table {
        missing_credential: (401, unauthorized),
        invalid_credential: (401, unauthorized),
        not_found: (404, SESSION_NOT_FOUND),
        malformed_id,
        method_not_allowed: r#"{"error":"Method Not Allowed","message":"Only GET is supported on this route"}"#,
        route_not_found: r#"{"error":"Not Found","message":"Route not found"}"#,
        internal,
    }
}

pub(crate) fn table(api: ApiId) -> Table {
    match api {
        ApiId::Salesnip => Table {
            missing_credential: (401, r#"{"error":"X-Api-Key header not specified"}"#),
            invalid_credential: (401, r#"{"error":"Invalid Api-Key"}"#),
            not_found: (404, r#"{"error":"Session not found"}"#),
            malformed_id: (404, r#"{"error":"Session not found"}"#),
            method_not_allowed: r#"{"error":"Method Not Allowed"}"#,
            route_not_found: r#"{"error":"Not Found"}"#,
            internal: r#"{"error":"INTERNAL_SERVER_ERROR"}"#,
        },
        ApiId::Opencx => Table {
            missing_credential: (
                401,
                r#"{"statusCode":401,"message":"Unauthorized","error":"Unauthorized"}"#,
            ),
            invalid_credential: (
                401,
                r#"{"statusCode":401,"message":"Unauthorized","error":"Unauthorized"}"#,
            ),
            not_found: (
                404,
                r#"{"statusCode":404,"message":"Chat session not found","error":"Not Found"}"#,
            ),
            malformed_id: (
                404,
                r#"{"statusCode":404,"message":"Chat session not found","error":"Not Found"}"#,
            ),
            method_not_allowed: r#"{"statusCode":405,"message":"Method Not Allowed","error":"Method Not Allowed"}"#,
            route_not_found: r#"{"statusCode":404,"message":"Route not found","error":"Not Found"}"#,
            internal: r#"{"statusCode":500,"message":"Internal server error","error":"Internal Server Error"}"#,
        },
        ApiId::Funnelfox => Table {
            missing_credential: (400, r#"{"message":"Fox-Secret header is required"}"#),
            invalid_credential: (401, r#"{"message":"Invalid Fox-Secret"}"#),
            not_found: (404, r#"{"message":"Session not found"}"#),
            malformed_id: (404, r#"{"message":"Session not found"}"#),
            method_not_allowed: r#"{"message":"Method not allowed"}"#,
            route_not_found: r#"{"message":"Not found"}"#,
            internal: r#"{"message":"Internal server error"}"#,
        },
        ApiId::Alcamine => error_message_table(
            r#"{"error":"Unauthorized","message":"Missing or invalid API key"}"#,
            (404, SESSION_NOT_FOUND),
            r#"{"error":"Internal Server Error","message":"Something went wrong"}"#,
        ),
        ApiId::Anam => error_message_table(
            r#"{"error":"Unauthorized","message":"Invalid or missing API key"}"#,
            (
                400,
                r#"{"error":"Bad Request","message":"Invalid session ID"}"#,
            ),
            r#"{"error":"Internal Server Error","message":"Server error"}"#,
        ),
    }
}

#[track_caller]
fn assert_answer(api: ApiId, reply: &Reply, (status, body): (u16, &str)) {
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (status, body),
        "{api}: wrong error answer"
    );
    assert_eq!(reply.content_type(), Some("application/json"));
}

/// A server with one tenant, a key of it and a session of it: `(server, key, session id)`.
async fn with_session(api: ApiId) -> (TestServer, String, String) {
    let (server, session) = TestServer::with_one_session(api).await;
    (server, session.key, session.id)
}

async fn missing_credential(api: ApiId) {
    let (server, _, id) = with_session(api).await;
    let reply = server.public_get(api, &id, None).await;
    assert_answer(api, &reply, table(api).missing_credential);
}

async fn wrong_credential(api: ApiId) {
    let (server, key, id) = with_session(api).await;
    for wrong in [format!("{key}x"), "sk_wrong".to_owned()] {
        let reply = server.public_get(api, &id, Some(&wrong)).await;
        assert_answer(api, &reply, table(api).invalid_credential);
    }
}

async fn revoked_key(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (key_id, key) = server.create_key(api, &session.tenant).await;
    let id = &session.id;
    // Used once before the revocation, so any cache of the key is warm.
    server.public_get(api, id, Some(&key)).await.expect(200);
    server.revoke_key(api, &session.tenant, &key_id).await;
    let reply = server.public_get(api, id, Some(&key)).await;
    assert_answer(api, &reply, table(api).invalid_credential);
    // The tenant's other key is untouched.
    server
        .public_get(api, id, Some(&session.key))
        .await
        .expect(200);
}

/// Keys presented one after another on one keep-alive connection (the server remembers a
/// connection's last key): each answers for itself, a revocation takes effect on the next request
/// of the open connection, and a key one letter off the remembered one is refused.
async fn keys_on_one_open_connection(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let (key_id, key) = server.create_key(api, &session.tenant).await;
    let id = &session.id;
    let mut conn = KeepAlive::open(server.public).await;
    let body = conn.get(api, id, &key).await.expect(200).body;
    let mut off = key.clone().into_bytes();
    *off.last_mut().unwrap() ^= 1; // another letter or digit
    let off = String::from_utf8(off).unwrap();
    let reply = conn.get(api, id, &off).await;
    assert_answer(api, &reply, table(api).invalid_credential);
    assert_eq!(conn.get(api, id, &session.key).await.expect(200).body, body);
    assert_eq!(conn.get(api, id, &key).await.expect(200).body, body);
    // The remembered key on another api's route is that api's invalid credential.
    let other = ApiId::ALL.into_iter().find(|a| *a != api).unwrap();
    let reply = conn
        .get(other, &other.profile().new_session_id(), &key)
        .await;
    assert_answer(other, &reply, table(other).invalid_credential);
    assert_eq!(conn.get(api, id, &key).await.expect(200).body, body);
    server.revoke_key(api, &session.tenant, &key_id).await;
    let reply = conn.get(api, id, &key).await;
    assert_answer(api, &reply, table(api).invalid_credential);
    assert_eq!(conn.get(api, id, &session.key).await.expect(200).body, body);
    let reply = conn.get(api, id, &key).await;
    assert_answer(api, &reply, table(api).invalid_credential);
}

async fn key_of_another_api(api: ApiId) {
    let (server, _, id) = with_session(api).await;
    for other in ApiId::ALL.into_iter().filter(|a| *a != api) {
        let (_, foreign_key) = server.tenant_with_key(other).await;
        let reply = server.public_get(api, &id, Some(&foreign_key)).await;
        assert_answer(api, &reply, table(api).invalid_credential);
    }
}

/// A credential header whose value is not visible ASCII was given, and names no key: the wrong
/// key's answer, not the missing key's.
async fn a_key_that_is_not_text_is_a_wrong_key(api: ApiId) {
    let (server, key, id) = with_session(api).await;
    let (name, value) = crate::common::credential_header(api, &key);
    let mut bytes = value.into_bytes();
    *bytes.last_mut().unwrap() = 0xFF;
    let value = reqwest::header::HeaderValue::from_bytes(&bytes).expect("obs-text is allowed");
    let url = format!("http://{}/{api}{}", server.public, vendor_path(api, &id));
    let request = server.http().get(url).header(name, value);
    let reply = crate::common::Client::send(request).await;
    crate::common::check_vendor_reply(api, &Method::GET, &reply);
    assert_answer(api, &reply, table(api).invalid_credential);
}

async fn unknown_id(api: ApiId) {
    let (server, key, _) = with_session(api).await;
    let unknown = api.profile().new_session_id();
    let reply = server.public_get(api, &unknown, Some(&key)).await;
    assert_answer(api, &reply, table(api).not_found);
}

async fn another_tenants_id_answers_like_an_unknown_id(api: ApiId) {
    let (server, _, id) = with_session(api).await;
    let (_, stranger) = server.tenant_with_key(api).await;
    let theirs = server.public_get(api, &id, Some(&stranger)).await;
    let unknown = server
        .public_get(api, &api.profile().new_session_id(), Some(&stranger))
        .await;
    assert_eq!(
        theirs.observable(),
        unknown.observable(),
        "{api}: another tenant's session must be indistinguishable from an unknown id"
    );
    assert_answer(api, &theirs, table(api).not_found);
}

async fn malformed_id(api: ApiId) {
    let (server, key, _) = with_session(api).await;
    for bad in ["not-an-id", "123", "%20"] {
        let reply = server.public_get(api, bad, Some(&key)).await;
        assert_answer(api, &reply, table(api).malformed_id);
    }
}

/// `%FF` decodes to no UTF-8 text, so it names no session; the credential is still checked first,
/// as for every other id, and a valid key gets the vendor's answer to a malformed id.
async fn an_id_that_is_not_utf8_after_decoding(api: ApiId) {
    let (server, key, _) = with_session(api).await;
    for bad in ["%FF", "session_%C3%28", "%E2%82"] {
        let reply = server.public_get(api, bad, None).await;
        assert_answer(api, &reply, table(api).missing_credential);
        let reply = server.public_get(api, bad, Some("sk_wrong")).await;
        assert_answer(api, &reply, table(api).invalid_credential);
        let reply = server.public_get(api, bad, Some(&key)).await;
        assert_answer(api, &reply, table(api).malformed_id);
    }
}

async fn other_methods_are_405_with_allow(api: ApiId) {
    let (server, key, id) = with_session(api).await;
    let path = vendor_path(api, &id);
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        for credential in [Some(key.as_str()), None] {
            let reply = server
                .public_request(api, method.clone(), &path, credential)
                .await;
            assert_answer(api, &reply, (405, table(api).method_not_allowed));
            assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{api} {method}");
        }
    }
    // Nothing was changed or removed by them.
    server.public_get(api, &id, Some(&key)).await.expect(200);
}

async fn unknown_routes_under_the_api_prefix(api: ApiId) {
    let (server, key, id) = with_session(api).await;
    let session = vendor_path(api, &id);
    let collection = session.rsplit_once('/').unwrap().0.to_owned();
    let paths = [
        String::new(),
        "/nope".to_owned(),
        format!("{session}/extra"),
        format!("{collection}/"),
        format!("/v999/sessions/{id}"),
    ];
    for path in &paths {
        assert_route_not_found(&server, api, path, &key).await;
    }
}

async fn assert_route_not_found(server: &TestServer, api: ApiId, path: &str, key: &str) {
    for credential in [Some(key), None] {
        let reply = server
            .public_request(api, Method::GET, path, credential)
            .await;
        assert_eq!(
            (reply.status, reply.text()),
            (404, table(api).route_not_found.to_owned()),
            "{api}: GET /{api}{path}"
        );
    }
}

/// `/{api}/` is under the api's prefix like `/{api}` is: the vendor's 404, not the global one.
async fn api_prefix_with_trailing_slash(api: ApiId) {
    let (server, key, _) = with_session(api).await;
    assert_route_not_found(&server, api, "/", &key).await;
}

#[tokio::test]
async fn unknown_routes_outside_every_api_are_json_404() {
    let server = TestServer::start().await;
    for path in [
        "/",
        "/nope",
        "/v1/sessions/x",
        "/salesnipx/v1/sessions/x",
        "/admin/v1/openapi.json",
    ] {
        let reply = server.public_raw(Method::GET, path).await;
        assert_eq!(reply.status, 404, "GET {path}: {}", reply.text());
        assert_eq!(reply.content_type(), Some("application/json"), "{path}");
        let body = reply.json();
        assert_eq!(body["error"], "not_found", "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
    }
}

async fn storage_fault_gives_the_vendors_500(api: ApiId) {
    let (server, session) = TestServer::with_one_session(api).await;
    let used_key = session.key;
    let (_, fresh_key) = server.create_key(api, &session.tenant).await;
    let (unread, _) = server
        .new_session(api, &session.tenant, &fixtures::minimal(api))
        .await;
    // `used_key` has been seen by the read path; `unread` has not (nothing cached serves it).
    server
        .public_get(api, &session.id, Some(&used_key))
        .await
        .expect(200);

    server.storage().break_store().await;

    // The session lookup fails (key seen before), and the key lookup fails (key never seen).
    for key in [&used_key, &fresh_key] {
        let reply = server.public_get(api, &unread, Some(key)).await;
        assert_answer(api, &reply, (500, table(api).internal));
        let text = reply.text().to_lowercase();
        for leak in ["sqlite", "no such table", "sessions", "database"] {
            assert!(!text.contains(leak), "{api}: the 500 body leaks `{leak}`");
        }
    }
    // The admin API fails closed too, without internals.
    let reply = server
        .admin_session(Method::GET, api, &unread)
        .await
        .expect(500);
    let text = reply.text().to_lowercase();
    assert!(
        !text.contains("sqlite") && !text.contains("no such table"),
        "{text}"
    );
}
