//! The raw, documented YAML format as serde types (see docs/config.md).
//!
//! Every struct denies unknown fields: a typo is an error, never a silent default.
//! Addresses, durations and weights stay loosely typed here so that [`crate::validate`]
//! can report every bad value with its path, not just the first one serde meets.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub listener: String,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub service: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub versions: Vec<RawVersion>,
    pub split: Option<RawSplit>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    pub name: String,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    /// Version name → weight, in the order written. Kept as a list of pairs so that a
    /// duplicate key or a negative weight is reported by validation with its path.
    pub weights: serde_yaml_ng::Mapping,
    pub sticky: Option<RawSticky>,
    pub force: Option<RawForce>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForce {
    pub header: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub request: Option<String>,
}
