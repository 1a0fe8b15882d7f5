//! The data plane's compiled view of a [`Snapshot`]: routes per listener (with its TLS
//! acceptor), and per service its versions, their endpoints (connection pools and
//! rotation) and per-version stats.
//!
//! A [`Table`] is immutable once built. It holds no weights: those are a layer of their
//! own (`crate::weights`), published with the table as one `View`, so a weight change
//! shares the table whole (acceptors with their session caches included) and builds
//! only a split table. A new table (a reload) carries over, by name, the stats
//! recorders of the versions it keeps, the connection pools, rotation state and
//! measured load of the endpoints it keeps, the acceptors of listeners whose TLS
//! settings are unchanged, and the [`ServiceId`] of services that keep their versions.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;
use http::HeaderValue;
use serin_config::{HostMatch, LoadBalancing, Rule, Snapshot, Sticky};

use crate::balance::{EndpointLoad, InFlight};
use crate::error::ProxyError;
use crate::record::VersionStats;
use crate::rotation::{Monotonic, Rotation};
use crate::split::{Selector, StickyKey};
use crate::upstream::{EndpointPool, TlsTarget};
use rustls_pki_types::ServerName;

#[derive(Debug)]
pub struct Table {
    pub snapshot: Arc<Snapshot>,
    listeners: Box<[ListenerRoutes]>,
    pub services: Box<[ServiceRuntime]>,
}

struct ListenerRoutes {
    name: Box<str>,
    /// TLS, when the listener has it.
    tls: Option<crate::tls::TlsAcceptor>,
    /// Peers whose X-Forwarded-* are kept (`trust_forwarded`).
    trust_forwarded: Box<[ipnet::IpNet]>,
    /// Most specific host first, then longest prefix first: the first match wins.
    routes: Box<[CompiledRoute]>,
}

impl std::fmt::Debug for ListenerRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerRoutes")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .field("routes", &self.routes)
            .finish()
    }
}

#[derive(Debug)]
pub struct CompiledRoute {
    host: HostMatch,
    prefix: Box<str>,
    pub service: usize,
    /// The route as traces name it: its host pattern and path prefix (`*/api`).
    pub label: Arc<str>,
    pub listener: Arc<str>,
}

/// Who a service is across tables: a reload that keeps its name and its versions (names,
/// in order) keeps its id, so weights resolved before the reload still fit after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId(u64);

impl ServiceId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub struct ServiceRuntime {
    pub name: Box<str>,
    pub id: ServiceId,
    /// Matchers of the rollout's `success` rules, by slot.
    pub success_rules: Box<[SuccessMatcher]>,
    /// With `retry_on_baseline`: failed idempotent canary requests go once to the baseline.
    pub retry: Option<Retry>,
    /// The force header and the sticky key.
    pub selector: Selector,
    pub versions: Box<[VersionRuntime]>,
    pub request_timeout: Duration,
    /// The rollout's baseline, which takes the share of a version that cannot serve.
    pub baseline: Option<usize>,
    /// With a rollout's `shadow` settings: how shadow steps copy requests.
    pub shadow: Option<crate::shadow::ShadowRuntime>,
}

#[derive(Debug)]
pub struct SuccessMatcher {
    prefix: Box<str>,
    method: Option<http::Method>,
}

#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub canary: usize,
    pub baseline: usize,
}

/// One endpoint of a version: its connections, its place in rotation, and its load as
/// each worker sees it (for `lb: p2c_peak_ewma`).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub pool: Arc<EndpointPool>,
    pub rotation: Arc<Rotation>,
    pub load: Arc<EndpointLoad>,
}

impl Endpoint {
    pub fn authority(&self) -> &Authority {
        &self.pool.authority
    }

    /// In rotation now: up by its health checks and not ejected.
    #[inline]
    pub fn available(&self) -> bool {
        self.rotation.available(&Monotonic)
    }

    /// Counts a request's outcome for passive ejection (`failed`: no answer or a 5xx).
    #[inline]
    pub fn observe(&self, failed: bool) {
        self.rotation.observe(failed, &Monotonic);
    }
}

