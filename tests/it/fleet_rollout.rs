//! Fleet mode end to end: three `serin run` processes on one real etcd (common::etcd),
//! a client spreading requests over them, and the rollout steered as one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use serin_config::Etcd as EtcdSettings;
use serin_control::fleet::client::{Etcd, Timeouts};
use serin_control::fleet::election;
use serin_control::fleet::etcd_client::GetOptions;

use crate::common::etcd::{Etcd as EtcdProcess, Relay};
use crate::common::process::{self, SerinProcess};
use crate::common::*;

const PREFIX: &str = "/serin/fleet-test/";

/// The rollout block every instance runs: 50 % canary held long, judged every 200 ms.
const ROLLOUT: &str = "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 50, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 200ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%\n        rules:\n          - error_rate: { max: 1% }\n";

/// Three instances of one fleet: `web-1`..`web-3`, each with its config in `dir`.
struct Fleet {
    instances: Vec<SerinProcess>,
    _dir: TempDir,
}

impl Fleet {
    fn start(etcd_url: &str, stable: SocketAddr, canary: SocketAddr, rollout: &str) -> Fleet {
        let url = etcd_url.to_string();
        Fleet::start_with([url.clone(), url.clone(), url], stable, canary, rollout)
    }

    /// Instance `i` (from 0) reaches etcd at `etcd_urls[i]`.
    fn start_with(
        etcd_urls: [String; 3],
        stable: SocketAddr,
        canary: SocketAddr,
        rollout: &str,
    ) -> Fleet {
        Fleet::start_configs(etcd_urls, |dir, i| {
            rollout_config(stable, canary, &dir.join(format!("state-{i}")), rollout)
        })
    }

    /// Instance `i` (from 1) runs `config(dir, i)` in the fleet.
    fn start_configs(
        etcd_urls: [String; 3],
        config: impl Fn(&std::path::Path, usize) -> String,
    ) -> Fleet {
        let dir = TempDir::new("fleet");
        let instances = (1..=3)
            .map(|i| {
                let etcd_url = &etcd_urls[i - 1];
                let yaml = format!(
                    "{}cluster:\n  etcd: {{ endpoints: [{etcd_url}], prefix: {PREFIX} }}\n  instance: web-{i}\n  lease_ttl: 2s\n",
                    config(&dir.0, i)
                );
                let config = dir.0.join(format!("serin-{i}.yaml"));
                std::fs::write(&config, yaml).expect("write the config");
                SerinProcess::start(&config, 1, &[], &[])
            })
            .collect();
        Fleet {
            instances,
            _dir: dir,
        }
    }

    fn webs(&self) -> Vec<String> {
        self.instances.iter().map(|s| s.url("/")).collect()
    }

    /// The canary's weight each instance serves with, as its admin API shows it.
    async fn canary_weights(&self, client: &TestClient) -> Vec<u64> {
        self.live_canary_weights(client, usize::MAX).await
    }

    /// Waits (`eventually`) until every instance serves the canary at `weight`.
    async fn await_canary(&self, client: &TestClient, weight: u64, within: Duration, what: &str) {
        eventually(within, what, || async {
            self.canary_weights(client).await == [weight; 3]
        })
        .await;
    }

    /// The same for the instances still running (all but `killed`).
    async fn live_canary_weights(&self, client: &TestClient, killed: usize) -> Vec<u64> {
        let mut weights = Vec::new();
        for (i, serin) in self.instances.iter().enumerate() {
            if i != killed {
                let canary = view(client, serin).await["weights"]["canary"].as_u64();
                weights.push(canary.unwrap_or(u64::MAX));
            }
        }
        weights
    }
}

/// The admin token of the fleets whose config sets one (the others ignore it).
const TOKEN: &str = "drill-secret";

/// `GET /api/v1/services/api` of `serin` (null if it does not answer).
async fn view(client: &TestClient, serin: &SerinProcess) -> Value {
    let bearer = format!("Bearer {TOKEN}");
    let got = get(
        client,
        &format!("{}/api/v1/services/api", serin.admin_url()),
        &[("authorization", &bearer)],
    )
    .await;
    serde_json::from_str(&got.body).unwrap_or(Value::Null)
}

