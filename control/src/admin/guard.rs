//! What the admin listener refuses before it looks at a token or a path: requests a web
//! browser was made to send by a page that is not the admin API's own.
//!
//! A page on any site can make the browser of a person who opens it send requests to
//! `127.0.0.1:9901`: "simple" cross-site requests (a `POST` with `text/plain`, which
//! needs no CORS preflight), and, through DNS rebinding (a name the page's author
//! controls, pointed at 127.0.0.1 once the page has loaded), requests whose answers the
//! page can read. So, with or without a token:
//!
//! - [`host_allowed`]: the `Host` must be an IP address (v4, or v6 in brackets; any
//!   port), `localhost`, a name under `.localhost`, or a name in `admin.allowed_hosts`:
//!   DNS rebinding needs a name the attacker controls, which is none of these. Names
//!   are compared without regard to case, the port and a trailing dot. HTTP/1.1 and
//!   HTTP/2 requests without a Host are refused (HTTP/1.0 has no Host to send).
//! - [`same_origin`]: a change (any method but `GET`, `HEAD`, `OPTIONS`) whose `Origin`
//!   is not `http://` + its accepted Host, or is `null`, or which the browser marks
//!   `Sec-Fetch-Site: cross-site`, is refused. Requests without an `Origin` (curl, the
//!   `serin` CLI) are not browsers' cross-site requests and pass.
//! - [`json_body`]: an endpoint that takes a body takes `Content-Type: application/json`
//!   only, a type no page can send across sites without the preflight serin never
//!   answers.
//!
//! `/healthz` and `/readyz` are exempt from [`check`]: they hold no data, and a probe
//! must never fail on how it names serin.

use http::header::{self, HeaderMap};
use http::request::Parts;
use http::uri::Authority;
use http::{Method, Uri, Version};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why [`check`] refused a request (403), each with a message that says what was
/// refused, why and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forbidden {
    /// An HTTP/1.1 or HTTP/2 request without a Host.
    NoHost,
    /// A Host that is not `host[:port]`, or several that disagree (as written).
    BadHost(String),
    /// Several Host headers, or a Host that is not the target URI's authority.
    ConflictingHosts,
    /// A Host that is neither an IP address, a loopback name nor a listed name.
    HostNotAllowed(String),
    /// A change sent with `Origin: null` (a sandboxed frame, a `file:` page).
    NullOrigin(Method),
    /// A change sent by a page of another origin: (method, the page's origin, ours).
    CrossOrigin(Method, String, String),
    /// A change the browser marks `Sec-Fetch-Site: cross-site`.
    CrossSite(Method),
}

impl Forbidden {
    /// The `error` of the 403's JSON body.
    pub fn message(&self) -> String {
        const NAMES: &str = "the admin API answers only requests whose Host is an IP address, \
             localhost, or a name in admin.allowed_hosts, so that no web page can reach it \
             through a DNS name its author controls (DNS rebinding)";
        const CLIENTS: &str = "changes are taken from the dashboard this listener serves at /ui, \
             and from clients that send no Origin header, such as the serin CLI and curl";
        match self {
            Forbidden::NoHost => format!(
                "refused: the request has no Host header; {NAMES}. Send the address you connect \
                 to as the Host, as browsers, curl and the serin CLI do"
            ),
            Forbidden::BadHost(host) => format!(
                "refused: the Host header {host:?} is not a host name or an IP address with an \
                 optional port; {NAMES}. Send the address you connect to, e.g. `Host: 127.0.0.1:9901`"
            ),
            Forbidden::ConflictingHosts => format!(
                "refused: the request names its host more than once (several Host headers, or a \
                 Host that differs from the authority of the target URI); {NAMES}. Send one Host"
            ),
            Forbidden::HostNotAllowed(name) => format!(
                "refused: the request names the admin API \"{name}\" (its Host header), which is \
                 not one of its names; {NAMES}. If you reach serin by this name, add \"{name}\" \
                 to admin.allowed_hosts in the config and restart serin, or use its IP address"
            ),
            Forbidden::NullOrigin(method) => format!(
                "refused: a {method} sent by a web page with `Origin: null` (a sandboxed frame, a \
                 file: page or a redirect) cannot change anything here; {CLIENTS}"
            ),
            Forbidden::CrossOrigin(method, origin, own) => format!(
                "refused: a {method} sent by a web page of {origin}, which is not the admin API's \
                 own origin ({own}), cannot change anything here; {CLIENTS}"
            ),
            Forbidden::CrossSite(method) => format!(
                "refused: a {method} the browser marks as sent by another site \
                 (`Sec-Fetch-Site: cross-site`) cannot change anything here; {CLIENTS}"
            ),
        }
    }
}

