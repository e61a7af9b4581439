//! SSRF guard: outbound deliveries must not become a way to reach internal networks.
//!
//! Two checks, because hyper's connector connects to IP-literal hosts without ever calling the
//! resolver:
//!
//! - [`SsrfPolicy::check_url`] runs before a request is sent. It refuses unusable schemes,
//!   credentials in the URL, and IP-literal hosts in refused ranges. Callers must run it on every
//!   destination, because nothing else sees IP literals.
//! - [`GuardedResolver`] is the delivery client's DNS resolver. It drops every refused address from the
//!   answer, so the address connected to is one that was checked: the check and the connection
//!   use the same resolution, which leaves no DNS-rebinding gap.
//!
//! [`DeliveryClient`](super::http::DeliveryClient) is built with the resolver installed, without
//! redirects (a redirect could point anywhere) and without a proxy (a proxy would resolve the
//! name itself, out of the guard's sight).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;

/// The environment variable that lists extra networks deliveries may reach.
pub const ALLOW_CIDRS_ENV: &str = "ZOOMHOOK_DELIVERY_ALLOW_CIDRS";

/// Which destinations outbound deliveries may reach.
#[derive(Debug, Clone, Default)]
pub struct SsrfPolicy {
    /// Networks allowed although they are in a refused range (e.g. loopback for tests, or an
    /// internal network the operator trusts). Checked before the ranges, so it always wins.
    allow: Vec<IpNet>,
    /// Refuse plain `http://` destinations.
    https_only: bool,
}

impl SsrfPolicy {
    /// A policy that allows public unicast addresses and the `allow` networks, over http or https.
    pub fn new(allow: Vec<IpNet>) -> SsrfPolicy {
        SsrfPolicy {
            allow,
            https_only: false,
        }
    }

    /// Sets whether plain `http://` destinations are refused.
    pub fn with_https_only(self, https_only: bool) -> SsrfPolicy {
        SsrfPolicy { https_only, ..self }
    }

    /// Whether plain `http://` destinations are refused.
    pub fn https_only(&self) -> bool {
        self.https_only
    }

    /// True if `ip` is a public unicast address, or is inside one of the allow-listed networks.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }

    /// Why `ip` is refused, or `None` if deliveries may connect to it.
    pub fn refusal(&self, ip: IpAddr) -> Option<Refusal> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        match ip {
            IpAddr::V4(v4) => ipv4_range(v4).map(|range| Refusal {
                range,
                embedded: None,
            }),
            // Traffic to these addresses ends up at the embedded IPv4 address, so that address is
            // what is judged, allow-list included.
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                Some(v4) => self.refusal(IpAddr::V4(v4)).map(|inner| Refusal {
                    range: inner.range,
                    embedded: Some(v4),
                }),
                None => ipv6_range(v6).map(|range| Refusal {
                    range,
                    embedded: None,
                }),
            },
        }
    }

    /// Checks a destination URL before any connection: the scheme is http or https (only https
    /// with `https_only`), there is a host, there are no credentials, and an IP-literal host is
    /// allowed. Names are checked later, by [`GuardedResolver`], on the addresses they resolve to.
    pub fn check_url(&self, url: &Url) -> Result<(), SsrfError> {
        match url.scheme() {
            "https" => {}
            "http" if !self.https_only => {}
            "http" => return Err(SsrfError::HttpsRequired),
            other => return Err(SsrfError::UnsupportedScheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(SsrfError::Credentials);
        }
        let host = url.host_str().ok_or(SsrfError::MissingHost)?;
        // The URL parser has already normalised IPv4 literals (`127.1`, `0x7f000001` become
        // `127.0.0.1`); IPv6 literals keep their brackets in `host_str`.
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match literal.parse::<IpAddr>() {
            Ok(ip) => match self.refusal(ip) {
                Some(refusal) => Err(SsrfError::RefusedAddress(RefusedAddr { ip, refusal })),
                None => Ok(()),
            },
            Err(_) => Ok(()),
        }
    }
}

