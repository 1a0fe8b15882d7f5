//! The checks a request passes before it is routed: its target and Host (RFC 9112
//! §3.2–3.3, RFC 9113 §8.3.1) and its Transfer-Encoding (RFC 9112 §6.1), as one pure
//! function of what hyper parsed. A request that fails is refused with serin's own
//! answer and never reaches a version.
//!
//! hyper already refuses what it cannot frame (differing Content-Lengths, a
//! Transfer-Encoding not ending in `chunked`, HTTP/1.0 with Transfer-Encoding, obsolete
//! line folding); these are the rules it leaves to the application. A clean request
//! costs two header lookups (Host, Transfer-Encoding) and a pass over the bytes of its
//! host.

use http::header::{HeaderValue, HOST, TRANSFER_ENCODING};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// Why a request is refused. Each says what was wrong and what a client should send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An HTTP/1.1 request without a Host header.
    MissingHost,
    /// More than one Host header.
    DuplicateHost,
    /// A Host header that is not `host[:port]`.
    InvalidHost,
    /// An absolute-form target (or HTTP/2 `:authority`) whose authority is not
    /// `host[:port]`: userinfo, an empty host, a bad port.
    InvalidAuthority,
    /// HTTP/2: a `host` header naming another authority than `:authority`.
    HostDiffersFromAuthority,
    /// An absolute-form target whose scheme is not `http` or `https`.
    UnsupportedScheme,
    /// A bare authority as the target of a method other than CONNECT (`GET example.com`).
    AuthorityForm,
    /// `*` as the target of a method other than OPTIONS.
    AsteriskForm,
    /// CONNECT: serin is a reverse proxy, not a tunnel.
    Connect,
    /// A Transfer-Encoding with a coding other than `chunked`.
    TransferCoding,
    /// `chunked` more than once (on one line or across lines), or not at all.
    ChunkedNotOnce,
    /// Transfer-Encoding in an HTTP/2 request, where it has no meaning.
    TransferEncodingInHttp2,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Connect => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// serin's answer: the status line's words, what was wrong, and what to send.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingHost => "400 Bad Request: an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)\n",
            Refusal::DuplicateHost => "400 Bad Request: more than one Host header; send exactly one (RFC 9112 §3.2)\n",
            Refusal::InvalidHost => "400 Bad Request: the Host header is not a valid host[:port] (a name, an IPv4 address or a bracketed IPv6 address; a port of at most 65535; no userinfo or spaces)\n",
            Refusal::InvalidAuthority => "400 Bad Request: the authority of the request target is not a valid host[:port] (no userinfo, a non-empty host, a port of at most 65535)\n",
            Refusal::HostDiffersFromAuthority => "400 Bad Request: the host header names another authority than :authority (RFC 9113 §8.3.1)\n",
            Refusal::UnsupportedScheme => "400 Bad Request: the request target's scheme is neither http nor https\n",
            Refusal::AuthorityForm => "400 Bad Request: a request target without a path (authority-form) is only for CONNECT; send an origin-form target such as /path\n",
            Refusal::AsteriskForm => "400 Bad Request: the request target * is only for OPTIONS\n",
            Refusal::Connect => "501 Not Implemented: serin does not tunnel CONNECT requests\n",
            Refusal::TransferCoding => "400 Bad Request: Transfer-Encoding may only be chunked; other codings are not accepted\n",
            Refusal::ChunkedNotOnce => "400 Bad Request: Transfer-Encoding must name chunked exactly once\n",
            Refusal::TransferEncodingInHttp2 => "400 Bad Request: Transfer-Encoding is not allowed in HTTP/2 (RFC 9113 §8.2.2)\n",
        }
    }
}

/// Whether serin forwards a request with this method, version, target and headers;
/// the first rule it breaks otherwise.
pub fn check(
    method: &Method,
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if *method == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    match (uri.scheme(), uri.authority()) {
        // Origin-form (or HTTP/2 without :authority), or asterisk-form.
        (None, None) => {
            if uri.path() == "*" && *method != Method::OPTIONS {
                return Err(Refusal::AsteriskForm);
            }
        }
        (None, Some(_)) => return Err(Refusal::AuthorityForm),
        (Some(scheme), authority) => {
            if *scheme != Scheme::HTTP && *scheme != Scheme::HTTPS {
                return Err(Refusal::UnsupportedScheme);
            }
            if !authority.is_some_and(|a| valid_host_port(a.as_str().as_bytes())) {
                return Err(Refusal::InvalidAuthority);
            }
        }
    }

    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    match host {
        // HTTP/1.0 may omit it; HTTP/2 carries the authority in `:authority`.
        None if version == Version::HTTP_11 => return Err(Refusal::MissingHost),
        None => {}
        Some(host) => {
            if !valid_host_port(host.as_bytes()) {
                return Err(Refusal::InvalidHost);
            }
            if version == Version::HTTP_2 {
                if let Some(authority) = uri.authority() {
                    if !same_authority(authority, host, uri.scheme()) {
                        return Err(Refusal::HostDiffersFromAuthority);
                    }
                }
            }
        }
    }

    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        if version == Version::HTTP_2 {
            return Err(Refusal::TransferEncodingInHttp2);
        }
        let mut chunked = 0;
        for value in codings {
            for coding in value.as_bytes().split(|&b| b == b',') {
                let coding = coding.trim_ascii();
                // Empty list elements are allowed and mean nothing (RFC 9110 §5.6.1).
                if coding.is_empty() {
                    continue;
                }
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err(Refusal::TransferCoding);
                }
                chunked += 1;
            }
        }
        if chunked != 1 {
            return Err(Refusal::ChunkedNotOnce);
        }
    }
    Ok(())
}

