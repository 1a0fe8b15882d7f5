//! Compiles the raw document into a checked [`Snapshot`], collecting *every* error with
//! its path and what to do about it, never stopping at the first.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod shadow;

use crate::error::{ConfigError, Quoted, Shown};
use crate::schema::{
    RawAccessLog, RawAnalysis, RawBurnRate, RawCluster, RawConfig, RawEject, RawErrorRate, RawEtcd,
    RawGrpc, RawHealth, RawLatency, RawLimits, RawNotify, RawRollout, RawRuleKind, RawService,
    RawSplit, RawSuccess, RawTelemetry, RawTimeouts, RawTls, RawTracing, RawUpstreamTls,
    RULE_KINDS,
};
use crate::snapshot::{
    AccessLog, AccessLogFormat, Admin, Analysis, Cluster, DecisionKind, Eject, Endpoint, Etcd,
    EtcdAuth, EtcdTls, HealthCheck, HostMatch, Limits, Listener, LoadBalancing, NotifyFormat,
    NotifyTarget, OnEtcdLoss, OnFailure, Rollout, Route, Rule, Secret, Service, Snapshot, Split,
    Step, Sticky, Telemetry, Timeouts, Tls, TlsVersion, Tracing, UpstreamProtocol, UpstreamTls,
    Version, WebhookUrl, DEFAULT_ADMIN_LISTEN, DEFAULT_ANALYSIS_INTERVAL, DEFAULT_ANALYSIS_WINDOW,
    DEFAULT_CONFIDENCE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_GRPC_ERROR_CODES, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LEASE_TTL, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MIN_REQUESTS, DEFAULT_NOTIFY_RETRIES,
    DEFAULT_NOTIFY_TIMEOUT, DEFAULT_PROGRESS_DEADLINE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_STATE_DIR,
    DEFAULT_TRACE_SAMPLE_RATIO, DEFAULT_TRACE_SERVICE_NAME, DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    GRPC_CODES, MAX_ETCD_PREFIX, MAX_INSTANCE_NAME, MAX_LEASE_TTL, MAX_MAX_HEADER_BYTES,
    MAX_NOTIFY_RETRIES, MAX_NOTIFY_TIMEOUT, MAX_REQUEST_BUFFER, MAX_SUCCESS_RULES,
    MIN_IDLE_TIMEOUT, MIN_LEASE_TTL, MIN_MAX_HEADER_BYTES, MIN_NOTIFY_TIMEOUT,
};

/// Largest weight accepted; weights are relative, so this only guards against overflow.
pub const MAX_WEIGHT: u64 = 1_000_000;

/// Longest duration accepted anywhere: no setting needs more, and every duration can
/// then be added to a clock or counted in milliseconds without overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Shortest analysis interval accepted.
pub const MIN_ANALYSIS_INTERVAL: Duration = Duration::from_millis(100);

/// A path segment that no document contains: an anchor `a.b.AFTER` sorts an error after
/// everything written under `a.b` (see [`Anchored`]).
pub(crate) const AFTER: &str = "\u{1}after";

/// An error with the document path it belongs at, for sorting errors into document
/// order: usually its own path; for an error about a whole mapping, a place after its
/// entries; for an error about a key, the key.
#[derive(Debug, Clone)]
pub(crate) struct Anchored {
    pub anchor: String,
    pub error: ConfigError,
}

#[derive(Default)]
struct Errors(Vec<Anchored>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        self.push_at(path.clone(), path, message);
    }

    fn push_at(
        &mut self,
        anchor: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(Anchored {
            anchor: anchor.into(),
            error: ConfigError::new(path, message),
        });
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Compiles `raw`, or lists every error found, in the order the checks ran (sections
/// in the order admin, listeners, services, routes, state_dir, telemetry, notify, cluster). [`crate::parse_str`] sorts them
/// into document order.
pub fn compile(raw: &RawConfig) -> Result<Snapshot, Vec<ConfigError>> {
    compile_anchored(raw).map_err(|errors| errors.into_iter().map(|e| e.error).collect())
}

pub(crate) fn compile_anchored(raw: &RawConfig) -> Result<Snapshot, Vec<Anchored>> {
    let mut errs = Errors::default();

    let listen_given = raw.admin.as_ref().and_then(|a| a.listen.as_deref());
    let admin_listen = match listen_given {
        Some(listen) => socket_addr(listen, "admin.listen", &mut errs),
        None => DEFAULT_ADMIN_LISTEN.parse().ok(),
    };
    let token_file = match raw.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
        None => None,
        Some(Some(file)) if !file.trim().is_empty() => Some(PathBuf::from(file)),
        Some(_) => {
            errs.push(
                "admin.token_file",
                "it is empty: give the path of a file holding the admin API's token, \
                 or leave out `token_file` to serve the admin API without one",
            );
            None
        }
    };

    let allowed_hosts = raw
        .admin
        .as_ref()
        .and_then(|a| a.allowed_hosts.as_deref())
        .map(|names| admin_allowed_hosts(names, &mut errs))
        .unwrap_or_default();

    // Listeners.
    if raw.listeners.is_empty() {
        errs.push(
            "listeners",
            "at least one listener is required (e.g. `- { name: web, listen: 127.0.0.1:8080 }`)",
        );
    }
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    let mut listener_names: HashMap<&str, usize> = HashMap::new();
    let mut bound = Bound::default();
    for (i, l) in raw.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        name(&l.name, &format!("{path}.name"), &mut errs);
        if let Some(first) = listener_names.get(l.name.as_str()) {
            errs.push(
                format!("{path}.name"),
                format!(
                    "listener name {} is already used by listeners[{first}]; names must be unique",
                    Quoted(&l.name)
                ),
            );
        } else {
            listener_names.insert(l.name.as_str(), i);
        }
        let listen_path = format!("{path}.listen");
        if let Some(addr) = socket_addr(&l.listen, &listen_path, &mut errs) {
            if let Some(clash) = bound.clash(addr) {
                errs.push(
                    &listen_path,
                    clash.message(addr, "give each listener its own address"),
                );
            }
            bound.push(addr, listen_path);
            let trust_forwarded = l
                .trust_forwarded
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, cidr)| {
                    cidr_net(cidr, &format!("{path}.trust_forwarded[{j}]"), &mut errs)
                })
                .collect();
            let tls = l
                .tls
                .as_ref()
                .and_then(|t| tls(t, &format!("{path}.tls"), &mut errs));
            listeners.push(Listener {
                name: l.name.clone(),
                listen: addr,
                trust_forwarded,
                tls,
            });
        }
    }
    if let Some(admin) = admin_listen {
        if let Some(clash) = bound.clash(admin) {
            let message = if listen_given.is_some() {
                clash.message(admin, "the admin API needs an address of its own")
            } else {
                format!(
                    "the admin API listens on {DEFAULT_ADMIN_LISTEN} when `admin.listen` is not given, \
                     and {} ({}) takes that port; give the admin API another address with \
                     `admin: {{ listen: IP:PORT }}`",
                    clash.path, clash.addr
                )
            };
            errs.push("admin.listen", message);
        }
    }

    let limits = limits(raw.limits.as_ref(), &mut errs);

    // Services.
    let mut services = Vec::with_capacity(raw.services.len());
    let mut service_names: HashMap<&str, usize> = HashMap::new();
    for (i, s) in raw.services.iter().enumerate() {
        let path = format!("services[{i}]");
        let duplicate = service_names.get(s.name.as_str()).copied();
        if duplicate.is_none() {
            service_names.insert(s.name.as_str(), i);
        }
        let service = service(s, &path, duplicate, &mut errs);
        if let Some(service) = service {
            services.push(service);
        }
    }

    // Routes (after listeners and services, which they name).
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut seen_routes: HashMap<(&str, String, String), usize> = HashMap::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let listener = listener_names.get(r.listener.as_str()).copied();
        if listener.is_none() {
            errs.push(
                format!("{path}.listener"),
                format!(
                    "listener {} is not defined (defined: {})",
                    Quoted(&r.listener),
                    list(raw.listeners.iter().map(|l| l.name.as_str()))
                ),
            );
        }
        let host = host_match(
            r.matcher.host.as_deref().unwrap_or("*"),
            &format!("{path}.match.host"),
            &mut errs,
        );
        let prefix = r.matcher.path_prefix.as_deref().unwrap_or("/");
        let prefix = path_prefix(prefix, &format!("{path}.match.path_prefix"), &mut errs);
        let service = service_names.get(r.service.as_str()).copied();
        if service.is_none() {
            errs.push(
                format!("{path}.service"),
                format!(
                    "service {} is not defined (defined: {})",
                    Quoted(&r.service),
                    list(raw.services.iter().map(|s| s.name.as_str()))
                ),
            );
        }
        let (Some(host), Some(prefix)) = (host, prefix) else {
            continue;
        };
        let key = (r.listener.as_str(), host_pattern(&host), prefix.clone());
        if let Some(first) = seen_routes.get(&key) {
            errs.push_at(
                format!("{path}.{AFTER}"),
                &path,
                format!(
                    "routes[{first}] already matches host {} and path_prefix {} on listener {}, \
                     so this route would never be used; remove one or make them differ",
                    Quoted(&host_pattern(&host)),
                    Quoted(&prefix),
                    Quoted(&r.listener)
                ),
            );
            continue;
        }
        seen_routes.insert(key, i);
        if let (Some(listener), Some(service)) = (listener, service) {
            routes.push(Route {
                listener,
                host,
                path_prefix: prefix,
                service,
            });
        }
    }

    let state_dir = match &raw.state_dir {
        None => PathBuf::from(DEFAULT_STATE_DIR),
        Some(Some(dir)) if !dir.trim().is_empty() => PathBuf::from(dir),
        Some(_) => {
            errs.push(
                "state_dir",
                format!(
                    "it is empty: give the directory for rollout state and timelines \
                     (e.g. {DEFAULT_STATE_DIR}), or leave out `state_dir` for that default"
                ),
            );
            PathBuf::from(DEFAULT_STATE_DIR)
        }
    };

    let telemetry = telemetry(raw.telemetry.as_ref(), &mut errs);
    let notify = raw
        .notify
        .iter()
        .enumerate()
        .filter_map(|(i, n)| notify_target(n, &format!("notify[{i}]"), &mut errs))
        .collect();
    let env = |name: &str| std::env::var(name).ok();
    let cluster = raw
        .cluster
        .as_ref()
        .and_then(|c| cluster(c, &env, &mut errs));

    if errs.len() > 0 {
        return Err(errs.0);
    }
    match admin_listen {
        Some(listen) => Ok(Snapshot {
            // The token is read from `token_file` by `crate::load`, which does the I/O.
            admin: Admin {
                listen,
                token_file,
                token: None,
                allowed_hosts,
                drills: raw.admin.as_ref().and_then(|a| a.drills).unwrap_or(false),
            },
            listeners,
            limits,
            routes,
            services,
            state_dir,
            telemetry,
            notify,
            cluster,
        }),
        // Unreachable in practice: a bad admin address pushed an error above.
        None => Err(vec![Anchored {
            anchor: "admin.listen".to_string(),
            error: ConfigError::new("admin.listen", "no admin address"),
        }]),
    }
}

