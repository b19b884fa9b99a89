//! The engine of one connection: the protocol core and everything the application side
//! needs, behind one lock, and the tasks that move bytes for it. Nothing here is public;
//! [`Connection`](crate::Connection), [`Session`](crate::Session) and the streams are
//! handles on an [`Engine`].
//!
//! ```text
//!   handles ──update(|state| ..)──▶ State ──pump──▶ core actions: writes (Writer), resets,
//!                                    ▲              stops; core events: session queues,
//!   driver task: accepts streams     │              wake-ups, ConnectionEvents
//!   (unless an accept waits),        │
//!   writes queued bytes, reads     ──┤
//!   datagrams, fires the timer,      │
//!   sees the close, polls the        │
//!   core-read streams (Readers) ─────┘
//! ```
//!
//! - [`state`]: the state and the commands the handles give it; [`pump`]: carrying out
//!   the core's actions and events.
//! - [`driver`]: the per-connection task; it polls every source and awaits nothing the
//!   peer controls inside its loop.
//! - [`writer`]: per-stream write queues of the HTTP/3 streams the core writes.
//! - [`reader`]: readers of the streams the core reads.
//! - [`accept`]: who takes the peer's new streams from QUIC (a waiting `accept_bi` or
//!   `accept_uni` itself, else the driver).
//! - [`cells`]: the halves of WebTransport streams shared with the application.
//! - [`slot`]: the application side of a session.
//! - [`activity`]: bytes moved and the last activity, lock-free.

mod accept;
pub(crate) mod activity;
pub(crate) mod cells;
mod driver;
mod pump;
pub(crate) mod reader;
pub(crate) mod slot;
pub(crate) mod state;
mod wake;
mod writer;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use webtransport_proto::connection::{self as core, LocalStreams, Role};
use webtransport_proto::headers::ConnectRequest;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use crate::config::{ClientConfig, ServerConfig, TransportConfig};
use crate::error::{ConnectError, ConnectionError};
use crate::events::{ConnectionEvent, EventHub};
use crate::lifecycle::{ConnectionState, Lifecycle, LiveCount};
use crate::quic::quinn_code;

/// Datagrams handed to the core under one lock and one `pump`.
const DATAGRAM_BATCH: usize = 64;

use activity::Activity;
use state::State;
use writer::Writer;

/// Connection ids: unique within the process (quinn's `stable_id` is an address that
/// comes back after a connection is freed).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A connection's id for logs (`c-12`, `s-7`), kept inline: a `String` would cost every
/// connection an allocation for its life.
#[derive(Debug, Clone, Copy)]
struct ConnId {
    /// A tag, a dash and a `u64` in decimal: at most 22 ASCII bytes.
    buf: [u8; 22],
    len: u8,
}

impl ConnId {
    fn new(tag: &str, n: u64) -> Self {
        use std::io::Write;
        let mut buf = [0u8; 22];
        let mut w = &mut buf[..];
        // Fits: the tag is one byte, and a u64 has at most 20 digits.
        let _ = write!(w, "{tag}-{n}");
        let len = 22 - w.len();
        ConnId {
            buf,
            len: len as u8,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("?")
    }
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
    pub fn transport(&self) -> &TransportConfig {
        match self {
            ConfigRef::Client(c) => &c.transport,
            ConfigRef::Server(c) => &c.transport,
        }
    }
}

/// What the engine reads from the configuration, in the form it uses.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// The configuration it came from.
    pub(crate) source: ConfigRef,
    /// How long a client waits for the answer to a CONNECT.
    pub(crate) session_timeout: Duration,
    /// How long opening a stream may wait for credit.
    pub(crate) open_timeout: Duration,
    /// How long a graceful close waits for the peer.
    pub(crate) close_timeout: Duration,
    /// Received datagrams queued per session.
    pub(crate) incoming_datagram_queue: usize,
    /// Close the connection after this long without WebTransport activity.
    pub(crate) idle_timeout: Option<Duration>,
    /// Report this much read payload to flow control at once (see `RecvStream`).
    pub(crate) read_report: u64,
    /// Stream reports left with a session ([`slot::Deferred`]) go to the core once this
    /// much payload arrived or was read, or this many halves of streams are done.
    pub(crate) report_due: (u64, usize),
    /// Bytes one of our HTTP/3 streams may have queued.
    pub(crate) write_backlog: usize,
}

