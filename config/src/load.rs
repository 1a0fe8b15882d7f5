//! Reading a config file and parsing it: the only file I/O of the config crate.

use std::path::Path;

use crate::error::LoadError;
use crate::schema::RawConfig;
use crate::snapshot::Snapshot;
use crate::validate::compile;

/// Reads, parses and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Snapshot, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, &path.display().to_string())
}

/// Parses and validates config text; `origin` names it in errors (a file path).
pub fn parse_str(text: &str, origin: &str) -> Result<Snapshot, LoadError> {
    if text.trim().is_empty() {
        return Err(LoadError::Parse {
            file: origin.to_string(),
            line_col: None,
            path: String::new(),
            message: "the file is empty: a serin config needs at least `listeners`, `routes` \
                      and `services` (see examples/quickstart.yaml)"
                .to_string(),
        });
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let line_col = inner.location().map(|l| (l.line(), l.column()));
        LoadError::Parse {
            file: origin.to_string(),
            line_col,
            path,
            message: parse_message(&inner),
        }
    })?;
    compile(&raw).map_err(|errors| LoadError::Invalid {
        file: origin.to_string(),
        errors,
    })
}

/// serde_yaml_ng's message without its trailing " at line L column C" (the location is
/// printed in front, compiler style), and with a hint for the common cases.
fn parse_message(err: &serde_yaml_ng::Error) -> String {
    let full = err.to_string();
    let msg = match full.find(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    if msg.starts_with("unknown field") {
        format!("{msg} (check the spelling; unknown keys are errors, not ignored)")
    } else {
        msg
    }
}
