//! Weights set by hand on a service with a rollout, in fleet mode: the fleet's rollout
//! state carries the canary's weight only, and every instance gives the baseline 100
//! minus it and the other versions their own (docs/fleet.md, "Three or more
//! versions"). [`rollout_weights`] turns what a person asked for into the set every
//! instance will show, or says why no such set exists. Pure.

use std::collections::BTreeMap;

/// The weights of `asked` (version, weight) completed for a rollout of `baseline` and
/// `canary` in a fleet: the baseline takes 100 minus the canary's weight (either may
/// be named), and the other versions keep the weights in force (`in_force`). `Err`
/// says why the set cannot be the same on every instance, and what to give instead.
pub fn rollout_weights(
    asked: &[(&str, u32)],
    in_force: &BTreeMap<String, u32>,
    baseline: &str,
    canary: &str,
) -> Result<Vec<(String, u32)>, String> {
    let named = |version: &str| asked.iter().find(|(v, _)| *v == version).map(|(_, w)| *w);
    let others: Vec<String> = asked
        .iter()
        .filter(|(v, w)| *v != baseline && *v != canary && in_force.get(*v) != Some(w))
        .map(|(v, w)| format!("{v}={w}"))
        .collect();
    if !others.is_empty() {
        return Err(format!(
            "fleet mode: the rollout's state carries only the weights of {baseline:?} and \
             {canary:?}, so {} would be this instance's alone; set the other versions' \
             weights in the config (and reload every instance)",
            others.join(" ")
        ));
    }
    let (canary_weight, baseline_weight) = match (named(canary), named(baseline)) {
        (Some(c), Some(b)) if c + b == 100 => (c, b),
        (Some(c), Some(b)) => {
            return Err(format!(
                "fleet mode: every instance gives the rollout's baseline 100 minus the \
                 canary's weight, so {baseline}={b} {canary}={c} cannot be the same \
                 everywhere; give weights that add up to 100 (e.g. {baseline}={} \
                 {canary}={c}), or the canary's alone",
                100u32.saturating_sub(c)
            ))
        }
        (Some(c), None) => (c, 100u32.saturating_sub(c)),
        (None, Some(b)) => (100u32.saturating_sub(b), b),
        (None, None) => {
            return Err(format!(
                "fleet mode: name {canary:?} or {baseline:?}: the rollout's weights are \
                 theirs (e.g. {baseline}=80 {canary}=20)"
            ))
        }
    };
    Ok(vec![
        (baseline.to_string(), baseline_weight),
        (canary.to_string(), canary_weight),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_force() -> BTreeMap<String, u32> {
        [("stable", 50), ("canary", 40), ("shadow", 10)]
            .into_iter()
            .map(|(v, w)| (v.to_string(), w))
            .collect()
    }

    fn asked(pairs: &[(&'static str, u32)]) -> Result<Vec<(String, u32)>, String> {
        rollout_weights(pairs, &in_force(), "stable", "canary")
    }

    fn set(pairs: &[(&str, u32)]) -> Result<Vec<(String, u32)>, String> {
        Ok(pairs.iter().map(|(v, w)| (v.to_string(), *w)).collect())
    }

    #[test]
    fn the_baseline_takes_what_the_canary_leaves_as_on_every_instance() {
        assert_eq!(
            asked(&[("canary", 20)]),
            set(&[("stable", 80), ("canary", 20)])
        );
        assert_eq!(
            asked(&[("stable", 70)]),
            set(&[("stable", 70), ("canary", 30)])
        );
        assert_eq!(
            asked(&[("stable", 100), ("canary", 0)]),
            set(&[("stable", 100), ("canary", 0)])
        );
        // Another version named at the weight it has is no change.
        assert_eq!(
            asked(&[("canary", 5), ("shadow", 10)]),
            set(&[("stable", 95), ("canary", 5)])
        );
    }

    #[test]
    fn a_set_the_followers_cannot_show_is_refused_with_what_to_give() {
        let err = asked(&[("stable", 50), ("canary", 20)]).expect_err("does not add up");
        assert!(err.contains("e.g. stable=80 canary=20"), "{err}");
        let err = asked(&[("canary", 20), ("shadow", 30)]).expect_err("a third version");
        assert!(
            err.contains("shadow=30 would be this instance's alone"),
            "{err}"
        );
        let err = asked(&[("shadow", 10)]).expect_err("neither");
        assert!(err.contains("name \"canary\" or \"stable\""), "{err}");
    }
}
