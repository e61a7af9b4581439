//! The OpenAPI document of the admin API (`/api/openapi.json`) and its reference page
//! (`/api/docs`).
//!
//! The document is not written by hand: every admin route is registered through
//! `utoipa_axum::routes!`, which takes the route's path and methods from the handler's
//! `#[utoipa::path]` and its schemas from the wire types in [`super::model`]. A route cannot be
//! served without being documented, and a test compares the document with the router anyway.

use std::sync::Arc;

use axum::Json;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Schema};
use utoipa::{IntoResponses, Modify};

use super::model::ApiError;

/// The errors every admin route may answer, beside its own.
#[derive(IntoResponses)]
#[allow(dead_code)] // Only its documentation is used: handlers answer `HttpError`.
pub enum Errors {
    /// A parameter or the body is invalid; `detail` says which and why.
    #[response(status = 400)]
    BadRequest(ApiError),
    /// No valid admin token in `Authorization: Bearer`.
    #[response(status = 401)]
    Unauthorized(ApiError),
    /// No such resource.
    #[response(status = 404)]
    NotFound(ApiError),
    /// The request changed while it was applied, or conflicts with an earlier one.
    #[response(status = 409)]
    Conflict(ApiError),
    /// The request body is over the server's limit (`max_body_bytes`).
    #[response(status = 413)]
    PayloadTooLarge(ApiError),
    /// The path and query are over 8 KiB.
    #[response(status = 414)]
    UriTooLong(ApiError),
    /// A fault of the server; the detail says what, never a secret.
    #[response(status = 500)]
    Internal(ApiError),
    /// The store is unavailable; try again.
    #[response(status = 503)]
    Unavailable(ApiError),
}

/// The document's header: title, version, tags and the bearer-token scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "zoomhook admin API",
        version = "1",
        description = "The admin API of zoomhook: the event log, the entities sync keeps, outbound subscriptions and their deliveries, sources and sync. Rules every resource follows (times, durations, lists, errors): docs/api.md."
    ),
    modifiers(&BearerToken),
    tags(
        (name = "events", description = "The event log"),
        (name = "subscriptions", description = "Outbound subscriptions, their deliveries, replay and test sends"),
        (name = "meetings", description = "Meetings, their instances and participants"),
        (name = "recordings"), (name = "users"), (name = "webinars"),
        (name = "operations", description = "Sources, sync, counters and the live stream"),
    )
)]
pub struct Header;

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An admin token (printed once at first start, or made with `zoomhook token create`).",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "admin_token",
            Vec::<String>::new(),
        )]);
    }
}

/// The finished document, shared by the two handlers.
#[derive(Clone)]
pub struct Document(Arc<OpenApi>);

impl Document {
    /// Wraps the document the router produced.
    pub fn new(mut openapi: OpenApi) -> Document {
        openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
        answers_carry_every_field(&mut openapi);
        Document(Arc::new(openapi))
    }

    /// The document itself.
    pub fn openapi(&self) -> &OpenApi {
        &self.0
    }

    /// `GET /api/openapi.json`
    pub fn json(&self) -> Response {
        Json(self.0.as_ref().clone()).into_response()
    }

    /// `GET /api/docs`: a reference page rendered here from the document, with no script and
    /// nothing fetched from elsewhere.
    pub fn page(&self) -> Response {
        let mut response = Html(render(&self.0)).into_response();
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
        response
    }
}

/// docs/api.md: "a field that has no value is present as `null`, never left out". utoipa makes an
/// `Option` field optional, which would let an answer drop it unnoticed; so every property of
/// every schema an answer uses (directly or nested) is marked required here, in one place. Request
/// bodies keep their optional fields: a client may leave them out.
fn answers_carry_every_field(openapi: &mut OpenApi) {
    let json = serde_json::to_value(&*openapi).unwrap_or_default();
    let schemas = &json["components"]["schemas"];
    let mut answered = std::collections::BTreeSet::new();
    let mut pending: Vec<String> = Vec::new();
    for item in json["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            collect_refs(&op["responses"], &mut pending);
        }
    }
    while let Some(name) = pending.pop() {
        if answered.insert(name.clone()) {
            collect_refs(&schemas[name.as_str()], &mut pending);
        }
    }
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    for (name, schema) in components.schemas.iter_mut() {
        if answered.contains(name) {
            require_all(schema);
        }
    }
}

