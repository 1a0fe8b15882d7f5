//! Rollout notifications: webhooks told about the decisions they subscribe to.
//!
//! The control loop hands each recorded decision to [`Notifier::send`], which builds
//! the [`Notification`] once and pushes it onto the bounded queue of every target
//! that wants its kind. That is all it does on the control loop: it never touches the
//! network and never waits, so a webhook that is down or hangs cannot delay a
//! rollback or a tick.
//!
//! Each target has its own queue and its own delivery task (started on the first
//! notification, on the tokio runtime the control loop runs on), so a slow receiver
//! holds up only its own notifications, which it gets in order. A queue holds
//! [`QUEUE_CAPACITY`] notifications; when it is full the **oldest** is dropped (the
//! newest decision describes the rollout as it is now), counted and logged.
//!
//! Delivery: an HTTP/1.1 `POST` (plain http) with the target's headers; each attempt is
//! bounded by the target's `timeout` (connecting, sending, and the response's status
//! line and headers). A 2xx answer is delivered. A connection failure, a timeout, 408,
//! 429 and 5xx are retried up to `retries` times, after an exponential backoff with
//! jitter (`backon`): the n-th retry waits [`FIRST_RETRY_DELAY`] × 2ⁿ⁻¹, capped at
//! [`MAX_RETRY_DELAY`], plus a random part of up to as much again; a `Retry-After`
//! (seconds) on an answer that is retried lengthens the wait (up to the cap). Any other
//! answer (3xx, 4xx) is a failure at once. Failures are logged with the URL's host and
//! port only (its path and the header values may be secrets) and counted:
//! [`Notifier::counts`]. Notifications still queued when the runtime stops are lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serin_config::{NotifyFormat, NotifyTarget, Rollout};
use serin_judge::analysis::Breach;
use serin_judge::rollout::DecisionKind;
use serin_judge::rules::{CompiledAnalysis, Ms, Pct};
use serin_judge::window::{Aggregate, Sample, ServiceWindow};

use crate::wire::{
    rfc3339, BreachStartSource, Notification, NotificationStatus, TimelineEvent, WindowNumbers,
};

/// Notifications waiting per target; past it the oldest is dropped.
pub const QUEUE_CAPACITY: usize = 64;
/// The wait before the first retry (before jitter).
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between two attempts (before jitter).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

const USER_AGENT: &str = concat!("serin/", env!("CARGO_PKG_VERSION"));

fn bit(event: DecisionKind) -> u32 {
    1 << event as u32
}

/// The rollout a decision belongs to, as the control loop holds it.
pub struct RolloutContext<'a> {
    pub spec: &'a Rollout,
    /// The spec's analysis, compiled: a breach names its rule by index.
    pub rules: &'a CompiledAnalysis,
    pub baseline: &'a str,
    pub canary: &'a str,
    pub started_ms: u64,
    pub canary_weight: u32,
}

impl Notification {
    /// The notification of the decision recorded as `event`, for the rollout `run`;
    /// `previous_weights` are the service's weights before the decision.
    pub fn new(
        event: &TimelineEvent,
        previous_weights: BTreeMap<String, u32>,
        run: &RolloutContext<'_>,
        window: &ServiceWindow,
        breach: Option<&Breach>,
    ) -> Self {
        let (breach_started_at, breach_started_at_source) = match breach {
            Some(b) => {
                let (ms, source) = breach_started(window, run.spec, run.rules, b, event.at_ms);
                (Some(rfc3339(ms)), Some(source))
            }
            None => (None, None),
        };
        let canary_before = previous_weights.get(run.canary).copied();
        let canary_after = event.weights.get(run.canary).copied();
        Self {
            event: event.event,
            service: event.service.clone(),
            version: run.canary.to_string(),
            baseline: run.baseline.to_string(),
            action: action(event.event, canary_before, canary_after),
            previous_weights,
            new_weights: event.weights.clone(),
            rollout_started_at: rfc3339(run.started_ms),
            breach_started_at,
            breach_started_at_source,
            window: humantime::format_duration(run.spec.analysis.window).to_string(),
            metrics: event.versions.clone(),
            rule: event.rule.clone(),
            reason: event.reason.clone(),
            manual: event.manual,
            drill: event.drill,
            status: NotificationStatus {
                state: event.state,
                step: event.step,
                steps: run.spec.steps.len(),
                canary_weight: canary_after.unwrap_or(run.canary_weight),
            },
            at: event.at.clone(),
        }
    }

