//! Compiles the raw document into a checked [`Snapshot`], collecting *every* error with
//! its path and what to do about it, never stopping at the first.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::ConfigError;
use crate::schema::{RawConfig, RawService, RawSplit, RawTimeouts};
use crate::snapshot::{
    Admin, Endpoint, HostMatch, Listener, Route, Service, Snapshot, Split, Sticky, Timeouts,
    Version, DEFAULT_ADMIN_LISTEN, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
};

/// Largest weight accepted; weights are relative, so this only guards against overflow.
pub const MAX_WEIGHT: u64 = 1_000_000;

#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }
}

pub fn compile(raw: &RawConfig) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errs = Errors::default();

    let admin_listen = match &raw.admin {
        Some(a) => socket_addr(&a.listen, "admin.listen", &mut errs),
        None => DEFAULT_ADMIN_LISTEN.parse().ok(),
    };

    // Listeners.
    if raw.listeners.is_empty() {
        errs.push(
            "listeners",
            "at least one listener is required (e.g. `- { name: web, listen: 127.0.0.1:8080 }`)",
        );
    }
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut listener_names: HashMap<&str, usize> = HashMap::new();
    let mut bound: HashMap<SocketAddr, String> = HashMap::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        name(&l.name, &format!("{path}.name"), &mut errs);
        if listener_names.insert(l.name.as_str(), i).is_some() {
            errs.push(
                format!("{path}.name"),
                format!(
                    "listener name \"{}\" is used twice; names must be unique",
                    l.name
                ),
            );
        }
        let listen_path = format!("{path}.listen");
        if let Some(addr) = socket_addr(&l.listen, &listen_path, &mut errs) {
            if addr.port() != 0 {
                if let Some(other) = bound.insert(addr, listen_path.clone()) {
                    errs.push(
                        &listen_path,
                        format!(
                            "{addr} is already used by {other}; give each listener its own address"
                        ),
                    );
                }
            }
            listeners.push(Listener {
                name: l.name.clone(),
                listen: addr,
            });
        }
    }
    if let Some(admin) = admin_listen {
        if admin.port() != 0 {
            if let Some(other) = bound.get(&admin) {
                errs.push(
                    "admin.listen",
                    format!(
                        "{admin} is already used by {other}; the admin API needs its own address"
                    ),
                );
            }
        }
    }

    // Services.
    let mut services = Vec::with_capacity(raw.services.len());
    let mut service_names: HashMap<&str, usize> = HashMap::new();
    for (i, s) in raw.services.iter().enumerate() {
        let path = format!("services[{i}]");
        if service_names.insert(s.name.as_str(), i).is_some() {
            errs.push(
                format!("{path}.name"),
                format!(
                    "service name \"{}\" is used twice; names must be unique",
                    s.name
                ),
            );
        }
        if let Some(service) = service(s, &path, &mut errs) {
            services.push(service);
        }
    }

    // Routes (after listeners and services, which they name).
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut seen_routes: HashSet<(&str, String, String)> = HashSet::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let listener = listener_names.get(r.listener.as_str()).copied();
        if listener.is_none() {
            errs.push(
                format!("{path}.listener"),
                format!(
                    "listener \"{}\" is not defined (defined: {})",
                    r.listener,
                    list(raw.listeners.iter().map(|l| l.name.as_str()))
                ),
            );
        }
        let service = service_names.get(r.service.as_str()).copied();
        if service.is_none() {
            errs.push(
                format!("{path}.service"),
                format!(
                    "service \"{}\" is not defined (defined: {})",
                    r.service,
                    list(raw.services.iter().map(|s| s.name.as_str()))
                ),
            );
        }
        let host = host_match(
            r.matcher.host.as_deref().unwrap_or("*"),
            &format!("{path}.match.host"),
            &mut errs,
        );
        let prefix = r.matcher.path_prefix.as_deref().unwrap_or("/");
        let prefix_ok = path_prefix(prefix, &format!("{path}.match.path_prefix"), &mut errs);
        let host_key = r
            .matcher
            .host
            .as_deref()
            .unwrap_or("*")
            .to_ascii_lowercase();
        if !seen_routes.insert((r.listener.as_str(), host_key.clone(), prefix.to_string())) {
            errs.push(
                &path,
                format!(
                    "another route on listener \"{}\" already matches host \"{host_key}\" and path_prefix \"{prefix}\"; \
                     remove one or make them differ",
                    r.listener
                ),
            );
        }
        if let (Some(listener), Some(service), Some(host), true) =
            (listener, service, host, prefix_ok)
        {
            routes.push(Route {
                listener,
                host,
                path_prefix: normalize_prefix(prefix),
                service,
            });
        }
    }

    if !errs.0.is_empty() {
        return Err(errs.0);
    }
    match admin_listen {
        Some(listen) => Ok(Snapshot {
            admin: Admin { listen },
            listeners,
            routes,
            services,
        }),
        // Unreachable in practice: a bad admin address pushed an error above.
        None => Err(vec![ConfigError::new("admin.listen", "no admin address")]),
    }
}

