//! What serin reports about each request besides its stats: an OpenTelemetry server span
//! (exported over OTLP/HTTP by [`trace`]) and an access log line (written by
//! [`access_log`]). Both are off unless configured, and then a request pays one branch
//! on an `Option`.
//!
//! A request that is traced or logged carries an [`Observation`] from the moment it is
//! routed until its response body is finished (or dropped): the span is ended and the
//! log line handed to the writer thread when the `Observation` drops. Neither ever
//! waits: spans go to the batch processor's bounded queue, lines to the writer's; when
//! a queue is full the item is dropped and counted.

pub mod access_log;
pub mod trace;

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request};
use hyper::body::Frame;
use opentelemetry::trace::{Span as _, SpanContext, Status, TraceId};
use opentelemetry::KeyValue;

use crate::conn::ConnInfo;
use crate::record::Outcome;
use crate::table::{CompiledRoute, Table};
use crate::upstream::UpstreamError;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot start the thread of the {what}: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the OTLP exporter for {url}: {message}")]
    Exporter { url: String, message: String },
}

/// Counts of what telemetry sent and dropped since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryStats {
    pub spans_exported: u64,
    /// Spans lost because the collector failed (unreachable, timed out, refused them).
    pub spans_failed: u64,
    /// Spans dropped because the export queue was full.
    pub spans_queue_full: u64,
    pub access_log_lines: u64,
    /// Access log lines dropped because the writer's queue was full or stdout failed.
    pub access_log_dropped: u64,
}

/// The tracer and the access log of a running serin; shared by every worker.
pub struct Telemetry {
    tracing: Option<trace::Tracing>,
    access_log: Option<access_log::AccessLog>,
    /// The span exporter, until [`Telemetry::shutdown`].
    pipeline: Mutex<Option<trace::Pipeline>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("tracing", &self.tracing.is_some())
            .field("access_log", &self.access_log.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Starts what `config` turns on: the span exporter (its own threads) and the access
    /// log writer (a thread writing to stdout). `None` when both are off.
    pub fn start(config: &serin_config::Telemetry) -> Result<Option<Arc<Self>>, TelemetryError> {
        let access_log = match config.access_log.format {
            serin_config::AccessLogFormat::Off => None,
            _ => Some(access_log::AccessLog::start(
                config.access_log,
                config.tracing.is_some(),
                Box::new(std::io::stdout()),
            )?),
        };
        let (tracing, pipeline) = match &config.tracing {
            Some(config) => {
                let (tracing, pipeline) = trace::start(config)?;
                (Some(tracing), Some(pipeline))
            }
            None => (None, None),
        };
        if tracing.is_none() && access_log.is_none() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self {
            tracing,
            access_log,
            pipeline: Mutex::new(pipeline),
        })))
    }

    /// Writes the access log lines still queued, then exports the spans still queued,
    /// within `timeout` in all; later spans and lines are dropped. Blocks: call it from
    /// a thread that may block (`spawn_blocking`), after the workers have drained.
    pub fn shutdown(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        // Lines first: stdout is quick, a collector may not be.
        if let Some(log) = &self.access_log {
            log.flush(timeout);
        }
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(pipeline) = pipeline {
            pipeline.shutdown(deadline.saturating_duration_since(Instant::now()));
        }
        let stats = self.stats();
        if self.tracing.is_some() {
            tracing::info!(
                exported = stats.spans_exported,
                dropped_collector_failed = stats.spans_failed,
                dropped_queue_full = stats.spans_queue_full,
                "span export stopped"
            );
        }
        if self.access_log.is_some() && stats.access_log_dropped > 0 {
            tracing::warn!(
                written = stats.access_log_lines,
                dropped = stats.access_log_dropped,
                "access log lines were dropped"
            );
        }
    }

    pub fn stats(&self) -> TelemetryStats {
        let mut stats = TelemetryStats::default();
        if let Some(t) = &self.tracing {
            t.stats.add_to(&mut stats);
        }
        if let Some(log) = &self.access_log {
            log.add_to(&mut stats);
        }
        stats
    }

    /// The observation of one request, or `None` when it is neither traced nor logged
    /// (tracing off, and the access log off or not sampling it).
    pub(crate) fn observe(
        self: &Arc<Self>,
        req: &Request<hyper::body::Incoming>,
        host: Option<&HeaderValue>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
    ) -> Option<Box<Observation>> {
        let logged = self.access_log.as_ref().is_some_and(|l| l.sampled());
        if self.tracing.is_none() && !logged {
            return None;
        }
        let span = self
            .tracing
            .as_ref()
            .map(|t| t.server_span(req, host, conn, request_id));
        let log = logged.then(|| Draft {
            method: req.method().clone(),
            host: host.cloned(),
            path: req.uri().path_and_query().cloned(),
            request_id: request_id.clone(),
        });
        Some(Box::new(Observation {
            telemetry: self.clone(),
            at: SystemTime::now(),
            started: Instant::now(),
            span,
            log,
            route: None,
            version: None,
            upstream: None,
            status: 0,
            bytes: 0,
            failure: None,
        }))
    }
}

