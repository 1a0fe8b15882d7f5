//! The `serin` binary: parse the command line, load the config, wire the data plane
//! and the admin listener, run until SIGTERM/SIGINT, drain, exit.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serin_control::admin::{Admin, AdminContext, Health};
use serin_control::runner::{now_ms, Control};
use serin_proxy::{server, DataPlane, Telemetry};

/// mimalloc: per-thread free lists suit one runtime per worker thread, and it returns
/// freed pages to the system (asked to by [`release_memory`] when connections park),
/// so the buffers of connections that went idle do not stay in the RSS; glibc's
/// malloc keeps them. Built without transparent huge pages, which would add 2 MiB of
/// RSS per touched arena page.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns this thread's freed pages to the system now, rather than on some later
/// allocation (which an idle worker does not make). Forced: without it, pages freed
/// within mimalloc's purge delay stay committed (a release serin holding 10 000 parked
/// connections, its idle upstream connections purged: 48 MB unforced, 32 MB forced;
/// benches/results/2026-12-06-idle-purge-memory.md). It runs at most once a second, a
/// second after the worker parked connections.
fn release_memory() {
    // SAFETY: mi_collect only walks the calling thread's heap; it may be called at
    // any time from any thread that uses mimalloc.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

mod demo;
mod ops;
mod reload;

#[derive(Debug, Parser)]
#[command(
    name = "serin",
    version,
    about = "An HTTP proxy for progressive delivery: weighted stable/canary splitting with per-version measurement",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,

    /// `serin --config FILE` is short for `serin run --config FILE`.
    #[command(flatten)]
    run: RunArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every listener of the config until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Check a config file: print "ok", or every error with its path; exit 0 or 1.
    Check {
        /// The config file.
        file: PathBuf,
    },
    /// See serin work with nothing else: built-in stable and canary apps, serin splitting
    /// 90/10 on an embedded config, steady load, and per-version figures each second.
    Demo(demo::DemoArgs),
    /// A toy app version for trying serin out (answers `hello from VERSION`).
    DemoBackend(demo::BackendArgs),
    /// Show services: versions, weights, rollout state and step, rates, errors, p95/p99.
    Status(ops::StatusArgs),
    /// Promote the service's canary now: it takes all traffic and the rollout ends.
    Promote(ops::ServiceArgs),
    /// Pause the service's rollout: the weights stay until `resume`.
    Pause(ops::ServiceArgs),
    /// Resume the service's paused rollout from its current step.
    Resume(ops::ServiceArgs),
    /// Roll the service's canary back now: the baseline takes all traffic.
    Abort(ops::ServiceArgs),
    /// Set weights by hand, e.g. `serin weights api stable=80 canary=20` (pauses a rollout).
    Weights(ops::WeightsArgs),
    /// Reload the config file of the running serin; its errors are listed if it is invalid.
    Reload(ops::AdminArgs),
    /// Show the decisions of the service's rollout, oldest first.
    Timeline(ops::TimelineArgs),
    /// Exit 0 if the running serin is ready for traffic (`--live`: alive); for probes.
    Ready(ops::ReadyArgs),
    /// Write a Markdown post-mortem draft of the service's rollout: outcome, exposure,
    /// the deciding rule, the timeline and the numbers behind each decision.
    Report(ops::ReportArgs),
    /// Rehearse a rollback: inject faults into the service's canary, e.g. `serin drill api
    /// --errors 10% --latency +300ms --for 2m`, follow the rollout and print the report.
    Drill(ops::DrillArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The config file (YAML; see docs/config.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Worker threads serving requests (default: the number of CPU cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,

    /// Do not watch the config file and the certificate files it names; reload only on
    /// SIGHUP or `POST /api/v1/reload`.
    #[arg(long)]
    no_watch: bool,

    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { file }) => check(&file),
        Some(Command::Run(args)) => run_or_report(args, cli.log_format),
        Some(Command::Demo(args)) => small_runtime(cli.log_format, "error", demo::run(args)),
        Some(Command::DemoBackend(args)) => {
            small_runtime(cli.log_format, "info", demo::run_backend(args))
        }
        Some(Command::Status(args)) => ops::status(args),
        Some(Command::Promote(args)) => ops::command(args, ops::Verb::Promote),
        Some(Command::Pause(args)) => ops::command(args, ops::Verb::Pause),
        Some(Command::Resume(args)) => ops::command(args, ops::Verb::Resume),
        Some(Command::Abort(args)) => ops::command(args, ops::Verb::Abort),
        Some(Command::Weights(args)) => ops::weights(args),
        Some(Command::Reload(args)) => ops::reload(args),
        Some(Command::Ready(args)) => ops::ready(args),
        Some(Command::Timeline(args)) => ops::timeline(args),
        Some(Command::Report(args)) => ops::report(args),
        Some(Command::Drill(args)) => ops::drill(args),
        None => run_or_report(cli.run, cli.log_format),
    }
}

fn check(file: &Path) -> ExitCode {
    match serin_config::load_file(file) {
        Ok(snapshot) => {
            if let Some(why) = without_fleet(&snapshot) {
                println!("{}: {why}", file.display());
                return ExitCode::FAILURE;
            }
            println!("ok");
            for warning in snapshot.warnings() {
                println!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            for line in err.lines() {
                println!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Why this build cannot serve `snapshot`: a config with `cluster` needs fleet mode,
/// which is a cargo feature (its etcd client needs `protoc` to build).
pub(crate) fn without_fleet(snapshot: &serin_config::Snapshot) -> Option<&'static str> {
    (snapshot.cluster.is_some() && !cfg!(feature = "fleet")).then_some(
        "cluster: this serin was built without fleet mode: build with `--features fleet` \
         (or leave out `cluster` to run one serin on its own)",
    )
}

fn run_or_report(args: RunArgs, log_format: LogFormat) -> ExitCode {
    init_logging(log_format, "info");
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `job` on a two-thread runtime, reporting its error.
fn small_runtime(
    log_format: LogFormat,
    default_level: &str,
    job: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    init_logging(log_format, default_level);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| rt.block_on(job));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides `default_level`.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let Some(config_path) = args.config else {
        anyhow::bail!(
            "no config file given: run `serin run --config FILE` (see examples/quickstart.yaml)"
        );
    };
    let loaded = serin_config::read_file(&config_path)
        .and_then(|text| Ok((serin_config::parse_file_text(&text, &config_path)?, text)));
    let (snapshot, text) = match loaded {
        Ok(s) => s,
        Err(err) => {
            for line in err.lines() {
                tracing::error!("{line}");
            }
            anyhow::bail!(
                "not starting: {} is not a valid config (`serin check {}` lists the problems)",
                config_path.display(),
                config_path.display()
            );
        }
    };
    if let Some(why) = without_fleet(&snapshot) {
        anyhow::bail!("not starting: {}: {why}", config_path.display());
    }
    let workers = args.workers.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    raise_open_file_limit();
    // Bound before anything starts, so a taken address fails the start cleanly.
    let sockets = server::bind_workers(&snapshot, workers)?;
    // The span exporter and the access log writer run on threads of their own.
    let telemetry = Telemetry::start(&snapshot.telemetry).context("cannot start telemetry")?;
    // Control, admin and signals run on the main thread; requests on the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("serin-control")
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    runtime.block_on(serve(
        snapshot,
        sockets,
        telemetry,
        workers,
        args.grace,
        &config_path,
        &text,
        !args.no_watch,
    ))
}

/// Raises the soft limit on open files to the hard limit, as nginx's
/// `worker_rlimit_nofile` does: every proxied connection costs two descriptors.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open file limit"),
    }
}

/// The least time the exporters get to flush on shutdown, even if draining took the
/// whole grace period.
const MIN_FLUSH: Duration = Duration::from_millis(200);

#[allow(clippy::too_many_arguments)]
async fn serve(
    snapshot: serin_config::Snapshot,
    sockets: server::WorkerSockets,
    telemetry: Option<Arc<Telemetry>>,
    workers: usize,
    grace: Duration,
    config_path: &Path,
    config_text: &str,
    watch: bool,
) -> anyhow::Result<()> {
    let admin_addr = snapshot.admin.listen;
    let admin_section = snapshot.admin.clone();
    let files = reload::FileContents::of(&snapshot);
    let telemetry_section = snapshot.telemetry.clone();
    let cluster_section = snapshot.cluster.clone();
    let watched_files = snapshot.watched_files();
    let token = admin_token(&snapshot)?;
    let dataplane = Arc::new(DataPlane::new(snapshot, workers)?.with_telemetry(telemetry.clone()));
    // Rollouts resume (or start) and set their weights before any request is served.
    let control = Arc::new(Control::new(dataplane.clone(), now_ms()));
    let (stop_tasks, tasks_stopped) = tokio::sync::watch::channel(false);
    let control_loop = tokio::spawn(control.clone().run(tasks_stopped.clone()));
    // Fleet mode: this instance's part in the fleet (etcd away is retried; a name held
    // by another live instance stops serin).
    #[cfg(feature = "fleet")]
    let mut fleet = cluster_section.clone().map(|cluster| {
        tokio::spawn(serin_control::fleet::node::run(
            control.clone(),
            cluster,
            admin_addr.to_string(),
            tasks_stopped.clone(),
        ))
    });
    // Health checks and the purge of idle upstream connections run here, on the
    // control thread, never on a worker.
    let health_checks = tokio::spawn(serin_proxy::health::run(
        dataplane.clone(),
        tasks_stopped.clone(),
    ));
    let health = Arc::new(Health::default());
    let (reload_handle, reload_requests) =
        serin_control::reload::ReloadHandle::new(reload::initial_status(config_path, config_text));
    let admin = Admin::bind(
        admin_addr,
        AdminContext {
            control: Some(control.clone()),
            reload: Some(reload_handle.clone()),
            token,
            allowed_hosts: admin_section.allowed_hosts.clone(),
            ..AdminContext::new(health.clone(), dataplane.clone())
        },
    )
    .await?;
    server::on_parked(release_memory);
    let pool = Arc::new(
        server::Workers::start(dataplane, sockets, grace)
            .context("cannot start the worker threads")?,
    );

    // Reloads: the file watcher, SIGHUP and the admin API all ask the one reloader.
    let watcher = if watch {
        match reload::FileWatcher::start(config_path, &watched_files, reload_handle.clone()) {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::warn!("{err:#}; reload with SIGHUP or POST /api/v1/reload instead");
                None
            }
        }
    } else {
        None
    };
    let reloader = reload::Reloader::new(
        config_path.to_path_buf(),
        config_text,
        control.clone(),
        pool.clone(),
        admin_section,
        files,
        telemetry_section,
    )
    .with_cluster(cluster_section)
    .watching(watcher);
    let reload_loop = tokio::spawn(reloader.run(reload_requests, tasks_stopped.clone()));
    let hangups = tokio::spawn(reload_on_sighup(reload_handle));

    health.set_ready();
    tracing::info!(config = %config_path.display(), workers, "serin is ready");

    #[cfg(feature = "fleet")]
    let fleet_failed = async {
        match fleet.as_mut() {
            Some(task) => match task.await {
                Ok(Err(err)) => Some(err),
                _ => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    #[cfg(not(feature = "fleet"))]
    let fleet_failed = std::future::pending::<Option<std::convert::Infallible>>();
    let fatal = tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            None
        }
        err = fleet_failed => err.map(|e| anyhow::anyhow!("cluster: {e}")),
    };
    let stopping = Instant::now();
    tracing::info!("shutting down: draining in-flight requests");
    health.set_draining();
    hangups.abort();
    let _ = stop_tasks.send(true);
    if let Err(err) = reload_loop.await {
        tracing::warn!(error = %err, "reload loop ended abnormally");
    }
    let drained = match Arc::try_unwrap(pool) {
        Ok(pool) => tokio::task::spawn_blocking(move || pool.shutdown())
            .await
            .unwrap_or(false),
        Err(_) => false,
    };
    if let Err(err) = control_loop.await {
        tracing::warn!(error = %err, "control loop ended abnormally");
    }
    // The rollout states and timeline lines handed to the state writer go to disk
    // within what is left of the grace period.
    let left = grace.saturating_sub(stopping.elapsed()).max(MIN_FLUSH);
    let writer = control.clone();
    match tokio::task::spawn_blocking(move || writer.flush(left)).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "shutting down with rollout state not yet written (state_dir does not take writes)"
        ),
        Err(err) => tracing::warn!(error = %err, "flushing the rollout state failed"),
    }
    if let Err(err) = health_checks.await {
        tracing::warn!(error = %err, "health checks ended abnormally");
    }
    if drained {
        tracing::info!("all connections closed");
    } else {
        tracing::warn!(grace = ?grace, "grace period over; closing the remaining connections");
    }
    if let Some(telemetry) = telemetry {
        // Spans and log lines of the drained requests go out in what is left of the grace.
        let left = grace.saturating_sub(stopping.elapsed()).max(MIN_FLUSH);
        let flushed = tokio::task::spawn_blocking(move || telemetry.shutdown(left)).await;
        if let Err(err) = flushed {
            tracing::warn!(error = %err, "flushing traces and access logs failed");
        }
    }
    admin.shutdown().await;
    match fatal {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// SIGHUP asks for a reload, as nginx and HAProxy do.
fn reload_on_sighup(
    handle: serin_control::reload::ReloadHandle,
) -> impl std::future::Future<Output = ()> {
    // The listener is made here, at once, not when the task first runs: serin says it
    // is ready before the control thread polls new tasks, and a SIGHUP that came before
    // the listener would end serin.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        {
            let mut hup = match hup {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for SIGHUP; reload through the admin API");
                    return;
                }
            };
            while hup.recv().await.is_some() {
                tracing::info!("received SIGHUP: reloading the config");
                handle.request("signal");
            }
        }
        #[cfg(not(unix))]
        {
            let _ = handle;
            std::future::pending::<()>().await;
        }
    }
}

/// The admin API's token: `SERIN_ADMIN_TOKEN` when set, else the one read from
/// `admin.token_file`.
fn admin_token(snapshot: &serin_config::Snapshot) -> anyhow::Result<Option<String>> {
    match std::env::var("SERIN_ADMIN_TOKEN") {
        Ok(value) => match serin_config::AdminToken::new(&value) {
            Ok(token) => {
                if snapshot.admin.token.is_some() {
                    tracing::info!("the admin token comes from SERIN_ADMIN_TOKEN, not admin.token_file");
                }
                Ok(Some(token.as_str().to_string()))
            }
            Err(why) => anyhow::bail!(
                "SERIN_ADMIN_TOKEN {why}: set it to the admin API's token, or unset it to use admin.token_file (or no token)"
            ),
        },
        Err(std::env::VarError::NotPresent) => Ok(snapshot
            .admin
            .token
            .as_ref()
            .map(|t| t.as_str().to_string())),
        Err(std::env::VarError::NotUnicode(_)) => anyhow::bail!(
            "SERIN_ADMIN_TOKEN is not valid UTF-8: set it to the admin API's token (printable ASCII), or unset it"
        ),
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
