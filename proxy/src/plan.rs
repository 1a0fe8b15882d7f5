//! Stages 3–4 as decisions made before anything is sent: which version of the routed
//! service serves a request (force header, sticky cohort or weights), where the share
//! of a version that cannot serve goes (failover), and whether a failed request may be
//! retried on the baseline. Synchronous and free of I/O: the rules are plain functions
//! of what they read, unit-tested as such; [`plan`] puts them together for a request.
//!
//! Executing the plan (the attempts, failover of a refused connection, the baseline
//! retry) is `crate::execute`'s; answering, `crate::respond`'s.

use std::sync::atomic::Ordering;

use http::{HeaderMap, Method};

use crate::split::SplitTable;
use crate::table::{Retry, ServiceRuntime};
use crate::weights::View;

/// What a request will be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The routed service (an index in the table's services).
    pub service: usize,
    /// The version chosen, after failing over a version with no endpoint in rotation.
    pub version: usize,
    /// The force header named the version: it is asked for on purpose, and never
    /// fails over.
    pub forced: bool,
    /// The success rules the request matches (bit i: rule i).
    pub success_rules: u8,
}

/// The plan for a request of service `service` of `view`: the version the selector and
/// the weights pick; if none of its endpoints is in rotation and it was not forced, the
/// version its share fails over to (counted as a failover).
#[inline]
pub fn plan(view: &View, service: usize, method: &Method, path: &str, headers: &HeaderMap) -> Plan {
    let (runtime, split) = view.service(service);
    let forced = runtime.selector.forced(headers);
    let mut version = forced.unwrap_or_else(|| runtime.selector.unforced(split, headers));
    if forced.is_none() && !runtime.versions[version].available() {
        // Every endpoint of the chosen version is down or ejected: its share goes to
        // the baseline (or to a version that can serve).
        if let Some(other) = fail_over(runtime, split, version) {
            version = other;
        }
    }
    Plan {
        service,
        version,
        forced: forced.is_some(),
        success_rules: runtime.success_mask(method, path),
    }
}

/// Where the requests of `unavailable` go instead (see [`failover_choice`]), with the
/// service's versions' rotation and weights now.
pub fn failover_for(
    service: &ServiceRuntime,
    split: &SplitTable,
    unavailable: usize,
) -> Option<usize> {
    failover_choice(
        service.baseline,
        unavailable,
        service.versions.len(),
        |i| service.versions[i].available(),
        |i| split.weight_of(i),
    )
}

/// [`failover_for`], counting the failover against `unavailable`.
pub fn fail_over(
    service: &ServiceRuntime,
    split: &SplitTable,
    unavailable: usize,
) -> Option<usize> {
    let other = failover_for(service, split, unavailable)?;
    service.versions[unavailable]
        .failovers
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(service = %service.name, from = %service.versions[unavailable].name, to = %service.versions[other].name, "failing over");
    Some(other)
}

/// Where the requests of version `unavailable` (no endpoint in rotation, or a refused
/// connection) go, among `versions` versions: the rollout's `baseline` if it can serve;
/// else the first other version with weight that can; else any other that can; `None`
/// when no other version can.
pub fn failover_choice(
    baseline: Option<usize>,
    unavailable: usize,
    versions: usize,
    available: impl Fn(usize) -> bool,
    weight: impl Fn(usize) -> u32,
) -> Option<usize> {
    if let Some(b) = baseline.filter(|b| *b != unavailable && *b < versions) {
        if available(b) {
            return Some(b);
        }
    }
    let others = || (0..versions).filter(|i| *i != unavailable && available(*i));
    others()
        .find(|i| weight(*i) > 0)
        .or_else(|| others().next())
}

