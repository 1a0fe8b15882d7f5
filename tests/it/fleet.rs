//! Fleet mode's etcd primitives against a real etcd (common::etcd): connecting, unique
//! instance names, election and fencing, watches that survive an etcd restart and
//! compaction, and a lease loss noticed through a cut network.

use std::time::Duration;

use serin_config::Etcd as EtcdSettings;
use serin_control::fleet::client::{Etcd, FleetError, Timeouts};
use serin_control::fleet::election::{self, LossReason};
use serin_control::fleet::etcd_client::{GetOptions, TxnOp};
use serin_control::fleet::lease::{EtcdHealth, Lease};
use serin_control::fleet::members::{self, MemberInfo};
use serin_control::fleet::watch::{Change, PrefixWatch, WatchItem};

use crate::common::etcd::{Etcd as EtcdProcess, Relay};
use crate::common::*;

const PREFIX: &str = "/serin/test/";
const TTL: Duration = Duration::from_secs(2);

fn settings(url: String) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![url],
        prefix: PREFIX.to_string(),
        tls: None,
        auth: None,
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(1),
    }
}

async fn connect(url: String) -> Etcd {
    match Etcd::connect(&settings(url), timeouts()).await {
        Ok(etcd) => etcd,
        Err(err) => panic!("connect: {err}"),
    }
}

fn member(instance: &str) -> MemberInfo {
    MemberInfo {
        instance: instance.to_string(),
        started_at_ms: 1_765_000_000_000,
        version: "0.1.0".to_string(),
        admin: "127.0.0.1:9901".to_string(),
    }
}

async fn put(etcd: &Etcd, key: &str, value: &str) -> i64 {
    let mut client = etcd.client();
    let response = client.put(key, value, None).await.expect("put");
    response.header().expect("header").revision()
}

/// A string of the key and value of a change, or a snapshot's keys.
fn shown(item: &WatchItem) -> String {
    match item {
        WatchItem::Change(Change::Put { key, value, .. }) => format!(
            "put {}={}",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(value)
        ),
        WatchItem::Change(Change::Delete { key, .. }) => {
            format!("delete {}", String::from_utf8_lossy(key))
        }
        WatchItem::Snapshot { kvs, .. } => format!(
            "snapshot {}",
            kvs.iter()
                .map(|(k, v, _)| format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                ))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

async fn next(watch: &mut PrefixWatch) -> String {
    match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
        Ok(item) => shown(&item),
        Err(_) => panic!("no watch item within 20 s"),
    }
}

#[tokio::test]
async fn connecting_to_an_etcd_that_is_not_there_says_where_it_tried() {
    let addr = closed_port().await;
    let err = Etcd::connect(&settings(format!("http://{addr}")), timeouts())
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
}

#[tokio::test]
async fn an_instance_name_is_held_by_one_live_instance_until_its_lease_expires() {
    let etcd_process = EtcdProcess::start();
    let etcd = connect(etcd_process.url()).await;
    let first = Lease::grant(&etcd, TTL).await.expect("lease");
    members::join(&etcd, &first, &member("web-1"))
        .await
        .expect("the first web-1 joins");
    members::join(&etcd, &first, &member("web-2"))
        .await
        .expect("another name joins");

    let second = Lease::grant(&etcd, TTL).await.expect("lease");
    let err = members::join(&etcd, &second, &member("web-1"))
        .await
        .expect_err("web-1 is taken");
    assert!(matches!(err, FleetError::NameTaken { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(
            "the instance name \"web-1\" is taken by a live instance of this fleet (lease "
        ),
        "{message}"
    );
    assert!(message.contains("admin API 127.0.0.1:9901"), "{message}");
    let names: Vec<String> = members::members(&etcd)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.instance)
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);

    // The first instance stops without a word: its keep-alives stop, and etcd drops its
    // lease, and the name with it, a TTL later.
    drop(first);
    // Polled like `eventually`, keeping the membership it gets.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let joined = loop {
        match members::join(&etcd, &second, &member("web-1")).await {
            Ok(membership) => break membership,
            Err(FleetError::NameTaken { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("web-1 is not free again within 10 s: {err}"),
        }
    };
    let names: Vec<String> = members::members(&etcd)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.instance)
        .collect();
    assert_eq!(names, ["web-1"], "web-2 went with the first lease");
    members::leave(&etcd, &joined).await.expect("leave");
    assert!(members::members(&etcd).await.expect("members").is_empty());
}

/// After a cut, etcd may still hold this instance's name with the lease of its last
/// session when it comes back: that is its own, not another instance's, and taking it
/// back must not end serin (as a name held by a live stranger does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_back_from_a_cut_takes_its_name_back_from_its_last_session() {
    let etcd_process = EtcdProcess::start();
    let cluster = serin_config::Cluster {
        etcd: settings(etcd_process.url()),
        instance: "web-1".to_string(),
        lease_ttl: Duration::from_secs(30),
        on_etcd_loss: serin_config::OnEtcdLoss::Hold,
    };
    let (_etcd, last) = serin_control::fleet::node::join(&cluster, "127.0.0.1:9901", None)
        .await
        .expect("the first session joins");
    // The session is cut off: its keep-alives stop, but its lease has 30 s to live.
    let last_id = last.id();
    drop(last);
    let err = serin_control::fleet::node::join(&cluster, "127.0.0.1:9901", None)
        .await
        .expect_err("a stranger's live name");
    assert!(matches!(err, FleetError::NameTaken { .. }), "{err:?}");
    let (etcd, _lease) =
        serin_control::fleet::node::join(&cluster, "127.0.0.1:9901", Some(last_id))
            .await
            .expect("its own last session's name is taken back");
    let names: Vec<String> = members::members(&etcd)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.instance)
        .collect();
    assert_eq!(names, ["web-1"]);
    // A last lease that is gone already (revoked just now) is passed over: the name is
    // then refused only because the live session just taken holds it.
    let err = serin_control::fleet::node::join(&cluster, "127.0.0.1:9901", Some(last_id))
        .await
        .expect_err("held by the live session just taken");
    assert!(matches!(err, FleetError::NameTaken { .. }), "{err:?}");
}

