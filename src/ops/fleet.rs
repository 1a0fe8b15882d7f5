//! What `serin status` prints of the fleet under a service of a fleet instance: the
//! leader, how many instances, the merged numbers the leader judged on, and the listed
//! instances' own counts (docs/fleet.md, "What every instance shows").

use serin_control::wire::FleetView;

use super::{millis, row, seconds, table};

/// The fleet's part of `serin status` for one service whose versions are `declared`
/// (in the config's order).
pub fn fleet_table(f: &FleetView, declared: &[(String, u32)]) -> String {
    let mut names: Vec<&String> = declared
        .iter()
        .map(|(v, _)| v)
        .filter(|v| f.versions.contains_key(*v))
        .collect();
    let undeclared: Vec<&String> = (f.versions.keys())
        .filter(|v| !declared.iter().any(|(d, _)| d == *v))
        .collect();
    names.extend(undeclared);
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
    for version in &names {
        let n = &f.versions[*version];
        rows.push(vec![
            version.to_string(),
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
        header.extend(names.iter().map(|v| format!("{v} req/err")));
        let mut rows = vec![header];
        for m in &f.members {
            let mut r = vec![m.instance.clone()];
            for version in &names {
                let c = m.versions.get(*version).copied().unwrap_or_default();
                r.push(format!("{}/{}", c.requests, c.errors));
            }
            rows.push(r);
        }
        let right: Vec<usize> = (1..=names.len()).collect();
        out.push_str(&table(&rows, &right));
    }
    if f.more_members > 0 {
        out.push_str(&format!("  … and {} more instances\n", f.more_members));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_control::wire::{Counts, MemberNumbers, WindowNumbers};

    #[test]
    fn the_fleet_is_printed_in_the_configs_order_of_versions() {
        let numbers = |requests| WindowNumbers {
            requests,
            ..WindowNumbers::default()
        };
        let counts = |requests| Counts {
            requests,
            errors: 0,
        };
        let view = FleetView {
            instance: "web-2".into(),
            leader: Some("web-1".into()),
            judged_at: Some("2026-12-06T21:49:58.200Z".into()),
            instances: 66,
            window_s: Some(5.0),
            versions: [
                ("canary".to_string(), numbers(3)),
                ("stable".to_string(), numbers(7)),
            ]
            .into_iter()
            .collect(),
            members: vec![MemberNumbers {
                instance: "web-1".into(),
                versions: [
                    ("canary".to_string(), counts(3)),
                    ("stable".to_string(), counts(7)),
                ]
                .into_iter()
                .collect(),
            }],
            more_members: 65,
            note: None,
        };
        let declared = [("stable".to_string(), 90), ("canary".to_string(), 10)];
        let printed = fleet_table(&view, &declared);
        let lines: Vec<&str> = printed.lines().collect();
        assert!(
            lines[0].starts_with("fleet: this is web-2, led by web-1; 66 instances"),
            "{printed}"
        );
        assert!(lines[2].trim_start().starts_with("stable"), "{printed}");
        assert!(lines[3].trim_start().starts_with("canary"), "{printed}");
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["instance", "stable", "req/err", "canary", "req/err"]
        );
        assert_eq!(
            lines[5].split_whitespace().collect::<Vec<_>>(),
            ["web-1", "7/0", "3/0"]
        );
        assert_eq!(lines[6], "  … and 65 more instances");

        let away = FleetView {
            leader: None,
            versions: Default::default(),
            members: Vec::new(),
            more_members: 0,
            note: Some("etcd unreachable since then".into()),
            ..view
        };
        assert_eq!(
            fleet_table(&away, &declared),
            "fleet: this is web-2 (etcd unreachable since then)\n"
        );
    }
}
