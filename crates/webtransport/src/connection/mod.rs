//! [`Connection`]: one QUIC connection carrying HTTP/3 and WebTransport sessions — the
//! Rust form of pywebtransport's `WebTransportConnection`.
//!
//! Connecting lives with the client (`client/connect.rs`); health monitoring in
//! `connection/health.rs`; the snapshot types in [`crate::info`].

mod health;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use webtransport_proto::connection::Role;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use crate::engine::slot::SessionGuard;
use crate::engine::Engine;
use crate::error::{ConnectError, ConnectionError};
use crate::events::ConnectionEvent;

pub use crate::engine::ConfigRef;
pub use crate::events::ConnectionEvent as Event;
pub use crate::info::{
    ConnectionDiagnostics, ConnectionInfo, Issue, ProtocolInfo, SessionInfo, STALE_AFTER,
};
pub use crate::lifecycle::ConnectionState;

#[derive(Debug)]
struct Handle {
    engine: Arc<Engine>,
    close_on_drop: bool,
    /// The session `Connection::connect` opened: it lives as long as the connection
    /// handles do, as in pywebtransport's `create_client`.
    initial: Mutex<Option<Arc<SessionGuard>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.close_on_drop || self.engine.lifecycle().get().is_final() {
            return;
        }
        // Close in the background so that session close capsules queued by the dropped
        // sessions still reach the peer; without a runtime, close at once.
        let engine = self.engine.clone();
        let timeout = engine.config().close_timeout;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move { engine.close_gracefully(0, "", timeout).await });
            }
            Err(_) => engine.abort(Code::H3_NO_ERROR, ""),
        }
    }
}

/// One QUIC connection with HTTP/3 and its WebTransport sessions. Cheap to clone.
///
/// A client connection is closed gracefully when its last handle, including those held by
/// its sessions, is dropped. A server connection lives until the peer closes it, it idles
/// out, or the server shuts down.
#[derive(Debug, Clone)]
pub struct Connection {
    handle: Arc<Handle>,
}

/// A connection that does not keep it open (see [`Connection::downgrade`]).
#[derive(Debug, Clone)]
pub struct WeakConnection {
    handle: std::sync::Weak<Handle>,
}

impl crate::weak_list::Alive for WeakConnection {
    fn alive(&self) -> bool {
        self.handle.strong_count() > 0
    }
}

impl WeakConnection {
    /// The connection, if a handle of it still exists.
    pub fn upgrade(&self) -> Option<Connection> {
        self.handle.upgrade().map(|handle| Connection { handle })
    }
}

