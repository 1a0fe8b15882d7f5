//! Leadership through etcd's election API (no election of serin's own): an instance
//! campaigns on `P/election` with its lease; etcd makes it leader when every earlier
//! candidate's key is gone. The leader key's create revision is the fencing token: every
//! write the leader makes goes through [`Leadership::fenced_txn`], which applies only
//! while that very key exists, so a leader that lost its lease (and was replaced) cannot
//! write over its successor — its write fails with [`FleetError::NotLeader`].
//!
//! The leadership lives with the lease: [`Leadership::lost`] resolves when the lease is
//! gone (or etcd was silent for its TTL), and [`Leadership::resign`] hands it over at
//! shutdown without waiting for the TTL.

use std::time::Instant;

use etcd_client::{Compare, CompareOp, LeaderKey, ResignOptions, Txn, TxnOp, TxnResponse};
use tokio::sync::watch;

use super::client::{Etcd, FleetError};
use super::lease::{EtcdHealth, Lease};

/// This instance leads the fleet, as long as its key (and lease) lives.
#[derive(Debug, Clone)]
pub struct Leadership {
    key: LeaderKey,
}

/// Why [`Leadership::lost`] resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// etcd said the lease is gone (or it was revoked here).
    LeaseExpired,
    /// Keep-alives failed for the lease's TTL: etcd has let it expire by now.
    EtcdSilent,
}

/// Campaigns for leadership with `lease`, announcing `value` (e.g. the instance's name),
/// and returns once elected. Waits as long as another instance leads: run it in a task
/// (or a `select!`) and drop it to stop campaigning. Etcd keeps the candidate key
/// (`P/election/<lease>`) until the lease goes; campaigning again with the same lease
/// takes up the same key.
pub async fn campaign(
    etcd: &Etcd,
    lease: &Lease,
    value: impl Into<Vec<u8>>,
) -> Result<Leadership, FleetError> {
    let name = etcd.keys().election();
    let mut client = etcd.client();
    let mut response = client
        .campaign(name.as_str(), value, lease.id())
        .await
        .map_err(|source| FleetError::Etcd {
            what: format!("campaigning on {name}"),
            source,
        })?;
    let key = response
        .take_leader()
        .ok_or_else(|| FleetError::Unexpected {
            what: format!("campaigning on {name}"),
            message: "etcd elected this instance but named no leader key".into(),
        })?;
    Ok(Leadership { key })
}

/// The current leader's announced value and fencing token, if there is a leader.
pub async fn leader(etcd: &Etcd) -> Result<Option<(Vec<u8>, i64)>, FleetError> {
    let name = etcd.keys().election();
    let mut client = etcd.client();
    match etcd
        .call(
            format!("asking etcd who leads {name}"),
            client.leader(name.as_str()),
        )
        .await
    {
        Ok(response) => Ok(response
            .kv()
            .map(|kv| (kv.value().to_vec(), kv.create_revision()))),
        // etcd answers "election: no leader" as an error.
        Err(FleetError::Etcd { source, .. }) if source.to_string().contains("no leader") => {
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

impl Leadership {
    /// The fencing token: the create revision of the leader key.
    pub fn token(&self) -> i64 {
        self.key.rev()
    }

    /// The leader key (`P/election/<lease>`).
    pub fn key(&self) -> &[u8] {
        self.key.key()
    }

    fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.key()).into_owned()
    }

    /// Applies `ops` in one txn if, and only if, this instance still leads (the leader
    /// key exists with the create revision it was elected with). Fails with
    /// [`FleetError::NotLeader`] otherwise — then stop leading, and never retry the
    /// write as a follower; any other error says etcd could not be asked.
    pub async fn fenced_txn(
        &self,
        etcd: &Etcd,
        ops: impl Into<Vec<TxnOp>>,
    ) -> Result<TxnResponse, FleetError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.key(),
                CompareOp::Equal,
                self.token(),
            )])
            .and_then(ops);
        let mut client = etcd.client();
        let response = etcd
            .call(
                format!("writing as leader {}", self.key_text()),
                client.txn(txn),
            )
            .await?;
        if response.succeeded() {
            Ok(response)
        } else {
            Err(FleetError::NotLeader {
                key: self.key_text(),
                revision: self.token(),
            })
        }
    }

    /// Hands the leadership over now (another candidate is elected at once), rather than
    /// a TTL after this instance stops.
    pub async fn resign(self, etcd: &Etcd) -> Result<(), FleetError> {
        let mut client = etcd.client();
        let what = format!("resigning as leader {}", self.key_text());
        etcd.call(
            what,
            client.resign(Some(ResignOptions::new().with_leader(self.key))),
        )
        .await
        .map(|_| ())
    }

    /// Resolves when the leadership's lease is lost: etcd said it is gone, or nothing
    /// was heard from etcd for the lease's TTL (by then etcd has let it expire, and
    /// another instance may lead). Stop leading when it does.
    pub async fn lost(&self, lease: &Lease) -> LossReason {
        let ttl = lease.ttl();
        let mut health: watch::Receiver<EtcdHealth> = lease.health();
        loop {
            let now = Instant::now();
            let current = health.borrow_and_update().clone();
            match current {
                EtcdHealth::Expired { .. } => return LossReason::LeaseExpired,
                ref h if h.lease_lost(now, ttl) => return LossReason::EtcdSilent,
                EtcdHealth::Lost { last_ok, .. } => {
                    let deadline = tokio::time::Instant::from_std(last_ok + ttl);
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        changed = health.changed() => if changed.is_err() {
                            return LossReason::LeaseExpired;
                        },
                    }
                }
                EtcdHealth::Reachable { .. } => {
                    if health.changed().await.is_err() {
                        // The keep-alive task ended: the lease was revoked or dropped.
                        return LossReason::LeaseExpired;
                    }
                }
            }
        }
    }
}
