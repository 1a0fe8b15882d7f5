//! serin-judge: the judgement of a canary, with no I/O.
//!
//! Everything here is a pure function of its arguments (numbers, state, time), so the
//! control loop, a fleet leader merging many instances' samples, the table tests and
//! the judgement benchmark's simulation all run the same code. The crate depends on no
//! runtime, network or data plane; the compiler keeps it that way.
//!
//! * [`spec`]: the rollout's spec (steps, analysis, rules), built by serin-config.
//! * [`window`]: per-version samples of each tick, merged into sliding windows.
//! * [`stats`]: confidence bounds and the e-detector behind every failure verdict.
//! * [`rules`]: each rule compiled once into the test it is.
//! * [`analysis`]: the judgement `(rules, detectors, numbers) → verdict`.
//! * [`rollout`]: the state machine `(spec, state, event, now) → (state, actions)`.

pub mod analysis;
pub mod rollout;
pub mod rules;
pub mod spec;
pub mod stats;
pub mod window;