/// Requests spread round-robin over every instance until stopped.
struct Spread {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Spread {
    fn start(urls: Vec<String>) -> Spread {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let client = client();
            let mut i = 0usize;
            while !stopped.load(Ordering::Relaxed) {
                // An instance killed by the test refuses: the next one is asked.
                if let Ok(uri) = urls[i % urls.len()].parse() {
                    if let Ok(response) = client.get(uri).await {
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        Spread { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

async fn connect(url: String) -> Etcd {
    let settings = EtcdSettings {
        endpoints: vec![url],
        prefix: PREFIX.to_string(),
        tls: None,
        auth: None,
    };
    Etcd::connect(&settings, Timeouts::default())
        .await
        .unwrap_or_else(|err| panic!("connect: {err}"))
}

/// The fleet's timeline of `service` in etcd: each event's name, oldest first.
async fn timeline(etcd: &Etcd, service: &str) -> Vec<String> {
    let under = format!("{PREFIX}timeline/{service}/");
    let mut client = etcd.client();
    let got = client
        .get(under.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .expect("read the timeline");
    got.kvs()
        .iter()
        .map(|kv| {
            let event: Value = serde_json::from_slice(kv.value()).expect("a timeline event");
            event["event"].as_str().unwrap_or("?").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_is_rolled_back_on_every_instance_and_recorded_once() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, ROLLOUT);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    let load = Spread::start(fleet.webs());

    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    // Healthy traffic first: the canary is judged and kept.
    eventually(
        Duration::from_secs(20),
        "the canary serving on every instance",
        || async { canary.hits() >= 60 },
    )
    .await;
    assert_eq!(fleet.canary_weights(&client).await, [50, 50, 50]);

    canary.set_status(500);
    let onset = Instant::now();
    fleet
        .await_canary(
            &client,
            0,
            Duration::from_secs(2),
            "canary weight 0 on every instance",
        )
        .await;
    eprintln!("fault to canary 0 everywhere: {:?}", onset.elapsed());
    load.stop().await;

    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "rolled_back"), 1, "{events:?}");

    // Any instance shows the fleet's timeline: the leader's rollback, once.
    let follower = &fleet.instances[(leader_index(&etcd).await + 1) % 3];
    let got = get(
        &client,
        &format!("{}/api/v1/services/api/timeline", follower.admin_url()),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let shown: Vec<Value> = serde_json::from_str(&got.body).expect("a timeline");
    let kinds: Vec<String> = shown
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(count(&kinds, "rolled_back"), 1, "{kinds:?}");
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("started"),
        "{kinds:?}"
    );
    let admin = follower.admin.to_string();
    let out = ops_on(&admin, &["report", "api"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    let report = process::stdout(&out);
    assert!(
        report.contains("**rolled back automatically**") && report.contains("`error_rate max 1%`"),
        "{report}"
    );
}

/// `serin ARGS --admin ADMIN`: the CLI against one instance's admin API.
async fn ops_on(admin: &str, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--admin", admin]);
    process::ops(&all, None).await
}

/// The instance that leads the fleet now, by its index in `fleet.instances`.
async fn leader_index(etcd: &Etcd) -> usize {
    let found = std::sync::Mutex::new(None);
    eventually(Duration::from_secs(20), "a leader", || async {
        let name = match election::leader(etcd).await {
            Ok(Some((name, _))) => String::from_utf8(name).ok(),
            _ => None,
        };
        let some = name.is_some();
        *found.lock().expect("lock") = name;
        some
    })
    .await;
    let name = found.lock().expect("lock").take().unwrap_or_default();
    let index: usize = name
        .strip_prefix("web-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the leader {name:?} is not one of the fleet"));
    index - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serin_promote_on_a_follower_promotes_everywhere_and_is_recorded_once() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, ROLLOUT);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let leader = leader_index(&etcd).await;
    let follower = &fleet.instances[(leader + 1) % 3];

    let admin = follower.admin.to_string();
    let out = ops_on(&admin, &["promote", "api"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    let table = process::stdout(&out);
    assert!(
        table.contains("promoted"),
        "the follower answers once applied: {table}"
    );
    fleet
        .await_canary(
            &client,
            100,
            Duration::from_secs(5),
            "canary 100 on every instance",
        )
        .await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "promoted"), 1, "{events:?}");
    // Taken and deleted with the state it led to.
    let mut kv = etcd.client();
    let left = kv
        .get(
            format!("{PREFIX}commands/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count the commands");
    assert_eq!(left.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_on_a_follower_show_on_every_instance_and_are_recorded_once() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, ROLLOUT);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let leader = leader_index(&etcd).await;
    let follower = &fleet.instances[(leader + 1) % 3];

    let admin = follower.admin.to_string();
    let out = ops_on(&admin, &["weights", "api", "stable=70", "canary=30"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    assert_eq!(
        process::stderr(&out),
        "",
        "the follower answers once applied: {}",
        process::stdout(&out)
    );
    fleet
        .await_canary(
            &client,
            30,
            Duration::from_secs(5),
            "canary 30 on every instance",
        )
        .await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "manual_weights"), 1, "{events:?}");

    // The canary's weight alone: the baseline takes the rest on every instance, the
    // leader too (the state carries the canary's weight only).
    let out = ops_on(&admin, &["weights", "api", "canary=10"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    fleet
        .await_canary(
            &client,
            10,
            Duration::from_secs(5),
            "canary 10 on every instance",
        )
        .await;
    for serin in &fleet.instances {
        let shown = view(&client, serin).await;
        assert_eq!(shown["weights"]["stable"], 90, "{shown}");
    }
    // A set the followers could not show is refused, and nothing changes.
    let out = ops_on(&admin, &["weights", "api", "stable=50", "canary=20"]).await;
    assert!(!out.status.success());
    assert!(
        process::stderr(&out).contains("e.g. stable=80 canary=20"),
        "{}",
        process::stderr(&out)
    );
    assert_eq!(fleet.canary_weights(&client).await, [10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_too_quiet_on_each_instance_is_promoted_on_the_fleets_merged_numbers() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    // 60 canary requests needed; each instance sees about 40.
    let rollout = ROLLOUT
        .replace("hold: 1h", "hold: 300ms")
        .replace("window: 5s", "window: 60s")
        .replace("min_requests: 20", "min_requests: 60");
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, &rollout);
    let client = client();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let webs = fleet.webs();
    for i in 0..240 {
        get(&client, &webs[i % 3], &[]).await;
    }
    fleet
        .await_canary(
            &client,
            100,
            Duration::from_secs(10),
            "promoted on every instance",
        )
        .await;
    assert!(
        canary.hits() >= 60,
        "the fleet's canary served {}",
        canary.hits()
    );
    for serin in &fleet.instances {
        let own = view(&client, serin).await["versions"]["canary"]["requests"]
            .as_u64()
            .expect("the canary's requests");
        assert!(
            own < 60,
            "an instance alone had {own} canary requests: enough on its own"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_step_another_leads_and_the_rollout_goes_on_from_the_same_step() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let rollout = ROLLOUT.replace(
        "        - { weight: 50, hold: 1h }\n",
        "        - { weight: 20, hold: 4s }\n        - { weight: 50, hold: 1h }\n",
    );
    let mut fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, &rollout);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    let load = Spread::start(fleet.webs());
    fleet
        .await_canary(
            &client,
            20,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let leader = leader_index(&etcd).await;
    fleet.instances[leader]
        .child
        .kill()
        .expect("kill -9 the leader");
    let _ = fleet.instances[leader].child.wait();
    eventually(Duration::from_secs(15), "another leader", || async {
        matches!(election::leader(&etcd).await, Ok(Some((name, _))) if name != format!("web-{}", leader + 1).into_bytes())
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "the second step on the live instances",
        || async { fleet.live_canary_weights(&client, leader).await == [50, 50] },
    )
    .await;
    load.stop().await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(
        count(&events, "step_advanced"),
        1,
        "no step repeated or skipped: {events:?}"
    );
    assert_eq!(
        events.first().map(String::as_str),
        Some("started"),
        "{events:?}"
    );
    for (i, serin) in fleet.instances.iter().enumerate() {
        if i != leader {
            assert_eq!(view(&client, serin).await["rollout"]["step"], 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sticky_users_get_the_same_version_from_every_instance_at_each_step() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let rollout = ROLLOUT.replace("weight: 50, hold: 1h", "weight: 30, hold: 1h");
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, &rollout);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    fleet
        .await_canary(
            &client,
            30,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let versions_seen = |webs: Vec<String>| {
        let client = client.clone();
        async move {
            let mut canaries = 0;
            for user in 0..1000 {
                let id = format!("user-{user}");
                let mut got = Vec::new();
                for web in &webs {
                    got.push(get(&client, web, &[("x-user-id", id.as_str())]).await.body);
                }
                assert!(got.iter().all(|g| *g == got[0]), "{id} got {got:?}");
                canaries += usize::from(got[0] == "canary");
            }
            canaries
        }
    };
    let canaries = versions_seen(fleet.webs()).await;
    assert!(
        (200..400).contains(&canaries),
        "{canaries} of 1000 users on the 30 % canary"
    );

    let leader = leader_index(&etcd).await;
    let follower = &fleet.instances[(leader + 1) % 3];
    let out = ops_on(&follower.admin.to_string(), &["promote", "api"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    fleet
        .await_canary(
            &client,
            100,
            Duration::from_secs(5),
            "canary 100 on every instance",
        )
        .await;
    assert_eq!(versions_seen(fleet.webs()).await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_etcd_keeps_serving_and_rolls_its_own_canary_back() {
    let etcd_process = EtcdProcess::start();
    let relay = Relay::start(etcd_process.addr()).await;
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let url = etcd_process.url();
    let mut fleet = Fleet::start_with(
        [url.clone(), url, relay.url()],
        stable.addr,
        canary.addr,
        ROLLOUT,
    );
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    let load = Spread::start(fleet.webs());
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;

    relay.cut();
    let cut_off = &mut fleet.instances[2];
    cut_off.wait_for("judging on its own", |l| {
        l["message"] == "fleet mode: this instance's own judgement as a safety net"
            && l["local"] == true
    });
    let readyz = fleet.instances[2].admin_url() + "/readyz";
    let got = get(&client, &readyz, &[]).await;
    assert_eq!(got.status, 200, "still ready: it serves: {}", got.body);
    assert!(
        got.body.starts_with("ready\netcd unreachable since ")
            && got.body.contains("holding the weights in force"),
        "{}",
        got.body
    );
    canary.set_status(500);
    fleet
        .await_canary(
            &client,
            0,
            Duration::from_secs(10),
            "canary 0 on every instance",
        )
        .await;
    // Rolled back on its own judgement: it hears nothing from the fleet.
    fleet.instances[2].wait_for("the local rollback", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("etcd is away and this instance's canary fails"))
    });
    let web3 = fleet.instances[2].url("/");
    assert_eq!(
        get(&client, &web3, &[]).await.body,
        "stable",
        "it keeps serving"
    );

    relay.restore();
    eventually(
        Duration::from_secs(20),
        "the fleet's state on the instance that was cut off",
        || async { view(&client, &fleet.instances[2]).await["rollout"]["state"] == "rolled_back" },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "/readyz no longer says etcd is unreachable",
        || async { get(&client, &readyz, &[]).await.body == "ready\n" },
    )
    .await;
    load.stop().await;
    assert_eq!(fleet.canary_weights(&client).await, [0, 0, 0]);
    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "rolled_back"), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarted_with_its_data_the_fleet_carries_on() {
    let mut etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let rollout = ROLLOUT.replace(
        "        - { weight: 50, hold: 1h }\n",
        "        - { weight: 20, hold: 6s }\n        - { weight: 50, hold: 1h }\n",
    );
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, &rollout);
    let client = client();
    let load = Spread::start(fleet.webs());
    fleet
        .await_canary(
            &client,
            20,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    etcd_process.kill();
    assert_eq!(
        fleet.canary_weights(&client).await,
        [20, 20, 20],
        "serving on"
    );
    etcd_process.restart();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(30),
            "the second step on every instance",
        )
        .await;
    load.stop().await;
    let etcd = connect(etcd_process.url()).await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "step_advanced"), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_shows_the_leader_every_instance_and_the_fleets_merged_numbers() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, ROLLOUT);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let leader = leader_index(&etcd).await;
    let follower = &fleet.instances[(leader + 1) % 3];
    let load = Spread::start(fleet.webs());
    eventually(
        Duration::from_secs(20),
        "three instances with canary requests in the follower's view of the fleet",
        || async {
            let fleet_view = &view(&client, follower).await["fleet"];
            fleet_view["instances"] == 3
                && fleet_view["members"].as_array().is_some_and(|m| {
                    m.len() == 3
                        && m.iter()
                            .all(|m| m["versions"]["canary"]["requests"].as_u64() > Some(0))
                })
        },
    )
    .await;
    load.stop().await;

    let shown = view(&client, follower).await;
    let fleet_view = &shown["fleet"];
    assert_eq!(
        fleet_view["leader"],
        format!("web-{}", leader + 1),
        "{shown}"
    );
    assert_eq!(
        fleet_view["instance"],
        format!("web-{}", (leader + 1) % 3 + 1)
    );
    assert_eq!(fleet_view["more_members"], 0);
    let members = fleet_view["members"].as_array().expect("members");
    let names: Vec<&str> = members
        .iter()
        .filter_map(|m| m["instance"].as_str())
        .collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"]);
    for version in ["stable", "canary"] {
        for count in ["requests", "errors"] {
            let sum: u64 = members
                .iter()
                .map(|m| m["versions"][version][count].as_u64().expect("a count"))
                .sum();
            assert_eq!(
                fleet_view["versions"][version][count].as_u64(),
                Some(sum),
                "the fleet's {version} {count} are the sum of its instances': {fleet_view}"
            );
        }
    }
    assert!(fleet_view["versions"]["canary"]["requests"].as_u64() > Some(0));

    let admin = follower.admin.to_string();
    let out = ops_on(&admin, &["status", "api"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    let printed = process::stdout(&out);
    assert!(
        printed.contains(&format!("led by web-{}; 3 instances", leader + 1)),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_set_on_a_follower_for_a_service_without_a_rollout_apply_on_every_instance() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let url = etcd_process.url();
    let split = "    split:\n      weights: { stable: 100, canary: 0 }\n";
    let fleet = Fleet::start_configs([url.clone(), url.clone(), url], |_, _| {
        two_versions(stable.addr, canary.addr, split)
    });
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    let leader = leader_index(&etcd).await;
    let follower = &fleet.instances[(leader + 1) % 3];

    let admin = follower.admin.to_string();
    let out = ops_on(&admin, &["weights", "api", "stable=60", "canary=40"]).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    fleet
        .await_canary(
            &client,
            40,
            Duration::from_secs(5),
            "canary 40 on every instance",
        )
        .await;
    for serin in &fleet.instances {
        let shown = view(&client, serin).await;
        assert_eq!(shown["weights"]["stable"], 60, "{shown}");
        assert_eq!(shown["rollout"]["state"], "none", "{shown}");
    }
    // A bad set is refused at once, on the instance it was given to.
    let out = ops_on(&admin, &["weights", "api", "stable=0", "canary=0"]).await;
    assert!(!out.status.success());
    assert!(
        process::stderr(&out).contains("would have weight 0"),
        "{}",
        process::stderr(&out)
    );
    assert_eq!(fleet.canary_weights(&client).await, [40, 40, 40]);

    // A reload gives the service its file's weights on that instance; the fleet's
    // come back over them.
    let config = fleet._dir.0.join("serin-1.yaml");
    let mut yaml = std::fs::read_to_string(&config).expect("read the config");
    yaml.push_str("# reloaded\n");
    std::fs::write(&config, yaml).expect("write the config");
    let reload = format!("{}/api/v1/reload", fleet.instances[0].admin_url());
    let request = http::Request::post(reload)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("a request");
    let got = send(&client, request).await;
    assert_eq!(got.status, 200, "{}", got.body);
    fleet
        .await_canary(
            &client,
            40,
            Duration::from_secs(5),
            "canary 40 again on the instance that reloaded",
        )
        .await;
}

/// A leader that died after a tick ended and before it judged it leaves that tick's
/// records in etcd: the next leader counts them (the summary says which tick was
/// judged last), so the tick's numbers are not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_counts_the_samples_in_etcd_that_the_last_one_did_not_judge() {
    use serin_control::fleet::etcd_client::PutOptions;
    use serin_control::fleet::sample::{SampleRecord, ServiceSample};
    use serin_control::wire::{rfc3339, FleetSummary, SUMMARY_FORMAT};
    use serin_judge::window::Sample;

    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let etcd = connect(etcd_process.url()).await;
    // The last leader, web-0, judged a tick 10 s ago and died; web-0's record of a tick
    // it never judged is still there (its lease kept it a moment; here, no lease).
    let now_tick = serin_control::runner::now_ms() / 200;
    let summary = FleetSummary {
        format: SUMMARY_FORMAT,
        leader: "web-0".into(),
        tick: now_tick - 50,
        at: rfc3339((now_tick - 49) * 200),
        at_ms: (now_tick - 49) * 200,
        instances: 1,
        services: Vec::new(),
    };
    let record = SampleRecord {
        tick: now_tick,
        ticks: 1,
        services: vec![ServiceSample {
            service: "api".into(),
            versions: vec![(
                "stable".into(),
                Sample {
                    requests: 1000,
                    errors: 3,
                    ..Sample::default()
                },
            )],
        }],
    };
    let mut kv = etcd.client();
    let json = serde_json::to_vec(&summary).expect("a summary");
    kv.put(format!("{PREFIX}summary"), json, None)
        .await
        .expect("put the summary");
    kv.put(
        format!("{PREFIX}samples/web-0"),
        record.encode(),
        None::<PutOptions>,
    )
    .await
    .expect("put the record");

    let rollout = ROLLOUT.replace("window: 5s", "window: 60s");
    let dir = TempDir::new("fleet");
    let yaml = format!(
        "{}cluster:\n  etcd: {{ endpoints: [{}], prefix: {PREFIX} }}\n  instance: web-1\n  lease_ttl: 2s\n",
        rollout_config(stable.addr, canary.addr, &dir.0.join("state"), &rollout),
        etcd_process.url()
    );
    let config = dir.0.join("serin.yaml");
    std::fs::write(&config, yaml).expect("write the config");
    let serin = SerinProcess::start(&config, 1, &[], &[]);
    let client = client();
    // The record is of the tick under way when the test began: web-1's first summary
    // may judge an earlier tick (it starts within the tick), so the numbers are polled
    // for; a leader that dropped the stored record never shows them.
    eventually(
        Duration::from_secs(20),
        "web-1 leading and its summary counting web-0's stored record",
        || async {
            let shown = view(&client, &serin).await;
            shown["fleet"]["leader"] == "web-1"
                && shown["fleet"]["versions"]["stable"]["requests"] == 1000
        },
    )
    .await;
    let shown = view(&client, &serin).await;
    let stable_numbers = &shown["fleet"]["versions"]["stable"];
    assert_eq!(stable_numbers["requests"], 1000, "{shown}");
    assert_eq!(stable_numbers["errors"], 3, "{shown}");
    assert_eq!(
        shown["versions"]["stable"]["requests"], 0,
        "no traffic of its own"
    );
}

/// How many of `events` (timeline kinds) are `kind`.
fn count(events: &[String], kind: &str) -> usize {
    events.iter().filter(|e| *e == kind).count()
}

/// A fleet at a shadow step: every instance copies its baseline requests to the
/// canary, the leader judges the fleet's copies (carried in the sample record as the
/// canary's shadow column) and a canary failing them is rolled back once for the
/// fleet; after that no instance copies, and no client request ever reached it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_in_shadow_is_rolled_back_fleet_wide_having_served_no_user() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let rollout = ROLLOUT.replace(
        "        - { weight: 50, hold: 1h }\n",
        "        - { shadow: 100%, hold: 1h }\n        - { weight: 50, hold: 1h }\n",
    );
    let fleet = Fleet::start(&etcd_process.url(), stable.addr, canary.addr, &rollout);
    let etcd = connect(etcd_process.url()).await;
    let load = Spread::start(fleet.webs());
    eventually(
        Duration::from_secs(20),
        "copies from every instance reach the canary",
        || async { canary.hits() >= 60 },
    )
    .await;
    canary.set_status(500);
    eventually(
        Duration::from_secs(10),
        "the fleet rolls the canary back",
        || async { count(&timeline(&etcd, "api").await, "rolled_back") == 1 },
    )
    .await;
    // Every instance stops copying: at most the copies in flight then still land.
    let client = client();
    eventually(
        Duration::from_secs(10),
        "every instance applied the rollback",
        || async {
            let mut states = Vec::new();
            for serin in &fleet.instances {
                states.push(view(&client, serin).await["rollout"]["state"].clone());
            }
            states.iter().all(|s| s == "rolled_back")
        },
    )
    .await;
    let copies = canary.hits();
    let served = stable.hits();
    eventually(
        Duration::from_secs(10),
        "traffic goes on to the baseline",
        || async { stable.hits() > served + 300 },
    )
    .await;
    load.stop().await;
    assert!(
        canary.hits() <= copies + 3,
        "{} copies after the rollback",
        canary.hits() - copies
    );
    let from_clients = canary
        .seen()
        .iter()
        .filter(|s| s.headers.get("x-serin-shadow").is_none())
        .count();
    assert_eq!(from_clients, 0, "client requests reached the canary");
    assert_eq!(count(&timeline(&etcd, "api").await, "rolled_back"), 1);
}

/// Requests to one instance until stopped: how many were answered 503, and how many
/// of those carried `x-serin-fault: drill`.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Probe {
    fn start(url: String) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let client = client();
            let (mut unavailable, mut drilled) = (0, 0);
            while !stopped.load(Ordering::Relaxed) {
                let got = get(&client, &url, &[]).await;
                if got.status == 503 {
                    unavailable += 1;
                    if got
                        .headers
                        .get("x-serin-fault")
                        .is_some_and(|v| v == "drill")
                    {
                        drilled += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (unavailable, drilled)
        });
        Probe { stop, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the probe")
    }
}

/// The fleet's timeline of `service` in etcd, each event as written.
async fn timeline_events(etcd: &Etcd, service: &str) -> Vec<Value> {
    let under = format!("{PREFIX}timeline/{service}/");
    let mut client = etcd.client();
    let got = client
        .get(under.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .expect("read the timeline");
    got.kvs()
        .iter()
        .map(|kv| serde_json::from_slice(kv.value()).expect("a timeline event"))
        .collect()
}

/// Three instances with `admin.drills: true` and the admin token [`TOKEN`].
fn drill_fleet(etcd_url: String, stable: SocketAddr, canary: SocketAddr) -> Fleet {
    drill_fleet_with(
        [etcd_url.clone(), etcd_url.clone(), etcd_url],
        stable,
        canary,
    )
}

/// [`drill_fleet`], instance `i` (from 0) reaching etcd at `etcd_urls[i]`.
fn drill_fleet_with(etcd_urls: [String; 3], stable: SocketAddr, canary: SocketAddr) -> Fleet {
    Fleet::start_configs(etcd_urls, |dir, i| {
        let token = dir.join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("write the token");
        rollout_config(stable, canary, &dir.join(format!("state-{i}")), ROLLOUT).replace(
            "admin: { listen: 127.0.0.1:0 }",
            &format!(
                "admin: {{ listen: 127.0.0.1:0, drills: true, token_file: \"{}\" }}",
                token.display()
            ),
        )
    })
}

/// etcd, the two versions' backends, and a drill-enabled fleet of three on them with
/// every instance at the rollout's first step (canary 50); etcd connected.
async fn drill_fleet_at_first_step(
    client: &TestClient,
) -> (EtcdProcess, Backend, Backend, Fleet, Etcd) {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let fleet = drill_fleet(etcd_process.url(), stable.addr, canary.addr);
    let etcd = connect(etcd_process.url()).await;
    fleet
        .await_canary(
            client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    (etcd_process, stable, canary, fleet, etcd)
}

/// A rollback drill given on a follower: the leader starts it for the fleet, every
/// instance injects its faults into its own canary requests, the leader judges the
/// fleet's merged numbers and rolls the healthy canary back everywhere; the timeline
/// has the drill once, and `serin drill` reports the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_on_a_follower_rolls_a_healthy_canary_back_on_every_instance() {
    let client = client();
    let (_etcd_process, _stable, canary, fleet, etcd) = drill_fleet_at_first_step(&client).await;
    let probes: Vec<Probe> = fleet.webs().into_iter().map(Probe::start).collect();
    eventually(
        Duration::from_secs(20),
        "the healthy canary serving on every instance",
        || async { canary.hits() >= 60 },
    )
    .await;
    assert_eq!(fleet.canary_weights(&client).await, [50, 50, 50]);

    let at = (leader_index(&etcd).await + 1) % 3;
    let follower = &fleet.instances[at];
    let admin = follower.admin.to_string();
    let out = process::ops(
        &[
            "drill", "api", "--errors", "50%", "--for", "1m", "--admin", &admin,
        ],
        Some(TOKEN),
    )
    .await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    let report = process::stdout(&out);
    eprintln!("{report}");
    assert!(
        report.contains("rolled back:  yes, by the rollout's rules"),
        "{report}"
    );
    fleet
        .await_canary(
            &client,
            0,
            Duration::from_secs(5),
            "canary 0 on every instance",
        )
        .await;
    let mut seen = Vec::new();
    for probe in probes {
        seen.push(probe.stop().await);
    }
    eprintln!("503s, with x-serin-fault: drill, per instance: {seen:?}");
    for (i, (unavailable, drilled)) in seen.iter().enumerate() {
        assert!(
            *drilled > 0,
            "web-{}: no injected fault seen: {seen:?}",
            i + 1
        );
        assert_eq!(
            unavailable,
            drilled,
            "web-{}: a 503 not from the drill",
            i + 1
        );
    }
    // The follower's report: the leader's rollback, and the faults its own clients saw.
    let bearer = format!("Bearer {TOKEN}");
    let got = get(
        &client,
        &format!("{}/api/v1/services/api/drill", follower.admin_url()),
        &[("authorization", &bearer)],
    )
    .await;
    let drill: Value = serde_json::from_str(&got.body).expect("a drill report");
    assert_eq!(drill["rolled_back"], true, "{drill:#}");
    assert_eq!(drill["ended_by"], "rolled_back", "{drill:#}");
    assert!(drill["injection_to_zero_ms"].is_u64(), "{drill:#}");
    assert_eq!(
        drill["faults"]["instance"],
        format!("web-{}", at + 1),
        "{drill:#}"
    );
    assert_eq!(drill["faults"]["errors"], seen[at].1, "{drill:#}");
    // Beside it, every instance's faults as the leader summed them: the 503s all the
    // instances' clients saw (an instance's last tick reaches the leader a tick later).
    let fleet_total: u64 = seen.iter().map(|(_, drilled)| drilled).sum();
    let last = std::sync::Mutex::new(Value::Null);
    let fleet_faults = || async {
        let got = get(
            &client,
            &format!("{}/api/v1/services/api/drill", follower.admin_url()),
            &[("authorization", &bearer)],
        )
        .await;
        let drill: Value = serde_json::from_str(&got.body).unwrap_or(Value::Null);
        let fleet = drill["faults"]["fleet"].clone();
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if *last != fleet {
            eprintln!("the follower's fleet total: {fleet}; the clients' 503s: {seen:?}");
            *last = fleet.clone();
        }
        fleet
    };
    eventually(
        Duration::from_secs(5),
        "the follower's report has every instance's faults: the 503s all clients saw",
        || async { fleet_faults().await["errors"] == fleet_total },
    )
    .await;
    let fleet = fleet_faults().await;
    assert_eq!(fleet["total"], fleet_total, "{fleet:#}");
    assert_eq!(fleet["delayed"], 0, "{fleet:#}");
    assert!(fleet["counted_to"].is_string(), "{fleet:#}");
    assert!(
        report.contains(&format!(" on web-{} (", at + 1)),
        "{report}"
    );

    eventually(
        Duration::from_secs(5),
        "the drill ended on the fleet's timeline",
        || async {
            timeline_events(&etcd, "api")
                .await
                .iter()
                .any(|e| e["event"] == "drill_ended")
        },
    )
    .await;
    let events = timeline_events(&etcd, "api").await;
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["event"] == kind).collect() };
    assert_eq!(of("drill_started").len(), 1, "{events:#?}");
    assert_eq!(of("drill_ended").len(), 1, "{events:#?}");
    let rolled_back = of("rolled_back");
    assert_eq!(rolled_back.len(), 1, "{events:#?}");
    assert_eq!(rolled_back[0]["drill"], true, "{events:#?}");
    // The record every instance applied is gone with the drill.
    let mut kv = etcd.client();
    let left = kv
        .get(
            format!("{PREFIX}drill/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count the drills");
    assert_eq!(left.count(), 0);
}

/// `(method, path)` on `serin`'s admin API with the token.
async fn admin_call(client: &TestClient, serin: &SerinProcess, method: &str, body: &str) -> Got {
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}/api/v1/services/api/drill", serin.admin_url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("a request");
    send(client, request).await
}

/// Every instance's drill report of `api` (null where there is none).
async fn drill_reports(client: &TestClient, fleet: &Fleet) -> Vec<Value> {
    let mut reports = Vec::new();
    for serin in &fleet.instances {
        let got = admin_call(client, serin, "GET", "").await;
        reports.push(serde_json::from_str(&got.body).unwrap_or(Value::Null));
    }
    reports
}

/// Waits until every instance's drill report of `api` passes `want`.
async fn await_drills(
    client: &TestClient,
    fleet: &Fleet,
    within: Duration,
    what: &str,
    want: fn(&Value) -> bool,
) {
    eventually(within, what, || async {
        drill_reports(client, fleet).await.iter().all(want)
    })
    .await;
}

/// A drill that does not fail the canary ends everywhere when one follower deletes it,
/// and another ends everywhere at its time; each start and end is recorded once and
/// the canary keeps its weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_drill_ends_everywhere_by_delete_on_any_instance_and_at_its_time() {
    let client = client();
    let (_etcd_process, _stable, _canary, fleet, etcd) = drill_fleet_at_first_step(&client).await;
    let leader = leader_index(&etcd).await;
    let (asked, ender) = (
        &fleet.instances[(leader + 1) % 3],
        &fleet.instances[(leader + 2) % 3],
    );

    let got = admin_call(
        &client,
        asked,
        "POST",
        r#"{"latency": "+1ms", "for": "10m"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    await_drills(
        &client,
        &fleet,
        Duration::from_secs(5),
        "the drill runs on every instance",
        |r| r["state"] == "running",
    )
    .await;
    // A second drill while one runs is refused where it is asked.
    let got = admin_call(&client, ender, "POST", r#"{"errors": "5%", "for": "1m"}"#).await;
    assert_eq!(got.status, 409, "{}", got.body);
    assert!(
        got.body.contains("a drill runs on \\\"api\\\" already"),
        "{}",
        got.body
    );

    let got = admin_call(&client, ender, "DELETE", "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    await_drills(
        &client,
        &fleet,
        Duration::from_secs(5),
        "the drill ended on every instance",
        |r| r["state"] == "ended" && r["ended_by"] == "deleted",
    )
    .await;

    let got = admin_call(
        &client,
        asked,
        "POST",
        r#"{"latency": "+1ms", "for": "1s"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    await_drills(
        &client,
        &fleet,
        Duration::from_secs(10),
        "the drill expired on every instance",
        |r| r["state"] == "ended" && r["ended_by"] == "expired",
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the leader recorded both ends",
        || async { count(&timeline(&etcd, "api").await, "drill_ended") == 2 },
    )
    .await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "drill_started"), 2, "{events:?}");
    assert_eq!(count(&events, "rolled_back"), 0, "{events:?}");
    assert_eq!(fleet.canary_weights(&client).await, [50, 50, 50]);
    let mut kv = etcd.client();
    let left = kv
        .get(
            format!("{PREFIX}drill/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count the drills");
    assert_eq!(left.count(), 0);
}

/// An instance cut off from etcd mid-drill ends the drill at its time on its own clock:
/// no deleted record is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_etcd_ends_the_fleets_drill_at_its_time() {
    let etcd_process = EtcdProcess::start();
    let relay = Relay::start(etcd_process.addr()).await;
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let url = etcd_process.url();
    let fleet = drill_fleet_with([url.clone(), url, relay.url()], stable.addr, canary.addr);
    let client = client();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let got = admin_call(
        &client,
        &fleet.instances[0],
        "POST",
        r#"{"latency": "+1ms", "for": "4s"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    await_drills(
        &client,
        &fleet,
        Duration::from_secs(5),
        "the drill runs on every instance",
        |r| r["state"] == "running",
    )
    .await;
    relay.cut();
    let cut_off = &fleet.instances[2];
    eventually(
        Duration::from_secs(10),
        "the cut-off instance ended it at its time",
        || async {
            let got = admin_call(&client, cut_off, "GET", "").await;
            let report: Value = serde_json::from_str(&got.body).unwrap_or(Value::Null);
            report["state"] == "ended" && report["ended_by"] == "expired"
        },
    )
    .await;
    let got = admin_call(&client, cut_off, "GET", "").await;
    let report: Value = serde_json::from_str(&got.body).expect("a report");
    assert!(
        report["ended_at"].as_str() >= report["ends_at"].as_str(),
        "not before its time: {report:#}"
    );
}

/// The leader killed just after it started a drill: the drill ends on the others at
/// its time while no one leads, and the next leader records its end once and deletes
/// its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_whose_leader_died_is_recorded_ended_by_the_next_leader() {
    let etcd_process = EtcdProcess::start();
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let mut fleet = drill_fleet(etcd_process.url(), stable.addr, canary.addr);
    let etcd = connect(etcd_process.url()).await;
    let client = client();
    fleet
        .await_canary(
            &client,
            50,
            Duration::from_secs(20),
            "every instance at the first step",
        )
        .await;
    let leader = leader_index(&etcd).await;
    let got = admin_call(
        &client,
        &fleet.instances[leader],
        "POST",
        r#"{"latency": "+1ms", "for": "1s"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    fleet.instances[leader]
        .child
        .kill()
        .expect("kill -9 the leader");
    let _ = fleet.instances[leader].child.wait();
    eventually(Duration::from_secs(15), "another leader", || async {
        matches!(election::leader(&etcd).await, Ok(Some((name, _))) if name != format!("web-{}", leader + 1).into_bytes())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the drill's end recorded and its record deleted",
        || async {
            let mut kv = etcd.client();
            let left = kv
                .get(
                    format!("{PREFIX}drill/"),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .map(|r| r.count());
            left.is_ok_and(|n| n == 0) && count(&timeline(&etcd, "api").await, "drill_ended") == 1
        },
    )
    .await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(count(&events, "drill_started"), 1, "{events:?}");
    assert_eq!(count(&events, "drill_ended"), 1, "{events:?}");
}