/// Why an address is refused: the range it is in, and the IPv4 address it embeds if that is what
/// was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub range: SpecialRange,
    /// Set for IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses.
    pub embedded: Option<Ipv4Addr>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded {
            Some(v4) => write!(f, "embeds {v4}, {}", self.range),
            None => write!(f, "is {}", self.range),
        }
    }
}

/// A special-purpose address range that deliveries may not reach unless allow-listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialRange {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    SharedAddressSpace,
    ProtocolAssignments,
    Documentation,
    Benchmarking,
    Multicast,
    Broadcast,
    UniqueLocal,
    SiteLocal,
    DiscardOnly,
    Reserved,
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialRange::Unspecified => "an unspecified (\"this network\") address",
            SpecialRange::Loopback => "a loopback address",
            SpecialRange::Private => "a private address",
            SpecialRange::LinkLocal => {
                "a link-local address (this includes cloud metadata services)"
            }
            SpecialRange::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            SpecialRange::ProtocolAssignments => "an IETF protocol assignment address",
            SpecialRange::Documentation => "a documentation address",
            SpecialRange::Benchmarking => "a benchmarking address",
            SpecialRange::Multicast => "a multicast address",
            SpecialRange::Broadcast => "the broadcast address",
            SpecialRange::UniqueLocal => {
                "a unique-local address (this includes cloud metadata services)"
            }
            SpecialRange::SiteLocal => "a site-local address",
            SpecialRange::DiscardOnly => "a discard-only address",
            SpecialRange::Reserved => "a reserved address",
        })
    }
}

/// A refused address and why; displays as e.g. `127.0.0.1 is a loopback address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedAddr {
    pub ip: IpAddr,
    pub refusal: Refusal,
}

impl fmt::Display for RefusedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.ip, self.refusal)
    }
}

/// A destination the guard will not deliver to. `Display` is the message for the user.
#[derive(Debug, thiserror::Error)]
pub enum SsrfError {
    #[error("destination scheme `{0}` is not supported; use https (or http)")]
    UnsupportedScheme(String),
    #[error("destination must use https; plain http is refused by this gateway's configuration")]
    HttpsRequired,
    #[error("destination URL has no host")]
    MissingHost,
    #[error("destination URL must not contain credentials (user:pass@); send them in a header")]
    Credentials,
    #[error("{0}; allow it with {ALLOW_CIDRS_ENV}")]
    RefusedAddress(RefusedAddr),
    #[error(
        "{host} resolves only to refused addresses ({}); allow them with {ALLOW_CIDRS_ENV}",
        join(refused)
    )]
    RefusedName {
        host: String,
        refused: Vec<RefusedAddr>,
    },
    #[error("{host} resolves to no addresses")]
    NoAddresses { host: String },
    #[error("cannot resolve {host}")]
    Lookup {
        host: String,
        #[source]
        source: io::Error,
    },
}

fn join(refused: &[RefusedAddr]) -> String {
    refused
        .iter()
        .map(RefusedAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A test's stand-in for the system resolver.
pub type Lookup = Arc<dyn Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync>;

/// The delivery client's DNS resolver: it resolves names and drops every address the policy refuses, so the
/// address connected to is always one that was checked.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<SsrfPolicy>,
    /// `None` means the system resolver.
    lookup: Option<Lookup>,
}

impl GuardedResolver {
    /// A resolver that asks the system resolver (`getaddrinfo`) and applies `policy`.
    pub fn new(policy: Arc<SsrfPolicy>) -> GuardedResolver {
        GuardedResolver {
            policy,
            lookup: None,
        }
    }

    /// For tests: resolve with `lookup` instead of the system resolver.
    pub fn with_lookup(policy: Arc<SsrfPolicy>, lookup: Lookup) -> GuardedResolver {
        GuardedResolver {
            policy,
            lookup: Some(lookup),
        }
    }

    /// The policy the resolver applies.
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// Resolves `host` and keeps only the allowed addresses; fails if none remains.
    pub fn resolve_allowed(
        &self,
        host: &str,
    ) -> impl Future<Output = Result<Vec<IpAddr>, SsrfError>> + Send + 'static {
        let policy = Arc::clone(&self.policy);
        let lookup = self.lookup.clone();
        let host = host.to_owned();
        async move {
            let resolved = match lookup {
                Some(lookup) => lookup(&host),
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map(|addrs| addrs.map(|addr| addr.ip()).collect()),
            };
            let resolved = resolved.map_err(|source| SsrfError::Lookup {
                host: host.clone(),
                source,
            })?;
            keep_allowed(&policy, host, resolved)
        }
    }
}

