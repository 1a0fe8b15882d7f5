//! Traces: a server span per request, W3C trace context in and out, and the OTLP/HTTP
//! export pipeline.
//!
//! The pipeline, end to end: a worker ends a span → [`Admission`] counts it against the
//! queue's bound (full: dropped and counted, never waited for) → the SDK's
//! `BatchSpanProcessor` (its own thread, bounded channel) batches spans every
//! `OTEL_BSP_SCHEDULE_DELAY` → [`Counted`] counts what each export did → the OTLP
//! exporter encodes the batch as protobuf and POSTs it with [`OnOwnRuntime`], which runs
//! the hyper client on a current-thread tokio runtime of its own thread (`serin-otlp`):
//! the batch processor's thread has no runtime, and the workers' runtimes must never do
//! the exporter's work.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanKind, TraceFlags, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use super::{TelemetryError, TelemetryStats};
use crate::conn::ConnInfo;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Time for one export request to the collector (connect, send, answer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Spans waiting for export when `OTEL_BSP_MAX_QUEUE_SIZE` is not set (the SDK's default).
const DEFAULT_QUEUE: usize = 2048;

/// What the workers use to start spans.
pub(crate) struct Tracing {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    pub(crate) stats: Arc<ExportStats>,
}

/// The exporter's threads; [`Pipeline::shutdown`] flushes and stops them.
pub(crate) struct Pipeline {
    provider: SdkTracerProvider,
    runtime: Option<(
        std::thread::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

/// Starts the export pipeline of `config` and returns the tracer the workers use.
pub(crate) fn start(config: &serin_config::Tracing) -> Result<(Tracing, Pipeline), TelemetryError> {
    let url = config.traces_url.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| TelemetryError::Thread {
            what: "OTLP exporter",
            source,
        })?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("serin-otlp".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })
        .map_err(|source| TelemetryError::Thread {
            what: "OTLP exporter",
            source,
        })?;

    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    let client = OnOwnRuntime {
        client: opentelemetry_http::hyper::HyperClient::new(connector, EXPORT_TIMEOUT, None),
        runtime: handle,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| TelemetryError::Exporter {
            url: url.clone(),
            message: err.to_string(),
        })?;

    let limit = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_QUEUE)
        .max(1);
    let stats = Arc::new(ExportStats::new(url.clone()));
    let batch = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        stats: stats.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(limit)
            .build(),
    )
    .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Admission {
            inner: batch,
            stats: stats.clone(),
            limit,
        })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer_with_scope(
        InstrumentationScope::builder("serin")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    tracing::info!(
        endpoint = %url,
        sample_ratio = config.sample_ratio,
        service_name = %config.service_name,
        queue = limit,
        "exporting traces over OTLP/HTTP"
    );
    Ok((
        Tracing {
            tracer,
            propagator: TraceContextPropagator::new(),
            stats,
        },
        Pipeline {
            provider,
            runtime: Some((thread, stop)),
        },
    ))
}

impl Pipeline {
    /// Exports what is queued (at most `timeout`), then stops the exporter's threads.
    pub(crate) fn shutdown(mut self, timeout: Duration) {
        if let Err(err) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %err, timeout = ?timeout, "the spans still queued could not all be exported");
        }
        if let Some((thread, stop)) = self.runtime.take() {
            // An export still waiting on the collector is cancelled with the runtime.
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl Tracing {
    /// Starts the server span of a request: the child of the client's `traceparent`
    /// when it has a valid one (and then sampled as it says), else the root of a new
    /// trace sampled at the configured ratio. A span not sampled still has a valid
    /// context (trace id, its own span id, flags 00) to propagate.
    pub(crate) fn server_span(
        &self,
        req: &Request<hyper::body::Incoming>,
        host: Option<&HeaderValue>,
        conn: &ConnInfo,
        request_id: &HeaderValue,
    ) -> opentelemetry_sdk::trace::Span {
        let parent = if req.headers().contains_key(&TRACEPARENT) {
            self.propagator
                .extract_with_context(&Context::new(), &HeaderExtractor(req.headers()))
        } else {
            Context::new()
        };
        let mut span = self
            .tracer
            .span_builder(span_name(req.method()))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if opentelemetry::trace::Span::is_recording(&span) {
            let mut attributes = vec![
                KeyValue::new("http.request.method", req.method().as_str().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("client.address", conn.peer.ip().to_string()),
                KeyValue::new("network.protocol.version", protocol_version(req.version())),
            ];
            if let Some(host) = host.and_then(|h| h.to_str().ok()) {
                let address = crate::headers::host_without_port(host);
                attributes.push(KeyValue::new("server.address", address.to_string()));
            }
            if let Ok(id) = request_id.to_str() {
                attributes.push(KeyValue::new("serin.request_id", id.to_string()));
            }
            opentelemetry::trace::Span::set_attributes(&mut span, attributes);
        }
        span
    }
}

/// Semantic conventions: a server span without a route template is named after the
/// method; methods outside the standard set are `HTTP`.
fn span_name(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::PATCH => "PATCH",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Replaces the W3C trace context headers with `context`'s: `traceparent` version 00
/// with only the sampled flag, and `tracestate` when it has entries.
pub(crate) fn inject(context: &SpanContext, headers: &mut HeaderMap) {
    headers.remove(&TRACEPARENT);
    headers.remove(&TRACESTATE);
    if !context.is_valid() {
        return;
    }
    let flags = context.trace_flags() & TraceFlags::SAMPLED;
    let parent = format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        flags.to_u8()
    );
    if let Ok(value) = HeaderValue::from_str(&parent) {
        headers.insert(&TRACEPARENT, value);
    }
    let state = context.trace_state().header();
    if !state.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&state) {
            headers.insert(&TRACESTATE, value);
        }
    }
}

