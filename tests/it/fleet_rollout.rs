//! Fleet mode end to end: three `serin run` processes on one real etcd (common::etcd),
//! a client spreading requests over them, and the rollout steered as one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use serin_config::Etcd as EtcdSettings;
use serin_control::fleet::client::{Etcd, Timeouts};
use serin_control::fleet::election;
use serin_control::fleet::etcd_client::GetOptions;

use crate::common::etcd::Etcd as EtcdProcess;
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
    fn start(
        etcd_url: &str,
        stable: std::net::SocketAddr,
        canary: std::net::SocketAddr,
        rollout: &str,
    ) -> Fleet {
        let dir = TempDir::new("fleet");
        let instances = (1..=3)
            .map(|i| {
                let state_dir = dir.0.join(format!("state-{i}"));
                let yaml = format!(
                    "{}cluster:\n  etcd: {{ endpoints: [{etcd_url}], prefix: {PREFIX} }}\n  instance: web-{i}\n  lease_ttl: 2s\n",
                    rollout_config(stable, canary, &state_dir, rollout)
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
        let mut weights = Vec::new();
        for serin in &self.instances {
            let got = get(
                client,
                &format!("{}/api/v1/services/api", serin.admin_url()),
                &[],
            )
            .await;
            let view: Value = serde_json::from_str(&got.body).unwrap_or(Value::Null);
            weights.push(view["weights"]["canary"].as_u64().unwrap_or(u64::MAX));
        }
        weights
    }
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
                let url = &urls[i % urls.len()];
                let _ = get(&client, url, &[]).await;
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

    eventually(
        Duration::from_secs(20),
        "every instance at the first step",
        || async { fleet.canary_weights(&client).await == [50, 50, 50] },
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
    eventually(
        Duration::from_secs(2),
        "canary weight 0 on every instance",
        || async { fleet.canary_weights(&client).await == [0, 0, 0] },
    )
    .await;
    eprintln!("fault to canary 0 everywhere: {:?}", onset.elapsed());
    load.stop().await;

    let events = timeline(&etcd, "api").await;
    assert_eq!(
        events.iter().filter(|e| *e == "rolled_back").count(),
        1,
        "{events:?}"
    );
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
    eventually(
        Duration::from_secs(20),
        "every instance at the first step",
        || async { fleet.canary_weights(&client).await == [50, 50, 50] },
    )
    .await;
    let leader = leader_index(&etcd).await;
    let follower = &fleet.instances[(leader + 1) % 3];

    let admin = follower.admin.to_string();
    let out = process::ops(&["promote", "api", "--admin", &admin], None).await;
    assert!(out.status.success(), "{}", process::stderr(&out));
    let table = process::stdout(&out);
    assert!(
        table.contains("promoted"),
        "the follower answers once applied: {table}"
    );
    eventually(
        Duration::from_secs(5),
        "canary 100 on every instance",
        || async { fleet.canary_weights(&client).await == [100, 100, 100] },
    )
    .await;
    let events = timeline(&etcd, "api").await;
    assert_eq!(
        events.iter().filter(|e| *e == "promoted").count(),
        1,
        "{events:?}"
    );
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