/// The names of the component schemas `value` refers to.
fn collect_refs(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                names.push(name.to_owned());
            }
            map.values().for_each(|v| collect_refs(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, names)),
        _ => {}
    }
}

/// Marks every property of an object schema required, also inside `allOf` (a flattened field).
fn require_all(schema: &mut RefOr<Schema>) {
    match schema {
        RefOr::T(Schema::Object(object)) => {
            object.required = object.properties.keys().cloned().collect();
        }
        RefOr::T(Schema::AllOf(all)) => all.items.iter_mut().for_each(require_all),
        _ => {}
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escaped prose with its `code spans` (the Markdown the descriptions use) as `<code>`.
fn prose(text: &str) -> String {
    escape(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                format!("<code>{part}</code>")
            } else {
                part.to_owned()
            }
        })
        .collect()
}

/// The reference page: every operation with its parameters and answers, then every schema.
/// Rendered from the document's JSON form, the same text `/api/openapi.json` serves.
fn render(doc: &OpenApi) -> String {
    let json = serde_json::to_value(doc).unwrap_or_default();
    let text = |v: &Value| v.as_str().map(prose).unwrap_or_default();
    let mut out = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>zoomhook admin API</title><style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}code,pre{font:13px ui-monospace,monospace;background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}pre{padding:.6rem;overflow:auto}h2{border-top:1px solid #ddd;padding-top:1rem;font-size:1.1rem}.m{display:inline-block;min-width:4.5rem;font-weight:700}table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}</style></head><body>",
    );
    out.push_str(&format!(
        "<h1>{} <small>v{}</small></h1><p>{}</p><p>The machine-readable document: <a href=\"/api/openapi.json\">/api/openapi.json</a>. Every request needs <code>Authorization: Bearer &lt;admin token&gt;</code>.</p>",
        text(&json["info"]["title"]),
        text(&json["info"]["version"]),
        text(&json["info"]["description"]),
    ));
    let empty = serde_json::Map::new();
    for (path, item) in json["paths"].as_object().unwrap_or(&empty) {
        for method in ["get", "post", "put", "patch", "delete"] {
            let op = &item[method];
            if op.is_null() {
                continue;
            }
            out.push_str(&format!(
                "<h2><span class=\"m\">{}</span><code>{}</code></h2><p>{}</p>",
                method.to_uppercase(),
                escape(path),
                text(&op["summary"])
            ));
            if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                out.push_str("<table><tr><th>Parameter</th><th>In</th><th>Description</th></tr>");
                for p in params {
                    let required = if p["required"] == Value::Bool(true) {
                        " (required)"
                    } else {
                        ""
                    };
                    out.push_str(&format!(
                        "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td></tr>",
                        text(&p["name"]),
                        text(&p["in"]),
                        text(&p["description"])
                    ));
                }
                out.push_str("</table>");
            }
            if !op["requestBody"].is_null() {
                out.push_str(&format!(
                    "<p>Request body: <code>{}</code></p>",
                    escape(&schema_name(&op["requestBody"]))
                ));
            }
            out.push_str("<table><tr><th>Status</th><th>Answer</th></tr>");
            for (status, response) in op["responses"].as_object().unwrap_or(&empty) {
                out.push_str(&format!(
                    "<tr><td>{}</td><td>{} <code>{}</code></td></tr>",
                    escape(status),
                    text(&response["description"]),
                    escape(&schema_name(response))
                ));
            }
            out.push_str("</table>");
        }
    }
    out.push_str("<h2>Schemas</h2>");
    for (name, schema) in json["components"]["schemas"].as_object().unwrap_or(&empty) {
        let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
        out.push_str(&format!(
            "<h3 id=\"{0}\">{0}</h3><pre>{1}</pre>",
            escape(name),
            escape(&pretty)
        ));
    }
    out.push_str("</body></html>");
    out
}

/// The schema a request body or response carries, by name when it is a reference.
fn schema_name(holder: &Value) -> String {
    let Some(content) = holder["content"]
        .as_object()
        .and_then(|c| c.values().next())
    else {
        return String::new();
    };
    let schema = &content["schema"];
    match schema["$ref"].as_str() {
        Some(reference) => reference.rsplit('/').next().unwrap_or_default().to_owned(),
        None => schema.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::prose;

    #[test]
    fn prose_shows_code_spans_as_code_and_escapes_the_rest() {
        assert_eq!(
            prose("use `cursor` <b>"),
            "use <code>cursor</code> &lt;b&gt;"
        );
        assert_eq!(prose("no code"), "no code");
    }
}
