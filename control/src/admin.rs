//! The admin listener (`admin.listen`, loopback by default): health checks, Prometheus
//! metrics and the JSON API that reads and steers services and rollouts (docs/admin.md).
//!
//! `GET /healthz` answers 200 while the process is alive; `GET /readyz` answers 200 once
//! the config is loaded and every listener is bound, and 503 while draining on shutdown,
//! so a load balancer or kubelet stops sending traffic before connections close. In
//! fleet mode, while etcd is unreachable, `/readyz` stays 200 and says so on a second
//! line (the instance serves with the weights in force).
//!
//! `GET /metrics` exposes serin's metrics for Prometheus (see [`crate::metrics`]).
//!
//! `/api/v1/…` reports each service's weights, rollout and per-version numbers, its
//! decision timeline and the config's status, and takes commands: promote, pause,
//! resume, abort, manual weights, reload and rollback drills ([`drill`]). Reads are
//! `GET`, changes `POST`, `PUT` or `DELETE` only. With a token (`admin.token_file` or
//! `SERIN_ADMIN_TOKEN`) every endpoint but the health checks and `/metrics` needs
//! `Authorization: Bearer <token>`.
//!
//! Before the token, token or not, [`guard`] refuses (403) what a web page could make a
//! browser send: a Host that is not an IP address, `localhost` or a name in
//! `admin.allowed_hosts` (DNS rebinding), and a change from another origin. A body
//! must be `application/json` (415).
//!
//! [`handle`] is the whole API as one function of the context and a request, so the
//! tests drive it without sockets; [`Admin::bind`] serves it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use serin_proxy::{DataPlane, WeightsError};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod drill;
mod fleet_views;
pub mod guard;

use crate::metrics::{self, Format};
use crate::reload::ReloadHandle;
use crate::runner::{now_ms, Control, RolloutStatus, DEFAULT_WINDOW};
use crate::wire::{
    rfc3339, ApiError, FleetCommand, FleetCommandKind, ReloadRefused, RolloutView, ServiceView,
    VersionView, COMMAND_FORMAT,
};
use serin_judge::rollout::{Event, Phase};

/// Largest request body accepted (`PUT …/weights`); larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// The highest weight `PUT …/weights` accepts: weights there are percentages.
pub const MAX_API_WEIGHT: u64 = 100;

/// Where the process stands, as readiness reports it.
#[derive(Debug)]
pub struct Health(AtomicU8);

impl Default for Health {
    fn default() -> Self {
        Self(AtomicU8::new(STARTING))
    }
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    pub fn set_ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
    }

    pub fn set_draining(&self) {
        self.0.store(DRAINING, Ordering::SeqCst);
    }

    fn state(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything the admin API reads and steers.
pub struct AdminContext {
    pub health: Arc<Health>,
    pub dataplane: Arc<DataPlane>,
    /// The control loop; without it there are no numbers, rollouts or timelines, and
    /// weights are set on the data plane directly.
    pub control: Option<Arc<Control>>,
    /// The reload loop's handle; without it `/api/v1/reload` and `/api/v1/config`
    /// answer 503.
    pub reload: Option<ReloadHandle>,
    /// The bearer token every endpoint but the health checks and `/metrics` requires.
    pub token: Option<String>,
    /// `admin.allowed_hosts`: the names a request's Host may carry besides IP addresses
    /// and loopback names (lowercase, without a trailing dot); see [`guard`].
    pub allowed_hosts: Vec<String>,
    /// When the process started: during the first window, rates are per second up.
    pub started: Instant,
}

impl AdminContext {
    /// Health checks and the data plane, without control, reload or token.
    pub fn new(health: Arc<Health>, dataplane: Arc<DataPlane>) -> Self {
        Self {
            health,
            dataplane,
            control: None,
            reload: None,
            token: None,
            allowed_hosts: Vec::new(),
            started: Instant::now(),
        }
    }
}

impl fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminContext")
            .field("control", &self.control.is_some())
            .field("reload", &self.reload.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the admin API: {source} (set admin.listen to a free address)")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The running admin server.
pub struct Admin {
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Admin {
    pub async fn bind(addr: SocketAddr, context: AdminContext) -> Result<Self, AdminBindError> {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminBindError { addr, source })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| AdminBindError { addr, source })?;
        tracing::info!(
            addr = %local_addr,
            token = context.token.is_some(),
            allowed_hosts = ?context.allowed_hosts,
            "admin listening"
        );
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(socket, Arc::new(context), stopped));
        Ok(Self {
            local_addr,
            stop,
            task,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "admin accept loop ended abnormally");
        }
    }
}

async fn accept_loop(
    socket: TcpListener,
    context: Arc<AdminContext>,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            accepted = socket.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let context = context.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let context = context.clone();
                async move { Ok::<_, Infallible>(handle(&context, req).await) }
            });
            if let Err(err) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

