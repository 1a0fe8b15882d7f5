//! Stages 3–7 for one request: check and route, split, forward, record, respond.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::body::{BodyWatch, Buffered, Unread};
use crate::guard::{self, Refusal};
use crate::headers::{
    canonical_content_length, drop_look_alikes, ensure_request_id, host_without_port,
    set_forwarded, strip_hop_by_hop, X_REQUEST_ID, X_SERIN_VERSION,
};
use crate::record::{Outcome, VersionStats};
use crate::split;
use crate::table::{ServiceRuntime, Table, VersionRuntime};
use crate::telemetry::{Observation, Telemetry};
use crate::upstream::{
    grpc_outcome, grpc_status, EndpointPool, GrpcRecord, PooledBody, UpstreamError,
};
use serin_config::snapshot::UpstreamProtocol;

pub use crate::body::UpstreamBody;
/// A response body: the upstream's, streamed, or serin's own short text.
type AnyBody = Either<PooledBody, Full<Bytes>>;

/// The body a client gets, carrying the request's [`Observation`] when it is traced or
/// logged: it counts the bytes sent, and the span ends and the log line goes out when
/// the body is done with.
pub struct ProxyBody {
    inner: AnyBody,
    observation: Option<Box<Observation>>,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = <AnyBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(observation) = this.observation.as_deref_mut() {
            observation.polled(&polled);
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

/// `response`, with the request's observation (if any) told its status and riding
/// along in its body.
fn observed(
    response: Response<AnyBody>,
    mut observation: Option<Box<Observation>>,
) -> Response<ProxyBody> {
    if let Some(o) = observation.as_deref_mut() {
        o.responded(response.status());
    }
    response.map(|inner| ProxyBody { inner, observation })
}

/// Marks a request (in its extensions) whose HTTP/1.1 head had framing hyper
/// normalised: two equal Content-Length lines (one kept), or Content-Length with
/// Transfer-Encoding (the Content-Length dropped). It is forwarded as hyper read it,
/// but neither connection is reused after it: the client's closes after the answer,
/// and the upstream connection is not pooled. Set by the server from the bytes the
/// connection read (`crate::idle::FramingScan`).
#[derive(Debug, Clone, Copy)]
pub struct NormalisedFraming;

/// What a request knows of the connection it came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// The peer's IP as a header value, made once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
    /// The peer is in the listener's `trust_forwarded`: its X-Forwarded-* are kept.
    pub trusted: bool,
    /// `https` on a TLS listener, else `http` (X-Forwarded-Proto).
    pub proto: &'static str,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, listener: Arc<str>, trusted: bool) -> Self {
        // An IP address's text is always a valid header value.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            listener,
            peer_ip,
            trusted,
            proto: "http",
        }
    }
}

/// Records the outcome exactly once: when the attempt finishes, or — if the client
/// goes away and the request future is dropped first — as [`Outcome::ClientGone`].
struct RecordGuard<'a> {
    stats: &'a VersionStats,
    success_rules: u8,
    started: Instant,
    done: bool,
}

impl RecordGuard<'_> {
    fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.stats
            .record_matching(outcome, self.started.elapsed(), self.success_rules);
    }
}

impl Drop for RecordGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stats.record_matching(
                Outcome::ClientGone,
                self.started.elapsed(),
                self.success_rules,
            );
        }
    }
}

/// How one attempt at one version ended.
pub(crate) enum Attempt {
    Answered(Response<PooledBody>),
    /// The request comes back when it was never sent.
    Failed(
        Outcome,
        Option<UpstreamError>,
        Option<Request<UpstreamBody>>,
    ),
}

impl Attempt {
    /// A failure the baseline may answer instead: no response, or a 5xx.
    fn failed(&self) -> bool {
        match self {
            Attempt::Answered(r) => r.status().is_server_error(),
            Attempt::Failed(..) => true,
        }
    }
}

