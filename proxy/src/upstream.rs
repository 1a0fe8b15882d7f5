//! Upstream connections: one keep-alive pool per endpoint and worker.
//!
//! Each worker keeps its own idle HTTP/1.1 connections to each endpoint, so checking one
//! out takes an uncontended lock and the connection is driven by the worker that uses
//! it. A connection goes back to its pool when the response body has been read to the
//! end; one whose body was abandoned is closed. One idle for longer than its version's
//! `idle_timeout` is closed by [`EndpointPool::purge_idle`] (run every second off the
//! workers, `crate::health`); a connection in use is in no pool, so never purged. A request that an idle connection could
//! not take (the upstream closed it meanwhile) is sent again on another connection;
//! a request that was written is never sent twice.
//!
//! A version with `protocol: http2` (or `auto`, for HTTP/2 clients) is spoken to over
//! cleartext HTTP/2 with prior knowledge instead: each worker keeps one shared
//! connection per endpoint that carries many streams at once, and dials a new one when
//! it has closed or was let go after `idle_timeout` with no request asking for it.
//!
//! A version with `tls` speaks TLS to its endpoints with the connectors built with the
//! table (never per request). ALPN follows `protocol`; with `auto` the upstream's
//! choice decides: `h2` makes the connection the worker's shared HTTP/2 connection,
//! anything else an HTTP/1.1 one of the pool. A failed TLS handshake is a connect error.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::UpstreamBody;
use crate::record::{Outcome, VersionStats};
use crate::rotation::{Monotonic, Rotation};
use crate::tls::UpstreamTls;

/// Idle connections kept per endpoint and worker; more are closed when they come back.
pub const MAX_IDLE: usize = 256;
/// Sends of one request to pooled connections that turned out to be closed before it
/// falls back to a new connection.
const STALE_RETRIES: usize = 3;
/// hyper's buffer on an HTTP/1.1 upstream connection: the longest response head it
/// reads, the largest read (`crate::pace`), and the most it buffers of a request body
/// for an upstream that reads slowly (its default is about 400 KiB).
const UPSTREAM_BUFFER: usize = crate::pace::BIG + 1;

/// What an HTTP/2 upstream may send of one response before serin's client takes it
/// (hyper's default is 2 MiB): what a slow reader's stream holds at most. HTTP/2's own
/// default; a stream's throughput is at most this much per round trip to the upstream.
const UPSTREAM_H2_STREAM_WINDOW: u32 = 64 * 1024;
/// The same for all streams of the shared connection: ample, so that slow readers, each
/// holding up to a stream window of it, do not stall the worker's other streams.
const UPSTREAM_H2_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

type Sender = SendRequest<UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// A worker's shared HTTP/2 connection to an endpoint. `used` is set under the slot's
/// lock that each request takes anyway, and cleared by each purge pass, which also
/// notes since when no request has asked for the connection.
struct SharedH2 {
    sender: H2Sender,
    used: bool,
    quiet_since: Instant,
}

/// TLS to one endpoint: the version's connectors and the name to verify.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub connectors: UpstreamTls,
    pub server_name: ServerName<'static>,
    /// The version's protocol the connectors' ALPN was chosen for.
    pub protocol: serin_config::snapshot::UpstreamProtocol,
}

/// One endpoint's connections, one pool per worker. Whether the endpoint is in
/// rotation is not the pool's business (`crate::rotation`).
pub struct EndpointPool {
    pub authority: Authority,
    /// TLS to the endpoint, if its version has `tls`.
    tls: Option<TlsTarget>,
    connect_timeout: Duration,
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// The shared HTTP/2 connection of each worker, once one was needed.
    h2: Box<[Mutex<Option<SharedH2>>]>,
}

/// A request that got no answer, and the request itself when it was never sent (a
/// failed connect), so that another version can take it.
pub struct Failed {
    pub error: UpstreamError,
    pub unsent: Option<Request<UpstreamBody>>,
}

impl Failed {
    /// A connect that failed: the request was never sent and comes back.
    fn unsent(error: UpstreamError, req: Request<UpstreamBody>) -> Self {
        Self {
            error,
            unsent: Some(req),
        }
    }
}

impl From<UpstreamError> for Failed {
    fn from(error: UpstreamError) -> Self {
        Self {
            error,
            unsent: None,
        }
    }
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: Authority,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(Authority),
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        authority: Authority,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP handshake with {authority} failed: {source}")]
    Handshake {
        authority: Authority,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {authority} failed: {source}")]
    Request {
        authority: Authority,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout(_)
                | Self::Tls { .. }
                | Self::Handshake { .. }
        )
    }

