//! Resource limits of the HTTP server: how many connections, how long a client may take to
//! send its headers or sit idle, how many HTTP/2 streams one connection may open, and how many
//! body bytes all requests together may hold in memory. The defaults are chosen so that a small
//! VM (1–2 GB, `ulimit -n 1024`) survives a flood of unauthenticated clients.

use std::time::Duration;

use super::{ConfigError, Resolver};

/// Connection and memory limits (see the README's configuration table).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections open at once; `None` means "derive from `ulimit -n`" (see
    /// [`Limits::effective_max_connections`]). Further connections wait in the kernel's accept
    /// backlog, and idle or still-sending-headers connections are closed to make room.
    pub max_connections: Option<usize>,
    /// Time a client has to send a complete request head (request line and headers), from its
    /// first byte (or from the connection's start for its first request).
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may stay idle between two requests.
    pub keep_alive_timeout: Duration,
    /// Most concurrent HTTP/2 streams (requests) on one connection.
    pub http2_max_concurrent_streams: u32,
    /// Body bytes all requests together may hold; beyond it webhooks get 503 with `Retry-After`.
    pub max_body_bytes_in_flight: usize,
    /// How long one write to a stream client may take before the client counts as too slow and
    /// is closed (it resumes with the `after_seq` its close reason names).
    pub stream_send_timeout: Duration,
    /// How often the server pings stream clients; a client that has not answered the previous
    /// ping when the next one is due is closed.
    pub stream_ping_interval: Duration,
}

/// File descriptors kept free for everything that is not an inbound connection: the database,
/// outbound deliveries, log files.
const RESERVED_FDS: u64 = 128;
/// Upper bound of the derived default: more connections than this is a deliberate setting.
const DEFAULT_MAX_CONNECTIONS: u64 = 1024;

impl Limits {
    pub(super) fn resolve(r: &Resolver<'_>, max_body_bytes: usize) -> Result<Limits, ConfigError> {
        let max_connections = match r.text("max_connections").as_deref() {
            None | Some("auto") => None,
            Some(_) => Some(r.parse(
                "max_connections",
                "auto",
                "a number of connections (at least 1), or auto",
                |v| v.parse::<usize>().ok().filter(|n| *n >= 1),
            )?),
        };
        let http2_max_concurrent_streams = r.parse(
            "http2_max_concurrent_streams",
            "64",
            "a number of streams, at least 1",
            |v| v.parse::<u32>().ok().filter(|n| *n >= 1),
        )?;
        let max_body_bytes_in_flight = r.parse(
            "max_body_bytes_in_flight",
            "67108864",
            "a size in bytes, e.g. 67108864",
            |v| v.parse::<usize>().ok(),
        )?;
        // A budget smaller than one body would refuse the largest legitimate webhook forever.
        // Permits of a tokio semaphore are counted in u32 per acquisition, hence the upper bound.
        if max_body_bytes_in_flight < max_body_bytes || max_body_bytes_in_flight > u32::MAX as usize
        {
            return Err(r.error(
                "max_body_bytes_in_flight",
                format!(
                    "expected at least max_body_bytes ({max_body_bytes}) and at most {}, got {max_body_bytes_in_flight}",
                    u32::MAX
                ),
            ));
        }
        Ok(Limits {
            max_connections,
            header_read_timeout: positive(r, "header_read_timeout", "10s")?,
            keep_alive_timeout: positive(r, "keep_alive_timeout", "60s")?,
            http2_max_concurrent_streams,
            max_body_bytes_in_flight,
            stream_send_timeout: positive(r, "stream_send_timeout", "10s")?,
            stream_ping_interval: positive(r, "stream_ping_interval", "20s")?,
        })
    }

    /// The connection cap in force: the configured one, or half of the soft `RLIMIT_NOFILE`
    /// (after a reserve for the database and outbound deliveries), at most 1024.
    pub fn effective_max_connections(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let derived = open_files_limit()
                .map(|n| n.saturating_sub(RESERVED_FDS) / 2)
                .unwrap_or(DEFAULT_MAX_CONNECTIONS);
            derived.clamp(16, DEFAULT_MAX_CONNECTIONS) as usize
        })
    }
}

/// A duration that must not be zero (a zero timeout would close every connection at once).
fn positive(r: &Resolver<'_>, key: &str, default: &str) -> Result<Duration, ConfigError> {
    let value = r.duration(key, default)?;
    if value.is_zero() {
        return Err(r.error(key, "expected a duration above zero, such as 10s"));
    }
    Ok(value)
}

/// The soft limit of open file descriptors of this process, if the platform tells.
fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes into the struct we pass, which lives on this stack frame.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, RawConfig};
    use std::time::Duration;

    fn resolve(env: &[(&str, &str)]) -> Result<Config, super::ConfigError> {
        let mut raw = RawConfig::default();
        raw.merge_env(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))?;
        Config::resolve(&raw)
    }

    #[test]
    fn defaults_suit_a_small_vm() {
        let limits = resolve(&[]).unwrap().limits;
        assert_eq!(limits.max_connections, None);
        let derived = limits.effective_max_connections();
        assert!((16..=1024).contains(&derived), "{derived}");
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.keep_alive_timeout, Duration::from_secs(60));
        assert_eq!(limits.http2_max_concurrent_streams, 64);
        assert_eq!(limits.max_body_bytes_in_flight, 64 * 1024 * 1024);
    }

    #[test]
    fn environment_sets_every_limit() {
        let limits = resolve(&[
            ("ZOOMHOOK_MAX_CONNECTIONS", "200"),
            ("ZOOMHOOK_HEADER_READ_TIMEOUT", "2s"),
            ("ZOOMHOOK_KEEP_ALIVE_TIMEOUT", "5m"),
            ("ZOOMHOOK_HTTP2_MAX_CONCURRENT_STREAMS", "8"),
            ("ZOOMHOOK_MAX_BODY_BYTES_IN_FLIGHT", "4194304"),
        ])
        .unwrap()
        .limits;
        assert_eq!(limits.effective_max_connections(), 200);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.keep_alive_timeout, Duration::from_secs(300));
        assert_eq!(limits.http2_max_concurrent_streams, 8);
        assert_eq!(limits.max_body_bytes_in_flight, 4 * 1024 * 1024);
    }

    #[test]
    fn bad_limits_name_their_key() {
        for (var, value, key) in [
            ("ZOOMHOOK_MAX_CONNECTIONS", "0", "max_connections"),
            ("ZOOMHOOK_MAX_CONNECTIONS", "many", "max_connections"),
            ("ZOOMHOOK_HEADER_READ_TIMEOUT", "0s", "header_read_timeout"),
            ("ZOOMHOOK_KEEP_ALIVE_TIMEOUT", "soon", "keep_alive_timeout"),
            (
                "ZOOMHOOK_HTTP2_MAX_CONCURRENT_STREAMS",
                "0",
                "http2_max_concurrent_streams",
            ),
            // Smaller than one body (max_body_bytes, 2 MiB by default).
            (
                "ZOOMHOOK_MAX_BODY_BYTES_IN_FLIGHT",
                "1048576",
                "max_body_bytes_in_flight",
            ),
        ] {
            let err = resolve(&[(var, value)]).unwrap_err();
            assert_eq!(err.key, key, "{var}={value}: {err}");
            assert_eq!(err.origin, var);
        }
    }
}
