//! Shadow copies: during a rollout's shadow step, a copy of a request the baseline
//! serves goes to the canary, and the canary's answer is recorded apart from its live
//! numbers and compared with the answer the client got.
//!
//! - **Which requests** ([`copy`], one branch when no shadow step is in force): the
//!   view gives the service a shadow share; the split picked the baseline (not forced);
//!   the method is listed; it asks for no upgrade; the body is empty or was read whole
//!   and is within `max_body` (a larger one is counted, not copied).
//! - **The copy** is sent with `x-serin-shadow: 1` by a task of its own on the
//!   worker's runtime (`tokio::spawn` on a single-threaded runtime: the same thread),
//!   within the service's request timeout. The client's answer never waits for it. A
//!   per-worker count of copies in flight bounds them: beyond `max_in_flight` a copy
//!   is dropped and counted, never queued.
//! - **The comparison**: the client's side ([`ClientSide`], carried by the client's
//!   response body) gives its status, with `compare.headers` a digest of its headers
//!   ([`HeaderDigest`]), and with `compare.body` an xxh3 hash of its body up to
//!   `max_body` as it streams; the copy's task digests and hashes the canary's answer
//!   the same way, waits (bounded) for the client's side and compares ([`differs`]).
//!   A body over `max_body`, or one the client did not read to its end, is not
//!   compared (counted). Headers that cannot be compared meaningfully (framing,
//!   hop-by-hop, serin's own: [`NEVER_COMPARED`]) and those in `ignore_headers` are
//!   left out of both digests.
//! - **Numbers** ([`ShadowNumbers`]): the canary's answers to copies in stats of their
//!   own, and counts of copies sent, dropped by reason, compared, differing and not
//!   compared, plus a few examples of differing answers (method, path, both statuses,
//!   the part that differed and a header's name: never a header value, a query or a
//!   body). The control loop takes them every tick
//!   ([`ShadowNumbers::take`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Either};
use hyper::body::Frame;
use serin_config::snapshot::UpstreamProtocol;
use tokio::sync::oneshot;
use xxhash_rust::xxh3::Xxh3;

use crate::body::{Buffered, UpstreamBody};
use crate::plan::Plan;
use crate::record::{Interval, Outcome, VersionStats};
use crate::upstream::PooledBody;
use crate::weights::View;

/// The header a copy carries, so that the canary can skip side effects.
pub const X_SERIN_SHADOW: &str = "x-serin-shadow";

/// At most this many examples of differing answers are kept between two takes.
pub const MAX_EXAMPLES: usize = 8;

/// A path in an example is cut to this many bytes.
const MAX_EXAMPLE_PATH: usize = 200;

/// A service's shadow settings, compiled with the table (`rollout.shadow`).
#[derive(Debug)]
pub struct ShadowRuntime {
    pub baseline: usize,
    pub canary: usize,
    methods: Box<[Method]>,
    max_body: u64,
    max_in_flight: usize,
    compare_status: bool,
    compare_body: bool,
    /// With `compare.headers`: the names left out besides [`NEVER_COMPARED`], sorted.
    compare_headers: Option<Arc<[HeaderName]>>,
    /// Each copy's own timeout: the service's request timeout.
    timeout: Duration,
    /// Kept across reloads that keep the canary, so that copies in flight then still
    /// count.
    pub numbers: Arc<ShadowNumbers>,
}

impl ShadowRuntime {
    /// From the rollout's settings; `previous` (the same service's before a reload,
    /// same canary) lends its numbers.
    pub fn new(
        rollout: &serin_config::Rollout,
        timeout: Duration,
        shards: usize,
        previous: Option<&ShadowRuntime>,
    ) -> Option<Self> {
        let settings = rollout.shadow.as_ref()?;
        let numbers = match previous.filter(|p| p.canary == rollout.canary) {
            Some(p) => p.numbers.clone(),
            None => Arc::new(ShadowNumbers::new(shards)),
        };
        Some(Self {
            baseline: rollout.baseline,
            canary: rollout.canary,
            methods: settings
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            max_body: settings.max_body,
            max_in_flight: settings.max_in_flight as usize,
            compare_status: settings.compare_status,
            compare_body: settings.compare_body,
            compare_headers: settings.compare_headers.then(|| {
                let mut names: Vec<HeaderName> = settings
                    .ignore_headers
                    .iter()
                    .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect();
                names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
                names.into()
            }),
            timeout,
            numbers,
        })
    }
}