/// `cluster`: fleet mode. `None` when absent, or with an error (each one pushed).
/// Every key is checked either way. `env` reads an environment variable (for `${VAR}`
/// in `instance` and in the endpoints).
fn cluster(
    raw: &RawCluster,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<Cluster> {
    let before = errs.len();
    let etcd = match &raw.etcd {
        Some(etcd) => etcd_settings(etcd, "cluster.etcd", env, errs),
        None => {
            errs.push_at(
                format!("cluster.{AFTER}"),
                "cluster",
                "`etcd` is missing: give etcd's client URLs and this fleet's key prefix, e.g. \
                 `etcd: { endpoints: [http://127.0.0.1:2379], prefix: /serin/prod/ }`",
            );
            None
        }
    };
    let instance = match &raw.instance {
        None => Some(default_instance()),
        Some(written) => instance_name(written.as_deref().unwrap_or(""), env, errs),
    };
    let lease_ttl = match &raw.lease_ttl {
        None => Some(DEFAULT_LEASE_TTL),
        Some(text) => lease_ttl(text, "cluster.lease_ttl", errs),
    };
    let on_etcd_loss = match raw.on_etcd_loss.as_deref().map(str::trim) {
        None | Some("hold") => OnEtcdLoss::Hold,
        Some("baseline") => OnEtcdLoss::Baseline,
        Some(other) => {
            errs.push(
                "cluster.on_etcd_loss",
                format!(
                    "{} is not a choice: write hold (keep the weights last applied while etcd \
                     is away) or baseline (send this instance's canary no traffic once etcd \
                     has been away for lease_ttl)",
                    Quoted(other)
                ),
            );
            OnEtcdLoss::Hold
        }
    };
    if errs.len() > before {
        return None;
    }
    Some(Cluster {
        etcd: etcd?,
        instance: instance?,
        lease_ttl: lease_ttl?,
        on_etcd_loss,
    })
}

/// `cluster.etcd`; the TLS and password files are read by [`crate::load`], which fills
/// in what they hold (here: empty). `${VAR}` in an endpoint is expanded with `env`, so a
/// deployment can take etcd's address from a secret through the environment.
fn etcd_settings(
    raw: &RawEtcd,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<Etcd> {
    let before = errs.len();
    let epath = format!("{path}.endpoints");
    if raw.endpoints.is_empty() {
        errs.push(
            &epath,
            "give at least one etcd client URL, e.g. `[http://127.0.0.1:2379]` (several: the \
             members of one etcd cluster)",
        );
    }
    let mut endpoints: Vec<String> = Vec::with_capacity(raw.endpoints.len());
    let mut first_scheme: Option<(bool, usize)> = None;
    for (i, written) in raw.endpoints.iter().enumerate() {
        let at = format!("{epath}[{i}]");
        let text = match expand_env(written.trim(), env) {
            Ok(text) => text,
            Err(why) => {
                errs.push(&at, why);
                continue;
            }
        };
        let text = &text;
        let Some((https, url)) = etcd_endpoint(text, &at, errs) else {
            continue;
        };
        match first_scheme {
            None => first_scheme = Some((https, i)),
            Some((first, j)) if first != https => {
                errs.push(
                    &at,
                    format!(
                        "{} is {} but {epath}[{j}] is {}; give every endpoint the same scheme",
                        Quoted(text),
                        if https { "https" } else { "http" },
                        if first { "https" } else { "http" },
                    ),
                );
                continue;
            }
            Some(_) => {}
        }
        if let Some(j) = endpoints.iter().position(|e| *e == url) {
            errs.push(
                &at,
                format!(
                    "{} is listed already as {epath}[{j}]; list each endpoint once",
                    Quoted(text)
                ),
            );
            continue;
        }
        endpoints.push(url);
    }
    let https = first_scheme.is_some_and(|(https, _)| https);

    let ppath = format!("{path}.prefix");
    let prefix = match &raw.prefix {
        None => {
            errs.push_at(
                format!("{path}.{AFTER}"),
                path,
                "the prefix is missing: give the key prefix of this fleet, e.g. `prefix: \
                 /serin/prod/` (every instance of one fleet gives the same one)",
            );
            None
        }
        Some(written) => etcd_prefix(written.as_deref().unwrap_or(""), &ppath, errs),
    };

    let tls = match &raw.tls {
        Some(_) if !https && first_scheme.is_some() => {
            errs.push(
                format!("{path}.tls"),
                "TLS settings are for https:// endpoints; write the endpoints as \
                 https://HOST:PORT, or leave out `tls`",
            );
            None
        }
        Some(tls) => {
            if tls.cert.is_some() != tls.key.is_some() {
                let (given, missing) = if tls.cert.is_some() {
                    ("cert", "key")
                } else {
                    ("key", "cert")
                };
                errs.push_at(
                    format!("{path}.tls.{AFTER}"),
                    format!("{path}.tls"),
                    format!(
                        "`{given}` is given without `{missing}`: a client certificate needs both \
                         (or neither)"
                    ),
                );
            }
            for (field, value) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    errs.push(
                        format!("{path}.tls.{field}"),
                        "it is empty: give the path of a PEM file, or leave the key out",
                    );
                }
            }
            Some(EtcdTls::default())
        }
        None if https => Some(EtcdTls::default()),
        None => None,
    };

    let username = match &raw.username {
        None => None,
        Some(name) => {
            let name = name.as_deref().unwrap_or("").trim();
            if name.is_empty() {
                errs.push(
                    format!("{path}.username"),
                    "it is empty: give etcd's user name, or leave out `username` and \
                     `password_file` when etcd has no authentication",
                );
            } else if !name.chars().all(|c| c.is_ascii_graphic()) {
                errs.push(
                    format!("{path}.username"),
                    format!(
                        "{} holds a space or a character other than printable ASCII; give \
                         etcd's user name",
                        Quoted(name)
                    ),
                );
            }
            Some(name.to_string())
        }
    };
    let password_file = match &raw.password_file {
        None => None,
        Some(Some(file)) if !file.trim().is_empty() => Some(file.clone()),
        Some(_) => {
            errs.push(
                format!("{path}.password_file"),
                "it is empty: give the path of a file holding etcd's password, or leave out \
                 `username` and `password_file` when etcd has no authentication",
            );
            None
        }
    };
    match (&username, &raw.password_file) {
        (Some(_), None) => errs.push_at(
            format!("{path}.{AFTER}"),
            path,
            "`username` is given without `password_file`: give the path of a file holding \
             etcd's password too",
        ),
        (None, Some(_)) => errs.push_at(
            format!("{path}.{AFTER}"),
            path,
            "`password_file` is given without `username`: give etcd's user name too",
        ),
        _ => {}
    }
    if errs.len() > before {
        return None;
    }
    let auth = match (username, password_file) {
        (Some(username), Some(file)) => Some(EtcdAuth {
            username,
            password_file: PathBuf::from(file),
            password: Secret::new(""),
        }),
        _ => None,
    };
    Some(Etcd {
        endpoints,
        prefix: prefix?,
        tls,
        auth,
    })
}

/// An etcd client URL, `http(s)://HOST:PORT` (a trailing `/` allowed): whether it is
/// https, and the URL normalised.
fn etcd_endpoint(text: &str, path: &str, errs: &mut Errors) -> Option<(bool, String)> {
    let t = text.trim();
    let t = t.strip_suffix('/').unwrap_or(t);
    let why = match t.split_once("://") {
        _ if t.is_empty() => "it is empty".to_string(),
        None => "the scheme is missing".to_string(),
        Some((scheme, rest)) => {
            let https = scheme.eq_ignore_ascii_case("https");
            if !https && !scheme.eq_ignore_ascii_case("http") {
                format!("the scheme {} is not http or https", Quoted(scheme))
            } else if rest.contains('@') {
                "it holds credentials (user:password@); give `username` and `password_file` \
                 instead"
                    .to_string()
            } else if rest.contains(['/', '?', '#']) {
                "an etcd endpoint has no path, query or fragment".to_string()
            } else {
                match endpoint_authority(rest) {
                    Ok(authority) => {
                        let scheme = if https { "https" } else { "http" };
                        return Some((https, format!("{scheme}://{authority}")));
                    }
                    Err(why) if why == "the port is missing" => {
                        "the port is missing (etcd's client port is usually 2379)".to_string()
                    }
                    Err(why) => why.replace("the upstream", "etcd"),
                }
            }
        }
    };
    errs.push(
        path,
        format!(
            "{} is not an etcd client URL: {why} (write http://HOST:PORT or https://HOST:PORT, \
             e.g. http://127.0.0.1:2379)",
            Quoted(text)
        ),
    );
    None
}

/// `cluster.etcd.prefix`: starts and ends with `/`, printable ASCII without spaces.
fn etcd_prefix(text: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let why = if text.is_empty() {
        "it is empty".to_string()
    } else if !text.starts_with('/') || !text.ends_with('/') {
        format!("{} must start and end with \"/\"", Quoted(text))
    } else if !text.chars().all(|c| c.is_ascii_graphic()) {
        format!(
            "{} holds a space or a character other than printable ASCII",
            Quoted(text)
        )
    } else if text.len() > MAX_ETCD_PREFIX {
        format!(
            "it is {} bytes long, more than {MAX_ETCD_PREFIX}",
            text.len()
        )
    } else {
        return Some(text.to_string());
    };
    errs.push(
        path,
        format!(
            "{why}: give the key prefix of this fleet, e.g. /serin/prod/ (every key of the \
             fleet is under it, so two fleets on one etcd need two prefixes)"
        ),
    );
    None
}

/// `cluster.lease_ttl`: a duration from [`MIN_LEASE_TTL`] to [`MAX_LEASE_TTL`].
fn lease_ttl(text: &str, path: &str, errs: &mut Errors) -> Option<Duration> {
    let ttl = duration(text, path, errs)?;
    let why = if ttl < MIN_LEASE_TTL {
        "is too short: an etcd leader election stops keep-alives for about a second and \
         etcd raises a TTL under 1.5 s to its own least"
    } else if ttl > MAX_LEASE_TTL {
        "is too long: a crashed instance, or a crashed leader, would be waited for that long"
    } else if ttl.subsec_nanos() != 0 {
        "is not a whole number of seconds, which etcd's leases count in"
    } else {
        return Some(ttl);
    };
    errs.push(
        path,
        format!("{} {why}; give 2s to 60s (default 5s)", Quoted(text.trim())),
    );
    None
}

/// `cluster.instance` with its `${VAR}`s expanded, checked as an instance name.
fn instance_name(
    written: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) -> Option<String> {
    const PATH: &str = "cluster.instance";
    let expanded = match expand_env(written.trim(), env) {
        Ok(expanded) => expanded,
        Err(why) => {
            errs.push(PATH, why);
            return None;
        }
    };
    let from = if expanded == written.trim() {
        String::new()
    } else {
        format!(" (from {})", Quoted(written.trim()))
    };
    let why = if expanded.is_empty() {
        if written.trim().is_empty() {
            "it is empty".to_string()
        } else {
            format!("it is empty{from}")
        }
    } else if let Some(why) = instance_name_problem(&expanded) {
        format!("{}{from} {why}", Quoted(&expanded))
    } else {
        return Some(expanded);
    };
    errs.push(
        PATH,
        format!(
            "{why}: give this instance a name unique in the fleet, of 1 to {MAX_INSTANCE_NAME} \
             ASCII letters, digits, '.', '_' or '-' (e.g. ${{HOSTNAME}} in a pod), or leave \
             out `instance` for hostname-pid"
        ),
    );
    None
}

/// Why `name` cannot name an instance (it is part of etcd keys), if it cannot.
fn instance_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > MAX_INSTANCE_NAME {
        Some("is too long")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("holds a character other than ASCII letters, digits, '.', '_' and '-'")
    } else if name == "." || name == ".." {
        Some("is not a name")
    } else {
        None
    }
}

