//! Stages 1 and 2: accept TCP connections and serve HTTP/1.1 and HTTP/2 (ALPN, or
//! prior knowledge told by its preface) on them with hyper's servers; graceful
//! shutdown. An HTTP/1.1 connection quiet for a second is parked: hyper's connection
//! and its buffers are dropped and the socket waits for its next request alone
//! (`crate::idle`).
//!
//! `serin run` uses [`Workers`]: one thread per worker, each with a single-threaded
//! runtime and its own `SO_REUSEPORT` socket per listener, so the kernel spreads
//! connections over the workers and a request never leaves the thread that accepted it.
//! [`serve`] runs listeners on the calling runtime (tests, the demo).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use serin_config::{Limits, Snapshot};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::conn::{ConnInfo, NormalisedFraming};
use crate::error::ProxyError;
use crate::gate::Gate;
use crate::idle::{Activity, Counting, Expiry, InFlight, ReadReady, Tracked};
use crate::{worker, DataPlane};

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

/// Listeners being served on the current runtime. Dropping it does not stop them;
/// call [`Serving::shutdown`].
pub struct Serving {
    dataplane: Arc<DataPlane>,
    listeners: Vec<Running>,
    /// Removed listeners whose connections are still draining.
    draining: Vec<JoinHandle<bool>>,
}

/// One listener's accept loop and the connections it accepted.
struct Running {
    name: Arc<str>,
    accept_loop: JoinHandle<()>,
    stop: watch::Sender<bool>,
    /// Tells the listener's connections to finish; each holds a receiver.
    drain: watch::Sender<bool>,
}

impl Running {
    /// Stops accepting and drains the listener's connections for at most `grace`;
    /// true if every one closed in time.
    async fn drain(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        if let Err(err) = self.accept_loop.await {
            tracing::warn!(listener = %self.name, error = %err, "accept loop ended abnormally");
        }
        let open = self.drain.receiver_count();
        tracing::debug!(listener = %self.name, open_connections = open, grace = ?grace, "draining connections");
        let _ = self.drain.send(true);
        tokio::time::timeout(grace, self.drain.closed())
            .await
            .is_ok()
    }
}

/// The HTTP servers of a listener's connections, with the settings of `limits`.
struct Servers {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl Servers {
    fn new(limits: &Limits) -> Self {
        let header_bytes = usize::try_from(limits.max_header_bytes).unwrap_or(usize::MAX);
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper's header timer also runs while a keep-alive connection waits for its
            // next request; serin times heads and idleness apart (`crate::idle`).
            .header_read_timeout(None)
            // hyper answers 431 when the request head does not fit its read buffer.
            .max_buf_size(header_bytes.max(8192))
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            // Rapid reset (CVE-2023-44487): streams a client opens and cancels at once
            // still count until serin has seen them; beyond this the connection ends.
            .max_pending_accept_reset_streams(Some(limits.h2_max_concurrent_streams as usize))
            .max_local_error_reset_streams(Some(1024))
            // What a stream's response may leave buffered for a client that does not
            // take it; HTTP/1.1's bound is `crate::send`'s.
            .max_send_buf_size(crate::send::H2_SEND_BUF);
        Self { h1, h2 }
    }
}

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the start of a connection until it is, or cannot be, HTTP/2's preface; the
/// bytes are read again by the server. `None`: the client closed before sending any.
async fn sniff<I: AsyncRead + Unpin>(io: &mut Tracked<I>) -> std::io::Result<Option<Proto>> {
    let mut buf = [0u8; H2_PREFACE.len()];
    let mut n = 0;
    let proto = loop {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            if n == 0 {
                return Ok(None);
            }
            break Proto::Http1;
        }
        n += got;
        if buf[..n] != H2_PREFACE[..n] {
            break Proto::Http1;
        }
        if n == H2_PREFACE.len() {
            break Proto::Http2;
        }
    };
    io.unread(Bytes::copy_from_slice(&buf[..n]));
    Ok(Some(proto))
}

/// What a client's socket may queue that is not sent yet (`TCP_NOTSENT_LOWAT`). Without
/// it Linux queues up to 4 MiB for a client that reads slowly, taking serin's writes as
/// if it read fast; with it, a slow reader's writes are refused early, so serin knows
/// (`crate::send`, `crate::pace`). Sent bytes awaiting acknowledgement do not count,
/// so a fast client's window is not limited.
const CLIENT_UNSENT: u32 = 128 * 1024;

