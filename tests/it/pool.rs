//! Pooled upstream connections: closed once idle for their version's `idle_timeout`,
//! never while in use. Counted at the backend.

use std::time::Duration;

use crate::common::*;
use serin_proxy::upstream::EndpointPool;

/// One request to a version with `settings` (`, idle_timeout: 300ms` …): its upstream
/// connection stays open while `held` (the pool's count of such connections) holds it,
/// is closed once it has been unused for the idle timeout, and the next request dials
/// a new one.
async fn a_quiet_connection_is_closed_after_the_idle_timeout(
    settings: &str,
    held: fn(&EndpointPool) -> usize,
) {
    let backend = Backend::start("stable").await;
    let serin = Serin::start(&one_version(backend.addr, settings)).await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 1);
    let pool = serin.dataplane.table().services[0].versions[0].endpoints()[0]
        .pool
        .clone();
    eventually(
        Duration::from_secs(2),
        "the connection held by its pool",
        || {
            let count = held(&pool);
            async move { count == 1 }
        },
    )
    .await;
    assert_eq!(backend.open(), 1, "held, still open");
    eventually(
        Duration::from_secs(5),
        "the quiet connection closed",
        || async { backend.open() == 0 },
    )
    .await;
    assert_eq!(held(&pool), 0);
    // The next request dials a new one.
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A request to a version with `settings` whose answer takes seven purges' worth of
/// its 200 ms idle timeout keeps its one connection to the end.
async fn a_connection_in_use_outlives_the_idle_timeout(settings: &str) {
    let backend = Backend::start("stable").await;
    backend.set_delay(Duration::from_millis(1_500));
    let serin = Serin::start(&one_version(backend.addr, settings)).await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 1, "one connection, kept to the end");
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_is_closed_after_the_idle_timeout() {
    a_quiet_connection_is_closed_after_the_idle_timeout(
        ", idle_timeout: 300ms",
        EndpointPool::idle_connections,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_use_is_never_closed_by_the_idle_timeout() {
    a_connection_in_use_outlives_the_idle_timeout(", idle_timeout: 200ms").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_idle_timeout_an_idle_connection_stays_for_the_default() {
    let backend = Backend::start("stable").await;
    let serin = Serin::start(&one_version(backend.addr, "")).await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(got.status.as_u16(), 200);
    let version = &serin.dataplane.table().services[0].versions[0];
    assert_eq!(version.idle_timeout, Duration::from_secs(60));
    // Purges come every second: after two of them the connection is still there.
    tokio::time::sleep(serin_proxy::health::PURGE * 2).await;
    assert_eq!(backend.open(), 1);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_shortens_the_idle_timeout_keeps_the_pool_and_applies() {
    let backend = Backend::start("stable").await;
    let yaml = one_version(backend.addr, ", idle_timeout: 1h");
    let serin = Serin::start(&yaml).await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(got.status.as_u16(), 200);
    let pool = serin.dataplane.table().services[0].versions[0].endpoints()[0]
        .pool
        .clone();
    eventually(
        Duration::from_secs(2),
        "the connection back in its pool",
        || {
            let idle = pool.idle_connections();
            async move { idle == 1 }
        },
    )
    .await;

    let snapshot = serin_config::parse_str(
        &yaml.replace("idle_timeout: 1h", "idle_timeout: 300ms"),
        "reload.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    serin.dataplane.apply(snapshot).expect("reload");
    let table = serin.dataplane.table();
    let version = &table.services[0].versions[0];
    assert_eq!(version.idle_timeout, Duration::from_millis(300));
    assert!(
        std::sync::Arc::ptr_eq(&version.endpoints()[0].pool, &pool),
        "the pool was kept"
    );
    assert_eq!(
        (pool.idle_connections(), backend.open()),
        (1, 1),
        "its connection too"
    );
    eventually(
        Duration::from_secs(5),
        "the idle connection closed by the new timeout",
        || async { backend.open() == 0 },
    )
    .await;
    assert_eq!(backend.connections(), 1);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_http2_connection_no_request_uses_is_closed_after_the_idle_timeout() {
    a_quiet_connection_is_closed_after_the_idle_timeout(
        ", protocol: http2, idle_timeout: 300ms",
        EndpointPool::shared_h2_connections,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_keeps_its_http2_connection_past_the_idle_timeout() {
    a_connection_in_use_outlives_the_idle_timeout(", protocol: http2, idle_timeout: 200ms").await;
}
