//! The vendor profiles, seen through the admin API and the public GET: id formats, the tenant
//! field, documented defaults, derived fields, invariants, lifecycles and Anam's secret redaction.

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sessiond::ApiId;

use crate::common::{TestServer, fixtures};

per_backend!(
    salesnip_ids_project_url_and_defaults,
    salesnip_invariants_are_422_with_pointers,
    salesnip_status_goes_from_active_to_complete_only,
    opencx_ids_and_documented_defaults,
    opencx_ticket_numbers_count_per_tenant,
    opencx_racing_creates_get_distinct_ticket_numbers,
    opencx_ticket_number_is_the_servers,
    opencx_rejects_nested_custom_data_and_unknown_fields,
    funnelfox_ulid_ids_and_unix_created_at,
    alcamine_cuid2_ids_and_workspace,
    alcamine_lifecycle_sets_timestamps_and_never_goes_back,
    anam_active_session_and_derived_length,
    anam_persona_secrets_are_redacted_everywhere_and_kept,
    anam_a_redacted_document_sent_back_keeps_its_secrets,
    a_creation_time_sent_as_null_is_kept,
    a_null_for_a_field_the_server_owns_leaves_it_as_it_is,
    a_null_sent_on_create_for_a_field_the_server_fills_is_not_set,
    an_update_time_sent_as_null_is_the_time_of_the_write,
);

/// One session of a fresh tenant, created through the admin API and read back through the vendor
/// route, on a server of its own.
struct Subject {
    server: TestServer,
    api: ApiId,
    tenant: String,
    key: String,
    id: String,
    /// The public GET body right after the create.
    body: Value,
}

impl Subject {
    async fn create(api: ApiId, doc: Value) -> Subject {
        let server = TestServer::start().await;
        let (tenant, key) = server.tenant_with_key(api).await;
        let (id, created) = server.new_session(api, &tenant, &doc).await;
        let mut subject = Subject {
            server,
            api,
            tenant,
            key,
            id,
            body: Value::Null,
        };
        subject.body = subject.public().await;
        assert_eq!(
            subject.body,
            serde_json::from_slice::<Value>(&created).unwrap()
        );
        subject
    }

    /// The session as the vendor route serves it now.
    async fn public(&self) -> Value {
        self.server
            .public_get(self.api, &self.id, Some(&self.key))
            .await
            .expect(200)
            .json()
    }

    /// A merge patch that must be accepted: the new body.
    async fn patch(&self, patch: Value) -> Value {
        self.server
            .patch_session(self.api, &self.id, patch)
            .await
            .expect(200)
            .json()
    }

    /// A merge patch that must be refused with exactly `expected` pointers, changing nothing.
    async fn refuse(&self, patch: Value, expected: &[&str]) {
        let (api, id) = (self.api, &self.id);
        let before = self.server.admin_session(Method::GET, api, id).await;
        let reply = self.server.patch_session(api, id, patch.clone()).await;
        assert_eq!(
            reply.violation_pointers(),
            expected,
            "{api} patch {patch}: {}",
            reply.text()
        );
        let after = self.server.admin_session(Method::GET, api, id).await;
        assert_eq!(
            after.body, before.body,
            "a refused patch changed the session"
        );
    }
}

/// `2026-01-05T10:00:00.000Z`, the vendors' timestamp format.
fn is_iso_millis(s: &str) -> bool {
    const SHAPE: &str = "9999-99-99T99:99:99.999Z";
    s.len() == SHAPE.len()
        && s.chars().zip(SHAPE.chars()).all(|(c, p)| match p {
            '9' => c.is_ascii_digit(),
            p => c == p,
        })
}

