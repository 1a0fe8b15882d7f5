//! Errors of loading and validating a config: what was wrong, where, and what to do.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config, located by its path in the document
/// (`services[0].split.weights`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded. Nothing of a config that fails to load is applied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {}: {source} (check the path and its permissions)", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the schema (a wrong type, an unknown key).
    #[error("{}", render_parse(file, line_col, path, message))]
    Parse {
        file: String,
        line_col: Option<(usize, usize)>,
        path: String,
        message: String,
    },
    /// The document parsed but its values are inconsistent; every problem found is listed.
    #[error("{}", render_invalid(file, errors))]
    Invalid {
        file: String,
        errors: Vec<ConfigError>,
    },
}

impl LoadError {
    /// Each problem on its own line, as `serin check` prints them.
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Invalid { file, errors } => {
                errors.iter().map(|e| format!("{file}: {e}")).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

fn render_parse(
    file: &str,
    line_col: &Option<(usize, usize)>,
    path: &str,
    message: &str,
) -> String {
    let mut out = String::from(file);
    if let Some((line, col)) = line_col {
        out.push_str(&format!(":{line}:{col}"));
    }
    out.push_str(": ");
    if !path.is_empty() && path != "." {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

fn render_invalid(file: &str, errors: &[ConfigError]) -> String {
    let noun = if errors.len() == 1 { "error" } else { "errors" };
    let mut out = format!("{} {noun} in {file}:", errors.len());
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    out
}