/// Sets [`CLIENT_UNSENT`] on a client connection (where the system has the option).
fn limit_unsent(stream: &tokio::net::TcpStream, peer: SocketAddr) {
    #[cfg(any(target_os = "android", target_os = "linux"))]
    if let Err(err) = socket2::SockRef::from(stream).set_tcp_notsent_lowat(CLIENT_UNSENT) {
        tracing::debug!(%peer, error = %err, "cannot set TCP_NOTSENT_LOWAT");
    }
    #[cfg(not(any(target_os = "android", target_os = "linux")))]
    let _ = (stream, peer);
}

/// Starts serving `listeners` with `dataplane`.
pub fn serve(dataplane: Arc<DataPlane>, listeners: Vec<BoundListener>) -> Serving {
    let mut serving = Serving {
        dataplane,
        listeners: Vec::new(),
        draining: Vec::new(),
    };
    for listener in listeners {
        serving.add(listener);
    }
    serving
}

/// What the binary gives to return freed memory to the system (its allocator's
/// collect); see [`on_parked`].
static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

thread_local! {
    /// A release is scheduled on this worker.
    static RELEASE_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long after a connection is parked its worker calls the [`on_parked`] hook, so
/// that one call covers a burst of parks.
const RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Sets `release` to be called on a worker's thread a second after it parked
/// connections (at most once a second): parked connections free their buffers, and an
/// allocator that returns freed pages lazily (mimalloc, on later allocations) would
/// otherwise keep them while the worker is idle. Set once, before serving; later
/// calls are ignored.
pub fn on_parked(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

/// Schedules the [`on_parked`] hook on this worker, unless it is already.
fn release_memory_soon() {
    let Some(&release) = RELEASE_MEMORY.get() else {
        return;
    };
    if RELEASE_PENDING.with(|pending| pending.replace(true)) {
        return;
    }
    // A worker's runtime is single-threaded: this runs on the same thread (and heap).
    tokio::spawn(async move {
        tokio::time::sleep(RELEASE_AFTER).await;
        RELEASE_PENDING.with(|pending| pending.set(false));
        release();
    });
}

/// Counts a parked connection while it is.
struct Parked<'a>(&'a DataPlane);

impl<'a> Parked<'a> {
    fn new(dataplane: &'a DataPlane) -> Self {
        dataplane.parked_connections.fetch_add(1, Ordering::Relaxed);
        Self(dataplane)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the open-connection count when a connection ends.
struct Open(Arc<DataPlane>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a hyper connection's run ended.
enum Ran {
    /// The connection is over.
    Ended,
    /// hyper finished the quiet connection and left the socket open; it would be idle
    /// for `idle_timeout` at the deadline.
    Parked(tokio::time::Instant),
}

/// Runs one hyper connection until it ends, the listener drains, its clock runs out,
/// or (with `park`) it has been quiet long enough to be parked.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    shutdown: impl Fn(Pin<&mut C>),
    activity: &Activity,
    drain: &mut watch::Receiver<bool>,
    peer: SocketAddr,
    park: bool,
) -> Ran
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    // Whether the connection was asked to finish, and when it is cut if it does not.
    let mut asked = false;
    let mut cut_at: Option<tokio::time::Instant> = None;
    // When parking: the idle deadline, and the requests served before hyper was asked.
    let mut parking: Option<(tokio::time::Instant, u32)> = None;
    // The drain signal and the clock are polled only when they were woken: hyper's
    // connection wakes the task several times per request, they a few times per
    // connection (`crate::gate`).
    let gate = Gate::new();
    let ended = loop {
        let mut drained = std::pin::pin!(drain.wait_for(|d| *d));
        let mut expired = std::pin::pin!(activity.expired(park));
        gate.open();
        let watched = std::future::poll_fn(|cx| {
            gate.poll(cx, |cx| {
                if drained.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                expired.as_mut().poll(cx).map(Some)
            })
        });
        tokio::select! {
            biased;
            ended = conn.as_mut() => break ended,
            // The grace period is the listener's to enforce.
            watched = watched, if !asked => match watched {
                None => {
                    asked = true;
                    shutdown(conn.as_mut());
                }
                Some(Expiry::Idle) => {
                    tracing::debug!(%peer, "idle connection; closing it");
                    asked = true;
                    shutdown(conn.as_mut());
                    // A client that neither closes nor answers HTTP/2's GOAWAY is cut
                    // after one more idle period.
                    cut_at = Some(tokio::time::Instant::now() + activity.idle_timeout());
                }
                Some(Expiry::Head) => {
                    tracing::debug!(%peer, "request head not read within header_read_timeout; closing the connection");
                    return Ran::Ended;
                }
                Some(Expiry::Send) => {
                    tracing::debug!(%peer, "the client took nothing of its response within send_timeout; closing the connection");
                    return Ran::Ended;
                }
                Some(Expiry::Quiet(deadline)) => {
                    // Nothing in flight and nothing read: hyper ends the connection at
                    // once, without a byte, and the socket stays open.
                    asked = true;
                    activity.set_parking(true);
                    parking = Some((deadline, activity.requests()));
                    shutdown(conn.as_mut());
                }
            },
            _ = tokio::time::sleep_until(cut_at.unwrap_or_else(tokio::time::Instant::now)), if cut_at.is_some() => {
                tracing::debug!(%peer, "idle connection did not close; dropping it");
                return Ran::Ended;
            }
        }
    };
    activity.set_parking(false);
    match (ended, parking) {
        // A request read meanwhile was answered with `connection: close`.
        (Ok(()), Some((deadline, requests))) if activity.requests() == requests => {
            Ran::Parked(deadline)
        }
        (Err(err), _) => {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
            Ran::Ended
        }
        _ => Ran::Ended,
    }
}

/// The protocol of a new connection without ALPN, told by its first bytes; `None` when
/// it ended first (closed, drained, or no request in time).
async fn first_bytes<I: AsyncRead + Unpin>(
    io: &mut Tracked<I>,
    activity: &Activity,
    drain: &mut watch::Receiver<bool>,
    peer: SocketAddr,
) -> Option<Proto> {
    tokio::select! {
        sniffed = sniff(io) => match sniffed {
            Ok(proto) => proto,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "connection failed before its first request");
                None
            }
        },
        _ = drain.wait_for(|d| *d) => None,
        expiry = activity.expired(false) => {
            tracing::debug!(%peer, ?expiry, "no request in time; closing the connection");
            None
        }
    }
}