/// The core's configuration and the engine's, made once from a client's or a server's
/// and shared by every connection made with it (a server's accept loop holds one), so a
/// connection carries two pointers instead of ~230 bytes of copies.
#[derive(Debug, Clone)]
pub(crate) struct EngineSetup {
    core: Arc<core::Config>,
    engine: Arc<EngineConfig>,
}

impl EngineSetup {
    pub(crate) fn new(source: ConfigRef) -> Self {
        let (core, engine) = EngineConfig::build(source);
        EngineSetup {
            core: Arc::new(core),
            engine: Arc::new(engine),
        }
    }
}

impl EngineConfig {
    /// The core's configuration and the engine's, from a client's or a server's.
    fn build(source: ConfigRef) -> (core::Config, EngineConfig) {
        let (limits, drafts, session_timeout, open_timeout, close_timeout, idle_timeout) =
            match &source {
                ConfigRef::Client(c) => (
                    &c.limits,
                    c.drafts,
                    c.connect_timeout,
                    c.stream_creation_timeout,
                    c.close_timeout,
                    None,
                ),
                ConfigRef::Server(c) => (
                    &c.limits,
                    c.drafts,
                    core::Config::default().session_timeout,
                    c.stream_creation_timeout,
                    Duration::from_secs(1),
                    c.connection_idle_timeout,
                ),
            };
        let flow = limits.flow_limits();
        let core = core::Config {
            session_timeout,
            max_sessions: limits.max_sessions,
            max_field_section_size: limits.max_field_section_size,
            max_capsule_size: limits.max_capsule_size,
            capsule_framing: limits.capsule_framing,
            max_pending_streams: limits.max_pending_streams,
            max_pending_datagrams: limits.max_pending_datagrams,
            pending_timeout: limits.pending_timeout,
            max_queued_streams: limits.incoming_stream_queue,
            flow,
            drafts,
            ..core::Config::default()
        };
        // An eighth of the data window, so that credit flows back well before the peer
        // runs out, and at most 64 KiB, so a fast reader takes the lock rarely.
        let read_report = (flow.max_data / 8).clamp(1, 64 * 1024);
        let engine = EngineConfig {
            session_timeout,
            open_timeout,
            close_timeout,
            incoming_datagram_queue: limits.incoming_datagram_queue,
            idle_timeout,
            read_report,
            // A quarter of each window (see `Deferred`), and at most 32 stream ends.
            report_due: (2 * read_report, report_ends(&flow)),
            write_backlog: limits.max_write_backlog,
            source,
        };
        (core, engine)
    }
}

/// How many halves of a session's streams may be done before the core is told: a quarter
/// of the smaller stream window, at most 32 (the same without flow control).
fn report_ends(flow: &core::FlowLimits) -> usize {
    let window = [flow.max_streams_bidi, flow.max_streams_uni]
        .into_iter()
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(u64::MAX);
    usize::try_from((window / 4).clamp(1, 32)).unwrap_or(32)
}

/// A session request for a server's application.
#[derive(Debug)]
pub(crate) struct PendingRequest {
    pub(crate) engine: Arc<Engine>,
    pub(crate) session: SessionId,
    pub(crate) request: ConnectRequest,
}

/// The UDP endpoint under a connection, behind an `Arc` that a server's (or a
/// `Client`'s) connections share: a `quinn::Endpoint` is ~90 bytes, which every idle
/// connection would otherwise carry.
#[derive(Debug)]
pub(crate) enum EndpointUse {
    /// The connection's own (a client connecting without a `Client`), or the server's:
    /// a graceful close waits for it to go idle, so that the CONNECTION_CLOSE leaves
    /// before the endpoint is dropped.
    Own(Arc<quinn::Endpoint>),
    /// One endpoint for all connections of a `Client`: it outlives this connection, and
    /// its other connections would keep it from going idle.
    Shared(Arc<quinn::Endpoint>),
}

/// The QUIC connection under an engine, once the handshake is done.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) quic: quinn::Connection,
    endpoint: EndpointUse,
}

