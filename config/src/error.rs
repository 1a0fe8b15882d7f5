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
    /// The error at `path`; both are bounded ([`bound_path`], [`bound_message`]), so an
    /// error line stays short whatever the document held.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: bound_path(&path.into()),
            message: bound_message(&message.into()),
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
    /// The config file is not a regular file, or is larger than serin reads.
    #[error("config file {} {problem}", file.display())]
    File { file: PathBuf, problem: String },
    /// The document parsed but its values are inconsistent; every problem found is
    /// listed, up to [`MAX_LISTED_ERRORS`], and how many more there were.
    #[error("{}", render_invalid(file, errors, *left_out))]
    Invalid {
        file: String,
        errors: Vec<ConfigError>,
        /// Problems found beyond the ones listed.
        left_out: usize,
    },
}

/// The most problems an invalid config lists: more would only bury the first ones.
pub const MAX_LISTED_ERRORS: usize = 100;

/// The line that says how many problems were not listed.
fn left_out_line(left_out: usize) -> String {
    format!(
        "{left_out} more {} not listed (serin lists the first {MAX_LISTED_ERRORS}); fix these first",
        if left_out == 1 { "error" } else { "errors" }
    )
}

impl LoadError {
    /// Each problem on its own line, as `serin check` prints them.
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Invalid {
                file,
                errors,
                left_out,
            } => {
                let mut lines: Vec<String> =
                    errors.iter().map(|e| format!("{file}: {e}")).collect();
                if *left_out > 0 {
                    lines.push(format!("{file}: {}", left_out_line(*left_out)));
                }
                lines
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

fn render_invalid(file: &str, errors: &[ConfigError], left_out: usize) -> String {
    let total = errors.len() + left_out;
    let noun = if total == 1 { "error" } else { "errors" };
    let mut out = format!("{total} {noun} in {file}:");
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    if left_out > 0 {
        out.push_str("\n  ");
        out.push_str(&left_out_line(left_out));
    }
    out
}

/// How many characters of a value from the config an error shows; longer values are
/// cut there and their length is given instead of the rest.
pub const QUOTE_CHARS: usize = 80;

/// The longest path an error shows whole (a path holds mapping keys, which the
/// document chooses).
const PATH_CHARS: usize = 160;

/// The longest message shown whole. Messages quote values through [`Quoted`] and stay
/// far below this; it only bounds what would slip through.
const MESSAGE_CHARS: usize = 2000;

/// A value from the config as an error shows it: in double quotes, control characters
/// escaped (so a message stays one line), and when it has more than [`QUOTE_CHARS`]
/// characters, only those, then `…` and its length: `"aaaa…" (131072 characters)`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let cut = write_prefix(f, self.0, QUOTE_CHARS)?;
        f.write_str("\"")?;
        if let Some(total) = cut {
            write!(f, " ({total} characters)")?;
        }
        Ok(())
    }
}

/// How many characters of a file's path an error shows: paths are longer than
/// values, and a real one is shown whole.
pub const PATH_SHOWN_CHARS: usize = 256;

/// Text from the config that a message shows bare (a port, an anchor's name): like
/// [`Quoted`] without the quotes, `99999999…(131072 characters)`.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(total) = write_prefix(f, self.0, QUOTE_CHARS)? {
            write!(f, " ({total} characters)")?;
        }
        Ok(())
    }
}

/// A file's path from the config as a message shows it: bare, and when it has more
/// than [`PATH_SHOWN_CHARS`] characters, only those, then `…` and its length.
pub struct ShownPath<'a>(pub &'a str);

impl fmt::Display for ShownPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(total) = write_prefix(f, self.0, PATH_SHOWN_CHARS)? {
            write!(f, " ({total} characters)")?;
        }
        Ok(())
    }
}

/// Writes at most `max` characters of `text`, control characters escaped, and `…` if
/// it had more; then returns its length in characters.
fn write_prefix(
    f: &mut fmt::Formatter<'_>,
    text: &str,
    max: usize,
) -> Result<Option<usize>, fmt::Error> {
    let mut chars = text.chars();
    for c in chars.by_ref().take(max) {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            f.write_fmt(format_args!("{c}"))?;
        }
    }
    if chars.next().is_none() {
        return Ok(None);
    }
    f.write_str("…")?;
    Ok(Some(max + 1 + chars.count()))
}

