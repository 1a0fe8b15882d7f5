//! Fleet mode's load on etcd and on the leader (docs/fleet.md, "Limits"): N simulated
//! instances publish a realistic sample record each tick under their leases to one local
//! etcd this bench starts (free ports, a temporary data directory); a leader-side watch
//! of `P/samples/` collects each tick's N records, decodes and merges them exactly.
//!
//! Measured per N: the leader's decode + merge time per tick; the time from the tick's
//! end (when instances publish) to "all N records of the tick merged"; etcd's puts and
//! keep-alives per second and bytes per second; bytes per sample; etcd's CPU and peak
//! RSS (from /proc) over the run. Printed as a Markdown table.
//!
//! `benches/fleet/run` runs it (`--features fleet`); `-- --quick`, `-- --ticks T`,
//! `-- --instances 10,50,200`, `-- --rps R` (the fleet's requests per second, shared
//! out over the instances).
//!
//! `-- --fault-to-zero` measures instead the time from a canary's fault to every one of
//! 3 real serin instances at canary weight 0 (`fault.rs`; `--repeats R`, 10 by default,
//! 3 with `--quick`).

mod fault;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serin_control::fleet::etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use serin_control::fleet::sample::{SampleRecord, ServiceSample};
use serin_judge::window::Sample;
use tokio::sync::Mutex;

const TICK_MS: u64 = 1_000;
const LEASE_TTL_S: i64 = 5;
const PREFIX: &str = "/serin/bench/";

struct Args {
    instances: Vec<usize>,
    ticks: u64,
    rps: u64,
    /// Requests per second on each instance, instead of `rps` shared out.
    rps_each: Option<u64>,
    /// `--fault-to-zero`: the fault-to-all-zero measurement instead of the load table.
    fault_to_zero: bool,
    /// Repetitions of the fault-to-all-zero measurement at each interval.
    repeats: usize,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        instances: vec![10, 50, 200],
        ticks: 20,
        rps: 1_000,
        rps_each: None,
        fault_to_zero: false,
        repeats: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => {
                out.instances = vec![10, 50];
                out.ticks = 5;
                out.repeats = 3;
            }
            "--repeats" => {
                out.repeats = value("--repeats")?
                    .parse()
                    .map_err(|e| format!("--repeats: {e}"))?
            }
            "--ticks" => {
                out.ticks = value("--ticks")?
                    .parse()
                    .map_err(|e| format!("--ticks: {e}"))?
            }
            "--rps-each" => {
                out.rps_each = Some(
                    value("--rps-each")?
                        .parse()
                        .map_err(|e| format!("--rps-each: {e}"))?,
                )
            }
            "--rps" => out.rps = value("--rps")?.parse().map_err(|e| format!("--rps: {e}"))?,
            "--instances" => {
                out.instances = value("--instances")?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|e| format!("--instances: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--fault-to-zero" => out.fault_to_zero = true,
            "--bench" => {} // cargo bench passes it
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(out)
}

/// etcd, started on free loopback ports with a temporary data directory; killed on drop.
struct Etcd {
    child: Child,
    url: String,
    dir: PathBuf,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr()
        .map_err(|e| format!("local addr: {e}"))?
        .port())
}

impl Etcd {
    fn start() -> Result<Etcd, String> {
        let dir = std::env::temp_dir().join(format!("serin-fleet-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (client, peer) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("bench={peer}")])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot start etcd ({e}): install etcd-server (scripts/test does)")
            })?;
        Ok(Etcd { child, url, dir })
    }

    /// (CPU seconds used so far, resident set in bytes), from /proc.
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = fields
            .get(11..13)
            .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0);
        // SAFETY: sysconf only reads a constant of the system.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        (ticks as f64 / hz, rss_kib * 1024)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lognormal latencies in µs around `median_us` (Box–Muller).
