//! The checked, immutable configuration the data plane reads.
//!
//! Everything here has been validated: names are unique and safe to use as labels and
//! file names, references resolve (routes hold indices, not names), weights are not all
//! zero, addresses parse. Code that holds a `Snapshot` never re-checks it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

// The rollout's spec is the judge's own; the config builds it (config → judge).
pub use serin_judge::spec::{
    Analysis, DecisionKind, OnFailure, Rollout, Rule, Shadow, Step, MAX_SUCCESS_RULES,
};

/// Default admin address: loopback only, like Envoy's and Linkerd's admin ports.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Where rollout state and timelines are kept when `state_dir` is not given.
pub const DEFAULT_STATE_DIR: &str = "./serin-state";
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
pub const DEFAULT_ANALYSIS_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_ANALYSIS_WINDOW: Duration = Duration::from_secs(30);
pub const DEFAULT_MIN_REQUESTS: u64 = 50;
pub const DEFAULT_CONFIDENCE: f64 = 0.99;
/// Limit of one attempt to deliver a webhook when `notify[].timeout` is not given.
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// The range `notify[].timeout` must lie in.
pub const MIN_NOTIFY_TIMEOUT: Duration = Duration::from_millis(10);
pub const MAX_NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts after the first failed one when `notify[].retries` is not given.
pub const DEFAULT_NOTIFY_RETRIES: u32 = 4;
pub const MAX_NOTIFY_RETRIES: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    pub limits: Limits,
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    /// Directory of rollout state (`<service>.json`) and timelines
    /// (`<service>.timeline.jsonl`), as written (relative paths are relative to the
    /// working directory).
    pub state_dir: PathBuf,
    /// Traces and access logs; read at start only (a reload that changes them warns).
    pub telemetry: Telemetry,
    /// Webhooks told about rollout decisions, in the order written.
    pub notify: Vec<NotifyTarget>,
    /// Fleet mode: `None` without `cluster` (one serin, state in `state_dir`). Read at
    /// start only (a reload that changes it warns).
    pub cluster: Option<Cluster>,
}

/// `cluster`: this serin is one instance of a fleet that judges and steers its
/// rollouts as one, through etcd (docs/fleet.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub etcd: Etcd,
    /// This instance's name, unique within the fleet: `instance` with `${VAR}`s
    /// expanded, or `hostname-pid`. 1 to [`MAX_INSTANCE_NAME`] bytes of ASCII letters,
    /// digits, `.`, `_` and `-`.
    pub instance: String,
    /// The TTL of this instance's etcd lease: how long etcd keeps its membership (and its
    /// leadership) after its last keep-alive. From [`MIN_LEASE_TTL`] to [`MAX_LEASE_TTL`].
    pub lease_ttl: Duration,
    pub on_etcd_loss: OnEtcdLoss,
}

/// The longest instance name.
pub const MAX_INSTANCE_NAME: usize = 128;
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// etcd's own least lease TTL is 1.5 s with its default timings (it raises shorter
/// ones), and keep-alives stop for an etcd leader election (about 1 s): under 2 s, an
/// etcd leader change would expire every instance's lease.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// A crashed instance's membership, and a crashed leader's leadership, last this long:
/// past a minute a rollout would stall too long on a dead leader.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(60);
/// The longest `cluster.etcd.prefix`.
pub const MAX_ETCD_PREFIX: usize = 256;

/// What an instance does while etcd cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnEtcdLoss {
    /// Keep the weights last applied (a local failure still rolls the canary back).
    #[default]
    Hold,
    /// After `lease_ttl` without etcd, send this instance's canary no traffic.
    Baseline,
}

/// `cluster.etcd`: where the fleet's state lives.
#[derive(Debug, Clone, PartialEq)]
pub struct Etcd {
    /// Client URLs, `http://host:port` or `https://host:port`, all of one scheme.
    pub endpoints: Vec<String>,
    /// Every key of the fleet is under it: starts and ends with `/`.
    pub prefix: String,
    /// TLS settings for `https://` endpoints; `None` with `http://` ones.
    pub tls: Option<EtcdTls>,
    /// etcd's user name and password (read from `password_file` at load).
    pub auth: Option<EtcdAuth>,
}

impl Etcd {
    /// Whether the endpoints are `https://`.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// TLS to etcd, its files read at load. The PEM text is kept as read (and checked to
/// hold what it should): etcd's client (tonic) takes PEM.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct EtcdTls {
    /// `ca`, resolved from the config file's directory; `None`: the bundled (webpki) roots.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate for mutual TLS.
    pub client: Option<EtcdClientCertificate>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_file", &self.ca_file)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// A client certificate chain and its key, as PEM read from their files. Its `Debug`
/// shows the files only.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdClientCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_pem: Secret,
}