/// A person's command to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Promote,
    Pause,
    Resume,
    Abort,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Promote => "promote",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Abort => "abort",
        }
    }

    fn parse(segment: &str) -> Option<Self> {
        Some(match segment {
            "promote" => Command::Promote,
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "abort" => Command::Abort,
            _ => return None,
        })
    }

    fn event(self) -> Event<'static> {
        match self {
            Command::Promote => Event::Promote,
            Command::Pause => Event::Pause,
            Command::Resume => Event::Resume,
            Command::Abort => Event::Abort,
        }
    }

    /// Whether the command means anything for a rollout in `phase`: a finished rollout
    /// takes only the command that finished it again (a no-op).
    fn applies_to(self, phase: Phase) -> bool {
        phase.is_active()
            || matches!(
                (self, phase),
                (Command::Promote, Phase::Promoted) | (Command::Abort, Phase::RolledBack)
            )
    }
}

/// What a request asks for, once its method and path are known to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    Healthz,
    Readyz,
    Metrics,
    Services,
    Service(&'a str),
    Timeline(&'a str),
    Command(&'a str, Command),
    Weights(&'a str),
    /// A service's rollback drill: `GET` reports it, `POST` starts one, `DELETE` ends it.
    Drill(&'a str),
    Reload,
    Config,
    /// A file of the dashboard (`/ui` and its assets).
    Ui(&'static Asset),
}

impl Endpoint<'_> {
    /// Whether the endpoint reads a request body (a JSON one: [`guard::json_body`]).
    /// Every other endpoint ignores what is sent.
    pub fn takes_body(&self) -> bool {
        matches!(self, Endpoint::Weights(_))
    }
}

/// A file of the dashboard, embedded in the binary.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The dashboard: one page, its style sheet and its script, no other request.
pub const UI: [Asset; 3] = [
    Asset {
        path: "/ui",
        content_type: "text/html; charset=utf-8",
        body: include_str!("ui/index.html"),
    },
    Asset {
        path: "/ui/ui.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("ui/ui.css"),
    },
    Asset {
        path: "/ui/ui.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("ui/ui.js"),
    },
];

fn ui_asset(path: &str) -> Option<&'static Asset> {
    UI.iter().find(|asset| asset.path == path)
}

/// Why a request has no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEndpoint {
    NotFound,
    /// The path exists for these methods only (the `Allow` header).
    MethodNotAllowed(&'static str),
}

const READ: &str = "GET, HEAD";
const DRILL: &str = "GET, HEAD, POST, DELETE";

/// The endpoint of `method` and `path`: the routing table of the API.
pub fn resolve<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, NoEndpoint> {
    let path = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    if let Some(asset) = ui_asset(path) {
        return if method == Method::GET || method == Method::HEAD {
            Ok(Endpoint::Ui(asset))
        } else {
            Err(NoEndpoint::MethodNotAllowed(READ))
        };
    }
    let (endpoint, allow) = match path {
        "/healthz" => (Endpoint::Healthz, READ),
        "/readyz" => (Endpoint::Readyz, READ),
        "/metrics" => (Endpoint::Metrics, READ),
        _ => {
            let Some(rest) = path.strip_prefix("/api/v1/") else {
                return Err(NoEndpoint::NotFound);
            };
            let segments: Vec<&str> = rest.split('/').collect();
            match segments.as_slice() {
                ["services"] => (Endpoint::Services, READ),
                ["services", name] if !name.is_empty() => (Endpoint::Service(name), READ),
                ["services", name, "timeline"] if !name.is_empty() => {
                    (Endpoint::Timeline(name), READ)
                }
                ["services", name, "weights"] if !name.is_empty() => {
                    (Endpoint::Weights(name), "PUT")
                }
                ["services", name, "drill"] if !name.is_empty() => (Endpoint::Drill(name), DRILL),
                ["services", name, command] if !name.is_empty() => match Command::parse(command) {
                    Some(command) => (Endpoint::Command(name, command), "POST"),
                    None => return Err(NoEndpoint::NotFound),
                },
                ["reload"] => (Endpoint::Reload, "POST"),
                ["config"] => (Endpoint::Config, READ),
                _ => return Err(NoEndpoint::NotFound),
            }
        }
    };
    let allowed = match allow {
        READ => method == Method::GET || method == Method::HEAD,
        DRILL => matches!(
            *method,
            Method::GET | Method::HEAD | Method::POST | Method::DELETE
        ),
        "POST" => method == Method::POST,
        _ => method == Method::PUT,
    };
    if allowed {
        Ok(endpoint)
    } else {
        Err(NoEndpoint::MethodNotAllowed(allow))
    }
}

/// Paths anyone may read, token or not: what load balancers and scrapers poll, and the
/// dashboard's files (which hold no data: the page asks for the token to read any).
fn is_open(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    matches!(path, "/healthz" | "/readyz" | "/metrics") || ui_asset(path).is_some()
}

/// Whether the request may proceed: `Ok` without a token or with the right one.
pub fn authorize(token: Option<&str>, path: &str, headers: &HeaderMap) -> Result<(), Refused> {
    let Some(token) = token else {
        return Ok(());
    };
    if is_open(path) {
        return Ok(());
    }
    let Some(given) = headers.get(header::AUTHORIZATION) else {
        return Err(Refused::NoToken);
    };
    let bearer = given.to_str().ok().and_then(|v| {
        let (scheme, rest) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });
    match bearer {
        Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        Some(_) => Err(Refused::WrongToken),
        None => Err(Refused::NoToken),
    }
}

/// Why a request was refused without a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NoToken,
    WrongToken,
}

/// The whole admin API: the response to `req`.
pub async fn handle<B>(context: &AdminContext, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    // Before the token: a page that may not send this learns nothing from a 401 either.
    if let Err(forbidden) = guard::check(&parts, &context.allowed_hosts) {
        tracing::debug!(
            method = %parts.method,
            path,
            reason = ?forbidden,
            "admin request refused"
        );
        return error(StatusCode::FORBIDDEN, forbidden.message());
    }
    match authorize(context.token.as_deref(), path, &parts.headers) {
        Ok(()) => {}
        Err(Refused::NoToken) => {
            return unauthorized(
                "Bearer realm=\"serin\"",
                "this endpoint needs the admin token: send `Authorization: Bearer <token>` \
                 (the serin CLI sends $SERIN_ADMIN_TOKEN)",
            )
        }
        Err(Refused::WrongToken) => {
            return unauthorized(
                "Bearer realm=\"serin\", error=\"invalid_token\"",
                "the admin token is wrong: send the token of the serving process \
                 (its admin.token_file, or its SERIN_ADMIN_TOKEN)",
            )
        }
    }
    let endpoint = match resolve(&parts.method, path) {
        Ok(endpoint) => endpoint,
        Err(NoEndpoint::MethodNotAllowed(allow)) => {
            let mut response = if is_open(path) {
                text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed; use GET\n",
                )
            } else {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "{} is not allowed on {path}; use {allow}",
                        parts.method.as_str()
                    ),
                )
            };
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return response;
        }
        Err(NoEndpoint::NotFound) => {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such endpoint: {path}; the API has /api/v1/services, \
                     /api/v1/services/{{name}}[/timeline|/weights|/drill|/promote|/pause|/resume|/abort], \
                     /api/v1/reload, /api/v1/config, /metrics, /healthz, /readyz and the dashboard /ui (see docs/admin.md)"
                ),
            )
        }
    };
    let takes_body = endpoint.takes_body()
        || (matches!(endpoint, Endpoint::Drill(_)) && parts.method == Method::POST);
    let body = if takes_body {
        if let Err(not_json) = guard::json_body(&parts.headers) {
            // Read (and drop) what fits the limit first, as for a 413, so that a client
            // still sending the body reads the answer instead of a reset connection.
            let _ = Limited::new(body, MAX_BODY).collect().await;
            return unsupported_type(&parts.method, path, not_json);
        }
        match read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(response) => return response,
        }
    } else {
        Bytes::new()
    };
    match endpoint {
        Endpoint::Healthz => text(StatusCode::OK, "ok\n"),
        Endpoint::Readyz => match context.health.state() {
            READY => match context
                .control
                .as_ref()
                .and_then(|c| c.fleet_away_since_ms())
            {
                Some(since) => text(StatusCode::OK, readyz_etcd_away(since)),
                None => text(StatusCode::OK, "ready\n"),
            },
            DRAINING => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        },
        Endpoint::Metrics => {
            let accept = parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            metrics_response(context, Format::from_accept(accept))
        }
        Endpoint::Ui(asset) => ui_response(asset),
        Endpoint::Services => {
            let mut views: Vec<ServiceView> = context
                .dataplane
                .snapshot()
                .services
                .iter()
                .filter_map(|s| service_view(context, &s.name))
                .collect();
            fleet_views::attach(context, &mut views).await;
            json(StatusCode::OK, &views)
        }
        Endpoint::Service(name) => match service_view(context, name) {
            Some(view) => {
                let mut views = [view];
                fleet_views::attach(context, &mut views).await;
                json(StatusCode::OK, &views[0])
            }
            None => unknown_service(context, name),
        },
        Endpoint::Timeline(name) if context.dataplane.snapshot().service(name).is_some() => {
            match fleet_views::timeline(context, name).await {
                Some(Ok(events)) => json(StatusCode::OK, &events),
                Some(Err(why)) => error(StatusCode::SERVICE_UNAVAILABLE, why),
                None => {
                    let events = context
                        .control
                        .as_ref()
                        .map(|c| c.timeline(name))
                        .unwrap_or_default();
                    json(StatusCode::OK, &events)
                }
            }
        }
        Endpoint::Timeline(name) => unknown_service(context, name),
        Endpoint::Command(name, command) => run_command(context, name, command).await,
        Endpoint::Weights(name) => set_weights(context, name, &body).await,
        Endpoint::Drill(name) => drill::drill(context, &parts.method, name, &body).await,
        Endpoint::Reload => reload(context).await,
        Endpoint::Config => match &context.reload {
            Some(handle) => json(StatusCode::OK, &handle.status()),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this process has no reload loop, so there is no config status to report",
            ),
        },
    }
}