    /// One readable paragraph: what happened to which canary, the weights, the rule
    /// and the numbers of both versions.
    pub fn text(&self) -> String {
        let by_hand = if self.manual { " by hand" } else { "" };
        let (service, canary) = (&self.service, &self.version);
        let weight = self.status.canary_weight;
        let mut text = match self.event {
            DecisionKind::Started => {
                format!("serin: the rollout of {service} started: canary {canary} at {weight}%.")
            }
            DecisionKind::StepAdvanced => format!(
                "serin: {service}: canary {canary} advanced to {weight}% (step {} of {}).",
                self.status.step + 1,
                self.status.steps
            ),
            DecisionKind::Held => {
                format!("serin: {service}: canary {canary} is held at {weight}%.")
            }
            DecisionKind::Paused => format!(
                "serin: {service}: the rollout of canary {canary} was paused{by_hand} at {weight}%."
            ),
            DecisionKind::Resumed => format!(
                "serin: {service}: the rollout of canary {canary} was resumed{by_hand} at {weight}%."
            ),
            DecisionKind::RolledBack => {
                format!("serin: {service}: canary {canary} was rolled back{by_hand}.")
            }
            DecisionKind::Promoted => {
                format!("serin: {service}: canary {canary} was promoted{by_hand}.")
            }
            DecisionKind::ManualWeights => format!(
                "serin: {service}: weights were set by hand; the rollout of canary {canary} is paused."
            ),
            DecisionKind::DrillStarted => format!(
                "serin: {service}: a rollback drill started: serin injects faults into canary {canary} (a rehearsal, not an incident)."
            ),
            DecisionKind::DrillEnded => format!(
                "serin: {service}: the rollback drill on canary {canary} ended."
            ),
        };
        if self.drill
            && !matches!(
                self.event,
                DecisionKind::DrillStarted | DecisionKind::DrillEnded
            )
        {
            text.push_str(" [drill: faults injected by serin, not an incident]");
        }
        text.push_str(&format!(
            " Action: {}; weights {} → {}.",
            self.action,
            self.weights_text(&self.previous_weights),
            self.weights_text(&self.new_weights)
        ));
        match (&self.rule, &self.reason) {
            (Some(rule), _) => text.push_str(&format!(
                " Rule {} ({}) decided: {}.",
                rule.rule, rule.kind, rule.summary
            )),
            (None, Some(reason)) => text.push_str(&format!(" Reason: {reason}.")),
            (None, None) => {}
        }
        let numbers: Vec<String> = self
            .ordered(&self.metrics)
            .map(|(version, n)| format!("{version} {}", numbers_text(n)))
            .collect();
        if !numbers.is_empty() {
            text.push_str(&format!(
                " Over the last {}: {}.",
                self.window,
                numbers.join("; ")
            ));
        }
        text.push_str(&format!(" Rollout started {}", self.rollout_started_at));
        if let Some(since) = &self.breach_started_at {
            text.push_str(&format!("; failing since {since}"));
        }
        text.push_str(&format!(
            "; now {}, step {} of {}, at {}.",
            self.status.state.as_str(),
            self.status.step + 1,
            self.status.steps,
            self.at
        ));
        text
    }

    /// Canary first, then the baseline, then any other version.
    fn ordered<'a, T>(
        &'a self,
        map: &'a BTreeMap<String, T>,
    ) -> impl Iterator<Item = (&'a String, &'a T)> + 'a {
        let first = [&self.version, &self.baseline];
        first
            .into_iter()
            .filter_map(move |name| map.get_key_value(name))
            .chain(map.iter().filter(move |(name, _)| !first.contains(name)))
    }

    fn weights_text(&self, weights: &BTreeMap<String, u32>) -> String {
        let parts: Vec<String> = self
            .ordered(weights)
            .map(|(version, w)| format!("{version} {w}"))
            .collect();
        parts.join(", ")
    }

    /// The request body in `format`.
    pub fn body(&self, format: NotifyFormat) -> Result<Bytes, serde_json::Error> {
        match format {
            NotifyFormat::Json => serde_json::to_vec(self),
            NotifyFormat::Slack => serde_json::to_vec(&serde_json::json!({ "text": self.text() })),
        }
        .map(Bytes::from)
    }
}

