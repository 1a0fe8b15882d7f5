//! The ops commands of the real `serin` binary against a real `serin run`: what a person
//! at a terminal sees, and the exit codes scripts rely on.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::process::{ops, stderr, stdout, SerinProcess, SERIN};
use crate::common::*;
use serde_json::{json, Value};

/// A rollout held at 20 % until a person acts.
const HELD: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 10s\n        rules:\n          - error_rate: { max: 50% }\n";

/// Backends, and `serin run` with `api` (the held rollout) and `web` (no rollout).
async fn start(token: Option<&str>) -> (Backend, Backend, SerinProcess, TempDir) {
    start_with(token, None).await
}

/// [`start`], with `admin.token_file: admin.token` holding `token_file` when given.
async fn start_with(
    token: Option<&str>,
    token_file: Option<&str>,
) -> (Backend, Backend, SerinProcess, TempDir) {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("ops");
    let mut yaml = rollout_config(stable.addr, canary.addr, &dir.0, HELD);
    yaml.push_str(&format!(
        "  - name: web\n    versions:\n      - {{ name: v1, endpoints: [{}] }}\n",
        stable.addr
    ));
    if let Some(content) = token_file {
        // Relative to the config file's directory, whatever serin's working directory.
        std::fs::write(dir.0.join("admin.token"), content).expect("write the token file");
        yaml = yaml.replace(
            "admin: { listen: 127.0.0.1:0 }",
            "admin: { listen: 127.0.0.1:0, token_file: admin.token }",
        );
        assert!(yaml.contains("token_file"));
    }
    let config = dir.0.join("serin.yaml");
    std::fs::write(&config, yaml).expect("write the config");
    let running = SerinProcess::start(&config, 1, &[], &[("SERIN_ADMIN_TOKEN", token)]);
    (stable, canary, running, dir)
}