/// `GET /metrics`: the exposition in `format`, read now.
fn metrics_response(context: &AdminContext, format: Format) -> Response<Full<Bytes>> {
    let rendered = metrics::render(
        &context.dataplane,
        context.control.as_ref(),
        context.reload.as_ref(),
        format,
    );
    match rendered {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded; this is a bug in serin, please report it",
        ),
    }
}

/// A file of the dashboard. The page may not be framed (its buttons steer rollouts) and
/// loads nothing but its own files and the API.
fn ui_response(asset: &'static Asset) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(asset.body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    response
}

/// Bodies up to this size that are refused as too large are read first (see
/// [`read_body`]); larger ones are refused at once.
const DRAIN_MAX: usize = 1 << 20;

/// The body, at most [`MAX_BODY`] bytes.
async fn read_body<B>(headers: &HeaderMap, body: B) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than {} KiB; send only the weights, e.g. {{\"stable\": 80, \"canary\": 20}}",
                MAX_BODY / 1024
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY as u64) {
        // Read (and drop) a moderately large body before answering, so that the client,
        // still sending it, reads the 413 instead of a reset connection.
        if n <= DRAIN_MAX as u64 {
            let _ = Limited::new(body, DRAIN_MAX).collect().await;
        }
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )),
    }
}

