//! The client side: connecting, opening sessions, and [`Client`] for connecting by URL.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use webtransport_proto::connection::Role;
use webtransport_proto::headers::{ConnectRequest, UpgradeToken};
use webtransport_proto::qpack::HeaderField;

use crate::config::ClientConfig;
use crate::connection::{ConfigRef, ConnectOptions, Connection};
use crate::driver::{EndpointUse, SessionSlot, SessionStatus, Shared};
use crate::error::{ConnectError, ConnectionError};
use crate::manage::client_stats::{ClientDiagnostics, ClientRecorder, ClientStats};
use crate::session::Session;

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, ConnectError> {
    let host_for_lookup = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs = tokio::net::lookup_host((host_for_lookup, port))
        .await
        .map_err(|e| ConnectError::Resolve {
            host: host.to_owned(),
            why: e.to_string(),
        })?;
    addrs.next().ok_or_else(|| ConnectError::Resolve {
        host: host.to_owned(),
        why: "no addresses".into(),
    })
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What a [`Client`] reuses across its connections, as a quinn application does: the quinn
/// client config (building the TLS config may read the system's root certificates) and
/// one UDP endpoint per address family (a new endpoint zeroes a large receive buffer and
/// starts a task of its own, which was most of a handshake's cost on loopback).
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    quinn_config: Mutex<Option<quinn::ClientConfig>>,
    v4: Mutex<Option<quinn::Endpoint>>,
    v6: Mutex<Option<quinn::Endpoint>>,
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

    fn endpoint(&self, ipv6: bool) -> Result<quinn::Endpoint, ConnectError> {
        let slot = if ipv6 { &self.v6 } else { &self.v4 };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &*slot {
            return Ok(e.clone());
        }
        let e = bind_endpoint(ipv6)?;
        *slot = Some(e.clone());
        Ok(e)
    }
}

fn bind_endpoint(ipv6: bool) -> Result<quinn::Endpoint, ConnectError> {
    let bind: SocketAddr = if ipv6 {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    quinn::Endpoint::client(bind).map_err(|e| ConnectError::Bind(e.to_string()))
}

/// Connects and opens the first session: on `reuse`'s endpoint and config when given (a
/// [`Client`]'s), else on an endpoint of the connection's own.
pub(crate) async fn connect(
    config: &ClientConfig,
    opts: ConnectOptions,
    reuse: Option<&Reuse>,
) -> Result<(Connection, Session), ConnectError> {
    config.validate()?;
    let addr = match opts.proxy {
        Some(p) => p,
        None => resolve(&opts.host, opts.port).await?,
    };
    let (quinn_config, endpoint) = match reuse {
        Some(r) => (
            r.quinn_config(config)?,
            EndpointUse::Shared(r.endpoint(addr.is_ipv6())?),
        ),
        None => (
            crate::tls::quinn_client_config(config)?,
            EndpointUse::Own(bind_endpoint(addr.is_ipv6())?),
        ),
    };
    let (EndpointUse::Own(ep) | EndpointUse::Shared(ep)) = &endpoint;
    let sni = opts
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let timeout = config.connect_timeout;
    let deadline = Instant::now() + timeout;
    let connecting = ep
        .connect_with(quinn_config, addr, &sni)
        .map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let quic = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(ConnectError::Handshake(e.to_string())),
        Err(_) => return Err(ConnectError::Timeout(timeout)),
    };
    let shared = Shared::start(
        quic,
        Some(endpoint),
        Role::Client,
        config.limits.clone(),
        config.stream_creation_timeout,
        ConfigRef::Client(Arc::new(config.clone())),
        None,
    )
    .await?;
    let conn = Connection::from_shared(shared, true);
    let mut headers: Vec<HeaderField> = config
        .headers
        .iter()
        .chain(opts.headers.iter())
        .map(|(k, v)| HeaderField::new(k.clone().into_bytes(), v.clone().into_bytes()))
        .collect();
    if let Some(ua) = &config.user_agent {
        headers.push(HeaderField::new("user-agent", ua.clone().into_bytes()));
    }
    let request = ConnectRequest {
        scheme: "https".into(),
        authority: authority(&opts.host, opts.port),
        path: if opts.path.is_empty() {
            "/".into()
        } else {
            opts.path.clone()
        },
        protocol: UpgradeToken::WebTransport,
        origin: opts.origin.clone(),
        draft02: false,
        available_protocols: opts.protocols.clone(),
        headers,
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let session = tokio::time::timeout(remaining, open_session(&conn, request))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))??;
    Ok((conn, session))
}

/// Sends an extended CONNECT on a new stream of `conn` and waits for the answer.
pub(crate) async fn open_session(
    conn: &Connection,
    request: ConnectRequest,
) -> Result<Session, ConnectError> {
    let shared = conn.shared();
    let (send, recv) = shared
        .quic
        .open_bi()
        .await
        .map_err(|e| ConnectError::ConnectionLost(ConnectionError::from_quinn(&e)))?;
    let id: u64 = send.id().into();
    let _ = shared.cmd.send(crate::driver::Cmd::Register(id, send));
    let session = {
        let mut inner = shared.lock();
        let r = inner.core.open_session(Instant::now(), id, request.clone());
        let sid = match r {
            Ok(sid) => sid,
            Err(e) => {
                let _ = shared.cmd.send(crate::driver::Cmd::Reset {
                    stream: id,
                    code: webtransport_proto::Code::H3_REQUEST_CANCELLED,
                });
                return Err(ConnectError::Protocol(e.to_string()));
            }
        };
        let slot = inner
            .sessions
            .entry(sid)
            .or_insert_with(|| Box::new(SessionSlot::new(Some(request))));
        let session = Session::attach(conn.clone(), sid, slot);
        shared.pump(&mut inner);
        session
    };
    let reader = tokio::spawn(crate::driver::read_stream(shared.clone(), recv, None));
    match session.ready().await {
        Ok(()) => Ok(session),
        Err(SessionStatus::Failed(e)) => Err(e),
        Err(SessionStatus::Lost(e)) => {
            // A server may close the connection as soon as its answer is acknowledged
            // (wtransport 0.7 does after a refusal), so the answer can still sit unread in
            // quinn when the close is noticed. The reader drains what arrived and then
            // ends on the closed connection; an answer it found wins.
            let _ = reader.await;
            match conn.slot_status(session.id()) {
                Some(SessionStatus::Failed(answer)) => Err(answer),
                _ => Err(ConnectError::ConnectionLost(e)),
            }
        }
        Err(SessionStatus::Closed { code, reason, .. }) => Err(ConnectError::Protocol(format!(
            "session closed during setup ({code}: {reason})"
        ))),
        Err(_) => Err(ConnectError::Protocol("session did not open".into())),
    }
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
        let attempt = self.stats.start();
        let (conn, session) = connect(&self.config, opts, Some(&self.reuse)).await?;
        attempt.succeeded(&conn);
        Ok(session)
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
        assert_eq!(authority("::1", 4433), "[::1]:4433");
    }
}
