//! Weights set by hand on a service without a rollout, fleet-wide (docs/fleet.md,
//! "Roles"): `PUT …/weights` on any instance is a fleet command; the leader sets them
//! (as a single serin would) and writes `P/weights/<service>` ([`FleetWeights`]) in its
//! fenced txn; every instance applies that record, unless its config gives the service
//! other weights than when they were set (the config changed since: its weights hold)
//! or the service has a rollout there (the rollout's state holds its weights).

use std::collections::BTreeMap;

use serin_proxy::DataPlane;

use super::client::{decode_record, names_service, Record};
use crate::runner::Control;
use crate::wire::{rfc3339, FleetCommand, FleetWeights, WEIGHTS_FORMAT};

/// The config's weights of `service`, by version.
pub fn config_weights(dataplane: &DataPlane, service: &str) -> Option<BTreeMap<String, u32>> {
    let snapshot = dataplane.snapshot();
    let service = snapshot.service(service)?;
    Some(
        service
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.weight))
            .collect(),
    )
}

/// The weights in force of `service`, by version.
pub fn in_force(dataplane: &DataPlane, service: &str) -> Option<BTreeMap<String, u32>> {
    let view = dataplane.view();
    let weights = view.weights_of(service)?;
    Some(weights.map(|(v, w)| (v.to_string(), w)).collect())
}

/// The leader: sets the weights of `command` (a service without a rollout) here, and
/// returns the record every instance applies. `Err` says why they do not apply.
pub fn set_by_command(
    control: &Control,
    command: &FleetCommand,
    now_ms: u64,
) -> Result<FleetWeights, String> {
    let pairs: Vec<(&str, u32)> = command
        .weights
        .iter()
        .map(|(v, w)| (v.as_str(), *w))
        .collect();
    control
        .set_weights_manually(&command.service, &pairs, now_ms)
        .map_err(|e| e.to_string())?;
    let dataplane = control.dataplane();
    let (Some(weights), Some(config_weights)) = (
        in_force(dataplane, &command.service),
        config_weights(dataplane, &command.service),
    ) else {
        return Err(format!("no service {:?} in this config", command.service));
    };
    Ok(FleetWeights {
        format: WEIGHTS_FORMAT,
        service: command.service.clone(),
        weights,
        config_weights,
        instance: command.instance.clone(),
        at: rfc3339(now_ms),
        at_ms: now_ms,
    })
}

/// Every instance: applies `record`. `Ok(true)` when the weights changed here,
/// `Ok(false)` when they were in force already, `Err` why they do not apply here.
pub fn apply(control: &Control, record: &FleetWeights) -> Result<bool, String> {
    let dataplane = control.dataplane();
    let Some(config) = config_weights(dataplane, &record.service) else {
        return Err(format!("no service {:?} in this config", record.service));
    };
    if config != record.config_weights {
        return Err(format!(
            "set where the config gave {:?} {:?}, and this config gives {config:?}: the \
             config's weights hold until weights are set again",
            record.service, record.config_weights
        ));
    }
    if control.status(&record.service).is_some() {
        return Err(format!(
            "service {:?} has a rollout in this config: its state holds the weights",
            record.service
        ));
    }
    if in_force(dataplane, &record.service).as_ref() == Some(&record.weights) {
        return Ok(false);
    }
    let pairs: Vec<(&str, u32)> = record
        .weights
        .iter()
        .map(|(v, w)| (v.as_str(), *w))
        .collect();
    control
        .set_weights_manually(&record.service, &pairs, record.at_ms)
        .map(|_| true)
        .map_err(|e| e.to_string())
}

/// A weights record read from `key` (under `P/weights/`), if it is one of this serin's.
pub fn decode(under: &str, key: &[u8], value: &[u8]) -> Result<FleetWeights, String> {
    decode_record(under, key, value)
}

impl Record for FleetWeights {
    const KEY: &'static str = "weights";
    const WHAT: &'static str = "weights record";
    const FORMAT: u32 = WEIGHTS_FORMAT;
    fn format(&self) -> u32 {
        self.format
    }
    fn check_name(&self, name: &str) -> Result<(), String> {
        names_service(&self.service, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_serins_weights_under_their_own_key_are_read() {
        let record = r#"{"format":1,"service":"web","weights":{"v1":60,"v2":40},"config_weights":{"v1":100,"v2":0},"instance":"web-2","at":"2026-11-22T04:44:56.090Z","at_ms":1795322696090}"#;
        let under = "/p/weights/";
        match decode(under, b"/p/weights/web", record.as_bytes()) {
            Ok(read) => assert_eq!(read.weights.get("v2"), Some(&40)),
            Err(why) => panic!("{why}"),
        }
        let err = decode(under, b"/p/weights/api", record.as_bytes()).expect_err("another key");
        assert!(err.contains("names service \"web\""), "{err}");
        let err = decode(under, b"/p/weights/web", b"[]").expect_err("not a record");
        assert!(err.starts_with("not a weights record"), "{err}");
        let newer = record.replace("\"format\":1", "\"format\":9");
        let err = decode(under, b"/p/weights/web", newer.as_bytes()).expect_err("newer");
        assert!(err.contains("newer than this serin's"), "{err}");
    }
}