/// One cache line per worker's count of copies in flight.
#[derive(Debug, Default)]
#[repr(align(128))]
struct WorkerCount(AtomicUsize);

/// What shadow copies of one service did since the last take (see the module docs).
#[derive(Debug)]
pub struct ShadowNumbers {
    /// The canary's answers to copies, recorded as its live answers are, apart.
    pub stats: VersionStats,
    in_flight: Box<[WorkerCount]>,
    sent: AtomicU64,
    dropped_in_flight: AtomicU64,
    dropped_body: AtomicU64,
    compared: AtomicU64,
    mismatched: AtomicU64,
    not_compared: AtomicU64,
    examples: Mutex<Vec<MismatchExample>>,
}

/// A copied request whose two answers differed: what the timeline and `serin report`
/// show of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MismatchExample {
    pub method: String,
    /// Without the query, cut to 200 bytes.
    pub path: String,
    /// The status the client got (`None`: no answer, e.g. it went away first).
    pub client: Option<u16>,
    /// The canary's status (`None`: no answer: refused, reset, timed out).
    pub canary: Option<u16>,
    /// What differed first: the status class, the body, or a header.
    pub differed: Part,
}

/// The part of two answers found to differ first, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Status,
    Body,
    /// A header (its name only, never a value) present on one side only, or with other
    /// values.
    Header(HeaderName),
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Status => f.write_str("status"),
            Part::Body => f.write_str("body"),
            Part::Header(name) => write!(f, "header {name}"),
        }
    }
}

/// Whether a copied request's two answers were compared, and what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to compare (no answer on either side, or nothing compared was there).
    NotCompared,
    Same,
    Differs(Part),
}

/// Response headers never compared, whatever `ignore_headers` says, besides the
/// hop-by-hop ones (`crate::headers::is_hop_by_hop`: each hop sets its own): the body's
/// length, proxy authentication, and those serin adds to the client's answer. Headers
/// a `Connection` header names are hop-by-hop too, and left out.
pub const NEVER_COMPARED: [&str; 7] = [
    "content-length",
    "proxy-authenticate",
    "proxy-authorization",
    "x-request-id",
    "x-serin-fault",
    "x-serin-shadow",
    "x-serin-version",
];

/// Whether the header `name` is never compared (see [`NEVER_COMPARED`]).
fn never_compared(name: &str) -> bool {
    crate::headers::is_hop_by_hop(name) || NEVER_COMPARED.contains(&name)
}

/// One answer's headers as compared: each name compared (sorted) with a hash of its
/// values (sorted, so that their order does not count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderDigest(Vec<(HeaderName, u64)>);

impl HeaderDigest {
    /// The digest of `headers`, leaving out [`NEVER_COMPARED`], the names a
    /// `Connection` header lists, and `ignore` (sorted). Its cost is bounded by the
    /// headers' own limits; it is paid only for copied requests.
    pub fn of(headers: &HeaderMap, ignore: &[HeaderName]) -> Self {
        // The names `Connection` lists, lowercased, sorted: found once, not per name.
        let mut nominated: Vec<String> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|text| text.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        nominated.sort_unstable();
        let mut names = Vec::with_capacity(headers.keys_len());
        let mut values: Vec<&[u8]> = Vec::new();
        for name in headers.keys() {
            let n = name.as_str();
            if never_compared(n)
                || ignore.binary_search_by(|i| i.as_str().cmp(n)).is_ok()
                || nominated.binary_search_by(|t| t.as_str().cmp(n)).is_ok()
            {
                continue;
            }
            values.clear();
            values.extend(headers.get_all(name).iter().map(HeaderValue::as_bytes));
            values.sort_unstable();
            let mut hash = Xxh3::new();
            for v in &values {
                // Each value's length first, so that ["ab", "c"] and ["a", "bc"] differ.
                hash.update(&(v.len() as u64).to_le_bytes());
                hash.update(v);
            }
            names.push((name.clone(), hash.digest()));
        }
        names.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Self(names)
    }