/// Paths exempt from [`check`]: probes name serin however their platform does.
pub fn is_probe(path: &str) -> bool {
    matches!(path.trim_end_matches('/'), "/healthz" | "/readyz")
}

/// Whether `method` may change something: anything but `GET`, `HEAD` and `OPTIONS`.
pub fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The whole browser check of a request: its Host, and for a change its origin.
/// `allowed` holds `admin.allowed_hosts` (lowercase, no trailing dot).
pub fn check(parts: &Parts, allowed: &[String]) -> Result<(), Forbidden> {
    if is_probe(parts.uri.path()) {
        return Ok(());
    }
    let host = request_host(parts.version, &parts.uri, &parts.headers)?;
    if let Some(host) = host {
        host_allowed(host, allowed)?;
    }
    if is_change(&parts.method) {
        same_origin(&parts.method, &parts.headers, host)?;
    }
    Ok(())
}

/// The request's Host as sent (the Host header, or the target URI's authority in
/// absolute form and HTTP/2); `None` only for HTTP/1.0 and older without one.
pub fn request_host<'a>(
    version: Version,
    uri: &'a Uri,
    headers: &'a HeaderMap,
) -> Result<Option<&'a str>, Forbidden> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(one), None) => Some(
            one.to_str()
                .map_err(|_| Forbidden::BadHost(String::from_utf8_lossy(one.as_bytes()).into()))?,
        ),
        (Some(_), Some(_)) => return Err(Forbidden::ConflictingHosts),
    };
    let host = match (uri.authority().map(Authority::as_str), header) {
        (Some(target), Some(header)) if !target.eq_ignore_ascii_case(header) => {
            return Err(Forbidden::ConflictingHosts)
        }
        (Some(host), _) | (None, Some(host)) => host,
        (None, None) if matches!(version, Version::HTTP_09 | Version::HTTP_10) => return Ok(None),
        (None, None) => return Err(Forbidden::NoHost),
    };
    Ok(Some(host))
}

/// A Host (or an origin's host) split into its name, without a trailing dot, and its
/// port; `None` if it is not `host[:port]` (user info, a path, a bad port).
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let authority: Authority = host.parse().ok()?;
    // `Authority` takes `user@host`; a Host never carries user info.
    if !host.starts_with(authority.host()) {
        return None;
    }
    let (name, rest) = host.split_at(authority.host().len());
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some("") => None,
        Some(port) => Some(port.parse::<u16>().ok()?),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    (!name.is_empty()).then_some((name, port))
}

/// Whether `host` (a Host header's value) names the admin API: an IP address, a
/// loopback name or a name in `allowed`, with any port.
pub fn host_allowed(host: &str, allowed: &[String]) -> Result<(), Forbidden> {
    let bad = || Forbidden::BadHost(host.to_string());
    let (name, _port) = split_host(host).ok_or_else(bad)?;
    if let Some(inner) = name.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(bad()),
        };
    }
    const LOCALHOST: &str = "localhost";
    let loopback = name.eq_ignore_ascii_case(LOCALHOST)
        || name.len() > LOCALHOST.len() + 1
            && name.as_bytes()[name.len() - LOCALHOST.len() - 1] == b'.'
            && name[name.len() - LOCALHOST.len()..].eq_ignore_ascii_case(LOCALHOST);
    if loopback
        || name.parse::<Ipv4Addr>().is_ok()
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    {
        Ok(())
    } else {
        Err(Forbidden::HostNotAllowed(name.to_ascii_lowercase()))
    }
}