fn numbers_text(n: &WindowNumbers) -> String {
    if n.requests == 0 {
        return "no requests".to_string();
    }
    let mut text = format!("{} requests, {} errors", n.requests, n.errors);
    if let Some(rate) = n.error_rate {
        text.push_str(&format!(" ({})", Pct(rate)));
    }
    if let Some(p95) = n.p95_ms {
        text.push_str(&format!(", p95 {}", Ms(p95)));
    }
    if let Some(p99) = n.p99_ms {
        text.push_str(&format!(", p99 {}", Ms(p99)));
    }
    text
}

/// What serin did about a decision, in words.
fn action(kind: DecisionKind, before: Option<u32>, after: Option<u32>) -> String {
    match (before, after) {
        (Some(b), Some(a)) if a != b => return format!("canary weight set to {a} (was {b})"),
        _ => {}
    }
    let kept = after.map_or(String::new(), |a| format!(" at {a}"));
    match kind {
        DecisionKind::Held => format!("weights kept: the canary stays{kept} until the step passes"),
        DecisionKind::Paused => {
            format!("weights kept: the canary stays{kept}, paused for a person to decide")
        }
        DecisionKind::Resumed => format!("weights kept: the canary is judged again{kept}"),
        DecisionKind::ManualWeights => "weights set by hand; the rollout is paused".to_string(),
        DecisionKind::DrillStarted => format!("faults injected into the canary{kept}"),
        DecisionKind::DrillEnded => format!("no more faults injected; canary weight stays{kept}"),
        DecisionKind::Started
        | DecisionKind::StepAdvanced
        | DecisionKind::RolledBack
        | DecisionKind::Promoted => format!("canary weight stays{kept}"),
    }
}

/// When the failing evidence behind `breach` started: the start of the oldest tick of
/// the unbroken run of ticks, up to the decision at `decided_ms`, in which the
/// canary's own numbers were over the rule's threshold (relative rules against the
/// baseline's window; ticks without canary traffic neither extend nor break the run).
/// When the newest tick with traffic was not over it, or the breach names no rule of
/// `rules`, the decision time.
pub fn breach_started(
    window: &ServiceWindow,
    spec: &Rollout,
    rules: &CompiledAnalysis,
    breach: &Breach,
    decided_ms: u64,
) -> (u64, BreachStartSource) {
    let decision = (decided_ms, BreachStartSource::Decision);
    let Some(rule) = rules.rules.get(breach.index) else {
        return decision;
    };
    let since = decided_ms.saturating_sub(spec.analysis.window.as_millis() as u64);
    let baseline = window.aggregate(spec.baseline, since);
    let ticks: Vec<(u64, &[Sample])> = window.ticks().filter(|(at, _)| *at <= decided_ms).collect();
    let mut first_bad = None;
    for (i, (_, samples)) in ticks.iter().enumerate().rev() {
        let Some(sample) = samples.get(spec.canary) else {
            break;
        };
        match rule.observe(&Aggregate::of([sample]), &baseline).seen() {
            None => continue,
            Some(o) if rule.breaks(&o) => first_bad = Some(i),
            Some(_) => break,
        }
    }
    let interval = spec.analysis.interval.as_millis() as u64;
    match first_bad {
        Some(0) => (
            ticks[0].0.saturating_sub(interval),
            BreachStartSource::FirstFailingTick,
        ),
        Some(i) => (ticks[i - 1].0, BreachStartSource::FirstFailingTick),
        None => decision,
    }
}

/// Notifications delivered, failed (after every attempt, or not retried) and dropped
/// (a full queue, or a target removed by a reload before it could send them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifyCounts {
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// What became of one notification at the targets that wanted it (a rollback drill's
/// report reads it): each target counts once, when its delivery ends.
#[derive(Debug, Default)]
pub struct Delivery {
    targets: AtomicU32,
    delivered: AtomicU32,
    failed: AtomicU32,
    dropped: AtomicU32,
}

/// [`Delivery`] read at one moment: targets that wanted the notification, and how many
/// of them received it, gave up on it, or dropped it; the rest are still sending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub targets: u32,
    pub delivered: u32,
    pub failed: u32,
    pub dropped: u32,
}

