//! One typed configuration for the whole server.
//!
//! Layers, each overriding the one before: the TOML file (`--config`), environment variables
//! (`ZOOMHOOK_*`, plus Zoom's own names like `ZOOM_WEBHOOK_SECRET_TOKEN`), flags. Secrets may be
//! given as files (`*_file` keys, `*_FILE` variables). [`Config::resolve`] validates everything at
//! once and fails with an error that names the key, where it was set and the expected form.

mod example;
mod key_docs;
mod limits;
mod log_format;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::http::HeaderName;
use ipnet::IpNet;

pub use example::example_toml;
pub use limits::Limits;
pub use log_format::{LogFormat, load_log_format};
pub use raw::{RawConfig, Setting};

/// Name of the source served at `/webhooks/zoom`.
pub const DEFAULT_SOURCE: &str = "zoom";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://zoomhook.db";

/// A configuration error naming the bad key.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}` (set in {origin}): {message}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub message: String,
}

/// A secret value; never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself; call sites are where secrets are used, so they are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The database URL: used as text everywhere (`Deref<Target = str>`), but shown by `Debug` and
/// `Display` with its password masked (`postgres://user:***@host/db`), so a configuration that
/// reaches a log line or an error message never carries the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> DatabaseUrl {
        DatabaseUrl(url.into())
    }
}

impl std::ops::Deref for DatabaseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", crate::store::postgres::redact_url(&self.0))
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::store::postgres::redact_url(&self.0))
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> DatabaseUrl {
        DatabaseUrl(url.to_owned())
    }
}

impl PartialEq<&str> for DatabaseUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Settings of outbound delivery.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Run the fan-out reader and delivery workers in this process.
    pub enabled: bool,
    /// Delays between attempts (`ZOOMHOOK_DELIVERY_RETRY_SCHEDULE`).
    pub retry_schedule: Vec<Duration>,
    /// Networks deliveries may reach although private or loopback (`ZOOMHOOK_DELIVERY_ALLOW_CIDRS`).
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// A subscription failing without a single success for this long is disabled.
    pub disable_after: Duration,
    /// Finished deliveries (and their attempts) are deleted this long after their last update.
    pub retention: Duration,
    /// `smtp://host:port` or `smtps://user:pass@host` for email subscriptions.
    pub smtp_url: Option<Secret>,
    pub smtp_from: String,
}

/// The validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// This instance's name among those sharing a database (`instance_id`; default host-pid):
    /// shown as the leader of sync, fan-out and WebSocket sources.
    pub instance_id: String,
    pub database_url: DatabaseUrl,
    /// An admin token accepted as given (`ZOOMHOOK_ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    /// Largest accepted webhook body.
    pub max_body_bytes: usize,
    /// Time allowed to receive a whole request body (slow-body protection).
    pub read_timeout: Duration,
    /// Time allowed for in-flight requests to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// Connection, header, idle and memory limits of the HTTP server.
    pub limits: Limits,
    /// How long dedupe keys are kept.
    pub dedupe_window: Duration,
    /// How long a SQLite write waits for a lock before the request gets 503.
    pub sqlite_busy_timeout: Duration,
    /// Size of the SQLite WAL file above which it is checkpointed and truncated even if readers
    /// have to be waited for (bounds the disk the WAL takes under sustained load).
    pub sqlite_wal_limit: u64,
    /// Named inbound sources; always contains [`DEFAULT_SOURCE`].
    pub sources: BTreeMap<String, SourceConfig>,
    /// Zoom API credentials (for the WebSocket source).
    pub zoom_api: ZoomApiConfig,
    /// Outbound delivery (webhooks and email).
    pub delivery: DeliveryConfig,
    /// How log lines are written; logging itself is set up from [`load_log_format`] before
    /// this configuration exists, and this copy makes `config check` validate and show it.
    pub log_format: LogFormat,
}

/// Zoom API credentials, read from Zoom's conventional variables.
#[derive(Debug, Clone, Default)]
pub struct ZoomApiConfig {
    pub account_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
}

