//! A small client for the admin API, used by the CLI's server-facing commands.

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

use super::ClientArgs;

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
            let detail = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                .unwrap_or(text);
            bail!("{url} answered {status}: {detail}");
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
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
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
        let value: serde_json::Value =
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let detail = value
                .get("detail")
                .and_then(|d| d.as_str())
                .map(str::to_owned)
                .unwrap_or(text);
            bail!("{url} answered {status}: {detail}");
        }
        Ok(value)
    }
}
