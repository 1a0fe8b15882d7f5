//! Hot reload: the config file is read and checked whole, then applied whole, or not at
//! all. Triggers are the file, or a certificate or key it names, changing (watched with
//! `notify`, debounced), SIGHUP and `POST /api/v1/reload`; every one goes through [`Reloader::reload`], one at a time.
//!
//! Reading and checking (the file and the files it names, parsing, validation) runs on
//! tokio's blocking pool, off the control thread: that thread also serves the admin
//! listener (`/healthz`) and runs the control loop, which must not wait on a large or
//! hostile file. Applying stays on the control thread.
//!
//! Applying a valid config is two-phase: new listeners are bound on every worker first
//! (a taken address fails the reload and nothing changes), then the data plane and the
//! control loop adopt the new config (rollouts with an unchanged spec keep their state),
//! and finally the new listeners start accepting and removed ones stop and drain.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer_opt, DebounceEventResult, Debouncer};
use serin_control::reload::{ReloadHandle, ReloadRequests};
use serin_control::runner::{now_ms, Control};
use serin_control::wire::{rfc3339, ConfigStatus, LastReload};
use serin_proxy::server::Workers;
use tokio::sync::watch;

/// Quiet time after the last file event before reloading: editors and ConfigMap
/// updates touch the file (or the directory) several times in a row.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The settings a config takes from files other than itself, contents included: the
/// listeners' TLS (certificates and keys) and the versions' upstream TLS (CA bundles,
/// client certificates).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileContents {
    listeners: Vec<Option<serin_config::Tls>>,
    upstreams: Vec<Option<serin_config::UpstreamTls>>,
}

