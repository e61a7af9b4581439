//! Deliveries over TLS, through the delivery client the workers use: a destination whose
//! certificate chains to a trusted root is reached (the name checked against the certificate, the
//! resolved address against the SSRF policy); one whose root is not trusted is refused with an
//! error that says why; one that never finishes the handshake costs the connect timeout and its
//! socket is closed. The certificates are test fixtures (`tests/fixtures/tls/README.md`).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use zoomhook::deliver::http::DeliveryClient;
use zoomhook::deliver::ssrf::{GuardedResolver, SsrfPolicy};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_certs(name: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(format!("{FIXTURES}/{name}"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A server's TLS configuration with the fixture's `localhost` certificate.
fn localhost_tls() -> rustls::ServerConfig {
    let key = PrivateKeyDer::from_pem_file(format!("{FIXTURES}/localhost.key")).unwrap();
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pem_certs("localhost.pem"), key)
        .unwrap()
}

/// Reads whatever `tcp` brings (a TLS hello) and never answers; reports when the client closed it.
fn never_answer(mut tcp: tokio::net::TcpStream, closed: mpsc::UnboundedSender<Instant>) {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed.send(Instant::now());
    });
}

/// What the destination saw of one request: its path, `host` header and body.
type Seen = (String, String, Vec<u8>);

/// An HTTPS server on 127.0.0.1.
struct Destination {
    port: u16,
    /// Each request, as it arrives.
    requests: mpsc::UnboundedReceiver<Seen>,
    /// The ALPN protocol of each connection whose handshake completed.
    connections: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

/// An HTTPS server on 127.0.0.1 with the `localhost` certificate (speaking HTTP/1.1 only),
/// answering 200 "tls ok" and reporting each connection and request.
async fn https_destination() -> Destination {
    let mut config = localhost_tls();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, requests) = mpsc::unbounded_channel();
    let connections = Arc::new(Mutex::new(Vec::new()));
    let handshakes = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen, handshakes) =
                (acceptor.clone(), seen.clone(), Arc::clone(&handshakes));
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                handshakes.lock().unwrap().push(alpn);
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let host = request
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body = request.into_body().collect().await?.to_bytes().to_vec();
                        let _ = seen.send((path, host, body));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("tls ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Destination {
        port,
        requests,
        connections,
    }
}

/// A resolver that knows `localhost` and `elsewhere.test`, both 127.0.0.1, under a policy that
/// allows loopback.
fn resolver() -> GuardedResolver {
    let policy = Arc::new(SsrfPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]));
    GuardedResolver::with_lookup(
        policy,
        Arc::new(|host: &str| match host {
            "localhost" | "elsewhere.test" => Ok(vec![IpAddr::from([127, 0, 0, 1])]),
            other => Err(std::io::Error::other(format!("unknown host {other}"))),
        }),
    )
}

/// A client that trusts only the fixture's test root.
fn trusting_client() -> DeliveryClient {
    trusting_client_with_limit(Duration::from_secs(5))
}

/// [`trusting_client`] with a connect limit of `limit`.
fn trusting_client_with_limit(limit: Duration) -> DeliveryClient {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs("ca.pem") {
        roots.add(cert).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    DeliveryClient::with_tls(resolver(), limit, tls)
}

async fn post(
    client: &DeliveryClient,
    url: &str,
) -> Result<zoomhook::deliver::http::Reply, String> {
    let body = br#"{"event":"meeting.started"}"#.to_vec();
    tokio::time::timeout(
        Duration::from_secs(20),
        client.post(url.parse().unwrap(), Default::default(), body, 1024),
    )
    .await
    .expect("the request ended")
}

#[tokio::test]
async fn a_destination_with_a_trusted_certificate_is_delivered_to_over_tls_on_one_connection() {
    let mut destination = https_destination().await;
    let port = destination.port;
    let client = trusting_client();
    for n in 0..3 {
        let reply = post(&client, &format!("https://localhost:{port}/hook/{n}"))
            .await
            .unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.excerpt.as_deref(), Some("tls ok"));
        let (path, host, body) = destination.requests.recv().await.unwrap();
        assert_eq!(path, format!("/hook/{n}"));
        assert_eq!(host, format!("localhost:{port}"));
        assert_eq!(body, br#"{"event":"meeting.started"}"#);
    }
    // One handshake for the three (the connection was kept and reused), offering HTTP/1.1.
    let connections = destination.connections.lock().unwrap().clone();
    assert_eq!(connections, vec![Some(b"http/1.1".to_vec())]);
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_root_is_refused() {
    let destination = https_destination().await;
    // The production client: Mozilla's roots only, which do not include the test root.
    let client = DeliveryClient::new(resolver(), Duration::from_secs(5)).unwrap();
    let error = post(
        &client,
        &format!("https://localhost:{}/hook", destination.port),
    )
    .await
    .unwrap_err();
    assert!(
        error.starts_with("cannot connect: ") && error.contains("UnknownIssuer"),
        "{error}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let destination = https_destination().await;
    // The same server under a name its certificate does not carry.
    let client = trusting_client();
    let url = format!("https://elsewhere.test:{}/hook", destination.port);
    let error = post(&client, &url).await.unwrap_err();
    assert!(
        error.starts_with("cannot connect: ") && error.contains("certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_handshake_that_never_ends_costs_the_connect_timeout_and_its_socket_is_closed() {
    // Accepts TCP, reads whatever comes (the TLS hello) and never answers; reports when the
    // client closed the socket.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            never_answer(tcp, closed_tx.clone());
        }
    });
    let client = DeliveryClient::with_tls(
        resolver(),
        Duration::from_secs(1),
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    );
    let started = Instant::now();
    let error = post(&client, &format!("https://localhost:{port}/hook"))
        .await
        .unwrap_err();
    let gave_up = started.elapsed();
    assert!(
        error.starts_with("cannot connect: ") && error.contains("no connection within 1 s"),
        "{error}"
    );
    // The 1 s limit, not the 20 s the test allows the request as a whole.
    assert!(gave_up < Duration::from_secs(10), "{gave_up:?}");
    let closed_at = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the client closed the stalled socket")
        .unwrap();
    assert!(closed_at.duration_since(started) >= Duration::from_millis(900));
}

/// hyper's pool races a new connection against an idle one coming back; when the idle one wins,
/// the unfinished connect goes on in the background, beyond any attempt's timer. It too must end
/// at the connect limit, or a destination that stalls its second handshake keeps a socket open
/// for every burst of deliveries.
#[tokio::test]
async fn a_connect_left_running_in_the_background_ends_at_the_connect_limit() {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(localhost_tls()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The first connection is served; every later one gets no answer to its TLS hello, and the
    // time its client closed it is reported.
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((tcp, _)) = listener.accept().await {
            if std::mem::take(&mut first) {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|request: Request<Incoming>| async move {
                        // Slow enough that the second request starts a connect of its own.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        request.into_body().collect().await?;
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from("tls ok"))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            } else {
                never_answer(tcp, closed_tx.clone());
            }
        }
    });
    let client = trusting_client_with_limit(Duration::from_secs(1));
    let url = format!("https://localhost:{port}/hook");
    let started = Instant::now();
    // The second request's own connect stalls; it is served by the first connection once that is
    // idle, and its connect goes on in the background.
    let (a, b) = tokio::join!(post(&client, &url), post(&client, &url));
    assert_eq!(a.unwrap().status, 200);
    assert_eq!(b.unwrap().status, 200);
    let closed_at = tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the stalled background connect was given up and its socket closed")
        .unwrap();
    let after = closed_at.duration_since(started);
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(8),
        "{after:?}"
    );
}
