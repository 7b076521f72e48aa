//! OpenCX (AI customer support): uuid ids, organization tenants (not named in the document), the
//! documented defaults, `ticket_number` from a per-tenant sequence, NestJS-style error bodies.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use super::fake::Fake;
use super::{
    ApiId, ErrorReply, MAX_SEQ, Profile, PublicError, Violation, WriteCtx, canonical_uuid,
    check_uuid, created_timestamp, default, derive, iso_millis, updated_timestamp,
};

pub struct OpenCx;

fn nest_error(status: u16, message: &str, error: &str) -> ErrorReply {
    ErrorReply::new(
        status,
        json!({ "statusCode": status, "message": message, "error": error }),
    )
}

impl Profile for OpenCx {
    fn api(&self) -> ApiId {
        ApiId::Opencx
    }

    fn new_tenant_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn check_tenant_id(&self, id: &str) -> Result<(), String> {
        check_uuid(id)
    }

    fn new_session_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn check_session_id(&self, id: &str) -> Result<(), String> {
        check_uuid(id)
    }

    fn canonical_session_id<'a>(&self, id: &'a str) -> Cow<'a, str> {
        canonical_uuid(id)
    }

    fn canonical_tenant_id<'a>(&self, id: &'a str) -> Cow<'a, str> {
        canonical_uuid(id)
    }

    fn uses_sequence(&self) -> bool {
        true
    }

    fn sequence_of(&self, doc: &Value) -> Option<i64> {
        doc.get("ticket_number").and_then(Value::as_i64)
    }

    fn assign_sequence(&self, doc: &mut Value, n: i64) {
        doc["ticket_number"] = json!(n);
    }

    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        problems: &mut Vec<Violation>,
    ) {
        let now = Value::from(iso_millis(ctx.now));
        default(doc, "status", || json!("open"));
        default(doc, "ai_closure_type", || Value::Null);
        default(doc, "sentiment", || Value::Null);
        default(doc, "channel", || json!({ "type": "api" }));
        default(doc, "assist_mode", || json!(false));
        match (ctx.prev, ctx.sent("ticket_number").filter(|v| !v.is_null())) {
            (Some(prev), _) => {
                let ticket = prev.get("ticket_number").cloned().unwrap_or(Value::Null);
                derive(doc, ctx, "ticket_number", ticket, problems);
            }
            // A restored number is kept, so it must be one the sequence could have handed out.
            (None, Some(sent)) if ctx.restoring => {
                if !sent.as_i64().is_some_and(|n| (1..=MAX_SEQ).contains(&n)) {
                    problems.push(Violation::new(
                        "/ticket_number",
                        format!("a restored `ticket_number` must be a whole number from 1 to {MAX_SEQ}"),
                    ));
                }
            }
            (None, Some(_)) => problems.push(Violation::new(
                "/ticket_number",
                "`ticket_number` is assigned by the server from the tenant's sequence (leave it out)",
            )),
            // A placeholder until the document has passed every check: see `assign_sequence`.
            (None, None) => {
                doc.insert("ticket_number".into(), json!(0));
            }
        }
        if let Some(Value::Object(contact)) = doc.get_mut("contact") {
            // As at the top level: a null for what the server fills is "not set" (none of the
            // three may be null), except in a restore, which keeps what it reads.
            if !ctx.restoring {
                contact.retain(|key, value| {
                    !(value.is_null() && matches!(key.as_str(), "id" | "created_at" | "updated_at"))
                });
            }
            default(contact, "id", || json!(uuid::Uuid::new_v4().to_string()));
            default(contact, "created_at", || now.clone());
            default(contact, "updated_at", || now.clone());
        }
        created_timestamp(doc, ctx, "created_at", now.clone());
        updated_timestamp(doc, ctx, "updated_at", false, now);
    }

    fn error(&self, kind: PublicError) -> ErrorReply {
        match kind {
            PublicError::MissingCredential | PublicError::InvalidCredential => {
                nest_error(401, "Unauthorized", "Unauthorized")
            }
            PublicError::MalformedId | PublicError::NotFound => {
                nest_error(404, "Chat session not found", "Not Found")
            }
            PublicError::MethodNotAllowed => {
                nest_error(405, "Method Not Allowed", "Method Not Allowed")
            }
            PublicError::RouteNotFound => nest_error(404, "Route not found", "Not Found"),
            PublicError::Internal => {
                nest_error(500, "Internal server error", "Internal Server Error")
            }
        }
    }

    fn demo_tenant(&self) -> &'static str {
        "0b0e5c1e-6d1a-4c3e-9a57-2f0d2d6f0c11"
    }

    fn generate(&self, f: &mut Fake<'_>, tenant: &str) -> Value {
        let _ = tenant;
        let created = f.time();
        let updated = created + chrono::Duration::seconds(f.int(0, 3 * 24 * 3600));
        let status = f.pick(&["open", "open", "closed_resolved", "closed_unresolved"]);
        let closed = status != "open";
        let mut s = object! {
            "id": f.uuid(),
            "status": status,
            "ai_closure_type": if closed { Value::from(f.pick(&["assumed_resolved", "handed_off", "resolved"])) } else { Value::Null },
            "sentiment": if f.chance(0.6) { Value::from(f.pick(&["angry", "happy", "neutral"])) } else { Value::Null },
            "channel": { "type": f.pick(&["web", "email", "phone_voice", "slack", "sms", "whatsapp", "instagram", "messenger", "api", "web_voice"]) },
            "language": f.pick(&["en", "es", "fr", "de", "pt", "ja"]),
            "assignee_id": if f.chance(0.3) { Value::from(f.uuid()) } else { Value::Null },
            "custom_data": { "order_id": format!("A-{}", f.int(1000, 99999)), "items": f.int(1, 9), "vip": f.chance(0.1) },
            "assist_mode": f.chance(0.2),
            "created_at": iso_millis(created),
            "updated_at": iso_millis(updated),
        };
        if f.chance(0.7) {
            let name = f.name();
            s["contact"] = object! {
                "id": f.uuid(),
                "email": f.email(),
                "phone_number": if f.chance(0.5) { Value::from(f.phone()) } else { Value::Null },
                "name": name,
                "custom_data": if f.chance(0.5) { object! { "plan": f.pick(&["free", "pro", "enterprise"]) } } else { Value::Null },
                "created_at": iso_millis(created - chrono::Duration::days(f.int(0, 400))),
                "updated_at": iso_millis(created),
                "non_verified_name": Value::Null,
                "non_verified_email": Value::Null,
                "non_verified_custom_data": Value::Null,
            };
        }
        if f.chance(0.3) {
            s["team"] = object! { "id": f.uuid(), "name": f.pick(&["Billing", "Support", "Sales", "Returns"]), "description": "Tier 2" };
        }
        if closed && f.chance(0.4) {
            s["handoff"] = object! { "sentiment": f.pick(&["angry", "happy", "neutral"]), "summary": f.pick(&["Refund requested for a damaged item", "Customer cannot log in after a password reset", "Question about an invoice line"]) };
            s["ticketing_system"] = object! { "name": f.pick(&["zendesk", "freshdesk", "intercom", "hubspot", "salesforce"]), "external_id": f.int(10000, 999999).to_string(), "id_type": "ticket_id" };
        }
        s
    }
}