    /// The first name (in order) present on one side only or with other values.
    pub fn first_difference<'a>(&'a self, other: &'a Self) -> Option<&'a HeaderName> {
        let (mut a, mut b) = (self.0.iter().peekable(), other.0.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return None,
                (Some((name, _)), None) | (None, Some((name, _))) => return Some(name),
                (Some((x, hx)), Some((y, hy))) => match x.as_str().cmp(y.as_str()) {
                    std::cmp::Ordering::Less => return Some(x),
                    std::cmp::Ordering::Greater => return Some(y),
                    std::cmp::Ordering::Equal if hx != hy => return Some(x),
                    std::cmp::Ordering::Equal => {
                        a.next();
                        b.next();
                    }
                },
            }
        }
    }
}

/// [`ShadowNumbers`] taken over one tick.
#[derive(Debug, Clone, Default)]
pub struct ShadowInterval {
    pub stats: Interval,
    /// Copies sent to the canary.
    pub sent: u64,
    /// Copies not sent: `max_in_flight` copies were in flight on the worker.
    pub dropped_in_flight: u64,
    /// Requests not copied: their body was over `max_body` or not read whole.
    pub dropped_body: u64,
    /// Copies whose answers were compared, and how many of those differed.
    pub compared: u64,
    pub mismatched: u64,
    /// Copies whose answers could not be compared (a body over `max_body`, a client
    /// that did not read its answer to the end, no client answer in time).
    pub not_compared: u64,
    /// At most [`MAX_EXAMPLES`].
    pub examples: Vec<MismatchExample>,
}

impl ShadowNumbers {
    fn new(shards: usize) -> Self {
        Self {
            stats: VersionStats::new(shards),
            in_flight: (0..shards.max(1)).map(|_| WorkerCount::default()).collect(),
            sent: AtomicU64::new(0),
            dropped_in_flight: AtomicU64::new(0),
            dropped_body: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            not_compared: AtomicU64::new(0),
            examples: Mutex::new(Vec::new()),
        }
    }

    /// Everything since the previous take; the counts start afresh.
    pub fn take(&self) -> ShadowInterval {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed);
        ShadowInterval {
            stats: self.stats.take(),
            sent: take(&self.sent),
            dropped_in_flight: take(&self.dropped_in_flight),
            dropped_body: take(&self.dropped_body),
            compared: take(&self.compared),
            mismatched: take(&self.mismatched),
            not_compared: take(&self.not_compared),
            examples: std::mem::take(&mut *self.lock_examples()),
        }
    }

    /// Copies in flight on all workers now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    fn lock_examples(&self) -> std::sync::MutexGuard<'_, Vec<MismatchExample>> {
        self.examples.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a request's answers differ: by status class (an answer missing on one side
/// only differs; none on either side is no comparison), then by body hash when both
/// bodies were hashed whole, then by headers when both were digested.
pub fn differs(
    compare_status: bool,
    client: Option<u16>,
    canary: Option<u16>,
    bodies: Option<(u64, u64)>,
    headers: Option<(&HeaderDigest, &HeaderDigest)>,
) -> Verdict {
    let status_differs = match (client, canary) {
        (None, None) => return Verdict::NotCompared,
        (Some(a), Some(b)) => a / 100 != b / 100,
        _ => true,
    };
    if compare_status && status_differs {
        return Verdict::Differs(Part::Status);
    }
    if let Some((a, b)) = bodies {
        if a != b {
            return Verdict::Differs(Part::Body);
        }
    }
    if let Some(name) = headers.and_then(|(a, b)| a.first_difference(b)) {
        return Verdict::Differs(Part::Header(name.clone()));
    }
    if compare_status || bodies.is_some() || headers.is_some() {
        Verdict::Same
    } else {
        Verdict::NotCompared
    }
}

/// The client's side of a copied request, carried by its response body
/// (`respond::ProxyBody`): the status it got and, with `compare.body`, the hash of the
/// body it read, handed to the copy's task when the body is done with.
#[derive(Debug)]
pub(crate) struct ClientSide {
    answer: Option<oneshot::Sender<ClientAnswer>>,
    status: Option<u16>,
    hash: Option<BodyHash>,
    /// With `compare.headers`: the names ignored until the headers are seen, then
    /// their digest.
    headers: Option<Either<Arc<[HeaderName]>, HeaderDigest>>,
    ended: bool,
}

/// What the client got: its status, its headers' digest (with `compare.headers`), and
/// its body's hash if read whole within `max_body` (`None` when bodies are not
/// compared or this one cannot be).
#[derive(Debug)]
struct ClientAnswer {
    status: Option<u16>,
    headers: Option<HeaderDigest>,
    body: Option<u64>,
}

