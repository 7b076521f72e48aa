//! Alcamine (voice AI interviews): cuid2 ids and workspaces, `workspaceId` = tenant (also inside the
//! embedded agent, conversation and person), PENDING → IN_PROGRESS → COMPLETED with the timestamps
//! each step sets, and embedded objects that must agree with the ids beside them.

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::fake::Fake;
use super::{
    ApiId, ErrorReply, Profile, PublicError, Violation, WriteCtx, check_cuid2, created_timestamp,
    default, error_message, iso_millis, lifecycle, must_be_null, parse_time, updated_timestamp,
};

pub struct Alcamine;

/// Sets `key` to `now` when it is absent or null.
fn stamp(doc: &mut Map<String, Value>, key: &str, now: &Value) {
    if doc.get(key).is_none_or(Value::is_null) {
        doc.insert(key.to_owned(), now.clone());
    }
}

/// `doc[id_key]` and `doc[object][field]` name the same thing: fill one from the other, flag a clash.
fn agree(
    doc: &mut Map<String, Value>,
    id_key: &str,
    object: &str,
    field: &[&str],
    problems: &mut Vec<Violation>,
) {
    let mut inner = doc.get(object);
    for key in field {
        inner = inner.and_then(|v| v.get(key));
    }
    match (doc.get(id_key), inner) {
        (Some(outer), Some(inner)) if outer != inner => problems.push(Violation::new(
            format!("/{object}/{}", field.join("/")),
            format!("must equal `{id_key}` ({outer})"),
        )),
        (None, Some(inner)) => {
            let inner = inner.clone();
            doc.insert(id_key.to_owned(), inner);
        }
        _ => {}
    }
}

impl Profile for Alcamine {
    fn api(&self) -> ApiId {
        ApiId::Alcamine
    }

    fn new_tenant_id(&self) -> String {
        cuid2::create_id()
    }

    fn check_tenant_id(&self, id: &str) -> Result<(), String> {
        check_cuid2(id)
    }

    fn new_session_id(&self) -> String {
        cuid2::create_id()
    }

    fn check_session_id(&self, id: &str) -> Result<(), String> {
        check_cuid2(id)
    }

