//! Stage 7, respond: what the client gets. The upstream's response, streamed back in
//! the client's HTTP version with hop-by-hop headers removed and `x-serin-version`
//! added ([`respond`]), or serin's own short `text/plain` answer naming what failed
//! (404, 400, 408, 413, 502, 504, and a rollback drill's 503). The body a client gets
//! is a [`ProxyBody`], which carries the request's `Observation` when it is traced or
//! logged.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BodyWatch, Unread};
use crate::execute::Attempt;
use crate::guard::Refusal;
use crate::headers::{strip_surveyed, Survey, X_REQUEST_ID, X_SERIN_VERSION};
use crate::record::Outcome;
use crate::table::{ServiceRuntime, VersionRuntime};
use crate::telemetry::Observation;
use crate::upstream::PooledBody;

/// A response body: the upstream's, streamed, or serin's own short text.
pub(crate) type AnyBody = Either<PooledBody, Full<Bytes>>;

/// The body a client gets, carrying the request's [`Observation`] when it is traced or
/// logged: it counts the bytes sent, and the span ends and the log line goes out when
/// the body is done with.
pub struct ProxyBody {
    inner: AnyBody,
    observation: Option<Box<Observation>>,
    /// A request copied to the canary (`crate::shadow`): its side of the comparison.
    shadow: Option<Box<crate::shadow::ClientSide>>,
}

