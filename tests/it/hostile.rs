//! Hostile and malformed input: what a client that sends it gets, and what (nothing)
//! reaches the upstream.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends raw bytes and reads until serin closes the connection (or 5 s pass).
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await,
        Ok(Ok(_)) | Ok(Err(_))
    );
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_are_refused_and_never_reach_the_upstream() {
    let (backend, serin) = one_backend("").await;
    let vectors: &[(&str, &str)] = &[
        (
            "two different Content-Length values",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcdGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "a Content-Length list",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 40\r\n\r\nabcd",
        ),
        (
            "a Transfer-Encoding that does not end in chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "an unknown Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "a Content-Length that is not a number",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
        ),
        (
            "an obsolete line folding",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
        ),
        (
            "a space before the colon",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\nabcd",
        ),
    ];
    for (what, bytes) in vectors {
        let before = backend.hits();
        let (response, closed) = exchange(serin.addr, bytes.as_bytes()).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{what}: expected 400, got {response:?}"
        );
        assert!(closed, "{what}: the connection stays open");
        assert!(!response.contains("stable"), "{what}: {response:?}");
        assert_eq!(backend.hits(), before, "{what}: reached the backend");
    }
    assert!(
        backend.seen().iter().all(|s| s.uri.path() != "/smuggled"),
        "a smuggled request reached the backend"
    );
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A malformed chunk is found only once the body streams: the upstream request is
/// aborted, the client gets a 400 and a closed connection, and the version is not
/// blamed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_is_a_400_that_does_not_count_against_the_version() {
    let (backend, serin) = one_backend("").await;
    let (response, closed) = exchange(
        serin.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\nabcd\r\n0\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert!(
        response.contains("request body was malformed"),
        "{response:?}"
    );
    assert!(closed, "the connection stays open");
    let intervals = serin.dataplane.take_intervals();
    let stable = &intervals[0].versions[0];
    assert_eq!(stable.0, "stable");
    assert_eq!(stable.1.responses, [0; 5], "{:?}", stable.1.responses);
    assert_eq!((stable.1.resets, stable.1.client_gone), (0, 1));
    let _ = backend;
    serin.shutdown(Duration::from_secs(5)).await;
}

/// Both Content-Length and Transfer-Encoding: read by Transfer-Encoding alone, forwarded
/// without the Content-Length, and the connection closed after the answer (RFC 9112
/// §6.1), so what follows the chunked body is never read as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let (backend, serin) = one_backend("").await;
    for order in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let before = backend.hits();
        let request = format!(
            "POST /first HTTP/1.1\r\nHost: a\r\n{order}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let (response, closed) = exchange(serin.addr, request.as_bytes()).await;
        assert!(closed, "{order}: the connection stays open");
        assert_eq!(
            response.matches("HTTP/1.1 ").count(),
            1,
            "{order}: {response:?}"
        );
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "{order}: {response:?}"
        );
        assert_eq!(backend.hits(), before + 1, "{order}");
        let seen = backend.last_seen();
        assert_eq!(seen.uri.path(), "/first");
        assert!(!seen.headers.contains_key("content-length"), "{order}");
    }
    assert!(backend.seen().iter().all(|s| s.uri.path() != "/smuggled"));
    serin.shutdown(Duration::from_secs(5)).await;
}

/// Asserts that nothing was recorded against any version since the last take: a
/// refusal never reached one.
fn nothing_recorded(serin: &Serin, what: &str) {
    for service in serin.dataplane.take_intervals() {
        for (version, interval) in service.versions {
            assert_eq!(
                (interval.responses, interval.resets, interval.client_gone),
                ([0; 5], 0, 0),
                "{what}: recorded against {version}"
            );
        }
    }
}