/// What the access log line needs of the request itself.
struct Draft {
    method: Method,
    host: Option<HeaderValue>,
    path: Option<PathAndQuery>,
    request_id: HeaderValue,
}

/// One request being traced and/or logged; reported when dropped.
pub struct Observation {
    telemetry: Arc<Telemetry>,
    at: SystemTime,
    started: Instant,
    span: Option<opentelemetry_sdk::trace::Span>,
    log: Option<Draft>,
    /// The table the request was routed with, and the index of its service.
    route: Option<(Arc<Table>, usize)>,
    /// The index of the version that answered (or failed last).
    version: Option<usize>,
    upstream: Option<Authority>,
    /// The status sent; 0 until a response is made.
    status: u16,
    bytes: u64,
    /// How the last attempt failed, if it did: the span's error status.
    failure: Option<&'static str>,
}

static HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";

impl Observation {
    /// The request was routed by `route` of `table`.
    pub(crate) fn routed(&mut self, table: &Arc<Table>, route: &CompiledRoute) {
        let service = route.service;
        if let Some(span) = self.span.as_mut().filter(|s| s.is_recording()) {
            span.set_attributes([
                KeyValue::new("serin.service", table.services[service].name.to_string()),
                KeyValue::new("serin.route", route.label.clone()),
                KeyValue::new("serin.listener", route.listener.clone()),
            ]);
        }
        self.route = Some((table.clone(), service));
    }

