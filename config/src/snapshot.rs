//! The checked, immutable configuration the data plane reads.
//!
//! Everything here has been validated: names are unique and safe to use as labels and
//! file names, references resolve (routes hold indices, not names), weights are not all
//! zero, addresses parse. Code that holds a `Snapshot` never re-checks it.

use std::net::SocketAddr;
use std::time::Duration;

/// Default admin address: loopback only, like Envoy's and Linkerd's admin ports.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub listen: SocketAddr,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// In declared order; at least one.
    pub versions: Vec<Version>,
    pub split: Split,
    pub timeouts: Timeouts,
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
}
