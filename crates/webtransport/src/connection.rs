//! [`Connection`]: one QUIC connection carrying HTTP/3 and WebTransport sessions — the
//! Rust form of pywebtransport's `WebTransportConnection`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;
use webtransport_proto::connection::Role;
use webtransport_proto::headers::ConnectRequest;
use webtransport_proto::settings::{Settings, WtDraft};
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use crate::config::{ClientConfig, ServerConfig};
use crate::driver::{quinn_code, SessionStatus, Shared};
use crate::error::{ConnectError, ConnectionError};
use crate::session::{Session, SessionInfo};

/// The lifecycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Created, nothing sent.
    Idle,
    /// QUIC handshake under way.
    Connecting,
    /// QUIC and HTTP/3 are up.
    Connected,
    /// We are closing it.
    Closing,
    /// The peer sent GOAWAY: no new sessions.
    Draining,
    /// Closed cleanly.
    Closed,
    /// Closed by an error.
    Failed,
}

/// Events of a connection, delivered to every [`Connection::events`] receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// QUIC and our HTTP/3 streams are up.
    Established,
    /// The peer's SETTINGS arrived; the WebTransport draft chosen.
    SettingsReceived {
        /// The draft, if the peer offers WebTransport.
        draft: Option<WtDraft>,
    },
    /// A session is open.
    SessionReady {
        /// The session.
        session: SessionId,
    },
    /// A stream was opened.
    StreamOpened {
        /// Its session.
        session: SessionId,
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// Opened by the peer.
        incoming: bool,
    },
    /// A datagram arrived for a session.
    DatagramReceived {
        /// The session.
        session: SessionId,
        /// Payload length.
        len: usize,
    },
    /// The peer asked to wind a session down.
    SessionDraining {
        /// The session.
        session: SessionId,
    },
    /// A session closed.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Application code.
        code: u32,
        /// Reason.
        reason: String,
        /// Closed by the peer.
        remote: bool,
    },
    /// The peer sent GOAWAY.
    GoAway {
        /// The GOAWAY id.
        id: u64,
    },
    /// A protocol error was detected locally.
    Error {
        /// HTTP/3 code.
        code: Code,
        /// What went wrong.
        reason: String,
    },
    /// Health monitoring saw no answer within the RTT timeout.
    HealthCheckFailed {
        /// How long it waited.
        waited: Duration,
    },
    /// The connection closed.
    Closed {
        /// Why.
        error: ConnectionError,
    },
}

/// Statistics and state of a connection (pywebtransport's `ConnectionInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub connection_id: String,
    /// Its state.
    pub state: ConnectionState,
    /// Local address, if known.
    pub local_address: Option<SocketAddr>,
    /// Remote address.
    pub remote_address: Option<SocketAddr>,
    /// When HTTP/3 came up.
    pub established_at: Option<SystemTime>,
    /// When it closed.
    pub closed_at: Option<SystemTime>,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// QUIC packets sent.
    pub packets_sent: u64,
    /// QUIC packets received.
    pub packets_received: u64,
    /// Protocol errors seen.
    pub error_count: u64,
    /// Last activity recorded.
    pub last_activity: Option<SystemTime>,
}

impl ConnectionInfo {
    /// Time from establishment to close (or to now while open).
    pub fn uptime(&self) -> Duration {
        match self.established_at {
            Some(start) => self
                .closed_at
                .unwrap_or_else(SystemTime::now)
                .duration_since(start)
                .unwrap_or_default(),
            None => Duration::ZERO,
        }
    }
}