/// Requests whose Host, target or Transfer-Encoding serin cannot forward faithfully:
/// serin's own 400 naming the fault, the connection closed, nothing sent upstream and
/// nothing recorded against a version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_hosts_targets_and_transfer_encodings_are_a_400_that_closes() {
    let (backend, serin) = one_backend("").await;
    let vectors: &[(&str, &str, &str)] = &[
        (
            "two Host lines",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: evil.example\r\n\r\n",
            "more than one Host",
        ),
        (
            "two equal Host lines",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "more than one Host",
        ),
        (
            "two Host lines on HTTP/1.0",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
            "more than one Host",
        ),
        ("no Host", "GET / HTTP/1.1\r\n\r\n", "needs a Host"),
        (
            "absolute-form without Host",
            "GET http://a/ HTTP/1.1\r\n\r\n",
            "needs a Host",
        ),
        ("an empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "Host header is not"),
        ("a space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "Host header is not"),
        ("userinfo in Host", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", "Host header is not"),
        ("a port over 65535", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", "Host header is not"),
        ("an empty port", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", "Host header is not"),
        ("a path in Host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", "Host header is not"),
        ("an unbracketed IPv6 Host", "GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", "Host header is not"),
        ("non-ASCII in Host", "GET / HTTP/1.1\r\nHost: a\u{e9}\r\n\r\n", "Host header is not"),
        (
            "absolute-form with a bad Host line",
            "GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n",
            "Host header is not",
        ),
        (
            "userinfo in the target",
            "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "authority of the request target",
        ),
        (
            "a bad port in the target",
            "GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "authority of the request target",
        ),
        (
            "another scheme",
            "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "neither http nor https",
        ),
        (
            "authority-form for GET",
            "GET evil.example HTTP/1.1\r\nHost: a\r\n\r\n",
            "authority-form",
        ),
        ("asterisk-form for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", "only for OPTIONS"),
        (
            "chunked twice on one line",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            "chunked exactly once",
        ),
        (
            "chunked on two lines",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "chunked exactly once",
        ),
        (
            "a coding before chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "may only be chunked",
        ),
        (
            "a coding on a line of its own",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "may only be chunked",
        ),
    ];
    for (what, bytes, says) in vectors {
        let before = backend.hits();
        let (response, closed) = exchange(serin.addr, bytes.as_bytes()).await;
        // HTTP/1.0 is answered in HTTP/1.0.
        assert!(
            response.starts_with("HTTP/1.1 400") || response.starts_with("HTTP/1.0 400"),
            "{what}: expected 400, got {response:?}"
        );
        assert!(response.contains(says), "{what}: {response:?}");
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{what}: {response:?}"
        );
        assert!(closed, "{what}: the connection stays open");
        assert_eq!(backend.hits(), before, "{what}: reached the backend");
        nothing_recorded(&serin, what);
    }
    // serin tunnels nothing.
    let (response, closed) = exchange(
        serin.addr,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 501"), "{response:?}");
    assert!(response.contains("does not tunnel CONNECT"), "{response:?}");
    assert!(closed);
    assert_eq!(backend.hits(), 0);
    nothing_recorded(&serin, "CONNECT");

    // What the rules allow is served: HTTP/1.0 without Host, OPTIONS *, an IPv6 Host,
    // absolute-form (its authority wins over the Host line).
    for (request, host) in [
        ("GET / HTTP/1.0\r\n\r\n", serin.addr.to_string()),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "a".to_string()),
        (
            "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            "[::1]:8080".to_string(),
        ),
        ("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", "b".to_string()),
    ] {
        let closing = request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
        let (response, _) = exchange(serin.addr, closing.as_bytes()).await;
        assert!(response.contains(" 200 OK"), "{request:?}: {response:?}");
        let seen = backend.last_seen();
        assert_eq!(
            seen.headers.get_all("host").iter().count(),
            1,
            "{request:?}"
        );
        if !request.contains("HTTP/1.0") {
            assert_eq!(seen.headers["host"], host.as_str(), "{request:?}");
        }
    }
    serin.shutdown(Duration::from_secs(5)).await;
}

/// An HTTP/2 request whose `host` header names another authority than its
/// `:authority`, or has two: a 400 on that stream; the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_that_differs_from_authority_is_a_400_on_that_stream() {
    let (backend, serin) = one_backend("").await;
    let tcp = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let mut two = http::Request::get("http://a/x").body(()).expect("request");
    two.headers_mut()
        .append("host", http::HeaderValue::from_static("a"));
    two.headers_mut()
        .append("host", http::HeaderValue::from_static("a"));
    let cases = [
        (
            http::Request::get("http://a/x")
                .header("host", "evil.example")
                .body(())
                .expect("request"),
            "another authority than :authority",
        ),
        (two, "more than one Host"),
        (
            http::Request::get("http://user@a/x")
                .body(())
                .expect("request"),
            "authority of the request target",
        ),
    ];
    for (req, says) in cases {
        let (response, _) = client.send_request(req, true).expect("send");
        let response = response.await.expect("response");
        assert_eq!(response.status(), http::StatusCode::BAD_REQUEST, "{says}");
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            text.extend_from_slice(&chunk.expect("body"));
        }
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains(says), "{text}");
        client = client.ready().await.expect("the connection serves on");
    }
    assert_eq!(backend.hits(), 0);
    nothing_recorded(&serin, "HTTP/2");
    // The same connection, a host that names the same authority: served.
    let req = http::Request::get("http://a/x")
        .header("host", "A:80")
        .body(())
        .expect("request");
    let (response, _) = client.send_request(req, true).expect("send");
    assert_eq!(
        response.await.expect("response").status(),
        http::StatusCode::OK
    );
    assert_eq!(backend.last_seen().headers["host"], "a");
    assert!(!conn.is_finished());
    serin.shutdown(Duration::from_secs(5)).await;
}

