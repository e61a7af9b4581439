//! `zoomhook health`: asks a running server's `/readyz` and exits 0 only when it answers ready.
//!
//! Why a subcommand: a container's HEALTHCHECK (and any probe on a host) needs an HTTP client,
//! and the runtime image carries no curl or wget — but it does carry this binary. By default the
//! address comes from the same configuration `serve` reads (`--config`, `ZOOMHOOK_LISTEN`,
//! `--listen`), so the probe follows the server wherever it is told to listen.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use super::ServerArgs;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// URL to ask; by default /readyz at the configured listen address (0.0.0.0 and [::] are
    /// asked at the loopback address).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Give up (and report unhealthy) after this long.
    #[arg(long, default_value = "5s", value_parser = |s: &str| crate::config::parse_duration(s).ok_or("expected a duration like 5s"))]
    pub timeout: Duration,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Exits with an error (status 1) unless the server answers 200 from `/readyz` in time.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let url = match &args.url {
        Some(url) => reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .with_context(|| format!("--url {url:?} is not an http:// or https:// URL"))?
            .to_string(),
        None => readyz_url(args.server.load()?.listen),
    };
    let client = reqwest::Client::builder()
        .timeout(args.timeout)
        .build()
        .context("cannot set up the HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("not ready: cannot reach {url}"))?;
    let status = response.status();
    // The body is small JSON (`{"status": …, "detail": …}`); a failure to read it only loses
    // the detail, not the verdict.
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("status"))
                .and_then(|d| d.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    if !status.is_success() {
        bail!("not ready: {url} answered {status}: {detail}");
    }
    println!("{detail}: {url}");
    Ok(())
}

/// `/readyz` on `listen`, with an unspecified address replaced by the loopback of its family
/// (a server bound to 0.0.0.0 is reachable at 127.0.0.1 from inside its own container).
fn readyz_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/readyz", SocketAddr::new(ip, listen.port()))
}

#[cfg(test)]
mod tests {
    use super::readyz_url;

    #[test]
    fn unspecified_listen_addresses_are_asked_at_loopback() {
        let url = |addr: &str| readyz_url(addr.parse().unwrap());
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080/readyz");
        assert_eq!(url("[::]:9000"), "http://[::1]:9000/readyz");
        assert_eq!(url("10.1.2.3:8080"), "http://10.1.2.3:8080/readyz");
    }
}
