//! Access logs: one line per request, JSON or `key=value` text, on stdout.
//!
//! Workers hand a [`Record`] (owned, cheap-to-clone parts: no formatting, no I/O) to a
//! bounded channel without waiting; a writer thread formats and writes them, in batches,
//! flushing whenever the channel is empty. A full channel (stdout slower than requests)
//! drops the record and counts it.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Method};
use opentelemetry::trace::TraceId;
use serin_config::AccessLogFormat;

use super::{TelemetryError, TelemetryStats};
use crate::table::Table;

/// Records waiting for the writer; more are dropped.
const QUEUE: usize = 4096;
/// The writer's buffer: lines are written in chunks of about this size.
const BUFFER: usize = 64 * 1024;

/// One request, as the access log reports it.
pub(crate) struct Record {
    pub at: SystemTime,
    pub request_id: HeaderValue,
    pub trace_id: Option<TraceId>,
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub path: Option<PathAndQuery>,
    pub status: u16,
    /// The table and index of the service the request was routed to.
    pub service: Option<(Arc<Table>, usize)>,
    /// Index of the version in that service.
    pub version: Option<usize>,
    pub upstream: Option<Authority>,
    pub latency: Duration,
    pub bytes: u64,
}

enum Entry {
    Line(Box<Record>),
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

struct Counts {
    written: AtomicU64,
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl Counts {
    fn drop_one(&self, why: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "access log lines are being dropped: {why} (logged once; the count is logged at shutdown)"
            );
        }
    }
}

pub(crate) struct AccessLog {
    sample_ratio: f64,
    sender: SyncSender<Entry>,
    counts: Arc<Counts>,
}

impl AccessLog {
    /// Starts the writer thread, writing lines of `config.format` to `out`. `traced`:
    /// lines carry a `trace_id`.
    pub(crate) fn start(
        config: serin_config::AccessLog,
        traced: bool,
        out: Box<dyn Write + Send>,
    ) -> Result<Self, TelemetryError> {
        let (sender, receiver) = sync_channel(QUEUE);
        let counts = Arc::new(Counts {
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        });
        let writer_counts = counts.clone();
        let format = config.format;
        // The thread ends when the channel closes, with the last `AccessLog`.
        std::thread::Builder::new()
            .name("serin-access-log".to_string())
            .spawn(move || write_lines(receiver, format, traced, out, &writer_counts))
            .map_err(|source| TelemetryError::Thread {
                what: "access log writer",
                source,
            })?;
        let shown = match format {
            AccessLogFormat::Text => "text",
            _ => "json",
        };
        tracing::info!(
            format = shown,
            sample_ratio = config.sample_ratio,
            "writing access logs to stdout"
        );
        Ok(Self {
            sample_ratio: config.sample_ratio,
            sender,
            counts,
        })
    }

    /// Whether to log the next request.
    pub(crate) fn sampled(&self) -> bool {
        self.sample_ratio >= 1.0 || fastrand::f64() < self.sample_ratio
    }

    /// Hands `record` to the writer, or drops and counts it if the writer is behind.
    pub(crate) fn send(&self, record: Record) {
        match self.sender.try_send(Entry::Line(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.counts.drop_one("stdout cannot keep up"),
            Err(TrySendError::Disconnected(_)) => self.counts.drop_one("the writer has stopped"),
        }
    }

    /// Waits (at most `timeout`) until every line handed over so far is written.
    pub(crate) fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (ack, acked) = sync_channel(1);
        let mut entry = Entry::Flush(ack);
        loop {
            match self.sender.try_send(entry) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    entry = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = acked.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }

    pub(crate) fn add_to(&self, stats: &mut TelemetryStats) {
        stats.access_log_lines += self.counts.written.load(Ordering::Relaxed);
        stats.access_log_dropped += self.counts.dropped.load(Ordering::Relaxed);
    }
}

fn write_lines(
    receiver: Receiver<Entry>,
    format: AccessLogFormat,
    traced: bool,
    out: Box<dyn Write + Send>,
    counts: &Counts,
) {
    let mut out = std::io::BufWriter::with_capacity(BUFFER, out);
    let mut line = Vec::with_capacity(512);
    // Lines handed to `out` since its last flush.
    let mut unflushed = 0u64;
    let flush = |out: &mut std::io::BufWriter<_>, unflushed: &mut u64| {
        let lines = std::mem::take(unflushed);
        match out.flush() {
            Ok(()) => {
                counts.written.fetch_add(lines, Ordering::Relaxed);
            }
            Err(_) => {
                counts.dropped.fetch_add(lines, Ordering::Relaxed);
                counts.drop_one("writing to stdout failed");
            }
        }
    };
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            match entry {
                Entry::Line(record) => {
                    line.clear();
                    match format {
                        AccessLogFormat::Text => text_line(&record, traced, &mut line),
                        _ => json_line(&record, traced, &mut line),
                    }
                    line.push(b'\n');
                    match out.write_all(&line) {
                        Ok(()) => unflushed += 1,
                        Err(_) => counts.drop_one("writing to stdout failed"),
                    }
                }
                Entry::Flush(ack) => {
                    flush(&mut out, &mut unflushed);
                    let _ = ack.send(());
                }
            }
            next = receiver.try_recv().ok();
        }
        flush(&mut out, &mut unflushed);
    }
}