/// Names that a backend folding `_` into `-` (CGI, WSGI, PHP) would read as one that
/// serin checked, replaced or removed are not forwarded; other names are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_header_names_are_not_forwarded() {
    let (backend, serin) = one_backend("").await;
    let (response, _) = exchange(
        serin.addr,
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer_Encoding: chunked\r\nContent_Length: 40\r\nTransfer---Encoding: chunked\r\nX_Forwarded_For: 10.0.0.1\r\nX-Real_IP: 10.0.0.1\r\nHost_: admin.internal\r\n-Connection: close\r\nX_User_Id: u-17\r\nConnection: close\r\n\r\nabcd",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let seen = backend.last_seen();
    for gone in [
        "transfer_encoding",
        "content_length",
        "transfer---encoding",
        "x_forwarded_for",
        "x-real_ip",
        "host_",
        "-connection",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "backend saw {gone}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x_user_id"], "u-17");
    assert_eq!(seen.headers["content-length"], "4");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["host"], "a");
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A Content-Length with leading zeros is sent upstream as a plain number: a backend
/// that reads `010` as octal would otherwise take 8 bytes as the body and the rest as
/// its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_with_leading_zeros_goes_upstream_as_a_plain_number() {
    let (backend, serin) = one_backend("").await;
    let (response, _) = exchange(
        serin.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\nConnection: close\r\n\r\nabcdefghij",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert_eq!(backend.last_seen().headers["content-length"], "10");
    serin.shutdown(Duration::from_secs(5)).await;
}

/// `Connection: host` does not take the Host away: the upstream would answer for its
/// own address rather than the routed host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_remove_host() {
    let (backend, serin) = one_backend("").await;
    let (response, _) = exchange(
        serin.addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert_eq!(backend.last_seen().headers["host"], "shop.example");
    serin.shutdown(Duration::from_secs(5)).await;
}