/// A finding of [`ConnectionDiagnostics::issues`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "issue")]
#[non_exhaustive]
pub enum Issue {
    /// The connection is not connected.
    NotEstablished,
    /// Smoothed RTT above 1 s.
    HighRtt {
        /// RTT seen.
        rtt: Duration,
    },
    /// More than 5 % of packets lost.
    HighLoss {
        /// Loss rate 0..1.
        rate: f64,
    },
    /// No activity for more than the keep-alive interval (or 30 s).
    Stale {
        /// Time since the last activity.
        idle: Duration,
    },
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Issue::NotEstablished => f.write_str("Connection not established"),
            Issue::HighRtt { rtt } => write!(f, "High latency (RTT {rtt:?})"),
            Issue::HighLoss { rate } => write!(f, "High packet loss ({:.1}%)", rate * 100.0),
            Issue::Stale { idle } => write!(f, "Connection appears stale (idle {idle:?})"),
        }
    }
}

/// A snapshot of a connection's health (pywebtransport's `ConnectionDiagnostics`).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionDiagnostics {
    /// Statistics and state.
    pub stats: ConnectionInfo,
    /// Smoothed RTT from QUIC.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Packets sent whose fate is not known yet (sent - lost - acknowledged is not
    /// exposed by quinn; this is the congestion window divided by the path MTU, an upper
    /// bound of what may be in flight).
    pub packets_in_flight: u64,
    /// Lost packets / sent packets.
    pub packet_loss_rate: f64,
}

impl ConnectionDiagnostics {
    /// Problems these numbers suggest.
    pub fn issues(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        if self.stats.state != ConnectionState::Connected {
            out.push(Issue::NotEstablished);
        }
        if self.rtt > Duration::from_secs(1) {
            out.push(Issue::HighRtt { rtt: self.rtt });
        }
        if self.packet_loss_rate > 0.05 {
            out.push(Issue::HighLoss {
                rate: self.packet_loss_rate,
            });
        }
        if let Some(last) = self.stats.last_activity {
            let idle = SystemTime::now().duration_since(last).unwrap_or_default();
            if idle > Duration::from_secs(30) {
                out.push(Issue::Stale { idle });
            }
        }
        out
    }
}

/// The read-only protocol view (pywebtransport's `protocol_handler`).
#[derive(Debug, Clone)]
pub struct ProtocolInfo {
    /// The peer's SETTINGS, once received.
    pub peer_settings: Option<Settings>,
    /// The draft negotiated.
    pub draft: Option<WtDraft>,
    /// Our SETTINGS.
    pub local_settings: Settings,
    /// Sessions open or remembered.
    pub sessions: Vec<SessionId>,
    /// Datagrams the core dropped (no session yet and buffer full, or session gone).
    pub datagrams_dropped: u64,
}

/// The configuration a connection was made with.
#[derive(Debug, Clone)]
pub enum ConfigRef {
    /// A client connection.
    Client(Arc<ClientConfig>),
    /// A server connection.
    Server(Arc<ServerConfig>),
}

impl ConfigRef {
    /// The QUIC transport settings.
    pub fn transport(&self) -> &crate::config::TransportConfig {
        match self {
            ConfigRef::Client(c) => &c.transport,
            ConfigRef::Server(c) => &c.transport,
        }
    }

    /// How long a session request waits for its answer: a client's `connect_timeout`
    /// (a server sends no requests; it gets the same default).
    pub(crate) fn session_timeout(&self) -> Duration {
        match self {
            ConfigRef::Client(c) => c.connect_timeout,
            ConfigRef::Server(_) => {
                webtransport_proto::connection::Config::default().session_timeout
            }
        }
    }
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    close_on_drop: bool,
    /// The session `Connection::connect` opened: it lives as long as the connection
    /// handles do, as in pywebtransport's `create_client`.
    initial: std::sync::Mutex<Option<Arc<crate::session::SessionGuard>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.close_on_drop || self.shared.quic.close_reason().is_some() {
            return;
        }
        // Close in the background so that session close capsules queued by the dropped
        // sessions still reach the peer; without a runtime, close at once.
        let shared = self.shared.clone();
        let timeout = match &shared.config {
            ConfigRef::Client(c) => c.close_timeout,
            ConfigRef::Server(_) => Duration::from_secs(1),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { shared.close_gracefully("", timeout).await });
            }
            Err(_) => shared.quic.close(quinn_code(Code::H3_NO_ERROR), b""),
        }
    }
}