/// The fields of a line, in order; `None` is `null` (JSON) or `-` (text).
struct Fields<'a> {
    time: String,
    request_id: std::borrow::Cow<'a, str>,
    trace_id: Option<String>,
    method: &'a str,
    host: Option<std::borrow::Cow<'a, str>>,
    path: &'a str,
    status: u16,
    service: Option<&'a str>,
    version: Option<&'a str>,
    upstream: Option<&'a str>,
    latency_us: u128,
    bytes: u64,
}

fn fields(record: &Record, traced: bool) -> Fields<'_> {
    let service = record
        .service
        .as_ref()
        .map(|(table, s)| &table.services[*s]);
    Fields {
        time: humantime::format_rfc3339_millis(record.at).to_string(),
        request_id: String::from_utf8_lossy(record.request_id.as_bytes()),
        trace_id: traced.then(|| {
            record
                .trace_id
                .map(|t| t.to_string())
                .unwrap_or_else(|| TraceId::INVALID.to_string())
        }),
        method: record.method.as_str(),
        host: record
            .host
            .as_ref()
            .map(|h| String::from_utf8_lossy(h.as_bytes())),
        path: record.path.as_ref().map(|p| p.path()).unwrap_or("/"),
        status: record.status,
        service: service.map(|s| &*s.name),
        version: service
            .zip(record.version)
            .and_then(|(s, v)| s.versions.get(v))
            .map(|v| &*v.name),
        upstream: record.upstream.as_ref().map(|u| u.as_str()),
        latency_us: record.latency.as_micros(),
        bytes: record.bytes,
    }
}

#[derive(serde::Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    method: &'a str,
    host: Option<&'a str>,
    path: &'a str,
    status: u16,
    service: Option<&'a str>,
    version: Option<&'a str>,
    upstream: Option<&'a str>,
    latency_ms: f64,
    bytes: u64,
}

fn json_line(record: &Record, traced: bool, out: &mut Vec<u8>) {
    let f = fields(record, traced);
    let line = JsonLine {
        time: &f.time,
        request_id: &f.request_id,
        trace_id: f.trace_id.as_deref(),
        method: f.method,
        host: f.host.as_deref(),
        path: f.path,
        status: f.status,
        service: f.service,
        version: f.version,
        upstream: f.upstream,
        latency_ms: f.latency_us as f64 / 1000.0,
        bytes: f.bytes,
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
}

fn text_line(record: &Record, traced: bool, out: &mut Vec<u8>) {
    let f = fields(record, traced);
    let mut pair = |key: &str, value: Option<&str>| {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        match value {
            None => out.push(b'-'),
            Some(v) => logfmt_value(v, out),
        }
    };
    pair("time", Some(&f.time));
    pair("request_id", Some(&f.request_id));
    if let Some(trace_id) = &f.trace_id {
        pair("trace_id", Some(trace_id));
    }
    pair("method", Some(f.method));
    pair("host", f.host.as_deref());
    pair("path", Some(f.path));
    pair("status", Some(&f.status.to_string()));
    pair("service", f.service);
    pair("version", f.version);
    pair("upstream", f.upstream);
    pair(
        "latency_ms",
        Some(&format!(
            "{}.{:03}",
            f.latency_us / 1000,
            f.latency_us % 1000
        )),
    );
    pair("bytes", Some(&f.bytes.to_string()));
}

/// A value as is, or quoted with `"` and `\` escaped when it is empty, `-` or holds a
/// space, a quote, an `=` or a control character.
fn logfmt_value(value: &str, out: &mut Vec<u8>) {
    let plain = !value.is_empty()
        && value != "-"
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if plain {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for c in value.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if c.is_control() => out.extend_from_slice(c.escape_default().to_string().as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_000_000_123),
            request_id: HeaderValue::from_static("req-1"),
            trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").ok(),
            method: Method::GET,
            host: Some(HeaderValue::from_static("shop.example.com:8080")),
            path: Some(PathAndQuery::from_static("/cart?secret=1")),
            status: 404,
            service: None,
            version: None,
            upstream: None,
            latency: Duration::from_micros(1234),
            bytes: 0,
        }
    }

    #[test]
    fn json_lines_have_every_field_and_null_for_what_a_404_lacks() {
        let mut out = Vec::new();
        json_line(&record(), true, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"time":"2025-11-24T16:00:00.123Z","request_id":"req-1","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","method":"GET","host":"shop.example.com:8080","path":"/cart","status":404,"service":null,"version":null,"upstream":null,"latency_ms":1.234,"bytes":0}"#
        );
        out.clear();
        json_line(&record(), false, &mut out);
        assert!(!String::from_utf8_lossy(&out).contains("trace_id"));
    }

    #[test]
    fn text_lines_are_key_value_pairs_quoted_when_needed() {
        let mut r = record();
        r.host = Some(HeaderValue::from_static("a \"b\""));
        let mut out = Vec::new();
        text_line(&r, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"time=2025-11-24T16:00:00.123Z request_id=req-1 method=GET host="a \"b\"" path=/cart status=404 service=- version=- upstream=- latency_ms=1.234 bytes=0"#
        );
    }
}
