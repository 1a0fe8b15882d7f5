//! serin-proxy: the data plane. Every proxied request goes through this chain
//! (`forward::proxy` runs stages 3–7 in this order):
//!
//! 1. **accept** ([`server`]): TCP connections on each configured listener.
//! 2. **HTTP server** ([`server`]): hyper-util's auto server, HTTP/1.1 and HTTP/2
//!    (prior knowledge).
//! 3. **check** ([`guard::check`]): target form, Host and Transfer-Encoding; a
//!    request that fails gets serin's own 400. **route** ([`table::Table::route`]):
//!    listener + host (exact, `*.suffix`, `*`; port ignored) + longest whole-segment
//!    path prefix; no route → 404.
//! 4. **plan** ([`plan`]): the version (force header → sticky cohort → weights, by
//!    [`split`]), and the version its share fails over to when none of its endpoints
//!    is in rotation ([`rotation`]). Synchronous, no I/O.
//! 5. **forward** ([`forward`], [`headers`], [`body`]): hop-by-hop headers and
//!    look-alike names stripped, X-Forwarded-* and x-request-id set, a small request
//!    body read whole first; then the attempts (`execute`): sent over a pooled
//!    keep-alive upstream connection ([`upstream`]) with connect and request timeouts,
//!    failed over when the connection is refused, retried on the baseline when asked.
//! 6. **record** ([`record`]): latency and outcome into the version's sharded stats.
//! 7. **respond** (`respond`): the upstream's response, streamed, with
//!    `x-serin-version`, or serin's own answer (failure → 502, timeout → 504, a body
//!    the client stalls → 408).
//!
//! With [`telemetry`] configured, a request is also traced (a server span, W3C trace
//! context passed to the upstream) and logged; off, that costs one branch.
//!
//! Stages 3–7 read one [`View`] — the compiled [`Table`] and the weights in force
//! ([`weights`]) — loaded once per request from an `ArcSwap`; configuration and weight
//! changes publish a new view and never block a request. A weight change shares the
//! table and cannot fail once its weights are validated. Plan and record allocate
//! nothing and take no contended lock.

pub mod balance;
pub mod body;
pub mod conn;
mod deadline;
pub mod error;
mod execute;
pub mod fault;
pub mod forward;
mod gate;
pub mod guard;
pub mod headers;
pub mod health;
mod idle;
mod pace;
pub mod plan;
pub mod record;
mod respond;
pub mod rotation;
mod send;
pub mod server;
pub mod shadow;
pub mod split;
pub mod table;
pub mod telemetry;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod weights;
pub mod worker;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use serin_config::Snapshot;

pub use conn::ConnInfo;
pub use error::ProxyError;
pub use record::{Interval, Outcome, VersionStats};
pub use respond::ProxyBody;
pub use table::Table;
pub use telemetry::Telemetry;
pub use weights::{RolloutWeights, ServiceWeights, View, WeightsError};

/// The data plane's shared state: the current [`View`] (the compiled [`Table`] and the
/// weights in force), swapped whole.
pub struct DataPlane {
    view: ArcSwap<View>,
    /// Serialises writers (reloads, weight changes) so none loses another's update.
    writer: Mutex<()>,
    shards: usize,
    /// Client connections open now, over every worker (for `limits.max_connections`).
    pub open_connections: std::sync::atomic::AtomicU64,
    /// Connections closed at once because `limits.max_connections` were open.
    pub refused_connections: std::sync::atomic::AtomicU64,
    /// Open HTTP/1.1 connections parked while quiet: they hold no HTTP buffers.
    pub parked_connections: std::sync::atomic::AtomicU64,
    /// Traces and access logs, when configured (set at start; a reload keeps them).
    telemetry: Option<Arc<Telemetry>>,
}

/// The intervals of one service's versions since the previous take.
#[derive(Debug)]
pub struct ServiceInterval {
    pub service: String,
    pub versions: Vec<(String, Interval)>,
    /// With a rollout's `shadow` settings: the canary's name and what copies to it did
    /// (recorded apart from its live numbers).
    pub shadow: Option<(String, shadow::ShadowInterval)>,
}

/// What the data plane reports of its services now (for `/metrics` and status): the
/// config it serves, and per version its weight in force, failovers and endpoints.
#[derive(Debug, Clone)]
pub struct Report {
    pub snapshot: Arc<Snapshot>,
    pub services: Vec<ServiceReport>,
}