    /// Puts the W3C trace context of serin's span into the upstream request: a
    /// `traceparent` naming serin's span as the parent (flags `00` when not sampled) and
    /// the `tracestate` it carries. The client's own are replaced.
    pub(crate) fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(span) = &self.span {
            trace::inject(span.span_context(), headers);
        }
    }

    /// One attempt at `version` (sent to `upstream`) ended: answered (`failed` is
    /// `None`), or failed with an outcome and maybe an error. The last call is the one
    /// the client's response comes from.
    pub(crate) fn attempted(
        &mut self,
        version: usize,
        upstream: Option<&Authority>,
        failed: Option<(Outcome, Option<&UpstreamError>)>,
    ) {
        self.version = Some(version);
        self.upstream = upstream.cloned();
        self.failure = None;
        let Some((outcome, err)) = failed else {
            return;
        };
        let Some(span) = self.span.as_mut().filter(|s| s.is_recording()) else {
            return;
        };
        let (kind, what) = match outcome {
            Outcome::Timeout => ("timeout", "upstream timed out"),
            Outcome::ConnectError => ("connect_error", "cannot connect to the upstream"),
            Outcome::ClientGone => ("client_gone", "the client's request body failed"),
            _ => ("reset", "upstream closed the connection without a response"),
        };
        let version_name = self
            .route
            .as_ref()
            .and_then(|(table, s)| table.services[*s].versions.get(version))
            .map(|v| v.name.to_string())
            .unwrap_or_default();
        let mut attributes = vec![
            KeyValue::new("error.type", kind),
            KeyValue::new("serin.version", version_name),
            KeyValue::new(
                "serin.upstream",
                upstream.map(ToString::to_string).unwrap_or_default(),
            ),
        ];
        if let Some(err) = err {
            attributes.push(KeyValue::new("exception.message", err.to_string()));
        }
        span.add_event(what, attributes);
        self.failure = Some(what);
    }

    /// The attempt at `version` failed (with no answer, `failed`, or with the 5xx
    /// `status`) and is retried on the baseline.
    pub(crate) fn retrying(
        &mut self,
        version: usize,
        upstream: Option<&Authority>,
        failed: Option<(Outcome, Option<&UpstreamError>)>,
        status: Option<http::StatusCode>,
    ) {
        self.attempted(version, upstream, failed);
        if let Some(span) = self.span.as_mut().filter(|s| s.is_recording()) {
            let mut attributes = vec![KeyValue::new(
                "serin.upstream",
                upstream.map(ToString::to_string).unwrap_or_default(),
            )];
            if let Some(status) = status {
                attributes.push(KeyValue::new(
                    HTTP_RESPONSE_STATUS_CODE,
                    i64::from(status.as_u16()),
                ));
            }
            span.add_event("retrying on the baseline", attributes);
        }
    }

    /// Counts a frame of the response body as it is sent.
    pub(crate) fn polled<E>(&mut self, polled: &Poll<Option<Result<Frame<Bytes>, E>>>) {
        if let Poll::Ready(Some(Ok(frame))) = polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
    }

    /// The status of the response sent to the client.
    pub(crate) fn responded(&mut self, status: http::StatusCode) {
        self.status = status.as_u16();
    }

    fn trace_id(&self) -> Option<TraceId> {
        self.span
            .as_ref()
            .map(|s| s.span_context())
            .filter(|c: &&SpanContext| c.is_valid())
            .map(|c| c.trace_id())
    }

    fn end_span(&mut self) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        if !span.is_recording() {
            return;
        }
        if let (Some((table, service)), Some(version)) = (&self.route, self.version) {
            if let Some(v) = table.services[*service].versions.get(version) {
                span.set_attribute(KeyValue::new("serin.version", v.name.to_string()));
            }
        }
        if let Some(upstream) = &self.upstream {
            span.set_attribute(KeyValue::new("serin.upstream", upstream.to_string()));
        }
        if self.status == 0 {
            span.add_event("the client went away before the response", Vec::new());
        } else {
            span.set_attribute(KeyValue::new(
                HTTP_RESPONSE_STATUS_CODE,
                i64::from(self.status),
            ));
            match self.failure {
                Some(what) => span.set_status(Status::error(what)),
                None if self.status >= 500 => span.set_status(Status::error("")),
                None => {}
            }
        }
        span.end();
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let trace_id = self.trace_id();
        self.end_span();
        let Some(draft) = self.log.take() else {
            return;
        };
        let Some(log) = &self.telemetry.access_log else {
            return;
        };
        let (service, version) = match &self.route {
            Some((table, s)) => (
                Some((table.clone(), *s)),
                self.version
                    .filter(|v| *v < table.services[*s].versions.len()),
            ),
            None => (None, None),
        };
        log.send(access_log::Record {
            at: self.at,
            request_id: draft.request_id,
            trace_id,
            method: draft.method,
            host: draft.host,
            path: draft.path,
            // 499: the client closed the request before the response (nginx's code).
            status: if self.status == 0 { 499 } else { self.status },
            service,
            version,
            upstream: self.upstream.take(),
            latency: self.started.elapsed(),
            bytes: self.bytes,
        });
    }
}
