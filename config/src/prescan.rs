//! The first pass over a config's YAML, before serde reads it: it bounds how deep the
//! document nests and how large it is with its aliases expanded, and stops at the
//! first node past a limit, so that a hostile document costs milliseconds.
//!
//! Why a pass of its own: libyaml (through unsafe-libyaml, serde_yaml_ng's parser)
//! takes time quadratic in the nesting of flow collections (its scanner walks one
//! entry per open `[` or `{` for every token), and serde_yaml_ng reads the whole event
//! stream before its own depth limit applies, so `[[[[…]]]]` 50 000 levels deep took
//! 17–32 s to refuse. This pass reads the same events from the same parser, one at a
//! time, and stops at depth [`MAX_DEPTH`]: the parser never holds more than that many
//! levels (plus what it looks ahead: at most 1024 characters). And serde_yaml_ng
//! replays an alias by deserializing its node again, so a few KiB of aliases to one
//! large string could take hundreds of MiB; here an alias costs the size of the node
//! it names, counted against [`MAX_NODES`] and [`MAX_TEXT_BYTES`].
//!
//! A syntax error ends this pass without an error of its own: serde_yaml_ng reports it,
//! with its path. An alias is counted as serde_yaml_ng resolves it: to the node most
//! recently anchored with its name in the same document.

use std::collections::HashMap;

use crate::error::{Shown, QUOTE_CHARS};

/// The deepest a document may nest lists and mappings (its top-level mapping is level
/// 1; a serin config needs about 10), counting the levels an alias stands for.
pub const MAX_DEPTH: usize = 64;
/// The most values (scalars, keys included, lists and mappings) a document may hold
/// with its aliases expanded.
pub const MAX_NODES: u64 = 250_000;
/// The most bytes of text (scalars, keys included) a document may hold with its
/// aliases expanded.
pub const MAX_TEXT_BYTES: u64 = 8 * 1024 * 1024;

/// The first place where the document passed a limit, and which (a message that says
/// what to do).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Exceeded {
    /// 1-based, as serde_yaml_ng reports locations.
    pub line: usize,
    pub column: usize,
    /// The document path of the node (`listeners[0][0]`), as serde_path_to_error
    /// writes paths.
    pub path: String,
    pub message: String,
}

/// What the scan saw of a document within the limits.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// A `<<` merge key: serde_yaml_ng applies merges only to a `Value`.
    pub merges: bool,
}

/// Checks `text` against the limits; `Ok` also when it is not valid YAML (serde
/// reports that).
pub(crate) fn check(text: &str) -> Result<Seen, Exceeded> {
    let mut scan = Scan::default();
    let Some(mut parser) = libyaml::Parser::new(text) else {
        return Ok(scan.seen);
    };
    while let Some((event, mark)) = parser.next() {
        match scan.step(event) {
            Step::Go => {}
            Step::Stop => return Ok(scan.seen),
            Step::Exceeded(message) => {
                return Err(Exceeded {
                    line: mark.line + 1,
                    column: mark.column + 1,
                    path: scan.path(),
                    message,
                })
            }
        }
    }
    Ok(scan.seen)
}

/// What a node costs: its values, its bytes of text, and how many levels of lists and
/// mappings it holds (0 for a scalar).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: u64,
    bytes: u64,
    height: usize,
}

/// An open list or mapping.
struct Frame {
    /// Its anchor's id, if it has one.
    anchor: Option<usize>,
    /// Itself and what it holds so far.
    size: Size,
    position: Position,
}

/// Where the next node of an open list or mapping goes, for the path of an error.
enum Position {
    Item(usize),
    Key,
    /// The value of the key written (its first characters).
    Value(String),
}

#[derive(Default)]
struct Scan {
    frames: Vec<Frame>,
    /// Anchor name → id, for the current document; an id's size is `None` while its
    /// node is still open.
    anchors: HashMap<Vec<u8>, usize>,
    sizes: Vec<Option<Size>>,
    /// The whole stream so far, aliases expanded.
    total: Size,
    seen: Seen,
}