impl Connection {
    pub(crate) fn from_engine(engine: Arc<Engine>, close_on_drop: bool) -> Self {
        Connection {
            handle: Arc::new(Handle {
                engine,
                close_on_drop,
                initial: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.handle.engine
    }

    /// Keeps `guard`'s session open as long as this connection's handles exist.
    pub(crate) fn keep_session(&self, guard: Arc<SessionGuard>) {
        *self
            .handle
            .initial
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(guard);
    }

    /// The session opened with the connection, once it is.
    pub(crate) fn initial_session(&self) -> Option<SessionId> {
        self.handle
            .initial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|g| g.id())
    }

    /// A handle that does not keep the connection open.
    pub fn downgrade(&self) -> WeakConnection {
        WeakConnection {
            handle: Arc::downgrade(&self.handle),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConfigRef {
        &self.engine().config().source
    }

    /// Client or server side.
    pub fn role(&self) -> Role {
        self.engine().role()
    }

    /// A unique id for logs.
    pub fn connection_id(&self) -> &str {
        self.engine().id()
    }

    /// The state.
    pub fn state(&self) -> ConnectionState {
        self.engine().lifecycle().get()
    }

    /// Whether QUIC and HTTP/3 are up (the seed's `CONNECTED`, or draining after GOAWAY).
    pub fn is_connected(&self) -> bool {
        matches!(
            self.state(),
            ConnectionState::Connected | ConnectionState::Draining
        )
    }

    /// Whether this side is closing it.
    pub fn is_closing(&self) -> bool {
        self.state() == ConnectionState::Closing
    }

    /// Whether it is closed (cleanly or not).
    pub fn is_closed(&self) -> bool {
        self.state().is_final()
    }

    /// The local address, once connected.
    pub fn local_address(&self) -> Option<std::net::SocketAddr> {
        self.engine().link()?.local_address()
    }

    /// The peer's address, once connected.
    pub fn remote_address(&self) -> Option<std::net::SocketAddr> {
        Some(self.engine().link()?.quic.remote_address())
    }

    /// Why the connection ended (or never connected), once it did.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        let engine = self.engine();
        if let Some(e) = engine.read(|st| st.error().cloned()) {
            if engine
                .link()
                .is_none_or(|l| l.quic.close_reason().is_some())
            {
                return Some(e);
            }
        }
        let link = engine.link()?;
        let quic = link.quic.close_reason()?;
        // QUIC knows first; the driver records the same mapping a moment later.
        Some(
            engine
                .read(|st| st.error().cloned())
                .unwrap_or_else(|| ConnectionError::from_quinn(&quic)),
        )
    }

    /// Statistics and state.
    pub fn info(&self) -> ConnectionInfo {
        let engine = self.engine();
        let link = engine.link();
        let quic = link.map(|l| l.quic.stats());
        let ((established_at, closed_at), error_count) =
            engine.read(|st| (st.timestamps(), st.error_count()));
        let (bytes_sent, bytes_received) = engine.activity().bytes();
        ConnectionInfo {
            connection_id: engine.id().to_owned(),
            state: self.state(),
            local_address: self.local_address(),
            remote_address: self.remote_address(),
            established_at,
            closed_at,
            bytes_sent,
            bytes_received,
            packets_sent: quic.as_ref().map_or(0, |s| s.udp_tx.datagrams),
            packets_received: quic.as_ref().map_or(0, |s| s.udp_rx.datagrams),
            error_count,
            last_activity: established_at.map(|_| engine.activity().last_wall()),
        }
    }

    /// A snapshot of health numbers from QUIC.
    pub fn diagnostics(&self) -> ConnectionDiagnostics {
        let engine = self.engine();
        let (path, in_flight) = match engine.link() {
            Some(l) => (
                Some(l.quic.stats().path),
                crate::congestion::packets_in_flight(&l.quic),
            ),
            None => (None, None),
        };
        let loss = match &path {
            Some(p) if p.sent_packets > 0 => p.lost_packets as f64 / p.sent_packets as f64,
            _ => 0.0,
        };
        ConnectionDiagnostics {
            stats: self.info(),
            rtt: path.as_ref().map_or(Duration::ZERO, |p| p.rtt),
            cwnd: path.as_ref().map_or(0, |p| p.cwnd),
            packets_in_flight: in_flight.unwrap_or(0),
            packet_loss_rate: loss,
            idle: engine.activity().idle(),
        }
    }

    /// The read-only protocol view.
    pub fn protocol(&self) -> ProtocolInfo {
        self.engine().read(|st| st.protocol_info())
    }

    /// Every session open or remembered on this connection, in id order.
    pub fn get_all_sessions(&self) -> Vec<SessionInfo> {
        self.engine().read(|st| {
            st.session_ids()
                .into_iter()
                .filter_map(|id| st.session_info(id))
                .collect()
        })
    }

    /// One session's information.
    pub fn get_session_info(&self, session: SessionId) -> Option<SessionInfo> {
        self.engine().read(|st| st.session_info(session))
    }

    /// The first established session, if any.
    pub fn get_ready_session_id(&self) -> Option<SessionId> {
        self.engine().read(|st| {
            st.session_ids()
                .into_iter()
                .find(|id| st.is_established(*id))
        })
    }

    /// Waits until a session is established and returns its id.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for_ready_session(
        &self,
        timeout: Duration,
    ) -> Result<SessionId, ConnectError> {
        let mut events = self.events();
        let wait = async {
            loop {
                let progress = self.engine().progress().notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if let Some(id) = self.get_ready_session_id() {
                    return Ok(id);
                }
                if let Some(e) = self.engine().failure() {
                    return Err(e);
                }
                if let Some(e) = self.close_reason() {
                    return Err(ConnectError::ConnectionLost(e));
                }
                tokio::select! {
                    _ = progress => {}
                    r = events.recv() => {
                        if let Err(broadcast::error::RecvError::Closed) = r {
                            return Err(ConnectError::ConnectionLost(ConnectionError::LocallyClosed));
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?
    }

    /// Waits until the connection is connected: QUIC's handshake done and our HTTP/3
    /// streams open. Returns at once for a connection that is; fails with why it never
    /// connected (or closed).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), ConnectError> {
        let wait = async {
            let s = self
                .engine()
                .lifecycle()
                .wait_for(|s| s >= ConnectionState::Connected)
                .await;
            if matches!(s, ConnectionState::Connected | ConnectionState::Draining) {
                return Ok(());
            }
            Err(self.engine().failure().unwrap_or_else(|| {
                ConnectError::ConnectionLost(
                    self.close_reason()
                        .unwrap_or(ConnectionError::LocallyClosed),
                )
            }))
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
        self.engine()
            .lifecycle()
            .wait_for(ConnectionState::is_final)
            .await;
        self.close_reason()
            .unwrap_or(ConnectionError::LocallyClosed)
    }

    /// Closes gracefully (pywebtransport's `close`): every open session is closed with
    /// the application `code` and `reason` (close capsules), then, once the peer has them
    /// and has closed its side of the sessions or the config's `close_timeout` passed, the
    /// QUIC connection is closed with H3_NO_ERROR and `reason`. Sessions that were not
    /// open are refused or cancelled. Calling it on a closed connection does nothing.
    ///
    /// # Cancel safety
    /// Cancel safe: the sessions are closed at the first poll; cancelling only skips the
    /// wait.
    pub async fn close(&self, code: u32, reason: &str) {
        let timeout = self.engine().config().close_timeout;
        self.engine().close_gracefully(code, reason, timeout).await;
    }

    /// [`Connection::close`] with its own time limit.
    ///
    /// # Cancel safety
    /// As [`Connection::close`].
    pub async fn close_within(&self, code: u32, reason: &str, timeout: Duration) {
        self.engine().close_gracefully(code, reason, timeout).await;
    }

    /// Closes at once with an HTTP/3 `code` (H3_NO_ERROR is `0x100`) and reason: no
    /// close capsules; sessions on it end with the connection. Does nothing on a closed
    /// connection.
    pub fn abort(&self, code: Code, reason: &str) {
        self.engine().abort(code, reason);
    }

    /// Sends GOAWAY (a server: no new sessions beyond those already requested).
    pub fn goaway(&self) {
        self.engine().update(|st| st.goaway());
    }

    /// Records activity now: resets the server's idle timer
    /// (`ServerConfig::connection_idle_timeout`) and [`ConnectionInfo::last_activity`].
    pub fn record_activity(&self) {
        self.engine().activity().touch();
    }

    /// Time since the connection last did something at the WebTransport layer (stream
    /// bytes, datagrams, sessions, [`Connection::record_activity`]), on tokio's clock.
    pub fn idle_time(&self) -> std::time::Duration {
        self.engine().activity().idle()
    }

    /// A receiver of this connection's events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.engine().events().subscribe()
    }
}
