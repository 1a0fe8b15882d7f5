//! The raw, documented YAML format as serde types (see docs/config.md).
//!
//! Every struct denies unknown fields: a typo is an error, never a silent default.
//! Addresses, durations, weights, percentages and the other numbers and choices of a
//! rollout stay loosely typed here so that [`crate::validate`] can report every bad
//! value with its path, not just the first one serde meets.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the keys `listeners`, `routes` and `services` (and optionally `admin`, `cluster`, `limits`, `notify`, `state_dir` and `telemetry`)"
)]
pub struct RawConfig {
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    /// Fleet mode: rollout state in etcd, shared by every instance of the fleet.
    #[serde(default)]
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub limits: Option<RawLimits>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub services: Vec<RawService>,
    /// `None`: not given; `Some(None)`: given without a value (an error, like `""`).
    #[serde(default, deserialize_with = "present")]
    pub state_dir: Option<Option<String>>,
    #[serde(default)]
    pub telemetry: Option<RawTelemetry>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
}

/// `cluster`: fleet mode. Everything stays loose here; [`crate::validate`] checks it all
/// (and [`crate::load`] reads the files it names).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ etcd: { endpoints: [http://127.0.0.1:2379], prefix: /serin/prod/ }, instance: ${HOSTNAME} }`"
)]
pub struct RawCluster {
    pub etcd: Option<RawEtcd>,
    /// `None`: not given (the default name); `Some(None)`: given without a value (an error).
    #[serde(default, deserialize_with = "present")]
    pub instance: Option<Option<String>>,
    pub lease_ttl: Option<String>,
    pub on_etcd_loss: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ endpoints: [http://127.0.0.1:2379], prefix: /serin/prod/ }`"
)]
pub struct RawEtcd {
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default, deserialize_with = "present")]
    pub prefix: Option<Option<String>>,
    pub tls: Option<RawEtcdTls>,
    #[serde(default, deserialize_with = "present")]
    pub username: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub password_file: Option<Option<String>>,
}

/// TLS to etcd's `https://` endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ ca: certs/etcd-ca.pem, cert: certs/serin.pem, key: certs/serin.key }`"
)]
pub struct RawEtcdTls {
    /// PEM bundle of the roots to trust instead of the bundled (webpki) ones.
    pub ca: Option<String>,
    /// Client certificate chain and key (both or neither).
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `tracing` and `access_log`, both optional, e.g. `{ access_log: { format: json } }`"
)]
pub struct RawTelemetry {
    pub tracing: Option<RawTracing>,
    pub access_log: Option<RawAccessLog>,
}

/// Tracing settings; the endpoint, ratio and name stay loose for [`crate::validate`].
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ otlp_endpoint: http://127.0.0.1:4318, sample_ratio: 0.05 }`"
)]
pub struct RawTracing {
    /// `None`: not given (tracing off); `Some(None)`: given without a value (an error).
    #[serde(default, deserialize_with = "present")]
    pub otlp_endpoint: Option<Option<String>>,
    pub sample_ratio: Option<serde_yaml_ng::Value>,
    #[serde(default, deserialize_with = "present")]
    pub service_name: Option<Option<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ format: json }` or `{ format: text, sample_ratio: 0.1 }`"
)]
pub struct RawAccessLog {
    pub format: Option<serde_yaml_ng::Value>,
    pub sample_ratio: Option<serde_yaml_ng::Value>,
}

/// A webhook told about rollout decisions. The URL, names, choices, durations and
/// header values stay loose here; [`crate::validate`] checks them all.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a webhook such as `{ url: \"http://127.0.0.1:7000/hooks/serin\", events: [rolled_back, promoted] }`"
)]
pub struct RawNotify {
    pub url: String,
    pub events: Vec<String>,
    pub format: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<serde_yaml_ng::Value>,
    /// Header name → value, in the order written, duplicates kept (validation reports
    /// them); values stay loose so that a bad one is reported without being shown.
    #[serde(default, deserialize_with = "header_pairs")]
    pub headers: Vec<(String, serde_yaml_ng::Value)>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ listen: 127.0.0.1:9901 }` or `{ listen: 0.0.0.0:9901, allowed_hosts: [serin], token_file: /etc/serin/admin.token }`"
)]
pub struct RawAdmin {
    /// `None`: the default address.
    #[serde(default)]
    pub listen: Option<String>,
    /// `None`: not given; `Some(None)`: given without a value (an error, like `""`).
    #[serde(default, deserialize_with = "present")]
    pub token_file: Option<Option<String>>,
    /// Host names the admin API answers to besides IP addresses and `localhost`; checked
    /// by [`crate::validate`].
    #[serde(default)]
    pub allowed_hosts: Option<Vec<String>>,
    /// Whether `POST /api/v1/services/NAME/drill` may inject faults (default false).
    #[serde(default)]
    pub drills: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener such as `{ name: web, listen: 127.0.0.1:8080 }`"
)]
pub struct RawListener {
    pub name: String,
    pub listen: String,
    /// Peers (CIDRs) whose X-Forwarded-* headers are kept and extended.
    #[serde(default)]
    pub trust_forwarded: Option<Vec<String>>,
    #[serde(default)]
    pub tls: Option<RawTls>,
}

/// TLS on a listener.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ certificates: [ { cert: certs/shop.pem, key: certs/shop.key } ] }`"
)]
pub struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
    pub min_version: Option<String>,
    pub alpn: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a certificate such as `{ cert: certs/shop.pem, key: certs/shop.key }`"
)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
}