/// What hyper's connector asks of a resolver: the addresses of a name.
impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = SsrfError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, SsrfError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SsrfError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allowed = self.resolve_allowed(name.as_str());
        Box::pin(async move {
            // Port 0: the connector puts the URL's port (or the scheme's default) in its place.
            let addrs: Vec<SocketAddr> = allowed
                .await?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            Ok(addrs.into_iter())
        })
    }
}

fn keep_allowed(
    policy: &SsrfPolicy,
    host: String,
    resolved: Vec<IpAddr>,
) -> Result<Vec<IpAddr>, SsrfError> {
    if resolved.is_empty() {
        return Err(SsrfError::NoAddresses { host });
    }
    let mut allowed = Vec::with_capacity(resolved.len());
    let mut refused = Vec::new();
    for ip in resolved {
        match policy.refusal(ip) {
            None => allowed.push(ip),
            Some(refusal) => refused.push(RefusedAddr { ip, refusal }),
        }
    }
    if allowed.is_empty() {
        return Err(SsrfError::RefusedName { host, refused });
    }
    for addr in &refused {
        // A name mixing public and internal addresses is odd enough to be worth a line in the log.
        tracing::warn!(host = %host, refused = %addr, "dropped a refused address from a delivery destination");
    }
    Ok(allowed)
}

/// Parses the value of `ZOOMHOOK_DELIVERY_ALLOW_CIDRS`: comma-separated CIDRs, where a bare IP
/// address means that single host. Empty entries are skipped. The error names the bad entry.
pub fn parse_allow_list(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "`{entry}` is not a CIDR block (like 10.0.0.0/8 or fd00::/8) or an IP address"
                    )
                })
        })
        .collect()
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 special-purpose ranges (IANA registry), first match wins: the broadcast address comes
/// before the reserved 240.0.0.0/4 that contains it.
const IPV4_REFUSED: [(Ipv4Net, SpecialRange); 16] = [
    (v4(0, 0, 0, 0, 8), SpecialRange::Unspecified),
    (v4(10, 0, 0, 0, 8), SpecialRange::Private),
    (v4(100, 64, 0, 0, 10), SpecialRange::SharedAddressSpace),
    (v4(127, 0, 0, 0, 8), SpecialRange::Loopback),
    (v4(169, 254, 0, 0, 16), SpecialRange::LinkLocal),
    (v4(172, 16, 0, 0, 12), SpecialRange::Private),
    (v4(192, 0, 0, 0, 24), SpecialRange::ProtocolAssignments),
    (v4(192, 0, 2, 0, 24), SpecialRange::Documentation),
    // Deprecated 6to4 relay anycast: nothing a webhook should be sent to.
    (v4(192, 88, 99, 0, 24), SpecialRange::Reserved),
    (v4(192, 168, 0, 0, 16), SpecialRange::Private),
    (v4(198, 18, 0, 0, 15), SpecialRange::Benchmarking),
    (v4(198, 51, 100, 0, 24), SpecialRange::Documentation),
    (v4(203, 0, 113, 0, 24), SpecialRange::Documentation),
    (v4(224, 0, 0, 0, 4), SpecialRange::Multicast),
    (v4(255, 255, 255, 255, 32), SpecialRange::Broadcast),
    (v4(240, 0, 0, 0, 4), SpecialRange::Reserved),
];

