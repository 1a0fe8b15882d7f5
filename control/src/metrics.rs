//! Prometheus metrics: what `GET /metrics` on the admin listener exposes.
//!
//! The data plane's per-version intervals are drained by the control loop every tick
//! (`DataPlane::take_intervals` in `Control::tick`), so the request counters and the
//! duration histogram cannot be read from the data plane at scrape time: the loop adds
//! every interval it takes into cumulative [`Totals`] (`crate::totals`: counts by status class and
//! failure kind, histogram buckets and sum computed from the interval's HdrHistogram),
//! never touching the request path. Those figures are as fresh as the last tick. The
//! weights, rollout states, reload counts and process figures are read at scrape time.
//!
//! [`render`] builds a prometheus-client [`Registry`] whose collectors read all of this
//! when they are encoded. Label values come only from names in the config (services,
//! versions) and from fixed sets (status classes, failure kinds, states, rule kinds),
//! never from request data, so the number of series is bounded by the config.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serin_config::Snapshot;
use serin_judge::rollout::Phase;
use serin_proxy::{DataPlane, Report};

use crate::reload::ReloadHandle;
use crate::runner::Control;

/// The status classes `serin_requests_total` reports, with their index in
/// [`VersionTotals::responses`]. The only final 1xx through serin is a `101 Switching
/// Protocols` (a WebSocket upgrade); interim ones (100, 103) are not recorded.
pub const CLASSES: [(&str, usize); 5] =
    [("1xx", 0), ("2xx", 1), ("3xx", 2), ("4xx", 3), ("5xx", 4)];

/// The failure kinds `serin_upstream_failures_total` reports.
pub const FAILURE_KINDS: [&str; 3] = ["connect", "timeout", "reset"];

/// The rollout states `serin_rollout_state` reports, one series each.
pub const PHASES: [Phase; 5] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Paused,
    Phase::Promoted,
    Phase::RolledBack,
];

pub use crate::totals::{
    rollback_trigger, Totals, VersionTotals, DURATION_BUCKETS_S, MANUAL_TRIGGER,
};

/// Which exposition format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text, prometheus-client's own encoding: what Prometheus asks for.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everything else (curl, promtool): the
    /// same metrics, counters named with their `_total` in HELP and TYPE, no `# EOF`.
    Prometheus,
}

impl Format {
    /// OpenMetrics if the `Accept` header takes `application/openmetrics-text`.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let takes_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or("");
                let refused = params.any(|p| {
                    p.split_once('=').is_some_and(|(k, v)| {
                        k.trim().eq_ignore_ascii_case("q")
                            && v.trim().parse::<f64>().is_ok_and(|q| q <= 0.0)
                    })
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if takes_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The whole exposition in `format`, read now.
pub fn render(
    dataplane: &Arc<DataPlane>,
    control: Option<&Arc<Control>>,
    reload: Option<&ReloadHandle>,
    format: Format,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServingCollector {
        dataplane: dataplane.clone(),
        control: control.cloned(),
        reload: reload.cloned(),
    }));
    registry.register_collector(Box::new(ProcessCollector));
    let mut openmetrics = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut openmetrics, &registry)?;
    Ok(match format {
        Format::OpenMetrics => openmetrics,
        Format::Prometheus => to_prometheus_text(&openmetrics),
    })
}

/// prometheus-client writes OpenMetrics only. For the metrics serin exposes, the
/// Prometheus text format differs in three ways: a counter's family is named with its
/// `_total` suffix in `# HELP` and `# TYPE` (OpenMetrics names the family without it
/// and only its samples with it), there are no `# UNIT` lines, and no `# EOF`.
fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes each family's HELP line right before its TYPE line.
    let mut help: Option<&str> = None;
    let flush = |out: &mut String, line: &str| {
        out.push_str(line);
        out.push('\n');
    };
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(pending) = help.replace(rest) {
                flush(&mut out, &format!("# HELP {pending}"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), kind),
                "unknown" => (name.to_string(), "untyped"),
                _ => (name.to_string(), kind),
            };
            if let Some(pending) = help.take() {
                let text = pending.split_once(' ').map_or("", |(_, text)| text);
                flush(&mut out, &format!("# HELP {name} {text}"));
            }
            flush(&mut out, &format!("# TYPE {name} {kind}"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            if let Some(pending) = help.take() {
                flush(&mut out, &format!("# HELP {pending}"));
            }
            flush(&mut out, line);
        }
    }
    out
}

