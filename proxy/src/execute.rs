//! Stages 5–6 for a planned request (`crate::plan`): the attempts. One attempt sends
//! the request to an endpoint of a version in rotation (pooled HTTP/1.1, shared
//! HTTP/2, or ALPN's choice over TLS; a connection of its own for an upgrade) within
//! the service's request timeout, and records exactly one outcome against the version
//! ([`RecordGuard`]; a gRPC call's may wait for its trailers) and counts it for the
//! endpoint's passive ejection. An [`Execution`] makes the attempts a request gets: the
//! planned one; on a refused connection (nothing was sent) one at the version its
//! share fails over to, unless the version was forced; and, for a failed idempotent
//! canary request with `retry_on_baseline`, one at the baseline.
//!
//! The rare attempts are boxed where they are awaited: inline, each would grow every
//! request's future (`crate::forward` keeps it under 4 KiB).

use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Either;
use serin_config::snapshot::UpstreamProtocol;

use crate::body::{BodyWatch, Buffered, UpstreamBody};
use crate::conn::NormalisedFraming;
use crate::deadline::timeout_at;
use crate::plan::{fail_over, Plan};
use crate::record::{Outcome, VersionStats};
use crate::split::SplitTable;
use crate::table::{Endpoint, ServiceRuntime, VersionRuntime};
use crate::telemetry::Observation;
use crate::upstream::{grpc_outcome, grpc_status, GrpcRecord, PooledBody, UpstreamError};

/// How a request is sent, whichever version it goes to.
#[derive(Clone, Copy)]
pub(crate) struct Sending<'a> {
    /// It asks for a protocol upgrade: a connection of its own, never HTTP/2.
    pub upgrade: bool,
    /// The client spoke HTTP/2 (an `auto` version is then spoken to in HTTP/2).
    pub client_h2: bool,
    /// How its body streams, if it does.
    pub body: Option<&'a BodyWatch>,
    /// A rollback drill held it this long before the first attempt (`crate::fault`):
    /// latency of that attempt's version, in µs (at most 60 s: four bytes keep the
    /// request's future small).
    pub delayed_us: u32,
}

/// The attempts of one planned request (see the module docs).
///
/// Two calls: [`Self::first`], the planned attempt, which the request's future awaits
/// in place; then [`Self::then`], the failover or retry it may call for. Split so that
/// the two futures share room in the request's future rather than nest.
pub(crate) struct Execution<'a> {
    service: &'a ServiceRuntime,
    split: &'a SplitTable,
    plan: Plan,
    sending: Sending<'a>,
    /// The baseline and a copy of the request, with `retry_on_baseline`.
    retry: Option<(usize, Request<UpstreamBody>)>,
}

/// How an attempt ended, and the endpoint it went to.
pub(crate) type Attempted<'a> = (Attempt, Option<&'a Endpoint>);

impl<'a> Execution<'a> {
    /// `retry`: the baseline a failure of `req` may be retried on
    /// (`crate::plan::retry_on_baseline`); the copy is made now, before the first
    /// attempt changes the request.
    pub(crate) fn new(
        service: &'a ServiceRuntime,
        split: &'a SplitTable,
        plan: Plan,
        sending: Sending<'a>,
        req: &Request<UpstreamBody>,
        retry: Option<usize>,
    ) -> Self {
        Self {
            service,
            split,
            plan,
            sending,
            retry: retry.map(|baseline| (baseline, copy_to_retry(req))),
        }
    }

    /// The planned attempt.
    pub(crate) fn first(
        &self,
        req: Request<UpstreamBody>,
    ) -> impl std::future::Future<Output = Attempted<'a>> + 'a {
        attempt(
            self.service,
            &self.service.versions[self.plan.version],
            req,
            self.plan.success_rules,
            self.sending,
        )
    }