impl std::fmt::Debug for EtcdClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClientCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// etcd's user name, and the password read from `password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    pub username: String,
    /// `password_file` as written (relative paths resolved from the config's directory).
    pub password_file: PathBuf,
    pub password: Secret,
}

/// `telemetry`: what serin reports about each request besides its stats.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Telemetry {
    /// `None`: no `otlp_endpoint`, tracing off.
    pub tracing: Option<Tracing>,
    pub access_log: AccessLog,
}

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// `otlp_endpoint` as written (trimmed), for messages.
    pub otlp_endpoint: String,
    /// The URL spans are POSTed to: `otlp_endpoint` followed by `/v1/traces` (unless it
    /// ends with that already). Always `http://`.
    pub traces_url: String,
    /// Share of traces serin starts (requests without a parent), 0 to 1; a request with
    /// a parent follows the parent's sampling decision.
    pub sample_ratio: f64,
    /// The `service.name` of serin's spans.
    pub service_name: String,
}

pub const DEFAULT_TRACE_SAMPLE_RATIO: f64 = 1.0;
pub const DEFAULT_TRACE_SERVICE_NAME: &str = "serin";

/// Access logs: one line per request on stdout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessLog {
    pub format: AccessLogFormat,
    /// Share of requests logged, 0 to 1.
    pub sample_ratio: f64,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            format: AccessLogFormat::Off,
            sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Off,
    /// One JSON object a line.
    Json,
    /// One line of `key=value` pairs (logfmt).
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `admin.token_file` as written (a relative path is relative to the config file's
    /// directory).
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` at load, trimmed; every admin endpoint except
    /// the health checks requires it as `Authorization: Bearer <token>`.
    pub token: Option<AdminToken>,
    /// `admin.allowed_hosts`: the names (lowercase, without a trailing dot) a request's
    /// `Host` may carry besides an IP address, `localhost` and `*.localhost`.
    pub allowed_hosts: Vec<String>,
    /// `admin.drills`: whether rollback drills may be started (they also need a token).
    pub drills: bool,
}

/// The admin API's bearer token. Its `Debug` does not show it, so a logged snapshot
/// never leaks it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token as read from its file: surrounding whitespace removed; `Err` with what is
    /// wrong when nothing is left or it has characters that cannot be sent in a header.
    pub fn new(text: &str) -> Result<Self, &'static str> {
        let token = text.trim();
        if token.is_empty() {
            return Err("is empty");
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("holds characters other than printable ASCII (letters, digits, punctuation; no spaces inside)");
        }
        Ok(Self(token.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
    /// Peers whose X-Forwarded-For, -Proto and -Host are kept (and extended); from any
    /// other peer they are replaced.
    pub trust_forwarded: Vec<ipnet::IpNet>,
    pub tls: Option<Tls>,
}

/// TLS on a listener: certificates chosen by SNI (the first one when the client names
/// no host any certificate covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub certificates: Vec<Certificate>,
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in order of preference: `h2`, `http/1.1`.
    pub alpn: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// A certificate chain and its key, as read from their files at load.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The files, relative paths resolved from the config file's directory.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The chain, leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    /// The private key (DER: PKCS#8, PKCS#1 or SEC1, as `key_kind` says).
    pub key: Vec<u8>,
    pub key_kind: KeyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Pkcs8,
    Pkcs1,
    Sec1,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// What a client may send, and how many may connect (`limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request line and headers of an HTTP/1.1 request, or the header list of an
    /// HTTP/2 request, in bytes; larger → 431.
    pub max_header_bytes: u64,
    /// Time a client gets to send a whole request head once its first byte arrived
    /// (slowloris), and to finish a TLS handshake.
    pub header_read_timeout: std::time::Duration,
    /// Time a client connection may sit with no request in flight and no bytes
    /// moving (HTTP/1.1 keep-alive, HTTP/2 with no open stream) before serin closes it.
    pub idle_timeout: std::time::Duration,
    /// Open client connections per serin process; beyond, new ones are closed at once.
    pub max_connections: u64,
    pub h2_max_concurrent_streams: u32,
    /// Request body bytes; 0 = unlimited; larger → 413.
    pub max_request_body: u64,
    /// A request body of a declared length up to this many bytes is read whole before
    /// an upstream connection is taken; 0 = every body streams.
    pub request_buffer: u64,
    /// Time allowed between two reads of a request body (nginx's
    /// `client_body_timeout`); longer → 408, not counted against the version.
    pub body_read_timeout: std::time::Duration,
    /// Time a write to a client may make no progress (nginx's `send_timeout`) before
    /// serin closes the connection.
    pub send_timeout: std::time::Duration,
}

pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 * 1024;
/// hyper's read buffer cannot be smaller, so neither can the header limit.
pub const MIN_MAX_HEADER_BYTES: u64 = 8 * 1024;
pub const MAX_MAX_HEADER_BYTES: u64 = 1024 * 1024;
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
pub const MIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Most JSON and form bodies fit; nginx's `client_body_buffer_size` is 8 or 16 KiB.
pub const DEFAULT_REQUEST_BUFFER: u64 = 16 * 1024;
pub const MAX_REQUEST_BUFFER: u64 = 1024 * 1024;
/// Shorter than the default request timeout (15s), so that a body that stalls is the
/// client's 408 before it could be the version's 504.
pub const DEFAULT_BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// nginx's `send_timeout`.
pub const DEFAULT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            max_request_body: 0,
            request_buffer: DEFAULT_REQUEST_BUFFER,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Index into [`Snapshot::listeners`].
    pub listener: usize,
    pub host: HostMatch,
    /// Starts with `/`. Matches whole path segments: `/api` matches `/api` and `/api/x`,
    /// not `/apix`.
    pub path_prefix: String,
    /// Index into [`Snapshot::services`].
    pub service: usize,
}

/// How a route matches the request's host (port ignored, ASCII case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any host ending in `.example.com` (stored lowercase, with the dot).
    Suffix(String),
    /// `example.com` (stored lowercase).
    Exact(String),
}

impl HostMatch {
    /// Higher is more specific; a request takes the most specific host that has a route.
    pub fn specificity(&self) -> u8 {
        match self {
            HostMatch::Any => 0,
            HostMatch::Suffix(_) => 1,
            HostMatch::Exact(_) => 2,
        }
    }

    /// `host` without its port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(want) => host.eq_ignore_ascii_case(want),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// In declared order; at least one.
    pub versions: Vec<Version>,
    pub split: Split,
    pub timeouts: Timeouts,
    pub rollout: Option<Rollout>,
}

impl Service {
    pub fn version_index(&self, name: &str) -> Option<usize> {
        self.versions.iter().position(|v| v.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    /// At least one.
    pub endpoints: Vec<Endpoint>,
    /// Relative weight; the weights of a service are not all zero.
    pub weight: u32,
    pub health: Option<HealthCheck>,
    pub eject: Option<Eject>,
    /// The HTTP version spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// gRPC status codes that count as errors: bit `n` set = code `n` (1–16).
    pub grpc_error_codes: u32,
    /// TLS to the endpoints; `None`: plain TCP.
    pub tls: Option<UpstreamTls>,
    /// How a request picks one of the endpoints in rotation.
    pub lb: LoadBalancing,
    /// How long a pooled upstream connection may stay idle before it is closed.
    pub idle_timeout: std::time::Duration,
}

/// The default `idle_timeout` of a version's pooled upstream connections: shorter than
/// the keep-alive timeout of common upstream servers (nginx's 75 s), so that serin
/// rather than the upstream closes an idle connection, and as long as a client's
/// (`limits.idle_timeout`).
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How a request picks one of a version's endpoints in rotation (`lb`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoadBalancing {
    /// Each endpoint in turn (`round_robin`).
    #[default]
    RoundRobin,
    /// The less loaded of two endpoints picked at random, by in-flight requests times
    /// a peak-sensitive moving average of their latency (`p2c_peak_ewma`, Linkerd's
    /// balancer).
    P2cPeakEwma,
}

impl LoadBalancing {
    /// The name as written in config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::P2cPeakEwma => "p2c_peak_ewma",
        }
    }
}

/// TLS to a version's endpoints; the files are read at load (`crate::load`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// The `ca` file, resolved from the config file's directory; `None`: the bundled
    /// (webpki) roots.
    pub ca_file: Option<PathBuf>,
    /// The roots of `ca_file` (DER), read at load.
    pub ca: Vec<Vec<u8>>,
    /// The name sent as SNI and verified (a DNS name or an IP address); `None`: each
    /// endpoint's host.
    pub server_name: Option<String>,
    /// The client certificate for mutual TLS, read at load.
    pub client: Option<Certificate>,
    /// No verification of the upstream's certificate at all.
    pub insecure_skip_verify: bool,
}

/// The HTTP version serin speaks to a version's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 on pooled keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (cleartext h2c): one multiplexed connection per
    /// endpoint and worker.
    Http2,
    /// HTTP/2 when the client spoke HTTP/2, else HTTP/1.1.
    Auto,
}

/// The gRPC status codes by number (index) as written in config: 0 `OK` … 16 `UNAUTHENTICATED`.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The default `grpc.error_codes`: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, DATA_LOSS.
pub const DEFAULT_GRPC_ERROR_CODES: u32 = 1 << 2 | 1 << 4 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 15;

/// Active health checks: `GET path` on every endpoint each `interval`; an endpoint
/// that fails `unhealthy_after` checks in a row leaves rotation until it passes
/// `healthy_after` in a row. A check passes on a 2xx or 3xx within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: std::time::Duration,
    pub timeout: std::time::Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

