//! Stages 1 and 2: accept TCP connections and serve HTTP/1.1 and HTTP/2 (prior
//! knowledge) on them with hyper-util's auto server; graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serin_config::Snapshot;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::ProxyError;
use crate::forward::ConnInfo;
use crate::DataPlane;

/// Time a client gets to send a complete request head (slowloris defence).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After an accept error (e.g. out of file descriptors), wait this long before retrying.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A listener socket bound to its address, not yet serving.
#[derive(Debug)]
pub struct BoundListener {
    pub name: Arc<str>,
    pub local_addr: SocketAddr,
    socket: TcpListener,
}

/// Binds every listener of `snapshot`; fails whole if any address cannot be bound.
pub async fn bind_all(snapshot: &Snapshot) -> Result<Vec<BoundListener>, ProxyError> {
    let mut bound = Vec::with_capacity(snapshot.listeners.len());
    for listener in &snapshot.listeners {
        let socket =
            TcpListener::bind(listener.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    listener: listener.name.clone(),
                    addr: listener.listen,
                    source,
                })?;
        let local_addr = socket.local_addr().map_err(|source| ProxyError::Bind {
            listener: listener.name.clone(),
            addr: listener.listen,
            source,
        })?;
        bound.push(BoundListener {
            name: listener.name.as_str().into(),
            local_addr,
            socket,
        });
    }
    Ok(bound)
}

/// Listeners being served. Dropping it does not stop them; call [`Serving::shutdown`].
pub struct Serving {
    accept_loops: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    graceful: Arc<GracefulShutdown>,
}

/// Starts serving `listeners` with `dataplane`.
pub fn serve(dataplane: Arc<DataPlane>, listeners: Vec<BoundListener>) -> Serving {
    let (stop, stopped) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let accept_loops = listeners
        .into_iter()
        .map(|listener| {
            tracing::info!(listener = %listener.name, addr = %listener.local_addr, "listening");
            tokio::spawn(accept_loop(
                listener,
                dataplane.clone(),
                builder.clone(),
                graceful.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    Serving {
        accept_loops,
        stop,
        graceful,
    }
}

async fn accept_loop(
    listener: BoundListener,
    dataplane: Arc<DataPlane>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.socket.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(err) => {
                tracing::warn!(listener = %listener.name, error = %err, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let info = Arc::new(ConnInfo {
            peer,
            listener: listener.name.clone(),
        });
        let dataplane = dataplane.clone();
        let service = service_fn(move |req| {
            let dataplane = dataplane.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(dataplane.handle(req, &info).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    tracing::info!(listener = %listener.name, "stopped accepting");
}

impl Serving {
    /// Stops accepting, lets in-flight requests finish for at most `grace`, and returns
    /// whether every connection closed in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        for handle in self.accept_loops {
            if let Err(err) = handle.await {
                tracing::warn!(error = %err, "accept loop ended abnormally");
            }
        }
        let open = self.graceful.count();
        tracing::info!(open_connections = open, grace = ?grace, "draining connections");
        match Arc::try_unwrap(self.graceful) {
            Ok(graceful) => tokio::time::timeout(grace, graceful.shutdown())
                .await
                .is_ok(),
            // Unreachable: every accept loop, the only other holders, has ended.
            Err(_) => false,
        }
    }
}