/// `limits`: sizes and counts stay loosely typed (`32KiB` or a number) for validation.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ max_header_bytes: 32KiB, max_connections: 10000 }`"
)]
pub struct RawLimits {
    pub max_header_bytes: Option<serde_yaml_ng::Value>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_connections: Option<serde_yaml_ng::Value>,
    pub h2_max_concurrent_streams: Option<serde_yaml_ng::Value>,
    pub max_request_body: Option<serde_yaml_ng::Value>,
    pub request_buffer: Option<serde_yaml_ng::Value>,
    pub body_read_timeout: Option<String>,
    pub send_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route such as `{ listener: web, match: { path_prefix: / }, service: api }`"
)]
pub struct RawRoute {
    pub listener: String,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub service: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ host: \"*\", path_prefix: / }`"
)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a service, a mapping with `name`, `versions` and optionally `split`, `timeouts` and `rollout`"
)]
pub struct RawService {
    pub name: String,
    pub versions: Vec<RawVersion>,
    pub split: Option<RawSplit>,
    pub timeouts: Option<RawTimeouts>,
    pub rollout: Option<RawRollout>,
    /// gRPC settings for every version (a version may set its own).
    #[serde(default)]
    pub grpc: Option<RawGrpc>,
}

/// TLS to a version's endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ ca: certs/ca.pem, server_name: api.internal }` (or `{}` for TLS with the bundled roots)"
)]
pub struct RawUpstreamTls {
    /// PEM bundle of the roots to trust instead of the bundled (webpki) ones.
    pub ca: Option<String>,
    /// The name sent as SNI and verified; default: the endpoint's host.
    pub server_name: Option<String>,
    /// Client certificate chain and key for mutual TLS (both or neither).
    pub cert: Option<String>,
    pub key: Option<String>,
    /// No verification of the upstream's certificate at all.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a version such as `{ name: stable, endpoints: [127.0.0.1:9001] }`"
)]
pub struct RawVersion {
    pub name: String,
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub health: Option<RawHealth>,
    #[serde(default)]
    pub eject: Option<RawEject>,
    /// `http1` (default), `http2` or `auto`.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub grpc: Option<RawGrpc>,
    /// TLS to the endpoints (`{}` for TLS with the bundled roots).
    #[serde(default)]
    pub tls: Option<RawUpstreamTls>,
    /// How a request picks one of the endpoints: `round_robin` (default) or
    /// `p2c_peak_ewma`.
    #[serde(default)]
    pub lb: Option<String>,
    /// How long a pooled upstream connection may stay idle before it is closed.
    #[serde(default)]
    pub idle_timeout: Option<String>,
}

/// How gRPC responses are judged.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ error_codes: [UNAVAILABLE, INTERNAL] }`"
)]
pub struct RawGrpc {
    /// gRPC status codes, by name or number, that count as errors of the version.
    pub error_codes: Option<Vec<serde_yaml_ng::Value>>,
}

/// Active health checks of a version's endpoints.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ path: /healthz, interval: 5s, timeout: 1s, unhealthy_after: 3, healthy_after: 2 }`"
)]
pub struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub unhealthy_after: Option<serde_yaml_ng::Value>,
    pub healthy_after: Option<serde_yaml_ng::Value>,
}

