//! Saved rollout state: `state_dir/<service>.json` (a [`SavedState`], format
//! [`STATE_FORMAT`]), replaced atomically (write a temporary file, fsync, rename, fsync
//! the directory) on every transition, so a restart never forgets a rollback; and the
//! spec fingerprint that tells whether a saved state belongs to the rollout configured.
//!
//! **Reading.** [`load`] reads format 1 (the fingerprint then is [`fingerprint_v1`]'s)
//! and format 2, and refuses a file from a newer serin (a larger format), an
//! unreadable or corrupt one, or one larger than [`MAX_STATE_BYTES`], with a
//! [`StateError`] that names the file and what to do. The control loop then holds the
//! rollout (paused at canary weight 0, the file untouched) instead of starting it
//! again: see `crate::runner`.
//!
//! **The fingerprint** ([`fingerprint`]) is xxh3-64, as 16 hex digits, of the spec's
//! canonical text ([`canonical_spec`]): one line per item, in this order, words
//! separated by one space, each line ending in `\n`:
//!
//! ```text
//! serin rollout spec 2
//! baseline "stable" "127.0.0.1:9001"            name, then each endpoint, quoted
//! canary "canary" "127.0.0.1:9002"
//! step 5 hold 30000ms                           one per step, in order; `hold -` if none
//! interval 1000ms
//! window 30000ms
//! min_requests 50
//! confidence 0.99
//! rule error_rate max 0.01                      one per rule, in the order written
//! rule error_rate max_increase 0.005
//! rule latency percentile 95 max 800ms
//! rule latency percentile 95 max_increase 0.2
//! rule burn_rate slo 0.999 max 4
//! rule success path_prefix "/checkout" method "POST" min 0.97    (`method` only if set)
//! retry_on_baseline true
//! on_failure rollback                           or pause
//! progress_deadline 600000ms
//! ```
//!
//! Strings are JSON string literals; numbers are written as Rust's `Display` writes
//! an `f64` or an integer (the shortest text that reads back as the same number, no
//! exponent: `0.01`, `4`, `95`); percentages as the fractions the spec holds (1 % is
//! `0.01`); durations in whole milliseconds with `ms`, or in nanoseconds with `ns` when
//! they are not whole milliseconds. What is not in it (the split's weights, sticky
//! keys, timeouts, other versions) may change without restarting a rollout.
//!
//! **New fields.** A field added to the spec later goes in as a line (or words at the
//! end of its line) written only when its value is not the one that keeps the rollout
//! behaving as it did before the field existed; so a spec that does not use it keeps
//! its fingerprint, and a finished rollout stays finished across the upgrade. A change
//! to what an existing line means bumps the first line (and the state format). The
//! golden test `the_example_spec_has_a_pinned_fingerprint` makes such a change a
//! conscious one.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serin_config::{Rollout, Service};
use serin_judge::spec::{OnFailure, Rule};

pub use crate::wire::{SavedState, STATE_FORMAT};

/// A state file larger than this is refused unread: a real one is a few KiB (the
/// detectors of at most a few dozen rules).
pub const MAX_STATE_BYTES: u64 = 1 << 20;

const HELD: &str = "the rollout is held at canary weight 0 and the file is left as it is";
const WHAT_TO_DO: &str = "move it away and restart serin to start the rollout afresh at its \
     first step, or decide through the admin API, which replaces the file: `serin abort` \
     (the canary stays at 0), `serin promote`, or `serin resume` (the rollout starts afresh \
     at its first step)";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} rollout state {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rollout state {} is unreadable ({problem}); {HELD}: repair it, or {WHAT_TO_DO}",
        path.display()
    )]
    Corrupt { path: PathBuf, problem: String },
    #[error(
        "rollout state {} has format {format}, written by a newer serin (this one reads \
         formats 1 to {STATE_FORMAT}); {HELD}: run the newer serin, or {WHAT_TO_DO}",
        path.display()
    )]
    Newer { path: PathBuf, format: u64 },
}

pub fn path(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!("{service}.json"))
}

