//! Header work of stage 5: hop-by-hop stripping, look-alike names, a canonical
//! Content-Length, X-Forwarded-* (and the client's Forwarded and X-Real-IP), request ids.
//!
//! One pass over a header list ([`Survey::of`]) says which of the names this work
//! touches are there, so that each step costs nothing for a header that is absent:
//! every lookup, removal or check of a name hashes it, and most messages carry none
//! of them.

use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, FORWARDED, HOST, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_SERIN_VERSION: HeaderName = HeaderName::from_static("x-serin-version");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// At most this many `Connection` header lines are honoured; more is not a real client.
const MAX_CONNECTION_HEADERS: usize = 8;

/// The hop-by-hop headers of RFC 9110 §7.6.1, by bit.
const HOP: [&HeaderName; 7] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &TE,
    &TRAILER,
    &TRANSFER_ENCODING,
    &UPGRADE,
];
/// `HOP` as bytes, for comparing Connection options.
const HOP_NAMES: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
];
/// Whether `name` (lowercase, as `HeaderName`s are) is a hop-by-hop header of RFC 9110
/// §7.6.1: each hop sets its own.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_NAMES.contains(&name.as_bytes())
}

/// Bit of `HOP` for Connection.
const CONNECTION_BIT: u32 = 1;
/// Every bit of `HOP`.
const HOP_BITS: u32 = (1 << HOP.len()) - 1;

/// Which of the names serin's header work touches a header list holds, found in one
/// pass over it ([`Survey::of`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Survey(u32);

impl Survey {
    /// A `proxy-` header other than Proxy-Connection (whose bit is in `HOP`).
    const PROXY_OTHER: u32 = 1 << 7;
    /// A Connection option that names a header other than the hop-by-hop ones.
    const CONNECTION_NAMES_OTHER: u32 = 1 << 8;
    /// A look-alike of a special name ([`look_alike`]).
    pub const LOOK_ALIKE: u32 = 1 << 9;
    const CONTENT_LENGTH: u32 = 1 << 10;
    /// Content-Length not as one plain number: several lines, or leading zeros.
    pub const CONTENT_LENGTH_ODD: u32 = 1 << 11;
    pub const FORWARDED: u32 = 1 << 12;
    pub const X_REAL_IP: u32 = 1 << 13;
    pub const X_FORWARDED_FOR: u32 = 1 << 14;
    pub const X_FORWARDED_PROTO: u32 = 1 << 15;
    pub const X_FORWARDED_HOST: u32 = 1 << 16;
    pub const X_REQUEST_ID: u32 = 1 << 17;
    /// `Upgrade`, among the hop-by-hop ones.
    pub const UPGRADE: u32 = 1 << 6;

    /// One pass over every line of `headers`, look-alikes left alone (a response's).
    pub fn of(headers: &HeaderMap) -> Self {
        Self::scan(headers, false)
    }

    /// [`Survey::of`] a request's headers: look-alikes too.
    pub fn of_request(headers: &HeaderMap) -> Self {
        Self::scan(headers, true)
    }

    fn scan(headers: &HeaderMap, look_alikes: bool) -> Self {
        let mut bits = 0;
        for (name, value) in headers {
            let name = name.as_str();
            let bit = name_bit(name);
            match bit {
                0 => {
                    if name.starts_with("proxy-") {
                        bits |= Self::PROXY_OTHER;
                    }
                    if look_alikes && look_alike(name.as_bytes()) {
                        bits |= Self::LOOK_ALIKE;
                    }
                }
                CONNECTION_BIT if !only_known_options(value) => {
                    bits |= Self::CONNECTION_NAMES_OTHER;
                }
                Self::CONTENT_LENGTH => {
                    let v = value.as_bytes();
                    if bits & Self::CONTENT_LENGTH != 0 || (v.len() > 1 && v[0] == b'0') {
                        bits |= Self::CONTENT_LENGTH_ODD;
                    }
                }
                _ => {}
            }
            bits |= bit;
        }
        Self(bits)
    }

    #[cfg(test)]
    fn with(self, bits: u32) -> Self {
        Self(self.0 | bits)
    }

    /// Whether any of `bits` (`Survey::…` constants) was found.
    pub fn has(self, bits: u32) -> bool {
        self.0 & bits != 0
    }
}