/// Whether a change came from the admin API's own origin, or from no page at all:
/// refused when the browser marks it cross-site, when its `Origin` is `null`, and when
/// it is not `http://` + `host` (the request's accepted Host; names compared without
/// regard to case or a trailing dot, port 80 when none is given).
pub fn same_origin(
    method: &Method,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Result<(), Forbidden> {
    let cross_site = headers
        .get_all("sec-fetch-site")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return Err(Forbidden::CrossSite(method.clone()));
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    let origin = match (origins.next(), origins.next()) {
        (None, _) => return Ok(()),
        (Some(one), None) => one,
        (Some(_), Some(_)) => {
            return Err(Forbidden::CrossOrigin(
                method.clone(),
                "several origins".to_string(),
                own_origin(host),
            ))
        }
    };
    let text = String::from_utf8_lossy(origin.as_bytes());
    if text.trim() == "null" {
        return Err(Forbidden::NullOrigin(method.clone()));
    }
    let ours = |origin: &str| {
        let (Some(scheme), Some(host)) = (origin.get(..7), host) else {
            return false;
        };
        let (Some((name, port)), Some((own_name, own_port))) =
            (split_host(&origin[7..]), split_host(host))
        else {
            return false;
        };
        scheme.eq_ignore_ascii_case("http://")
            && name.eq_ignore_ascii_case(own_name)
            && port.unwrap_or(80) == own_port.unwrap_or(80)
    };
    if ours(&text) {
        Ok(())
    } else {
        Err(Forbidden::CrossOrigin(
            method.clone(),
            text.into_owned(),
            own_origin(host),
        ))
    }
}

fn own_origin(host: Option<&str>) -> String {
    match host {
        Some(host) => format!("http://{host}"),
        None => "unknown: the request has no Host".to_string(),
    }
}

/// Why [`json_body`] refused a body (415).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotJson {
    Missing,
    Other(String),
}

