//! Active health checks: `GET path` on every endpoint of the versions that ask for it,
//! each on a new connection, every `interval`. An endpoint that fails `unhealthy_after`
//! checks in a row leaves rotation; one that then passes `healthy_after` in a row comes
//! back. The rules are the endpoint's `crate::rotation::Rotation`, which survives
//! reloads that keep the endpoint and its rules. Checks run on the caller's runtime (the control thread in `serin run`),
//! never on a worker. A version with `tls` is checked over TLS (ALPN `http/1.1`).
//!
//! The same loop purges idle upstream connections: every [`PURGE`], the pooled
//! connections of the current table's endpoints that have been idle for their version's
//! `idle_timeout` are closed (`EndpointPool::purge_idle`). It takes each pool's
//! per-worker lock for as long as a scan of its idle list, once a second.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serin_config::HealthCheck;
use tokio::sync::watch;

use crate::rotation::clock_ms;
use crate::upstream::{connect_tcp, EndpointPool};
use crate::DataPlane;

/// How often the checker looks for checks that are due.
const SCAN: Duration = Duration::from_millis(50);
/// How often idle upstream connections are purged: a connection is closed at most this
/// much after its `idle_timeout`.
pub const PURGE: Duration = Duration::from_secs(1);

/// Runs health checks for the data plane's current table until `stop` turns true.
pub async fn run(dataplane: Arc<DataPlane>, mut stop: watch::Receiver<bool>) {
    let mut scan = tokio::time::interval(SCAN);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purge = tokio::time::interval(PURGE);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = scan.tick() => {}
            _ = purge.tick() => {
                purge_idle(&dataplane.table());
                continue;
            }
            _ = stop.changed() => break,
        }
        let table = dataplane.table();
        let now = clock_ms();
        for service in table.services.iter() {
            for version in service.versions.iter() {
                for endpoint in version.endpoints() {
                    let Some(check) = endpoint.rotation.health.clone() else {
                        continue;
                    };
                    if !endpoint.rotation.due(&check, now) {
                        continue;
                    }
                    let endpoint = endpoint.clone();
                    let names = (service.name.clone(), version.name.clone());
                    tokio::spawn(async move {
                        let passed = probe(&endpoint.pool, &check).await;
                        if let Some(up) = endpoint.rotation.checked(passed.is_ok(), &check) {
                            let (service, version) = names;
                            match (up, passed) {
                                (true, _) => {
                                    tracing::warn!(%service, %version, endpoint = %endpoint.authority(), "endpoint passes its health checks again; back in rotation")
                                }
                                (false, Err(why)) => {
                                    tracing::warn!(%service, %version, endpoint = %endpoint.authority(), failed = check.unhealthy_after, last = %why, "endpoint fails its health checks; out of rotation")
                                }
                                (false, Ok(())) => {}
                            }
                        }
                    });
                }
            }
        }
    }
}

/// Closes the pooled connections of `table`'s endpoints idle for their version's
/// `idle_timeout`.
fn purge_idle(table: &crate::table::Table) {
    for service in table.services.iter() {
        for version in service.versions.iter() {
            for endpoint in version.endpoints() {
                let purged = endpoint.pool.purge_idle(version.idle_timeout);
                if purged > 0 {
                    tracing::debug!(service = %service.name, version = %version.name, endpoint = %endpoint.authority(), purged, "closed idle upstream connections");
                }
            }
        }
    }
}

/// One check: Ok on a 2xx or 3xx within the timeout, else why not.
async fn probe(endpoint: &EndpointPool, check: &HealthCheck) -> Result<(), String> {
    let authority = endpoint.authority.clone();
    let attempt = async {
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(80);
        let stream = connect_tcp(host, port)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut sender = match endpoint.tls() {
            None => handshake(TokioIo::new(stream)).await?,
            Some(tls) => {
                let stream = tls
                    .connectors
                    .http1
                    .connect(tls.server_name.clone(), stream)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                handshake(TokioIo::new(stream)).await?
            }
        };
        let req = Request::get(check.path.as_str())
            .header(http::header::HOST, authority.as_str())
            .header(http::header::USER_AGENT, "serin-health-check")
            .header(http::header::CONNECTION, "close")
            .body(Empty::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        Ok::<StatusCode, String>(response.status())
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Ok(status)) if status.is_success() || status.is_redirection() => Ok(()),
        Ok(Ok(status)) => Err(format!("answered {status}")),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!("no answer within {}", humantime_ms(check.timeout))),
    }
}

/// HTTP/1.1 on a check's connection.
async fn handshake<T>(
    io: TokioIo<T>,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| format!("handshake failed: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

fn humantime_ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}
