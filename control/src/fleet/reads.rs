//! [`FleetReads`] on etcd: the connection of this instance's current session (none
//! while etcd is away), and bounded reads of `P/summary` and `P/timeline/<service>/`.

use std::sync::Mutex;

use etcd_client::{GetOptions, SortOrder, SortTarget};

use super::client::{Etcd, Keys};
use super::view::{FleetReads, Reading};
use crate::wire::{FleetSummary, TimelineEvent, SUMMARY_FORMAT};

/// The reads, on the session `node` keeps here.
#[derive(Default)]
pub struct EtcdReads {
    etcd: Mutex<Option<Etcd>>,
}

impl EtcdReads {
    /// The session's connection (`None`: etcd is away).
    pub fn set(&self, etcd: Option<Etcd>) {
        *self.etcd.lock().unwrap_or_else(|p| p.into_inner()) = etcd;
    }

    fn etcd(&self) -> Result<Etcd, String> {
        self.etcd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                "this instance cannot reach the fleet's etcd now (its readyz says since when); \
                 ask another instance, or again once etcd answers"
                    .to_string()
            })
    }
}

impl FleetReads for EtcdReads {
    fn summary(&self) -> Reading<'_, Option<FleetSummary>> {
        Box::pin(async move {
            let etcd = self.etcd()?;
            read_summary(&etcd).await
        })
    }

    fn timeline(&self, service: String) -> Reading<'_, Vec<TimelineEvent>> {
        Box::pin(async move {
            let etcd = self.etcd()?;
            let under = format!("{}timeline/{service}/", etcd.keys().prefix());
            let mut client = etcd.client();
            // The newest KEEP, by their zero-padded sequence numbers.
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Key, SortOrder::Descend)
                .with_limit(crate::timeline::KEEP as i64);
            let got = etcd
                .call(
                    format!("reading {under}"),
                    client.get(under.as_str(), Some(options)),
                )
                .await
                .map_err(|e| format!("cannot read the fleet's timeline: {e}"))?;
            let mut events = Vec::with_capacity(got.kvs().len());
            for kv in got.kvs().iter().rev() {
                match serde_json::from_slice::<TimelineEvent>(kv.value()) {
                    Ok(event) if Keys::name_under(kv.key(), &under).is_some() => events.push(event),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        error = %err,
                        "ignored: not a timeline event"
                    ),
                }
            }
            Ok(events)
        })
    }
}

/// `P/summary`, if a leader wrote one this serin reads.
pub async fn read_summary(etcd: &Etcd) -> Result<Option<FleetSummary>, String> {
    let key = etcd.keys().summary();
    let mut client = etcd.client();
    let got = etcd
        .call(format!("reading {key}"), client.get(key.as_str(), None))
        .await
        .map_err(|e| format!("cannot read the fleet's summary: {e}"))?;
    let Some(kv) = got.kvs().first() else {
        return Ok(None);
    };
    let summary: FleetSummary = serde_json::from_slice(kv.value())
        .map_err(|e| format!("{key} is not a fleet summary this serin reads: {e}"))?;
    if summary.format > SUMMARY_FORMAT {
        return Err(format!(
            "{key} is of format {}, newer than this serin's {SUMMARY_FORMAT}",
            summary.format
        ));
    }
    Ok(Some(summary))
}