/// `text` with each `${NAME}` replaced by the variable's value; a `$` not followed by
/// `{` stays as it is. An unset variable, an unclosed `${` or a bad name is an error
/// (its message).
pub(crate) fn expand_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!(
                "{} has a `${{` that is never closed: write ${{NAME}} for the value of the \
                 environment variable NAME",
                Quoted(text)
            ));
        };
        let name = &after[..end];
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "{} is not an environment variable's name (letters, digits and '_', not \
                 starting with a digit): write ${{NAME}}",
                Quoted(&format!("${{{name}}}"))
            ));
        }
        match env(name) {
            Some(value) => out.push_str(&value),
            None => {
                return Err(format!(
                    "${{{name}}} names an environment variable that is not set (or not \
                     UTF-8); set {name} for serin, or write the value itself"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The default instance name: `hostname-pid`, the host name reduced to the characters
/// an instance name may hold.
fn default_instance() -> String {
    let pid = std::process::id();
    let host: String = hostname()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let suffix = format!("-{pid}");
    let host = if host.is_empty() {
        "serin"
    } else {
        host.as_str()
    };
    let keep = host.len().min(MAX_INSTANCE_NAME - suffix.len());
    format!("{}{suffix}", &host[..keep])
}

#[cfg(unix)]
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cfg(not(unix))]
fn hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// `admin.allowed_hosts`: each a host name, lowercased and without a trailing dot.
/// IP addresses and `localhost` are always accepted as a `Host`, so an IP address here is
/// an error that says so, as are ports, schemes, wildcards and names listed twice.
fn admin_allowed_hosts(names: &[String], errs: &mut Errors) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::with_capacity(names.len());
    let mut first_at: HashMap<String, usize> = HashMap::new();
    for (i, written) in names.iter().enumerate() {
        let path = format!("admin.allowed_hosts[{i}]");
        let name = written.trim();
        let name = name.strip_suffix('.').unwrap_or(name);
        let bracketed_v6 = name
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .is_some_and(|(ip, _)| ip.parse::<Ipv6Addr>().is_ok());
        let ip =
            name.parse::<IpAddr>().is_ok() || name.parse::<SocketAddr>().is_ok() || bracketed_v6;
        let port = name.rsplit_once(':').filter(|(host, port)| {
            !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
        });
        let why = if name.is_empty() {
            "it is empty; give a host name the admin API is reached by, such as serin.example.com"
                .to_string()
        } else if name.contains("://") {
            format!(
                "\"{written}\" is a URL; give the host name alone, without scheme, port or path \
                 (e.g. \"serin.example.com\")"
            )
        } else if name.contains('*') {
            format!(
                "\"{written}\" is a wildcard; list each name the admin API is reached by \
                 (e.g. \"serin.example.com\")"
            )
        } else if ip {
            format!(
                "\"{written}\" is an IP address, and a Host that is an IP address is always \
                 accepted; list only host names here"
            )
        } else if let Some((host, _)) = port {
            format!(
                "\"{written}\" has a port; write the name alone (\"{host}\"): a listed name is \
                 accepted with any port"
            )
        } else if let Some(why) = dns_name_problem(name) {
            format!("\"{written}\" is not a host name: {why}")
        } else {
            let name = name.to_ascii_lowercase();
            if let Some(first) = first_at.get(&name) {
                errs.push(
                    &path,
                    format!(
                        "\"{written}\" is listed already as admin.allowed_hosts[{first}] \
                         (names are compared without regard to case); list each name once"
                    ),
                );
            } else {
                first_at.insert(name.clone(), i);
                hosts.push(name);
            }
            continue;
        };
        errs.push(path, why);
    }
    hosts
}

fn telemetry(raw: Option<&RawTelemetry>, errs: &mut Errors) -> Telemetry {
    let Some(raw) = raw else {
        return Telemetry::default();
    };
    Telemetry {
        tracing: raw
            .tracing
            .as_ref()
            .and_then(|t| tracing(t, "telemetry.tracing", errs)),
        access_log: raw
            .access_log
            .as_ref()
            .map(|a| access_log(a, "telemetry.access_log", errs))
            .unwrap_or_default(),
    }
}

/// Tracing settings; `None` without an `otlp_endpoint` (tracing off) or with an error.
/// Every key is checked either way.
fn tracing(raw: &RawTracing, path: &str, errs: &mut Errors) -> Option<Tracing> {
    let sample_ratio = match &raw.sample_ratio {
        None => Some(DEFAULT_TRACE_SAMPLE_RATIO),
        Some(value) => ratio(value, &format!("{path}.sample_ratio"), errs),
    };
    let npath = format!("{path}.service_name");
    let service_name = match &raw.service_name {
        None => Some(DEFAULT_TRACE_SERVICE_NAME.to_string()),
        Some(given) => {
            let name = given.as_deref().unwrap_or("").trim();
            let why = if name.is_empty() {
                Some("it is empty".to_string())
            } else if name.chars().any(char::is_control) {
                Some(format!("{} contains a control character", Quoted(name)))
            } else if name.len() > 255 {
                Some(format!("it is {} bytes long, more than 255", name.len()))
            } else {
                None
            };
            match why {
                None => Some(name.to_string()),
                Some(why) => {
                    errs.push(
                        &npath,
                        format!(
                            "{why}: give the name serin's spans are reported under (e.g. \
                             serin-edge), or leave out `service_name` for \
                             \"{DEFAULT_TRACE_SERVICE_NAME}\""
                        ),
                    );
                    None
                }
            }
        }
    };
    let epath = format!("{path}.otlp_endpoint");
    let endpoint = match &raw.otlp_endpoint {
        None => return None,
        Some(Some(text)) if !text.trim().is_empty() => {
            otlp_endpoint(text, &epath, errs).map(|url| (text.trim().to_string(), url))
        }
        Some(_) => {
            errs.push(
                &epath,
                "it is empty: give the OTLP/HTTP URL of a collector (e.g. \
                 http://127.0.0.1:4318), or leave out `otlp_endpoint` to turn tracing off",
            );
            None
        }
    };
    let (otlp_endpoint, traces_url) = endpoint?;
    Some(Tracing {
        otlp_endpoint,
        traces_url,
        sample_ratio: sample_ratio?,
        service_name: service_name?,
    })
}

/// The URL spans are sent to, for an `otlp_endpoint` written as `http://HOST[:PORT][/PATH]`.
fn otlp_endpoint(text: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let why = match traces_url(text.trim()) {
        Ok(url) => return Some(url),
        Err(why) => why,
    };
    errs.push(
        path,
        format!(
            "{text_q} is not an OTLP/HTTP endpoint: {why} (write the collector's URL, e.g. \
             http://127.0.0.1:4318; spans are sent to its /v1/traces)",
            text_q = Quoted(text)
        ),
    );
    None
}

fn traces_url(t: &str) -> Result<String, String> {
    let rest = match t.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(
                "serin exports spans over plain HTTP only: use http:// to a collector \
                        or agent on a trusted network"
                    .to_string(),
            )
        }
        Some((scheme, _)) => {
            return Err(format!(
                "the scheme {scheme_q} is not supported",
                scheme_q = Quoted(scheme)
            ))
        }
        None => return Err("the scheme is missing".to_string()),
    };
    let (authority, url_path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if url_path.contains(['?', '#']) {
        return Err("remove the query or fragment (from '?' or '#' on)".to_string());
    }
    if url_path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("the path contains a space or a control character".to_string());
    }
    if authority.contains('@') {
        return Err(
            "remove the user name and password; send credentials as headers with \
                    OTEL_EXPORTER_OTLP_TRACES_HEADERS"
                .to_string(),
        );
    }
    if authority.is_empty() {
        return Err("the host is missing".to_string());
    }
    let has_port = match authority.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, after)| !after.is_empty()),
        None => authority.contains(':'),
    };
    let with_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    if with_port.ends_with(":0") {
        return Err(
            "port 0 cannot be connected to; give the port the collector listens on \
                    (OTLP/HTTP's is 4318)"
                .to_string(),
        );
    }
    endpoint_authority(&with_port)?;
    let url_path = url_path.trim_end_matches('/');
    Ok(if url_path.ends_with("/v1/traces") {
        format!("http://{authority}{url_path}")
    } else {
        format!("http://{authority}{url_path}/v1/traces")
    })
}

fn access_log(raw: &RawAccessLog, path: &str, errs: &mut Errors) -> AccessLog {
    let fpath = format!("{path}.format");
    let format = match &raw.format {
        None => {
            errs.push_at(
                format!("{path}.{AFTER}"),
                path,
                "the format is missing: give `format: json` or `format: text` (or `format: off` \
                 to log nothing)",
            );
            AccessLogFormat::Off
        }
        Some(serde_yaml_ng::Value::String(s)) if s == "off" => AccessLogFormat::Off,
        Some(serde_yaml_ng::Value::String(s)) if s == "json" => AccessLogFormat::Json,
        Some(serde_yaml_ng::Value::String(s)) if s == "text" => AccessLogFormat::Text,
        Some(other) => {
            errs.push(
                &fpath,
                format!(
                    "{} is not an access log format: write json (one JSON object a line), text \
                     (key=value pairs) or off",
                    describe(other)
                ),
            );
            AccessLogFormat::Off
        }
    };
    let sample_ratio = raw
        .sample_ratio
        .as_ref()
        .and_then(|v| ratio(v, &format!("{path}.sample_ratio"), errs))
        .unwrap_or(1.0);
    AccessLog {
        format,
        sample_ratio,
    }
}

/// A sampling ratio: a plain number from 0 to 1, both included.
fn ratio(value: &serde_yaml_ng::Value, path: &str, errs: &mut Errors) -> Option<f64> {
    if let Some(r) = value.as_f64().filter(|r| (0.0..=1.0).contains(r)) {
        return Some(r);
    }
    let message = match value {
        serde_yaml_ng::Value::Number(n) => format!(
            "{n} is out of range: a sample ratio is a number from 0 to 1 (e.g. 0.05 for 5%)"
        ),
        serde_yaml_ng::Value::String(s) if s.trim().ends_with('%') => format!(
            "{s_q} is a percentage; write the sample ratio as a number from 0 to 1, \
             without %, e.g. 0.05 for 5%",
            s_q = Quoted(s)
        ),
        other => format!(
            "a sample ratio is a number from 0 to 1 (e.g. 0.05 for 5%), got {}",
            describe(other)
        ),
    };
    errs.push(path, message);
    None
}

/// One webhook of `notify`; `None` if it has an error (each one pushed).
fn notify_target(raw: &RawNotify, path: &str, errs: &mut Errors) -> Option<NotifyTarget> {
    let before = errs.len();
    let url = webhook_url(&raw.url, &format!("{path}.url"), errs);

    let names = || {
        DecisionKind::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let epath = format!("{path}.events");
    if raw.events.is_empty() {
        errs.push(
            &epath,
            format!(
                "give at least one event to send: any of {} (e.g. `[rolled_back, paused, promoted]`)",
                names()
            ),
        );
    }
    let mut events: Vec<DecisionKind> = Vec::with_capacity(raw.events.len());
    for (j, name) in raw.events.iter().enumerate() {
        let jpath = format!("{epath}[{j}]");
        match DecisionKind::parse(name.trim()) {
            Some(event) => match events.iter().position(|e| *e == event) {
                Some(_) => {
                    let first = raw
                        .events
                        .iter()
                        .position(|n| n.trim() == name.trim())
                        .unwrap_or(0);
                    errs.push(
                        &jpath,
                        format!(
                            "{name_q} is already listed at events[{first}]; list each event once",
                            name_q = Quoted(name)
                        ),
                    );
                }
                None => events.push(event),
            },
            None => errs.push(
                &jpath,
                format!(
                    "{name_q} is not a rollout event: write any of {}",
                    names(),
                    name_q = Quoted(name)
                ),
            ),
        }
    }

    let format = match raw.format.as_deref().map(str::trim) {
        None | Some("json") => NotifyFormat::Json,
        Some("slack") => NotifyFormat::Slack,
        Some(other) => {
            errs.push(
                format!("{path}.format"),
                format!(
                    "{other_q} is not a format: write json (the notification as a JSON object) \
                     or slack (a `{{\"text\": …}}` body for a Slack incoming webhook)",
                    other_q = Quoted(other)
                ),
            );
            NotifyFormat::Json
        }
    };

    let tpath = format!("{path}.timeout");
    let timeout = match raw.timeout.as_deref() {
        None => Some(DEFAULT_NOTIFY_TIMEOUT),
        Some(text) => duration(text, &tpath, errs).filter(|d| {
            let ok = (MIN_NOTIFY_TIMEOUT..=MAX_NOTIFY_TIMEOUT).contains(d);
            if !ok {
                errs.push(
                    &tpath,
                    format!(
                        "{text_q} is out of range: one attempt to deliver a webhook may take \
                         from 10ms to 60s (serin retries a failed attempt); write e.g. 2s",
                        text_q = Quoted(text)
                    ),
                );
            }
            ok
        }),
    };

    let retries = match &raw.retries {
        None => Some(DEFAULT_NOTIFY_RETRIES),
        Some(value) => match value.as_u64() {
            Some(n) if n <= u64::from(MAX_NOTIFY_RETRIES) => Some(n as u32),
            _ => {
                errs.push(
                    format!("{path}.retries"),
                    format!(
                        "retries must be a whole number from 0 to {MAX_NOTIFY_RETRIES}, the attempts \
                         after a first one that fails (e.g. 4), got {}",
                        describe(value)
                    ),
                );
                None
            }
        },
    };

    let hpath = format!("{path}.headers");
    let mut headers: Vec<(String, Secret)> = Vec::with_capacity(raw.headers.len());
    let mut seen_headers: HashSet<String> = HashSet::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let Some(lower) = header_name(name, &hpath, errs) else {
            continue;
        };
        let vpath = format!("{hpath}.{name}");
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            errs.push(
                &vpath,
                format!(
                    "serin sets {name_q} itself; remove it from the headers",
                    name_q = Quoted(name)
                ),
            );
            continue;
        }
        if !seen_headers.insert(lower.clone()) {
            errs.push(
                &vpath,
                format!(
                    "{name_q} is given twice (header names ignore case); give each header once",
                    name_q = Quoted(name)
                ),
            );
            continue;
        }
        // The value is never shown: it may be a secret.
        let why = match value {
            serde_yaml_ng::Value::String(v) if v.trim().is_empty() => "it is empty",
            serde_yaml_ng::Value::String(v)
                if v.chars()
                    .all(|c| c == ' ' || c == '\t' || c.is_ascii_graphic()) =>
            {
                headers.push((lower, Secret::new(v.trim())));
                continue;
            }
            serde_yaml_ng::Value::String(_) => {
                "it holds a character that cannot be sent in a header (a line break, a control \
                 character or a non-ASCII one)"
            }
            _ => "it is not a string; quote it",
        };
        errs.push(&vpath, format!("the value is not valid: {why}"));
    }

    if errs.len() != before {
        return None;
    }
    Some(NotifyTarget {
        url: url?,
        events,
        format,
        timeout: timeout?,
        retries: retries?,
        headers,
    })
}

