//! Traces and access logs of the real binary: spans as an OTLP/HTTP collector receives
//! them, the W3C trace context an upstream receives, and the access log lines on stdout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::process::SerinProcess;
use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;

/// A span as the collector received it, with its resource's attributes.
#[derive(Debug, Clone)]
struct Received {
    resource: Vec<KeyValue>,
    span: Span,
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Collector {
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    continue;
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move { Ok::<_, Infallible>(receive(req, &store).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, spans }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("spans").clone()
    }

    /// The spans of the trace `trace_id` (32 hex digits).
    fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans()
            .into_iter()
            .filter(|r| hex(&r.span.trace_id) == trace_id)
            .collect()
    }

    /// Waits for the one span of `trace_id`.
    async fn span_of(&self, trace_id: &str) -> Received {
        eventually(
            Duration::from_secs(10),
            "the collector received the span",
            || async { !self.trace(trace_id).is_empty() },
        )
        .await;
        let mut spans = self.trace(trace_id);
        assert_eq!(spans.len(), 1, "{spans:?}");
        spans.remove(0)
    }
}

async fn receive(req: Request<Incoming>, store: &Mutex<Vec<Received>>) -> Response<Full<Bytes>> {
    let path_ok = req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
    let protobuf = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/x-protobuf");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let decoded = body
        .ok()
        .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
    let (status, answer) = match decoded {
        Some(export) if path_ok && protobuf => {
            let mut spans = store.lock().expect("spans");
            for resource_spans in export.resource_spans {
                let resource = resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans.push(Received {
                            resource: resource.clone(),
                            span,
                        });
                    }
                }
            }
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        _ => (StatusCode::BAD_REQUEST, Vec::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(answer)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of attribute `key`, as text.
fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        AnyValue::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// A new random trace id and span id, as hex.
fn ids() -> (String, String) {
    (
        format!("{:032x}", fastrand::u128(1..)),
        format!("{:016x}", fastrand::u64(1..)),
    )
}

/// serin with `/ok` routed to `backend` (service `api`, version `stable`) and `/down`
/// to a port nothing listens on (service `gone`, version `v1`), and `telemetry`.
struct Setup {
    backend: Backend,
    dir: TempDir,
    config: PathBuf,
}

async fn setup(telemetry: &str) -> Setup {
    let backend = Backend::start("stable").await;
    let dead = closed_port().await;
    let dir = TempDir::new("telemetry");
    let config = dir.0.join("serin.yaml");
    let yaml = format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners: [{{ name: web, listen: 127.0.0.1:0 }}]
routes:
  - {{ listener: web, match: {{ path_prefix: /ok }}, service: api }}
  - {{ listener: web, match: {{ path_prefix: /down }}, service: gone }}
services:
  - name: api
    versions: [{{ name: stable, endpoints: [{backend}] }}]
  - name: gone
    versions: [{{ name: v1, endpoints: [{dead}] }}]
state_dir: "{dir}"
telemetry:
{telemetry}
"#,
        backend = backend.addr,
        dir = dir.0.display(),
    );
    std::fs::write(&config, yaml).expect("write the config");
    Setup {
        backend,
        dir,
        config,
    }
}

/// Spans are exported 100 ms after they end, not the default 5 s.
const QUICK_EXPORT: &[(&str, Option<&str>)] = &[("OTEL_BSP_SCHEDULE_DELAY", Some("100"))];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_joins_the_clients_trace_and_the_upstream_joins_serins_span() {
    let collector = Collector::start().await;
    // Ratio 0: only requests whose parent is sampled are, so every span here is the
    // parent's decision.
    let setup = setup(&format!(
        "  tracing: {{ otlp_endpoint: http://{}, sample_ratio: 0, service_name: serin-test }}",
        collector.addr
    ))
    .await;
    let serin = SerinProcess::start(&setup.config, 2, &[], QUICK_EXPORT);
    let client = client();

    let (trace_id, parent_id) = ids();
    let got = get(
        &client,
        &serin.url("/ok/items?page=2"),
        &[
            ("traceparent", &format!("00-{trace_id}-{parent_id}-01")),
            ("tracestate", "vendor=abc"),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));

    let Received { resource, span } = collector.span_of(&trace_id).await;
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "GET");
    assert_eq!(
        hex(&span.parent_span_id),
        parent_id,
        "the client's span is the parent"
    );
    assert_eq!(
        attr(&resource, "service.name").as_deref(),
        Some("serin-test")
    );
    let a = &span.attributes;
    assert_eq!(attr(a, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(a, "url.path").as_deref(), Some("/ok/items"));
    assert_eq!(attr(a, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr(a, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(a, "serin.service").as_deref(), Some("api"));
    assert_eq!(attr(a, "serin.version").as_deref(), Some("stable"));
    assert_eq!(attr(a, "serin.route").as_deref(), Some("*/ok"));
    assert_eq!(
        attr(a, "serin.upstream"),
        Some(setup.backend.addr.to_string())
    );
    assert_eq!(
        attr(a, "serin.request_id"),
        got.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    );
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(SpanStatus::Error as i32)
    );

    // The upstream's parent is serin's span, in the client's trace, with its state.
    let seen = setup.backend.last_seen();
    assert_eq!(
        seen.headers["traceparent"],
        format!("00-{trace_id}-{}-01", hex(&span.span_id)).as_str()
    );
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failure_is_an_error_span_with_an_event() {
    let collector = Collector::start().await;
    let setup = setup(&format!(
        "  tracing: {{ otlp_endpoint: http://{} }}",
        collector.addr
    ))
    .await;
    let serin = SerinProcess::start(&setup.config, 1, &[], QUICK_EXPORT);

    let (trace_id, parent_id) = ids();
    let got = get(
        &client(),
        &serin.url("/down"),
        &[("traceparent", &format!("00-{trace_id}-{parent_id}-01"))],
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);

    let span = collector.span_of(&trace_id).await.span;
    let status = span.status.expect("a status");
    assert_eq!(status.code, SpanStatus::Error as i32);
    assert_eq!(status.message, "cannot connect to the upstream");
    assert_eq!(
        attr(&span.attributes, "http.response.status_code").as_deref(),
        Some("502")
    );
    assert_eq!(
        attr(&span.attributes, "serin.service").as_deref(),
        Some("gone")
    );
    let event = span
        .events
        .iter()
        .find(|e| e.name == "cannot connect to the upstream")
        .unwrap_or_else(|| panic!("no connect error event in {:?}", span.events));
    assert_eq!(
        attr(&event.attributes, "error.type").as_deref(),
        Some("connect_error")
    );
    assert_eq!(
        attr(&event.attributes, "serin.version").as_deref(),
        Some("v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_not_sampled_export_nothing_and_still_pass_a_trace_context_on() {
    let collector = Collector::start().await;
    let setup = setup(&format!(
        "  tracing: {{ otlp_endpoint: http://{}, sample_ratio: 0 }}",
        collector.addr
    ))
    .await;
    let serin = SerinProcess::start(&setup.config, 2, &[], QUICK_EXPORT);
    let client = client();

    // No parent, at ratio 0: a new trace, not sampled.
    let got = get(&client, &serin.url("/ok"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let fresh = setup.backend.last_seen().headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string();
    let parts: Vec<&str> = fresh.split('-').collect();
    assert_eq!(parts.len(), 4, "{fresh}");
    assert_eq!((parts[0], parts[3]), ("00", "00"), "{fresh}");
    assert!(
        parts[1].len() == 32 && parts[1] != "0".repeat(32),
        "{fresh}"
    );
    assert!(
        parts[2].len() == 16 && parts[2] != "0".repeat(16),
        "{fresh}"
    );

    // An unsampled parent: its trace goes on, unsampled, with serin's span as parent.
    let (unsampled, parent_id) = ids();
    let got = get(
        &client,
        &serin.url("/ok"),
        &[("traceparent", &format!("00-{unsampled}-{parent_id}-00"))],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let passed_on = setup.backend.last_seen().headers["traceparent"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        passed_on.starts_with(&format!("00-{unsampled}-")),
        "{passed_on}"
    );
    assert!(passed_on.ends_with("-00"), "{passed_on}");
    assert!(
        !passed_on.contains(&parent_id),
        "serin's span is the parent: {passed_on}"
    );

    // A sampled request after them: once its span is in, nothing else came.
    let (marker, parent_id) = ids();
    get(
        &client,
        &serin.url("/ok"),
        &[("traceparent", &format!("00-{marker}-{parent_id}-01"))],
    )
    .await;
    collector.span_of(&marker).await;
    let traces: Vec<String> = collector
        .spans()
        .iter()
        .map(|r| hex(&r.span.trace_id))
        .collect();
    assert_eq!(traces, [marker]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_sigterm_are_exported_before_exit() {
    let collector = Collector::start().await;
    let setup = setup(&format!(
        "  tracing: {{ otlp_endpoint: http://{} }}",
        collector.addr
    ))
    .await;
    // The default schedule: spans wait up to 5 s for their batch.
    let serin = SerinProcess::start(&setup.config, 2, &["--grace", "5s"], &[]);
    let client = client();
    let mut traces = Vec::new();
    for _ in 0..5 {
        let (trace_id, parent_id) = ids();
        let got = get(
            &client,
            &serin.url("/ok"),
            &[("traceparent", &format!("00-{trace_id}-{parent_id}-01"))],
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        traces.push(trace_id);
    }
    serin.signal(libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || {
        let mut serin = serin;
        let line = serin.wait_for("the exporter's report", |l| {
            l["message"] == "span export stopped"
        });
        (serin.child.wait(), line)
    })
    .await
    .expect("join");
    let (exit, report) = status;
    assert_eq!(exit.expect("wait").code(), Some(0));
    assert_eq!(report["exported"], 5, "{report}");
    for trace_id in traces {
        assert_eq!(collector.trace(&trace_id).len(), 1, "{trace_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_fails_no_request_and_is_logged_once() {
    let dead = closed_port().await;
    let setup = setup(&format!("  tracing: {{ otlp_endpoint: http://{dead} }}")).await;
    let mut serin = SerinProcess::start(&setup.config, 2, &["--grace", "3s"], QUICK_EXPORT);
    let client = client();
    let mut sent = 0;
    let burst = |serin: &SerinProcess| {
        let (client, url) = (client.clone(), serin.url("/ok"));
        async move {
            for _ in 0..20 {
                let got = get(&client, &url, &[]).await;
                assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));
            }
        }
    };
    burst(&serin).await;
    sent += 20;
    let warning = |l: &Value| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cannot export spans"))
    };
    let line = serin.wait_for("the export failure", warning);
    assert_eq!(
        line["endpoint"],
        format!("http://{dead}/v1/traces").as_str(),
        "{line}"
    );
    // Still failing: more requests, more failed exports, no more warnings.
    burst(&serin).await;
    sent += 20;
    assert_eq!(setup.backend.hits(), sent);
    serin.signal(libc::SIGTERM);
    let report = serin.wait_for("the exporter's report", |l| {
        l["message"] == "span export stopped"
    });
    assert_eq!(report["exported"], 0, "{report}");
    let dropped = report["dropped_collector_failed"].as_u64().unwrap_or(0)
        + report["dropped_queue_full"].as_u64().unwrap_or(0);
    assert!(dropped >= 20, "{report}");
    assert_eq!(serin.logged(warning), 1);
}

/// Fields of an access log line, parsed.
fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_for_a_proxied_request_a_404_and_a_502() {
    let collector = Collector::start().await;
    let setup = setup(&format!(
        "  tracing: {{ otlp_endpoint: http://{} }}\n  access_log: {{ format: json }}",
        collector.addr
    ))
    .await;
    setup
        .backend
        .state
        .body_len
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let mut serin = SerinProcess::start(&setup.config, 2, &[], QUICK_EXPORT);
    let client = client();
    let web = serin.web;

    let (trace_id, parent_id) = ids();
    let ok = get(
        &client,
        &serin.url("/ok/a?secret=1"),
        &[
            ("traceparent", &format!("00-{trace_id}-{parent_id}-01")),
            ("x-request-id", "req-ok"),
        ],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let text = serin.wait_for_stdout("the 200", |l| l.contains("req-ok"));
    let line = json(&text);
    // Every field, in the documented order.
    let fields = [
        "time",
        "request_id",
        "trace_id",
        "method",
        "host",
        "path",
        "status",
        "service",
        "version",
        "upstream",
        "latency_ms",
        "bytes",
    ];
    assert_eq!(
        line.as_object().map(|o| o.len()),
        Some(fields.len()),
        "{text}"
    );
    let places: Vec<Option<usize>> = fields
        .iter()
        .map(|f| text.find(&format!("\"{f}\":")))
        .collect();
    assert!(places.iter().all(Option::is_some), "{text}");
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(line["request_id"], "req-ok");
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], web.to_string().as_str());
    assert_eq!(line["path"], "/ok/a");
    assert_eq!(line["status"], 200);
    assert_eq!(line["service"], "api");
    assert_eq!(line["version"], "stable");
    assert_eq!(line["upstream"], setup.backend.addr.to_string().as_str());
    assert_eq!(line["bytes"], 1000);
    assert!(
        line["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    let time = line["time"].as_str().expect("time");
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 with milliseconds: {time}"
    );

    let missing = get(
        &client,
        &serin.url("/nowhere"),
        &[("x-request-id", "req-404")],
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["x-request-id"], "req-404");
    let line = json(&serin.wait_for_stdout("the 404", |l| l.contains("req-404")));
    assert_eq!(line["status"], 404);
    assert_eq!(line["path"], "/nowhere");
    assert_eq!(line["service"], Value::Null);
    assert_eq!(line["version"], Value::Null);
    assert_eq!(line["upstream"], Value::Null);
    assert_eq!(line["bytes"], missing.body.len());
    assert_eq!(line["trace_id"].as_str().map(str::len), Some(32));

    let down = get(&client, &serin.url("/down"), &[("x-request-id", "req-502")]).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    let line = json(&serin.wait_for_stdout("the 502", |l| l.contains("req-502")));
    assert_eq!(line["status"], 502);
    assert_eq!(line["service"], "gone");
    assert_eq!(line["version"], "v1");
    assert!(line["upstream"].as_str().is_some(), "{line}");
    assert_eq!(line["bytes"], down.body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_access_logs_and_a_reload_that_changes_telemetry() {
    let setup = setup("  access_log: { format: text }").await;
    let mut serin = SerinProcess::start(&setup.config, 1, &[], &[]);
    let client = client();
    get(
        &client,
        &serin.url("/ok/x"),
        &[("x-request-id", "req-text")],
    )
    .await;
    let line = serin.wait_for_stdout("the text line", |l| l.contains("req-text"));
    let pairs: Vec<&str> = line.split(' ').collect();
    assert!(pairs[0].starts_with("time="), "{line}");
    assert_eq!(
        pairs[1..7],
        [
            "request_id=req-text",
            "method=GET",
            &format!("host={}", serin.web),
            "path=/ok/x",
            "status=200",
            "service=api",
        ],
        "{line}"
    );
    assert!(!line.contains("trace_id"), "tracing is off: {line}");

    // Telemetry takes a restart: a reload says so and the format stays.
    let text = std::fs::read_to_string(&setup.config).expect("read the config");
    std::fs::write(
        &setup.config,
        text.replace("{ format: text }", "{ format: json }"),
    )
    .expect("write the config");
    serin.signal(libc::SIGHUP);
    serin.wait_for("the restart warning", |l| {
        l["message"] == "telemetry changes take effect on restart"
    });
    serin.wait_for("the reload", |l| l["message"] == "config reloaded");
    get(
        &client,
        &serin.url("/ok/y"),
        &[("x-request-id", "req-after")],
    )
    .await;
    let line = serin.wait_for_stdout("the line after the reload", |l| l.contains("req-after"));
    assert!(line.starts_with("time="), "{line}");
    drop(setup.dir);
}

/// Tracing off: serin neither reads nor writes the W3C headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_the_clients_trace_context_passes_through_untouched() {
    let backend = Backend::start("stable").await;
    let serin = Serin::start(&format!(
        "listeners: [{{ name: web, listen: 127.0.0.1:0 }}]\n\
         routes: [{{ listener: web, service: api }}]\n\
         services: [{{ name: api, versions: [{{ name: stable, endpoints: [{}] }}] }}]\n\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        backend.addr
    ))
    .await;
    assert!(serin.dataplane.telemetry().is_none());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let got = get(
        &client(),
        &serin.url("/"),
        &[("traceparent", traceparent), ("tracestate", "vendor=abc")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let seen = backend.last_seen();
    assert_eq!(seen.headers["traceparent"], traceparent);
    assert_eq!(seen.headers["tracestate"], "vendor=abc");
}

/// A canary request that fails and is answered by the baseline: the failure is an event,
/// the span reports the baseline's answer, and is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failure_retried_on_the_baseline_is_an_event() {
    let collector = Collector::start().await;
    let stable = Backend::start("stable").await;
    let dead = closed_port().await;
    let dir = TempDir::new("telemetry");
    let config = dir.0.join("serin.yaml");
    let yaml = format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
listeners: [{{ name: web, listen: 127.0.0.1:0 }}]
routes: [{{ listener: web, service: api }}]
services:
  - name: api
    versions:
      - {{ name: stable, endpoints: [{stable}] }}
      - {{ name: canary, endpoints: [{dead}] }}
    split: {{ weights: {{ stable: 100, canary: 0 }}, force: {{ header: x-serin-version }} }}
    rollout:
      baseline: stable
      canary: canary
      steps: [{{ weight: 10, hold: 1h }}]
      analysis: {{ rules: [{{ error_rate: {{ max: 50% }} }}] }}
      retry_on_baseline: true
state_dir: "{dir}"
telemetry:
  tracing: {{ otlp_endpoint: "http://{collector}" }}
"#,
        stable = stable.addr,
        dir = dir.0.display(),
        collector = collector.addr,
    );
    std::fs::write(&config, yaml).expect("write the config");
    let serin = SerinProcess::start(&config, 1, &[], QUICK_EXPORT);

    let (trace_id, parent_id) = ids();
    let got = get(
        &client(),
        &serin.url("/"),
        &[
            ("x-serin-version", "canary"),
            ("traceparent", &format!("00-{trace_id}-{parent_id}-01")),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));

    let span = collector.span_of(&trace_id).await.span;
    let events: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        events,
        ["cannot connect to the upstream", "retrying on the baseline"]
    );
    assert_eq!(
        attr(&span.events[0].attributes, "serin.version").as_deref(),
        Some("canary")
    );
    assert_eq!(
        attr(&span.attributes, "serin.version").as_deref(),
        Some("stable")
    );
    assert_eq!(
        attr(&span.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_ne!(
        span.status.as_ref().map(|s| s.code),
        Some(SpanStatus::Error as i32)
    );
}

/// A `traceparent` that is not a valid one is ignored: serin starts a trace of its own
/// and the upstream gets serin's context, never the client's garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let collector = Collector::start().await;
    let setup = setup(&format!(
        "  tracing: {{ otlp_endpoint: http://{} }}",
        collector.addr
    ))
    .await;
    let serin = SerinProcess::start(&setup.config, 1, &[], QUICK_EXPORT);
    let client = client();
    let hostile = [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_string(),
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".to_string(),
        "not a traceparent".to_string(),
        format!("00-{}-00f067aa0ba902b7-01", "a".repeat(4000)),
    ];
    for traceparent in &hostile {
        let got = get(
            &client,
            &serin.url("/ok"),
            &[("traceparent", traceparent), ("tracestate", "=,=,garbage")],
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{traceparent}");
        let seen = setup.backend.last_seen();
        let passed_on = seen.headers["traceparent"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert_ne!(&passed_on, traceparent);
        assert!(!seen.headers.contains_key("tracestate"), "{traceparent}");
        let trace_id = passed_on.split('-').nth(1).expect("a trace id").to_string();
        let span = collector.span_of(&trace_id).await.span;
        assert!(
            span.parent_span_id.is_empty(),
            "a root span for {traceparent}"
        );
        assert_eq!(
            passed_on,
            format!("00-{trace_id}-{}-01", hex(&span.span_id)),
            "{traceparent}"
        );
    }
}