async fn traffic(web: SocketAddr, n: usize) {
    let client = client();
    for _ in 0..n {
        let got = get(&client, &format!("http://{web}/"), &[]).await;
        assert!(got.status.is_success(), "{}", got.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_table_and_the_json_of_the_api() {
    let (stable, canary, serin, _dir) = start(None).await;
    traffic(serin.web, 50).await;
    let (s, c) = (stable.hits() as u64, canary.hits() as u64);
    assert_eq!(s + c, 50);
    let admin = serin.admin_url();

    let status_json = |admin: String| async move {
        let out = ops(&["status", "api", "--json", "--admin", &admin], None).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str::<Value>(&stdout(&out)).expect("status --json prints JSON")
    };
    eventually(
        Duration::from_secs(10),
        "status shows all 50 requests",
        || async {
            let json = status_json(admin.clone()).await;
            json["versions"]["stable"]["requests"] == s
                && json["versions"]["canary"]["requests"] == c
        },
    )
    .await;
    let json = status_json(admin.clone()).await;
    assert_eq!(json["versions"]["stable"]["requests"], s, "{json}");
    assert_eq!(json["versions"]["canary"]["requests"], c, "{json}");
    assert_eq!(json["weights"], json!({"stable": 80, "canary": 20}));
    assert_eq!(json["rollout"]["state"], "progressing");

    // Every service, as tables, versions in declared order; the admin address from
    // SERIN_ADMIN works as --admin does.
    let out = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            Command::new(SERIN)
                .arg("status")
                .env("SERIN_ADMIN", admin)
                .env_remove("SERIN_ADMIN_TOKEN")
                .output()
                .expect("run serin status")
        }
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("api: rollout progressing, step 0, since 20"),
        "{text}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["version", "weight", "requests", "rps", "errors", "error", "rate", "p95", "p99"],
        "{text}"
    );
    let row = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let stable_row = row(lines[2]);
    let canary_row = row(lines[3]);
    assert_eq!(stable_row[..3], ["stable", "80", &s.to_string()], "{text}");
    assert_eq!(canary_row[..3], ["canary", "20", &c.to_string()], "{text}");
    assert_eq!(stable_row[4..6], ["0", "0.00%"], "{text}");
    assert!(stable_row[6].ends_with("ms"), "{text}");
    assert!(
        lines.iter().any(|l| l.starts_with("web: no rollout")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_abort_and_the_timeline() {
    let (stable, canary, serin, _dir) = start(None).await;
    let admin = serin.admin_url();

    let out = ops(
        &[
            "weights",
            "api",
            "stable=0",
            "canary=100",
            "--admin",
            &admin,
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("api: rollout paused, step 0, since 20")
            && text
                .lines()
                .next()
                .is_some_and(|l| l.contains("(weights set by hand)")),
        "{text}"
    );
    traffic(serin.web, 20).await;
    assert_eq!((stable.hits(), canary.hits()), (0, 20));

    let out = ops(&["abort", "api", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("api: rollout rolled_back, step 0, since 20")
            && text
                .lines()
                .next()
                .is_some_and(|l| l.contains("(aborted by hand)")),
        "{text}"
    );
    traffic(serin.web, 20).await;
    assert_eq!((stable.hits(), canary.hits()), (20, 20));

    let out = ops(&["timeline", "api", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["time", "event", "by", "state", "step", "weights", "why"],
        "{text}"
    );
    let events: Vec<(&str, &str, &str)> = rows[1..].iter().map(|r| (r[1], r[2], r[3])).collect();
    assert_eq!(
        events,
        [
            ("started", "serin", "progressing"),
            ("manual_weights", "hand", "paused"),
            ("rolled_back", "hand", "rolled_back"),
        ],
        "{text}"
    );
    assert!(
        text.lines()
            .nth(3)
            .is_some_and(|l| l.contains("canary=0 stable=100") && l.ends_with("aborted by hand")),
        "{text}"
    );

    let out = ops(&["timeline", "api", "--json", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).expect("timeline --json prints JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    assert_eq!(json[2]["event"], "rolled_back");

    // Refusals exit 1 with the API's message.
    let out = ops(&["promote", "api", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: the rollout of \"api\" is already rolled_back (aborted by hand), so there is nothing to promote"),
        "{}",
        stderr(&out)
    );
    let out = ops(&["pause", "web", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("error: service \"web\" has no rollout, so there is nothing to pause"),
        "{}",
        stderr(&out)
    );
    let out = ops(&["weights", "api", "canry=10", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: \"canry\": service \"api\" has no version \"canry\" (versions: stable, canary)\n"
    );
    let out = ops(&["status", "nope", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: service \"nope\" is not defined (defined: api, web); GET /api/v1/services lists them\n"
    );
    // The file has not changed: a reload has nothing to apply.
    let out = ops(&["reload", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "reloaded: the file is unchanged, nothing to apply\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_serin_admin_token() {
    let (_stable, _canary, serin, _dir) = start(Some("t0ken")).await;
    let admin = serin.admin_url();

    let out = ops(&["status", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: this endpoint needs the admin token: send `Authorization: Bearer <token>` (the serin CLI sends $SERIN_ADMIN_TOKEN) (SERIN_ADMIN_TOKEN is not set here)\n"
    );
    let out = ops(&["status", "--admin", &admin], Some("wrong")).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("SERIN_ADMIN_TOKEN here is not that serin's token"));

    let out = ops(&["status", "--admin", &admin], Some("t0ken")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("api: rollout progressing"));

    // The health checks need no token.
    let got = get(&client(), &format!("{admin}/readyz"), &[]).await;
    assert_eq!(got.status, http::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_file_of_the_config_guards_the_api() {
    let (_stable, _canary, serin, _dir) = start_with(None, Some("from-the-file\n")).await;
    let admin = serin.admin_url();
    let out = ops(&["status", "api", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: this endpoint needs the admin token"),
        "{}",
        stderr(&out)
    );
    let out = ops(&["abort", "api", "--admin", &admin], Some("from-the-file")).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("api: rollout rolled_back"));
}

#[test]
fn an_empty_serin_admin_token_stops_serin_run_from_starting() {
    let dir = TempDir::new("ops");
    let config = dir.0.join("serin.yaml");
    std::fs::write(
        &config,
        "admin: { listen: 127.0.0.1:0 }\nlisteners: [{ name: web, listen: 127.0.0.1:0 }]\nroutes: []\nservices: []\n",
    )
    .expect("write the config");
    let out = Command::new(SERIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("SERIN_ADMIN_TOKEN", " ")
        .stdin(Stdio::null())
        .output()
        .expect("run serin");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("SERIN_ADMIN_TOKEN is empty: set it to the admin API's token, or unset it to use admin.token_file (or no token)"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_admin_api_is_named_with_how_to_point_elsewhere() {
    let closed = closed_port().await;
    let url = format!("http://{closed}");
    let out = ops(&["status", "--admin", &url], None).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: cannot reach serin's admin API at {url}: ")),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("is serin running there? point at its admin.listen address with --admin URL or SERIN_ADMIN"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    for args in [
        &["weights", "api", "stable"][..],
        &["weights", "api", "stable=eighty"],
        &["weights", "api", "=80"],
        &["weights", "api"],
        &["promote"],
    ] {
        let out = ops(args, None).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("Usage:") || stderr(&out).contains("--help"),
            "{args:?}"
        );
    }
    let out = ops(&["weights", "api", "stable"], None).await;
    assert!(
        stderr(&out).contains("\"stable\" is not VERSION=WEIGHT (e.g. stable=80 canary=20)"),
        "{}",
        stderr(&out)
    );
    let out = ops(&["weights", "api", "stable=1", "stable=2"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: version \"stable\" is given twice; give each version once (e.g. stable=80 canary=20)\n"
    );
    let out = ops(&["status", "--admin", "https://127.0.0.1:9901"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("plain HTTP"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_a_probe_for_containers() {
    let (_stable, _canary, serin, _dir) = start(None).await;
    let admin = serin.admin_url();
    let out = ops(&["ready", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ready\n");
    let out = ops(&["ready", "--live", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ok\n");
    drop(serin);
    let out = ops(&["ready", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(1));
}

/// `request` (raw bytes) to `admin`: the status line and the body.
async fn raw(admin: SocketAddr, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_run_answers_the_names_in_allowed_hosts_and_the_cli_still_works() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("ops-hosts");
    let yaml = rollout_config(stable.addr, canary.addr, &dir.0, HELD).replace(
        "admin: { listen: 127.0.0.1:0 }",
        "admin: { listen: 127.0.0.1:0, allowed_hosts: [serin-admin.test] }",
    );
    assert!(yaml.contains("allowed_hosts"));
    let config = dir.0.join("serin.yaml");
    std::fs::write(&config, &yaml).expect("write the config");
    let mut serin = SerinProcess::start(&config, 1, &[], &[]);
    let port = serin.admin.port();
    let get = |host: &str| {
        format!("GET /api/v1/services/api HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
    };

    let (status, body) = raw(serin.admin, &get(&format!("serin-admin.test:{port}"))).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let (status, body) = raw(serin.admin, &get(&format!("other.test:{port}"))).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden", "{body}");
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("add \"other.test\" to admin.allowed_hosts")),
        "{body}"
    );

    // The CLI names serin by its address and sends no Origin: nothing changes for it.
    let admin = serin.admin_url();
    let out = ops(&["pause", "api", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = ops(&["weights", "api", "canary=0", "--admin", &admin], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("(weights set by hand)"),
        "{}",
        stdout(&out)
    );

    // A changed list takes a restart: a reload says so and keeps the list in use.
    std::fs::write(
        &config,
        yaml.replace("[serin-admin.test]", "[serin-admin.test, other.test]"),
    )
    .expect("write the config");
    serin.signal(libc::SIGHUP);
    serin.wait_for("the restart warning", |l| {
        l["message"] == "admin.allowed_hosts changes take effect on restart"
    });
    serin.wait_for("the reload", |l| l["message"] == "config reloaded");
    let (status, _) = raw(serin.admin, &get(&format!("other.test:{port}"))).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden");
    drop(serin);
}
