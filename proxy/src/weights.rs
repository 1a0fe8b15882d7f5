//! The weights layer: every service's weights in force and the split table built from
//! them, published with the compiled [`Table`] as one [`View`] — what a request loads
//! once and uses from start to end (routes and weights agree).
//!
//! A weight change builds the new split table of one service and publishes a new
//! [`View`] that shares everything else: the table whole (listeners with their TLS
//! acceptors and session caches, routes, services, pools, stats) and the other
//! services' split tables. Once its weights are validated it cannot fail:
//!
//! - weights a person gives (the admin API) are checked by [`View::validate`] (unknown
//!   service or version, all zero), which returns [`ServiceWeights`]: the service's
//!   whole set of weights, ready to publish;
//! - a rollout's weights go through [`RolloutWeights`], resolved with the table that
//!   carries the rollout ([`View::rollout`]): its canary gets a weight, its baseline
//!   the rest of 100.
//!
//! Both name their service by [`ServiceId`], which a reload carries over while the
//! service keeps its name and versions. A handle that outlives a reload that removed
//! its service or changed its versions finds nothing and changes nothing: that reload
//! decided the service's weights. Writers (weight changes and reloads) are serialised
//! by the data plane; readers never wait.
//!
//! A table starts with its config's weights. The weights the control loop and people
//! set are the layer above them: they last until the next reload, which publishes the
//! new table with the weights of the rollouts it keeps in the same [`View`], so no
//! request sees the config file's weights in between.

use std::sync::Arc;

use serin_config::{Rollout, Snapshot};

use crate::fault::{Drill, Fault};
use crate::split::SplitTable;
use crate::table::{ServiceId, ServiceRuntime, Table};

/// The compiled table and the weights in force: one consistent view of the config.
#[derive(Debug)]
pub struct View {
    pub table: Arc<Table>,
    /// One per service of `table`, in the same order.
    splits: Box<[Arc<Split>]>,
}

/// One service's weights (in declared order) and the split table built from them, and
/// the rollback drill running on it, if one is (`crate::fault`).
#[derive(Debug)]
struct Split {
    weights: Box<[u32]>,
    table: SplitTable,
    drill: Option<Arc<Drill>>,
    /// During a rollout's shadow step, the share of the baseline's requests copied to
    /// the canary, in hundredths of a percent (`crate::shadow`); 0 otherwise.
    shadow: u32,
}

impl Split {
    fn new(service: &str, weights: Box<[u32]>, shadow: u32, drill: Option<Arc<Drill>>) -> Self {
        let table = SplitTable::new(service, &weights);
        Self {
            weights,
            table,
            shadow,
            drill,
        }
    }
}

/// A service's whole set of weights, checked against the view it was given for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceWeights {
    service: ServiceId,
    weights: Box<[u32]>,
}

impl ServiceWeights {
    /// Each version's weight, in declared order.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }
}

/// The weights of one rollout: its service, baseline and canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutWeights {
    service: ServiceId,
    baseline: usize,
    canary: usize,
}

/// Why weights given by a person cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightsError {
    #[error("service \"{0}\" is not defined")]
    UnknownService(String),
    #[error("service \"{service}\" has no version \"{version}\"")]
    UnknownVersion { service: String, version: String },
    #[error(
        "weights of service \"{0}\" would all be zero; at least one version must receive traffic"
    )]
    AllZero(String),
}