#[track_caller]
fn assert_timestamp(doc: &Value, field: &str) {
    let v = doc[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not set: {doc}"));
    assert!(
        is_iso_millis(v),
        "{field} = {v} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
    );
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

// ---- SaleSnip -----------------------------------------------------------------------------------

async fn salesnip_ids_project_url_and_defaults() {
    let doc = json!({
        "currency": "USD",
        "products": [
            { "id": "a", "name": "A", "price": { "initial": 100, "minimum": 80 } },
            { "id": "b", "name": "B", "price": { "initial": 50, "current": 40, "minimum": 30 },
              "quantity": { "initial": 3 }, "recurring": { "unit": "MONTH" }, "trial": { "unit": "DAY" } },
            { "id": "c", "name": "C", "price": { "initial": 9, "minimum": 9 },
              "quantity": { "initial": 2, "current": 4, "minimum": 2, "maximum": 10 },
              "recurring": { "unit": "YEAR", "count": 2 } }
        ]
    });
    let s = Subject::create(ApiId::Salesnip, doc).await;
    let short =
        s.id.strip_prefix("session_")
            .expect("SaleSnip ids start with session_");
    assert!(
        !short.is_empty() && short.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{}",
        s.id
    );
    assert_eq!(s.body["project"], s.tenant);
    assert_eq!(s.body["url"], format!("https://chat.salesnip.com/#{short}"));
    assert_eq!(s.body["status"], "ACTIVE");

    let p = &s.body["products"];
    assert_eq!(
        p[0]["price"],
        json!({ "initial": 100, "minimum": 80, "current": 100 })
    );
    let quantity = |q: &Value| {
        ["initial", "minimum", "maximum", "current"].map(|k| q[k].as_f64().unwrap_or(f64::NAN))
    };
    assert_eq!(quantity(&p[0]["quantity"]), [1.0, 1.0, 100000.0, 1.0]);
    assert_eq!(quantity(&p[1]["quantity"]), [3.0, 1.0, 100000.0, 3.0]);
    assert_eq!(p[1]["price"]["current"], 40);
    assert_eq!(p[1]["recurring"], json!({ "unit": "MONTH", "count": 1 }));
    assert_eq!(p[1]["trial"], json!({ "unit": "DAY", "count": 1 }));
    assert_eq!(quantity(&p[2]["quantity"]), [2.0, 2.0, 10.0, 4.0]);
    assert_eq!(p[2]["recurring"]["count"], 2);
}

async fn salesnip_invariants_are_422_with_pointers() {
    let api = ApiId::Salesnip;
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    let product = |price: Value, quantity: Value| {
        json!({ "currency": "USD", "products": [
            { "id": "ok", "name": "Fine", "price": { "initial": 10, "minimum": 1 } },
            { "id": "p", "name": "P", "price": price, "quantity": quantity }
        ] })
    };
    let any_price = json!({ "initial": 100, "minimum": 80 });
    let cases = [
        (
            product(
                json!({ "initial": 100, "current": 120, "minimum": 80 }),
                json!({}),
            ),
            "/products/1/price",
        ),
        (
            product(
                json!({ "initial": 100, "current": 70, "minimum": 80 }),
                json!({}),
            ),
            "/products/1/price",
        ),
        (
            product(any_price.clone(), json!({ "current": 11, "maximum": 10 })),
            "/products/1/quantity/current",
        ),
        (
            product(
                any_price.clone(),
                json!({ "initial": 0, "current": 1, "minimum": 1, "maximum": 5 }),
            ),
            "/products/1/quantity/initial",
        ),
    ];
    for (doc, pointer) in cases {
        let reply = server.create_session(api, &tenant, &doc).await;
        assert_eq!(reply.violation_pointers(), [pointer], "{doc}");
    }
    let mut doc = product(any_price, json!({}));
    doc["url"] = json!("https://evil.example/#x");
    let reply = server.create_session(api, &tenant, &doc).await;
    assert_eq!(reply.violation_pointers(), ["/url"]);
    assert!(server.list_all(api, &tenant, 10).await.is_empty());
}

async fn salesnip_status_goes_from_active_to_complete_only() {
    let s = Subject::create(ApiId::Salesnip, fixtures::minimal(ApiId::Salesnip)).await;
    assert_eq!(s.body["status"], "ACTIVE");
    assert_eq!(
        s.patch(json!({ "status": "COMPLETE" })).await["status"],
        "COMPLETE"
    );
    s.refuse(json!({ "status": "ACTIVE" }), &["/status"]).await;
}

// ---- OpenCX -------------------------------------------------------------------------------------

async fn opencx_ids_and_documented_defaults() {
    let s = Subject::create(ApiId::Opencx, json!({})).await;
    assert!(is_uuid(&s.id), "{}", s.id);
    let body = s.body.as_object().unwrap();
    assert_eq!(body["status"], "open");
    assert_eq!(body.get("ai_closure_type"), Some(&Value::Null));
    assert_eq!(body.get("sentiment"), Some(&Value::Null));
    assert_eq!(body["channel"], json!({ "type": "api" }));
    assert_eq!(body["assist_mode"], false);
    assert_eq!(body["ticket_number"], 1);
    assert_timestamp(&s.body, "created_at");
    assert_timestamp(&s.body, "updated_at");
}

async fn opencx_ticket_numbers_count_per_tenant() {
    let api = ApiId::Opencx;
    let server = TestServer::start().await;
    let a = server.create_tenant(api).await;
    let b = server.create_tenant(api).await;
    let mut seen: Vec<(&String, Value)> = Vec::new();
    for tenant in [&a, &b, &a, &a, &b] {
        let (_, body) = server.new_session(api, tenant, &json!({})).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        seen.push((tenant, body["ticket_number"].clone()));
    }
    let numbers = |t: &String| -> Vec<Value> {
        seen.iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, n)| n.clone())
            .collect()
    };
    assert_eq!(numbers(&a), [json!(1), json!(2), json!(3)]);
    assert_eq!(numbers(&b), [json!(1), json!(2)]);
}

