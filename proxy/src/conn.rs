//! What a request knows of the connection it came on ([`ConnInfo`]) and what the
//! connection saw of its bytes ([`NormalisedFraming`]). Made by the server per
//! connection, read by the request path and telemetry.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

/// Marks a request (in its extensions) whose HTTP/1.1 head had framing hyper
/// normalised: two equal Content-Length lines (one kept), or Content-Length with
/// Transfer-Encoding (the Content-Length dropped). It is forwarded as hyper read it,
/// but neither connection is reused after it: the client's closes after the answer,
/// and the upstream connection is not pooled. Set by the server from the bytes the
/// connection read (`crate::idle::FramingScan`).
#[derive(Debug, Clone, Copy)]
pub struct NormalisedFraming;

/// What a request knows of the connection it came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// The peer's IP as a header value, made once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
    /// The peer is in the listener's `trust_forwarded`: its X-Forwarded-* are kept.
    pub trusted: bool,
    /// `https` on a TLS listener, else `http` (X-Forwarded-Proto).
    pub proto: &'static str,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, listener: Arc<str>, trusted: bool) -> Self {
        // An IP address's text is always a valid header value.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            listener,
            peer_ip,
            trusted,
            proto: "http",
        }
    }
}
