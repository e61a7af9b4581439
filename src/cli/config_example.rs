//! `zoomhook config example`

/// Prints the annotated example configuration: every key with its default (or an example), its
/// form, its environment variable and what it is for. The repository's `zoomhook.example.toml`
/// is this output, so `zoomhook config example > zoomhook.toml` starts a configuration from the
/// running version's own keys.
pub fn run() -> anyhow::Result<()> {
    print!("{}", crate::config::example_toml());
    Ok(())
}
