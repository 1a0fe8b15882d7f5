//! `--fault-to-zero`: the time from a canary's fault to the last of 3 real serin
//! instances serving it at weight 0. Three `serin run` processes in fleet mode on the
//! bench's etcd, two in-process backends (stable, and a canary that turns to 100 % 500
//! at a random moment), open-loop load spread over the three; each instance's admin API
//! (`GET /api/v1/services/api`, `weights.canary`) is polled every 10 ms. Every
//! repetition starts a fresh fleet under its own etcd prefix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The fleet's requests per second, shared over the three instances.
const RPS: u64 = 300;
const CANARY_WEIGHT: u64 = 10;
const POLL: Duration = Duration::from_millis(10);
/// A repetition that has not reached 0 everywhere by then counts as failed.
const GIVE_UP: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The serin binary to run: `SERIN_BIN`, else the release build, else the debug build.
fn serin_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SERIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    for profile in ["release", "debug"] {
        let path = Path::new("target").join(profile).join("serin");
        if path.exists() {
            return Ok(path);
        }
    }
    Err(
        "no serin binary: build one with `cargo build --release --features fleet` \
         (or set SERIN_BIN)"
            .to_string(),
    )
}

/// A backend answering every request with `status` (changed while it runs); it stops
/// accepting on drop.
struct Backend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn backend() -> Result<Backend, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("backend bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("backend addr: {e}"))?;
    let status = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicU64::new(0));
    let (answer, counted) = (status.clone(), hits.clone());
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (answer, counted) = (answer.clone(), counted.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let status = answer.load(Ordering::Relaxed);
                    async move {
                        hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(b"ok")))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(Backend {
        addr,
        status,
        hits,
        accept,
    })
}

/// One `serin run`; killed on drop.
struct Serin {
    child: Child,
    web: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Serin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(
    stable: SocketAddr,
    canary: SocketAddr,
    etcd: &str,
    prefix: &str,
    instance: usize,
    state_dir: &Path,
    interval: &str,
) -> String {
    format!(
        r#"state_dir: "{state}"
admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - {{ name: web, listen: 127.0.0.1:0 }}
routes:
  - {{ listener: web, match: {{ host: "*", path_prefix: / }}, service: api }}
services:
  - name: api
    versions:
      - {{ name: stable, endpoints: [{stable}] }}
      - {{ name: canary, endpoints: [{canary}] }}
    split:
      weights: {{ stable: 100, canary: 0 }}
    timeouts: {{ connect: 1s, request: 5s }}
    rollout:
      baseline: stable
      canary: canary
      steps:
        - {{ weight: {CANARY_WEIGHT}, hold: 1h }}
        - {{ weight: 100 }}
      analysis:
        interval: {interval}
        window: 5s
        min_requests: 20
        confidence: 99%
        rules:
          - error_rate: {{ max: 1% }}
cluster:
  etcd: {{ endpoints: [{etcd}], prefix: {prefix} }}
  instance: web-{instance}
  lease_ttl: 2s
"#,
        state = state_dir.display()
    )
}

/// Starts `serin run` on `config` and waits (up to 30 s) for its addresses and readiness
/// in its JSON log; its log is then drained on a thread of its own.
fn start_serin(binary: &Path, config: &Path) -> Result<Serin, String> {
    use std::io::BufRead;
    let mut child = Command::new(binary)
        .args(["run", "--log-format", "json", "--workers", "1", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let stderr = child.stderr.take().ok_or("serin's stderr")?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            // Once the bench stops listening the rest of the log is only drained.
            let _ = tx.send(line);
        }
    });
    let mut serin = Serin {
        child,
        web: SocketAddr::from(([0, 0, 0, 0], 0)),
        admin: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while !ready {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .map_err(|_| format!("{}: serin not ready within 30 s", config.display()))?;
        let Ok(line) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let addr = line["addr"].as_str().and_then(|a| a.parse().ok());
        match (line["message"].as_str(), addr) {
            (Some("admin listening"), Some(addr)) => serin.admin = addr,
            (Some("listening"), Some(addr)) => serin.web = addr,
            (Some("serin is ready"), _) => ready = true,
            _ => {}
        }
    }
    Ok(serin)
}

/// `weights.canary` of `serin`'s admin view (None if it does not answer).
async fn canary_weight(client: &HttpClient, admin: SocketAddr) -> Option<u64> {
    let uri = format!("http://{admin}/api/v1/services/api").parse().ok()?;
    let response = client.get(uri).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let view: serde_json::Value = serde_json::from_slice(&body).ok()?;
    view["weights"]["canary"].as_u64()
}

/// Open-loop load: `RPS` requests a second, round-robin over `webs`, each sent on its
/// own task whether or not earlier ones have answered.
fn spread_load(client: HttpClient, webs: Vec<SocketAddr>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_micros(1_000_000 / RPS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            every.tick().await;
            let Ok(uri) = format!("http://{}/", webs[i % webs.len()]).parse() else {
                continue;
            };
            let client = client.clone();
            tokio::spawn(async move {
                if let Ok(response) = client.get(uri).await {
                    let _ = response.into_body().collect().await;
                }
            });
            i += 1;
        }
    });
}

