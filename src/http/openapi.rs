//! The admin API's own OpenAPI 3.1 document, generated here from the route table below. A test
//! checks it against the committed copy `specs/admin-openapi.json` and that every path it lists is
//! routed; `sessiond openapi` prints it.

use serde_json::{Map, Value, json};

use crate::vendor::ApiId;

/// One admin operation: method, path, summary, request body schema, success status and schema.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<Value>,
    success: (&'static str, &'static str, Option<Value>),
    errors: &'static [&'static str],
    auth: bool,
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn ops() -> Vec<Op> {
    let session = json!({ "type": "object", "description": "The session exactly as the vendor's GET returns it." });
    vec![
        Op {
            method: "post",
            path: "/admin/v1/{api}/tenants",
            summary: "Create a tenant (id in the vendor's format if not given)",
            request: Some(r("TenantCreate")),
            success: ("201", "The tenant", Some(r("Tenant"))),
            errors: &["400", "404", "409"],
            auth: true,
        },
        Op {
            method: "get",
            path: "/admin/v1/{api}/tenants",
            summary: "List the api's tenants",
            request: None,
            success: (
                "200",
                "Tenants",
                Some(
                    json!({"type":"object","properties":{"items":{"type":"array","items":r("Tenant")}}}),
                ),
            ),
            errors: &["404"],
            auth: true,
        },
        Op {
            method: "post",
            path: "/admin/v1/{api}/tenants/{tenant}/keys",
            summary: "Create an API key (the secret is shown once)",
            request: None,
            success: ("201", "The key and its secret", Some(r("KeyCreated"))),
            errors: &["404"],
            auth: true,
        },
        Op {
            method: "get",
            path: "/admin/v1/{api}/tenants/{tenant}/keys",
            summary: "List the tenant's keys (never their secrets)",
            request: None,
            success: (
                "200",
                "Keys",
                Some(
                    json!({"type":"object","properties":{"items":{"type":"array","items":r("Key")}}}),
                ),
            ),
            errors: &["404"],
            auth: true,
        },
        Op {
            method: "delete",
            path: "/admin/v1/{api}/tenants/{tenant}/keys/{key_id}",
            summary: "Revoke a key (effective at once)",
            request: None,
            success: ("204", "Revoked", None),
            errors: &["404"],
            auth: true,
        },
        Op {
            method: "post",
            path: "/admin/v1/{api}/tenants/{tenant}/sessions",
            summary: "Create a session from a partial document; the server fills id, tenant field, timestamps, defaults and derived fields",
            request: Some(session.clone()),
            success: (
                "201",
                "The exact public GET body (headers ETag, Location)",
                Some(session.clone()),
            ),
            errors: &["400", "404", "409", "422"],
            auth: true,
        },
        Op {
            method: "get",
            path: "/admin/v1/{api}/tenants/{tenant}/sessions",
            summary: "A page of the tenant's sessions, in creation order",
            request: None,
            success: ("200", "A page", Some(r("SessionPage"))),
            errors: &["400", "404"],
            auth: true,
        },
        Op {
            method: "get",
            path: "/admin/v1/{api}/sessions/{id}",
            summary: "A session of any tenant",
            request: None,
            success: ("200", "The session (header ETag)", Some(session.clone())),
            errors: &["404"],
            auth: true,
        },
        Op {
            method: "patch",
            path: "/admin/v1/{api}/sessions/{id}",
            summary: "Apply a JSON merge patch (RFC 7396); If-Match honoured; lifecycle rules apply",
            request: Some(json!({"type":"object"})),
            success: ("200", "The new body (header ETag)", Some(session.clone())),
            errors: &["400", "404", "412", "422"],
            auth: true,
        },
        Op {
            method: "put",
            path: "/admin/v1/{api}/sessions/{id}",
            summary: "Replace a session's document; If-Match honoured",
            request: Some(session.clone()),
            success: ("200", "The new body (header ETag)", Some(session)),
            errors: &["400", "404", "412", "422"],
            auth: true,
        },
        Op {
            method: "delete",
            path: "/admin/v1/{api}/sessions/{id}",
            summary: "Delete a session; If-Match honoured",
            request: None,
            success: ("204", "Deleted", None),
            errors: &["404", "412"],
            auth: true,
        },
        Op {
            method: "get",
            path: "/admin/v1/openapi.json",
            summary: "This document",
            request: None,
            success: (
                "200",
                "OpenAPI 3.1 document",
                Some(json!({"type":"object"})),
            ),
            errors: &[],
            auth: true,
        },
        Op {
            method: "get",
            path: "/healthz",
            summary: "Liveness: the process answers",
            request: None,
            success: (
                "200",
                "Alive",
                Some(json!({"type":"object","properties":{"status":{"const":"ok"}}})),
            ),
            errors: &[],
            auth: false,
        },
        Op {
            method: "get",
            path: "/readyz",
            summary: "Readiness: the store answers",
            request: None,
            success: (
                "200",
                "Ready",
                Some(json!({"type":"object","properties":{"status":{"type":"string"}}})),
            ),
            errors: &["503"],
            auth: false,
        },
        Op {
            method: "get",
            path: "/metrics",
            summary: "Prometheus metrics (text exposition format): vendor responses by api, outcome and status; store reads; admin responses; the session cache's size; resident memory",
            request: None,
            success: ("200", "Metrics", Some(json!({"type":"string"}))),
            errors: &[],
            auth: false,
        },
    ]
}

