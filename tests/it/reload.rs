//! Hot reload of the real binary: a changed file, SIGHUP and `POST /api/v1/reload` apply
//! a valid config whole, without failing a request; a broken one changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::process::SerinProcess;
use crate::common::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

fn split(stable: u32, canary: u32) -> String {
    format!("    split: {{ weights: {{ stable: {stable}, canary: {canary} }} }}")
}

/// Replaces `path` the way editors save: a new file renamed over the old one.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).expect("write the new config");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

struct Setup {
    stable: Backend,
    canary: Backend,
    dir: TempDir,
    config: PathBuf,
}

async fn setup(initial: impl FnOnce(&Backend, &Backend, &Path) -> String) -> Setup {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let dir = TempDir::new("reload");
    let config = dir.0.join("serin.yaml");
    std::fs::write(&config, initial(&stable, &canary, &dir.0)).expect("write the config");
    Setup {
        stable,
        canary,
        dir,
        config,
    }
}

async fn api(method: Method, url: String) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let got = send(&client(), req).await;
    let json = serde_json::from_str(&got.body).unwrap_or(Value::Null);
    (got.status, json)
}

async fn config_status(serin: &SerinProcess) -> Value {
    let (status, json) = api(Method::GET, format!("{}/api/v1/config", serin.admin_url())).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json
}