/// Sends `req` to `version` and records the outcome against it (stages 5 and 6); also
/// returns the endpoint it went to.
async fn attempt<'v>(
    service: &ServiceRuntime,
    version: &'v VersionRuntime,
    mut req: Request<UpstreamBody>,
    success_rules: u8,
    upgrade: bool,
    client_h2: bool,
    body: Option<&BodyWatch>,
) -> (Attempt, Option<&'v EndpointPool>) {
    let guard = RecordGuard {
        stats: &version.stats,
        success_rules,
        started: Instant::now(),
        done: false,
    };
    // The connection that carries a request with normalised framing is not reused.
    let reuse = req.extensions().get::<NormalisedFraming>().is_none();
    let Some(endpoint) = version.next_endpoint() else {
        // Every endpoint is down or ejected (it became so since the split): nothing
        // was sent, so another version may take the request.
        guard.finish(Outcome::ConnectError);
        return (
            Attempt::Failed(Outcome::ConnectError, None, Some(req)),
            None,
        );
    };
    if !req.headers().contains_key(HOST) {
        // HTTP/1.0 clients may send none; the upstream gets its own address.
        if let Ok(host) = HeaderValue::from_str(endpoint.authority.as_str()) {
            req.headers_mut().insert(HOST, host);
        }
    }
    // Over TLS, `auto` is decided by the upstream's ALPN choice, on the connection.
    let negotiated = !upgrade && version.tls && version.protocol == UpstreamProtocol::Auto;
    let h2 = !upgrade
        && !negotiated
        && match version.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => client_h2,
        };
    if h2 {
        to_h2(&mut req, &endpoint.authority, version.tls);
    }
    // The sends are built in place (not bound first): a future moved into another
    // takes room twice in the enclosing future.
    let sent = if upgrade {
        tokio::time::timeout(
            service.request_timeout,
            Box::pin(endpoint.send_upgrade(req)),
        )
        .await
    } else if negotiated {
        tokio::time::timeout(
            service.request_timeout,
            endpoint.send_negotiated(req, |req| to_h2(req, &endpoint.authority, true)),
        )
        .await
    } else if h2 {
        tokio::time::timeout(service.request_timeout, endpoint.send_h2(req)).await
    } else {
        tokio::time::timeout(service.request_timeout, endpoint.send(req)).await
    };
    let attempt = match sent {
        Ok(Ok(mut response)) => {
            if !reuse {
                response.body_mut().close_connection_after();
            }
            let status = response.status().as_u16();
            let grpc = version.grpc_error_codes != 0 && is_grpc(response.headers());
            match grpc.then(|| grpc_status(response.headers())) {
                // A trailers-only gRPC response: the status is in the head.
                Some(Some(code)) => {
                    let outcome = grpc_outcome(code, version.grpc_error_codes, status);
                    endpoint.observe(outcome.is_error());
                    guard.finish(outcome)
                }
                // The status comes in the trailers: the body records it (and counts
                // it for the endpoint's ejection) then.
                Some(None) => {
                    let mut guard = guard;
                    guard.done = true;
                    response.body_mut().record_grpc_on_trailers(GrpcRecord {
                        stats: version.stats.clone(),
                        started: guard.started,
                        success_rules,
                        error_codes: version.grpc_error_codes,
                        status,
                        endpoint: endpoint.clone(),
                    });
                }
                None => {
                    endpoint.observe(response.status().is_server_error());
                    guard.finish(Outcome::Response(status))
                }
            }
            Attempt::Answered(response)
        }
        Ok(Err(failed)) => {
            // The client's body gave up waiting for the client (the upstream may only
            // see a reset stream).
            let outcome = if body.is_some_and(BodyWatch::timed_out) {
                Outcome::ClientGone
            } else {
                classify(&failed.error)
            };
            if outcome != Outcome::ClientGone {
                endpoint.observe(true);
            }
            guard.finish(outcome);
            Attempt::Failed(outcome, Some(failed.error), failed.unsent)
        }
        // The client was still sending its body: it is what the request waited for.
        Err(_elapsed) if body.is_some_and(BodyWatch::waits_for_client) => {
            guard.finish(Outcome::ClientGone);
            Attempt::Failed(Outcome::ClientGone, None, None)
        }
        Err(_elapsed) => {
            endpoint.observe(true);
            guard.finish(Outcome::Timeout);
            Attempt::Failed(Outcome::Timeout, None, None)
        }
    };
    (attempt, Some(&**endpoint))
}

