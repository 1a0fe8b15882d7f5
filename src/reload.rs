//! Hot reload: the config file is read and checked whole, then applied whole, or not at
//! all. Triggers are the file changing (watched with `notify`, debounced), SIGHUP and
//! `POST /api/v1/reload`; every one goes through [`Reloader::reload`], one at a time.
//!
//! Applying a valid config is two-phase: new listeners are bound on every worker first
//! (a taken address fails the reload and nothing changes), then the data plane and the
//! control loop adopt the new config (rollouts with an unchanged spec keep their state),
//! and finally the new listeners start accepting and removed ones stop and drain.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use serin_control::reload::{ConfigStatus, LastReload, ReloadHandle, ReloadRequests};
use serin_control::runner::{now_ms, rfc3339, Control};
use serin_proxy::server::Workers;
use tokio::sync::watch;

/// Quiet time after the last file event before reloading: editors and ConfigMap
/// updates touch the file (or the directory) several times in a row.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The hash `GET /api/v1/config` shows: xxh3-64 of the file's text, as hex.
pub fn hash_of(text: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

pub struct Reloader {
    path: PathBuf,
    control: Arc<Control>,
    workers: Arc<Workers>,
    status: ConfigStatus,
    /// The admin section in use; changing it takes a restart.
    admin: serin_config::Admin,
    /// The serving listeners' TLS settings, certificates included: a reload of an
    /// unchanged file still applies certificates that changed on disk.
    tls: Vec<Option<serin_config::Tls>>,
    /// The telemetry section in use; changing it takes a restart.
    telemetry: serin_config::Telemetry,
}

/// The status of the config that `serin run` started with.
pub fn initial_status(path: &Path, text: &str) -> ConfigStatus {
    ConfigStatus {
        path: path.display().to_string(),
        hash: hash_of(text),
        loaded_at: rfc3339(now_ms()),
        last_reload: None,
        reloads: Default::default(),
    }
}

impl Reloader {
    /// `text` is the config file's content that is serving now.
    pub fn new(
        path: PathBuf,
        text: &str,
        control: Arc<Control>,
        workers: Arc<Workers>,
        admin: serin_config::Admin,
        tls: Vec<Option<serin_config::Tls>>,
        telemetry: serin_config::Telemetry,
    ) -> Self {
        let status = initial_status(&path, text);
        Self {
            path,
            control,
            workers,
            status,
            admin,
            tls,
            telemetry,
        }
    }

    pub fn status(&self) -> ConfigStatus {
        self.status.clone()
    }

    /// Serves reload requests until `stop` turns true.
    pub async fn run(mut self, mut requests: ReloadRequests, mut stop: watch::Receiver<bool>) {
        let _ = requests.status.send(self.status());
        loop {
            let request = tokio::select! {
                _ = stop.changed() => break,
                request = requests.requests.recv() => match request {
                    Some(r) => r,
                    None => break,
                },
            };
            let outcome = self.reload(request.trigger);
            let _ = requests.status.send(self.status());
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Reads, checks and applies the config file; on any failure the running config
    /// stays and every problem is logged and reported.
    pub fn reload(&mut self, trigger: &'static str) -> LastReload {
        let at = rfc3339(now_ms());
        let outcome = match self.try_reload() {
            Ok(unchanged) => {
                self.status.reloads.success += 1;
                LastReload {
                    at,
                    ok: true,
                    errors: Vec::new(),
                    trigger: trigger.to_string(),
                    unchanged,
                }
            }
            Err(errors) => {
                self.status.reloads.failure += 1;
                tracing::error!(
                    config = %self.path.display(),
                    trigger,
                    "reload failed; the running config stays"
                );
                for line in &errors {
                    tracing::error!("{line}");
                }
                LastReload {
                    at,
                    ok: false,
                    errors,
                    trigger: trigger.to_string(),
                    unchanged: false,
                }
            }
        };
        self.status.last_reload = Some(outcome.clone());
        outcome
    }

    /// Ok(true) when the file is what is serving already.
    fn try_reload(&mut self) -> Result<bool, Vec<String>> {
        let text = serin_config::read_file(&self.path).map_err(|e| e.lines())?;
        let hash = hash_of(&text);
        let has_tls = self.tls.iter().any(Option::is_some);
        if hash == self.status.hash && !has_tls {
            tracing::debug!(config = %self.path.display(), "config unchanged");
            return Ok(true);
        }
        let snapshot = serin_config::parse_file_text(&text, &self.path).map_err(|e| e.lines())?;
        let tls: Vec<Option<serin_config::Tls>> =
            snapshot.listeners.iter().map(|l| l.tls.clone()).collect();
        if hash == self.status.hash && tls == self.tls {
            tracing::debug!(config = %self.path.display(), "config and certificates unchanged");
            return Ok(true);
        }
        if snapshot.admin.listen != self.admin.listen {
            tracing::warn!(
                configured = %snapshot.admin.listen,
                in_use = %self.admin.listen,
                "admin.listen changes take effect on restart"
            );
        }
        if snapshot.admin.token != self.admin.token {
            tracing::warn!("admin.token_file changes take effect on restart");
        }
        if snapshot.telemetry != self.telemetry {
            tracing::warn!("telemetry changes take effect on restart");
        }
        let staged = self
            .workers
            .stage(&snapshot)
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        let changes = self
            .control
            .reconfigure(snapshot, now_ms())
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        // Only now, with the routes in place, do new listeners accept.
        self.workers.commit(staged);
        self.tls = tls;
        for change in &changes {
            tracing::info!("{change}");
        }
        self.status.hash = hash;
        self.status.loaded_at = rfc3339(now_ms());
        tracing::info!(config = %self.path.display(), hash = %self.status.hash, "config reloaded");
        Ok(false)
    }
}

/// Watches the config file's directory and asks for a reload when the file (or a
/// Kubernetes ConfigMap's `..data` link beside it) changes. Watching the directory,
/// not the file, survives editors that save by writing a new file and renaming it
/// over the old one.
pub fn watch_file(
    path: &Path,
    handle: ReloadHandle,
) -> anyhow::Result<Debouncer<notify::RecommendedWatcher>> {
    use anyhow::Context;
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the config path {}", path.display()))?;
    let dir = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = absolute.file_name().map(|n| n.to_os_string());
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            let relevant = events.iter().any(|e| {
                let file = e.path.file_name();
                file == name.as_deref() || file == Some(std::ffi::OsStr::new("..data"))
            });
            if relevant {
                handle.request("file");
            }
        }
        Err(err) => tracing::warn!(error = %err, "watching the config file failed"),
    })
    .context("cannot start watching the config file")?;
    debouncer
        .watcher()
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {} for config changes", dir.display()))?;
    Ok(debouncer)
}