    /// After the first attempt: one at the version a refused connection fails over to
    /// (unless the version was forced), then one at the baseline for a failed request
    /// that may be retried. Returns how the last attempt ended and the version that
    /// made it.
    pub(crate) async fn then(
        self,
        first: Attempted<'a>,
        mut observation: Option<&mut Observation>,
    ) -> (Attempt, usize) {
        let Self {
            service,
            split,
            plan,
            sending,
            retry,
        } = self;
        let (mut result, mut upstream) = first;
        let mut answered = plan.version;
        // A drill's delay is the first attempt's alone.
        let sending = Sending {
            delayed_us: 0,
            ..sending
        };
        // Refused connection: nothing was sent, so any method may go to another version.
        if !plan.forced {
            if let Attempt::Failed(Outcome::ConnectError, err, Some(unsent)) = result {
                result = match fail_over(service, split, plan.version) {
                    Some(other) => {
                        answered = other;
                        // Boxed, as the retry below: rare, and inline it would grow
                        // every request's future.
                        let again = Box::pin(attempt(
                            service,
                            &service.versions[other],
                            unsent,
                            plan.success_rules,
                            sending,
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
        let retry = retry.filter(|(baseline, _)| *baseline != answered);
        if let (true, Some((baseline, mut again))) = (result.failed(), retry) {
            if let Some(o) = observation.as_deref_mut() {
                o.retrying(
                    plan.version,
                    upstream.map(Endpoint::authority),
                    result.failure(),
                    result.status(),
                );
            }
            tracing::debug!(service = %service.name, version = %service.versions[plan.version].name, "retrying a failed canary request on the baseline");
            *again.version_mut() = http::Version::HTTP_11;
            answered = baseline;
            (result, upstream) = Box::pin(attempt(
                service,
                &service.versions[baseline],
                again,
                plan.success_rules,
                Sending {
                    upgrade: false,
                    body: None,
                    ..sending
                },
            ))
            .await;
        }
        if let Some(o) = observation {
            o.attempted(
                answered,
                upstream.map(Endpoint::authority),
                result.failure(),
            );
        }
        (result, answered)
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

    /// How it failed without an answer, if it did.
    fn failure(&self) -> Option<(Outcome, Option<&UpstreamError>)> {
        match self {
            Attempt::Answered(_) => None,
            Attempt::Failed(outcome, err, _) => Some((*outcome, err.as_ref())),
        }
    }

    /// The status of the answer, if there was one.
    fn status(&self) -> Option<StatusCode> {
        match self {
            Attempt::Answered(r) => Some(r.status()),
            Attempt::Failed(..) => None,
        }
    }
}

/// A bodiless copy of `req` (a retry is only made of a request without a body): its
/// method, target and headers.
fn copy_to_retry(req: &Request<UpstreamBody>) -> Request<UpstreamBody> {
    let mut again = Request::new(Either::Right(Buffered::empty()));
    *again.method_mut() = req.method().clone();
    *again.uri_mut() = req.uri().clone();
    *again.headers_mut() = req.headers().clone();
    again
}

/// Sends `req` to `version` and records the outcome against it (stages 5 and 6); also
/// returns the endpoint it went to.
async fn attempt<'v>(
    service: &ServiceRuntime,
    version: &'v VersionRuntime,
    mut req: Request<UpstreamBody>,
    success_rules: u8,
    sending: Sending<'_>,
) -> (Attempt, Option<&'v Endpoint>) {
    let Sending {
        upgrade,
        client_h2,
        body,
        delayed_us,
    } = sending;
    let now = Instant::now();
    let delayed = Duration::from_micros(u64::from(delayed_us));
    let guard = RecordGuard {
        stats: &version.stats,
        success_rules,
        started: now.checked_sub(delayed).unwrap_or(now),
        done: false,
    };
    // The connection that carries a request with normalised framing is not reused.
    let reuse = req.extensions().get::<NormalisedFraming>().is_none();
    let Some((endpoint, in_flight)) = version.pick() else {
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
        if let Ok(host) = HeaderValue::from_str(endpoint.authority().as_str()) {
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
        to_h2(&mut req, endpoint.authority(), version.tls);
    }
    // The request's clock starts when serin starts sending (a worker's deadlines share
    // one timer: `crate::deadline`).
    let deadline = tokio::time::Instant::from_std(now) + service.request_timeout;
    // The sends are built in place (not bound first): a future moved into another
    // takes room twice in the enclosing future.
    let sent = if upgrade {
        timeout_at(deadline, Box::pin(endpoint.pool.send_upgrade(req))).await
    } else if negotiated {
        timeout_at(
            deadline,
            endpoint
                .pool
                .send_negotiated(req, |req| to_h2(req, endpoint.authority(), true)),
        )
        .await
    } else if h2 {
        timeout_at(deadline, endpoint.pool.send_h2(req)).await
    } else {
        timeout_at(deadline, endpoint.pool.send(req)).await
    };
    // The time to the answer (or to the timeout) is the endpoint's latency sample for
    // `p2c_peak_ewma`; a request that got no answer gives none (`crate::balance`).
    if let (Some(in_flight), Ok(Ok(_)) | Err(_)) = (in_flight, &sent) {
        in_flight.answered(crate::rotation::clock_us());
    }
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
                        rotation: endpoint.rotation.clone(),
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
    (attempt, Some(endpoint))
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
pub(crate) fn to_h2(req: &mut Request<UpstreamBody>, endpoint: &http::uri::Authority, tls: bool) {
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