/// How one inbound source verifies requests.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    /// Webhook secret tokens: the current one first, then the previous one during rotation.
    pub secrets: Vec<Secret>,
    /// Accepted clock difference for `x-zm-request-timestamp`, both ways.
    pub timestamp_tolerance: Duration,
    /// "Basic Authentication" of Zoom's subscription settings.
    pub basic_auth: Option<BasicAuth>,
    /// "Token Authentication": zoomhook hosts the client-credentials token endpoint.
    pub token_auth: Option<TokenAuth>,
    /// "Custom Header": an `x-…` header with a fixed value.
    pub custom_header: Option<CustomHeader>,
    /// Legacy verification token (the `authorization` header of old Zoom apps).
    pub verification_token: Option<Secret>,
    /// If not empty, only these networks may post to this source.
    pub allow_ips: Vec<IpNet>,
    /// Set for `kind = "zoom_websocket"`: the source reads Zoom's WebSocket instead of
    /// receiving webhooks (and `/webhooks/zoom/NAME` answers 404).
    pub websocket: Option<ZoomWebSocketConfig>,
}

/// How a WebSocket source authenticates with Zoom (Server-to-Server OAuth) and where it connects.
#[derive(Debug, Clone)]
pub struct ZoomWebSocketConfig {
    /// The event subscription's id (`wss://ws.zoom.us/ws?subscriptionId=…`).
    pub subscription_id: String,
    pub grant: OAuthGrant,
    pub client_id: String,
    pub client_secret: Secret,
    /// Zoom's token endpoint (`https://zoom.us/oauth/token`; a fake Zoom in tests).
    pub oauth_url: String,
    /// Zoom's WebSocket endpoint (`wss://ws.zoom.us/ws`).
    pub websocket_url: String,
    /// How often `{"module":"heartbeat"}` is sent (Zoom: every 30 s).
    pub heartbeat_interval: Duration,
    /// A connection that delivers no frame at all for this long is dead.
    pub silence_timeout: Duration,
}

/// The OAuth grant that yields the WebSocket's access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthGrant {
    /// Server-to-Server OAuth apps: `grant_type=account_credentials&account_id=…`.
    AccountCredentials { account_id: String },
    /// General apps: `grant_type=client_credentials`.
    ClientCredentials,
}

/// Zoom's production token endpoint.
pub const ZOOM_OAUTH_URL: &str = "https://zoom.us/oauth/token";
/// Zoom's production WebSocket endpoint.
pub const ZOOM_WEBSOCKET_URL: &str = "wss://ws.zoom.us/ws";

/// Basic-auth credentials Zoom sends.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

/// Client credentials Zoom uses at zoomhook's token endpoint.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    pub client_id: String,
    pub client_secret: Secret,
}

/// A custom header check.
#[derive(Debug, Clone)]
pub struct CustomHeader {
    pub name: HeaderName,
    pub value: Secret,
}

impl SourceConfig {
    /// Whether this source reads Zoom's WebSocket rather than receiving webhooks.
    pub fn is_websocket(&self) -> bool {
        self.websocket.is_some()
    }

    /// Whether any verification is configured; a source without any rejects everything.
    pub fn has_any_check(&self) -> bool {
        !self.secrets.is_empty()
            || self.basic_auth.is_some()
            || self.token_auth.is_some()
            || self.custom_header.is_some()
            || self.verification_token.is_some()
    }
}

/// Values given on the command line (the last layer).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub log_format: Option<String>,
}

impl Config {
    /// Loads file → environment → flags and validates the result.
    pub fn load(config_file: Option<&Path>, flags: &Flags) -> Result<Config, ConfigError> {
        Config::resolve(&layers(config_file, flags)?)
    }