enum Step {
    Go,
    /// Nothing more to check (the end, a syntax error ahead, an unknown alias): serde
    /// takes over.
    Stop,
    Exceeded(String),
}

impl Scan {
    fn step(&mut self, event: libyaml::Event) -> Step {
        use libyaml::Event;
        match event {
            Event::DocumentStart => {
                self.anchors.clear();
                self.sizes.clear();
            }
            Event::Scalar {
                anchor,
                length,
                text,
                plain,
            } => {
                if plain
                    && text == "<<"
                    && matches!(self.frames.last(), Some(f) if matches!(f.position, Position::Key))
                {
                    self.seen.merges = true;
                }
                let size = Size {
                    nodes: 1,
                    bytes: length,
                    height: 0,
                };
                if let Err(message) = self.count(size, None) {
                    return Step::Exceeded(message);
                }
                if let Some(name) = anchor {
                    let id = self.anchor(name);
                    self.sizes[id] = Some(size);
                }
                self.complete(size, Some(text));
            }
            Event::Alias(name) => {
                let Some(&id) = self.anchors.get(&name) else {
                    return Step::Stop;
                };
                let shown = String::from_utf8_lossy(&name);
                let Some(size) = self.sizes[id] else {
                    return Step::Exceeded(format!(
                        "the alias *{} is inside the node anchored &{} that it names, so it \
                         would repeat that node without end; move the alias out of the node",
                        Shown(&shown),
                        Shown(&shown)
                    ));
                };
                if self.frames.len() + size.height > MAX_DEPTH {
                    return Step::Exceeded(format!(
                        "the alias *{} nests lists and mappings more than {MAX_DEPTH} levels \
                         deep here (counting the levels of the node it names), serin's limit; \
                         a serin config needs about 10: use the alias where it nests less",
                        Shown(&shown)
                    ));
                }
                if let Err(message) = self.count(size, Some(&shown)) {
                    return Step::Exceeded(message);
                }
                self.complete(size, None);
            }
            Event::SequenceStart(anchor) => return self.open(anchor, Position::Item(0)),
            Event::MappingStart(anchor) => return self.open(anchor, Position::Key),
            Event::CollectionEnd => {
                let Some(frame) = self.frames.pop() else {
                    return Step::Stop;
                };
                let size = Size {
                    height: frame.size.height + 1,
                    ..frame.size
                };
                if let Some(id) = frame.anchor {
                    self.sizes[id] = Some(size);
                }
                self.complete(size, None);
            }
            Event::StreamEnd => return Step::Stop,
            Event::Other => {}
        }
        Step::Go
    }

    /// A list or mapping (anchored, maybe) opens here, its first node at `position`.
    fn open(&mut self, anchor: Option<Vec<u8>>, position: Position) -> Step {
        if self.frames.len() >= MAX_DEPTH {
            return Step::Exceeded(format!(
                "lists and mappings nest more than {MAX_DEPTH} levels deep here, serin's \
                 limit; a serin config needs about 10: check for a `[` or `{{` that is never \
                 closed"
            ));
        }
        let size = Size {
            nodes: 1,
            bytes: 0,
            height: 0,
        };
        if let Err(message) = self.count(size, None) {
            return Step::Exceeded(message);
        }
        let anchor = anchor.map(|name| self.anchor(name));
        self.frames.push(Frame {
            anchor,
            size,
            position,
        });
        Step::Go
    }

    /// A new anchor named `name`: the id aliases with that name now resolve to.
    fn anchor(&mut self, name: Vec<u8>) -> usize {
        let id = self.sizes.len();
        self.sizes.push(None);
        self.anchors.insert(name, id);
        id
    }

