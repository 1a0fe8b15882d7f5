//! The ops commands (`serin status`, `promote`, `pause`, `resume`, `abort`, `weights`,
//! `reload`, `timeline`, `report`, `drill`): clients of a running serin's admin API
//! (docs/admin.md).
//!
//! Exit codes: 0 done, 1 refused or failed (the API's message is printed), 2 usage.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serin_control::wire::{
    ApiError, LastReload, ReloadRefused, ServiceView, TimelineEvent, VersionView,
};

mod drill;
mod fleet;
mod report;

pub use drill::{drill, DrillArgs};
pub use report::{report, ReportArgs};

/// Where the admin API is.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// The admin API of the serin to talk to (its `admin.listen`). A bearer token, if it
    /// needs one, is taken from $SERIN_ADMIN_TOKEN.
    #[arg(
        long,
        value_name = "URL",
        env = "SERIN_ADMIN",
        default_value = "http://127.0.0.1:9901"
    )]
    pub admin: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Only this service.
    pub service: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The service (as named in the config).
    pub service: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArgs {
    /// The service (as named in the config).
    pub service: String,
    /// `VERSION=WEIGHT` pairs, weights 0 to 100; versions not named keep theirs.
    #[arg(required = true, value_name = "VERSION=WEIGHT", value_parser = parse_weight)]
    pub weights: Vec<(String, u32)>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TimelineArgs {
    /// The service (as named in the config).
    pub service: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Promote,
    Pause,
    Resume,
    Abort,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Promote => "promote",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Abort => "abort",
        }
    }
}

/// `stable=80` → ("stable", 80).
fn parse_weight(text: &str) -> Result<(String, u32), String> {
    let Some((version, weight)) = text.split_once('=') else {
        return Err(format!(
            "\"{text}\" is not VERSION=WEIGHT (e.g. stable=80 canary=20)"
        ));
    };
    let version = version.trim();
    if version.is_empty() {
        return Err(format!("\"{text}\" names no version (e.g. stable=80)"));
    }
    let weight = weight.trim().parse::<u32>().map_err(|_| {
        format!("\"{text}\": the weight must be a whole number from 0 to 100 (e.g. {version}=80)")
    })?;
    Ok((version.to_string(), weight))
}

pub fn status(args: StatusArgs) -> ExitCode {
    let path = match &args.service {
        Some(service) => format!("/api/v1/services/{}", segment(service)),
        None => "/api/v1/services".to_string(),
    };
    run(&args.admin, Method::GET, &path, None, |body| {
        if args.json {
            return print_json(body);
        }
        let services: Vec<ServiceView> = if args.service.is_some() {
            vec![decode(body)?]
        } else {
            decode(body)?
        };
        if services.is_empty() {
            println!("no services");
        }
        for (i, service) in services.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", service_table(service));
        }
        Ok(())
    })
}

pub fn command(args: ServiceArgs, verb: Verb) -> ExitCode {
    let path = format!(
        "/api/v1/services/{}/{}",
        segment(&args.service),
        verb.as_str()
    );
    run_answer(&args.admin, Method::POST, &path, None, |status, body| {
        if let Some(note) = queued_note(status) {
            eprintln!("{note}");
        }
        if args.json {
            return print_json(body);
        }
        let service: ServiceView = decode(body)?;
        print!("{}", service_table(&service));
        Ok(())
    })
}

/// What the CLI says when the API took a command without applying it yet (202: in fleet
/// mode the leader applies commands, and none is leading now); `None` when it was applied.
fn queued_note(status: StatusCode) -> Option<&'static str> {
    (status == StatusCode::ACCEPTED).then_some(
        "queued: applied when a leader is elected (not applied yet); the service as it stands now:",
    )
}

pub fn weights(args: WeightsArgs) -> ExitCode {
    let mut seen = std::collections::HashSet::new();
    if let Some((twice, _)) = args.weights.iter().find(|(v, _)| !seen.insert(v)) {
        eprintln!("error: version \"{twice}\" is given twice; give each version once (e.g. stable=80 canary=20)");
        return ExitCode::from(2);
    }
    let body: serde_json::Map<String, serde_json::Value> = args
        .weights
        .iter()
        .map(|(v, w)| (v.clone(), serde_json::Value::from(*w)))
        .collect();
    let body = serde_json::Value::Object(body).to_string();
    let path = format!("/api/v1/services/{}/weights", segment(&args.service));
    run_answer(
        &args.admin,
        Method::PUT,
        &path,
        Some(body),
        |status, body| {
            if let Some(note) = queued_note(status) {
                eprintln!("{note}");
            }
            if args.json {
                return print_json(body);
            }
            let service: ServiceView = decode(body)?;
            print!("{}", service_table(&service));
            Ok(())
        },
    )
}

