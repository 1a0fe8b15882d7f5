//! HTTP/2 and gRPC upstreams: real tonic calls through serin, gRPC statuses counted
//! against the version, and h2c upstreams for plain HTTP requests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use crate::common::*;
use bytes::{BufMut, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prost::Message;
use serin_proxy::record::Interval;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Hello {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    message: String,
}

/// `Say`: greets; the names `unavailable` and `missing` fail with that status (as a
/// trailers-only response, the way tonic answers errors).
#[derive(Clone)]
struct Say;

impl tonic::server::UnaryService<Hello> for Say {
    type Response = Reply;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Reply>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Hello>) -> Self::Future {
        let name = request.into_inner().name;
        Box::pin(async move {
            match name.as_str() {
                "unavailable" => Err(Status::unavailable("backend is draining")),
                "missing" => Err(Status::not_found("no such greeting")),
                _ => Ok(tonic::Response::new(Reply {
                    message: format!("hello {name}"),
                })),
            }
        })
    }
}

/// A gRPC server (HTTP/2 only, like any gRPC server): `/test.Greeter/Say` by tonic;
/// `/test.Greeter/Flaky` by hand, a reply message followed by trailers with
/// `grpc-status: 14` (UNAVAILABLE), the way a streaming call fails late.
async fn grpc_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc backend");
    let addr = listener.local_addr().expect("grpc backend addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    if req.uri().path() == "/test.Greeter/Flaky" {
                        return Ok::<_, Infallible>(flaky());
                    }
                    let mut grpc = tonic::server::Grpc::new(ProstCodec::<Reply, Hello>::default());
                    Ok::<_, Infallible>(grpc.unary(Say, req).await)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn flaky() -> Response<tonic::body::Body> {
    let reply = Reply {
        message: "partial".to_string(),
    }
    .encode_to_vec();
    let mut framed = BytesMut::new();
    framed.put_u8(0);
    framed.put_u32(reply.len() as u32);
    framed.put_slice(&reply);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("14"));
    trailers.insert(
        "grpc-message",
        HeaderValue::from_static("lost%20the%20backend"),
    );
    let body = Full::new(framed.freeze())
        .with_trailers(async move { Some(Ok::<_, Infallible>(trailers)) });
    let mut response = Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

fn grpc_config(backend: SocketAddr, version_extra: &str) -> String {
    one_version(backend, &format!(", protocol: http2{version_extra}"))
}

async fn call(serin: &Serin, method: &'static str, name: &str) -> Result<String, Status> {
    let channel = tonic::transport::Channel::from_shared(serin.url(""))
        .expect("channel url")
        .connect()
        .await
        .expect("connect to serin");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("client ready");
    client
        .unary(
            tonic::Request::new(Hello {
                name: name.to_string(),
            }),
            PathAndQuery::from_static(method),
            ProstCodec::<Hello, Reply>::default(),
        )
        .await
        .map(|r| r.into_inner().message)
}

/// The `stable` interval, once `n` requests have been recorded in it.
async fn recorded(serin: &Serin, n: u64) -> Interval {
    let mut total = Interval::default();
    eventually(Duration::from_secs(5), "the calls to be recorded", || {
        for service in serin.dataplane.take_intervals() {
            for (name, interval) in &service.versions {
                if name == "stable" {
                    total.merge(interval);
                }
            }
        }
        let done = total.requests() + total.client_gone >= n;
        async move { done }
    })
    .await;
    total
}

#[tokio::test]
async fn unary_call_through_serin() {
    let backend = grpc_backend().await;
    let serin = Serin::start(&grpc_config(backend, "")).await;
    let reply = call(&serin, "/test.Greeter/Say", "serin").await;
    assert_eq!(reply.expect("the call succeeds"), "hello serin");
    let interval = recorded(&serin, 1).await;
    assert_eq!(interval.responses, [0, 1, 0, 0, 0]);
    assert_eq!(interval.errors(), 0);
}

#[tokio::test]
async fn listed_grpc_status_counts_as_error_and_unlisted_does_not() {
    let backend = grpc_backend().await;
    let serin = Serin::start(&grpc_config(backend, "")).await;

    let err = call(&serin, "/test.Greeter/Say", "unavailable")
        .await
        .expect_err("UNAVAILABLE reaches the client");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "backend is draining");
    let interval = recorded(&serin, 1).await;
    assert_eq!(interval.responses, [0, 0, 0, 0, 1], "UNAVAILABLE is a 5xx");
    assert_eq!(interval.errors(), 1);

    let err = call(&serin, "/test.Greeter/Say", "missing")
        .await
        .expect_err("NOT_FOUND reaches the client");
    assert_eq!(err.code(), Code::NotFound);
    let interval = recorded(&serin, 1).await;
    assert_eq!(
        interval.responses,
        [0, 1, 0, 0, 0],
        "NOT_FOUND is not listed"
    );
    assert_eq!(interval.errors(), 0);
}