/// `respond(view)` for a defined service, 404 otherwise.
fn with_service(
    context: &AdminContext,
    name: &str,
    respond: impl FnOnce(ServiceView) -> Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    match service_view(context, name) {
        Some(view) => respond(view),
        None => unknown_service(context, name),
    }
}

fn unknown_service(context: &AdminContext, name: &str) -> Response<Full<Bytes>> {
    let snapshot = context.dataplane.snapshot();
    let defined: Vec<&str> = snapshot.services.iter().map(|s| s.name.as_str()).collect();
    error(
        StatusCode::NOT_FOUND,
        format!(
            "service \"{name}\" is not defined (defined: {}); GET /api/v1/services lists them",
            if defined.is_empty() {
                "none".to_string()
            } else {
                defined.join(", ")
            }
        ),
    )
}

async fn run_command(
    context: &AdminContext,
    name: &str,
    command: Command,
) -> Response<Full<Bytes>> {
    if context.dataplane.snapshot().service(name).is_none() {
        return unknown_service(context, name);
    }
    let Some(control) = &context.control else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process runs no control loop, so there are no rollouts to command",
        );
    };
    let verb = command.as_str();
    let Some(status) = control.status(name) else {
        return error(
            StatusCode::CONFLICT,
            format!(
                "service \"{name}\" has no rollout, so there is nothing to {verb}; \
                 add services[].rollout to the config to run one, or move traffic by hand \
                 with PUT /api/v1/services/{name}/weights"
            ),
        );
    };
    if !command.applies_to(status.phase) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "the rollout of \"{name}\" is already {}{}, so there is nothing to {verb}; \
                 a finished rollout starts again when its spec in the config changes, and \
                 PUT /api/v1/services/{name}/weights moves traffic by hand",
                status.phase.as_str(),
                status
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        );
    }
    if let Some(instance) = control.fleet_instance() {
        let kind = match command {
            Command::Promote => FleetCommandKind::Promote,
            Command::Pause => FleetCommandKind::Pause,
            Command::Resume => FleetCommandKind::Resume,
            Command::Abort => FleetCommandKind::Abort,
        };
        let applied = || {
            control.status(name).is_some_and(|s| match command {
                Command::Promote => s.phase == Phase::Promoted,
                Command::Pause => s.phase == Phase::Paused,
                Command::Resume => s.phase != Phase::Paused,
                Command::Abort => s.phase == Phase::RolledBack,
            })
        };
        let sent = FleetOrder {
            instance,
            kind,
            weights: BTreeMap::new(),
            drill: None,
            what: verb,
        };
        return fleet_command(context, control, name, sent, applied).await;
    }
    match control.command(name, command.event(), now_ms()) {
        Some(after) => {
            tracing::info!(
                service = name,
                command = verb,
                state = after.phase.as_str(),
                canary_weight = after.canary_weight,
                "admin command"
            );
            with_service(context, name, |view| json(StatusCode::OK, &view))
        }
        None => error(
            StatusCode::CONFLICT,
            format!("service \"{name}\" has no rollout, so there is nothing to {verb}"),
        ),
    }
}

/// `/readyz` of a fleet instance that cannot reach etcd: still ready (it serves with the
/// weights in force), and says since when and what that means.
fn readyz_etcd_away(since_ms: u64) -> String {
    format!(
        "ready\netcd unreachable since {}: holding the weights in force, judging this \
         instance's own traffic (a failing canary is rolled back here); the fleet's state \
         applies again once etcd answers\n",
        rfc3339(since_ms)
    )
}

/// What a command given here asks of the fleet's leader.
pub(crate) struct FleetOrder<'a> {
    /// This instance's name.
    pub instance: &'a str,
    pub kind: FleetCommandKind,
    /// `weights`: each named version's weight.
    pub weights: BTreeMap<String, u32>,
    /// `drill`: the faults.
    pub drill: Option<crate::wire::DrillOrder>,
    /// The command as logs name it.
    pub what: &'static str,
}

