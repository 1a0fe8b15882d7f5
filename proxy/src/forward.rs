//! Stages 3–7 for one request, in order: check ([`guard::check`]) and route, plan
//! (`crate::plan`: the version, failover at the split), prepare the request for its
//! upstream (headers, URI, a rollback drill's fault, a small body read whole), execute
//! (`crate::execute`: the attempts, failover of a refused connection, the baseline
//! retry) and respond (`crate::respond`).
//!
//! [`proxy`] is the server's service future itself: it owns everything it uses, and
//! stays under 4 KiB (a unit test below says so), since hyper keeps a slot of its size
//! for every connection and moves it per request.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::{Body, Incoming};

use crate::conn::{ConnInfo, NormalisedFraming};
use crate::execute::{Execution, Sending};
use crate::fault::Injection;
use crate::guard;
use crate::headers::{
    canonical_content_length, drop_look_alikes, ensure_request_id, ensure_request_id_surveyed,
    host_without_port, set_forwarded, strip_surveyed, Survey,
};
use crate::plan::{plan, retry_on_baseline};
use crate::respond::{
    closing_if, drill_fault, not_found, observed, refused, respond, too_large, unread_body,
    Answering, ProxyBody,
};
use crate::telemetry::Telemetry;
use crate::weights::View;

/// Proxies one request with the routes and weights of `view`; `telemetry` traces and
/// logs it when configured.
///
/// Everything is owned, so the future is the server's service future itself, with no
/// wrapper holding a second copy of the request: the server keeps a slot of this size
/// for every connection.
pub async fn proxy(
    view: Arc<View>,
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    telemetry: Option<Arc<Telemetry>>,
) -> Result<Response<ProxyBody>, Infallible> {
    let telemetry = telemetry.as_ref();
    let table = &view.table;
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

    // Stage 4: plan.
    let plan = plan(
        &view,
        route.service,
        req.method(),
        req.uri().path(),
        req.headers(),
    );
    let (service, split) = view.service(plan.service);
    let version = &service.versions[plan.version];

    // Stage 5: prepare. A request with normalised framing is never an upgrade: it is
    // answered and its connection closed.
    // One pass over the headers says which of those the work below touches are
    // there; an absent one costs no lookup.
    let survey = Survey::of_request(req.headers());
    let upgrade = (!normalised && survey.has(Survey::UPGRADE))
        .then(|| crate::upgrade::requested(&req))
        .flatten();
    let headers = req.headers_mut();
    let survey = strip_surveyed(headers, survey);
    if survey.has(Survey::LOOK_ALIKE) {
        drop_look_alikes(headers);
    }
    if survey.has(Survey::CONTENT_LENGTH_ODD) {
        canonical_content_length(headers);
    }
    if let Some(protocol) = &upgrade {
        crate::upgrade::keep_asking(headers, protocol.clone());
    }
    // Room for X-Forwarded-For, -Proto, -Host and x-request-id at once: hyper sizes
    // the map for the lines it parsed, and it would otherwise grow step by step.
    headers.reserve(4);
    set_forwarded(
        headers,
        survey,
        &conn.peer_ip,
        conn.trusted,
        conn.proto,
        host_value.clone(),
    );
    if let (true, Some(h)) = (from_uri, &host_value) {
        headers.insert(HOST, h.clone());
    }
    let request_id = ensure_request_id_surveyed(headers, survey);
    let mut observation =
        telemetry.and_then(|t| t.observe(&req, host_value.as_ref(), &conn, &request_id));
    if let Some(o) = observation.as_deref_mut() {
        o.routed(table, route);
        o.propagate(req.headers_mut());
    }
    // A rollback drill on the service: the canary's requests get its fault.
    let delayed_us = match view.drill(plan.service) {
        None => 0,
        Some(drill) => match crate::fault::injected(drill, &plan, version) {
            Injection::Abort => {
                let response = drill_fault(version, request_id);
                return Ok(observed(closing_if(normalised, response), observation));
            }
            Injection::Delay(added) => {
                // Boxed: rare, and inline it would grow every request's future.
                Box::pin(tokio::time::sleep(added)).await;
                u32::try_from(added.as_micros()).unwrap_or(u32::MAX)
            }
            Injection::None => 0,
        },
    };
    let client_version = req.version();
    let client_h2 = client_version == http::Version::HTTP_2;
    // A failed idempotent canary request without a body may be answered by the baseline.
    let retry = retry_on_baseline(
        service.retry,
        plan.version,
        req.method(),
        req.body().is_end_stream(),
        upgrade.is_some(),
    );
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    *req.uri_mut() = origin_form(req.uri());
    *req.version_mut() = http::Version::HTTP_11;

    // A body larger than the limit: refused before anything goes upstream when its
    // length is declared, cut off (and the request aborted) when it is not.
    let limits = &table.snapshot.limits;
    let max_body = limits.max_request_body;
    let body_limit = match max_body {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if max_body > 0 && req.body().size_hint().lower() > max_body {
        return Ok(observed(too_large(max_body, request_id), observation));
    }
    // A small body is read whole before any upstream is asked; others stream
    // (`crate::body`).
    let (req, body) = match crate::body::to_buffer(req.body(), limits.request_buffer) {
        // Boxed: a request with a body is the rarer kind, and inline the read would
        // grow every request's future.
        Some(len) => {
            match Box::pin(crate::body::read_whole(req, len, limits.body_read_timeout)).await {
                Ok(req) => (req, None),
                Err(unread) => {
                    let response =
                        unread_body(unread, version, plan.success_rules, limits, request_id);
                    return Ok(observed(response, observation));
                }
            }
        }
        None => crate::body::streamed(req, limits.body_read_timeout, body_limit),
    };
    let body = body.as_deref();
    // A copy for the canary during a shadow step (one branch otherwise).
    let shadow = crate::shadow::copy(&view, &plan, &req, body.is_some(), client_h2);

    // Stage 6: execute.
    let sending = Sending {
        upgrade: upgrade.is_some(),
        client_h2,
        body,
        delayed_us,
    };
    let execution = Execution::new(service, split, plan, sending, &req, retry);
    let first = execution.first(req).await;
    let (result, answered) = execution.then(first, observation.as_deref_mut()).await;

    // Stage 7: respond.
    let answering = Answering {
        service,
        version: &service.versions[answered],
        client_version,
        request_id,
        limits,
        body,
    };
    let response = respond(result, answering, client_upgrade);
    let mut response = observed(closing_if(normalised, response), observation);
    if let Some(mut side) = shadow {
        side.headers(response.headers());
        let status = response.status();
        response.body_mut().compared(status, side);
    }
    Ok(response)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of_future<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<View>, Request<Incoming>, Arc<ConnInfo>, Option<Arc<Telemetry>>) -> Fut,
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
        eprintln!("the forwarding future is {size} bytes");
        assert!(
            size <= 4096,
            "the forwarding future is {size} bytes; box the rare path that grew it"
        );
    }
}