impl View {
    /// `table` with its config's weights, except that the rollout of service `i` gives
    /// its canary `canary_weight_of(i)` (and its baseline the rest), where that is some.
    pub(crate) fn new(table: Arc<Table>, canary_weight_of: impl Fn(usize) -> Option<u32>) -> Self {
        let splits = table
            .snapshot
            .services
            .iter()
            .enumerate()
            .map(|(i, service)| {
                let mut weights: Box<[u32]> = service.versions.iter().map(|v| v.weight).collect();
                if let (Some(rollout), Some(w)) = (&service.rollout, canary_weight_of(i)) {
                    set_canary(&mut weights, rollout.baseline, rollout.canary, w);
                }
                // A new table (a reload) ends every drill.
                Arc::new(Split::new(&service.name, weights, 0, None))
            })
            .collect();
        Self { table, splits }
    }

    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.table.snapshot
    }

    /// The split table of service `i` (an index in `table.services`).
    #[inline]
    pub fn split(&self, service: usize) -> &SplitTable {
        &self.splits[service].table
    }

    /// The share of service `i`'s baseline requests copied to its canary now, in
    /// hundredths of a percent: 0 unless its rollout is at a shadow step.
    #[inline]
    pub fn shadow_share(&self, service: usize) -> u32 {
        self.splits.get(service).map_or(0, |s| s.shadow)
    }

    /// The weights in force of service `i`'s versions, in declared order.
    pub fn weights(&self, service: usize) -> &[u32] {
        self.splits.get(service).map_or(&[], |s| &s.weights)
    }

    /// The weights in force of the service `name`, by version name.
    pub fn weights_of(&self, name: &str) -> Option<impl Iterator<Item = (&str, u32)>> {
        let i = self.table.services.iter().position(|s| &*s.name == name)?;
        let service = &self.table.services[i];
        Some(
            service
                .versions
                .iter()
                .map(|v| &*v.name)
                .zip(self.weights(i).iter().copied()),
        )
    }

    /// Service `i`'s rollout and the handle its weight changes go through, if it has one.
    pub fn rollout(&self, service: usize) -> Option<(&Rollout, RolloutWeights)> {
        let spec = self
            .table
            .snapshot
            .services
            .get(service)?
            .rollout
            .as_ref()?;
        let runtime = self.table.services.get(service)?;
        Some((
            spec,
            RolloutWeights {
                service: runtime.id,
                baseline: spec.baseline,
                canary: spec.canary,
            },
        ))
    }

    /// Checks weights a person gives for `service` (`(version, weight)` pairs; the
    /// versions not named keep the weights in force now) and returns the service's
    /// whole set of weights.
    pub fn validate(
        &self,
        service: &str,
        given: &[(&str, u32)],
    ) -> Result<ServiceWeights, WeightsError> {
        let i = self
            .table
            .services
            .iter()
            .position(|s| &*s.name == service)
            .ok_or_else(|| WeightsError::UnknownService(service.to_string()))?;
        let runtime = &self.table.services[i];
        let mut weights: Box<[u32]> = self.weights(i).into();
        for (name, weight) in given {
            let v = runtime
                .versions
                .iter()
                .position(|v| &*v.name == *name)
                .ok_or_else(|| WeightsError::UnknownVersion {
                    service: service.to_string(),
                    version: name.to_string(),
                })?;
            weights[v] = *weight;
        }
        if weights.iter().all(|w| *w == 0) {
            return Err(WeightsError::AllZero(service.to_string()));
        }
        Ok(ServiceWeights {
            service: runtime.id,
            weights,
        })
    }

    fn position(&self, id: ServiceId) -> Option<usize> {
        self.table.services.iter().position(|s| s.id == id)
    }

    /// This view with `weights`, or `None` if its service is no longer in the table.
    pub(crate) fn with_weights(&self, weights: &ServiceWeights) -> Option<View> {
        let i = self.position(weights.service)?;
        let shadow = self.shadow_share(i);
        Some(self.with_split(i, weights.weights.clone(), shadow))
    }

    /// This view with the rollout's canary at `canary_weight` (at most 100) and its
    /// baseline at the rest; the service's other versions keep theirs. `None` if the
    /// rollout's service is no longer in the table.
    pub(crate) fn with_canary_weight(
        &self,
        rollout: &RolloutWeights,
        canary_weight: u32,
    ) -> Option<View> {
        let i = self.position(rollout.service)?;
        self.with_rollout_weights(rollout, canary_weight, self.shadow_share(i))
    }

    /// [`Self::with_canary_weight`], with the share of the baseline's requests copied
    /// to the canary (`shadow`, hundredths of a percent; 0: none).
    pub(crate) fn with_rollout_weights(
        &self,
        rollout: &RolloutWeights,
        canary_weight: u32,
        shadow: u32,
    ) -> Option<View> {
        let i = self.position(rollout.service)?;
        let mut weights: Box<[u32]> = self.weights(i).into();
        set_canary(
            &mut weights,
            rollout.baseline,
            rollout.canary,
            canary_weight,
        );
        Some(self.with_split(i, weights, shadow.min(10_000)))
    }

    /// The rollback drill running on service `i`, if one is: one check per request.
    #[inline]
    pub fn drill(&self, service: usize) -> Option<&Drill> {
        self.splits.get(service)?.drill.as_deref()
    }

    /// This view with a drill injecting `fault` into the rollout's canary until
    /// `until` (replacing any drill of the service), and the drill; `None` if the
    /// rollout's service is no longer in the table.
    pub(crate) fn with_drill(
        &self,
        rollout: &RolloutWeights,
        fault: Fault,
        until: std::time::Instant,
    ) -> Option<(View, Arc<Drill>)> {
        let i = self.position(rollout.service)?;
        let drill = Arc::new(Drill::new(fault, until, rollout.canary));
        let view = self.with_split_and_drill(
            i,
            self.weights(i).into(),
            self.shadow_share(i),
            Some(drill.clone()),
        );
        Some((view, drill))
    }

    /// This view without the drill of the rollout's service; `None` if there is none.
    pub(crate) fn without_drill(&self, rollout: &RolloutWeights) -> Option<View> {
        let i = self.position(rollout.service)?;
        self.drill(i)?;
        Some(self.with_split_and_drill(i, self.weights(i).into(), self.shadow_share(i), None))
    }

    /// This view with service `i`'s weights and shadow share replaced (its drill
    /// kept); everything else is shared.
    fn with_split(&self, i: usize, weights: Box<[u32]>, shadow: u32) -> View {
        let drill = self.splits.get(i).and_then(|s| s.drill.clone());
        self.with_split_and_drill(i, weights, shadow, drill)
    }

    fn with_split_and_drill(
        &self,
        i: usize,
        weights: Box<[u32]>,
        shadow: u32,
        drill: Option<Arc<Drill>>,
    ) -> View {
        let name = self.table.services.get(i).map_or("", |s| &*s.name);
        let mut splits = self.splits.clone();
        if let Some(slot) = splits.get_mut(i) {
            *slot = Arc::new(Split::new(name, weights, shadow, drill));
        }
        View {
            table: self.table.clone(),
            splits,
        }
    }

    /// The service at `i` with its split table.
    #[inline]
    pub fn service(&self, i: usize) -> (&ServiceRuntime, &SplitTable) {
        (&self.table.services[i], self.split(i))
    }
}