/// Proxies one request with the routes and weights of `table`; `telemetry` traces and
/// logs it when configured.
///
/// Everything is owned, so the future is the server's service future itself, with no
/// wrapper holding a second copy of the request: the server keeps a slot of this size
/// for every connection.
pub async fn proxy(
    table: Arc<Table>,
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    telemetry: Option<Arc<Telemetry>>,
) -> Result<Response<ProxyBody>, Infallible> {
    let telemetry = telemetry.as_ref();
    let normalised = req.extensions().get::<NormalisedFraming>().is_some();
    // Stage 3: check, then route.
    if let Err(refusal) = guard::check(req.method(), req.version(), req.uri(), req.headers()) {
        let request_id = ensure_request_id(req.headers_mut());
        let observation = telemetry.and_then(|t| t.observe(&req, None, &conn, &request_id));
        tracing::debug!(peer = %conn.peer, ?refusal, "request refused");
        return Ok(observed(
            refused(refusal, req.version(), request_id),
            observation,
        ));
    }
    // HTTP/2 (and absolute-form HTTP/1) carry the host in the URI.
    // `from_uri`: the host must also be written as a Host header for the upstream.
    let (host_value, from_uri): (Option<HeaderValue>, bool) = match req.uri().authority() {
        Some(authority) => (HeaderValue::from_str(authority.as_str()).ok(), true),
        None => (req.headers().get(HOST).cloned(), false),
    };
    let host = host_value
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(host_without_port)
        .unwrap_or("");
    let Some(route) = table.route(&conn.listener, host, req.uri().path()) else {
        let request_id = ensure_request_id(req.headers_mut());
        let observation =
            telemetry.and_then(|t| t.observe(&req, host_value.as_ref(), &conn, &request_id));
        let response = not_found(host, req.uri().path(), request_id);
        return Ok(observed(closing_if(normalised, response), observation));
    };
    let service = &table.services[route.service];

    // Stage 4: split.
    // A version named by the force header is asked for on purpose: no failover.
    let forced = split::forced(service, req.headers());
    let mut chosen = forced.unwrap_or_else(|| split::unforced(service, req.headers()));
    if forced.is_none() && !service.versions[chosen].available() {
        // Every endpoint of the chosen version is down or ejected: its share goes to
        // the baseline (or to a version that can serve).
        if let Some(other) = service.fail_over(chosen) {
            chosen = other;
        }
    }
    let version = &service.versions[chosen];
    let success_rules = service.success_mask(req.method(), req.uri().path());

    // Stage 5: forward. A request with normalised framing is never an upgrade: it is
    // answered and its connection closed.
    let upgrade = (!normalised)
        .then(|| crate::upgrade::requested(&req))
        .flatten();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    drop_look_alikes(headers);
    canonical_content_length(headers);
    if let Some(protocol) = &upgrade {
        crate::upgrade::keep_asking(headers, protocol.clone());
    }
    set_forwarded(
        headers,
        &conn.peer_ip,
        conn.trusted,
        conn.proto,
        host_value.clone(),
    );
    if let (true, Some(h)) = (from_uri, &host_value) {
        headers.insert(HOST, h.clone());
    }
    let request_id = ensure_request_id(headers);
    let mut observation =
        telemetry.and_then(|t| t.observe(&req, host_value.as_ref(), &conn, &request_id));
    if let Some(o) = observation.as_deref_mut() {
        o.routed(&table, route);
        o.propagate(req.headers_mut());
    }
    let client_version = req.version();
    let client_h2 = client_version == http::Version::HTTP_2;
    // A failed idempotent canary request without a body may be answered by the baseline.
    let retry = service.retry.filter(|r| {
        r.canary == chosen
            && matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            && req.body().is_end_stream()
            && upgrade.is_none()
    });
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let retry_request = retry.map(|r| {
        let mut again = Request::new(Either::Right(Buffered::empty()));
        *again.method_mut() = req.method().clone();
        *again.headers_mut() = req.headers().clone();
        *again.uri_mut() = origin_form(req.uri());
        (r.baseline, again)
    });
    *req.uri_mut() = origin_form(req.uri());
    *req.version_mut() = http::Version::HTTP_11;

    let (mut answered_by, mut answered_index) = (version, chosen);
    // A body larger than the limit: refused before anything goes upstream when its
    // length is declared, cut off (and the request aborted) when it is not.
    let max_body = table.snapshot.limits.max_request_body;
    let body_limit = match max_body {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if max_body > 0 && req.body().size_hint().lower() > max_body {
        return Ok(observed(too_large(max_body, request_id), observation));
    }
    // A small body is read whole before any upstream is asked; others stream
    // (`crate::body`).
    let limits = &table.snapshot.limits;
    let (req, body) = match crate::body::to_buffer(req.body(), limits.request_buffer) {
        // Boxed: a request with a body is the rarer kind, and inline the read would
        // grow every request's future.
        Some(len) => {
            match Box::pin(crate::body::read_whole(req, len, limits.body_read_timeout)).await {
                Ok(req) => (req, None),
                Err(unread) => {
                    let response = unread_body(unread, version, success_rules, limits, request_id);
                    return Ok(observed(response, observation));
                }
            }
        }
        None => crate::body::streamed(req, limits.body_read_timeout, body_limit),
    };
    let body = body.as_deref();
    let (mut result, mut upstream) = attempt(
        service,
        version,
        req,
        success_rules,
        upgrade.is_some(),
        client_h2,
        body,
    )
    .await;
    // Refused connection: nothing was sent, so any method may go to another version.
    if forced.is_none() {
        if let Attempt::Failed(Outcome::ConnectError, err, Some(unsent)) = result {
            result = match service.fail_over(chosen) {
                Some(other) => {
                    (answered_by, answered_index) = (&service.versions[other], other);
                    // Boxed, as the retry below: rare, and inline it would grow
                    // every request's future.
                    let again = Box::pin(attempt(
                        service,
                        answered_by,
                        unsent,
                        success_rules,
                        upgrade.is_some(),
                        client_h2,
                        body,
                    ))
                    .await;
                    upstream = again.1;
                    again.0
                }
                None => Attempt::Failed(Outcome::ConnectError, err, Some(unsent)),
            };
        }
    }
    // The baseline answers a failed idempotent canary request (unless it already did).
    let retry_request =
        retry_request.filter(|(b, _)| !std::ptr::eq(answered_by, &service.versions[*b]));
    if let (true, Some((baseline, mut again))) = (result.failed(), retry_request) {
        if let Some(o) = observation.as_deref_mut() {
            o.retrying(chosen, upstream.map(|u| &u.authority), &result);
        }
        tracing::debug!(service = %service.name, version = %version.name, "retrying a failed canary request on the baseline");
        *again.version_mut() = http::Version::HTTP_11;
        (answered_by, answered_index) = (&service.versions[baseline], baseline);
        (result, upstream) = Box::pin(attempt(
            service,
            answered_by,
            again,
            success_rules,
            false,
            client_h2,
            None,
        ))
        .await;
    }
    if let Some(o) = observation.as_deref_mut() {
        o.attempted(answered_index, upstream.map(|u| &u.authority), &result);
    }

    // Stage 7: respond.
    let response = match result {
        Attempt::Answered(mut response) => {
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            let protocol = response.headers().get(http::header::UPGRADE).cloned();
            if let (true, Some(client)) = (switching, client_upgrade) {
                let upstream = hyper::upgrade::on(&mut response);
                crate::upgrade::tunnel(client, upstream, answered_by.name.clone());
            }
            let (mut parts, body) = response.into_parts();
            // Answer in the client's protocol version, whatever the upstream spoke.
            parts.version = client_version;
            strip_hop_by_hop(&mut parts.headers);
            if let (true, Some(protocol)) = (switching, protocol) {
                crate::upgrade::keep_asking(&mut parts.headers, protocol);
            }
            parts
                .headers
                .insert(&X_SERIN_VERSION, answered_by.header_value.clone());
            if !parts.headers.contains_key(&X_REQUEST_ID) {
                parts.headers.insert(&X_REQUEST_ID, request_id);
            }
            Response::from_parts(parts, Either::Left(body))
        }
        Attempt::Failed(Outcome::Timeout, ..) => {
            tracing::debug!(service = %service.name, version = %answered_by.name, "upstream request timed out");
            let message = format!(
                "504 Gateway Timeout: version \"{}\" of service \"{}\" did not respond within {}\n",
                answered_by.name,
                service.name,
                humanize(service.request_timeout)
            );
            serin_response(
                StatusCode::GATEWAY_TIMEOUT,
                message,
                Some(&answered_by.header_value),
                request_id,
            )
        }
        Attempt::Failed(Outcome::ClientGone, ..) if body.is_some_and(BodyWatch::timed_out) => {
            tracing::debug!(service = %service.name, "the client's request body stalled; the upstream request was aborted");
            body_read_timeout(limits.body_read_timeout, request_id)
        }
        Attempt::Failed(Outcome::ClientGone, None, _)
            if body.is_some_and(BodyWatch::waits_for_client) =>
        {
            tracing::debug!(service = %service.name, "the request timed out while the client was still sending its body");
            closing(serin_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "408 Request Timeout: the request body was still arriving when the request timeout of service \"{}\" ({}) passed\n",
                    service.name,
                    humanize(service.request_timeout)
                ),
                None,
                request_id,
            ))
        }
        Attempt::Failed(Outcome::ClientGone, Some(err), _) if err.is_body_too_large() => {
            tracing::debug!(service = %service.name, "the request body exceeded limits.max_request_body");
            too_large(max_body, request_id)
        }
        Attempt::Failed(Outcome::ClientGone, err, _) => {
            // The client's own body failed: malformed chunked framing, or cut off. The
            // upstream request was aborted; the version is not blamed.
            tracing::debug!(service = %service.name, error = ?err, "the client's request body failed");
            closing(serin_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the request body was malformed or cut off; nothing was answered upstream\n".to_string(),
                None,
                request_id,
            ))
        }
        Attempt::Failed(outcome, err, _) => {
            tracing::debug!(service = %service.name, version = %answered_by.name, error = ?err, "upstream request failed");
            let message = match outcome {
                Outcome::ConnectError => format!(
                    "502 Bad Gateway: cannot connect to version \"{}\" of service \"{}\"\n",
                    answered_by.name, service.name
                ),
                _ => format!(
                    "502 Bad Gateway: version \"{}\" of service \"{}\" closed the connection without a response\n",
                    answered_by.name, service.name
                ),
            };
            serin_response(
                StatusCode::BAD_GATEWAY,
                message,
                Some(&answered_by.header_value),
                request_id,
            )
        }
    };
    Ok(observed(closing_if(normalised, response), observation))
}