impl Delivery {
    pub fn counts(&self) -> DeliveryCounts {
        DeliveryCounts {
            targets: self.targets.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A notification waiting for one target, with its delivery record.
#[derive(Debug)]
struct Queued {
    notification: Arc<Notification>,
    delivery: Arc<Delivery>,
}

/// One target's notifications waiting for its delivery task, oldest first.
#[derive(Debug, Default)]
struct Queue {
    items: Mutex<VecDeque<Queued>>,
    ready: tokio::sync::Notify,
    /// The target was removed: the task sends what is queued, then ends.
    closed: AtomicBool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Target {
    config: Arc<NotifyTarget>,
    /// `notify[i]` when it was configured, for logs.
    name: String,
    queue: Arc<Queue>,
    started: bool,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The webhooks of the config and their delivery tasks.
pub struct Notifier {
    targets: Mutex<Vec<Target>>,
    /// Bit i: some target wants `DecisionKind::ALL[i]`.
    wanted: AtomicU32,
    counters: Arc<Counters>,
    client: HttpClient,
}

impl Notifier {
    pub fn new(targets: &[NotifyTarget]) -> Self {
        let notifier = Self {
            targets: Mutex::new(Vec::new()),
            wanted: AtomicU32::new(0),
            counters: Arc::new(Counters::default()),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(HttpConnector::new()),
        };
        notifier.reconfigure(targets);
        notifier
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Target>> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts a reloaded `notify` list for the decisions taken from now on. A target
    /// that is unchanged keeps its queue; a removed or changed one sends what it has
    /// queued already, then its task ends.
    pub fn reconfigure(&self, configs: &[NotifyTarget]) {
        let mut targets = self.lock();
        let mut old = std::mem::take(&mut *targets);
        for (i, config) in configs.iter().enumerate() {
            let kept = old
                .iter()
                .position(|t| *t.config == *config)
                .map(|at| old.swap_remove(at));
            targets.push(kept.unwrap_or_else(|| Target {
                config: Arc::new(config.clone()),
                name: format!("notify[{i}]"),
                queue: Arc::new(Queue::default()),
                started: false,
            }));
        }
        for gone in old {
            gone.queue.closed.store(true, Ordering::SeqCst);
            gone.queue.ready.notify_one();
            let pending = gone.queue.lock().len();
            if !gone.started && pending > 0 {
                for queued in gone.queue.lock().iter() {
                    queued.delivery.dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.counters
                    .dropped
                    .fetch_add(pending as u64, Ordering::Relaxed);
                tracing::warn!(webhook = %gone.name, url = %gone.config.url.redacted(), pending, "webhook removed with notifications it never started sending; they are dropped");
            }
        }
        let wanted = targets
            .iter()
            .flat_map(|t| t.config.events.iter())
            .fold(0, |mask, e| mask | bit(*e));
        self.wanted.store(wanted, Ordering::Relaxed);
    }

    /// Whether some target wants decisions of `kind`.
    pub fn wants(&self, kind: DecisionKind) -> bool {
        self.wanted.load(Ordering::Relaxed) & bit(kind) != 0
    }

    /// Queues `notification` for every target that wants its kind, and returns at once
    /// with the record of what becomes of it.
    pub fn send(&self, notification: Notification) -> Arc<Delivery> {
        let event = notification.event;
        let notification = Arc::new(notification);
        let delivery = Arc::new(Delivery::default());
        let runtime = tokio::runtime::Handle::try_current().ok();
        let mut targets = self.lock();
        for target in targets.iter_mut().filter(|t| t.config.wants(event)) {
            {
                let mut items = target.queue.lock();
                if items.len() >= QUEUE_CAPACITY {
                    if let Some(Queued {
                        notification: oldest,
                        delivery: dropped,
                    }) = items.pop_front()
                    {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                        dropped.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            webhook = %target.name,
                            url = %target.config.url.redacted(),
                            dropped_event = oldest.event.as_str(),
                            dropped_service = %oldest.service,
                            dropped_at = %oldest.at,
                            capacity = QUEUE_CAPACITY,
                            "webhook queue full: the oldest notification is dropped"
                        );
                    }
                }
                items.push_back(Queued {
                    notification: notification.clone(),
                    delivery: delivery.clone(),
                });
                delivery.targets.fetch_add(1, Ordering::Relaxed);
            }
            target.queue.ready.notify_one();
            if !target.started {
                match &runtime {
                    Some(runtime) => {
                        runtime.spawn(deliver_queue(
                            target.queue.clone(),
                            target.config.clone(),
                            target.name.clone(),
                            self.client.clone(),
                            self.counters.clone(),
                        ));
                        target.started = true;
                    }
                    None => tracing::warn!(
                        webhook = %target.name,
                        "no async runtime to deliver webhooks on; the notification waits in the queue"
                    ),
                }
            }
        }
        delivery
    }

    pub fn counts(&self) -> NotifyCounts {
        NotifyCounts {
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Notifications waiting in the queues (not counting one being sent).
    pub fn queued(&self) -> usize {
        self.lock().iter().map(|t| t.queue.lock().len()).sum()
    }
}

/// One target's delivery task: sends its queue in order until the target is removed.
async fn deliver_queue(
    queue: Arc<Queue>,
    config: Arc<NotifyTarget>,
    name: String,
    client: HttpClient,
    counters: Arc<Counters>,
) {
    loop {
        let next = queue.lock().pop_front();
        match next {
            Some(Queued {
                notification,
                delivery,
            }) => {
                let delivered = deliver(&client, &config, &name, &notification, &counters).await;
                let outcome = if delivered {
                    &delivery.delivered
                } else {
                    &delivery.failed
                };
                outcome.fetch_add(1, Ordering::Relaxed);
            }
            None if queue.closed.load(Ordering::SeqCst) => return,
            None => queue.ready.notified().await,
        }
    }
}

/// Why one attempt did not deliver.
#[derive(Debug)]
enum AttemptError {
    Timeout(Duration),
    /// Connecting or sending failed.
    Send(String),
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// The request could not be built (not retried).
    Request(String),
}

impl AttemptError {
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Timeout(_) | AttemptError::Send(_) => true,
            AttemptError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            AttemptError::Request(_) => false,
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Timeout(limit) => write!(
                f,
                "no response within {} (notify[].timeout)",
                humantime::format_duration(*limit)
            ),
            AttemptError::Send(why) => write!(f, "cannot send: {why}"),
            AttemptError::Status { status, .. } if self.retryable() => {
                write!(f, "the receiver answered {status}")
            }
            AttemptError::Status { status, .. } if status.is_redirection() => write!(
                f,
                "the receiver answered {status}; redirects are not followed: give the final URL"
            ),
            AttemptError::Status { status, .. } => write!(
                f,
                "the receiver answered {status}; not retried: check the URL, the headers and the receiver"
            ),
            AttemptError::Request(why) => write!(f, "cannot build the request: {why}"),
        }
    }
}

/// Sends one notification to one target, with retries; counts the outcome and returns
/// whether it was delivered.
async fn deliver(
    client: &HttpClient,
    config: &NotifyTarget,
    name: &str,
    notification: &Notification,
    counters: &Counters,
) -> bool {
    let event = notification.event.as_str();
    let body = match notification.body(config.format) {
        Ok(body) => body,
        Err(err) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(webhook = %name, event, error = %err, "cannot encode the notification");
            return false;
        }
    };
    let attempts = AtomicU32::new(0);
    let policy = ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY_DELAY)
        .with_max_delay(MAX_RETRY_DELAY)
        .with_factor(2.0)
        .with_max_times(config.retries as usize)
        .with_jitter();
    let outcome = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt(client, config, body.clone())
    })
    .retry(policy)
    .sleep(tokio::time::sleep)
    .when(AttemptError::retryable)
    .adjust(|err, wait| {
        let wait = wait?;
        Some(match err {
            AttemptError::Status {
                retry_after: Some(asked),
                ..
            } => wait.max((*asked).min(MAX_RETRY_DELAY)),
            _ => wait,
        })
    })
    .notify(|err, wait| {
        tracing::debug!(webhook = %name, url = %config.url.redacted(), event, error = %err, retry_in = ?wait, "webhook attempt failed; retrying");
    })
    .await;
    let attempts = attempts.load(Ordering::Relaxed);
    match outcome {
        Ok(status) => {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::info!(webhook = %name, url = %config.url.redacted(), event, service = %notification.service, status = status.as_u16(), attempts, "notification delivered");
            true
        }
        Err(err) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(webhook = %name, url = %config.url.redacted(), event, service = %notification.service, attempts, error = %err, "notification not delivered");
            false
        }
    }
}

/// One POST, bounded by the target's timeout up to the response's headers.
async fn attempt(
    client: &HttpClient,
    config: &NotifyTarget,
    body: Bytes,
) -> Result<StatusCode, AttemptError> {
    let mut request = Request::post(config.url.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT);
    for (name, value) in &config.headers {
        request = request.header(name.as_str(), value.expose());
    }
    // The error names what is wrong (a header, the URL) without showing the value.
    let request = request
        .body(Full::new(body))
        .map_err(|err| AttemptError::Request(err.to_string()))?;
    let response = match tokio::time::timeout(config.timeout, client.request(request)).await {
        Err(_) => return Err(AttemptError::Timeout(config.timeout)),
        Ok(Err(err)) => return Err(AttemptError::Send(error_chain(&err))),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(status);
    }
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Err(AttemptError::Status {
        status,
        retry_after,
    })
}

/// An error and its sources, as one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serin_config::{Analysis, OnFailure, Rule, Step};
    use serin_judge::rollout::Phase;
    use serin_judge::rules::compile;