    /// The client's body went over `limits.max_request_body`.
    pub fn is_body_too_large(&self) -> bool {
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            if e.is::<http_body_util::LengthLimitError>() {
                return true;
            }
            source = e.source();
        }
        false
    }

    /// The client's own request body failed (it went away mid-upload).
    pub fn is_client_gone(&self) -> bool {
        match self {
            Self::Request { source, .. } => source.is_user() || source.is_body_write_aborted(),
            _ => false,
        }
    }
}

impl EndpointPool {
    pub fn new(
        authority: Authority,
        connect_timeout: Duration,
        workers: usize,
        tls: Option<TlsTarget>,
    ) -> Self {
        Self {
            authority,
            tls,
            connect_timeout,
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            h2: (0..workers.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn shard(&self, worker: usize) -> &Mutex<Vec<Idle>> {
        &self.idle[worker % self.idle.len()]
    }

    /// A pooled connection that is ready for a request, newest first; closed ones are
    /// dropped on the way (idle ones too old are [`Self::purge_idle`]'s).
    fn checkout(&self, worker: usize) -> Option<Sender> {
        let mut idle = self.shard(worker).lock().unwrap_or_else(|p| p.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let candidate = &idle[i];
            if candidate.sender.is_closed() {
                idle.remove(i);
            } else if candidate.sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
            // Otherwise it is still settling after its previous exchange: leave it.
        }
        None
    }

    /// Closes the pooled connections of every worker that have been idle for
    /// `idle_timeout` or more, and drops those the upstream closed; returns how many
    /// went. Dropping a connection's sender ends its task, which closes the socket.
    /// A shared HTTP/2 connection no request asked for since `idle_timeout` (as seen by
    /// these passes, a second apart) is let go too: streams still open on it finish,
    /// then hyper closes it; the next request dials a new one.
    pub fn purge_idle(&self, idle_timeout: Duration) -> usize {
        let mut purged = 0;
        for shard in self.idle.iter() {
            let mut idle = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = idle.len();
            idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() < idle_timeout);
            purged += before - idle.len();
        }
        let now = Instant::now();
        for slot in self.h2.iter() {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(shared) = slot.as_mut() {
                if shared.used {
                    shared.used = false;
                    shared.quiet_since = now;
                }
                if shared.sender.is_closed()
                    || now.saturating_duration_since(shared.quiet_since) >= idle_timeout
                {
                    *slot = None;
                    purged += 1;
                }
            }
        }
        purged
    }

    /// Pooled idle connections, over all workers.
    pub fn idle_connections(&self) -> usize {
        self.idle
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Shared HTTP/2 connections held, over all workers.
    pub fn shared_h2_connections(&self) -> usize {
        self.h2
            .iter()
            .filter(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).is_some())
            .count()
    }

    fn put_back(&self, worker: usize, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.shard(worker).lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE {
            // The oldest is the likeliest to be closed by the upstream soon.
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<Sender, UpstreamError> {
        // Boxed: dialling is rare, and inline its future would make every request's
        // future (kept per connection by the server) several KiB larger.
        Box::pin(self.connect_with(false)).await
    }

    /// A new connection of its own (not pooled) that may switch protocols: for a
    /// request asking for an upgrade (WebSocket).
    pub async fn connect_upgradable(&self) -> Result<Sender, UpstreamError> {
        Box::pin(self.connect_with(true)).await
    }

    async fn dial(&self) -> Result<TcpStream, UpstreamError> {
        let host = self.authority.host();
        let port = self.authority.port_u16().unwrap_or(80);
        let stream = match tokio::time::timeout(self.connect_timeout, connect_tcp(host, port)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect {
                    authority: self.authority.clone(),
                    source,
                })
            }
            Err(_) => return Err(UpstreamError::ConnectTimeout(self.authority.clone())),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// TLS to the endpoint, if its version has `tls`.
    pub fn tls(&self) -> Option<&TlsTarget> {
        self.tls.as_ref()
    }

    /// Whether the pool speaks TLS as `tls` and `protocol` ask (so a reload may keep it).
    pub fn same_tls(
        &self,
        tls: Option<&serin_config::UpstreamTls>,
        protocol: serin_config::snapshot::UpstreamProtocol,
    ) -> bool {
        match (&self.tls, tls) {
            (None, None) => true,
            (Some(ours), Some(theirs)) => {
                ours.connectors.settings == *theirs && ours.protocol == protocol
            }
            _ => false,
        }
    }

    /// The TLS handshake over `stream` with `connector`, within the connect timeout.
    async fn handshake_tls(
        &self,
        stream: TcpStream,
        connector: &TlsConnector,
        server_name: &ServerName<'static>,
    ) -> Result<TlsStream<TcpStream>, UpstreamError> {
        let handshake = connector.connect(server_name.clone(), stream);
        match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(source)) => {
                let error = UpstreamError::Tls {
                    authority: self.authority.clone(),
                    source,
                };
                tracing::warn!(upstream = %self.authority, "{error}");
                Err(error)
            }
            Err(_) => Err(UpstreamError::ConnectTimeout(self.authority.clone())),
        }
    }

    async fn connect_with(&self, upgrades: bool) -> Result<Sender, UpstreamError> {
        let stream = self.dial().await?;
        match &self.tls {
            None => self.handshake_h1(stream, upgrades).await,
            Some(tls) => {
                let stream = self
                    .handshake_tls(stream, &tls.connectors.http1, &tls.server_name)
                    .await?;
                self.handshake_h1(stream, upgrades).await
            }
        }
    }

    /// HTTP/1.1 on a connection, driven by a task of the calling worker.
    async fn handshake_h1<T>(&self, io: T, upgrades: bool) -> Result<Sender, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(UPSTREAM_BUFFER)
            .handshake(TokioIo::new(crate::pace::Paced::new(io)))
            .await
            .map_err(|source| UpstreamError::Handshake {
                authority: self.authority.clone(),
                source,
            })?;
        let authority = self.authority.clone();
        let log = move |err: hyper::Error| {
            tracing::debug!(upstream = %authority, error = %err, "upstream connection ended with an error");
        };
        if upgrades {
            tokio::spawn(async move { connection.with_upgrades().await.map_err(log) });
        } else {
            tokio::spawn(async move { connection.await.map_err(log) });
        }
        Ok(sender)
    }

    /// A new HTTP/2 connection (prior knowledge, or ALPN `h2` over TLS), driven by a
    /// task of the calling worker.
    async fn connect_h2(&self) -> Result<H2Sender, UpstreamError> {
        let stream = self.dial().await?;
        match &self.tls {
            None => self.handshake_h2(TokioIo::new(stream)).await,
            Some(tls) => {
                let stream = self
                    .handshake_tls(stream, &tls.connectors.main, &tls.server_name)
                    .await?;
                self.handshake_h2(TokioIo::new(stream)).await
            }
        }
    }

    async fn handshake_h2<T>(&self, io: TokioIo<T>) -> Result<H2Sender, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
            .initial_connection_window_size(UPSTREAM_H2_CONNECTION_WINDOW)
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake {
                authority: self.authority.clone(),
                source,
            })?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(upstream = %authority, error = %err, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A new TLS connection offering both protocols, HTTP/2 or HTTP/1.1 as the upstream
    /// chose by ALPN.
    async fn connect_negotiated(&self, tls: &TlsTarget) -> Result<Negotiated, UpstreamError> {
        let stream = self.dial().await?;
        let stream = self
            .handshake_tls(stream, &tls.connectors.main, &tls.server_name)
            .await?;
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            Ok(Negotiated::Http2(
                self.handshake_h2(TokioIo::new(stream)).await?,
            ))
        } else {
            Ok(Negotiated::Http1(self.handshake_h1(stream, false).await?))
        }
    }

