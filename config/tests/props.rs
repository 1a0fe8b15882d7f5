//! Properties of reading a config, whatever the text: it never panics, never takes
//! long, and gives either a valid snapshot or errors that each say where they are (a
//! path, a line and column, or the file as a whole) in a short line.
//!
//! Inputs: arbitrary bytes and strings, and valid configs mutated the ways a hostile
//! or careless file differs: a value of the wrong type at any key, deep nesting, many
//! aliases to a large node, huge scalars.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_yaml_ng::{Mapping, Value};
use serin_config::{parse_str, LoadError};

/// A valid config using most sections.
const BASE: &str = concat!(
    include_str!("../../tests/fixtures/valid/rollout.yaml"),
    "limits: { max_header_bytes: 32KiB, idle_timeout: 60s, max_request_body: 1MiB }\n",
    "notify:\n",
    "  - { url: http://127.0.0.1:7000/hooks, events: [rolled_back], headers: { x-team: edge } }\n",
);

/// The longest error line accepted: the origin, a bounded path, a bounded message.
const MAX_LINE: usize = 2_600;

/// Generous for a debug build on a loaded machine: a hostile input took 17 s and more.
const MAX_TIME: Duration = Duration::from_secs(5);

/// Messages about the document as a whole, which need no path or location.
fn is_about_the_whole_file(message: &str) -> bool {
    message.starts_with("the file is empty")
        || message.starts_with("the file holds no settings")
        || message.starts_with("the config is larger than")
        // Read as a `Value` for its `<<` merges: no locations, and a top-level key
        // has no path.
        || message.contains("a `<<` key merges")
        || message.starts_with("unknown field")
        || message.starts_with("invalid type")
        || message.starts_with("deserializing from YAML containing more than one document")
}

/// The most memory reading a config may take at once, beyond what it started with:
/// the limits bound it (8 MiB of text and 250 000 values with aliases expanded, a file
/// of 4 MiB); a 130 KB file of aliases took 550 MB before.
const MAX_MEMORY: usize = 256 << 20;

/// Reads `text` and checks the properties; panics (failing the case) when one fails.
fn check(text: &str) {
    let started = Instant::now();
    let before = counting::reset_peak();
    let result = parse_str(text, "FILE");
    let peak = counting::peak().saturating_sub(before);
    let took = started.elapsed();
    assert!(took < MAX_TIME, "took {took:?}");
    assert!(peak < MAX_MEMORY, "took {} MiB", peak >> 20);
    let Err(err) = result else {
        return;
    };
    for line in err.lines() {
        assert!(line.len() <= MAX_LINE, "a line of {} bytes", line.len());
        assert!(!line.contains('\n'), "a line break in {line:?}");
    }
    match &err {
        LoadError::Parse {
            line_col,
            path,
            message,
            ..
        } => assert!(
            line_col.is_some() || !path.is_empty() || is_about_the_whole_file(message),
            "no place for {message:?}"
        ),
        LoadError::Invalid { errors, .. } => {
            assert!(!errors.is_empty());
            for e in errors {
                assert!(!e.path.is_empty(), "no path for {:?}", e.message);
            }
        }
        LoadError::Io { .. } | LoadError::File { .. } => panic!("parse_str read a file: {err}"),
    }
}

/// An allocator that counts the bytes each thread has allocated and not freed, and
/// the most it had at once since [`reset_peak`](counting::reset_peak).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static LIVE: Cell<usize> = const { Cell::new(0) };
        static PEAK: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: every call is passed on to the system allocator unchanged; the counters
    // are thread-local cells, which allocate nothing.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            grow(layout.size());
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            shrink(layout.size());
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            shrink(layout.size());
            grow(new_size);
            // SAFETY: the caller's contract, passed on.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    fn grow(size: usize) {
        let _ = LIVE.try_with(|live| {
            live.set(live.get() + size);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
        });
    }

    fn shrink(size: usize) {
        // Freed on another thread than it was allocated on: this thread's count may
        // not hold it.
        let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// This thread's bytes now, which its peak starts again from.
    pub fn reset_peak() -> usize {
        let live = LIVE.with(Cell::get);
        PEAK.with(|peak| peak.set(live));
        live
    }

    /// The most bytes this thread had at once since [`reset_peak`].
    pub fn peak() -> usize {
        PEAK.with(Cell::get)
    }
}

fn base() -> Value {
    serde_yaml_ng::from_str(BASE).expect("the base config is YAML")
}

/// A value of any YAML type: scalars of every kind (a huge string too), short lists and
/// mappings.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|n| Value::Number(n.into())),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{1,30}(B|KiB|MiB|TiB|EiB|ms|s|m|h|d|y|%)?".prop_map(Value::String),
        (1usize..300_000).prop_map(|n| Value::String("z".repeat(n))),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((".{0,12}", inner), 0..4).prop_map(|entries| {
                Value::Mapping(
                    entries
                        .into_iter()
                        .map(|(k, v)| (Value::String(k), v))
                        .collect::<Mapping>(),
                )
            }),
        ]
    })
}