/// Creates racing in one tenant still get the numbers 1..=N, each once.
async fn opencx_racing_creates_get_distinct_ticket_numbers() {
    const N: u64 = 24;
    let api = ApiId::Opencx;
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (client, tenant) = (crate::common::Client::clone(&server), tenant.clone());
        racers.spawn(async move { client.new_session(api, &tenant, &json!({})).await });
    }
    let mut numbers = Vec::new();
    while let Some(created) = racers.join_next().await {
        let (_, body) = created.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        numbers.push(body["ticket_number"].as_u64().expect("a ticket number"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=N).collect::<Vec<_>>());
}

async fn opencx_ticket_number_is_the_servers() {
    let s = Subject::create(ApiId::Opencx, json!({})).await;
    assert_eq!(
        s.patch(json!({ "language": "en" })).await["ticket_number"],
        1
    );
    s.refuse(json!({ "ticket_number": 99 }), &["/ticket_number"])
        .await;
}

async fn opencx_rejects_nested_custom_data_and_unknown_fields() {
    let api = ApiId::Opencx;
    let server = TestServer::start().await;
    let tenant = server.create_tenant(api).await;
    let nested = json!({ "custom_data": { "flat": "ok", "nested": { "a": 1 }, "list": [1] } });
    let mut got = server
        .create_session(api, &tenant, &nested)
        .await
        .violation_pointers();
    got.sort();
    assert_eq!(got, ["/custom_data/list", "/custom_data/nested"]);

    for unknown in [
        json!({ "colour": "red" }),
        json!({ "channel": { "type": "api", "colour": 1 } }),
    ] {
        let reply = server.create_session(api, &tenant, &unknown).await;
        assert!(!reply.violation_pointers().is_empty());
        assert!(reply.text().contains("colour"), "{}", reply.text());
    }
    assert!(server.list_all(api, &tenant, 10).await.is_empty());
}

// ---- FunnelFox ----------------------------------------------------------------------------------

async fn funnelfox_ulid_ids_and_unix_created_at() {
    let api = ApiId::Funnelfox;
    let before = Utc::now().timestamp();
    let s = Subject::create(api, fixtures::minimal(api)).await;
    let after = Utc::now().timestamp();
    let ulid =
        s.id.strip_prefix("ses_")
            .expect("FunnelFox ids start with ses_");
    assert_eq!(ulid.len(), 26, "{}", s.id);
    assert!(
        ulid.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            && !ulid.contains(['I', 'L', 'O', 'U']),
        "{} is not Crockford base32",
        s.id
    );
    let created = s.body["created_at"]
        .as_i64()
        .expect("created_at is an integer");
    assert!(
        (before..=after).contains(&created),
        "{created} not in {before}..={after}"
    );
    assert_eq!(s.body["attributes"], json!({}));
    assert_eq!(s.body["query_params"], json!({}));
    assert_eq!(s.body["replies"], json!([]));
    assert_eq!(
        s.patch(json!({ "locale": "de" })).await["created_at"],
        created
    );
}

// ---- Alcamine -----------------------------------------------------------------------------------

async fn alcamine_cuid2_ids_and_workspace() {
    let s = Subject::create(ApiId::Alcamine, fixtures::minimal(ApiId::Alcamine)).await;
    let id = &s.id;
    assert_eq!(id.len(), 24, "{id}");
    assert!(
        id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{id} is not a cuid2"
    );
    assert_eq!(s.body["workspaceId"], s.tenant);
    for pointer in ["/agent", "/agent/version", "/conversation", "/person"] {
        assert_eq!(
            s.body.pointer(pointer).unwrap()["workspaceId"],
            s.tenant,
            "{pointer}"
        );
    }
    assert_eq!(s.body["status"], "PENDING");
    assert_timestamp(&s.body, "createdAt");
    assert_timestamp(&s.body, "updatedAt");
    for field in ["startedAt", "lastHeartbeatAt", "completedAt", "endedAt"] {
        assert!(
            s.body[field].is_null(),
            "{field} is set on a PENDING session: {}",
            s.body
        );
    }
}