/// IPv6 special-purpose ranges, for addresses that do not embed an IPv4 address. Whatever is
/// outside 2000::/3, the only global unicast space allocated, is refused as reserved.
const IPV6_REFUSED: [(Ipv6Net, SpecialRange); 11] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), SpecialRange::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), SpecialRange::Loopback),
    // Local-use NAT64 (RFC 8215): translates into the operator's own IPv4 networks.
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        SpecialRange::Private,
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        SpecialRange::DiscardOnly,
    ),
    // Includes Teredo (2001::/32), whose embedded IPv4 address is obfuscated.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),
        SpecialRange::ProtocolAssignments,
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        SpecialRange::Documentation,
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        SpecialRange::Documentation,
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        SpecialRange::UniqueLocal,
    ),
    (
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        SpecialRange::LinkLocal,
    ),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        SpecialRange::SiteLocal,
    ),
    (
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        SpecialRange::Multicast,
    ),
];

const IPV6_GLOBAL_UNICAST: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

fn ipv4_range(ip: Ipv4Addr) -> Option<SpecialRange> {
    IPV4_REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range)
}

fn ipv6_range(ip: Ipv6Addr) -> Option<SpecialRange> {
    let special = IPV6_REFUSED
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range);
    match special {
        Some(range) => Some(range),
        None if !IPV6_GLOBAL_UNICAST.contains(&ip) => Some(SpecialRange::Reserved),
        None => None,
    }
}