pub fn reload(args: AdminArgs) -> ExitCode {
    run(&args, Method::POST, "/api/v1/reload", None, |body| {
        let outcome: LastReload = decode(body)?;
        if !outcome.ok {
            // A 200 never carries a failure; kept for a future API that might.
            return Err(outcome.errors.join("\n"));
        }
        if outcome.unchanged {
            println!("reloaded: the file is unchanged, nothing to apply");
        } else {
            println!("reloaded: the new config is serving");
        }
        Ok(())
    })
}

/// Arguments of `serin ready`.
#[derive(Debug, clap::Args)]
pub struct ReadyArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Ask `/healthz` (is the process alive) instead of `/readyz` (should it get traffic).
    #[arg(long)]
    pub live: bool,
}

/// Exit 0 when the running serin is ready (or alive, with `--live`): a probe for
/// Kubernetes `exec` checks and Docker `HEALTHCHECK`, which keeps the admin listener on
/// loopback inside the pod or container.
pub fn ready(args: ReadyArgs) -> ExitCode {
    let path = if args.live { "/healthz" } else { "/readyz" };
    run(&args.admin, Method::GET, path, None, |body| {
        print!("{}", String::from_utf8_lossy(body));
        Ok(())
    })
}

pub fn timeline(args: TimelineArgs) -> ExitCode {
    let path = format!("/api/v1/services/{}/timeline", segment(&args.service));
    run(&args.admin, Method::GET, &path, None, |body| {
        if args.json {
            return print_json(body);
        }
        let decisions: Vec<TimelineEvent> = decode(body)?;
        if decisions.is_empty() {
            println!(
                "{}: no decisions yet (a service without a rollout has none)",
                args.service
            );
            return Ok(());
        }
        let mut rows = vec![row(&[
            "time", "event", "by", "state", "step", "weights", "why",
        ])];
        for d in &decisions {
            let weights: Vec<String> = d.weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
            let why = match (&d.rule, &d.reason) {
                (Some(rule), _) => rule.summary.clone(),
                (None, Some(reason)) => reason.clone(),
                (None, None) => String::new(),
            };
            rows.push(vec![
                d.at.clone(),
                d.event.as_str().to_string(),
                match (d.manual, d.drill) {
                    (true, false) => "hand",
                    (false, false) => "serin",
                    (true, true) => "hand, drill",
                    (false, true) => "serin, drill",
                }
                .to_string(),
                d.state.as_str().to_string(),
                d.step.to_string(),
                weights.join(" "),
                why,
            ]);
        }
        print!("{}", table(&rows, &[]));
        Ok(())
    })
}

/// The table `serin status` prints for one service.
pub fn service_table(s: &ServiceView) -> String {
    let r = &s.rollout;
    let mut head = format!("{}: ", s.name);
    if r.state == "none" {
        head.push_str("no rollout");
    } else {
        head.push_str(&format!("rollout {}", r.state));
        if let Some(step) = r.step {
            head.push_str(&format!(", step {step}"));
        }
        if let Some(since) = &r.since {
            head.push_str(&format!(", since {since}"));
        }
        if let Some(reason) = &r.reason {
            head.push_str(&format!(" ({reason})"));
        }
    }
    let mut out = head;
    if let Some(span) = s.window_s {
        out.push_str(&format!("; numbers over the last {}", seconds(span)));
    }
    out.push('\n');
    if let Some(d) = &s.drill {
        out.push_str(&format!(
            "  DRILL running until {} (not an incident): serin answers {} of {}'s requests 503{}; {} requests so far\n",
            d.ends_at,
            d.errors,
            d.canary,
            if d.latency_ms > 0 {
                format!(" and delays the others by {} ms", d.latency_ms)
            } else {
                String::new()
            },
            d.faults.total
        ));
    }
    let mut rows = vec![row(&[
        "version",
        "weight",
        "requests",
        "rps",
        "errors",
        "error rate",
        "p95",
        "p99",
    ])];
    for (version, weight) in &s.weights {
        let n: Option<&VersionView> = s
            .versions
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, n)| n);
        let dash = || "-".to_string();
        rows.push(vec![
            version.clone(),
            weight.to_string(),
            n.map_or_else(dash, |n| n.requests.to_string()),
            n.map_or_else(dash, |n| format!("{:.2}", n.rps)),
            n.map_or_else(dash, |n| n.errors.to_string()),
            n.and_then(|n| n.error_rate)
                .map_or_else(dash, |e| format!("{:.2}%", e * 100.0)),
            n.and_then(|n| n.p95_ms).map_or_else(dash, millis),
            n.and_then(|n| n.p99_ms).map_or_else(dash, millis),
        ]);
    }
    out.push_str(&table(&rows, &[1, 2, 3, 4, 5, 6, 7]));
    if let Some(f) = &s.fleet {
        out.push_str(&fleet::fleet_table(f, &s.weights));
    }
    out
}

fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn seconds(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns two spaces apart, those in `right` aligned right; each line indented by two.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            line.push(' ');
            if right.contains(&c) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < r.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
            line.push(' ');
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn print_json(body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(())
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body)
        .map_err(|err| format!("the admin API answered something this serin cannot read ({err}); is it the same version of serin?"))
}

/// A service name as one path segment: anything but unreserved characters is
/// percent-encoded (config names never need it, but a mistyped name must not change
/// the path).
fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The admin URL without a trailing slash, `http://` added when no scheme is given.
fn base_url(admin: &str) -> Result<String, String> {
    let admin = admin.trim();
    if admin.starts_with("https://") {
        return Err(format!(
            "{admin}: the admin API speaks plain HTTP; use http://HOST:PORT with --admin or SERIN_ADMIN"
        ));
    }
    let url = if admin.contains("://") {
        admin.to_string()
    } else {
        format!("http://{admin}")
    };
    let bad = || {
        format!(
            "\"{admin}\" is not an admin URL; give http://HOST:PORT (e.g. http://127.0.0.1:9901) with --admin or SERIN_ADMIN"
        )
    };
    let uri = url.parse::<http::Uri>().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) if !authority.host().is_empty() => Ok(format!(
            "http://{authority}{}",
            uri.path().trim_end_matches('/')
        )),
        _ => Err(bad()),
    }
}

/// What went wrong talking to the admin API.
enum Failure {
    /// The URL or the request could not be made.
    Usage(String),
    /// Nothing answered, or the answer did not arrive.
    Unreachable(String),
    /// The API answered with an error status.
    Refused(StatusCode, Vec<u8>),
}

/// Sends the request and hands a 2xx body to `done`; prints the failure otherwise.
fn run(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<String>,
    done: impl FnOnce(&[u8]) -> Result<(), String>,
) -> ExitCode {
    run_answer(admin, method, path, body, |_, body| done(body))
}

/// [`run`], handing `done` the 2xx status too (a 202 is a command not applied yet).
fn run_answer(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<String>,
    done: impl FnOnce(StatusCode, &[u8]) -> Result<(), String>,
) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outcome = runtime.block_on(send_answer(&admin.admin, method, path, body));
    match outcome {
        Ok((status, body)) => match done(status, &body) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        },
        Err(failure) => failed(failure),
    }
}

/// The single-threaded runtime a command talks to the admin API on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| {
            eprintln!("error: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        })
}

/// Prints what went wrong; the exit code for it.
fn failed(failure: Failure) -> ExitCode {
    match failure {
        Failure::Usage(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Failure::Unreachable(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Failure::Refused(status, body) => {
            eprintln!("error: {}", refusal(status, &body));
            ExitCode::FAILURE
        }
    }
}

/// The API's error message (and a reload's errors), with a hint for a missing token.
fn refusal(status: StatusCode, body: &[u8]) -> String {
    // A refused reload carries its errors; every other error is an `ApiError`.
    let refusal = serde_json::from_slice::<ReloadRefused>(body)
        .map(|r| (r.error, r.reload.errors))
        .or_else(|_| serde_json::from_slice::<ApiError>(body).map(|e| (e.error, Vec::new())));
    let mut message = match refusal {
        Ok((error, errors)) => {
            let mut m = error;
            for line in errors {
                m.push_str("\n  ");
                m.push_str(&line);
            }
            m
        }
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                format!("the admin API answered {status}")
            } else {
                format!("the admin API answered {status}: {text}")
            }
        }
    };
    if status == StatusCode::UNAUTHORIZED {
        let set = std::env::var("SERIN_ADMIN_TOKEN").is_ok_and(|t| !t.trim().is_empty());
        message = if set {
            format!("{message} (SERIN_ADMIN_TOKEN here is not that serin's token)")
        } else {
            format!("{message} (SERIN_ADMIN_TOKEN is not set here)")
        };
    }
    message
}

