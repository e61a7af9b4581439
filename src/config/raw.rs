//! The configuration as written by the user, before validation: the TOML file, then `ZOOMHOOK_*`
//! and Zoom's own environment variables, then flags. Every value remembers where it came from,
//! so an error can name the exact key *and* the place to fix it.

use std::collections::BTreeMap;
use std::path::Path;

use super::ConfigError;

/// A value and where it was set.
#[derive(Debug, Clone)]
pub struct Setting {
    pub value: String,
    pub origin: String,
}

/// Flat `key → setting` view of the whole configuration (`listen`, `sources.zoom.secret`, …).
/// Later layers overwrite earlier ones.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    pub settings: BTreeMap<String, Setting>,
}

/// Top-level keys of the TOML file.
pub const TOP_KEYS: &[&str] = &[
    "listen",
    "instance_id",
    "database_url",
    "database_url_file",
    "admin_token",
    "admin_token_file",
    "max_body_bytes",
    "read_timeout",
    "shutdown_timeout",
    "log_format",
    "max_connections",
    "header_read_timeout",
    "keep_alive_timeout",
    "http2_max_concurrent_streams",
    "max_body_bytes_in_flight",
    "stream_send_timeout",
    "stream_ping_interval",
    "dedupe_window",
    "sqlite_busy_timeout",
    "sqlite_wal_limit",
    "zoom_account_id",
    "zoom_client_id",
    "zoom_client_secret",
    "zoom_client_secret_file",
    "delivery_enabled",
    "delivery_retry_schedule",
    "delivery_allow_cidrs",
    "delivery_disable_after",
    "delivery_retention",
    "smtp_url",
    "smtp_url_file",
    "smtp_from",
];

/// Keys of a `[sources.NAME]` table of either kind.
pub const COMMON_SOURCE_KEYS: &[&str] = &["kind", "timestamp_tolerance"];

/// Keys of a webhook source (how its requests are verified).
pub const WEBHOOK_SOURCE_KEYS: &[&str] = &[
    "secret",
    "secret_file",
    "previous_secret",
    "previous_secret_file",
    "basic_username",
    "basic_password",
    "basic_password_file",
    "token_client_id",
    "token_client_secret",
    "token_client_secret_file",
    "custom_header_name",
    "custom_header_value",
    "custom_header_value_file",
    "verification_token",
    "verification_token_file",
    "allow_ips",
];

/// Keys of a `kind = "zoom_websocket"` source (its subscription and OAuth credentials).
pub const WEBSOCKET_SOURCE_KEYS: &[&str] = &[
    "subscription_id",
    "account_id",
    "client_id",
    "client_secret",
    "client_secret_file",
    "grant_type",
    "oauth_url",
    "websocket_url",
    "heartbeat_interval",
    "silence_timeout",
];

/// Every key of a `[sources.NAME]` table.
pub fn source_keys() -> impl Iterator<Item = &'static str> {
    [
        COMMON_SOURCE_KEYS,
        WEBHOOK_SOURCE_KEYS,
        WEBSOCKET_SOURCE_KEYS,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// Variables that set a key under another name than `ZOOMHOOK_<KEY>`: Zoom's own conventional
/// names, and a short form of the default source's tolerance.
const ENV_ALIASES: &[(&str, &str)] = &[
    (
        "ZOOMHOOK_TIMESTAMP_TOLERANCE",
        "sources.zoom.timestamp_tolerance",
    ),
    ("ZOOM_WEBHOOK_SECRET_TOKEN", "sources.zoom.secret"),
    ("ZOOM_WEBHOOK_SECRET_TOKEN_FILE", "sources.zoom.secret_file"),
    ("ZOOM_VERIFICATION_TOKEN", "sources.zoom.verification_token"),
    ("ZOOM_ACCOUNT_ID", "zoom_account_id"),
    ("ZOOM_CLIENT_ID", "zoom_client_id"),
    ("ZOOM_CLIENT_SECRET", "zoom_client_secret"),
    ("ZOOM_CLIENT_SECRET_FILE", "zoom_client_secret_file"),
];

impl RawConfig {
    /// Sets `key` from `origin`.
    pub fn set(&mut self, key: &str, value: impl Into<String>, origin: impl Into<String>) {
        self.settings.insert(
            key.to_owned(),
            Setting {
                value: value.into(),
                origin: origin.into(),
            },
        );
    }

    /// Layer 1: the TOML file.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            key: "--config".into(),
            origin: origin.clone(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        self.merge_toml(&text, &origin)
    }

    /// Merges TOML text (the file layer).
    pub fn merge_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
            key: "(file)".into(),
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        for (key, value) in table {
            if key == "sources" {
                let sources = value.as_table().ok_or_else(|| {
                    bad_type("sources", origin, "a table of [sources.NAME] tables")
                })?;
                for (name, source) in sources {
                    let source = source
                        .as_table()
                        .ok_or_else(|| bad_type(&format!("sources.{name}"), origin, "a table"))?;
                    for (field, value) in source {
                        let full = format!("sources.{name}.{field}");
                        if !source_keys().any(|k| k == field) {
                            let known: Vec<&str> = source_keys().collect();
                            return Err(unknown_key(&full, origin, &known));
                        }
                        self.set(&full, toml_scalar(&full, value, origin)?, origin);
                    }
                    // A source table with no keys still declares the source.
                    self.set(&format!("sources.{name}"), "", origin);
                }
            } else if TOP_KEYS.contains(&key.as_str()) {
                self.set(&key, toml_scalar(&key, &value, origin)?, origin);
            } else {
                return Err(unknown_key(&key, origin, TOP_KEYS));
            }
        }
        Ok(())
    }

    /// Layer 2: environment variables (`ZOOMHOOK_<KEY>`, `ZOOMHOOK_SOURCE_<NAME>_<KEY>`, and
    /// Zoom's conventional names such as `ZOOM_WEBHOOK_SECRET_TOKEN`).
    pub fn merge_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            if let Some(&(_, key)) = ENV_ALIASES.iter().find(|(env, _)| *env == name) {
                self.set(key, value, name);
            } else if let Some(rest) = name.strip_prefix("ZOOMHOOK_SOURCE_") {
                let key = source_env_key(rest).ok_or_else(|| ConfigError {
                    key: name.clone(),
                    origin: "environment".into(),
                    message: format!(
                        "expected ZOOMHOOK_SOURCE_<NAME>_<KEY> with KEY one of {}",
                        source_keys().collect::<Vec<_>>().join(", ").to_uppercase()
                    ),
                })?;
                self.set(&key, value, name);
            } else if let Some(rest) = name.strip_prefix("ZOOMHOOK_") {
                let key = rest.to_ascii_lowercase();
                if TOP_KEYS.contains(&key.as_str()) {
                    self.set(&key, value, name);
                }
                // Other ZOOMHOOK_* variables belong to the CLI (ZOOMHOOK_URL, ZOOMHOOK_TOKEN) or to
                // later features (delivery); they are read where they are used.
            }
        }
        Ok(())
    }
}