/// Headers serin writes on a webhook request itself.
const RESERVED_HEADERS: [&str; 7] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
];

/// An `http://` URL for a webhook. Messages show the URL without its path and query,
/// which may hold a secret (a Slack webhook's path is its token), nor credentials.
fn webhook_url(text: &str, path: &str, errs: &mut Errors) -> Option<WebhookUrl> {
    let t = text.trim();
    let (scheme, rest) = match t.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, t),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let shown = format!(
        "{}{host_port}{}",
        scheme.map(|s| format!("{s}://")).unwrap_or_default(),
        if tail.is_empty() || tail == "/" {
            ""
        } else {
            "/…"
        }
    );
    let why = match scheme {
        _ if t.is_empty() => "it is empty".to_string(),
        None => "the scheme is missing".to_string(),
        Some(s) if s.eq_ignore_ascii_case("https") => {
            errs.push(
                path,
                format!(
                    "{shown_q} uses https, which serin cannot send webhooks over yet (plain \
                     http only); give an http:// URL (e.g. a relay on this host that forwards \
                     over TLS)",
                    shown_q = Quoted(&shown)
                ),
            );
            return None;
        }
        Some(s) if !s.eq_ignore_ascii_case("http") => {
            format!("the scheme {s_q} is not http", s_q = Quoted(s))
        }
        Some(_) if authority.contains('@') => {
            "it holds credentials (user:password@), which would be shown wherever the URL is; \
             send them in a header instead (`headers: { Authorization: … }`)"
                .to_string()
        }
        Some(_) if authority.is_empty() => "the host is missing".to_string(),
        Some(_) => {
            let has_port = match authority.strip_prefix('[') {
                Some(inside) => inside
                    .split_once(']')
                    .is_some_and(|(_, a)| a.starts_with(':')),
                None => authority.contains(':'),
            };
            let with_port = if has_port {
                authority.to_string()
            } else {
                format!("{authority}:80")
            };
            match endpoint_authority(&with_port) {
                Err(why) => why.replace("the upstream", "the receiver"),
                Ok(normalised) => match url_tail_problem(tail) {
                    Some(why) => why,
                    None => {
                        let tail = if tail.is_empty() { "/" } else { tail };
                        let url = format!("http://{normalised}{tail}");
                        match url.parse::<http::Uri>() {
                            Ok(_) => return Some(WebhookUrl::new(url, normalised)),
                            Err(err) => format!("its path or query is not valid ({err})"),
                        }
                    }
                },
            }
        }
    };
    errs.push(
        path,
        format!(
            "{shown_q} is not a webhook URL: {why} (write http://HOST:PORT/PATH, e.g. \
             http://127.0.0.1:7000/hooks/serin)",
            shown_q = Quoted(&shown)
        ),
    );
    None
}

/// What is wrong with the path and query of a webhook URL, if anything.
fn url_tail_problem(tail: &str) -> Option<String> {
    if tail.contains('#') {
        return Some("remove the fragment (#…): it is never sent to a server".to_string());
    }
    let c = tail.chars().find(|c| !c.is_ascii_graphic())?;
    Some(if c == ' ' {
        "its path contains a space; write a space as %20".to_string()
    } else if c.is_ascii() {
        "its path contains a control character".to_string()
    } else {
        "its path contains a non-ASCII character; percent-encode it".to_string()
    })
}

/// An address already taken that another one cannot be bound next to.
struct Clash<'a> {
    path: &'a str,
    addr: SocketAddr,
}

impl Clash<'_> {
    fn message(&self, addr: SocketAddr, what_to_do: &str) -> String {
        if self.addr == addr {
            format!("{addr} is already used by {}; {what_to_do}", self.path)
        } else {
            format!(
                "{addr} overlaps {} ({}): a wildcard address (0.0.0.0 or [::]) takes port {} on \
                 every address; {what_to_do}",
                self.path,
                self.addr,
                addr.port()
            )
        }
    }
}

/// The listeners' addresses so far, indexed by port, so that finding a clash costs the
/// same however many listeners there are.
#[derive(Default)]
struct Bound {
    taken: Vec<(SocketAddr, String)>,
    ports: HashMap<u16, PortUse>,
}

/// Who took a port first: at each address, at any IPv4 address, at any address, at the
/// IPv4 wildcard, at the IPv6 wildcard (indices into [`Bound::taken`]).
#[derive(Default)]
struct PortUse {
    at: HashMap<IpAddr, usize>,
    first_v4: Option<usize>,
    first: Option<usize>,
    wildcard_v4: Option<usize>,
    wildcard_v6: Option<usize>,
}

impl Bound {
    /// `addr` is taken, by the key at `path`.
    fn push(&mut self, addr: SocketAddr, path: String) {
        let i = self.taken.len();
        self.taken.push((addr, path));
        if addr.port() == 0 {
            return;
        }
        let port = self.ports.entry(addr.port()).or_default();
        port.at.entry(addr.ip()).or_insert(i);
        port.first.get_or_insert(i);
        match addr.ip() {
            IpAddr::V4(v4) => {
                port.first_v4.get_or_insert(i);
                if v4.is_unspecified() {
                    port.wildcard_v4.get_or_insert(i);
                }
            }
            IpAddr::V6(v6) if v6.is_unspecified() => {
                port.wildcard_v6.get_or_insert(i);
            }
            IpAddr::V6(_) => {}
        }
    }

    /// The first address taken that `addr` cannot be bound next to: the same address, or
    /// the same port where one of the two is a wildcard (`0.0.0.0` takes the port on
    /// every IPv4 address, `[::]` on every address). Port 0 (any free port) never
    /// clashes.
    fn clash(&self, addr: SocketAddr) -> Option<Clash<'_>> {
        if addr.port() == 0 {
            return None;
        }
        let port = self.ports.get(&addr.port())?;
        let ip = addr.ip();
        let covered_by = [
            port.at.get(&ip).copied(),
            if ip.is_ipv4() { port.wildcard_v4 } else { None },
            port.wildcard_v6,
        ];
        let covers = match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => port.first_v4,
            IpAddr::V6(v6) if v6.is_unspecified() => port.first,
            _ => None,
        };
        let first = covered_by.into_iter().chain([covers]).flatten().min()?;
        let (other, path) = &self.taken[first];
        Some(Clash { path, addr: *other })
    }
}

/// The pattern a [`HostMatch`] was written as, for messages.
fn host_pattern(host: &HostMatch) -> String {
    match host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Suffix(suffix) => format!("*{suffix}"),
        HostMatch::Exact(exact) => exact.clone(),
    }
}

