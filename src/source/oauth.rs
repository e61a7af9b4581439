//! The access token of a WebSocket source: Zoom's Server-to-Server OAuth (`account_credentials`)
//! or a general app's `client_credentials`, fetched with the app's client id and secret as Basic
//! auth, kept until shortly before it expires, and dropped at once when Zoom calls it invalid.
//!
//! The token is a bearer credential for the whole account's events: it is held as a [`Secret`],
//! and every error that could quote it (a URL, a response) is scrubbed before it is logged.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{OAuthGrant, Secret, ZoomWebSocketConfig};

/// A token is renewed when less than this much of its life is left (Zoom's last one hour).
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// How long one token request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("Zoom's token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("Zoom refused the credentials ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("Zoom's token endpoint answered something that is not a token: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Zoom's error answer (`{"reason": "...", "error": "invalid_client"}`).
#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// A cached access token and when to renew it.
pub struct TokenCache {
    http: reqwest::Client,
    current: Option<(Secret, Instant)>,
    /// How many tokens were fetched (for `GET /api/v1/sources` and the tests).
    pub fetched: u64,
}

impl TokenCache {
    pub fn new() -> Result<TokenCache, TokenError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(crate::deliver::worker::USER_AGENT)
            .build()
            .map_err(|e| TokenError::Unreachable(e.to_string()))?;
        Ok(TokenCache {
            http,
            current: None,
            fetched: 0,
        })
    }

    /// A token valid for a while yet: the cached one, or a new one.
    pub async fn token(&mut self, config: &ZoomWebSocketConfig) -> Result<Secret, TokenError> {
        if let Some((token, renew_at)) = &self.current
            && Instant::now() < *renew_at
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch(config).await?;
        self.fetched += 1;
        // Renew 5 minutes before expiry, or half-way for short-lived tokens.
        let renew_in = lifetime
            .checked_sub(RENEW_BEFORE)
            .filter(|d| *d >= lifetime / 2)
            .unwrap_or(lifetime / 2);
        self.current = Some((token.clone(), Instant::now() + renew_in));
        Ok(token)
    }

    /// Forgets the cached token (Zoom said it is invalid): the next [`token`](Self::token) fetches.
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    async fn fetch(&self, config: &ZoomWebSocketConfig) -> Result<(Secret, Duration), TokenError> {
        let mut query = vec![("grant_type", "account_credentials")];
        match &config.grant {
            OAuthGrant::AccountCredentials { account_id } => {
                query.push(("account_id", account_id.as_str()));
            }
            OAuthGrant::ClientCredentials => query[0].1 = "client_credentials",
        }
        // Zoom documents the parameters in the query string of the POST.
        let response = self
            .http
            .post(&config.oauth_url)
            .query(&query)
            .basic_auth(&config.client_id, Some(config.client_secret.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        if !status.is_success() {
            let parsed: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
            let reason = parsed
                .reason
                .or(parsed.error)
                .unwrap_or_else(|| "no reason given".into());
            return Err(TokenError::Refused {
                status: status.as_u16(),
                reason: reason.chars().take(200).collect(),
            });
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| TokenError::Malformed(format!("{e} ({} bytes)", body.len())))?;
        if parsed.access_token.is_empty() {
            return Err(TokenError::Malformed("empty access_token".into()));
        }
        let lifetime = Duration::from_secs(parsed.expires_in.unwrap_or(3600).max(1));
        Ok((Secret::new(parsed.access_token), lifetime))
    }
}
