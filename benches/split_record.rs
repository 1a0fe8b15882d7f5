//! Micro-benchmarks of serin's own per-request work: the request checks and header
//! hygiene, route match, split decision, the whole plan, record, their sum, and the
//! view load.
//! `cargo bench --bench split_record`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use serin_proxy::plan::plan;
use serin_proxy::record::Outcome;
use serin_proxy::{guard, headers, DataPlane};

const CONFIG: &str = r#"
listeners: [{ name: web, listen: 127.0.0.1:0 }]
routes:
  - { listener: web, match: { host: "*", path_prefix: / }, service: api }
  - { listener: web, match: { host: shop.example.com, path_prefix: /checkout }, service: api }
  - { listener: web, match: { host: "*.example.com", path_prefix: /static }, service: api }
services:
  - name: api
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002] }
    split:
      weights: { stable: 90, canary: 10 }
      sticky: { cookie: session }
      force: { header: x-serin-version }
"#;

fn bench(c: &mut Criterion) {
    let snapshot = serin_config::parse_str(CONFIG, "bench").unwrap_or_else(|e| panic!("{e}"));
    let dataplane = DataPlane::new(snapshot, 1).unwrap_or_else(|e| panic!("{e}"));
    let view = dataplane.view();
    let table = &view.table;
    let (service, split) = view.service(0);

    let unkeyed = HeaderMap::new();
    let mut cookie = HeaderMap::new();
    cookie.insert(
        "cookie",
        HeaderValue::from_static("theme=dark; session=5f2c9a7e; lang=en"),
    );
    let mut forced = HeaderMap::new();
    forced.insert("x-serin-version", HeaderValue::from_static("canary"));

    let mut g = c.benchmark_group("hot_path");
    // A typical browser request's headers.
    let mut request = HeaderMap::new();
    for (name, value) in [
        ("host", "shop.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-GB,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "theme=dark; session=5f2c9a7e; lang=en"),
        ("referer", "https://shop.example.com/"),
        ("x_custom_id", "42"),
    ] {
        request.insert(name, HeaderValue::from_static(value));
    }
    let target: http::Uri = "/checkout/pay?item=3".parse().unwrap_or_default();
    g.bench_function("request/check", |b| {
        b.iter(|| {
            guard::check(
                &http::Method::GET,
                http::Version::HTTP_11,
                black_box(&target),
                black_box(&request),
            )
        })
    });
    g.bench_function("request/look_alikes", |b| {
        b.iter(|| headers::drop_look_alikes(black_box(&mut request)))
    });
    g.bench_function("request/content_length", |b| {
        b.iter(|| headers::canonical_content_length(black_box(&mut request)))
    });
    g.bench_function("route", |b| {
        b.iter(|| {
            black_box(table.route(
                "web",
                black_box("shop.example.com"),
                black_box("/checkout/pay"),
            ))
            .map(|r| r.service)
        })
    });
    g.bench_function("split/weighted", |b| {
        b.iter(|| service.selector.choose(split, black_box(&unkeyed)))
    });
    g.bench_function("split/sticky_cookie", |b| {
        b.iter(|| service.selector.choose(split, black_box(&cookie)))
    });
    g.bench_function("split/forced", |b| {
        b.iter(|| service.selector.choose(split, black_box(&forced)))
    });
    g.bench_function("plan", |b| {
        b.iter(|| {
            plan(
                &view,
                0,
                &http::Method::GET,
                black_box("/checkout/pay"),
                black_box(&cookie),
            )
        })
    });
    g.bench_function("record", |b| {
        let stats = &service.versions[1].stats;
        b.iter(|| {
            stats.record(
                black_box(Outcome::Response(200)),
                black_box(Duration::from_micros(1234)),
            )
        })
    });
    g.bench_function("split+record", |b| {
        b.iter(|| {
            let v = service.selector.choose(split, black_box(&unkeyed));
            service.versions[v].stats.record(
                Outcome::Response(200),
                black_box(Duration::from_micros(1234)),
            );
        })
    });
    g.bench_function("view_load", |b| b.iter(|| black_box(dataplane.view())));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
