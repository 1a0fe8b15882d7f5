//! The data plane end to end: real serin, real backends, real sockets on port 0.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `n` requests with `concurrency` in flight; returns how many each version served
/// according to the x-serin-version header the client got.
async fn spray(serin: &Serin, n: usize, concurrency: usize) -> (usize, usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let url = serin.url("/");
        let share = n / concurrency + usize::from(worker < n % concurrency);
        tasks.spawn(async move {
            let client = client();
            let (mut stable, mut canary) = (0, 0);
            for _ in 0..share {
                let got = get(&client, &url, &[]).await;
                assert_eq!(got.status, StatusCode::OK);
                match got.headers["x-serin-version"].to_str().expect("ascii") {
                    "stable" => stable += 1,
                    "canary" => canary += 1,
                    other => panic!("unexpected version {other}"),
                }
            }
            (stable, canary)
        });
    }
    let (mut stable, mut canary) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        let (s, c) = done.expect("client task");
        stable += s;
        canary += c;
    }
    (stable, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_10000_requests_90_10() {
    let (stable, canary, serin) = pair("    split: { weights: { stable: 90, canary: 10 } }").await;
    let (s, c) = spray(&serin, 10_000, 16).await;
    assert_eq!(s + c, 10_000);
    // What the backends counted, not just what serin said.
    assert_eq!(stable.hits(), s);
    assert_eq!(canary.hits(), c);
    assert!((900..=1100).contains(&c), "canary got {c} of 10000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_50_50() {
    let (stable, canary, serin) = pair("    split: { weights: { stable: 50, canary: 50 } }").await;
    let (s, c) = spray(&serin, 4000, 8).await;
    assert_eq!((stable.hits(), canary.hits()), (s, c));
    assert!((1900..=2100).contains(&c), "canary got {c} of 4000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_stay_on_the_canary_when_its_weight_rises() {
    let (stable, canary, serin) =
        pair("    split: { weights: { stable: 95, canary: 5 }, sticky: { header: x-user-id } }")
            .await;
    let client = client();
    let url = serin.url("/");
    let users: Vec<String> = (0..2000).map(|u| format!("user-{u}")).collect();

    let mut on_canary_at_5 = HashSet::new();
    for user in &users {
        let got = get(&client, &url, &[("x-user-id", user)]).await;
        if got.body == "canary" {
            on_canary_at_5.insert(user.clone());
        }
        // The same user asks again: same version.
        let again = get(&client, &url, &[("x-user-id", user)]).await;
        assert_eq!(again.body, got.body, "{user} flipped at a constant weight");
    }
    assert!(
        (50..=150).contains(&on_canary_at_5.len()),
        "{} of 2000 at 5%",
        on_canary_at_5.len()
    );

    let weights = serin
        .dataplane
        .validate_weights("api", &[("stable", 75), ("canary", 25)])
        .expect("valid weights");
    serin.dataplane.set_weights(&weights);
    let mut on_canary_at_25 = HashSet::new();
    for user in &users {
        if get(&client, &url, &[("x-user-id", user)]).await.body == "canary" {
            on_canary_at_25.insert(user.clone());
        }
    }
    // Every request reached a backend: 2 per user at 5 %, 1 per user at 25 %.
    assert_eq!(stable.hits() + canary.hits(), 3 * users.len());
    let left: Vec<_> = on_canary_at_5.difference(&on_canary_at_25).collect();
    assert!(left.is_empty(), "users moved back to stable: {left:?}");
    assert!(
        (400..=600).contains(&on_canary_at_25.len()),
        "{} of 2000 at 25%",
        on_canary_at_25.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keys_the_cohort() {
    let (stable, canary, serin) =
        pair("    split: { weights: { stable: 50, canary: 50 }, sticky: { cookie: session } }")
            .await;
    let client = client();
    for user in 0..50 {
        let cookie = format!("theme=dark; session=s{user}; other=1");
        let first = get(&client, &serin.url("/"), &[("cookie", &cookie)])
            .await
            .body;
        for _ in 0..3 {
            assert_eq!(
                get(&client, &serin.url("/"), &[("cookie", &cookie)])
                    .await
                    .body,
                first
            );
        }
    }
    assert!(stable.hits() > 0 && canary.hits() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_header_picks_the_named_version_even_at_weight_zero() {
    let (stable, canary, serin) = pair("    split: { weights: { stable: 100, canary: 0 }, sticky: { header: x-user-id }, force: { header: x-serin-version } }").await;
    let client = client();
    for _ in 0..20 {
        let got = get(
            &client,
            &serin.url("/"),
            &[("x-serin-version", "canary"), ("x-user-id", "u1")],
        )
        .await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "canary"));
    }
    // A name that is no version falls through to the weights.
    for _ in 0..20 {
        let got = get(&client, &serin.url("/"), &[("x-serin-version", "nope")]).await;
        assert_eq!(got.body, "stable");
    }
    assert_eq!((stable.hits(), canary.hits()), (20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_a_404_naming_host_and_path() {
    let backend = Backend::start("shop").await;
    let serin = Serin::start(&format!(
        r#"
listeners: [{{ name: web, listen: 127.0.0.1:0 }}]
admin: {{ listen: 127.0.0.1:0 }}
routes:
  - {{ listener: web, match: {{ host: shop.example.com, path_prefix: /shop }}, service: shop }}
services:
  - {{ name: shop, versions: [{{ name: v1, endpoints: [{}] }}] }}
"#,
        backend.addr
    ))
    .await;
    let client = client();
    let got = get(
        &client,
        &serin.url("/shop/cart"),
        &[("host", "other.example.com")],
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(
        got.body,
        "404 Not Found: no route for host \"other.example.com\" and path \"/shop/cart\"\n"
    );
    let got = get(
        &client,
        &serin.url("/shopping"),
        &[("host", "shop.example.com:8080")],
    )
    .await;
    assert_eq!(
        got.status,
        StatusCode::NOT_FOUND,
        "/shop must not match /shopping"
    );
    let got = get(
        &client,
        &serin.url("/shop/cart"),
        &[("host", "SHOP.example.com:8080")],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "shop"));
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_take_the_most_specific_host_then_the_longest_prefix() {
    let (a, b, c, d) = (
        Backend::start("any-root").await,
        Backend::start("any-api").await,
        Backend::start("wild-root").await,
        Backend::start("exact-api").await,
    );
    let service = |name: &str, addr| {
        format!("  - {{ name: {name}, versions: [{{ name: v1, endpoints: [{addr}] }}] }}\n")
    };
    let yaml = format!(
        r#"
listeners: [{{ name: web, listen: 127.0.0.1:0 }}]
admin: {{ listen: 127.0.0.1:0 }}
routes:
  - {{ listener: web, match: {{ host: "*", path_prefix: / }}, service: a }}
  - {{ listener: web, match: {{ host: "*", path_prefix: /api }}, service: b }}
  - {{ listener: web, match: {{ host: "*.example.com", path_prefix: / }}, service: c }}
  - {{ listener: web, match: {{ host: api.example.com, path_prefix: /api/v2 }}, service: d }}
services:
{}{}{}{}"#,
        service("a", a.addr),
        service("b", b.addr),
        service("c", c.addr),
        service("d", d.addr)
    );
    let serin = Serin::start(&yaml).await;
    let client = client();
    for (host, path, want) in [
        ("localhost", "/", "any-root"),
        ("localhost", "/api/x", "any-api"),
        ("www.example.com", "/api/x", "wild-root"),
        ("api.example.com", "/api/v2/users", "exact-api"),
        ("api.example.com", "/api/v1", "wild-root"),
        ("example.com", "/", "any-root"),
    ] {
        let got = get(&client, &serin.url(path), &[("host", host)]).await;
        assert_eq!(got.body, want, "{host}{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_a_502_counted_against_that_version() {
    let stable = Backend::start("stable").await;
    let dead = closed_port().await;
    let serin = Serin::start(&two_versions(
        stable.addr,
        dead,
        "    split: { weights: { stable: 50, canary: 50 }, force: { header: x-serin-version } }\n    timeouts: { connect: 1s, request: 5s }",
    ))
    .await;
    serin.dataplane.take_intervals();
    let client = client();
    let got = get(&client, &serin.url("/"), &[("x-serin-version", "canary")]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        got.body,
        "502 Bad Gateway: cannot connect to version \"canary\" of service \"api\"\n"
    );
    assert_eq!(got.headers["x-serin-version"], "canary");
    let got = get(&client, &serin.url("/"), &[("x-serin-version", "stable")]).await;
    assert_eq!(got.status, StatusCode::OK);

    let intervals = serin.dataplane.take_intervals();
    let api = &intervals[0];
    let (name, canary) = &api.versions[1];
    assert_eq!(name, "canary");
    assert_eq!(
        (canary.connect_errors, canary.errors(), canary.requests()),
        (1, 1, 1)
    );
    let (_, stable_iv) = &api.versions[0];
    assert_eq!((stable_iv.errors(), stable_iv.responses[1]), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_a_504_counted_against_that_version() {
    let (stable, canary, serin) = pair("    split: { weights: { stable: 50, canary: 50 }, force: { header: x-serin-version } }\n    timeouts: { connect: 1s, request: 200ms }").await;
    canary.set_delay(Duration::from_secs(5));
    let client = client();
    let got = get(&client, &serin.url("/"), &[("x-serin-version", "canary")]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        got.body,
        "504 Gateway Timeout: version \"canary\" of service \"api\" did not respond within 200ms\n"
    );
    let intervals = serin.dataplane.take_intervals();
    let (_, canary_iv) = &intervals[0].versions[1];
    let (_, stable_iv) = &intervals[0].versions[0];
    assert_eq!((canary_iv.timeouts, canary_iv.errors()), (1, 1));
    assert_eq!(stable_iv.requests(), 0);
    assert_eq!((stable.hits(), canary.hits()), (0, 1));
    // The latency recorded is the time serin waited.
    assert!(canary_iv.latency_us.max() >= 200_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_5xx_is_passed_through_and_counted_as_an_error() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    canary.set_status(503);
    let serin = Serin::start(&two_versions(
        stable.addr,
        canary.addr,
        "    split: { weights: { stable: 50, canary: 50 }, force: { header: x-serin-version } }",
    ))
    .await;
    let client = client();
    for _ in 0..3 {
        let got = get(&client, &serin.url("/"), &[("x-serin-version", "canary")]).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "canary")
        );
    }
    let intervals = serin.dataplane.take_intervals();
    let (_, canary_iv) = &intervals[0].versions[1];
    assert_eq!(
        (
            canary_iv.responses[4],
            canary_iv.errors(),
            canary_iv.upstream_failures()
        ),
        (3, 3, 0)
    );
}

/// Raw bytes, so that nothing between the test and serin rewrites the headers.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("response within 10s")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_do_not_reach_the_backend() {
    let (backend, serin) = one_backend("").await;
    let response = raw_request(
        serin.addr,
        "GET /x HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close, X-Secret\r\nKeep-Alive: timeout=5\r\n\
         X-Secret: hunter2\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\n\
         Trailer: X-Checksum\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    let seen = backend.last_seen();
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "backend saw {gone}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(seen.headers["host"], "shop.example.com");
    assert_eq!(seen.uri.path(), "/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_replaced_unless_the_peer_is_trusted() {
    let forged = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "for=203.0.113.7;proto=https"),
        ("x-real-ip", "203.0.113.7"),
        ("host", "shop.example.com"),
    ];
    // By default a client cannot forge where it came from.
    let (backend, serin) = one_backend("").await;
    get(&client(), &serin.url("/a?b=c"), &forged).await;
    let seen = backend.last_seen();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example.com");
    // serin does not set these two, so a client's are removed.
    assert!(
        !seen.headers.contains_key("forwarded"),
        "{:?}",
        seen.headers
    );
    assert!(
        !seen.headers.contains_key("x-real-ip"),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        seen.uri.path_and_query().map(|p| p.as_str()),
        Some("/a?b=c")
    );
    serin.shutdown(Duration::from_secs(5)).await;

    // A trusted peer (another proxy in front): its chain is kept and extended.
    let yaml = stable_only_config(backend.addr).await.replace(
        "{ name: web, listen: 127.0.0.1:0 }",
        "{ name: web, listen: 127.0.0.1:0, trust_forwarded: [127.0.0.0/8, \"::1\"] }",
    );
    let serin = Serin::start(&yaml).await;
    get(&client(), &serin.url("/"), &forged).await;
    let seen = backend.last_seen();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["forwarded"], "for=203.0.113.7;proto=https");
    assert_eq!(seen.headers["x-real-ip"], "203.0.113.7");
    get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(backend.last_seen().headers["x-forwarded-for"], "127.0.0.1");
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_or_generated_and_returned() {
    let (backend, serin) = one_backend("").await;
    let client = client();
    let got = get(&client, &serin.url("/"), &[("x-request-id", "req-42")]).await;
    assert_eq!(backend.last_seen().headers["x-request-id"], "req-42");
    assert_eq!(got.headers["x-request-id"], "req-42");

    let got = get(&client, &serin.url("/"), &[]).await;
    let generated = backend.last_seen().headers["x-request-id"].clone();
    assert_eq!(generated.len(), 36, "{generated:?}");
    assert_eq!(got.headers["x-request-id"], generated);
    let other = get(&client, &serin.url("/"), &[]).await;
    assert_ne!(other.headers["x-request-id"], generated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_proxied() {
    let (stable, canary, serin) = pair(
        "    split: { weights: { stable: 50, canary: 50 }, force: { header: x-serin-version } }",
    )
    .await;
    let client = h2_client();
    let got = get(&client, &serin.url("/h2"), &[("x-serin-version", "canary")]).await;
    assert_eq!(
        (got.status, got.body.as_str(), got.version),
        (StatusCode::OK, "canary", http::Version::HTTP_2)
    );
    assert_eq!(got.headers["x-serin-version"], "canary");
    let seen = canary.last_seen();
    assert_eq!(seen.uri.path(), "/h2");
    assert_eq!(seen.headers["host"], serin.addr.to_string());

    // A POST body arrives whole.
    let req = Request::post(serin.url("/upload"))
        .header("x-serin-version", "stable")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("request");
    let got = send(&client, req).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(stable.last_seen().method, http::Method::POST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let (stable, canary, serin) = pair("    split: { weights: { stable: 1, canary: 0 } }").await;
    stable.set_delay(Duration::from_millis(800));
    let url = serin.url("/slow");
    let in_flight = tokio::spawn(async move { get(&client(), &url, &[]).await });
    eventually(
        Duration::from_secs(5),
        "the backend got the slow request",
        || async { stable.hits() == 1 },
    )
    .await;
    let addr = serin.addr;
    let drained = serin.shutdown(Duration::from_secs(10)).await;
    assert!(drained, "connections did not drain");
    let got = in_flight.await.expect("client task");
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "stable"));
    assert_eq!(canary.hits(), 0);
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (backend, serin) = one_backend("").await;
    let client = client();
    for chunked in [false, true] {
        backend
            .state
            .chunked
            .store(chunked, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..20 {
            let got = get(&client, &serin.url("/"), &[]).await;
            assert_eq!(got.status, StatusCode::OK);
            assert_eq!(got.body, "stable");
        }
    }
    assert_eq!(backend.hits(), 40);
    // One pool per runtime thread: at most one connection each.
    assert!(
        backend.connections() <= 2,
        "40 sequential requests took {} upstream connections",
        backend.connections()
    );
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A backend that answers each connection's first request and then closes it, without
/// saying so (as one whose keep-alive timeout just expired does).
async fn closing_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    let (addr, served) = closing_backend().await;
    let serin = Serin::start(&stable_only_config(addr).await).await;
    let client = client();
    for i in 0..30 {
        let got = get(&client, &serin.url("/"), &[]).await;
        assert_eq!(got.status, StatusCode::OK, "request {i}: {}", got.body);
        assert_eq!(got.body, "ok");
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 30);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abandoning_a_response_leaves_the_next_request_whole() {
    let (backend, serin) = one_backend("").await;
    backend
        .state
        .body_len
        .store(4 << 20, std::sync::atomic::Ordering::SeqCst);
    // Read only the head of a 4 MiB response, then hang up.
    let addr = serin.addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut head = vec![0u8; 1024];
    let n = stream.read(&mut head).await.expect("read");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    drop(stream);

    backend
        .state
        .body_len
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let client = client();
    for _ in 0..10 {
        let got = get(&client, &serin.url("/"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.body, "stable");
    }
    assert_eq!(backend.hits(), 11);
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A backend that accepts `Upgrade: echo` with 101 and then echoes every byte, counting
/// upgrades; other requests get 200.
async fn upgrade_backend() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let upgrades = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = upgrades.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    let count = count.clone();
                    async move {
                        let mut resp = http::Response::new(Full::new(Bytes::new()));
                        if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
                            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = on.await {
                                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                                    let _ = tokio::io::copy(&mut r, &mut w).await;
                                }
                            });
                            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            resp.headers_mut()
                                .insert("connection", "upgrade".parse().expect("value"));
                            resp.headers_mut()
                                .insert("upgrade", "echo".parse().expect("value"));
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, upgrades)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connections_pass_through_to_the_chosen_version() {
    let (addr, upgrades) = upgrade_backend().await;
    let serin = Serin::start(&stable_only_config(addr).await).await;
    let mut stream = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    assert!(head.contains("x-serin-version: stable"), "{head}");
    for message in ["hello", "through serin", "both ways"] {
        stream.write_all(message.as_bytes()).await.expect("send");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .expect("echo within 5s")
            .expect("read the echo");
        assert_eq!(echoed, message.as_bytes());
    }
    assert_eq!(upgrades.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Counted for its version, as a 1xx answer.
    let intervals = serin.dataplane.take_intervals();
    assert_eq!(intervals[0].versions[0].1.responses[0], 1);
    drop(stream);
    serin.shutdown(Duration::from_secs(5)).await;
}

fn health_config(
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
    split: &str,
) -> String {
    two_versions(stable, canary, split).replace(
        "endpoints: [",
        "health: { path: /healthz, interval: 50ms, timeout: 40ms, unhealthy_after: 2, healthy_after: 2 }, endpoints: [",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_failing_its_health_checks_leaves_rotation_and_comes_back() {
    let (stable, canary) = (
        Backend::start("stable").await,
        Backend::start("canary").await,
    );
    let serin = Serin::start(&health_config(
        stable.addr,
        canary.addr,
        "    split: { weights: { stable: 50, canary: 50 } }",
    ))
    .await;
    eventually(Duration::from_secs(5), "both are checked", || async {
        stable
            .state
            .health_checks
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
            && canary
                .state
                .health_checks
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 2
    })
    .await;
    let (s, c) = spray(&serin, 100, 2).await;
    assert!(s > 30 && c > 30, "{s}/{c}");

    // The canary's health check fails (its app still answers): out of rotation, and
    // its share goes to stable.
    canary
        .state
        .health_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let hits = canary.hits();
    eventually(
        Duration::from_secs(5),
        "the canary leaves rotation",
        || async {
            let before = canary.hits();
            let (_, c) = spray(&serin, 20, 1).await;
            c == 0 && canary.hits() == before
        },
    )
    .await;
    let (s, c) = spray(&serin, 100, 2).await;
    assert_eq!((s, c), (100, 0));
    assert!(canary.hits() >= hits);

    // Healthy again: back in rotation.
    canary
        .state
        .health_status
        .store(0, std::sync::atomic::Ordering::SeqCst);
    eventually(Duration::from_secs(5), "the canary is back", || async {
        let (_, c) = spray(&serin, 20, 1).await;
        c > 0
    })
    .await;
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_version_fails_over_without_a_client_error_and_is_ejected() {
    let stable = Backend::start("stable").await;
    let dead = closed_port().await;
    // A rollout with the canary at 50 %, whose canary is not running.
    let dir = TempDir::new("failover");
    let yaml = rollout_config(
        stable.addr,
        dead,
        &dir.0,
        "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 50, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 10s\n        rules:\n          - error_rate: { max: 50% }\n",
    )
    .replace(
        &format!("endpoints: [{dead}]"),
        &format!("endpoints: [{dead}], eject: {{ consecutive_failures: 3, for: 1h }}"),
    );
    assert!(yaml.contains("eject"), "{yaml}");
    let c = Controlled::start(&yaml).await;
    // Every request is answered by stable: POSTs too, since nothing was sent.
    let client = client();
    for i in 0..40 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let req = http::Request::builder()
            .method(method)
            .uri(c.serin.url("/"))
            .header("x-user-id", format!("user-{i}"))
            .body(Full::new(Bytes::from_static(b"order")))
            .expect("request");
        let got = send(&client, req).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (StatusCode::OK, "stable"),
            "request {i}"
        );
    }
    assert_eq!(stable.hits(), 40);
    let view = c.serin.dataplane.view();
    let canary = &view.table.services[0].versions[1];
    // Three refused connections ejected it; after that its share went straight to
    // stable without trying.
    assert!(!canary.available());
    // Each request of a user in the canary's cohort failed over, and no other.
    let canary_users = (0..40)
        .filter(|i| view.split(0).pick_sticky(format!("user-{i}").as_bytes()) == 1)
        .count();
    assert!(canary_users > 0);
    assert_eq!(
        canary.failovers.load(std::sync::atomic::Ordering::SeqCst),
        canary_users as u64
    );
    c.stop().await;
}