pub struct VersionRuntime {
    pub name: Box<str>,
    /// `x-serin-version` response value.
    pub header_value: HeaderValue,
    /// Each endpoint with its per-worker connection pools.
    endpoints: Box<[Endpoint]>,
    /// How a request picks one of them.
    pub lb: LoadBalancing,
    /// How long a pooled connection to them may stay idle (`crate::health` purges).
    pub idle_timeout: Duration,
    next_endpoint: AtomicUsize,
    pub stats: Arc<VersionStats>,
    /// Requests sent to another version because this one could not serve them.
    pub failovers: Arc<std::sync::atomic::AtomicU64>,
    /// The HTTP version spoken to the endpoints.
    pub protocol: serin_config::snapshot::UpstreamProtocol,
    /// Whether the endpoints are spoken to over TLS.
    pub tls: bool,
    /// gRPC status codes that count as errors (bit n = code n).
    pub grpc_error_codes: u32,
}

impl std::fmt::Debug for ServiceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRuntime")
            .field("name", &self.name)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for VersionRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionRuntime")
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl VersionRuntime {
    /// The endpoint in rotation a request goes to, by the version's `lb`; `None` when
    /// none is (all down or ejected). With `p2c_peak_ewma` and a choice to make, the
    /// request counts as in flight there until the [`InFlight`] is dropped.
    #[inline]
    pub fn pick(&self) -> Option<(&Endpoint, Option<InFlight<'_>>)> {
        match self.lb {
            LoadBalancing::P2cPeakEwma if self.endpoints.len() > 1 => {
                let (first, second) = crate::balance::draw(self.endpoints.len());
                let worker = crate::worker::index();
                let now_us = crate::rotation::clock_us();
                let chosen = crate::balance::p2c(
                    self.endpoints.len(),
                    first,
                    second,
                    |i| self.endpoints[i].available(),
                    |i| self.endpoints[i].load.slot(worker).cost(now_us),
                )?;
                let endpoint = &self.endpoints[chosen];
                Some((endpoint, Some(endpoint.load.slot(worker).start(now_us))))
            }
            _ => self.next_endpoint().map(|e| (e, None)),
        }
    }

    /// Round robin over the version's endpoints that are in rotation; `None` when none
    /// is (all down or ejected).
    #[inline]
    pub fn next_endpoint(&self) -> Option<&Endpoint> {
        let n = self.endpoints.len();
        if n == 1 {
            let only = &self.endpoints[0];
            return only.available().then_some(only);
        }
        let start = self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.endpoints[(start + i) % n])
            .find(|e| e.available())
    }

    /// Whether any endpoint is in rotation.
    #[inline]
    pub fn available(&self) -> bool {
        self.endpoints.iter().any(|e| e.available())
    }

    /// The endpoints, for health checks and status.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
}

impl ServiceRuntime {
    pub fn version(&self, name: &str) -> Option<&VersionRuntime> {
        self.versions.iter().find(|v| &*v.name == name)
    }

    /// Bit i set: the request matches success rule i.
    #[inline]
    pub fn success_mask(&self, method: &http::Method, path: &str) -> u8 {
        let mut mask = 0u8;
        for (slot, rule) in self.success_rules.iter().enumerate() {
            if rule.method.as_ref().is_none_or(|m| m == method)
                && prefix_matches(&rule.prefix, path)
            {
                mask |= 1 << slot;
            }
        }
        mask
    }
}