/// The IPv4 address that traffic to `ip` reaches, for IPv4-mapped (::ffff:a.b.c.d),
/// IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16, bits 16..48) addresses.
/// `::` and `::1` are not treated as IPv4-compatible: they are IPv6's own unspecified and loopback.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::http::{DeliveryClient, Reply};
    use std::str::FromStr;
    use std::time::Duration;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn refuse_all() -> SsrfPolicy {
        SsrfPolicy::new(Vec::new())
    }

    fn resolver(
        policy: SsrfPolicy,
        map: &'static [(&'static str, &'static [&'static str])],
    ) -> GuardedResolver {
        GuardedResolver::with_lookup(
            Arc::new(policy),
            Arc::new(move |name: &str| {
                map.iter()
                    .find(|(host, _)| *host == name)
                    .map(|(_, ips)| ips.iter().map(|text| ip(text)).collect())
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
            }),
        )
    }

    async fn resolve(resolver: &GuardedResolver, host: &str) -> Result<Vec<SocketAddr>, String> {
        let name = Name::from_str(host).unwrap();
        match tower::Service::call(&mut resolver.clone(), name).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn check_url_refuses_internal_ip_literals() {
        let policy = refuse_all();
        for (destination, address) in [
            ("http://127.0.0.1/hook", "127.0.0.1"),
            (
                "http://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
            ),
            ("http://[::1]:8080/", "::1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            ("http://10.1.2.3/", "10.1.2.3"),
            ("https://[fd00:ec2::254]/", "fd00:ec2::254"),
            ("http://127.1/", "127.0.0.1"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://127.0.0.1./", "127.0.0.1"),
            ("http://[0:0:0:0:0:ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ] {
            let error = policy.check_url(&url(destination)).unwrap_err();
            assert!(
                matches!(error, SsrfError::RefusedAddress(_)),
                "{destination}: {error}"
            );
            assert!(
                error.to_string().starts_with(address),
                "{destination}: {error}"
            );
        }
    }

    #[test]
    fn refusal_message_names_the_address_the_reason_and_the_remedy() {
        let error = refuse_all()
            .check_url(&url("http://127.0.0.1/"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "127.0.0.1 is a loopback address; allow it with ZOOMHOOK_DELIVERY_ALLOW_CIDRS"
        );
        let error = refuse_all()
            .check_url(&url("http://[::ffff:10.0.0.1]/"))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "::ffff:10.0.0.1 embeds 10.0.0.1, a private address; \
             allow it with ZOOMHOOK_DELIVERY_ALLOW_CIDRS"
        );
    }

    #[test]
    fn allow_list_admits_otherwise_refused_addresses() {
        let policy = SsrfPolicy::new(parse_allow_list("127.0.0.0/8").unwrap());
        assert!(policy.check_url(&url("http://127.0.0.1:9000/hook")).is_ok());
        assert!(policy.check_url(&url("http://[::ffff:127.0.0.1]/")).is_ok());
        assert!(policy.check_url(&url("http://10.1.2.3/")).is_err());
        assert!(policy.check_url(&url("http://[::1]/")).is_err());
    }

    #[test]
    fn public_addresses_and_names_pass_check_url() {
        let policy = refuse_all();
        assert!(policy.check_url(&url("http://93.184.216.34/")).is_ok());
        assert!(policy.check_url(&url("https://[2606:4700::1111]/")).is_ok());
        // Names are judged by the resolver, on the addresses they resolve to.
        assert!(
            policy
                .check_url(&url("https://hooks.example.com/zoom"))
                .is_ok()
        );
    }

    /// One address per refused range, each range's edges where they are easy to get wrong.
    const REFUSED: &str = "
        0.0.0.0 0.1.2.3 127.0.0.1 127.255.255.254 10.0.0.1 10.255.0.1 172.16.0.1 172.31.255.255
        192.168.1.1 169.254.169.254 100.64.0.1 100.127.255.255 192.0.0.9 192.0.2.1 198.51.100.7
        203.0.113.9 198.18.0.1 198.19.255.255 224.0.0.1 239.255.255.250 240.0.0.1 255.255.255.255
        192.88.99.1
        :: ::1 fc00::1 fd00:ec2::254 fe80::1 fec0::1 ff02::1 2001:db8::1 3fff::1 100::1 2001::1
        64:ff9b:1::a00:1 ::ffff:0:a00:1 4000::1
        ::ffff:127.0.0.1 ::ffff:169.254.169.254 ::10.0.0.1 ::0.0.0.2 64:ff9b::a9fe:a9fe
        64:ff9b::7f00:1 2002:7f00:1::1 2002:a9fe:a9fe:: 2002:c0a8:101:1::";

    /// Public addresses next to refused ranges, and public IPv4 addresses embedded in IPv6.
    const PUBLIC: &str = "
        93.184.216.34 8.8.8.8 1.1.1.1 172.32.0.1 100.128.0.1 198.20.0.1 223.255.255.255
        2606:4700::1111 2a00:1450:4001::200e ::ffff:8.8.8.8 64:ff9b::808:808 2002:808:808::1";

    #[test]
    fn refuses_every_special_purpose_range() {
        let policy = refuse_all();
        for address in REFUSED.split_whitespace() {
            assert!(
                !policy.is_allowed(ip(address)),
                "{address} should be refused"
            );
        }
    }

    #[test]
    fn allows_public_unicast() {
        let policy = refuse_all();
        for address in PUBLIC.split_whitespace() {
            assert!(
                policy.is_allowed(ip(address)),
                "{address} should be allowed"
            );
        }
    }

    #[test]
    fn refuses_schemes_other_than_http_and_https() {
        let policy = refuse_all();
        for destination in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://example.com/",
        ] {
            let error = policy.check_url(&url(destination)).unwrap_err();
            assert!(
                matches!(error, SsrfError::UnsupportedScheme(_)),
                "{destination}"
            );
        }
    }

    #[test]
    fn refuses_credentials_in_the_url() {
        let policy = refuse_all();
        for destination in [
            "https://user:pass@example.com/",
            "https://user@example.com/",
        ] {
            let error = policy.check_url(&url(destination)).unwrap_err();
            assert!(matches!(error, SsrfError::Credentials), "{destination}");
            assert!(!error.to_string().contains("pass@example"));
        }
    }

    #[test]
    fn https_only_refuses_plain_http() {
        let policy = refuse_all().with_https_only(true);
        let error = policy.check_url(&url("http://example.com/")).unwrap_err();
        assert!(matches!(error, SsrfError::HttpsRequired));
        assert!(policy.check_url(&url("https://example.com/")).is_ok());
    }

    #[tokio::test]
    async fn resolver_fails_for_a_name_with_only_refused_addresses() {
        let resolver = resolver(refuse_all(), &[("internal.example", &["10.0.0.5"])]);
        let error = resolve(&resolver, "internal.example").await.unwrap_err();
        assert_eq!(
            error,
            "internal.example resolves only to refused addresses (10.0.0.5 is a private address); \
             allow them with ZOOMHOOK_DELIVERY_ALLOW_CIDRS"
        );
    }

    #[tokio::test]
    async fn resolver_keeps_only_the_allowed_addresses() {
        let resolver = resolver(
            refuse_all(),
            &[("mixed.example", &["10.0.0.5", "93.184.216.34", "::1"])],
        );
        let addrs = resolve(&resolver, "mixed.example").await.unwrap();
        assert_eq!(addrs, vec![SocketAddr::new(ip("93.184.216.34"), 0)]);
    }

    #[tokio::test]
    async fn resolver_reports_lookup_failures_and_empty_answers() {
        let resolver = resolver(refuse_all(), &[("empty.example", &[])]);
        let error = resolve(&resolver, "empty.example").await.unwrap_err();
        assert_eq!(error, "empty.example resolves to no addresses");
        let error = resolve(&resolver, "missing.example").await.unwrap_err();
        assert_eq!(error, "cannot resolve missing.example");
    }

    #[test]
    fn parses_allow_lists_with_cidrs_and_bare_addresses() {
        let nets =
            parse_allow_list(" 10.0.0.0/8, 127.0.0.0/8,::1/128 ,192.168.1.10,fd00::1,").unwrap();
        let expected: Vec<IpNet> = [
            "10.0.0.0/8",
            "127.0.0.0/8",
            "::1/128",
            "192.168.1.10/32",
            "fd00::1/128",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        assert_eq!(nets, expected);
        assert_eq!(parse_allow_list("").unwrap(), Vec::<IpNet>::new());
    }

    #[test]
    fn allow_list_errors_name_the_bad_entry() {
        for (text, entry) in [
            ("10.0.0.0/8, 10.0.0.0/33", "`10.0.0.0/33`"),
            ("localhost", "`localhost`"),
            ("::1/128,256.1.1.1", "`256.1.1.1`"),
        ] {
            let error = parse_allow_list(text).unwrap_err();
            assert!(error.contains(entry), "{text}: {error}");
        }
    }

    /// Serves `response` to every connection on 127.0.0.1; returns the port.
    async fn serve_fixed(response: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        port
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    const REDIRECT: &str = "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\n\
                            Content-Length: 0\r\nConnection: close\r\n\r\n";
    const LOCALHOST: &[(&str, &[&str])] = &[("localhost", &["127.0.0.1"])];

    fn client(policy: SsrfPolicy) -> DeliveryClient {
        DeliveryClient::new(resolver(policy, LOCALHOST), Duration::from_secs(5)).unwrap()
    }

    async fn post(client: &DeliveryClient, url: &str) -> Result<Reply, String> {
        client
            .post(url.parse().unwrap(), Default::default(), b"{}".to_vec(), 64)
            .await
    }

    #[tokio::test]
    async fn delivery_client_connects_only_to_addresses_the_policy_allows() {
        let port = serve_fixed(OK).await;
        let destination = format!("http://localhost:{port}/hook");

        let allowed = client(SsrfPolicy::new(parse_allow_list("127.0.0.0/8").unwrap()));
        let reply = post(&allowed, &destination).await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.excerpt.as_deref(), Some("ok"));

        let error = post(&client(refuse_all()), &destination).await.unwrap_err();
        assert!(
            error.starts_with("cannot connect: ")
                && error.contains(
                    "localhost resolves only to refused addresses (127.0.0.1 is a loopback"
                ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn delivery_client_does_not_follow_redirects() {
        let port = serve_fixed(REDIRECT).await;
        let allowed = client(SsrfPolicy::new(parse_allow_list("127.0.0.0/8").unwrap()));
        let reply = post(&allowed, &format!("http://localhost:{port}/"))
            .await
            .unwrap();
        assert_eq!(reply.status, 302);
    }

    #[tokio::test]
    async fn an_https_only_client_refuses_plain_http() {
        let port = serve_fixed(OK).await;
        let policy =
            SsrfPolicy::new(parse_allow_list("127.0.0.0/8").unwrap()).with_https_only(true);
        let error = post(&client(policy), &format!("http://localhost:{port}/"))
            .await
            .unwrap_err();
        assert!(error.starts_with("cannot connect: "), "{error}");
    }
}
