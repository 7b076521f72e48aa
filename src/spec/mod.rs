//! The vendor contracts: loads each OpenAPI document (3.0 or 3.1, YAML) into a thin model of our own
//! (route, id parameter, credential rule) and compiles its response schemas with `jsonschema`.
//! Everything the public routes do is derived from here, not from hand-written structs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use jsonschema::{Draft, Validator};
use serde_json::{Map, Value, json};

use crate::vendor::{ApiId, Violation};

/// The contracts as shipped in the binary (copies of `specs/*.yaml`).
fn embedded(api: ApiId) -> &'static str {
    match api {
        ApiId::Salesnip => include_str!("../../specs/salesnip.yaml"),
        ApiId::Opencx => include_str!("../../specs/opencx.yaml"),
        ApiId::Funnelfox => include_str!("../../specs/funnelfox.yaml"),
        ApiId::Alcamine => include_str!("../../specs/alcamine.yaml"),
        ApiId::Anam => include_str!("../../specs/anam.yaml"),
    }
}

/// How a vendor's route expects its credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A header holding the key itself (`X-Api-Key`, `Fox-Secret`).
    Header(String),
    /// `Authorization: Bearer <key>`.
    Bearer,
}

/// One operation found in a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: String,
    /// Path template as written in the contract, without the server base path.
    pub path: String,
}

/// One vendor's compiled contract.
pub struct Contract {
    pub api: ApiId,
    /// `openapi` version string of the document.
    pub openapi: String,
    /// Every operation the document declares.
    pub operations: Vec<Operation>,
    /// `servers[0].url`: where the vendor serves it (empty if the document names no server).
    pub server_url: String,
    /// Path component of `servers[0].url` (`/public/v1` for FunnelFox, else empty).
    pub base_path: String,
    /// The get-session path template, e.g. `/v1/sessions/{id}`.
    pub session_path: String,
    /// Name of its path parameter.
    pub id_param: String,
    pub credential: Credential,
    /// The 200 schema, `$ref`s still in place, for walking; resolve with [`Contract::resolve`].
    session_schema: Value,
    document: Value,
    validator: Validator,
    /// Validators of the declared error bodies, by status code.
    error_validators: BTreeMap<u16, Validator>,
    /// Every status code the get-session operation declares.
    pub declared_statuses: Vec<u16>,
    null_plan: NullPlan,
    /// Looked up for every top-level field of every document written: foldhash, not SipHash
    /// (that was 1.3 % of an import's instructions).
    property_ranks: std::collections::HashMap<String, usize, foldhash::fast::RandomState>,
}

/// Where required properties that admit `null` live in a document, precomputed from a schema.
#[derive(Debug, Default)]
struct NullPlan {
    /// Required properties (of the object here) whose schema admits null.
    nulls: Vec<String>,
    /// Plans for properties holding objects or arrays.
    props: Vec<(String, NullPlan)>,
    /// Plan for the items of an array here.
    items: Option<Box<NullPlan>>,
}

impl NullPlan {
    fn is_empty(&self) -> bool {
        self.nulls.is_empty() && self.props.is_empty() && self.items.is_none()
    }

