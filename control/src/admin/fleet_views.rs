//! Fleet mode in the admin API: a service's view gains the fleet as its leader last
//! judged it (`P/summary`), and its timeline is the fleet's (`P/timeline/<service>/`),
//! both read from etcd when asked (`crate::fleet::view`), within [`READ_WITHIN`].

use std::time::Duration;

use super::AdminContext;
use crate::fleet::view::{fleet_faults, view_of, FleetReads};
use crate::runner::Control;
use crate::wire::{DrillReport, FleetSummary, ServiceView, TimelineEvent};

/// The longest an answer waits for etcd: past it, the view says etcd did not answer.
pub const READ_WITHIN: Duration = Duration::from_secs(1);

/// Adds the fleet to each of `views` (nothing on a serin alone): one read of the summary.
pub async fn attach(context: &AdminContext, views: &mut [ServiceView]) {
    let Some(control) = &context.control else {
        return;
    };
    let (Some(instance), Some(reads)) = (control.fleet_instance(), control.fleet_reads()) else {
        return;
    };
    let summary = read_summary(control, reads.as_ref()).await;
    for view in views {
        view.fleet = Some(view_of(
            instance,
            &view.name,
            summary.as_ref().map(Option::as_ref).map_err(String::as_str),
        ));
    }
}

/// The fleet's summary as the leader last wrote it, or why it cannot be read now.
async fn read_summary(
    control: &Control,
    reads: &dyn FleetReads,
) -> Result<Option<FleetSummary>, String> {
    match control.fleet_away_since_ms() {
        Some(since) => Err(format!(
            "etcd unreachable since {}: the fleet's numbers cannot be read here; this \
             instance serves with the weights in force",
            crate::wire::rfc3339(since)
        )),
        None => match tokio::time::timeout(READ_WITHIN, reads.summary()).await {
            Ok(read) => read,
            Err(_) => Err(format!(
                "etcd did not answer within {READ_WITHIN:?}: the fleet's numbers cannot be read now"
            )),
        },
    }
}

/// Fleet mode: `report` (of `service`'s fleet drill) gains every instance's faults as
/// the leader last counted them; nothing on a serin alone.
pub async fn attach_drill_faults(context: &AdminContext, service: &str, report: &mut DrillReport) {
    let Some(control) = &context.control else {
        return;
    };
    let (Some(reads), Some(id)) = (control.fleet_reads(), control.fleet_drill_id(service)) else {
        return;
    };
    let summary = read_summary(control, reads.as_ref()).await;
    report.faults.fleet = Some(fleet_faults(
        service,
        &id,
        summary.as_ref().map(Option::as_ref).map_err(String::as_str),
    ));
}

/// Fleet mode: the fleet's timeline of `service`, or why it cannot be read now; `None`
/// on a serin alone.
pub async fn timeline(
    context: &AdminContext,
    service: &str,
) -> Option<Result<Vec<TimelineEvent>, String>> {
    let reads = context.control.as_ref()?.fleet_reads()?;
    let read = tokio::time::timeout(READ_WITHIN, reads.timeline(service.to_string())).await;
    Some(match read {
        Ok(Ok(events)) => Ok(events),
        Ok(Err(why)) => Err(format!(
            "the fleet's timeline of {service:?} is in etcd: {why}"
        )),
        Err(_) => Err(format!(
            "the fleet's timeline of {service:?} is in etcd, which did not answer within \
             {READ_WITHIN:?}; try again, or ask another instance"
        )),
    })
}