/// Waits, holding no buffers, until a parked connection is readable (true) or must
/// close: drained, idle at `deadline`, or failed.
async fn parked<I: ReadReady>(
    io: &Tracked<I>,
    dataplane: &DataPlane,
    drain: &mut watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    info: &ConnInfo,
) -> bool {
    // The peer is read from `info` (a reference) rather than taken: this future is
    // held for as long as the connection is parked.
    tracing::trace!(peer = %info.peer, "connection parked");
    let _parked = Parked::new(dataplane);
    release_memory_soon();
    tokio::select! {
        ready = io.readable() => match ready {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(peer = %info.peer, error = %err, "parked connection failed");
                false
            }
        },
        _ = drain.wait_for(|d| *d) => false,
        _ = tokio::time::sleep_until(deadline) => {
            tracing::debug!(peer = %info.peer, "idle connection; closing it");
            false
        }
    }
}

/// Serves one connection until it ends, the listener drains, or its clock runs out.
/// `proto` is the protocol ALPN chose, if any.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<I>(
    servers: Arc<Servers>,
    mut io: Tracked<I>,
    dataplane: Arc<DataPlane>,
    info: Arc<ConnInfo>,
    activity: Arc<Activity>,
    mut drain: watch::Receiver<bool>,
    proto: Option<Proto>,
    _open: Open,
) where
    I: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let counting = activity.clone();
    let plane = dataplane.clone();
    let conn = info.clone();
    let mut service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let in_flight = InFlight::start(&counting);
        if counting.take_normalised_framing() {
            req.extensions_mut().insert(NormalisedFraming);
        }
        Counting::new(dataplane.handle(req, &conn), in_flight)
    });
    // Each stage that waits on hyper or on a clock runs boxed: a parked connection's task
    // holds only what parking needs, not the largest stage's state.
    let proto = match proto {
        Some(proto) => proto,
        None => match Box::pin(first_bytes(&mut io, &activity, &mut drain, info.peer)).await {
            Some(proto) => proto,
            None => return,
        },
    };
    if proto == Proto::Http2 {
        activity.set_http2();
        Box::pin(async {
            let conn = std::pin::pin!(servers.h2.serve_connection(TokioIo::new(io), service));
            drive(
                conn,
                |c| c.graceful_shutdown(),
                &activity,
                &mut drain,
                info.peer,
                false,
            )
            .await
        })
        .await;
        return;
    }
    loop {
        let parts = Box::pin(async {
            let mut conn = servers
                .h1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let ran = drive(
                Pin::new(&mut conn),
                |c| c.graceful_shutdown(),
                &activity,
                &mut drain,
                info.peer,
                true,
            )
            .await;
            match ran {
                // `None`: upgraded meanwhile (the upgrade owns the socket now).
                Ran::Parked(deadline) => conn.into_parts().map(|parts| (deadline, parts)),
                Ran::Ended => None,
            }
        })
        .await;
        // In a block of its own: what is left of `parts` would otherwise take room in
        // the task while it is parked.
        let deadline = {
            let Some((deadline, parts)) = parts else {
                return;
            };
            io = parts.io.into_inner();
            service = parts.service;
            if !parts.read_buf.is_empty() {
                // A head had begun after all: serve it on a new connection at once.
                // Copied: the view would keep hyper's whole read buffer.
                io.unread(Bytes::copy_from_slice(&parts.read_buf));
                continue;
            }
            deadline
        };
        if !Box::pin(parked(&io, &plane, &mut drain, deadline, &info)).await {
            return;
        }
    }
}