/// `path` as errors show it: whole when short; otherwise every key longer than 40
/// characters is cut, and a path still too long (deep nesting) keeps its start and its
/// end around a `…`. Control characters are escaped.
pub fn bound_path(path: &str) -> String {
    if path.len() <= PATH_CHARS && !path.chars().any(char::is_control) {
        return path.to_string();
    }
    let mut out = String::new();
    for (i, step) in path.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        // A key, then list indices (`versions[0]`).
        let (key, indices) = step.split_at(step.find('[').unwrap_or(step.len()));
        let long = key.chars().nth(40).is_some();
        for c in key.chars().take(if long { 32 } else { 40 }) {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        if long {
            out.push('…');
        }
        out.extend(
            indices
                .chars()
                .map(|c| if c.is_control() { '?' } else { c }),
        );
    }
    elide_middle(out, PATH_CHARS, 100)
}

/// `message` as errors show it: whole up to [`MESSAGE_CHARS`] characters, else its
/// start and its end (where a message says what to do) around a count of what was
/// left out. Control characters are escaped, so a message is one line.
pub fn bound_message(message: &str) -> String {
    if message.len() <= MESSAGE_CHARS && !message.chars().any(char::is_control) {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len().min(4 * MESSAGE_CHARS));
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    elide_middle(out, MESSAGE_CHARS, MESSAGE_CHARS / 2)
}

/// `text` if it has at most `max` characters, else its first `head` characters, `…`,
/// how many were left out, and its last `max - head` characters.
fn elide_middle(text: String, max: usize, head: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text;
    }
    let tail = max - head;
    let left_out = total - head - tail;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(total - tail).collect();
    format!("{start}… ({left_out} characters left out) …{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(Quoted("8080").to_string(), "\"8080\"");
        assert_eq!(Shown("99999").to_string(), "99999");
        assert_eq!(
            ShownPath("/etc/serin/ca.pem").to_string(),
            "/etc/serin/ca.pem"
        );
    }

    #[test]
    fn long_values_show_a_prefix_and_their_length() {
        let long = "a".repeat(131_072);
        assert_eq!(
            Quoted(&long).to_string(),
            format!("\"{}…\" (131072 characters)", "a".repeat(QUOTE_CHARS))
        );
        assert_eq!(
            Shown(&long).to_string(),
            format!("{}… (131072 characters)", "a".repeat(QUOTE_CHARS))
        );
        assert_eq!(
            ShownPath(&long).to_string(),
            format!("{}… (131072 characters)", "a".repeat(PATH_SHOWN_CHARS))
        );
        // Exactly the limit is shown whole.
        let at_limit = "é".repeat(QUOTE_CHARS);
        assert_eq!(Quoted(&at_limit).to_string(), format!("\"{at_limit}\""));
    }

    #[test]
    fn control_characters_are_escaped_so_an_error_stays_one_line() {
        assert_eq!(Quoted("a\nb\tc").to_string(), r#""a\nb\tc""#);
        assert_eq!(bound_message("x\ny"), r"x\ny");
        assert_eq!(bound_path("weights.a\nb"), r"weights.a\nb");
    }

    #[test]
    fn long_paths_are_cut_step_by_step_then_in_the_middle() {
        assert_eq!(
            bound_path("services[0].split.weights.canary"),
            "services[0].split.weights.canary"
        );
        let key = "k".repeat(100_000);
        let shown = bound_path(&format!("notify[0].headers.{key}"));
        assert_eq!(shown, format!("notify[0].headers.{}…", "k".repeat(32)));
        let deep = format!("listeners{}", "[0]".repeat(1000));
        let shown = bound_path(&deep);
        assert!(shown.chars().count() < PATH_CHARS + 40, "{shown}");
        assert!(shown.starts_with("listeners[0][0]"), "{shown}");
        assert!(shown.contains("characters left out"), "{shown}");
    }

    #[test]
    fn a_message_that_slipped_through_keeps_its_start_and_end() {
        let message = format!("{} is wrong; do this", "v".repeat(1_000_000));
        let shown = bound_message(&message);
        assert!(
            shown.chars().count() < MESSAGE_CHARS + 60,
            "{}",
            shown.len()
        );
        assert!(shown.starts_with("vvvv"));
        assert!(shown.ends_with("is wrong; do this"));
    }

    #[test]
    fn config_errors_are_bounded() {
        let e = ConfigError::new("a".repeat(10_000), "m".repeat(10_000));
        assert!(e.to_string().chars().count() < PATH_CHARS + MESSAGE_CHARS + 100);
    }
}