/// The [`Survey`] bit of a name (0 for one that needs no work).
fn name_bit(name: &str) -> u32 {
    match name {
        "connection" => CONNECTION_BIT,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "te" => 1 << 3,
        "trailer" => 1 << 4,
        "transfer-encoding" => 1 << 5,
        "upgrade" => Survey::UPGRADE,
        "content-length" => Survey::CONTENT_LENGTH,
        "forwarded" => Survey::FORWARDED,
        "x-real-ip" => Survey::X_REAL_IP,
        "x-forwarded-for" => Survey::X_FORWARDED_FOR,
        "x-forwarded-proto" => Survey::X_FORWARDED_PROTO,
        "x-forwarded-host" => Survey::X_FORWARDED_HOST,
        "x-request-id" => Survey::X_REQUEST_ID,
        _ => 0,
    }
}

/// Whether a Connection value names only options that remove nothing besides the
/// hop-by-hop headers.
fn only_known_options(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .all(|token| known_option(token.trim_ascii()))
}

/// Whether a Connection option is one that names no header to remove besides the
/// hop-by-hop ones: `keep-alive`, `upgrade`, … name hop-by-hop headers, removed
/// anyway; `close` names none in practice. Host is never a connection option: a
/// client naming it would have the upstream answer for its own address rather than
/// the routed host.
fn known_option(token: &[u8]) -> bool {
    token.is_empty()
        || token.eq_ignore_ascii_case(b"close")
        || token.eq_ignore_ascii_case(HOST.as_str().as_bytes())
        || HOP_NAMES.iter().any(|h| token.eq_ignore_ascii_case(h))
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 (Connection, Keep-Alive, Proxy-*,
/// TE, Trailer, Transfer-Encoding, Upgrade) and every header that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip_surveyed(headers, Survey::of(headers));
}

/// [`strip_hop_by_hop`] with `survey` of `headers`; the survey of what is left.
pub fn strip_surveyed(headers: &mut HeaderMap, survey: Survey) -> Survey {
    if !survey.has(HOP_BITS | Survey::PROXY_OTHER) {
        return survey;
    }
    if survey.has(Survey::CONNECTION_NAMES_OTHER) {
        // Collect the Connection values first (cheap clones of shared bytes), then
        // remove the headers they name.
        let mut named: [Option<HeaderValue>; MAX_CONNECTION_HEADERS] = Default::default();
        for (slot, value) in named.iter_mut().zip(headers.get_all(CONNECTION)) {
            *slot = Some(value.clone());
        }
        for value in named.iter().flatten() {
            let Ok(text) = value.to_str() else { continue };
            for token in text.split(',') {
                let token = token.trim();
                if !known_option(token.as_bytes()) {
                    headers.remove(token);
                }
            }
        }
    }
    for (i, name) in HOP.iter().enumerate() {
        if survey.has(1 << i) {
            headers.remove(*name);
        }
    }
    // Other Proxy-* headers (Proxy-Authorization, Proxy-Authenticate, …) are meant for
    // this hop. Rare, so the allocation of the list only happens when there is one.
    if survey.has(Survey::PROXY_OTHER) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
    if survey.has(Survey::CONNECTION_NAMES_OTHER) {
        // Any header may have gone: look again (rare). A look-alike is still dropped
        // if it was there (or finds none).
        Survey(Survey::of(headers).0 | (survey.0 & Survey::LOOK_ALIKE))
    } else {
        Survey(survey.0 & !(HOP_BITS | Survey::PROXY_OTHER))
    }
}

/// Sets X-Forwarded-For, -Proto and -Host (`survey`: of `headers`). From a `trusted` peer (one in the listener's
/// `trust_forwarded`) the client's X-Forwarded-For is kept and the peer address
/// appended, and its X-Forwarded-Proto and -Host, Forwarded and X-Real-IP are kept if
/// present. From any other peer they are replaced: X-Forwarded-For is the peer address
/// alone, and Forwarded and X-Real-IP, which serin does not set, are removed, so a
/// client cannot forge its origin.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    survey: Survey,
    peer_ip: &HeaderValue,
    trusted: bool,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    if trusted {
        if !survey.has(Survey::X_FORWARDED_PROTO) {
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        if !survey.has(Survey::X_FORWARDED_HOST) {
            if let Some(h) = host {
                headers.insert(&X_FORWARDED_HOST, h);
            }
        }
    } else {
        if survey.has(Survey::FORWARDED) {
            headers.remove(FORWARDED);
        }
        if survey.has(Survey::X_REAL_IP) {
            headers.remove(&X_REAL_IP);
        }
        headers.insert(&X_FORWARDED_FOR, peer_ip.clone());
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        match host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h);
            }
            None => {
                if survey.has(Survey::X_FORWARDED_HOST) {
                    headers.remove(&X_FORWARDED_HOST);
                }
            }
        }
        return;
    }
    if survey.has(Survey::X_FORWARDED_FOR) {
        let mut xff = Vec::with_capacity(64);
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let v = value.as_bytes().trim_ascii();
            if !v.is_empty() {
                xff.extend_from_slice(v);
                xff.extend_from_slice(b", ");
            }
        }
        xff.extend_from_slice(peer_ip.as_bytes());
        if let Ok(value) = HeaderValue::from_bytes(&xff) {
            headers.insert(&X_FORWARDED_FOR, value);
        }
    } else {
        headers.insert(&X_FORWARDED_FOR, peer_ip.clone());
    }
}

