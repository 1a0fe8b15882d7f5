//! Shadow steps and what goes with them: a step's `shadow` share, the rollout's
//! `shadow:` block (which requests are copied to the canary, how many copies may be in
//! flight, how answers are compared), and the `mismatch` rule, valid only in a rollout
//! with a shadow step. Errors carry their path, as everywhere in validation.

use serin_judge::spec::{Shadow, DEFAULT_SHADOW_MAX_BODY, DEFAULT_SHADOW_MAX_IN_FLIGHT};

use super::{
    byte_size, count, header_name, percent, token_ok, Errors, PercentRange, ERROR_RATE_MAX,
};
use crate::error::Quoted;
use crate::schema::{RawMismatch, RawRollout, RawRuleKind};
use crate::snapshot::Rule;

/// The largest `max_body`: it bounds what a copy's and a client's answer are hashed
/// over, and a copied request body is held in memory anyway.
pub(crate) const MAX_SHADOW_MAX_BODY: u64 = 16 * 1024 * 1024;
/// The largest `max_in_flight` per worker.
pub(crate) const MAX_SHADOW_IN_FLIGHT: u64 = 65_536;

/// A step's share of copies, above 0 and at most 100 %.
const SHADOW_SHARE: PercentRange = PercentRange {
    high_inclusive: true,
    example: "100%",
    fraction: "1",
    ..ERROR_RATE_MAX
};

/// The `shadow` share of the step at `spath`, in hundredths of a percent; a shadow step
/// after a weight step (`first_weight_step`) is an error.
pub(super) fn step(
    share: &serde_yaml_ng::Value,
    spath: &str,
    first_weight_step: Option<usize>,
    errs: &mut Errors,
) -> Option<u32> {
    let path = format!("{spath}.shadow");
    if let Some(j) = first_weight_step {
        errs.push(
            &path,
            format!(
                "a shadow step must come before every weight step, but steps[{j}] is a weight \
                 step: the canary is judged on copies while it serves no user, then serves \
                 users from the first weight step on; move this step before steps[{j}]"
            ),
        );
    }
    let fraction = percent(share, &path, SHADOW_SHARE, errs)?;
    let hundredths = (fraction * 10_000.0).round() as u32;
    if hundredths == 0 {
        errs.push(
            &path,
            "the share is below 0.01%: give at least 0.01% (e.g. 100%)",
        );
        return None;
    }
    (first_weight_step.is_none()).then_some(hundredths.min(10_000))
}

/// A rollout whose steps are all shadow steps is refused: once they passed, the
/// canary would be promoted to 100 % having served no user.
pub(super) fn weight_step_follows(raw: &RawRollout, path: &str, errs: &mut Errors) {
    let any_shadow = raw.steps.iter().any(|s| s.shadow.is_some());
    if any_shadow && raw.steps.iter().all(|s| s.weight.is_none()) {
        errs.push(
            format!("{path}.steps"),
            "every step is a shadow step, so once they pass the canary would be promoted \
             straight to 100% having served no user: add at least one weight step after them \
             (e.g. `- { weight: 5, hold: 30s }` then `- { weight: 100 }`)",
        );
    }
}

/// `mismatch: { max: 1% }`.
pub(super) fn mismatch(raw: &RawMismatch, path: &str, errs: &mut Errors) -> Option<Rule> {
    let max = percent(&raw.max, &format!("{path}.max"), ERROR_RATE_MAX, errs)?;
    Some(Rule::Mismatch { max })
}