/// Traffic, weights, rollouts, reloads and the build: serin's own metrics.
struct ServingCollector {
    dataplane: Arc<DataPlane>,
    control: Option<Arc<Control>>,
    reload: Option<ReloadHandle>,
}

impl fmt::Debug for ServingCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCollector")
            .field("control", &self.control.is_some())
            .field("reload", &self.reload.is_some())
            .finish_non_exhaustive()
    }
}

impl Collector for ServingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // With a control loop, the data plane's report (its config, the weights in
        // force) and the rollouts' statuses are read together, so a step and its
        // weights agree.
        let (report, statuses) = match &self.control {
            Some(control) => control.statuses_with_report(),
            None => (self.dataplane.report(), Default::default()),
        };
        let snapshot = &report.snapshot;
        // Copied under the control loop's totals lock, which is released before the
        // rollout states are read (they take the loop's own lock).
        let totals = self.control.as_ref().map(|c| c.metric_totals());
        if let Some(totals) = &totals {
            traffic(&mut encoder, snapshot, totals)?;
            shadow_copies(&mut encoder, totals)?;
        }
        let weights: Vec<_> = report
            .services
            .iter()
            .flat_map(|s| {
                s.versions.iter().map(|v| {
                    (
                        [("service", s.name.as_str()), ("version", v.name.as_str())],
                        u64::from(v.weight),
                    )
                })
            })
            .collect();
        gauges(
            &mut encoder,
            "serin_version_weight",
            "The weight each version is serving with now: a percentage during a rollout \
             and after a change through the admin API, else the config's relative weight",
            None,
            &weights,
        )?;
        edge(&mut encoder, &self.dataplane, &report)?;
        if let (Some(control), Some(totals)) = (&self.control, &totals) {
            rollouts(&mut encoder, snapshot, &statuses, totals)?;
            drills(&mut encoder, snapshot, control)?;
            let sent = control.notifier().counts();
            counters(
                &mut encoder,
                "serin_notifications",
                "Rollout notifications to webhooks by result (delivered; failed after its \
                 retries; dropped from a full queue)",
                None,
                &[
                    ([("result", "delivered")], sent.delivered),
                    ([("result", "failed")], sent.failed),
                    ([("result", "dropped")], sent.dropped),
                ],
            )?;
        }
        if let Some(reload) = &self.reload {
            let status = reload.status();
            counters(
                &mut encoder,
                "serin_config_reloads",
                "Reloads of the config file by result (success: applied or unchanged; \
                 failure: not applied, the previous config kept serving)",
                None,
                &[
                    ([("result", "success")], status.reloads.success),
                    ([("result", "failure")], status.reloads.failure),
                ],
            )?;
            let ok = status.last_reload.as_ref().is_none_or(|r| r.ok);
            gauge(
                &mut encoder,
                "serin_config_last_reload_success",
                "1 if the newest reload of the config file succeeded (or none was tried \
                 since the start), else 0",
                None,
                u64::from(ok),
            )?;
        }
        gauges(
            &mut encoder,
            "serin_build_info",
            "serin's version; always 1",
            None,
            &[([("version", env!("CARGO_PKG_VERSION"))], 1u64)],
        )
    }
}