impl Table {
    /// Compiles `snapshot`, carrying over from `previous` what it keeps (see the module
    /// docs). `shards` (the number of workers) sizes new stats recorders and connection
    /// pools. Pools left behind close their connections when the previous table is
    /// dropped.
    pub fn build(
        snapshot: Arc<Snapshot>,
        previous: Option<&Table>,
        shards: usize,
    ) -> Result<Self, ProxyError> {
        let mut services = Vec::with_capacity(snapshot.services.len());
        for service in &snapshot.services {
            let old = previous.and_then(|p| p.service(&service.name));
            let mut versions = Vec::with_capacity(service.versions.len());
            for version in &service.versions {
                let old_version = old.and_then(|o| o.version(&version.name));
                versions.push(build_version(service, version, old_version, shards)?);
            }
            let mut success_rules = Vec::new();
            let mut retry = None;
            if let Some(rollout) = &service.rollout {
                for rule in &rollout.analysis.rules {
                    if let Rule::Success {
                        path_prefix,
                        method,
                        ..
                    } = rule
                    {
                        success_rules.push(SuccessMatcher {
                            prefix: path_prefix.as_str().into(),
                            method: method
                                .as_deref()
                                .map(|m| {
                                    http::Method::from_bytes(m.as_bytes())
                                        .map_err(|_| ProxyError::Method(m.to_string()))
                                })
                                .transpose()?,
                        });
                    }
                }
                if rollout.retry_on_baseline {
                    retry = Some(Retry {
                        canary: rollout.canary,
                        baseline: rollout.baseline,
                    });
                }
            }
            let same_versions = old.is_some_and(|o| {
                o.versions
                    .iter()
                    .map(|v| &*v.name)
                    .eq(service.versions.iter().map(|v| v.name.as_str()))
            });
            let id = match old {
                Some(o) if same_versions => o.id,
                _ => ServiceId::fresh(),
            };
            services.push(ServiceRuntime {
                name: service.name.as_str().into(),
                id,
                success_rules: success_rules.into(),
                retry,
                selector: Selector::new(
                    service
                        .split
                        .force_header
                        .as_deref()
                        .map(header_name)
                        .transpose()?,
                    service.split.sticky.as_ref().map(sticky_key).transpose()?,
                    service.versions.iter().map(|v| v.name.as_str().into()),
                ),
                versions: versions.into(),
                request_timeout: service.timeouts.request,
                baseline: service.rollout.as_ref().map(|r| r.baseline),
                shadow: service.rollout.as_ref().and_then(|r| {
                    let previous = old.and_then(|o| o.shadow.as_ref());
                    crate::shadow::ShadowRuntime::new(r, service.timeouts.request, shards, previous)
                }),
            });
        }

        let listeners = snapshot
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                let mut routes: Vec<CompiledRoute> = snapshot
                    .routes
                    .iter()
                    .filter(|r| r.listener == index)
                    .map(|r| CompiledRoute {
                        host: r.host.clone(),
                        prefix: r.path_prefix.as_str().into(),
                        service: r.service,
                        label: format!("{}{}", host_pattern(&r.host), r.path_prefix).into(),
                        listener: listener.name.as_str().into(),
                    })
                    .collect();
                routes.sort_by(|a, b| {
                    (b.host.specificity(), b.prefix.len())
                        .cmp(&(a.host.specificity(), a.prefix.len()))
                });
                // Unchanged TLS settings (certificates included) keep their acceptor,
                // and with it the session cache its clients resume from.
                let kept = previous.and_then(|p| {
                    let before = p
                        .snapshot
                        .listeners
                        .iter()
                        .find(|l| l.name == listener.name)?;
                    let acceptor = p.listener(&listener.name)?.tls.clone()?;
                    (before.tls == listener.tls).then_some(acceptor)
                });
                let tls = match (kept, &listener.tls) {
                    (Some(acceptor), _) => Some(acceptor),
                    (None, Some(tls)) => Some(crate::tls::acceptor(&listener.name, tls)?),
                    (None, None) => None,
                };
                Ok(ListenerRoutes {
                    name: listener.name.as_str().into(),
                    tls,
                    trust_forwarded: listener.trust_forwarded.as_slice().into(),
                    routes: routes.into(),
                })
            })
            .collect::<Result<_, ProxyError>>()?;

        Ok(Self {
            snapshot,
            listeners,
            services: services.into(),
        })
    }

    fn listener(&self, name: &str) -> Option<&ListenerRoutes> {
        self.listeners.iter().find(|l| &*l.name == name)
    }

    /// What a new connection from `peer` on the listener `name` is given: whether its
    /// X-Forwarded-* headers are trusted, and the TLS acceptor if the listener has TLS.
    pub fn accepting(
        &self,
        name: &str,
        peer: std::net::IpAddr,
    ) -> (bool, Option<crate::tls::TlsAcceptor>) {
        match self.listener(name) {
            Some(l) => (
                l.trust_forwarded.iter().any(|net| net.contains(&peer)),
                l.tls.clone(),
            ),
            None => (false, None),
        }
    }

    pub fn service(&self, name: &str) -> Option<&ServiceRuntime> {
        self.services.iter().find(|s| &*s.name == name)
    }

    /// The route for a request on `listener` to `host` (port already removed) and `path`.
    #[inline]
    pub fn route(&self, listener: &str, host: &str, path: &str) -> Option<&CompiledRoute> {
        let routes = &self.listener(listener)?.routes;
        routes
            .iter()
            .find(|r| r.host.matches(host) && prefix_matches(&r.prefix, path))
    }
}

