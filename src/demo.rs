//! `serin demo` and `serin demo-backend`: serin's job on an embedded default, with no
//! files and no other processes — two built-in app versions, serin in front of them
//! running a staged canary rollout, steady load, the per-version figures serin measures
//! each second, and the rollout's decisions as they happen.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serin_control::runner::{now_ms, Control};
use serin_control::wire::WindowNumbers;
use serin_judge::rollout::Phase;
use serin_proxy::{server, DataPlane};
use tokio::net::TcpListener;

/// The embedded default: the quickstart's shape with a fast staged rollout, on free
/// loopback ports.
const DEMO_CONFIG: &str = r#"
admin: { listen: 127.0.0.1:0 }
state_dir: STATE_DIR
listeners:
  - { name: web, listen: 127.0.0.1:0 }
routes:
  - { listener: web, match: { host: "*", path_prefix: / }, service: api }
services:
  - name: api
    versions:
      - { name: stable, endpoints: [STABLE] }
      - { name: canary, endpoints: [CANARY] }
    split:
      weights: { stable: 100, canary: 0 }
      sticky: { header: x-user-id }
      force: { header: x-serin-version }
    timeouts: { connect: 1s, request: 5s }
    rollout:
      baseline: stable
      canary: canary
      steps:
        - { weight: 5, hold: 4s }
        - { weight: 25, hold: 4s }
        - { weight: 50, hold: 4s }
        - { weight: 100 }
      analysis:
        interval: 500ms
        window: 10s
        min_requests: 20
        confidence: 99%
        rules:
          - error_rate: { max: 5% }
          - error_rate: { max_increase: 1% }
          - latency: { percentile: 95, max_increase: 50% }
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The canary turns bad partway through and serin rolls it back.
    Bad,
    /// The canary stays healthy and serin promotes it.
    Good,
    /// The rollout opens with a shadow step; the canary fails 30 % of what it gets from
    /// the start, and serin rolls it back on its copies, before any user meets it.
    Shadow,
}