/// Every node of `value`, as the steps to it (mapping keys and list indices).
fn paths(value: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                here.push(Step::Index(i));
                paths(item, here, out);
                here.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                here.push(Step::Key(k.clone()));
                paths(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum Step {
    Key(Value),
    Index(usize),
}

fn node_at<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |node, step| match (node, step) {
        (Value::Sequence(items), Step::Index(i)) => &mut items[*i],
        (Value::Mapping(map), Step::Key(k)) => map.get_mut(k).expect("a key of the path"),
        _ => unreachable!("paths come from the value"),
    })
}

fn all_paths() -> Vec<Vec<Step>> {
    let mut out = Vec::new();
    paths(&base(), &mut Vec::new(), &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_strings(text in "\\PC{0,2000}") {
        check(&text);
    }

    /// YAML's punctuation, more often than arbitrary text has it.
    #[test]
    fn strings_of_yaml_punctuation(text in "[\\[\\]{}:,&*!|>'\"#%@`?<\\- \n\ta-z0-9]{0,3000}") {
        check(&text);
    }

    /// A value of any type at any key of a valid config.
    #[test]
    fn any_value_at_any_key(index in any::<prop::sample::Index>(), value in any_value()) {
        let targets = all_paths();
        let mut doc = base();
        *node_at(&mut doc, &targets[index.index(targets.len())]) = value;
        check(&serde_yaml_ng::to_string(&doc).expect("YAML out"));
    }

    /// A key removed, or one added, anywhere.
    #[test]
    fn a_key_removed_or_added(index in any::<prop::sample::Index>(), key in ".{0,20}", add in any::<bool>()) {
        let targets = all_paths();
        let mut doc = base();
        let path = &targets[index.index(targets.len())];
        if let Some((Step::Key(last), parent)) = path.split_last().map(|(l, p)| (l.clone(), p)) {
            if let Value::Mapping(map) = node_at(&mut doc, parent) {
                if add {
                    map.insert(Value::String(key), Value::Null);
                } else {
                    map.remove(&last);
                }
            }
        }
        check(&serde_yaml_ng::to_string(&doc).expect("YAML out"));
    }
}

/// The places of the base config's text where a value can be swapped for another.
const VALUE_SITES: &[&str] = &[
    "127.0.0.1:9001",
    "127.0.0.1:8080",
    "{ stable: 100, canary: 0 }",
    "30s",
    "99%",
    "./serin-state",
    "x-user-id",
    "[rolled_back]",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lists or mappings nested 0 to 100 000 levels deep in place of a value.
    #[test]
    fn deep_nesting_in_place_of_a_value(
        site in prop::sample::select(VALUE_SITES),
        depth in prop_oneof![0usize..100, 60usize..70, 100usize..100_000],
        mapping in any::<bool>(),
        closed in any::<bool>(),
    ) {
        let (open, close) = if mapping { ("{a: ", "}") } else { ("[", "]") };
        let nested = format!("{}1{}", open.repeat(depth), if closed { close.repeat(depth) } else { String::new() });
        check(&BASE.replacen(site, &nested, 1));
    }

    /// A large node anchored once (as `admin.listen`) and repeated by many aliases
    /// (as `listeners[0].trust_forwarded`, which serde reads whole).
    #[test]
    fn aliases_to_a_large_node(
        size in 1usize..200_000,
        aliases in 0usize..5_000,
        as_list in any::<bool>(),
    ) {
        let node = if as_list {
            format!("[{}]", vec!["y"; size / 2 + 1].join(", "))
        } else {
            "y".repeat(size)
        };
        let text = BASE
            .replacen("127.0.0.1:9901", &format!("&big {node}"), 1)
            .replacen(
                "listen: 127.0.0.1:8080",
                &format!("listen: 127.0.0.1:8080\n    trust_forwarded: [{}]", vec!["*big"; aliases].join(", ")),
                1,
            );
        check(&text);
    }

    /// A huge scalar, plain or quoted, in place of a value or of a key.
    #[test]
    fn a_huge_scalar(
        site in prop::sample::select(VALUE_SITES),
        size in 1usize..1_000_000,
        quoted in any::<bool>(),
        key in any::<bool>(),
    ) {
        let scalar = if quoted { format!("\"{}\"", "q".repeat(size)) } else { "p".repeat(size) };
        let text = if key {
            format!("{BASE}? {scalar}\n: 1\n")
        } else {
            BASE.replacen(site, &scalar, 1)
        };
        check(&text);
    }
}

/// The base is valid: the mutations start from a config that loads.
#[test]
fn the_base_config_is_valid() {
    if let Err(err) = parse_str(BASE, "BASE") {
        panic!("{}", err.lines().join("\n"));
    }
}