/// One version of `service`, carrying over from `old` its stats, failover count and the
/// pools and rotation state of the endpoints it keeps.
fn build_version(
    service: &serin_config::Service,
    version: &serin_config::Version,
    old: Option<&VersionRuntime>,
    shards: usize,
) -> Result<VersionRuntime, ProxyError> {
    // Built once for the version, when one of its endpoints needs a new pool.
    let mut connectors: Option<crate::tls::UpstreamTls> = None;
    let endpoints = version
        .endpoints
        .iter()
        .map(|e| {
            let authority = e
                .authority
                .parse::<Authority>()
                .map_err(|_| ProxyError::Endpoint {
                    service: service.name.clone(),
                    version: version.name.clone(),
                    endpoint: e.authority.clone(),
                })?;
            let before = old.and_then(|v| v.endpoints.iter().find(|p| *p.authority() == authority));
            let rotation = match before {
                Some(b)
                    if b.rotation
                        .same_rules(version.health.as_ref(), version.eject.as_ref()) =>
                {
                    b.rotation.clone()
                }
                _ => Arc::new(Rotation::new(
                    &version.name,
                    authority.clone(),
                    version.health.clone(),
                    version.eject,
                )),
            };
            let kept = before.filter(|b| {
                b.pool.connect_timeout() == service.timeouts.connect
                    && b.pool.same_tls(version.tls.as_ref(), version.protocol)
            });
            // What the workers measured of the endpoint holds whatever else changed.
            let load = before
                .map(|b| b.load.clone())
                .unwrap_or_else(|| Arc::new(EndpointLoad::new(shards)));
            if let Some(kept) = kept {
                return Ok(Endpoint {
                    pool: kept.pool.clone(),
                    rotation,
                    load,
                });
            }
            let tls = match &version.tls {
                None => None,
                Some(settings) => {
                    let built = match &connectors {
                        Some(built) => built.clone(),
                        None => {
                            let built = crate::tls::connectors(
                                &service.name,
                                &version.name,
                                settings,
                                version.protocol,
                            )?;
                            connectors = Some(built.clone());
                            built
                        }
                    };
                    let name = settings
                        .server_name
                        .as_deref()
                        .unwrap_or_else(|| serin_config::validate::endpoint_host(&e.authority));
                    let server_name = ServerName::try_from(name)
                        .map_err(|err| ProxyError::UpstreamTls {
                            service: service.name.clone(),
                            version: version.name.clone(),
                            reason: format!(
                                "\"{name}\" cannot be verified: {err}; set tls.server_name"
                            ),
                        })?
                        .to_owned();
                    Some(TlsTarget {
                        connectors: built,
                        server_name,
                        protocol: version.protocol,
                    })
                }
            };
            Ok(Endpoint {
                pool: Arc::new(EndpointPool::new(
                    authority,
                    service.timeouts.connect,
                    shards,
                    tls,
                )),
                rotation,
                load,
            })
        })
        .collect::<Result<Box<[_]>, ProxyError>>()?;
    let stats = old
        .map(|v| v.stats.clone())
        .unwrap_or_else(|| Arc::new(VersionStats::new(shards)));
    let header_value = HeaderValue::from_str(&version.name).map_err(|_| ProxyError::Endpoint {
        service: service.name.clone(),
        version: version.name.clone(),
        endpoint: String::new(),
    })?;
    let failovers = old.map(|v| v.failovers.clone()).unwrap_or_default();
    Ok(VersionRuntime {
        name: version.name.as_str().into(),
        header_value,
        endpoints,
        lb: version.lb,
        idle_timeout: version.idle_timeout,
        next_endpoint: AtomicUsize::new(0),
        stats,
        failovers,
        protocol: version.protocol,
        tls: version.tls.is_some(),
        grpc_error_codes: version.grpc_error_codes,
    })
}