#[derive(Debug, Clone)]
pub struct ServiceReport {
    pub name: String,
    pub versions: Vec<VersionReport>,
}

#[derive(Debug, Clone)]
pub struct VersionReport {
    pub name: String,
    /// The weight in force: the config's, or the one a rollout or a person set.
    pub weight: u32,
    /// Requests another version answered because this one could not serve them.
    pub failovers: u64,
    pub endpoints: Vec<EndpointReport>,
}

#[derive(Debug, Clone)]
pub struct EndpointReport {
    pub authority: String,
    /// In rotation: passing its health checks and not ejected.
    pub up: bool,
}

/// Logs the unsafe settings of a config being put to use (at load and every reload).
fn warn_unsafe(snapshot: &Snapshot) {
    for warning in snapshot.warnings() {
        tracing::warn!("{warning}");
    }
}

impl DataPlane {
    /// `shards`: stats shards per version, normally the number of worker threads.
    pub fn new(snapshot: Snapshot, shards: usize) -> Result<Self, ProxyError> {
        let table = Table::build(Arc::new(snapshot), None, shards)?;
        warn_unsafe(&table.snapshot);
        Ok(Self {
            view: ArcSwap::from_pointee(View::new(Arc::new(table), |_| None)),
            writer: Mutex::new(()),
            shards,
            open_connections: Default::default(),
            parked_connections: Default::default(),
            refused_connections: Default::default(),
            telemetry: None,
        })
    }

    /// Traces and logs requests with `telemetry` (see [`Telemetry::start`]).
    pub fn with_telemetry(mut self, telemetry: Option<Arc<Telemetry>>) -> Self {
        self.telemetry = telemetry;
        self
    }