/// The names a look-alike must not be taken for: those that frame a message, route it,
/// manage its connection, or say where it came from.
const SPECIAL: [&str; 14] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];
/// The longest of [`SPECIAL`], and room for one trailing `-` while folding.
const FOLDED_MAX: usize = 18;

/// Whether `name` is one of [`SPECIAL`] written with `_` for `-`, runs of `-`, or `-`
/// at either end (`transfer_encoding`, `content--length`, `host-`). A backend behind
/// CGI, WSGI or PHP folds `_` into `-`, and some parsers skip the rest, so it could
/// read such a header as the real one that serin checked, replaced or removed.
fn look_alike(name: &[u8]) -> bool {
    // Folded, it starts as one of SPECIAL does, unless its own start folds away.
    if !matches!(
        name.first(),
        Some(b'-' | b'_' | b'c' | b't' | b'h' | b'k' | b'p' | b'u' | b'f' | b'x')
    ) {
        return false;
    }
    // Only a name with `_`, `--` or an edge `-` needs folding: almost none do.
    let mut odd = name.first() == Some(&b'-') || name.last() == Some(&b'-');
    let mut previous = 0u8;
    for &b in name {
        if b == b'_' || (b == b'-' && previous == b'-') {
            odd = true;
            break;
        }
        previous = b;
    }
    if !odd {
        return false;
    }
    let mut folded = [0u8; FOLDED_MAX];
    let mut len = 0;
    for &b in name {
        let b = if b == b'_' { b'-' } else { b };
        if b == b'-' && (len == 0 || folded[len - 1] == b'-') {
            continue;
        }
        if len == FOLDED_MAX {
            return false;
        }
        folded[len] = b;
        len += 1;
    }
    let folded = folded[..len].strip_suffix(b"-").unwrap_or(&folded[..len]);
    SPECIAL.iter().any(|s| s.as_bytes() == folded)
}

/// Removes the headers whose names are look-alikes of the ones serin treats specially
/// (see [`look_alike`]). They are dropped rather than refused: a client cannot use them
/// with serin, and a request carrying one is otherwise well formed.
pub fn drop_look_alikes(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| look_alike(k.as_str().as_bytes())) {
        return;
    }
    // Rare: the list is allocated only when there is something to drop.
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| look_alike(k.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in names {
        tracing::debug!(header = %name, "dropped a header named like one serin treats specially");
        headers.remove(name);
    }
}

/// Makes the request's Content-Length one plain number: hyper keeps the first of
/// several equal lines as written (`004`), and HTTP/2 allows several equal values,
/// which an upstream might reject or read otherwise (leading zeros as octal).
pub fn canonical_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    let bytes = first.as_bytes();
    if values.next().is_none() && (bytes.len() == 1 || bytes.first() != Some(&b'0')) {
        return;
    }
    // Both parsers checked the values are equal numbers; a value that is not one is
    // left for the upstream to refuse.
    let Some(length) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
}

/// The request's `x-request-id`, generated (a random UUID v4) when absent or empty.
///
/// The value returned (what the response carries) is marked sensitive, and so is a
/// generated one in the request: HPACK then sends it as a never-indexed literal. An id
/// is unique per request, and indexed it would fill an HTTP/2 connection's dynamic
/// table with entries never used again, evicting the headers that repeat, while each
/// encoding walked the growing chain of same-named entries comparing values.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    ensure_request_id_surveyed(headers, Survey(Survey::X_REQUEST_ID))
}

/// [`ensure_request_id`] with `survey` of `headers`.
pub fn ensure_request_id_surveyed(headers: &mut HeaderMap, survey: Survey) -> HeaderValue {
    if survey.has(Survey::X_REQUEST_ID) {
        if let Some(id) = headers.get(&X_REQUEST_ID) {
            if !id.is_empty() {
                let mut id = id.clone();
                id.set_sensitive(true);
                return id;
            }
        }
    }
    let id = new_request_id();
    headers.insert(&X_REQUEST_ID, id.clone());
    id
}

