//! What `serin status` prints of the fleet under a service of a fleet instance: the
//! leader, how many instances, the merged numbers the leader judged on, and the listed
//! instances' own counts (docs/fleet.md, "What every instance shows").

use serin_control::wire::FleetView;

use super::{millis, row, seconds, table};

/// The fleet's part of `serin status` for one service.
pub fn fleet_table(f: &FleetView) -> String {
    let mut out = format!("fleet: this is {}", f.instance);
    if let Some(leader) = &f.leader {
        out.push_str(&format!(
            ", led by {leader}; {} instance{}",
            f.instances,
            if f.instances == 1 { "" } else { "s" }
        ));
        if let Some(at) = &f.judged_at {
            out.push_str(&format!(", last judged at {at}"));
        }
    }
    if let Some(note) = &f.note {
        out.push_str(&format!(" ({note})"));
    }
    if f.versions.is_empty() {
        out.push('\n');
        return out;
    }
    if let Some(span) = f.window_s {
        out.push_str(&format!(
            "; the fleet's numbers over the last {}",
            seconds(span)
        ));
    }
    out.push('\n');
    let dash = || "-".to_string();
    let mut rows = vec![row(&[
        "version",
        "requests",
        "errors",
        "error rate",
        "p95",
        "p99",
    ])];
    for (version, n) in &f.versions {
        rows.push(vec![
            version.clone(),
            n.requests.to_string(),
            n.errors.to_string(),
            n.error_rate
                .map_or_else(dash, |e| format!("{:.2}%", e * 100.0)),
            n.p95_ms.map_or_else(dash, millis),
            n.p99_ms.map_or_else(dash, millis),
        ]);
    }
    out.push_str(&table(&rows, &[1, 2, 3, 4, 5]));
    if !f.members.is_empty() {
        let mut header = vec!["instance".to_string()];
        header.extend(f.versions.keys().map(|v| format!("{v} req/err")));
        let mut rows = vec![header];
        for m in &f.members {
            let mut r = vec![m.instance.clone()];
            for version in f.versions.keys() {
                let c = m.versions.get(version).copied().unwrap_or_default();
                r.push(format!("{}/{}", c.requests, c.errors));
            }
            rows.push(r);
        }
        let right: Vec<usize> = (1..=f.versions.len()).collect();
        out.push_str(&table(&rows, &right));
    }
    if f.more_members > 0 {
        out.push_str(&format!("  … and {} more instances\n", f.more_members));
    }
    out
}