/// The demo config with a shadow step before the weight steps, a `shadow:` block and a
/// `mismatch` rule (status classes only: the two versions' bodies differ by design).
fn shadow_config(config: &str) -> String {
    config
        .replace(
            "        - { weight: 5, hold: 4s }\n",
            "        - { shadow: 100%, hold: 10s }\n        - { weight: 5, hold: 4s }\n",
        )
        .replace(
            "      analysis:\n",
            "      shadow: { methods: [GET, HEAD], max_in_flight: 64, compare: { status: true } }\n      analysis:\n",
        )
        .replace(
            "          - error_rate: { max: 5% }\n",
            "          - error_rate: { max: 5% }\n          - mismatch: { max: 5% }\n",
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// The canary starts failing 30 % of requests with 500.
    Errors,
    /// The canary becomes 40 ms slower.
    Latency,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[arg(long, value_enum, default_value_t = Scenario::Bad)]
    pub scenario: Scenario,
    /// What goes wrong in the bad scenario.
    #[arg(long, value_enum, default_value_t = FaultKind::Errors)]
    pub fault: FaultKind,
    /// When the fault starts, after the rollout began.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    pub fault_after: Duration,
    /// Requests per second the built-in load generator sends.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Stop after this long even if the rollout has not finished.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub limit: Duration,
}

/// Run-time switches of a demo backend.
#[derive(Debug, Default)]
pub struct Faults {
    /// Share of requests answered 500, as f64 bits.
    error_rate: AtomicU64,
    /// Added latency in µs.
    extra_us: AtomicU64,
}

impl Faults {
    pub fn new(error_rate: f64, extra: Duration) -> Arc<Self> {
        let f = Faults::default();
        f.error_rate.store(error_rate.to_bits(), Ordering::Relaxed);
        f.extra_us
            .store(extra.as_micros() as u64, Ordering::Relaxed);
        Arc::new(f)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Version name, returned in the body and the x-demo-version header.
    #[arg(long, default_value = "stable")]
    pub version: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Share of requests answered with 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Latency added to every response.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
}

/// A toy app version: answers `hello from VERSION`, slowly or failing as `faults` say.
pub async fn backend(listener: TcpListener, version: Arc<str>, faults: Arc<Faults>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (version, faults) = (version.clone(), faults.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (version, faults) = (version.clone(), faults.clone());
                async move {
                    let _ = req.into_body().collect().await;
                    let extra = faults.extra_us.load(Ordering::Relaxed);
                    // A little jitter around 1 ms so the figures look like a real app's.
                    let latency = Duration::from_micros(500 + fastrand::u64(0..1000) + extra);
                    tokio::time::sleep(latency).await;
                    let failed =
                        fastrand::f64() < f64::from_bits(faults.error_rate.load(Ordering::Relaxed));
                    let body = if failed {
                        format!("{version} failed\n")
                    } else {
                        format!("hello from {version}\n")
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    if failed {
                        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    if let Ok(v) = http::HeaderValue::from_str(&version) {
                        resp.headers_mut().insert("x-demo-version", v);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub async fn run_backend(args: BackendArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.error_rate),
        "--error-rate must be between 0.0 and 1.0, got {}",
        args.error_rate
    );
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (pick another with --listen)",
            args.listen
        )
    })?;
    tracing::info!(version = %args.version, addr = %args.listen, "demo backend listening");
    tokio::select! {
        _ = backend(listener, args.version.into(), Faults::new(args.error_rate, args.latency)) => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(())
}

async fn start_backend(name: &str, faults: Arc<Faults>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a demo backend")?;
    let addr = listener.local_addr()?;
    tokio::spawn(backend(listener, name.into(), faults));
    Ok(addr)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    let stable = start_backend("stable", Faults::new(0.0, Duration::ZERO)).await?;
    let canary_faults = Faults::new(0.0, Duration::ZERO);
    let canary = start_backend("canary", canary_faults.clone()).await?;
    let state_dir = std::env::temp_dir().join(format!("serin-demo-{}", std::process::id()));
    let config = match args.scenario {
        Scenario::Shadow => shadow_config(DEMO_CONFIG),
        _ => DEMO_CONFIG.to_string(),
    };
    let yaml = config
        .replace("STATE_DIR", &format!("\"{}\"", state_dir.display()))
        .replace("STABLE", &stable.to_string())
        .replace("CANARY", &canary.to_string());
    let snapshot = serin_config::parse_str(&yaml, "embedded demo config")?;
    let listeners = server::bind_all(&snapshot).await?;
    let web = listeners
        .first()
        .map(|l| l.local_addr)
        .context("the demo config has a listener")?;
    let dataplane = Arc::new(DataPlane::new(snapshot, 2)?);
    let control = Arc::new(Control::new(dataplane.clone(), now_ms()));
    let (stop_control, control_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(control.clone().run(control_stopped));
    let serving = server::serve(dataplane.clone(), listeners);
    // The admin API and the dashboard, on a free loopback port.
    let health = Arc::new(serin_control::admin::Health::default());
    health.set_ready();
    let admin = serin_control::admin::Admin::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        serin_control::admin::AdminContext {
            control: Some(control.clone()),
            ..serin_control::admin::AdminContext::new(health, dataplane.clone())
        },
    )
    .await?;
    let admin_url = format!("http://{}", admin.local_addr);
    let started = Instant::now();

    println!(
        "serin demo: serin at http://{web}/ in front of stable ({stable}) and canary ({canary})"
    );
    let shadow_first = match args.scenario {
        Scenario::Shadow => "10 s in shadow (copies of every GET, no user), then ",
        _ => "",
    };
    println!(
        "rollout: canary {shadow_first}5% → 25% → 50% → 100%, 4 s per step, judged every 500 ms on a 10 s window"
    );
    match args.scenario {
        Scenario::Shadow => println!(
            "scenario: shadow — the canary fails 30% of what it gets from the start; serin should roll it back in shadow, before any user meets it"
        ),
        Scenario::Good => {
            println!("scenario: good — the canary stays healthy and should be promoted")
        }
        Scenario::Bad => println!(
            "scenario: bad — the canary {} after {}; serin should roll it back on its own",
            match args.fault {
                FaultKind::Errors => "starts failing 30% of requests",
                FaultKind::Latency => "becomes 40 ms slower",
            },
            humantime::format_duration(args.fault_after)
        ),
    }
    println!("load: {} req/s as 500 users (x-user-id); try: curl -si http://{web}/ -H 'x-user-id: alice'", args.rate);
    println!("watch it: dashboard {admin_url}/ui · serin status --admin {admin_url} · metrics {admin_url}/metrics");
    println!();

    if args.scenario == Scenario::Shadow {
        canary_faults
            .error_rate
            .store(0.3f64.to_bits(), Ordering::Relaxed);
    }
    let load = tokio::spawn(generate_load(web, args.rate));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut fault_at: Option<u64> = None;
    let mut printed_events = 0;
    let mut finished_at: Option<(Instant, u64)> = None;
    let mut cursor = now_ms();
    let mut totals: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut second = 0u64;
    let mut view = View::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = tokio::signal::ctrl_c() => break,
        }
        second += 1;
        if args.scenario == Scenario::Bad
            && fault_at.is_none()
            && started.elapsed() >= args.fault_after
        {
            match args.fault {
                FaultKind::Errors => canary_faults
                    .error_rate
                    .store(0.3f64.to_bits(), Ordering::Relaxed),
                FaultKind::Latency => canary_faults.extra_us.store(40_000, Ordering::Relaxed),
            }
            fault_at = Some(now_ms());
            view.event(">>> fault injected into the canary");
        }
        let status = control.status("api");
        let phase = status.as_ref().map_or("none", |s| s.phase.as_str());
        let weight = status.as_ref().map_or(0, |s| s.canary_weight);
        let mut per_version = Vec::new();
        if let Some((newest, numbers)) = control.numbers_since("api", cursor) {
            cursor = newest;
            for (name, n) in &numbers {
                let total = totals.entry(name.clone()).or_default();
                total.0 += n.requests;
                total.1 += n.errors;
            }
            per_version = columns(&numbers);
        }
        view.tick(second, phase, weight, status.as_ref(), &per_version);
        let events = control.timeline("api");
        for e in events.iter().skip(printed_events) {
            let why = e
                .rule
                .as_ref()
                .map(|r| format!("{} — {}", r.rule, r.summary))
                .or(e.reason.clone())
                .unwrap_or_default();
            view.event(&format!(
                "decision: {:?} → canary {}%  {}",
                e.event,
                e.weights.get("canary").copied().unwrap_or(0),
                why
            ));
        }
        printed_events = events.len();
        if finished_at.is_none() && status.as_ref().is_some_and(|s| !s.phase.is_active()) {
            let canary_so_far = totals.get("canary").map_or(0, |t| t.0);
            finished_at = Some((Instant::now(), canary_so_far));
        }
        if finished_at.is_some_and(|(t, _)| t.elapsed() >= Duration::from_secs(2))
            || started.elapsed() >= args.limit
        {
            break;
        }
    }
    view.finish();
    load.abort();
    let _ = stop_control.send(true);

    println!();
    let status = control.status("api");
    let timeline = control.timeline("api");
    match status.as_ref().map(|s| s.phase) {
        Some(Phase::RolledBack) => {
            println!("result: serin rolled the canary back on its own.");
            if let Some(e) = timeline
                .iter()
                .find(|e| e.event == serin_judge::rollout::DecisionKind::RolledBack)
            {
                if let Some(r) = &e.rule {
                    println!("  rule: {} — {}", r.rule, r.summary);
                }
                if let Some(onset_ms) = fault_at {
                    println!(
                        "  fault → rollback: {} ms",
                        e.at_ms.saturating_sub(onset_ms)
                    );
                }
                if let Some(c) = e.versions.get("canary") {
                    println!(
                        "  canary over the window at the decision: {} requests, {} errors",
                        c.requests, c.errors
                    );
                }
            }
            if args.scenario == Scenario::Shadow {
                println!(
                    "  users' requests the canary answered: {}; copies it answered in shadow: {} ({} failed); answers compared: {} ({} differing)",
                    totals.get("canary").map_or(0, |t| t.0),
                    totals.get("canary:shadow").map_or(0, |t| t.0),
                    totals.get("canary:shadow").map_or(0, |t| t.1),
                    totals.get("canary:mismatch").map_or(0, |t| t.0),
                    totals.get("canary:mismatch").map_or(0, |t| t.1)
                );
            } else if let Some((_, canary_at_end)) = finished_at {
                let canary_total = totals.get("canary").map_or(0, |t| t.0);
                println!(
                    "  requests the canary failed in all: {}; requests that reached the canary after the rollback: {}",
                    totals.get("canary").map_or(0, |t| t.1),
                    canary_total.saturating_sub(canary_at_end)
                );
            }
        }
        Some(Phase::Promoted) => {
            println!("result: the canary passed every step and was promoted to 100%.")
        }
        other => println!(
            "result: the rollout did not finish within {} (it is {}).",
            humantime::format_duration(args.limit),
            other.map(Phase::as_str).unwrap_or("not running")
        ),
    }
    println!(
        "  decisions logged to {}",
        state_dir.join("api.timeline.jsonl").display()
    );
    serving.shutdown(Duration::from_secs(2)).await;
    admin.shutdown().await;
    let _ = std::fs::remove_dir_all(&state_dir);
    Ok(())
}

/// One column per version for the view: its name and its figures. The window's
/// pseudo-versions of a shadow step read as what they are: `<canary>:shadow` as the
/// copies the canary answered, with `<canary>:mismatch` (their comparisons) on the
/// same line.
fn columns(numbers: &BTreeMap<String, WindowNumbers>) -> Vec<(String, String)> {
    let ms = |v: Option<f64>| v.map_or("   - ".to_string(), |v| format!("{v:5.1}"));
    let mut columns = Vec::with_capacity(numbers.len());
    for (name, n) in numbers {
        if name.ends_with(":mismatch") {
            continue;
        }
        let Some(canary) = name.strip_suffix(":shadow") else {
            columns.push((
                name.clone(),
                format!(
                    "{:>4} req {:>3} err p95 {} ms",
                    n.requests,
                    n.errors,
                    ms(n.p95_ms)
                ),
            ));
            continue;
        };
        let p95 = n.p95_ms.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let mut figures = format!("copies {}, failed {}, p95 {p95}", n.requests, n.errors);
        if let Some(m) = numbers.get(&format!("{canary}:mismatch")) {
            figures.push_str(&format!(
                "; compared {}, differing {}",
                m.requests, m.errors
            ));
        }
        columns.push((format!("{canary} in shadow"), figures));
    }
    columns
}

/// Sends `rate` requests per second as 500 distinct users.
async fn generate_load(target: SocketAddr, rate: u32) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let uri: http::Uri = match format!("http://{target}/").parse() {
        Ok(u) => u,
        Err(_) => return,
    };
    loop {
        tick.tick().await;
        let user = format!("user-{}", fastrand::u32(0..500));
        let Ok(req) = Request::get(uri.clone())
            .header("x-user-id", user)
            .body(Empty::new())
        else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(resp) = client.request(req).await {
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

/// What the demo shows each second: on a terminal, a live view (the rollout's progress
/// through its steps and a line per version, redrawn in place, with decisions printed
/// above); otherwise plain lines, one per second, so logs and pipes read well.
enum View {
    Plain,
    Live {
        bars: indicatif::MultiProgress,
        rollout: indicatif::ProgressBar,
        versions: Vec<(String, indicatif::ProgressBar)>,
    },
}

impl View {
    fn new() -> Self {
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() {
            return View::Plain;
        }
        let bars = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{bar:30.cyan/blue}] step {pos}/{len}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("█▌ ");
        let rollout = bars.add(indicatif::ProgressBar::new(1).with_style(style));
        rollout.set_prefix("rollout");
        View::Live {
            bars,
            rollout,
            versions: Vec::new(),
        }
    }

    fn event(&self, text: &str) {
        match self {
            View::Plain => println!("       {text}"),
            View::Live { bars, .. } => {
                if bars.println(format!("  {text}")).is_err() {
                    println!("  {text}");
                }
            }
        }
    }

    fn tick(
        &mut self,
        second: u64,
        phase: &str,
        weight: u32,
        status: Option<&serin_control::runner::RolloutStatus>,
        per_version: &[(String, String)],
    ) {
        match self {
            View::Plain => {
                let mut line = format!("{second:>3}s  {phase:<11} canary {weight:>3}%");
                for (name, figures) in per_version {
                    line.push_str(&format!("  | {name}: {figures}"));
                }
                println!("{line}");
            }
            View::Live {
                bars,
                rollout,
                versions,
            } => {
                if let Some(s) = status {
                    let steps = s.steps.len().max(1) as u64;
                    rollout.set_length(steps);
                    let done = match s.phase {
                        Phase::Promoted => steps,
                        Phase::Pending => 0,
                        _ => (s.step as u64 + 1).min(steps),
                    };
                    rollout.set_position(done);
                }
                rollout.set_message(format!("{phase} · canary {weight}% · {second}s"));
                for (name, figures) in per_version {
                    let bar = match versions.iter().find(|(n, _)| n == name) {
                        Some((_, bar)) => bar.clone(),
                        None => {
                            let bar = bars.add(indicatif::ProgressBar::new_spinner());
                            bar.set_style(
                                indicatif::ProgressStyle::with_template("{prefix:>8}  {msg}")
                                    .unwrap_or_else(|_| {
                                        indicatif::ProgressStyle::default_spinner()
                                    }),
                            );
                            bar.set_prefix(name.clone());
                            versions.push((name.clone(), bar.clone()));
                            bar
                        }
                    };
                    bar.set_message(figures.clone());
                }
            }
        }
    }

    fn finish(&self) {
        if let View::Live {
            rollout, versions, ..
        } = self
        {
            rollout.abandon();
            for (_, bar) in versions {
                bar.abandon();
            }
            println!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(requests: u64, errors: u64, p95_ms: Option<f64>) -> WindowNumbers {
        WindowNumbers {
            requests,
            errors,
            p95_ms,
            ..WindowNumbers::default()
        }
    }

    #[test]
    fn a_shadow_steps_columns_read_as_copies_and_comparisons() {
        let window: BTreeMap<String, WindowNumbers> = [
            ("canary", numbers(0, 0, None)),
            ("canary:mismatch", numbers(100, 3, None)),
            ("canary:shadow", numbers(120, 34, Some(3.12))),
            ("stable", numbers(250, 1, Some(2.5))),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        assert_eq!(
            columns(&window),
            [
                (
                    "canary".to_string(),
                    "   0 req   0 err p95    -  ms".to_string()
                ),
                (
                    "canary in shadow".to_string(),
                    "copies 120, failed 34, p95 3.1 ms; compared 100, differing 3".to_string()
                ),
                (
                    "stable".to_string(),
                    " 250 req   1 err p95   2.5 ms".to_string()
                ),
            ]
        );
        let quiet: BTreeMap<String, WindowNumbers> =
            [("canary:shadow".to_string(), numbers(0, 0, None))].into();
        assert_eq!(
            columns(&quiet),
            [(
                "canary in shadow".to_string(),
                "copies 0, failed 0, p95 -".to_string()
            )]
        );
    }
}
