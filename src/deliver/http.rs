//! The HTTP client of webhook deliveries: hyper's pooled client, used directly.
//!
//! What it does, and nothing more:
//! - names are resolved by the SSRF guard's [`GuardedResolver`], so every address connected to
//!   was checked (IP-literal hosts never reach a resolver: [`SsrfPolicy::check_url`] judges them
//!   before a destination is used, see [`request_uri`]);
//! - TLS through rustls (ring, TLS 1.2 and 1.3, Mozilla's roots from `webpki-roots`), HTTP/1.1
//!   (offered by ALPN);
//! - one time limit over making a connection: resolving, TCP and the TLS handshake together (a
//!   destination that accepts but never finishes the handshake costs the limit, not a socket
//!   held for ever: hyper's pool keeps a connect running in the background when an idle
//!   connection is handed out first, out of reach of the attempt's own timer);
//! - connections kept per destination and reused (idle ones closed after 90 s; TCP keep-alive
//!   probes every 15 s, 3 unanswered end the connection);
//! - no redirects (hyper's client never follows one: a redirect could point anywhere) and no
//!   proxy (nothing here reads the environment; a proxy would resolve names out of the guard's
//!   sight).
//!
//! The attempt's overall time limit is the caller's (one timer around sending and reading the
//! answer); the client bounds only the connect. Why not reqwest: its own work per request (the URL
//! re-parsed, header maps merged, a timer of its own, boxed futures) was 16 % of the delivery
//! thread's samples and most of a delivery's allocations; without it a delivery allocates 42 times
//! instead of 78 and the drain is ~10–20 % faster (`bench/RESULTS.md`, 2026-12-07).
//!
//! [`SsrfPolicy::check_url`]: super::ssrf::SsrfPolicy::check_url

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Uri};
use hyper_rustls::{DefaultServerNameResolver, HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use reqwest::Url;
use tokio::net::TcpStream;

use super::ssrf::{GuardedResolver, SsrfPolicy};

/// How long a delivery waits for a connection to be made.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keep-alive on pooled connections, so a destination that vanished is noticed: the first
/// probe after this much silence, then one every as long, and the connection ends after
/// [`TCP_KEEPALIVE_RETRIES`] unanswered ones.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// What a destination answered: the status, its `Retry-After` and the start of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Up to the requested number of bytes of the body, as text (invalid UTF-8 replaced);
    /// `None` for an empty body.
    pub excerpt: Option<String>,
}

/// The client deliveries are sent with. Cloning shares the connection pool.
#[derive(Clone)]
pub struct DeliveryClient {
    client: Client<BoundedConnect, Full<Bytes>>,
}

impl DeliveryClient {
    /// A client that resolves through `resolver` (and applies its policy), trusts Mozilla's root
    /// certificates and gives up a connect after `connect_timeout`.
    pub fn new(
        resolver: GuardedResolver,
        connect_timeout: Duration,
    ) -> Result<DeliveryClient, rustls::Error> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        Ok(DeliveryClient::with_tls(resolver, connect_timeout, tls))
    }

    /// [`DeliveryClient::new`] with a TLS configuration of the caller's (tests trust a root of
    /// their own with it). Its ALPN protocols are replaced by `http/1.1`, the only one spoken.
    pub fn with_tls(
        resolver: GuardedResolver,
        connect_timeout: Duration,
        mut tls: rustls::ClientConfig,
    ) -> DeliveryClient {
        let https_only = resolver.policy().https_only();
        let mut tcp = HttpConnector::new_with_resolver(resolver);
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        // Also per address, as well as over the whole connect below: hyper divides this among a
        // name's addresses, so one that drops SYNs leaves time for the next.
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_interval(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = BoundedConnect {
            inner: HttpsConnector::new(
                tcp,
                tls,
                https_only,
                Arc::new(DefaultServerNameResolver::default()),
            ),
            limit: connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(connector);
        DeliveryClient { client }
    }

    /// POSTs `body` with `headers` to `uri` and reads at most `excerpt_bytes` of the answer.
    /// Errors are one line with their causes, e.g. "cannot connect: tcp connect error:
    /// Connection refused (os error 111)".
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: Vec<u8>,
        excerpt_bytes: usize,
    ) -> Result<Reply, String> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let response = self.client.request(request).await.map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut answer = response.into_body();
        let mut excerpt = Vec::new();
        // A body that fails midway keeps what was read; the status is the answer.
        while excerpt.len() < excerpt_bytes {
            match answer.frame().await {
                Some(Ok(frame)) => {
                    if let Some(chunk) = frame.data_ref() {
                        let room = excerpt_bytes - excerpt.len();
                        excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        // Valid UTF-8 (as most answers are) is kept without a copy.
        let excerpt = (!excerpt.is_empty()).then(|| {
            String::from_utf8(excerpt)
                .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
        });
        Ok(Reply {
            status,
            retry_after,
            excerpt,
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connector: hyper-rustls over hyper's TCP connector, with one time limit over all of it.
#[derive(Clone)]
struct BoundedConnect {
    inner: HttpsConnector<HttpConnector<GuardedResolver>>,
    limit: Duration,
}

/// A connection not made within the limit.
#[derive(Debug)]
struct ConnectTimedOut(Duration);

impl fmt::Display for ConnectTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no connection within {} s (resolving, TCP and TLS)",
            self.0.as_secs_f64()
        )
    }
}

impl std::error::Error for ConnectTimedOut {}

impl tower::Service<Uri> for BoundedConnect {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        // Dropping the unfinished connect closes its socket.
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(ConnectTimedOut(limit)) as BoxError),
            }
        })
    }
}

