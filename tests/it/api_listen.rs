//! `--api-listen`: one api served at its bare vendor paths on a port of its own (what an SDK with
//! the vendor's base URL swapped for this port expects), with the same bodies and errors.

use reqwest::Method;
use sessiond::ApiId;

use crate::common::{Options, Reply, TestServer, fixtures, vendor_path};

per_api!(bare_vendor_path_serves_the_session);

/// A server that also serves `api` on a port of its own, with one session: `(server, key, id,
/// body)`.
async fn serving_on_own_port(api: ApiId) -> (TestServer, String, String, bytes::Bytes) {
    let server = TestServer::start_with(Options {
        api_listeners: vec![api],
        ..Options::default()
    })
    .await;
    let (tenant, key) = server.tenant_with_key(api).await;
    let (id, body) = server
        .new_session(api, &tenant, &fixtures::minimal(api))
        .await;
    (server, key, id, body)
}

/// `{method} {path}` on the api's own port, checked against its contract like every vendor call.
async fn on_own_port(
    server: &TestServer,
    api: ApiId,
    method: Method,
    path: &str,
    key: Option<&str>,
) -> Reply {
    let url = server.own_port_url(api, path);
    server.vendor_call(api, method, &url, key).await
}

async fn bare_vendor_path_serves_the_session(api: ApiId) {
    let (server, key, id, body) = serving_on_own_port(api).await;
    let path = vendor_path(api, &id);
    let bare = on_own_port(&server, api, Method::GET, &path, Some(&key))
        .await
        .expect(200);
    assert_eq!(bare.body, body);

    // The errors are the ones of the combined listener.
    let unknown = vendor_path(api, &api.profile().new_session_id());
    for (p, k) in [
        (&path, None),
        (&path, Some("wrong")),
        (&unknown, Some(key.as_str())),
    ] {
        let own = on_own_port(&server, api, Method::GET, p, k).await;
        let combined = server.public_request(api, Method::GET, p, k).await;
        assert_eq!(own.observable(), combined.observable(), "GET {p}");
    }
    let post = on_own_port(&server, api, Method::POST, &path, Some(&key))
        .await
        .expect(405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // The api prefix belongs to the combined listener only.
    on_own_port(
        &server,
        api,
        Method::GET,
        &format!("/{api}{path}"),
        Some(&key),
    )
    .await
    .expect(404);
}

#[tokio::test]
async fn anam_on_its_own_port_beside_the_combined_listener() {
    let api = ApiId::Anam;
    let (server, key, id, body) = serving_on_own_port(api).await;
    let path = format!("/v1/sessions/{id}");
    let bare = on_own_port(&server, api, Method::GET, &path, Some(&key))
        .await
        .expect(200);
    assert_eq!(bare.body, body);
    let combined = server.public_get(api, &id, Some(&key)).await.expect(200);
    assert_eq!(combined.body, body);
}