/// Two equal Content-Length lines (hyper keeps one), or Content-Length with
/// Transfer-Encoding (hyper drops the Content-Length): the request is answered, then
/// neither connection is used again. Normal requests share one upstream connection.
/// On one thread, so that every request uses the same worker's pool.
#[tokio::test]
async fn after_normalised_framing_neither_connection_is_reused() {
    let (backend, serin) = one_backend("").await;
    let post =
        |path: &str| format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd");
    let mut kept = answered(serin.addr, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").await;
    for path in ["/b", "/c"] {
        kept.write_all(post(path).as_bytes()).await.expect("write");
        let got = read_response(&mut kept).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    assert_eq!(
        backend.connections(),
        1,
        "normal requests share one connection"
    );
    let vectors: &[(&str, &str, Option<&str>)] = &[
        (
            "two equal Content-Length lines",
            "POST /normalised HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            Some("4"),
        ),
        (
            "Content-Length and Transfer-Encoding",
            "POST /normalised HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            None,
        ),
        (
            "Transfer-Encoding and Content-Length, in other case",
            "POST /normalised HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            None,
        ),
    ];
    // Answers large enough to stream over many reads: the upstream connection, taken
    // out of the pool at the head, still delivers the whole body.
    backend
        .state
        .body_len
        .store(200_000, std::sync::atomic::Ordering::SeqCst);
    for (what, request, length) in vectors {
        let before = backend.connections();
        let (response, closed) = exchange(serin.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{what}: {response:?}");
        assert!(
            response.ends_with(&format!("\r\n\r\n{}", "x".repeat(200_000))),
            "{what}: the body was cut short ({} bytes in all)",
            response.len()
        );
        assert!(
            response.to_ascii_lowercase().contains("connection: close"),
            "{what}: {response:?}"
        );
        assert!(closed, "{what}: the client's connection stays open");
        let seen = backend.last_seen();
        assert_eq!(seen.uri.path(), "/normalised", "{what}");
        let lengths: Vec<&str> = seen
            .headers
            .get_all("content-length")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(
            lengths,
            length.iter().copied().collect::<Vec<_>>(),
            "{what}"
        );
        // The next request cannot have the connection the normalised one went on.
        kept.write_all(post("/next").as_bytes())
            .await
            .expect("write");
        let got = read_response(&mut kept).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{what}: {got}");
        assert_eq!(
            backend.connections(),
            before + 1,
            "{what}: the upstream connection was reused"
        );
        kept.write_all(post("/next").as_bytes())
            .await
            .expect("write");
        read_response(&mut kept).await;
        assert_eq!(backend.connections(), before + 1, "{what}");
    }
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A normalised head pipelined behind a clean one: the flag is taken by the first
/// request, whose connection then closes, so the normalised one is never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_normalised_head_is_never_served() {
    let (backend, serin) = one_backend("").await;
    let (response, closed) = exchange(
        serin.addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    )
    .await;
    assert!(closed);
    assert_eq!(response.matches("HTTP/1.1 ").count(), 1, "{response:?}");
    let paths: Vec<String> = backend
        .seen()
        .iter()
        .map(|s| s.uri.path().to_string())
        .collect();
    assert_eq!(paths, ["/first"]);
    serin.shutdown(Duration::from_secs(5)).await;
}

/// `Upgrade: h2c` is not passed on: an upstream that switched would take HTTP/2 from
/// the client past serin. The request is forwarded as a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_not_passed_on() {
    let (backend, serin) = one_backend("").await;
    let (response, _) = exchange(
        serin.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let seen = backend.last_seen();
    for gone in ["upgrade", "connection", "http2-settings"] {
        assert!(
            !seen.headers.contains_key(gone),
            "backend saw {gone}: {:?}",
            seen.headers
        );
    }
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_a_431() {
    let (backend, serin) = one_backend("limits: { max_header_bytes: 8KiB }\n").await;
    let big = "x".repeat(9 * 1024);
    let (response, _) = exchange(
        serin.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:?}");
    assert_eq!(backend.hits(), 0);
    // Under the limit: served.
    let fits = "x".repeat(6 * 1024);
    let got = get(&client(), &serin.url("/"), &[("x-big", &fits)]).await;
    assert_eq!(got.status, http::StatusCode::OK);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_to_send_its_head_is_disconnected() {
    let (backend, serin) = one_backend("limits: { header_read_timeout: 300ms }\n").await;
    let mut stream = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "serin kept a slowloris connection open");
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(backend.hits(), 0);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_others_keep_serving() {
    let (backend, serin) = one_backend("limits: { max_connections: 3 }\n").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let stream = tokio::net::TcpStream::connect(serin.addr)
            .await
            .expect("connect");
        held.push(stream);
    }
    eventually(
        Duration::from_secs(5),
        "three connections are counted",
        || async {
            serin
                .dataplane
                .open_connections
                .load(std::sync::atomic::Ordering::SeqCst)
                == 3
        },
    )
    .await;
    // The fourth is closed without an answer.
    let (response, closed) = exchange(serin.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(closed && response.is_empty(), "{response:?}");
    assert_eq!(backend.hits(), 0);
    // The held ones still serve.
    let mut first = held.remove(0);
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    first.read_to_end(&mut out).await.expect("read");
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // One closed: a new connection is served again.
    drop(held);
    eventually(
        Duration::from_secs(5),
        "a new connection is served",
        || async {
            let (response, _) = exchange(
                serin.addr,
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            )
            .await;
            response.starts_with("HTTP/1.1 200")
        },
    )
    .await;
    assert!(
        serin
            .dataplane
            .refused_connections
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_a_413() {
    let (backend, serin) = one_backend("limits: { max_request_body: 1KiB }\n").await;
    let body = "b".repeat(2000);
    // Declared length: refused before anything goes upstream.
    let (response, closed) = exchange(
        serin.addr,
        format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{body}").as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    assert!(closed);
    assert_eq!(backend.hits(), 0);
    // Chunked: cut off when it goes over.
    let (response, _) = exchange(
        serin.addr,
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{body}\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    let intervals = serin.dataplane.take_intervals();
    assert_eq!(intervals[0].versions[0].1.responses, [0; 5]);
    // Within the limit: forwarded whole.
    let (response, _) = exchange(
        serin.addr,
        format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
            &body[..1000]
        )
        .as_bytes(),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    serin.shutdown(Duration::from_secs(5)).await;
}

/// A hyper HTTP/1.1 client connection of its own to `addr`, and whether it has ended.
async fn h1_connection(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

async fn h1_get(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    addr: std::net::SocketAddr,
) -> (http::StatusCode, String) {
    use http_body_util::BodyExt;
    let req = http::Request::get(format!("http://{addr}/"))
        .header("host", "a")
        .body(http_body_util::Empty::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

const IDLE: &str = "limits: { idle_timeout: 1s, header_read_timeout: 5s }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (backend, serin) = one_backend(IDLE).await;
    let mut stream = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // Keep-alive: only serin closing the connection ends this read; header_read_timeout
    // (5s) is not the clock that does it.
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_millis(4500), stream.read_to_end(&mut out)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "serin kept an idle connection open: {read:?}"
    );
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("stable"), "{out}");
    assert_eq!(backend.hits(), 1);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_use_outlives_idle_timeout() {
    let (backend, serin) = one_backend(IDLE).await;
    let (mut sender, conn) = h1_connection(serin.addr).await;
    // Every 300ms for 2.5s: more than twice the idle timeout on one connection.
    for _ in 0..9 {
        assert_eq!(
            h1_get(&mut sender, serin.addr).await,
            (http::StatusCode::OK, "stable".to_string())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!conn.is_finished(), "serin closed a connection in use");
    assert_eq!(backend.hits(), 9);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_is_not_cut_by_idle_timeout() {
    let (backend, serin) = one_backend(IDLE).await;
    backend
        .state
        .body_len
        .store(10_000, std::sync::atomic::Ordering::SeqCst);
    backend.set_delay(Duration::from_millis(2500));
    let (mut sender, _conn) = h1_connection(serin.addr).await;
    let (status, body) = h1_get(&mut sender, serin.addr).await;
    assert_eq!(status, http::StatusCode::OK);
    assert_eq!(body, "x".repeat(10_000));
    serin.shutdown(Duration::from_secs(5)).await;
}

/// Connections parked now (quiet HTTP/1.1 keep-alive connections holding no buffers).
fn parked(serin: &Serin) -> u64 {
    serin
        .dataplane
        .parked_connections
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Waits until `n` connections are parked (serin parks after a second of quiet).
async fn until_parked(serin: &Serin, n: u64) {
    eventually(Duration::from_secs(5), "connections parked", || async {
        parked(serin) == n
    })
    .await;
}

/// Reads one response off a raw connection: its head and the body its Content-Length
/// names.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5s")
            .expect("read");
        assert!(
            n > 0,
            "serin closed the connection: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

/// A raw connection to `addr` that sent `request` and read its 200 answer.
async fn answered(addr: std::net::SocketAddr, request: &[u8]) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let got = read_response(&mut stream).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    stream
}

const PARK: &str = "limits: { idle_timeout: 30s, header_read_timeout: 2s }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_keep_alive_connection_is_parked_and_serves_its_next_request() {
    let (backend, serin) = one_backend(PARK).await;
    let (mut sender, conn) = h1_connection(serin.addr).await;
    let ok = (http::StatusCode::OK, "stable".to_string());
    assert_eq!(h1_get(&mut sender, serin.addr).await, ok);
    until_parked(&serin, 1).await;
    // The same connection, woken by its next request.
    assert_eq!(h1_get(&mut sender, serin.addr).await, ok);
    assert_eq!(parked(&serin), 0);
    until_parked(&serin, 1).await;
    assert_eq!(h1_get(&mut sender, serin.addr).await, ok);
    assert!(!conn.is_finished(), "the client's connection ended");
    assert_eq!(backend.hits(), 3);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_closed_after_idle_timeout() {
    let (backend, serin) =
        one_backend("limits: { idle_timeout: 2s, header_read_timeout: 1s }\n").await;
    let mut stream = answered(serin.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    until_parked(&serin, 1).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(6), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "serin kept a parked connection open: {read:?} {rest:?}"
    );
    assert_eq!(parked(&serin), 0);
    assert_eq!(backend.hits(), 1);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_head_begun_before_a_park_is_served_whole() {
    let (backend, serin) = one_backend(PARK).await;
    // One request, and the start of the next in the same write.
    let mut stream = answered(
        serin.addr,
        b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HT",
    )
    .await;
    // Longer than a park takes (1 to 2 s of quiet), and nothing to poll for: the
    // connection is not counted as parked, as it goes on at once with the half-read
    // head that outlived hyper's connection.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(b"TP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.ends_with("stable"), "{second}");
    let paths: Vec<String> = backend
        .seen()
        .iter()
        .map(|s| s.uri.path().to_string())
        .collect();
    assert_eq!(paths, ["/one", "/two"]);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_stalls_on_a_parked_connection_is_cut_by_header_read_timeout() {
    let (backend, serin) = one_backend(PARK).await;
    let mut stream = answered(serin.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    until_parked(&serin, 1).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost")
        .await
        .expect("write");
    // header_read_timeout is 2s; idle_timeout (30s) is not what ends it.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "serin kept a stalled head open: {read:?}"
    );
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(backend.hits(), 1);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_are_closed_at_once_on_shutdown() {
    let (_backend, serin) = one_backend(PARK).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(answered(serin.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await);
    }
    until_parked(&serin, 3).await;
    assert!(
        serin.shutdown(Duration::from_secs(10)).await,
        "parked connections held the drain"
    );
    for mut stream in streams {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_sent_goaway_and_closed() {
    let (backend, serin) = one_backend(IDLE).await;
    let stream = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/", serin.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), http::StatusCode::OK);
    drop(resp);
    // The connection future ends only when serin sends GOAWAY and closes.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "serin kept an idle HTTP/2 connection open");
    assert_eq!(backend.hits(), 1);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_connection_between_requests_is_not_cut_by_header_read_timeout() {
    // HTTP/2 has no head to time: the frames a client sends between requests (and its
    // preface) must not start header_read_timeout, only idle_timeout counts.
    let (backend, serin) =
        one_backend("limits: { idle_timeout: 10s, header_read_timeout: 300ms }\n").await;
    let stream = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    // The client pings every 100ms while idle: frames keep arriving with no request.
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    for _ in 0..3 {
        // Several header_read_timeouts before each request (the first after the
        // preface alone) on the same connection.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let req = http::Request::get(format!("http://{}/", serin.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), http::StatusCode::OK);
    }
    assert!(
        !conn.is_finished(),
        "serin cut an HTTP/2 connection between requests"
    );
    assert_eq!(backend.hits(), 3);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_h2_stream_does_not_keep_its_connection_open() {
    // The client gives up on a slow request (RST_STREAM): nothing is in flight any
    // more, so the connection is idle and must still be closed.
    let (backend, serin) = one_backend(IDLE).await;
    backend.set_delay(Duration::from_secs(30));
    let tcp = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::get(format!("http://{}/", serin.addr))
        .body(())
        .expect("request");
    let (_response, mut stream) = client.send_request(req, true).expect("send");
    eventually(
        Duration::from_secs(5),
        "the backend got the request",
        || async { backend.hits() == 1 },
    )
    .await;
    stream.send_reset(h2::Reason::CANCEL);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(
        ended.is_ok(),
        "serin kept an HTTP/2 connection whose only stream was cancelled open"
    );
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_ends_the_connection_and_others_are_still_served() {
    // CVE-2023-44487: open a stream, cancel it at once, again and again.
    let (backend, serin) = one_backend("").await;
    let tcp = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    const ATTEMPTS: usize = 20_000;
    let mut sent = 0;
    while sent < ATTEMPTS {
        client = match client.ready().await {
            Ok(client) => client,
            Err(_) => break,
        };
        let req = http::Request::get(format!("http://{}/", serin.addr))
            .body(())
            .expect("request");
        let Ok((_response, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        if sent % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("serin kept a rapid-reset connection open")
        .expect("connection task");
    let err = ended.expect_err("the connection ended without an error");
    // GOAWAY, or (when serin's close wins over the client's read) a broken pipe.
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err} after {sent} streams"
    );
    assert!(sent < ATTEMPTS, "every one of {ATTEMPTS} streams was sent");
    assert!(
        backend.hits() < 1_000,
        "{} of {sent} cancelled streams reached the backend",
        backend.hits()
    );
    let got = get(&h2_client(), &serin.url("/"), &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (http::StatusCode::OK, "stable")
    );
    serin.shutdown(Duration::from_secs(5)).await;
}

/// An HTTP/2 frame: the 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// One header as an HPACK "literal without indexing, new name" (names and values
/// shorter than 127 bytes, no Huffman).
fn literal(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00, name.len() as u8];
    out.extend(name.as_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off_and_others_are_still_served() {
    // CVE-2024-27316 family: a header block that never ends.
    const MAX_HEADER_BYTES: usize = 8 * 1024;
    let (backend, serin) = one_backend("limits: { max_header_bytes: 8KiB }\n").await;
    let stream = tokio::net::TcpStream::connect(serin.addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let (closed, mut seen_closed) = tokio::sync::watch::channel(false);
    let reader = {
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                // A GOAWAY frame (type 7) among what serin sent.
                let mut at = 0;
                while got.len() >= at + 9 {
                    let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
                    if got[at + 3] == 0x7 {
                        let _ = closed.send(true);
                    }
                    at += 9 + len;
                }
            }
            let _ = closed.send(true);
            got
        })
    };
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                         // HEADERS, END_STREAM but not END_HEADERS: GET http://a/
    let mut block = vec![0x82, 0x86, 0x84];
    block.extend(literal(":authority", "a"));
    flood.extend(frame(0x1, 0x1, 1, &block));
    wr.write_all(&flood).await.expect("write the preface");
    let filler = "f".repeat(100);
    let mut payload = Vec::new();
    for i in 0..9 {
        payload.extend(literal(&format!("x-flood-{i}"), &filler));
    }
    let mut sent = 0;
    while sent < 10 * MAX_HEADER_BYTES && !*seen_closed.borrow() {
        if wr.write_all(&frame(0x9, 0, 1, &payload)).await.is_err() {
            break;
        }
        sent += payload.len();
        // Give serin a moment to answer each frame, so `sent` is what it took in.
        let _ = tokio::time::timeout(Duration::from_millis(50), seen_closed.wait_for(|c| *c)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("serin kept a CONTINUATION flood connection open")
        .expect("reader task");
    let mut goaway = None;
    let mut at = 0;
    while got.len() >= at + 9 {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 && got.len() >= at + 9 + 8 {
            let code = &got[at + 9 + 4..at + 9 + 8];
            goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
        }
        at += 9 + len;
    }
    // ENHANCE_YOUR_CALM, after a few frames: the header block never reached its end.
    assert_eq!(goaway, Some(0xb), "after {sent} bytes of CONTINUATION");
    assert!(
        sent < 10 * MAX_HEADER_BYTES,
        "serin read {sent} bytes of one header block"
    );
    assert_eq!(backend.hits(), 0);
    let got = get(&h2_client(), &serin.url("/"), &[]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (http::StatusCode::OK, "stable")
    );
    serin.shutdown(Duration::from_secs(5)).await;
}
