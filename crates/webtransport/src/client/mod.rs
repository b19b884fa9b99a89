//! The client side: connecting ([`Connection::connect`](crate::Connection::connect) and
//! friends, in `connect.rs`), [`Client`] for connecting by URL with shared endpoints, and
//! its statistics (`stats.rs`).

mod connect;
pub mod stats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::config::{ClientConfig, TransportConfig};
use crate::connection::Connection;
use crate::error::ConnectError;
use crate::session::Session;
use stats::{ClientDiagnostics, ClientRecorder, ClientStats};

pub use connect::ConnectOptions;

/// What a [`Client`] reuses across its connections, as a quinn application does: the quinn
/// client config (building the TLS config may read the system's root certificates) and
/// one UDP endpoint per address family (a new endpoint zeroes a large receive buffer and
/// starts a task of its own, which was most of a handshake's cost on loopback).
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    quinn_config: Mutex<Option<quinn::ClientConfig>>,
    v4: Mutex<Option<Arc<quinn::Endpoint>>>,
    v6: Mutex<Option<Arc<quinn::Endpoint>>>,
}

impl Reuse {
    fn quinn_config(&self, config: &ClientConfig) -> Result<quinn::ClientConfig, ConnectError> {
        let mut slot = self.quinn_config.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = crate::tls::quinn_client_config(config)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn endpoint(
        &self,
        ipv6: bool,
        transport: &TransportConfig,
    ) -> Result<Arc<quinn::Endpoint>, ConnectError> {
        let slot = if ipv6 { &self.v6 } else { &self.v4 };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &*slot {
            return Ok(e.clone());
        }
        let e = Arc::new(bind_endpoint(ipv6, transport)?);
        *slot = Some(e.clone());
        Ok(e)
    }
}

/// A client endpoint on a socket of its own, for one address family.
fn bind_endpoint(ipv6: bool, transport: &TransportConfig) -> Result<quinn::Endpoint, ConnectError> {
    let bind: SocketAddr = if ipv6 {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let bound = |e| ConnectError::Bind(Arc::new(e));
    let socket = crate::socket::bind(bind, transport).map_err(bound)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bound)
}

/// A parsed `https://host:port/path` WebTransport URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebTransportUrl {
    /// Host (without brackets for IPv6).
    pub host: String,
    /// Port (443 when absent).
    pub port: u16,
    /// Path with query (default `/`).
    pub path: String,
}

impl std::str::FromStr for WebTransportUrl {
    type Err = ConnectError;

    fn from_str(url: &str) -> Result<Self, ConnectError> {
        let bad = |why: &str| ConnectError::InvalidUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("WebTransport URLs start with https://"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if hostport.contains('@') {
            return Err(bad("userinfo is not allowed"));
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let end = h.find(']').ok_or_else(|| bad("unclosed [ in host"))?;
            let port = &h[end + 1..];
            (h[..end].to_owned(), port.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hostport.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None => 443,
        };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        Ok(WebTransportUrl { host, port, path })
    }
}

/// Connects to WebTransport URLs with one configuration, and counts its connects
/// ([`Client::stats`]). Clones share the counters.
#[derive(Debug, Clone)]
pub struct Client {
    config: ClientConfig,
    stats: Arc<ClientRecorder>,
    reuse: Arc<Reuse>,
}

impl Client {
    /// A client with `config` (validated here).
    pub fn new(config: ClientConfig) -> Result<Client, ConnectError> {
        config.validate()?;
        Ok(Client {
            config,
            stats: Arc::default(),
            reuse: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Connect counters since the client was created (pywebtransport's `ClientStats`).
    pub fn stats(&self) -> ClientStats {
        self.stats.snapshot()
    }

    /// The counters and the states of this client's connections that still exist.
    pub fn diagnostics(&self) -> ClientDiagnostics {
        self.stats.diagnostics()
    }

    /// Connects to `url` (`https://host:port/path`) and opens a session.
    pub async fn connect(&self, url: &str) -> Result<Session, ConnectError> {
        self.connect_with(url, ConnectOptions::default()).await
    }

    /// Connects with extra options (subprotocols, headers, origin, proxy); host, port
    /// and path come from `url`.
    pub async fn connect_with(
        &self,
        url: &str,
        mut opts: ConnectOptions,
    ) -> Result<Session, ConnectError> {
        let u: WebTransportUrl = url.parse()?;
        opts.host = u.host;
        opts.port = u.port;
        opts.path = u.path;
        Ok(self.open(opts).await?.1)
    }

    /// Connects to `host:port` with a session on `path` and returns the connection (as
    /// [`Connection::connect`](crate::Connection::connect) does), sharing this client's
    /// endpoint and TLS state: handshakes with a server reached before resume its TLS
    /// session. What pools and the load balancer open their connections with.
    pub async fn open_connection(
        &self,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<Connection, ConnectError> {
        Ok(self.open(ConnectOptions::to(host, port, path)).await?.0)
    }

    async fn open(&self, opts: ConnectOptions) -> Result<(Connection, Session), ConnectError> {
        let attempt = self.stats.start();
        let conn = connect::new_client(&self.config, opts, Some(self.reuse.clone()))?;
        let session = conn.establish().await?;
        attempt.succeeded(&conn);
        Ok((conn, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: WebTransportUrl = "https://localhost:4433/echo?x=1".parse().unwrap();
        assert_eq!(
            u,
            WebTransportUrl {
                host: "localhost".into(),
                port: 4433,
                path: "/echo?x=1".into()
            }
        );
        let u: WebTransportUrl = "https://[::1]:4433".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 4433, "/")
        );
        let u: WebTransportUrl = "https://example.com/a#frag".parse().unwrap();
        assert_eq!((u.port, u.path.as_str()), (443, "/a"));
        for bad in [
            "http://x/",
            "https://:1/",
            "https://h:notaport/",
            "https://u@h/",
        ] {
            assert!(bad.parse::<WebTransportUrl>().is_err(), "{bad}");
        }
        assert_eq!(connect::authority("::1", 4433), "[::1]:4433");
    }
}
