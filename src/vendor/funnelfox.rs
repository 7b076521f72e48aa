//! FunnelFox (web funnels): `ses_` + ULID ids, `created_at` in unix seconds, `{"message"}` errors,
//! the project secret in the `Fox-Secret` header.

use serde_json::{Map, Value, json};

use super::{
    ApiId, ErrorReply, Profile, PublicError, Violation, WriteCtx, created_timestamp, default,
};

pub struct FunnelFox;

const SESSION_PREFIX: &str = "ses_";

fn check_ulid(s: &str) -> Result<(), String> {
    if s.len() == 26 && ulid::Ulid::from_string(s).is_ok() {
        Ok(())
    } else {
        Err(format!("`{s}` is not a 26-character ULID"))
    }
}

fn message(status: u16, message: &str) -> ErrorReply {
    ErrorReply::new(status, json!({ "message": message }))
}

impl Profile for FunnelFox {
    fn api(&self) -> ApiId {
        ApiId::Funnelfox
    }

    fn new_tenant_id(&self) -> String {
        ulid::Ulid::new().to_string()
    }

    fn check_tenant_id(&self, id: &str) -> Result<(), String> {
        check_ulid(id)
    }

    fn new_session_id(&self) -> String {
        format!("{SESSION_PREFIX}{}", ulid::Ulid::new())
    }

    fn check_session_id(&self, id: &str) -> Result<(), String> {
        match id.strip_prefix(SESSION_PREFIX) {
            Some(rest) => check_ulid(rest)
                .map_err(|_| format!("`{id}` must be `ses_` followed by a 26-character ULID")),
            None => Err(format!("`{id}` does not start with `{SESSION_PREFIX}`")),
        }
    }

    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        _problems: &mut Vec<Violation>,
    ) {
        created_timestamp(doc, ctx, "created_at", json!(ctx.now.timestamp()));
        default(doc, "attributes", json!({}));
        default(doc, "query_params", json!({}));
        default(doc, "replies", json!([]));
    }

    fn error(&self, kind: PublicError) -> ErrorReply {
        match kind {
            PublicError::MissingCredential => message(400, "Fox-Secret header is required"),
            PublicError::InvalidCredential => message(401, "Invalid Fox-Secret"),
            PublicError::MalformedId | PublicError::NotFound => message(404, "Session not found"),
            PublicError::MethodNotAllowed => message(405, "Method not allowed"),
            PublicError::RouteNotFound => message(404, "Not found"),
            PublicError::Internal => message(500, "Internal server error"),
        }
    }

    fn demo_tenant(&self) -> &'static str {
        "01JDEM00000000000000000000"
    }

    fn demo_sessions(&self) -> Vec<Value> {
        vec![
            json!({
                "id": "ses_01JDEMQ3K8W4Z2X9V7T5R3P1N0",
                "attributes": {
                    "city": "London", "country": "GB", "ip": "203.0.113.7", "postal_code": "EC1A",
                    "region_code": "ENG", "locale_code": "en-GB", "timezone": "Europe/London"
                },
                "funnel_id": "01JDEMF0NNE1000000000000AA",
                "origin": "https://quiz.example.com",
                "profile_id": "01JDEMPR0F11E0000000000000",
                "query": "utm_source=newsletter&utm_campaign=winter",
                "query_params": { "utm_source": "newsletter", "utm_campaign": "winter" },
                "replies": [
                    { "screen_id": "goal", "element_id": "goal-choice", "value": "lose-weight" },
                    { "screen_id": "age", "element_id": "age-input", "value": 34 }
                ],
                "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
                "experiment_id": "exp-pricing-b",
                "locale": "en"
            }),
            json!({
                "id": "ses_01JDEMQ3K8W4Z2X9V7T5R3P1N1",
                "funnel_id": "01JDEMF0NNE1000000000000AA",
                "origin": "https://quiz.example.com",
                "profile_id": "01JDEMPR0F11E0000000000001",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"
            }),
        ]
    }
}