async fn accept_loop(
    listener: BoundListener,
    dataplane: Arc<DataPlane>,
    drain: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    // Rebuilt when a reload changes the limits; connections keep the settings they
    // were accepted with.
    let mut limits = dataplane.snapshot().limits;
    let mut servers = Arc::new(Servers::new(&limits));
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
        let table = dataplane.table();
        let before = dataplane.open_connections.fetch_add(1, Ordering::Relaxed);
        let open = Open(dataplane.clone());
        if before >= table.snapshot.limits.max_connections {
            dataplane
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit = table.snapshot.limits.max_connections, "too many connections; closing the new one");
            drop(stream);
            continue;
        }
        if table.snapshot.limits != limits {
            limits = table.snapshot.limits;
            servers = Arc::new(Servers::new(&limits));
        }
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        limit_unsent(&stream, peer);
        let (trusted, tls) = table.accepting(&listener.name, peer.ip());
        drop(table);
        let mut info = ConnInfo::new(peer, listener.name.clone(), trusted);
        if tls.is_some() {
            info.proto = "https";
        }
        let info = Arc::new(info);
        let activity = Activity::new(
            limits.idle_timeout,
            limits.header_read_timeout,
            limits.send_timeout,
        );
        let dataplane = dataplane.clone();
        let servers = servers.clone();
        let drain = drain.clone();
        let Some(tls) = tls else {
            // Spawned as it is: in a block of its own, the arguments would take room in
            // the task a second time for the connection's life.
            let io = Tracked::new(stream, activity.clone());
            tokio::spawn(serve_connection(
                servers, io, dataplane, info, activity, drain, None, open,
            ));
            continue;
        };
        // The handshake runs in the connection's task, bounded like a request head.
        let handshake_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let proto = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Some(Proto::Http2),
                Some(b"http/1.1") => Some(Proto::Http1),
                _ => None,
            };
            let io = Tracked::new(stream, activity.clone());
            serve_connection(servers, io, dataplane, info, activity, drain, proto, open).await;
        });
    }
    tracing::debug!(listener = %listener.name, "stopped accepting");
}