/// Segment-wise prefix: `/api` matches `/api`, `/api/`, `/api/x`, not `/apix`.
#[inline]
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A host pattern as written: `*`, `*.example.com`, `example.com`.
fn host_pattern(host: &HostMatch) -> String {
    match host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Suffix(suffix) => format!("*{suffix}"),
        HostMatch::Exact(exact) => exact.clone(),
    }
}

fn header_name(name: &str) -> Result<HeaderName, ProxyError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| ProxyError::HeaderName(name.to_string()))
}

fn sticky_key(sticky: &Sticky) -> Result<StickyKey, ProxyError> {
    Ok(match sticky {
        Sticky::Header(h) => StickyKey::Header(header_name(h)?),
        Sticky::Cookie(c) => StickyKey::Cookie(c.as_str().into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> Table {
        let snapshot =
            serin_config::parse_str(yaml, "table-test").unwrap_or_else(|e| panic!("{e}"));
        Table::build(Arc::new(snapshot), None, 1).unwrap_or_else(|e| panic!("{e}"))
    }

    const P2C: &str = r#"
listeners: [{ name: web, listen: 127.0.0.1:0 }]
routes: [{ listener: web, service: api }]
services:
  - name: api
    versions:
      - name: stable
        endpoints: [127.0.0.1:9001, 127.0.0.1:9002, 127.0.0.1:9003]
        lb: p2c_peak_ewma
        eject: { consecutive_failures: 1, for: 1h }
"#;

    #[test]
    fn p2c_never_picks_an_ejected_endpoint_and_none_when_all_are() {
        let table = table(P2C);
        let version = &table.services[0].versions[0];
        assert_eq!(version.lb, LoadBalancing::P2cPeakEwma);
        version.endpoints()[1].observe(true);
        let mut picked = [0; 3];
        for _ in 0..300 {
            let (endpoint, in_flight) = version.pick().unwrap_or_else(|| panic!("none picked"));
            assert!(in_flight.is_some(), "counted in flight");
            let i = version
                .endpoints()
                .iter()
                .position(|e| e.authority() == endpoint.authority())
                .unwrap_or_else(|| panic!("not an endpoint of the version"));
            picked[i] += 1;
        }
        assert_eq!(picked[1], 0, "the ejected one: {picked:?}");
        assert!(picked[0] > 0 && picked[2] > 0, "{picked:?}");
        version.endpoints()[0].observe(true);
        version.endpoints()[2].observe(true);
        assert!(version.pick().is_none());
        assert!(!version.available());
    }

    #[test]
    fn a_reload_keeps_an_endpoints_measured_load_and_applies_the_new_policy() {
        let before = table(P2C);
        let measured = before.services[0].versions[0].endpoints()[2].load.clone();
        let yaml = P2C.replace(
            "lb: p2c_peak_ewma",
            "lb: round_robin\n        idle_timeout: 5s",
        );
        let snapshot =
            serin_config::parse_str(&yaml, "table-test").unwrap_or_else(|e| panic!("{e}"));
        let after =
            Table::build(Arc::new(snapshot), Some(&before), 1).unwrap_or_else(|e| panic!("{e}"));
        let version = &after.services[0].versions[0];
        assert_eq!(version.lb, LoadBalancing::RoundRobin);
        assert_eq!(version.idle_timeout, Duration::from_secs(5));
        assert!(Arc::ptr_eq(&version.endpoints()[2].load, &measured));
        assert!(Arc::ptr_eq(
            &version.endpoints()[2].pool,
            &before.services[0].versions[0].endpoints()[2].pool
        ));
        let (_, in_flight) = version.pick().unwrap_or_else(|| panic!("none picked"));
        assert!(in_flight.is_none(), "round robin counts nothing");
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("/", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/"));
        assert!(prefix_matches("/api", "/api/v1"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/"));
    }
}