    /// Adds a node of `size` (an alias's, when `alias` names it) to the total, or says
    /// which limit it passes.
    fn count(&mut self, size: Size, alias: Option<&str>) -> Result<(), String> {
        let nodes = self.total.nodes + size.nodes;
        let bytes = self.total.bytes + size.bytes;
        let what = match alias {
            Some(name) => format!(
                "with the alias *{} (which counts as the node it names)",
                Shown(name)
            ),
            None => "here".to_string(),
        };
        if nodes > MAX_NODES {
            return Err(format!(
                "{what} the document holds more than {MAX_NODES} values (scalars, keys, lists \
                 and mappings, each alias counting the values of the node it names), serin's \
                 limit; split the config, or repeat less through aliases"
            ));
        }
        if bytes > MAX_TEXT_BYTES {
            return Err(format!(
                "{what} the document holds more than {} of text (each alias counting the text \
                 of the node it names), serin's limit; shorten the values, or repeat less \
                 through aliases",
                crate::files::size_text(MAX_TEXT_BYTES)
            ));
        }
        self.total.nodes = nodes;
        self.total.bytes = bytes;
        Ok(())
    }

    /// A node of `size` is complete: it counts in the list or mapping holding it, whose
    /// next node comes after it. `text` is a scalar's first characters (a key's, in a
    /// mapping).
    fn complete(&mut self, size: Size, text: Option<String>) {
        let Some(frame) = self.frames.last_mut() else {
            return;
        };
        frame.size.nodes += size.nodes;
        frame.size.bytes += size.bytes;
        frame.size.height = frame.size.height.max(size.height);
        frame.position = match std::mem::replace(&mut frame.position, Position::Key) {
            Position::Item(i) => Position::Item(i + 1),
            Position::Key => Position::Value(text.unwrap_or_else(|| "?".to_string())),
            Position::Value(_) => Position::Key,
        };
    }

    /// The path of the node being read, as serde_path_to_error writes it.
    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.frames {
            match &frame.position {
                Position::Item(i) => path.push_str(&format!("[{i}]")),
                Position::Key => {}
                Position::Value(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
            }
        }
        path
    }
}

/// libyaml's event parser, one event at a time.
mod libyaml {
    use std::marker::PhantomData;
    use std::mem::MaybeUninit;

    use unsafe_libyaml as unsafe_sys;

    /// What the scan needs of an event.
    pub(super) enum Event {
        StreamEnd,
        DocumentStart,
        Alias(Vec<u8>),
        Scalar {
            anchor: Option<Vec<u8>>,
            /// Of the value, in bytes.
            length: u64,
            /// The value's first characters (enough for a path).
            text: String,
            /// Written without quotes.
            plain: bool,
        },
        SequenceStart(Option<Vec<u8>>),
        MappingStart(Option<Vec<u8>>),
        /// The end of a list or a mapping.
        CollectionEnd,
        Other,
    }

    /// Where an event starts, 0-based.
    pub(super) struct Mark {
        pub line: usize,
        pub column: usize,
    }

