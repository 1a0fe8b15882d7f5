//! `/api/v1/services/{name}/drill`: rollback drills (docs/admin.md). `POST` starts one
//! (`{"errors": "10%", "latency": "+300ms", "for": "2m"}`), `GET` reports the running
//! drill or the last one, `DELETE` ends it early. Starting or ending one needs
//! `admin.drills: true` and the admin token, even where the rest of the API runs
//! without a token: a drill makes real clients see errors.
//!
//! [`parse_request`] checks a body as a plain function: every bad field named, with
//! its bounds.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use super::{
    error, json, submit_order, unknown_service, unsent, AdminContext, FleetOrder,
    FLEET_COMMAND_WAIT,
};
use crate::runner::{now_ms, Control, DrillRefused, DrillRequest, MAX_DRILL, MAX_DRILL_LATENCY};
use crate::wire::FleetCommandKind;

const EXAMPLE: &str =
    "send e.g. {\"errors\": \"10%\", \"latency\": \"+300ms\", \"for\": \"2m\"} (errors 0–100 %, latency up to 60s, for up to 1h)";

/// What a drill request asks for, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    #[serde(default)]
    errors: Option<serde_json::Value>,
    #[serde(default)]
    latency: Option<serde_json::Value>,
    #[serde(default, rename = "for")]
    length: Option<serde_json::Value>,
}

/// Checks a `POST …/drill` body: `errors` a share (`"10%"`, or a number of percent)
/// from 0 to 100 %, `latency` a duration (`"+300ms"`) up to 60 s, `for` a duration
/// above 0 up to 1 h; `errors` or `latency` above 0. Every problem is listed.
pub fn parse_request(body: &[u8]) -> Result<DrillRequest, String> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not JSON ({e}); {EXAMPLE}"))?;
    if !value.is_object() {
        return Err(format!("the body is not a JSON object; {EXAMPLE}"));
    }
    let raw: RawDrill = serde_json::from_value(value)
        .map_err(|e| format!("the body is not a drill request ({e}); {EXAMPLE}"))?;
    let mut problems = Vec::new();
    let errors = match &raw.errors {
        None => 0,
        Some(value) => share(value).unwrap_or_else(|why| {
            problems.push(format!("errors: {why}"));
            0
        }),
    };
    let latency = match &raw.latency {
        None => Duration::ZERO,
        Some(value) => duration(value, true)
            .and_then(|d| {
                if d > MAX_DRILL_LATENCY {
                    Err(format!(
                        "{} is longer than the most a drill adds, 60s",
                        humantime::format_duration(d)
                    ))
                } else {
                    Ok(d)
                }
            })
            .unwrap_or_else(|why| {
                problems.push(format!("latency: {why}"));
                Duration::ZERO
            }),
    };
    let length = match &raw.length {
        None => {
            problems.push("for: missing; say how long the drill runs, e.g. \"2m\"".to_string());
            Duration::ZERO
        }
        Some(value) => duration(value, false)
            .and_then(|d| {
                if d.is_zero() {
                    Err("a drill must last longer than 0s".to_string())
                } else if d > MAX_DRILL {
                    Err(format!(
                        "{} is longer than the longest drill, 1h",
                        humantime::format_duration(d)
                    ))
                } else {
                    Ok(d)
                }
            })
            .unwrap_or_else(|why| {
                problems.push(format!("for: {why}"));
                Duration::ZERO
            }),
    };
    if problems.is_empty() && errors == 0 && latency.is_zero() {
        problems.push(
            "errors and latency: both are 0, so the drill would inject nothing; give errors above 0% or latency above 0ms"
                .to_string(),
        );
    }
    if !problems.is_empty() {
        return Err(format!("{}; {EXAMPLE}", problems.join("; ")));
    }
    Ok(DrillRequest {
        errors,
        latency,
        length,
    })
}

/// A share from `"10%"`, `"2.5 %"` or a number of percent, in basis points.
fn share(value: &serde_json::Value) -> Result<u32, String> {
    let percent = match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s
            .trim()
            .strip_suffix('%')
            .unwrap_or(s.trim())
            .trim()
            .parse::<f64>()
            .ok(),
        _ => None,
    };
    match percent {
        Some(p) if p.is_finite() && (0.0..=100.0).contains(&p) => Ok((p * 100.0).round() as u32),
        Some(_) => Err(format!("{value} is not from 0% to 100%")),
        None => Err(format!("{value} is not a share; write it as \"10%\"")),
    }
}