    /// Validates a layered raw configuration.
    pub fn resolve(raw: &RawConfig) -> Result<Config, ConfigError> {
        let r = Resolver { raw };
        let listen = r.parse(
            "listen",
            DEFAULT_LISTEN,
            "an address such as 127.0.0.1:8080 or 0.0.0.0:8080",
            |v| v.parse().ok(),
        )?;
        // A secret like the others: a PostgreSQL URL carries the password.
        let database_url = r
            .secret("database_url")?
            .map(|url| url.expose().to_owned())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite://")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            let key = match r.text("database_url") {
                Some(_) => "database_url",
                None => "database_url_file",
            };
            return Err(r.error(
                key,
                "expected sqlite://PATH or postgres://USER@HOST:PORT/DB",
            ));
        }
        let max_body_bytes = r.parse(
            "max_body_bytes",
            "2097152",
            "a size in bytes, e.g. 2097152",
            |v| v.parse::<usize>().ok().filter(|n| *n >= 1024),
        )?;
        let mut sources = BTreeMap::new();
        for name in r.source_names() {
            sources.insert(name.clone(), r.source(&name)?);
        }
        let instance_id = r
            .text("instance_id")
            .unwrap_or_else(crate::cluster::default_instance_name);
        if instance_id.len() > 40 || !instance_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(r.error(
                "instance_id",
                "expected at most 40 printable characters without spaces, e.g. zoomhook-1",
            ));
        }
        Ok(Config {
            listen,
            instance_id,
            database_url: DatabaseUrl(database_url),
            admin_token: r.secret("admin_token")?,
            max_body_bytes,
            read_timeout: r.duration("read_timeout", "10s")?,
            shutdown_timeout: r.duration("shutdown_timeout", "30s")?,
            limits: Limits::resolve(&r, max_body_bytes)?,
            dedupe_window: r.duration("dedupe_window", "7d")?,
            sqlite_busy_timeout: r.duration("sqlite_busy_timeout", "2s")?,
            sqlite_wal_limit: r.parse(
                "sqlite_wal_limit",
                "67108864",
                "a size in bytes of at least 1048576, e.g. 67108864",
                |v| v.parse::<u64>().ok().filter(|n| *n >= 1024 * 1024),
            )?,
            sources,
            delivery: DeliveryConfig {
                enabled: r.parse("delivery_enabled", "true", "true or false", |v| {
                    v.parse().ok()
                })?,
                retry_schedule: r.parse(
                    "delivery_retry_schedule",
                    crate::deliver::retry::DEFAULT_SCHEDULE,
                    "comma-separated durations such as 5s,5m,30m,2h",
                    crate::deliver::retry::parse_schedule,
                )?,
                allow_cidrs: {
                    let text = r.text("delivery_allow_cidrs").unwrap_or_default();
                    crate::deliver::ssrf::parse_allow_list(&text)
                        .map_err(|e| r.error("delivery_allow_cidrs", e))?
                },
                disable_after: r.duration("delivery_disable_after", "5d")?,
                retention: r.duration("delivery_retention", "30d")?,
                smtp_url: r.secret("smtp_url")?,
                smtp_from: r
                    .text("smtp_from")
                    .unwrap_or_else(|| "zoomhook@localhost".into()),
            },
            zoom_api: ZoomApiConfig {
                account_id: r.text("zoom_account_id"),
                client_id: r.text("zoom_client_id"),
                client_secret: r.secret("zoom_client_secret")?,
            },
            log_format: r.log_format()?,
        })
    }

    /// The configuration of a source, if it exists.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.get(name)
    }
}

/// The layers of the configuration, unvalidated: file → environment → flags.
fn layers(config_file: Option<&Path>, flags: &Flags) -> Result<RawConfig, ConfigError> {
    let mut raw = RawConfig::default();
    if let Some(path) = config_file {
        raw.load_file(path)?;
    }
    raw.merge_env(std::env::vars())?;
    if let Some(listen) = &flags.listen {
        raw.set("listen", listen.clone(), "--listen");
    }
    if let Some(database) = &flags.database {
        // The flag names the database for this run, whichever way the file or the environment
        // named one.
        raw.settings.remove("database_url_file");
        raw.set("database_url", database.clone(), "--database");
    }
    if let Some(format) = &flags.log_format {
        raw.set("log_format", format.clone(), "--log-format");
    }
    Ok(raw)
}

/// Reads typed values out of a [`RawConfig`], producing errors that name the key and origin.
struct Resolver<'a> {
    raw: &'a RawConfig,
}