#[tokio::test]
async fn status_in_trailers_is_passed_on_and_counted() {
    let backend = grpc_backend().await;
    let serin = Serin::start(&grpc_config(backend, "")).await;
    let err = call(&serin, "/test.Greeter/Flaky", "x")
        .await
        .expect_err("the trailers' status reaches the client");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "lost the backend");
    let interval = recorded(&serin, 1).await;
    assert_eq!(interval.responses, [0, 0, 0, 0, 1]);
}

#[tokio::test]
async fn listed_grpc_statuses_eject_the_endpoint_like_5xx() {
    let backend = grpc_backend().await;
    let serin = Serin::start(&grpc_config(
        backend,
        ", eject: { consecutive_failures: 3, for: 1h }",
    ))
    .await;
    let in_rotation = || serin.dataplane.table().services[0].versions[0].endpoints()[0].available();
    // NOT_FOUND is not listed: the caller's problem, not the endpoint's.
    for _ in 0..3 {
        let err = call(&serin, "/test.Greeter/Say", "missing")
            .await
            .expect_err("NOT_FOUND reaches the client");
        assert_eq!(err.code(), Code::NotFound);
    }
    assert!(in_rotation(), "unlisted statuses ejected the endpoint");
    // UNAVAILABLE three times in a row, twice in the trailers of a streamed reply and
    // once in a trailers-only response.
    for method in [
        "/test.Greeter/Flaky",
        "/test.Greeter/Flaky",
        "/test.Greeter/Say",
    ] {
        let err = call(&serin, method, "unavailable")
            .await
            .expect_err("UNAVAILABLE reaches the client");
        assert_eq!(err.code(), Code::Unavailable);
    }
    assert!(
        !in_rotation(),
        "three UNAVAILABLE calls in a row did not eject it"
    );
    // The only endpoint is out: serin answers the next call itself.
    let err = call(&serin, "/test.Greeter/Say", "world")
        .await
        .expect_err("no endpoint is in rotation");
    assert_ne!(err.message(), "hello world");
}

#[tokio::test]
async fn error_codes_are_configurable_per_version() {
    let backend = grpc_backend().await;
    let serin = Serin::start(&grpc_config(
        backend,
        ", grpc: { error_codes: [NOT_FOUND] }",
    ))
    .await;
    let err = call(&serin, "/test.Greeter/Say", "missing").await;
    assert_eq!(err.expect_err("fails").code(), Code::NotFound);
    let interval = recorded(&serin, 1).await;
    assert_eq!(interval.responses, [0, 0, 0, 0, 1]);

    let err = call(&serin, "/test.Greeter/Flaky", "x").await;
    assert_eq!(err.expect_err("fails").code(), Code::Unavailable);
    let interval = recorded(&serin, 1).await;
    assert_eq!(interval.responses, [0, 1, 0, 0, 0], "14 is not listed here");
}

#[tokio::test]
async fn h2c_upstream_for_plain_http_requests() {
    let backend = Backend::start("stable").await;
    let yaml = grpc_config(backend.addr, "");
    let serin = Serin::start(&yaml).await;
    let got = get(&client(), &serin.url("/plain?q=1"), &[]).await;
    assert_eq!(got.status, http::StatusCode::OK);
    assert_eq!(got.body, "stable");
    assert_eq!(got.version, http::Version::HTTP_11);
    let seen = backend.last_seen();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        seen.uri.path_and_query().map(|p| p.as_str()),
        Some("/plain?q=1")
    );
    assert_eq!(
        seen.uri.authority().map(|a| a.as_str()),
        Some(serin.addr.to_string().as_str()),
        "the client's Host becomes :authority"
    );
    // Many requests share one connection.
    for _ in 0..5 {
        get(&client(), &serin.url("/"), &[]).await;
    }
    assert_eq!(backend.hits(), 6);
    assert!(backend.connections() <= 2, "one connection per worker");
}

#[tokio::test]
async fn auto_follows_the_client() {
    let backend = Backend::start("stable").await;
    let yaml = grpc_config(backend.addr, "").replace("protocol: http2", "protocol: auto");
    let serin = Serin::start(&yaml).await;
    get(&client(), &serin.url("/"), &[]).await;
    assert_eq!(backend.last_seen().version, http::Version::HTTP_11);
    let got = get(&h2_client(), &serin.url("/"), &[]).await;
    assert_eq!(got.body, "stable");
    assert_eq!(backend.last_seen().version, http::Version::HTTP_2);
}

#[tokio::test]
async fn invalid_protocol_and_codes_are_refused() {
    let err = serin_config::parse_str(
        &grpc_config("127.0.0.1:1".parse().expect("addr"), "").replace(
            "protocol: http2",
            "protocol: h3, grpc: { error_codes: [OK, 99, NOPE] }",
        ),
        "test.yaml",
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("\"h3\" is not an upstream protocol"), "{err}");
    assert!(err.contains("error_codes[0]: OK (0) is success"), "{err}");
    assert!(
        err.contains("error_codes[1]: 99 is not a gRPC status code"),
        "{err}"
    );
    assert!(
        err.contains("error_codes[2]: \"NOPE\" is not a gRPC status code"),
        "{err}"
    );
}
