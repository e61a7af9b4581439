//! The baseline of `bench/ingest`: a bare hyper HTTP/1.1 server that reads each request body in
//! full and answers `200 OK` with a small JSON body — what a receiver costs before it verifies,
//! parses or stores anything. Same runtime and hyper version as zoomhook, so the ratio measures
//! zoomhook's own work.
//!
//! `cargo run --release --example bare_ok -- 127.0.0.1:0` prints `listening on <addr>` and serves
//! until killed.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match request.into_body().collect().await {
        Ok(_) => 200,
        Err(_) => 400,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    Ok(response)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
