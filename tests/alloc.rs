//! The hot path (loading the view, routing, the plan with its split, record, and the
//! request checks and header hygiene before them) allocates nothing: counted with a
//! counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use serin_proxy::plan::plan;
use serin_proxy::record::Outcome;
use serin_proxy::{guard, headers, DataPlane};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn routing_the_plan_and_record_allocate_nothing() {
    let config = r#"
listeners: [{ name: web, listen: 127.0.0.1:0 }]
routes: [{ listener: web, service: api }, { listener: web, match: { path_prefix: /web }, service: web }]
services:
  - name: api
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002, 127.0.0.1:9003], lb: p2c_peak_ewma }
    split: { weights: { stable: 90, canary: 10 }, sticky: { header: x-user-id }, force: { header: x-serin-version } }
  - name: web
    versions:
      - { name: stable, endpoints: [127.0.0.1:9001] }
      - { name: canary, endpoints: [127.0.0.1:9002] }
    split: { weights: { stable: 50, canary: 50 }, sticky: { cookie: session } }
"#;
    let snapshot = serin_config::parse_str(config, "alloc-test").unwrap_or_else(|e| panic!("{e}"));
    let dataplane = DataPlane::new(snapshot, 2).unwrap_or_else(|e| panic!("{e}"));
    let view = dataplane.view();
    let mut requests = Vec::new();
    requests.push((0, HeaderMap::new()));
    let mut h = HeaderMap::new();
    h.insert("x-user-id", HeaderValue::from_static("user-17"));
    requests.push((0, h));
    let mut h = HeaderMap::new();
    h.insert("x-serin-version", HeaderValue::from_static("canary"));
    requests.push((0, h));
    let mut h = HeaderMap::new();
    h.insert("cookie", HeaderValue::from_static("a=1; session=abc; b=2"));
    requests.push((1, h));

    // Warm up: the thread picks its stats shard and worker index, and seeds its random
    // numbers, on first use.
    view.table.services[0].versions[0]
        .stats
        .record(Outcome::Response(200), Duration::from_micros(10));
    drop(view.table.services[0].versions[1].pick());

    let mut picked = [0usize; 2];
    let n = allocations_during(|| {
        for i in 0..10_000u64 {
            for (service, headers) in &requests {
                // What a request does: load the view once, route, plan.
                let view = dataplane.view();
                assert!(view.table.route("web", "example.com", "/x").is_some());
                let p = plan(&view, *service, &Method::GET, "/x", headers);
                picked[p.version] += 1;
                let version = &view.table.services[*service].versions[p.version];
                // Round robin, or the power of two choices (the canary of `api`): the
                // request in flight until its answer is a latency sample.
                if let Some((_endpoint, Some(in_flight))) = version.pick() {
                    in_flight.answered(serin_proxy::rotation::clock_us());
                }
                let outcome = if i % 100 == 0 {
                    Outcome::Response(503)
                } else {
                    Outcome::Response(200)
                };
                version
                    .stats
                    .record(outcome, Duration::from_micros(100 + i));
                if i % 1000 == 0 {
                    version
                        .stats
                        .record(Outcome::Timeout, Duration::from_secs(15));
                }
            }
        }
    });
    assert_eq!(n, 0, "the hot path allocated {n} times");
    assert!(picked[0] > 0 && picked[1] > 0, "{picked:?}");
}

#[test]
fn request_checks_and_header_hygiene_allocate_nothing_on_a_clean_request() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example.com:8080"));
    h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("content-length", HeaderValue::from_static("1234"));
    h.insert("x-user-id", HeaderValue::from_static("user-17"));
    h.insert("cookie", HeaderValue::from_static("a=1; session=abc"));
    let mut chunked = h.clone();
    chunked.remove("content-length");
    chunked.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let uri: http::Uri = "/checkout/pay?item=3".parse().expect("uri");
    let n = allocations_during(|| {
        for _ in 0..10_000 {
            for h in [&mut h, &mut chunked] {
                assert!(guard::check(&http::Method::POST, http::Version::HTTP_11, &uri, h).is_ok());
                headers::drop_look_alikes(h);
                headers::canonical_content_length(h);
            }
        }
    });
    assert_eq!(n, 0, "the request checks allocated {n} times");
}