/// How long a command given to a fleet instance waits for the leader to apply it.
pub(crate) const FLEET_COMMAND_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Fleet mode: the command goes to etcd for the leader to apply fleet-wide; the answer
/// waits (at most [`FLEET_COMMAND_WAIT`]) for this instance to show it applied: 200
/// with the service then, else 202 with the service as it stands (the command stays
/// queued until a leader applies it).
async fn fleet_command(
    context: &AdminContext,
    control: &Control,
    name: &str,
    order: FleetOrder<'_>,
    applied: impl Fn() -> bool,
) -> Response<Full<Bytes>> {
    let what = order.what;
    let id = match submit_order(control, name, order) {
        Ok(id) => id,
        Err(why) => return unsent(why),
    };
    let deadline = tokio::time::Instant::now() + FLEET_COMMAND_WAIT;
    loop {
        if applied() {
            tracing::info!(service = name, command = what, id, "fleet command applied");
            return with_service(context, name, |view| json(StatusCode::OK, &view));
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(
                service = name,
                command = what,
                id,
                "fleet command queued: applied when a leader takes it"
            );
            return with_service(context, name, |view| json(StatusCode::ACCEPTED, &view));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The 503 of a command that cannot be sent to the fleet, and why.
pub(crate) fn unsent(why: String) -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot send the command to the fleet: {why}"),
    )
}

/// Fleet mode: hands `order` over for etcd (the leader applies it fleet-wide); its id,
/// or why it cannot be sent.
pub(crate) fn submit_order(
    control: &Control,
    name: &str,
    order: FleetOrder<'_>,
) -> Result<String, String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let at_ms = now_ms();
    let FleetOrder {
        instance,
        kind,
        weights,
        drill,
        what: _,
    } = order;
    let id = format!(
        "{instance}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let sent = control.submit_fleet_command(FleetCommand {
        format: COMMAND_FORMAT,
        id: id.clone(),
        service: name.to_string(),
        command: kind,
        weights,
        instance: instance.to_string(),
        at: rfc3339(at_ms),
        at_ms,
        reason: None,
        drill,
    });
    sent.map(|()| id)
}

async fn set_weights(context: &AdminContext, name: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let snapshot = context.dataplane.snapshot();
    let Some(service) = snapshot.service(name) else {
        return unknown_service(context, name);
    };
    const EXAMPLE: &str =
        "send a JSON object of version to weight (0 to 100), e.g. {\"stable\": 80, \"canary\": 20}";
    let object: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(object)) => object,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a JSON object; {EXAMPLE}"),
            )
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON ({err}); {EXAMPLE}"),
            )
        }
    };
    if object.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the body names no version; {EXAMPLE}"),
        );
    }
    let defined: Vec<&str> = service.versions.iter().map(|v| v.name.as_str()).collect();
    let mut problems = Vec::new();
    let mut weights: Vec<(&str, u32)> = Vec::with_capacity(object.len());
    for (version, value) in &object {
        if !defined.contains(&version.as_str()) {
            problems.push(format!(
                "\"{version}\": service \"{name}\" has no version \"{version}\" (versions: {})",
                defined.join(", ")
            ));
            continue;
        }
        match value.as_u64().filter(|w| *w <= MAX_API_WEIGHT) {
            Some(w) => weights.push((version.as_str(), w as u32)),
            None => problems.push(format!(
                "\"{version}\": the weight must be an integer from 0 to {MAX_API_WEIGHT}, got {value}"
            )),
        }
    }
    if !problems.is_empty() {
        return error(StatusCode::BAD_REQUEST, problems.join("; "));
    }
    // Fleet mode: the leader sets them fleet-wide, in the rollout's state or, for a
    // service without one, in `P/weights/` (checked here first, so a bad set is
    // refused now).
    if let Some((control, instance)) = context
        .control
        .as_ref()
        .and_then(|c| c.fleet_instance().map(|i| (c, i)))
    {
        // With a rollout: the set every instance will show, or why there is none.
        let completed: Vec<(String, u32)> = match control.status(name) {
            Some(rollout) => {
                let view = context.dataplane.view();
                let in_force = (view.weights_of(name).into_iter().flatten())
                    .map(|(v, w)| (v.to_string(), w))
                    .collect();
                let (baseline, canary) = (&rollout.baseline, &rollout.canary);
                match crate::fleet::split::rollout_weights(&weights, &in_force, baseline, canary) {
                    Ok(set) => set,
                    Err(why) => return error(StatusCode::BAD_REQUEST, why),
                }
            }
            None => weights.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
        };
        let weights: Vec<(&str, u32)> = completed.iter().map(|(v, w)| (v.as_str(), *w)).collect();
        if let Err(err) = context.dataplane.validate_weights(name, &weights) {
            return weights_refused(context, name, err);
        }
        let wanted: BTreeMap<String, u32> =
            weights.iter().map(|(v, w)| (v.to_string(), *w)).collect();
        let applied = || {
            service_view(context, name).is_some_and(|view| {
                wanted.iter().all(|(v, w)| {
                    view.weights
                        .iter()
                        .any(|(version, weight)| version == v && weight == w)
                })
            })
        };
        let order = FleetOrder {
            instance,
            kind: FleetCommandKind::Weights,
            weights: wanted.clone(),
            drill: None,
            what: "weights",
        };
        return fleet_command(context, control, name, order, applied).await;
    }
    // Checked against the weights in force (under the control lock when there is a
    // control loop, so nothing moves them between the check and the change).
    let result = match &context.control {
        Some(control) => control
            .set_weights_manually(name, &weights, now_ms())
            .map(|_| ()),
        None => context
            .dataplane
            .validate_weights(name, &weights)
            .map(|valid| context.dataplane.set_weights(&valid)),
    };
    match result {
        Ok(()) => {
            tracing::info!(service = name, weights = ?weights, "weights set by hand");
            with_service(context, name, |view| json(StatusCode::OK, &view))
        }
        Err(err) => weights_refused(context, name, err),
    }
}