    use crate::wire::RuleRecord;

    use super::*;

    fn spec(rules: Vec<Rule>) -> Rollout {
        Rollout {
            shadow: None,
            baseline: 0,
            canary: 1,
            steps: vec![
                Step {
                    shadow: None,
                    weight: 30,
                    hold: None,
                },
                Step {
                    shadow: None,
                    weight: 100,
                    hold: None,
                },
            ],
            analysis: Analysis {
                interval: Duration::from_millis(100),
                window: Duration::from_secs(5),
                min_requests: 20,
                confidence: 0.99,
                rules,
            },
            retry_on_baseline: false,
            on_failure: OnFailure::Rollback,
            progress_deadline: Duration::from_secs(600),
        }
    }

    fn sample(requests: u64, errors: u64) -> Sample {
        Sample {
            requests,
            errors,
            success: Default::default(),
            latency: vec![(1000, 1000, requests)],
        }
    }

    /// A breach of the rule at `index` of `spec`.
    fn breach(spec: &Rollout, index: usize) -> Breach {
        let rule = &spec.analysis.rules[index];
        Breach {
            index,
            rule: rule.to_string(),
            kind: rule.kind(),
            observed: 0.5,
            threshold: 0.01,
            evidence: 10.0,
            needed: 8.0,
            summary: "canary error rate 50% against max 1%".to_string(),
        }
    }

