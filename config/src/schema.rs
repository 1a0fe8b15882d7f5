//! The raw, documented YAML format as serde types (see docs/config.md).
//!
//! Every struct denies unknown fields: a typo is an error, never a silent default.
//! Addresses, durations and weights stay loosely typed here so that [`crate::validate`]
//! can report every bad value with its path, not just the first one serde meets.

use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with the keys `listeners`, `routes` and `services` (and optionally `admin`)"
)]
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
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ listen: 127.0.0.1:9901 }`"
)]
pub struct RawAdmin {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener such as `{ name: web, listen: 127.0.0.1:8080 }`"
)]
pub struct RawListener {
    pub name: String,
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route such as `{ listener: web, match: { path_prefix: / }, service: api }`"
)]
pub struct RawRoute {
    pub listener: String,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub service: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ host: \"*\", path_prefix: / }`"
)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a service, a mapping with `name`, `versions` and optionally `split` and `timeouts`"
)]
pub struct RawService {
    pub name: String,
    pub versions: Vec<RawVersion>,
    pub split: Option<RawSplit>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a version such as `{ name: stable, endpoints: [127.0.0.1:9001] }`"
)]
pub struct RawVersion {
    pub name: String,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ weights: { stable: 90, canary: 10 } }`"
)]
pub struct RawSplit {
    /// Version name → weight, in the order written. Kept as a list of pairs so that a
    /// duplicate key or a negative weight is reported by validation with its path.
    #[serde(deserialize_with = "weight_pairs")]
    pub weights: Vec<(String, serde_yaml_ng::Value)>,
    pub sticky: Option<RawSticky>,
    pub force: Option<RawForce>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "`{ header: NAME }` or `{ cookie: NAME }`"
)]
pub struct RawSticky {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ header: x-serin-version }`"
)]
pub struct RawForce {
    pub header: String,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping such as `{ connect: 1s, request: 15s }`"
)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub request: Option<String>,
}

/// A mapping read as its list of pairs, in the order written, duplicates kept.
fn weight_pairs<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Vec<(String, serde_yaml_ng::Value)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, serde_yaml_ng::Value)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of version name to weight, e.g. `{ stable: 90, canary: 10 }`")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(2));
            while let Some(pair) = map.next_entry()? {
                pairs.push(pair);
            }
            Ok(pairs)
        }
    }
    de.deserialize_map(Pairs)
}