    /// A libyaml parser reading `'t` text.
    pub(super) struct Parser<'t> {
        /// Boxed: libyaml's parser must not move once initialized.
        raw: Box<MaybeUninit<unsafe_sys::yaml_parser_t>>,
        failed: bool,
        _text: PhantomData<&'t str>,
    }

    impl<'t> Parser<'t> {
        /// `None` when libyaml cannot allocate its buffers.
        pub(super) fn new(text: &'t str) -> Option<Self> {
            let mut raw = Box::new(MaybeUninit::<unsafe_sys::yaml_parser_t>::uninit());
            let parser = raw.as_mut_ptr();
            // SAFETY: `parser` points to memory for a parser, which `initialize` fills
            // in (or frees what it allocated and fails). The input is `text`, which
            // outlives the parser (`'t`), and is read-only to libyaml.
            unsafe {
                if unsafe_sys::yaml_parser_initialize(parser).fail {
                    return None;
                }
                unsafe_sys::yaml_parser_set_encoding(parser, unsafe_sys::YAML_UTF8_ENCODING);
                unsafe_sys::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as u64);
            }
            Some(Self {
                raw,
                failed: false,
                _text: PhantomData,
            })
        }

        /// The next event, or `None` at a syntax error (and after it).
        pub(super) fn next(&mut self) -> Option<(Event, Mark)> {
            if self.failed {
                return None;
            }
            let parser = self.raw.as_mut_ptr();
            let mut event = MaybeUninit::<unsafe_sys::yaml_event_t>::uninit();
            // SAFETY: the parser was initialized in `new` and is not used after a
            // failure; `yaml_parser_parse` fills `event` when it succeeds, and the
            // event's pointers (anchor, value) are valid, NUL-terminated or of the
            // given length, until `yaml_event_delete`, after which nothing of them is
            // kept.
            unsafe {
                if unsafe_sys::yaml_parser_parse(parser, event.as_mut_ptr()).fail {
                    self.failed = true;
                    return None;
                }
                let raw = &*event.as_ptr();
                let mark = Mark {
                    line: raw.start_mark.line as usize,
                    column: raw.start_mark.column as usize,
                };
                let converted = match raw.type_ {
                    unsafe_sys::YAML_STREAM_END_EVENT => Event::StreamEnd,
                    unsafe_sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                    unsafe_sys::YAML_ALIAS_EVENT => match anchor(raw.data.alias.anchor) {
                        Some(name) => Event::Alias(name),
                        None => Event::Other,
                    },
                    unsafe_sys::YAML_SCALAR_EVENT => {
                        let scalar = raw.data.scalar;
                        let length = scalar.length;
                        let shown = (length as usize).min(4 * (super::QUOTE_CHARS + 1));
                        let bytes = std::slice::from_raw_parts(scalar.value, shown);
                        let mut text: String = String::from_utf8_lossy(bytes)
                            .chars()
                            .take(super::QUOTE_CHARS)
                            .collect();
                        if (text.len() as u64) < length {
                            text.push('…');
                        }
                        Event::Scalar {
                            anchor: anchor(scalar.anchor),
                            length,
                            text,
                            plain: scalar.style == unsafe_sys::YAML_PLAIN_SCALAR_STYLE,
                        }
                    }
                    unsafe_sys::YAML_SEQUENCE_START_EVENT => {
                        Event::SequenceStart(anchor(raw.data.sequence_start.anchor))
                    }
                    unsafe_sys::YAML_MAPPING_START_EVENT => {
                        Event::MappingStart(anchor(raw.data.mapping_start.anchor))
                    }
                    unsafe_sys::YAML_SEQUENCE_END_EVENT | unsafe_sys::YAML_MAPPING_END_EVENT => {
                        Event::CollectionEnd
                    }
                    _ => Event::Other,
                };
                unsafe_sys::yaml_event_delete(event.as_mut_ptr());
                Some((converted, mark))
            }
        }
    }

    /// The anchor name at `name`, a NUL-terminated string or null.
    ///
    /// # Safety
    /// `name` is null or points to a NUL-terminated string.
    unsafe fn anchor(name: *const u8) -> Option<Vec<u8>> {
        if name.is_null() {
            return None;
        }
        // SAFETY: the caller's promise.
        let name = unsafe { std::ffi::CStr::from_ptr(name.cast()) };
        Some(name.to_bytes().to_vec())
    }

    impl Drop for Parser<'_> {
        fn drop(&mut self) {
            // SAFETY: the parser was initialized in `new` (a `Parser` exists only
            // then) and is deleted once, here.
            unsafe { unsafe_sys::yaml_parser_delete(self.raw.as_mut_ptr()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exceeded(text: &str) -> Exceeded {
        check(text).expect_err("a limit is passed")
    }

    #[test]
    fn a_config_with_anchors_aliases_and_merges_passes() {
        let text = "\
defaults: &defaults { connect: 1s, request: 15s }
services:
  - name: a
    timeouts: *defaults
  - name: b
    timeouts: { <<: *defaults, request: 30s }
";
        assert_eq!(check(text), Ok(Seen { merges: true }));
    }

    #[test]
    fn only_a_plain_merge_key_is_a_merge() {
        assert_eq!(check("a: { \"<<\": 1 }"), Ok(Seen::default()));
        assert_eq!(check("a: [<<]"), Ok(Seen::default()));
        assert_eq!(check("a: { <<: {} }"), Ok(Seen { merges: true }));
    }

    #[test]
    fn nesting_at_the_limit_passes_and_one_more_level_does_not() {
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(check(&at_limit), Ok(Seen::default()));
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = exceeded(&deeper);
        assert_eq!((e.line, e.column), (1, MAX_DEPTH + 1));
        assert_eq!(e.path, "[0]".repeat(MAX_DEPTH));
        assert!(e
            .message
            .starts_with("lists and mappings nest more than 64 levels deep here"));
    }

    #[test]
    fn the_path_names_keys_and_indices() {
        let text = format!(
            "services:\n  - name: a\n    versions: {}\n",
            "[".repeat(MAX_DEPTH)
        );
        let e = exceeded(&text);
        assert_eq!(
            e.path,
            format!("services[0].versions{}", "[0]".repeat(MAX_DEPTH - 3))
        );
        assert_eq!(e.line, 3);
    }

    #[test]
    fn an_alias_counts_the_levels_it_stands_for() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let text = format!(
            "a: &deep {deep}\nb: {}*deep{}\n",
            "[".repeat(30),
            "]".repeat(30)
        );
        let e = exceeded(&text);
        assert_eq!(e.line, 2);
        assert!(e
            .message
            .starts_with("the alias *deep nests lists and mappings more than 64"));
    }

    #[test]
    fn aliases_count_the_text_they_repeat() {
        let big = "x".repeat((1 << 20) - 16);
        let mut text = format!("a: &big {big}\nb: [");
        for _ in 0..7 {
            text.push_str("*big, ");
        }
        assert_eq!(check(&format!("{text}]")), Ok(Seen::default()));
        text.push_str("*big]");
        let e = exceeded(&text);
        assert_eq!(e.path, "b[7]");
        assert_eq!(
            e.message,
            "with the alias *big (which counts as the node it names) the document holds more \
             than 8 MiB of text (each alias counting the text of the node it names), serin's \
             limit; shorten the values, or repeat less through aliases"
        );
    }

    #[test]
    fn aliases_count_the_values_they_repeat() {
        // A billion laughs: each level repeats the one before ten times.
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{p}"); 10].join(", ")
            ));
        }
        let e = exceeded(&text);
        assert!(
            e.message.contains("more than 250000 values"),
            "{}",
            e.message
        );
        assert_eq!((e.line, e.path.as_str()), (6, "a5[1]"));
    }

    #[test]
    fn an_alias_inside_its_own_node_is_refused() {
        let e = exceeded("a: &loop [1, *loop]\n");
        assert_eq!((e.line, e.column, e.path.as_str()), (1, 14, "a[1]"));
        assert!(e
            .message
            .starts_with("the alias *loop is inside the node anchored &loop"));
    }

    #[test]
    fn an_alias_names_the_latest_anchor_of_its_name() {
        // `&a` is redefined as a scalar: the alias repeats one byte, not the list.
        let big = "y".repeat(5 << 20);
        let text = format!("a: &a [{big}]\nb: &a 1\nc: [*a, *a, *a]\n");
        assert_eq!(check(&text), Ok(Seen::default()));
    }

    #[test]
    fn syntax_errors_and_unknown_aliases_are_left_to_serde() {
        assert_eq!(check("a: [1, 2\nb: }"), Ok(Seen::default()));
        assert_eq!(check("a: *nowhere"), Ok(Seen::default()));
        assert_eq!(check(""), Ok(Seen::default()));
    }

    #[test]
    fn fifty_thousand_levels_are_refused_at_once() {
        let n = 50_000;
        let text = format!("listeners: {}{}\n", "[".repeat(n), "]".repeat(n));
        let started = std::time::Instant::now();
        let e = exceeded(&text);
        assert_eq!(e.column, "listeners: ".len() + MAX_DEPTH);
        // It took 17 s and more before; the bound is loose for a loaded machine.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