fn service(
    s: &RawService,
    path: &str,
    duplicate_of: Option<usize>,
    errs: &mut Errors,
) -> Option<Service> {
    let before = errs.len();
    name(&s.name, &format!("{path}.name"), errs);
    if let Some(first) = duplicate_of {
        errs.push(
            format!("{path}.name"),
            format!(
                "service name {} is already used by services[{first}]; names must be unique",
                Quoted(&s.name)
            ),
        );
    }
    if s.versions.is_empty() {
        errs.push(
            format!("{path}.versions"),
            "a service needs at least one version (e.g. `- { name: stable, endpoints: [127.0.0.1:9001] }`)",
        );
    }
    let service_grpc_codes = match &s.grpc {
        Some(g) => grpc_codes(g, &format!("{path}.grpc"), errs),
        None => DEFAULT_GRPC_ERROR_CODES,
    };
    let mut versions = Vec::with_capacity(s.versions.len());
    let mut version_names: HashMap<&str, usize> = HashMap::new();
    for (j, v) in s.versions.iter().enumerate() {
        let vpath = format!("{path}.versions[{j}]");
        name(&v.name, &format!("{vpath}.name"), errs);
        if let Some(first) = version_names.get(v.name.as_str()) {
            errs.push(
                format!("{vpath}.name"),
                format!(
                    "version name {} is already used by {path}.versions[{first}]; \
                     the versions of a service need different names",
                    Quoted(&v.name)
                ),
            );
        } else {
            version_names.insert(v.name.as_str(), j);
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
        let health = v
            .health
            .as_ref()
            .and_then(|h| health(h, &format!("{vpath}.health"), errs));
        let eject = v
            .eject
            .as_ref()
            .and_then(|e| eject(e, &format!("{vpath}.eject"), errs));
        let protocol = upstream_protocol(v.protocol.as_deref(), &format!("{vpath}.protocol"), errs);
        let grpc_error_codes = match &v.grpc {
            Some(g) => grpc_codes(g, &format!("{vpath}.grpc"), errs),
            None => service_grpc_codes,
        };
        let tls = v
            .tls
            .as_ref()
            .and_then(|t| upstream_tls(t, &endpoints, &vpath, errs));
        let lb = load_balancing(v.lb.as_deref(), &format!("{vpath}.lb"), errs);
        let idle_timeout = v
            .idle_timeout
            .as_deref()
            .map_or(Some(DEFAULT_UPSTREAM_IDLE_TIMEOUT), |d| {
                duration(d, &format!("{vpath}.idle_timeout"), errs)
            })
            .unwrap_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT);
        versions.push(Version {
            name: v.name.clone(),
            endpoints,
            weight: 0,
            health,
            eject,
            protocol,
            grpc_error_codes,
            tls,
            lb,
            idle_timeout,
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
                        .map(|(i, v)| {
                            format!("{}: {}", Shown(&v.name), if i == 0 { 100 } else { 0 })
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            Split::default()
        }
    };
    let timeouts = timeouts(s.timeouts.as_ref(), &format!("{path}.timeouts"), errs);
    let rollout = s
        .rollout
        .as_ref()
        .and_then(|r| rollout(r, &versions, &format!("{path}.rollout"), errs));

    (errs.len() == before).then(|| Service {
        name: s.name.clone(),
        versions,
        split,
        timeouts,
        rollout,
    })
}

/// A service's rollout; `None` if it has an error (each one pushed).
fn rollout(
    raw: &RawRollout,
    versions: &[Version],
    path: &str,
    errs: &mut Errors,
) -> Option<Rollout> {
    let before = errs.len();
    let defined = list(versions.iter().map(|v| v.name.as_str()));
    let mut version = |name: &str, key: &str| {
        let index = versions.iter().position(|v| v.name == name);
        if index.is_none() {
            errs.push(
                format!("{path}.{key}"),
                format!(
                    "version {name_q} is not defined (defined: {defined})",
                    name_q = Quoted(name)
                ),
            );
        }
        index
    };
    let baseline = version(&raw.baseline, "baseline");
    let canary = version(&raw.canary, "canary");
    if baseline.is_some() && baseline == canary {
        errs.push(
            format!("{path}.canary"),
            format!(
                "{} is also the baseline; the canary must be another version of the service \
                 (defined: {defined})",
                Quoted(&raw.canary)
            ),
        );
    }

    let steps = steps(raw, path, errs);
    let analysis = analysis(raw.analysis.as_ref(), &format!("{path}.analysis"), errs);
    let shadow = shadow::settings(raw, path, errs);

    let on_failure = match raw.on_failure.as_deref() {
        None | Some("rollback") => OnFailure::Rollback,
        Some("pause") => OnFailure::Pause,
        Some(other) => {
            errs.push(
                format!("{path}.on_failure"),
                format!(
                    "{other_q} is not an action: write rollback (the canary's weight goes to 0) \
                     or pause (the weights stay for a person to decide)",
                    other_q = Quoted(other)
                ),
            );
            OnFailure::Rollback
        }
    };
    let progress_deadline = match raw.progress_deadline.as_deref() {
        None => Some(DEFAULT_PROGRESS_DEADLINE),
        Some(text) => duration(text, &format!("{path}.progress_deadline"), errs),
    };

    if errs.len() != before {
        return None;
    }
    Some(Rollout {
        baseline: baseline?,
        canary: canary?,
        steps,
        analysis: analysis?,
        retry_on_baseline: raw.retry_on_baseline.unwrap_or(false),
        on_failure,
        progress_deadline: progress_deadline?,
        shadow,
    })
}

/// The steps of a rollout: at least one; shadow steps first, then weights 0–100,
/// strictly increasing.
fn steps(raw: &RawRollout, path: &str, errs: &mut Errors) -> Vec<Step> {
    if raw.steps.is_empty() {
        errs.push(
            format!("{path}.steps"),
            "a rollout needs at least one step, each the canary's share of traffic in percent \
             (e.g. `- { weight: 10, hold: 1m }` then `- { weight: 100 }`)",
        );
    }
    let mut steps = Vec::with_capacity(raw.steps.len());
    let mut previous: Option<(usize, u32)> = None;
    // The first weight step, which every shadow step must come before.
    let mut first_weight_step: Option<usize> = None;
    for (i, step) in raw.steps.iter().enumerate() {
        let spath = format!("{path}.steps[{i}]");
        let hold = step
            .hold
            .as_deref()
            .and_then(|h| duration(h, &format!("{spath}.hold"), errs));
        let weight_value = match (&step.weight, &step.shadow) {
            (Some(weight), None) => weight,
            (None, Some(share)) => {
                let share = shadow::step(share, &spath, first_weight_step, errs);
                if let Some(share) = share {
                    steps.push(Step {
                        weight: 0,
                        hold,
                        shadow: Some(share),
                    });
                }
                continue;
            }
            (Some(_), Some(_)) => {
                errs.push(
                    &spath,
                    "a step is a weight step (`weight`: the canary serves that share of users) \
                     or a shadow step (`shadow`: copies of that share of requests go to the \
                     canary, which serves no user), not both; write two steps",
                );
                continue;
            }
            (None, None) => {
                errs.push(
                    &spath,
                    "a step needs `weight` (e.g. `- { weight: 10, hold: 1m }`) or `shadow` \
                     (e.g. `- { shadow: 100%, hold: 5m }`)",
                );
                continue;
            }
        };
        first_weight_step.get_or_insert(i);
        let wpath = format!("{spath}.weight");
        let weight = match weight_value.as_u64() {
            Some(w) if w <= 100 => Some(w as u32),
            Some(w) => {
                errs.push(
                    &wpath,
                    format!(
                        "weight {w} is above 100: a step's weight is the canary's share of \
                         traffic in percent, 0 to 100"
                    ),
                );
                None
            }
            None => {
                errs.push(
                    &wpath,
                    format!(
                        "weight must be a whole number from 0 to 100, the canary's share of \
                         traffic in percent, without % (e.g. 5 or 50), got {}",
                        describe(weight_value)
                    ),
                );
                None
            }
        };
        if let Some(w) = weight {
            if let Some((j, prev)) = previous.filter(|&(_, prev)| w <= prev) {
                errs.push(
                    &wpath,
                    format!(
                        "weight {w} is not above the previous step's weight ({prev} at \
                         steps[{j}]); the canary's share must increase at every step"
                    ),
                );
            }
        }
        // The step before the next one, even if its weight is bad (then not compared).
        previous = weight.map(|w| (i, w));
        if let Some(weight) = weight {
            steps.push(Step {
                weight,
                hold,
                shadow: None,
            });
        }
    }
    shadow::weight_step_follows(raw, path, errs);
    steps
}

fn analysis(raw: Option<&RawAnalysis>, path: &str, errs: &mut Errors) -> Option<Analysis> {
    let before = errs.len();
    let default = RawAnalysis::default();
    let raw = raw.unwrap_or(&default);

    let interval = match raw.interval.as_deref() {
        None => Some(DEFAULT_ANALYSIS_INTERVAL),
        Some(text) => {
            let ipath = format!("{path}.interval");
            duration(text, &ipath, errs).filter(|d| {
                let ok = *d >= MIN_ANALYSIS_INTERVAL;
                if !ok {
                    errs.push(
                        &ipath,
                        format!(
                            "{text_q} is too short: the analysis interval must be at least 100ms",
                            text_q = Quoted(text)
                        ),
                    );
                }
                ok
            })
        }
    };
    let wpath = format!("{path}.window");
    let window = match raw.window.as_deref() {
        None => Some(DEFAULT_ANALYSIS_WINDOW),
        Some(text) => duration(text, &wpath, errs),
    };
    if let (Some(interval), Some(window)) = (interval, window) {
        if window < interval {
            let shown = |given: Option<&str>, value: Duration| match given {
                Some(text) => Quoted(text).to_string(),
                None => format!("{} (the default)", humantime::format_duration(value)),
            };
            errs.push(
                &wpath,
                format!(
                    "the window {} is shorter than the interval {}; the window judged at each \
                     tick must be at least one interval long",
                    shown(raw.window.as_deref(), window),
                    shown(raw.interval.as_deref(), interval)
                ),
            );
        }
    }

    let min_requests = match &raw.min_requests {
        None => Some(DEFAULT_MIN_REQUESTS),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                errs.push(
                    format!("{path}.min_requests"),
                    format!(
                        "min_requests must be a whole number of 1 or more (e.g. 50), got {}",
                        describe(value)
                    ),
                );
                None
            }
        },
    };
    let confidence = match &raw.confidence {
        None => Some(DEFAULT_CONFIDENCE),
        Some(value) => percent(value, &format!("{path}.confidence"), CONFIDENCE, errs),
    };

    let rpath = format!("{path}.rules");
    if raw.rules.is_empty() {
        errs.push(
            &rpath,
            "at least one rule is required: a rollout with no rule could never fail, so any \
             canary would be promoted (e.g. `- error_rate: { max: 1% }`)",
        );
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut success_rules = 0;
    let total_success = raw
        .rules
        .iter()
        .flat_map(|r| &r.0)
        .filter(|(_, kind)| matches!(kind, RawRuleKind::Success(_)))
        .count();
    for (i, r) in raw.rules.iter().enumerate() {
        let ipath = format!("{rpath}[{i}]");
        if r.0.len() != 1 {
            let message = if r.0.is_empty() {
                format!(
                    "a rule needs its kind as its one key: one of {} (e.g. `- error_rate: {{ max: 1% }}`)",
                    RULE_KINDS.join(", ")
                )
            } else {
                format!(
                    "a rule has one kind, but this one has {}: {}; start each rule with its own `- `",
                    r.0.len(),
                    r.0.iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            errs.push_at(format!("{ipath}.{AFTER}"), &ipath, message);
        }
        for (key, kind) in &r.0 {
            let kpath = format!("{ipath}.{key}");
            let rule = match kind {
                RawRuleKind::ErrorRate(raw) => error_rate(raw, &kpath, errs),
                RawRuleKind::Latency(raw) => latency(raw, &kpath, errs),
                RawRuleKind::BurnRate(raw) => burn_rate(raw, &kpath, errs),
                RawRuleKind::Mismatch(raw) => shadow::mismatch(raw, &kpath, errs),
                RawRuleKind::Success(raw) => {
                    let slot = success_rules;
                    success_rules += 1;
                    if success_rules == MAX_SUCCESS_RULES + 1 {
                        errs.push_at(
                            &kpath,
                            &ipath,
                            format!(
                                "too many `success` rules: {total_success} given, at most \
                                 {MAX_SUCCESS_RULES} per service (serin keeps counters for that \
                                 many); remove {} of them",
                                total_success - MAX_SUCCESS_RULES
                            ),
                        );
                    }
                    success(raw, slot, &kpath, errs)
                }
                RawRuleKind::Unknown => {
                    errs.push_at(
                        &kpath,
                        &ipath,
                        format!(
                            "{key_q} is not a kind of rule: write one of {} \
                             (e.g. `- error_rate: {{ max: 1% }}`)",
                            RULE_KINDS.join(", "),
                            key_q = Quoted(key)
                        ),
                    );
                    None
                }
            };
            rules.extend(rule);
        }
    }

    if errs.len() != before {
        return None;
    }
    Some(Analysis {
        interval: interval?,
        window: window?,
        min_requests: min_requests?,
        confidence: confidence?,
        rules,
    })
}

/// Exactly one of `max` and `max_increase`, for `error_rate` and `latency`.
fn max_or_increase<'a, A, B>(
    max: Option<&'a A>,
    max_increase: Option<&'a B>,
    path: &str,
    example: &str,
    errs: &mut Errors,
) -> Option<Result<&'a A, &'a B>> {
    match (max, max_increase) {
        (Some(max), None) => Some(Ok(max)),
        (None, Some(increase)) => Some(Err(increase)),
        (Some(_), Some(_)) => {
            errs.push_at(
                format!("{path}.{AFTER}"),
                path,
                "give either `max` (a limit for the canary) or `max_increase` (a limit on how \
                 much worse than the baseline the canary may be), not both; write two rules to \
                 check both",
            );
            None
        }
        (None, None) => {
            errs.push(
                path,
                format!(
                    "give `max` (a limit for the canary) or `max_increase` (a limit on how much \
                     worse than the baseline the canary may be), e.g. {example}"
                ),
            );
            None
        }
    }
}

fn error_rate(raw: &RawErrorRate, path: &str, errs: &mut Errors) -> Option<Rule> {
    // Values are checked even if both are given, so that every error shows at once.
    let max = raw
        .max
        .as_ref()
        .map(|v| percent(v, &format!("{path}.max"), ERROR_RATE_MAX, errs));
    let increase = raw.max_increase.as_ref().map(|v| {
        percent(
            v,
            &format!("{path}.max_increase"),
            ERROR_RATE_INCREASE,
            errs,
        )
    });
    match max_or_increase(
        max.as_ref(),
        increase.as_ref(),
        path,
        "`{ max: 1% }` or `{ max_increase: 0.5% }`",
        errs,
    )? {
        Ok(max) => max.map(|max| Rule::ErrorRate { max }),
        Err(increase) => increase.map(|max_increase| Rule::ErrorRateIncrease { max_increase }),
    }
}

fn latency(raw: &RawLatency, path: &str, errs: &mut Errors) -> Option<Rule> {
    let percentile = percentile(&raw.percentile, &format!("{path}.percentile"), errs);
    let max = raw
        .max
        .as_deref()
        .map(|d| duration(d, &format!("{path}.max"), errs));
    let increase = raw
        .max_increase
        .as_ref()
        .map(|v| percent(v, &format!("{path}.max_increase"), LATENCY_INCREASE, errs));
    let rule = match max_or_increase(
        max.as_ref(),
        increase.as_ref(),
        path,
        "`{ percentile: 95, max: 800ms }` or `{ percentile: 95, max_increase: 20% }`",
        errs,
    )? {
        Ok(max) => Rule::Latency {
            percentile: percentile?,
            max: (*max)?,
        },
        Err(increase) => Rule::LatencyIncrease {
            percentile: percentile?,
            max_increase: (*increase)?,
        },
    };
    Some(rule)
}

fn burn_rate(raw: &RawBurnRate, path: &str, errs: &mut Errors) -> Option<Rule> {
    let slo = percent(&raw.slo, &format!("{path}.slo"), SLO, errs);
    let max = match raw.max.as_f64() {
        Some(max) if max > 0.0 && max.is_finite() => Some(max),
        _ => {
            errs.push(
                format!("{path}.max"),
                format!(
                    "max must be a positive number without % (a multiple of the error rate the \
                     SLO allows, e.g. 4 or 14.4), got {}",
                    describe(&raw.max)
                ),
            );
            None
        }
    };
    Some(Rule::BurnRate {
        slo: slo?,
        max: max?,
    })
}

fn success(raw: &RawSuccess, slot: usize, path: &str, errs: &mut Errors) -> Option<Rule> {
    let prefix = path_prefix(&raw.path_prefix, &format!("{path}.path_prefix"), errs);
    let method = match raw.method.as_deref() {
        None => Some(None),
        Some(m) if token_ok(m) => Some(Some(m.to_ascii_uppercase())),
        Some(m) => {
            errs.push(
                format!("{path}.method"),
                format!(
                    "{m_q} is not a valid HTTP method: use only letters, digits and \
                     !#$%&'*+-.^_`|~ (e.g. POST), or leave out `method` to match every method",
                    m_q = Quoted(m)
                ),
            );
            None
        }
    };
    let min = percent(&raw.min, &format!("{path}.min"), SUCCESS_MIN, errs);
    Some(Rule::Success {
        path_prefix: prefix?,
        method: method?,
        min: min?,
        slot,
    })
}

/// What a percentage may be: above `low` (exclusive), up to `high` if any; in percent.
#[derive(Clone, Copy)]
struct PercentRange {
    low: f64,
    high: Option<f64>,
    high_inclusive: bool,
    /// A typical value, as written (`1%`), and as the fraction it is (`0.01`).
    example: &'static str,
    fraction: &'static str,
}

const ERROR_RATE_MAX: PercentRange = PercentRange {
    low: 0.0,
    high: Some(100.0),
    high_inclusive: false,
    example: "1%",
    fraction: "0.01",
};
const ERROR_RATE_INCREASE: PercentRange = PercentRange {
    example: "0.5%",
    fraction: "0.005",
    ..ERROR_RATE_MAX
};
/// An increase of latency may exceed 100% (more than twice the baseline's).
const LATENCY_INCREASE: PercentRange = PercentRange {
    low: 0.0,
    high: None,
    high_inclusive: false,
    example: "20%",
    fraction: "0.2",
};
const SLO: PercentRange = PercentRange {
    example: "99.9%",
    fraction: "0.999",
    ..ERROR_RATE_MAX
};
const SUCCESS_MIN: PercentRange = PercentRange {
    high_inclusive: true,
    example: "97%",
    fraction: "0.97",
    ..ERROR_RATE_MAX
};
const CONFIDENCE: PercentRange = PercentRange {
    low: 50.0,
    high: Some(100.0),
    high_inclusive: false,
    example: "99%",
    fraction: "0.99",
};

impl PercentRange {
    fn contains(&self, percent: f64) -> bool {
        percent > self.low
            && match self.high {
                None => true,
                Some(high) if self.high_inclusive => percent <= high,
                Some(high) => percent < high,
            }
    }

    fn describe(&self) -> String {
        let low = format!("above {}%", self.low);
        match self.high {
            None => low,
            Some(high) if self.high_inclusive => format!("{low} and at most {high}%"),
            Some(high) => format!("{low} and below {high}%"),
        }
    }
}

/// A percentage written with its `%` sign (`0.5%`), as a fraction (0.005). The fraction
/// is the double nearest to the decimal written, so `99.9%` is exactly `0.999`.
fn percent(
    value: &serde_yaml_ng::Value,
    path: &str,
    range: PercentRange,
    errs: &mut Errors,
) -> Option<f64> {
    let bare = |shown: String| {
        format!(
            "{shown} is a bare number; write a percentage with a % sign, e.g. {} (not {} or {})",
            range.example,
            range.fraction,
            range.example.trim_end_matches('%')
        )
    };
    let not_a_percentage = |shown: String| {
        format!(
            "{shown} is not a percentage; write a number and a % sign, e.g. {}",
            range.example
        )
    };
    let text = match value {
        serde_yaml_ng::Value::String(s) => s,
        serde_yaml_ng::Value::Number(n) => {
            errs.push(path, bare(n.to_string()));
            return None;
        }
        other => {
            errs.push(path, not_a_percentage(describe(other)));
            return None;
        }
    };
    let shown = Quoted(text).to_string();
    let Some(number) = text.trim().strip_suffix('%').map(str::trim_end) else {
        let message = if decimal(text.trim()) {
            bare(shown)
        } else {
            not_a_percentage(shown)
        };
        errs.push(path, message);
        return None;
    };
    let (Some(percent), Ok(fraction)) = (
        decimal(number)
            .then(|| number.parse::<f64>().ok())
            .flatten(),
        format!("{number}e-2").parse::<f64>(),
    ) else {
        errs.push(path, not_a_percentage(shown));
        return None;
    };
    if !percent.is_finite() || !range.contains(percent) {
        errs.push(
            path,
            format!(
                "{shown} is out of range: write a percentage {}, e.g. {}",
                range.describe(),
                range.example
            ),
        );
        return None;
    }
    Some(fraction)
}

/// A decimal number as a percentage is written: `1`, `0.5`, `-2`, `.5`.
fn decimal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let mut dots = 0;
    let mut numerals = 0;
    for b in digits.bytes() {
        match b {
            b'0'..=b'9' => numerals += 1,
            b'.' => dots += 1,
            _ => return false,
        }
    }
    numerals > 0 && dots <= 1
}

/// A latency percentile: a plain number between 0 and 100, both excluded.
fn percentile(value: &serde_yaml_ng::Value, path: &str, errs: &mut Errors) -> Option<f64> {
    match value.as_f64() {
        Some(p) if p > 0.0 && p < 100.0 => Some(p),
        _ => {
            errs.push(
                path,
                format!(
                    "percentile must be a number above 0 and below 100, without % \
                     (e.g. 95 or 99.9), got {}",
                    describe(value)
                ),
            );
            None
        }
    }
}

fn split(raw: &RawSplit, versions: &mut [Version], path: &str, errs: &mut Errors) -> Split {
    let wpath = format!("{path}.weights");
    let defined = list(versions.iter().map(|v| v.name.as_str()));
    // The first version of each name (a lookup per key, not a scan: a split may name
    // thousands).
    let mut index_of: HashMap<String, usize> = HashMap::with_capacity(versions.len());
    for (i, v) in versions.iter().enumerate() {
        index_of.entry(v.name.clone()).or_insert(i);
    }
    let mut given: HashSet<usize> = HashSet::new();
    let mut bad_weight = false;
    for (key, value) in &raw.weights {
        let kpath = format!("{wpath}.{key}");
        let Some(&index) = index_of.get(key.as_str()) else {
            errs.push_at(
                &kpath,
                &wpath,
                format!(
                    "version {key_q} is not defined (defined: {defined})",
                    key_q = Quoted(key)
                ),
            );
            continue;
        };
        if !given.insert(index) {
            errs.push_at(
                &kpath,
                &wpath,
                format!(
                    "version {key_q} is given a weight twice; give each version one weight",
                    key_q = Quoted(key)
                ),
            );
            continue;
        }
        match value.as_u64() {
            Some(w) if w <= MAX_WEIGHT => versions[index].weight = w as u32,
            Some(w) => {
                bad_weight = true;
                errs.push(
                kpath,
                format!(
                    "weight {w} is too large: at most {MAX_WEIGHT} (weights are relative, e.g. 90 and 10)"
                ),
            );
            }
            None => {
                bad_weight = true;
                errs.push(
                    kpath,
                    format!(
                        "weight must be a whole number of 0 or more (e.g. 90 or 10), got {}",
                        describe(value)
                    ),
                );
            }
        }
    }
    let missing: Vec<&str> = versions
        .iter()
        .enumerate()
        .filter(|(i, _)| !given.contains(i))
        .map(|(_, v)| v.name.as_str())
        .collect();
    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "version"
        } else {
            "versions"
        };
        errs.push_at(
            format!("{wpath}.{AFTER}"),
            &wpath,
            format!(
                "no weight for {noun} {}; give every version a weight (0 sends it no traffic)",
                missing
                    .iter()
                    .map(|m| Quoted(m).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    } else if !bad_weight && !versions.is_empty() && versions.iter().all(|v| v.weight == 0) {
        errs.push_at(
            format!("{wpath}.{AFTER}"),
            &wpath,
            "weights are all zero; at least one version must receive traffic",
        );
    }

    let sticky = raw.sticky.as_ref().and_then(|s| {
        let spath = format!("{path}.sticky");
        match (&s.header, &s.cookie) {
            (Some(h), None) => header_name(h, &format!("{spath}.header"), errs).map(Sticky::Header),
            (None, Some(c)) => {
                if token_ok(c) {
                    Some(Sticky::Cookie(c.clone()))
                } else {
                    errs.push(
                        format!("{spath}.cookie"),
                        format!(
                            "{c_q} is not a valid cookie name: use only letters, digits and \
                             !#$%&'*+-.^_`|~ (e.g. session)"
                        , c_q = Quoted(c)),
                    );
                    None
                }
            }
            (Some(_), Some(_)) => {
                errs.push(
                    &spath,
                    "give either `header` or `cookie`, not both: a cohort is keyed on one of them",
                );
                None
            }
            (None, None) => {
                errs.push(
                    &spath,
                    "give `header: NAME` or `cookie: NAME` to key the cohort on, or remove `sticky`",
                );
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

fn limits(raw: Option<&RawLimits>, errs: &mut Errors) -> Limits {
    let defaults = Limits::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let max_header_bytes = raw
        .max_header_bytes
        .as_ref()
        .and_then(|v| {
            let n = byte_size(v, "limits.max_header_bytes", errs)?;
            if (MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&n) {
                Some(n)
            } else {
                errs.push(
                    "limits.max_header_bytes",
                    format!(
                        "{n} bytes is out of range: give 8KiB to 1MiB (the default is {}KiB)",
                        DEFAULT_MAX_HEADER_BYTES / 1024
                    ),
                );
                None
            }
        })
        .unwrap_or(defaults.max_header_bytes);
    let header_read_timeout = raw
        .header_read_timeout
        .as_deref()
        .and_then(|d| duration(d, "limits.header_read_timeout", errs))
        .unwrap_or(defaults.header_read_timeout);
    let idle_timeout = raw
        .idle_timeout
        .as_deref()
        .and_then(|text| {
            duration(text, "limits.idle_timeout", errs).filter(|d| {
                let ok = *d >= MIN_IDLE_TIMEOUT;
                if !ok {
                    errs.push(
                        "limits.idle_timeout",
                        format!(
                            "{text_q} is too short: an idle connection must be given at least 1s (the default is {}s)",
                            DEFAULT_IDLE_TIMEOUT.as_secs()
                        , text_q = Quoted(text)),
                    );
                }
                ok
            })
        })
        .unwrap_or(defaults.idle_timeout);
    let max_connections = raw
        .max_connections
        .as_ref()
        .and_then(|v| count(v, "limits.max_connections", 1, 10_000_000, errs))
        .unwrap_or(defaults.max_connections);
    let h2_max_concurrent_streams = raw
        .h2_max_concurrent_streams
        .as_ref()
        .and_then(|v| count(v, "limits.h2_max_concurrent_streams", 1, 10_000, errs))
        .map(|n| n as u32)
        .unwrap_or(defaults.h2_max_concurrent_streams);
    let max_request_body = raw
        .max_request_body
        .as_ref()
        .and_then(|v| byte_size(v, "limits.max_request_body", errs))
        .unwrap_or(defaults.max_request_body);
    let request_buffer = raw
        .request_buffer
        .as_ref()
        .and_then(|v| {
            let n = byte_size(v, "limits.request_buffer", errs)?;
            if n <= MAX_REQUEST_BUFFER {
                Some(n)
            } else {
                errs.push(
                    "limits.request_buffer",
                    format!(
                        "{n} bytes is out of range: give 0 (every body streams) to 1MiB (the default is {}KiB)",
                        defaults.request_buffer / 1024
                    ),
                );
                None
            }
        })
        .unwrap_or(defaults.request_buffer);
    let body_read_timeout = raw
        .body_read_timeout
        .as_deref()
        .and_then(|d| duration(d, "limits.body_read_timeout", errs))
        .unwrap_or(defaults.body_read_timeout);
    let send_timeout = raw
        .send_timeout
        .as_deref()
        .and_then(|d| duration(d, "limits.send_timeout", errs))
        .unwrap_or(defaults.send_timeout);
    Limits {
        max_header_bytes,
        header_read_timeout,
        idle_timeout,
        max_connections,
        h2_max_concurrent_streams,
        max_request_body,
        request_buffer,
        body_read_timeout,
        send_timeout,
    }
}

/// The TLS settings; certificate files are read by `crate::load`, which does the I/O,
/// and fill `certificates` there.
fn tls(raw: &RawTls, path: &str, errs: &mut Errors) -> Option<Tls> {
    let before = errs.len();
    if raw.certificates.is_empty() {
        errs.push(
            format!("{path}.certificates"),
            "at least one certificate is required (e.g. `- { cert: certs/shop.pem, key: certs/shop.key }`)",
        );
    }
    let min_version = match raw.min_version.as_deref().map(str::trim) {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => {
            errs.push(
                format!("{path}.min_version"),
                format!("{other_q} is not a TLS version serin offers: write \"1.2\" or \"1.3\" (older versions are not supported)", other_q = Quoted(other)),
            );
            TlsVersion::V1_2
        }
    };
    let alpn = match &raw.alpn {
        None => vec!["h2".to_string(), "http/1.1".to_string()],
        Some(list) => {
            for (i, p) in list.iter().enumerate() {
                if p != "h2" && p != "http/1.1" {
                    errs.push(
                        format!("{path}.alpn[{i}]"),
                        format!(
                            "{p_q} is not a protocol serin serves: use h2 or http/1.1",
                            p_q = Quoted(p)
                        ),
                    );
                }
            }
            if list.is_empty() {
                errs.push(
                    format!("{path}.alpn"),
                    "the list is empty: give h2, http/1.1 or both, or leave out `alpn` for both",
                );
            }
            list.clone()
        }
    };
    (errs.len() == before).then_some(Tls {
        certificates: Vec::new(),
        min_version,
        alpn,
    })
}

/// A version's `tls`; its files are read by `crate::load`, which does the I/O.
fn upstream_tls(
    raw: &RawUpstreamTls,
    endpoints: &[Endpoint],
    vpath: &str,
    errs: &mut Errors,
) -> Option<UpstreamTls> {
    let before = errs.len();
    let path = format!("{vpath}.tls");
    for (field, value) in [("ca", &raw.ca), ("cert", &raw.cert), ("key", &raw.key)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            errs.push(
                format!("{path}.{field}"),
                "the path is empty: give a PEM file (relative paths are relative to the config file's directory), or leave the key out",
            );
        }
    }
    match (&raw.cert, &raw.key) {
        (Some(_), None) => errs.push(
            format!("{path}.key"),
            "`cert` is given without `key`: give both the client certificate and its private key (for mutual TLS), or neither",
        ),
        (None, Some(_)) => errs.push(
            format!("{path}.cert"),
            "`key` is given without `cert`: give both the client certificate and its private key (for mutual TLS), or neither",
        ),
        _ => {}
    }
    let server_name = match raw.server_name.as_deref().map(str::trim) {
        Some(name) => {
            if !is_server_name(name) {
                errs.push(
                    format!("{path}.server_name"),
                    format!("{name_q} is not a DNS name or an IP address; write the name the upstream's certificate is issued for (e.g. api.internal)", name_q = Quoted(name)),
                );
            }
            Some(name.to_string())
        }
        None => {
            for (k, e) in endpoints.iter().enumerate() {
                let host = endpoint_host(&e.authority);
                if !is_server_name(host) {
                    errs.push(
                        format!("{vpath}.endpoints[{k}]"),
                        format!("the host {host_q} cannot be verified over TLS (it is not a DNS name or an IP address); set `tls.server_name` to the name the upstream's certificate is issued for", host_q = Quoted(host)),
                    );
                }
            }
            None
        }
    };
    (errs.len() == before).then_some(UpstreamTls {
        ca_file: None,
        ca: Vec::new(),
        server_name,
        client: None,
        insecure_skip_verify: raw.insecure_skip_verify,
    })
}

/// The host of a normalised `host:port` endpoint, without an IPv6 address's brackets.
pub fn endpoint_host(authority: &str) -> &str {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Whether `name` can be sent as SNI and verified: a DNS name or an IP address.
fn is_server_name(name: &str) -> bool {
    rustls_pki_types::ServerName::try_from(name).is_ok()
}

fn upstream_protocol(raw: Option<&str>, path: &str, errs: &mut Errors) -> UpstreamProtocol {
    match raw {
        None | Some("http1") => UpstreamProtocol::Http1,
        Some("http2") => UpstreamProtocol::Http2,
        Some("auto") => UpstreamProtocol::Auto,
        Some(other) => {
            errs.push(
                path.to_string(),
                format!(
                    "{other_q} is not an upstream protocol: write http1 (the default), \
                     http2 (cleartext HTTP/2 with prior knowledge, e.g. for gRPC) or auto \
                     (HTTP/2 when the client spoke HTTP/2)",
                    other_q = Quoted(other)
                ),
            );
            UpstreamProtocol::Http1
        }
    }
}

fn load_balancing(raw: Option<&str>, path: &str, errs: &mut Errors) -> LoadBalancing {
    match raw {
        None | Some("round_robin") => LoadBalancing::RoundRobin,
        Some("p2c_peak_ewma") => LoadBalancing::P2cPeakEwma,
        Some(other) => {
            errs.push(
                path.to_string(),
                format!(
                    "{other_q} is not a load balancing policy: write round_robin (the \
                     default, each endpoint in turn) or p2c_peak_ewma (the less loaded \
                     of two endpoints, by requests in flight and latency)",
                    other_q = Quoted(other)
                ),
            );
            LoadBalancing::RoundRobin
        }
    }
}

/// `grpc.error_codes` as a bit set; names (any case) or numbers 1–16.
fn grpc_codes(raw: &RawGrpc, path: &str, errs: &mut Errors) -> u32 {
    let Some(codes) = &raw.error_codes else {
        return DEFAULT_GRPC_ERROR_CODES;
    };
    let mut mask = 0u32;
    for (i, code) in codes.iter().enumerate() {
        let at = format!("{path}.error_codes[{i}]");
        let number = match code {
            serde_yaml_ng::Value::Number(n) => n.as_u64().filter(|n| *n <= 16).map(|n| n as usize),
            serde_yaml_ng::Value::String(s) => GRPC_CODES
                .iter()
                .position(|c| c.eq_ignore_ascii_case(s.trim())),
            _ => None,
        };
        match number {
            Some(0) => errs.push(
                at,
                "OK (0) is success and cannot count as an error: remove it",
            ),
            Some(n) => mask |= 1 << n,
            None => errs.push(
                at,
                format!(
                    "{} is not a gRPC status code: write a name such as UNAVAILABLE or INTERNAL, \
                     or a number from 1 to 16",
                    describe(code)
                ),
            ),
        }
    }
    mask
}

fn health(raw: &RawHealth, path: &str, errs: &mut Errors) -> Option<HealthCheck> {
    let before = errs.len();
    let check_path = match raw.path.as_deref() {
        None => "/healthz".to_string(),
        Some(p) => path_prefix(p, &format!("{path}.path"), errs).unwrap_or_default(),
    };
    let interval = raw
        .interval
        .as_deref()
        .map_or(Some(Duration::from_secs(5)), |d| {
            duration(d, &format!("{path}.interval"), errs)
        });
    let timeout = raw
        .timeout
        .as_deref()
        .map_or(Some(Duration::from_secs(1)), |d| {
            duration(d, &format!("{path}.timeout"), errs)
        });
    let unhealthy_after = raw.unhealthy_after.as_ref().map_or(Some(3), |v| {
        count(v, &format!("{path}.unhealthy_after"), 1, 100, errs)
    });
    let healthy_after = raw.healthy_after.as_ref().map_or(Some(2), |v| {
        count(v, &format!("{path}.healthy_after"), 1, 100, errs)
    });
    if let (Some(i), Some(t)) = (interval, timeout) {
        if t > i {
            errs.push(
                format!("{path}.timeout"),
                format!(
                    "the timeout ({}) is longer than the interval ({}): a check must end before the next one starts",
                    humantime::format_duration(t),
                    humantime::format_duration(i)
                ),
            );
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(HealthCheck {
        path: check_path,
        interval: interval?,
        timeout: timeout?,
        unhealthy_after: unhealthy_after? as u32,
        healthy_after: healthy_after? as u32,
    })
}

fn eject(raw: &RawEject, path: &str, errs: &mut Errors) -> Option<Eject> {
    let consecutive_failures = raw.consecutive_failures.as_ref().map_or(Some(5), |v| {
        count(v, &format!("{path}.consecutive_failures"), 1, 10_000, errs)
    });
    let for_ = raw
        .duration
        .as_deref()
        .map_or(Some(Duration::from_secs(30)), |d| {
            duration(d, &format!("{path}.for"), errs)
        });
    Some(Eject {
        consecutive_failures: consecutive_failures? as u32,
        duration: for_?,
    })
}

/// A size in bytes: a whole number, or a number with a unit (`32KiB`, `1MiB`, `64kB`).
/// A size beyond what 64 bits hold is an error (bytesize would saturate it).
fn byte_size(value: &serde_yaml_ng::Value, path: &str, errs: &mut Errors) -> Option<u64> {
    enum Problem {
        NotASize,
        TooLarge,
    }
    let parsed = match value {
        serde_yaml_ng::Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(n), _) => Ok(n),
            (None, Some(f)) if f >= U64_LIMIT => Err(Problem::TooLarge),
            _ => Err(Problem::NotASize),
        },
        serde_yaml_ng::Value::String(t) if size_too_large(t) => Err(Problem::TooLarge),
        serde_yaml_ng::Value::String(t) => t
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| Problem::NotASize),
        _ => Err(Problem::NotASize),
    };
    let why = match parsed {
        Ok(n) => return Some(n),
        Err(Problem::NotASize) => "is not a size",
        Err(Problem::TooLarge) => "is too large to be a size (more than 16 EiB)",
    };
    errs.push(
        path,
        format!(
            "{} {why}: write a whole number of bytes or a number with a unit, such as 32KiB or 1MiB",
            describe(value)
        ),
    );
    None
}

/// 2^64, the first whole number a `u64` cannot hold, as a float.
const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

/// Whether `text` is a size (a number and maybe a unit, as bytesize reads it) too large
/// for 64 bits.
fn size_too_large(text: &str) -> bool {
    let t = text.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(end);
    let factor = match unit.trim_start() {
        "" => 1,
        unit => match unit.parse::<bytesize::Unit>() {
            Ok(unit) => unit * 1u64,
            Err(_) => return false,
        },
    };
    if number.bytes().all(|b| b.is_ascii_digit()) && !number.is_empty() {
        return number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
            .is_none();
    }
    number
        .parse::<f64>()
        .is_ok_and(|n| n * factor as f64 >= U64_LIMIT)
}

/// A whole number in `min..=max`.
fn count(
    value: &serde_yaml_ng::Value,
    path: &str,
    min: u64,
    max: u64,
    errs: &mut Errors,
) -> Option<u64> {
    match value.as_u64() {
        Some(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            errs.push(
                path,
                format!(
                    "{} is not allowed: give a whole number from {min} to {max}",
                    describe(value)
                ),
            );
            None
        }
    }
}

/// A network such as `10.0.0.0/8`, `fd00::/8` or a single address (`127.0.0.1`).
fn cidr_net(text: &str, path: &str, errs: &mut Errors) -> Option<ipnet::IpNet> {
    let t = text.trim();
    if let Ok(net) = t.parse::<ipnet::IpNet>() {
        return Some(net.trunc());
    }
    if let Ok(ip) = t.parse::<std::net::IpAddr>() {
        return Some(ipnet::IpNet::from(ip));
    }
    errs.push(
        path,
        format!("{text_q} is not a network: write a CIDR such as 10.0.0.0/8 or fd00::/8, or one address such as 127.0.0.1", text_q = Quoted(text)),
    );
    None
}

/// A positive duration such as `250ms`, `1s`, `1m 30s`.
fn duration(text: &str, path: &str, errs: &mut Errors) -> Option<Duration> {
    let t = text.trim();
    let why = match humantime::parse_duration(t) {
        Ok(d) if d > MAX_DURATION => {
            "it is longer than 365 days, the longest serin takes".to_string()
        }
        Ok(d) if !d.is_zero() => return Some(d),
        Ok(_) => "it is zero".to_string(),
        Err(_) if t.starts_with('-') => "it is negative".to_string(),
        Err(humantime::DurationError::UnknownUnit { unit, .. }) if unit.is_empty() => {
            "the unit is missing".to_string()
        }
        Err(humantime::DurationError::UnknownUnit { unit, .. }) => {
            format!(
                "unknown unit {unit_q} (use ms, s, m, h or d)",
                unit_q = Quoted(&unit)
            )
        }
        Err(humantime::DurationError::NumberOverflow) => "it is too large".to_string(),
        Err(humantime::DurationError::Empty) => "it is empty".to_string(),
        Err(humantime::DurationError::NumberExpected(0)) => {
            "it does not start with a number".to_string()
        }
        Err(humantime::DurationError::NumberExpected(i)) => match t.get(..i) {
            Some(before) => format!("a number is expected after {}", Quoted(before.trim_end())),
            None => "a number is expected".to_string(),
        },
        Err(humantime::DurationError::InvalidCharacter(i)) => {
            match t.get(i..).and_then(|rest| rest.chars().next()) {
                Some(c) => format!("'{}' is not allowed", c.escape_default()),
                None => "it contains a character that is not allowed".to_string(),
            }
        }
    };
    errs.push(
        path,
        format!("{text_q} is not a valid duration: {why}; write a positive duration such as 500ms, 2s or 1m 30s", text_q = Quoted(text)),
    );
    None
}

fn socket_addr(text: &str, path: &str, errs: &mut Errors) -> Option<SocketAddr> {
    match text.trim().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errs.push(
                path,
                format!("{text_q} is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)", text_q = Quoted(text)),
            );
            None
        }
    }
}

/// `host:port` where host is an IP address (IPv6 in brackets) or a DNS name.
fn endpoint(text: &str, path: &str, errs: &mut Errors) -> Option<Endpoint> {
    let t = text.trim();
    let why = match endpoint_authority(t) {
        Ok(authority) => return Some(Endpoint { authority }),
        Err(why) => why,
    };
    errs.push(
        path,
        format!("{text_q} is not a valid endpoint: {why} (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)", text_q = Quoted(text)),
    );
    None
}

/// The normalised `host:port` of an endpoint, or why it is not one.
fn endpoint_authority(t: &str) -> Result<String, String> {
    if t.is_empty() {
        return Err("it is empty".to_string());
    }
    if t.contains("://") {
        return Err("remove the scheme: serin connects to endpoints over plain HTTP".to_string());
    }
    if t.contains('/') {
        return Err("an endpoint has no path".to_string());
    }
    match t.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => return Err("the port is missing".to_string()),
        Ok(IpAddr::V6(_)) => return Err(
            "an IPv6 address must be written in brackets, followed by the port, e.g. [::1]:9001"
                .to_string(),
        ),
        Err(_) => {}
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("the closing ']' is missing".to_string());
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "{inside_q} is not an IPv6 address",
                inside_q = Quoted(inside)
            ));
        }
        match after.strip_prefix(':') {
            Some(port) => (inside, port),
            None if after.is_empty() => return Err("the port is missing".to_string()),
            None => {
                return Err(format!(
                    "unexpected {after_q} after ']'",
                    after_q = Quoted(after)
                ))
            }
        }
    } else {
        let Some((host, port)) = t.rsplit_once(':') else {
            return Err("the port is missing".to_string());
        };
        if host.contains(':') {
            return Err(
                "an IPv6 address must be written in brackets, followed by the port, e.g. [::1]:9001"
                    .to_string(),
            );
        }
        (host, port)
    };
    let port = match port.parse::<u32>() {
        _ if port.is_empty() => return Err("the port is missing".to_string()),
        _ if !port.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!(
                "{port_q} is not a port number",
                port_q = Quoted(port)
            ))
        }
        Ok(0) => {
            return Err(
                "port 0 cannot be connected to; give the port the upstream listens on".to_string(),
            )
        }
        Ok(p) if p <= 65535 => p,
        _ => return Err(format!("port {} is out of range 1-65535", Shown(port))),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port as u16).to_string());
    }
    if host.is_empty() {
        return Err("the host is missing".to_string());
    }
    if let Some(why) = dns_name_problem(host) {
        return Err(format!(
            "{host_q} is not an IP address or a DNS name: {why}",
            host_q = Quoted(host)
        ));
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// Why `host` is not a DNS name (RFC 1123 labels of letters, digits and '-'), if it is not.
/// A name whose last label is all digits is rejected: it is a mistyped IPv4 address.
fn dns_name_problem(host: &str) -> Option<String> {
    if host.len() > 253 {
        return Some("longer than 253 characters".to_string());
    }
    if host.ends_with('.') {
        return Some("remove the trailing dot".to_string());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Some("it has an empty label (two dots in a row, or a leading dot)".to_string());
        }
        if label.len() > 63 {
            return Some(format!(
                "the label {label_q} is longer than 63 characters",
                label_q = Quoted(label)
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Some(if c == ' ' {
                "it contains a space".to_string()
            } else {
                format!("it contains '{c}' (use letters, digits, '-' and '.')")
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!(
                "the label {label_q} starts or ends with '-'",
                label_q = Quoted(label)
            ));
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("it looks like an IPv4 address but is not a valid one".to_string());
    }
    None
}

fn host_match(text: &str, path: &str, errs: &mut Errors) -> Option<HostMatch> {
    let t = text.trim();
    let why = if t == "*" {
        return Some(HostMatch::Any);
    } else if t.is_empty() {
        "it is empty".to_string()
    } else if let Some(suffix) = t.strip_prefix("*.") {
        match host_problem(suffix) {
            None => {
                return Some(HostMatch::Suffix(format!(
                    ".{}",
                    suffix.to_ascii_lowercase()
                )))
            }
            Some(why) => why,
        }
    } else if t.contains('*') {
        "'*' is allowed only alone (\"*\") or as the first label (\"*.example.com\")".to_string()
    } else if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(HostMatch::Exact(ip.to_string()));
    } else if let Some(ip) = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
    {
        return Some(HostMatch::Exact(ip.to_string()));
    } else {
        match host_problem(t) {
            None => return Some(HostMatch::Exact(t.to_ascii_lowercase())),
            Some(why) => why,
        }
    };
    errs.push(
        path,
        format!("{text_q} is not a host pattern: {why} (write \"*\", a host name such as shop.example.com, or \"*.example.com\")", text_q = Quoted(text)),
    );
    None
}

/// Why a host name of a route is not one, with the port as a common special case.
fn host_problem(host: &str) -> Option<String> {
    if let Some((h, port)) = host.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') {
            return Some(format!(
                "remove the port {} (routes match the host without its port)",
                Quoted(&format!(":{port}"))
            ));
        }
    }
    dns_name_problem(host)
}

/// A valid prefix, normalised: `/api/` and `/api` mean the same segment-wise prefix.
fn path_prefix(text: &str, path: &str, errs: &mut Errors) -> Option<String> {
    let why = if !text.starts_with('/') {
        format!("it must start with \"/\" (e.g. \"/{}\")", text.trim_start())
    } else if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '?' || *c == '#')
    {
        match c {
            '?' => {
                "it contains '?': a route matches the path only, not the query string".to_string()
            }
            '#' => "it contains '#': fragments are never sent to a server".to_string(),
            _ if c.is_whitespace() => "it contains a space; write a space as %20".to_string(),
            _ => "it contains a control character".to_string(),
        }
    } else {
        let trimmed = text.trim_end_matches('/');
        return Some(if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        });
    };
    errs.push(
        path,
        format!(
            "{text_q} is not a path prefix: {why}",
            text_q = Quoted(text)
        ),
    );
    None
}

