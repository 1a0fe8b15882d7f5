//! `serin demo` and `serin demo-backend`: serin's job on an embedded default, with no
//! files and no other processes — two built-in app versions, serin splitting 90/10 in
//! front of them, steady load, and the per-version figures serin measures, each second.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serin_proxy::{server, DataPlane, Interval};
use tokio::net::TcpListener;

/// The embedded default: the quickstart's shape on free loopback ports.
const DEMO_CONFIG: &str = r#"
admin: { listen: 127.0.0.1:0 }
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
      weights: { stable: 90, canary: 10 }
      sticky: { header: x-user-id }
      force: { header: x-serin-version }
    timeouts: { connect: 1s, request: 5s }
"#;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests per second the built-in load generator sends.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Share of canary requests that fail with 500 (0.0–1.0).
    #[arg(long, default_value_t = 0.02)]
    pub canary_error_rate: f64,
    /// Extra latency of the canary.
    #[arg(long, default_value = "3ms", value_parser = humantime::parse_duration)]
    pub canary_latency: Duration,
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

/// A toy app version: answers `hello from VERSION`, slowly or failing as told.
pub async fn backend(listener: TcpListener, version: Arc<str>, error_rate: f64, latency: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let version = version.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let version = version.clone();
                async move {
                    let _ = req.into_body().collect().await;
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let failed = fastrand::f64() < error_rate;
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
        _ = backend(listener, args.version.into(), args.error_rate, args.latency) => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    Ok(())
}

async fn start_backend(
    name: &str,
    error_rate: f64,
    latency: Duration,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a demo backend")?;
    let addr = listener.local_addr()?;
    tokio::spawn(backend(listener, name.into(), error_rate, latency));
    Ok(addr)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.canary_error_rate),
        "--canary-error-rate must be between 0.0 and 1.0, got {}",
        args.canary_error_rate
    );
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    let stable = start_backend("stable", 0.0, Duration::from_millis(1)).await?;
    let canary = start_backend(
        "canary",
        args.canary_error_rate,
        Duration::from_millis(1) + args.canary_latency,
    )
    .await?;
    let yaml = DEMO_CONFIG
        .replace("STABLE", &stable.to_string())
        .replace("CANARY", &canary.to_string());
    let snapshot = serin_config::parse_str(&yaml, "embedded demo config")?;
    let listeners = server::bind_all(&snapshot).await?;
    let web = listeners
        .first()
        .map(|l| l.local_addr)
        .context("the demo config has a listener")?;
    let dataplane = Arc::new(DataPlane::new(snapshot, 2)?);
    let serving = server::serve(dataplane.clone(), listeners);

    println!("serin demo: stable at {stable}, canary at {canary}; serin at http://{web}/ splitting 90/10 (sticky on x-user-id)");
    println!(
        "load: {} req/s for {}; the canary fails {:.1}% of requests and is {} slower",
        args.rate,
        humantime::format_duration(args.duration),
        args.canary_error_rate * 100.0,
        humantime::format_duration(args.canary_latency)
    );
    println!("try meanwhile: curl -si http://{web}/ -H 'x-user-id: alice'");
    println!();

    let load = tokio::spawn(generate_load(web, args.rate));
    let mut totals = [Interval::default(), Interval::default()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    dataplane.take_intervals();
    let seconds = args.duration.as_secs().max(1);
    for second in 1..=seconds {
        tokio::select! {
            _ = tick.tick() => {},
            _ = tokio::signal::ctrl_c() => break,
        }
        let intervals = dataplane.take_intervals();
        let Some(api) = intervals.first() else { break };
        let mut line = format!("{second:>3}s");
        for (i, (name, interval)) in api.versions.iter().enumerate() {
            line.push_str(&format!("  {name:>6}: {}", figures(interval)));
            if let Some(total) = totals.get_mut(i) {
                total.merge(interval);
            }
        }
        println!("{line}");
    }
    load.abort();
    let all: u64 = totals.iter().map(Interval::requests).sum();
    println!();
    println!("in all: {all} requests");
    for (name, total) in ["stable", "canary"].iter().zip(&totals) {
        let share = if all > 0 {
            100.0 * total.requests() as f64 / all as f64
        } else {
            0.0
        };
        println!("  {name:>6}: {share:5.1}% of traffic, {}", figures(total));
    }
    serving.shutdown(Duration::from_secs(2)).await;
    Ok(())
}

fn figures(i: &Interval) -> String {
    let requests = i.requests();
    let error_rate = if requests > 0 {
        100.0 * i.errors() as f64 / requests as f64
    } else {
        0.0
    };
    let ms = |q: f64| i.latency_us.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{requests:>5} req, {:>3} errors ({error_rate:4.1}%), p50 {:5.1} ms, p95 {:5.1} ms, p99 {:5.1} ms",
        i.errors(),
        ms(0.50),
        ms(0.95),
        ms(0.99)
    )
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