/// Whether a body is declared JSON: `Content-Type: application/json`, parameters such
/// as `; charset=utf-8` allowed.
pub fn json_body(headers: &HeaderMap) -> Result<(), NotJson> {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let value = match (types.next(), types.next()) {
        (None, _) => return Err(NotJson::Missing),
        (Some(one), None) => one,
        (Some(_), Some(_)) => return Err(NotJson::Other("several Content-Type headers".into())),
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    match text.parse::<mime::Mime>() {
        Ok(m) if m.type_() == mime::APPLICATION && m.subtype() == mime::JSON => Ok(()),
        _ => Err(NotJson::Other(text.into_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_that_name_the_admin_api() {
        let allowed = hosts(&["serin", "serin-admin.monitoring.svc"]);
        let accepted = [
            // IP literals, with or without a port: probes and scrapers by pod IP.
            "127.0.0.1",
            "127.0.0.1:9901",
            "10.1.2.3:9901",
            "0.0.0.0:9901",
            "[::1]",
            "[::1]:9901",
            "[fe80::1]:80",
            "[::ffff:127.0.0.1]:9901",
            // Loopback names, any case, any port, a trailing dot.
            "localhost",
            "LocalHost:9901",
            "localhost.:9901",
            "dashboard.localhost:9901",
            "a.b.LOCALHOST",
            // Listed names.
            "serin:9901",
            "SERIN",
            "serin.",
            "serin-admin.monitoring.svc:9901",
            "serin:",
        ];
        for host in accepted {
            assert_eq!(host_allowed(host, &allowed), Ok(()), "{host}");
        }
        let not_ours = |name: &str| Err(Forbidden::HostNotAllowed(name.to_string()));
        let refused = [
            ("evil.example", not_ours("evil.example")),
            ("Evil.Example:9901", not_ours("evil.example")),
            ("localhost.evil.example", not_ours("localhost.evil.example")),
            ("evillocalhost", not_ours("evillocalhost")),
            ("xlocalhost:9901", not_ours("xlocalhost")),
            ("serin.evil.example", not_ours("serin.evil.example")),
            ("serin-admin", not_ours("serin-admin")),
            // Not an IPv4 address a browser would send: a name, not listed.
            ("2130706433", not_ours("2130706433")),
            ("127.1", not_ours("127.1")),
        ];
        for (host, expected) in refused {
            assert_eq!(host_allowed(host, &allowed), expected, "{host}");
        }
        for bad in [
            "",
            ":9901",
            "user@127.0.0.1",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "[::1",
            "[not-v6]:80",
            "a b",
            "evil.example/path",
            ".",
        ] {
            assert_eq!(
                host_allowed(bad, &allowed),
                Err(Forbidden::BadHost(bad.to_string())),
                "{bad}"
            );
        }
        // Without a list, only IP addresses and loopback names.
        assert_eq!(host_allowed("serin", &[]), not_ours("serin"));
        assert_eq!(host_allowed("localhost:1", &[]), Ok(()));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn the_host_of_a_request() {
        let origin_form: Uri = "/api/v1/services".parse().expect("uri");
        let absolute: Uri = "http://127.0.0.1:9901/api/v1/services"
            .parse()
            .expect("uri");
        let v11 = Version::HTTP_11;
        let host = headers(&[("host", "127.0.0.1:9901")]);
        let none = HeaderMap::new();
        assert_eq!(
            request_host(v11, &origin_form, &host),
            Ok(Some("127.0.0.1:9901"))
        );
        // Absolute form (and HTTP/2's :authority): the URI's authority, which a Host
        // must not contradict.
        assert_eq!(
            request_host(Version::HTTP_2, &absolute, &none),
            Ok(Some("127.0.0.1:9901"))
        );
        assert_eq!(
            request_host(v11, &absolute, &host),
            Ok(Some("127.0.0.1:9901"))
        );
        assert_eq!(
            request_host(v11, &absolute, &headers(&[("host", "evil.example")])),
            Err(Forbidden::ConflictingHosts)
        );
        assert_eq!(
            request_host(
                v11,
                &origin_form,
                &headers(&[("host", "127.0.0.1"), ("host", "evil.example")])
            ),
            Err(Forbidden::ConflictingHosts)
        );
        // No Host: refused from HTTP/1.1 on; HTTP/1.0 has none to send.
        assert_eq!(
            request_host(v11, &origin_form, &none),
            Err(Forbidden::NoHost)
        );
        assert_eq!(
            request_host(Version::HTTP_2, &origin_form, &none),
            Err(Forbidden::NoHost)
        );
        assert_eq!(
            request_host(Version::HTTP_10, &origin_form, &none),
            Ok(None)
        );
    }

    #[test]
    fn changes_from_other_origins_are_refused() {
        let post = Method::POST;
        let own = Some("127.0.0.1:9901");
        let cross = |origin: &str, own: &str| {
            Err(Forbidden::CrossOrigin(
                Method::POST,
                origin.to_string(),
                own.to_string(),
            ))
        };
        /// (the request's headers, its accepted Host, what `same_origin` says)
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            Result<(), Forbidden>,
        );
        let cases: &[Case<'_>] = &[
            // No Origin: curl, the serin CLI.
            (&[], own, Ok(())),
            (&[], None, Ok(())),
            // The dashboard's own fetches.
            (&[("origin", "http://127.0.0.1:9901")], own, Ok(())),
            (
                &[
                    ("origin", "http://127.0.0.1:9901"),
                    ("sec-fetch-site", "same-origin"),
                ],
                own,
                Ok(()),
            ),
            (
                &[("origin", "HTTP://LOCALHOST:9901")],
                Some("localhost:9901"),
                Ok(()),
            ),
            (
                &[("origin", "http://localhost.:9901")],
                Some("localhost:9901"),
                Ok(()),
            ),
            (&[("origin", "http://serin")], Some("serin:80"), Ok(())),
            (&[("origin", "http://serin:80")], Some("serin"), Ok(())),
            (
                &[("origin", "http://[::1]:9901")],
                Some("[::1]:9901"),
                Ok(()),
            ),
            // Other pages.
            (
                &[("origin", "http://evil.example")],
                own,
                cross("http://evil.example", "http://127.0.0.1:9901"),
            ),
            // Same host, another port: another origin (another local service's page).
            (
                &[("origin", "http://127.0.0.1:8000")],
                own,
                cross("http://127.0.0.1:8000", "http://127.0.0.1:9901"),
            ),
            (
                &[("origin", "https://127.0.0.1:9901")],
                own,
                cross("https://127.0.0.1:9901", "http://127.0.0.1:9901"),
            ),
            (
                &[("origin", "http://127.0.0.1:9901/ui")],
                own,
                cross("http://127.0.0.1:9901/ui", "http://127.0.0.1:9901"),
            ),
            (
                &[("origin", "http://localhost:9901")],
                own,
                cross("http://localhost:9901", "http://127.0.0.1:9901"),
            ),
            (
                &[("origin", "http://127.0.0.1:9901")],
                None,
                cross("http://127.0.0.1:9901", "unknown: the request has no Host"),
            ),
            (
                &[
                    ("origin", "http://127.0.0.1:9901"),
                    ("origin", "http://evil.example"),
                ],
                own,
                cross("several origins", "http://127.0.0.1:9901"),
            ),
            (
                &[("origin", "null")],
                own,
                Err(Forbidden::NullOrigin(Method::POST)),
            ),
            // The browser says another site sent it, whatever the Origin.
            (
                &[("sec-fetch-site", "cross-site")],
                own,
                Err(Forbidden::CrossSite(Method::POST)),
            ),
            (
                &[
                    ("origin", "http://127.0.0.1:9901"),
                    ("sec-fetch-site", "Cross-Site"),
                ],
                own,
                Err(Forbidden::CrossSite(Method::POST)),
            ),
        ];
        for (pairs, host, expected) in cases {
            assert_eq!(
                same_origin(&post, &headers(pairs), *host),
                *expected,
                "{pairs:?} {host:?}"
            );
        }
    }

    #[test]
    fn only_changes_are_held_to_their_origin_and_probes_to_nothing() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!is_change(&method), "{method}");
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(is_change(&method), "{method}");
        }
        let request = |method: Method, path: &str, pairs: &[(&str, &str)]| {
            let mut builder = http::Request::builder().method(method).uri(path);
            for (name, value) in pairs {
                builder = builder.header(*name, *value);
            }
            builder.body(()).expect("request").into_parts().0
        };
        let evil = [("host", "evil.example"), ("origin", "http://evil.example")];
        for probe in ["/healthz", "/readyz", "/readyz/"] {
            assert_eq!(check(&request(Method::GET, probe, &evil), &[]), Ok(()));
            assert_eq!(check(&request(Method::GET, probe, &[]), &[]), Ok(()));
        }
        for path in ["/metrics", "/ui", "/api/v1/services", "/nope"] {
            assert_eq!(
                check(&request(Method::GET, path, &evil), &[]),
                Err(Forbidden::HostNotAllowed("evil.example".into())),
                "{path}"
            );
        }
        // A read from another page with our Host passes (the page cannot read the
        // answer without CORS); the same page's change does not.
        let cross_page = [
            ("host", "127.0.0.1:9901"),
            ("origin", "http://evil.example"),
        ];
        assert_eq!(
            check(&request(Method::GET, "/api/v1/services", &cross_page), &[]),
            Ok(())
        );
        assert_eq!(
            check(
                &request(Method::POST, "/api/v1/services/api/pause", &cross_page),
                &[]
            ),
            Err(Forbidden::CrossOrigin(
                Method::POST,
                "http://evil.example".into(),
                "http://127.0.0.1:9901".into()
            ))
        );
        // The Host is checked before the origin.
        assert_eq!(
            check(&request(Method::POST, "/api/v1/reload", &evil), &[]),
            Err(Forbidden::HostNotAllowed("evil.example".into()))
        );
    }

    #[test]
    fn bodies_must_be_declared_json() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
        ] {
            assert_eq!(json_body(&headers(&[("content-type", ok)])), Ok(()), "{ok}");
        }
        assert_eq!(json_body(&HeaderMap::new()), Err(NotJson::Missing));
        for other in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "application/json garbage",
            "application/merge-patch+json",
            "json",
            "",
        ] {
            assert_eq!(
                json_body(&headers(&[("content-type", other)])),
                Err(NotJson::Other(other.to_string())),
                "{other}"
            );
        }
        assert_eq!(
            json_body(&headers(&[
                ("content-type", "application/json"),
                ("content-type", "text/plain")
            ])),
            Err(NotJson::Other("several Content-Type headers".into()))
        );
    }

    #[test]
    fn every_refusal_says_what_why_and_what_to_do() {
        let all = [
            Forbidden::NoHost,
            Forbidden::BadHost("a b".into()),
            Forbidden::ConflictingHosts,
            Forbidden::HostNotAllowed("evil.example".into()),
            Forbidden::NullOrigin(Method::POST),
            Forbidden::CrossOrigin(
                Method::PUT,
                "http://evil.example".into(),
                "http://127.0.0.1:9901".into(),
            ),
            Forbidden::CrossSite(Method::POST),
        ];
        for refusal in all {
            let message = refusal.message();
            assert!(message.starts_with("refused: "), "{message}");
            assert!(
                message.contains("admin.allowed_hosts") || message.contains("/ui"),
                "{message}"
            );
        }
        assert!(Forbidden::HostNotAllowed("evil.example".into())
            .message()
            .contains("add \"evil.example\" to admin.allowed_hosts"));
    }
}
