//! Anam AI (real-time avatars): uuid ids, `organizationId` = tenant, `sessionLengthMs` derived from
//! start and end, the active/ended rules, and secrets inside `personaConfig` returned as `[REDACTED]`.

use std::borrow::Cow;

use chrono::Utc;
use serde_json::{Map, Value, json};

use super::fake::Fake;
use super::{
    ApiId, ErrorReply, Profile, PublicError, Violation, WriteCtx, canonical_uuid, check_uuid,
    created_timestamp, default, derive, error_message, iso_millis, must_be_null, parse_time,
    updated_timestamp,
};

pub struct Anam;

/// What the public GET shows instead of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Whether a `personaConfig` key holds a secret.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "secret_iv"
        || k.ends_with("secret")
        || k.ends_with("apikey")
        || k.ends_with("api_key")
        || k.ends_with("token")
        || k.ends_with("password")
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_null() {
                    *v = json!(REDACTED);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Puts back the stored secret wherever an update sends `[REDACTED]` in its place: a document
/// read from the admin API (which shows secrets redacted, like the public GET) and sent back
/// with `PUT`, or a patch that carries such a value over, keeps its secrets instead of storing
/// the placeholder. Where nothing was stored, the text stays as sent.
fn restore_redacted(value: &mut Value, prev: &Value) {
    match (value, prev) {
        (Value::Object(map), Value::Object(prev)) => {
            for (k, v) in map.iter_mut() {
                let Some(was) = prev.get(k) else { continue };
                if is_secret_key(k) && v.as_str() == Some(REDACTED) && !was.is_null() {
                    *v = was.clone();
                } else {
                    restore_redacted(v, was);
                }
            }
        }
        (Value::Array(items), Value::Array(prev)) => {
            for (v, was) in items.iter_mut().zip(prev) {
                restore_redacted(v, was);
            }
        }
        _ => {}
    }
}

impl Profile for Anam {
    fn api(&self) -> ApiId {
        ApiId::Anam
    }

    fn new_tenant_id(&self) -> String {
        uuid::Uuid::new_v4().to_string()
    }

    fn check_tenant_id(&self, id: &str) -> Result<(), String> {
        // Anam says organization ids may be UUIDs or nanoid-style strings.
        if check_uuid(id).is_ok()
            || ((8..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            Ok(())
        } else {
            Err(format!("`{id}` is neither a UUID nor a nanoid-style id"))
        }
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

    fn malformed_id_is_bad_request(&self) -> bool {
        true
    }

    fn tenant_field(&self) -> Option<&'static str> {
        Some("organizationId")
    }

    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        problems: &mut Vec<Violation>,
    ) {
        if let (Some(config), Some(was)) = (
            doc.get_mut("personaConfig"),
            ctx.prev.and_then(|p| p.get("personaConfig")),
        ) {
            restore_redacted(config, was);
        }
        let now = Value::from(iso_millis(ctx.now));
        for key in [
            "personaId",
            "clientLabel",
            "endTime",
            "exitStatus",
            "engineHost",
            "engineProtocol",
            "engineVersion",
            "apiKeyId",
        ] {
            default(doc, key, || Value::Null);
        }
        default(doc, "startTime", || now.clone());
        default(doc, "clientMetadata", || json!({}));
        default(doc, "personaConfig", || json!({}));

        let ended_before = ctx
            .prev
            .is_some_and(|p| p.get("endTime").is_some_and(|v| !v.is_null()));
        let end = doc.get("endTime").cloned().unwrap_or(Value::Null);
        let length = if end.is_null() {
            if ended_before {
                problems.push(Violation::new(
                    "/endTime",
                    "an ended session cannot become active again",
                ));
            }
            must_be_null(
                doc,
                ctx,
                "exitStatus",
                "while the session is active (endTime is null)",
                problems,
            );
            Value::Null
        } else {
            match (doc.get("startTime").and_then(parse_time), parse_time(&end)) {
                (Some(start), Some(end)) if end >= start => json!((end - start).num_milliseconds()),
                (Some(_), Some(_)) => {
                    problems.push(Violation::new("/endTime", "endTime is before startTime"));
                    Value::Null
                }
                // A malformed time is reported by the contract validation.
                _ => Value::Null,
            }
        };
        derive(doc, ctx, "sessionLengthMs", length, problems);
        created_timestamp(doc, ctx, "createdAt", now.clone());
        updated_timestamp(doc, ctx, "updatedAt", true, now);
    }

    fn public_view(&self, doc: &Value) -> Option<Value> {
        let mut view = doc.clone();
        redact(view.get_mut("personaConfig")?);
        Some(view)
    }

    fn error(&self, kind: PublicError) -> ErrorReply {
        match kind {
            PublicError::MissingCredential | PublicError::InvalidCredential => {
                error_message(401, "Unauthorized", "Invalid or missing API key")
            }
            PublicError::MalformedId => error_message(400, "Bad Request", "Invalid session ID"),
            PublicError::NotFound => error_message(404, "Not Found", "Session not found"),
            PublicError::MethodNotAllowed => error_message(
                405,
                "Method Not Allowed",
                "Only GET is supported on this route",
            ),
            PublicError::RouteNotFound => error_message(404, "Not Found", "Route not found"),
            PublicError::Internal => error_message(500, "Internal Server Error", "Server error"),
        }
    }

    fn demo_tenant(&self) -> &'static str {
        "3f1c9b1e-2a7d-4c55-8e0f-6b4d2c1a9e00"
    }

    /// An end where an end time, an exit status or a length is given (none where the first of
    /// them given is null); the start and the end a given one fixes, the length kept.
    fn fit(&self, g: &mut Map<String, Value>, given: &Map<String, Value>) {
        let given_length = given.get("sessionLengthMs");
        let length = chrono::Duration::milliseconds(
            given_length
                .and_then(Value::as_i64)
                .or(g.get("sessionLengthMs").and_then(Value::as_i64))
                .unwrap_or(600_000),
        );
        // Ended, or not, by the first of these the client gave.
        let ended = [given.get("endTime"), given.get("exitStatus"), given_length]
            .into_iter()
            .flatten()
            .next()
            .map_or_else(
                || g.get("endTime").is_some_and(|v| !v.is_null()),
                |v| !v.is_null(),
            );
        let given_end = given.get("endTime").and_then(parse_time);
        let start = match (given.get("startTime").and_then(parse_time), given_end) {
            (Some(start), _) => start,
            (None, Some(end)) => end - length,
            (None, None) => g
                .get("startTime")
                .and_then(parse_time)
                .unwrap_or_else(Utc::now),
        };
        let end = ended.then(|| given_end.unwrap_or(start + length));
        g.insert("startTime".into(), iso_millis(start).into());
        g.insert("endTime".into(), end.map(iso_millis).into());
        g.insert(
            "sessionLengthMs".into(),
            end.map(|e| (e - start).num_milliseconds()).into(),
        );
        let exit = g.get("exitStatus").filter(|v| !v.is_null()).cloned();
        g.insert(
            "exitStatus".into(),
            match (ended, exit) {
                (false, _) => Value::Null,
                (true, Some(exit)) => exit,
                (true, None) => json!("NORMAL_EXIT"),
            },
        );
        g.insert("createdAt".into(), iso_millis(start).into());
        g.insert("updatedAt".into(), iso_millis(end.unwrap_or(start)).into());
    }

    fn generate(&self, f: &mut Fake<'_>, tenant: &str) -> Value {
        let start = f.time();
        let ended = f.chance(0.7);
        let length_ms = f.int(15_000, 1_800_000);
        let name = f.pick(&["Cara", "Leo", "Mia", "Astrid", "Kenji"]);
        let end = ended.then(|| start + chrono::Duration::milliseconds(length_ms));
        object! {
            "id": f.uuid(),
            "personaId": if f.chance(0.5) { Value::from(f.uuid()) } else { Value::Null },
            "clientLabel": f.pick(&["checkout-bot", "support-avatar", "anam-lab-chat", "onboarding-guide"]),
            "startTime": iso_millis(start),
            "endTime": end.map(iso_millis),
            "sessionLengthMs": end.map(|_| length_ms),
            "exitStatus": if ended { Value::from(f.pick(&["NORMAL_EXIT", "CLOSED_BY_ENGINE", "ERROR"])) } else { Value::Null },
            "engineHost": format!("connect-{}.anam.ai/v1/webrtc/engines/anam-engine-{}", f.pick(&["eu", "us"]), f.alphanumeric(10).to_lowercase()),
            "engineProtocol": "https",
            "engineVersion": format!("v5.{}.{}", f.int(0, 4), f.int(0, 9)),
            "clientMetadata": { "userAgent": f.pick(super::fake::USER_AGENTS) },
            "personaConfig": {
                "type": "ephemeral",
                "name": name,
                "metadata": { "client": "js-sdk" },
                "llmConfig": {
                    "id": f.uuid(), "modelName": f.pick(&["gpt-4o", "gpt-4.1-mini", "claude-sonnet"]), "format": "openai",
                    "maxTokens": 4096, "temperature": 0.7,
                    "secret_iv": f.alphanumeric(16), "encrypted_secret": f.alphanumeric(32),
                },
                "systemPrompt": "You are a helpful assistant.",
                "languageCode": f.pick(&["en", "de", "fr", "es"]),
                "avatarEngineKey": format!("{}_home", name.to_lowercase()),
                "fps": 25,
            },
            "apiKeyId": f.uuid(),
            "organizationId": tenant,
            "createdAt": iso_millis(start),
            "updatedAt": iso_millis(end.unwrap_or(start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for k in [
            "secret_iv",
            "encrypted_secret",
            "clientSecret",
            "apiKey",
            "openai_api_key",
            "token",
            "accessToken",
            "password",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["maxTokens", "name", "secretary", "tokenizer"] {
            assert!(!is_secret_key(k), "{k}");
        }
    }
}
