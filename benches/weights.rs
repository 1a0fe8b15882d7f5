//! One weight change on a config of 100 services behind two TLS listeners: what a
//! rollout step, a rollback or a manual change costs the control side. A weight change
//! publishes a new split table for its service and shares the rest of the table; it is
//! timed against rebuilding the table, which is what a weight change used to do
//! (clone the snapshot, `Table::build` keeping pools and stats, new TLS acceptors), and
//! against a reload of the same config. `cargo bench --bench weights`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serin_proxy::{DataPlane, Table};

const SERVICES: usize = 100;

/// A scratch directory for the certificates, removed on drop.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The config: `SERVICES` services of two versions, each with a rollout, routed by
/// path on a plain listener and two TLS listeners.
fn config(dir: &std::path::Path) -> String {
    let mut yaml = String::from("listeners:\n  - { name: web, listen: 127.0.0.1:0 }\n");
    for name in ["tls-a", "tls-b"] {
        let cert = rcgen::generate_simple_self_signed(vec![format!("{name}.example.com")])
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        let (cert_file, key_file) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&key_file, cert.signing_key.serialize_pem())
            .unwrap_or_else(|e| panic!("{e}"));
        yaml.push_str(&format!(
            "  - {{ name: {name}, listen: 127.0.0.1:0, tls: {{ certificates: [ {{ cert: {}, key: {} }} ] }} }}\n",
            cert_file.display(),
            key_file.display()
        ));
    }
    yaml.push_str("routes:\n");
    for i in 0..SERVICES {
        for listener in ["web", "tls-a", "tls-b"] {
            yaml.push_str(&format!(
                "  - {{ listener: {listener}, match: {{ path_prefix: /s{i} }}, service: s{i} }}\n"
            ));
        }
    }
    yaml.push_str("services:\n");
    for i in 0..SERVICES {
        yaml.push_str(&format!(
            "  - name: s{i}\n    versions:\n      - {{ name: stable, endpoints: [127.0.0.1:{}] }}\n      - {{ name: canary, endpoints: [127.0.0.1:{}] }}\n    split: {{ weights: {{ stable: 100, canary: 0 }} }}\n    rollout:\n      baseline: stable\n      canary: canary\n      steps: [{{ weight: 5 }}, {{ weight: 50 }}, {{ weight: 100 }}]\n      analysis: {{ rules: [{{ error_rate: {{ max: 1% }} }}] }}\n",
            10_000 + 2 * i,
            10_001 + 2 * i
        ));
    }
    yaml
}

fn bench(c: &mut Criterion) {
    let dir =
        Scratch(std::env::temp_dir().join(format!("serin-bench-weights-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap_or_else(|e| panic!("{e}"));
    let snapshot =
        serin_config::parse_str(&config(&dir.0), "bench").unwrap_or_else(|e| panic!("{e}"));
    let dataplane = DataPlane::new(snapshot.clone(), 2).unwrap_or_else(|e| panic!("{e}"));
    let view = dataplane.view();
    let (_, rollout) = view
        .rollout(SERVICES / 2)
        .unwrap_or_else(|| panic!("a rollout"));
    let manual = dataplane
        .validate_weights("s50", &[("stable", 70), ("canary", 30)])
        .unwrap_or_else(|e| panic!("{e}"));

    let mut g = c.benchmark_group("weight_change_100_services_tls");
    let mut step = 0u32;
    g.bench_function("set_canary_weight", |b| {
        b.iter(|| {
            step = (step + 1) % 101;
            dataplane.set_canary_weight(black_box(&rollout), step);
        })
    });
    g.bench_function("set_weights", |b| {
        b.iter(|| dataplane.set_weights(black_box(&manual)))
    });
    // What a weight change used to cost: the snapshot cloned and the table rebuilt
    // from it, keeping pools and stats, with new TLS acceptors. Built here on a previous
    // table whose listeners' TLS settings differ, so that no acceptor is kept.
    let mut other = serin_config::Snapshot::clone(&snapshot);
    for listener in &mut other.listeners {
        if let Some(tls) = listener.tls.as_mut() {
            tls.alpn.reverse();
        }
    }
    let other = Table::build(Arc::new(other), None, 2).unwrap_or_else(|e| panic!("{e}"));
    let table = dataplane.table();
    g.bench_function("rebuild_table (the former weight change)", |b| {
        b.iter(|| {
            let snapshot = Arc::new(serin_config::Snapshot::clone(&table.snapshot));
            black_box(Table::build(snapshot, Some(&other), 2).unwrap_or_else(|e| panic!("{e}")))
        })
    });
    g.bench_function("reload_unchanged", |b| {
        b.iter(|| {
            dataplane
                .apply(serin_config::Snapshot::clone(&snapshot))
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