/// Counts of the export pipeline; logs an outage once, not per span or batch.
#[derive(Debug)]
pub(crate) struct ExportStats {
    url: String,
    /// Spans admitted and not yet exported or failed.
    pending: AtomicUsize,
    exported: AtomicU64,
    failed: AtomicU64,
    queue_full: AtomicU64,
    /// The last export failed: further failures are counted, not logged.
    failing: AtomicBool,
    /// Failed spans when the current outage began.
    failed_before_outage: AtomicU64,
    warned_queue_full: AtomicBool,
}

impl ExportStats {
    fn new(url: String) -> Self {
        Self {
            url,
            pending: AtomicUsize::new(0),
            exported: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            failed_before_outage: AtomicU64::new(0),
            warned_queue_full: AtomicBool::new(false),
        }
    }

    pub(crate) fn add_to(&self, stats: &mut TelemetryStats) {
        stats.spans_exported += self.exported.load(Ordering::Relaxed);
        stats.spans_failed += self.failed.load(Ordering::Relaxed);
        stats.spans_queue_full += self.queue_full.load(Ordering::Relaxed);
    }

    /// A span ended: admitted if fewer than `limit` are waiting, else dropped.
    fn admit(&self, limit: usize) -> bool {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= limit {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            if !self.warned_queue_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    endpoint = %self.url,
                    queue = limit,
                    "the span export queue is full: spans are dropped and counted \
                     (logged once; the count is logged at shutdown)"
                );
            }
            return false;
        }
        true
    }

    /// An export of `spans` spans ended with `result`.
    fn settle(&self, spans: usize, result: &OTelSdkResult) {
        self.pending.fetch_sub(spans, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.exported.fetch_add(spans as u64, Ordering::Relaxed);
                if self.failing.swap(false, Ordering::Relaxed) {
                    let lost = self.failed.load(Ordering::Relaxed)
                        - self.failed_before_outage.load(Ordering::Relaxed);
                    tracing::info!(endpoint = %self.url, dropped = lost, "exporting spans again");
                }
            }
            Err(err) => {
                let before = self.failed.fetch_add(spans as u64, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    self.failed_before_outage.store(before, Ordering::Relaxed);
                    tracing::warn!(
                        endpoint = %self.url,
                        error = %err,
                        "cannot export spans: they are dropped and counted until the collector \
                         answers again (logged once per outage)"
                    );
                }
            }
        }
    }
}

/// Bounds the spans waiting for export so that a full queue is counted here.
#[derive(Debug)]
struct Admission {
    inner: BatchSpanProcessor,
    stats: Arc<ExportStats>,
    limit: usize,
}

impl SpanProcessor for Admission {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.stats.admit(self.limit) {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what each export did.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    stats: Arc<ExportStats>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.stats.settle(spans, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An OTLP HTTP client that runs each request on the exporter's own runtime, so it can
/// be awaited from the batch processor's thread, which has none.
#[derive(Debug)]
struct OnOwnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnOwnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId, TraceState};

    #[test]
    fn traceparent_names_the_span_and_keeps_only_the_sampled_flag() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id"),
            SpanId::from_hex("00f067aa0ba902b7").expect("span id"),
            TraceFlags::new(0x03),
            true,
            TraceState::from_key_value([("vendor", "x")]).expect("trace state"),
        );
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("00-client-01"));
        headers.insert("tracestate", HeaderValue::from_static("other=1"));
        inject(&context, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers["tracestate"], "vendor=x");

        let unsampled = SpanContext::new(
            context.trace_id(),
            context.span_id(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        inject(&unsampled, &mut headers);
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert!(!headers.contains_key("tracestate"));
    }
}