/// The fingerprint of a rollout (format 2): xxh3-64 of [`canonical_spec`], 16 hex
/// digits. A different fingerprint starts a new rollout.
pub fn fingerprint(service: &Service, rollout: &Rollout) -> String {
    hex(&canonical_spec(service, rollout))
}

fn hex(text: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
}

/// The spec's canonical text, which the fingerprint hashes (see the module's doc).
pub fn canonical_spec(service: &Service, rollout: &Rollout) -> String {
    let mut out = String::from("serin rollout spec 2\n");
    for (role, index) in [("baseline", rollout.baseline), ("canary", rollout.canary)] {
        out.push_str(role);
        if let Some(v) = service.versions.get(index) {
            let _ = write!(out, " {}", quoted(&v.name));
            for e in &v.endpoints {
                let _ = write!(out, " {}", quoted(e.authority.as_str()));
            }
        }
        out.push('\n');
    }
    for step in &rollout.steps {
        let hold = step.hold.map_or_else(|| "-".to_string(), duration);
        match step.shadow {
            Some(share) => writeln!(out, "shadow {share} hold {hold}"),
            None => writeln!(out, "step {} hold {hold}", step.weight),
        }
        .ok();
    }
    let a = &rollout.analysis;
    let _ = writeln!(out, "interval {}", duration(a.interval));
    let _ = writeln!(out, "window {}", duration(a.window));
    let _ = writeln!(out, "min_requests {}", a.min_requests);
    let _ = writeln!(out, "confidence {}", a.confidence);
    for rule in &a.rules {
        out.push_str("rule ");
        let _ = match rule {
            Rule::ErrorRate { max } => write!(out, "error_rate max {max}"),
            Rule::ErrorRateIncrease { max_increase } => {
                write!(out, "error_rate max_increase {max_increase}")
            }
            Rule::Latency { percentile, max } => {
                write!(
                    out,
                    "latency percentile {percentile} max {}",
                    duration(*max)
                )
            }
            Rule::LatencyIncrease {
                percentile,
                max_increase,
            } => write!(
                out,
                "latency percentile {percentile} max_increase {max_increase}"
            ),
            Rule::BurnRate { slo, max } => write!(out, "burn_rate slo {slo} max {max}"),
            // `slot` follows from the order of the rules: not part of the spec.
            Rule::Success {
                path_prefix,
                method,
                min,
                slot: _,
            } => {
                let _ = write!(out, "success path_prefix {}", quoted(path_prefix));
                if let Some(m) = method {
                    let _ = write!(out, " method {}", quoted(m));
                }
                write!(out, " min {min}")
            }
            Rule::Mismatch { max } => write!(out, "mismatch max {max}"),
        };
        out.push('\n');
    }
    let _ = writeln!(out, "retry_on_baseline {}", rollout.retry_on_baseline);
    let on_failure = match rollout.on_failure {
        OnFailure::Rollback => "rollback",
        OnFailure::Pause => "pause",
    };
    let _ = writeln!(out, "on_failure {on_failure}");
    let _ = writeln!(
        out,
        "progress_deadline {}",
        duration(rollout.progress_deadline)
    );
    out
}