impl Link {
    /// The local UDP address, with the IP the peer's packets were sent to where the
    /// platform tells it.
    pub(crate) fn local_address(&self) -> Option<SocketAddr> {
        let (EndpointUse::Own(ep) | EndpointUse::Shared(ep)) = &self.endpoint;
        let addr = ep.local_addr().ok()?;
        Some(match self.quic.local_ip() {
            Some(ip) => SocketAddr::new(ip, addr.port()),
            None => addr,
        })
    }
}

/// One connection's engine. See the module docs.
#[derive(Debug)]
pub(crate) struct Engine {
    id: ConnId,
    role: Role,
    config: Arc<EngineConfig>,
    lifecycle: Lifecycle,
    events: EventHub,
    activity: Activity,
    link: OnceLock<Link>,
    state: Mutex<State>,
    /// Wakes the driver: bytes to write, or the core's timer moved.
    wake: wake::WakeFlag,
    /// Wakes those waiting for a graceful close to complete.
    progress: Notify,
    /// Why connecting failed, before there was a QUIC connection (boxed: most
    /// connections never fail this way, and each would carry the error's room).
    failure: Mutex<Option<Box<ConnectError>>>,
    idle_closing: std::sync::atomic::AtomicBool,
    /// Whether the peer ever asked for a session on this connection (a server's first
    /// CONNECT), for `ServerConfig::handshake_timeout`.
    session_requested: std::sync::atomic::AtomicBool,
    /// A client's connect, waiting for `Connection::start` or `establish`.
    start: Mutex<PendingStart>,
    /// How readers reach the driver's `Readers`.
    readers: Arc<reader::Inbox>,
    /// Application tasks taking the peer's new streams from QUIC (see [`accept`]).
    acceptors: accept::Acceptors,
}

/// A connect not started yet.
#[derive(Default)]
struct PendingStart(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl std::fmt::Debug for PendingStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "waiting" } else { "none" })
    }
}