/// A join whose write of the name went through but whose answer was lost (a cut
/// mid-call) leaves the name held by the lease that attempt took: the next attempt
/// must take it as its own, not end serin as if a stranger held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_answer_was_lost_does_not_read_as_a_stranger_holding_the_name() {
    use serin_control::fleet::etcd_client::PutOptions;
    use serin_control::fleet::node::{join, join_as};
    let etcd_process = EtcdProcess::start();
    let cluster = serin_config::Cluster {
        etcd: settings(etcd_process.url()),
        instance: "web-2".to_string(),
        lease_ttl: Duration::from_secs(30),
        on_etcd_loss: serin_config::OnEtcdLoss::Hold,
    };
    // An attempt that fails once it holds a lease: the name is held by another now.
    let (etcd, stranger) = join(&cluster, "127.0.0.1:9902", None)
        .await
        .expect("another instance takes the name");
    let mut previous = None;
    let err = join_as(&cluster, "127.0.0.1:9901", &mut previous)
        .await
        .expect_err("a name held by another");
    assert!(matches!(err, FleetError::NameTaken { .. }), "{err:?}");
    let attempted = previous.expect("the lease the failed attempt took");
    assert_ne!(attempted, stranger.id());
    // As if that attempt's write had gone through: the name is held by its lease.
    stranger.revoke().await.expect("the other leaves");
    let mut kv = etcd.client();
    kv.put(
        format!("{PREFIX}members/web-2"),
        "{}",
        Some(PutOptions::new().with_lease(attempted)),
    )
    .await
    .expect("the name held by the attempt's lease");
    let (etcd, lease) = join_as(&cluster, "127.0.0.1:9901", &mut previous)
        .await
        .expect("the next attempt takes the name back");
    assert_eq!(previous, Some(lease.id()));
    let names: Vec<String> = members::members(&etcd)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.instance)
        .collect();
    assert_eq!(names, ["web-2"]);
}

