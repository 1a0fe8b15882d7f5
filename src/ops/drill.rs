//! `serin drill SERVICE --errors 10% --latency +300ms --for 2m`: starts a rollback drill
//! through the admin API (`POST …/drill`), follows it (`GET …/drill`) until it ends and
//! the webhooks have had their say, and prints its report. Ctrl-C ends the drill
//! early (`DELETE …/drill`) and prints the report so far. In fleet mode the instance
//! may answer `202` (the leader has not started the drill yet): it waits for the drill
//! to run there, at most [`LEADER_WAIT`].

use std::process::ExitCode;
use std::time::Duration;

use http::Method;
use serin_control::wire::DrillReport;

use super::{decode, failed, runtime, segment, send, send_answer, AdminArgs, Failure};

/// How often the drill is read while it runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Fleet mode: how long `serin drill` waits for the leader to start a drill the instance
/// asked has sent on (`202`).
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long the report waits, after the drill ended, for webhooks still sending.
const WEBHOOK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// The service (as named in the config); its rollout must be progressing.
    pub service: String,
    /// The share of the canary's requests serin answers 503, e.g. `10%`.
    #[arg(long, value_name = "SHARE")]
    pub errors: Option<String>,
    /// Added before each of the canary's other requests, e.g. `+300ms`.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub latency: Option<String>,
    /// How long the drill runs (at most 1h), e.g. `2m`.
    #[arg(long = "for", value_name = "DURATION")]
    pub length: String,
    /// Print the final report as the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

pub fn drill(args: DrillArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("error: cannot print the report: {err}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report_text(&report));
            }
            ExitCode::SUCCESS
        }
        Err(failure) => failed(failure),
    }
}

async fn run(args: &DrillArgs) -> Result<DrillReport, Failure> {
    let path = format!("/api/v1/services/{}/drill", segment(&args.service));
    let mut body = serde_json::Map::new();
    if let Some(errors) = &args.errors {
        body.insert("errors".into(), errors.clone().into());
    }
    if let Some(latency) = &args.latency {
        body.insert("latency".into(), latency.clone().into());
    }
    body.insert("for".into(), args.length.clone().into());
    let body = serde_json::Value::Object(body).to_string();
    let admin = &args.admin.admin;
    let read = || async {
        decode::<DrillReport>(&send(admin, Method::GET, &path, None).await?).map_err(Failure::Usage)
    };
    let (status, answer) = send_answer(admin, Method::POST, &path, Some(body)).await?;
    let started: DrillReport = if status == http::StatusCode::ACCEPTED {
        eprintln!("the fleet's leader has not started the drill yet; waiting for it");
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            match read().await {
                Ok(report) if report.state == "running" => break report,
                // No drill yet (404), or the last one's report.
                Ok(_) | Err(Failure::Refused(http::StatusCode::NOT_FOUND, _)) => {}
                Err(err) => return Err(err),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::Unreachable(format!(
                    "the fleet's leader did not start the drill within {}s; \
                     GET /api/v1/services/{}/drill shows it if it starts later",
                    LEADER_WAIT.as_secs(),
                    args.service
                )));
            }
        }
    } else {
        decode(&answer).map_err(Failure::Usage)?
    };
    eprintln!(
        "drill started on {}: {} of canary {}'s requests answered 503 by serin{}, until {}; \
         following it (Ctrl-C ends it now)",
        started.service,
        started.errors,
        started.canary,
        if started.latency_ms > 0 {
            format!(", {} ms added to the others", started.latency_ms)
        } else {
            String::new()
        },
        started.ends_at
    );
    let mut said_rollback = false;
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    let mut report = started;
    while report.state == "running" {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = &mut interrupted => {
                eprintln!("interrupted: ending the drill now");
                let ended = send(admin, Method::DELETE, &path, None).await;
                // It may have ended on its own meanwhile (409): the report says how.
                if let Err(err) = ended {
                    if !matches!(err, Failure::Refused(http::StatusCode::CONFLICT, _)) {
                        return Err(err);
                    }
                }
            }
        }
        report = read().await?;
        if report.rolled_back && !said_rollback {
            said_rollback = true;
            eprintln!(
                "the rollout rolled back {} after the drill began",
                seconds(report.injection_to_zero_ms.unwrap_or(0))
            );
        }
    }
    // The decisions' webhooks may still be sending (retries back off up to 10 s).
    let deadline = tokio::time::Instant::now() + WEBHOOK_WAIT;
    while report.notifications.iter().any(|n| n.pending > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(FOLLOW_EVERY).await;
        report = read().await?;
    }
    Ok(report)
}

fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

/// The report as `serin drill` prints it.
pub fn report_text(r: &DrillReport) -> String {
    let mut out = String::new();
    let ended = match (&r.ended_by, &r.ended_at) {
        (Some(by), Some(at)) => format!("ended ({}) at {at}", ended_by(by)),
        _ => format!("still running, until {}", r.ends_at),
    };
    out.push_str(&format!("drill on {} {ended}\n", r.service));
    let latency = if r.latency_ms > 0 {
        format!(", +{} ms on the others", r.latency_ms)
    } else {
        String::new()
    };
    out.push_str(&format!(
        "  faults:       {} of canary {}'s requests answered 503{latency}, for {}s (canary at {}% when it began)\n",
        r.errors, r.canary, r.for_s, r.canary_weight_at_start
    ));
    let rolled_back = match (r.rolled_back, r.injection_to_zero_ms) {
        (true, Some(ms)) => format!(
            "yes{}, canary weight 0 {} after the drill began",
            if r.rolled_back_by_hand {
                " (aborted by hand)"
            } else {
                ", by the rollout's rules"
            },
            seconds(ms)
        ),
        _ => "no: the rollout's rules did not roll the canary back during the drill".to_string(),
    };
    out.push_str(&format!("  rolled back:  {rolled_back}\n"));
    out.push_str(&clients_hit(r));
    let rollback = r
        .notifications
        .iter()
        .find(|n| n.event.as_str() == "rolled_back");
    let webhooks = match (rollback, r.rollback_notified) {
        (Some(n), Some(true)) => format!(
            "every webhook received the rollback ({} of {})",
            n.delivered, n.webhooks
        ),
        (Some(n), _) => format!(
            "NOT every webhook received the rollback: {} of {} delivered, {} failed, {} dropped, {} still sending",
            n.delivered, n.webhooks, n.failed, n.dropped, n.pending
        ),
        // In a fleet, the leader sent it: its report has the webhooks' record.
        (None, _) if r.rolled_back && r.faults.instance.is_some() => {
            "sent by the fleet's leader, if any webhook subscribes to rolled_back (its GET …/drill says which received it)"
                .to_string()
        }
        (None, _) if r.rolled_back => "no webhook subscribes to rolled_back".to_string(),
        (None, _) => "no rollback to send".to_string(),
    };
    out.push_str(&format!("  webhooks:     {webhooks}\n"));
    out
}

/// The report's `clients hit` lines: this instance's count, and in a fleet every
/// instance's as the leader counted them.
fn clients_hit(r: &DrillReport) -> String {
    let f = &r.faults;
    let (instance, fleet) = match (&f.instance, &f.fleet) {
        (Some(instance), Some(fleet)) => (instance, fleet),
        (Some(instance), None) => {
            return format!(
                "  clients hit:  {} requests saw an injected fault on {instance} (each instance of the fleet counts its own) ({} answered 503, {} delayed)\n",
                f.total, f.errors, f.delayed
            )
        }
        _ => {
            return format!(
                "  clients hit:  {} requests saw an injected fault ({} answered 503, {} delayed)\n",
                f.total, f.errors, f.delayed
            )
        }
    };
    let own = format!(
        "{} on {instance} ({} answered 503, {} delayed)",
        f.total, f.errors, f.delayed
    );
    match (&fleet.note, &fleet.counted_to) {
        (None, Some(to)) => format!(
            "  clients hit:  {} requests saw an injected fault across the fleet ({} answered 503, {} delayed; counted to {to}), {own}\n",
            fleet.total, fleet.errors, fleet.delayed
        ),
        (note, _) => format!(
            "  clients hit:  {own}; the fleet's total is not known here: {}\n",
            note.as_deref().unwrap_or("the leader has not counted it")
        ),
    }
}

