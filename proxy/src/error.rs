//! Errors of the data plane's setup (binding, compiling a table). Per-request failures
//! are not errors here: they become responses (404, 502, 504) and recorded outcomes.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr} for listener \"{listener}\": {source} (is another process using it? pick another address in listeners[].listen)")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("endpoint \"{endpoint}\" of version \"{version}\" of service \"{service}\" cannot be used as an upstream address")]
    Endpoint {
        service: String,
        version: String,
        endpoint: String,
    },
    #[error("\"{0}\" cannot be used as a header name")]
    HeaderName(String),
    #[error("\"{0}\" cannot be used as an HTTP method")]
    Method(String),
    #[error("listener \"{listener}\": TLS with {file}: {reason}")]
    Tls {
        listener: String,
        file: String,
        reason: String,
    },
    #[error("TLS to the endpoints of version \"{version}\" of service \"{service}\": {reason}")]
    UpstreamTls {
        service: String,
        version: String,
        reason: String,
    },
}
