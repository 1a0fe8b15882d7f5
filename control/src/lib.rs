//! serin-control: judgement and operation, never on the request path.
//!
//! Today it holds the admin listener's health endpoints ([`admin`]); analysis, the
//! rollout state machine and export build on the data plane's interval read API
//! ([`serin_proxy::DataPlane::take_intervals`]).

pub mod admin;