    fn tenant_field(&self) -> Option<&'static str> {
        Some("workspaceId")
    }

    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        problems: &mut Vec<Violation>,
    ) {
        let now = Value::from(iso_millis(ctx.now));
        created_timestamp(doc, ctx, "createdAt", now.clone());
        updated_timestamp(doc, ctx, "updatedAt", false, now.clone());
        default(doc, "status", || json!("PENDING"));
        default(doc, "recordAudio", || json!(false));
        default(doc, "isDemo", || json!(false));
        lifecycle(
            doc,
            ctx,
            "status",
            &["PENDING", "IN_PROGRESS", "COMPLETED"],
            problems,
        );
        let status = doc
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if status == "IN_PROGRESS" || status == "COMPLETED" {
            stamp(doc, "startedAt", &now);
            stamp(doc, "lastHeartbeatAt", &now);
        }
        if status == "COMPLETED" {
            stamp(doc, "completedAt", &now);
            stamp(doc, "endedAt", &now);
        }
        if status == "PENDING" {
            for key in ["startedAt", "lastHeartbeatAt"] {
                must_be_null(doc, ctx, key, "while the session is PENDING", problems);
            }
        }
        if status != "COMPLETED" {
            for key in ["completedAt", "endedAt"] {
                must_be_null(doc, ctx, key, "until the session is COMPLETED", problems);
            }
        }

        agree(doc, "agentId", "agent", &["id"], problems);
        agree(doc, "agentVersionId", "agent", &["version", "id"], problems);
        agree(doc, "conversationId", "conversation", &["id"], problems);
        agree(doc, "personId", "person", &["id"], problems);
        agree(doc, "personId", "conversation", &["personId"], problems);
        let tenant = json!(ctx.tenant);
        for pointer in ["/agent", "/agent/version", "/conversation", "/person"] {
            if let Some(Value::Object(inner)) = doc_pointer_mut(doc, pointer) {
                match inner.get("workspaceId") {
                    None => {
                        inner.insert("workspaceId".into(), tenant.clone());
                    }
                    Some(w) if *w != tenant => problems.push(Violation::new(
                        format!("{pointer}/workspaceId"),
                        format!("must equal the session's workspace ({tenant})"),
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    fn error(&self, kind: PublicError) -> ErrorReply {
        match kind {
            PublicError::MissingCredential | PublicError::InvalidCredential => {
                error_message(401, "Unauthorized", "Missing or invalid API key")
            }
            PublicError::MalformedId | PublicError::NotFound => {
                error_message(404, "Not Found", "Session not found")
            }
            PublicError::MethodNotAllowed => error_message(
                405,
                "Method Not Allowed",
                "Only GET is supported on this route",
            ),
            PublicError::RouteNotFound => error_message(404, "Not Found", "Route not found"),
            PublicError::Internal => {
                error_message(500, "Internal Server Error", "Something went wrong")
            }
        }
    }

    fn demo_tenant(&self) -> &'static str {
        "h1demo0workspace00000000"
    }

    /// The ids a session repeats in its embedded objects follow a given one, at the top or in a
    /// given embedded object; the status follows the lifecycle's timestamps given (a start:
    /// under way, an end: completed; either given as null: not so far), and the generated
    /// timestamps follow the status.
    fn fit(&self, g: &mut Map<String, Value>, given: &Map<String, Value>) {
        // Each id: where `prepare` checks it is repeated (a given one there fixes it), then
        // where else the generator repeats it.
        const COPIES: [(&str, &[&str], &[&str]); 4] = [
            ("agentId", &["/agent/id"], &["/agent/version/agentId"]),
            (
                "agentVersionId",
                &["/agent/version/id"],
                &["/agent/publishedVersionId"],
            ),
            ("conversationId", &["/conversation/id"], &[]),
            (
                "personId",
                &["/person/id", "/conversation/personId"],
                &["/person/rootPersonId"],
            ),
        ];
        let given_at = |pointer: &str| {
            let mut parts = pointer.trim_start_matches('/').split('/');
            let first = given.get(parts.next()?)?;
            parts.try_fold(first, |v, part| v.get(part))
        };
        for (field, checked, also) in COPIES {
            let Some(id) = std::iter::once(given.get(field))
                .chain(checked.iter().map(|p| given_at(p)))
                .flatten()
                .find(|v| v.is_string())
                .cloned()
            else {
                continue;
            };
            g.insert(field.into(), id.clone());
            for pointer in checked.iter().chain(also) {
                if let Some(slot) = doc_pointer_mut(g, pointer) {
                    *slot = id.clone();
                }
            }
        }

        let set = |key: &str| given.get(key).map(|v| !v.is_null());
        let status = match given.get("status").and_then(Value::as_str) {
            Some(status) => status.to_owned(),
            None => {
                let generated = g.get("status").and_then(Value::as_str).unwrap_or("PENDING");
                let (started, ended) = (
                    set("startedAt").or(set("lastHeartbeatAt")),
                    set("completedAt").or(set("endedAt")),
                );
                match (started, ended) {
                    (_, Some(true)) => "COMPLETED",
                    (Some(false), _) => "PENDING",
                    (Some(true), Some(false)) => "IN_PROGRESS",
                    (Some(true), None) if generated == "PENDING" => "IN_PROGRESS",
                    (_, Some(false)) if generated == "COMPLETED" => "IN_PROGRESS",
                    _ => generated,
                }
                .to_owned()
            }
        };
        let created = g
            .get("createdAt")
            .and_then(parse_time)
            .unwrap_or_else(Utc::now);
        let at =
            |seconds: i64| Value::from(iso_millis(created + chrono::Duration::seconds(seconds)));
        let under_way = status != "PENDING";
        let completed = status == "COMPLETED";
        for (key, keep) in [
            ("startedAt", under_way),
            ("lastHeartbeatAt", under_way),
            ("completedAt", completed),
            ("endedAt", completed),
        ] {
            let slot = g.entry(key).or_insert(Value::Null);
            match (keep, slot.is_null()) {
                (false, _) => *slot = Value::Null,
                (true, true) => {
                    *slot = at(if completed && key != "startedAt" {
                        900
                    } else {
                        30
                    })
                }
                (true, false) => {}
            }
        }
        if !completed {
            g.remove("completedMeta");
        }
        g.insert("status".into(), status.into());
    }

    fn generate(&self, f: &mut Fake<'_>, tenant: &str) -> Value {
        let created = f.time();
        let at = |d: i64| iso_millis(created + chrono::Duration::seconds(d));
        let (agent_id, version_id, person_id, conversation_id) =
            (f.cuid2(), f.cuid2(), f.cuid2(), f.cuid2());
        let email = f.email();
        let status = f.pick(&["PENDING", "IN_PROGRESS", "COMPLETED", "COMPLETED"]);
        let llm = if f.chance(0.7) {
            object! { "provider": "OPENAI", "model": f.pick(&["GPT_4O", "GPT_4_1", "GPT_4_1_MINI"]), "temperature": f.int(0, 10) as f64 / 10.0 }
        } else {
            object! { "provider": "GEMINI", "model": "GEMINI_2_0_FLASH_001", "temperature": 0.5 }
        };
        let version = object! {
            "id": version_id.as_str(), "createdAt": at(-86400 * 7), "updatedAt": at(-86400 * 7),
            "createdBy": null, "updatedBy": null, "agentId": agent_id.as_str(), "version": f.int(1, 12),
            "workspaceId": tenant, "sourceAgentVersionId": null, "themeId": f.cuid2(),
            "incentiveType": "CASH", "incentiveAmount": f.int(1, 100) * 100, "incentiveCurrencyCode": "USD",
            "maxParticipants": f.int(10, 500),
            "length": f.pick(&["FIVE_MINUTES", "TEN_MINUTES", "FIFTEEN_MINUTES", "THIRTY_MINUTES"]),
            "languages": ["en"], "inputMode": [f.pick(&["WEB_VOICE", "PHONE", "WEB_CHAT"])],
            "knowledgeBaseId": null, "followUp": f.chance(0.5), "limitToKnowledgeBase": false,
            "timezone": f.pick(&["America/New_York", "Europe/London", "Europe/Berlin"]),
            "authentication": "NONE",
            "systemPrompt": "You are a friendly researcher. Ask open questions and follow up.",
            "agentFlowId": null,
            "config": {
                "llm": llm,
                "tts": { "provider": "ELEVENLABS", "model": "MULTILINGUAL_V2", "voiceId": f.alphanumeric(20) },
                "stt": { "provider": "DEEPGRAM", "model": "NOVA_3" },
            },
        };
        let topic = f.pick(&[
            "Churn interview",
            "Pricing research",
            "Onboarding feedback",
            "Feature discovery",
        ]);
        let agent = object! {
            "id": agent_id.as_str(), "createdAt": at(-86400 * 30), "updatedAt": at(-86400 * 7),
            "createdBy": null, "updatedBy": null, "workspaceId": tenant, "publishedVersionId": version_id.as_str(),
            "name": topic, "description": format!("{topic} with customers"),
            "slug": topic.to_lowercase().replace(' ', "-"), "status": "PUBLISHED",
            "sourceTemplateId": null, "archivedAt": null, "archivedBy": null, "completedAt": null,
            "completedBy": null, "publishedAt": at(-86400 * 7), "publishedBy": null, "version": version,
        };
        let mut s = object! {
            "id": f.cuid2(), "createdAt": at(0), "updatedAt": at(0),
            "name": format!("{topic} with {email}"),
            "type": f.pick(&["WEB_VOICE", "INBOUND_CALL"]),
            "status": status,
            "completedAt": null, "lastHeartbeatAt": null, "startedAt": null, "endedAt": null,
            "recordAudio": f.chance(0.8), "isDemo": false,
            "agentId": agent_id.as_str(), "agentVersionId": version_id.as_str(), "workspaceId": tenant,
            "personId": person_id.as_str(), "conversationId": conversation_id.as_str(),
            "agent": agent,
            "conversation": {
                "id": conversation_id.as_str(), "createdAt": at(0), "updatedAt": at(0), "workspaceId": tenant,
                "personId": person_id.as_str(), "name": format!("Conversation with {email}"), "isDemo": false,
                "lastViewedAt": null, "lastViewedBy": null, "lastSessionEndedAt": null,
                "archivedAt": null, "archivedBy": null,
            },
            "person": {
                "id": person_id.as_str(), "createdAt": at(-120), "updatedAt": at(-60), "workspaceId": tenant,
                "properties": { "plan": f.pick(&["starter", "growth", "enterprise"]) },
                "firstSeenAt": at(-120), "lastSeenAt": at(0), "identifiedAt": at(-60), "deletedAt": null,
                "email": email.as_str(), "phone": f.phone(), "rootPersonId": person_id.as_str(),
                "mergedBy": null, "mergedAt": null, "mergeMeta": {},
            },
            "ledger": null,
        };
        if status != "PENDING" {
            s["startedAt"] = Value::from(at(30));
            s["lastHeartbeatAt"] = Value::from(at(30 + f.int(10, 600)));
        }
        if status == "COMPLETED" {
            let end = at(f.int(300, 1800));
            s["completedAt"] = Value::from(end.as_str());
            s["endedAt"] = Value::from(end.as_str());
            s["lastHeartbeatAt"] = Value::from(end.as_str());
            s["updatedAt"] = Value::from(end);
            s["completedMeta"] =
                object! { "traceId": format!("trace-{}", f.alphanumeric(12).to_lowercase()) };
        }
        s
    }
}

fn doc_pointer_mut<'a>(doc: &'a mut Map<String, Value>, pointer: &str) -> Option<&'a mut Value> {
    let mut parts = pointer.trim_start_matches('/').splitn(2, '/');
    let head = parts.next()?;
    let value = doc.get_mut(head)?;
    match parts.next() {
        Some(rest) => value.pointer_mut(&format!("/{rest}")),
        None => Some(value),
    }
}