/// Whether a message is gRPC (`content-type: application/grpc`, `application/grpc+proto`, …).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Makes an origin-form HTTP/1.1 request into an HTTP/2 one: the URI in absolute form
/// (`http`, the Host, or the endpoint when there is none; the Host header itself goes,
/// `:authority` carries it), and `te: trailers` for gRPC, which asks for it.
fn to_h2(req: &mut Request<UpstreamBody>, endpoint: &http::uri::Authority, tls: bool) {
    let authority = req
        .headers_mut()
        .remove(HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| endpoint.clone());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .filter(|pq| pq.as_str().starts_with('/'))
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_2;
    if is_grpc(req.headers()) {
        req.headers_mut()
            .insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The request target as an upstream HTTP/1.1 request carries it: path and query.
fn origin_form(original: &Uri) -> Uri {
    match original.path_and_query() {
        Some(pq) if pq.as_str().starts_with('/') => {
            if original.scheme().is_none() && original.authority().is_none() {
                original.clone()
            } else {
                Uri::from(pq.clone())
            }
        }
        Some(pq) if pq.as_str() == "*" => original.clone(),
        _ => Uri::from(PathAndQuery::from_static("/")),
    }
}

fn classify(err: &UpstreamError) -> Outcome {
    if err.is_connect() {
        Outcome::ConnectError
    } else if err.is_client_gone() {
        // A failure reading the client's own request body is the client's doing.
        Outcome::ClientGone
    } else {
        Outcome::Reset
    }
}

/// The answer to a body that was to be read whole and was not (`crate::body`), which
/// is recorded for `version` as the client's doing.
fn unread_body(
    unread: Unread,
    version: &VersionRuntime,
    success_rules: u8,
    limits: &serin_config::Limits,
    request_id: HeaderValue,
) -> Response<AnyBody> {
    // Nothing was sent anywhere: the time taken is the client's, and not counted.
    version
        .stats
        .record_matching(Outcome::ClientGone, Duration::ZERO, success_rules);
    match unread {
        Unread::TimedOut => {
            tracing::debug!(version = %version.name, "the client's request body stalled before it was read whole");
            body_read_timeout(limits.body_read_timeout, request_id)
        }
        Unread::Failed(err) => {
            tracing::debug!(version = %version.name, error = %err, "the client's request body failed before it was read whole");
            closing(serin_response(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: the request body was cut off; nothing was sent upstream\n"
                    .to_string(),
                None,
                request_id,
            ))
        }
    }
}

/// 408 for a body the client stopped sending for `limits.body_read_timeout`; the
/// connection closes after it, as the rest of the body is not read.
fn body_read_timeout(timeout: Duration, request_id: HeaderValue) -> Response<AnyBody> {
    closing(serin_response(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "408 Request Timeout: the client sent nothing of its request body for {} (limits.body_read_timeout)\n",
            humanize(timeout)
        ),
        None,
        request_id,
    ))
}

/// 413 for a body over `limits.max_request_body`; the connection closes after it, as
/// the rest of the body is not read.
fn too_large(limit: u64, request_id: HeaderValue) -> Response<AnyBody> {
    closing(serin_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("413 Content Too Large: the request body is larger than {limit} bytes (limits.max_request_body)\n"),
        None,
        request_id,
    ))
}

