//! serin-control: judgement and operation, never on the request path.
//!
//! * [`window`]: per-version samples of each control tick, merged into sliding windows.
//! * [`stats`]: confidence bounds and the e-detector behind every failure verdict.
//! * [`analysis`]: the pure judgement `(rules, detectors, numbers) → verdict`.
//! * [`rollout`]: the pure state machine `(spec, state, event, now) → (state, actions)`.
//! * [`state`], [`timeline`]: the persisted rollout state and the decision log;
//!   [`persist`]: the thread that writes them, off the loop.
//! * [`runner`]: the control loop that takes the data plane's intervals every tick,
//!   judges, transitions, and publishes weights.
//! * [`notify`]: webhooks told about rollout decisions, delivered off the loop.
//! * [`reload`]: the config's status and the reload trigger the admin API uses.
//! * [`totals`]: the cumulative figures the loop keeps for `/metrics`.
//! * [`metrics`]: the Prometheus exposition.
//! * [`admin`]: the admin listener.

pub mod admin;
pub mod analysis;
pub mod metrics;
pub mod notify;
pub mod persist;
pub mod reload;
pub mod rollout;
pub mod runner;
pub mod state;
pub mod stats;
pub mod timeline;
pub mod totals;
pub mod window;
