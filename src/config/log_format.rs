//! `log_format`: how the process writes its log lines.
//!
//! Why this key is read apart from the rest: logging starts before the configuration is loaded
//! (so that loading, opening the store and everything after can log), yet the format belongs to
//! the same layers as every other key (file → environment → flags). [`load_log_format`] reads just
//! this key from those layers; [`Config::resolve`](super::Config::resolve) reads it again, so a
//! bad value fails `config check` and `serve` with the key named like any other.

use std::path::Path;

use super::{ConfigError, Flags, Resolver};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (tracing's usual `LEVEL target: message key=value`).
    #[default]
    Text,
    /// One JSON object per line, for log collectors (Loki, Elasticsearch, CloudWatch, journald
    /// pipelines) that would otherwise have to parse the text form.
    Json,
}

impl LogFormat {
    /// `text` or `json` (any case).
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The log format alone, from the same layers [`Config::load`](super::Config::load) reads.
pub fn load_log_format(
    config_file: Option<&Path>,
    flags: &Flags,
) -> Result<LogFormat, ConfigError> {
    let raw = super::layers(config_file, flags)?;
    Resolver { raw: &raw }.log_format()
}

impl Resolver<'_> {
    pub(super) fn log_format(&self) -> Result<LogFormat, ConfigError> {
        self.parse("log_format", "text", "text or json", LogFormat::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn resolve(toml: &str, env: &[(&str, &str)]) -> Result<LogFormat, ConfigError> {
        let mut raw = RawConfig::default();
        raw.merge_toml(toml, "test.toml")?;
        raw.merge_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Resolver { raw: &raw }.log_format()
    }

    #[test]
    fn log_format_defaults_to_text_and_the_environment_overrides_the_file() {
        assert_eq!(resolve("", &[]).unwrap(), LogFormat::Text);
        assert_eq!(
            resolve("log_format = \"json\"\n", &[]).unwrap(),
            LogFormat::Json
        );
        assert_eq!(
            resolve(
                "log_format = \"json\"\n",
                &[("ZOOMHOOK_LOG_FORMAT", "text")]
            )
            .unwrap(),
            LogFormat::Text
        );
    }

    #[test]
    fn flag_wins_over_environment_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("zoomhook.toml");
        std::fs::write(&file, "log_format = \"text\"\n").unwrap();
        let flags = Flags {
            log_format: Some("json".into()),
            ..Flags::default()
        };
        assert_eq!(
            load_log_format(Some(&file), &flags).unwrap(),
            LogFormat::Json
        );
    }

    #[test]
    fn a_bad_log_format_names_the_key_and_the_forms() {
        let err = resolve("", &[("ZOOMHOOK_LOG_FORMAT", "xml")]).unwrap_err();
        assert_eq!(err.key, "log_format");
        assert_eq!(err.origin, "ZOOMHOOK_LOG_FORMAT");
        assert!(err.message.contains("text or json"), "{err}");
    }
}
