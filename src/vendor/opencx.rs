//! OpenCX (AI customer support): uuid ids, organization tenants (not named in the document), the
//! documented defaults, `ticket_number` from a per-tenant sequence, NestJS-style error bodies.

use serde_json::{Map, Value, json};

use super::{
    ApiId, ErrorReply, Profile, PublicError, Violation, WriteCtx, check_uuid, created_timestamp,
    default, derive, iso_millis, updated_timestamp,
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

    fn uses_sequence(&self) -> bool {
        true
    }

    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        problems: &mut Vec<Violation>,
    ) {
        let now = json!(iso_millis(ctx.now));
        default(doc, "status", json!("open"));
        default(doc, "ai_closure_type", Value::Null);
        default(doc, "sentiment", Value::Null);
        default(doc, "channel", json!({ "type": "api" }));
        default(doc, "assist_mode", json!(false));
        let ticket = match ctx.prev {
            Some(prev) => prev.get("ticket_number").cloned().unwrap_or(Value::Null),
            None => ctx.seq.map_or(Value::Null, Value::from),
        };
        derive(doc, ctx, "ticket_number", ticket, problems);
        if let Some(Value::Object(contact)) = doc.get_mut("contact") {
            default(contact, "id", json!(uuid::Uuid::new_v4().to_string()));
            default(contact, "created_at", now.clone());
            default(contact, "updated_at", now.clone());
        }
        created_timestamp(doc, ctx, "created_at", now.clone());
        updated_timestamp(doc, ctx, "updated_at", now);
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

    fn demo_sessions(&self) -> Vec<Value> {
        vec![
            json!({
                "id": "5d3c2a10-8f4e-4b6a-9c1d-0e2f3a4b5c61",
                "channel": { "type": "web" },
                "language": "en",
                "contact": {
                    "id": "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
                    "email": "jane.doe@example.com",
                    "phone_number": null,
                    "name": "Jane Doe",
                    "custom_data": { "plan": "pro" },
                    "non_verified_name": null,
                    "non_verified_email": null,
                    "non_verified_custom_data": null
                },
                "custom_data": { "order_id": "A-1042", "priority": 2, "vip": true }
            }),
            json!({
                "id": "9e8d7c6b-5a49-4837-a625-140f3e2d1c0b",
                "status": "closed_resolved",
                "ai_closure_type": "resolved",
                "sentiment": "happy",
                "channel": { "type": "whatsapp" },
                "language": "es",
                "assignee_id": null,
                "handoff": { "sentiment": "neutral", "summary": "Customer asked for a refund of order A-1042" },
                "ticketing_system": { "name": "zendesk", "external_id": "88213", "id_type": "ticket_id" }
            }),
        ]
    }
}
