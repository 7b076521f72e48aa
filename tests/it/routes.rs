//! Every operation the vendor contracts declare is routed. The operations are read here straight
//! from `specs/*.yaml` (not through sessiond's loader, which could skip one silently); each is
//! called at `/{api}{server base path}{path}` for a stored session and must answer with a success
//! status its contract declares — and the loader must have found exactly the same operations.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;
use sessiond::ApiId;

use crate::common::{CONTRACTS, TestServer};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(METHOD, path template, success statuses)` of every operation in the api's spec file.
fn operations_in_spec_file(api: ApiId) -> (String, Vec<(String, String, Vec<u16>)>) {
    let path = format!("{}/specs/{api}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: Value = serde_yaml::from_str(&text).expect("the spec is YAML");
    let server = doc
        .pointer("/servers/0/url")
        .and_then(Value::as_str)
        .unwrap_or("");
    let base = server
        .split_once("://")
        .map_or(server, |(_, rest)| rest)
        .split_once('/')
        .map_or(String::new(), |(_, p)| {
            format!("/{}", p.trim_end_matches('/'))
        });
    let mut ops = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                let success = op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(code, _)| code.parse::<u16>().ok())
                    .filter(|code| (200..300).contains(code))
                    .collect();
                ops.push((method.to_uppercase(), template.clone(), success));
            }
        }
    }
    (base, ops)
}

/// Fills the path's one parameter with `id`.
fn fill(template: &str, id: &str) -> String {
    let start = template.find('{').expect("a path parameter");
    let end = template[start..].find('}').expect("closed") + start;
    format!("{}{id}{}", &template[..start], &template[end + 1..])
}

#[tokio::test]
async fn every_operation_in_specs_is_routed() {
    let mut total = 0;
    for api in ApiId::ALL {
        let (base, ops) = operations_in_spec_file(api);
        assert!(
            !ops.is_empty(),
            "{api}: no operations found in specs/{api}.yaml"
        );
        let loaded: BTreeSet<(String, String)> = CONTRACTS
            .get(api)
            .operations
            .iter()
            .map(|o| (o.method.clone(), o.path.clone()))
            .collect();
        let declared: BTreeSet<(String, String)> =
            ops.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
        assert_eq!(
            loaded, declared,
            "{api}: the loader saw other operations than the file has"
        );

        let (server, session) = TestServer::with_one_session(api).await;
        for (method, template, success) in &ops {
            let url = format!(
                "http://{}/{api}{base}{}",
                server.public,
                fill(template, &session.id)
            );
            let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
            let reply = server
                .vendor_call(api, method.clone(), &url, Some(&session.key))
                .await;
            assert!(
                success.contains(&reply.status),
                "{api}: {method} {base}{template} answered {} (declared success: {success:?})",
                reply.status
            );
            total += 1;
        }
    }
    assert_eq!(
        total, 5,
        "one Get-Session operation per vendor contract today"
    );
}
