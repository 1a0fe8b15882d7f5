//! The `serin` binary: `check`, startup failures, and SIGTERM draining.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::*;
use http::StatusCode;

const SERIN: &str = env!("CARGO_BIN_EXE_serin");

/// Runs `serin` with `args` (then `file`, when given) to completion.
fn serin(args: &[&str], file: Option<&Path>) -> Output {
    let mut command = Command::new(SERIN);
    command.args(args).stdin(Stdio::null());
    if let Some(file) = file {
        command.arg(file);
    }
    command.output().expect("run serin")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_accepts_the_quickstart_example_as_written() {
    let out = serin(
        &[
            "check",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.yaml"),
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert!(out.status.success());
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let dir = TempDir::new("cli");
    let file = write(
        &dir.0,
        "bad.yaml",
        r#"
listeners:
  - { name: web, listen: "127.0.0.1:99999" }
routes:
  - { listener: web, service: api }
services:
  - name: api
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002] }
    split:
      weights: { stable: 90, canry: 10 }
"#,
    );
    let out = serin(&["check"], Some(&file));
    assert_eq!(out.status.code(), Some(1));
    let f = file.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{f}: listeners[0].listen: \"127.0.0.1:99999\" is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)\n\
             {f}: services[0].split.weights: version \"canry\" is not defined (defined: stable, canary)\n\
             {f}: services[0].split.weights: no weight for version \"canary\"; give every version a weight (0 sends it no traffic)\n"
        )
    );
}

#[test]
fn check_reports_a_typo_with_its_place() {
    let dir = TempDir::new("cli");
    let file = write(
        &dir.0,
        "typo.yaml",
        "listeners:\n  - { name: web, listen: 127.0.0.1:8080 }\nservices:\n  - name: api\n    versions: [{ name: v1, endpoints: [127.0.0.1:1] }]\n    spilt: {}\n",
    );
    let out = serin(&["check"], Some(&file));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{}:6:5: services[0]: unknown field `spilt`",
            file.display()
        )),
        "{stdout}"
    );
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = serin(&["check", "/nonexistent/serin.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("cannot read config file /nonexistent/serin.yaml: "),
        "{stdout}"
    );
}

/// Hostile files cost `serin check` nothing: 50 000 levels of nesting are refused in
/// milliseconds (17 s and more before), `token_file: /dev/zero` is not read (it grew
/// the process to gigabytes), a FIFO is not waited on, and a 200 000-character value
/// is quoted by its start. Each problem is one short line.
#[test]
fn check_refuses_hostile_files_at_once_with_short_lines() {
    let dir = TempDir::new("cli");
    let deep = write(
        &dir.0,
        "deep.yaml",
        &format!("listeners: {}{}\n", "[".repeat(50_000), "]".repeat(50_000)),
    );
    let started = std::time::Instant::now();
    let out = serin(&["check"], Some(&deep));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}:1:75: listeners[0][0]", deep.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(": lists and mappings nest more than 64 levels deep here, serin's limit;"),
        "{stdout}"
    );

    let fifo = dir.0.join("token.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let long = "x".repeat(200_000);
    let hostile = write(
        &dir.0,
        "hostile.yaml",
        &format!(
            "admin: {{ listen: \"{long}\", token_file: /dev/zero }}\n\
             listeners: [{{ name: web, listen: 127.0.0.1:8080, tls: {{ certificates: [{{ cert: token.fifo, key: /dev/zero }}] }} }}]\n\
             routes: [{{ listener: web, service: api }}]\n\
             services: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9001] }}] }}]\n"
        ),
    );
    let out = serin(&["check"], Some(&hostile));
    assert_eq!(out.status.code(), Some(1));
    let f = hostile.display();
    let d = dir.0.display();
    let x80 = "x".repeat(80);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{f}: admin.listen: \"{x80}…\" (200000 characters) is not a socket address (write IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)\n\
             {f}: admin.token_file: /dev/zero is a character device, not a regular file; give the path of a file holding the admin API's token, or leave out `token_file` to serve the admin API without a token\n"
        )
    );
    // Without the admin errors, the listener's files are read: refused too.
    let listener_only = write(
        &dir.0,
        "listener.yaml",
        "listeners: [{ name: web, listen: 127.0.0.1:8080, tls: { certificates: [{ cert: token.fifo, key: /dev/zero }] } }]\n\
         routes: [{ listener: web, service: api }]\n\
         services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]\n",
    );
    let out = serin(&["check"], Some(&listener_only));
    assert_eq!(out.status.code(), Some(1));
    let f = listener_only.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{f}: listeners[0].tls.certificates[0].cert: {d}/token.fifo is a FIFO (named pipe), not a regular file; give the path of a file holding a PEM certificate chain, leaf first\n\
             {f}: listeners[0].tls.certificates[0].key: /dev/zero is a character device, not a regular file; give the path of a file holding the certificate's PEM private key\n"
        )
    );
}

#[test]
fn run_refuses_an_invalid_config_without_serving() {
    let dir = TempDir::new("cli");
    let file = write(&dir.0, "bad.yaml", "listeners: []\n");
    let out = serin(&["--config"], Some(&file));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listeners: at least one listener is required"),
        "{stderr}"
    );
    assert!(stderr.contains("is not a valid config"), "{stderr}");
}