    /// Sends `req` (origin-form URI, Host set) to a TLS endpoint whose ALPN decides
    /// the protocol (`protocol: auto`): on the worker's shared HTTP/2 connection if
    /// there is one, else on a pooled HTTP/1.1 one, else on a new connection that is
    /// HTTP/2 (and becomes the shared one) when the upstream chose `h2`. `to_h2` turns
    /// the request into its HTTP/2 form.
    pub async fn send_negotiated(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
        to_h2: impl FnOnce(&mut Request<UpstreamBody>),
    ) -> Result<Response<PooledBody>, Failed> {
        let Some(tls) = &self.tls else {
            return self.send(req).await;
        };
        let worker = crate::worker::index();
        if self.shared_h2(worker).is_some() {
            to_h2(&mut req);
            return self.send_h2(req).await;
        }
        req = match self.send_idle(worker, req).await? {
            Ok(response) => return Ok(response),
            Err(req) => req,
        };
        // Boxed: dialling is rare, and its futures (the TLS handshake's among them)
        // would otherwise be inline in every request's future.
        let connected = match Box::pin(self.connect_negotiated(tls)).await {
            Ok(connected) => connected,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        let mut sender = match connected {
            Negotiated::Http1(sender) => sender,
            Negotiated::Http2(mut sender) => {
                self.share_h2(worker, &sender);
                to_h2(&mut req);
                return match sender.try_send_request(req).await {
                    Ok(response) => Ok(response.map(PooledBody::unpooled)),
                    Err(err) => Err(self.send_failed(err).into()),
                };
            }
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok(self.wrap(response, sender, worker)),
            Err(err) => Err(self.send_failed(err).into()),
        }
    }

    /// Makes `sender` the calling worker's HTTP/2 connection to this endpoint.
    fn share_h2(&self, worker: usize, sender: &H2Sender) {
        *self.h2[worker % self.h2.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(SharedH2 {
            sender: sender.clone(),
            used: true,
            quiet_since: Instant::now(),
        });
    }

    /// The calling worker's HTTP/2 connection to this endpoint, if it is still open.
    fn shared_h2(&self, worker: usize) -> Option<H2Sender> {
        let mut slot = self.h2[worker % self.h2.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let shared = slot.as_mut().filter(|s| !s.sender.is_closed())?;
        shared.used = true;
        Some(shared.sender.clone())
    }

    /// Sends `req` (absolute-form URI, HTTP/2) as a stream on the calling worker's
    /// shared HTTP/2 connection, dialling it when there is none or it has closed.
    pub async fn send_h2(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Failed> {
        let worker = crate::worker::index();
        if let Some(mut sender) = self.shared_h2(worker) {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(response) => return Ok(response.map(PooledBody::unpooled)),
                    // Never written: the connection closed under us; dial anew.
                    Err(err) => req = self.unsent(err)?,
                }
            }
        }
        let mut sender = match Box::pin(self.connect_h2()).await {
            Ok(sender) => sender,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        self.share_h2(worker, &sender);
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response.map(PooledBody::unpooled)),
            Err(err) => Err(self.send_failed(err).into()),
        }
    }

    /// Sends `req` on `sender` (a connection of its own) and waits for the head.
    pub async fn send_on(
        &self,
        mut sender: Sender,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response.map(PooledBody::unpooled)),
            Err(err) => Err(self.send_failed(err)),
        }
    }

    /// Sends `req` (origin-form URI, Host set) on a pooled or new connection of the
    /// calling worker.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Failed> {
        let worker = crate::worker::index();
        req = match self.send_idle(worker, req).await? {
            Ok(response) => return Ok(response),
            Err(req) => req,
        };
        let mut sender = match self.connect().await {
            Ok(sender) => sender,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        match sender.try_send_request(req).await {
            Ok(response) => Ok(self.wrap(response, sender, worker)),
            Err(err) => Err(self.send_failed(err).into()),
        }
    }

    /// Sends `req` on a pooled connection of `worker`, if one takes it; the request
    /// comes back when none did (it was never written).
    async fn send_idle(
        self: &Arc<Self>,
        worker: usize,
        mut req: Request<UpstreamBody>,
    ) -> Result<Result<Response<PooledBody>, Request<UpstreamBody>>, Failed> {
        for _ in 0..STALE_RETRIES {
            let Some(mut sender) = self.checkout(worker) else {
                break;
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(Ok(self.wrap(response, sender, worker))),
                // Never written: the connection was closed under us; try another.
                Err(err) => req = self.unsent(err)?,
            }
        }
        Ok(Err(req))
    }

    /// [`send`](Self::send) on a new connection of its own that may switch protocols.
    pub async fn send_upgrade(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Failed> {
        let sender = match self.connect_upgradable().await {
            Ok(sender) => sender,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        Ok(self.send_on(sender, req).await?)
    }

    /// A send that failed, the request written or not.
    fn send_failed(
        &self,
        err: hyper::client::conn::TrySendError<Request<UpstreamBody>>,
    ) -> UpstreamError {
        UpstreamError::Request {
            authority: self.authority.clone(),
            source: err.into_error(),
        }
    }

    /// The request back from a send that failed before writing it, or the failure of
    /// one that was written (never sent twice).
    fn unsent(
        &self,
        mut err: hyper::client::conn::TrySendError<Request<UpstreamBody>>,
    ) -> Result<Request<UpstreamBody>, UpstreamError> {
        match err.take_message() {
            Some(req) => Ok(req),
            None => Err(self.send_failed(err)),
        }
    }

    fn wrap(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: Sender,
        worker: usize,
    ) -> Response<PooledBody> {
        response.map(|inner| PooledBody {
            ended: inner.is_end_stream(),
            inner,
            home: Some((sender, self.clone(), worker)),
            grpc: None,
        })
    }
}

pub(crate) async fn connect_tcp(host: &str, port: u16) -> std::io::Result<TcpStream> {
    // A literal address needs no resolver round trip.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await,
        Err(_) => TcpStream::connect((host, port)).await,
    }
}

