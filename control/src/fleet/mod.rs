//! Fleet mode's foundation: several serin instances judge and steer one rollout as one,
//! through etcd (docs/fleet.md; the config's `cluster`).
//!
//! Pure parts, built always:
//! * [`sample`]: the per-tick sample record, its compact encoding, and its exact merge.
//! * [`tick`]: wall-clock aligned ticks, and the folds that count late samples once.
//! * [`taken`]: the commands a leader took lately, so that none is applied twice.
//! * [`split`]: weights set by hand on a rollout, as every instance of a fleet shows them.
//! * [`view`]: the leader's summary (`P/summary`) and what every instance shows of
//!   the fleet, read from etcd when asked.
//!
//! etcd parts, with the `fleet` feature (each on a [`client::Etcd`] connection):
//! * [`client`]: connect (endpoints, TLS, user/password, timeouts); the key layout.
//! * [`lease`]: this instance's lease, kept alive, and its health as a watch channel.
//! * [`members`]: `P/members/<instance>`, one live holder per name.
//! * [`election`]: leadership through etcd's election API, fenced writes, resign.
//! * [`node`]: an instance's part: publish, apply, campaign and lead.
//! * [`reads`]: what the admin API reads of the fleet in etcd (summary, timeline).
//! * [`weights`]: weights set by hand on a service without a rollout, fleet-wide.
//! * [`watch`]: a prefix watched from a revision, resumed across disconnects and
//!   compaction, no event missed or repeated.

#[cfg(feature = "fleet")]
pub mod client;
#[cfg(feature = "fleet")]
pub mod election;
#[cfg(feature = "fleet")]
pub mod lease;
#[cfg(feature = "fleet")]
pub mod members;
#[cfg(feature = "fleet")]
pub mod node;
#[cfg(feature = "fleet")]
pub mod reads;
pub mod sample;
pub mod split;
pub mod taken;
pub mod tick;
pub mod view;
#[cfg(feature = "fleet")]
pub mod watch;
#[cfg(feature = "fleet")]
pub mod weights;

/// The etcd client crate, for the ops and options the primitives take (`TxnOp`, ...).
#[cfg(feature = "fleet")]
pub use etcd_client;
