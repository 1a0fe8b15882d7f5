//! What one analysis tick costs the control loop: the judgement with the documented
//! five rules, and the aggregates the runner builds for it from a service's window.
//! `cargo bench -p serin-judge --bench tick`.
//!
//! The window holds 30 one-second ticks of a baseline at 900 req/s and a canary at
//! 100 req/s (the judgement benchmark's detection setting), latencies lognormal
//! (median 50 ms, σ 0.6) in buckets of three significant digits, as the recorder keeps
//! them.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serin_judge::analysis::{judge, Input};
use serin_judge::rules::compile;
use serin_judge::spec::{Analysis, Rule};
use serin_judge::stats::Detector;
use serin_judge::window::{Sample, ServiceWindow};

/// `n` requests, 0.1 % errors, lognormal latencies in 3-significant-digit buckets.
fn sample(rng: &mut fastrand::Rng, n: u64) -> Sample {
    let mut buckets = std::collections::BTreeMap::new();
    for _ in 0..n {
        let z = (-2.0 * (1.0 - rng.f64()).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
        let us = (50_000.0 * (0.6 * z).exp()) as u64;
        let width = 10u64.pow((us.max(1).ilog10()).saturating_sub(2));
        let lo = us / width * width;
        *buckets.entry((lo, lo + width - 1)).or_insert(0) += 1;
    }
    Sample {
        requests: n,
        errors: n / 1000,
        success: Default::default(),
        latency: buckets
            .into_iter()
            .map(|((lo, hi), c)| (lo, hi, c))
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let analysis = Analysis {
        interval: Duration::from_secs(1),
        window: Duration::from_secs(30),
        min_requests: 50,
        confidence: 0.99,
        rules: vec![
            Rule::ErrorRate { max: 0.01 },
            Rule::ErrorRateIncrease {
                max_increase: 0.005,
            },
            Rule::Latency {
                percentile: 95.0,
                max: Duration::from_millis(800),
            },
            Rule::LatencyIncrease {
                percentile: 95.0,
                max_increase: 0.2,
            },
            Rule::BurnRate {
                slo: 0.999,
                max: 4.0,
            },
        ],
    };
    let rules = compile(&analysis);
    let mut rng = fastrand::Rng::with_seed(1);
    let mut window = ServiceWindow::new(vec!["stable".into(), "canary".into()], 30_000);
    for t in 1..=30u64 {
        window.push_samples(t * 1000, vec![sample(&mut rng, 900), sample(&mut rng, 100)]);
    }
    // Detectors a minute into the rollout.
    let mut detectors: Vec<Detector> = vec![Detector::default(); 5];
    for d in &mut detectors {
        for _ in 0..60 {
            d.update(100, 0, 0.05);
        }
    }
    let aggregates = |w: &ServiceWindow| {
        [
            w.aggregate(0, 0),
            w.aggregate(1, 0),
            w.aggregate(0, 10_000),
            w.aggregate(1, 10_000),
            w.latest(0),
            w.latest(1),
        ]
    };
    let [bw, cw, bs, cs, bt, ct] = aggregates(&window);
    let input = Input {
        baseline_window: &bw,
        canary_window: &cw,
        baseline_step: &bs,
        canary_step: &cs,
        canary_tick: &ct,
        baseline_tick: &bt,
        baseline_has_weight: true,
        mismatch: None,
    };
    let mut g = c.benchmark_group("tick");
    g.bench_function("judge/five rules", |b| {
        b.iter(|| judge(black_box(&rules), black_box(&detectors), black_box(&input)))
    });
    g.bench_function("aggregates/six of a 30 s window", |b| {
        b.iter(|| aggregates(black_box(&window)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