// The 413 text names the limit.
const _: () = assert!(super::admin::BODY_LIMIT == 2 << 20);

fn error_text(status: &str) -> &'static str {
    match status {
        "400" => "Malformed request (bad JSON, bad id format, bad query)",
        "401" => "Missing or wrong admin token",
        "404" => "Unknown api, tenant, key or session",
        "409" => "The id is taken",
        "412" => "If-Match does not match the current ETag",
        "413" => "The request body is larger than 2 MiB",
        "422" => {
            "The document violates the contract or the vendor's rules; every violation is listed by JSON pointer"
        }
        "503" => "Not ready",
        _ => "Error",
    }
}

fn parameter(name: &str) -> Value {
    if name == "api" {
        let apis: Vec<&str> = ApiId::ALL.iter().map(|a| a.as_str()).collect();
        json!({ "name": "api", "in": "path", "required": true, "schema": { "type": "string", "enum": apis } })
    } else {
        json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
    }
}

/// The admin API's OpenAPI 3.1 document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in ops() {
        let mut responses = Map::new();
        let mut ok = json!({ "description": op.success.1 });
        if let Some(schema) = &op.success.2 {
            // Everything answers JSON but the Prometheus text of `/metrics`.
            let media = if op.path == "/metrics" {
                "text/plain"
            } else {
                "application/json"
            };
            ok["content"] = json!({ media: { "schema": schema } });
        }
        responses.insert(op.success.0.into(), ok);
        let auth_errors: &[&str] = if op.auth { &["401"] } else { &[] };
        let body_errors: &[&str] = if op.request.is_some() { &["413"] } else { &[] };
        for status in op.errors.iter().chain(auth_errors).chain(body_errors) {
            responses.insert(
                (*status).into(),
                json!({ "description": error_text(status), "content": { "application/json": { "schema": r("Error") } } }),
            );
        }
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(parameter)
            .chain(
                (op.path.ends_with("/sessions") && op.method == "get")
                    .then(|| {
                        vec![
                            json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } }),
                            json!({ "name": "cursor", "in": "query", "schema": { "type": "string" } }),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .chain(
                (op.path.ends_with("/sessions") && op.method == "post").then(|| {
                    json!({ "name": "fill", "in": "query", "description": "Generate every field the document leaves out (realistic, valid values)", "schema": { "type": "boolean", "default": false } })
                }),
            )
            .chain(
                (matches!(op.method, "patch" | "put" | "delete") && op.path.contains("/sessions/"))
                    .then(|| json!({ "name": "If-Match", "in": "header", "schema": { "type": "string" } })),
            )
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.', '_'], " ").split_whitespace().map(capitalize).collect::<String>()),
            "parameters": params,
            "responses": responses,
        });
        if let Some(body) = op.request {
            let media = if op.method == "patch" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            operation["requestBody"] = json!({ "required": op.method != "post", "content": { media: { "schema": body } } });
        }
        if !op.auth {
            operation["security"] = json!([]);
        }
        paths
            .entry(op.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects")
            .insert(op.method.into(), operation);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "sessiond admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenants, API keys and sessions of the vendor APIs sessiond serves. Listens on --admin-listen."
        },
        "security": [{ "adminToken": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "adminToken": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error", "message"], "properties": {
                    "error": { "type": "string" }, "message": { "type": "string" },
                    "violations": { "type": "array", "items": { "type": "object", "required": ["pointer", "message"], "properties": {
                        "pointer": { "type": "string", "description": "JSON pointer into the document" }, "message": { "type": "string" } } } } } },
                "TenantCreate": { "type": "object", "properties": { "id": { "type": "string" } } },
                "Tenant": { "type": "object", "required": ["id"], "properties": { "id": { "type": "string" } } },
                "KeyCreated": { "type": "object", "required": ["id", "key"], "properties": { "id": { "type": "string" }, "key": { "type": "string", "description": "The secret; shown only here" } } },
                "Key": { "type": "object", "required": ["id", "created_at", "revoked"], "properties": { "id": { "type": "string" }, "created_at": { "type": "string", "format": "date-time" }, "revoked": { "type": "boolean" } } },
                "SessionPage": { "type": "object", "required": ["items", "next_cursor"], "properties": { "items": { "type": "array", "items": { "type": "object" } }, "next_cursor": { "type": ["string", "null"] } } }
            }
        }
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}