/// The rollout's `shadow:` block with its defaults, when it has a shadow step. A
/// `shadow:` block or a `mismatch` rule without a shadow step is an error: neither
/// would ever do anything.
pub(super) fn settings(raw: &RawRollout, path: &str, errs: &mut Errors) -> Option<Shadow> {
    let has_shadow_step = raw.steps.iter().any(|s| s.shadow.is_some());
    if !has_shadow_step {
        let example = "add a step such as `- { shadow: 100%, hold: 5m }` before the weight steps";
        if raw.shadow.is_some() {
            errs.push(
                format!("{path}.shadow"),
                format!(
                    "shadow settings, but no step is a shadow step, so nothing is ever copied: \
                     {example}, or remove `shadow`"
                ),
            );
        }
        let rules = raw.analysis.iter().flat_map(|a| a.rules.iter().enumerate());
        for (i, rule) in rules {
            if rule
                .0
                .iter()
                .any(|(_, kind)| matches!(kind, RawRuleKind::Mismatch(_)))
            {
                errs.push(
                    format!("{path}.analysis.rules[{i}].mismatch"),
                    format!(
                        "a `mismatch` rule compares the canary's answers to copied requests with \
                         the baseline's, and only a shadow step copies requests: {example}, or \
                         remove this rule"
                    ),
                );
            }
        }
        return None;
    }
    let spath = format!("{path}.shadow");
    let raw = raw.shadow.as_ref();
    let methods = match raw.and_then(|r| r.methods.as_ref()) {
        None => vec!["GET".to_string(), "HEAD".to_string()],
        Some(list) => {
            if list.is_empty() {
                errs.push(
                    format!("{spath}.methods"),
                    "no method is listed, so nothing would be copied: list at least one \
                     (e.g. `[GET, HEAD]`, the default)",
                );
            }
            let mut methods = Vec::with_capacity(list.len());
            for (i, m) in list.iter().enumerate() {
                if token_ok(m) {
                    methods.push(m.to_ascii_uppercase());
                } else {
                    errs.push(
                        format!("{spath}.methods[{i}]"),
                        format!(
                            "{m_q} is not a valid HTTP method: use only letters, digits and \
                             !#$%&'*+-.^_`|~ (e.g. GET)",
                            m_q = Quoted(m)
                        ),
                    );
                }
            }
            methods
        }
    };
    let max_body = match raw.and_then(|r| r.max_body.as_ref()) {
        None => Some(DEFAULT_SHADOW_MAX_BODY),
        Some(v) => {
            let bpath = format!("{spath}.max_body");
            byte_size(v, &bpath, errs).filter(|n| {
                let ok = *n <= MAX_SHADOW_MAX_BODY;
                if !ok {
                    errs.push(
                        &bpath,
                        format!(
                            "{n} bytes is out of range: give 0 (only bodiless requests are copied, \
                             no body compared) to 16MiB (the default is {}KiB)",
                            DEFAULT_SHADOW_MAX_BODY / 1024
                        ),
                    );
                }
                ok
            })
        }
    };
    let max_in_flight = match raw.and_then(|r| r.max_in_flight.as_ref()) {
        None => Some(DEFAULT_SHADOW_MAX_IN_FLIGHT),
        Some(v) => count(
            v,
            &format!("{spath}.max_in_flight"),
            1,
            MAX_SHADOW_IN_FLIGHT,
            errs,
        )
        .map(|n| n as u32),
    };
    let compare = raw.and_then(|r| r.compare.as_ref());
    let ignore_headers = compare
        .and_then(|c| c.ignore_headers.as_ref())
        .map(|names| {
            names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    header_name(n, &format!("{spath}.compare.ignore_headers[{i}]"), errs)
                })
                .collect()
        })
        .unwrap_or_default();
    // `ignore_headers` says which headers are not compared: giving it means the
    // others are, unless `headers: false` says otherwise (then it is refused).
    let listed = compare.is_some_and(|c| c.ignore_headers.is_some());
    let compare_headers = match compare.and_then(|c| c.headers) {
        Some(false) if listed => {
            errs.push(
                format!("{spath}.compare.ignore_headers"),
                "headers to ignore, but `headers: false` compares no header: remove \
                 `ignore_headers`, or set `headers: true` to compare the others",
            );
            false
        }
        Some(headers) => headers,
        None => listed,
    };
    Some(Shadow {
        methods,
        max_body: max_body?,
        max_in_flight: max_in_flight?,
        compare_status: compare.and_then(|c| c.status).unwrap_or(true),
        compare_body: compare.and_then(|c| c.body).unwrap_or(false),
        compare_headers,
        ignore_headers,
    })
}
