//! serin-control: judgement and operation, never on the request path.
//!
//! The judgement itself (windows, statistics, verdicts, the rollout state machine) is
//! serin-judge's; this crate feeds it and acts on what it decides.
//!
//! * [`intake`]: the data plane's intervals as the judge's samples.
//! * [`state`], [`timeline`]: the persisted rollout state and the decision log;
//!   [`persist`]: the thread that writes them, off the loop.
//! * [`runner`]: the control loop that takes the data plane's intervals every tick,
//!   judges, transitions, and publishes weights.
//! * [`notify`]: webhooks told about rollout decisions, delivered off the loop.
//! * [`reload`]: the config's status and the reload trigger the admin API uses.
//! * [`totals`]: the cumulative figures the loop keeps for `/metrics`.
//! * [`metrics`]: the Prometheus exposition.
//! * [`admin`]: the admin listener.
//! * [`wire`]: every record serin writes or serves as JSON (saved state, timeline,
//!   admin API payloads, notifications), defined once.
//! * [`fleet`]: fleet mode's etcd primitives and sample format.

pub mod admin;
pub mod fleet;
pub mod intake;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod reload;
pub mod runner;
pub mod state;
pub mod timeline;
pub mod totals;
pub mod wire;
