//! The judgement benchmark, live half: real serin (data plane + control loop) in front
//! of in-process backends, an open-loop load of 1 000 req/s with the canary at 10 %, and
//! faults switched on at a random moment. Measures, per analysis interval:
//!
//! 1. time from fault onset (100 % 5xx) to canary weight 0;
//! 2. failed requests clients saw in that run, without and with `retry_on_baseline`;
//! 3. time from a +50 % latency regression (every canary latency × 1.5) to rollback.
//!
//! `cargo bench --bench judgement_live [-- --reps N --rate R --warmup SECS]`
//! (benches/judgement/run runs it with the simulation and prints both tables).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serin_control::runner::{now_ms, Control};
use serin_judge::rollout::Phase;
use serin_proxy::{server, DataPlane};
use tokio::net::TcpListener;

/// A backend whose status and latency scale can be switched while it runs. Latency is
/// lognormal (median `median_ms`, sigma 0.5) × scale.
struct Backend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    scale_pct: Arc<AtomicU64>,
}

async fn backend(median_ms: f64) -> Backend {
    let socket = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = socket.local_addr().expect("addr");
    let status = Arc::new(AtomicU16::new(200));
    let scale_pct = Arc::new(AtomicU64::new(100));
    let (st, sc) = (status.clone(), scale_pct.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                continue;
            };
            let (st, sc) = (st.clone(), sc.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (st, sc) = (st.clone(), sc.clone());
                    async move {
                        let _ = req.into_body().collect().await;
                        let z = normal();
                        let ms =
                            median_ms * (0.5 * z).exp() * sc.load(Ordering::Relaxed) as f64 / 100.0;
                        tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
                        let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *resp.status_mut() = StatusCode::from_u16(st.load(Ordering::Relaxed))
                            .unwrap_or(StatusCode::OK);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend {
        addr,
        status,
        scale_pct,
    }
}

fn normal() -> f64 {
    let (u1, u2) = (fastrand::f64().max(1e-12), fastrand::f64());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Errors,
    Slower,
}

struct Outcome {
    /// Fault onset to rollback, if it came within the limit.
    detect: Option<Duration>,
    client_failures: usize,
    requests: usize,
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    interval: &str,
    fault: Fault,
    retry: bool,
    rate: u32,
    warmup: Duration,
    limit: Duration,
) -> Outcome {
    let (stable, canary) = (backend(20.0).await, backend(20.0).await);
    let state_dir = std::env::temp_dir().join(format!(
        "serin-judgement-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let yaml = format!(
        r#"
admin: {{ listen: 127.0.0.1:0 }}
state_dir: "{}"
listeners: [{{ name: web, listen: 127.0.0.1:0 }}]
routes: [{{ listener: web, service: api }}]
services:
  - name: api
    versions:
      - {{ name: stable, endpoints: [{}] }}
      - {{ name: canary, endpoints: [{}] }}
    split: {{ weights: {{ stable: 100, canary: 0 }}, sticky: {{ header: x-user-id }} }}
    timeouts: {{ connect: 1s, request: 10s }}
    rollout:
      baseline: stable
      canary: canary
      retry_on_baseline: {retry}
      steps:
        - {{ weight: 10, hold: 1h }}
        - {{ weight: 100 }}
      analysis:
        interval: {interval}
        window: 30s
        min_requests: 50
        confidence: 99%
        rules:
          - error_rate: {{ max: 1% }}
          - error_rate: {{ max_increase: 0.5% }}
          - latency: {{ percentile: 95, max: 800ms }}
          - latency: {{ percentile: 95, max_increase: 20% }}
          - burn_rate: {{ slo: 99.9%, max: 4 }}
"#,
        state_dir.display(),
        stable.addr,
        canary.addr
    );
    let snapshot = serin_config::parse_str(&yaml, "judgement").unwrap_or_else(|e| panic!("{e}"));
    let listeners = server::bind_all(&snapshot).await.expect("bind");
    let web = listeners[0].local_addr;
    let dataplane = Arc::new(DataPlane::new(snapshot, 2).expect("data plane"));
    let control = Arc::new(Control::new(dataplane.clone(), now_ms()));
    let (stop_control, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(control.clone().run(stopped));
    let serving = server::serve(dataplane, listeners);

    // Open loop: one request every 1/rate s, whatever the answers do.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicBool::new(true));
    let load = {
        let (failures, requests, counting, running) = (
            failures.clone(),
            requests.clone(),
            counting.clone(),
            running.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let uri: http::Uri = format!("http://{web}/").parse().expect("uri");
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                let req = Request::get(uri.clone())
                    .header("x-user-id", format!("user-{}", fastrand::u32(..)))
                    .body(Empty::new())
                    .expect("request");
                let (client, failures, requests, counting) = (
                    client.clone(),
                    failures.clone(),
                    requests.clone(),
                    counting.clone(),
                );
                tokio::spawn(async move {
                    let failed = match client.request(req).await {
                        Ok(resp) => {
                            let failed = resp.status().is_server_error();
                            let _ = resp.into_body().collect().await;
                            failed
                        }
                        Err(_) => true,
                    };
                    if counting.load(Ordering::Relaxed) {
                        requests.fetch_add(1, Ordering::Relaxed);
                        if failed {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        })
    };

    tokio::time::sleep(warmup + Duration::from_millis(fastrand::u64(0..1000))).await;
    let phase = || control.status("api").map(|s| s.phase);
    let mut outcome = Outcome {
        detect: None,
        client_failures: 0,
        requests: 0,
    };
    if phase() == Some(Phase::Progressing) {
        counting.store(true, Ordering::SeqCst);
        let onset_ms = now_ms();
        let onset = Instant::now();
        match fault {
            Fault::Errors => canary.status.store(500, Ordering::SeqCst),
            Fault::Slower => canary.scale_pct.store(150, Ordering::SeqCst),
        }
        while onset.elapsed() < limit {
            if let Some(s) = control.status("api") {
                if s.phase == Phase::RolledBack {
                    outcome.detect =
                        Some(Duration::from_millis(s.since_ms.saturating_sub(onset_ms)));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let requests in flight at the rollback finish and be counted.
        tokio::time::sleep(Duration::from_millis(500)).await;
        counting.store(false, Ordering::SeqCst);
        outcome.client_failures = failures.load(Ordering::SeqCst);
        outcome.requests = requests.load(Ordering::SeqCst);
    } else {
        eprintln!(
            "the rollout was not progressing before the fault ({:?}); run skipped",
            phase()
        );
    }
    running.store(false, Ordering::SeqCst);
    let _ = load.await;
    let _ = stop_control.send(true);
    serving.shutdown(Duration::from_secs(2)).await;
    let _ = std::fs::remove_dir_all(&state_dir);
    outcome
}

fn median_max(values: &[Option<Duration>]) -> String {
    let mut ms: Vec<u128> = values.iter().flatten().map(|d| d.as_millis()).collect();
    let missed = values.len() - ms.len();
    if ms.is_empty() {
        return format!("not detected ({missed} of {})", values.len());
    }
    ms.sort_unstable();
    let text = format!("{} ms / {} ms", ms[ms.len() / 2], ms[ms.len() - 1]);
    if missed > 0 {
        format!("{text} ({missed} of {} not detected)", values.len())
    } else {
        text
    }
}

fn counts(values: &[usize]) -> String {
    let mut v = values.to_vec();
    v.sort_unstable();
    format!("{} / {}", v[v.len() / 2], v[v.len() - 1])
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let reps = arg(&args, "--reps", if quick { 1 } else { 5 }) as usize;
    let rate = arg(&args, "--rate", 1000) as u32;
    let warmup = Duration::from_secs(arg(&args, "--warmup", if quick { 3 } else { 10 }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("## serin judgement, live ({rate} req/s, canary 10 %, window 30 s, {reps} runs each; median / max)\n");
    println!("| measure | goal | interval 1s | interval 250ms |");
    println!("|---|---|---|---|");
    let mut rows: Vec<(String, &str, Vec<String>)> = vec![
        (
            "fault onset (100 % 5xx) → canary weight 0".into(),
            "≤ 1 s",
            vec![],
        ),
        (
            "client-visible failures, retry_on_baseline off".into(),
            "≤ 100",
            vec![],
        ),
        (
            "client-visible failures, retry_on_baseline on".into(),
            "0",
            vec![],
        ),
        ("+50 % latency → rollback".into(), "≤ 10 s", vec![]),
    ];
    for interval in ["1s", "250ms"] {
        let (mut detect, mut failed_off, mut failed_on, mut slow) =
            (vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let o = runtime.block_on(run_once(
                interval,
                Fault::Errors,
                false,
                rate,
                warmup,
                Duration::from_secs(10),
            ));
            detect.push(o.detect);
            failed_off.push(o.client_failures);
            let o = runtime.block_on(run_once(
                interval,
                Fault::Errors,
                true,
                rate,
                warmup,
                Duration::from_secs(10),
            ));
            failed_on.push(o.client_failures);
            let o = runtime.block_on(run_once(
                interval,
                Fault::Slower,
                false,
                rate,
                warmup,
                Duration::from_secs(30),
            ));
            slow.push(o.detect);
        }
        rows[0].2.push(median_max(&detect));
        rows[1].2.push(counts(&failed_off));
        rows[2].2.push(counts(&failed_on));
        rows[3].2.push(median_max(&slow));
    }
    for (name, goal, cells) in rows {
        println!("| {name} | {goal} | {} |", cells.join(" | "));
    }
}