/// Passive ejection of endpoints that keep failing.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ consecutive_failures: 5, for: 30s }`"
)]
pub struct RawEject {
    pub consecutive_failures: Option<serde_yaml_ng::Value>,
    #[serde(rename = "for")]
    pub duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ weights: { stable: 90, canary: 10 } }`"
)]
pub struct RawSplit {
    /// Version name → weight, in the order written. Kept as a list of pairs so that a
    /// duplicate key or a negative weight is reported by validation with its path.
    #[serde(deserialize_with = "weight_pairs")]
    pub weights: Vec<(String, serde_yaml_ng::Value)>,
    pub sticky: Option<RawSticky>,
    pub force: Option<RawForce>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "`{ header: NAME }` or `{ cookie: NAME }`"
)]
pub struct RawSticky {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ header: x-serin-version }`"
)]
pub struct RawForce {
    pub header: String,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ connect: 1s, request: 15s }`"
)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub request: Option<String>,
}

/// A staged canary rollout. Names, numbers, percentages and durations stay loose here;
/// [`crate::validate`] checks them all.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a rollout, a mapping with `baseline`, `canary`, `steps` and optionally `analysis`, \
                 `retry_on_baseline`, `on_failure`, `progress_deadline` and `shadow`"
)]
pub struct RawRollout {
    pub baseline: String,
    pub canary: String,
    pub steps: Vec<RawStep>,
    pub analysis: Option<RawAnalysis>,
    pub retry_on_baseline: Option<bool>,
    pub on_failure: Option<String>,
    pub progress_deadline: Option<String>,
    pub shadow: Option<RawShadow>,
}

/// How shadow steps copy requests (see `crate::validate`'s `shadow` module).
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with optionally `methods`, `max_body`, `max_in_flight` and `compare`"
)]
pub struct RawShadow {
    pub methods: Option<Vec<String>>,
    pub max_body: Option<serde_yaml_ng::Value>,
    pub max_in_flight: Option<serde_yaml_ng::Value>,
    pub compare: Option<RawCompare>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ status: true, body: true, ignore_headers: [date] }`"
)]
pub struct RawCompare {
    pub status: Option<bool>,
    pub body: Option<bool>,
    pub headers: Option<bool>,
    pub ignore_headers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a step such as `{ weight: 5, hold: 30s }` or `{ shadow: 100%, hold: 5m }`"
)]
pub struct RawStep {
    pub weight: Option<serde_yaml_ng::Value>,
    pub shadow: Option<serde_yaml_ng::Value>,
    pub hold: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `rules` and optionally `interval`, `window`, `min_requests` and `confidence`"
)]
pub struct RawAnalysis {
    pub interval: Option<String>,
    pub window: Option<String>,
    pub min_requests: Option<serde_yaml_ng::Value>,
    pub confidence: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// The kinds of rule, as written.
pub const RULE_KINDS: [&str; 5] = ["error_rate", "latency", "burn_rate", "success", "mismatch"];

/// One item of `analysis.rules`: a mapping with one key, the kind of the rule. Kept as
/// every key written, in order, so that validation reports a rule of an unknown kind,
/// or with no kind or several, with its path.
#[derive(Debug)]
pub struct RawRule(pub Vec<(String, RawRuleKind)>);

#[derive(Debug)]
pub enum RawRuleKind {
    ErrorRate(RawErrorRate),
    Latency(RawLatency),
    BurnRate(RawBurnRate),
    Success(RawSuccess),
    Mismatch(RawMismatch),
    /// A key that is none of [`RULE_KINDS`]; its value is skipped.
    Unknown,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ max: 1% }` or `{ max_increase: 0.5% }`"
)]
pub struct RawErrorRate {
    pub max: Option<serde_yaml_ng::Value>,
    pub max_increase: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ percentile: 95, max: 800ms }` or `{ percentile: 95, max_increase: 20% }`"
)]
pub struct RawLatency {
    pub percentile: serde_yaml_ng::Value,
    pub max: Option<String>,
    pub max_increase: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ slo: 99.9%, max: 4 }`"
)]
pub struct RawBurnRate {
    pub slo: serde_yaml_ng::Value,
    pub max: serde_yaml_ng::Value,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ path_prefix: /checkout, method: POST, min: 97% }`"
)]
pub struct RawSuccess {
    pub path_prefix: String,
    pub method: Option<String>,
    pub min: serde_yaml_ng::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping such as `{ max: 1% }`")]
pub struct RawMismatch {
    pub max: serde_yaml_ng::Value,
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct RuleVisitor;
        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = RawRule;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a rule, a mapping with one key: `error_rate`, `latency`, `burn_rate`, \
                     `success` or `mismatch` (e.g. `error_rate: { max: 1% }`)",
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRule, A::Error> {
                let mut kinds = Vec::with_capacity(1);
                while let Some(key) = map.next_key::<String>()? {
                    let kind = match key.as_str() {
                        "error_rate" => RawRuleKind::ErrorRate(map.next_value()?),
                        "latency" => RawRuleKind::Latency(map.next_value()?),
                        "burn_rate" => RawRuleKind::BurnRate(map.next_value()?),
                        "success" => RawRuleKind::Success(map.next_value()?),
                        "mismatch" => RawRuleKind::Mismatch(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            RawRuleKind::Unknown
                        }
                    };
                    kinds.push((key, kind));
                }
                Ok(RawRule(kinds))
            }
        }
        de.deserialize_map(RuleVisitor)
    }
}

/// An optional key whose value may be empty: `Some(None)` when written without one.
fn present<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(de).map(Some)
}

/// `headers`: a mapping read as its list of pairs, in the order written, duplicates kept.
fn header_pairs<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Vec<(String, serde_yaml_ng::Value)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, serde_yaml_ng::Value)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a mapping of header name to value, e.g. `{ Authorization: \"Bearer TOKEN\" }`",
            )
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(1));
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    de.deserialize_map(Pairs)
}

/// A mapping read as its list of pairs, in the order written, duplicates kept.
fn weight_pairs<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Vec<(String, serde_yaml_ng::Value)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, serde_yaml_ng::Value)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of version name to weight, e.g. `{ stable: 90, canary: 10 }`")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(2));
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    de.deserialize_map(Pairs)
}