fn lognormal(rng: &mut fastrand::Rng, n: u64, median_us: f64, sigma: f64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (median_us * (sigma * z).exp()).clamp(1.0, 3.6e9) as u64
        })
        .collect()
}

/// A version's numbers as serin's recorder keeps them (proxy/src/record.rs: 1 µs to 1 h,
/// 3 significant digits), buckets as the sample record carries them.
fn sample(latencies: &[u64], errors: u64) -> Sample {
    let mut h = match Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3) {
        Ok(h) => h,
        Err(_) => return Sample::default(),
    };
    for &l in latencies {
        let _ = h.record(l);
    }
    Sample {
        requests: latencies.len() as u64 + errors,
        errors,
        latency: h
            .iter_recorded()
            .map(|v| {
                let hi = v.value_iterated_to();
                (h.lowest_equivalent(hi), hi, v.count_since_last_iteration())
            })
            .collect(),
        ..Sample::default()
    }
}

/// One instance's tick: `rps` requests, 95 % to stable and 5 % to the canary, latencies
/// lognormal around 20 ms, 0.3 % errors.
fn realistic(rng: &mut fastrand::Rng, rps: u64) -> SampleRecord {
    let canary = rps.div_ceil(20);
    let stable = rps.saturating_sub(canary);
    let errors = |n: u64| (n * 3).div_ceil(1_000).min(n);
    SampleRecord {
        tick: 0,
        ticks: 1,
        services: vec![ServiceSample {
            service: "api".to_string(),
            versions: vec![
                (
                    "canary".to_string(),
                    sample(
                        &lognormal(rng, canary - errors(canary), 20_000.0, 0.6),
                        errors(canary),
                    ),
                ),
                (
                    "stable".to_string(),
                    sample(
                        &lognormal(rng, stable - errors(stable), 20_000.0, 0.6),
                        errors(stable),
                    ),
                ),
            ],
        }],
    }
}

#[derive(Default)]
struct Counters {
    puts: u64,
    put_bytes: u64,
    keep_alives: u64,
    failures: u64,
}

/// One simulated instance: its own connection and lease; at each tick's end it puts the
/// tick's record at `P/samples/<name>`, and keeps its lease alive every other tick.
async fn publisher(
    url: String,
    name: String,
    records: Vec<SampleRecord>,
    first: u64,
    last: u64,
    counters: Arc<Mutex<Counters>>,
) -> Result<(), String> {
    let mut client = Client::connect([url.as_str()], None)
        .await
        .map_err(|e| format!("{name}: connect: {e}"))?;
    let lease = client
        .lease_grant(LEASE_TTL_S, None)
        .await
        .map_err(|e| format!("{name}: lease: {e}"))?
        .id();
    let (mut keeper, mut responses) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("{name}: keep-alive: {e}"))?;
    let key = format!("{PREFIX}samples/{name}");
    for tick in first..=last {
        let wake = (tick + 1) * TICK_MS;
        tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now_ms()))).await;
        let mut template = records[(tick % records.len() as u64) as usize].clone();
        template.tick = tick;
        let record = template.encode();
        let bytes = (key.len() + record.len()) as u64;
        let put = client
            .put(
                key.as_str(),
                record,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await;
        let mut c = counters.lock().await;
        match put {
            Ok(_) => {
                c.puts += 1;
                c.put_bytes += bytes;
            }
            Err(_) => c.failures += 1,
        }
        drop(c);
        if tick % 2 == 0 && keeper.keep_alive().await.is_ok() && responses.message().await.is_ok() {
            counters.lock().await.keep_alives += 1;
        }
    }
    let _ = client.lease_revoke(lease).await;
    Ok(())
}

struct TickResult {
    merge: Duration,
    end_to_end_ms: u64,
}