/// Names become metric label values and state file names: keep them plain.
fn name(text: &str, path: &str, errs: &mut Errors) {
    let why = if text.is_empty() {
        "it is empty".to_string()
    } else if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '-' | '_' | '.'))
    {
        if c == ' ' {
            "it contains a space".to_string()
        } else {
            format!("it contains '{}'", c.escape_default())
        }
    } else if text.len() > 63 {
        format!("it is {} characters long", text.len())
    } else if let Some(first) = text.chars().next().filter(|c| !c.is_ascii_alphanumeric()) {
        format!("it starts with '{first}'")
    } else {
        return;
    };
    errs.push(
        path,
        format!(
            "{text_q} is not a valid name: {why} (use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)"
        , text_q = Quoted(text)),
    );
}

/// A token of RFC 9110 §5.6.2, which header names and cookie names are.
fn token_ok(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_name(text: &str, path: &str, errs: &mut Errors) -> Option<String> {
    if token_ok(text) {
        Some(text.to_ascii_lowercase())
    } else {
        errs.push(
            path,
            format!(
                "{text_q} is not a valid header name: use only letters, digits and \
                 !#$%&'*+-.^_`|~ (e.g. x-user-id)",
                text_q = Quoted(text)
            ),
        );
        None
    }
}

/// The distinct `names`, in order, for "(defined: …)": at most [`LISTED_NAMES`] of
/// them, each cut as [`Shown`] cuts text, and `…` when there are more; only the first
/// hundred names are looked at, so a message costs the same however many there are.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut all: Vec<&str> = Vec::new();
    let mut names = names.peekable();
    let mut looked_at = 0;
    while let Some(name) = names.next_if(|_| all.len() < LISTED_NAMES && looked_at < 100) {
        looked_at += 1;
        if !all.contains(&name) {
            all.push(name);
        }
    }
    if all.is_empty() {
        return "none".to_string();
    }
    let mut out = all
        .iter()
        .map(|name| Shown(name).to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if names.peek().is_some() {
        out.push_str(", …");
    }
    out
}

/// How many names "(defined: …)" shows.
const LISTED_NAMES: usize = 10;

fn describe(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::Null => "nothing".to_string(),
        serde_yaml_ng::Value::Bool(b) => format!("{b}"),
        serde_yaml_ng::Value::Number(n) => format!("{n}"),
        serde_yaml_ng::Value::String(s) if s.trim().parse::<u64>().is_ok() => {
            format!("{} (write numbers without quotes)", Quoted(s))
        }
        serde_yaml_ng::Value::String(s) => Quoted(s).to_string(),
        serde_yaml_ng::Value::Sequence(_) => "a list".to_string(),
        serde_yaml_ng::Value::Mapping(_) => "a mapping".to_string(),
        serde_yaml_ng::Value::Tagged(_) => "a tagged value".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{etcd_settings, expand_env, Errors};
    use crate::schema::RawEtcd;

    #[test]
    fn etcd_endpoints_take_environment_variables() {
        let env = |name: &str| match name {
            "ETCD_ENDPOINT" => Some("http://etcd.serin.svc:2379/".to_string()),
            _ => None,
        };
        let raw = |endpoints: &[&str]| RawEtcd {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            prefix: Some(Some("/serin/prod/".to_string())),
            tls: None,
            username: None,
            password_file: None,
        };
        let mut errs = Errors::default();
        let etcd = etcd_settings(&raw(&["${ETCD_ENDPOINT}"]), "cluster.etcd", &env, &mut errs)
            .expect("valid");
        assert_eq!(etcd.endpoints, ["http://etcd.serin.svc:2379"]);
        assert_eq!(errs.len(), 0);

        let mut errs = Errors::default();
        let etcd = etcd_settings(
            &raw(&["http://a:2379", "${ETCD_UNSET}"]),
            "cluster.etcd",
            &env,
            &mut errs,
        );
        assert!(etcd.is_none());
        let messages: Vec<String> = errs.0.iter().map(|e| e.error.to_string()).collect();
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert!(
            messages[0].contains("cluster.etcd.endpoints[1]")
                && messages[0]
                    .contains("${ETCD_UNSET} names an environment variable that is not set"),
            "{messages:?}"
        );
    }

    #[test]
    fn expand_env_replaces_each_variable_and_names_what_is_wrong() {
        let env = |name: &str| match name {
            "HOSTNAME" => Some("web-7".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand_env("${HOSTNAME}", &env).as_deref(), Ok("web-7"));
        assert_eq!(
            expand_env("a-${HOSTNAME}-${HOSTNAME}${EMPTY}-$x", &env).as_deref(),
            Ok("a-web-7-web-7-$x")
        );
        assert_eq!(expand_env("plain", &env).as_deref(), Ok("plain"));
        let unset = expand_env("${NOPE}", &env).unwrap_err();
        assert!(
            unset.starts_with("${NOPE} names an environment variable that is not set"),
            "{unset}"
        );
        let open = expand_env("a${HOSTNAME", &env).unwrap_err();
        assert!(open.contains("never closed"), "{open}");
        let bad = expand_env("${1X}", &env).unwrap_err();
        assert!(
            bad.contains("is not an environment variable's name"),
            "{bad}"
        );
        let empty = expand_env("${}", &env).unwrap_err();
        assert!(
            empty.contains("is not an environment variable's name"),
            "{empty}"
        );
    }
}