/// One QUIC connection with HTTP/3 and its WebTransport sessions. Cheap to clone.
///
/// A client connection is closed (H3_NO_ERROR) when its last handle, including those held
/// by its sessions, is dropped. A server connection lives until the peer closes it, it
/// idles out, or the server shuts down.
#[derive(Debug, Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// What to open with [`Connection::connect_with`].
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Host name for SNI, certificate checks and `:authority`.
    pub host: String,
    /// UDP port.
    pub port: u16,
    /// Request path (default `/`).
    pub path: String,
    /// Send the QUIC packets here instead of to `host` (SNI and `:authority` stay the
    /// host's).
    pub proxy: Option<SocketAddr>,
    /// Subprotocols offered in `wt-available-protocols`.
    pub protocols: Vec<String>,
    /// Extra request headers (in addition to the config's).
    pub headers: Vec<(String, String)>,
    /// `origin` header.
    pub origin: Option<String>,
}

impl Connection {
    pub(crate) fn from_shared(shared: Arc<Shared>, close_on_drop: bool) -> Self {
        Connection {
            handle: Arc::new(Handle {
                shared,
                close_on_drop,
                initial: std::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Connects to `host:port` and opens a session on `path` (pywebtransport's
    /// `create_client`). The session is then available as
    /// [`Connection::wait_for_ready_session`] / [`Connection::session`].
    pub async fn connect(
        config: &ClientConfig,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<Connection, ConnectError> {
        let opts = ConnectOptions {
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            ..ConnectOptions::default()
        };
        let (conn, session) = Self::connect_with(config, opts).await?;
        *conn
            .handle
            .initial
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(session.guard());
        Ok(conn)
    }

    /// Connects with all options and returns the connection and its first session.
    pub async fn connect_with(
        config: &ClientConfig,
        opts: ConnectOptions,
    ) -> Result<(Connection, Session), ConnectError> {
        crate::client::connect(config, opts, None).await
    }

    /// Opens another session on this (client) connection.
    pub async fn open_session(&self, request: ConnectRequest) -> Result<Session, ConnectError> {
        crate::client::open_session(self, request).await
    }

    /// The configuration.
    pub fn config(&self) -> &ConfigRef {
        &self.shared().config
    }

    /// Client or server side.
    pub fn role(&self) -> Role {
        self.shared().role
    }

    /// A unique id for logs.
    pub fn connection_id(&self) -> &str {
        &self.shared().id
    }

    /// The state.
    pub fn state(&self) -> ConnectionState {
        *self.shared().state.borrow()
    }

    /// Whether QUIC and HTTP/3 are up.
    pub fn is_connected(&self) -> bool {
        matches!(
            self.state(),
            ConnectionState::Connected | ConnectionState::Draining
        )
    }

    /// Whether it is closing.
    pub fn is_closing(&self) -> bool {
        self.state() == ConnectionState::Closing
    }

    /// Whether it is closed (cleanly or not).
    pub fn is_closed(&self) -> bool {
        matches!(
            self.state(),
            ConnectionState::Closed | ConnectionState::Failed
        )
    }

    /// The local address: the UDP socket's, with the IP the peer's packets were sent to
    /// where the platform tells it.
    pub fn local_address(&self) -> Option<SocketAddr> {
        let shared = self.shared();
        let addr = shared.local_addr?;
        Some(match shared.quic.local_ip() {
            Some(ip) => SocketAddr::new(ip, addr.port()),
            None => addr,
        })
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.shared().quic.remote_address()
    }

    /// The error that closed the connection, once closed.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        let shared = self.shared();
        let inner = shared.lock();
        match shared.quic.close_reason() {
            // QUIC knows first; the driver records the same mapping a moment later.
            Some(e) => Some(Shared::close_error(&inner, &e)),
            None => inner.error.clone(),
        }
    }

    /// Statistics and state.
    pub fn info(&self) -> ConnectionInfo {
        let shared = self.shared();
        let stats = shared.quic.stats();
        let inner = shared.lock();
        ConnectionInfo {
            connection_id: shared.id.clone(),
            state: self.state(),
            local_address: None,
            remote_address: Some(shared.quic.remote_address()),
            established_at: inner.established_at,
            closed_at: inner.closed_at,
            bytes_sent: stats.udp_tx.bytes,
            bytes_received: stats.udp_rx.bytes,
            packets_sent: stats.udp_tx.datagrams,
            packets_received: stats.udp_rx.datagrams,
            error_count: inner.error_count,
            last_activity: Some(inner.last_activity),
        }
        .with_local(self.local_address())
    }

    /// A snapshot of health numbers from QUIC.
    pub fn diagnostics(&self) -> ConnectionDiagnostics {
        let stats = self.shared().quic.stats();
        let path = stats.path;
        let loss = if path.sent_packets == 0 {
            0.0
        } else {
            path.lost_packets as f64 / path.sent_packets as f64
        };
        ConnectionDiagnostics {
            stats: self.info(),
            rtt: path.rtt,
            cwnd: path.cwnd,
            packets_in_flight: path.cwnd / u64::from(path.current_mtu.max(1200)),
            packet_loss_rate: loss,
        }
    }

    /// The read-only protocol view.
    pub fn protocol(&self) -> ProtocolInfo {
        let inner = self.shared().lock();
        ProtocolInfo {
            peer_settings: inner.core.peer_settings().cloned(),
            draft: inner.core.draft(),
            local_settings: inner.core.local_settings(),
            sessions: inner.sessions.keys().copied().collect(),
            datagrams_dropped: inner.core.stats().datagrams_dropped,
        }
    }

    /// Every session open or recently closed on this connection.
    pub fn get_all_sessions(&self) -> Vec<SessionInfo> {
        let inner = self.shared().lock();
        let mut v: Vec<SessionInfo> = inner
            .sessions
            .iter()
            .map(|(id, s)| SessionInfo::from_slot(*id, s))
            .collect();
        v.sort_by_key(|s| s.session_id);
        v
    }

    /// One session's information.
    pub fn get_session_info(&self, session: SessionId) -> Option<SessionInfo> {
        let inner = self.shared().lock();
        inner
            .sessions
            .get(&session)
            .map(|s| SessionInfo::from_slot(session, s))
    }

    /// The first established session, if any.
    pub fn get_ready_session_id(&self) -> Option<SessionId> {
        let inner = self.shared().lock();
        let mut ids: Vec<SessionId> = inner
            .sessions
            .iter()
            .filter(|(_, s)| s.is_established())
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        ids.first().copied()
    }

    /// A handle to a session of this connection.
    pub fn session(&self, session: SessionId) -> Option<Session> {
        let mut inner = self.shared().lock();
        let slot = inner.sessions.get_mut(&session)?;
        Some(Session::attach(self.clone(), session, slot))
    }

    /// Waits until a session is established and returns its id.
    pub async fn wait_for_ready_session(
        &self,
        timeout: Duration,
    ) -> Result<SessionId, ConnectError> {
        let mut events = self.events();
        let wait = async {
            loop {
                if let Some(id) = self.get_ready_session_id() {
                    return Ok(id);
                }
                if let Some(e) = self.close_reason() {
                    return Err(ConnectError::ConnectionLost(e));
                }
                match events.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(ConnectError::ConnectionLost(ConnectionError::LocallyClosed))
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    /// Waits until the connection is connected (it is from the moment a `Connection`
    /// exists, unless it already closed).
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ConnectError> {
        let mut rx = self.shared().state.subscribe();
        let wait = async {
            loop {
                let s = *rx.borrow_and_update();
                match s {
                    ConnectionState::Connected | ConnectionState::Draining => return Ok(()),
                    ConnectionState::Closed | ConnectionState::Failed => {
                        return Err(ConnectError::ConnectionLost(
                            self.close_reason()
                                .unwrap_or(ConnectionError::LocallyClosed),
                        ))
                    }
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return Err(ConnectError::ConnectionLost(ConnectionError::LocallyClosed));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    /// Waits until the connection is closed and returns why.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_closed(&self) -> ConnectionError {
        let e = self.shared().quic.closed().await;
        let mut rx = self.shared().state.subscribe();
        // The driver records the reason right after QUIC reports the close.
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            rx.wait_for(|s| matches!(s, ConnectionState::Closed | ConnectionState::Failed)),
        )
        .await;
        self.close_reason()
            .unwrap_or_else(|| ConnectionError::from_quinn(&e))
    }

    /// Closes the connection with an HTTP/3 `code` (H3_NO_ERROR is `0x100`) and reason.
    /// Sessions on it end with a connection error.
    pub fn close(&self, code: Code, reason: &str) {
        let shared = self.shared();
        {
            let mut inner = shared.lock();
            inner.error.get_or_insert(ConnectionError::LocallyClosed);
        }
        shared.state.send_replace(ConnectionState::Closing);
        shared.quic.close(quinn_code(code), reason.as_bytes());
    }

    /// Closes every open session (code 0, `reason`), waits up to `timeout` until the
    /// peer has acknowledged the closes, then closes the connection with H3_NO_ERROR.
    /// Use this rather than [`Connection::close`] when the process is about to exit.
    ///
    /// # Cancel safety
    /// Cancel safe: the sessions are closed at the first poll; cancelling only skips the
    /// wait.
    pub async fn shutdown(&self, reason: &str, timeout: Duration) {
        self.shared().close_gracefully(reason, timeout).await;
    }

    /// Sends GOAWAY (server: no new sessions beyond those already requested).
    pub fn goaway(&self) {
        let shared = self.shared();
        let mut inner = shared.lock();
        inner.core.goaway();
        shared.pump(&mut inner);
    }

    /// Records activity now (for idle bookkeeping in [`ConnectionInfo::last_activity`]).
    pub fn record_activity(&self) {
        self.shared().lock().last_activity = SystemTime::now();
    }

    /// A receiver of this connection's events.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.shared().subscribe()
    }

    /// Checks health every `interval` until the connection closes: it writes a GREASE
    /// frame on the HTTP/3 control stream, which the peer's QUIC stack must acknowledge,
    /// and waits up to `rtt_timeout` for any packet from the peer. A miss is logged and
    /// sent as [`ConnectionEvent::HealthCheckFailed`]. Returns when the connection
    /// closes.
    pub async fn monitor_health(&self, interval: Duration, rtt_timeout: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.shared().quic.closed() => return,
            }
            let shared = self.shared();
            let before = shared.quic.stats().udp_rx.datagrams;
            {
                let mut inner = shared.lock();
                inner.core.send_grease();
                shared.pump(&mut inner);
            }
            let start = tokio::time::Instant::now();
            let mut answered = false;
            while start.elapsed() < rtt_timeout {
                tokio::time::sleep(Duration::from_millis(5).min(rtt_timeout)).await;
                if shared.quic.stats().udp_rx.datagrams > before {
                    answered = true;
                    break;
                }
                if shared.quic.close_reason().is_some() {
                    return;
                }
            }
            if answered {
                self.record_activity();
                tracing::trace!(conn = %shared.id, rtt = ?shared.quic.rtt(), "health check answered");
            } else {
                tracing::warn!(conn = %shared.id, waited = ?rtt_timeout, "health check: no answer from peer");
                shared.emit(ConnectionEvent::HealthCheckFailed {
                    waited: rtt_timeout,
                });
            }
        }
    }

    pub(crate) fn slot_status(&self, session: SessionId) -> Option<SessionStatus> {
        self.shared()
            .lock()
            .sessions
            .get(&session)
            .map(|s| s.status.clone())
    }
}

impl ConnectionInfo {
    fn with_local(mut self, local: Option<SocketAddr>) -> Self {
        self.local_address = local;
        self
    }
}