/// Why a set of weights is refused.
fn weights_refused(context: &AdminContext, name: &str, err: WeightsError) -> Response<Full<Bytes>> {
    match err {
        WeightsError::UnknownService(_) => unknown_service(context, name),
        WeightsError::AllZero(_) => error(
            StatusCode::BAD_REQUEST,
            format!(
                "every version of \"{name}\" would have weight 0 and nothing could be served; \
                 give at least one version a weight above 0"
            ),
        ),
        err @ WeightsError::UnknownVersion { .. } => {
            error(StatusCode::BAD_REQUEST, err.to_string())
        }
    }
}

async fn reload(context: &AdminContext) -> Response<Full<Bytes>> {
    let Some(handle) = &context.reload else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process has no reload loop; restart serin to apply a changed config",
        );
    };
    match handle.reload("api").await {
        Some(outcome) if outcome.ok => json(StatusCode::OK, &outcome),
        Some(outcome) => {
            let n = outcome.errors.len();
            json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ReloadRefused {
                    error: format!(
                        "the config was not applied ({n} {}); the previous config keeps serving: \
                         fix the file (`serin check FILE` lists the problems) and reload again",
                        if n == 1 { "error" } else { "errors" }
                    ),
                    reload: outcome,
                },
            )
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reload loop has stopped; restart serin to apply a changed config",
        ),
    }
}

impl RolloutView {
    fn of(status: Option<&RolloutStatus>) -> Self {
        match status {
            Some(s) => Self {
                state: s.phase.as_str().to_string(),
                step: Some(s.step),
                since: Some(rfc3339(s.since_ms)),
                reason: s.reason.clone(),
                baseline: Some(s.baseline.clone()),
                canary: Some(s.canary.clone()),
                steps: Some(s.steps.clone()),
            },
            None => Self {
                state: "none".to_string(),
                step: None,
                since: None,
                reason: None,
                baseline: None,
                canary: None,
                steps: None,
            },
        }
    }
}

/// The view of `name`, `None` if it is not defined.
pub fn service_view(context: &AdminContext, name: &str) -> Option<ServiceView> {
    let view = context.dataplane.view();
    let service = view.snapshot().service(name)?;
    // The weights in force: the config's, or a rollout's or a person's.
    let weights = view
        .weights_of(name)?
        .map(|(v, w)| (v.to_string(), w))
        .collect();
    let (rollout, window_s, versions) = match &context.control {
        Some(control) => {
            let window = control.window_of(name).unwrap_or(DEFAULT_WINDOW);
            let now = now_ms();
            let since = now.saturating_sub(window.as_millis() as u64);
            let span = window
                .min(context.started.elapsed())
                .max(Duration::from_millis(1));
            let numbers = control
                .numbers_since(name, since)
                .map(|(_, numbers)| numbers)
                .unwrap_or_default();
            let versions = service
                .versions
                .iter()
                .map(|v| {
                    let n = numbers.get(&v.name).cloned().unwrap_or_default();
                    let rps = n.requests as f64 / span.as_secs_f64();
                    let view = VersionView {
                        requests: n.requests,
                        errors: n.errors,
                        error_rate: n.error_rate,
                        rps: (rps * 1000.0).round() / 1000.0,
                        p50_ms: n.p50_ms,
                        p95_ms: n.p95_ms,
                        p99_ms: n.p99_ms,
                    };
                    (v.name.clone(), view)
                })
                .collect();
            let rollout = RolloutView::of(control.status(name).as_ref());
            let span_s = (span.as_secs_f64() * 1000.0).round() / 1000.0;
            (rollout, Some(span_s), versions)
        }
        None => (RolloutView::of(None), None, Vec::new()),
    };
    let drill = context
        .control
        .as_ref()
        .and_then(|c| c.drill_report(name))
        .filter(|d| d.state == "running");
    Some(ServiceView {
        name: name.to_string(),
        weights,
        rollout,
        window_s,
        drill,
        versions,
        fleet: None,
    })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(
        status,
        &ApiError {
            error: message.into(),
        },
    )
}

