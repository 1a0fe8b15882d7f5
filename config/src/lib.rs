//! serin-config: the only place that reads and checks configuration.
//!
//! A config file travels one way: [`load`] reads the file (the only file I/O),
//! [`schema`] parses it into raw serde types that reject unknown keys, and
//! [`validate`] compiles the raw form into a checked, immutable [`Snapshot`],
//! collecting every error with its path instead of stopping at the first.
//! Startup and reload take the same path.

pub mod error;
pub mod files;
pub mod load;
pub mod prescan;
pub mod schema;
pub mod snapshot;
pub mod validate;

pub use error::{ConfigError, LoadError};
pub use load::{load_file, parse_file_text, parse_str, read_file};
pub use snapshot::{
    AccessLog, AccessLogFormat, Admin, AdminToken, Analysis, Certificate, Cluster, DecisionKind,
    Eject, Endpoint, Etcd, EtcdAuth, EtcdClientCertificate, EtcdTls, HealthCheck, HostMatch,
    KeyKind, Limits, Listener, LoadBalancing, NotifyFormat, NotifyTarget, OnEtcdLoss, OnFailure,
    Rollout, Route, Rule, Secret, Service, Snapshot, Split, Step, Sticky, Telemetry, Timeouts, Tls,
    TlsVersion, Tracing, UpstreamTls, Version, WebhookUrl,
};