/// A duration from `"300ms"`, `"2m"` (with `plus`, `"+300ms"` too).
fn duration(value: &serde_json::Value, plus: bool) -> Result<Duration, String> {
    let serde_json::Value::String(text) = value else {
        return Err(format!(
            "{value} is not a duration; write it as a string such as \"300ms\" or \"2m\""
        ));
    };
    let text = text.trim();
    let text = if plus {
        text.strip_prefix('+').unwrap_or(text)
    } else {
        text
    };
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{value} is not a duration ({e}); write it as \"300ms\", \"30s\" or \"2m\"")
    })
}

/// The drill endpoint: `method` on `name`'s drill.
pub(super) async fn drill(
    context: &AdminContext,
    method: &Method,
    name: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let snapshot = context.dataplane.snapshot();
    if snapshot.service(name).is_none() {
        return unknown_service(context, name);
    }
    let Some(control) = &context.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process runs no control loop, so there are no rollouts to drill",
        );
    };
    if *method == Method::GET || *method == Method::HEAD {
        return match control.drill_report(name) {
            Some(mut report) => {
                super::fleet_views::attach_drill_faults(context, name, &mut report).await;
                json(StatusCode::OK, &report)
            }
            None => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no drill has run on \"{name}\" since serin started; \
                     POST /api/v1/services/{name}/drill starts one"
                ),
            ),
        };
    }
    if !snapshot.admin.drills {
        return error(
            StatusCode::FORBIDDEN,
            "rollback drills are off: set `admin.drills: true` in the config (and reload) \
             to let the admin API inject faults into a canary",
        );
    }
    if context.token.is_none() {
        return error(
            StatusCode::FORBIDDEN,
            "a rollback drill needs the admin token, even though the rest of this admin API \
             runs without one: set admin.token_file (or SERIN_ADMIN_TOKEN) and restart, then \
             send `Authorization: Bearer <token>`",
        );
    }
    let now = now_ms();
    if let Some(instance) = control.fleet_instance() {
        return fleet_drill(context, control, name, instance, method, body, now).await;
    }
    let result = if *method == Method::DELETE {
        control.end_drill(name, now)
    } else {
        let request = match parse_request(body) {
            Ok(request) => request,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        control.start_drill(name, request, now)
    };
    match result {
        Ok(report) => json(StatusCode::OK, &report),
        Err(refused) => refusal(context, name, refused),
    }
}

