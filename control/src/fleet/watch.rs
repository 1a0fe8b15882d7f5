//! A prefix watched from a revision, that no disconnect makes miss or repeat an event:
//! after a failed stream the watch resumes from the last revision delivered + 1; when
//! that revision was compacted away, the prefix is read again whole and delivered as a
//! [`WatchItem::Snapshot`] (the consumer's view is replaced by it), then watched on from
//! there.
//!
//! etcd delivers every event of one revision in one response (fragmenting is off), so
//! "seen" is tracked per revision: an event at or below the last revision delivered is a
//! repeat and is dropped.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, WatchOptions, WatchStream};

use super::client::{Etcd, FleetError};

/// One key's change under the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        /// The revision of the write (its `mod_revision`).
        revision: i64,
    },
    /// Deleted, or gone with its lease.
    Delete { key: Vec<u8>, revision: i64 },
}

impl Change {
    pub fn key(&self) -> &[u8] {
        match self {
            Change::Put { key, .. } | Change::Delete { key, .. } => key,
        }
    }

    pub fn revision(&self) -> i64 {
        match self {
            Change::Put { revision, .. } | Change::Delete { revision, .. } => *revision,
        }
    }
}

/// What [`PrefixWatch::next`] delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Change(Change),
    /// Every key under the prefix as of `revision`, (key, value, mod_revision) in key
    /// order: the whole view, replacing what came before (keys absent are gone).
    Snapshot {
        kvs: Vec<(Vec<u8>, Vec<u8>, i64)>,
        revision: i64,
    },
}

/// A watch of every key under a prefix.
pub struct PrefixWatch {
    etcd: Etcd,
    prefix: String,
    /// The last revision delivered (every event up to it was).
    seen: i64,
    /// Read the prefix whole before watching on.
    needs_snapshot: bool,
    stream: Option<WatchStream>,
    ready: VecDeque<WatchItem>,
    /// The wait before the next attempt after a failure.
    backoff: Duration,
    /// The last failure, and how many in a row.
    failures: u32,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl PrefixWatch {
    /// Watches `prefix` from revision `from` (events at `from` and after); with `None`,
    /// the first item is a [`WatchItem::Snapshot`] of the prefix now, and changes follow.
    /// Nothing is asked of etcd until [`PrefixWatch::next`].
    pub fn new(etcd: &Etcd, prefix: impl Into<String>, from: Option<i64>) -> PrefixWatch {
        PrefixWatch {
            etcd: etcd.clone(),
            prefix: prefix.into(),
            seen: from.map_or(0, |r| r.max(1) - 1),
            needs_snapshot: from.is_none(),
            stream: None,
            ready: VecDeque::new(),
            backoff: MIN_BACKOFF,
            failures: 0,
        }
    }

    /// The last revision delivered.
    pub fn revision(&self) -> i64 {
        self.seen
    }

    /// Failed attempts in a row (0 while the watch is up): how long etcd has been away.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The next change (or snapshot). Waits while etcd cannot be reached, trying again
    /// with a backoff (100 ms doubling to 2 s), and logs each failure. Cancel-safe: drop
    /// it in a `select!` and call again, nothing is lost.
    pub async fn next(&mut self) -> WatchItem {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return item;
            }
            match self.fill().await {
                Ok(()) => {
                    self.failures = 0;
                    self.backoff = MIN_BACKOFF;
                }
                Err(err) => {
                    self.stream = None;
                    self.failures += 1;
                    tracing::warn!(
                        prefix = %self.prefix,
                        attempt = self.failures,
                        "watching etcd: {err}; trying again from revision {}",
                        self.seen + 1
                    );
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits for at least one more item (or a failure).
    async fn fill(&mut self) -> Result<(), FleetError> {
        if self.needs_snapshot {
            return self.snapshot().await;
        }
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(self.seen + 1);
                let mut client = self.etcd.client();
                let stream = self
                    .etcd
                    .call(
                        format!("watching {} from revision {}", self.prefix, self.seen + 1),
                        client.watch(self.prefix.as_str(), Some(options)),
                    )
                    .await?;
                self.stream.insert(stream)
            }
        };
        let response = stream
            .message()
            .await
            .map_err(|source| FleetError::Etcd {
                what: format!("watching {}", self.prefix),
                source,
            })?
            .ok_or_else(|| FleetError::Unexpected {
                what: format!("watching {}", self.prefix),
                message: "etcd closed the watch".into(),
            })?;
        if response.compact_revision() > 0 {
            tracing::info!(
                prefix = %self.prefix,
                compacted = response.compact_revision(),
                "revisions after {} were compacted; reading the prefix again",
                self.seen
            );
            self.stream = None;
            return self.snapshot().await;
        }
        if response.canceled() {
            self.stream = None;
            return Err(FleetError::Unexpected {
                what: format!("watching {}", self.prefix),
                message: format!("etcd canceled the watch: {}", response.cancel_reason()),
            });
        }
        let before = self.seen;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= before {
                continue;
            }
            self.seen = self.seen.max(revision);
            let key = kv.key().to_vec();
            self.ready
                .push_back(WatchItem::Change(match event.event_type() {
                    EventType::Put => Change::Put {
                        key,
                        value: kv.value().to_vec(),
                        revision,
                    },
                    EventType::Delete => Change::Delete { key, revision },
                }));
        }
        Ok(())
    }

    /// Reads the prefix whole, as a snapshot item, and watches on after it.
    async fn snapshot(&mut self) -> Result<(), FleetError> {
        let mut client = self.etcd.client();
        let response = self
            .etcd
            .call(
                format!("reading {}", self.prefix),
                client.get(self.prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let kvs = response
            .kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
            .collect();
        self.seen = revision;
        self.needs_snapshot = false;
        self.stream = None;
        self.ready.push_back(WatchItem::Snapshot { kvs, revision });
        Ok(())
    }
}
