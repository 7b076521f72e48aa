//! FunnelFox (web funnels): `ses_` + ULID ids, `created_at` in unix seconds, `{"message"}` errors,
//! the project secret in the `Fox-Secret` header.

use serde_json::{Map, Value, json};

use super::fake::Fake;
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
        default(doc, "attributes", || json!({}));
        default(doc, "query_params", || json!({}));
        default(doc, "replies", || json!([]));
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

    fn generate(&self, f: &mut Fake<'_>, tenant: &str) -> Value {
        let _ = tenant;
        let created = f.time();
        let (city, country, region, tz, locale, postal) = f.pick(super::fake::PLACES);
        let source = f.pick(&["newsletter", "facebook", "google", "tiktok", "partner"]);
        let campaign = f.pick(&["winter", "spring-sale", "retarget", "brand"]);
        let replies: Vec<Value> = (0..f.int(0, 6))
            .map(|i| {
                let value = if f.chance(0.5) { Value::from(f.int(1, 99)) } else { Value::from(f.pick(&["yes", "no", "lose-weight", "build-muscle", "sleep-better", "beginner", "advanced"])) };
                object! { "screen_id": format!("screen-{}", i + 1), "element_id": format!("input-{}", i + 1), "value": value }
            })
            .collect();
        let mut s = object! {
            "id": format!("{SESSION_PREFIX}{}", f.ulid(created)),
            "attributes": {
                "city": city, "country": country, "ip": format!("203.0.113.{}", f.int(1, 254)),
                "postal_code": postal, "region_code": region, "locale_code": locale, "timezone": tz,
            },
            "created_at": created.timestamp(),
            "funnel_id": f.ulid(created - chrono::Duration::days(30)),
            "origin": f.pick(&["https://quiz.example.com", "https://start.example.org", "https://try.example.net"]),
            "profile_id": f.ulid(created),
            "query": format!("utm_source={source}&utm_campaign={campaign}"),
            "query_params": { "utm_source": source, "utm_campaign": campaign },
            "replies": replies,
            "user_agent": f.pick(super::fake::USER_AGENTS),
            "locale": &locale[..2],
        };
        if f.chance(0.4) {
            s["experiment_id"] = Value::from(format!(
                "exp-{}",
                f.pick(&["pricing-b", "paywall-v2", "onboarding-short"])
            ));
        }
        s
    }
}
