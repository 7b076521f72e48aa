//! SaleSnip (AI price negotiation): `session_…` ids, `project_…` tenants, the hosted `url` derived
//! from the id, ACTIVE → COMPLETE, per-product quantity/recurring/trial defaults and price invariants.

use serde_json::{Map, Value, json};

use super::fake::Fake;
use super::{
    ApiId, ErrorReply, Profile, PublicError, Violation, WriteCtx, default, derive, lifecycle,
    random_alphanumeric,
};

pub struct SaleSnip;

const SESSION_PREFIX: &str = "session_";
const PROJECT_PREFIX: &str = "project_";

fn check_prefixed(s: &str, prefix: &str, len: Option<usize>) -> Result<(), String> {
    let rest = s
        .strip_prefix(prefix)
        .ok_or_else(|| format!("`{s}` does not start with `{prefix}`"))?;
    let ok_len = match len {
        Some(n) => rest.len() == n,
        None => (1..=64).contains(&rest.len()),
    };
    if ok_len && rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(match len {
            Some(n) => format!("`{s}` must be `{prefix}` followed by {n} letters or digits"),
            None => format!("`{s}` must be `{prefix}` followed by 1 to 64 letters or digits"),
        })
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

impl SaleSnip {
    fn prepare_product(product: &mut Map<String, Value>, at: &str, problems: &mut Vec<Violation>) {
        if let Some(Value::Object(price)) = product.get_mut("price")
            && !price.contains_key("current")
            && let Some(initial) = price.get("initial").cloned()
        {
            price.insert("current".into(), initial);
        }
        let quantity = product.entry("quantity").or_insert_with(|| json!({}));
        if let Value::Object(q) = quantity {
            default(q, "initial", || json!(1));
            default(q, "minimum", || json!(1));
            default(q, "maximum", || json!(100000));
            if !q.contains_key("current") {
                let initial = q["initial"].clone();
                q.insert("current".into(), initial);
            }
        }
        for period in ["recurring", "trial"] {
            if let Some(Value::Object(p)) = product.get_mut(period) {
                default(p, "count", || json!(1));
            }
        }

        // Invariants the contract cannot express.
        if let Some(Value::Object(price)) = product.get("price")
            && let (Some(min), Some(cur), Some(init)) = (
                number(price.get("minimum")),
                number(price.get("current")),
                number(price.get("initial")),
            )
            && !(min <= cur && cur <= init)
        {
            problems.push(Violation::new(
                format!("{at}/price"),
                format!(
                    "price must satisfy minimum ≤ current ≤ initial (got {min} ≤ {cur} ≤ {init})"
                ),
            ));
        }
        if let Some(Value::Object(q)) = product.get("quantity")
            && let (Some(min), Some(cur), Some(init), Some(max)) = (
                number(q.get("minimum")),
                number(q.get("current")),
                number(q.get("initial")),
                number(q.get("maximum")),
            )
        {
            if !(min <= cur && cur <= max) {
                problems.push(Violation::new(
                    format!("{at}/quantity/current"),
                    format!("quantity must satisfy minimum ≤ current ≤ maximum (got {min} ≤ {cur} ≤ {max})"),
                ));
            }
            if !(min <= init && init <= max) {
                problems.push(Violation::new(
                    format!("{at}/quantity/initial"),
                    format!("quantity must satisfy minimum ≤ initial ≤ maximum (got {min} ≤ {init} ≤ {max})"),
                ));
            }
        }
    }
}

impl Profile for SaleSnip {
    fn api(&self) -> ApiId {
        ApiId::Salesnip
    }

    fn new_tenant_id(&self) -> String {
        format!("{PROJECT_PREFIX}{}", random_alphanumeric(21))
    }

    fn check_tenant_id(&self, id: &str) -> Result<(), String> {
        check_prefixed(id, PROJECT_PREFIX, Some(21))
    }

    fn new_session_id(&self) -> String {
        format!("{SESSION_PREFIX}{}", random_alphanumeric(17))
    }

    fn check_session_id(&self, id: &str) -> Result<(), String> {
        check_prefixed(id, SESSION_PREFIX, None)
    }

    fn tenant_field(&self) -> Option<&'static str> {
        Some("project")
    }

    fn prepare(
        &self,
        doc: &mut Map<String, Value>,
        ctx: &WriteCtx<'_>,
        problems: &mut Vec<Violation>,
    ) {
        let short = ctx.id.strip_prefix(SESSION_PREFIX).unwrap_or(ctx.id);
        // The url is derived once, when the session is created, by the server that created it,
        // whose `--salesnip-url-base` may not be this one's (an import, a changed setting): a
        // url that ends with the session's own id is kept, as restored and on every update.
        let own = |url: &Value| {
            url.as_str()
                .is_some_and(|url| url.ends_with(short) && url.len() > short.len())
        };
        let restored = ctx.restoring && ctx.sent("url").is_some_and(own);
        if !restored {
            let url = match ctx.prev.and_then(|p| p.get("url")) {
                Some(kept) if own(kept) => kept.clone(),
                _ => Value::String(format!("{}{short}", ctx.salesnip_url_base)),
            };
            derive(doc, ctx, "url", url, problems);
        }
        default(doc, "status", || json!("ACTIVE"));
        lifecycle(doc, ctx, "status", &["ACTIVE", "COMPLETE"], problems);
        if let Some(Value::Array(products)) = doc.get_mut("products") {
            for (i, product) in products.iter_mut().enumerate() {
                if let Value::Object(product) = product {
                    SaleSnip::prepare_product(product, &format!("/products/{i}"), problems);
                }
            }
        }
    }

    fn error(&self, kind: PublicError) -> ErrorReply {
        let (status, error) = match kind {
            PublicError::MissingCredential => (401, "X-Api-Key header not specified"),
            PublicError::InvalidCredential => (401, "Invalid Api-Key"),
            PublicError::MalformedId | PublicError::NotFound => (404, "Session not found"),
            PublicError::MethodNotAllowed => (405, "Method Not Allowed"),
            PublicError::RouteNotFound => (404, "Not Found"),
            PublicError::Internal => (500, "INTERNAL_SERVER_ERROR"),
        };
        ErrorReply::new(status, json!({ "error": error }))
    }

    fn demo_tenant(&self) -> &'static str {
        "project_demo00000000000000000"
    }

    fn generate(&self, f: &mut Fake<'_>, tenant: &str) -> Value {
        const CATALOG: &[(&str, &str, &str, i64)] = &[
            (
                "pro-annual",
                "Pro plan (annual)",
                "Unlimited negotiations and priority support",
                1200,
            ),
            (
                "team-seat",
                "Team seat",
                "One additional seat for a team member",
                30,
            ),
            (
                "onboarding",
                "Onboarding workshop",
                "Two-hour live onboarding with a specialist",
                500,
            ),
            (
                "api-credits",
                "API credits (10k)",
                "Ten thousand API calls, valid for a year",
                90,
            ),
            (
                "sofa-3",
                "Three-seat sofa",
                "Linen, oak legs, 210 cm wide",
                1490,
            ),
            (
                "espresso",
                "Espresso machine",
                "Dual boiler, PID temperature control",
                899,
            ),
            (
                "yoga-pass",
                "Studio pass",
                "Unlimited classes at any studio",
                120,
            ),
            (
                "insurance",
                "Travel insurance",
                "Worldwide cover including winter sports",
                240,
            ),
        ];
        const UNITS: &[&str] = &["DAY", "WEEK", "MONTH", "YEAR"];
        let id = format!("{SESSION_PREFIX}{}", f.alphanumeric(17));
        let count = f.int(1, 3) as usize;
        let products: Vec<Value> = (0..count)
            .map(|_| {
                let (pid, name, description, base) = f.pick(CATALOG);
                let initial = base * f.int(80, 120) / 100;
                let minimum = initial * f.int(60, 90) / 100;
                let current = f.int(minimum, initial);
                let mut p = object! {
                    "id": pid, "name": name, "description": description,
                    "image": format!("https://cdn.example.com/products/{pid}.png"),
                    "price": { "current": current, "initial": initial, "minimum": minimum },
                };
                if f.chance(0.4) {
                    let max = f.int(5, 500);
                    let init = f.int(1, max.min(10));
                    p["quantity"] = object! { "current": f.int(init, max), "initial": init, "minimum": 1, "maximum": max };
                }
                if f.chance(0.5) {
                    p["recurring"] = object! { "unit": f.pick(&["MONTH", "YEAR"]), "count": f.int(1, 3) };
                    if f.chance(0.4) {
                        p["trial"] = object! { "unit": f.pick(UNITS), "count": f.int(1, 14) };
                    }
                }
                if f.chance(0.3) {
                    p["metadata"] = object! { "sku": f.alphanumeric(8).to_uppercase() };
                }
                p
            })
            .collect();
        object! {
            "id": id,
            "project": tenant,
            "status": if f.chance(0.7) { "ACTIVE" } else { "COMPLETE" },
            "currency": f.pick(&["USD", "EUR", "GBP", "CAD", "AUD", "CHF", "SEK", "JPY"]),
            "products": products,
            "metadata": { "customer_id": format!("cus_{}", f.alphanumeric(14)), "source": f.pick(&["pricing-page", "checkout", "email", "chat"]) },
        }
    }
}
