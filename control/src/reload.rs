//! The config's provenance and the reload trigger as the admin API sees them.
//!
//! The process that owns the config file (the `serin` binary) runs the reload loop and
//! publishes a [`ConfigStatus`] after every attempt; anyone holding a [`ReloadHandle`]
//! (the admin API's `POST /api/v1/reload`, SIGHUP, the file watcher) can ask for a
//! reload and wait for its outcome.

use tokio::sync::{mpsc, oneshot, watch};

use crate::wire::{ConfigStatus, LastReload};

/// Asks for reloads and reads the status. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    requests: mpsc::Sender<ReloadRequest>,
    status: watch::Receiver<ConfigStatus>,
}

/// One request for a reload, as the reload loop receives it.
#[derive(Debug)]
pub struct ReloadRequest {
    pub trigger: &'static str,
    /// Where the outcome goes; `None` when nobody waits.
    pub reply: Option<oneshot::Sender<LastReload>>,
}

/// The reload loop's end of a [`ReloadHandle`].
#[derive(Debug)]
pub struct ReloadRequests {
    pub requests: mpsc::Receiver<ReloadRequest>,
    pub status: watch::Sender<ConfigStatus>,
}

impl ReloadHandle {
    /// A handle and the receiving end for the reload loop, starting from `initial`.
    pub fn new(initial: ConfigStatus) -> (Self, ReloadRequests) {
        let (tx, rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(initial);
        (
            Self {
                requests: tx,
                status: status_rx,
            },
            ReloadRequests {
                requests: rx,
                status: status_tx,
            },
        )
    }

    /// Reloads now and waits for the outcome; `None` if the reload loop has stopped.
    pub async fn reload(&self, trigger: &'static str) -> Option<LastReload> {
        let (reply, outcome) = oneshot::channel();
        self.requests
            .send(ReloadRequest {
                trigger,
                reply: Some(reply),
            })
            .await
            .ok()?;
        outcome.await.ok()
    }

    /// Asks for a reload without waiting (signals, the file watcher).
    pub fn request(&self, trigger: &'static str) {
        let _ = self.requests.try_send(ReloadRequest {
            trigger,
            reply: None,
        });
    }

    /// The status after the newest attempt.
    pub fn status(&self) -> ConfigStatus {
        self.status.borrow().clone()
    }
}