fn new_request_id() -> HeaderValue {
    let uuid = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid.hyphenated().encode_lower(&mut text);
    // Owned by the value's bytes: one allocation, and the clones that go upstream and
    // back to the client only count references (a copied slice is re-allocated on
    // its first clone).
    let mut id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"));
    id.set_sensitive(true);
    id
}

/// `host` without a port or trailing dot; IPv6 literals lose their brackets.
pub fn host_without_port(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.append("connection", HeaderValue::from_static("X-Other"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    #[test]
    fn connection_options_alone_leave_every_other_header() {
        for connection in ["keep-alive", "close", "Keep-Alive, Upgrade", " , close"] {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static(connection));
            h.insert("content-type", HeaderValue::from_static("text/plain"));
            h.insert("x-request-id", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            left.sort_unstable();
            assert_eq!(left, vec!["content-type", "x-request-id"], "{connection}");
        }
        // A hop-by-hop header without Connection goes too.
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"]);
    }

    fn forwarded(h: &mut HeaderMap) {
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static(" 198.51.100.2 "));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(
            &X_FORWARDED_HOST,
            HeaderValue::from_static("forged.example"),
        );
    }

    #[test]
    fn a_trusted_peer_extends_forwarded_for() {
        let mut h = HeaderMap::new();
        forwarded(&mut h);
        let peer = HeaderValue::from_static("127.0.0.1");
        let survey = Survey::of(&h);
        set_forwarded(&mut h, survey, &peer, true, "http", None);
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, 198.51.100.2, 127.0.0.1");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "forged.example");

        let mut fresh = HeaderMap::new();
        let survey = Survey::of(&fresh);
        set_forwarded(&mut fresh, survey, &peer, true, "https", None);
        assert_eq!(fresh[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(fresh[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn any_other_peer_has_its_forwarded_headers_replaced() {
        let mut h = HeaderMap::new();
        forwarded(&mut h);
        let peer = HeaderValue::from_static("192.0.2.9");
        let survey = Survey::of(&h);
        set_forwarded(
            &mut h,
            survey,
            &peer,
            false,
            "http",
            Some(HeaderValue::from_static("shop")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.9");
        assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "shop");
        let mut no_host = HeaderMap::new();
        forwarded(&mut no_host);
        let survey = Survey::of(&no_host);
        set_forwarded(&mut no_host, survey, &peer, false, "http", None);
        assert!(!no_host.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn a_survey_finds_the_names_that_need_work() {
        let survey = |lines: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in lines {
                h.append(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value).expect("value"),
                );
            }
            Survey::of_request(&h)
        };
        let clean = survey(&[("host", "a"), ("user-agent", "x"), ("content-length", "10")]);
        assert_eq!(clean, Survey::default().with(Survey::CONTENT_LENGTH));
        for (lines, bit) in [
            (&[("content-length", "04")][..], Survey::CONTENT_LENGTH_ODD),
            (
                &[("content-length", "4"), ("content-length", "4")],
                Survey::CONTENT_LENGTH_ODD,
            ),
            (&[("transfer_encoding", "chunked")], Survey::LOOK_ALIKE),
            (&[("forwarded", "for=a")], Survey::FORWARDED),
            (&[("x-real-ip", "a")], Survey::X_REAL_IP),
            (&[("x-forwarded-for", "a")], Survey::X_FORWARDED_FOR),
            (&[("x-forwarded-proto", "a")], Survey::X_FORWARDED_PROTO),
            (&[("x-forwarded-host", "a")], Survey::X_FORWARDED_HOST),
            (&[("x-request-id", "a")], Survey::X_REQUEST_ID),
            (&[("upgrade", "websocket")], Survey::UPGRADE),
            (&[("proxy-authorization", "x")], Survey::PROXY_OTHER),
            (
                &[("connection", "close, x-secret")],
                Survey::CONNECTION_NAMES_OTHER,
            ),
        ] {
            assert!(survey(lines).has(bit), "{lines:?}");
        }
        for value in ["0", "4", ""] {
            let found = survey(&[("content-length", value)]);
            assert!(!found.has(Survey::CONTENT_LENGTH_ODD), "{value:?}");
        }
        let options = survey(&[("connection", "keep-alive, Upgrade , close,")]);
        assert!(!options.has(Survey::CONNECTION_NAMES_OTHER));
    }

    /// A header that Connection names is gone before the forwarded headers are set:
    /// a trusted client's X-Forwarded-Proto named there is replaced by serin's.
    #[test]
    fn headers_named_by_connection_are_gone_before_forwarded_headers_are_set() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-forwarded-proto"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("client-id"));
        h.append("connection", HeaderValue::from_static("x-request-id"));
        let survey = Survey::of(&h);
        let survey = strip_surveyed(&mut h, survey);
        let peer = HeaderValue::from_static("127.0.0.1");
        set_forwarded(&mut h, survey, &peer, true, "http", None);
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        let id = ensure_request_id_surveyed(&mut h, survey);
        assert_ne!(id, "client-id");
        assert_eq!(h[&X_REQUEST_ID], id);
    }

    #[test]
    fn connection_cannot_name_host() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Host, x-secret"));
        h.insert("host", HeaderValue::from_static("shop.example.com"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["host"]);
    }

    #[test]
    fn forwarded_and_real_ip_go_unless_the_peer_is_trusted() {
        let client = |h: &mut HeaderMap| {
            h.insert("forwarded", HeaderValue::from_static("for=203.0.113.7"));
            h.append("forwarded", HeaderValue::from_static("for=198.51.100.2"));
            h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.7"));
        };
        let peer = HeaderValue::from_static("192.0.2.9");
        let mut untrusted = HeaderMap::new();
        client(&mut untrusted);
        let survey = Survey::of(&untrusted);
        set_forwarded(&mut untrusted, survey, &peer, false, "http", None);
        assert!(!untrusted.contains_key("forwarded"), "{untrusted:?}");
        assert!(!untrusted.contains_key(&X_REAL_IP), "{untrusted:?}");
        assert_eq!(untrusted[&X_FORWARDED_FOR], "192.0.2.9");

        let mut trusted = HeaderMap::new();
        client(&mut trusted);
        let survey = Survey::of(&trusted);
        set_forwarded(&mut trusted, survey, &peer, true, "http", None);
        assert_eq!(trusted.get_all("forwarded").iter().count(), 2);
        assert_eq!(trusted[&X_REAL_IP], "203.0.113.7");
    }

    #[test]
    fn look_alikes_of_special_names_are_found() {
        for name in [
            "transfer_encoding",
            "content_length",
            "transfer---encoding",
            "content--length",
            "x_forwarded_for",
            "x-forwarded_for",
            "x__forwarded__proto",
            "x_forwarded_host",
            "x_real_ip",
            "host_",
            "_host",
            "-host",
            "host-",
            "-transfer-encoding-",
            "transfer-encoding-",
            "te_",
            "keep_alive",
            "proxy_connection",
            "connection_",
            "trailer_",
            "upgrade_",
            "forwarded-",
        ] {
            assert!(look_alike(name.as_bytes()), "{name}");
        }
        for name in [
            "transfer-encoding",
            "content-length",
            "host",
            "x-forwarded-for",
            "x_user_id",
            "x_custom",
            // `_` stands for `-`, it is not dropped.
            "up_grade",
            "content_type",
            "hosts_",
            "x-forwarded-for-x",
            "transfer-encodings_",
            "a_very_long_header_name_that_is_nothing_special",
            "_",
            "-",
            "",
        ] {
            assert!(!look_alike(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn every_special_name_has_look_alikes() {
        for name in SPECIAL {
            for look in [format!("{name}_"), format!("_{name}"), format!("-{name}")] {
                assert!(look_alike(look.as_bytes()), "{look}");
            }
            assert!(!look_alike(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn look_alikes_are_dropped_and_other_names_kept() {
        let mut h = HeaderMap::new();
        for name in ["transfer_encoding", "content--length", "host_", "x_real_ip"] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_static("1"),
            );
        }
        h.insert("x_user_id", HeaderValue::from_static("u"));
        h.insert("content-length", HeaderValue::from_static("4"));
        drop_look_alikes(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["content-length", "x_user_id"]);
    }

    #[test]
    fn content_length_is_made_one_plain_number() {
        for (values, expected) in [
            (&["4"][..], "4"),
            (&["0"][..], "0"),
            (&["004"][..], "4"),
            (&["010"][..], "10"),
            (&["00"][..], "0"),
            (&["5", "5"][..], "5"),
        ] {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            canonical_content_length(&mut h);
            let after: Vec<&HeaderValue> = h.get_all(CONTENT_LENGTH).iter().collect();
            assert_eq!(after, vec![expected], "{values:?}");
        }
        let mut none = HeaderMap::new();
        canonical_content_length(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn hosts_lose_their_port() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com."), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "::1");
        assert_eq!(host_without_port("example.com"), "example.com");
    }

    #[test]
    fn request_ids_are_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h[&X_REQUEST_ID], id);
        // Never indexed by HPACK: unique per request.
        assert!(id.is_sensitive() && h[&X_REQUEST_ID].is_sensitive());
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert!(ensure_request_id(&mut h).is_sensitive());
    }
}