/// The environment variables that set `key` (a flat key: `listen`, `sources.zoom.secret`): the
/// `ZOOMHOOK_…` name first, then any alias. Documentation is generated from this, and a test
/// feeds every name back through [`RawConfig::merge_env`], so the two cannot disagree.
pub fn env_names(key: &str) -> Vec<String> {
    let primary = match key
        .strip_prefix("sources.")
        .and_then(|rest| rest.split_once('.'))
    {
        Some((name, field)) => format!(
            "ZOOMHOOK_SOURCE_{}_{}",
            name.replace('-', "_").to_ascii_uppercase(),
            field.to_ascii_uppercase()
        ),
        None => format!("ZOOMHOOK_{}", key.to_ascii_uppercase()),
    };
    std::iter::once(primary)
        .chain(
            ENV_ALIASES
                .iter()
                .filter(|(_, target)| *target == key)
                .map(|(env, _)| (*env).to_owned()),
        )
        .collect()
}

/// `ZOOMHOOK_SOURCE_<NAME>_<KEY>` → `sources.<name>.<key>`; the longest matching KEY wins so
/// source names may themselves contain underscores.
fn source_env_key(rest: &str) -> Option<String> {
    let lower = rest.to_ascii_lowercase();
    source_keys()
        .filter_map(|field| {
            let name = lower.strip_suffix(field)?.strip_suffix('_')?;
            (!name.is_empty()).then(|| {
                (
                    field.len(),
                    format!("sources.{}.{field}", name.replace('_', "-")),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, key)| key)
}

fn toml_scalar(key: &str, value: &toml::Value, origin: &str) -> Result<String, ConfigError> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                _ => Err(bad_type(key, origin, "an array of strings")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        _ => Err(bad_type(
            key,
            origin,
            "a string, integer or array of strings",
        )),
    }
}

fn bad_type(key: &str, origin: &str, expected: &str) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        origin: origin.to_owned(),
        message: format!("expected {expected}"),
    }
}

fn unknown_key(key: &str, origin: &str, known: &[&str]) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        origin: origin.to_owned(),
        message: format!("unknown key; known keys here are: {}", known.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_source_keys_allow_underscored_names_and_longest_field() {
        assert_eq!(
            source_env_key("SALES_SECRET").as_deref(),
            Some("sources.sales.secret")
        );
        assert_eq!(
            source_env_key("SALES_EU_SECRET_FILE").as_deref(),
            Some("sources.sales-eu.secret_file")
        );
        assert_eq!(
            source_env_key("ZOOM_PREVIOUS_SECRET").as_deref(),
            Some("sources.zoom.previous_secret")
        );
        assert_eq!(source_env_key("ZOOM_NOPE"), None);
    }

    #[test]
    fn every_documented_variable_sets_its_key() {
        let keys = TOP_KEYS.iter().map(|k| k.to_string()).chain(
            ["zoom", "sales-eu"]
                .into_iter()
                .flat_map(|name| source_keys().map(move |f| format!("sources.{name}.{f}"))),
        );
        for key in keys {
            let names = env_names(&key);
            assert!(!names.is_empty(), "{key}");
            for name in names {
                let mut raw = RawConfig::default();
                raw.merge_env([(name.clone(), "v".to_owned())]).unwrap();
                let set: Vec<&String> = raw.settings.keys().collect();
                assert_eq!(set, [&key], "{name} should set {key}");
            }
        }
        assert_eq!(
            env_names("sources.zoom.secret"),
            ["ZOOMHOOK_SOURCE_ZOOM_SECRET", "ZOOM_WEBHOOK_SECRET_TOKEN"]
        );
    }

    #[test]
    fn file_rejects_unknown_keys_by_name() {
        let mut raw = RawConfig::default();
        let err = raw
            .merge_toml("[sources.zoom]\nsecert = \"x\"\n", "zoomhook.toml")
            .unwrap_err();
        assert_eq!(err.key, "sources.zoom.secert");
        let err = raw
            .merge_toml("lisen = \"x\"\n", "zoomhook.toml")
            .unwrap_err();
        assert_eq!(err.key, "lisen");
    }
}