fn ended_by(by: &str) -> &str {
    match by {
        "expired" => "its time was up",
        "rolled_back" => "the rollout rolled back",
        "promoted" => "the rollout was promoted",
        "deleted" => "ended by hand",
        "reload" => "a reload ended it",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serin_control::wire::{DrillFaults, DrillNotification, FleetFaults};
    use serin_judge::rollout::DecisionKind;

    use super::*;

    fn report() -> DrillReport {
        DrillReport {
            service: "api".into(),
            canary: "canary".into(),
            state: "ended".into(),
            errors: "10%".into(),
            latency_ms: 300,
            for_s: 120,
            started_at: "2026-12-06T22:00:00.000Z".into(),
            started_at_ms: 0,
            ends_at: "2026-12-06T22:02:00.000Z".into(),
            ended_at: Some("2026-12-06T22:00:02.500Z".into()),
            ended_by: Some("rolled_back".into()),
            canary_weight_at_start: 5,
            rolled_back: true,
            rolled_back_by_hand: false,
            injection_to_zero_ms: Some(2_400),
            faults: DrillFaults {
                errors: 41,
                delayed: 377,
                total: 418,
                instance: None,
                fleet: None,
            },
            notifications: vec![DrillNotification {
                event: DecisionKind::RolledBack,
                at: "2026-12-06T22:00:02.400Z".into(),
                webhooks: 2,
                delivered: 1,
                failed: 1,
                dropped: 0,
                pending: 0,
            }],
            rollback_notified: Some(false),
        }
    }

    #[test]
    fn the_report_says_what_a_rehearsal_found() {
        let text = report_text(&report());
        assert_eq!(
            text,
            "drill on api ended (the rollout rolled back) at 2026-12-06T22:00:02.500Z\n\
             \x20 faults:       10% of canary canary's requests answered 503, +300 ms on the others, for 120s (canary at 5% when it began)\n\
             \x20 rolled back:  yes, by the rollout's rules, canary weight 0 2.40s after the drill began\n\
             \x20 clients hit:  418 requests saw an injected fault (41 answered 503, 377 delayed)\n\
             \x20 webhooks:     NOT every webhook received the rollback: 1 of 2 delivered, 1 failed, 0 dropped, 0 still sending\n"
        );
        let mut expired = report();
        expired.ended_by = Some("expired".into());
        expired.rolled_back = false;
        expired.injection_to_zero_ms = None;
        expired.notifications.clear();
        expired.rollback_notified = None;
        let text = report_text(&expired);
        assert!(text.contains("ended (its time was up)"), "{text}");
        assert!(
            text.contains("rolled back:  no: the rollout's rules did not"),
            "{text}"
        );
        assert!(text.contains("webhooks:     no rollback to send"), "{text}");
    }

    #[test]
    fn a_fleet_instances_report_says_whose_clients_it_counts() {
        let mut r = report();
        r.faults.instance = Some("web-2".into());
        r.notifications.clear();
        r.rollback_notified = None;
        let text = report_text(&r);
        assert!(
            text.contains("418 requests saw an injected fault on web-2 (each instance of the fleet counts its own) (41 answered 503"),
            "{text}"
        );
        assert!(
            text.contains("webhooks:     sent by the fleet's leader"),
            "{text}"
        );
        r.faults.fleet = Some(FleetFaults {
            errors: 120,
            delayed: 1_130,
            total: 1_250,
            counted_to: Some("2026-12-06T22:00:03.000Z".into()),
            note: None,
        });
        let text = report_text(&r);
        assert!(
            text.contains("clients hit:  1250 requests saw an injected fault across the fleet (120 answered 503, 1130 delayed; counted to 2026-12-06T22:00:03.000Z), 418 on web-2 (41 answered 503, 377 delayed)\n"),
            "{text}"
        );
        r.faults.fleet = Some(FleetFaults {
            note: Some("etcd did not answer within 1s".into()),
            ..FleetFaults::default()
        });
        let text = report_text(&r);
        assert!(
            text.contains("418 on web-2 (41 answered 503, 377 delayed); the fleet's total is not known here: etcd did not answer within 1s"),
            "{text}"
        );
    }
}
