//! Session documents the admin API accepts, per api.

use rand::Rng;
use serde_json::{Value, json};
use sessiond::ApiId;

/// Alcamine's embedded objects that carry a `workspaceId` of their own.
const ALCAMINE_NESTED: [&str; 4] = ["/agent", "/agent/version", "/conversation", "/person"];

/// What Alcamine's lifecycle fills in; a new (PENDING) session has none of it.
const LIFECYCLE: [&str; 5] = [
    "startedAt",
    "lastHeartbeatAt",
    "completedAt",
    "endedAt",
    "completedMeta",
];

/// Top-level fields the server sets itself: the id, the tenant field and derived fields.
const SERVER_OWNED: [&str; 6] = [
    "id",
    "project",
    "url",
    "ticket_number",
    "workspaceId",
    "organizationId",
];

/// The api's demo sessions without what the server owns (id, tenant fields, derived fields, and
/// the demo workspace inside Alcamine's embedded objects): realistic, full documents that any
/// tenant can create.
pub fn demo_documents(api: ApiId) -> Vec<Value> {
    let mut docs = api.profile().demo_sessions();
    for doc in &mut docs {
        let map = doc.as_object_mut().expect("demo sessions are objects");
        for field in SERVER_OWNED {
            map.remove(field);
        }
        if api == ApiId::Alcamine {
            for pointer in ALCAMINE_NESTED {
                doc.pointer_mut(pointer)
                    .and_then(Value::as_object_mut)
                    .expect("the demo session embeds agent, version, conversation and person")
                    .remove("workspaceId");
            }
        }
    }
    docs
}

/// The api's first demo document.
pub fn rich(api: ApiId) -> Value {
    demo_documents(api).remove(0)
}

/// The smallest document each api accepts (Alcamine's agent, conversation and person are required
/// in full, so it is the first demo session reset to a new, PENDING one).
pub fn minimal(api: ApiId) -> Value {
    match api {
        ApiId::Salesnip => json!({
            "currency": "USD",
            "products": [{ "id": "p", "name": "P", "price": { "initial": 100, "minimum": 80 } }]
        }),
        ApiId::Opencx | ApiId::Anam => json!({}),
        ApiId::Funnelfox => json!({
            "funnel_id": "f", "origin": "https://x", "profile_id": "p", "user_agent": "ua"
        }),
        ApiId::Alcamine => {
            let mut doc = rich(api);
            let map = doc.as_object_mut().unwrap();
            for field in LIFECYCLE {
                map.remove(field);
            }
            map.insert("status".into(), json!("PENDING"));
            doc
        }
    }
}

/// A minimal document with one free-text field set to `label`, so sessions differ.
pub fn labelled(api: ApiId, label: &str) -> Value {
    let mut doc = minimal(api);
    let (field, value) = match api {
        ApiId::Salesnip => ("metadata", json!({ "label": label })),
        ApiId::Opencx => ("custom_data", json!({ "label": label })),
        ApiId::Funnelfox => ("query", json!(label)),
        ApiId::Alcamine => ("name", json!(label)),
        ApiId::Anam => ("clientLabel", json!(label)),
    };
    doc[field] = value;
    doc
}

/// [`labelled`] with a random label.
pub fn varied(api: ApiId, rng: &mut impl Rng) -> Value {
    let label: String = (0..rng.random_range(1..24))
        .map(|_| char::from(rng.random_range(b' '..=b'~')))
        .collect();
    labelled(api, &label)
}