fn quoted(text: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

fn duration(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// The fingerprint format-1 files carry: xxh3-64 of the text serin up to state format 1
/// made from the spec's derived `Debug` output. That output changes whenever a spec
/// type gains a field, so the text is written out here by hand, as it was: frozen, it
/// keeps recognising the rollouts those files belong to.
pub fn fingerprint_v1(service: &Service, rollout: &Rollout) -> String {
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
    let some =
        |d: Option<Duration>| d.map_or_else(|| "None".to_string(), |d| format!("Some({d:?})"));
    let steps: Vec<String> = rollout
        .steps
        .iter()
        .map(|s| format!("Step {{ weight: {}, hold: {} }}", s.weight, some(s.hold)))
        .collect();
    let rules: Vec<String> = rollout
        .analysis
        .rules
        .iter()
        .map(|r| match r {
            Rule::ErrorRate { max } => format!("ErrorRate {{ max: {max:?} }}"),
            Rule::ErrorRateIncrease { max_increase } => {
                format!("ErrorRateIncrease {{ max_increase: {max_increase:?} }}")
            }
            Rule::Latency { percentile, max } => {
                format!("Latency {{ percentile: {percentile:?}, max: {max:?} }}")
            }
            Rule::LatencyIncrease {
                percentile,
                max_increase,
            } => format!(
                "LatencyIncrease {{ percentile: {percentile:?}, max_increase: {max_increase:?} }}"
            ),
            Rule::BurnRate { slo, max } => format!("BurnRate {{ slo: {slo:?}, max: {max:?} }}"),
            Rule::Success {
                path_prefix,
                method,
                min,
                slot,
            } => {
                let method = method
                    .as_deref()
                    .map_or_else(|| "None".to_string(), |m| format!("Some({m:?})"));
                format!(
                    "Success {{ path_prefix: {path_prefix:?}, method: {method}, min: {min:?}, slot: {slot} }}"
                )
            }
            Rule::Mismatch { max } => format!("Mismatch {{ max: {max:?} }}"),
        })
        .collect();
    let a = &rollout.analysis;
    let analysis = format!(
        "Analysis {{ interval: {:?}, window: {:?}, min_requests: {}, confidence: {:?}, rules: [{}] }}",
        a.interval,
        a.window,
        a.min_requests,
        a.confidence,
        rules.join(", ")
    );
    let on_failure = match rollout.on_failure {
        OnFailure::Rollback => "Rollback",
        OnFailure::Pause => "Pause",
    };
    let canonical = format!(
        "v1|baseline {}|canary {}|steps [{}]|analysis {analysis}|retry {}|on_failure {on_failure}|deadline {:?}",
        version(rollout.baseline),
        version(rollout.canary),
        steps.join(", "),
        rollout.retry_on_baseline,
        rollout.progress_deadline
    );
    hex(&canonical)
}

/// Whether `saved` belongs to the rollout `spec` of `service`: its fingerprint, of the
/// kind its format carries, is the spec's.
pub fn belongs_to(saved: &SavedState, service: &Service, spec: &Rollout) -> bool {
    match saved.format {
        1 => saved.fingerprint == fingerprint_v1(service, spec),
        _ => saved.fingerprint == fingerprint(service, spec),
    }
}

/// The saved state of `service`, if any: format 1 or 2. A newer format, a corrupt
/// file or one that cannot be read is an error naming the file and what to do.
pub fn load(dir: &Path, service: &str) -> Result<Option<SavedState>, StateError> {
    let path = path(dir, service);
    let file = match fs::File::open(&path) {
        Ok(f) => f,
        // No file, or no directory to hold one (a state_dir that is a file): nothing was
        // ever saved there.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path,
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    if let Err(source) = file.take(MAX_STATE_BYTES + 1).read_to_end(&mut bytes) {
        return Err(StateError::Io {
            action: "read",
            path,
            source,
        });
    }
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::Corrupt {
            path,
            problem: format!("larger than {MAX_STATE_BYTES} bytes"),
        });
    }
    parse(&bytes).map(Some).map_err(|problem| match problem {
        Refused::Newer(format) => StateError::Newer { path, format },
        Refused::Corrupt(problem) => StateError::Corrupt { path, problem },
    })
}

enum Refused {
    Newer(u64),
    Corrupt(String),
}

/// A state file's bytes: the format is read first, so a newer file is refused as
/// newer whatever else it holds.
fn parse(bytes: &[u8]) -> Result<SavedState, Refused> {
    #[derive(serde::Deserialize)]
    struct Format {
        format: Option<serde_json::Value>,
    }
    let head: Format =
        serde_json::from_slice(bytes).map_err(|e| Refused::Corrupt(e.to_string()))?;
    let format = match head.format {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    match format {
        Some(f) if (1..=u64::from(STATE_FORMAT)).contains(&f) => {}
        Some(f) if f > u64::from(STATE_FORMAT) => return Err(Refused::Newer(f)),
        _ => {
            return Err(Refused::Corrupt(
                "no format this serin knows (1 or 2)".to_string(),
            ))
        }
    }
    serde_json::from_slice(bytes).map_err(|e| Refused::Corrupt(e.to_string()))
}

/// Replaces the saved state of `state.service` atomically.
pub fn save(dir: &Path, state: &SavedState) -> Result<(), StateError> {
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
    let mut text = serde_json::to_vec_pretty(state)
        .map_err(|e| io("encode", &path)(std::io::Error::other(e)))?;
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
    use serin_judge::rollout::{Phase, RolloutState};
    use serin_judge::stats::Detector;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("serin-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/state")
            .join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// examples/rollout.yaml, the spec the docs walk through.
    fn example() -> Service {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rollout.yaml");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let snapshot =
            serin_config::parse_str(&text, "rollout.yaml").unwrap_or_else(|e| panic!("{e}"));
        snapshot.services[0].clone()
    }

    fn spec(service: &Service) -> &Rollout {
        service.rollout.as_ref().expect("the example has a rollout")
    }

    #[test]
    fn saves_and_loads_back() {
        let dir = scratch("roundtrip");
        assert_eq!(load(&dir, "api").ok().flatten(), None);
        let state = SavedState {
            format: STATE_FORMAT,
            service: "api".into(),
            fingerprint: "abc".into(),
            rollout: (&RolloutState::new(42)).into(),
            detectors: Some(vec![Detector::default()]),
        };
        save(&dir, &state).expect("save");
        assert_eq!(load(&dir, "api").expect("load"), Some(state));
        assert!(!dir.join(".api.json.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    /// Golden: a change to the canonical text (a new field written even at its
    /// default, a reordering, another number format) changes this value and would
    /// restart every rollout on upgrade. If the change is meant, bump the first line
    /// of the canonical text and the state format, and read the old format as format 1
    /// is read.
    #[test]
    fn the_example_spec_has_a_pinned_fingerprint() {
        let service = example();
        assert_eq!(
            canonical_spec(&service, spec(&service)),
            "serin rollout spec 2\n\
             baseline \"stable\" \"127.0.0.1:9001\"\n\
             canary \"canary\" \"127.0.0.1:9002\"\n\
             step 5 hold 30000ms\n\
             step 25 hold 60000ms\n\
             step 50 hold 60000ms\n\
             step 100 hold -\n\
             interval 1000ms\n\
             window 30000ms\n\
             min_requests 50\n\
             confidence 0.99\n\
             rule error_rate max 0.01\n\
             rule error_rate max_increase 0.005\n\
             rule latency percentile 95 max 800ms\n\
             rule latency percentile 95 max_increase 0.2\n\
             rule burn_rate slo 0.999 max 4\n\
             rule success path_prefix \"/checkout\" method \"POST\" min 0.97\n\
             retry_on_baseline true\n\
             on_failure rollback\n\
             progress_deadline 600000ms\n"
        );
        assert_eq!(fingerprint(&service, spec(&service)), "9120eed979d20b93");
    }

    #[test]
    fn the_fingerprint_follows_the_spec_and_nothing_else() {
        let service = example();
        let base = fingerprint(&service, spec(&service));
        let mut other = service.clone();
        if let Some(r) = other.rollout.as_mut() {
            r.steps[0].weight = 10;
        }
        assert_ne!(fingerprint(&other, spec(&other)), base, "a step's weight");
        let mut other = service.clone();
        if let Some(r) = other.rollout.as_mut() {
            r.analysis.rules.swap(0, 1);
        }
        assert_ne!(fingerprint(&other, spec(&other)), base, "the rules' order");
        let mut other = service.clone();
        if let Some(Rule::Success { slot, .. }) =
            other.rollout.as_mut().map(|r| &mut r.analysis.rules[5])
        {
            *slot = 3;
        }
        assert_eq!(fingerprint(&other, spec(&other)), base, "a slot is derived");
    }

    /// The frozen format-1 fingerprint is what the previous serin wrote: the fixtures
    /// were written by it for examples/rollout.yaml.
    #[test]
    fn the_format_1_fingerprint_is_the_one_older_files_carry() {
        let service = example();
        for name in ["v1-progressing.json", "v1-rolled-back.json"] {
            let saved = parse(fixture(name).as_bytes())
                .unwrap_or_else(|_| panic!("{name} is a readable state"));
            assert_eq!(saved.format, 1);
            assert_eq!(saved.fingerprint, fingerprint_v1(&service, spec(&service)));
            assert!(belongs_to(&saved, &service, spec(&service)), "{name}");
        }
        // And not a format-2 file that carries it.
        let mut saved = parse(fixture("v1-rolled-back.json").as_bytes())
            .ok()
            .expect("readable");
        saved.format = 2;
        assert!(!belongs_to(&saved, &service, spec(&service)));
    }

    /// The value the previous serin's `Debug`-based fingerprint gave (computed with it)
    /// for a spec with what the example lacks: no method, no hold, sub-second
    /// durations, `on_failure: pause`.
    #[test]
    fn the_format_1_fingerprint_is_pinned_for_other_kinds_of_spec() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rollout.yaml");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let text = text
            .replace("on_failure: rollback", "on_failure: pause")
            .replace("method: POST, ", "")
            .replace("hold: 30s", "hold: 1500ms")
            .replace("max: 800ms", "max: 1.5s")
            .replace("confidence: 99%", "confidence: 99.9%");
        let snapshot =
            serin_config::parse_str(&text, "rollout.yaml").unwrap_or_else(|e| panic!("{e}"));
        let service = &snapshot.services[0];
        assert_eq!(fingerprint_v1(service, spec(service)), "ff5c448396f6b91d");
    }

    #[test]
    fn a_format_1_file_is_read_with_its_detectors_and_phase() {
        let saved = parse(fixture("v1-progressing.json").as_bytes())
            .ok()
            .expect("readable");
        assert_eq!(
            (
                saved.rollout.phase,
                saved.rollout.step,
                saved.rollout.canary_weight
            ),
            (Phase::Progressing, 0, 5)
        );
        assert_eq!(saved.detectors.map(|d| d.len()), Some(6));
        let saved = parse(fixture("v1-rolled-back.json").as_bytes())
            .ok()
            .expect("readable");
        assert_eq!(
            (saved.rollout.phase, saved.rollout.canary_weight),
            (Phase::RolledBack, 0)
        );
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
    fn a_corrupt_file_is_refused_with_its_name_and_what_to_do() {
        let dir = scratch("corrupt");
        fs::create_dir_all(&dir).expect("dir");
        for text in [
            "{ not json",
            r#"{"format": 2, "service": "api"}"#,
            r#"{"service": "api"}"#,
            r#"{"format": "2"}"#,
            r#"{"format": 0}"#,
        ] {
            fs::write(path(&dir, "api"), text).expect("write");
            let err = load(&dir, "api").expect_err("corrupt");
            assert!(matches!(err, StateError::Corrupt { .. }), "{text}: {err}");
            let message = err.to_string();
            assert!(
                message.contains(&path(&dir, "api").display().to_string()),
                "{message}"
            );
            assert!(message.contains("held at canary weight 0"), "{message}");
            assert!(
                message.contains("move it away and restart serin"),
                "{message}"
            );
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_too_large_is_refused_unread() {
        let dir = scratch("large");
        fs::create_dir_all(&dir).expect("dir");
        let big = format!(
            "{{\"format\": 2, \"pad\": \"{}\"}}",
            "x".repeat(MAX_STATE_BYTES as usize)
        );
        fs::write(path(&dir, "api"), big).expect("write");
        let err = load(&dir, "api").expect_err("too large");
        assert!(
            err.to_string().contains("larger than 1048576 bytes"),
            "{err}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_from_a_newer_serin_is_refused_whatever_it_holds() {
        let dir = scratch("newer");
        fs::create_dir_all(&dir).expect("dir");
        fs::write(
            path(&dir, "api"),
            r#"{"format": 3, "service": "api", "state": {"something": "new"}}"#,
        )
        .expect("write");
        let err = load(&dir, "api").expect_err("newer");
        assert!(matches!(err, StateError::Newer { format: 3, .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("format 3, written by a newer serin"),
            "{message}"
        );
        assert!(
            message.contains(&path(&dir, "api").display().to_string()),
            "{message}"
        );
        assert!(message.contains("run the newer serin"), "{message}");
        let _ = fs::remove_dir_all(&dir);
    }
}
