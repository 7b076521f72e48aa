//! Alcamine (voice AI interviews): cuid2 ids and workspaces, `workspaceId` = tenant (also inside the
//! embedded agent, conversation and person), PENDING → IN_PROGRESS → COMPLETED with the timestamps
//! each step sets, and embedded objects that must agree with the ids beside them.

use serde_json::{Map, Value, json};

use super::{
    ApiId, ErrorReply, Profile, PublicError, Violation, WriteCtx, check_cuid2, created_timestamp,
    default, error_message, iso_millis, lifecycle, updated_timestamp,
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
    let pointer = format!("/{object}/{}", field.join("/"));
    let inner = doc
        .get(object)
        .and_then(|o| o.pointer(&format!("/{}", field.join("/"))))
        .cloned();
    match (doc.get(id_key).cloned(), inner) {
        (Some(outer), Some(inner)) if outer != inner => problems.push(Violation::new(
            pointer,
            format!("must equal `{id_key}` ({outer})"),
        )),
        (None, Some(inner)) => {
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
        let now = json!(iso_millis(ctx.now));
        created_timestamp(doc, ctx, "createdAt", now.clone());
        updated_timestamp(doc, ctx, "updatedAt", now.clone());
        default(doc, "status", json!("PENDING"));
        default(doc, "recordAudio", json!(false));
        default(doc, "isDemo", json!(false));
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

    fn demo_sessions(&self) -> Vec<Value> {
        let ws = self.demo_tenant();
        let version = json!({
            "id": "h1demo0version0000000000",
            "createdAt": "2026-01-03T09:00:00.000Z",
            "updatedAt": "2026-01-03T09:00:00.000Z",
            "createdBy": null,
            "updatedBy": null,
            "agentId": "h1demo0agent000000000000",
            "version": 3,
            "workspaceId": ws,
            "sourceAgentVersionId": null,
            "themeId": "h1demo0theme000000000000",
            "incentiveType": "CASH",
            "incentiveAmount": 2500,
            "incentiveCurrencyCode": "USD",
            "maxParticipants": 200,
            "length": "FIFTEEN_MINUTES",
            "languages": ["en", "es"],
            "inputMode": ["WEB_VOICE", "PHONE"],
            "knowledgeBaseId": null,
            "followUp": true,
            "limitToKnowledgeBase": false,
            "timezone": "America/New_York",
            "authentication": "NONE",
            "systemPrompt": "You are a friendly researcher. Ask open questions.",
            "agentFlowId": null,
            "config": {
                "llm": { "provider": "OPENAI", "model": "GPT_4_1", "temperature": 0.4 },
                "tts": { "provider": "ELEVENLABS", "model": "MULTILINGUAL_V2", "voiceId": "21m00Tcm4TlvDq8ikWAM" },
                "stt": { "provider": "DEEPGRAM", "model": "NOVA_3" }
            }
        });
        let agent = json!({
            "id": "h1demo0agent000000000000",
            "createdAt": "2026-01-02T09:00:00.000Z",
            "updatedAt": "2026-01-03T09:00:00.000Z",
            "createdBy": null,
            "updatedBy": null,
            "workspaceId": ws,
            "publishedVersionId": "h1demo0version0000000000",
            "name": "Customer discovery interviewer",
            "description": "Asks churned customers why they left",
            "slug": "customer-discovery",
            "status": "PUBLISHED",
            "sourceTemplateId": null,
            "archivedAt": null,
            "archivedBy": null,
            "completedAt": null,
            "completedBy": null,
            "publishedAt": "2026-01-03T09:00:00.000Z",
            "publishedBy": null,
            "version": version,
        });
        let session = |id: &str, person: &str, conversation: &str, status: &str, email: &str| {
            let mut s = json!({
                "id": id,
                "name": format!("Interview with {email}"),
                "type": "WEB_VOICE",
                "status": status,
                "recordAudio": true,
                "agent": agent.clone(),
                "conversation": {
                    "id": conversation,
                    "createdAt": "2026-01-05T10:00:00.000Z",
                    "updatedAt": "2026-01-05T10:00:00.000Z",
                    "personId": person,
                    "name": format!("Conversation with {email}"),
                    "isDemo": false,
                    "lastViewedAt": null,
                    "lastViewedBy": null,
                    "lastSessionEndedAt": null,
                    "archivedAt": null,
                    "archivedBy": null
                },
                "person": {
                    "id": person,
                    "createdAt": "2026-01-05T09:58:00.000Z",
                    "updatedAt": "2026-01-05T09:58:00.000Z",
                    "properties": { "plan": "starter", "churnedAt": "2025-12-20" },
                    "firstSeenAt": "2026-01-05T09:58:00.000Z",
                    "lastSeenAt": "2026-01-05T10:00:00.000Z",
                    "identifiedAt": "2026-01-05T09:59:00.000Z",
                    "deletedAt": null,
                    "email": email,
                    "phone": "+14155550123",
                    "rootPersonId": person,
                    "mergedBy": null,
                    "mergedAt": null,
                    "mergeMeta": {}
                },
                "ledger": null
            });
            if status == "COMPLETED" {
                s["completedMeta"] = json!({ "traceId": "trace-7f3a9c" });
            }
            s
        };
        vec![
            session(
                "h1demo0session0000000001",
                "h1demo0person00000000001",
                "h1demo0convo000000000001",
                "COMPLETED",
                "sam@example.com",
            ),
            session(
                "h1demo0session0000000002",
                "h1demo0person00000000002",
                "h1demo0convo000000000002",
                "PENDING",
                "alex@example.com",
            ),
        ]
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