#[tokio::test]
async fn an_old_leader_cannot_write_once_another_leads() {
    let etcd_process = EtcdProcess::start();
    let etcd = connect(etcd_process.url()).await;
    let state = format!("{PREFIX}state/api");

    let first_lease = Lease::grant(&etcd, TTL).await.expect("lease");
    let first = election::campaign(&etcd, &first_lease, "web-1")
        .await
        .expect("the only candidate leads");
    assert_eq!(
        election::leader(&etcd).await.expect("leader"),
        Some((b"web-1".to_vec(), first.token()))
    );
    first
        .fenced_txn(&etcd, [TxnOp::put(state.as_str(), "by web-1", None)])
        .await
        .expect("the leader writes");

    // web-2 campaigns and waits; web-1's lease is revoked behind its back.
    let second_lease = Lease::grant(&etcd, TTL).await.expect("lease");
    let campaign = tokio::spawn({
        let etcd = etcd.clone();
        async move {
            let leadership = election::campaign(&etcd, &second_lease, "web-2").await;
            (leadership, second_lease)
        }
    });
    let mut client = etcd.client();
    client
        .lease_revoke(first_lease.id())
        .await
        .expect("revoke web-1's lease");
    let (second, _second_lease) = tokio::time::timeout(Duration::from_secs(10), campaign)
        .await
        .expect("web-2 is elected within 10 s")
        .expect("join");
    let second = second.expect("web-2 leads");
    assert!(second.token() > first.token(), "a later leader key");
    second
        .fenced_txn(&etcd, [TxnOp::put(state.as_str(), "by web-2", None)])
        .await
        .expect("the new leader writes");

    // The old leader's write is refused, and says why; the state is the new leader's.
    let err = first
        .fenced_txn(&etcd, [TxnOp::put(state.as_str(), "by web-1, late", None)])
        .await
        .expect_err("web-1 leads no more");
    assert!(err.is_not_leader(), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("not leader any more: the leader key"),
        "{err}"
    );
    let got = client.get(state.as_str(), None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"by web-2");
    // And web-1 notices its lease is gone at its next keep-alive.
    let reason = tokio::time::timeout(Duration::from_secs(5), first.lost(&first_lease))
        .await
        .expect("noticed within 5 s");
    assert_eq!(
        reason,
        LossReason::LeaseExpired,
        "{:?}",
        *first_lease.health().borrow()
    );

    // Resigning hands over at once: nobody leads.
    second.resign(&etcd).await.expect("resign");
    assert_eq!(election::leader(&etcd).await.expect("leader"), None);
}

#[tokio::test]
async fn a_watch_resumes_after_an_etcd_restart_missing_and_repeating_nothing() {
    let mut etcd_process = EtcdProcess::start();
    let etcd = connect(etcd_process.url()).await;
    let under = format!("{PREFIX}samples/");
    put(&etcd, &format!("{under}a"), "1").await;
    let mut watch = PrefixWatch::new(&etcd, under.as_str(), None);
    assert_eq!(next(&mut watch).await, format!("snapshot {under}a=1"));
    put(&etcd, &format!("{under}b"), "1").await;
    assert_eq!(next(&mut watch).await, format!("put {under}b=1"));

    etcd_process.restart();
    // Written while the watch's stream is down (or being set up again).
    eventually(
        Duration::from_secs(10),
        "etcd takes writes again",
        || async {
            let mut client = etcd.client();
            client.put(format!("{under}c"), "1", None).await.is_ok()
        },
    )
    .await;
    put(&etcd, &format!("{under}a"), "2").await;
    let mut client = etcd.client();
    client
        .delete(format!("{under}b"), None)
        .await
        .expect("delete");
    put(&etcd, &format!("{under}end"), "1").await;

    let mut got = Vec::new();
    while got.last() != Some(&format!("put {under}end=1")) {
        got.push(next(&mut watch).await);
    }
    assert_eq!(
        got,
        [
            format!("put {under}c=1"),
            format!("put {under}a=2"),
            format!("delete {under}b"),
            format!("put {under}end=1"),
        ]
    );
}

#[tokio::test]
async fn a_watch_that_fell_behind_a_compaction_reads_the_prefix_again() {
    let etcd_process = EtcdProcess::start();
    let direct = connect(etcd_process.url()).await;
    let relay = Relay::start(etcd_process.addr()).await;
    let through_relay = connect(relay.url()).await;
    let under = format!("{PREFIX}state/");
    let mut watch = PrefixWatch::new(&through_relay, under.as_str(), None);
    assert_eq!(next(&mut watch).await, "snapshot ");
    put(&direct, &format!("{under}api"), "1").await;
    assert_eq!(next(&mut watch).await, format!("put {under}api=1"));

    // Cut off, the watch misses writes that are then compacted away.
    relay.cut();
    put(&direct, &format!("{under}api"), "2").await;
    put(&direct, &format!("{under}web"), "1").await;
    let last = put(&direct, &format!("{under}shop"), "1").await;
    let mut client = direct.client();
    client.compact(last, None).await.expect("compact");
    relay.restore();
    assert_eq!(
        next(&mut watch).await,
        format!("snapshot {under}api=2 {under}shop=1 {under}web=1")
    );
    assert_eq!(watch.revision(), last);
    put(&direct, &format!("{under}web"), "2").await;
    assert_eq!(next(&mut watch).await, format!("put {under}web=2"));

    // A watch asked to start at a compacted revision reads the prefix too.
    let mut late = PrefixWatch::new(&direct, under.as_str(), Some(2));
    assert_eq!(
        next(&mut late).await,
        format!("snapshot {under}api=2 {under}shop=1 {under}web=2")
    );
}

