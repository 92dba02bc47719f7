//! `/openapi.json`, written by hand (a generator would be a heavy dependency for ten routes).
//! A test checks that every route the router serves is described here.
use fedp2eft_wire::{routes, ErrorCode, PROTOCOL_VERSION};
use serde_json::{json, Value};

/// Every (method, path) the server serves, in OpenAPI's `{param}` syntax (axum's too).
pub const ROUTES: [(&str, &str); 10] = [
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", routes::CREATE_RUN),
    ("get", routes::RUN),
    ("post", routes::ENROLL),
    ("get", routes::TASK),
    ("get", routes::PSG),
    ("get", routes::ROUND),
    ("post", routes::UPDATE),
];

fn error_response(description: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } } })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({ "description": description,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn payload(description: &str) -> Value {
    json!({ "description": description, "required": true,
            "content": { routes::PAYLOAD_CONTENT_TYPE: { "schema": { "type": "string", "format": "binary" } } } })
}

fn param(name: &str, description: &str, integer: bool) -> Value {
    let schema = if integer {
        json!({ "type": "integer", "minimum": 0 })
    } else {
        json!({ "type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$" })
    };
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": schema })
}

pub fn document() -> Value {
    let run = param("run", "Run name", false);
    let round = param("round", "Round k (0-based)", true);
    let admin = json!([{ "admin": [] }]);
    let client = json!([{ "client": [] }]);
    let client_or_admin = json!([{ "client": [] }, { "admin": [] }]);
    let unauthorized = error_response("Missing or wrong bearer token (`unauthorized`)");
    let not_found = error_response("Unknown run, round or PSG (`not_found`)");
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
      "openapi": "3.1.0",
      "info": {
        "title": "FedP2EFT federation server",
        "version": env!("CARGO_PKG_VERSION"),
        "description": format!("Runs federated training of the PSG (protocol version {PROTOCOL_VERSION}). \
          Control messages are JSON; PSG parameters travel as safetensors payloads \
          (application/octet-stream) whose metadata names run, round and client, see docs/protocol.md. \
          Every error answers an ErrorBody whose code maps to exactly one status.")
      },
      "components": {
        "securitySchemes": {
          "admin": { "type": "http", "scheme": "bearer", "description": "The server's admin token (FEDP2EFT_ADMIN_TOKEN)." },
          "client": { "type": "http", "scheme": "bearer", "description": "The token returned once by enrolment." }
        },
        "schemas": {
          "ErrorBody": { "type": "object", "required": ["error"], "properties": { "error": {
            "type": "object", "required": ["code", "message"],
            "properties": { "code": { "type": "string", "enum": codes }, "message": { "type": "string" } } } } },
          "RunCreated": { "type": "object", "required": ["run", "psg_sha256"],
            "properties": { "run": { "type": "string" }, "psg_sha256": { "type": "string" } } },
          "Enroll": { "type": "object", "required": ["client", "pool"], "additionalProperties": false,
            "properties": { "client": { "type": "string" }, "pool": { "type": "string", "enum": ["seen", "unseen"] } } },
          "Enrolled": { "type": "object", "required": ["run", "client", "pool", "token"],
            "properties": { "run": { "type": "string" }, "client": { "type": "string" },
              "pool": { "type": "string", "enum": ["seen", "unseen"] },
              "token": { "type": "string", "description": "Shown once; the server keeps only its hash." } } },
          "RunStatus": { "type": "object",
            "required": ["run", "state", "round", "rounds", "enrolled_seen", "enrolled_unseen", "layout", "psg_sha256"],
            "properties": { "run": { "type": "string" }, "state": { "type": "string", "enum": ["running", "finished"] },
              "round": { "type": "integer" }, "rounds": { "type": "integer" },
              "enrolled_seen": { "type": "integer" }, "enrolled_unseen": { "type": "integer" },
              "layout": { "$ref": "#/components/schemas/PsgLayout" }, "psg_sha256": { "type": "string" } } },
          "PsgLayout": { "type": "object", "required": ["base_model", "num_layers", "r_max", "feature_layout"],
            "properties": { "kind": { "type": "string", "enum": ["psg", "lr-net"], "default": "psg" },
              "base_model": { "type": "string" }, "num_layers": { "type": "integer" },
              "r_max": { "type": "integer" }, "hidden_mul": { "type": "integer", "description": "PSG only" },
              "hidden": { "type": "integer", "description": "lr-net only" }, "feature_layout": { "type": "string" } } },
          "PsgRef": { "type": "object", "required": ["round", "psg", "psg_sha256"],
            "properties": { "round": { "type": "integer" }, "psg": { "type": "string" }, "psg_sha256": { "type": "string" } } },
          "Task": { "oneOf": [
            { "type": "object", "required": ["task", "retry_after_s"],
              "properties": { "task": { "const": "wait" }, "retry_after_s": { "type": "integer" } } },
            { "allOf": [ { "$ref": "#/components/schemas/PsgRef" }, { "type": "object",
              "required": ["task", "upload", "closes_in_s"],
              "properties": { "task": { "const": "train" }, "upload": { "type": "string" }, "closes_in_s": { "type": "integer" } } } ] },
            { "allOf": [ { "$ref": "#/components/schemas/PsgRef" }, { "type": "object", "required": ["task"],
              "properties": { "task": { "const": "finished" } } } ] } ] },
          "RoundStatus": { "type": "object",
            "required": ["run", "round", "state", "selected", "reported", "quorum", "psg_sha256"],
            "properties": { "run": { "type": "string" }, "round": { "type": "integer" },
              "state": { "type": "string", "enum": ["open", "closed", "failed"] },
              "selected": { "type": "integer" }, "reported": { "type": "integer" }, "quorum": { "type": "integer" },
              "closes_in_s": { "type": ["integer", "null"] }, "psg_sha256": { "type": "string" },
              "aggregate_sha256": { "type": ["string", "null"] } } },
          "UploadAccepted": { "type": "object", "required": ["run", "round", "client", "sha256", "duplicate"],
            "properties": { "run": { "type": "string" }, "round": { "type": "integer" }, "client": { "type": "string" },
              "sha256": { "type": "string" }, "duplicate": { "type": "boolean" } } }
        }
      },
      "paths": {
        "/healthz": { "get": { "summary": "Liveness: the database answers", "security": [],
          "responses": { "200": { "description": "ok", "content": { "text/plain": {} } },
                         "500": error_response("Database unreachable") } } },
        "/metrics": { "get": { "summary": "Prometheus text-format metrics", "security": [],
          "responses": { "200": { "description": "Metrics", "content": { "text/plain": {} } } } } },
        "/openapi.json": { "get": { "summary": "This document", "security": [],
          "responses": { "200": { "description": "OpenAPI 3.1", "content": { "application/json": {} } } } } },
        routes::CREATE_RUN: { "post": { "summary": "Create a run with its initial PSG φ_0", "security": admin,
          "requestBody": payload("safetensors: φ_0 with a `create_run` metadata (name, seed, fraction, rounds, deadline_s, min_completion, layout)"),
          "responses": { "201": json_response("Created", "RunCreated"),
            "400": error_response("Configuration out of range (`bad_request`, `unsupported_protocol`)"),
            "401": unauthorized.clone(), "409": error_response("Name taken (`already_exists`)"),
            "413": error_response("Body too large (`too_large`)"),
            "422": error_response("Invalid payload (`invalid_update`)") } } },
        routes::RUN: { "get": { "summary": "Run status", "security": client_or_admin.clone(), "parameters": [run],
          "responses": { "200": json_response("Status", "RunStatus"), "401": unauthorized.clone(),
            "404": not_found.clone() } } },
        routes::ENROLL: { "post": { "summary": "Enrol a client into the seen or unseen pool; returns its token once",
          "security": admin, "parameters": [run],
          "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Enroll" } } } },
          "responses": { "201": json_response("Enrolled", "Enrolled"),
            "400": error_response("Malformed body or invalid id (`bad_request`)"), "401": unauthorized.clone(),
            "404": not_found.clone(), "409": error_response("Client id taken (`already_exists`)") } } },
        routes::TASK: { "get": { "summary": "What the calling client should do now (wait, train round k, or finished)",
          "security": client, "parameters": [run],
          "responses": { "200": json_response("Task; `wait` also sets Retry-After", "Task"),
            "401": unauthorized.clone(), "404": not_found.clone() } } },
        routes::PSG: { "get": { "summary": "Download φ_k (k = R is the final PSG)", "security": client_or_admin.clone(),
          "parameters": [run, round],
          "responses": { "200": { "description": "safetensors payload with `round` metadata; ETag is its SHA-256",
              "content": { routes::PAYLOAD_CONTENT_TYPE: { "schema": { "type": "string", "format": "binary" } } } },
            "401": unauthorized.clone(), "404": not_found.clone() } } },
        routes::ROUND: { "get": { "summary": "Round status", "security": client_or_admin.clone(),
          "parameters": [run, round],
          "responses": { "200": json_response("Status", "RoundStatus"), "401": unauthorized.clone(),
            "404": not_found.clone() } } },
        routes::UPDATE: { "post": { "summary": "Upload the calling client's update for round k (idempotent for identical bytes)",
          "security": client, "parameters": [run, round],
          "requestBody": payload("safetensors: the client's PSG with `update` metadata (run, round, client, num_samples)"),
          "responses": { "200": json_response("Stored (or `duplicate: true` for a repeat of the stored bytes)", "UploadAccepted"),
            "400": error_response("Unsupported protocol version (`unsupported_protocol`)"),
            "401": unauthorized, "404": not_found,
            "409": error_response("`not_selected`, `wrong_round`, `round_closed`, or `already_reported` (a different update)"),
            "413": error_response("Body too large (`too_large`)"),
            "422": error_response("Wrong names, shapes, dtype, NaN/Inf, metadata (`invalid_update`)") } } }
      }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route_and_only_those() {
        let doc = document();
        let paths = doc["paths"].as_object().map(|p| p.len());
        assert_eq!(paths, Some(ROUTES.len()));
        for (method, path) in ROUTES {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} undocumented");
            assert!(
                op["responses"].is_object(),
                "{method} {path} lacks responses"
            );
        }
    }
}