async fn alcamine_lifecycle_sets_timestamps_and_never_goes_back() {
    let s = Subject::create(ApiId::Alcamine, fixtures::minimal(ApiId::Alcamine)).await;
    let running = s.patch(json!({ "status": "IN_PROGRESS" })).await;
    assert_timestamp(&running, "startedAt");
    assert_timestamp(&running, "lastHeartbeatAt");
    assert!(
        running["completedAt"].is_null() && running["endedAt"].is_null(),
        "{running}"
    );

    let done = s.patch(json!({ "status": "COMPLETED" })).await;
    assert_timestamp(&done, "completedAt");
    assert_timestamp(&done, "endedAt");
    assert_eq!(done["startedAt"], running["startedAt"]);
    assert_eq!(s.public().await, done);

    for back in ["PENDING", "IN_PROGRESS"] {
        s.refuse(json!({ "status": back }), &["/status"]).await;
    }
}

// ---- Anam ---------------------------------------------------------------------------------------

async fn anam_active_session_and_derived_length() {
    let s = Subject::create(ApiId::Anam, json!({})).await;
    assert!(is_uuid(&s.id), "{}", s.id);
    assert_eq!(s.body["organizationId"], s.tenant);
    for field in ["endTime", "sessionLengthMs", "exitStatus"] {
        assert_eq!(s.body.get(field), Some(&Value::Null), "{field}: {}", s.body);
    }
    assert_timestamp(&s.body, "startTime");

    let start: DateTime<Utc> = s.body["startTime"].as_str().unwrap().parse().unwrap();
    let iso = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    s.refuse(json!({ "exitStatus": "NORMAL_EXIT" }), &["/exitStatus"])
        .await;
    let too_early = iso(start - Duration::seconds(1));
    s.refuse(json!({ "endTime": too_early }), &["/endTime"])
        .await;

    let end = iso(start + Duration::seconds(180));
    let ended = s
        .patch(json!({ "endTime": end, "exitStatus": "NORMAL_EXIT" }))
        .await;
    assert_eq!(ended["sessionLengthMs"], 180000);
    assert_eq!(ended["exitStatus"], "NORMAL_EXIT");
    assert_eq!(s.public().await, ended);
    s.refuse(
        json!({ "endTime": null, "exitStatus": null }),
        &["/endTime"],
    )
    .await;
    s.refuse(json!({ "sessionLengthMs": 5 }), &["/sessionLengthMs"])
        .await;
}

const REDACTED: &str = "[REDACTED]";

fn persona_with_secrets() -> Value {
    json!({
        "name": "Cara",
        "secret_iv": "iv-1",
        "maxTokens": 4096,
        "llmConfig": {
            "modelName": "gpt-4o",
            "encrypted_secret": "enc-2",
            "clientSecret": "cs-3",
            "apiKey": "ak-4"
        },
        "tools": [{ "name": "crm", "token": "tok-5", "auth": { "password": "pw-6" } }]
    })
}

/// Every secret of [`persona_with_secrets`] is `[REDACTED]`, and nothing else is.
#[track_caller]
fn assert_redacted(body: &Value) {
    let config = &body["personaConfig"];
    for pointer in [
        "/secret_iv",
        "/llmConfig/encrypted_secret",
        "/llmConfig/clientSecret",
        "/llmConfig/apiKey",
        "/tools/0/token",
        "/tools/0/auth/password",
    ] {
        assert_eq!(
            config.pointer(pointer),
            Some(&json!(REDACTED)),
            "personaConfig{pointer} is not redacted: {config}"
        );
    }
    assert_eq!(config["name"], "Cara");
    assert_eq!(config["maxTokens"], 4096);
    assert_eq!(config["llmConfig"]["modelName"], "gpt-4o");
    assert_eq!(config["tools"][0]["name"], "crm");
    let text = body.to_string();
    for secret in ["iv-1", "enc-2", "cs-3", "ak-4", "tok-5", "pw-6"] {
        assert!(!text.contains(secret), "secret {secret} leaked: {text}");
    }
}