    pub fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        self.telemetry.as_ref()
    }

    /// Handles one request on the current view.
    ///
    /// Boxed once per request: the forwarding future (about 3 KiB) is then moved as a
    /// pointer by hyper (HTTP/2 spawns it as a stream's task), and an idle HTTP/1.1
    /// connection's future slot holds a pointer instead of 3 KiB. Counted with
    /// callgrind: 2 % fewer instructions per request than moving it inline.
    pub fn handle(
        &self,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> impl std::future::Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static
    {
        let view = self.view.load_full();
        let (conn, telemetry) = (conn.clone(), self.telemetry.clone());
        boxed_in_place(move || forward::proxy(view, req, conn, telemetry))
    }

    /// The compiled table and the weights in force, as a request would see them now.
    pub fn view(&self) -> Arc<View> {
        self.view.load_full()
    }

    pub fn table(&self) -> Arc<Table> {
        self.view.load().table.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.view.load().table.snapshot.clone()
    }

    fn write(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `snapshot` with its own weights; requests already running finish on
    /// the view they started with.
    pub fn apply(&self, snapshot: Snapshot) -> Result<(), ProxyError> {
        self.apply_with(snapshot, |_| None).map(drop)
    }

    /// Publishes `snapshot` with, for the rollout of its service `i`, the canary at
    /// `canary_weight_of(i)` and the baseline at the rest where that is some: the table
    /// and those weights in one view. Fails, changing nothing, if the snapshot cannot be
    /// compiled (its TLS files, say); returns the view published.
    pub fn apply_with(
        &self,
        snapshot: Snapshot,
        canary_weight_of: impl Fn(usize) -> Option<u32>,
    ) -> Result<Arc<View>, ProxyError> {
        let _writer = self.write();
        let current = self.view.load_full();
        let table = Table::build(Arc::new(snapshot), Some(&current.table), self.shards)?;
        warn_unsafe(&table.snapshot);
        let next = Arc::new(View::new(Arc::new(table), canary_weight_of));
        self.view.store(next.clone());
        Ok(next)
    }

    /// Checks weights a person gives (see [`View::validate`]) against the view now.
    pub fn validate_weights(
        &self,
        service: &str,
        weights: &[(&str, u32)],
    ) -> Result<ServiceWeights, WeightsError> {
        self.view.load().validate(service, weights)
    }

    /// Publishes `weights` for their service. Nothing else is rebuilt, and nothing can
    /// fail: if a reload has removed the service or changed its versions since the
    /// weights were validated, that reload's weights stand and this changes nothing.
    pub fn set_weights(&self, weights: &ServiceWeights) {
        let _writer = self.write();
        match self.view.load().with_weights(weights) {
            Some(next) => self.view.store(Arc::new(next)),
            None => tracing::debug!("weights for a service a reload replaced; not applied"),
        }
    }

    /// Gives the rollout's canary `canary_weight` (at most 100) and its baseline the
    /// rest; the service's other versions keep theirs. Cannot fail, like
    /// [`Self::set_weights`].
    pub fn set_canary_weight(&self, rollout: &RolloutWeights, canary_weight: u32) {
        let _writer = self.write();
        match self.view.load().with_canary_weight(rollout, canary_weight) {
            Some(next) => self.view.store(Arc::new(next)),
            None => tracing::debug!("weights for a rollout a reload replaced; not applied"),
        }
    }

    /// Starts a rollback drill on the rollout's service (replacing any it has): its
    /// canary's requests get `fault` until `until` (`crate::fault`). `None`, changing
    /// nothing, if a reload replaced the rollout's service.
    pub fn start_drill(
        &self,
        rollout: &RolloutWeights,
        fault: fault::Fault,
        until: std::time::Instant,
    ) -> Option<Arc<fault::Drill>> {
        let _writer = self.write();
        let (next, drill) = self.view.load().with_drill(rollout, fault, until)?;
        self.view.store(Arc::new(next));
        Some(drill)
    }

    /// Ends the drill of the rollout's service, if it has one.
    pub fn end_drill(&self, rollout: &RolloutWeights) {
        let _writer = self.write();
        if let Some(next) = self.view.load().without_drill(rollout) {
            self.view.store(Arc::new(next));
        }
    }

    /// [`Self::set_canary_weight`], and copies of this share (`shadow`, hundredths of a
    /// percent; 0: none) of the baseline's requests go to the canary
    /// (`crate::shadow`): a rollout's shadow step. Cannot fail either.
    pub fn set_rollout_weights(&self, rollout: &RolloutWeights, canary_weight: u32, shadow: u32) {
        let _writer = self.write();
        let view = self.view.load();
        match view.with_rollout_weights(rollout, canary_weight, shadow) {
            Some(next) => self.view.store(Arc::new(next)),
            None => tracing::debug!("weights for a rollout a reload replaced; not applied"),
        }
    }

    /// What the data plane reports of every service now (one view).
    pub fn report(&self) -> Report {
        let view = self.view.load_full();
        let services = view
            .table
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| ServiceReport {
                name: s.name.to_string(),
                versions: s
                    .versions
                    .iter()
                    .zip(view.weights(i))
                    .map(|(v, weight)| VersionReport {
                        name: v.name.to_string(),
                        weight: *weight,
                        failovers: v.failovers.load(std::sync::atomic::Ordering::Relaxed),
                        endpoints: v
                            .endpoints()
                            .iter()
                            .map(|e| EndpointReport {
                                authority: e.authority().to_string(),
                                up: e.available(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Report {
            snapshot: view.table.snapshot.clone(),
            services,
        }
    }

    /// Takes, for every service and version, what was recorded since the previous take.
    pub fn take_intervals(&self) -> Vec<ServiceInterval> {
        let table = self.table();
        table
            .services
            .iter()
            .map(|s| ServiceInterval {
                service: s.name.to_string(),
                versions: s
                    .versions
                    .iter()
                    .map(|v| (v.name.to_string(), v.stats.take()))
                    .collect(),
                shadow: s.shadow.as_ref().map(|shadow| {
                    let canary = s.versions.get(shadow.canary).map_or("", |v| &*v.name);
                    (canary.to_string(), shadow.numbers.take())
                }),
            })
            .collect()
    }
}

impl Report {
    /// The weights in force of `service`, by version name.
    pub fn weights(&self, service: &str) -> Option<impl Iterator<Item = (&str, u32)>> {
        let s = self.services.iter().find(|s| s.name == service)?;
        Some(s.versions.iter().map(|v| (v.name.as_str(), v.weight)))
    }
}

/// `Box::pin(make())` with the box allocated first, so that the value can be built in
/// it rather than on the stack and then copied (a 3 KiB copy per request for the
/// forwarding future).
#[inline(always)]
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}
