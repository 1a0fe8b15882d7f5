//! Shared test harness: backends with runtime fault switches, serin started in-process
//! on port 0, an HTTP client, and `eventually`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serin_proxy::server::{self, Serving};
use serin_proxy::DataPlane;
use tokio::net::TcpListener;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
pub struct BackendState {
    pub hits: AtomicUsize,
    /// Status to answer with; 0 means 200.
    pub status: AtomicU16,
    pub delay_ms: AtomicU64,
    pub seen: Mutex<Vec<Seen>>,
}

/// An HTTP/1.1 + h2c backend answering with its name as the body.
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let socket = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = socket.local_addr().expect("backend addr");
        let state = Arc::new(BackendState::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            st.hits.fetch_add(1, Ordering::SeqCst);
                            st.seen.lock().expect("seen lock").push(Seen {
                                method: req.method().clone(),
                                uri: req.uri().clone(),
                                headers: req.headers().clone(),
                            });
                            let delay = st.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let _ = req.into_body().collect().await;
                            let status = match st.status.load(Ordering::SeqCst) {
                                0 => 200,
                                s => s,
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(name)));
                            *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                            resp.headers_mut()
                                .insert("x-backend", name.parse().expect("name"));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { name, addr, state }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    pub fn last_seen(&self) -> Seen {
        self.seen().pop().expect("the backend saw no request")
    }
}

/// A loopback port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    socket.local_addr().expect("addr")
}

/// serin running in this process on real sockets.
pub struct Serin {
    pub addr: SocketAddr,
    pub dataplane: Arc<DataPlane>,
    serving: Option<Serving>,
}

impl Serin {
    pub async fn start(yaml: &str) -> Serin {
        let snapshot = serin_config::parse_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let listeners = server::bind_all(&snapshot).await.expect("bind listeners");
        let addr = listeners[0].local_addr;
        let dataplane = Arc::new(DataPlane::new(snapshot, 2).expect("data plane"));
        let serving = server::serve(dataplane.clone(), listeners);
        Serin {
            addr,
            dataplane,
            serving: Some(serving),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn shutdown(mut self, grace: Duration) -> bool {
        match self.serving.take() {
            Some(s) => s.shutdown(grace).await,
            None => true,
        }
    }
}

/// The usual two-version service in front of `stable` and `canary`, with `extra`
/// appended to the service (split, timeouts).
pub fn two_versions(stable: SocketAddr, canary: SocketAddr, split: &str) -> String {
    format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: web, listen: 127.0.0.1:0 }}
routes:
  - {{ listener: web, match: {{ host: "*", path_prefix: / }}, service: api }}
services:
  - name: api
    versions:
      - {{ name: stable, endpoints: [{stable}] }}
      - {{ name: canary, endpoints: [{canary}] }}
{split}
"#
    )
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// What a client got back.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
    pub version: http::Version,
}

pub async fn get(client: &TestClient, url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(Full::new(Bytes::new())).expect("request")).await
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Got {
    let resp = client.request(req).await.expect("request through serin");
    let status = resp.status();
    let version = resp.version();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        version,
    }
}

/// Polls `check` until it returns true or `within` passes; panics with `what` then.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn empty() -> Empty<Bytes> {
    Empty::new()
}