impl Serving {
    /// Starts accepting on `listener`.
    pub fn add(&mut self, listener: BoundListener) {
        tracing::debug!(listener = %listener.name, addr = %listener.local_addr, "accepting");
        let (stop, stopped) = watch::channel(false);
        let (drain, draining) = watch::channel(false);
        let name = listener.name.clone();
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            self.dataplane.clone(),
            draining,
            stopped,
        ));
        self.listeners.push(Running {
            name,
            accept_loop,
            stop,
            drain,
        });
    }

    /// Stops accepting on the listener `name` at once; its open connections finish
    /// their requests (at most `grace`) in the background. False if there is none.
    pub fn remove(&mut self, name: &str, grace: Duration) -> bool {
        let Some(i) = self.listeners.iter().position(|l| &*l.name == name) else {
            return false;
        };
        let running = self.listeners.swap_remove(i);
        self.draining.retain(|d| !d.is_finished());
        self.draining.push(tokio::spawn(running.drain(grace)));
        true
    }

    /// Stops accepting, lets in-flight requests finish for at most `grace`, and returns
    /// whether every connection closed in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let mut drains: Vec<JoinHandle<bool>> = self
            .listeners
            .into_iter()
            .map(|l| tokio::spawn(l.drain(grace)))
            .collect();
        drains.extend(self.draining);
        let mut drained = true;
        for drain in drains {
            drained &= drain.await.unwrap_or(false);
        }
        drained
    }
}

/// Listener sockets for every worker, bound but not yet registered with a runtime.
#[derive(Debug)]
pub struct WorkerSockets {
    /// `[worker][listener]`.
    sockets: Vec<Vec<(Arc<str>, std::net::TcpListener)>>,
    /// Each listener as configured and as bound.
    pub listeners: Vec<ListenerAddr>,
}

/// A listener's name, its configured address, and the address it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAddr {
    pub name: Arc<str>,
    pub configured: SocketAddr,
    pub bound: SocketAddr,
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
    bind_some(snapshot.listeners.iter(), workers)
}

fn bind_some<'a>(
    listeners: impl Iterator<Item = &'a serin_config::Listener>,
    workers: usize,
) -> Result<WorkerSockets, ProxyError> {
    let workers = workers.max(1);
    let mut sockets: Vec<Vec<(Arc<str>, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    let mut addrs = Vec::new();
    for listener in listeners {
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
        addrs.push(ListenerAddr {
            name,
            configured: listener.listen,
            bound: resolved,
        });
    }
    Ok(WorkerSockets {
        sockets,
        listeners: addrs,
    })
}

/// What a worker is told to do with its listeners.
enum Command {
    Add(Vec<(Arc<str>, std::net::TcpListener)>),
    Remove(Vec<Arc<str>>),
}

/// Worker threads serving the listeners; see the module documentation.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<bool>>,
    commands: Vec<tokio::sync::mpsc::UnboundedSender<Command>>,
    stop: watch::Sender<bool>,
    listeners: std::sync::Mutex<Vec<ListenerAddr>>,
    grace: Duration,
}

/// New listeners bound on every worker, not yet accepting: the first half of a reload.
/// Dropping it closes the sockets.
#[derive(Debug)]
pub struct StagedListeners {
    sockets: WorkerSockets,
    removed: Vec<ListenerAddr>,
}

fn register(index: usize, own: Vec<(Arc<str>, std::net::TcpListener)>) -> Vec<BoundListener> {
    let mut listeners = Vec::with_capacity(own.len());
    for (name, socket) in own {
        match socket
            .local_addr()
            .and_then(|addr| Ok((addr, TcpListener::from_std(socket)?)))
        {
            Ok((local_addr, socket)) => listeners.push(BoundListener {
                name,
                local_addr,
                socket,
            }),
            Err(err) => {
                tracing::error!(worker = index, listener = %name, error = %err, "cannot register the listener")
            }
        }
    }
    listeners
}

