//! A small client for the admin API, used by the CLI's server-facing commands.

use anyhow::{Context, bail};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::ClientArgs;

/// An error answer of the admin API (`{error, detail}`), kept typed so a command can tell
/// "not found" from other failures and say what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{detail} (the server answered {status} to {method} {path})")]
pub struct ApiError {
    pub status: StatusCode,
    pub method: reqwest::Method,
    /// The path and query asked for, without the server's base URL.
    pub path: String,
    /// The API's `detail`, or the body when it is not the API's JSON.
    pub detail: String,
}

impl ApiError {
    fn from_body(status: StatusCode, method: reqwest::Method, path: &str, body: &str) -> ApiError {
        let detail = serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| body.trim().to_owned());
        ApiError {
            status,
            method,
            path: path.to_owned(),
            detail,
        }
    }
}

/// Whether `error` is the API saying 404.
pub fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<ApiError>()
        .is_some_and(|e| e.status == StatusCode::NOT_FOUND)
}

/// Adds what to do next to an error, on its own `hint:` line.
pub fn with_hint(error: anyhow::Error, hint: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{error:#}\nhint: {hint}")
}

/// `.hint_if_not_found(…)` on API results: a 404 gets a hint (where such ids are listed).
pub trait NotFoundHint<T> {
    fn hint_if_not_found(self, hint: &str) -> anyhow::Result<T>;
}

impl<T> NotFoundHint<T> for anyhow::Result<T> {
    fn hint_if_not_found(self, hint: &str) -> anyhow::Result<T> {
        self.map_err(|e| {
            if is_not_found(&e) {
                with_hint(e, hint)
            } else {
                e
            }
        })
    }
}

/// Admin API client bound to one server and token.
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    /// Builds a client; fails early with advice if no token is given.
    pub fn new(args: &ClientArgs) -> anyhow::Result<AdminClient> {
        let Some(token) = args.token.clone() else {
            bail!(
                "no admin token: pass --token or set ZOOMHOOK_TOKEN (the server prints one at first start; `zoomhook token create` makes more)"
            );
        };
        Ok(AdminClient {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            base: args.server.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// GETs `path` (with query) and decodes JSON, turning API errors into readable messages.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let response = self.get(path, query).await?;
        response
            .json()
            .await
            .context("decoding the server's answer")
    }

    /// GETs `path` and returns the raw response after checking the status.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .query(query)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach zoomhook at {} (is it running? set --server or ZOOMHOOK_URL)",
                    self.base
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ApiError::from_body(status, reqwest::Method::GET, path, &text).into());
        }
        Ok(response)
    }

    /// Sends `body` as JSON with `method` and decodes the JSON answer (`null` for an empty one).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach zoomhook at {} (is it running? set --server or ZOOMHOOK_URL)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(ApiError::from_body(status, method, path, &text).into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}