/// Connections, endpoint health and failovers, read from the data plane as they are.
fn edge(encoder: &mut DescriptorEncoder, dataplane: &DataPlane, report: &Report) -> fmt::Result {
    use std::sync::atomic::Ordering;
    gauge(
        encoder,
        "serin_connections_open",
        "Client connections open now, over every worker",
        None,
        dataplane.open_connections.load(Ordering::Relaxed),
    )?;
    gauge(
        encoder,
        "serin_connections_parked",
        "Client connections open now that hold no HTTP buffers: HTTP/1.1 keep-alive \
         connections quiet for a second, waiting for their next request",
        None,
        dataplane.parked_connections.load(Ordering::Relaxed),
    )?;
    counter(
        encoder,
        "serin_connections_refused",
        "Client connections closed as soon as they were accepted because \
         limits.max_connections were open",
        None,
        dataplane.refused_connections.load(Ordering::Relaxed),
    )?;
    let mut failovers = Vec::new();
    let mut endpoints = Vec::new();
    for service in &report.services {
        for version in &service.versions {
            failovers.push((
                [
                    ("service", service.name.as_str()),
                    ("version", version.name.as_str()),
                ],
                version.failovers,
            ));
            for endpoint in &version.endpoints {
                endpoints.push((
                    [
                        ("service", service.name.as_str()),
                        ("version", version.name.as_str()),
                        ("endpoint", endpoint.authority.as_str()),
                    ],
                    u64::from(endpoint.up),
                ));
            }
        }
    }
    counters(
        encoder,
        "serin_failovers",
        "Requests for this version that another version answered because none of its \
         endpoints was in rotation or its connection was refused",
        None,
        &failovers,
    )?;
    gauges(
        encoder,
        "serin_endpoint_up",
        "1 while the endpoint is in rotation (passing its health checks and not \
         ejected), else 0",
        None,
        &endpoints,
    )
}

