//! The dashboard at /ui in a real headless Chromium, driven over WebDriver
//! (chromedriver): serin with its control loop and admin API in this process, real
//! backends and real traffic. What is asserted is what a person sees on the page, and
//! what the API answers after they press a button.
//!
//! Needs `chromium` and `chromedriver` on PATH (Debian: `apt-get install chromium
//! chromium-driver`; `scripts/test` installs them). Leaves a screenshot of the page after a
//! rollback in `target/ui-screenshot.png`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use serin_control::admin::{Admin, AdminContext, Health};
use serin_judge::rollout::Phase;

const TOKEN: &str = "ui-test-token";

const FAST: &str = "        interval: 100ms\n        window: 5s\n        min_requests: 20\n        confidence: 99%";

/// chromedriver on a port the kernel chose, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let mut child = Command::new("chromedriver")
            .args(["--port=0", "--log-level=WARNING"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run chromedriver (install chromium and chromium-driver: see scripts/test)");
        let stdout = child.stdout.take().expect("chromedriver's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromedriver ended before saying its port")
                .expect("read chromedriver's output");
            if let Some(rest) = line.split("started successfully on port ").nth(1) {
                break rest.trim_end_matches('.').trim().to_string();
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let capabilities = json!({
            "goog:chromeOptions": {
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,1100"]
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("start a headless Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// serin with `api` (stable, canary, the given rollout), its control loop, and the
/// admin API with [`TOKEN`] on a free port.
struct Setup {
    stable: Backend,
    canary: Backend,
    c: Controlled,
    admin: Admin,
    load: Load,
    _dir: TempDir,
}

impl Setup {
    async fn start(rollout: &str) -> Setup {
        let (stable, canary) = (
            Backend::start("stable").await,
            Backend::start("canary").await,
        );
        let dir = TempDir::new("ui");
        let c = Controlled::start(&rollout_config(stable.addr, canary.addr, &dir.0, rollout)).await;
        let health = Arc::new(Health::default());
        health.set_ready();
        let context = AdminContext {
            control: Some(c.control.clone()),
            token: Some(TOKEN.to_string()),
            ..AdminContext::new(health, c.serin.dataplane.clone())
        };
        let admin = Admin::bind("127.0.0.1:0".parse().expect("addr"), context)
            .await
            .expect("bind the admin API");
        let load = Load::start(c.serin.url("/"), 4, Duration::from_millis(5));
        Setup {
            stable,
            canary,
            c,
            admin,
            load,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin.local_addr, path)
    }

    async fn service(&self) -> Value {
        let got = get(
            &client(),
            &self.url("/api/v1/services/api"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
        serde_json::from_str(&got.body).expect("the service as JSON")
    }

    async fn stop(self) {
        self.load.stop().await;
        self.c.stop().await;
        self.admin.shutdown().await;
    }
}

async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn displayed(browser: &Client, css: &str) -> bool {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("find {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Loads the page, which asks for the token, and gives it.
async fn sign_in(browser: &Client, s: &Setup) {
    browser.goto(&s.url("/ui")).await.expect("load /ui");
    eventually(
        Duration::from_secs(10),
        "the page asks for the token",
        || displayed(browser, "#token-form"),
    )
    .await;
    // Without a token, the actions are not offered.
    assert!(!displayed(browser, "#actions").await);
    let input = browser
        .find(Locator::Css("#token"))
        .await
        .expect("the token field");
    input.send_keys(TOKEN).await.expect("type the token");
    click(browser, "#token-submit").await;
    eventually(Duration::from_secs(10), "the service is shown", || async {
        text(browser, "#service-name").await == "api"
    })
    .await;
}

/// The number a cell of the versions table shows for `version` (commas removed).
async fn cell(browser: &Client, version: &str, field: &str) -> Option<f64> {
    let shown = text(
        browser,
        &format!("#numbers tr[data-version=\"{version}\"] td[data-field=\"{field}\"]"),
    )
    .await;
    shown.replace(',', "").trim_end_matches(" %").parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_real_traffic_a_rollback_and_aborts_by_hand() {
    let driver = Driver::start();
    let browser = driver.browser().await;

    // 1. Numbers from real traffic, then an automatic rollback on the page.
    let s = Setup::start(&format!(
        "      baseline: stable\n      canary: canary\n      steps:\n        - {{ weight: 50, hold: 1h }}\n        - {{ weight: 100 }}\n      analysis:\n{FAST}\n        rules:\n          - error_rate: {{ max: 1% }}\n"
    ))
    .await;
    sign_in(&browser, &s).await;
    eventually(
        Duration::from_secs(20),
        "both versions' requests on the page",
        || async {
            cell(&browser, "stable", "requests").await.unwrap_or(0.0) > 0.0
                && cell(&browser, "canary", "requests").await.unwrap_or(0.0) > 0.0
        },
    )
    .await;
    assert!(s.stable.hits() > 0 && s.canary.hits() > 0);
    assert!(cell(&browser, "canary", "rps").await.unwrap_or(0.0) > 0.0);
    assert_eq!(text(&browser, "#rollout-state").await, "progressing");
    assert_eq!(
        text(&browser, "#steps li[aria-current=step]").await,
        "canary 50 %"
    );
    assert!(
        displayed(&browser, "#actions").await,
        "token given: actions offered"
    );

    s.canary.set_status(500);
    eventually(
        Duration::from_secs(20),
        "the rollback on the page",
        || async {
            text(&browser, "#timeline tr[data-event=rolled_back]")
                .await
                .contains("error_rate")
        },
    )
    .await;
    assert_eq!(s.c.phase(), Phase::RolledBack);
    assert_eq!(text(&browser, "#rollout-state").await, "rolled back");
    let row = text(&browser, "#timeline tr[data-event=rolled_back]").await;
    assert!(row.contains("canary 0"), "{row}");
    assert!(row.contains("observed"), "the numbers behind it: {row}");
    // Let the charts gather a few samples for the screenshot.
    eventually(Duration::from_secs(10), "the error chart drawn", || async {
        displayed(&browser, "#chart-err svg path").await
    })
    .await;
    let png = browser.screenshot().await.expect("a screenshot");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).expect("create target/");
    std::fs::write(target.join("ui-screenshot.png"), &png).expect("save the screenshot");
    assert!(png.starts_with(b"\x89PNG"));
    s.stop().await;

    // 2. Abort by hand: token, button, confirm; the canary's weight goes to 0.
    let s = Setup::start(
        "      baseline: stable\n      canary: canary\n      steps:\n        - { weight: 20, hold: 1h }\n        - { weight: 100 }\n      analysis:\n        interval: 100ms\n        window: 5s\n        rules:\n          - error_rate: { max: 50% }\n",
    )
    .await;
    sign_in(&browser, &s).await;
    eventually(Duration::from_secs(10), "the canary at 20", || async {
        text(&browser, "#weights").await == "stable 80 · canary 20"
    })
    .await;
    click(&browser, "#actions button[data-command=abort]").await;
    assert!(displayed(&browser, "#confirm").await, "a confirm step");
    // Nothing happens before the confirmation.
    assert_eq!(s.service().await["weights"]["canary"], 20);
    click(&browser, "#confirm-yes").await;
    eventually(Duration::from_secs(10), "the abort on the page", || async {
        text(&browser, "#weights").await == "stable 100 · canary 0"
    })
    .await;
    let view = s.service().await;
    assert_eq!(view["weights"]["canary"], 0);
    assert_eq!(view["rollout"]["state"], "rolled_back");
    assert_eq!(view["rollout"]["reason"], "aborted by hand");
    let row = text(&browser, "#timeline tr[data-event=rolled_back]").await;
    assert!(row.contains("(by hand)"), "{row}");
    s.stop().await;

    // 3. A rollback drill: a banner says it is one, and the rollback it causes is
    // marked on the timeline.
    let s = Setup::start(&format!(
        "      baseline: stable\n      canary: canary\n      steps:\n        - {{ weight: 50, hold: 1h }}\n        - {{ weight: 100 }}\n      analysis:\n{FAST}\n        rules:\n          - error_rate: {{ max: 1% }}\n"
    ))
    .await;
    sign_in(&browser, &s).await;
    assert!(!displayed(&browser, "#drill-banner").await, "no drill yet");
    let drill = |errors, latency| serin_control::runner::DrillRequest {
        errors,
        latency,
        length: Duration::from_secs(120),
    };
    let now = serin_control::runner::now_ms;
    // Latency alone, which the error-rate rule does not judge: the banner stays.
    s.c.control
        .start_drill("api", drill(0, Duration::from_millis(1)), now())
        .expect("the drill starts");
    eventually(Duration::from_secs(10), "the drill's banner", || async {
        text(&browser, "#drill-banner").await.starts_with(
            "Rollback drill running — not an incident: serin answers 0% of canary's requests \
             with 503 and delays the others by 1 ms",
        )
    })
    .await;
    s.c.control.end_drill("api", now()).expect("the drill ends");
    eventually(Duration::from_secs(10), "the banner gone", || async {
        !displayed(&browser, "#drill-banner").await
    })
    .await;
    s.c.control
        .start_drill("api", drill(5_000, Duration::ZERO), now())
        .expect("the drill starts");
    eventually(
        Duration::from_secs(20),
        "the drill's rollback on the page",
        || async {
            text(&browser, "#timeline tr[data-event=rolled_back]")
                .await
                .contains("rolled back (drill)")
        },
    )
    .await;
    eventually(Duration::from_secs(10), "the banner gone", || async {
        !displayed(&browser, "#drill-banner").await
    })
    .await;
    assert!(text(&browser, "#timeline tr[data-event=drill_ended]")
        .await
        .contains("the rollout rolled back"));
    s.stop().await;

    browser.close().await.expect("end the browser session");
}
