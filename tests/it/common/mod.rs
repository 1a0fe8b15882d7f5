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

#[cfg(feature = "fleet")]
pub mod etcd;
pub mod process;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    /// The HTTP version the request arrived in.
    pub version: http::Version,
}

#[derive(Debug, Default)]
pub struct BackendState {
    pub hits: AtomicUsize,
    /// `GET /healthz` requests, answered with `health_status` (0 = 200) and not counted
    /// in `hits`.
    pub health_checks: AtomicUsize,
    pub health_status: AtomicU16,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// TCP connections open now.
    pub open: AtomicUsize,
    /// Request body bytes received, over all requests.
    pub received: AtomicUsize,
    /// Answer with a chunked body (no content-length) of two frames.
    pub chunked: std::sync::atomic::AtomicBool,
    /// Answer with a body of this many bytes instead of the name; 0 = the name.
    pub body_len: AtomicUsize,
    /// Status to answer with; 0 means 200.
    pub status: AtomicU16,
    /// Answer 500 to this many of every ten requests (by arrival), whatever `status`.
    pub fail_tenths: AtomicUsize,
    pub delay_ms: AtomicU64,
    pub seen: Mutex<Vec<Seen>>,
    /// A header added to every answer besides `x-backend`.
    pub extra_header: Mutex<Option<(&'static str, &'static str)>>,
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
                st.connections.fetch_add(1, Ordering::SeqCst);
                st.open.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let open = st.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move {
                            if req.uri().path() == "/healthz" {
                                st.health_checks.fetch_add(1, Ordering::SeqCst);
                                let status = match st.health_status.load(Ordering::SeqCst) {
                                    0 => 200,
                                    s => s,
                                };
                                let mut resp =
                                    Response::new(Chunks(vec![Bytes::from_static(b"health")]));
                                *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                                return Ok::<_, Infallible>(resp);
                            }
                            let nth = st.hits.fetch_add(1, Ordering::SeqCst);
                            st.seen.lock().expect("seen lock").push(Seen {
                                method: req.method().clone(),
                                uri: req.uri().clone(),
                                headers: req.headers().clone(),
                                version: req.version(),
                            });
                            let delay = st.delay_ms.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            if let Ok(body) = req.into_body().collect().await {
                                st.received
                                    .fetch_add(body.to_bytes().len(), Ordering::SeqCst);
                            }
                            let status = match st.status.load(Ordering::SeqCst) {
                                _ if nth % 10 < st.fail_tenths.load(Ordering::SeqCst) => 500,
                                0 => 200,
                                s => s,
                            };
                            let body = match st.body_len.load(Ordering::SeqCst) {
                                0 => Bytes::from(name),
                                n => Bytes::from(vec![b'x'; n]),
                            };
                            let body = if st.chunked.load(Ordering::SeqCst) {
                                let half = body.len() / 2;
                                Chunks(vec![body.slice(half..), body.slice(..half)])
                            } else {
                                Chunks(vec![body])
                            };
                            let mut resp = Response::new(body);
                            *resp.status_mut() = StatusCode::from_u16(status).expect("status");
                            resp.headers_mut()
                                .insert("x-backend", name.parse().expect("name"));
                            let extra = *st.extra_header.lock().expect("extra header lock");
                            if let Some((k, v)) = extra {
                                resp.headers_mut().insert(k, v.parse().expect("value"));
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    open.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend { name, addr, state }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// Request body bytes received, over all requests.
    pub fn received(&self) -> usize {
        self.state.received.load(Ordering::SeqCst)
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

/// A response body sent as the given frames (last first, popped in order). One frame
/// is sent with a content-length; more are sent chunked.
pub struct Chunks(pub Vec<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.pop().map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.0.as_slice() {
            [only] => hyper::body::SizeHint::with_exact(only.len() as u64),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

/// Backends `stable` and `canary`, and serin in front of them with `split` appended to
/// the service (see [`two_versions`]).
pub async fn pair(split: &str) -> (Backend, Backend, Serin) {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let serin = Serin::start(&two_versions(stable.addr, canary.addr, split)).await;
    (stable, canary, serin)
}

/// The usual config with every request going to `stable` at `addr`; the canary, at
/// weight 0, is a port nothing listens on.
pub async fn stable_only_config(addr: SocketAddr) -> String {
    let dead = closed_port().await;
    two_versions(
        addr,
        dead,
        "    split: { weights: { stable: 1, canary: 0 } }",
    )
}

/// A backend `stable`, and serin sending every request to it, with `extra` appended to
/// the config (e.g. `limits: { ... }`).
pub async fn one_backend(extra: &str) -> (Backend, Serin) {
    let backend = Backend::start("stable").await;
    let yaml = format!("{}{extra}", stable_only_config(backend.addr).await);
    let serin = Serin::start(&yaml).await;
    (backend, serin)
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
    /// Stops the health checker.
    _health: tokio::sync::watch::Sender<bool>,
}

impl Serin {
    pub async fn start(yaml: &str) -> Serin {
        let snapshot = serin_config::parse_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let listeners = server::bind_all(&snapshot).await.expect("bind listeners");
        let addr = listeners[0].local_addr;
        let dataplane = Arc::new(DataPlane::new(snapshot, 2).expect("data plane"));
        let serving = server::serve(dataplane.clone(), listeners);
        let (health, checks_stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(serin_proxy::health::run(dataplane.clone(), checks_stopped));
        Serin {
            addr,
            dataplane,
            serving: Some(serving),
            _health: health,
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

/// serin with one listener sending every request to service `api`, whose versions are
/// `versions` (YAML sequence items, indented for `versions:`), with `rest` appended to
/// the service (its split, timeouts, rollout).
pub fn api_service(versions: &str, rest: &str) -> String {
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
{versions}
{rest}
"#
    )
}

/// One service `api` with one version `stable` at `endpoint`; `version_extra` is
/// appended inside the version's flow mapping (e.g. `, protocol: http2`).
pub fn one_version(endpoint: SocketAddr, version_extra: &str) -> String {
    api_service(
        &format!("      - {{ name: stable, endpoints: [{endpoint}]{version_extra} }}"),
        "",
    )
}

/// The usual two-version service in front of `stable` and `canary`, with `split`
/// appended to the service (its split, timeouts, rollout).
pub fn two_versions(stable: SocketAddr, canary: SocketAddr, split: &str) -> String {
    api_service(
        &format!(
            "      - {{ name: stable, endpoints: [{stable}] }}\n      - {{ name: canary, endpoints: [{canary}] }}"
        ),
        split,
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

/// serin with its control loop (rollouts), ticking in real time.
pub struct Controlled {
    pub serin: Serin,
    pub control: Arc<serin_control::runner::Control>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Controlled {
    pub async fn start(yaml: &str) -> Controlled {
        let serin = Serin::start(yaml).await;
        let control = Arc::new(serin_control::runner::Control::new(
            serin.dataplane.clone(),
            serin_control::runner::now_ms(),
        ));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(control.clone().run(stopped));
        Controlled {
            serin,
            control,
            stop,
        }
    }

    pub fn phase(&self) -> serin_judge::rollout::Phase {
        self.control.status("api").expect("api has a rollout").phase
    }

    pub fn canary_weight(&self) -> u32 {
        self.control
            .status("api")
            .expect("api has a rollout")
            .canary_weight
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.serin.shutdown(Duration::from_secs(5)).await;
        // What the loop handed to the state writer is on disk, as at serin's shutdown.
        let control = self.control.clone();
        // (A test whose state_dir takes no writes finds nothing written.)
        let _ = tokio::task::spawn_blocking(move || control.flush(Duration::from_secs(2))).await;
    }
}

/// What a load generator's clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicUsize,
    pub errors: AtomicUsize,
    pub by_version: Mutex<std::collections::BTreeMap<String, usize>>,
}

/// Clients sending GETs as distinct users until stopped.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    pub tally: Arc<Tally>,
}

impl Load {
    /// `concurrency` clients, each pausing `pause` between requests.
    pub fn start(url: String, concurrency: usize, pause: Duration) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..concurrency {
            let (url, stop, tally) = (url.clone(), stop.clone(), tally.clone());
            tasks.spawn(async move {
                let client = client();
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let user = format!("user-{worker}-{n}");
                    let got = get(&client, &url, &[("x-user-id", &user)]).await;
                    if got.status.is_server_error() {
                        tally.errors.fetch_add(1, Ordering::SeqCst);
                    } else {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(v) = got
                        .headers
                        .get("x-serin-version")
                        .and_then(|v| v.to_str().ok())
                    {
                        *tally
                            .by_version
                            .lock()
                            .expect("tally")
                            .entry(v.to_string())
                            .or_default() += 1;
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
        }
        Load { stop, tasks, tally }
    }

    pub fn errors(&self) -> usize {
        self.tally.errors.load(Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.tally.ok.load(Ordering::SeqCst) + self.errors()
    }

    pub async fn stop(mut self) -> Arc<Tally> {
        self.stop.store(true, Ordering::SeqCst);
        while let Some(done) = self.tasks.join_next().await {
            done.expect("a load client failed: serin refused or dropped a connection");
        }
        self.tally
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "serin-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A service `api` with stable and canary and the given `rollout:` block (indented for
/// the service), keeping its state in `state_dir`.
pub fn rollout_config(
    stable: SocketAddr,
    canary: SocketAddr,
    state_dir: &std::path::Path,
    rollout: &str,
) -> String {
    let service = format!(
        "    split:\n      weights: {{ stable: 100, canary: 0 }}\n      sticky: {{ header: x-user-id }}\n    timeouts: {{ connect: 1s, request: 5s }}\n    rollout:\n{rollout}"
    );
    format!(
        "state_dir: \"{}\"\n{}",
        state_dir.display(),
        two_versions(stable, canary, &service)
    )
}