/// Requests by class, upstream failures by kind and the duration histogram of every
/// configured version.
fn traffic(encoder: &mut DescriptorEncoder, snapshot: &Snapshot, totals: &Totals) -> fmt::Result {
    let zero = VersionTotals::default();
    let versions: Vec<(&str, &str, &VersionTotals)> = snapshot
        .services
        .iter()
        .flat_map(|s| {
            s.versions.iter().map(|v| {
                let t = totals.version(&s.name, &v.name).unwrap_or(&zero);
                (s.name.as_str(), v.name.as_str(), t)
            })
        })
        .collect();
    let requests: Vec<_> = versions
        .iter()
        .flat_map(|(service, version, t)| {
            CLASSES.iter().map(|(class, i)| {
                (
                    [
                        ("service", *service),
                        ("version", *version),
                        ("class", *class),
                    ],
                    t.responses[*i],
                )
            })
        })
        .collect();
    counters(
        encoder,
        "serin_requests",
        "Upstream responses per version by status class (requests that got no response \
         are in serin_upstream_failures_total); as of the control loop's last tick",
        None,
        &requests,
    )?;
    let failures: Vec<_> = versions
        .iter()
        .flat_map(|(service, version, t)| {
            FAILURE_KINDS.iter().map(|kind| {
                (
                    [
                        ("service", *service),
                        ("version", *version),
                        ("kind", *kind),
                    ],
                    t.failures(kind),
                )
            })
        })
        .collect();
    counters(
        encoder,
        "serin_upstream_failures",
        "Requests per version that got no upstream response, by kind: connect (no \
         connection), timeout (no answer within the request timeout), reset (the \
         connection broke); as of the control loop's last tick",
        None,
        &failures,
    )?;
    if versions.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(
        "serin_request_duration",
        "Time from sending the request upstream to its response head or failure, per \
         version (HdrHistogram, 3 significant digits); as of the control loop's last tick",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (service, version, t) in &versions {
        let labels = [("service", *service), ("version", *version)];
        metric
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(
                t.duration_sum_us as f64 / 1e6,
                t.duration_count,
                &t.histogram_buckets(),
                None,
            )?;
    }
    Ok(())
}

/// What shadow copies did, per service and canary (only once some were made).
fn shadow_copies(encoder: &mut DescriptorEncoder, totals: &Totals) -> fmt::Result {
    let labels = |s, v| [("service", s), ("version", v)];
    let of = |f: fn(&crate::totals::ShadowTotals) -> u64| -> Vec<_> {
        totals
            .shadows()
            .map(|(s, v, t)| (labels(s, v), f(t)))
            .collect()
    };
    counters(
        encoder,
        "serin_shadow_copies_sent",
        "Copies of requests sent to the canary during shadow steps",
        None,
        &of(|t| t.sent),
    )?;
    let dropped: Vec<_> = totals
        .shadows()
        .flat_map(|(s, v, t)| {
            [
                (
                    [("service", s), ("version", v), ("reason", "in_flight")],
                    t.dropped_in_flight,
                ),
                (
                    [("service", s), ("version", v), ("reason", "body")],
                    t.dropped_body,
                ),
            ]
        })
        .collect();
    counters(
        encoder,
        "serin_shadow_copies_dropped",
        "Requests not copied to the canary during shadow steps, by reason: in_flight \
         (max_in_flight copies were in flight on the worker), body (over max_body or not \
         read whole)",
        None,
        &dropped,
    )?;
    counters(
        encoder,
        "serin_shadow_compared",
        "Copies whose answer was compared with the client's",
        None,
        &of(|t| t.compared),
    )?;
    counters(
        encoder,
        "serin_shadow_mismatches",
        "Compared copies whose answer differed from the client's (status class, or body \
         hash with compare.body)",
        None,
        &of(|t| t.mismatched),
    )?;
    counters(
        encoder,
        "serin_shadow_not_compared",
        "Copies whose answer could not be compared: a body over max_body, a client that \
         did not read its answer to the end, no client answer in time",
        None,
        &of(|t| t.not_compared),
    )
}

/// The state, step and rollbacks of every service with a rollout.
fn rollouts(
    encoder: &mut DescriptorEncoder,
    snapshot: &Snapshot,
    statuses: &std::collections::BTreeMap<String, crate::runner::RolloutStatus>,
    totals: &Totals,
) -> fmt::Result {
    let statuses: Vec<_> = snapshot
        .services
        .iter()
        .filter_map(|s| statuses.get(&s.name).map(|status| (s, status)))
        .collect();
    let states: Vec<_> = statuses
        .iter()
        .flat_map(|(s, status)| {
            PHASES.iter().map(move |phase| {
                (
                    [("service", s.name.as_str()), ("state", phase.as_str())],
                    u64::from(*phase == status.phase),
                )
            })
        })
        .collect();
    gauges(
        encoder,
        "serin_rollout_state",
        "1 for the state each rollout is in, 0 for the others",
        None,
        &states,
    )?;
    let steps: Vec<_> = statuses
        .iter()
        .map(|(s, status)| ([("service", s.name.as_str())], status.step as u64))
        .collect();
    gauges(
        encoder,
        "serin_rollout_step",
        "The step each rollout is at, counted from 0 as the config's steps",
        None,
        &steps,
    )?;
    // Every trigger a service's rollout can have, at 0 until it happens, and any
    // trigger already counted (a rule removed by a reload keeps its count).
    let rollbacks: Vec<_> = snapshot
        .services
        .iter()
        .flat_map(|s| {
            let mut triggers: BTreeSet<&str> = totals.triggers(&s.name).collect();
            if let Some(rollout) = &s.rollout {
                triggers.insert(MANUAL_TRIGGER);
                for rule in &rollout.analysis.rules {
                    triggers.insert(rule.kind());
                }
            }
            triggers.into_iter().map(|trigger| {
                (
                    [("service", s.name.as_str()), ("trigger", trigger)],
                    totals.rollbacks(&s.name, trigger),
                )
            })
        })
        .collect();
    counters(
        encoder,
        "serin_rollbacks",
        "Canary rollbacks by trigger: the kind of the rule that was breached, or manual \
         for an abort",
        None,
        &rollbacks,
    )
}

/// Rollback drills of every service with a rollout: whether one runs, and the faults
/// drills injected (read from the data plane's counters at scrape time).
fn drills(encoder: &mut DescriptorEncoder, snapshot: &Snapshot, control: &Control) -> fmt::Result {
    let metrics = control.drill_metrics();
    let of = |service: &str| metrics.get(service).copied().unwrap_or_default();
    let with_rollout: Vec<&str> = snapshot
        .services
        .iter()
        .filter(|s| s.rollout.is_some())
        .map(|s| s.name.as_str())
        .collect();
    let active: Vec<_> = with_rollout
        .iter()
        .map(|s| ([("service", *s)], u64::from(of(s).active)))
        .collect();
    gauges(
        encoder,
        "serin_drill_active",
        "1 while a rollback drill injects faults into the service's canary, else 0",
        None,
        &active,
    )?;
    let faults: Vec<_> = with_rollout
        .iter()
        .flat_map(|s| {
            let m = of(s);
            [
                ([("service", *s), ("fault", "error")], m.errors),
                ([("service", *s), ("fault", "delay")], m.delayed),
            ]
        })
        .collect();
    counters(
        encoder,
        "serin_drill_faults",
        "Requests to the canary a rollback drill answered 503 (error) or delayed (delay)",
        None,
        &faults,
    )
}

/// The process's memory, CPU time and file descriptors, from /proc (Linux only).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    #[cfg(target_os = "linux")]
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let figures = match process::read() {
            Ok(figures) => figures,
            Err(err) => {
                process::warn_once(&err);
                return Ok(());
            }
        };
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            figures.resident_bytes,
        )?;
        counter(
            &mut encoder,
            "process_cpu",
            "User and system CPU time spent",
            Some(&Unit::Seconds),
            figures.cpu_seconds,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            figures.open_fds,
        )?;
        if let Some(max) = figures.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "The limit on open file descriptors (soft)",
                None,
                max,
            )?;
        }
        gauge(
            &mut encoder,
            "process_start_time",
            "When the process started, in seconds since the Unix epoch",
            Some(&Unit::Seconds),
            figures.start_time_seconds,
        )
    }

    #[cfg(not(target_os = "linux"))]
    fn encode(&self, _encoder: DescriptorEncoder) -> fmt::Result {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod process {
    use std::sync::atomic::{AtomicBool, Ordering};

    use procfs::process::{LimitValue, Process};

    pub struct Figures {
        pub resident_bytes: u64,
        pub cpu_seconds: f64,
        pub open_fds: u64,
        /// None when unlimited.
        pub max_fds: Option<u64>,
        pub start_time_seconds: f64,
    }

    pub fn read() -> Result<Figures, String> {
        let me = Process::myself().map_err(|e| format!("cannot open /proc/self: {e}"))?;
        let stat = me
            .stat()
            .map_err(|e| format!("cannot read /proc/self/stat: {e}"))?;
        let open_fds = me
            .fd_count()
            .map_err(|e| format!("cannot count /proc/self/fd: {e}"))?;
        let limits = me
            .limits()
            .map_err(|e| format!("cannot read /proc/self/limits: {e}"))?;
        let boot = procfs::boot_time_secs()
            .map_err(|e| format!("cannot read the boot time from /proc/stat: {e}"))?;
        let ticks = procfs::ticks_per_second().max(1) as f64;
        Ok(Figures {
            resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            open_fds: open_fds as u64,
            max_fds: match limits.max_open_files.soft_limit {
                LimitValue::Value(n) => Some(n),
                LimitValue::Unlimited => None,
            },
            start_time_seconds: boot as f64 + stat.starttime as f64 / ticks,
        })
    }

    /// A failure is logged once: /metrics is scraped every few seconds.
    pub fn warn_once(err: &str) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "the process_* metrics are left out of /metrics");
        }
    }
}

