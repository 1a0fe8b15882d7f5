//! Persisted rollout state: `state_dir/<service>.json`, replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory) on every transition, so a
//! restart never forgets a rollback.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serin_config::{Rollout, Service};
use serin_judge::rollout::RolloutState;
use serin_judge::stats::Detector;

/// Bumped when the file's meaning changes.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    pub service: String,
    /// Of the rollout spec: a different spec starts a new rollout.
    pub fingerprint: String,
    pub rollout: RolloutState,
    /// The rules' detectors, in the order of the rules (docs/analysis.md, "Restarts");
    /// absent from files written before serin saved them.
    #[serde(default)]
    pub detectors: Option<Vec<Detector>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} rollout state {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rollout state {} is unreadable ({source}); move it away to start the rollout afresh", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub fn path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.json"))
}

/// The fingerprint of a rollout: baseline and canary with their endpoints, the steps,
/// the analysis and the failure policy. Anything else may change without restarting it.
pub fn fingerprint(service: &Service, rollout: &Rollout) -> String {
    let version = |i: usize| {
        service
            .versions
            .get(i)
            .map(|v| {
                let endpoints: Vec<&str> =
                    v.endpoints.iter().map(|e| e.authority.as_str()).collect();
                format!("{}={}", v.name, endpoints.join(","))
            })
            .unwrap_or_default()
    };
    let canonical = format!(
        "v1|baseline {}|canary {}|steps {:?}|analysis {:?}|retry {}|on_failure {:?}|deadline {:?}",
        version(rollout.baseline),
        version(rollout.canary),
        rollout.steps,
        rollout.analysis,
        rollout.retry_on_baseline,
        rollout.on_failure,
        rollout.progress_deadline
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(canonical.as_bytes()))
}

/// The saved state of `service`, if any.
pub fn load(dir: &Path, service: &str) -> Result<Option<Persisted>, StateError> {
    let path = path(dir, service);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| StateError::Corrupt { path, source })
}

/// Replaces the saved state of `state.service` atomically.
pub fn save(dir: &Path, state: &Persisted) -> Result<(), StateError> {
    let path = path(dir, &state.service);
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io("create the directory of", &path))?;
    let tmp = dir.join(format!(".{}.json.tmp", state.service));
    let mut text = serde_json::to_vec_pretty(state).map_err(|source| StateError::Corrupt {
        path: path.clone(),
        source,
    })?;
    text.push(b'\n');
    {
        let mut file = fs::File::create(&tmp).map_err(io("write", &tmp))?;
        file.write_all(&text).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
    }
    fs::rename(&tmp, &path).map_err(io("replace", &path))?;
    // Make the rename itself durable.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("serin-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_and_loads_back() {
        let dir = scratch("roundtrip");
        assert_eq!(load(&dir, "api").ok().flatten(), None);
        let state = Persisted {
            format: FORMAT,
            service: "api".into(),
            fingerprint: "abc".into(),
            rollout: RolloutState::new(42),
            detectors: Some(vec![Detector::default()]),
        };
        save(&dir, &state).expect("save");
        assert_eq!(load(&dir, "api").expect("load"), Some(state));
        assert!(!dir.join(".api.json.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_from_before_detectors_were_saved_is_read() {
        let dir = scratch("old");
        fs::create_dir_all(&dir).expect("dir");
        let old = r#"{
  "format": 1,
  "service": "api",
  "fingerprint": "abc",
  "rollout": {
    "phase": "progressing",
    "step": 1,
    "canary_weight": 25,
    "started_ms": 1000,
    "step_started_ms": 2000,
    "since_ms": 2000,
    "reason": null,
    "last_hold": null
  }
}
"#;
        fs::write(path(&dir, "api"), old).expect("write");
        let saved = load(&dir, "api").expect("load").expect("a state");
        assert_eq!((saved.rollout.step, saved.detectors), (1, None));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_reported_with_what_to_do() {
        let dir = scratch("corrupt");
        fs::create_dir_all(&dir).expect("dir");
        fs::write(path(&dir, "api"), "{ not json").expect("write");
        let err = load(&dir, "api").expect_err("corrupt");
        assert!(
            err.to_string()
                .contains("move it away to start the rollout afresh"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