/// 415 for a body that is not declared JSON: what was sent, and a request that works.
fn unsupported_type(
    method: &Method,
    path: &str,
    not_json: guard::NotJson,
) -> Response<Full<Bytes>> {
    let sent = match not_json {
        guard::NotJson::Missing => "no Content-Type".to_string(),
        guard::NotJson::Other(other) => format!("Content-Type {other:?}"),
    };
    let example = if path.trim_end_matches('/').ends_with("/drill") {
        r#"{"errors": "10%", "for": "2m"}"#
    } else {
        r#"{"stable": 80, "canary": 20}"#
    };
    let mut response = error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "{method} {path} takes a JSON body and the request has {sent}; send \
             `Content-Type: application/json` with it, e.g. curl -X {method} \
             -H 'Content-Type: application/json' -d '{example}' URL \
             (the serin CLI sends it)"
        ),
    );
    response
        .headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    response
}

fn unauthorized(challenge: &'static str, message: &str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let (status, mut body) = match serde_json::to_vec_pretty(value) {
        Ok(body) => (status, body),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\": \"cannot encode the response: {err}\"}}").into_bytes(),
        ),
    };
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_table() {
        use Endpoint as E;
        let get = Method::GET;
        let cases: &[(&Method, &str, Result<Endpoint<'_>, NoEndpoint>)] = &[
            (&get, "/healthz", Ok(E::Healthz)),
            (&Method::HEAD, "/readyz", Ok(E::Readyz)),
            (&get, "/metrics", Ok(E::Metrics)),
            (
                &Method::POST,
                "/metrics",
                Err(NoEndpoint::MethodNotAllowed(READ)),
            ),
            (&get, "/api/v1/services", Ok(E::Services)),
            (&get, "/api/v1/services/", Ok(E::Services)),
            (&get, "/api/v1/services/api", Ok(E::Service("api"))),
            (
                &get,
                "/api/v1/services/api/timeline",
                Ok(E::Timeline("api")),
            ),
            (
                &Method::POST,
                "/api/v1/services/api/promote",
                Ok(E::Command("api", Command::Promote)),
            ),
            (
                &Method::POST,
                "/api/v1/services/api/abort",
                Ok(E::Command("api", Command::Abort)),
            ),
            (&get, "/api/v1/services/api/drill", Ok(E::Drill("api"))),
            (
                &Method::POST,
                "/api/v1/services/api/drill",
                Ok(E::Drill("api")),
            ),
            (
                &Method::DELETE,
                "/api/v1/services/api/drill",
                Ok(E::Drill("api")),
            ),
            (
                &Method::PUT,
                "/api/v1/services/api/drill",
                Err(NoEndpoint::MethodNotAllowed("GET, HEAD, POST, DELETE")),
            ),
            (
                &Method::PUT,
                "/api/v1/services/api/weights",
                Ok(E::Weights("api")),
            ),
            (&Method::POST, "/api/v1/reload", Ok(E::Reload)),
            (&get, "/api/v1/config", Ok(E::Config)),
            // Changes are never GET; reads are never POST.
            (
                &get,
                "/api/v1/services/api/promote",
                Err(NoEndpoint::MethodNotAllowed("POST")),
            ),
            (
                &get,
                "/api/v1/reload",
                Err(NoEndpoint::MethodNotAllowed("POST")),
            ),
            (
                &Method::POST,
                "/api/v1/services/api/weights",
                Err(NoEndpoint::MethodNotAllowed("PUT")),
            ),
            (
                &Method::DELETE,
                "/api/v1/services",
                Err(NoEndpoint::MethodNotAllowed(READ)),
            ),
            (
                &Method::POST,
                "/healthz",
                Err(NoEndpoint::MethodNotAllowed(READ)),
            ),
            (&get, "/", Err(NoEndpoint::NotFound)),
            (&get, "/api/v2/services", Err(NoEndpoint::NotFound)),
            (
                &get,
                "/api/v1/services//timeline",
                Err(NoEndpoint::NotFound),
            ),
            (
                &Method::POST,
                "/api/v1/services/api/restart",
                Err(NoEndpoint::NotFound),
            ),
            (
                &get,
                "/api/v1/services/api/timeline/x",
                Err(NoEndpoint::NotFound),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(resolve(method, path), *expected, "{method} {path}");
        }
    }

    fn headers(authorization: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = authorization {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("value"),
            );
        }
        h
    }

    #[test]
    fn a_token_guards_everything_but_the_health_checks() {
        let t = Some("s3cret");
        let api = "/api/v1/services";
        assert_eq!(authorize(None, api, &headers(None)), Ok(()));
        assert_eq!(authorize(t, api, &headers(None)), Err(Refused::NoToken));
        assert_eq!(authorize(t, api, &headers(Some("Bearer s3cret"))), Ok(()));
        assert_eq!(authorize(t, api, &headers(Some("bearer  s3cret "))), Ok(()));
        assert_eq!(
            authorize(t, api, &headers(Some("Bearer s3cre"))),
            Err(Refused::WrongToken)
        );
        assert_eq!(
            authorize(t, api, &headers(Some("Bearer s3cretX"))),
            Err(Refused::WrongToken)
        );
        assert_eq!(
            authorize(t, api, &headers(Some("Basic s3cret"))),
            Err(Refused::NoToken)
        );
        assert_eq!(authorize(t, "/nope", &headers(None)), Err(Refused::NoToken));
        for open in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(authorize(t, open, &headers(None)), Ok(()), "{open}");
        }
    }

    #[test]
    fn the_dashboard_is_served_without_a_token_with_its_content_types() {
        let t = Some("s3cret");
        let expected = [
            ("/ui", "text/html; charset=utf-8"),
            ("/ui/", "text/html; charset=utf-8"),
            ("/ui/ui.css", "text/css; charset=utf-8"),
            ("/ui/ui.js", "text/javascript; charset=utf-8"),
        ];
        for (path, content_type) in expected {
            assert_eq!(authorize(t, path, &headers(None)), Ok(()), "{path}");
            let Ok(Endpoint::Ui(asset)) = resolve(&Method::GET, path) else {
                panic!("{path} is not a dashboard file");
            };
            let response = ui_response(asset);
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
            assert!(!asset.body.is_empty());
        }
        assert_eq!(resolve(&Method::HEAD, "/ui").map(|_| ()), Ok(()));
        assert_eq!(
            resolve(&Method::POST, "/ui"),
            Err(NoEndpoint::MethodNotAllowed(READ))
        );
        // Only the dashboard's own files are open: its data needs the token.
        for guarded in ["/ui/other.js", "/ui/api/v1/services", "/uix", "/"] {
            assert_eq!(
                authorize(t, guarded, &headers(None)),
                Err(Refused::NoToken),
                "{guarded}"
            );
        }
        assert_eq!(
            resolve(&Method::GET, "/ui/other.js"),
            Err(NoEndpoint::NotFound)
        );
        // The page loads its own files only: no CDN, no other origin.
        let page = UI[0].body;
        for asset in &UI[1..] {
            assert!(page.contains(asset.path), "{} is not linked", asset.path);
        }
        for file in &UI {
            assert!(!file.body.contains("http://") || file.path == "/ui/ui.js");
            assert!(!file.body.contains("https://"), "{}", file.path);
        }
    }

    #[test]
    fn finished_rollouts_take_only_the_command_that_finished_them() {
        for command in [
            Command::Promote,
            Command::Pause,
            Command::Resume,
            Command::Abort,
        ] {
            for phase in [Phase::Pending, Phase::Progressing, Phase::Paused] {
                assert!(command.applies_to(phase), "{command:?} {phase:?}");
            }
        }
        assert!(Command::Promote.applies_to(Phase::Promoted));
        assert!(!Command::Promote.applies_to(Phase::RolledBack));
        assert!(Command::Abort.applies_to(Phase::RolledBack));
        assert!(!Command::Abort.applies_to(Phase::Promoted));
        assert!(!Command::Pause.applies_to(Phase::Promoted));
        assert!(!Command::Resume.applies_to(Phase::RolledBack));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_even_without_a_length() {
        let big = Full::new(Bytes::from(vec![b' '; MAX_BODY + 1]));
        let refused = read_body(&HeaderMap::new(), big)
            .await
            .expect_err("too large");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let fits = Full::new(Bytes::from(vec![b' '; MAX_BODY]));
        let body = read_body(&HeaderMap::new(), fits).await.expect("fits");
        assert_eq!(body.len(), MAX_BODY);
    }

    #[test]
    fn service_views_keep_the_order_of_versions_both_ways() {
        let view = ServiceView {
            name: "api".into(),
            weights: vec![("stable".into(), 80), ("canary".into(), 20)],
            rollout: RolloutView::of(None),
            window_s: None,
            versions: Vec::new(),
            drill: None,
            fleet: None,
        };
        let text = serde_json::to_string(&view).expect("encode");
        assert!(
            text.starts_with(r#"{"name":"api","weights":{"stable":80,"canary":20},"rollout":{"state":"none","step":null,"since":null,"reason":null},"window_s":null,"versions":{}}"#),
            "{text}"
        );
        let back: ServiceView = serde_json::from_str(&text).expect("decode");
        assert_eq!(back, view);
    }

    #[test]
    fn a_rollout_names_its_baseline_and_canary() {
        let status = RolloutStatus {
            phase: Phase::Paused,
            step: 1,
            canary_weight: 20,
            since_ms: 0,
            reason: Some("paused by hand".into()),
            baseline: "v1".into(),
            canary: "v2".into(),
            steps: vec![20, 50, 100],
        };
        let text = serde_json::to_string(&RolloutView::of(Some(&status))).expect("encode");
        assert_eq!(
            text,
            r#"{"state":"paused","step":1,"since":"1970-01-01T00:00:00.000Z","reason":"paused by hand","baseline":"v1","canary":"v2","steps":[20,50,100]}"#
        );
    }
}