/// serin's answer to a request [`guard::check`] refused, recorded against no version.
/// An HTTP/1 connection closes after it: what the client meant by the rest of its
/// bytes is in doubt. HTTP/2 refuses the stream alone.
fn refused(refusal: Refusal, version: http::Version, request_id: HeaderValue) -> Response<AnyBody> {
    let response = serin_response(refusal.status(), refusal.message(), None, request_id);
    if version == http::Version::HTTP_2 {
        response
    } else {
        closing(response)
    }
}

/// `response`, closing the connection after it when `close`.
fn closing_if(close: bool, response: Response<AnyBody>) -> Response<AnyBody> {
    if close {
        closing(response)
    } else {
        response
    }
}

/// `response`, closing the connection after it: the rest of the request is not read,
/// so where the next request would begin is unknown.
fn closing(mut response: Response<AnyBody>) -> Response<AnyBody> {
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn not_found(host: &str, path: &str, request_id: HeaderValue) -> Response<AnyBody> {
    let message = format!(
        "404 Not Found: no route for host \"{}\" and path \"{}\"\n",
        truncate(host, 200),
        truncate(path, 200)
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(message))));
    *response.status_mut() = StatusCode::NOT_FOUND;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(&X_REQUEST_ID, request_id);
    response
}

fn serin_response(
    status: StatusCode,
    message: impl Into<Bytes>,
    version: Option<&HeaderValue>,
    request_id: HeaderValue,
) -> Response<AnyBody> {
    let mut response = Response::new(Either::Right(Full::new(message.into())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(&X_REQUEST_ID, request_id);
    if let Some(v) = version {
        headers.insert(&X_SERIN_VERSION, v.clone());
    }
    response
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<Table>, Request<Incoming>, Arc<ConnInfo>, Option<Arc<Telemetry>>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper moves the forwarding future per request and allocates it per request
    /// (boxed by `DataPlane::handle`); every byte is copied on every request. Rare
    /// paths (dialling, TLS handshakes, failover, the baseline retry, upgrades) are
    /// boxed where they are awaited so that they do not inflate it: one of them
    /// inline took it from 3.7 to 10 KiB.
    #[test]
    fn the_forwarding_future_stays_small() {
        let size = size_of_future(proxy);
        assert!(
            size <= 4096,
            "the forwarding future is {size} bytes; box the rare path that grew it"
        );
    }
}