/// An xxh3 hash of a body as it streams, up to a bound.
struct BodyHash {
    hasher: Box<Xxh3>,
    read: u64,
    max: u64,
    over: bool,
}

impl std::fmt::Debug for BodyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyHash")
            .field("read", &self.read)
            .field("over", &self.over)
            .finish_non_exhaustive()
    }
}

impl BodyHash {
    fn new(max: u64) -> Self {
        Self {
            hasher: Box::new(Xxh3::new()),
            read: 0,
            max,
            over: false,
        }
    }

    fn add(&mut self, data: &[u8]) {
        self.read = self.read.saturating_add(data.len() as u64);
        if self.read > self.max {
            self.over = true;
        } else {
            self.hasher.update(data);
        }
    }

    /// The hash, unless the body went over the bound.
    fn finish(&self) -> Option<u64> {
        (!self.over).then(|| self.hasher.digest())
    }
}

impl ClientSide {
    /// Shown the headers of the client's answer (as the client gets them).
    pub(crate) fn headers(&mut self, headers: &HeaderMap) {
        if let Some(Either::Left(ignore)) = &self.headers {
            self.headers = Some(Either::Right(HeaderDigest::of(headers, ignore)));
        }
    }

    /// Told the status of the client's answer, and whether its body is already over.
    pub(crate) fn answered(&mut self, status: u16, body_ended: bool) {
        self.status = Some(status);
        self.ended = body_ended;
    }

    /// Called with every poll of the client's body; `ended` when it has no more.
    pub(crate) fn polled<E>(
        &mut self,
        polled: &Poll<Option<Result<Frame<Bytes>, E>>>,
        ended: bool,
    ) {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(hash), Some(data)) = (self.hash.as_mut(), frame.data_ref()) {
                    hash.add(data);
                }
            }
            Poll::Ready(None) => self.ended = true,
            _ => {}
        }
        self.ended |= ended;
    }
}

impl Drop for ClientSide {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let body = match &self.hash {
                Some(hash) if self.ended => hash.finish(),
                _ => None,
            };
            // The copy's task may be gone (timed out): nothing to tell then.
            let headers = match self.headers.take() {
                Some(Either::Right(digest)) => Some(digest),
                _ => None,
            };
            let _ = answer.send(ClientAnswer {
                status: self.status,
                headers,
                body,
            });
        }
    }
}

/// Copies the request to the canary if a shadow step is in force and the request
/// qualifies (see the module docs); the copy's task is spawned now. Returns the
/// client's side of the comparison, for the client's response body to carry.
///
/// `streamed`: the request's body streams (it was not read whole), so it is not
/// copied. `client_h2`: the client spoke HTTP/2 (an `auto` canary is then spoken to in
/// HTTP/2, as a live request would be).
#[inline]
pub(crate) fn copy(
    view: &Arc<View>,
    plan: &Plan,
    req: &Request<UpstreamBody>,
    streamed: bool,
    client_h2: bool,
) -> Option<Box<ClientSide>> {
    let share = view.shadow_share(plan.service);
    if share == 0 {
        return None;
    }
    copy_slow(view, plan, req, streamed, client_h2, share)
}

