//! Stages 1 and 2: accept TCP connections and serve HTTP/1.1 and HTTP/2 (prior
//! knowledge) on them with hyper-util's auto server; graceful shutdown.
//!
//! `serin run` uses [`Workers`]: one thread per worker, each with a single-threaded
//! runtime and its own `SO_REUSEPORT` socket per listener, so the kernel spreads
//! connections over the workers and a request never leaves the thread that accepted it.
//! [`serve`] runs listeners on the calling runtime (tests, the demo).

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
use crate::{worker, DataPlane};

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

/// Binds every listener of `snapshot` on the current runtime; fails whole if any
/// address cannot be bound.
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
            tracing::debug!(listener = %listener.name, addr = %listener.local_addr, "accepting");
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
        let info = Arc::new(ConnInfo::new(peer, listener.name.clone()));
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

/// Listener sockets for every worker, bound but not yet registered with a runtime.
#[derive(Debug)]
pub struct WorkerSockets {
    /// `[worker][listener]`.
    sockets: Vec<Vec<(Arc<str>, std::net::TcpListener)>>,
    /// Each listener's name and resolved address.
    pub addrs: Vec<(Arc<str>, SocketAddr)>,
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds every listener of `snapshot` once per worker with `SO_REUSEPORT`. The first
/// socket of a listener resolves its address (port 0 becomes a free port); the others
/// bind to that address. Fails whole if any address cannot be bound.
pub fn bind_workers(snapshot: &Snapshot, workers: usize) -> Result<WorkerSockets, ProxyError> {
    let workers = workers.max(1);
    let mut sockets: Vec<Vec<(Arc<str>, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut addrs = Vec::with_capacity(snapshot.listeners.len());
    for listener in &snapshot.listeners {
        let name: Arc<str> = listener.name.as_str().into();
        let bind_error = |source| ProxyError::Bind {
            listener: listener.name.clone(),
            addr: listener.listen,
            source,
        };
        let first = reuseport_socket(listener.listen).map_err(bind_error)?;
        let resolved = first.local_addr().map_err(bind_error)?;
        sockets[0].push((name.clone(), first));
        for per_worker in sockets.iter_mut().skip(1) {
            per_worker.push((
                name.clone(),
                reuseport_socket(resolved).map_err(bind_error)?,
            ));
        }
        addrs.push((name, resolved));
    }
    Ok(WorkerSockets { sockets, addrs })
}

/// Worker threads serving the listeners; see the module documentation.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<bool>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts one thread per worker of `sockets`. `grace` bounds the drain on shutdown.
    pub fn start(
        dataplane: Arc<DataPlane>,
        sockets: WorkerSockets,
        grace: Duration,
    ) -> Result<Self, std::io::Error> {
        for (name, addr) in &sockets.addrs {
            tracing::info!(listener = %name, addr = %addr, workers = sockets.sockets.len(), "listening");
        }
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(sockets.sockets.len());
        for (index, own) in sockets.sockets.into_iter().enumerate() {
            let dataplane = dataplane.clone();
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new()
                .name(format!("serin-worker-{index}"))
                .spawn(move || {
                    worker::set_index(index);
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(err) => {
                            tracing::error!(worker = index, error = %err, "cannot start the worker's runtime");
                            return false;
                        }
                    };
                    runtime.block_on(async move {
                        let mut listeners = Vec::with_capacity(own.len());
                        for (name, socket) in own {
                            match socket.local_addr().and_then(|addr| Ok((addr, TcpListener::from_std(socket)?))) {
                                Ok((local_addr, socket)) => listeners.push(BoundListener { name, local_addr, socket }),
                                Err(err) => tracing::error!(worker = index, listener = %name, error = %err, "cannot register the listener"),
                            }
                        }
                        let serving = serve(dataplane, listeners);
                        let _ = stopped.wait_for(|stop| *stop).await;
                        serving.shutdown(grace).await
                    })
                })?;
            threads.push(thread);
        }
        Ok(Self { threads, stop })
    }

    /// Stops accepting on every worker, lets in-flight requests finish within the grace
    /// period, and returns whether every connection closed in time. Blocks.
    pub fn shutdown(self) -> bool {
        let _ = self.stop.send(true);
        let mut drained = true;
        for thread in self.threads {
            drained &= thread.join().unwrap_or(false);
        }
        drained
    }
}