    /// Ticks every 100 ms from 1000: `canary[i]` is (requests, errors) of tick i.
    fn window(canary: &[(u64, u64)]) -> ServiceWindow {
        let mut w = ServiceWindow::new(vec!["stable".into(), "canary".into()], 60_000);
        for (i, &(n, e)) in canary.iter().enumerate() {
            w.push_samples(1000 + 100 * i as u64, vec![sample(100, 0), sample(n, e)]);
        }
        w
    }

    #[test]
    fn the_breach_started_with_the_first_tick_of_the_failing_run() {
        let s = spec(vec![Rule::ErrorRate { max: 0.01 }]);
        let rules = compile(&s.analysis);
        // Healthy until tick 4; tick 5 has no canary traffic; failing from tick 3 on.
        let w = window(&[
            (10, 0),
            (10, 0),
            (10, 0),
            (10, 5),
            (10, 9),
            (0, 0),
            (10, 10),
        ]);
        let decided = 1600;
        // Tick 3 ends at 1300 and so starts when tick 2 ended, at 1200.
        assert_eq!(
            breach_started(&w, &s, &rules, &breach(&s, 0), decided),
            (1200, BreachStartSource::FirstFailingTick)
        );
        // Failing from the oldest tick kept: one interval before its end.
        let w = window(&[(10, 5), (10, 9)]);
        assert_eq!(
            breach_started(&w, &s, &rules, &breach(&s, 0), 1100),
            (900, BreachStartSource::FirstFailingTick)
        );
        // The newest tick was healthy (the evidence added up before): the decision.
        let w = window(&[(10, 9), (10, 9), (10, 0)]);
        assert_eq!(
            breach_started(&w, &s, &rules, &breach(&s, 0), 1200),
            (1200, BreachStartSource::Decision)
        );
        // A breach naming no rule of the analysis: the decision.
        let mut other = breach(&s, 0);
        other.index = 1;
        let w = window(&[(10, 9)]);
        assert_eq!(
            breach_started(&w, &s, &rules, &other, 1000),
            (1000, BreachStartSource::Decision)
        );
    }

