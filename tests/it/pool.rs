//! Pooled upstream connections: closed once idle for their version's `idle_timeout`,
//! never while in use. Counted at the backend.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pooled_connection_is_closed_after_the_idle_timeout() {
    let backend = Backend::start("stable").await;
    let serin = Serin::start(&one_version(backend.addr, ", idle_timeout: 300ms")).await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 1);
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
    assert_eq!(backend.open(), 1, "pooled, still open");
    eventually(
        Duration::from_secs(5),
        "the idle connection closed",
        || async { backend.open() == 0 },
    )
    .await;
    assert_eq!(pool.idle_connections(), 0);
    // The next request dials a new one.
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(got.status.as_u16(), 200);
    assert_eq!(backend.connections(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_use_is_never_closed_by_the_idle_timeout() {
    let backend = Backend::start("stable").await;
    // The answer takes seven purges' worth of idle timeouts.
    backend.set_delay(Duration::from_millis(1_500));
    let serin = Serin::start(&one_version(backend.addr, ", idle_timeout: 200ms")).await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 1, "one connection, kept to the end");
    serin.shutdown(Duration::from_secs(5)).await;
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
    let backend = Backend::start("stable").await;
    let serin = Serin::start(&one_version(
        backend.addr,
        ", protocol: http2, idle_timeout: 300ms",
    ))
    .await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 1);
    let pool = serin.dataplane.table().services[0].versions[0].endpoints()[0]
        .pool
        .clone();
    assert_eq!(pool.shared_h2_connections(), 1);
    eventually(
        Duration::from_secs(5),
        "the quiet HTTP/2 connection closed",
        || async { backend.open() == 0 },
    )
    .await;
    assert_eq!(pool.shared_h2_connections(), 0);
    // The next request dials a new one.
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_keeps_its_http2_connection_past_the_idle_timeout() {
    let backend = Backend::start("stable").await;
    // The answer takes seven purges' worth of idle timeouts.
    backend.set_delay(Duration::from_millis(1_500));
    let serin = Serin::start(&one_version(
        backend.addr,
        ", protocol: http2, idle_timeout: 200ms",
    ))
    .await;
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "stable"));
    assert_eq!(backend.connections(), 1, "one connection, kept to the end");
    serin.shutdown(Duration::from_secs(5)).await;
}