/// A new connection to a TLS endpoint, in the protocol its ALPN chose.
enum Negotiated {
    Http1(Sender),
    Http2(H2Sender),
}

/// The outcome of a gRPC call whose status is still to come in the response trailers:
/// recorded once, when they arrive (or the body ends or breaks without them).
pub struct GrpcRecord {
    pub stats: Arc<VersionStats>,
    pub started: Instant,
    pub success_rules: u8,
    /// `grpc.error_codes` of the version (bit n = code n).
    pub error_codes: u32,
    /// The HTTP status of the response head.
    pub status: u16,
    /// Where the endpoint that answered stands: a call failing with one of
    /// `error_codes` counts towards its passive ejection, like a 5xx.
    pub rotation: Arc<Rotation>,
}

/// gRPC's UNKNOWN: what a call that ends without a `grpc-status` counts as.
const GRPC_UNKNOWN: u32 = 2;

/// The `grpc-status` of `headers` (head or trailers), if there is one; a value that is
/// not a code counts as UNKNOWN.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|code| *code <= 16)
            .unwrap_or(GRPC_UNKNOWN),
    )
}

/// What a gRPC call with `code` counts as: a listed error code is recorded in the 5xx
/// class (gRPC answers HTTP 200 whatever the call's outcome), anything else as the HTTP
/// status of the response.
pub fn grpc_outcome(code: u32, error_codes: u32, status: u16) -> Outcome {
    if code != 0 && code < 32 && error_codes & (1 << code) != 0 {
        Outcome::Response(500)
    } else {
        Outcome::Response(status)
    }
}

