//! The durable ceiling of `bench/ingest`: the least any store-before-ack receiver can do on this
//! disk. A hyper HTTP/1.1 server that appends each request body (length-prefixed) to one file
//! and answers `200` only after an `fdatasync` that covers it. Concurrent requests share one
//! fsync (group commit): a writer thread takes everything queued, writes it, syncs once and then
//! answers all of them. No parsing, no verification, no index — so zoomhook's ratio to it is the
//! price of everything zoomhook does beyond making the bytes durable.
//!
//! `cargo run --release --example durable_ceiling -- 127.0.0.1:0 /path/to/file` prints
//! `listening on <addr>` and serves until killed; the file is created (truncated) at start.

use std::convert::Infallible;
use std::fs::File;
use std::io::Write;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One body waiting to be made durable, and who to tell.
type Pending = (Bytes, oneshot::Sender<bool>);

/// The group-commit writer: drains the queue, writes, syncs once, answers everyone.
fn writer(mut file: File, queue: std_mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(1024);
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    while let Ok(first) = queue.recv() {
        batch.push(first);
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        buffer.clear();
        for (body, _) in &batch {
            buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buffer.extend_from_slice(body);
        }
        let ok = file.write_all(&buffer).is_ok() && file.sync_data().is_ok();
        for (_, done) in batch.drain(..) {
            let _ = done.send(ok);
        }
    }
}

async fn answer(
    queue: std_mpsc::Sender<Pending>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match request.into_body().collect().await {
        Ok(collected) => {
            let (done, durable) = oneshot::channel();
            if queue.send((collected.to_bytes(), done)).is_ok() && durable.await == Ok(true) {
                200
            } else {
                503
            }
        }
        Err(_) => 400,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}")));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    Ok(response)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let path = args
        .next()
        .unwrap_or_else(|| "durable-ceiling.log".to_owned());
    let file = File::create(&path)?;
    let (queue, receiver) = std_mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("group-commit".into())
        .spawn(move || writer(file, receiver))?;
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let queue = queue.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(queue.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
