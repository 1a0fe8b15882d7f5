//! Slow clients: one that stops reading its response (`limits.send_timeout`), one that
//! stalls its request body (`limits.body_read_timeout`, `limits.request_buffer`), and
//! what the backend and the version's stats see of them; normal large bodies and
//! responses still pass whole.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response larger than what the kernel buffers for a client that reads nothing.
const LARGE: usize = 8 << 20;

/// Reads until serin closes the connection (or 5 s pass): what came, and whether it
/// closed.
async fn until_closed(stream: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await,
        Ok(Ok(_)) | Ok(Err(_))
    );
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn open_connections(serin: &Serin) -> u64 {
    serin.dataplane.open_connections.load(Ordering::SeqCst)
}

/// The stats of the only version (`stable`) since the last take.
fn stable_stats(serin: &Serin) -> serin_proxy::Interval {
    let mut intervals = serin.dataplane.take_intervals();
    let (name, interval) = intervals.remove(0).versions.remove(0);
    assert_eq!(name, "stable");
    interval
}

/// Nothing counted against the version: no response, failure or timeout; one request
/// recorded as the client's doing.
fn assert_only_the_client_is_blamed(stats: &serin_proxy::Interval) {
    assert_eq!(stats.responses, [0; 5], "{:?}", stats.responses);
    assert_eq!(
        (stats.connect_errors, stats.timeouts, stats.resets),
        (0, 0, 0)
    );
    assert_eq!(stats.client_gone, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_after_send_timeout_and_its_upstream_is_not_reused() {
    let (backend, serin) = one_backend("limits: { send_timeout: 500ms }\n").await;
    backend.state.body_len.store(LARGE, Ordering::SeqCst);
    let mut stream = TcpStream::connect(serin.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).await.expect("a status line");
    assert_eq!(&status, b"HTTP/1.1 200");
    // From here on the client reads nothing: its socket fills, serin's writes stall.
    eventually(
        Duration::from_secs(10),
        "serin closes the connection of a client that reads nothing",
        || async { open_connections(&serin) == 0 },
    )
    .await;
    let (rest, closed) = until_closed(&mut stream).await;
    assert!(closed);
    assert!(
        rest.len() < LARGE,
        "the client got all {} bytes",
        rest.len()
    );
    // The upstream connection was abandoned mid-body, so it was not pooled: the next
    // request dials a new one, and a client that reads gets the whole response.
    let got = get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(got.status, http::StatusCode::OK);
    assert_eq!(got.body.len(), LARGE);
    assert_eq!(backend.connections(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_opens_no_window_is_closed_after_send_timeout() {
    let (backend, serin) = one_backend("limits: { send_timeout: 500ms }\n").await;
    backend.state.body_len.store(1 << 20, Ordering::SeqCst);
    let tcp = TcpStream::connect(serin.addr).await.expect("connect");
    // The client reads its socket, but gives the stream no room: serin writes nothing.
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let req = http::Request::get(format!("http://{}/", serin.addr))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(req, true).expect("send");
    let response = response.await.expect("a response head");
    assert_eq!(response.status(), http::StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(
        ended.is_ok(),
        "serin kept an HTTP/2 connection whose client takes nothing"
    );
    let got = get(&h2_client(), &serin.url("/"), &[]).await;
    assert_eq!(got.body.len(), 1 << 20);
    assert_eq!(backend.connections(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_but_steadily_is_not_cut() {
    let (backend, serin) = one_backend("limits: { send_timeout: 1s }\n").await;
    backend.state.body_len.store(256 << 10, Ordering::SeqCst);
    let mut stream = TcpStream::connect(serin.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // 16 KiB every 50 ms: under a second for the response, never long without a read.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..40]);
    let body = &text[text.find("\r\n\r\n").expect("a head") + 4..];
    assert_eq!(body.len(), 256 << 10);
    serin.shutdown(Duration::from_secs(5)).await;
}

const SLOW_BODY: &str = "limits: { body_read_timeout: 500ms, request_buffer: 1KiB }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streamed_body_is_a_408_and_the_upstream_request_is_aborted() {
    let (backend, serin) = one_backend(SLOW_BODY).await;
    let mut stream = TcpStream::connect(serin.addr).await.expect("connect");
    // Larger than request_buffer: streamed; 2,000 bytes of it, then nothing.
    let mut request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".to_vec();
    request.extend(vec![b'b'; 2000]);
    stream.write_all(&request).await.expect("write");
    let (response, closed) = until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(
        response.contains("nothing of its request body for 500ms"),
        "{response:?}"
    );
    assert!(closed, "the connection stays open");
    // The backend saw the request begin; its connection was closed with it.
    assert_eq!(backend.hits(), 1);
    eventually(
        Duration::from_secs(5),
        "the upstream connection is closed",
        || async { backend.open() == 0 },
    )
    .await;
    assert_only_the_client_is_blamed(&stable_stats(&serin));
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_small_body_is_a_408_and_never_reaches_the_backend() {
    let (backend, serin) = one_backend("limits: { body_read_timeout: 500ms }\n").await;
    let mut stream = TcpStream::connect(serin.addr).await.expect("connect");
    // Within request_buffer (16 KiB): read whole before any upstream is asked.
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nonly ten b")
        .await
        .expect("write");
    let (response, closed) = until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(closed, "the connection stays open");
    assert_eq!((backend.hits(), backend.connections()), (0, 0));
    assert_only_the_client_is_blamed(&stable_stats(&serin));
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_to_an_http2_upstream_is_the_clients_408_too() {
    let backend = Backend::start("stable").await;
    let yaml = format!(
        "{}{SLOW_BODY}",
        one_version(backend.addr, ", protocol: http2")
    );
    let serin = Serin::start(&yaml).await;
    let mut stream = TcpStream::connect(serin.addr).await.expect("connect");
    let mut request = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n".to_vec();
    request.extend(vec![b'b'; 2000]);
    stream.write_all(&request).await.expect("write");
    let (response, closed) = until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(closed);
    // An HTTP/2 upstream only sees its stream reset: still the client's doing.
    assert_only_the_client_is_blamed(&stable_stats(&serin));
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_arriving_at_the_request_timeout_is_the_clients_408() {
    let backend = Backend::start("stable").await;
    let yaml = format!(
        "{}{SLOW_BODY}",
        two_versions(
            backend.addr,
            closed_port().await,
            "    split: { weights: { stable: 1, canary: 0 } }\n    timeouts: { request: 1s }"
        )
    );
    let serin = Serin::start(&yaml).await;
    let stream = TcpStream::connect(serin.addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        .await
        .expect("write");
    // Ten bytes every 100 ms: never a stall of body_read_timeout, far from done at 1 s.
    let dribble = tokio::spawn(async move {
        for _ in 0..50 {
            if wr.write_all(b"0123456789").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection stays open");
    let response = String::from_utf8_lossy(&out);
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    assert!(
        response.contains("request timeout of service \"api\" (1s)"),
        "{response:?}"
    );
    assert_eq!(backend.hits(), 1);
    let intervals = serin.dataplane.take_intervals();
    let (name, stats) = &intervals[0].versions[0];
    assert_eq!(name, "stable");
    assert_only_the_client_is_blamed(stats);
    dribble.abort();
    serin.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_bodies_pass_whole_small_ones_in_pieces_too() {
    let (backend, serin) = one_backend(SLOW_BODY).await;
    // A 4 MiB body, streamed.
    let body = vec![b'x'; 4 << 20];
    let req = http::Request::post(serin.url("/"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let got = send(&client(), req).await;
    assert_eq!(got.status, http::StatusCode::OK);
    assert_eq!(backend.received(), 4 << 20);
    // A small body in two pieces, a pause between them under body_read_timeout: read
    // whole, then sent.
    let mut stream = TcpStream::connect(serin.addr).await.expect("connect");
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    stream.write_all(&[b'y'; 600]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream.write_all(&[b'y'; 400]).await.expect("write");
    let (response, _) = until_closed(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert_eq!(backend.received(), (4 << 20) + 1000);
    let seen = backend.last_seen();
    assert_eq!(
        seen.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"1000"[..])
    );
    assert_eq!(backend.hits(), 2);
    serin.shutdown(Duration::from_secs(5)).await;
}