#[test]
fn run_without_a_config_says_how_to_give_one() {
    let out = serin(&["run"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no config file given: run `serin run --config FILE`"));
}

#[test]
fn run_fails_clearly_when_a_listener_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = TempDir::new("cli");
    let file = write(
        &dir.0,
        "taken.yaml",
        &format!(
            "admin: {{ listen: 127.0.0.1:0 }}\nlisteners: [{{ name: web, listen: \"{addr}\" }}]\nroutes: []\nservices: []\n"
        ),
    );
    let out = serin(&["--config"], Some(&file));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} for listener \"web\"")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    stable.set_delay(Duration::from_millis(1500));
    let dir = TempDir::new("cli");
    let config = write(
        &dir.0,
        "serin.yaml",
        &two_versions(
            stable.addr,
            canary.addr,
            "    split: { weights: { stable: 1, canary: 0 } }",
        ),
    );
    let serin = crate::common::process::SerinProcess::start(&config, 2, &[], &[]);
    let (admin, web) = (serin.admin, serin.web);
    let client = client();
    assert_eq!(
        get(&client, &format!("http://{admin}/readyz"), &[])
            .await
            .status,
        StatusCode::OK
    );

    let url = format!("http://{web}/slow");
    let in_flight = tokio::spawn(async move { get(&crate::common::client(), &url, &[]).await });
    eventually(
        Duration::from_secs(5),
        "the slow request reached the backend",
        || async { stable.hits() == 1 },
    )
    .await;
    serin.signal(libc::SIGTERM);
    // While draining, readiness fails so that load balancers stop sending traffic.
    let readyz = format!("http://{admin}/readyz");
    eventually(Duration::from_secs(5), "readyz reports draining", || {
        let readyz = readyz.clone();
        async move {
            let fresh = crate::common::client();
            matches!(
                tokio::time::timeout(Duration::from_secs(1), fresh.get(readyz.parse().expect("uri"))).await,
                Ok(Ok(r)) if r.status() == StatusCode::SERVICE_UNAVAILABLE
            )
        }
    })
    .await;

    let got = in_flight.await.expect("client task");
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));
    let status = tokio::task::spawn_blocking(move || {
        let mut serin = serin;
        serin.child.wait()
    })
    .await
    .expect("join")
    .expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// The README's main command: the demo ends with the outcome its scenario promises.
fn demo(scenario: &str) -> (Option<i32>, String) {
    let out = serin(&["demo", "--scenario", scenario, "--limit", "60s"], None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_demo_rolls_a_bad_canary_back() {
    let (code, stdout) = demo("bad");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("result: serin rolled the canary back on its own."),
        "{stdout}"
    );
    assert!(
        stdout.contains("decision: RolledBack → canary 0%"),
        "{stdout}"
    );
}

#[test]
fn the_demo_catches_a_bad_canary_in_shadow_before_any_user_meets_it() {
    let (code, stdout) = demo("shadow");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("result: serin rolled the canary back on its own."),
        "{stdout}"
    );
    assert!(
        stdout.contains("  users' requests the canary answered: 0;"),
        "{stdout}"
    );
    // The shadow step's numbers read as copies and comparisons.
    assert!(
        stdout.contains("| canary in shadow: copies ") && stdout.contains("; compared "),
        "{stdout}"
    );
    assert!(!stdout.contains("canary:shadow"), "{stdout}");
}

#[test]
fn the_demo_promotes_a_good_canary() {
    let (code, stdout) = demo("good");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("result: the canary passed every step and was promoted to 100%."),
        "{stdout}"
    );
}

/// On a terminal the demo redraws a live view (the rollout's progress through its
/// steps, a line per version) instead of printing a line a second. `script` (util-linux)
/// gives it a pseudo-terminal.
#[test]
fn the_demo_draws_a_live_view_on_a_terminal() {
    let command = format!("{SERIN} demo --scenario bad --fault-after 3s --limit 60s");
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo under script(1) from util-linux");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("rollout ["), "{text}");
    assert!(text.contains("step 1/4"), "{text}");
    assert!(
        text.contains("result: serin rolled the canary back on its own."),
        "{text}"
    );
    // No plain per-second lines on a terminal.
    assert!(!text.contains("  1s  "), "{text}");
}

/// A config with `cluster` needs fleet mode, a build feature: a build without it says
/// so at `check` and refuses to start, rather than serving as one node unnoticed.
#[test]
fn a_cluster_config_needs_a_build_with_fleet_mode() {
    let dir = TempDir::new("cli");
    let file = write(
        &dir.0,
        "fleet.yaml",
        "listeners: [{ name: web, listen: 127.0.0.1:0 }]\nroutes: [{ listener: web, service: api }]\n\
         services: [{ name: api, versions: [{ name: stable, endpoints: [127.0.0.1:9001] }] }]\n\
         admin: { listen: 127.0.0.1:0 }\n\
         cluster: { etcd: { endpoints: [http://127.0.0.1:9], prefix: /serin/test/ } }\n",
    );
    let check = serin(&["check"], Some(&file));
    let stdout = String::from_utf8_lossy(&check.stdout);
    if cfg!(feature = "fleet") {
        assert_eq!(stdout, "ok\n");
        assert!(check.status.success());
        return;
    }
    let why = "cluster: this serin was built without fleet mode: build with `--features fleet` \
               (or leave out `cluster` to run one serin on its own)";
    assert_eq!(stdout, format!("{}: {why}\n", file.display()));
    assert_eq!(check.status.code(), Some(1));
    let run = serin(&["run", "--config"], Some(&file));
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains(&format!("not starting: {}: {why}", file.display())),
        "{stderr}"
    );
}