impl FileContents {
    pub fn of(snapshot: &serin_config::Snapshot) -> Self {
        Self {
            listeners: snapshot.listeners.iter().map(|l| l.tls.clone()).collect(),
            upstreams: snapshot
                .services
                .iter()
                .flat_map(|s| &s.versions)
                .map(|v| v.tls.clone())
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.listeners.iter().all(Option::is_none) && self.upstreams.iter().all(Option::is_none)
    }
}

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
    /// What the serving config's other files brought in (certificates, keys, CA
    /// bundles): a reload of an unchanged file still applies ones that changed on disk.
    files: FileContents,
    /// The telemetry section in use; changing it takes a restart.
    telemetry: serin_config::Telemetry,
    /// The cluster section in use; changing it takes a restart.
    cluster: Option<serin_config::Cluster>,
    /// Follows the files each applied config references; `None` with `--no-watch`.
    watcher: Option<FileWatcher>,
    /// The errors of the last reload when it failed. A file change that fails again
    /// with the same errors (one save seen as two events, or a touch of a file that is
    /// still broken) is the same failure: it is neither counted nor logged twice.
    failing: Option<Vec<String>>,
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
        files: FileContents,
        telemetry: serin_config::Telemetry,
    ) -> Self {
        let status = initial_status(&path, text);
        Self {
            path,
            control,
            workers,
            status,
            admin,
            files,
            telemetry,
            cluster: None,
            watcher: None,
            failing: None,
        }
    }

    /// The `cluster` section serving (fleet mode); a reload that changes it warns.
    pub fn with_cluster(mut self, cluster: Option<serin_config::Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Keeps `watcher` watching the files of every config this reloader applies.
    pub fn watching(mut self, watcher: Option<FileWatcher>) -> Self {
        self.watcher = watcher;
        self
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
            let outcome = self.reload(request.trigger).await;
            let _ = requests.status.send(self.status());
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome);
            }
        }
    }

    /// Reads, checks and applies the config file; on any failure the running config
    /// stays and every problem is logged and reported. A file change that fails with
    /// the errors already reported is not a new failure; an explicit request (SIGHUP,
    /// the API) always is.
    pub async fn reload(&mut self, trigger: &'static str) -> LastReload {
        let at = rfc3339(now_ms());
        let outcome = match self.try_reload().await {
            Ok(unchanged) => {
                self.failing = None;
                self.status.reloads.success += 1;
                LastReload {
                    at,
                    ok: true,
                    errors: Vec::new(),
                    trigger: trigger.to_string(),
                    unchanged,
                }
            }
            Err(errors) if trigger == "file" && self.failing.as_ref() == Some(&errors) => {
                tracing::info!(
                    config = %self.path.display(),
                    "a file changed and the config still fails the same way; the running config stays"
                );
                if let Some(last) = &self.status.last_reload {
                    return last.clone();
                }
                LastReload {
                    at,
                    ok: false,
                    errors,
                    trigger: trigger.to_string(),
                    unchanged: false,
                }
            }
            Err(errors) => {
                self.failing = Some(errors.clone());
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
    async fn try_reload(&mut self) -> Result<bool, Vec<String>> {
        let path = self.path.clone();
        let serving = self.status.hash.clone();
        let names_files = !self.files.is_empty();
        let read =
            tokio::task::spawn_blocking(move || read_and_check(&path, &serving, names_files))
                .await
                .map_err(|err| {
                    vec![format!(
                        "{}: reading the config failed: {err}",
                        self.path.display()
                    )]
                })??;
        let Checked::Loaded { hash, snapshot } = read else {
            tracing::debug!(config = %self.path.display(), "config unchanged");
            return Ok(true);
        };
        let files = FileContents::of(&snapshot);
        if hash == self.status.hash && files == self.files {
            tracing::debug!(config = %self.path.display(), "config and the files it names unchanged");
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
        if snapshot.admin.allowed_hosts != self.admin.allowed_hosts {
            tracing::warn!(
                configured = ?snapshot.admin.allowed_hosts,
                in_use = ?self.admin.allowed_hosts,
                "admin.allowed_hosts changes take effect on restart"
            );
        }
        if snapshot.telemetry != self.telemetry {
            tracing::warn!("telemetry changes take effect on restart");
        }
        if let Some(why) = crate::without_fleet(&snapshot) {
            return Err(vec![format!("{}: {why}", self.path.display())]);
        }
        if snapshot.cluster != self.cluster {
            // The instance's name, lease and etcd connection are made once, at start.
            tracing::warn!("cluster changes take effect on restart");
        }
        let referenced = snapshot.watched_files();
        let staged = self
            .workers
            .stage(&snapshot)
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        let changes = self
            .control
            .reconfigure(*snapshot, now_ms())
            .map_err(|e| vec![format!("{}: {e}", self.path.display())])?;
        // Only now, with the routes in place, do new listeners accept.
        self.workers.commit(staged);
        self.files = files;
        if let Some(watcher) = &mut self.watcher {
            watcher.watch(&referenced);
        }
        for change in &changes {
            tracing::info!("{change}");
        }
        self.status.hash = hash;
        self.status.loaded_at = rfc3339(now_ms());
        tracing::info!(config = %self.path.display(), hash = %self.status.hash, "config reloaded");
        Ok(false)
    }
}

/// What reading and checking the config file found.
enum Checked {
    /// The same text as serving, and the serving config names no other file.
    Unchanged,
    /// A valid config, and the hash of its text.
    Loaded {
        hash: String,
        snapshot: Box<serin_config::Snapshot>,
    },
}

/// Reads and checks the config file at `path` (blocking: run off the control thread).
/// A text hashing to `serving` is [`Checked::Unchanged`] unless the config names other
/// files (`names_files`), whose contents may have changed.
fn read_and_check(path: &Path, serving: &str, names_files: bool) -> Result<Checked, Vec<String>> {
    let text = serin_config::read_file(path).map_err(|e| e.lines())?;
    let hash = hash_of(&text);
    if hash == serving && !names_files {
        return Ok(Checked::Unchanged);
    }
    let snapshot = serin_config::parse_file_text(&text, path).map_err(|e| e.lines())?;
    Ok(Checked::Loaded {
        hash,
        snapshot: Box::new(snapshot),
    })
}

/// Watches the config file and every file it references ([`Snapshot::watched_files`]:
/// certificates and keys) and asks for a reload when one of them changes, or when a
/// Kubernetes ConfigMap's or Secret's `..data` link beside one of them is swapped.
/// Watching the directories, not the files, survives editors and tools that save by
/// writing a new file and renaming it over the old one. [`FileWatcher::watch`] follows
/// the references of each newly applied config.
///
/// [`Snapshot::watched_files`]: serin_config::Snapshot::watched_files
pub struct FileWatcher {
    debouncer: Debouncer<ChangesOnly>,
    /// The config file, absolute.
    config: PathBuf,
    /// The files a change of which asks for a reload (the config file included),
    /// absolute; the debouncer's callback reads them.
    files: Arc<Mutex<BTreeSet<PathBuf>>>,
    /// The directories being watched.
    dirs: BTreeSet<PathBuf>,
}

impl FileWatcher {
    /// Watches `config` and `referenced` (the serving config's
    /// [`Snapshot::watched_files`](serin_config::Snapshot::watched_files)). Fails when
    /// the config file's directory cannot be watched; a referenced file's directory that
    /// cannot be is logged and left out.
    pub fn start(
        config: &Path,
        referenced: &[PathBuf],
        handle: ReloadHandle,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let config = std::path::absolute(config)
            .with_context(|| format!("cannot resolve the config path {}", config.display()))?;
        let files = Arc::new(Mutex::new(BTreeSet::from([config.clone()])));
        let watched = files.clone();
        let config_debounce = notify_debouncer_mini::Config::default().with_timeout(DEBOUNCE);
        let debouncer = new_debouncer_opt::<_, ChangesOnly>(
            config_debounce,
            move |result: DebounceEventResult| match result {
                Ok(events) => {
                    let files = watched.lock().unwrap_or_else(PoisonError::into_inner);
                    let changed = events.iter().find(|e| is_watched(&files, &e.path));
                    if let Some(event) = changed {
                        tracing::info!(file = %event.path.display(), "changed on disk: reloading");
                        handle.request("file");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "watching the config files failed"),
            },
        )
        .context("cannot start watching the config file")?;
        let mut watcher = Self {
            debouncer,
            dirs: BTreeSet::new(),
            files,
            config: config.clone(),
        };
        let dir = parent_of(&config);
        watcher
            .debouncer
            .watcher()
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {} for config changes", dir.display()))?;
        watcher.dirs.insert(dir);
        watcher.watch(referenced);
        Ok(watcher)
    }

    /// From now on watches the config file and `referenced` (and no longer the files
    /// of the config before): directories newly needed are added, those no longer
    /// needed dropped.
    pub fn watch(&mut self, referenced: &[PathBuf]) {
        let mut files = BTreeSet::from([self.config.clone()]);
        for file in referenced {
            match std::path::absolute(file) {
                Ok(file) => {
                    files.insert(file);
                }
                Err(err) => tracing::warn!(
                    file = %file.display(),
                    error = %err,
                    "cannot resolve the path to watch it; reload with SIGHUP or POST /api/v1/reload after changing it"
                ),
            }
        }
        let wanted: BTreeSet<PathBuf> = files.iter().map(|f| parent_of(f)).collect();
        for dir in self.dirs.difference(&wanted) {
            if let Err(err) = self.debouncer.watcher().unwatch(dir) {
                tracing::debug!(dir = %dir.display(), error = %err, "unwatching failed");
            }
        }
        let mut dirs = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                dirs.insert(dir);
                continue;
            }
            match self
                .debouncer
                .watcher()
                .watch(&dir, RecursiveMode::NonRecursive)
            {
                Ok(()) => {
                    dirs.insert(dir);
                }
                Err(err) => tracing::warn!(
                    dir = %dir.display(),
                    error = %err,
                    "cannot watch the directory of a file the config references; reload with SIGHUP or POST /api/v1/reload after changing its files"
                ),
            }
        }
        self.dirs = dirs;
        *self.files.lock().unwrap_or_else(PoisonError::into_inner) = files;
    }
}

/// The platform's watcher without access events (a file opened or closed after
/// reading): every reload reads the watched files, and those reads must not ask for
/// the next reload.
pub struct ChangesOnly(notify::RecommendedWatcher);

impl notify::Watcher for ChangesOnly {
    fn new<F: notify::EventHandler>(
        mut handler: F,
        config: notify::Config,
    ) -> notify::Result<Self> {
        let changes = move |event: notify::Result<notify::Event>| {
            if !matches!(&event, Ok(e) if e.kind.is_access()) {
                handler.handle_event(event);
            }
        };
        notify::RecommendedWatcher::new(changes, config).map(Self)
    }

    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        self.0.watch(path, mode)
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.0.unwatch(path)
    }

    fn kind() -> notify::WatcherKind {
        notify::RecommendedWatcher::kind()
    }
}

/// Whether a change at `path` concerns one of `files`: the file itself, or a `..data`
/// link (how Kubernetes swaps a mounted ConfigMap or Secret) in a file's directory.
fn is_watched(files: &BTreeSet<PathBuf>, path: &Path) -> bool {
    if files.contains(path) {
        return true;
    }
    path.file_name() == Some(OsStr::new("..data"))
        && files.iter().any(|f| f.parent() == path.parent())
}

fn parent_of(file: &Path) -> PathBuf {
    file.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"))
}