/// The URI requests to `url` go to, once `policy` has allowed it: the checks of
/// [`SsrfPolicy::check_url`], and a URL hyper can send (the fragment, never sent, is dropped).
pub fn request_uri(url: &Url, policy: &SsrfPolicy) -> Result<Uri, String> {
    policy.check_url(url).map_err(|e| e.to_string())?;
    url.as_str().parse::<Uri>().map_err(|e| {
        // The URL parser lets a few characters through that a request cannot carry (`{` in a
        // host); name the first such one when a character is what was refused.
        let text = e.to_string();
        let sendable = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
        match url.as_str().chars().find(|c| !sendable(*c)) {
            Some(c) if text.contains("character") => {
                format!("cannot be sent: it holds {c:?}, which a request cannot carry")
            }
            _ => format!("cannot be sent: {text}"),
        }
    })
}

/// One line for a failed request, its causes joined, without the URL (which may hold a
/// credential; it is in the subscription for whoever may see it).
fn describe(error: hyper_util::client::legacy::Error) -> String {
    let (mut text, mut source): (String, Option<&(dyn std::error::Error + 'static)>) =
        if error.is_connect() {
            (
                "cannot connect".to_owned(),
                std::error::Error::source(&error),
            )
        } else {
            ("error sending request".to_owned(), Some(&error))
        };
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uris_keep_what_is_sent_and_drop_the_fragment() {
        let policy = SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let url = Url::parse("http://127.0.0.1:9000/a%20b/hook?x=1&y=%E2%9C%93#frag").unwrap();
        let uri = request_uri(&url, &policy).unwrap();
        assert_eq!(
            uri.to_string(),
            "http://127.0.0.1:9000/a%20b/hook?x=1&y=%E2%9C%93"
        );
        let refused = Url::parse("http://10.0.0.1/").unwrap();
        assert!(
            request_uri(&refused, &policy)
                .unwrap_err()
                .contains("10.0.0.1")
        );
    }

    #[test]
    fn a_url_the_request_line_cannot_carry_is_refused_naming_the_character() {
        let policy = SsrfPolicy::new(Vec::new());
        // The URL parser accepts this host; a request cannot be made to it.
        let url = Url::parse("https://hooks{1}.example.com/zoom").unwrap();
        let error = request_uri(&url, &policy).unwrap_err();
        assert!(error.contains("'{'"), "{error}");
        // Refused for its length, not for a character in it: said so.
        let long = Url::parse(&format!(
            "https://hooks.example.com/?x=|&{}",
            "a".repeat(70_000)
        ))
        .unwrap();
        let error = request_uri(&long, &policy).unwrap_err();
        assert!(
            error.contains("too long") && !error.contains("'|'"),
            "{error}"
        );
    }
}
