//! Membership: `P/members/<instance>` holds each live instance's [`MemberInfo`], with its
//! lease. It is created in a txn guarded by `create_revision == 0`, so a name held by a
//! live instance is refused ([`FleetError::NameTaken`]) — two instances with one name
//! would publish to one sample key and be counted as one — and it goes when the lease
//! does, so a crashed instance's name is free again a TTL later.

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::client::{Etcd, FleetError, Keys};
use super::lease::Lease;

/// What `P/members/<instance>` holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub instance: String,
    /// When the instance started, Unix milliseconds.
    pub started_at_ms: u64,
    /// serin's version.
    pub version: String,
    /// The admin API's address, `host:port`.
    pub admin: String,
}

/// This instance's membership, as created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub key: String,
    /// The revision that created the key.
    pub revision: i64,
    pub lease: i64,
}

/// Registers `info.instance` in the fleet with `lease`; refused when a live instance
/// holds the name.
pub async fn join(etcd: &Etcd, lease: &Lease, info: &MemberInfo) -> Result<Membership, FleetError> {
    let key = etcd.keys().member(&info.instance);
    let value = serde_json::to_vec(info).map_err(|err| FleetError::Unexpected {
        what: format!("writing {key}"),
        message: err.to_string(),
    })?;
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease.id())),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let mut client = etcd.client();
    let response = etcd
        .call(format!("creating {key}"), client.txn(txn))
        .await?;
    if response.succeeded() {
        let revision = response.header().map_or(0, |h| h.revision());
        return Ok(Membership {
            key,
            revision,
            lease: lease.id(),
        });
    }
    let holder = response
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                let since = match serde_json::from_slice::<MemberInfo>(kv.value()) {
                    Ok(held) => format!(
                        "admin API {}, serin {}, started at {} ms since the epoch",
                        held.admin, held.version, held.started_at_ms
                    ),
                    Err(_) => "its record is unreadable".to_string(),
                };
                format!("lease {:x}; {since}", kv.lease())
            }),
            _ => None,
        })
        .unwrap_or_else(|| "it has left since; try again".to_string());
    Err(FleetError::NameTaken {
        instance: info.instance.clone(),
        holder,
    })
}

/// Deletes this instance's membership, if it still holds it (the lease is the same).
pub async fn leave(etcd: &Etcd, membership: &Membership) -> Result<(), FleetError> {
    let key = membership.key.as_str();
    let txn = Txn::new()
        .when([Compare::lease(key, CompareOp::Equal, membership.lease)])
        .and_then([TxnOp::delete(key, None)]);
    let mut client = etcd.client();
    etcd.call(format!("deleting {key}"), client.txn(txn))
        .await?;
    Ok(())
}

/// The live instances, by name. A record that cannot be read is left out (and logged).
pub async fn members(etcd: &Etcd) -> Result<Vec<MemberInfo>, FleetError> {
    let under = etcd.keys().members();
    let mut client = etcd.client();
    let response = etcd
        .call(
            format!("reading {under}"),
            client.get(under.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
    Ok(response
        .kvs()
        .iter()
        .filter_map(
            |kv| match serde_json::from_slice::<MemberInfo>(kv.value()) {
                Ok(info) if Keys::name_under(kv.key(), &under) == Some(info.instance.as_str()) => {
                    Some(info)
                }
                _ => {
                    tracing::warn!(
                        key = %String::from_utf8_lossy(kv.key()),
                        "ignoring a member record that is not serin's"
                    );
                    None
                }
            },
        )
        .collect())
}