async fn send(
    admin: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Vec<u8>, Failure> {
    send_answer(admin, method, path, body)
        .await
        .map(|(_, body)| body)
}

/// Sends the request; a 2xx answer's status and body, else why not.
async fn send_answer(
    admin: &str,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<(StatusCode, Vec<u8>), Failure> {
    let base = base_url(admin).map_err(Failure::Usage)?;
    let url = format!("{base}{path}");
    let mut request = Request::builder().method(method.clone()).uri(&url);
    if let Ok(token) = std::env::var("SERIN_ADMIN_TOKEN") {
        let token = token.trim();
        if !token.is_empty() {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
    }
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
        .map_err(|err| Failure::Usage(format!("cannot make the request {method} {url}: {err}")))?;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // A reload waits for the reload loop to read and apply the file.
    let limit = if path.ends_with("/reload") {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(10)
    };
    let unreachable = |why: String| {
        Failure::Unreachable(format!(
            "cannot reach serin's admin API at {base}: {why}; is serin running there? \
             point at its admin.listen address with --admin URL or SERIN_ADMIN"
        ))
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|err| {
            use std::error::Error;
            let mut why = err.to_string();
            let mut source = err.source();
            while let Some(s) = source {
                why = s.to_string();
                source = s.source();
            }
            unreachable(why)
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| unreachable(format!("the answer broke off: {err}")))?
            .to_bytes()
            .to_vec();
        Ok::<_, Failure>((status, body))
    };
    let (status, body) = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", limit.as_secs())))??;
    if status.is_success() {
        Ok((status, body))
    } else {
        Err(Failure::Refused(status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the CLI prints for the golden refused reload and error (tests/golden/).
    #[test]
    fn a_refusal_is_the_apis_message_with_a_reloads_errors() {
        let golden = |name: &str| {
            let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        assert_eq!(
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                &golden("reload_refused.json")
            ),
            "the config was not applied (1 error); the previous config keeps serving: fix the \
             file (`serin check FILE` lists the problems) and reload again\n  \
             services[0].split.weights.canary: 120 is over 100; weights are 0 to 100"
        );
        assert_eq!(
            refusal(StatusCode::NOT_FOUND, &golden("error.json")),
            "service \"apu\" is not defined (defined: api, web); GET /api/v1/services lists them"
        );
    }

    #[test]
    fn a_queued_command_is_said_to_wait_for_a_leader() {
        assert_eq!(
            queued_note(StatusCode::ACCEPTED),
            Some(
                "queued: applied when a leader is elected (not applied yet); the service as it stands now:"
            )
        );
        assert_eq!(queued_note(StatusCode::OK), None);
    }

    #[test]
    fn weights_are_version_equals_number() {
        assert_eq!(parse_weight("stable=80"), Ok(("stable".to_string(), 80)));
        assert_eq!(parse_weight(" canary = 0 "), Ok(("canary".to_string(), 0)));
        assert!(parse_weight("stable").is_err());
        assert!(parse_weight("=80").is_err());
        assert!(parse_weight("stable=eighty").is_err());
        assert!(parse_weight("stable=-1").is_err());
        assert!(parse_weight("stable=1.5").is_err());
    }

    #[test]
    fn admin_urls() {
        assert_eq!(
            base_url("http://127.0.0.1:9901/").as_deref(),
            Ok("http://127.0.0.1:9901")
        );
        assert_eq!(
            base_url("127.0.0.1:9901").as_deref(),
            Ok("http://127.0.0.1:9901")
        );
        assert!(base_url("https://127.0.0.1:9901").is_err());
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn names_stay_one_path_segment() {
        assert_eq!(segment("api-v2_x.y"), "api-v2_x.y");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            row(&["version", "weight"]),
            row(&["stable", "100"]),
            row(&["canary", "0"]),
        ];
        assert_eq!(
            table(&rows, &[1]),
            "  version  weight\n  stable      100\n  canary        0\n"
        );
    }
}