/// One counter family with a series per label set; nothing for no series.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(
        L,
        impl prometheus_client::encoding::EncodeCounterValue + Copy,
    )],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// One counter without labels.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl prometheus_client::encoding::EncodeCounterValue,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

/// One gauge without labels.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// One gauge family with a series per label set; nothing for no series.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue + Copy>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: &[(L, V)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serin_proxy::{Outcome, VersionStats};

    use super::*;

    #[test]
    fn intervals_add_up_into_cumulative_buckets() {
        let stats = VersionStats::new(1);
        for ms in [0.2, 0.9, 1.0, 3.0, 3.0, 40.0, 2_000.0, 30_000.0] {
            stats.record(Outcome::Response(200), Duration::from_secs_f64(ms / 1000.0));
        }
        stats.record(Outcome::Response(503), Duration::from_millis(7));
        stats.record(Outcome::ConnectError, Duration::from_millis(1));
        stats.record(Outcome::ClientGone, Duration::from_millis(1));
        let mut totals = VersionTotals::default();
        totals.add(&stats.take());
        stats.record(Outcome::Timeout, Duration::from_secs(5));
        totals.add(&stats.take());

        assert_eq!(totals.responses, [0, 8, 0, 0, 1]);
        assert_eq!(
            (totals.connect_errors, totals.timeouts, totals.resets),
            (1, 1, 0)
        );
        // The client that went away is in no figure.
        assert_eq!(totals.duration_count, 11);
        assert_eq!(
            totals.buckets,
            // ≤1ms ≤2.5 ≤5 ≤10 ≤25 ≤50 ≤.1s ≤.25 ≤.5 ≤1 ≤2.5 ≤5 ≤10 +Inf
            [4, 0, 2, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1]
        );
        let sum_ms = totals.duration_sum_us as f64 / 1000.0;
        let exact = 0.2 + 0.9 + 1.0 + 3.0 + 3.0 + 40.0 + 2_000.0 + 30_000.0 + 7.0 + 1.0 + 5_000.0;
        assert!(
            (sum_ms - exact).abs() / exact < 0.001,
            "{sum_ms} vs {exact}"
        );
    }

    #[test]
    fn totals_follow_the_configured_services_and_versions() {
        let interval = |status| {
            let stats = VersionStats::new(1);
            stats.record(Outcome::Response(status), Duration::from_millis(2));
            stats.take()
        };
        let mut totals = Totals::default();
        totals.add(
            "api",
            &[
                ("stable".into(), interval(200)),
                ("canary".into(), interval(500)),
            ],
        );
        totals.add("api", &[("stable".into(), interval(204))]);
        totals.add("web", &[("v1".into(), interval(200))]);
        totals.count_rollback("api", "error_rate");
        totals.count_rollback("api", MANUAL_TRIGGER);
        totals.count_rollback("api", MANUAL_TRIGGER);
        totals.count_rollback("web", MANUAL_TRIGGER);
        assert_eq!(
            totals.version("api", "stable").map(|t| t.responses[1]),
            Some(2)
        );
        assert_eq!(totals.rollbacks("api", MANUAL_TRIGGER), 2);

        let snapshot = serin_config::parse_str(
            "listeners: [{ name: web, listen: 127.0.0.1:0 }]\n\
             routes: [{ listener: web, match: { path_prefix: / }, service: api }]\n\
             services:\n  - name: api\n    versions: [{ name: stable, endpoints: [127.0.0.1:1] }]\n",
            "test.yaml",
        )
        .expect("valid config");
        totals.retain(&snapshot);
        assert_eq!(
            totals.version("api", "stable").map(|t| t.responses[1]),
            Some(2)
        );
        assert_eq!(totals.version("api", "canary"), None);
        assert_eq!(totals.version("web", "v1"), None);
        assert_eq!(totals.rollbacks("api", "error_rate"), 1);
        assert_eq!(totals.rollbacks("web", MANUAL_TRIGGER), 0);
    }

    #[test]
    fn openmetrics_is_asked_for_by_accept() {
        let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus_2)), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("Application/OpenMetrics-Text; version=1.0.0")),
            Format::OpenMetrics
        );
        for other in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("text/plain;version=0.0.4, application/openmetrics-text;q=0"),
            Some("application/json"),
        ] {
            assert_eq!(Format::from_accept(other), Format::Prometheus, "{other:?}");
        }
    }

    #[test]
    fn the_prometheus_text_format_names_counters_with_their_total() {
        let openmetrics = "# HELP serin_requests Requests.\n\
             # TYPE serin_requests counter\n\
             serin_requests_total{service=\"api\"} 3\n\
             # HELP process_cpu_seconds CPU.\n\
             # TYPE process_cpu_seconds counter\n\
             # UNIT process_cpu_seconds seconds\n\
             process_cpu_seconds_total 0.5\n\
             # HELP serin_request_duration_seconds Time.\n\
             # TYPE serin_request_duration_seconds histogram\n\
             # UNIT serin_request_duration_seconds seconds\n\
             serin_request_duration_seconds_sum 0.1\n\
             serin_request_duration_seconds_count 1\n\
             serin_request_duration_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP serin_build_info Build.\n\
             # TYPE serin_build_info gauge\n\
             serin_build_info{version=\"0.1.0\"} 1\n\
             # EOF\n";
        assert_eq!(
            to_prometheus_text(openmetrics),
            "# HELP serin_requests_total Requests.\n\
             # TYPE serin_requests_total counter\n\
             serin_requests_total{service=\"api\"} 3\n\
             # HELP process_cpu_seconds_total CPU.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 0.5\n\
             # HELP serin_request_duration_seconds Time.\n\
             # TYPE serin_request_duration_seconds histogram\n\
             serin_request_duration_seconds_sum 0.1\n\
             serin_request_duration_seconds_count 1\n\
             serin_request_duration_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP serin_build_info Build.\n\
             # TYPE serin_build_info gauge\n\
             serin_build_info{version=\"0.1.0\"} 1\n"
        );
    }
}