/// The baseline a failed request to `version` is retried on, with `retry_on_baseline`
/// (`retry`): only a request to the canary, idempotent (GET, HEAD, OPTIONS), without a
/// body and not asking for an upgrade, as it is sent a second time.
pub fn retry_on_baseline(
    retry: Option<Retry>,
    version: usize,
    method: &Method,
    without_body: bool,
    upgrade: bool,
) -> Option<usize> {
    retry
        .filter(|r| {
            r.canary == version
                && matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
                && without_body
                && !upgrade
        })
        .map(|r| r.baseline)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderValue;

    use super::*;
    use crate::rotation::Monotonic;
    use crate::table::Table;

    #[test]
    fn a_version_that_cannot_serve_fails_over_to_the_baseline_first() {
        let all = |_| true;
        let weights = |i| [80, 20, 0][i];
        assert_eq!(failover_choice(Some(0), 1, 3, all, weights), Some(0));
        // The baseline itself: the first other version with weight.
        assert_eq!(failover_choice(Some(0), 0, 3, all, weights), Some(1));
        // The baseline cannot serve either: another version with weight.
        assert_eq!(
            failover_choice(Some(0), 1, 3, |i| i != 0, |i| [80, 0, 20][i]),
            Some(2)
        );
    }

    #[test]
    fn without_a_rollout_a_version_with_weight_is_preferred_then_any() {
        let all = |_| true;
        assert_eq!(
            failover_choice(None, 0, 3, all, |i| [50, 0, 50][i]),
            Some(2)
        );
        assert_eq!(
            failover_choice(None, 0, 3, all, |i| [100, 0, 0][i]),
            Some(1)
        );
        assert_eq!(
            failover_choice(None, 1, 3, |i| i == 2, |i| [50, 50, 0][i]),
            Some(2)
        );
    }

    #[test]
    fn no_other_version_that_can_serve_means_no_failover() {
        assert_eq!(failover_choice(Some(0), 1, 2, |i| i == 1, |_| 50), None);
        assert_eq!(failover_choice(None, 0, 1, |_| true, |_| 100), None);
        // A baseline index past the versions (never from a valid config) is ignored.
        assert_eq!(failover_choice(Some(7), 0, 2, |_| true, |_| 1), Some(1));
    }

    #[test]
    fn only_an_idempotent_bodiless_canary_request_is_retried_on_the_baseline() {
        let retry = Some(Retry {
            canary: 1,
            baseline: 0,
        });
        assert_eq!(
            retry_on_baseline(retry, 1, &Method::GET, true, false),
            Some(0)
        );
        assert_eq!(
            retry_on_baseline(retry, 1, &Method::HEAD, true, false),
            Some(0)
        );
        assert_eq!(
            retry_on_baseline(retry, 1, &Method::OPTIONS, true, false),
            Some(0)
        );
        assert_eq!(
            retry_on_baseline(retry, 0, &Method::GET, true, false),
            None,
            "the baseline"
        );
        assert_eq!(
            retry_on_baseline(retry, 1, &Method::POST, true, false),
            None
        );
        assert_eq!(
            retry_on_baseline(retry, 1, &Method::GET, false, false),
            None,
            "a body"
        );
        assert_eq!(
            retry_on_baseline(retry, 1, &Method::GET, true, true),
            None,
            "an upgrade"
        );
        assert_eq!(retry_on_baseline(None, 1, &Method::GET, true, false), None);
    }

    const CONFIG: &str = r#"
listeners: [{ name: web, listen: 127.0.0.1:0 }]
routes: [{ listener: web, service: api }]
services:
  - name: api
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002], eject: { consecutive_failures: 1, for: 1h } }
    split: { weights: { stable: 0, canary: 100 }, force: { header: x-version } }
    rollout:
      baseline: stable
      canary: canary
      steps: [{ weight: 100 }]
      analysis: { rules: [{ success: { path_prefix: /pay, method: POST, min: 97% } }] }
"#;

    fn view() -> View {
        let snapshot =
            serin_config::parse_str(CONFIG, "plan-test").unwrap_or_else(|e| panic!("{e}"));
        let table = Table::build(Arc::new(snapshot), None, 1).unwrap_or_else(|e| panic!("{e}"));
        View::new(Arc::new(table), |_| None)
    }

    #[test]
    fn a_request_goes_where_the_weights_say_until_the_version_cannot_serve() {
        let view = view();
        let get = |headers: &HeaderMap| plan(&view, 0, &Method::GET, "/", headers);
        let none = HeaderMap::new();
        assert_eq!(
            get(&none),
            Plan {
                service: 0,
                version: 1,
                forced: false,
                success_rules: 0
            }
        );
        assert_eq!(
            plan(&view, 0, &Method::POST, "/pay/now", &none).success_rules,
            1
        );

        // The canary's one endpoint is ejected: its share goes to the baseline, counted.
        let canary = &view.table.services[0].versions[1];
        canary.endpoints()[0].rotation.observe(true, &Monotonic);
        assert_eq!(get(&none).version, 0);
        assert_eq!(canary.failovers.load(Ordering::Relaxed), 1);

        // A version asked for by name is asked for on purpose: no failover.
        let mut forced = HeaderMap::new();
        forced.insert("x-version", HeaderValue::from_static("canary"));
        let p = get(&forced);
        assert_eq!((p.version, p.forced), (1, true));
        assert_eq!(canary.failovers.load(Ordering::Relaxed), 1);
    }
}