/// Passive ejection: an endpoint whose requests fail `consecutive_failures` times in a
/// row (connect error, reset, timeout or 5xx) leaves rotation for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eject {
    pub consecutive_failures: u32,
    pub duration: std::time::Duration,
}

/// An upstream address as `host:port` (an IP address or a DNS name, resolved when
/// connecting).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    pub sticky: Option<Sticky>,
    /// Lowercase header name whose value, when it names a version, forces that version.
    pub force_header: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// Lowercase header name.
    Header(String),
    Cookie(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// From sending the request until the upstream's response headers arrive.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl Snapshot {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Settings that are valid but unsafe, one sentence each with where they are:
    /// logged at load and at every reload, and printed by `serin check`.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, service) in self.services.iter().enumerate() {
            for (j, version) in service.versions.iter().enumerate() {
                if version.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                    warnings.push(format!(
                        "services[{i}].versions[{j}].tls.insecure_skip_verify: version \"{}\" of service \"{}\" does not verify its endpoints' certificates at all, so anyone on the network path can impersonate them; give `ca` (and `server_name`) instead",
                        version.name, service.name
                    ));
                }
            }
            let shadow = service.rollout.as_ref().and_then(|r| r.shadow.as_ref());
            for method in shadow.iter().flat_map(|s| &s.methods) {
                if !matches!(method.as_str(), "GET" | "HEAD") {
                    warnings.push(format!(
                        "services[{i}].rollout.shadow.methods: {method} requests of service \"{}\" are copied to the canary during shadow steps, so it acts on each of them as well as the baseline does; make sure it skips side effects of requests marked `x-serin-shadow: 1`",
                        service.name
                    ));
                }
            }
        }
        warnings
    }

    /// The files besides the config file whose content a reload reads again: the
    /// listeners' certificate chains and keys, and the versions' upstream CA bundles and
    /// client certificates and keys. `serin run` watches their directories
    /// and reloads when one changes. Paths as resolved at load (relative ones joined to
    /// the config file's directory), in the order written, each once.
    ///
    /// A new kind of file reference is one more `.chain(..)` here.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let listener_certificates = self
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|tls| &tls.certificates)
            .flat_map(|c| [&c.cert_file, &c.key_file]);
        let upstream_tls = self
            .services
            .iter()
            .flat_map(|s| &s.versions)
            .filter_map(|v| v.tls.as_ref());
        let upstream_files = upstream_tls.flat_map(|tls| {
            tls.ca_file
                .iter()
                .chain(tls.client.iter().flat_map(|c| [&c.cert_file, &c.key_file]))
        });
        let mut files: Vec<PathBuf> = Vec::new();
        for file in listener_certificates.chain(upstream_files) {
            if !files.contains(file) {
                files.push(file.clone());
            }
        }
        files
    }
}

/// A webhook that is sent a notification when a rollout takes a decision of one of
/// `events`. Its `Debug` shows neither the URL's path (a Slack webhook's path is its
/// secret) nor the header values.
#[derive(Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    pub url: WebhookUrl,
    /// At least one, each once.
    pub events: Vec<DecisionKind>,
    pub format: NotifyFormat,
    /// Limit of one attempt: connecting, sending, and the response's status line and
    /// headers. From [`MIN_NOTIFY_TIMEOUT`] to [`MAX_NOTIFY_TIMEOUT`].
    pub timeout: Duration,
    /// Attempts after the first failed one, at most [`MAX_NOTIFY_RETRIES`].
    pub retries: u32,
    /// Extra request headers: lowercase name, value (printable ASCII, spaces allowed).
    pub headers: Vec<(String, Secret)>,
}

impl NotifyTarget {
    pub fn wants(&self, event: DecisionKind) -> bool {
        self.events.contains(&event)
    }
}

impl std::fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyTarget")
            .field("url", &self.url)
            .field("events", &self.events)
            .field("format", &self.format)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// An `http://` URL, checked: a host (IP address or DNS name), a port (80 when not
/// written), an origin-form path and query, no credentials and no fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: String,
    authority: String,
}

impl WebhookUrl {
    /// `url` must have been checked by validation; `authority` is its `host:port`.
    pub(crate) fn new(url: String, authority: String) -> Self {
        Self { url, authority }
    }

    /// The whole URL, as sent to: may hold a secret in its path or query.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// `host:port`, safe to log.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `http://host:port/…`: the URL without its path and query, for logs.
    pub fn redacted(&self) -> String {
        format!("http://{}/…", self.authority)
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

/// A value that must not be shown: its `Debug` is `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The body a webhook is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// The whole notification as a JSON object.
    Json,
    /// `{"text": "..."}`, one readable paragraph, for a Slack incoming webhook.
    Slack,
}