impl Engine {
    /// A new engine, not linked to QUIC yet. Its core is built at once: our control
    /// stream will be the first unidirectional stream we open (id 2 for a client, 3 for a
    /// server), and what the core writes on it waits for the link.
    pub(crate) fn new(
        role: Role,
        setup: &EngineSetup,
        initial: ConnectionState,
        requests: Option<mpsc::UnboundedSender<PendingRequest>>,
        live: Option<Arc<LiveCount>>,
    ) -> Arc<Engine> {
        let config = setup.engine.clone();
        let local = LocalStreams {
            control: control_stream_id(role),
            encoder: None,
            decoder: None,
        };
        let writer = Writer::new(config.write_backlog);
        let core = core::Connection::new(role, setup.core.clone(), local);
        let tag = match role {
            Role::Client => "c",
            Role::Server => "s",
        };
        Arc::new(Engine {
            id: ConnId::new(tag, NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            role,
            config,
            lifecycle: Lifecycle::new(initial, live),
            events: EventHub::default(),
            activity: Activity::new(),
            link: OnceLock::new(),
            state: Mutex::new(State::new(core, writer, requests)),
            wake: wake::WakeFlag::default(),
            progress: Notify::new(),
            failure: Mutex::new(None),
            idle_closing: std::sync::atomic::AtomicBool::new(false),
            session_requested: std::sync::atomic::AtomicBool::new(false),
            start: Mutex::default(),
            readers: Arc::default(),
            acceptors: accept::Acceptors::default(),
        })
    }

    pub(crate) fn id(&self) -> &str {
        self.id.as_str()
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub(crate) fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    pub(crate) fn events(&self) -> &EventHub {
        &self.events
    }

    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Where readers started outside the driver go (see [`reader::Readers`]).
    pub(crate) fn reader_inbox(&self) -> &Arc<reader::Inbox> {
        &self.readers
    }

    /// The QUIC connection, once linked.
    pub(crate) fn link(&self) -> Option<&Link> {
        self.link.get()
    }

    /// The QUIC connection of an engine that sessions exist on (which are only ever made
    /// on a linked engine).
    pub(crate) fn quic(&self) -> &quinn::Connection {
        &self
            .link
            .get()
            .expect("sessions and streams exist only on a linked connection")
            .quic
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state, then carries out what the core decided.
    pub(crate) fn update<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        st.pump(self);
        r
    }

    /// [`Engine::update`], then `after` under the same lock once the core's actions are
    /// carried out (to drop a registration those actions may still need).
    pub(crate) fn update_then<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut State) -> R,
        after: impl FnOnce(&mut State, &R),
    ) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        st.pump(self);
        after(&mut st, &r);
        r
    }

    /// Hands `first`, a datagram just taken from QUIC, to the core with whatever else has
    /// already arrived (up to [`DATAGRAM_BATCH`]): one lock and one `pump` per burst
    /// instead of per datagram. The core queues each with its session. Called by the
    /// driver and by a session's reader while it waits (`Session::read_datagram`).
    pub(crate) fn take_datagrams(self: &Arc<Self>, quic: &quinn::Connection, first: bytes::Bytes) {
        use futures_util::FutureExt;
        self.update(|st| {
            let now = State::now();
            st.handle_datagram(now, first);
            for _ in 1..DATAGRAM_BATCH {
                match quic.read_datagram().now_or_never() {
                    Some(Ok(d)) => st.handle_datagram(now, d),
                    _ => break,
                }
            }
        });
    }

    /// Reads the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state in a way that gives the core nothing to do (taking from a
    /// queue, building a datagram): no `pump`.
    pub(crate) fn read_mut<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.lock())
    }

    pub(crate) fn wake_driver(&self) {
        self.wake.set();
    }

    pub(crate) fn notify_progress(&self) {
        self.progress.notify_waiters();
    }

    /// The peer asked for a session (a CONNECT request arrived).
    pub(crate) fn session_requested(&self) {
        self.session_requested.store(true, Ordering::SeqCst);
        self.notify_progress();
    }

    /// Waits until the peer has asked for a session on this connection or the connection
    /// has ended. `false` if `deadline` came first: the connection is open and nobody asked
    /// for anything on it.
    pub(crate) async fn first_request_by(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.session_requested.load(Ordering::SeqCst) || self.lifecycle.get().is_final() {
                return true;
            }
            tokio::select! {
                _ = progress => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return self.session_requested.load(Ordering::SeqCst)
                        || self.lifecycle.get().is_final();
                }
            }
        }
    }

    /// Connecting failed before there was a QUIC connection (or during its setup); one
    /// that was linked already is closed.
    pub(crate) fn fail(&self, e: ConnectError) {
        if let Some(link) = self.link() {
            link.quic.close(quinn_code(Code::H3_NO_ERROR), b"");
        }
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(e));
        self.lifecycle.advance(ConnectionState::Failed);
        self.notify_progress();
    }

    /// Keeps a client's connect until it is started.
    pub(crate) fn set_start(&self, connect: Pin<Box<dyn Future<Output = ()> + Send>>) {
        self.start.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(connect);
    }

    /// The connect, the first time it is asked for.
    pub(crate) fn take_start(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        self.start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .take()
    }

    /// Why connecting failed, if it did before the link.
    pub(crate) fn failure(&self) -> Option<ConnectError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .cloned()
    }

    /// Links the engine to its QUIC connection: opens our control stream (the core's
    /// SETTINGS go out on it) and starts the driver. A client links once its handshake is
    /// done; a server as soon as it has the client's ClientHello, with `handshake` the
    /// handshake's completion (0.5-RTT), which the connection then waits for before it
    /// is Connected and reads anything of the client's.
    pub(crate) async fn link_quic(
        self: &Arc<Self>,
        quic: quinn::Connection,
        endpoint: EndpointUse,
        handshake: Option<quinn::ZeroRttAccepted>,
    ) -> Result<(), ConnectionError> {
        // Only the control stream: no QPACK encoder or decoder stream, since neither side
        // uses a dynamic table (RFC 9204 §4.2); each would cost both peers a stream for
        // the connection's life.
        let control = quic
            .open_uni()
            .await
            .map_err(|e| ConnectionError::from_quinn(&e))?;
        let id = u64::from(control.id());
        if id != control_stream_id(self.role) {
            // Nothing opens a stream before the link; quinn numbers streams in order.
            quic.close(quinn_code(Code::H3_INTERNAL_ERROR), b"control stream id");
            return Err(ConnectionError::LocallyClosed);
        }
        if self.link.set(Link { quic, endpoint }).is_err() {
            return Err(ConnectionError::LocallyClosed);
        }
        self.update(|st| st.linked(id, control));
        if let Some(handshake) = handshake {
            // A server linked at 0.5-RTT: its SETTINGS (written above) leave with the
            // flight that completes the client's handshake, so that the client's CONNECT
            // can follow its Finished instead of waiting a round trip more. The driver,
            // which reads the client's streams, starts once the handshake is complete.
            handshake.await;
            if let Some(reason) = self.link().and_then(|l| l.quic.close_reason()) {
                return Err(ConnectionError::from_quinn(&reason));
            }
        }
        self.lifecycle.advance(ConnectionState::Connected);
        self.events.emit(ConnectionEvent::Established);
        tokio::spawn(driver::run(self.clone()));
        Ok(())
    }

    /// Closes gracefully: every open session gets a close capsule with `code` and
    /// `reason`, then (up to `timeout`) the engine waits until the peer has acknowledged
    /// them and closed its CONNECT streams (draft-ietf-webtrans-http3 §6), then closes the
    /// QUIC connection with H3_NO_ERROR and waits for its own endpoint to send that.
    pub(crate) async fn close_gracefully(
        self: &Arc<Self>,
        code: u32,
        reason: &str,
        timeout: Duration,
    ) {
        if self.lifecycle.get().is_final() {
            return;
        }
        self.lifecycle.advance(ConnectionState::Closing);
        let Some(link) = self.link() else {
            self.fail(ConnectError::ConnectionLost(ConnectionError::LocallyClosed));
            return;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        self.update(|st| st.close_all_sessions(code, reason));
        let acks = self.read_mut(|st| st.writer_acks());
        loop {
            let progress = self.progress.notified();
            let ack = acks.acked().notified();
            tokio::pin!(progress, ack);
            progress.as_mut().enable();
            ack.as_mut().enable();
            if link.quic.close_reason().is_some() || self.read(|st| st.close_done()) {
                break;
            }
            tokio::select! {
                _ = progress => {}
                _ = ack => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.update(|st| st.closing_locally());
        link.quic
            .close(quinn_code(Code::H3_NO_ERROR), reason.as_bytes());
        // The driver sees the close at once; when this returns the connection is closed.
        let closed = self.lifecycle.wait_for(ConnectionState::is_final);
        let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
        if let EndpointUse::Own(ep) = &link.endpoint {
            // Our own endpoint: let the CONNECTION_CLOSE go out.
            let _ = tokio::time::timeout_at(deadline, ep.wait_idle()).await;
        }
    }

    /// Closes at once with an HTTP/3 `code`: no close capsules, sessions end with the
    /// connection.
    pub(crate) fn abort(self: &Arc<Self>, code: Code, reason: &str) {
        if self.lifecycle.get().is_final() {
            return;
        }
        self.lifecycle.advance(ConnectionState::Closing);
        self.update(|st| st.closing_locally());
        match self.link() {
            Some(link) => link.quic.close(quinn_code(code), reason.as_bytes()),
            None => self.fail(ConnectError::ConnectionLost(ConnectionError::LocallyClosed)),
        }
    }

    /// Waits until something a graceful close or a waiter cares about happened.
    pub(crate) fn progress(&self) -> &Notify {
        &self.progress
    }

    /// The idle timer fired: close the connection if nothing happened for the timeout.
    fn idle_check(self: &Arc<Self>) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        if self.activity.idle() < timeout || self.idle_closing.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::debug!(conn = %self.id(), ?timeout, "no WebTransport activity: closing");
        let engine = self.clone();
        let close_timeout = self.config.close_timeout;
        tokio::spawn(async move {
            engine
                .close_gracefully(0, "idle timeout", close_timeout)
                .await;
        });
    }
}

/// Our control stream's id: the first unidirectional stream of our side (RFC 9000 §2.1).
fn control_stream_id(role: Role) -> u64 {
    match role {
        Role::Client => 2,
        Role::Server => 3,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A client engine that is not linked to QUIC.
    pub(crate) fn engine() -> Arc<Engine> {
        let config = Arc::new(crate::ClientConfig::default());
        Engine::new(
            Role::Client,
            &EngineSetup::new(ConfigRef::Client(config)),
            ConnectionState::Idle,
            None,
            None,
        )
    }

    #[test]
    fn connection_ids_fit_inline() {
        assert_eq!(ConnId::new("s", 7).as_str(), "s-7");
        assert_eq!(
            ConnId::new("c", u64::MAX).as_str(),
            "c-18446744073709551615"
        );
    }
}
