//! This instance's etcd lease: granted with `cluster.lease_ttl`, kept alive by a task of
//! its own (a keep-alive every third of the TTL), and its health published on a watch
//! channel — the basis of `on_etcd_loss`, of noticing a lost leadership, and of the
//! detail /readyz shows.
//!
//! The membership key and the leader key live with this lease: when etcd stops hearing
//! from the instance for the TTL, both are gone, and the rest of the fleet sees it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::{Etcd, FleetError};

/// What this instance knows of its lease, as of the last keep-alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdHealth {
    /// etcd answered the last keep-alive, at `at`: it holds the lease for a TTL from then.
    Reachable { at: Instant },
    /// Keep-alives have failed since `since` (the first failure; `since_unix_ms` the same
    /// moment on the wall clock); `error` is the last one. The lease may still be alive at
    /// etcd: it expires a TTL after `last_ok`, the last answered keep-alive.
    Lost {
        since: Instant,
        since_unix_ms: u64,
        last_ok: Instant,
        error: String,
    },
    /// etcd says the lease is gone (it expired or was revoked), or this instance revoked
    /// it; what was held with it is gone. Final: a new lease is needed.
    Expired { at: Instant },
}

impl EtcdHealth {
    pub fn is_reachable(&self) -> bool {
        matches!(self, EtcdHealth::Reachable { .. })
    }

    /// Whether the lease can no longer be counted on at `now`: etcd said it is gone, or
    /// nothing was heard from etcd for `ttl`, after which etcd has let it expire.
    pub fn lease_lost(&self, now: Instant, ttl: Duration) -> bool {
        match self {
            EtcdHealth::Reachable { .. } => false,
            EtcdHealth::Lost { last_ok, .. } => now.saturating_duration_since(*last_ok) >= ttl,
            EtcdHealth::Expired { .. } => true,
        }
    }
}

/// A granted lease, kept alive until [`Lease::revoke`] or drop.
#[derive(Debug)]
pub struct Lease {
    id: i64,
    ttl: Duration,
    health: watch::Receiver<EtcdHealth>,
    keeper: JoinHandle<()>,
    etcd: Etcd,
}

impl Lease {
    /// Grants a lease of `ttl` (whole seconds; at least 1 s) and starts keeping it alive.
    pub async fn grant(etcd: &Etcd, ttl: Duration) -> Result<Lease, FleetError> {
        let seconds = ttl.as_secs().max(1);
        let mut client = etcd.client();
        let granted = etcd
            .call(
                format!("granting a lease of {seconds} s"),
                client.lease_grant(seconds as i64, None),
            )
            .await?;
        let id = granted.id();
        let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
        let (tx, health) = watch::channel(EtcdHealth::Reachable { at: Instant::now() });
        let keeper = tokio::spawn(keep_alive(etcd.clone(), id, ttl, tx));
        Ok(Lease {
            id,
            ttl,
            health,
            keeper,
            etcd: etcd.clone(),
        })
    }

    /// The lease's id, to attach keys to it.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease's health, updated after every keep-alive.
    pub fn health(&self) -> watch::Receiver<EtcdHealth> {
        self.health.clone()
    }

    /// Stops the keep-alives and revokes the lease: every key held with it (membership,
    /// leadership, samples) is deleted at once rather than after the TTL.
    pub async fn revoke(self) -> Result<(), FleetError> {
        self.keeper.abort();
        let mut client = self.etcd.client();
        self.etcd
            .call(
                format!("revoking the lease {:x}", self.id),
                client.lease_revoke(self.id),
            )
            .await
            .map(|_| ())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends a keep-alive every `ttl / 3` and publishes what came of it, until the lease is
/// gone. A failed stream is opened again at the next keep-alive.
async fn keep_alive(etcd: Etcd, id: i64, ttl: Duration, health: watch::Sender<EtcdHealth>) {
    let every = (ttl / 3).max(Duration::from_millis(200));
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let outcome = keep_alive_once(&etcd, id, every, &mut stream).await;
        let now = Instant::now();
        match outcome {
            Ok(true) => {
                last_ok = now;
                health.send_replace(EtcdHealth::Reachable { at: now });
            }
            Ok(false) => {
                health.send_replace(EtcdHealth::Expired { at: now });
                return;
            }
            Err(error) => {
                stream = None;
                let error = error.to_string();
                health.send_modify(|h| match h {
                    EtcdHealth::Lost { error: e, .. } => *e = error,
                    _ => {
                        *h = EtcdHealth::Lost {
                            since: now,
                            since_unix_ms: unix_ms(),
                            last_ok,
                            error,
                        }
                    }
                });
            }
        }
    }
}

/// One keep-alive, answered within `within`: `Ok(false)` when etcd says the lease is gone.
async fn keep_alive_once(
    etcd: &Etcd,
    id: i64,
    within: Duration,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Result<bool, FleetError> {
    let what = || format!("keeping the lease {id:x} alive");
    if stream.is_none() {
        // Opening the stream sends a keep-alive and reads its answer.
        let mut client = etcd.client();
        return match etcd.call(what(), client.lease_keep_alive(id)).await {
            Ok(opened) => {
                *stream = Some(opened);
                Ok(true)
            }
            // The client's word for an answer of TTL 0: etcd has no such lease.
            Err(FleetError::Etcd {
                source: etcd_client::Error::LeaseKeepAliveError(message),
                ..
            }) if message == "lease not found" => Ok(false),
            Err(err) => Err(err),
        };
    }
    let Some((keeper, responses)) = stream.as_mut() else {
        return Err(FleetError::Unexpected {
            what: what(),
            message: "no keep-alive stream".into(),
        });
    };
    let answered = async {
        keeper.keep_alive().await?;
        responses.message().await
    };
    match tokio::time::timeout(within, answered).await {
        Ok(Ok(Some(response))) => Ok(response.ttl() > 0),
        Ok(Ok(None)) => Err(FleetError::Unexpected {
            what: what(),
            message: "etcd closed the keep-alive stream".into(),
        }),
        Ok(Err(source)) => Err(FleetError::Etcd {
            what: what(),
            source,
        }),
        Err(_) => Err(FleetError::Timeout {
            what: what(),
            after: within,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_counts_as_lost_a_ttl_after_the_last_answered_keep_alive() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        let lost = EtcdHealth::Lost {
            since: t0 + Duration::from_secs(2),
            since_unix_ms: 0,
            last_ok: t0,
            error: "timed out".into(),
        };
        assert!(!lost.lease_lost(t0 + Duration::from_millis(4_999), ttl));
        assert!(lost.lease_lost(t0 + ttl, ttl));
        assert!(!EtcdHealth::Reachable { at: t0 }.lease_lost(t0 + 10 * ttl, ttl));
        assert!(EtcdHealth::Expired { at: t0 }.lease_lost(t0, ttl));
    }
}
