//! The server side: [`Server`] accepts QUIC connections and hands out each session
//! request as a [`SessionRequest`] to inspect and then accept or reject.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;
use webtransport_proto::connection::Role;
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::qpack::HeaderField;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use crate::config::ServerConfig;
use crate::connection::Connection;
use crate::engine::{ConfigRef, EndpointUse, Engine, EngineSetup, PendingRequest};
use crate::error::{ConnectError, HandshakeError, SessionError};
use crate::lifecycle::{ConnectionState, LiveCount};
use crate::quic::quinn_code;
use crate::session::Session;
use crate::weak_list::WeakList;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Invalid configuration.
    #[error("invalid configuration")]
    Config(#[from] crate::config::ConfigError),
    /// TLS setup failed.
    #[error("TLS setup")]
    Tls(#[from] crate::tls::TlsError),
    /// A socket could not be bound.
    #[error("could not bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A client's request for a session, waiting for the application's answer.
///
/// Dropping it unanswered rejects the session with 404.
#[derive(Debug)]
pub struct SessionRequest {
    conn: Connection,
    session: SessionId,
    request: ConnectRequest,
    answered: bool,
}

impl SessionRequest {
    fn new(p: PendingRequest) -> Self {
        SessionRequest {
            conn: Connection::from_engine(p.engine, false),
            session: p.session,
            request: p.request,
            answered: false,
        }
    }

    /// The request path (with query).
    pub fn path(&self) -> &str {
        &self.request.path
    }

    /// The `:authority`.
    pub fn authority(&self) -> &str {
        &self.request.authority
    }

    /// The `origin` header, if sent.
    pub fn origin(&self) -> Option<&str> {
        self.request.origin.as_deref()
    }

    /// The subprotocols offered (`wt-available-protocols`).
    pub fn protocols(&self) -> &[String] {
        &self.request.available_protocols
    }

    /// The other request headers.
    pub fn headers(&self) -> &[HeaderField] {
        &self.request.headers
    }

    /// The whole request.
    pub fn request(&self) -> &ConnectRequest {
        &self.request
    }

    /// The session id it would get.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// The connection it came on.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.engine().quic().remote_address()
    }

    /// Accepts with a plain 200.
    pub fn accept(self) -> Result<Session, SessionError> {
        self.accept_with(None, Vec::new())
    }

    /// Accepts, choosing a subprotocol (sent as `wt-protocol`) and adding headers.
    pub fn accept_with(
        mut self,
        protocol: Option<String>,
        headers: Vec<(String, String)>,
    ) -> Result<Session, SessionError> {
        self.answered = true;
        let response = ConnectResponse {
            protocol,
            headers: header_fields(headers),
            ..ConnectResponse::new(200)
        };
        let engine = self.conn.engine().clone();
        let config = engine.config();
        engine.update(|st| match st.accept_session(self.session, response) {
            Ok(()) => Ok(()),
            Err(_) => Err(st
                .session_error(self.session, config)
                .unwrap_or(SessionError::NotEstablished)),
        })?;
        Session::attach(self.conn.clone(), self.session).ok_or(SessionError::Unknown)
    }

    /// Rejects with an HTTP status (a 2xx is turned into 400).
    pub fn reject(self, status: u16) {
        self.reject_with(status, Vec::new());
    }

    /// Rejects with an HTTP status (a 2xx is turned into 400) and response headers (a
    /// `retry-after` with a 429, say).
    pub fn reject_with(mut self, status: u16, headers: Vec<(String, String)>) {
        self.answered = true;
        self.do_reject(ConnectResponse {
            headers: header_fields(headers),
            ..ConnectResponse::new(status)
        });
    }

    fn do_reject(&self, response: ConnectResponse) {
        self.conn
            .engine()
            .update(|st| st.reject_session(self.session, response));
    }
}

fn header_fields(headers: Vec<(String, String)>) -> Vec<HeaderField> {
    headers
        .into_iter()
        .map(|(k, v)| HeaderField::new(k.into_bytes(), v.into_bytes()))
        .collect()
}

impl Drop for SessionRequest {
    fn drop(&mut self) {
        if !self.answered {
            self.do_reject(ConnectResponse::new(404));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
        for ep in &self.endpoints {
            ep.close(quinn_code(Code::H3_NO_ERROR), b"server dropped");
        }
    }
}

/// The connections of a server, for `connections()` and shutdown.
type Registry = Arc<Mutex<WeakList<Weak<Engine>>>>;

/// A WebTransport server on one or more UDP sockets.
#[derive(Debug)]
pub struct Server {
    endpoints: Vec<quinn::Endpoint>,
    addrs: Vec<SocketAddr>,
    requests: tokio::sync::Mutex<mpsc::UnboundedReceiver<PendingRequest>>,
    connections: Registry,
    cert_sha256: Option<[u8; 32]>,
    tasks: Mutex<JoinSet<()>>,
    config: Arc<ServerConfig>,
    shut_down: tokio::sync::watch::Sender<bool>,
    counts: Arc<ConnectionCounts>,
}

/// The UDP socket for `addr`, one of the server's addresses `all`. An IPv6 address is
/// IPv6-only when an IPv4 address of the same port is also served: Linux makes `[::]`
/// dual-stack by default, so `0.0.0.0:4433` and `[::]:4433` together would otherwise
/// fail with "address in use". Alone, `[::]` keeps the system's default (dual-stack on
/// Linux), so that one address can serve both families.
fn udp_socket(
    addr: SocketAddr,
    all: &[SocketAddr],
    transport: &crate::config::TransportConfig,
) -> std::io::Result<std::net::UdpSocket> {
    let only_v6 = addr.is_ipv6() && all.iter().any(|a| a.is_ipv4() && a.port() == addr.port());
    crate::socket::bind_with(addr, only_v6, transport)
}

/// Connections a server's endpoints took on and turned away.
#[derive(Debug, Default)]
struct ConnectionCounts {
    accepted: AtomicU64,
    refused: AtomicU64,
    resumed: Arc<crate::tls::ResumptionCount>,
    /// Those that have not ended, for `max_connections`.
    live: Arc<LiveCount>,
}

impl Server {
    /// Binds every address of `config.bind` and starts accepting connections.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let counts = Arc::new(ConnectionCounts::default());
        let (quinn_config, cert_sha256) =
            crate::tls::quinn_server_config_counted(&config, counts.resumed.clone())?;
        let config = Arc::new(config);
        let (tx, rx) = mpsc::unbounded_channel();
        let shut_down = tokio::sync::watch::channel(false).0;
        let connections: Registry = Arc::default();
        let mut endpoints = Vec::new();
        let mut addrs = Vec::new();
        let mut tasks = JoinSet::new();
        for addr in &config.bind {
            let bind_error = |source| ServerError::Bind {
                addr: *addr,
                source,
            };
            let socket = udp_socket(*addr, &config.bind, &config.transport).map_err(bind_error)?;
            let ep = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(quinn_config.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(bind_error)?;
            addrs.push(ep.local_addr().map_err(bind_error)?);
            tasks.spawn(accept_loop(
                Arc::new(ep.clone()),
                config.clone(),
                tx.clone(),
                connections.clone(),
                shut_down.subscribe(),
                counts.clone(),
            ));
            endpoints.push(ep);
        }
        Ok(Server {
            endpoints,
            addrs,
            requests: tokio::sync::Mutex::new(rx),
            connections,
            cert_sha256,
            tasks: Mutex::new(tasks),
            config,
            shut_down,
            counts,
        })
    }

    /// QUIC connections taken on since the server started (including those whose
    /// handshake then failed).
    pub fn connections_accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// QUIC connections refused: over `max_connections`, or during shutdown.
    pub fn connections_refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// TLS handshakes that resumed an earlier session (the client redeemed one of our
    /// session tickets, so no certificate was sent); see
    /// [`ClientConfig::tls_resumption`](crate::ClientConfig::tls_resumption).
    pub fn tls_resumptions(&self) -> u64 {
        self.counts.resumed.get()
    }

    /// The bound addresses (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// SHA-256 of the certificate, when a browser could pin it with
    /// `serverCertificateHashes`.
    pub fn certificate_sha256(&self) -> Option<[u8; 32]> {
        self.cert_sha256
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The next session request from any connection; `None` once shut down.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn accept(&self) -> Option<SessionRequest> {
        let mut shut_down = self.shut_down.subscribe();
        tokio::select! {
            r = async { self.requests.lock().await.recv().await } => r.map(SessionRequest::new),
            _ = shut_down.wait_for(|s| *s) => None,
        }
    }

    /// The connections alive now, including those still in their handshake.
    pub fn connections(&self) -> Vec<Connection> {
        let mut list = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        list.prune()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|e| Connection::from_engine(e, false))
            .collect()
    }

    /// Graceful shutdown: refuses new connections, sends GOAWAY and DRAIN to every
    /// session, waits up to `timeout` for sessions to end, then closes what is left (close
    /// capsules, so that browsers see a close code and reason, not a dropped connection)
    /// and waits for the endpoints to go idle.
    pub async fn shutdown(&self, timeout: Duration) {
        // The accept loops refuse new connections from now on (CONNECTION_REFUSED, so
        // clients fail at once instead of timing out).
        self.shut_down.send_replace(true);
        let conns = self.connections();
        for c in &conns {
            // Requests still in flight get 503 from now on.
            c.engine().update(|st| st.stop_accepting());
            c.goaway();
            for id in c.get_all_sessions().into_iter().map(|s| s.session_id) {
                if let Some(s) = c.session(id) {
                    let _ = s.drain();
                }
            }
        }
        let all_done = async {
            for c in &conns {
                loop {
                    let progress = c.engine().progress().notified();
                    tokio::pin!(progress);
                    progress.as_mut().enable();
                    if c.is_closed() || c.get_ready_session_id().is_none() {
                        break;
                    }
                    progress.await;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, all_done).await;
        let closing = conns
            .iter()
            .map(|c| c.close_within(0, "server shutting down", Duration::from_millis(500)));
        futures_util::future::join_all(closing).await;
        for ep in &self.endpoints {
            let _ = tokio::time::timeout(Duration::from_secs(1), ep.wait_idle()).await;
        }
    }
}

async fn accept_loop(
    ep: Arc<quinn::Endpoint>,
    config: Arc<ServerConfig>,
    tx: mpsc::UnboundedSender<PendingRequest>,
    connections: Registry,
    shut_down: tokio::sync::watch::Receiver<bool>,
    counts: Arc<ConnectionCounts>,
) {
    let setup = EngineSetup::new(ConfigRef::Server(config.clone()));
    while let Some(incoming) = ep.accept().await {
        if *shut_down.borrow() {
            counts.refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let live = counts.live.get();
        if live >= config.max_connections {
            debug!(remote = %incoming.remote_address(), live, "connection limit reached: refused");
            counts.refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        let engine = Engine::new(
            Role::Server,
            &setup,
            ConnectionState::Connecting,
            Some(tx.clone()),
            Some(counts.live.clone()),
        );
        connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::downgrade(&engine));
        let ep = ep.clone();
        let handshake_timeout = config.handshake_timeout;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + handshake_timeout;
            let remote = incoming.remote_address();
            let setup = async {
                let mut connecting = incoming
                    .accept()
                    .map_err(|e| HandshakeError::NotStarted(e.to_string()))?;
                // Linked at 0.5-RTT (always possible for a server): our SETTINGS go with
                // the handshake's flight (see `Engine::link_quic`). Not before the whole
                // ClientHello is in: until then quinn has not applied the client's
                // transport parameters, and a stream opened while it had no stream credit
                // is not woken when they arrive (Chromium's ClientHello takes two
                // packets). The handshake data is ready once the ClientHello is.
                connecting
                    .handshake_data()
                    .await
                    .map_err(|e| HandshakeError::from_quinn(&e))?;
                let (quic, handshake) = match connecting.into_0rtt() {
                    Ok((quic, handshake)) => (quic, Some(handshake)),
                    Err(connecting) => (
                        connecting
                            .await
                            .map_err(|e| HandshakeError::from_quinn(&e))?,
                        None,
                    ),
                };
                engine
                    .link_quic(quic, EndpointUse::Own(ep), handshake)
                    .await
                    .map_err(HandshakeError::from_connection)
            };
            match tokio::time::timeout_at(deadline, setup).await {
                Ok(Ok(())) => {
                    debug!(conn = %engine.id(), %remote, "connection accepted");
                    // The handshake timeout covers the first CONNECT too: a connection whose
                    // path failed after the QUIC handshake, or whose client never asks for a
                    // session, would otherwise be held until the QUIC idle timeout (for
                    // ever, while keep-alives flow). Closed at once (RFC 9114 §5.3): there
                    // is no request to wind down.
                    if !engine.first_request_by(deadline).await {
                        debug!(conn = %engine.id(), %remote, "no session request within the handshake timeout: closing");
                        engine.abort(
                            Code::H3_NO_ERROR,
                            "no session request within the handshake timeout",
                        );
                    }
                }
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "connection setup failed");
                    engine.fail(ConnectError::Handshake(e));
                }
                Err(_) => {
                    debug!(%remote, "connection setup timed out");
                    engine.fail(ConnectError::Timeout(handshake_timeout));
                }
            }
        });
    }
}