/// "500ms" or "1s" as a duration.
fn tick_of(interval: &str) -> Result<Duration, String> {
    let (number, unit) = match interval.strip_suffix("ms") {
        Some(ms) => (ms, 1),
        None => (interval.strip_suffix('s').unwrap_or(interval), 1_000),
    };
    let number: u64 = number
        .parse()
        .map_err(|e| format!("interval {interval}: {e}"))?;
    Ok(Duration::from_millis(number * unit))
}

/// One repetition: a fresh fleet, a fault at a random moment, the time from it to the
/// last instance at canary weight 0 (None if that took longer than `GIVE_UP`).
async fn once(
    binary: &Path,
    etcd: &str,
    interval: &str,
    run: usize,
    dir: &Path,
) -> Result<Option<Duration>, String> {
    let (stable, canary) = (backend().await?, backend().await?);
    let prefix = format!("/serin/fault-{}-{run}/", interval.replace('.', "_"));
    let run_dir = dir.join(format!("{interval}-{run}"));
    let mut fleet = Vec::new();
    for i in 1..=3 {
        let state_dir = run_dir.join(format!("state-{i}"));
        std::fs::create_dir_all(&state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
        let path = run_dir.join(format!("serin-{i}.yaml"));
        let yaml = config(
            stable.addr,
            canary.addr,
            etcd,
            &prefix,
            i,
            &state_dir,
            interval,
        );
        std::fs::write(&path, yaml).map_err(|e| format!("{}: {e}", path.display()))?;
        fleet.push(start_serin(binary, &path)?);
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let stop = Arc::new(AtomicBool::new(false));
    spread_load(
        client.clone(),
        fleet.iter().map(|s| s.web).collect(),
        stop.clone(),
    );

    let result = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = true;
            for serin in &fleet {
                all &= canary_weight(&client, serin.admin).await == Some(CANARY_WEIGHT);
            }
            if all {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{interval} run {run}: the fleet not at the first step in 30 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Healthy canary traffic first (judged and kept), then the fault at a moment
        // uniform over two ticks, so its phase against the tick boundary is random.
        let healthy = Instant::now() + Duration::from_secs(30);
        while canary.hits.load(Ordering::Relaxed) < 60 && Instant::now() < healthy {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let tick = tick_of(interval)?;
        tokio::time::sleep(tick.mul_f64(2.0 * fastrand::f64())).await;
        let before: Vec<_> = {
            let mut weights = Vec::new();
            for serin in &fleet {
                weights.push(canary_weight(&client, serin.admin).await);
            }
            weights
        };
        if before.iter().any(|w| *w != Some(CANARY_WEIGHT)) {
            return Err(format!(
                "{interval} run {run}: the healthy canary was not kept: {before:?}"
            ));
        }
        canary.status.store(500, Ordering::Relaxed);
        let onset = Instant::now();
        let mut at_zero: Vec<Option<Duration>> = vec![None; fleet.len()];
        while at_zero.iter().any(Option::is_none) && onset.elapsed() < GIVE_UP {
            // Every instance polled at once: one slow answer does not delay the others.
            let polls: Vec<_> = fleet
                .iter()
                .map(|serin| {
                    let (client, admin) = (client.clone(), serin.admin);
                    tokio::spawn(async move { canary_weight(&client, admin).await })
                })
                .collect();
            let mut weights = Vec::with_capacity(polls.len());
            for poll in polls {
                weights.push(poll.await.ok().flatten());
            }
            let seen = onset.elapsed();
            for (slot, weight) in at_zero.iter_mut().zip(weights) {
                if slot.is_none() && weight == Some(0) {
                    *slot = Some(seen);
                }
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(at_zero
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .and_then(|t| t.into_iter().max()))
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    drop(fleet);
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

/// Runs `repeats` repetitions at each interval and prints a Markdown table.
pub async fn fault_to_all_zero(etcd: &str, repeats: usize) -> Result<(), String> {
    let binary = serin_binary()?;
    let dir = std::env::temp_dir().join(format!("serin-fault-bench-{}", std::process::id()));
    println!(
        "fault to canary 0 on all of 3 instances: {} ({RPS} req/s over the fleet, canary at \
         {CANARY_WEIGHT} %, {repeats} runs an interval, admin API polled every {} ms)",
        binary.display(),
        POLL.as_millis()
    );
    println!();
    println!(
        "| interval | runs | fault → last instance at 0, ms median / min / max | every run, ms |"
    );
    println!("|---|---:|---|---|");
    for interval in ["500ms", "1s"] {
        let mut times = Vec::new();
        let mut failed = 0;
        for run in 0..repeats {
            match once(&binary, etcd, interval, run, &dir).await? {
                Some(t) => times.push(t.as_millis() as u64),
                None => failed += 1,
            }
        }
        let every = times
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        times.sort_unstable();
        let figures = match (times.first(), times.last()) {
            (Some(min), Some(max)) => {
                let mid = times.len() / 2;
                let median = if times.len() % 2 == 0 {
                    (times[mid - 1] + times[mid]) / 2
                } else {
                    times[mid]
                };
                format!("{median} / {min} / {max}")
            }
            _ => "-".to_string(),
        };
        let failed = if failed > 0 {
            format!(" ({failed} not at 0 within {} s)", GIVE_UP.as_secs())
        } else {
            String::new()
        };
        println!("| {interval} | {repeats} | {figures} | {every}{failed} |");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