    #[test]
    fn a_relative_rule_breach_starts_when_the_canary_left_the_baseline_behind() {
        // The baseline answers 100 requests a tick without errors (see `window`).
        let s = spec(vec![
            Rule::ErrorRate { max: 0.5 },
            Rule::ErrorRateIncrease { max_increase: 0.1 },
        ]);
        let rules = compile(&s.analysis);
        // 5 % errors is within 10 points of the baseline's 0 %; 30 % is not.
        let w = window(&[(20, 1), (20, 6), (20, 1), (20, 6), (20, 6)]);
        assert_eq!(
            breach_started(&w, &s, &rules, &breach(&s, 1), 1400),
            (1200, BreachStartSource::FirstFailingTick)
        );
        // The absolute rule of the same analysis allows 50 %: no tick was over it.
        assert_eq!(
            breach_started(&w, &s, &rules, &breach(&s, 0), 1400),
            (1400, BreachStartSource::Decision)
        );
    }

    fn timeline_event(kind: DecisionKind, manual: bool) -> TimelineEvent {
        let numbers = |requests, errors| WindowNumbers {
            requests,
            errors,
            error_rate: Some(errors as f64 / requests as f64),
            p50_ms: Some(3.0),
            p95_ms: Some(7.5),
            p99_ms: Some(12.0),
        };
        TimelineEvent {
            mismatches: Vec::new(),
            at: rfc3339(2000),
            at_ms: 2000,
            service: "api".into(),
            event: kind,
            manual,
            state: Phase::RolledBack,
            step: 0,
            weights: [("stable".to_string(), 100), ("canary".to_string(), 0)].into(),
            reason: Some("error_rate max 1% breached: canary error rate 40% against max 1%".into()),
            rule: Some(RuleRecord {
                rule: "error_rate max 1%".into(),
                kind: "error_rate".into(),
                observed: Some(0.4),
                threshold: Some(0.01),
                summary: "canary error rate 40% against max 1%".into(),
                evidence: 9.0,
                needed: 8.0,
            }),
            versions: [
                ("stable".to_string(), numbers(400, 0)),
                ("canary".to_string(), numbers(100, 40)),
            ]
            .into(),
            drill: false,
        }
    }

    fn notification() -> Notification {
        let s = spec(vec![Rule::ErrorRate { max: 0.01 }]);
        let w = window(&[(10, 0), (10, 9), (10, 9)]);
        Notification::new(
            &timeline_event(DecisionKind::RolledBack, false),
            [("stable".to_string(), 70), ("canary".to_string(), 30)].into(),
            &RolloutContext {
                spec: &s,
                rules: &compile(&s.analysis),
                baseline: "stable",
                canary: "canary",
                started_ms: 500,
                canary_weight: 0,
            },
            &w,
            Some(&breach(&s, 0)),
        )
    }

    #[test]
    fn a_rollback_notification_carries_the_incident() {
        let n = notification();
        let json: serde_json::Value =
            serde_json::from_slice(&n.body(NotifyFormat::Json).expect("json")).expect("parse");
        assert_eq!(json["event"], "rolled_back");
        assert_eq!(json["version"], "canary");
        assert_eq!(json["previous_weights"]["canary"], 30);
        assert_eq!(json["new_weights"]["stable"], 100);
        assert_eq!(json["action"], "canary weight set to 0 (was 30)");
        assert_eq!(json["breach_started_at"], rfc3339(1000));
        assert_eq!(json["breach_started_at_source"], "first_failing_tick");
        assert_eq!(json["rollout_started_at"], rfc3339(500));
        assert_eq!(json["window"], "5s");
        assert_eq!(json["metrics"]["canary"]["errors"], 40);
        assert_eq!(json["rule"]["kind"], "error_rate");
        assert_eq!(json["status"]["state"], "rolled_back");
        assert_eq!(json["status"]["steps"], 2);
        assert_eq!(json["manual"], false);
    }