/// `host[:port]` as RFC 9110 §7.2 allows in Host and an http(s) URI's authority: a
/// non-empty reg-name or IPv4 address (RFC 3986 §3.2.2), or a bracketed IPv6 address;
/// then optionally `:` and 1–5 digits of at most 65535. No userinfo, no whitespace.
pub fn valid_host_port(bytes: &[u8]) -> bool {
    if let Some(rest) = bytes.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = std::str::from_utf8(&rest[..end])
            .is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok());
        return literal
            && match &rest[end + 1..] {
                [] => true,
                [b':', port @ ..] => port_number(port).is_some(),
                _ => false,
            };
    }
    // One pass: a reg-name never holds `:`, so the first byte outside it ends the
    // host, and must be the port's colon.
    let host_len = reg_name_len(bytes);
    if host_len == 0 {
        return false;
    }
    match &bytes[host_len..] {
        [] => true,
        [b':', port @ ..] => port_number(port).is_some(),
        _ => false,
    }
}

/// The bytes of RFC 3986's reg-name other than `%`: unreserved and sub-delims
/// characters, as a table (one load per byte).
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// How many leading bytes of `host` are an RFC 3986 reg-name (an IPv4 address is one
/// too): unreserved, pct-encoded and sub-delims characters. A `%` not followed by two
/// hex digits ends it.
fn reg_name_len(host: &[u8]) -> usize {
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if !REG_NAME[usize::from(b)] {
            let hex = host.get(i + 1..i + 3);
            if b != b'%' || !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return i;
            }
            i += 2;
        }
        i += 1;
    }
    i
}

/// A port: 1–5 digits, at most 65535.
fn port_number(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut port = 0u32;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(d - b'0');
    }
    u16::try_from(port).ok()
}

/// Whether a Host header names the same authority as `:authority`: hosts equal but for
/// case, ports equal once a missing one is the scheme's default (RFC 3986 §6.2.3).
fn same_authority(authority: &Authority, host: &HeaderValue, scheme: Option<&Scheme>) -> bool {
    let default = if scheme == Some(&Scheme::HTTPS) {
        443
    } else {
        80
    };
    let (a_host, a_port) = split_port(authority.as_str().as_bytes());
    let (h_host, h_port) = split_port(host.as_bytes());
    a_host.eq_ignore_ascii_case(h_host)
        && a_port.map_or(Some(default), port_number) == h_port.map_or(Some(default), port_number)
}