#[tokio::test]
async fn a_lease_cut_off_from_etcd_is_reported_lost_then_expired() {
    let etcd_process = EtcdProcess::start();
    let direct = connect(etcd_process.url()).await;
    let relay = Relay::start(etcd_process.addr()).await;
    let etcd = connect(relay.url()).await;
    let lease = Lease::grant(&etcd, TTL).await.expect("lease");
    members::join(&etcd, &lease, &member("web-1"))
        .await
        .expect("join");
    let mut health = lease.health();
    assert!(health.borrow().is_reachable());

    relay.cut();
    eventually(Duration::from_secs(5), "the lease is reported lost", || {
        let lost = matches!(*health.borrow_and_update(), EtcdHealth::Lost { .. });
        async move { lost }
    })
    .await;
    // etcd, which heard nothing for the TTL, dropped the lease and the membership.
    eventually(
        Duration::from_secs(10),
        "web-1's membership is gone",
        || async { members::members(&direct).await.is_ok_and(|m| m.is_empty()) },
    )
    .await;
    let ttl = lease.ttl();
    assert!(health.borrow().lease_lost(std::time::Instant::now(), ttl));

    relay.restore();
    eventually(
        Duration::from_secs(10),
        "the lease is reported expired once etcd answers",
        || {
            let expired = matches!(*health.borrow_and_update(), EtcdHealth::Expired { .. });
            async move { expired }
        },
    )
    .await;
    let mut client = direct.client();
    let left = client
        .get(
            PREFIX,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("count");
    assert_eq!(left.count(), 0);
}

/// The cluster section is read at start: a reload that changes it says so, and the
/// rest of the config is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_cluster_says_it_takes_effect_on_restart() {
    let backend = Backend::start("stable").await;
    let dir = TempDir::new("fleet-reload");
    let config = dir.0.join("serin.yaml");
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n\
         listeners: [{{ name: web, listen: 127.0.0.1:0 }}]\n\
         routes: [{{ listener: web, service: api }}]\n\
         services: [{{ name: api, versions: [{{ name: stable, endpoints: [{}] }}] }}]\n\
         state_dir: \"{}\"\n\
         cluster: {{ etcd: {{ endpoints: [http://{}], prefix: /serin/test/ }}, instance: web-1 }}\n",
        backend.addr,
        dir.0.display(),
        // Nothing listens there: the instance serves on its own, and joins no one's fleet.
        closed_port().await
    );
    std::fs::write(&config, &yaml).expect("write the config");
    let mut serin = process::SerinProcess::start(&config, 1, &[], &[]);
    std::fs::write(&config, yaml.replace("instance: web-1", "instance: web-2"))
        .expect("write the config");
    serin.signal(libc::SIGHUP);
    serin.wait_for("the restart warning", |l| {
        l["message"] == "cluster changes take effect on restart"
    });
    serin.wait_for("the reload", |l| l["message"] == "config reloaded");
}

/// A test CA and the certificates it signs, as PEM files in a directory of their own.
struct TestCa {
    dir: TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = TempDir::new("etcd-tls");
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.0.join("ca.pem"), cert.pem()).expect("write CA");
        TestCa {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// `{file}.pem` and `{file}.key`, for `names`.
    fn issue(&self, file: &str, names: &[&str]) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("sign");
        std::fs::write(self.path(&format!("{file}.pem")), cert.pem()).expect("write cert");
        std::fs::write(self.path(&format!("{file}.key")), key.serialize_pem()).expect("write key");
    }

    fn path(&self, file: &str) -> String {
        self.dir.0.join(file).display().to_string()
    }
}