async fn versions_of(serin: &SerinProcess, n: usize) -> (usize, usize) {
    let client = client();
    let (mut stable, mut canary) = (0, 0);
    for _ in 0..n {
        let got = get(&client, &serin.url("/"), &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        match got.body.as_str() {
            "stable" => stable += 1,
            "canary" => canary += 1,
            other => panic!("unexpected body {other}"),
        }
    }
    (stable, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_file_moves_traffic_without_failing_a_request() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    let serin = SerinProcess::start(&s.config, 2, &[], &[]);
    let load = Load::start(serin.url("/"), 4, Duration::from_millis(2));
    eventually(Duration::from_secs(5), "traffic reaches stable", || async {
        s.stable.hits() > 50
    })
    .await;
    assert_eq!(s.canary.hits(), 0);

    save(
        &s.config,
        &two_versions(s.stable.addr, s.canary.addr, &split(0, 100)),
    );
    eventually(
        Duration::from_secs(10),
        "traffic moves to canary",
        || async { s.canary.hits() > 50 },
    )
    .await;
    let stable_after = s.stable.hits();
    let canary_before = s.canary.hits();
    eventually(Duration::from_secs(5), "canary keeps serving", || async {
        s.canary.hits() > canary_before + 50
    })
    .await;
    // Nothing more reaches stable once the new weights serve.
    assert!(s.stable.hits() <= stable_after + 4);
    let tally = load.stop().await;
    assert_eq!(tally.errors.load(std::sync::atomic::Ordering::SeqCst), 0);

    let status = config_status(&serin).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
    assert_eq!(status["last_reload"]["trigger"], "file", "{status}");
    assert_eq!(status["reloads"]["failure"], 0, "{status}");
    // Reading the file to reload it is no change: one save, one reload.
    assert_eq!(status["reloads"]["success"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_saved_twice_is_one_failure_and_an_explicit_reload_another() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    let mut serin = SerinProcess::start(&s.config, 1, &[], &[]);
    let broken = two_versions(s.stable.addr, s.canary.addr, &split(0, 0));
    save(&s.config, &broken);
    eventually(Duration::from_secs(10), "the broken save fails", || async {
        config_status(&serin).await["reloads"]["failure"] == 1
    })
    .await;
    let first = config_status(&serin).await;
    assert_eq!(first["last_reload"]["trigger"], "file", "{first}");
    // Saved again, just as broken: the same failure, not a second one.
    save(&s.config, &broken);
    serin.wait_for("the second save seen as the same failure", |line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("still fails the same way"))
    });
    let again = config_status(&serin).await;
    assert_eq!(again["reloads"], first["reloads"], "{again}");
    assert_eq!(again["last_reload"], first["last_reload"], "{again}");
    assert_eq!(versions_of(&serin, 10).await, (10, 0));
    // Asked for explicitly, the reload is tried, fails and is counted.
    let (status, json) = api(Method::POST, format!("{}/api/v1/reload", serin.admin_url())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(config_status(&serin).await["reloads"]["failure"], 2);
    // Fixed: applied, and a later break is a new failure again.
    save(
        &s.config,
        &two_versions(s.stable.addr, s.canary.addr, &split(0, 100)),
    );
    eventually(
        Duration::from_secs(10),
        "the fixed file applies",
        || async { config_status(&serin).await["reloads"]["success"] == 1 },
    )
    .await;
    assert_eq!(versions_of(&serin, 10).await, (0, 10));
    save(&s.config, &broken);
    eventually(Duration::from_secs(10), "a new break fails", || async {
        config_status(&serin).await["reloads"]["failure"] == 3
    })
    .await;
    assert_eq!(versions_of(&serin, 10).await, (0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_an_unwatched_file_waits_for_it() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    let serin = SerinProcess::start(&s.config, 1, &["--no-watch"], &[]);
    let before = config_status(&serin).await;
    save(
        &s.config,
        &two_versions(s.stable.addr, s.canary.addr, &split(0, 100)),
    );
    // Not watched: still the old weights.
    assert_eq!(versions_of(&serin, 20).await, (20, 0));
    assert_eq!(config_status(&serin).await["hash"], before["hash"]);

    serin.signal(libc::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "SIGHUP reloads the file",
        || async { config_status(&serin).await["last_reload"]["trigger"] == "signal" },
    )
    .await;
    assert_eq!(versions_of(&serin, 20).await, (0, 20));
    let after = config_status(&serin).await;
    assert_ne!(after["hash"], before["hash"]);
    assert_eq!(after["last_reload"]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_broken_file_keeps_the_running_config() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    let serin = SerinProcess::start(&s.config, 1, &["--no-watch"], &[]);
    let good = two_versions(s.stable.addr, s.canary.addr, &split(0, 100));
    let reload_url = format!("{}/api/v1/reload", serin.admin_url());
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "a YAML syntax error",
            Some(good.replace("weights: {", "weights: [")),
            "serin.yaml",
        ),
        (
            "a truncated file",
            Some(good[..good.len() / 2].to_string()),
            "serin.yaml",
        ),
        ("an empty file", Some(String::new()), "the file is empty"),
        (
            "invalid values",
            Some(two_versions(s.stable.addr, s.canary.addr, &split(0, 0))),
            "services[0].split.weights",
        ),
        (
            "nesting 50 000 levels deep",
            Some(format!(
                "listeners: {}{}\n",
                "[".repeat(50_000),
                "]".repeat(50_000)
            )),
            "lists and mappings nest more than 64 levels deep here",
        ),
        ("a deleted file", None, "cannot read config file"),
    ];
    let mut failures = 0;
    for (what, content, expected) in cases {
        match content {
            Some(text) => save(&s.config, &text),
            None => std::fs::remove_file(&s.config).expect("delete the config"),
        }
        let (status, json) = api(Method::POST, reload_url.clone()).await;
        failures += 1;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {json}");
        let errors = json["errors"].to_string();
        assert!(errors.contains(expected), "{what}: {errors}");
        // Still serving the old weights.
        assert_eq!(versions_of(&serin, 10).await, (10, 0), "{what}");
        let status = config_status(&serin).await;
        assert_eq!(status["last_reload"]["ok"], false, "{what}: {status}");
        assert_eq!(status["reloads"]["failure"], failures, "{what}: {status}");
    }
    // A directory where the file was: unreadable.
    std::fs::create_dir(&s.config).expect("a directory in the file's place");
    let (status, json) = api(Method::POST, reload_url.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert_eq!(versions_of(&serin, 10).await, (10, 0));
    std::fs::remove_dir(&s.config).expect("remove the directory");
    // A FIFO with no writer: refused at once, not waited on.
    let made = std::process::Command::new("mkfifo")
        .arg(&s.config)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let (status, json) = api(Method::POST, reload_url.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert!(
        json["errors"]
            .to_string()
            .contains("is a FIFO (named pipe), not a regular file"),
        "{json}"
    );
    std::fs::remove_file(&s.config).expect("remove the FIFO");

    // Fixed: applied.
    save(&s.config, &good);
    let (status, json) = api(Method::POST, reload_url).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(versions_of(&serin, 10).await, (0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_are_added_and_removed_and_a_taken_address_changes_nothing() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    let mut serin = SerinProcess::start(&s.config, 2, &["--no-watch"], &[]);
    let reload_url = format!("{}/api/v1/reload", serin.admin_url());
    let with_second = |listen: &str, weights: &str| {
        two_versions(s.stable.addr, s.canary.addr, weights)
            .replace(
                "  - { name: web, listen: 127.0.0.1:0 }\n",
                &format!("  - {{ name: web, listen: 127.0.0.1:0 }}\n  - {{ name: extra, listen: {listen} }}\n"),
            )
            .replace(
                "routes:\n",
                "routes:\n  - { listener: extra, service: api }\n",
            )
    };

    // A taken address (the canary backend's) fails the whole reload: the weights in
    // the same file are not applied either.
    save(
        &s.config,
        &with_second(&s.canary.addr.to_string(), &split(0, 100)),
    );
    let (status, json) = api(Method::POST, reload_url.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert!(
        json["errors"]
            .to_string()
            .contains("listener \\\"extra\\\""),
        "{json}"
    );
    assert_eq!(versions_of(&serin, 10).await, (10, 0));

    // A free address: the listener serves.
    save(&s.config, &with_second("127.0.0.1:0", &split(100, 0)));
    let (status, json) = api(Method::POST, reload_url.clone()).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let extra = serin.addr_of("listening");
    let got = get(&client(), &format!("http://{extra}/"), &[]).await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));

    // Removed: it stops accepting; the other listener still serves.
    save(
        &s.config,
        &two_versions(s.stable.addr, s.canary.addr, &split(100, 0)),
    );
    let (status, json) = api(Method::POST, reload_url).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    eventually(
        Duration::from_secs(5),
        "the removed listener refuses connections",
        || async { tokio::net::TcpStream::connect(extra).await.is_err() },
    )
    .await;
    assert_eq!(versions_of(&serin, 5).await, (5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_reloads_until_its_spec_changes() {
    const HELD: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 10s\n        rules:\n          - error_rate: { max: 50% }\n";
    let s = setup(|st, ca, dir| rollout_config(st.addr, ca.addr, dir, HELD)).await;
    let serin = SerinProcess::start(&s.config, 1, &["--no-watch"], &[]);
    let admin = serin.admin_url();
    let service = || api(Method::GET, format!("{admin}/api/v1/services/api"));
    let (_, json) = service().await;
    assert_eq!(json["rollout"]["state"], "progressing", "{json}");
    assert_eq!(json["weights"]["canary"], 20, "{json}");

    let (status, json) = api(Method::POST, format!("{admin}/api/v1/services/api/abort")).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // An unrelated change (a second service): the rollout stays rolled back.
    let mut text = rollout_config(s.stable.addr, s.canary.addr, &s.dir.0, HELD);
    text.push_str(&format!(
        "  - name: other\n    versions:\n      - {{ name: v1, endpoints: [{}] }}\n",
        s.stable.addr
    ));
    save(&s.config, &text);
    let (status, json) = api(Method::POST, format!("{admin}/api/v1/reload")).await;
    assert_eq!(
        (status, &json["unchanged"]),
        (StatusCode::OK, &Value::Bool(false)),
        "{json}"
    );
    let (_, json) = service().await;
    assert_eq!(json["rollout"]["state"], "rolled_back", "{json}");
    assert_eq!(json["weights"]["canary"], 0, "{json}");
    assert_eq!(versions_of(&serin, 20).await, (20, 0));
    // The same rollout, not a resumed copy: its timeline goes on.
    let (_, timeline) = api(Method::GET, format!("{admin}/api/v1/services/api/timeline")).await;
    let events: Vec<&str> = timeline
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(events, ["started", "rolled_back"], "{timeline}");

    // A changed spec is a new rollout, starting at its first step.
    save(
        &s.config,
        &text.replace("weight: 20, hold: 1h", "weight: 50, hold: 1h"),
    );
    let (status, json) = api(Method::POST, format!("{admin}/api/v1/reload")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (_, json) = service().await;
    assert_eq!(json["rollout"]["state"], "progressing", "{json}");
    assert_eq!(json["weights"]["canary"], 50, "{json}");
    let (stable, canary) = versions_of(&serin, 200).await;
    assert!((60..=140).contains(&canary), "{stable}/{canary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_finishes_where_it_started() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    s.stable.set_delay(Duration::from_millis(800));
    let serin = SerinProcess::start(&s.config, 1, &["--no-watch"], &[]);
    let url = serin.url("/slow");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    eventually(
        Duration::from_secs(5),
        "the request reached stable",
        || async { s.stable.hits() == 1 },
    )
    .await;
    save(
        &s.config,
        &two_versions(s.stable.addr, s.canary.addr, &split(0, 100)),
    );
    let (status, json) = api(Method::POST, format!("{}/api/v1/reload", serin.admin_url())).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let got = in_flight.await.expect("client task");
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));
    s.stable.set_delay(Duration::ZERO);
    assert_eq!(versions_of(&serin, 5).await, (0, 5));
}

/// A file that takes a while to check (7 700 services, near the limit of 250 000
/// values, with one error at the end: about 2 s in a debug build) is read and checked
/// off the thread that serves the admin listener: `/healthz` keeps answering all the
/// while, so a liveness probe would not restart serin. Before, the thread was busy for
/// the whole check (17–32 s for a hostile file) and not one probe was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_a_reload_checks_a_large_file() {
    let s = setup(|st, ca, _| two_versions(st.addr, ca.addr, &split(100, 0))).await;
    let serin = SerinProcess::start(&s.config, 1, &["--no-watch"], &[]);
    let mut large = two_versions(s.stable.addr, s.canary.addr, &split(100, 0));
    for i in 0..7_700 {
        large.push_str(&format!(
            "  - {{ name: s{i}, versions: [{{ name: stable, endpoints: [127.0.0.1:9001, 127.0.0.1:9002] }}, {{ name: canary, endpoints: [127.0.0.1:9003] }}], split: {{ weights: {{ stable: 90, canary: 10 }} }}, timeouts: {{ connect: 1s, request: 5s }} }}\n"
        ));
    }
    large.push_str("  - { name: last, versions: [{ name: stable, endpoints: [127.0.0.1:0] }] }\n");
    save(&s.config, &large);

    let reload_url = format!("{}/api/v1/reload", serin.admin_url());
    let reload = tokio::spawn(async move { api(Method::POST, reload_url).await });
    let healthz = format!("{}/healthz", serin.admin_url());
    let client = client();
    let mut answered_during_reload = 0;
    while !reload.is_finished() {
        let got = get(&client, &healthz, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        if !reload.is_finished() {
            answered_during_reload += 1;
        }
    }
    let (status, json) = reload.await.expect("reload task");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
    assert!(
        json["errors"]
            .to_string()
            .contains("services[7701].versions[0].endpoints[0]"),
        "{json}"
    );
    // Probes are sent one after another: with the check on the admin thread, at most
    // the one sent before the reload began could be answered.
    assert!(
        answered_during_reload >= 5,
        "only {answered_during_reload} health checks answered during the reload"
    );
    assert_eq!(versions_of(&serin, 10).await, (10, 0));
}

/// A build without fleet mode refuses a reload that adds `cluster`, as `serin check`
/// does, and keeps serving the config it has.
#[cfg(not(feature = "fleet"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_cluster_to_a_build_without_fleet_mode_is_refused() {
    let backend = Backend::start("stable").await;
    let dir = TempDir::new("reload-cluster");
    let config = dir.0.join("serin.yaml");
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n\
         listeners: [{{ name: web, listen: 127.0.0.1:0 }}]\n\
         routes: [{{ listener: web, service: api }}]\n\
         services: [{{ name: api, versions: [{{ name: stable, endpoints: [{}] }}] }}]\n\
         state_dir: \"{}\"\n",
        backend.addr,
        dir.0.display()
    );
    std::fs::write(&config, &yaml).expect("write the config");
    let mut serin = SerinProcess::start(&config, 1, &[], &[]);
    std::fs::write(
        &config,
        format!(
            "{yaml}cluster: {{ etcd: {{ endpoints: [http://127.0.0.1:2379], prefix: /p/ }} }}\n"
        ),
    )
    .expect("write the config");
    serin.signal(libc::SIGHUP);
    let line = serin.wait_for("the refusal", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("cluster: this serin was built without fleet mode"))
    });
    assert_eq!(
        line["message"],
        format!(
            "{}: cluster: this serin was built without fleet mode: build with `--features fleet` \
             (or leave out `cluster` to run one serin on its own)",
            config.display()
        )
    );
    let got = get(&client(), &format!("http://{}/", serin.web), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
}