impl ProxyBody {
    /// The answer to a request copied to the canary: `side` is told its status now and
    /// reads its body as it streams.
    pub(crate) fn compared(
        &mut self,
        status: http::StatusCode,
        mut side: Box<crate::shadow::ClientSide>,
    ) {
        side.answered(status.as_u16(), self.inner.is_end_stream());
        self.shadow = Some(side);
    }
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
        if let Some(shadow) = this.shadow.as_deref_mut() {
            shadow.polled(&polled, this.inner.is_end_stream());
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
pub(crate) fn observed(
    response: Response<AnyBody>,
    mut observation: Option<Box<Observation>>,
) -> Response<ProxyBody> {
    if let Some(o) = observation.as_deref_mut() {
        o.responded(response.status());
    }
    response.map(|inner| ProxyBody {
        inner,
        observation,
        shadow: None,
    })
}

/// What an answer to a forwarded request depends on besides the attempt's result.
pub(crate) struct Answering<'a> {
    pub service: &'a ServiceRuntime,
    /// The version that answered, or whose attempt failed last.
    pub version: &'a VersionRuntime,
    pub client_version: http::Version,
    pub request_id: HeaderValue,
    pub limits: &'a serin_config::Limits,
    /// How the request body streamed, if it did.
    pub body: Option<&'a BodyWatch>,
}

/// The client's answer to the last attempt: the upstream's response (joining the two
/// sides of an accepted upgrade), or serin's own for a failure, by whose fault it was.
pub(crate) fn respond(
    result: Attempt,
    answering: Answering<'_>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<AnyBody> {
    let Answering {
        service,
        version,
        client_version,
        request_id,
        limits,
        body,
    } = answering;
    match result {
        Attempt::Answered(mut response) => {
            let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
            let protocol = response.headers().get(http::header::UPGRADE).cloned();
            if let (true, Some(client)) = (switching, client_upgrade) {
                let upstream = hyper::upgrade::on(&mut response);
                crate::upgrade::tunnel(client, upstream, version.name.clone());
            }
            let (mut parts, body) = response.into_parts();
            // Answer in the client's protocol version, whatever the upstream spoke.
            parts.version = client_version;
            let survey = Survey::of(&parts.headers);
            let survey = strip_surveyed(&mut parts.headers, survey);
            if let (true, Some(protocol)) = (switching, protocol) {
                crate::upgrade::keep_asking(&mut parts.headers, protocol);
            }
            parts
                .headers
                .insert(&X_SERIN_VERSION, version.header_value.clone());
            if !survey.has(Survey::X_REQUEST_ID) {
                parts.headers.insert(&X_REQUEST_ID, request_id);
            } else if client_version == http::Version::HTTP_2 {
                // The upstream's echo: unique per request too, so never indexed by
                // HPACK (`crate::headers::ensure_request_id`).
                if let Some(id) = parts.headers.get_mut(&X_REQUEST_ID) {
                    id.set_sensitive(true);
                }
            }
            Response::from_parts(parts, Either::Left(body))
        }
        Attempt::Failed(Outcome::Timeout, ..) => {
            tracing::debug!(service = %service.name, version = %version.name, "upstream request timed out");
            let message = format!(
                "504 Gateway Timeout: version \"{}\" of service \"{}\" did not respond within {}\n",
                version.name,
                service.name,
                humanize(service.request_timeout)
            );
            serin_response(
                StatusCode::GATEWAY_TIMEOUT,
                message,
                Some(&version.header_value),
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
            too_large(limits.max_request_body, request_id)
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
            tracing::debug!(service = %service.name, version = %version.name, error = ?err, "upstream request failed");
            let message = match outcome {
                Outcome::ConnectError => format!(
                    "502 Bad Gateway: cannot connect to version \"{}\" of service \"{}\"\n",
                    version.name, service.name
                ),
                _ => format!(
                    "502 Bad Gateway: version \"{}\" of service \"{}\" closed the connection without a response\n",
                    version.name, service.name
                ),
            };
            serin_response(
                StatusCode::BAD_GATEWAY,
                message,
                Some(&version.header_value),
                request_id,
            )
        }
    }
}

/// The answer to a body that was to be read whole and was not (`crate::body`), which
/// is recorded for `version` as the client's doing.
pub(crate) fn unread_body(
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
pub(crate) fn too_large(limit: u64, request_id: HeaderValue) -> Response<AnyBody> {
    closing(serin_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("413 Content Too Large: the request body is larger than {limit} bytes (limits.max_request_body)\n"),
        None,
        request_id,
    ))
}

/// serin's answer to a request `guard::check` refused, recorded against no version.
/// An HTTP/1 connection closes after it: what the client meant by the rest of its
/// bytes is in doubt. HTTP/2 refuses the stream alone.
pub(crate) fn refused(
    refusal: Refusal,
    version: http::Version,
    request_id: HeaderValue,
) -> Response<AnyBody> {
    let response = serin_response(refusal.status(), refusal.message(), None, request_id);
    if version == http::Version::HTTP_2 {
        response
    } else {
        closing(response)
    }
}

/// `response`, closing the connection after it when `close`.
pub(crate) fn closing_if(close: bool, response: Response<AnyBody>) -> Response<AnyBody> {
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

/// The 503 a rollback drill answers for the canary (`crate::fault`): serin's own,
/// saying so in `x-serin-fault` and in its body, so nobody mistakes it for the app's.
pub(crate) fn drill_fault(version: &VersionRuntime, request_id: HeaderValue) -> Response<AnyBody> {
    let mut response = serin_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Unavailable: fault injected by a serin rollback drill (not the app's answer)\n",
        Some(&version.header_value),
        request_id,
    );
    response.headers_mut().insert(
        crate::fault::X_SERIN_FAULT,
        HeaderValue::from_static("drill"),
    );
    response
}

pub(crate) fn not_found(host: &str, path: &str, request_id: HeaderValue) -> Response<AnyBody> {
    let message = format!(
        "404 Not Found: no route for host \"{}\" and path \"{}\"\n",
        truncate(host, 200),
        truncate(path, 200)
    );
    serin_response(StatusCode::NOT_FOUND, message, None, request_id)
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

    #[test]
    fn long_hosts_and_paths_are_cut_on_a_character_boundary() {
        let host = format!("{}é", "a".repeat(199));
        assert_eq!(truncate(&host, 200).len(), 199);
        assert_eq!(truncate("short", 200), "short");
    }

    #[test]
    fn durations_read_as_configured() {
        assert_eq!(humanize(Duration::from_secs(15)), "15s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500ms");
    }
}