/// A valid `host[:port]` split at its port's colon.
fn split_port(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    let after_literal = match bytes.first() {
        Some(b'[') => bytes.iter().position(|&b| b == b']').unwrap_or(0),
        _ => 0,
    };
    match bytes[after_literal..].iter().rposition(|&b| b == b':') {
        Some(colon) => (
            &bytes[..after_literal + colon],
            Some(&bytes[after_literal + colon + 1..]),
        ),
        None => (bytes, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        method: &str,
        version: Version,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let uri: Uri = target.parse().expect("target");
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_bytes(value.as_bytes()).expect("value"),
            );
        }
        check(&method, version, &uri, &map)
    }

    /// A request as a table row: method, version, target, headers.
    type Row<'a> = (&'a str, Version, &'a str, &'a [(&'a str, &'a str)]);
    /// The same, and the refusal it gets.
    type Refused<'a> = (&'a str, Version, &'a str, &'a [(&'a str, &'a str)], Refusal);

    const H10: Version = Version::HTTP_10;
    const H11: Version = Version::HTTP_11;
    const H2: Version = Version::HTTP_2;

    #[test]
    fn clean_requests_pass() {
        let cases: &[Row] = &[
            ("GET", H11, "/", &[("host", "example.com")]),
            ("GET", H11, "/a?b=c", &[("host", "example.com:8080")]),
            ("GET", H11, "/", &[("host", "127.0.0.1:80")]),
            ("GET", H11, "/", &[("host", "[::1]:8443")]),
            ("GET", H11, "/", &[("host", "[2001:db8::1]")]),
            ("GET", H11, "/", &[("host", "Example.COM.")]),
            ("GET", H11, "/", &[("host", "xn--bcher-kva.example")]),
            ("GET", H11, "/", &[("host", "under_score.example")]),
            ("GET", H11, "/", &[("host", "a%41b")]),
            ("GET", H11, "/", &[("host", "a:0")]),
            ("GET", H11, "/", &[("host", "a:65535")]),
            ("OPTIONS", H11, "*", &[("host", "a")]),
            // HTTP/1.0 may omit Host.
            ("GET", H10, "/", &[]),
            // Absolute-form: the URI's authority wins; the Host line must still be valid.
            ("GET", H11, "http://b/x", &[("host", "a")]),
            ("GET", H11, "https://b:8443/x", &[("host", "b:8443")]),
            ("GET", H10, "http://b/x", &[]),
            // HTTP/2: :authority alone, or a host that names the same authority.
            ("GET", H2, "http://a/x", &[]),
            ("GET", H2, "http://a/x", &[("host", "A")]),
            ("GET", H2, "http://a/x", &[("host", "a:80")]),
            ("GET", H2, "https://a:443/x", &[("host", "a")]),
            ("GET", H2, "/x", &[("host", "a")]),
            ("GET", H2, "/x", &[]),
            (
                "POST",
                H11,
                "/",
                &[("host", "a"), ("transfer-encoding", "chunked")],
            ),
            (
                "POST",
                H11,
                "/",
                &[("host", "a"), ("transfer-encoding", "Chunked ")],
            ),
            (
                "POST",
                H11,
                "/",
                &[("host", "a"), ("transfer-encoding", " , chunked")],
            ),
        ];
        for (method, version, target, headers) in cases {
            assert_eq!(
                request(method, *version, target, headers),
                Ok(()),
                "{method} {target} {version:?} {headers:?}"
            );
        }
    }

    #[test]
    fn bad_hosts_are_refused() {
        use Refusal::*;
        let cases: &[Refused] = &[
            ("GET", H11, "/", &[], MissingHost),
            ("GET", H11, "http://b/x", &[], MissingHost),
            (
                "GET",
                H11,
                "/",
                &[("host", "a"), ("host", "b")],
                DuplicateHost,
            ),
            (
                "GET",
                H11,
                "/",
                &[("host", "a"), ("host", "a")],
                DuplicateHost,
            ),
            (
                "GET",
                H10,
                "/",
                &[("host", "a"), ("host", "b")],
                DuplicateHost,
            ),
            (
                "GET",
                H11,
                "http://b/x",
                &[("host", "a"), ("host", "b")],
                DuplicateHost,
            ),
            ("GET", H11, "/", &[("host", "")], InvalidHost),
            ("GET", H11, "/", &[("host", "a b")], InvalidHost),
            ("GET", H11, "/", &[("host", "a\tb")], InvalidHost),
            ("GET", H11, "/", &[("host", "user@a")], InvalidHost),
            ("GET", H11, "/", &[("host", "user:pw@a")], InvalidHost),
            ("GET", H11, "/", &[("host", "a:")], InvalidHost),
            ("GET", H11, "/", &[("host", ":80")], InvalidHost),
            ("GET", H11, "/", &[("host", "a:65536")], InvalidHost),
            ("GET", H11, "/", &[("host", "a:080080")], InvalidHost),
            ("GET", H11, "/", &[("host", "a:8a")], InvalidHost),
            ("GET", H11, "/", &[("host", "a:80:80")], InvalidHost),
            ("GET", H11, "/", &[("host", "a/b")], InvalidHost),
            ("GET", H11, "/", &[("host", "a?b")], InvalidHost),
            ("GET", H11, "/", &[("host", "a#b")], InvalidHost),
            ("GET", H11, "/", &[("host", "a%4")], InvalidHost),
            ("GET", H11, "/", &[("host", "a%zz")], InvalidHost),
            ("GET", H11, "/", &[("host", "a\u{ff}")], InvalidHost),
            ("GET", H11, "/", &[("host", "::1")], InvalidHost),
            ("GET", H11, "/", &[("host", "[::1")], InvalidHost),
            ("GET", H11, "/", &[("host", "[::1]x")], InvalidHost),
            ("GET", H11, "/", &[("host", "[::1]:")], InvalidHost),
            ("GET", H11, "/", &[("host", "[v1.x]")], InvalidHost),
            (
                "GET",
                H11,
                "/",
                &[("host", "[fe80::1%25eth0]")],
                InvalidHost,
            ),
            ("GET", H11, "/", &[("host", "[127.0.0.1]")], InvalidHost),
            ("GET", H11, "http://b/x", &[("host", "a b")], InvalidHost),
            ("GET", H10, "/", &[("host", "a b")], InvalidHost),
            ("GET", H2, "/x", &[("host", "a b")], InvalidHost),
            (
                "GET",
                H2,
                "http://a/x",
                &[("host", "b")],
                HostDiffersFromAuthority,
            ),
            (
                "GET",
                H2,
                "http://a/x",
                &[("host", "a:8080")],
                HostDiffersFromAuthority,
            ),
            (
                "GET",
                H2,
                "https://a/x",
                &[("host", "a:80")],
                HostDiffersFromAuthority,
            ),
            (
                "GET",
                H2,
                "http://a/x",
                &[("host", "a"), ("host", "a")],
                DuplicateHost,
            ),
        ];
        for (method, version, target, headers, refusal) in cases {
            assert_eq!(
                request(method, *version, target, headers),
                Err(*refusal),
                "{method} {target} {version:?} {headers:?}"
            );
        }
    }

    /// The byte table says what RFC 3986's grammar says, for every byte, inside a
    /// host, at its ends, and before a port.
    #[test]
    fn every_byte_of_a_host_is_judged_by_the_grammar() {
        for b in 0..=255u8 {
            let reg_name = matches!(b,
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
                | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=');
            for host in [vec![b'a', b, b'b'], vec![b, b'b'], vec![b'a', b]] {
                let mut with_port = host.clone();
                with_port.extend_from_slice(b":8080");
                assert_eq!(valid_host_port(&host), reg_name, "{host:?}");
                assert_eq!(valid_host_port(&with_port), reg_name, "{with_port:?}");
            }
        }
    }

    #[test]
    fn bad_targets_are_refused() {
        use Refusal::*;
        let host: &[(&str, &str)] = &[("host", "a")];
        let cases: &[(&str, Version, &str, Refusal)] = &[
            ("GET", H11, "example.com", AuthorityForm),
            ("GET", H11, "example.com:443", AuthorityForm),
            ("GET", H11, "*", AsteriskForm),
            ("CONNECT", H11, "example.com:443", Connect),
            ("CONNECT", H2, "example.com:443", Connect),
            ("GET", H11, "ftp://a/x", UnsupportedScheme),
            ("GET", H2, "ftp://a/x", UnsupportedScheme),
            ("GET", H11, "http://user@a/x", InvalidAuthority),
            ("GET", H11, "http://a:99999/x", InvalidAuthority),
            ("GET", H11, "http://a:/x", InvalidAuthority),
            ("GET", H2, "http://user:pw@a/x", InvalidAuthority),
        ];
        for (method, version, target, refusal) in cases {
            assert_eq!(
                request(method, *version, target, host),
                Err(*refusal),
                "{method} {target} {version:?}"
            );
        }
    }

    #[test]
    fn transfer_encodings_other_than_one_chunked_are_refused() {
        use Refusal::*;
        let cases: &[(&[&str], Version, Refusal)] = &[
            (&["chunked, chunked"], H11, ChunkedNotOnce),
            (&["chunked", "chunked"], H11, ChunkedNotOnce),
            (&["chunked,chunked"], H11, ChunkedNotOnce),
            (&["", "  "], H11, ChunkedNotOnce),
            (&["gzip, chunked"], H11, TransferCoding),
            (&["gzip", "chunked"], H11, TransferCoding),
            (&["identity, chunked"], H11, TransferCoding),
            (&["chunked;q=1"], H11, TransferCoding),
            (&["\"chunked\""], H11, TransferCoding),
            (&["chunked, identity"], H11, TransferCoding),
            (&["xchunked"], H11, TransferCoding),
            (&["chunked"], H2, TransferEncodingInHttp2),
        ];
        for (values, version, refusal) in cases {
            let mut headers = vec![("host", "a")];
            headers.extend(values.iter().map(|v| ("transfer-encoding", *v)));
            assert_eq!(
                request("POST", *version, "/", &headers),
                Err(*refusal),
                "{values:?}"
            );
        }
    }

    #[test]
    fn every_refusal_names_its_status() {
        use Refusal::*;
        for refusal in [
            MissingHost,
            DuplicateHost,
            InvalidHost,
            InvalidAuthority,
            HostDiffersFromAuthority,
            UnsupportedScheme,
            AuthorityForm,
            AsteriskForm,
            Connect,
            TransferCoding,
            ChunkedNotOnce,
            TransferEncodingInHttp2,
        ] {
            let status = refusal.status();
            let message = refusal.message();
            assert!(
                message.starts_with(&format!("{} ", status.as_u16())),
                "{refusal:?}: {message}"
            );
            assert!(message.ends_with('\n'), "{refusal:?}");
        }
        assert_eq!(Connect.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(DuplicateHost.status(), StatusCode::BAD_REQUEST);
    }
}