impl GrpcRecord {
    fn finish(self, outcome: Outcome) {
        self.stats
            .record_matching(outcome, self.started.elapsed(), self.success_rules);
    }

    fn finish_with(self, code: u32) {
        let outcome = grpc_outcome(code, self.error_codes, self.status);
        self.rotation.observe(outcome.is_error(), &Monotonic);
        self.finish(outcome);
    }
}

/// An upstream response body that returns its connection to the pool once read to the
/// end. Dropped early, it closes the connection instead (its state is unknown). For a
/// gRPC call it also records the call's outcome when the trailers carrying its status
/// go by.
pub struct PooledBody {
    inner: Incoming,
    ended: bool,
    home: Option<(Sender, Arc<EndpointPool>, usize)>,
    grpc: Option<GrpcRecord>,
}

impl PooledBody {
    fn unpooled(inner: Incoming) -> Self {
        Self {
            ended: false,
            inner,
            home: None,
            grpc: None,
        }
    }

    /// Records `record` when the call's status arrives, instead of at the head.
    pub fn record_grpc_on_trailers(&mut self, record: GrpcRecord) {
        self.grpc = Some(record);
    }

    /// The connection is not pooled again: it closes once this response has been
    /// read (its sender goes now, so it takes no other request).
    pub fn close_connection_after(&mut self) {
        self.home = None;
    }

    /// Whether a gRPC outcome is still waiting for the trailers.
    pub fn grpc_pending(&self) -> bool {
        self.grpc.is_some()
    }

    fn release(&mut self) {
        if let Some((sender, pool, worker)) = self.home.take() {
            pool.put_back(worker, sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.grpc.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        let code = grpc_status(trailers).unwrap_or(GRPC_UNKNOWN);
                        if let Some(record) = this.grpc.take() {
                            record.finish_with(code);
                        }
                    } else if this.inner.is_end_stream() {
                        // The last data frame, and no trailers will follow.
                        if let Some(record) = this.grpc.take() {
                            record.finish_with(GRPC_UNKNOWN);
                        }
                    }
                }
                // Ended without trailers: the call has no status.
                Poll::Ready(None) => {
                    if let Some(record) = this.grpc.take() {
                        record.finish_with(GRPC_UNKNOWN);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    if let Some(record) = this.grpc.take() {
                        record.finish(Outcome::Reset);
                    }
                }
                Poll::Pending => {}
            }
        }
        match &polled {
            Poll::Ready(None) => {
                this.ended = true;
                this.release();
            }
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                this.ended = true;
                this.release();
            }
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(record) = self.grpc.take() {
            // The client stopped reading before the call's status arrived.
            record.finish(Outcome::ClientGone);
        }
        if self.ended || self.inner.is_end_stream() {
            self.release();
        }
    }
}
