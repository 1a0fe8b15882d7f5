//! Every kind of invalid config, with the exact lines `serin check` prints for it.
//!
//! Each case is a fixture under tests/fixtures/invalid/ and the exact list of lines
//! [`LoadError::lines`] returns for it, with the fixture's path replaced by `FILE`.
//! These are the words a user reads: a change to any of them is a change of the
//! interface, and shows up here.

use std::path::{Path, PathBuf};

use serin_config::{load_file, parse_str, LoadError};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/invalid");

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(format!("{name}.yaml"))
}

/// What `serin check` prints for the fixture, its path replaced by `FILE`.
fn check_lines(name: &str) -> Vec<String> {
    let path = fixture(name);
    match load_file(&path) {
        Ok(_) => vec!["ok".to_string()],
        Err(err) => err
            .lines()
            .into_iter()
            .map(|line| line.replace(&path.display().to_string(), "FILE"))
            .collect(),
    }
}

/// (fixture name, the exact lines reported for it)
const CASES: &[(&str, &[&str])] = &[
    // The file as a whole, and YAML that does not fit the format (parse errors: one line, with line:column).
    (
        "empty",
        &[
            r#"FILE: the file is empty: a serin config needs at least `listeners`, `routes` and `services` (see examples/quickstart.yaml)"#,
        ],
    ),
    (
        "only_comments",
        &[
            r#"FILE: the file holds no settings, only comments: a serin config needs at least `listeners`, `routes` and `services` (see examples/quickstart.yaml)"#,
        ],
    ),
    (
        "yaml_syntax",
        &[
            r#"FILE:11:1: services[0].versions[0].endpoints: did not find expected ',' or ']', while parsing a flow sequence at line 10 column 20"#,
        ],
    ),
    (
        "yaml_tab",
        &[
            r#"FILE:8:1: services[0].name: found a tab character that violates indentation, while scanning a plain scalar at line 7 column 11"#,
        ],
    ),
    (
        "yaml_tab_indent",
        &[
            r#"FILE:7:1: services: found character that cannot start any token, while scanning for the next token (indent with spaces, never tabs; quote a value that starts with @ or `)"#,
        ],
    ),
    // `versions:` with nothing after it reads as an empty list.
    (
        "empty_value",
        &[
            r#"FILE: services[0].versions: a service needs at least one version (e.g. `- { name: stable, endpoints: [127.0.0.1:9001] }`)"#,
        ],
    ),
    (
        "wrong_type",
        &[
            r#"FILE:10:20: services[0].versions[0].endpoints: invalid type: string "127.0.0.1:9001", expected a list (write `[a, b]`, or one `- item` per line)"#,
        ],
    ),
    (
        "wrong_type_top",
        &[
            r#"FILE:1:1: invalid type: sequence, expected a mapping with the keys `listeners`, `routes` and `services` (and optionally `admin`, `cluster`, `limits`, `notify`, `state_dir` and `telemetry`)"#,
        ],
    ),
    (
        "missing_key",
        &[r#"FILE:5:5: routes[0]: missing field `service`"#],
    ),
    (
        "unknown_key_top",
        &[
            r#"FILE:4:1: unknown field `routs`, expected one of `admin`, `cluster`, `listeners`, `limits`, `routes`, `services`, `state_dir`, `telemetry`, `notify` (check the spelling; unknown keys are errors, not ignored)"#,
        ],
    ),
    (
        "unknown_key_nested",
        &[
            r#"FILE:14:7: services[0].split: unknown field `weigths`, expected one of `weights`, `sticky`, `force` (check the spelling; unknown keys are errors, not ignored)"#,
        ],
    ),
    // Addresses.
    (
        "listen_bad_port",
        &[
            r#"FILE: listeners[0].listen: "127.0.0.1:99999" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#,
        ],
    ),
    (
        "listen_not_address",
        &[
            r#"FILE: admin.listen: "localhost:9901" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#,
            r#"FILE: listeners[0].listen: "8080" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#,
        ],
    ),
    (
        "listeners_same_address",
        &[
            r#"FILE: listeners[1].listen: 127.0.0.1:8080 is already used by listeners[0].listen; give each listener its own address"#,
        ],
    ),
    (
        "listeners_wildcard_overlap",
        &[
            r#"FILE: listeners[1].listen: 127.0.0.1:8080 overlaps listeners[0].listen (0.0.0.0:8080): a wildcard address (0.0.0.0 or [::]) takes port 8080 on every address; give each listener its own address"#,
            r#"FILE: listeners[3].listen: 10.0.0.1:8081 overlaps listeners[2].listen ([::]:8081): a wildcard address (0.0.0.0 or [::]) takes port 8081 on every address; give each listener its own address"#,
        ],
    ),
    (
        "admin_on_listener_address",
        &[
            r#"FILE: admin.listen: 127.0.0.1:8080 is already used by listeners[0].listen; the admin API needs an address of its own"#,
        ],
    ),
    (
        "admin_default_taken",
        &[
            r#"FILE: admin.listen: the admin API listens on 127.0.0.1:9901 when `admin.listen` is not given, and listeners[0].listen (0.0.0.0:9901) takes that port; give the admin API another address with `admin: { listen: IP:PORT }`"#,
        ],
    ),
    (
        "admin_allowed_hosts",
        &[
            r#"FILE: admin.allowed_hosts[0]: "serin:9901" has a port; write the name alone ("serin"): a listed name is accepted with any port"#,
            r#"FILE: admin.allowed_hosts[1]: it is empty; give a host name the admin API is reached by, such as serin.example.com"#,
            r#"FILE: admin.allowed_hosts[2]: "http://serin.example.com" is a URL; give the host name alone, without scheme, port or path (e.g. "serin.example.com")"#,
            r#"FILE: admin.allowed_hosts[3]: "*.example.com" is a wildcard; list each name the admin API is reached by (e.g. "serin.example.com")"#,
            r#"FILE: admin.allowed_hosts[4]: "10.0.0.7" is an IP address, and a Host that is an IP address is always accepted; list only host names here"#,
            r#"FILE: admin.allowed_hosts[5]: "[::1]:9901" is an IP address, and a Host that is an IP address is always accepted; list only host names here"#,
            r#"FILE: admin.allowed_hosts[6]: "serin admin" is not a host name: it contains a space"#,
            r#"FILE: admin.allowed_hosts[7]: "serin_admin" is not a host name: it contains '_' (use letters, digits, '-' and '.')"#,
            r#"FILE: admin.allowed_hosts[9]: "SERIN." is listed already as admin.allowed_hosts[8] (names are compared without regard to case); list each name once"#,
        ],
    ),
    (
        "admin_allowed_hosts_not_a_list",
        &[
            r#"FILE:2:18: admin.allowed_hosts: invalid type: string "serin", expected a list (write `[a, b]`, or one `- item` per line)"#,
        ],
    ),
    // The admin token file: read at load, reported with the other errors.
    (
        "admin_token_file_missing",
        &[
            r#"FILE: admin.token_file: cannot read /nonexistent/serin/admin.token: the file does not exist; fix the path (a relative path is relative to the config file's directory), create the file holding the admin API's token (e.g. the output of `openssl rand -hex 32`), or leave out `token_file` to serve the admin API without a token"#,
            r#"FILE: listeners[0].listen: "127.0.0.1:99999" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#,
        ],
    ),
    (
        "admin_token_file_device",
        &[
            r#"FILE: admin.token_file: /dev/zero is a character device, not a regular file; give the path of a file holding the admin API's token, or leave out `token_file` to serve the admin API without a token"#,
        ],
    ),
    (
        "admin_token_file_blank",
        &[
            r#"FILE: admin.listen: "localhost:9901" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#,
            r#"FILE: admin.token_file: it is empty: give the path of a file holding the admin API's token, or leave out `token_file` to serve the admin API without one"#,
        ],
    ),
    (
        "endpoints_bad",
        &[
            r#"FILE: services[0].versions[0].endpoints[0]: "127.0.0.1:99999" is not a valid endpoint: port 99999 is out of range 1-65535 (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[1]: "127.0.0.1" is not a valid endpoint: the port is missing (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[2]: "api_internal:80" is not a valid endpoint: "api_internal" is not an IP address or a DNS name: it contains '_' (use letters, digits, '-' and '.') (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[3]: "::1:9001" is not a valid endpoint: an IPv6 address must be written in brackets, followed by the port, e.g. [::1]:9001 (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[4]: "127.0.0.1:0" is not a valid endpoint: port 0 cannot be connected to; give the port the upstream listens on (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[5]: "http://127.0.0.1:9001" is not a valid endpoint: remove the scheme: serin connects to endpoints over plain HTTP (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[6]: "[::1]" is not a valid endpoint: the port is missing (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[7]: "127.0.0.1:http" is not a valid endpoint: "http" is not a port number (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[0].endpoints[8]: "300.1.1.1:80" is not a valid endpoint: "300.1.1.1" is not an IP address or a DNS name: it looks like an IPv4 address but is not a valid one (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
        ],
    ),
    // Weights.
    (
        "weight_undefined_version",
        &[
            r#"FILE: services[0].split.weights: version "canry" is not defined (defined: stable, canary)"#,
            r#"FILE: services[0].split.weights: no weight for version "canary"; give every version a weight (0 sends it no traffic)"#,
        ],
    ),
    (
        "weight_missing",
        &[
            r#"FILE: services[0].split.weights: no weight for versions "canary", "next"; give every version a weight (0 sends it no traffic)"#,
        ],
    ),
    (
        "weight_negative",
        &[
            r#"FILE: services[0].split.weights.canary: weight must be a whole number of 0 or more (e.g. 90 or 10), got -10"#,
        ],
    ),
    (
        "weight_not_integer",
        &[
            r#"FILE: services[0].split.weights.stable: weight must be a whole number of 0 or more (e.g. 90 or 10), got 10.5"#,
            r#"FILE: services[0].split.weights.canary: weight must be a whole number of 0 or more (e.g. 90 or 10), got "ten""#,
            r#"FILE: services[0].split.weights.next: weight must be a whole number of 0 or more (e.g. 90 or 10), got "5" (write numbers without quotes)"#,
        ],
    ),
    (
        "weights_all_zero",
        &[
            r#"FILE: services[0].split.weights: weights are all zero; at least one version must receive traffic"#,
        ],
    ),
    (
        "weight_too_large",
        &[
            r#"FILE: services[0].split.weights.stable: weight 9000000000 is too large: at most 1000000 (weights are relative, e.g. 90 and 10)"#,
        ],
    ),
    (
        "weights_duplicate_key",
        &[
            r#"FILE: services[0].split.weights: version "stable" is given a weight twice; give each version one weight"#,
        ],
    ),
    (
        "split_missing",
        &[
            r#"FILE: services[0].split: required when a service has more than one version: give each version a weight, e.g. `split: { weights: { stable: 100, canary: 0 } }`"#,
        ],
    ),
    // Names and references.
    (
        "names_bad",
        &[
            r#"FILE: listeners[0].name: "my web" is not a valid name: it contains a space (use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)"#,
            r#"FILE: services[0].name: ".api" is not a valid name: it starts with '.' (use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)"#,
            r#"FILE: services[0].versions[0].name: "stable-version-with-a-name-much-longer-than-sixty-three-characters" is not a valid name: it is 66 characters long (use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)"#,
            r#"FILE: services[0].versions[1].name: "" is not a valid name: it is empty (use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)"#,
            r#"FILE: services[0].versions[2].name: "canary/1" is not a valid name: it contains '/' (use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit)"#,
        ],
    ),
    (
        "duplicate_listener_name",
        &[
            r#"FILE: listeners[1].name: listener name "web" is already used by listeners[0]; names must be unique"#,
        ],
    ),
    (
        "duplicate_service_name",
        &[
            r#"FILE: services[1].name: service name "api" is already used by services[0]; names must be unique"#,
        ],
    ),
    (
        "duplicate_version_name",
        &[
            r#"FILE: services[0].versions[1].name: version name "stable" is already used by services[0].versions[0]; the versions of a service need different names"#,
            r#"FILE: services[0].split.weights: no weight for version "stable"; give every version a weight (0 sends it no traffic)"#,
        ],
    ),
    (
        "route_unknown_refs",
        &[
            r#"FILE: routes[0].listener: listener "public" is not defined (defined: web)"#,
            r#"FILE: routes[1].service: service "shop" is not defined (defined: api)"#,
        ],
    ),
    (
        "duplicate_routes",
        &[
            r#"FILE: routes[1]: routes[0] already matches host "*" and path_prefix "/api" on listener "web", so this route would never be used; remove one or make them differ"#,
            r#"FILE: routes[3]: routes[2] already matches host "shop.example.com" and path_prefix "/" on listener "web", so this route would never be used; remove one or make them differ"#,
        ],
    ),
    // Route matches.
    (
        "host_bad",
        &[
            r#"FILE: routes[0].match.host: "shop.example.com:8080" is not a host pattern: remove the port ":8080" (routes match the host without its port) (write "*", a host name such as shop.example.com, or "*.example.com")"#,
            r#"FILE: routes[1].match.host: "shop example.com" is not a host pattern: it contains a space (write "*", a host name such as shop.example.com, or "*.example.com")"#,
            r#"FILE: routes[2].match.host: "api.*.example.com" is not a host pattern: '*' is allowed only alone ("*") or as the first label ("*.example.com") (write "*", a host name such as shop.example.com, or "*.example.com")"#,
            r#"FILE: routes[3].match.host: "*.example.com:443" is not a host pattern: remove the port ":443" (routes match the host without its port) (write "*", a host name such as shop.example.com, or "*.example.com")"#,
            r#"FILE: routes[4].match.host: "" is not a host pattern: it is empty (write "*", a host name such as shop.example.com, or "*.example.com")"#,
        ],
    ),
    (
        "path_prefix_bad",
        &[
            r#"FILE: routes[0].match.path_prefix: "api" is not a path prefix: it must start with "/" (e.g. "/api")"#,
            r#"FILE: routes[1].match.path_prefix: "/api?version=2" is not a path prefix: it contains '?': a route matches the path only, not the query string"#,
            r#"FILE: routes[2].match.path_prefix: "/my api" is not a path prefix: it contains a space; write a space as %20"#,
        ],
    ),
    // Sticky, force, timeouts.
    (
        "sticky_both",
        &[
            r#"FILE: services[0].split.sticky: give either `header` or `cookie`, not both: a cohort is keyed on one of them"#,
        ],
    ),
    (
        "sticky_neither",
        &[
            r#"FILE: services[0].split.sticky: give `header: NAME` or `cookie: NAME` to key the cohort on, or remove `sticky`"#,
        ],
    ),
    (
        "header_names_bad",
        &[
            r#"FILE: services[0].split.sticky.header: "x user id" is not a valid header name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. x-user-id)"#,
            r#"FILE: services[0].split.force.header: "x-serin-version:" is not a valid header name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. x-user-id)"#,
            r#"FILE: services[1].split.sticky.cookie: "session;" is not a valid cookie name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. session)"#,
            r#"FILE: services[1].split.force.header: "" is not a valid header name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. x-user-id)"#,
        ],
    ),
    (
        "upstream_protocol_bad",
        &[
            r#"FILE: services[0].grpc.error_codes[1]: 17 is not a gRPC status code: write a name such as UNAVAILABLE or INTERNAL, or a number from 1 to 16"#,
            r#"FILE: services[0].versions[0].protocol: "http3" is not an upstream protocol: write http1 (the default), http2 (cleartext HTTP/2 with prior knowledge, e.g. for gRPC) or auto (HTTP/2 when the client spoke HTTP/2)"#,
            r#"FILE: services[0].versions[1].grpc.error_codes[0]: OK (0) is success and cannot count as an error: remove it"#,
            r#"FILE: services[0].versions[1].grpc.error_codes[2]: "x" is not a gRPC status code: write a name such as UNAVAILABLE or INTERNAL, or a number from 1 to 16"#,
            r#"FILE: services[0].versions[1].grpc.error_codes[3]: a list is not a gRPC status code: write a name such as UNAVAILABLE or INTERNAL, or a number from 1 to 16"#,
        ],
    ),
    (
        "balancing_bad",
        &[
            r#"FILE: services[0].versions[0].lb: "least_request" is not a load balancing policy: write round_robin (the default, each endpoint in turn) or p2c_peak_ewma (the less loaded of two endpoints, by requests in flight and latency)"#,
            r#"FILE: services[0].versions[0].idle_timeout: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].versions[1].idle_timeout: "10" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
        ],
    ),
    (
        "health_bad",
        &[
            r#"FILE: services[0].versions[0].health.path: "healthz" is not a path prefix: it must start with "/" (e.g. "/healthz")"#,
            r#"FILE: services[0].versions[0].health.timeout: the timeout (2s) is longer than the interval (1s): a check must end before the next one starts"#,
            r#"FILE: services[0].versions[0].health.unhealthy_after: 0 is not allowed: give a whole number from 1 to 100"#,
            r#"FILE: services[0].versions[1].eject.consecutive_failures: -1 is not allowed: give a whole number from 1 to 10000"#,
            r#"FILE: services[0].versions[1].eject.for: "soon" is not a valid duration: it does not start with a number; write a positive duration such as 500ms, 2s or 1m 30s"#,
        ],
    ),
    (
        "tls_bad",
        &[
            r#"FILE: listeners[0].tls.min_version: "1.0" is not a TLS version serin offers: write "1.2" or "1.3" (older versions are not supported)"#,
            r#"FILE: listeners[0].tls.alpn[1]: "spdy/3" is not a protocol serin serves: use h2 or http/1.1"#,
            r#"FILE: listeners[1].tls.certificates: at least one certificate is required (e.g. `- { cert: certs/shop.pem, key: certs/shop.key }`)"#,
        ],
    ),
    (
        "upstream_tls_bad",
        &[
            r#"FILE: services[0].versions[0].tls.server_name: "api internal" is not a DNS name or an IP address; write the name the upstream's certificate is issued for (e.g. api.internal)"#,
            r#"FILE: services[0].versions[0].tls.key: `cert` is given without `key`: give both the client certificate and its private key (for mutual TLS), or neither"#,
            r#"FILE: services[0].versions[1].tls.ca: the path is empty: give a PEM file (relative paths are relative to the config file's directory), or leave the key out"#,
            r#"FILE: services[0].versions[1].tls.cert: `key` is given without `cert`: give both the client certificate and its private key (for mutual TLS), or neither"#,
        ],
    ),
    // Values too large to hold: an error, never a saturated number.
    (
        "values_overflow",
        &[
            r#"FILE: limits.max_header_bytes: "99999999999999999999TiB" is too large to be a size (more than 16 EiB): write a whole number of bytes or a number with a unit, such as 32KiB or 1MiB"#,
            r#"FILE: limits.max_request_body: 1e30 is too large to be a size (more than 16 EiB): write a whole number of bytes or a number with a unit, such as 32KiB or 1MiB"#,
            r#"FILE: limits.header_read_timeout: "400d" is not a valid duration: it is longer than 365 days, the longest serin takes; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].timeouts.request: "99999999999999999999s" is not a valid duration: it is too large; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].rollout.steps[0].hold: "1000y" is not a valid duration: it is longer than 365 days, the longest serin takes; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].rollout.analysis.rules[0].latency.max_increase: "10000000000000000000000000000000000000000000000000000000000000000000000000000000…" (314 characters) is out of range: write a percentage above 0%, e.g. 20%"#,
        ],
    ),
    (
        "limits_bad",
        &[
            r#"FILE: listeners[0].trust_forwarded[1]: "10.0.0.300/8" is not a network: write a CIDR such as 10.0.0.0/8 or fd00::/8, or one address such as 127.0.0.1"#,
            r#"FILE: listeners[0].trust_forwarded[2]: "proxy.internal" is not a network: write a CIDR such as 10.0.0.0/8 or fd00::/8, or one address such as 127.0.0.1"#,
            r#"FILE: limits.max_header_bytes: 4096 bytes is out of range: give 8KiB to 1MiB (the default is 32KiB)"#,
            r#"FILE: limits.header_read_timeout: "10" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: limits.idle_timeout: "500ms" is too short: an idle connection must be given at least 1s (the default is 60s)"#,
            r#"FILE: limits.max_connections: 0 is not allowed: give a whole number from 1 to 10000000"#,
            r#"FILE: limits.h2_max_concurrent_streams: "many" is not allowed: give a whole number from 1 to 10000"#,
            r#"FILE: limits.max_request_body: "12 bananas" is not a size: write a whole number of bytes or a number with a unit, such as 32KiB or 1MiB"#,
            r#"FILE: limits.request_buffer: 2097152 bytes is out of range: give 0 (every body streams) to 1MiB (the default is 16KiB)"#,
            r#"FILE: limits.body_read_timeout: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: limits.send_timeout: "fast" is not a valid duration: it does not start with a number; write a positive duration such as 500ms, 2s or 1m 30s"#,
        ],
    ),
    (
        "durations_bad",
        &[
            r#"FILE: services[0].timeouts.connect: "fast" is not a valid duration: it does not start with a number; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].timeouts.request: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[1].timeouts.connect: "-1s" is not a valid duration: it is negative; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[1].timeouts.request: "10" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[2].timeouts.request: "5 minits" is not a valid duration: unknown unit "minits" (use ms, s, m, h or d); write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[3].timeouts.connect: "1s 500" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[3].timeouts.request: "1s+2s" is not a valid duration: '+' is not allowed; write a positive duration such as 500ms, 2s or 1m 30s"#,
        ],
    ),
    // Missing parts.
    (
        "no_listeners",
        &[
            r#"FILE: listeners: at least one listener is required (e.g. `- { name: web, listen: 127.0.0.1:8080 }`)"#,
        ],
    ),
    (
        "service_no_versions",
        &[
            r#"FILE: services[0].versions: a service needs at least one version (e.g. `- { name: stable, endpoints: [127.0.0.1:9001] }`)"#,
        ],
    ),
    (
        "version_no_endpoints",
        &[
            r#"FILE: services[0].versions[0].endpoints: a version needs at least one endpoint (host:port, e.g. 127.0.0.1:9001)"#,
        ],
    ),
    // Rollouts: versions and steps.
    (
        "rollout_version_undefined",
        &[
            r#"FILE: services[0].rollout.baseline: version "stabel" is not defined (defined: stable, canary)"#,
            r#"FILE: services[0].rollout.canary: version "canry" is not defined (defined: stable, canary)"#,
        ],
    ),
    (
        "rollout_baseline_is_canary",
        &[
            r#"FILE: services[0].rollout.canary: "stable" is also the baseline; the canary must be another version of the service (defined: stable, canary)"#,
        ],
    ),
    (
        "rollout_steps_empty",
        &[
            r#"FILE: services[0].rollout.steps: a rollout needs at least one step, each the canary's share of traffic in percent (e.g. `- { weight: 10, hold: 1m }` then `- { weight: 100 }`)"#,
        ],
    ),
    (
        "rollout_steps_not_increasing",
        &[
            r#"FILE: services[0].rollout.steps[2].weight: weight 50 is not above the previous step's weight (50 at steps[1]); the canary's share must increase at every step"#,
            r#"FILE: services[0].rollout.steps[3].weight: weight 25 is not above the previous step's weight (50 at steps[2]); the canary's share must increase at every step"#,
        ],
    ),
    (
        "rollout_step_weight_bad",
        &[
            r#"FILE: services[0].rollout.steps[0].weight: weight must be a whole number from 0 to 100, the canary's share of traffic in percent, without % (e.g. 5 or 50), got "5%""#,
            r#"FILE: services[0].rollout.steps[1].weight: weight must be a whole number from 0 to 100, the canary's share of traffic in percent, without % (e.g. 5 or 50), got -1"#,
            r#"FILE: services[0].rollout.steps[2].weight: weight must be a whole number from 0 to 100, the canary's share of traffic in percent, without % (e.g. 5 or 50), got 2.5"#,
            r#"FILE: services[0].rollout.steps[3].weight: weight 101 is above 100: a step's weight is the canary's share of traffic in percent, 0 to 100"#,
        ],
    ),
    // Rollouts: shadow steps, the shadow block, the mismatch rule.
    (
        "shadow_steps_bad",
        &[
            r#"FILE: services[0].rollout.steps[0].shadow: "0%" is out of range: write a percentage above 0% and at most 100%, e.g. 100%"#,
            r#"FILE: services[0].rollout.steps[1].shadow: 100 is a bare number; write a percentage with a % sign, e.g. 100% (not 1 or 100)"#,
            r#"FILE: services[0].rollout.steps[2].shadow: "150%" is out of range: write a percentage above 0% and at most 100%, e.g. 100%"#,
            r#"FILE: services[0].rollout.steps[3]: a step is a weight step (`weight`: the canary serves that share of users) or a shadow step (`shadow`: copies of that share of requests go to the canary, which serves no user), not both; write two steps"#,
            r#"FILE: services[0].rollout.steps[4]: a step needs `weight` (e.g. `- { weight: 10, hold: 1m }`) or `shadow` (e.g. `- { shadow: 100%, hold: 5m }`)"#,
            r#"FILE: services[0].rollout.steps[6].shadow: a shadow step must come before every weight step, but steps[5] is a weight step: the canary is judged on copies while it serves no user, then serves users from the first weight step on; move this step before steps[5]"#,
            r#"FILE: services[0].rollout.analysis.rules[1].mismatch.max: 1 is a bare number; write a percentage with a % sign, e.g. 1% (not 0.01 or 1)"#,
        ],
    ),
    (
        "shadow_steps_only",
        &[
            r#"FILE: services[0].rollout.steps: every step is a shadow step, so once they pass the canary would be promoted straight to 100% having served no user: add at least one weight step after them (e.g. `- { weight: 5, hold: 30s }` then `- { weight: 100 }`)"#,
        ],
    ),
    (
        "shadow_settings_bad",
        &[
            r#"FILE: services[0].rollout.shadow.methods[1]: "P OST" is not a valid HTTP method: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. GET)"#,
            r#"FILE: services[0].rollout.shadow.max_body: 1073741824 bytes is out of range: give 0 (only bodiless requests are copied, no body compared) to 16MiB (the default is 64KiB)"#,
            r#"FILE: services[0].rollout.shadow.max_in_flight: 0 is not allowed: give a whole number from 1 to 65536"#,
            r#"FILE: services[0].rollout.shadow.compare.ignore_headers: headers to ignore, but `headers: false` compares no header: remove `ignore_headers`, or set `headers: true` to compare the others"#,
            r#"FILE: services[0].rollout.shadow.compare.ignore_headers[1]: "x y" is not a valid header name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. x-user-id)"#,
        ],
    ),
    (
        "shadow_without_shadow_step",
        &[
            r#"FILE: services[0].rollout.shadow: shadow settings, but no step is a shadow step, so nothing is ever copied: add a step such as `- { shadow: 100%, hold: 5m }` before the weight steps, or remove `shadow`"#,
            r#"FILE: services[0].rollout.analysis.rules[1].mismatch: a `mismatch` rule compares the canary's answers to copied requests with the baseline's, and only a shadow step copies requests: add a step such as `- { shadow: 100%, hold: 5m }` before the weight steps, or remove this rule"#,
        ],
    ),
    // Rollouts: analysis settings.
    (
        "rollout_interval_too_short",
        &[
            r#"FILE: services[0].rollout.analysis.interval: "50ms" is too short: the analysis interval must be at least 100ms"#,
        ],
    ),
    (
        "rollout_window_shorter_than_interval",
        &[
            r#"FILE: services[0].rollout.analysis.window: the window "500ms" is shorter than the interval "1s"; the window judged at each tick must be at least one interval long"#,
            r#"FILE: services[1].rollout.analysis.window: the window 30s (the default) is shorter than the interval "1m"; the window judged at each tick must be at least one interval long"#,
        ],
    ),
    (
        "rollout_confidence_bad",
        &[
            r#"FILE: services[0].rollout.analysis.confidence: "50%" is out of range: write a percentage above 50% and below 100%, e.g. 99%"#,
            r#"FILE: services[1].rollout.analysis.confidence: "100%" is out of range: write a percentage above 50% and below 100%, e.g. 99%"#,
        ],
    ),
    (
        "rollout_no_rules",
        &[
            r#"FILE: services[0].rollout.analysis.rules: at least one rule is required: a rollout with no rule could never fail, so any canary would be promoted (e.g. `- error_rate: { max: 1% }`)"#,
            r#"FILE: services[1].rollout.analysis.rules: at least one rule is required: a rollout with no rule could never fail, so any canary would be promoted (e.g. `- error_rate: { max: 1% }`)"#,
            r#"FILE: services[2].rollout.analysis.rules: at least one rule is required: a rollout with no rule could never fail, so any canary would be promoted (e.g. `- error_rate: { max: 1% }`)"#,
        ],
    ),
    (
        "rollout_numbers_bad",
        &[
            r#"FILE: services[0].rollout.steps[0].hold: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].rollout.analysis.window: "10" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].rollout.analysis.min_requests: min_requests must be a whole number of 1 or more (e.g. 50), got 0"#,
            r#"FILE: services[0].rollout.analysis.rules[0].latency.max: "fast" is not a valid duration: it does not start with a number; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].rollout.analysis.rules[1].burn_rate.max: max must be a positive number without % (a multiple of the error rate the SLO allows, e.g. 4 or 14.4), got 0"#,
            r#"FILE: services[0].rollout.analysis.rules[2].burn_rate.max: max must be a positive number without % (a multiple of the error rate the SLO allows, e.g. 4 or 14.4), got "4x""#,
            r#"FILE: services[0].rollout.progress_deadline: "10" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
        ],
    ),
    // Rollouts: rules.
    (
        "rollout_rule_unknown_kind",
        &[
            r#"FILE: services[0].rollout.analysis.rules[1]: "errors" is not a kind of rule: write one of error_rate, latency, burn_rate, success, mismatch (e.g. `- error_rate: { max: 1% }`)"#,
        ],
    ),
    (
        "rollout_rule_not_one_kind",
        &[
            r#"FILE: services[0].rollout.analysis.rules[0]: a rule needs its kind as its one key: one of error_rate, latency, burn_rate, success, mismatch (e.g. `- error_rate: { max: 1% }`)"#,
            r#"FILE: services[0].rollout.analysis.rules[1]: a rule has one kind, but this one has 2: error_rate, latency; start each rule with its own `- `"#,
        ],
    ),
    (
        "rollout_rule_unknown_key",
        &[
            r#"FILE:17:27: services[0].rollout.analysis.rules[0].error_rate: unknown field `maximum`, expected `max` or `max_increase` (check the spelling; unknown keys are errors, not ignored)"#,
        ],
    ),
    (
        "rollout_rule_not_mapping",
        &[
            r#"FILE:17:13: services[0].rollout.analysis.rules[0]: invalid type: string "error_rate", expected a rule, a mapping with one key: `error_rate`, `latency`, `burn_rate`, `success` or `mismatch` (e.g. `error_rate: { max: 1% }`)"#,
        ],
    ),
    (
        "rollout_max_both_neither",
        &[
            r#"FILE: services[0].rollout.analysis.rules[0].error_rate: give either `max` (a limit for the canary) or `max_increase` (a limit on how much worse than the baseline the canary may be), not both; write two rules to check both"#,
            r#"FILE: services[0].rollout.analysis.rules[1].error_rate: give `max` (a limit for the canary) or `max_increase` (a limit on how much worse than the baseline the canary may be), e.g. `{ max: 1% }` or `{ max_increase: 0.5% }`"#,
            r#"FILE: services[0].rollout.analysis.rules[2].latency: give either `max` (a limit for the canary) or `max_increase` (a limit on how much worse than the baseline the canary may be), not both; write two rules to check both"#,
            r#"FILE: services[0].rollout.analysis.rules[3].latency: give `max` (a limit for the canary) or `max_increase` (a limit on how much worse than the baseline the canary may be), e.g. `{ percentile: 95, max: 800ms }` or `{ percentile: 95, max_increase: 20% }`"#,
        ],
    ),
    (
        "rollout_percent_bare",
        &[
            r#"FILE: services[0].rollout.analysis.confidence: 0.99 is a bare number; write a percentage with a % sign, e.g. 99% (not 0.99 or 99)"#,
            r#"FILE: services[0].rollout.analysis.rules[0].error_rate.max: 0.01 is a bare number; write a percentage with a % sign, e.g. 1% (not 0.01 or 1)"#,
            r#"FILE: services[0].rollout.analysis.rules[1].error_rate.max_increase: "0.5" is a bare number; write a percentage with a % sign, e.g. 0.5% (not 0.005 or 0.5)"#,
            r#"FILE: services[0].rollout.analysis.rules[2].burn_rate.slo: 99.9 is a bare number; write a percentage with a % sign, e.g. 99.9% (not 0.999 or 99.9)"#,
            r#"FILE: services[0].rollout.analysis.rules[3].success.min: 97 is a bare number; write a percentage with a % sign, e.g. 97% (not 0.97 or 97)"#,
            r#"FILE: services[0].rollout.analysis.rules[4].error_rate.max: "one percent" is not a percentage; write a number and a % sign, e.g. 1%"#,
            r#"FILE: services[0].rollout.analysis.rules[5].error_rate.max: "1%%" is not a percentage; write a number and a % sign, e.g. 1%"#,
        ],
    ),
    (
        "rollout_percent_out_of_range",
        &[
            r#"FILE: services[0].rollout.analysis.rules[0].error_rate.max: "100%" is out of range: write a percentage above 0% and below 100%, e.g. 1%"#,
            r#"FILE: services[0].rollout.analysis.rules[1].error_rate.max_increase: "0%" is out of range: write a percentage above 0% and below 100%, e.g. 0.5%"#,
            r#"FILE: services[0].rollout.analysis.rules[2].latency.max_increase: "-5%" is out of range: write a percentage above 0%, e.g. 20%"#,
            r#"FILE: services[0].rollout.analysis.rules[3].burn_rate.slo: "100%" is out of range: write a percentage above 0% and below 100%, e.g. 99.9%"#,
            r#"FILE: services[0].rollout.analysis.rules[4].success.min: "100.5%" is out of range: write a percentage above 0% and at most 100%, e.g. 97%"#,
            r#"FILE: services[0].rollout.analysis.rules[5].success.min: "0%" is out of range: write a percentage above 0% and at most 100%, e.g. 97%"#,
        ],
    ),
    (
        "rollout_percentile_bad",
        &[
            r#"FILE: services[0].rollout.analysis.rules[0].latency.percentile: percentile must be a number above 0 and below 100, without % (e.g. 95 or 99.9), got 100"#,
            r#"FILE: services[0].rollout.analysis.rules[1].latency.percentile: percentile must be a number above 0 and below 100, without % (e.g. 95 or 99.9), got 0"#,
            r#"FILE: services[0].rollout.analysis.rules[2].latency.percentile: percentile must be a number above 0 and below 100, without % (e.g. 95 or 99.9), got "95%""#,
            r#"FILE: services[0].rollout.analysis.rules[3].latency.percentile: percentile must be a number above 0 and below 100, without % (e.g. 95 or 99.9), got "p99""#,
        ],
    ),
    (
        "rollout_too_many_success_rules",
        &[
            r#"FILE: services[0].rollout.analysis.rules[5]: too many `success` rules: 6 given, at most 4 per service (serin keeps counters for that many); remove 2 of them"#,
        ],
    ),
    (
        "rollout_method_bad",
        &[
            r#"FILE: services[0].rollout.analysis.rules[0].success.method: "GE T" is not a valid HTTP method: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. POST), or leave out `method` to match every method"#,
            r#"FILE: services[0].rollout.analysis.rules[1].success.method: "" is not a valid HTTP method: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. POST), or leave out `method` to match every method"#,
            r#"FILE: services[0].rollout.analysis.rules[2].success.path_prefix: "checkout" is not a path prefix: it must start with "/" (e.g. "/checkout")"#,
        ],
    ),
    // Rollouts: the rest, and state_dir.
    (
        "rollout_on_failure_bad",
        &[
            r#"FILE: services[0].rollout.on_failure: "abort" is not an action: write rollback (the canary's weight goes to 0) or pause (the weights stay for a person to decide)"#,
        ],
    ),
    (
        "rollout_unknown_key",
        &[
            r#"FILE:14:7: services[0].rollout: unknown field `step`, expected one of `baseline`, `canary`, `steps`, `analysis`, `retry_on_baseline`, `on_failure`, `progress_deadline`, `shadow` (check the spelling; unknown keys are errors, not ignored)"#,
        ],
    ),
    (
        "state_dir_empty",
        &[
            r#"FILE: state_dir: it is empty: give the directory for rollout state and timelines (e.g. ./serin-state), or leave out `state_dir` for that default"#,
        ],
    ),
    // Telemetry: tracing and access logs.
    (
        "telemetry_many_errors",
        &[
            r#"FILE: telemetry.tracing.otlp_endpoint: "127.0.0.1:4318" is not an OTLP/HTTP endpoint: the scheme is missing (write the collector's URL, e.g. http://127.0.0.1:4318; spans are sent to its /v1/traces)"#,
            r#"FILE: telemetry.tracing.sample_ratio: "5%" is a percentage; write the sample ratio as a number from 0 to 1, without %, e.g. 0.05 for 5%"#,
            r#"FILE: telemetry.tracing.service_name: it is empty: give the name serin's spans are reported under (e.g. serin-edge), or leave out `service_name` for "serin""#,
            r#"FILE: telemetry.access_log.format: "JSON" is not an access log format: write json (one JSON object a line), text (key=value pairs) or off"#,
            r#"FILE: telemetry.access_log.sample_ratio: 10 is out of range: a sample ratio is a number from 0 to 1 (e.g. 0.05 for 5%)"#,
        ],
    ),
    (
        "telemetry_endpoint_https",
        &[
            r#"FILE: telemetry.tracing.otlp_endpoint: "https://collector.example.com:4318" is not an OTLP/HTTP endpoint: serin exports spans over plain HTTP only: use http:// to a collector or agent on a trusted network (write the collector's URL, e.g. http://127.0.0.1:4318; spans are sent to its /v1/traces)"#,
        ],
    ),
    (
        "telemetry_endpoint_bad",
        &[
            r#"FILE: telemetry.tracing.otlp_endpoint: "http://127.0.0.1:99999/v1/traces" is not an OTLP/HTTP endpoint: port 99999 is out of range 1-65535 (write the collector's URL, e.g. http://127.0.0.1:4318; spans are sent to its /v1/traces)"#,
        ],
    ),
    (
        "telemetry_endpoint_query",
        &[
            r#"FILE: telemetry.tracing.otlp_endpoint: "http://collector:4318/otlp?token=x" is not an OTLP/HTTP endpoint: remove the query or fragment (from '?' or '#' on) (write the collector's URL, e.g. http://127.0.0.1:4318; spans are sent to its /v1/traces)"#,
        ],
    ),
    (
        "telemetry_endpoint_empty",
        &[
            r#"FILE: telemetry.tracing.otlp_endpoint: it is empty: give the OTLP/HTTP URL of a collector (e.g. http://127.0.0.1:4318), or leave out `otlp_endpoint` to turn tracing off"#,
        ],
    ),
    (
        "telemetry_ratio_out_of_range",
        &[
            r#"FILE: telemetry.tracing.sample_ratio: 1.5 is out of range: a sample ratio is a number from 0 to 1 (e.g. 0.05 for 5%)"#,
            r#"FILE: telemetry.access_log.sample_ratio: -0.1 is out of range: a sample ratio is a number from 0 to 1 (e.g. 0.05 for 5%)"#,
        ],
    ),
    (
        "telemetry_access_log_no_format",
        &[
            r#"FILE: telemetry.access_log: the format is missing: give `format: json` or `format: text` (or `format: off` to log nothing)"#,
        ],
    ),
    (
        "telemetry_unknown_key",
        &[
            r#"FILE:10:5: telemetry.tracing: unknown field `otlp_endpiont`, expected one of `otlp_endpoint`, `sample_ratio`, `service_name` (check the spelling; unknown keys are errors, not ignored)"#,
        ],
    ),
    // Many errors at once: all reported, in document order.
    (
        "many_errors",
        &[
            r#"FILE: admin.listen: 127.0.0.1:8080 is already used by listeners[0].listen; the admin API needs an address of its own"#,
            r#"FILE: listeners[1].listen: "127.0.0.1:99999" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#,
            r#"FILE: listeners[1].name: listener name "web" is already used by listeners[0]; names must be unique"#,
            r#"FILE: routes[0].match.host: "shop.example.com:8080" is not a host pattern: remove the port ":8080" (routes match the host without its port) (write "*", a host name such as shop.example.com, or "*.example.com")"#,
            r#"FILE: routes[0].match.path_prefix: "api" is not a path prefix: it must start with "/" (e.g. "/api")"#,
            r#"FILE: routes[0].service: service "shop" is not defined (defined: api)"#,
            r#"FILE: routes[1].listener: listener "public" is not defined (defined: web)"#,
            r#"FILE: services[0].versions[0].endpoints[1]: "127.0.0.1" is not a valid endpoint: the port is missing (write host:port, e.g. 127.0.0.1:9001, [::1]:9001 or api.internal:80)"#,
            r#"FILE: services[0].versions[1].endpoints: a version needs at least one endpoint (host:port, e.g. 127.0.0.1:9001)"#,
            r#"FILE: services[0].split.weights: version "canry" is not defined (defined: stable, canary)"#,
            r#"FILE: services[0].split.weights: no weight for version "canary"; give every version a weight (0 sends it no traffic)"#,
            r#"FILE: services[0].split.sticky: give either `header` or `cookie`, not both: a cohort is keyed on one of them"#,
            r#"FILE: services[0].split.force.header: "x serin version" is not a valid header name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. x-user-id)"#,
            r#"FILE: services[0].timeouts.connect: "fast" is not a valid duration: it does not start with a number; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].timeouts.request: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
        ],
    ),
    (
        "rollout_many_errors",
        &[
            r#"FILE: state_dir: it is empty: give the directory for rollout state and timelines (e.g. ./serin-state), or leave out `state_dir` for that default"#,
            r#"FILE: services[0].rollout.on_failure: "abort" is not an action: write rollback (the canary's weight goes to 0) or pause (the weights stay for a person to decide)"#,
            r#"FILE: services[0].rollout.baseline: version "stabel" is not defined (defined: stable, canary)"#,
            r#"FILE: services[0].rollout.steps[0].hold: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[0].rollout.steps[1].weight: weight 5 is not above the previous step's weight (25 at steps[0]); the canary's share must increase at every step"#,
            r#"FILE: services[0].rollout.steps[2].weight: weight 101 is above 100: a step's weight is the canary's share of traffic in percent, 0 to 100"#,
            r#"FILE: services[0].rollout.analysis.rules[0]: "errors" is not a kind of rule: write one of error_rate, latency, burn_rate, success, mismatch (e.g. `- error_rate: { max: 1% }`)"#,
            r#"FILE: services[0].rollout.analysis.rules[1].error_rate.max: 0.01 is a bare number; write a percentage with a % sign, e.g. 1% (not 0.01 or 1)"#,
            r#"FILE: services[0].rollout.analysis.rules[1].error_rate: give either `max` (a limit for the canary) or `max_increase` (a limit on how much worse than the baseline the canary may be), not both; write two rules to check both"#,
            r#"FILE: services[0].rollout.analysis.rules[2].latency.percentile: percentile must be a number above 0 and below 100, without % (e.g. 95 or 99.9), got 100"#,
            r#"FILE: services[0].rollout.analysis.rules[3].success.method: "GE T" is not a valid HTTP method: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. POST), or leave out `method` to match every method"#,
            r#"FILE: services[0].rollout.analysis.interval: "50ms" is too short: the analysis interval must be at least 100ms"#,
            r#"FILE: services[0].rollout.analysis.confidence: 0.99 is a bare number; write a percentage with a % sign, e.g. 99% (not 0.99 or 99)"#,
            r#"FILE: services[0].rollout.progress_deadline: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: services[1].rollout.canary: "v1" is also the baseline; the canary must be another version of the service (defined: v1, v2)"#,
            r#"FILE: services[1].rollout.steps: a rollout needs at least one step, each the canary's share of traffic in percent (e.g. `- { weight: 10, hold: 1m }` then `- { weight: 100 }`)"#,
            r#"FILE: services[1].rollout.analysis.rules: at least one rule is required: a rollout with no rule could never fail, so any canary would be promoted (e.g. `- error_rate: { max: 1% }`)"#,
        ],
    ),
    // Webhooks (`notify`).
    (
        "notify_url_bad",
        &[
            r#"FILE: notify[0].url: "" is not a webhook URL: it is empty (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[1].url: "127.0.0.1:7000/…" is not a webhook URL: the scheme is missing (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[2].url: "ftp://127.0.0.1/…" is not a webhook URL: the scheme "ftp" is not http (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[3].url: "http://127.0.0.1:7000/…" is not a webhook URL: it holds credentials (user:password@), which would be shown wherever the URL is; send them in a header instead (`headers: { Authorization: … }`) (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[4].url: "http://127.0.0.1:70000/…" is not a webhook URL: port 70000 is out of range 1-65535 (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[5].url: "http://hooks_internal/…" is not a webhook URL: "hooks_internal" is not an IP address or a DNS name: it contains '_' (use letters, digits, '-' and '.') (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[6].url: "http:///…" is not a webhook URL: the host is missing (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[7].url: "http://127.0.0.1:7000/…" is not a webhook URL: its path contains a space; write a space as %20 (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[8].url: "http://127.0.0.1:7000/…" is not a webhook URL: remove the fragment (#…): it is never sent to a server (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
            r#"FILE: notify[9].url: "http://127.0.0.1:0/…" is not a webhook URL: port 0 cannot be connected to; give the port the receiver listens on (write http://HOST:PORT/PATH, e.g. http://127.0.0.1:7000/hooks/serin)"#,
        ],
    ),
    (
        "notify_https",
        &[
            r#"FILE: notify[0].url: "https://hooks.slack.com/…" uses https, which serin cannot send webhooks over yet (plain http only); give an http:// URL (e.g. a relay on this host that forwards over TLS)"#,
        ],
    ),
    (
        "notify_events_bad",
        &[
            r#"FILE: notify[0].events[1]: "rollback" is not a rollout event: write any of started, step_advanced, held, paused, resumed, rolled_back, promoted, manual_weights, drill_started, drill_ended"#,
            r#"FILE: notify[0].events[3]: "rolled_back" is already listed at events[0]; list each event once"#,
            r#"FILE: notify[1].events: give at least one event to send: any of started, step_advanced, held, paused, resumed, rolled_back, promoted, manual_weights, drill_started, drill_ended (e.g. `[rolled_back, paused, promoted]`)"#,
        ],
    ),
    (
        "notify_format_bad",
        &[
            r#"FILE: notify[0].format: "xml" is not a format: write json (the notification as a JSON object) or slack (a `{"text": …}` body for a Slack incoming webhook)"#,
        ],
    ),
    (
        "notify_timeout_bad",
        &[
            r#"FILE: notify[0].timeout: "0s" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: notify[1].timeout: "10m" is out of range: one attempt to deliver a webhook may take from 10ms to 60s (serin retries a failed attempt); write e.g. 2s"#,
            r#"FILE: notify[2].timeout: "2" is not a valid duration: the unit is missing; write a positive duration such as 500ms, 2s or 1m 30s"#,
            r#"FILE: notify[3].timeout: "1ms" is out of range: one attempt to deliver a webhook may take from 10ms to 60s (serin retries a failed attempt); write e.g. 2s"#,
        ],
    ),
    (
        "notify_retries_bad",
        &[
            r#"FILE: notify[0].retries: retries must be a whole number from 0 to 10, the attempts after a first one that fails (e.g. 4), got -1"#,
            r#"FILE: notify[1].retries: retries must be a whole number from 0 to 10, the attempts after a first one that fails (e.g. 4), got 11"#,
            r#"FILE: notify[2].retries: retries must be a whole number from 0 to 10, the attempts after a first one that fails (e.g. 4), got "3" (write numbers without quotes)"#,
        ],
    ),
    (
        "notify_headers_bad",
        &[
            r#"FILE: notify[0].headers: "X Team" is not a valid header name: use only letters, digits and !#$%&'*+-.^_`|~ (e.g. x-user-id)"#,
            r#"FILE: notify[0].headers.Content-Type: serin sets "Content-Type" itself; remove it from the headers"#,
            r#"FILE: notify[0].headers.authorization: "authorization" is given twice (header names ignore case); give each header once"#,
            r#"FILE: notify[0].headers.X-Break: the value is not valid: it holds a character that cannot be sent in a header (a line break, a control character or a non-ASCII one)"#,
            r#"FILE: notify[0].headers.X-Number: the value is not valid: it is not a string; quote it"#,
            r#"FILE: notify[0].headers.X-Empty: the value is not valid: it is empty"#,
        ],
    ),
    (
        "notify_unknown_key",
        &[
            r#"FILE:8:5: notify[0]: unknown field `timout`, expected one of `url`, `events`, `format`, `timeout`, `retries`, `headers` (check the spelling; unknown keys are errors, not ignored)"#,
        ],
    ),
    (
        "notify_missing_events",
        &[r#"FILE:6:5: notify[0]: missing field `events`"#],
    ),
    // cluster: fleet mode.
    (
        "cluster_etcd_bad",
        &[
            r#"FILE: cluster.etcd.endpoints[1]: "ftp://etcd-1:2379" is not an etcd client URL: the scheme "ftp" is not http or https (write http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:2379)"#,
            r#"FILE: cluster.etcd.endpoints[2]: "http://etcd-2" is not an etcd client URL: the port is missing (etcd's client port is usually 2379) (write http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:2379)"#,
            r#"FILE: cluster.etcd.endpoints[3]: "127.0.0.1:2379" is not an etcd client URL: the scheme is missing (write http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:2379)"#,
            r#"FILE: cluster.etcd.endpoints[4]: "http://root:secret@etcd-3:2379" is not an etcd client URL: it holds credentials (user:password@); give `username` and `password_file` instead (write http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:2379)"#,
            r#"FILE: cluster.etcd.endpoints[5]: "http://etcd-4:2379/v3" is not an etcd client URL: an etcd endpoint has no path, query or fragment (write http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:2379)"#,
            r#"FILE: cluster.etcd.endpoints[6]: "https://etcd-5:2379" is https but cluster.etcd.endpoints[0] is http; give every endpoint the same scheme"#,
            r#"FILE: cluster.etcd.endpoints[7]: "http://127.0.0.1:2379/" is listed already as cluster.etcd.endpoints[0]; list each endpoint once"#,
            r#"FILE: cluster.etcd.prefix: "serin/prod" must start and end with "/": give the key prefix of this fleet, e.g. /serin/prod/ (every key of the fleet is under it, so two fleets on one etcd need two prefixes)"#,
            r#"FILE: cluster.etcd.tls: TLS settings are for https:// endpoints; write the endpoints as https://HOST:PORT, or leave out `tls`"#,
        ],
    ),
    (
        "cluster_bad",
        &[
            r#"FILE: cluster.instance: "web 1/a" holds a character other than ASCII letters, digits, '.', '_' and '-': give this instance a name unique in the fleet, of 1 to 128 ASCII letters, digits, '.', '_' or '-' (e.g. ${HOSTNAME} in a pod), or leave out `instance` for hostname-pid"#,
            r#"FILE: cluster.lease_ttl: "1s" is too short: an etcd leader election stops keep-alives for about a second and etcd raises a TTL under 1.5 s to its own least; give 2s to 60s (default 5s)"#,
            r#"FILE: cluster.on_etcd_loss: "panic" is not a choice: write hold (keep the weights last applied while etcd is away) or baseline (send this instance's canary no traffic once etcd has been away for lease_ttl)"#,
        ],
    ),
    (
        "cluster_lease_ttl_bad",
        &[
            r#"FILE: cluster.etcd: `password_file` is given without `username`: give etcd's user name too"#,
            r#"FILE: cluster.lease_ttl: "2500ms" is not a whole number of seconds, which etcd's leases count in; give 2s to 60s (default 5s)"#,
        ],
    ),
    (
        "cluster_instance_unset",
        &[
            r#"FILE: cluster.instance: ${SERIN_SURELY_UNSET_VARIABLE} names an environment variable that is not set (or not UTF-8); set SERIN_SURELY_UNSET_VARIABLE for serin, or write the value itself"#,
        ],
    ),
    (
        "cluster_missing_etcd",
        &[
            r#"FILE: cluster.lease_ttl: "61s" is too long: a crashed instance, or a crashed leader, would be waited for that long; give 2s to 60s (default 5s)"#,
            r#"FILE: cluster: `etcd` is missing: give etcd's client URLs and this fleet's key prefix, e.g. `etcd: { endpoints: [http://127.0.0.1:2379], prefix: /serin/prod/ }`"#,
        ],
    ),
    (
        "cluster_auth_bad",
        &[
            r#"FILE: cluster.etcd.tls: `cert` is given without `key`: a client certificate needs both (or neither)"#,
            r#"FILE: cluster.etcd: the prefix is missing: give the key prefix of this fleet, e.g. `prefix: /serin/prod/` (every instance of one fleet gives the same one)"#,
            r#"FILE: cluster.etcd: `username` is given without `password_file`: give the path of a file holding etcd's password too"#,
            r#"FILE: cluster.instance: it is empty: give this instance a name unique in the fleet, of 1 to 128 ASCII letters, digits, '.', '_' or '-' (e.g. ${HOSTNAME} in a pod), or leave out `instance` for hostname-pid"#,
        ],
    ),
];

#[test]
fn every_invalid_fixture_reports_exactly_these_lines() {
    let mut failures = Vec::new();
    for (name, expected) in CASES {
        let got = check_lines(name);
        if got != *expected {
            failures.push(format!(
                "{name}.yaml\n  expected:\n    {}\n  got:\n    {}",
                expected.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn every_fixture_in_the_directory_has_a_case() {
    let mut untested = Vec::new();
    for entry in std::fs::read_dir(FIXTURES).expect("the fixtures directory") {
        let path = entry.expect("a directory entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "yaml")
            && !CASES.iter().any(|(name, _)| *name == stem)
        {
            untested.push(stem.to_string());
        }
    }
    assert!(untested.is_empty(), "fixtures without a case: {untested:?}");
}

#[test]
fn every_case_is_distinct() {
    for (i, (name, expected)) in CASES.iter().enumerate() {
        assert!(
            !expected.is_empty(),
            "{name}: a case needs at least one line"
        );
        assert!(
            CASES[..i].iter().all(|(other, _)| other != name),
            "{name} is listed twice"
        );
    }
}

/// `parse_str` (used for text that is not a file) reports the same lines, named by
/// the origin it is given.
#[test]
fn parse_str_reports_what_load_file_reports() {
    for (name, expected) in CASES {
        let text = std::fs::read_to_string(fixture(name)).expect("the fixture");
        let got = match parse_str(&text, "FILE") {
            Ok(_) => vec!["ok".to_string()],
            Err(err) => err.lines(),
        };
        assert_eq!(got, *expected, "{name}");
    }
}

/// The path of each validation error `check_lines(fixture)` reports, in order.
fn error_paths(fixture: &str) -> Vec<String> {
    check_lines(fixture)
        .iter()
        .map(|l| {
            let rest = l.strip_prefix("FILE: ").expect("a validation error");
            rest.split_once(": ").expect("path: message").0.to_string()
        })
        .collect()
}

/// The key property: validation never stops at the first error. Every problem of the
/// file is reported, each with its path, in the order the file states them (routes
/// before services here, as in examples/quickstart.yaml, although routes are checked
/// after services; and within listeners[1] `listen` before `name`, as written).
#[test]
fn many_errors_are_all_reported_in_document_order() {
    let paths = error_paths("many_errors");
    assert_eq!(
        paths,
        [
            "admin.listen",
            "listeners[1].listen",
            "listeners[1].name",
            "routes[0].match.host",
            "routes[0].match.path_prefix",
            "routes[0].service",
            "routes[1].listener",
            "services[0].versions[0].endpoints[1]",
            "services[0].versions[1].endpoints",
            "services[0].split.weights",
            "services[0].split.weights",
            "services[0].split.sticky",
            "services[0].split.force.header",
            "services[0].timeouts.connect",
            "services[0].timeouts.request",
        ]
    );
}

/// The same for rollouts, whose checks run in a fixed order: errors follow the keys
/// as written (`on_failure` first here, `interval` and `confidence` after the rules),
/// and an error about a mapping as a whole (a rule with both `max` and `max_increase`)
/// comes after the errors of its entries.
#[test]
fn rollout_errors_are_all_reported_in_document_order() {
    let paths = error_paths("rollout_many_errors");
    assert_eq!(
        paths,
        [
            "state_dir",
            "services[0].rollout.on_failure",
            "services[0].rollout.baseline",
            "services[0].rollout.steps[0].hold",
            "services[0].rollout.steps[1].weight",
            "services[0].rollout.steps[2].weight",
            "services[0].rollout.analysis.rules[0]",
            "services[0].rollout.analysis.rules[1].error_rate.max",
            "services[0].rollout.analysis.rules[1].error_rate",
            "services[0].rollout.analysis.rules[2].latency.percentile",
            "services[0].rollout.analysis.rules[3].success.method",
            "services[0].rollout.analysis.interval",
            "services[0].rollout.analysis.confidence",
            "services[0].rollout.progress_deadline",
            "services[1].rollout.canary",
            "services[1].rollout.steps",
            "services[1].rollout.analysis.rules",
        ]
    );
}

/// `state_dir:` with no value is as empty as `state_dir: ""`, not left out.
#[test]
fn state_dir_without_a_value_is_an_error() {
    let text = "\
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes: [{ listener: web, service: api }]
services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]
state_dir:
";
    let err = parse_str(text, "FILE").expect_err("invalid");
    assert_eq!(
        err.lines(),
        [
            r#"FILE: state_dir: it is empty: give the directory for rollout state and timelines (e.g. ./serin-state), or leave out `state_dir` for that default"#,
        ]
    );
}

/// `otlp_endpoint:` and `service_name:` with no value are as empty as `""`.
#[test]
fn telemetry_keys_without_a_value_are_errors() {
    let text = "\
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes: [{ listener: web, service: api }]
services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]
telemetry:
  tracing:
    otlp_endpoint:
    service_name:
";
    let err = parse_str(text, "FILE").expect_err("invalid");
    assert_eq!(
        err.lines(),
        [
            r#"FILE: telemetry.tracing.otlp_endpoint: it is empty: give the OTLP/HTTP URL of a collector (e.g. http://127.0.0.1:4318), or leave out `otlp_endpoint` to turn tracing off"#,
            r#"FILE: telemetry.tracing.service_name: it is empty: give the name serin's spans are reported under (e.g. serin-edge), or leave out `service_name` for "serin""#,
        ]
    );
}

#[test]
fn token_file_without_a_value_is_an_error() {
    let text = "\
admin:
  token_file:
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes: [{ listener: web, service: api }]
services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]
";
    let err = parse_str(text, "FILE").expect_err("invalid");
    assert_eq!(
        err.lines(),
        [
            r#"FILE: admin.token_file: it is empty: give the path of a file holding the admin API's token, or leave out `token_file` to serve the admin API without one"#,
        ]
    );
}

/// A token file with characters a header cannot carry is refused at load.
#[test]
fn a_token_with_spaces_inside_is_an_error() {
    let dir = std::env::temp_dir().join(format!("serin-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token = dir.join("admin.token");
    std::fs::write(&token, "two words\n").expect("write the token file");
    let config = dir.join("serin.yaml");
    std::fs::write(
        &config,
        "admin: { token_file: admin.token }\n\
         listeners: [{ name: web, listen: 127.0.0.1:8080 }]\n\
         routes: [{ listener: web, service: api }]\n\
         services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]\n",
    )
    .expect("write the config");
    let lines = load_file(&config).expect_err("invalid").lines();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        lines,
        [format!(
            "{}: admin.token_file: the token in {} holds characters other than printable ASCII (letters, digits, punctuation; no spaces inside); use a token such as the output of `openssl rand -hex 32`",
            config.display(),
            token.display()
        )]
    );
}

/// Errors about keys of `weights` follow the order of the keys; the error about the
/// mapping as a whole (a version without a weight) comes after them.
#[test]
fn weight_errors_follow_the_order_of_the_keys() {
    let text = "\
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes: [{ listener: web, service: api }]
services:
  - name: api
    versions:
      - { name: a, endpoints: [127.0.0.1:9001] }
      - { name: b, endpoints: [127.0.0.1:9002] }
      - { name: c, endpoints: [127.0.0.1:9003] }
    split:
      weights: { x: 1, a: -1, y: 2, b: 2000000 }
";
    let err = parse_str(text, "FILE").expect_err("invalid");
    assert_eq!(
        err.lines(),
        [
            r#"FILE: services[0].split.weights: version "x" is not defined (defined: a, b, c)"#,
            r#"FILE: services[0].split.weights.a: weight must be a whole number of 0 or more (e.g. 90 or 10), got -1"#,
            r#"FILE: services[0].split.weights: version "y" is not defined (defined: a, b, c)"#,
            r#"FILE: services[0].split.weights.b: weight 2000000 is too large: at most 1000000 (weights are relative, e.g. 90 and 10)"#,
            r#"FILE: services[0].split.weights: no weight for version "c"; give every version a weight (0 sends it no traffic)"#,
        ]
    );
}

/// The whole error, as a log line shows it: a count, then each problem indented.
#[test]
fn invalid_config_displays_as_a_count_and_one_problem_a_line() {
    let text = std::fs::read_to_string(fixture("route_unknown_refs")).expect("the fixture");
    let err = parse_str(&text, "serin.yaml").expect_err("invalid");
    assert!(matches!(err, LoadError::Invalid { .. }));
    assert_eq!(
        err.to_string(),
        "2 errors in serin.yaml:\n  \
         routes[0].listener: listener \"public\" is not defined (defined: web)\n  \
         routes[1].service: service \"shop\" is not defined (defined: api)"
    );
}

#[test]
fn a_missing_file_says_which_and_what_to_check() {
    let path = fixture("no_such_file");
    let err = load_file(&path).expect_err("missing");
    let lines = err.lines();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(
        line.starts_with(&format!("cannot read config file {}: ", path.display())),
        "{line}"
    );
    assert!(
        line.ends_with(" (check the path and its permissions)"),
        "{line}"
    );
}

/// The examples of docs/config.md are real: every error line it shows for
/// `serin check serin.yaml` is one that a case above pins.
#[test]
fn the_error_examples_in_the_docs_are_pinned_here() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md"))
        .expect("docs/config.md");
    let shown: Vec<&str> = docs
        .lines()
        .filter(|l| l.starts_with("serin.yaml"))
        .collect();
    assert!(shown.len() >= 3, "{shown:?}");
    for line in shown {
        let pinned = line.replacen("serin.yaml", "FILE", 1);
        assert!(
            CASES
                .iter()
                .any(|(_, lines)| lines.iter().any(|l| *l == pinned)),
            "docs/config.md shows a line no case pins:\n{line}"
        );
    }
}

/// Certificate files are read relative to the config file's directory; each one that
/// cannot be read is reported at its key.
#[test]
fn missing_certificate_files_are_named() {
    let lines = check_lines("files/tls_missing_files");
    let dir = Path::new(FIXTURES).join("files").join("no-such-dir");
    assert_eq!(
        lines,
        vec![
            format!("FILE: listeners[0].tls.certificates[0].cert: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("shop.pem").display()),
            format!("FILE: listeners[0].tls.certificates[0].key: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("shop.key").display()),
        ]
    );
}

/// A version's TLS files are read relative to the config file's directory; one that
/// cannot be read, or holds no certificate, is reported at its key.
#[test]
fn unusable_upstream_tls_files_are_named() {
    let lines = check_lines("files/upstream_tls_files");
    let files = Path::new(FIXTURES).join("files");
    let dir = files.join("no-such-dir");
    assert_eq!(
        lines,
        vec![
            format!("FILE: services[0].versions[0].tls.ca: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("ca.pem").display()),
            "FILE: services[0].versions[1].tls.ca: FILE holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the PEM certificates of the CAs to trust".to_string(),
            format!("FILE: services[0].versions[1].tls.cert: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("client.pem").display()),
            format!("FILE: services[0].versions[1].tls.key: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("client.key").display()),
        ]
    );
}

/// etcd's TLS files and password file are read relative to the config file's
/// directory; each one that cannot be read, or holds no certificate, is reported at its key.
#[test]
fn unusable_cluster_files_are_named() {
    let lines = check_lines("files/cluster_files");
    let dir = Path::new(FIXTURES).join("files").join("no-such-dir");
    assert_eq!(
        lines,
        vec![
            "FILE: cluster.etcd.tls.ca: FILE holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the PEM certificates of the CAs that sign etcd's certificates".to_string(),
            format!("FILE: cluster.etcd.tls.cert: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("serin.pem").display()),
            format!("FILE: cluster.etcd.tls.key: cannot read {}: No such file or directory (os error 2); fix the path (relative paths are relative to the config file's directory)", dir.join("serin.key").display()),
            format!("FILE: cluster.etcd.password_file: cannot read {}: the file does not exist; fix the path (a relative path is relative to the config file's directory) or create the file holding etcd's password", dir.join("etcd.password").display()),
        ]
    );
}

// Hostile documents and files: each is refused at once, with a short error line.

/// A directory of its own under the system's temp directory, for files a test makes.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("serin-invalid-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The lines `serin check` prints for `text` saved in `dir` as serin.yaml, the file's
/// path replaced by `FILE` (and `dir` by `DIR`).
fn check_text(dir: &Path, text: &str) -> Vec<String> {
    let config = dir.join("serin.yaml");
    std::fs::write(&config, text).expect("write the config");
    match load_file(&config) {
        Ok(_) => vec!["ok".to_string()],
        Err(err) => err
            .lines()
            .into_iter()
            .map(|line| {
                line.replace(&config.display().to_string(), "FILE")
                    .replace(&dir.display().to_string(), "DIR")
            })
            .collect(),
    }
}

const SERVICE: &str = "\
listeners: [{ name: web, listen: 127.0.0.1:8080 }]
routes: [{ listener: web, service: api }]
services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]
";

/// `listeners: [[[[…]]]]` 50 000 levels deep (100 KB) took 17–32 s to refuse, in
/// libyaml's scanner; now the first level past the limit ends the reading.
#[test]
fn fifty_thousand_levels_of_nesting_are_refused_at_once() {
    let n = 50_000;
    let text = format!("listeners: {}{}\n", "[".repeat(n), "]".repeat(n));
    let started = std::time::Instant::now();
    let err = parse_str(&text, "FILE").expect_err("too deep");
    // Loose: a loaded machine; it was 17 s and more.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(
        err.lines(),
        [
            "FILE:1:75: listeners[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][… (38 characters left out) …[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: lists and mappings nest more than 64 levels deep here, serin's limit; a serin config needs about 10: check for a `[` or `{` that is never closed"
        ]
    );
}

/// A 130 KB file of aliases to one 128 KiB string grew a running serin from 41 MB to
/// 590 MB; an alias now counts as what it repeats, before anything is expanded.
#[test]
fn aliases_that_would_repeat_megabytes_are_refused_before_they_are_expanded() {
    let big = "x".repeat(128 * 1024);
    let text = format!(
        "{SERVICE}state_dir: &big {big}\nadmin: {{ listen: [{}] }}\n",
        vec!["*big"; 500].join(", ")
    );
    assert!(text.len() < 135_000);
    assert_eq!(
        parse_str(&text, "FILE").expect_err("too large").lines(),
        [
            "FILE:5:391: admin.listen[62]: with the alias *big (which counts as the node it names) the document holds more than 8 MiB of text (each alias counting the text of the node it names), serin's limit; shorten the values, or repeat less through aliases"
        ]
    );
}

#[test]
fn an_alias_inside_the_node_it_names_is_refused() {
    let text =
        format!("{SERVICE}notify: &loop [{{ url: http://127.0.0.1:7000/, events: *loop }}]\n");
    assert_eq!(
        parse_str(&text, "FILE").expect_err("recursive").lines(),
        [
            "FILE:4:55: notify[0].events: the alias *loop is inside the node anchored &loop that it names, so it would repeat that node without end; move the alias out of the node"
        ]
    );
}

/// An error quotes the start of a value, never all of it: one such file wrote 135 MB
/// of log. Parse errors (serde's quotes), validation errors and paths alike.
#[test]
fn an_error_quotes_only_the_start_of_a_long_value() {
    let long = "a".repeat(200_000);
    let shown = format!("{}…", "a".repeat(80));
    let wrong_type = format!(
        "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\nroutes: [{{ listener: web, service: api }}]\nservices: [{{ name: api, versions: [{{ name: stable, endpoints: \"{long}\" }}] }}]\n"
    );
    assert_eq!(
        parse_str(&wrong_type, "FILE").expect_err("wrong type").lines(),
        [format!("FILE:3:63: services[0].versions[0].endpoints: invalid type: string \"{shown}\" (200000 characters), expected a list (write `[a, b]`, or one `- item` per line)")]
    );
    // A key longer than 1024 characters must be written after `? `.
    let unknown_key = format!("{SERVICE}? {long}\n: 1\n");
    assert_eq!(
        parse_str(&unknown_key, "FILE").expect_err("unknown key").lines(),
        [format!("FILE:4:3: unknown field `{shown}` (200000 characters), expected one of `admin`, `cluster`, `listeners`, `limits`, `routes`, `services`, `state_dir`, `telemetry`, `notify` (check the spelling; unknown keys are errors, not ignored)")]
    );
    let invalid = format!(
        "listeners: [{{ name: web, listen: \"{long}\" }}]\nroutes: [{{ listener: web, service: api }}]\nservices:\n  - name: api\n    versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}]\n    split:\n      weights:\n        stable: 1\n        ? {long}\n        : 1\n"
    );
    let mut lines = parse_str(&invalid, "FILE").expect_err("invalid").lines();
    assert_eq!(
        lines,
        [
            format!("FILE: listeners[0].listen: \"{shown}\" (200000 characters) is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"),
            format!("FILE: services[0].split.weights: version \"{shown}\" (200000 characters) is not defined (defined: stable)"),
        ]
    );
    // A key in the path is cut too.
    let header = format!(
        "{SERVICE}notify:\n  - url: http://127.0.0.1:7000/\n    events: [rolled_back]\n    headers:\n      ? x-{long}\n      : \"bad\\x01value\"\n"
    );
    let header_lines = parse_str(&header, "FILE").expect_err("invalid").lines();
    assert_eq!(
        header_lines,
        [format!("FILE: notify[0].headers.x-{}…: the value is not valid: it holds a character that cannot be sent in a header (a line break, a control character or a non-ASCII one)", "a".repeat(30))]
    );
    lines.extend(header_lines);
    for line in &lines {
        assert!(line.len() < 400, "{line}");
    }
}

/// Error lines stay one line: a control character in a value is escaped.
#[test]
fn a_value_with_a_line_break_is_quoted_on_one_line() {
    let text =
        "listeners: [{ name: web, listen: \"127.0.0.1:80\\n80\" }]\nroutes: []\nservices: []\n";
    assert_eq!(
        parse_str(text, "FILE").expect_err("invalid").lines(),
        [
            r#"FILE: listeners[0].listen: "127.0.0.1:80\n80" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"#
        ]
    );
}

/// The config file itself: a regular file of at most 4 MiB, in UTF-8. A FIFO is
/// refused without waiting for a writer, /dev/zero without reading it.
#[cfg(target_os = "linux")]
#[test]
fn the_config_file_is_read_only_if_it_is_a_regular_file_within_its_limit() {
    let dir = scratch("config-file");
    let lines = |path: &Path| {
        let err = load_file(path).expect_err("refused");
        err.lines()
            .into_iter()
            .map(|l| l.replace(&dir.display().to_string(), "DIR"))
            .collect::<Vec<_>>()
    };
    let fifo = dir.join("fifo.yaml");
    mkfifo(&fifo);
    assert_eq!(
        lines(&fifo),
        ["config file DIR/fifo.yaml is a FIFO (named pipe), not a regular file; give the path of the YAML file itself"]
    );
    assert_eq!(
        lines(Path::new("/dev/zero")),
        ["config file /dev/zero is a character device, not a regular file; give the path of the YAML file itself"]
    );
    assert_eq!(
        lines(&dir),
        ["config file DIR is a directory, not a regular file; give the path of the YAML file itself"]
    );
    let large = dir.join("large.yaml");
    let mut text = SERVICE.to_string();
    text.push_str(&"# padding\n".repeat(420_000));
    std::fs::write(&large, &text).expect("write");
    assert_eq!(
        lines(&large),
        ["config file DIR/large.yaml is larger than 4 MiB, the most serin reads of a config file; check that it is the config file meant"]
    );
    let latin1 = dir.join("latin1.yaml");
    std::fs::write(&latin1, b"state_dir: caf\xe9\n").expect("write");
    assert_eq!(
        lines(&latin1),
        ["config file DIR/latin1.yaml is not UTF-8 text (byte 14 is not); save it as UTF-8"]
    );
    // The same text given directly, as `parse_str` is.
    assert_eq!(
        parse_str(&text, "FILE").expect_err("too large").lines(),
        ["FILE: the config is larger than 4 MiB, the most serin reads of a config"]
    );
}

#[cfg(target_os = "linux")]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
}

/// Files the config names: regular files only, each within its limit, and all of them
/// within 64 MiB. `token_file: /dev/zero` grew `serin check` to gigabytes, and a FIFO
/// blocked it forever.
#[cfg(target_os = "linux")]
#[test]
fn named_files_are_read_only_if_regular_and_within_their_limits() {
    let dir = scratch("named-files");
    mkfifo(&dir.join("token.fifo"));
    assert_eq!(
        check_text(&dir, &format!("admin: {{ token_file: token.fifo }}\n{SERVICE}")),
        ["FILE: admin.token_file: DIR/token.fifo is a FIFO (named pipe), not a regular file; give the path of a file holding the admin API's token, or leave out `token_file` to serve the admin API without a token"]
    );
    std::fs::write(dir.join("large.token"), "x".repeat(64 * 1024 + 1)).expect("write");
    assert_eq!(
        check_text(&dir, &format!("admin: {{ token_file: large.token }}\n{SERVICE}")),
        ["FILE: admin.token_file: DIR/large.token is larger than 64 KiB, the most serin reads of a token file; write only the admin API's token into it (e.g. the output of `openssl rand -hex 32`)"]
    );
    std::fs::write(dir.join("empty.token"), "").expect("write");
    assert_eq!(
        check_text(&dir, &format!("admin: {{ token_file: empty.token }}\n{SERVICE}")),
        ["FILE: admin.token_file: DIR/empty.token is empty; write the admin API's token into it (e.g. the output of `openssl rand -hex 32`), or leave out `token_file` to serve the admin API without a token"]
    );

    // etcd's password file, read the same way.
    let cluster = |file: &str| {
        format!("cluster: {{ etcd: {{ endpoints: [http://127.0.0.1:2379], prefix: /p/, username: serin, password_file: {file} }} }}\n{SERVICE}")
    };
    assert_eq!(
        check_text(&dir, &cluster("/dev/zero")),
        ["FILE: cluster.etcd.password_file: /dev/zero is a character device, not a regular file; give the path of a file holding etcd's password"]
    );
    assert_eq!(
        check_text(&dir, &cluster("token.fifo")),
        ["FILE: cluster.etcd.password_file: DIR/token.fifo is a FIFO (named pipe), not a regular file; give the path of a file holding etcd's password"]
    );
    assert_eq!(
        check_text(&dir, &cluster("large.token")),
        ["FILE: cluster.etcd.password_file: DIR/large.token is larger than 64 KiB, the most serin reads of a password file; write only etcd's password into it"]
    );
    assert_eq!(
        check_text(&dir, &cluster("empty.token")),
        ["FILE: cluster.etcd.password_file: DIR/empty.token is empty; write etcd's password into it"]
    );

    let tls_version = |name: &str, ca: &str| {
        format!("{{ name: {name}, endpoints: [127.0.0.1:9001], tls: {{ ca: {ca} }} }}")
    };
    let with_versions = |versions: Vec<String>| {
        let weights: Vec<String> = (0..versions.len()).map(|i| format!("v{i}: 1")).collect();
        format!(
            "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\nroutes: [{{ listener: web, service: api }}]\nservices:\n  - name: api\n    versions: [{}]\n    split: {{ weights: {{ {} }} }}\n",
            versions.join(", "),
            weights.join(", ")
        )
    };
    std::fs::write(dir.join("huge-ca.pem"), vec![b'-'; 4 * 1024 * 1024 + 1]).expect("write");
    assert_eq!(
        check_text(&dir, &with_versions(vec![tls_version("v0", "/dev/zero"), tls_version("v1", "huge-ca.pem")])),
        [
            "FILE: services[0].versions[0].tls.ca: /dev/zero is a character device, not a regular file; give the path of a file holding the PEM certificates of the CAs to trust",
            "FILE: services[0].versions[1].tls.ca: DIR/huge-ca.pem is larger than 4 MiB, the most serin reads of such a file; give a file holding only the PEM certificates of the CAs to trust",
        ]
    );
    // Sixteen copies of a 4 MiB bundle fill the budget; the seventeenth is refused.
    std::fs::write(dir.join("ca.pem"), vec![b'-'; 4 * 1024 * 1024]).expect("write");
    let versions = (0..17)
        .map(|i| tls_version(&format!("v{i}"), "ca.pem"))
        .collect();
    let lines = check_text(&dir, &with_versions(versions));
    assert_eq!(lines.len(), 17);
    assert_eq!(
        lines[15],
        "FILE: services[0].versions[15].tls.ca: DIR/ca.pem holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the PEM certificates of the CAs to trust"
    );
    assert_eq!(
        lines[16],
        "FILE: services[0].versions[16].tls.ca: with DIR/ca.pem the files this config names add up to more than 64 MiB, the most serin reads for one config; name fewer or smaller files (each file named is read, and kept, once per key that names it)"
    );
}

/// serde_yaml_ng applies `<<` merges only to a document read as a whole, without
/// locations: an error in a file with merges names its path but not its line.
#[test]
fn errors_in_a_file_with_merges_name_their_path() {
    let with = |timeouts: &str| {
        format!(
            "listeners: [{{ name: web, listen: 127.0.0.1:8080 }}]\nroutes: [{{ listener: web, service: a }}]\nservices:\n  - name: a\n    versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}]\n    timeouts: &t {{ connect: 2s, request: 20s }}\n  - name: b\n    versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}]\n    timeouts: {timeouts}\n"
        )
    };
    let lines = |text: String| parse_str(&text, "FILE").expect_err("invalid").lines();
    assert_eq!(
        lines(with("{ <<: *t, retries: 3 }")),
        ["FILE: services[1].timeouts: unknown field `retries`, expected `connect` or `request` (check the spelling; unknown keys are errors, not ignored)"]
    );
    assert_eq!(
        lines(with("{ <<: *t, request: 5 }")),
        ["FILE: services[1].timeouts.request: invalid type: integer `5`, expected a string"]
    );
    assert_eq!(
        lines(with("{ <<: 5 }")),
        ["FILE: expected a mapping or list of mappings for merging, but found scalar: a `<<` key merges a mapping (`<<: *defaults`) or a list of mappings (`<<: [*a, *b]`) into the mapping that holds it"]
    );
    assert_eq!(
        lines(with("{ <<: *t, request: 0s }")),
        ["FILE: services[1].timeouts.request: \"0s\" is not a valid duration: it is zero; write a positive duration such as 500ms, 2s or 1m 30s"]
    );
}

/// Tens of thousands of problems: the first hundred are listed, then how many more;
/// finding and sorting them stays linear (58 s for 40 000 before, in a debug build).
#[test]
fn tens_of_thousands_of_problems_list_the_first_hundred() {
    let headers: Vec<String> = (0..40_000).map(|i| format!("x-h{i}: \"a\\x01\"")).collect();
    let text = format!(
        "{SERVICE}notify: [{{ url: http://127.0.0.1:7000/, events: [rolled_back], headers: {{ {} }} }}]\n",
        headers.join(", ")
    );
    let started = std::time::Instant::now();
    let err = parse_str(&text, "FILE").expect_err("invalid");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let lines = err.lines();
    assert_eq!(lines.len(), 101);
    assert_eq!(
        lines[0],
        "FILE: notify[0].headers.x-h0: the value is not valid: it holds a character that cannot be sent in a header (a line break, a control character or a non-ASCII one)"
    );
    assert_eq!(
        lines[100],
        "FILE: 39900 more errors not listed (serin lists the first 100); fix these first"
    );
    assert!(err
        .to_string()
        .starts_with("40000 errors in FILE:\n  notify[0].headers.x-h0: "));
}

/// Checks that compare each item with the others look items up instead of scanning:
/// 40 000 listeners took 43 s and 40 000 webhook headers 12 s (debug build).
#[test]
fn thousands_of_listeners_and_headers_are_checked_in_linear_time() {
    let listeners: Vec<String> = (0..40_000)
        .map(|i| {
            format!(
                "  - {{ name: l{i}, listen: 127.0.{}.{}:8080 }}",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let many_listeners = format!(
        "listeners:\n{}\n  - {{ name: last, listen: 0.0.0.0:8080 }}\nroutes: [{{ listener: l0, service: api }}]\nservices: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}] }}]\n",
        listeners.join("\n")
    );
    let headers: Vec<String> = (0..40_000).map(|i| format!("x-h{i}: v")).collect();
    let many_headers = format!(
        "{SERVICE}notify: [{{ url: http://127.0.0.1:7000/, events: [rolled_back], headers: {{ {}, X-H7: again }} }}]\n",
        headers.join(", ")
    );
    for (what, text, expected) in [
        (
            "listeners",
            many_listeners,
            "FILE: listeners[40000].listen: 0.0.0.0:8080 overlaps listeners[0].listen (127.0.0.1:8080): a wildcard address (0.0.0.0 or [::]) takes port 8080 on every address; give each listener its own address",
        ),
        (
            "headers",
            many_headers,
            "FILE: notify[0].headers.X-H7: \"X-H7\" is given twice (header names ignore case); give each header once",
        ),
    ] {
        let started = std::time::Instant::now();
        let err = parse_str(&text, "FILE").expect_err("invalid");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{what}");
        assert_eq!(err.lines(), [expected], "{what}");
    }
}