/// The leader's side: every PUT under `P/samples/`, grouped by tick; when a tick has all
/// `n` instances' records, they are decoded and merged (timed), and the tick is done.
async fn leader(
    url: String,
    n: usize,
    first: u64,
    last: u64,
) -> Result<(Vec<TickResult>, SampleRecord), String> {
    let mut client = Client::connect([url.as_str()], None)
        .await
        .map_err(|e| format!("leader: connect: {e}"))?;
    let mut stream = client
        .watch(
            format!("{PREFIX}samples/"),
            Some(WatchOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| format!("leader: watch: {e}"))?;
    let mut pending: BTreeMap<u64, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let mut results = Vec::new();
    let mut last_merged = SampleRecord::default();
    let deadline = Instant::now() + Duration::from_millis((last - first + 5) * TICK_MS + 10_000);
    while Instant::now() < deadline {
        let Ok(message) = tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        else {
            if pending.keys().next().is_none_or(|&t| t > last)
                && results.len() as u64 > last - first
            {
                break;
            }
            continue;
        };
        let Some(resp) = message.map_err(|e| format!("leader: watch: {e}"))? else {
            break;
        };
        for event in resp.events() {
            if event.event_type() != EventType::Put {
                continue;
            }
            let Some(kv) = event.kv() else { continue };
            let instance = String::from_utf8_lossy(kv.key()).into_owned();
            // The tick, without a full decode: format byte, then a varint.
            let Some(tick) = tick_of(kv.value()) else {
                continue;
            };
            let of_tick = pending.entry(tick).or_default();
            of_tick.insert(instance, kv.value().to_vec());
            if of_tick.len() == n {
                let records = pending.remove(&tick).unwrap_or_default();
                let start = Instant::now();
                let mut merged: Option<SampleRecord> = None;
                for bytes in records.values() {
                    let Ok(record) = SampleRecord::decode(bytes) else {
                        return Err(format!("leader: tick {tick}: a record does not decode"));
                    };
                    match merged.as_mut() {
                        None => merged = Some(record),
                        Some(m) => m.merge(&record),
                    }
                }
                let merge = start.elapsed();
                let end_to_end_ms = now_ms().saturating_sub((tick + 1) * TICK_MS);
                results.push(TickResult {
                    merge,
                    end_to_end_ms,
                });
                last_merged = merged.unwrap_or_default();
                if tick >= last {
                    return Ok((results, last_merged));
                }
            }
        }
    }
    Ok((results, last_merged))
}

fn tick_of(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, b) in bytes.get(1..)?.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(
    etcd: &Etcd,
    n: usize,
    ticks: u64,
    rps: u64,
    rps_each: Option<u64>,
) -> Result<String, String> {
    // Clear the previous run's keys (their leases were revoked; this is for safety).
    let mut admin = Client::connect([etcd.url.as_str()], None)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = admin
        .delete(
            PREFIX,
            Some(serin_control::fleet::etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    let per_instance = rps_each.unwrap_or_else(|| rps.div_ceil(n as u64)).max(1);
    let mut rng = fastrand::Rng::with_seed(n as u64);
    let templates: Vec<Vec<SampleRecord>> = (0..n)
        .map(|_| (0..3).map(|_| realistic(&mut rng, per_instance)).collect())
        .collect();
    let sample_bytes: f64 = templates
        .iter()
        .flatten()
        .map(|r| r.encode().len() as f64)
        .sum::<f64>()
        / (n * 3) as f64;
    // Two ticks to connect and warm up, then `ticks` measured.
    let first = tick_now() + 2;
    let last = first + ticks - 1;
    let counters = Arc::new(Mutex::new(Counters::default()));
    let leader = tokio::spawn(leader(etcd.url.clone(), n, first, last));
    let mut tasks = Vec::new();
    for (i, records) in templates.into_iter().enumerate() {
        tasks.push(tokio::spawn(publisher(
            etcd.url.clone(),
            format!("ingress-{i:04}"),
            records,
            first,
            last,
            counters.clone(),
        )));
    }
    // Wait for the first measured tick to start, then sample etcd while it runs.
    tokio::time::sleep(Duration::from_millis(
        (first * TICK_MS).saturating_sub(now_ms()),
    ))
    .await;
    let (cpu0, _) = etcd.usage();
    let wall0 = Instant::now();
    let mut peak_rss = 0;
    let (cpu1, wall) = loop {
        let (cpu, rss) = etcd.usage();
        peak_rss = peak_rss.max(rss);
        if now_ms() >= (last + 1) * TICK_MS + 500 {
            break (cpu, wall0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for task in tasks {
        task.await.map_err(|e| format!("publisher: {e}"))??;
    }
    let (results, merged) = leader.await.map_err(|e| format!("leader: {e}"))??;
    let c = counters.lock().await;
    let secs = wall.as_secs_f64();
    // Every instance puts once a tick from the first measured tick to the last.
    let measured = (ticks * TICK_MS) as f64 / 1e3;
    let mut merge: Vec<f64> = results
        .iter()
        .map(|r| r.merge.as_secs_f64() * 1e3)
        .collect();
    merge.sort_by(f64::total_cmp);
    let mut e2e: Vec<f64> = results.iter().map(|r| r.end_to_end_ms as f64).collect();
    e2e.sort_by(f64::total_cmp);
    let requests = merged.sample("api", "stable").map_or(0, |s| s.requests)
        + merged.sample("api", "canary").map_or(0, |s| s.requests);
    Ok(format!(
        "| {n} | {per_instance} | {complete}/{ticks} | {requests} | {m50:.2} / {m99:.2} / {mmax:.2} | \
         {e50:.0} / {e99:.0} / {emax:.0} | {puts:.0} | {ka:.1} | {kib:.1} | {sample_bytes:.0} | \
         {cpu:.0} % | {rss:.0} | {fail} |",
        complete = results.len(),
        m50 = percentile(&merge, 0.5),
        m99 = percentile(&merge, 0.99),
        mmax = merge.last().copied().unwrap_or(f64::NAN),
        e50 = percentile(&e2e, 0.5),
        e99 = percentile(&e2e, 0.99),
        emax = e2e.last().copied().unwrap_or(f64::NAN),
        puts = c.puts as f64 / measured,
        ka = c.keep_alives as f64 / measured,
        kib = c.put_bytes as f64 / measured / 1024.0,
        cpu = (cpu1 - cpu0) / secs * 100.0,
        rss = peak_rss as f64 / (1024.0 * 1024.0),
        fail = c.failures,
    ))
}

fn tick_now() -> u64 {
    now_ms() / TICK_MS
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        let etcd = Etcd::start()?;
        // Wait until etcd answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Client::connect([etcd.url.as_str()], None).await {
                if c.get("health", Some(GetOptions::new().with_count_only())).await.is_ok() {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err("etcd did not answer within 20 s".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if args.fault_to_zero {
            return fault::fault_to_all_zero(&etcd.url, args.repeats).await;
        }
        let load = match args.rps_each {
            Some(each) => format!("{each} req/s on each instance"),
            None => format!("{} req/s over the fleet", args.rps),
        };
        println!(
            "fleet: {} ticks of {TICK_MS} ms per row, {load}, lease TTL {LEASE_TTL_S} s, one local etcd",
            args.ticks
        );
        println!();
        println!("| instances | req/s each | ticks merged | requests in the last merge | merge ms p50 / p99 / max | tick end → merged ms p50 / p99 / max | puts/s | keep-alives/s | KiB/s put | bytes/sample | etcd CPU | etcd peak RSS MiB | failed puts |");
        println!("|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &args.instances {
            let row = run(&etcd, n, args.ticks, args.rps, args.rps_each).await?;
            println!("{row}");
        }
        Ok::<(), String>(())
    });
    if let Err(why) = result {
        eprintln!("fleet bench: {why}");
        std::process::exit(1);
    }
}