impl Resolver<'_> {
    fn setting(&self, key: &str) -> Option<&Setting> {
        self.raw
            .settings
            .get(key)
            .filter(|s| !s.value.trim().is_empty())
    }

    fn text(&self, key: &str) -> Option<String> {
        self.setting(key).map(|s| s.value.trim().to_owned())
    }

    fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            origin: self
                .raw
                .settings
                .get(key)
                .map(|s| s.origin.clone())
                .unwrap_or_else(|| "defaults".into()),
            message: message.into(),
        }
    }

    fn parse<T>(
        &self,
        key: &str,
        default: &str,
        expected: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let value = self.text(key).unwrap_or_else(|| default.to_owned());
        f(&value).ok_or_else(|| self.error(key, format!("expected {expected}, got {value:?}")))
    }

    fn duration(&self, key: &str, default: &str) -> Result<Duration, ConfigError> {
        self.parse(
            key,
            default,
            "a duration such as 300s, 5m, 2h or 7d",
            parse_duration,
        )
    }

    /// A secret given inline (`key`) or as a file (`key_file`); setting both is an error.
    fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        let file_key = format!("{key}_file");
        match (self.text(key), self.text(&file_key)) {
            (Some(_), Some(_)) => Err(self.error(
                &file_key,
                format!("set either `{key}` or `{file_key}`, not both"),
            )),
            (Some(value), None) => Ok(Some(Secret(value))),
            (None, Some(path)) => {
                let value = std::fs::read_to_string(&path).map_err(|e| {
                    self.error(&file_key, format!("cannot read secret file {path:?}: {e}"))
                })?;
                let value = value.trim_end_matches(['\n', '\r']).to_owned();
                if value.is_empty() {
                    return Err(self.error(&file_key, format!("secret file {path:?} is empty")));
                }
                Ok(Some(Secret(value)))
            }
            (None, None) => Ok(None),
        }
    }

    fn source_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .raw
            .settings
            .keys()
            .filter_map(|k| k.strip_prefix("sources."))
            .map(|rest| rest.split('.').next().unwrap_or(rest).to_owned())
            .collect();
        names.push(DEFAULT_SOURCE.to_owned());
        names.sort();
        names.dedup();
        names
    }

    fn source(&self, name: &str) -> Result<SourceConfig, ConfigError> {
        let key = |field: &str| format!("sources.{name}.{field}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(self.error(&format!("sources.{name}"), "source names use lowercase letters, digits and '-' (they appear in the URL /webhooks/zoom/NAME)"));
        }
        let secrets = [
            self.secret(&key("secret"))?,
            self.secret(&key("previous_secret"))?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let basic_auth = match (
            self.text(&key("basic_username")),
            self.secret(&key("basic_password"))?,
        ) {
            (Some(username), Some(password)) => Some(BasicAuth { username, password }),
            (None, None) => None,
            _ => {
                return Err(self.error(
                    &key("basic_username"),
                    "Basic auth needs both basic_username and basic_password",
                ));
            }
        };
        let token_auth = match (
            self.text(&key("token_client_id")),
            self.secret(&key("token_client_secret"))?,
        ) {
            (Some(client_id), Some(client_secret)) => Some(TokenAuth {
                client_id,
                client_secret,
            }),
            (None, None) => None,
            _ => {
                return Err(self.error(
                    &key("token_client_id"),
                    "Token authentication needs both token_client_id and token_client_secret",
                ));
            }
        };
        let custom_header = match (
            self.text(&key("custom_header_name")),
            self.secret(&key("custom_header_value"))?,
        ) {
            (Some(header), Some(value)) => {
                let lower = header.to_ascii_lowercase();
                let name = HeaderName::from_bytes(lower.as_bytes())
                    .ok()
                    .filter(|_| lower.starts_with("x-"))
                    .ok_or_else(|| self.error(&key("custom_header_name"), format!("expected a header name starting with x- (Zoom's custom header form), got {header:?}")))?;
                Some(CustomHeader { name, value })
            }
            (None, None) => None,
            _ => {
                return Err(self.error(
                    &key("custom_header_name"),
                    "a custom header needs both custom_header_name and custom_header_value",
                ));
            }
        };
        let allow_ips = match self.text(&key("allow_ips")) {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    parse_cidr(s).ok_or_else(|| {
                        self.error(
                            &key("allow_ips"),
                            format!(
                                "expected CIDRs such as 203.0.113.0/24 or 2001:db8::/32, got {s:?}"
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let websocket = match self.text(&key("kind")).as_deref() {
            None | Some("webhook") => None,
            Some("zoom_websocket") => Some(self.websocket_source(name)?),
            Some(other) => {
                return Err(self.error(
                    &key("kind"),
                    format!(
                        "expected \"webhook\" (the default) or \"zoom_websocket\", got {other:?}"
                    ),
                ));
            }
        };
        if websocket.is_none() {
            for field in raw::WEBSOCKET_SOURCE_KEYS {
                if self.text(&key(field)).is_some() {
                    return Err(self.error(
                        &key(field),
                        format!("`{field}` belongs to WebSocket sources; add kind = \"zoom_websocket\" to [sources.{name}] or remove it"),
                    ));
                }
            }
        }
        let tolerance_key = key("timestamp_tolerance");
        Ok(SourceConfig {
            name: name.to_owned(),
            secrets,
            timestamp_tolerance: self.duration(&tolerance_key, "300s")?,
            basic_auth,
            token_auth,
            custom_header,
            verification_token: self.secret(&key("verification_token"))?,
            allow_ips,
            websocket,
        })
    }

    /// The settings of a `kind = "zoom_websocket"` source. Credentials default to Zoom's own
    /// variables (`ZOOM_ACCOUNT_ID`, `ZOOM_CLIENT_ID`, `ZOOM_CLIENT_SECRET[_FILE]`).
    fn websocket_source(&self, name: &str) -> Result<ZoomWebSocketConfig, ConfigError> {
        let key = |field: &str| format!("sources.{name}.{field}");
        for field in raw::WEBHOOK_SOURCE_KEYS {
            if self.text(&key(field)).is_some() {
                return Err(self.error(
                    &key(field),
                    format!("`{field}` verifies webhooks; a zoom_websocket source authenticates with OAuth (client_id, client_secret) instead"),
                ));
            }
        }
        let subscription_id = self.text(&key("subscription_id")).ok_or_else(|| {
            self.error(
                &key("subscription_id"),
                "a zoom_websocket source needs the event subscription's id (the subscriptionId in the wss:// URL Zoom shows)",
            )
        })?;
        let client_id = self
            .text(&key("client_id"))
            .or_else(|| self.text("zoom_client_id"))
            .ok_or_else(|| {
                self.error(
                    &key("client_id"),
                    "a zoom_websocket source needs the app's client id (or ZOOM_CLIENT_ID)",
                )
            })?;
        let client_secret = match self.secret(&key("client_secret"))? {
            Some(secret) => secret,
            None => self.secret("zoom_client_secret")?.ok_or_else(|| {
                self.error(
                    &key("client_secret"),
                    "a zoom_websocket source needs the app's client secret (or ZOOM_CLIENT_SECRET / ZOOM_CLIENT_SECRET_FILE)",
                )
            })?,
        };
        let account_id = self
            .text(&key("account_id"))
            .or_else(|| self.text("zoom_account_id"));
        let grant = match self.text(&key("grant_type")).as_deref() {
            None | Some("account_credentials") => OAuthGrant::AccountCredentials {
                account_id: account_id.ok_or_else(|| {
                    self.error(
                        &key("account_id"),
                        "Server-to-Server OAuth (grant_type account_credentials) needs the account id (or ZOOM_ACCOUNT_ID); general apps set grant_type = \"client_credentials\"",
                    )
                })?,
            },
            Some("client_credentials") => OAuthGrant::ClientCredentials,
            Some(other) => {
                return Err(self.error(
                    &key("grant_type"),
                    format!("expected \"account_credentials\" or \"client_credentials\", got {other:?}"),
                ));
            }
        };
        let url = |field: &str, default: &str, schemes: &[&str]| {
            let value = self.text(&key(field)).unwrap_or_else(|| default.to_owned());
            if schemes
                .iter()
                .any(|s| value.starts_with(&format!("{s}://")))
            {
                Ok(value)
            } else {
                Err(self.error(
                    &key(field),
                    format!("expected a {} URL, got {value:?}", schemes.join(" or ")),
                ))
            }
        };
        let config = ZoomWebSocketConfig {
            subscription_id,
            grant,
            client_id,
            client_secret,
            oauth_url: url("oauth_url", ZOOM_OAUTH_URL, &["https", "http"])?,
            websocket_url: url("websocket_url", ZOOM_WEBSOCKET_URL, &["wss", "ws"])?,
            heartbeat_interval: self.duration(&key("heartbeat_interval"), "30s")?,
            silence_timeout: self.duration(&key("silence_timeout"), "45s")?,
        };
        if config.heartbeat_interval.is_zero()
            || config.silence_timeout <= config.heartbeat_interval
        {
            return Err(self.error(
                &key("silence_timeout"),
                "silence_timeout must be longer than heartbeat_interval (Zoom: 30s heartbeats, 45s silence)",
            ));
        }
        Ok(config)
    }
}

/// Parses `300s`, `5m`, `7d`, `1h 30m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).ok()
}

/// A duration as the API writes it: the largest of `h`, `m`, `s`, `ms` that divides it exactly
/// (`90000` → `"90s"`, `120000` → `"2m"`), which `config::parse_duration` reads back.
pub fn format_duration(millis: i64) -> String {
    const UNITS: [(i64, &str); 3] = [(3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    if millis != 0 {
        for (size, unit) in UNITS {
            if millis % size == 0 {
                return format!("{}{unit}", millis / size);
            }
        }
    }
    format!("{millis}ms")
}

/// Parses a CIDR, accepting a bare address as a single-host network.
pub fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_database_password() {
        let cfg = resolve(
            "",
            &[(
                "ZOOMHOOK_DATABASE_URL",
                "postgres://app:hunter2-s3cret@db.internal/zoomhook",
            )],
        )
        .expect("valid");
        let shown = format!("{cfg:?} {}", cfg.database_url);
        assert!(!shown.contains("hunter2-s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://app:***@db.internal/zoomhook"),
            "{shown}"
        );
        assert_eq!(
            &*cfg.database_url,
            "postgres://app:hunter2-s3cret@db.internal/zoomhook"
        );
    }

    fn resolve(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::default();
        raw.merge_toml(toml, "test.toml")?;
        raw.merge_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Config::resolve(&raw)
    }

    #[test]
    fn defaults_work_with_no_configuration() {
        let cfg = resolve("", &[]).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(cfg.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(cfg.max_body_bytes, 2 * 1024 * 1024);
        assert_eq!(
            cfg.source("zoom").unwrap().timestamp_tolerance,
            Duration::from_secs(300)
        );
        assert!(!cfg.source("zoom").unwrap().has_any_check());
    }

    #[test]
    fn environment_overrides_file_and_zoom_names_are_honoured() {
        let cfg = resolve(
            "listen = \"127.0.0.1:9000\"\n[sources.zoom]\nsecret = \"from-file\"\n[sources.sales]\nsecret = \"s\"\n",
            &[("ZOOMHOOK_LISTEN", "0.0.0.0:9100"), ("ZOOM_WEBHOOK_SECRET_TOKEN", "from-env")],
        )
        .unwrap();
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:9100");
        assert_eq!(cfg.source("zoom").unwrap().secrets[0].expose(), "from-env");
        assert_eq!(cfg.source("sales").unwrap().secrets[0].expose(), "s");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "file-secret\n").unwrap();
        let cfg = resolve(
            "",
            &[("ZOOM_WEBHOOK_SECRET_TOKEN_FILE", path.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(
            cfg.source("zoom").unwrap().secrets[0].expose(),
            "file-secret"
        );
    }

    #[test]
    fn the_database_url_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("database_url");
        std::fs::write(&path, "postgres://zoomhook:s3cret@db:5432/zoomhook\n").unwrap();
        let path = path.to_str().unwrap();
        let cfg = resolve("", &[("ZOOMHOOK_DATABASE_URL_FILE", path)]).unwrap();
        assert_eq!(
            cfg.database_url,
            "postgres://zoomhook:s3cret@db:5432/zoomhook"
        );

        let both = resolve(
            "database_url = \"sqlite://a.db\"\n",
            &[("ZOOMHOOK_DATABASE_URL_FILE", path)],
        )
        .unwrap_err();
        assert_eq!(both.key, "database_url_file");

        let missing = dir.path().join("absent");
        let err = resolve(
            "",
            &[("ZOOMHOOK_DATABASE_URL_FILE", missing.to_str().unwrap())],
        )
        .unwrap_err();
        assert_eq!(err.key, "database_url_file");
        assert!(err.to_string().contains("cannot read secret file"), "{err}");

        let not_a_url = dir.path().join("not_a_url");
        std::fs::write(&not_a_url, "mysql://db\n").unwrap();
        let err = resolve(
            "",
            &[("ZOOMHOOK_DATABASE_URL_FILE", not_a_url.to_str().unwrap())],
        )
        .unwrap_err();
        assert_eq!(err.key, "database_url_file");
        assert!(
            !err.to_string().contains("mysql"),
            "the value stays out of errors: {err}"
        );
    }

    #[test]
    fn the_database_flag_wins_over_a_database_url_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("database_url");
        std::fs::write(&secret, "postgres://zoomhook@db:5432/zoomhook\n").unwrap();
        let file = dir.path().join("zoomhook.toml");
        std::fs::write(
            &file,
            format!("database_url_file = {:?}\n", secret.to_str().unwrap()),
        )
        .unwrap();
        let flags = Flags {
            database: Some("sqlite://here.db".into()),
            ..Flags::default()
        };
        let cfg = Config::load(Some(&file), &flags).unwrap();
        assert_eq!(cfg.database_url, "sqlite://here.db");
        let cfg = Config::load(Some(&file), &Flags::default()).unwrap();
        assert_eq!(cfg.database_url, "postgres://zoomhook@db:5432/zoomhook");
    }

    #[test]
    fn errors_name_the_key_and_where_it_was_set() {
        let err = resolve("", &[("ZOOMHOOK_READ_TIMEOUT", "soon")]).unwrap_err();
        assert_eq!(err.key, "read_timeout");
        assert_eq!(err.origin, "ZOOMHOOK_READ_TIMEOUT");
        let err = resolve("[sources.zoom]\nallow_ips = [\"10.0.0.0/33\"]\n", &[]).unwrap_err();
        assert_eq!(err.key, "sources.zoom.allow_ips");
        let err = resolve(
            "[sources.zoom]\ncustom_header_name = \"my-key\"\ncustom_header_value = \"v\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key, "sources.zoom.custom_header_name");
        let err = resolve("[sources.Bad_Name]\nsecret = \"x\"\n", &[]).unwrap_err();
        assert!(err.key.starts_with("sources.Bad_Name"), "{err}");
        let err = resolve("", &[("ZOOMHOOK_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(err.key, "database_url");
    }

    #[test]
    fn websocket_sources_take_zoom_credentials_and_name_what_is_missing() {
        let toml = "[sources.live]\nkind = \"zoom_websocket\"\nsubscription_id = \"sub1\"\n";
        let env = [
            ("ZOOM_ACCOUNT_ID", "acc"),
            ("ZOOM_CLIENT_ID", "cid"),
            ("ZOOM_CLIENT_SECRET", "csecret"),
        ];
        let cfg = resolve(toml, &env).unwrap();
        let ws = cfg.source("live").unwrap().websocket.clone().unwrap();
        assert_eq!(ws.subscription_id, "sub1");
        assert_eq!(ws.client_id, "cid");
        assert_eq!(ws.client_secret.expose(), "csecret");
        assert_eq!(
            ws.grant,
            OAuthGrant::AccountCredentials {
                account_id: "acc".into()
            }
        );
        assert_eq!(ws.websocket_url, ZOOM_WEBSOCKET_URL);
        assert_eq!(ws.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(ws.silence_timeout, Duration::from_secs(45));
        assert!(!cfg.source("zoom").unwrap().is_websocket());

        let err = resolve(toml, &env[1..]).unwrap_err();
        assert_eq!(err.key, "sources.live.account_id", "{err}");
        let err = resolve("[sources.live]\nkind = \"zoom_websocket\"\n", &env).unwrap_err();
        assert_eq!(err.key, "sources.live.subscription_id", "{err}");
        let err = resolve(&format!("{toml}secret = \"s\"\n"), &env).unwrap_err();
        assert_eq!(err.key, "sources.live.secret", "{err}");
        let err = resolve("[sources.hook]\nsubscription_id = \"x\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "sources.hook.subscription_id", "{err}");
        let err = resolve("[sources.live]\nkind = \"websocket\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "sources.live.kind", "{err}");
        let err = resolve(&format!("{toml}websocket_url = \"http://x\"\n"), &env).unwrap_err();
        assert_eq!(err.key, "sources.live.websocket_url", "{err}");
        let err = resolve(&format!("{toml}silence_timeout = \"10s\"\n"), &env).unwrap_err();
        assert_eq!(err.key, "sources.live.silence_timeout", "{err}");
        let general = resolve(
            &format!("{toml}grant_type = \"client_credentials\"\n"),
            &env[1..],
        )
        .unwrap();
        assert_eq!(
            general
                .source("live")
                .unwrap()
                .websocket
                .clone()
                .unwrap()
                .grant,
            OAuthGrant::ClientCredentials
        );
        let err = resolve("instance_id = \"has space\"\n", &[]).unwrap_err();
        assert_eq!(err.key, "instance_id");
    }
}
