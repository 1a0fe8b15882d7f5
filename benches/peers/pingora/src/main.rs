//! The Pingora peer of serin's load benchmark (`benches/load/run`): a minimal proxy on
//! pingora-proxy configured like the other peers. Versions are chosen by weight (a
//! split table of the weights' sum, cycled by one counter, as nginx and HAProxy spread
//! a weighted round robin), and a version's endpoints in turn by pingora-load-balancing's
//! `RoundRobin` (Pingora has no least-connections selection). One thread, no logging,
//! Pingora's keep-alive upstream pool (128 idle connections). HTTP/1.1 and h2c (by its
//! preface) on `--listen`; with `--tls`, TLS 1.3 only with the one suite and group given,
//! h2 or HTTP/1.1 by ALPN.
//!
//! ```text
//! serin-bench-pingora --listen 127.0.0.1:8080 --pid-file /tmp/p.pid \
//!     --version 90=127.0.0.1:9001 --version 10=127.0.0.1:9002 \
//!     [--tls 127.0.0.1:8443 --cert cert.pem --key key.pem \
//!      --tls-suite TLS_AES_128_GCM_SHA256 --tls-group X25519]
//! ```
//! A version with several endpoints is `--version 90=A,B,C`.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::tls::ssl::SslVersion;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use pingora_proxy::{ProxyHttp, Session};

/// The proxy: the weighted split between versions and each version's endpoints.
struct Split {
    /// One entry per unit of weight, spread so that the versions interleave.
    table: Vec<usize>,
    next: AtomicUsize,
    versions: Vec<LoadBalancer<RoundRobin>>,
}

#[async_trait]
impl ProxyHttp for Split {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % self.table.len();
        let version = &self.versions[self.table[turn]];
        // No health checks: select always finds an endpoint; the key is unused by RoundRobin.
        let backend = version
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "version has no endpoint"))?;
        Ok(Box::new(HttpPeer::new(backend.addr, false, String::new())))
    }
}

/// Spreads the weights (divided by their greatest common divisor) over a table of their
/// sum in the order of nginx's smooth weighted round robin: 90/10 gives five of the
/// first version, one of the second, four of the first.
fn split_table(weights: &[usize]) -> Vec<usize> {
    let divisor = weights.iter().fold(0, |a, &b| gcd(a, b)).max(1);
    let weights: Vec<usize> = weights.iter().map(|w| w / divisor).collect();
    let total: usize = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut table = Vec::with_capacity(total);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += *w as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .unwrap_or((0, &0));
        current[best] -= total as i64;
        table.push(best);
    }
    table
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

struct Args {
    listen: String,
    pid_file: String,
    versions: Vec<(usize, Vec<String>)>,
    tls: Option<TlsArgs>,
}

struct TlsArgs {
    listen: String,
    cert: String,
    key: String,
    suite: String,
    group: String,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut listen = None;
    let mut pid_file = None;
    let mut versions = Vec::new();
    let (mut tls, mut cert, mut key, mut suite, mut group) = (None, None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--pid-file" => pid_file = Some(value),
            "--version" => {
                let (weight, endpoints) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--version {value}: expected WEIGHT=ADDR[,ADDR…]"))?;
                let weight: usize = weight
                    .parse()
                    .map_err(|e| format!("--version {value}: weight {weight:?}: {e}"))?;
                versions.push((weight, endpoints.split(',').map(str::to_owned).collect()));
            }
            "--tls" => tls = Some(value),
            "--cert" => cert = Some(value),
            "--key" => key = Some(value),
            "--tls-suite" => suite = Some(value),
            "--tls-group" => group = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if versions.is_empty() || versions.iter().all(|(w, _)| *w == 0) {
        return Err("give at least one --version WEIGHT=ADDR with a weight above 0".into());
    }
    let tls = match (tls, cert, key, suite, group) {
        (None, None, None, None, None) => None,
        (Some(listen), Some(cert), Some(key), Some(suite), Some(group)) => Some(TlsArgs {
            listen,
            cert,
            key,
            suite,
            group,
        }),
        _ => return Err("--tls needs --cert, --key, --tls-suite and --tls-group".into()),
    };
    Ok(Args {
        listen: listen.ok_or("--listen ADDR is required")?,
        pid_file: pid_file.ok_or("--pid-file PATH is required")?,
        versions,
        tls,
    })
}

fn tls_settings(tls: &TlsArgs) -> std::result::Result<TlsSettings, String> {
    let mut settings = TlsSettings::intermediate(&tls.cert, &tls.key)
        .map_err(|e| format!("TLS certificate {} / key {}: {e}", tls.cert, tls.key))?;
    settings
        .set_min_proto_version(Some(SslVersion::TLS1_3))
        .map_err(|e| format!("TLS 1.3 minimum: {e}"))?;
    settings
        .set_ciphersuites(&tls.suite)
        .map_err(|e| format!("--tls-suite {}: {e}", tls.suite))?;
    settings
        .set_groups_list(&tls.group)
        .map_err(|e| format!("--tls-group {}: {e}", tls.group))?;
    settings.enable_h2();
    Ok(settings)
}

fn run() -> std::result::Result<(), String> {
    let args = parse_args()?;
    let mut versions = Vec::with_capacity(args.versions.len());
    for (_, endpoints) in &args.versions {
        let lb = LoadBalancer::<RoundRobin>::try_from_iter(endpoints.iter().map(String::as_str))
            .map_err(|e| format!("endpoints {endpoints:?}: {e}"))?;
        versions.push(lb);
    }
    let weights: Vec<usize> = args.versions.iter().map(|(w, _)| *w).collect();
    let proxy = Split {
        table: split_table(&weights),
        next: AtomicUsize::new(0),
        versions,
    };

    let mut conf = ServerConf::default();
    conf.threads = 1;
    // One thread per service without work stealing, as Pingora runs at Cloudflare.
    conf.work_stealing = false;
    // Stop at once on SIGTERM (the benchmark's cleanup) rather than after Pingora's
    // default five-minute grace period.
    conf.grace_period_seconds = Some(0);
    conf.graceful_shutdown_timeout_seconds = Some(1);
    conf.pid_file = args.pid_file.clone();
    conf.upgrade_sock = format!("{}.upgrade.sock", args.pid_file);
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut service = pingora_proxy::http_proxy_service(&server.configuration, proxy);
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    if let Some(app) = service.app_logic_mut() {
        app.server_options = Some(options);
    }
    service.add_tcp(&args.listen);
    if let Some(tls) = &args.tls {
        service.add_tls_with_settings(&tls.listen, None, tls_settings(tls)?);
    }
    server.add_service(service);
    server.run_forever()
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serin-bench-pingora: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_table;

    #[test]
    fn ninety_ten_interleaves_one_in_ten() {
        assert_eq!(split_table(&[90, 10]), [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(split_table(&[2, 1]), [0, 1, 0]);
        assert_eq!(split_table(&[0, 3]), [1]);
    }
}