/// Fleet mode: the drill (or its end) goes to the fleet's leader as a command, checked
/// here first; the answer waits (at most `FLEET_COMMAND_WAIT`) for this instance to
/// run (or end) it: 200 with its report then, else 202 (the leader has not taken it
/// yet; `GET` shows it once it runs).
async fn fleet_drill(
    context: &AdminContext,
    control: &Control,
    name: &str,
    instance: &str,
    method: &Method,
    body: &[u8],
    now: u64,
) -> Response<Full<Bytes>> {
    let (kind, drill, what) = if *method == Method::DELETE {
        if !control.drill_runs(name) {
            return refusal(context, name, DrillRefused::NoDrill);
        }
        (FleetCommandKind::EndDrill, None, "end drill")
    } else {
        let request = match parse_request(body) {
            Ok(request) => request,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
        if let Err(refused) = control.check_drill(name, now) {
            return refusal(context, name, refused);
        }
        (FleetCommandKind::Drill, Some(request.order()), "drill")
    };
    let order = FleetOrder {
        instance,
        kind,
        weights: Default::default(),
        drill,
        what,
    };
    let id = match submit_order(control, name, order) {
        Ok(id) => id,
        Err(why) => return unsent(why),
    };
    let done = || match kind {
        FleetCommandKind::Drill => control.fleet_drill_runs(name, &id),
        _ => !control.drill_runs(name),
    };
    let deadline = tokio::time::Instant::now() + FLEET_COMMAND_WAIT;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return error(
                StatusCode::ACCEPTED,
                format!(
                    "sent to the fleet's leader (command {id}), which has not applied it yet;                      GET /api/v1/services/{name}/drill shows the drill once it runs"
                ),
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::info!(
        service = name,
        command = what,
        id,
        "fleet drill command applied"
    );
    match control.drill_report(name) {
        Some(mut report) => {
            super::fleet_views::attach_drill_faults(context, name, &mut report).await;
            json(StatusCode::OK, &report)
        }
        None => refusal(context, name, DrillRefused::NoDrill),
    }
}

fn refusal(context: &AdminContext, name: &str, refused: DrillRefused) -> Response<Full<Bytes>> {
    let conflict = |message: String| error(StatusCode::CONFLICT, message);
    match refused {
        DrillRefused::UnknownService => unknown_service(context, name),
        DrillRefused::NoRollout => conflict(format!(
            "service \"{name}\" has no rollout, so there is no canary to drill; \
             a drill rehearses a rollout's rollback: add services[].rollout to the config"
        )),
        DrillRefused::NotRunning(phase) => conflict(format!(
            "the rollout of \"{name}\" is {}, not progressing, so nothing would judge the \
             canary's faults; drill a running rollout (resume a paused one first)",
            phase.as_str()
        )),
        DrillRefused::Running(until_ms) => conflict(format!(
            "a drill runs on \"{name}\" already, until {}; \
             DELETE /api/v1/services/{name}/drill ends it",
            crate::wire::rfc3339(until_ms)
        )),
        DrillRefused::NoDrill => conflict(format!("no drill runs on \"{name}\"; nothing to end")),
        DrillRefused::Fleet => conflict(
            "in fleet mode a drill starts through the fleet's leader: POST it to the admin \
             API of any instance (docs/fleet.md)"
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> Result<DrillRequest, String> {
        parse_request(body.as_bytes())
    }

    #[test]
    fn a_drill_request_reads_shares_and_durations() {
        assert_eq!(
            parsed(r#"{"errors": "10%", "latency": "+300ms", "for": "2m"}"#),
            Ok(DrillRequest {
                errors: 1_000,
                latency: Duration::from_millis(300),
                length: Duration::from_secs(120),
            })
        );
        assert_eq!(
            parsed(r#"{"errors": 2.5, "for": "1h"}"#).map(|r| (r.errors, r.latency)),
            Ok((250, Duration::ZERO))
        );
        assert_eq!(
            parsed(r#"{"latency": "60s", "for": "30s"}"#).map(|r| r.errors),
            Ok(0)
        );
    }

    #[test]
    fn every_bad_field_is_named_with_its_bounds() {
        let err = parsed(r#"{"errors": "120%", "latency": "+2m", "for": "2h"}"#).unwrap_err();
        assert!(
            err.contains("errors: \"120%\" is not from 0% to 100%"),
            "{err}"
        );
        assert!(
            err.contains("latency: 2m is longer than the most a drill adds, 60s"),
            "{err}"
        );
        assert!(
            err.contains("for: 2h is longer than the longest drill, 1h"),
            "{err}"
        );

        let err = parsed(r#"{"errors": "10%"}"#).unwrap_err();
        assert!(err.starts_with("for: missing"), "{err}");
        assert!(err.ends_with("for up to 1h)"), "{err}");
        let err = parsed(r#"{"errors": "ten", "for": "0s"}"#).unwrap_err();
        assert!(err.contains("errors: \"ten\" is not a share"), "{err}");
        assert!(
            err.contains("for: a drill must last longer than 0s"),
            "{err}"
        );
        let err = parsed(r#"{"latency": 300, "for": "1m"}"#).unwrap_err();
        assert!(err.contains("latency: 300 is not a duration"), "{err}");
        let err = parsed(r#"{"errors": "0%", "for": "1m"}"#).unwrap_err();
        assert!(err.contains("would inject nothing"), "{err}");
        let err = parsed(r#"{"errors": "10%", "for": "1m", "delay": "1s"}"#).unwrap_err();
        assert!(err.contains("unknown field `delay`"), "{err}");
        let err = parsed("[1]").unwrap_err();
        assert!(err.starts_with("the body is not a JSON object"), "{err}");
        let err = parsed("{").unwrap_err();
        assert!(err.starts_with("the body is not JSON"), "{err}");
    }
}