/// The `cluster.etcd` a config with `etcd` lines compiles to, its files read.
fn cluster_etcd(dir: &std::path::Path, etcd: &str) -> EtcdSettings {
    let file = dir.join("serin.yaml");
    std::fs::write(
        &file,
        format!(
            "listeners: [{{ name: web, listen: 127.0.0.1:0 }}]\n\
             routes: [{{ listener: web, service: api }}]\n\
             services: [{{ name: api, versions: [{{ name: stable, endpoints: [127.0.0.1:9] }}] }}]\n\
             cluster:\n  etcd:\n{etcd}"
        ),
    )
    .expect("write the config");
    match serin_config::load_file(&file) {
        Ok(snapshot) => snapshot.cluster.expect("cluster").etcd,
        Err(err) => panic!("{}", err.lines().join("\n")),
    }
}

/// etcd over mutual TLS, with the CA and the client certificate the config names.
#[tokio::test]
async fn connects_over_mutual_tls_with_the_files_the_config_names() {
    let ca = TestCa::new();
    ca.issue("etcd", &["127.0.0.1", "localhost"]);
    ca.issue("serin", &["serin"]);
    let etcd_process = EtcdProcess::start_tls(
        &ca.path("etcd.pem"),
        &ca.path("etcd.key"),
        Some(&ca.path("ca.pem")),
    );
    let url = etcd_process.url();
    assert!(url.starts_with("https://"), "{url}");

    let with_client = cluster_etcd(
        &ca.dir.0,
        &format!(
            "    endpoints: [{url}]\n    prefix: {PREFIX}\n    tls: {{ ca: ca.pem, cert: serin.pem, key: serin.key }}\n"
        ),
    );
    let etcd = match Etcd::connect(&with_client, timeouts()).await {
        Ok(etcd) => etcd,
        Err(err) => panic!("connect over TLS: {err}"),
    };
    let lease = Lease::grant(&etcd, TTL).await.expect("lease");
    members::join(&etcd, &lease, &member("web-1"))
        .await
        .expect("join over TLS");

    // Without the client certificate etcd refuses the connection.
    let without_client = cluster_etcd(
        &ca.dir.0,
        &format!("    endpoints: [{url}]\n    prefix: {PREFIX}\n    tls: {{ ca: ca.pem }}\n"),
    );
    let err = Etcd::connect(&without_client, timeouts())
        .await
        .expect_err("etcd wants a client certificate");
    assert!(err.to_string().contains(&url), "{err}");
}

/// etcd with authentication: the user and password file of the config; a wrong password
/// is an error at connect.
#[tokio::test]
async fn authenticates_with_the_user_and_password_file_the_config_names() {
    let etcd_process = EtcdProcess::start();
    let url = etcd_process.url();
    let admin = connect(url.clone()).await;
    let mut client = admin.client();
    client
        .user_add("root", "root-secret", None)
        .await
        .expect("root");
    client
        .user_grant_role("root", "root")
        .await
        .expect("root role");
    client
        .user_add("serin", "serin-secret", None)
        .await
        .expect("user");
    client.role_add("fleet").await.expect("role");
    client
        .role_grant_permission(
            "fleet",
            serin_control::fleet::etcd_client::Permission::read_write(PREFIX).with_prefix(),
        )
        .await
        .expect("grant");
    client
        .user_grant_role("serin", "fleet")
        .await
        .expect("grant role");
    client.auth_enable().await.expect("auth on");

    let dir = TempDir::new("etcd-auth");
    std::fs::write(dir.0.join("etcd.password"), "serin-secret\n").expect("write");
    std::fs::write(dir.0.join("wrong.password"), "guess\n").expect("write");
    let right = cluster_etcd(
        &dir.0,
        &format!("    endpoints: [{url}]\n    prefix: {PREFIX}\n    username: serin\n    password_file: etcd.password\n"),
    );
    let etcd = match Etcd::connect(&right, timeouts()).await {
        Ok(etcd) => etcd,
        Err(err) => panic!("connect as serin: {err}"),
    };
    let lease = Lease::grant(&etcd, TTL).await.expect("lease");
    members::join(&etcd, &lease, &member("web-1"))
        .await
        .expect("join as serin");

    let wrong = cluster_etcd(
        &dir.0,
        &format!("    endpoints: [{url}]\n    prefix: {PREFIX}\n    username: serin\n    password_file: wrong.password\n"),
    );
    let err = Etcd::connect(&wrong, timeouts())
        .await
        .expect_err("a wrong password");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot connect to etcd at {url}: ")),
        "{message}"
    );
    assert!(message.contains("authentication failed"), "{message}");
}