#[cold]
fn copy_slow(
    view: &Arc<View>,
    plan: &Plan,
    req: &Request<UpstreamBody>,
    streamed: bool,
    client_h2: bool,
    share: u32,
) -> Option<Box<ClientSide>> {
    let (runtime, _) = view.service(plan.service);
    let shadow = runtime.shadow.as_ref()?;
    if plan.forced || plan.version != shadow.baseline || !shadow.methods.contains(req.method()) {
        return None;
    }
    // An upgrade (WebSocket) is a connection of its own, not a request to copy.
    if req.headers().contains_key(http::header::UPGRADE) {
        return None;
    }
    if share < 10_000 && fastrand::u32(0..10_000) >= share {
        return None;
    }
    let numbers = &shadow.numbers;
    let body = match req.body() {
        _ if streamed => None,
        Either::Right(buffered) => Some(buffered.data().cloned()),
        // A body that streams with no watch is empty.
        Either::Left(_) => Some(None),
    };
    let Some(body) = body.filter(|b| b.as_ref().map_or(0, |d| d.len() as u64) <= shadow.max_body)
    else {
        numbers.dropped_body.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let slot = crate::worker::index() % numbers.in_flight.len();
    let count = &numbers.in_flight[slot].0;
    if count.load(Ordering::Relaxed) >= shadow.max_in_flight {
        numbers.dropped_in_flight.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    count.fetch_add(1, Ordering::Relaxed);
    numbers.sent.fetch_add(1, Ordering::Relaxed);

    let mut copy = Request::new(Either::Right(Buffered::of(body)));
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.headers_mut() = req.headers().clone();
    copy.headers_mut()
        .insert(X_SERIN_SHADOW, HeaderValue::from_static("1"));
    let (tx, rx) = oneshot::channel();
    let example = Example {
        method: req.method().as_str().into(),
        path: cut(req.uri().path(), MAX_EXAMPLE_PATH).into(),
    };
    tokio::spawn(send_copy(
        view.clone(),
        plan.service,
        copy,
        rx,
        example,
        client_h2,
        slot,
    ));
    Some(Box::new(ClientSide {
        answer: Some(tx),
        status: None,
        hash: shadow.compare_body.then(|| BodyHash::new(shadow.max_body)),
        headers: shadow.compare_headers.clone().map(Either::Left),
        ended: false,
    }))
}

/// The method and path of a copied request, for an example should its answers differ.
struct Example {
    method: Box<str>,
    path: Box<str>,
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Gives back the worker's slot of copies in flight when the copy's task ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The copy's task: sends it to the canary within the service's request timeout,
/// records the outcome in the shadow stats, reads (and hashes) the canary's body,
/// then waits for the client's side and compares.
async fn send_copy(
    view: Arc<View>,
    service: usize,
    req: Request<UpstreamBody>,
    client: oneshot::Receiver<ClientAnswer>,
    example: Example,
    client_h2: bool,
    slot: usize,
) {
    let (runtime, _) = view.service(service);
    let Some(shadow) = runtime.shadow.as_ref() else {
        return;
    };
    let numbers = &shadow.numbers;
    // The worker's slot the copy was counted in (a spawned task stays on its worker's
    // runtime; on a test's multi-threaded one it may not).
    let _in_flight = InFlight(&numbers.in_flight[slot].0);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + shadow.timeout;
    let version = &runtime.versions[shadow.canary];
    let answered = tokio::time::timeout_at(deadline, send(version, req, client_h2)).await;
    let (outcome, response) = match answered {
        Ok(Ok(response)) => (
            Outcome::Response(response.status().as_u16()),
            Some(response),
        ),
        Ok(Err(outcome)) => (outcome, None),
        Err(_elapsed) => (Outcome::Timeout, None),
    };
    numbers.stats.record(outcome, started.elapsed());
    let canary_status = response.as_ref().map(|r| r.status().as_u16());
    let canary_headers = match (&response, &shadow.compare_headers) {
        (Some(response), Some(ignore)) => Some(HeaderDigest::of(response.headers(), ignore)),
        _ => None,
    };
    let canary_body = match response {
        Some(response) if shadow.compare_body => {
            tokio::time::timeout_at(deadline, hash_body(response.into_body(), shadow.max_body))
                .await
                .ok()
                .flatten()
        }
        // The body is read to its end all the same (up to `max_body`), so that its
        // connection is reused; a larger one is dropped with its connection.
        Some(response) => {
            let drained = drain(response.into_body(), shadow.max_body);
            let _ = tokio::time::timeout_at(deadline, drained).await;
            None
        }
        None => None,
    };
    // The client's answer may still be streaming: wait as long again at most.
    let client = tokio::time::timeout(shadow.timeout, client)
        .await
        .ok()
        .and_then(Result::ok);
    // A client that left before its answer came has nothing to compare.
    let Some(client) = client.filter(|c| c.status.is_some()) else {
        numbers.not_compared.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let bodies = match (shadow.compare_body, client.body, canary_body) {
        (true, Some(a), Some(b)) => Some((a, b)),
        (true, _, _) if canary_status.is_some() => {
            // Bodies are compared, but one of them could not be hashed whole.
            numbers.not_compared.fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => None,
    };
    let headers = client.headers.as_ref().zip(canary_headers.as_ref());
    match differs(
        shadow.compare_status,
        client.status,
        canary_status,
        bodies,
        headers,
    ) {
        Verdict::NotCompared => {
            numbers.not_compared.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Same => {
            numbers.compared.fetch_add(1, Ordering::Relaxed);
        }
        Verdict::Differs(part) => {
            numbers.compared.fetch_add(1, Ordering::Relaxed);
            numbers.mismatched.fetch_add(1, Ordering::Relaxed);
            let mut examples = numbers.lock_examples();
            if examples.len() < MAX_EXAMPLES {
                examples.push(MismatchExample {
                    method: example.method.into(),
                    path: example.path.into(),
                    client: client.status,
                    canary: canary_status,
                    differed: part,
                });
            }
        }
    }
}

/// Sends `req` to an endpoint of `version` in rotation, as a live attempt would
/// (pooled HTTP/1.1, shared HTTP/2, or ALPN's choice over TLS), without counting the
/// outcome for the endpoint's ejection: copies never change live routing.
async fn send(
    version: &crate::table::VersionRuntime,
    mut req: Request<UpstreamBody>,
    client_h2: bool,
) -> Result<Response<PooledBody>, Outcome> {
    let Some((endpoint, _in_flight)) = version.pick() else {
        return Err(Outcome::ConnectError);
    };
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(host) = HeaderValue::from_str(endpoint.authority().as_str()) {
            req.headers_mut().insert(http::header::HOST, host);
        }
    }
    let negotiated = version.tls && version.protocol == UpstreamProtocol::Auto;
    let h2 = !negotiated
        && match version.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => client_h2,
        };
    let sent = if negotiated {
        endpoint
            .pool
            .send_negotiated(req, |req| {
                crate::execute::to_h2(req, endpoint.authority(), true)
            })
            .await
    } else if h2 {
        crate::execute::to_h2(&mut req, endpoint.authority(), version.tls);
        endpoint.pool.send_h2(req).await
    } else {
        endpoint.pool.send(req).await
    };
    sent.map_err(|failed| {
        if failed.error.is_connect() {
            Outcome::ConnectError
        } else {
            Outcome::Reset
        }
    })
}

/// The xxh3 hash of `body` read to its end, unless it is over `max` bytes or fails.
async fn hash_body(mut body: PooledBody, max: u64) -> Option<u64> {
    let mut hash = BodyHash::new(max);
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Some(data) = frame.data_ref() {
            hash.add(data);
            if hash.over {
                return None;
            }
        }
    }
    hash.finish()
}

/// Reads `body` to its end, or until more than `max` bytes came.
async fn drain(mut body: PooledBody, max: u64) {
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        read = read.saturating_add(frame.data_ref().map_or(0, |d| d.len() as u64));
        if read > max {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Verdict::{Differs, NotCompared, Same};

    #[test]
    fn answers_differ_by_status_class_then_by_body() {
        // Same class, no bodies compared: the same.
        assert_eq!(differs(true, Some(200), Some(204), None, None), Same);
        assert_eq!(
            differs(true, Some(200), Some(500), None, None),
            Differs(Part::Status)
        );
        // A canary that did not answer differs from any answer the client got.
        assert_eq!(
            differs(true, Some(200), None, None, None),
            Differs(Part::Status)
        );
        assert_eq!(differs(true, None, None, None, None), NotCompared);
        // Bodies: compared when both were hashed.
        assert_eq!(
            differs(true, Some(200), Some(200), Some((1, 2)), None),
            Differs(Part::Body)
        );
        assert_eq!(
            differs(true, Some(200), Some(200), Some((7, 7)), None),
            Same
        );
        // Status not compared: only the bodies say.
        assert_eq!(
            differs(false, Some(200), Some(500), Some((7, 7)), None),
            Same
        );
        assert_eq!(
            differs(false, Some(200), Some(500), None, None),
            NotCompared
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("a name"),
                HeaderValue::from_str(value).expect("a value"),
            );
        }
        map
    }

    fn name(n: &'static str) -> HeaderName {
        HeaderName::from_static(n)
    }

    #[test]
    fn answers_differ_by_a_header_named_never_by_its_value() {
        let none: &[HeaderName] = &[];
        let client = HeaderDigest::of(&headers(&[("content-type", "text/plain")]), none);
        let canary = HeaderDigest::of(
            &headers(&[("content-type", "text/plain"), ("x-version", "2")]),
            none,
        );
        assert_eq!(
            differs(true, Some(200), Some(200), None, Some((&client, &canary))),
            Differs(Part::Header(name("x-version")))
        );
        assert_eq!(
            Part::Header(name("x-version")).to_string(),
            "header x-version"
        );
        // Ignored: the same.
        let ignore = [name("x-version")];
        let canary = HeaderDigest::of(
            &headers(&[("content-type", "text/plain"), ("x-version", "2")]),
            &ignore,
        );
        assert_eq!(
            differs(true, Some(200), Some(200), None, Some((&client, &canary))),
            Same
        );
        // The status and the body are named before any header.
        assert_eq!(
            differs(
                true,
                Some(200),
                Some(500),
                Some((1, 2)),
                Some((&client, &canary))
            ),
            Differs(Part::Status)
        );
        // Headers alone compared: they decide.
        assert_eq!(
            differs(false, Some(200), Some(500), None, Some((&client, &client))),
            Same
        );
    }

    #[test]
    fn header_digests_compare_names_and_values_in_any_order() {
        let none: &[HeaderName] = &[];
        let a = HeaderDigest::of(
            &headers(&[("vary", "accept"), ("vary", "origin"), ("etag", "\"1\"")]),
            none,
        );
        let b = HeaderDigest::of(
            &headers(&[("etag", "\"1\""), ("vary", "origin"), ("vary", "accept")]),
            none,
        );
        assert_eq!(a.first_difference(&b), None);
        let other_value = HeaderDigest::of(
            &headers(&[("etag", "\"2\""), ("vary", "origin"), ("vary", "accept")]),
            none,
        );
        assert_eq!(a.first_difference(&other_value), Some(&name("etag")));
        // Values split differently are other values.
        let ab_c = HeaderDigest::of(&headers(&[("x-a", "ab"), ("x-a", "c")]), none);
        let a_bc = HeaderDigest::of(&headers(&[("x-a", "a"), ("x-a", "bc")]), none);
        assert_eq!(ab_c.first_difference(&a_bc), Some(&name("x-a")));
        // A name on one side only, either side.
        let empty = HeaderDigest::default();
        assert_eq!(a.first_difference(&empty), Some(&name("etag")));
        assert_eq!(empty.first_difference(&a), Some(&name("etag")));
    }

    #[test]
    fn framing_hop_by_hop_and_serins_own_headers_are_never_compared() {
        let none: &[HeaderName] = &[];
        // What the client got: re-framed by serin, with its version and request id.
        let client = HeaderDigest::of(
            &headers(&[
                ("content-type", "text/plain"),
                ("transfer-encoding", "chunked"),
                ("x-serin-version", "stable"),
                ("x-request-id", "abc"),
            ]),
            none,
        );
        // The canary's, as its upstream connection framed it, with a header its
        // Connection header names.
        let canary = HeaderDigest::of(
            &headers(&[
                ("content-type", "text/plain"),
                ("content-length", "12"),
                ("connection", "keep-alive, x-hop"),
                ("keep-alive", "timeout=5"),
                ("x-hop", "1"),
            ]),
            none,
        );
        assert_eq!(client.first_difference(&canary), None);
        assert_eq!(
            client,
            HeaderDigest::of(&headers(&[("content-type", "text/plain")]), none)
        );
        // Each of them, alone, leaves nothing to compare.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ]
        .into_iter()
        .chain(NEVER_COMPARED)
        {
            assert_eq!(
                HeaderDigest::of(&headers(&[(name, "x")]), none),
                HeaderDigest::default(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_body_is_hashed_up_to_its_bound_only() {
        let mut within = BodyHash::new(8);
        within.add(b"abcd");
        within.add(b"efgh");
        let mut whole = BodyHash::new(8);
        whole.add(b"abcdefgh");
        assert_eq!(within.finish(), whole.finish());
        assert!(within.finish().is_some());
        within.add(b"i");
        assert_eq!(within.finish(), None, "over the bound: not compared");
    }

    #[test]
    fn example_paths_are_cut_at_a_character_boundary() {
        assert_eq!(cut("/abc", 10), "/abc");
        assert_eq!(cut("/é", 2), "/");
        assert_eq!(cut(&"/x".repeat(200), MAX_EXAMPLE_PATH).len(), 200);
    }
}
