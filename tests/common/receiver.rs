//! A real HTTP receiver for delivery tests: records every request and answers as the test says.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// What to answer: `(status, extra headers, delay before answering)`, given the path and how
/// many requests that path has had before this one.
pub type Behaviour =
    Arc<dyn Fn(&str, usize) -> (u16, Vec<(&'static str, String)>, Duration) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    behaviour: Behaviour,
    in_flight: Arc<Mutex<(usize, usize)>>,
}

/// The receiver: a server on 127.0.0.1.
pub struct Receiver {
    pub base: String,
    log: Arc<Mutex<Vec<Received>>>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    in_flight: Arc<Mutex<(usize, usize)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_, _| (200, vec![], Duration::ZERO))).await
    }

    pub async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        Receiver::on(listener, behaviour)
    }

    /// Serves on an existing listener (to come up on a port that was down).
    pub fn on(listener: tokio::net::TcpListener, behaviour: Behaviour) -> Receiver {
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Shared {
            log: Arc::default(),
            counts: Arc::default(),
            behaviour,
            in_flight: Arc::default(),
        };
        let (log, in_flight, counts) = (
            Arc::clone(&shared.log),
            Arc::clone(&shared.in_flight),
            Arc::clone(&shared.counts),
        );
        let app = axum::Router::new().fallback(answer).with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            base,
            log,
            counts,
            in_flight,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log").clone()
    }

    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many requests `path` has received (cheap, for large volumes).
    pub fn count(&self, path: &str) -> usize {
        self.counts
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The most requests that were in progress at once.
    pub fn max_concurrency(&self) -> usize {
        self.in_flight.lock().expect("in flight").1
    }

    /// Waits until `path` has received at least `n` requests (30 s at most).
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        for _ in 0..600 {
            let got = self.received_at(path);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{path} received {} of {n} requests",
            self.received_at(path).len()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let count = {
        let mut log = shared.log.lock().expect("log");
        let count = {
            let mut counts = shared.counts.lock().expect("counts");
            let n = counts.entry(path.clone()).or_default();
            *n += 1;
            *n - 1
        };
        log.push(Received {
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        count
    };
    {
        let mut f = shared.in_flight.lock().expect("in flight");
        f.0 += 1;
        f.1 = f.1.max(f.0);
    }
    let (status, extra, delay) = (shared.behaviour)(&path, count);
    tokio::time::sleep(delay).await;
    shared.in_flight.lock().expect("in flight").0 -= 1;
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        "receiver says hi",
    )
        .into_response();
    for (name, value) in extra {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    response
}