async fn anam_persona_secrets_are_redacted_everywhere_and_kept() {
    let api = ApiId::Anam;
    let s = Subject::create(api, json!({ "personaConfig": persona_with_secrets() })).await;
    let admin = s.server.admin_session(Method::GET, api, &s.id).await;
    let listed = s.server.list_all(api, &s.tenant, 10).await;
    for body in [&s.body, &admin.expect(200).json(), &listed[0]] {
        assert_redacted(body);
    }

    // Patches of other fields, and of other parts of personaConfig, keep the secrets.
    for patch in [
        json!({ "clientLabel": "relabelled" }),
        json!({ "personaConfig": { "name": "Cara", "llmConfig": { "modelName": "gpt-4o" } } }),
    ] {
        assert_redacted(&s.patch(patch).await);
        assert_redacted(&s.public().await);
    }
    let stored = s
        .server
        .storage()
        .stored_document(api, &s.id)
        .await
        .expect("the session is stored");
    assert_eq!(
        stored["personaConfig"],
        persona_with_secrets(),
        "the stored secrets were lost or changed"
    );
}

/// The admin API shows secrets redacted, so a client that reads a session and writes it back
/// (`PUT` of the GET body, or a patch that carries `[REDACTED]` over) sends the placeholder:
/// the stored secrets stay; a secret sent in clear replaces its own.
async fn anam_a_redacted_document_sent_back_keeps_its_secrets() {
    let api = ApiId::Anam;
    let s = Subject::create(api, json!({ "personaConfig": persona_with_secrets() })).await;
    let stored = || async {
        s.server
            .storage()
            .stored_document(api, &s.id)
            .await
            .expect("the session is stored")
    };
    let mut read = s
        .server
        .admin_session(Method::GET, api, &s.id)
        .await
        .expect(200)
        .json();
    assert_redacted(&read);
    read["clientLabel"] = json!("written back");
    let put = s
        .server
        .admin(
            Method::PUT,
            &format!("/admin/v1/{api}/sessions/{}", s.id),
            Some(read.clone()),
        )
        .await
        .expect(200)
        .json();
    assert_redacted(&put);
    assert_eq!(put["clientLabel"], "written back");
    assert_eq!(stored().await["personaConfig"], persona_with_secrets());

    // One secret changed in clear, the others carried over as placeholders.
    let mut config = read["personaConfig"].clone();
    config["llmConfig"]["apiKey"] = json!("ak-new");
    assert_redacted(&s.patch(json!({ "personaConfig": config })).await);
    let mut expected = persona_with_secrets();
    expected["llmConfig"]["apiKey"] = json!("ak-new");
    assert_eq!(stored().await["personaConfig"], expected);
}

/// A merge patch's `null` removes a member, and the server fills what is its own again: the
/// creation time stays what it was (it was reset to the time of the patch), for every api.
async fn a_creation_time_sent_as_null_is_kept() {
    for (api, field, long_ago) in [
        (ApiId::Anam, "createdAt", json!("2020-01-01T00:00:00.000Z")),
        (
            ApiId::Alcamine,
            "createdAt",
            json!("2020-01-01T00:00:00.000Z"),
        ),
        (
            ApiId::Opencx,
            "created_at",
            json!("2020-01-01T00:00:00.000Z"),
        ),
        (ApiId::Funnelfox, "created_at", json!(1_577_836_800)),
    ] {
        let mut doc = fixtures::minimal(api);
        doc[field] = long_ago.clone();
        let s = Subject::create(api, doc).await;
        assert_eq!(s.body[field], long_ago, "{api}: {}", s.body);
        let patched = s.patch(json!({ field: null })).await;
        assert_eq!(patched[field], long_ago, "{api}: {field} changed by a null");
        assert_eq!(s.public().await[field], long_ago, "{api}");
    }
}