    fn apply(&self, doc: &mut Value) {
        match doc {
            Value::Object(map) => {
                for name in &self.nulls {
                    if !map.contains_key(name) {
                        map.insert(name.clone(), Value::Null);
                    }
                }
                for (name, plan) in &self.props {
                    if let Some(child) = map.get_mut(name) {
                        plan.apply(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(plan) = &self.items {
                    items.iter_mut().for_each(|item| plan.apply(item));
                }
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("api", &self.api)
            .field("route", &self.route())
            .finish_non_exhaustive()
    }
}

/// All five contracts.
#[derive(Debug)]
pub struct Contracts {
    by_api: Vec<Contract>,
}

impl Contracts {
    /// Loads the contracts from `dir` (files `{api}.yaml`), or the embedded copies.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Contracts> {
        let by_api = ApiId::ALL
            .into_iter()
            .map(|api| {
                let text = match dir {
                    Some(dir) => {
                        let path = dir.join(format!("{api}.yaml"));
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?
                    }
                    None => embedded(api).to_owned(),
                };
                Contract::parse(api, &text).with_context(|| format!("contract of {api}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Contracts { by_api })
    }

    pub fn get(&self, api: ApiId) -> &Contract {
        self.by_api
            .iter()
            .find(|c| c.api == api)
            .expect("every api has a contract")
    }

    pub fn iter(&self) -> impl Iterator<Item = &Contract> {
        self.by_api.iter()
    }
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Contract {
    /// Parses and compiles one contract.
    pub fn parse(api: ApiId, yaml: &str) -> anyhow::Result<Contract> {
        let document: Value = serde_yaml::from_str(yaml).context("parsing YAML")?;
        let openapi = document["openapi"]
            .as_str()
            .context("no `openapi` version")?
            .to_owned();
        let v30 = openapi.starts_with("3.0");
        if !(v30 || openapi.starts_with("3.1")) {
            bail!("unsupported OpenAPI version {openapi}");
        }
        let server_url = document
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let base_path = url_path(&server_url);

        let paths = document["paths"].as_object().context("no `paths`")?;
        let mut operations = Vec::new();
        for (path, item) in paths {
            for method in METHODS {
                if item.get(method).is_some() {
                    operations.push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                    });
                }
            }
        }
        // The get-session operation: a GET on a path ending in one path parameter.
        let (session_path, op) = paths
            .iter()
            .find_map(|(path, item)| {
                let op = item.get("get")?;
                (path.ends_with('}') && path.matches('{').count() == 1).then_some((path, op))
            })
            .context("no get-session operation (GET on a path ending in `{param}`)")?;
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(
                paths[session_path]["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten(),
            )
            .collect();
        let id_param = params
            .iter()
            .find(|p| p["in"] == "path")
            .and_then(|p| p["name"].as_str())
            .context("no path parameter")?
            .to_owned();
        let credential = credential(&document, op, &params)?;

        let responses = op["responses"].as_object().context("no responses")?;
        let declared_statuses = responses
            .keys()
            .filter_map(|k| k.parse::<u16>().ok())
            .collect();
        let schema_of = |status: &str| {
            responses
                .get(status)?
                .pointer("/content/application~1json/schema")
                .cloned()
        };
        let session_schema = schema_of("200").context("no application/json schema for 200")?;
        let validator = compile(&document, &session_schema, v30).context("compiling 200 schema")?;
        let mut error_validators = BTreeMap::new();
        for status in responses.keys().filter(|s| *s != "200") {
            if let (Some(schema), Ok(code)) = (schema_of(status), status.parse::<u16>()) {
                let v = compile(&document, &schema, v30)
                    .with_context(|| format!("compiling {status} schema"))?;
                error_validators.insert(code, v);
            }
        }

        let mut contract = Contract {
            api,
            openapi,
            operations,
            server_url,
            base_path,
            session_path: session_path.clone(),
            id_param,
            credential,
            session_schema,
            document,
            validator,
            error_validators,
            declared_statuses,
            null_plan: NullPlan::default(),
            property_ranks: Default::default(),
        };
        contract.property_ranks = contract
            .resolve(&contract.session_schema)
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().enumerate().map(|(i, k)| (k.clone(), i)).collect())
            .unwrap_or_default();
        contract.null_plan = contract.plan_nulls(&contract.session_schema, 0);
        Ok(contract)
    }

    /// The full vendor path template, e.g. `/public/v1/sessions/{session_id}`.
    pub fn route(&self) -> String {
        format!("{}{}", self.base_path, self.session_path)
    }

    /// Every violation of the 200 schema, by JSON pointer.
    pub fn violations(&self, doc: &Value) -> Vec<Violation> {
        // `is_valid` short-circuits and is several times faster than collecting errors.
        if self.validator.is_valid(doc) {
            return Vec::new();
        }
        self.validator
            .iter_errors(doc)
            .map(|e| Violation::new(e.instance_path().as_str(), e.to_string()))
            .collect()
    }

    /// Whether `doc` is a valid 200 body.
    pub fn is_valid(&self, doc: &Value) -> bool {
        self.validator.is_valid(doc)
    }

    /// Checks an error body against the schema the contract declares for `status`, if any.
    /// `None`: the contract declares no body schema for that status.
    pub fn check_error_body(&self, status: u16, body: &Value) -> Option<Result<(), String>> {
        let v = self.error_validators.get(&status)?;
        Some(v.validate(body).map_err(|e| e.to_string()))
    }

    /// Whether the contract declares a JSON body schema for this (error) status.
    pub fn declares_error_schema(&self, status: u16) -> bool {
        self.error_validators.contains_key(&status)
    }

    /// Position of a top-level property in the 200 schema (`usize::MAX` for one it does not name):
    /// bodies list their fields in this order, as the vendor's serializer would.
    pub fn property_rank(&self, name: &str) -> usize {
        self.property_ranks.get(name).copied().unwrap_or(usize::MAX)
    }

    /// Follows `$ref`s (local ones only, as in the vendors' documents).
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        for _ in 0..16 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) => match r.strip_prefix('#').and_then(|p| self.document.pointer(p)) {
                    Some(target) => s = target,
                    None => return s,
                },
                None => return s,
            }
        }
        s
    }

    /// Inserts `null` for every absent required property whose schema admits null, in the document
    /// and in every object inside it the schema describes.
    pub fn fill_required_nulls(&self, doc: &mut Value) {
        self.null_plan.apply(doc);
    }

    /// Walks the 200 schema once (at load) to find where required-but-nullable fields are.
    fn plan_nulls(&self, schema: &Value, depth: usize) -> NullPlan {
        let mut plan = NullPlan::default();
        if depth > 32 {
            return plan;
        }
        let schema = self.resolve(schema);
        for branch in schema_branches(schema) {
            let branch = self.resolve(branch);
            if let Some(items) = branch.get("items") {
                let p = self.plan_nulls(items, depth + 1);
                if !p.is_empty() {
                    plan.items = Some(Box::new(p));
                }
            }
            let Some(props) = branch.get("properties").and_then(Value::as_object) else {
                continue;
            };
            for req in branch["required"].as_array().into_iter().flatten() {
                if let Some(name) = req.as_str()
                    && props.get(name).is_some_and(|p| self.admits_null(p))
                    && !plan.nulls.iter().any(|n| n == name)
                {
                    plan.nulls.push(name.to_owned());
                }
            }
            for (name, prop) in props {
                let p = self.plan_nulls(prop, depth + 1);
                if !p.is_empty() {
                    plan.props.push((name.clone(), p));
                }
            }
        }
        plan
    }

    fn admits_null(&self, schema: &Value) -> bool {
        let schema = self.resolve(schema);
        match &schema["type"] {
            Value::String(t) if t == "null" => return true,
            Value::Array(ts) if ts.iter().any(|t| t == "null") => return true,
            _ => {}
        }
        if schema["nullable"] == true {
            return true;
        }
        ["anyOf", "oneOf"].iter().any(|k| {
            schema[*k]
                .as_array()
                .is_some_and(|bs| bs.iter().any(|b| self.admits_null(b)))
        })
    }
}

/// The schema itself plus its `anyOf`/`oneOf`/`allOf` branches (objects may be described in any).
fn schema_branches(schema: &Value) -> Vec<&Value> {
    let mut out = vec![schema];
    for k in ["anyOf", "oneOf", "allOf"] {
        if let Some(bs) = schema[k].as_array() {
            out.extend(bs);
        }
    }
    out
}

/// `https://api.funnelfox.io/public/v1` → `/public/v1`; no path → empty.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.trim_end_matches('/').to_owned()
}

fn credential(document: &Value, op: &Value, params: &[&Value]) -> anyhow::Result<Credential> {
    let security = op
        .get("security")
        .or_else(|| document.get("security"))
        .and_then(Value::as_array);
    let schemes = document.pointer("/components/securitySchemes");
    // The first scheme of the first requirement: the vendors here each declare exactly one.
    let first = security
        .into_iter()
        .flatten()
        .find_map(|req| req.as_object().and_then(|o| o.keys().next()));
    if let Some(name) = first {
        let scheme = schemes
            .and_then(|s| s.get(name))
            .with_context(|| format!("security scheme `{name}` is not defined"))?;
        return match (scheme["type"].as_str(), scheme["in"].as_str()) {
            (Some("apiKey"), Some("header")) => {
                let header = scheme["name"].as_str().context("apiKey without name")?;
                key_header(header)
            }
            (Some("http"), _)
                if scheme["scheme"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("bearer")) =>
            {
                Ok(Credential::Bearer)
            }
            (t, _) => bail!("unsupported security scheme type {t:?}"),
        };
    }
    // No security requirement: a required header parameter carries the secret (FunnelFox).
    params
        .iter()
        .find(|p| p["in"] == "header" && p["required"] == true)
        .and_then(|p| p["name"].as_str())
        .context("no credential: neither a security requirement nor a required header parameter")
        .and_then(key_header)
}

/// A credential carried in the header `name`, which must be a valid HTTP header name.
fn key_header(name: &str) -> anyhow::Result<Credential> {
    hyper::header::HeaderName::from_bytes(name.as_bytes())
        .with_context(|| format!("`{name}` is not a valid HTTP header name"))?;
    Ok(Credential::Header(name.to_owned()))
}

/// Compiles `schema` (a node of `document`) into a draft 2020-12 validator. The document's
/// `components` travel along so `#/components/...` references resolve.
fn compile(document: &Value, schema: &Value, v30: bool) -> anyhow::Result<Validator> {
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": { "target": normalize(schema, v30) },
        "$ref": "#/$defs/target",
    });
    if let Some(components) = document.get("components") {
        root["components"] = normalize(components, v30);
    }
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .with_format("cuid2", |s: &str| cuid2::is_cuid2(s))
        .build(&root)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// OpenAPI schema objects → JSON Schema 2020-12: `nullable` (3.0) becomes a `null` type, and the
/// embedded `$schema`/`$id` that some documents carry on components are dropped (a fragment-only
/// `$id` is invalid in 2020-12 and would re-base references).
fn normalize(schema: &Value, v30: bool) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                if k == "$schema" || k == "$id" {
                    continue;
                }
                out.insert(k.clone(), normalize(v, v30));
            }
            if v30 && out.remove("nullable") == Some(Value::Bool(true)) {
                match out.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = t.clone();
                        out.insert("type".into(), json!([t, "null"]));
                    }
                    Some(_) => {}
                    None => {
                        let inner = Value::Object(std::mem::take(&mut out));
                        out.insert("anyOf".into(), json!([inner, {"type": "null"}]));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| normalize(v, v30)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_header_must_be_a_valid_header_name() {
        assert_eq!(
            key_header("X-Api-Key").unwrap(),
            Credential::Header("X-Api-Key".into())
        );
        for bad in ["", "X Api Key", "X-Api-Key:", "Schlüssel"] {
            let e = key_header(bad).unwrap_err().to_string();
            assert!(e.contains("not a valid HTTP header name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn derives_routes_and_credentials_from_the_documents() {
        let c = Contracts::load(None).unwrap();
        let expect = [
            (
                ApiId::Salesnip,
                "/v1/sessions/{sessionId}",
                "sessionId",
                Credential::Header("X-Api-Key".into()),
            ),
            (
                ApiId::Opencx,
                "/chat/sessions/{session_id}",
                "session_id",
                Credential::Bearer,
            ),
            (
                ApiId::Funnelfox,
                "/public/v1/sessions/{session_id}",
                "session_id",
                Credential::Header("Fox-Secret".into()),
            ),
            (ApiId::Alcamine, "/sessions/{id}", "id", Credential::Bearer),
            (ApiId::Anam, "/v1/sessions/{id}", "id", Credential::Bearer),
        ];
        for (api, route, param, cred) in expect {
            let contract = c.get(api);
            assert_eq!(contract.route(), route, "{api}");
            assert_eq!(contract.id_param, param, "{api}");
            assert_eq!(contract.credential, cred, "{api}");
        }
    }

    #[test]
    fn formats_are_checked() {
        let c = Contracts::load(None).unwrap();
        let anam = c.get(ApiId::Anam);
        assert!(anam.is_valid(&json!({"id": "8d2e4f60-1b3a-4c5d-9e7f-0a1b2c3d4e01"})));
        let v = anam.violations(&json!({"id": "nope", "startTime": "yesterday"}));
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(
            pointers.contains(&"/id") && pointers.contains(&"/startTime"),
            "{v:?}"
        );
        let alcamine = c.get(ApiId::Alcamine);
        let v = alcamine.violations(&json!({"id": "NOT-A-CUID"}));
        assert!(v.iter().any(|v| v.pointer == "/id"), "{v:?}");
    }

    #[test]
    fn nullable_required_fields_are_filled() {
        let c = Contracts::load(None).unwrap();
        let opencx = c.get(ApiId::Opencx);
        let mut doc = json!({"contact": {"id": "x"}});
        opencx.fill_required_nulls(&mut doc);
        assert_eq!(doc["ai_closure_type"], Value::Null);
        assert_eq!(doc["sentiment"], Value::Null);
        assert_eq!(doc["contact"]["phone_number"], Value::Null);
        assert!(doc.get("status").is_none());
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("https://api.funnelfox.io/public/v1"), "/public/v1");
        assert_eq!(url_path("https://api.anam.ai"), "");
        assert_eq!(url_path("https://api.anam.ai/"), "");
    }
}
