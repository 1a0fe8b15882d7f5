//! serin's integration tests, one binary: real sockets on loopback ports the kernel
//! picks, serin in-process (`common::start`) or as the built binary
//! (`common::process`), real config files. One binary links once instead of once per
//! file; `cargo test --test it hostile::` runs one file's tests. `tests/alloc.rs` stays
//! a binary of its own: it counts allocations with a global allocator.

mod common;

mod admin;
mod balance;
mod cli;
mod compose;
mod deploy;
mod drill;
#[cfg(feature = "fleet")]
mod fleet;
#[cfg(feature = "fleet")]
mod fleet_rollout;
mod grpc;
mod hostile;
mod metrics;
mod notify;
mod ops;
mod pool;
mod proxy;
mod reload;
mod report;
mod rollout;
mod shadow;
mod slow;
mod telemetry;
mod tls;
mod tls_profile;
mod ui;
mod upstream_tls;