/// Gives the canary `canary_weight` (at most 100) and the baseline the rest.
fn set_canary(weights: &mut [u32], baseline: usize, canary: usize, canary_weight: u32) {
    let w = canary_weight.min(100);
    if let Some(b) = weights.get_mut(baseline) {
        *b = 100 - w;
    }
    if let Some(c) = weights.get_mut(canary) {
        *c = w;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
listeners: [{ name: web, listen: 127.0.0.1:0 }]
routes: [{ listener: web, service: api }, { listener: web, match: { path_prefix: /web }, service: web }]
services:
  - name: api
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002] }
      - { name: shadow, endpoints: [127.0.0.1:9003] }
    split: { weights: { stable: 70, canary: 20, shadow: 10 } }
    rollout:
      baseline: stable
      canary: canary
      steps: [{ weight: 10 }, { weight: 100 }]
      analysis: { rules: [{ error_rate: { max: 1% } }] }
  - name: web
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
"#;

    fn table(yaml: &str, previous: Option<&Table>) -> Arc<Table> {
        let snapshot =
            serin_config::parse_str(yaml, "weights-test").unwrap_or_else(|e| panic!("{e}"));
        Arc::new(Table::build(Arc::new(snapshot), previous, 1).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_table_starts_with_its_config_weights_except_where_a_rollout_gives_them() {
        let t = table(CONFIG, None);
        let view = View::new(t.clone(), |_| None);
        assert_eq!(view.weights(0), &[70, 20, 10]);
        let view = View::new(t, |i| (i == 0).then_some(30));
        assert_eq!(
            view.weights(0),
            &[70, 30, 10],
            "baseline 100 - 30, shadow kept"
        );
        assert_eq!(view.weights(1), &[100], "one version: all of it");
    }

    #[test]
    fn a_rollout_step_changes_its_service_alone_and_shares_everything_else() {
        let view = View::new(table(CONFIG, None), |_| None);
        let (_, handle) = view.rollout(0).expect("api has a rollout");
        assert!(view.rollout(1).is_none());
        let next = view.with_canary_weight(&handle, 25).expect("same table");
        assert_eq!(next.weights(0), &[75, 25, 10]);
        assert!(Arc::ptr_eq(&next.table, &view.table));
        assert!(Arc::ptr_eq(&next.splits[1], &view.splits[1]));
        // Over 100 is 100.
        let all = next.with_canary_weight(&handle, 250).expect("same table");
        assert_eq!(all.weights(0), &[0, 100, 10]);
        // The split follows the weights.
        let counts = (0..10_000).fold([0usize; 3], |mut c, _| {
            c[all.split(0).pick_weighted()] += 1;
            c
        });
        assert_eq!(counts[0], 0);
    }

    #[test]
    fn a_shadow_share_is_published_with_the_rollout_weights_and_kept_by_other_changes() {
        let view = View::new(table(CONFIG, None), |_| None);
        assert_eq!(view.shadow_share(0), 0, "a table starts with no copies");
        let (_, handle) = view.rollout(0).expect("api has a rollout");
        let shadow = view
            .with_rollout_weights(&handle, 0, 10_000)
            .expect("same table");
        assert_eq!(
            (shadow.weights(0), shadow.shadow_share(0)),
            (&[100, 0, 10][..], 10_000)
        );
        assert_eq!(shadow.shadow_share(1), 0, "other services copy nothing");
        // A person's weights and a plain canary weight keep the share in force.
        let valid = shadow.validate("api", &[("shadow", 5)]).expect("valid");
        assert_eq!(
            shadow.with_weights(&valid).map(|v| v.shadow_share(0)),
            Some(10_000)
        );
        let same = shadow.with_canary_weight(&handle, 0).expect("same table");
        assert_eq!(same.shadow_share(0), 10_000);
        // The rollout's next weights end it.
        let step = shadow
            .with_rollout_weights(&handle, 5, 0)
            .expect("same table");
        assert_eq!(
            (step.weights(0), step.shadow_share(0)),
            (&[95, 5, 10][..], 0)
        );
    }

    #[test]
    fn validation_names_what_is_wrong_and_keeps_the_unnamed_versions_weights() {
        let view = View::new(table(CONFIG, None), |_| None);
        assert_eq!(
            view.validate("nope", &[("stable", 1)]),
            Err(WeightsError::UnknownService("nope".into()))
        );
        assert_eq!(
            view.validate("api", &[("stable", 1), ("blue", 1)]),
            Err(WeightsError::UnknownVersion {
                service: "api".into(),
                version: "blue".into()
            })
        );
        assert_eq!(
            view.validate("api", &[("stable", 0), ("canary", 0), ("shadow", 0)]),
            Err(WeightsError::AllZero("api".into()))
        );
        let valid = view.validate("api", &[("canary", 50)]).expect("valid");
        assert_eq!(valid.weights(), &[70, 50, 10]);
        let next = view.with_weights(&valid).expect("same table");
        assert_eq!(next.weights(0), &[70, 50, 10]);
        assert_eq!(
            next.weights_of("api").map(|w| w.collect::<Vec<_>>()),
            Some(vec![("stable", 70), ("canary", 50), ("shadow", 10)])
        );
    }

    #[test]
    fn handles_outlive_a_reload_that_keeps_the_versions_and_no_other() {
        let before = table(CONFIG, None);
        let view = View::new(before.clone(), |_| None);
        let (_, handle) = view.rollout(0).expect("rollout");
        let valid = view.validate("api", &[("canary", 5)]).expect("valid");

        // Same versions, another endpoint: the handles still fit.
        let moved = CONFIG.replace("127.0.0.1:9002", "127.0.0.1:9012");
        let reloaded = View::new(table(&moved, Some(&before)), |_| None);
        assert_eq!(
            reloaded
                .with_canary_weight(&handle, 40)
                .map(|v| v.weights(0).to_vec()),
            Some(vec![60, 40, 10])
        );
        assert!(reloaded.with_weights(&valid).is_some());

        // The versions changed: the handles find nothing, and change nothing.
        let renamed = CONFIG
            .replace("name: shadow", "name: mirror")
            .replace("shadow: 10", "mirror: 10");
        let reloaded = View::new(table(&renamed, Some(&before)), |_| None);
        assert!(reloaded.with_canary_weight(&handle, 40).is_none());
        assert!(reloaded.with_weights(&valid).is_none());
    }

    #[test]
    fn a_drill_outlives_weight_changes_and_no_reload() {
        let before = table(CONFIG, None);
        let view = View::new(before.clone(), |_| None);
        let (_, handle) = view.rollout(0).expect("rollout");
        assert!(view.drill(0).is_none());
        let fault = Fault {
            errors: 1_000,
            latency: std::time::Duration::ZERO,
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (drilled, drill) = view.with_drill(&handle, fault, until).expect("same table");
        assert!(drilled.drill(1).is_none(), "the other service");
        assert_eq!(drilled.weights(0), view.weights(0));
        let stepped = drilled.with_canary_weight(&handle, 0).expect("same table");
        assert!(stepped
            .drill(0)
            .is_some_and(|d| std::ptr::eq(d, Arc::as_ptr(&drill))));
        assert!(stepped
            .without_drill(&handle)
            .is_some_and(|v| v.drill(0).is_none()));
        let reloaded = View::new(table(CONFIG, Some(&before)), |_| None);
        assert!(reloaded.drill(0).is_none());
    }
}