impl Workers {
    /// Starts one thread per worker of `sockets`. `grace` bounds the drain on shutdown
    /// and of listeners removed by a reload.
    pub fn start(
        dataplane: Arc<DataPlane>,
        sockets: WorkerSockets,
        grace: Duration,
    ) -> Result<Self, std::io::Error> {
        for l in &sockets.listeners {
            tracing::info!(listener = %l.name, addr = %l.bound, workers = sockets.sockets.len(), "listening");
        }
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(sockets.sockets.len());
        let mut commands = Vec::with_capacity(sockets.sockets.len());
        for (index, own) in sockets.sockets.into_iter().enumerate() {
            let dataplane = dataplane.clone();
            let mut stopped = stopped.clone();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Command>();
            commands.push(tx);
            let thread = std::thread::Builder::new()
                .name(format!("serin-worker-{index}"))
                .spawn(move || {
                    worker::set_index(index);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(err) => {
                            tracing::error!(worker = index, error = %err, "cannot start the worker's runtime");
                            return false;
                        }
                    };
                    runtime.block_on(async move {
                        let mut serving = serve(dataplane, register(index, own));
                        loop {
                            tokio::select! {
                                _ = stopped.wait_for(|stop| *stop) => break,
                                command = rx.recv() => match command {
                                    Some(Command::Add(own)) => {
                                        for listener in register(index, own) {
                                            serving.add(listener);
                                        }
                                    }
                                    Some(Command::Remove(names)) => {
                                        for name in names {
                                            serving.remove(&name, grace);
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                        serving.shutdown(grace).await
                    })
                })?;
            threads.push(thread);
        }
        Ok(Self {
            threads,
            commands,
            stop,
            listeners: std::sync::Mutex::new(sockets.listeners),
            grace,
        })
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<ListenerAddr>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Binds the listeners of `snapshot` that are not served yet (new names, or a new
    /// address for a name) on every worker, without accepting on them. Fails whole,
    /// binding nothing, if any address cannot be bound.
    pub fn stage(&self, snapshot: &Snapshot) -> Result<StagedListeners, ProxyError> {
        let current = self.lock_listeners();
        let added = snapshot.listeners.iter().filter(|l| {
            !current
                .iter()
                .any(|c| *c.name == *l.name && c.configured == l.listen)
        });
        let sockets = bind_some(added, self.commands.len())?;
        let removed = current
            .iter()
            .filter(|c| {
                !snapshot
                    .listeners
                    .iter()
                    .any(|l| *c.name == *l.name && c.configured == l.listen)
            })
            .cloned()
            .collect();
        Ok(StagedListeners { sockets, removed })
    }

    /// Second half of a reload: stops accepting on the listeners `staged` removes (their
    /// connections drain within the grace period) and starts accepting on the ones it
    /// bound.
    pub fn commit(&self, staged: StagedListeners) {
        let mut current = self.lock_listeners();
        let StagedListeners { sockets, removed } = staged;
        let names: Vec<Arc<str>> = removed.iter().map(|r| r.name.clone()).collect();
        for (tx, own) in self.commands.iter().zip(sockets.sockets) {
            if !names.is_empty() {
                let _ = tx.send(Command::Remove(names.clone()));
            }
            if !own.is_empty() {
                let _ = tx.send(Command::Add(own));
            }
        }
        current.retain(|c| !removed.contains(c));
        for l in &removed {
            tracing::info!(listener = %l.name, addr = %l.bound, grace = ?self.grace, "stopped listening; draining its connections");
        }
        for l in &sockets.listeners {
            tracing::info!(listener = %l.name, addr = %l.bound, workers = self.commands.len(), "listening");
        }
        current.extend(sockets.listeners);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::type_complexity)]
    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            Arc<Servers>,
            Tracked<tokio::net::TcpStream>,
            Arc<DataPlane>,
            Arc<ConnInfo>,
            Arc<Activity>,
            watch::Receiver<bool>,
            Option<Proto>,
            Open,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every open connection's task holds this future for the connection's life (a
    /// plain connection's task is this future alone), so 10,000 idle connections cost
    /// 10,000 of it. Each stage that waits (the first bytes, a hyper connection and its
    /// clocks, the parked wait) is boxed for as long as it runs; nothing large may be
    /// held inline (unboxed, it was 2.7 KiB). 512 bytes keep the task (the future and
    /// tokio's header, in steps of 128 bytes) at 640.
    #[test]
    fn the_connection_future_stays_small() {
        let size = size_of_future(serve_connection::<tokio::net::TcpStream>);
        assert!(
            size <= 512,
            "the connection future is {size} bytes; box what grew it"
        );
    }

    fn size_of_parked<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            &'a Tracked<tokio::net::TcpStream>,
            &'a DataPlane,
            &'a mut watch::Receiver<bool>,
            tokio::time::Instant,
            &'a ConnInfo,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A parked connection holds this future (boxed) besides its task, for as long as
    /// it is parked: its wait on the socket, the drain signal and the idle deadline,
    /// and nothing else. Allocated in size classes of 64 bytes here.
    #[test]
    fn the_parked_wait_stays_small() {
        let size = size_of_parked(parked::<tokio::net::TcpStream>);
        assert!(
            size <= 384,
            "the parked wait is {size} bytes; keep what it holds to references"
        );
    }
}