    /// docs/config.md shows a notification with every field a real one has, and the
    /// Slack text of the same decision.
    #[test]
    fn the_documented_payload_has_the_fields_of_a_real_one() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md"))
                .expect("docs/config.md");
        let section = docs
            .split("### What a webhook is sent")
            .nth(1)
            .expect("the payload section");
        let blocks: Vec<serde_json::Value> = section
            .split("```json\n")
            .skip(1)
            .take(2)
            .map(|b| serde_json::from_str(b.split("```").next().unwrap_or("")).expect("JSON"))
            .collect();
        let real: serde_json::Value =
            serde_json::from_slice(&notification().body(NotifyFormat::Json).expect("json"))
                .expect("parse");
        /// Every key, nested ones as `a.b`, sorted.
        fn keys(v: &serde_json::Value) -> Vec<String> {
            let mut all = Vec::new();
            for (k, inner) in v.as_object().into_iter().flatten() {
                all.push(k.clone());
                all.extend(keys(inner).into_iter().map(|i| format!("{k}.{i}")));
            }
            all
        }
        assert_eq!(keys(&blocks[0]), keys(&real));
        let text = blocks[1]["text"]
            .as_str()
            .expect("the slack example's text");
        assert!(
            text.starts_with("serin: api: canary canary was rolled back."),
            "{text}"
        );
    }

    #[test]
    fn the_slack_text_is_one_readable_paragraph() {
        let n = notification();
        let body: serde_json::Value =
            serde_json::from_slice(&n.body(NotifyFormat::Slack).expect("slack")).expect("parse");
        let text = body["text"].as_str().expect("a text field");
        assert_eq!(
            text,
            format!(
                "serin: api: canary canary was rolled back. Action: canary weight set to 0 (was 30); \
                 weights canary 30, stable 70 → canary 0, stable 100. Rule error_rate max 1% \
                 (error_rate) decided: canary error rate 40% against max 1%. Over the last 5s: \
                 canary 100 requests, 40 errors (40%), p95 7.50ms, p99 12ms; stable 400 requests, \
                 0 errors (0%), p95 7.50ms, p99 12ms. Rollout started {}; failing since {}; now \
                 rolled_back, step 1 of 2, at {}.",
                rfc3339(500),
                rfc3339(1000),
                rfc3339(2000)
            )
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn actions_say_what_happened_to_the_weights() {
        use DecisionKind as K;
        assert_eq!(
            action(K::StepAdvanced, Some(5), Some(25)),
            "canary weight set to 25 (was 5)"
        );
        assert_eq!(
            action(K::Paused, Some(25), Some(25)),
            "weights kept: the canary stays at 25, paused for a person to decide"
        );
        assert_eq!(
            action(K::Promoted, Some(100), Some(100)),
            "canary weight stays at 100"
        );
    }

    #[test]
    fn a_full_queue_drops_its_oldest_notification() {
        let target: NotifyTarget = serin_config::parse_str(
            "listeners: [{ name: web, listen: 127.0.0.1:0 }]\n\
             admin: { listen: 127.0.0.1:0 }\n\
             notify: [{ url: \"http://127.0.0.1:9/\", events: [rolled_back] }]\n",
            "test",
        )
        .expect("config")
        .notify[0]
            .clone();
        // No runtime: nothing is delivered, so the queue fills up.
        let notifier = Notifier::new(&[target]);
        assert!(notifier.wants(DecisionKind::RolledBack));
        assert!(!notifier.wants(DecisionKind::Promoted));
        for i in 0..QUEUE_CAPACITY + 3 {
            let mut n = notification();
            n.at = format!("#{i}");
            notifier.send(n);
        }
        assert_eq!(notifier.queued(), QUEUE_CAPACITY);
        assert_eq!(
            notifier.counts(),
            NotifyCounts {
                delivered: 0,
                failed: 0,
                dropped: 3
            }
        );
        let oldest = notifier.lock()[0]
            .queue
            .lock()
            .front()
            .map(|n| n.notification.at.clone());
        assert_eq!(oldest.as_deref(), Some("#3"));
        // A reload that removes the target drops what it never started sending.
        notifier.reconfigure(&[]);
        assert!(!notifier.wants(DecisionKind::RolledBack));
        assert_eq!(notifier.counts().dropped, 3 + QUEUE_CAPACITY as u64);
    }
}
