//! The admin listener (`admin.listen`, loopback by default): liveness and readiness.
//!
//! `GET /healthz` answers 200 while the process is alive; `GET /readyz` answers 200 once
//! the config is loaded and every listener is bound, and 503 while draining on shutdown,
//! so a load balancer or kubelet stops sending traffic before connections close.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the process stands, as readiness reports it.
#[derive(Debug)]
pub struct Health(AtomicU8);

impl Default for Health {
    fn default() -> Self {
        Self(AtomicU8::new(STARTING))
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    fn state(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the admin API: {source} (set admin.listen to a free address)")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The running admin server.
pub struct Admin {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Admin {
    pub async fn bind(addr: SocketAddr, health: Arc<Health>) -> Result<Self, AdminBindError> {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminBindError { addr, source })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| AdminBindError { addr, source })?;
        tracing::info!(addr = %local_addr, "admin listening");
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(socket, health, stopped));
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "admin accept loop ended abnormally");
        }
    }
}

async fn accept_loop(socket: TcpListener, health: Arc<Health>, mut stopped: watch::Receiver<bool>) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = socket.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let health = health.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let health = health.clone();
                async move { Ok::<_, Infallible>(route(&req, &health)) }
            });
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

fn route(req: &Request<Incoming>, health: &Health) -> Response<Full<Bytes>> {
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match req.uri().path() {
        "/healthz" | "/readyz" if !get => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; use GET\n",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match health.state() {
            READY => text(StatusCode::OK, "ready\n"),
            DRAINING => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
