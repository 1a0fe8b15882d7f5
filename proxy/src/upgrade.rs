//! HTTP/1.1 protocol upgrades (WebSocket and the like) pass through.
//!
//! A request asking for an upgrade is split like any other, once, so its whole
//! connection belongs to the chosen version; it goes upstream on a connection of its
//! own (never pooled) with its `Connection: upgrade` and `Upgrade` headers. When the
//! upstream answers `101 Switching Protocols`, the client's and the upstream's
//! connections are joined and bytes are copied both ways until either side closes.
//!
//! `h2c` is not an upgrade serin passes on: an upstream that switched would take
//! HTTP/2 requests from the client straight over the tunnel, past serin's routing and
//! checks ("h2c smuggling"). Such a request is forwarded as a plain one, without its
//! `Upgrade` header (RFC 9113 has retired the h2c upgrade).

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Request, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocol `req` asks to switch to: HTTP/1.1 with an `Upgrade` header named in
/// `Connection`, other than `h2c`.
pub fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let protocol = req.headers().get(UPGRADE)?;
    let h2c = protocol
        .as_bytes()
        .split(|&b| b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    if h2c {
        return None;
    }
    let asked = req.headers().get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asked.then(|| protocol.clone())
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub fn keep_asking(headers: &mut http::HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// Joins the client's and the upstream's upgraded connections until either closes.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade, version: Box<str>) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(err) => {
                tracing::debug!(%version, error = %err, "the upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => {
                tracing::debug!(%version, bytes_up = up, bytes_down = down, "upgraded connection closed")
            }
            Err(err) => tracing::debug!(%version, error = %err, "upgraded connection ended"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(upgrade: &str) -> Option<HeaderValue> {
        let req = Request::get("/")
            .header(CONNECTION, "Upgrade, HTTP2-Settings")
            .header(UPGRADE, upgrade)
            .body(())
            .expect("request");
        requested(&req)
    }

    #[test]
    fn h2c_is_not_an_upgrade_serin_passes_on() {
        assert_eq!(
            asking("websocket"),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(asking("h2c"), None);
        assert_eq!(asking("H2C"), None);
        assert_eq!(asking("websocket, h2c"), None);
    }
}