fn service(s: &RawService, path: &str, errs: &mut Errors) -> Option<Service> {
    let before = errs.0.len();
    name(&s.name, &format!("{path}.name"), errs);
    if s.versions.is_empty() {
        errs.push(
            format!("{path}.versions"),
            "a service needs at least one version (e.g. `- { name: stable, endpoints: [127.0.0.1:9001] }`)",
        );
    }
    let mut versions = Vec::with_capacity(s.versions.len());
    let mut version_names = HashSet::new();
    for (j, v) in s.versions.iter().enumerate() {
        let vpath = format!("{path}.versions[{j}]");
        name(&v.name, &format!("{vpath}.name"), errs);
        if !version_names.insert(v.name.as_str()) {
            errs.push(
                format!("{vpath}.name"),
                format!(
                    "version name \"{}\" is used twice in this service; names must be unique",
                    v.name
                ),
            );
        }
        if v.endpoints.is_empty() {
            errs.push(
                format!("{vpath}.endpoints"),
                "a version needs at least one endpoint (host:port, e.g. 127.0.0.1:9001)",
            );
        }
        let mut endpoints = Vec::with_capacity(v.endpoints.len());
        for (k, e) in v.endpoints.iter().enumerate() {
            if let Some(ep) = endpoint(e, &format!("{vpath}.endpoints[{k}]"), errs) {
                endpoints.push(ep);
            }
        }
        versions.push(Version {
            name: v.name.clone(),
            endpoints,
            weight: 0,
        });
    }

    let split = match &s.split {
        Some(split) => self::split(split, &mut versions, &format!("{path}.split"), errs),
        None if versions.len() == 1 => {
            versions[0].weight = 100;
            Split::default()
        }
        None if versions.is_empty() => Split::default(),
        None => {
            errs.push(
                format!("{path}.split"),
                format!(
                    "required when a service has more than one version: give each version a weight, \
                     e.g. `split: {{ weights: {{ {} }} }}`",
                    versions
                        .iter()
                        .enumerate()
                        .map(|(i, v)| format!("{}: {}", v.name, if i == 0 { 100 } else { 0 }))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            Split::default()
        }
    };
    let timeouts = timeouts(s.timeouts.as_ref(), &format!("{path}.timeouts"), errs);

    (errs.0.len() == before).then(|| Service {
        name: s.name.clone(),
        versions,
        split,
        timeouts,
    })
}

fn split(raw: &RawSplit, versions: &mut [Version], path: &str, errs: &mut Errors) -> Split {
    let wpath = format!("{path}.weights");
    let defined = list(versions.iter().map(|v| v.name.as_str()));
    let mut given = HashSet::new();
    for (key, value) in &raw.weights {
        let Some(key) = key.as_str() else {
            errs.push(
                &wpath,
                format!("keys are version names, got {}", describe(key)),
            );
            continue;
        };
        let Some(index) = versions.iter().position(|v| v.name == key) else {
            errs.push(
                &wpath,
                format!("version \"{key}\" is not defined (defined: {defined})"),
            );
            continue;
        };
        given.insert(index);
        match value.as_u64() {
            Some(w) if w <= MAX_WEIGHT => versions[index].weight = w as u32,
            Some(w) => errs.push(
                format!("{wpath}.{key}"),
                format!("weight {w} is too large (at most {MAX_WEIGHT}; weights are relative, e.g. 90 and 10)"),
            ),
            None => errs.push(
                format!("{wpath}.{key}"),
                format!(
                    "weight must be a non-negative integer, got {}",
                    describe(value)
                ),
            ),
        }
    }
    let missing: Vec<&str> = versions
        .iter()
        .enumerate()
        .filter(|(i, _)| !given.contains(i))
        .map(|(_, v)| v.name.as_str())
        .collect();
    if !missing.is_empty() {
        errs.push(
            &wpath,
            format!(
                "no weight for version {}; give every version a weight (0 sends it no traffic)",
                missing
                    .iter()
                    .map(|m| format!("\"{m}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    } else if !versions.is_empty() && versions.iter().all(|v| v.weight == 0) {
        errs.push(
            &wpath,
            "weights are all zero; at least one version must receive traffic",
        );
    }

    let sticky = raw.sticky.as_ref().and_then(|s| {
        let spath = format!("{path}.sticky");
        match (&s.header, &s.cookie) {
            (Some(h), None) => header_name(h, &format!("{spath}.header"), errs).map(Sticky::Header),
            (None, Some(c)) => {
                if cookie_name_ok(c) {
                    Some(Sticky::Cookie(c.clone()))
                } else {
                    errs.push(
                        format!("{spath}.cookie"),
                        format!("\"{c}\" is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
                    );
                    None
                }
            }
            (Some(_), Some(_)) => {
                errs.push(&spath, "give either `header` or `cookie`, not both");
                None
            }
            (None, None) => {
                errs.push(&spath, "give `header: NAME` or `cookie: NAME` to key the cohort on");
                None
            }
        }
    });
    let force_header = raw
        .force
        .as_ref()
        .and_then(|f| header_name(&f.header, &format!("{path}.force.header"), errs));
    Split {
        sticky,
        force_header,
    }
}

fn timeouts(raw: Option<&RawTimeouts>, path: &str, errs: &mut Errors) -> Timeouts {
    let Some(raw) = raw else {
        return Timeouts::default();
    };
    Timeouts {
        connect: raw
            .connect
            .as_deref()
            .and_then(|d| duration(d, &format!("{path}.connect"), errs))
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        request: raw
            .request
            .as_deref()
            .and_then(|d| duration(d, &format!("{path}.request"), errs))
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
    }
}

/// A positive duration such as `250ms`, `1s`, `1m 30s`.
fn duration(text: &str, path: &str, errs: &mut Errors) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if d.is_zero() => {
            errs.push(
                path,
                format!("\"{text}\" is zero; give a positive duration such as 500ms or 2s"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            errs.push(
                path,
                format!("\"{text}\" is not a duration ({e}); write e.g. 500ms, 2s or 1m"),
            );
            None
        }
    }
}

fn socket_addr(text: &str, path: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!("\"{text}\" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"),
            );
            None
        }
    }
}

/// `host:port` where host is an IP address (IPv6 in brackets) or a DNS name.
fn endpoint(text: &str, path: &str, errs: &mut Errors) -> Option<Endpoint> {
    let t = text.trim();
    let bad = |errs: &mut Errors, why: &str| {
        errs.push(
            path,
            format!("\"{text}\" is not a valid endpoint: {why} (write host:port, e.g. 127.0.0.1:9001 or api.internal:80)"),
        );
        None
    };
    if let Ok(addr) = t.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return bad(errs, "port 0 cannot be connected to");
        }
        return Some(Endpoint {
            authority: addr.to_string(),
        });
    }
    let Some((host, port)) = t.rsplit_once(':') else {
        return bad(errs, "the port is missing");
    };
    let port: u16 = match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => p as u16,
        Ok(p) => return bad(errs, &format!("port {p} is out of range 1-65535")),
        Err(_) => return bad(errs, &format!("\"{port}\" is not a port number")),
    };
    if host.parse::<IpAddr>().is_ok() || host.starts_with('[') {
        // An IPv6 address without brackets, or a malformed bracketed one.
        return bad(
            errs,
            "an IPv6 address must be written in brackets, e.g. [::1]:9001",
        );
    }
    if !dns_name_ok(host) {
        return bad(
            errs,
            &format!("\"{host}\" is not an IP address or a DNS name"),
        );
    }
    Some(Endpoint {
        authority: format!("{}:{port}", host.to_ascii_lowercase()),
    })
}

fn dns_name_ok(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn host_match(text: &str, path: &str, errs: &mut Errors) -> Option<HostMatch> {
    let t = text.trim();
    if t == "*" {
        return Some(HostMatch::Any);
    }
    if let Some(suffix) = t.strip_prefix("*.") {
        if dns_name_ok(suffix) {
            return Some(HostMatch::Suffix(format!(
                ".{}",
                suffix.to_ascii_lowercase()
            )));
        }
    } else if dns_name_ok(t) || t.parse::<IpAddr>().is_ok() {
        return Some(HostMatch::Exact(t.to_ascii_lowercase()));
    }
    errs.push(
        path,
        format!("\"{text}\" is not a host pattern (write \"*\", a host name such as shop.example.com, or \"*.example.com\"; no port)"),
    );
    None
}

fn path_prefix(text: &str, path: &str, errs: &mut Errors) -> bool {
    if !text.starts_with('/') {
        errs.push(path, format!("\"{text}\" must start with \"/\""));
        return false;
    }
    if text
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#')
    {
        errs.push(
            path,
            format!("\"{text}\" is not a path prefix: no spaces, control characters, '?' or '#'"),
        );
        return false;
    }
    true
}

/// `/api/` and `/api` mean the same segment-wise prefix; keep one form.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Names become metric label values and state file names: keep them plain.
fn name(text: &str, path: &str, errs: &mut Errors) {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text.as_bytes()[0].is_ascii_alphanumeric()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if !ok {
        errs.push(
            path,
            format!(
                "\"{text}\" is not a valid name: use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        );
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(text: &str, path: &str, errs: &mut Errors) -> Option<String> {
    if !text.is_empty() && text.bytes().all(is_tchar) {
        Some(text.to_ascii_lowercase())
    } else {
        errs.push(
            path,
            format!("\"{text}\" is not a valid header name (letters, digits and !#$%&'*+-.^_`|~)"),
        );
        None
    }
}

fn cookie_name_ok(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_tchar)
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join(", ")
    }
}

fn describe(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::Null => "nothing".to_string(),
        serde_yaml_ng::Value::Bool(b) => format!("{b}"),
        serde_yaml_ng::Value::Number(n) => format!("{n}"),
        serde_yaml_ng::Value::String(s) => format!("\"{s}\""),
        serde_yaml_ng::Value::Sequence(_) => "a list".to_string(),
        serde_yaml_ng::Value::Mapping(_) => "a mapping".to_string(),
        serde_yaml_ng::Value::Tagged(_) => "a tagged value".to_string(),
    }
}