/// A merge patch's `null` for a field the server fills (the id, the tenant field, a derived
/// field, OpenCX's ticket number) removes what the client sent, not the field: accepted, and the
/// field stays what the server makes it (it was a 422, "must be … (or left out)").
async fn a_null_for_a_field_the_server_owns_leaves_it_as_it_is() {
    let ended =
        json!({ "startTime": "2026-01-05T10:00:00.000Z", "endTime": "2026-01-05T10:03:00.000Z" });
    for (api, doc, fields) in [
        (
            ApiId::Anam,
            ended,
            &["id", "organizationId", "sessionLengthMs"][..],
        ),
        (
            ApiId::Salesnip,
            fixtures::minimal(ApiId::Salesnip),
            &["id", "project", "url"][..],
        ),
        (
            ApiId::Opencx,
            fixtures::minimal(ApiId::Opencx),
            &["id", "ticket_number"][..],
        ),
        (
            ApiId::Alcamine,
            fixtures::minimal(ApiId::Alcamine),
            &["id", "workspaceId"][..],
        ),
    ] {
        let s = Subject::create(api, doc).await;
        let nulls: serde_json::Map<String, Value> = fields
            .iter()
            .map(|f| ((*f).to_owned(), Value::Null))
            .collect();
        let patched = s.patch(Value::Object(nulls)).await;
        for field in fields {
            assert!(!s.body[field].is_null(), "{api}: {field} of {}", s.body);
            assert_eq!(patched[field], s.body[field], "{api}: {field}");
        }
    }
}

/// On create, as in a patch, a `null` for a field the server fills (the id, the tenant field,
/// the creation time) is "not set": the server fills it (the id and the creation time were a
/// 422).
async fn a_null_sent_on_create_for_a_field_the_server_fills_is_not_set() {
    for api in ApiId::ALL {
        let created_field = match api {
            ApiId::Opencx | ApiId::Funnelfox => Some("created_at"),
            ApiId::Alcamine | ApiId::Anam => Some("createdAt"),
            ApiId::Salesnip => None,
        };
        let mut doc = fixtures::minimal(api);
        let mut fields = vec!["id"];
        fields.extend(api.profile().tenant_field());
        fields.extend(created_field);
        for field in &fields {
            doc[*field] = Value::Null;
        }
        let s = Subject::create(api, doc).await;
        api.profile()
            .check_session_id(s.body["id"].as_str().expect("an id"))
            .unwrap();
        assert_eq!(s.body["id"], s.id.as_str(), "{api}");
        if let Some(field) = api.profile().tenant_field() {
            assert_eq!(s.body[field], s.tenant.as_str(), "{api}");
        }
        if let Some(field) = created_field {
            assert!(!s.body[field].is_null(), "{api}: {field} of {}", s.body);
        }
    }
    // So in OpenCX's contact, whose id and times the server fills when they are left out.
    let contact = json!({ "id": null, "name": "Ada", "created_at": null, "updated_at": null });
    let s = Subject::create(ApiId::Opencx, json!({ "contact": contact })).await;
    let contact = &s.body["contact"];
    assert_eq!(contact["name"], "Ada", "{contact}");
    for field in ["id", "created_at", "updated_at"] {
        assert!(contact[field].is_string(), "{field} of {contact}");
    }
}

/// A `null` for the time of the last update is "not set" where the contract has no null there
/// (Alcamine, OpenCX): the time of the patch (the field was left out of the stored session).
/// Anam's contract allows a null `updatedAt`, so there a null sent is kept, as a fixture of a
/// session never updated.
async fn an_update_time_sent_as_null_is_the_time_of_the_write() {
    let long_ago = json!("2020-01-01T00:00:00.000Z");
    for (api, field) in [
        (ApiId::Alcamine, "updatedAt"),
        (ApiId::Opencx, "updated_at"),
    ] {
        let mut doc = fixtures::minimal(api);
        doc[field] = long_ago.clone();
        let s = Subject::create(api, doc).await;
        assert_eq!(s.body[field], long_ago, "{api}");
        let patched = s.patch(json!({ field: null })).await;
        let at = patched[field]
            .as_str()
            .unwrap_or_else(|| panic!("{api}: {patched}"));
        let at: DateTime<Utc> = at.parse().unwrap();
        assert!(at > Utc::now() - Duration::minutes(5), "{api}: {at}");
        assert_eq!(s.public().await[field], patched[field], "{api}");
    }
    let s = Subject::create(ApiId::Anam, json!({ "updatedAt": null })).await;
    assert_eq!(s.body.get("updatedAt"), Some(&Value::Null), "{}", s.body);
    let patched = s.patch(json!({ "clientLabel": "x" })).await;
    assert!(patched["updatedAt"].is_string(), "{patched}");
    let patched = s.patch(json!({ "updatedAt": null })).await;
    assert_eq!(patched.get("updatedAt"), Some(&Value::Null), "{patched}");
    assert_eq!(s.public().await.get("updatedAt"), Some(&Value::Null));
}
