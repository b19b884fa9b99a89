//! The per-connection driver: runs the protocol core of `webtransport-proto` on a quinn
//! connection.
//!
//! One task per connection accepts QUIC streams, writes what the core asks for on the
//! HTTP/3 streams it owns (control, QPACK, CONNECT), and re-arms the core's timer. A
//! small task per incoming stream reads its preamble (and, for the HTTP/3 streams, all
//! of it) into the core; a WebTransport stream is handed to its session as soon as the
//! core recognises it, and its payload never passes through the core again. Datagrams
//! are read by their own task.
//!
//! State shared with the application handles lives in [`Inner`] behind one mutex, which
//! is never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tracing::{debug, info, trace};
use webtransport_proto::connection::{self as core, Action, Event, Feed, LocalStreams, Role};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::stream_header::{BidiStreamHeader, SessionId};
use webtransport_proto::Code;

use crate::arena::DatagramArena;
use crate::config::SessionLimits;
use crate::connection::{Connection, ConnectionEvent, ConnectionState};
use crate::error::{ConnectError, ConnectionError};
use crate::server::SessionRequest;
use crate::session::SessionStats;
use crate::stream::{self, RecvCell, RecvStream, SendCell, SendStream};

/// Connection ids: unique within the process (quinn's `stable_id` is an address that
/// comes back after a connection is freed).
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Closed sessions whose outcome is remembered for `closed()` and `get_session_info`.
const CLOSED_SESSIONS_KEPT: usize = 64;

pub(crate) fn quinn_code(code: Code) -> quinn::VarInt {
    quinn::VarInt::from_u64(code.0).unwrap_or(quinn::VarInt::MAX)
}

/// What the driver task does on the streams it owns.
#[derive(Debug)]
pub(crate) enum Cmd {
    Register(u64, quinn::SendStream),
    Write {
        stream: u64,
        data: Bytes,
        fin: bool,
    },
    Reset {
        stream: u64,
        code: Code,
    },
    /// Answered once every command before it is done and every stream finished so far
    /// has been acknowledged by the peer (or stopped, or the connection ended).
    Flush(oneshot::Sender<()>),
}

/// The driver's command queue: a `VecDeque` behind a mutex rather than tokio's unbounded
/// channel, which allocates a block of 32 commands (1.5 KiB) per connection up front,
/// though a connection sends a handful of commands in its life.
#[derive(Debug, Default)]
pub(crate) struct CmdQueue {
    queue: Mutex<CmdState>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct CmdState {
    cmds: VecDeque<Cmd>,
    /// The driver is gone: commands are refused.
    closed: bool,
}

impl CmdQueue {
    /// Queues a command for the driver; `Err` when the driver has ended.
    pub(crate) fn send(&self, cmd: Cmd) -> Result<(), Cmd> {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.closed {
                return Err(cmd);
            }
            q.cmds.push_back(cmd);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Cmd> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cmds
            .pop_front()
    }

    /// The next command. Cancel safe: a command is taken only when returned.
    async fn recv(&self) -> Cmd {
        loop {
            if let Some(c) = self.pop() {
                return c;
            }
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(c) = self.pop() {
                return c;
            }
            ready.await;
        }
    }

    /// Refuses further commands and drops the queued ones (answering any `Flush`).
    fn close(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.closed = true;
        q.cmds.clear();
    }
}

/// How a session stands.
#[derive(Debug, Clone)]
pub(crate) enum SessionStatus {
    /// Requested, not answered yet.
    Pending,
    /// Open.
    Established,
    /// Closed with this code and reason.
    Closed {
        code: u32,
        reason: String,
        remote: bool,
    },
    /// Never opened.
    Failed(ConnectError),
    /// The connection under it ended.
    Lost(ConnectionError),
}

/// Wake-ups for one session's waiters.
#[derive(Debug, Default)]
pub(crate) struct SessionNotify {
    pub state: Notify,
    pub bi: Notify,
    pub uni: Notify,
    pub datagram: Notify,
}

impl SessionNotify {
    fn all(&self) {
        self.state.notify_waiters();
        self.bi.notify_waiters();
        self.uni.notify_waiters();
        self.datagram.notify_waiters();
    }
}

#[derive(Debug)]
pub(crate) struct SessionSlot {
    pub status: SessionStatus,
    pub notify: Arc<SessionNotify>,
    pub guard: Weak<crate::session::SessionGuard>,
    pub incoming_bi: VecDeque<(SendStream, RecvStream)>,
    pub incoming_uni: VecDeque<RecvStream>,
    pub datagrams: VecDeque<Bytes>,
    pub draining: bool,
    pub sends: Vec<Weak<Mutex<stream::SendInner>>>,
    pub recvs: Vec<Weak<Mutex<stream::RecvInner>>>,
    pub request: Option<ConnectRequest>,
    pub response: Option<ConnectResponse>,
    pub stats: SessionStats,
    pub created_at: SystemTime,
    pub established_at: Option<SystemTime>,
    pub closed_at: Option<SystemTime>,
}

impl SessionSlot {
    pub(crate) fn new(request: Option<ConnectRequest>) -> Self {
        SessionSlot {
            status: SessionStatus::Pending,
            notify: Arc::default(),
            guard: Weak::new(),
            incoming_bi: VecDeque::new(),
            incoming_uni: VecDeque::new(),
            datagrams: VecDeque::new(),
            draining: false,
            sends: Vec::new(),
            recvs: Vec::new(),
            request,
            response: None,
            stats: SessionStats::default(),
            created_at: SystemTime::now(),
            established_at: None,
            closed_at: None,
        }
    }

    pub(crate) fn register_send(&mut self, cell: &SendCell) {
        if self.sends.len() >= 64 && self.sends.len().is_power_of_two() {
            self.sends.retain(|w| w.strong_count() > 0);
        }
        self.sends.push(Arc::downgrade(cell));
    }

    pub(crate) fn register_recv(&mut self, cell: &RecvCell) {
        if self.recvs.len() >= 64 && self.recvs.len().is_power_of_two() {
            self.recvs.retain(|w| w.strong_count() > 0);
        }
        self.recvs.push(Arc::downgrade(cell));
    }

    /// Ends the session and wakes its waiters. When the session closed (rather than its
    /// connection), every stream of it still open is reset or stopped with
    /// WT_SESSION_GONE (draft-ietf-webtrans-http3 §6); when the connection went, the
    /// streams fail with the connection's error on their own.
    fn end(&mut self, status: SessionStatus) {
        let session_closed = matches!(status, SessionStatus::Closed { .. });
        self.status = status;
        self.closed_at = Some(SystemTime::now());
        if !session_closed {
            self.sends.clear();
            self.recvs.clear();
        }
        for w in self.sends.drain(..) {
            if let Some(cell) = w.upgrade() {
                stream::send_gone(&cell);
            }
        }
        for w in self.recvs.drain(..) {
            if let Some(cell) = w.upgrade() {
                stream::recv_gone(&cell);
            }
        }
        self.incoming_bi.clear();
        self.incoming_uni.clear();
        self.datagrams.clear();
        self.notify.all();
    }

    pub(crate) fn is_established(&self) -> bool {
        matches!(self.status, SessionStatus::Established)
    }
}

/// The hasher of [`Inner::sessions`]: every stream operation and datagram looks its
/// session up there, and SipHash was 7 % of a datagram's cost. A multiply-and-fold is
/// enough here: the map holds at most `limits.max_sessions` open sessions plus
/// [`CLOSED_SESSIONS_KEPT`] closed ones, so a peer choosing colliding ids gains nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SessionIdHash;

impl std::hash::BuildHasher for SessionIdHash {
    type Hasher = SessionIdHasher;

    fn build_hasher(&self) -> SessionIdHasher {
        SessionIdHasher(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct SessionIdHasher(u64);

impl std::hash::Hasher for SessionIdHasher {
    fn finish(&self) -> u64 {
        // Session ids are multiples of 4: fold the high bits of the product down so the
        // low bits that pick a bucket vary.
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// Mutable state of one connection.
#[derive(Debug)]
pub(crate) struct Inner {
    pub core: core::Connection,
    /// Boxed: a slot is ~540 bytes, and a map's first insert allocates four buckets.
    pub sessions: HashMap<SessionId, Box<SessionSlot>, SessionIdHash>,
    closed_order: VecDeque<SessionId>,
    /// WebTransport streams the core recognised, waiting for their session (or refusal).
    detached: HashMap<u64, (quinn::RecvStream, Option<quinn::SendStream>)>,
    /// Core-read streams that may be stopped later.
    stop_signals: HashMap<u64, oneshot::Sender<Code>>,
    /// A STOP_SENDING for the stream being fed right now.
    feeding_stop: Option<(u64, Code)>,
    pub requests: Option<mpsc::UnboundedSender<SessionRequest>>,
    pub error: Option<ConnectionError>,
    pub established_at: Option<SystemTime>,
    pub closed_at: Option<SystemTime>,
    pub last_activity: SystemTime,
    pub error_count: u64,
    pub datagrams_dropped: u64,
    /// The core deadline the driver task sleeps until (`None`: no timer).
    armed: Option<Instant>,
    /// Where outgoing datagrams are built.
    datagram_arena: DatagramArena,
}

impl Inner {
    /// The QUIC datagram for `payload` in `session`, built in the connection's
    /// [`DatagramArena`].
    pub fn encode_datagram(
        &mut self,
        session: SessionId,
        payload: &[u8],
    ) -> Result<Bytes, core::SessionError> {
        let len = webtransport_proto::datagram::header_len(session) + payload.len();
        let room = self.datagram_arena.room(len);
        self.core.encode_datagram_into(session, payload, room)?;
        Ok(self.datagram_arena.take())
    }
}

/// The UDP endpoint under a connection.
#[derive(Debug)]
pub(crate) enum EndpointUse {
    /// The connection's own (a client connecting without a `Client`), or the server's:
    /// a graceful close waits for it to go idle, so that the CONNECTION_CLOSE leaves
    /// before the endpoint is dropped.
    Own(quinn::Endpoint),
    /// One endpoint for all connections of a `Client`: it outlives this connection, and
    /// its other connections would keep it from going idle.
    Shared(quinn::Endpoint),
}

/// Capacity of a connection's event channel, made when the first receiver subscribes.
const EVENT_QUEUE: usize = 256;

/// Everything one connection's handles and tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub quic: quinn::Connection,
    /// The endpoint, kept alive with the connection.
    pub _endpoint: Option<quinn::Endpoint>,
    /// Whether a graceful close waits for `_endpoint` to go idle (see [`EndpointUse`]).
    owns_endpoint: bool,
    /// The local UDP address.
    pub local_addr: Option<std::net::SocketAddr>,
    pub role: Role,
    pub id: String,
    pub inner: Mutex<Inner>,
    pub cmd: CmdQueue,
    pub timer: Notify,
    pub state: watch::Sender<ConnectionState>,
    /// Made on the first `subscribe`: its 256 slots are most of an idle connection's
    /// memory otherwise, and events sent before anyone subscribes reach nobody anyway.
    events: std::sync::OnceLock<broadcast::Sender<ConnectionEvent>>,
    pub limits: SessionLimits,
    pub open_timeout: std::time::Duration,
    pub config: crate::connection::ConfigRef,
}

/// The core's settings for a connection: the session limits, and how long a client
/// waits for the answer to its CONNECT (`session_timeout`).
pub(crate) fn proto_config(
    limits: &SessionLimits,
    session_timeout: std::time::Duration,
) -> core::Config {
    core::Config {
        session_timeout,
        max_sessions: limits.max_sessions,
        max_field_section_size: limits.max_field_section_size,
        max_capsule_size: limits.max_capsule_size,
        unframed_capsules: limits.unframed_capsules,
        max_pending_streams: limits.max_pending_streams,
        max_pending_datagrams: limits.max_pending_datagrams,
        ..core::Config::default()
    }
}

impl Shared {
    /// Opens our three HTTP/3 streams, builds the core and starts the driver.
    pub(crate) async fn start(
        quic: quinn::Connection,
        endpoint: Option<EndpointUse>,
        role: Role,
        limits: SessionLimits,
        open_timeout: std::time::Duration,
        config: crate::connection::ConfigRef,
        requests: Option<mpsc::UnboundedSender<SessionRequest>>,
    ) -> Result<Arc<Shared>, ConnectionError> {
        let lost = |e: quinn::ConnectionError| ConnectionError::from_quinn(&e);
        // Only the control stream: no QPACK encoder or decoder stream, since neither side
        // uses a dynamic table (RFC 9204 §4.2); each would cost both peers a stream, and
        // the peer a reader, for the connection's life.
        let control = quic.open_uni().await.map_err(lost)?;
        let local = LocalStreams {
            control: control.id().into(),
            encoder: None,
            decoder: None,
        };
        let core =
            core::Connection::new(role, proto_config(&limits, config.session_timeout()), local);
        let datagram_send_buffer = config.transport().datagram_send_buffer;
        let (state, _) = watch::channel(ConnectionState::Connected);
        let now = SystemTime::now();
        let (endpoint, owns_endpoint) = match endpoint {
            Some(EndpointUse::Own(e)) => (Some(e), true),
            Some(EndpointUse::Shared(e)) => (Some(e), false),
            None => (None, false),
        };
        let shared = Arc::new(Shared {
            id: format!(
                "{}-{}",
                role_tag(role),
                NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            local_addr: endpoint.as_ref().and_then(|e| e.local_addr().ok()),
            quic,
            _endpoint: endpoint,
            owns_endpoint,
            role,
            inner: Mutex::new(Inner {
                core,
                sessions: HashMap::default(),
                closed_order: VecDeque::new(),
                detached: HashMap::new(),
                stop_signals: HashMap::new(),
                feeding_stop: None,
                requests,
                error: None,
                established_at: Some(now),
                closed_at: None,
                last_activity: now,
                error_count: 0,
                datagrams_dropped: 0,
                datagram_arena: DatagramArena::new(datagram_send_buffer),
                armed: None,
            }),
            cmd: CmdQueue::default(),
            timer: Notify::new(),
            state,
            events: std::sync::OnceLock::new(),
            limits,
            open_timeout,
            config,
        });
        let mut sends = HashMap::new();
        sends.insert(u64::from(control.id()), control);
        {
            let mut inner = shared.lock();
            shared.pump(&mut inner);
        }
        shared.emit(ConnectionEvent::Established);
        tokio::spawn(run(shared.clone(), sends));
        tokio::spawn(read_datagrams(shared.clone()));
        Ok(shared)
    }

    /// Waits until everything queued for the HTTP/3 streams is written and every stream
    /// finished so far (a session's CONNECT stream after its close capsule, say) is
    /// acknowledged by the peer, or `timeout` passes.
    pub(crate) async fn flush(&self, timeout: std::time::Duration) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }

    /// Closes every open session with `reason`, waits for the closes to be delivered (up
    /// to `timeout`), then closes the QUIC connection with H3_NO_ERROR.
    pub(crate) async fn close_gracefully(
        self: &Arc<Self>,
        reason: &str,
        timeout: std::time::Duration,
    ) {
        {
            let mut inner = self.lock();
            let open: Vec<SessionId> = inner
                .sessions
                .iter()
                .filter(|(_, s)| s.is_established())
                .map(|(id, _)| *id)
                .collect();
            for id in open {
                let _ = inner.core.close_session(id, 0, reason);
            }
            self.pump(&mut inner);
        }
        self.flush(timeout).await;
        {
            let mut inner = self.lock();
            inner.error.get_or_insert(ConnectionError::LocallyClosed);
        }
        self.state.send_replace(ConnectionState::Closing);
        self.quic
            .close(quinn_code(Code::H3_NO_ERROR), reason.as_bytes());
        if let (Some(ep), true) = (&self._endpoint, self.owns_endpoint) {
            // Our own endpoint: let the CONNECTION_CLOSE go out.
            let _ = tokio::time::timeout(timeout, ep.wait_idle()).await;
        }
    }

    /// Sends an event to the receivers of [`Shared::subscribe`], if there are any.
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        if let Some(tx) = self.events.get() {
            let _ = tx.send(event);
        }
    }

    /// Whether anyone receives events (to skip building costly ones).
    pub(crate) fn has_subscribers(&self) -> bool {
        self.events.get().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// A receiver of the events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events
            .get_or_init(|| broadcast::channel(EVENT_QUEUE).0)
            .subscribe()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out the core's actions and delivers its events. Call after every input or
    /// command given to the core.
    pub(crate) fn pump(self: &Arc<Self>, inner: &mut Inner) {
        while let Some(a) = inner.core.poll_action() {
            match a {
                Action::Write { stream, data, fin } => {
                    let _ = self.cmd.send(Cmd::Write { stream, data, fin });
                }
                Action::Reset { stream, code } => {
                    if let Some((_, send)) = inner.detached.get_mut(&stream) {
                        if let Some(s) = send.as_mut() {
                            let _ = s.reset(quinn_code(code));
                        }
                        inner.detached.remove(&stream);
                    } else {
                        let _ = self.cmd.send(Cmd::Reset { stream, code });
                    }
                }
                Action::StopSending { stream, code } => {
                    if let Some((recv, send)) = inner.detached.get_mut(&stream) {
                        let _ = recv.stop(quinn_code(code));
                        if send.is_none() {
                            inner.detached.remove(&stream);
                        }
                    } else if let Some(tx) = inner.stop_signals.remove(&stream) {
                        let _ = tx.send(code);
                    } else {
                        inner.feeding_stop = Some((stream, code));
                    }
                }
                Action::CloseConnection { code, reason } => {
                    debug!(conn = %self.id, %code, %reason, "closing connection on protocol error");
                    self.quic.close(quinn_code(code), reason.as_bytes());
                    inner.error_count += 1;
                    inner.error.get_or_insert(ConnectionError::Protocol {
                        code,
                        reason,
                        remote: false,
                    });
                }
            }
        }
        while let Some(e) = inner.core.poll_event() {
            self.on_event(inner, e);
        }
        // Wake the driver only when the core's timer moved: most inputs (stream data,
        // datagrams) leave it alone, and a wake-up per datagram costs the driver a lock
        // and a rebuilt `select!`.
        if inner.core.poll_timeout() != inner.armed {
            self.timer.notify_one();
        }
    }

    fn on_event(self: &Arc<Self>, inner: &mut Inner, event: Event) {
        match event {
            Event::PeerSettings { settings, draft } => {
                info!(conn = %self.id, role = ?self.role, %settings, draft = ?draft.map(|d| d.name()), "peer SETTINGS; WebTransport draft chosen");
                self.emit(ConnectionEvent::SettingsReceived { draft });
            }
            Event::SessionRequested { session, request } => {
                debug!(conn = %self.id, %session, path = %request.path, "session requested");
                inner.sessions.insert(
                    session,
                    Box::new(SessionSlot::new(Some(ConnectRequest::clone(&request)))),
                );
                let req = SessionRequest::new(
                    Connection::from_shared(self.clone(), false),
                    session,
                    *request,
                );
                match &inner.requests {
                    Some(tx) => {
                        if let Err(mpsc::error::SendError(req)) = tx.send(req) {
                            // Nobody accepts sessions any more (server shut down).
                            req.refuse_locked(inner, 503);
                        }
                    }
                    None => req.refuse_locked(inner, 404),
                }
            }
            Event::SessionEstablished { session, response } => {
                let slot = inner
                    .sessions
                    .entry(session)
                    .or_insert_with(|| Box::new(SessionSlot::new(None)));
                slot.status = SessionStatus::Established;
                slot.response = Some(response);
                slot.established_at = Some(SystemTime::now());
                slot.notify.state.notify_waiters();
                self.emit(ConnectionEvent::SessionReady { session });
            }
            Event::SessionRejected {
                session, reason, ..
            } => {
                debug!(conn = %self.id, %session, ?reason, "session rejected");
                // On an HTTP/3 connection error the core refuses pending requests with
                // GoingAway; `pump` has already recorded that error (actions run before
                // events), and it is the real reason, not a GOAWAY.
                let error = match (&reason, &inner.error) {
                    (core::RejectReason::GoingAway, Some(e)) => {
                        ConnectError::ConnectionLost(e.clone())
                    }
                    _ => ConnectError::from_reject(reason, self.config.session_timeout()),
                };
                if let Some(slot) = inner.sessions.get_mut(&session) {
                    slot.end(SessionStatus::Failed(error));
                }
                self.retire(inner, session);
            }
            Event::IncomingStream {
                session,
                stream,
                bidi,
                prefix,
            } => {
                let Some((mut recv, send)) = inner.detached.remove(&stream) else {
                    return;
                };
                let Some(slot) = inner.sessions.get_mut(&session) else {
                    return;
                };
                let queued = if bidi {
                    slot.incoming_bi.len()
                } else {
                    slot.incoming_uni.len()
                };
                if queued >= self.limits.incoming_stream_queue.max(1) {
                    // The application is not accepting: refuse rather than queue without
                    // bound (limits.incoming_stream_queue).
                    debug!(conn = %self.id, %session, stream, queued, "incoming stream queue full: stream refused");
                    let code = quinn_code(Code::WT_BUFFERED_STREAM_REJECTED);
                    let _ = recv.stop(code);
                    if let Some(mut send) = send {
                        let _ = send.reset(code);
                    }
                    return;
                }
                let (recv, rcell) = RecvStream::new(recv, prefix, session);
                slot.register_recv(&rcell);
                if bidi {
                    let Some(send) = send else { return };
                    let (send, scell) = SendStream::new(send, session);
                    slot.register_send(&scell);
                    slot.incoming_bi.push_back((send, recv));
                    slot.stats.streams_accepted_bi += 1;
                    slot.notify.bi.notify_waiters();
                } else {
                    slot.incoming_uni.push_back(recv);
                    slot.stats.streams_accepted_uni += 1;
                    slot.notify.uni.notify_waiters();
                }
                self.emit(ConnectionEvent::StreamOpened {
                    session,
                    bidi,
                    incoming: true,
                });
            }
            Event::Datagram { session, payload } => {
                if let Some(slot) = inner.sessions.get_mut(&session) {
                    if slot.datagrams.len() >= self.limits.incoming_datagram_queue.max(1) {
                        // The application is not keeping up: drop the oldest.
                        slot.datagrams.pop_front();
                        slot.stats.datagrams_dropped += 1;
                        inner.datagrams_dropped += 1;
                    }
                    slot.stats.datagrams_received += 1;
                    let len = payload.len();
                    slot.datagrams.push_back(payload);
                    slot.notify.datagram.notify_waiters();
                    if self.has_subscribers() {
                        self.emit(ConnectionEvent::DatagramReceived { session, len });
                    }
                }
            }
            Event::SessionDraining { session } => {
                if let Some(slot) = inner.sessions.get_mut(&session) {
                    slot.draining = true;
                    slot.notify.state.notify_waiters();
                }
                self.emit(ConnectionEvent::SessionDraining { session });
            }
            Event::SessionClosed {
                session,
                code,
                reason,
                remote,
            } => {
                debug!(conn = %self.id, %session, code, %reason, remote, "session closed");
                if let Some(slot) = inner.sessions.get_mut(&session) {
                    slot.end(SessionStatus::Closed {
                        code,
                        reason: reason.clone(),
                        remote,
                    });
                }
                self.retire(inner, session);
                self.emit(ConnectionEvent::SessionClosed {
                    session,
                    code,
                    reason,
                    remote,
                });
            }
            Event::GoAway { id } => {
                debug!(conn = %self.id, id, "GOAWAY received");
                self.state.send_replace(ConnectionState::Draining);
                self.emit(ConnectionEvent::GoAway { id });
            }
            Event::ConnectionError { code, reason } => {
                self.emit(ConnectionEvent::Error { code, reason });
            }
            _ => {}
        }
    }

    /// Remembers a finished session for a while, forgetting the oldest.
    fn retire(&self, inner: &mut Inner, session: SessionId) {
        inner.closed_order.push_back(session);
        while inner.closed_order.len() > CLOSED_SESSIONS_KEPT {
            if let Some(old) = inner.closed_order.pop_front() {
                inner.sessions.remove(&old);
            }
        }
    }

    /// The QUIC connection ended: fail everything still waiting.
    /// Why the connection ended: our own recorded reason if we closed it or saw a
    /// protocol error, else what QUIC reports (a peer's non-zero HTTP/3 code is a
    /// protocol error the peer detected).
    pub(crate) fn close_error(inner: &Inner, err: &quinn::ConnectionError) -> ConnectionError {
        match (&inner.error, ConnectionError::from_quinn(err)) {
            (Some(local), _) => local.clone(),
            (None, ConnectionError::ApplicationClosed { code, reason })
                if code != Code::H3_NO_ERROR =>
            {
                ConnectionError::Protocol {
                    code,
                    reason,
                    remote: true,
                }
            }
            (None, e) => e,
        }
    }

    fn on_closed(self: &Arc<Self>, err: &quinn::ConnectionError) {
        let mut inner = self.lock();
        let mapped = Self::close_error(&inner, err);
        debug!(conn = %self.id, error = %mapped, "connection closed");
        inner.error = Some(mapped.clone());
        inner.closed_at = Some(SystemTime::now());
        let ids: Vec<SessionId> = inner.sessions.keys().copied().collect();
        for id in ids {
            if let Some(slot) = inner.sessions.get_mut(&id) {
                if matches!(
                    slot.status,
                    SessionStatus::Pending | SessionStatus::Established
                ) {
                    slot.end(SessionStatus::Lost(mapped.clone()));
                }
            }
        }
        inner.detached.clear();
        inner.stop_signals.clear();
        let failed = matches!(
            mapped,
            ConnectionError::Protocol { .. }
                | ConnectionError::Transport(_)
                | ConnectionError::TimedOut
                | ConnectionError::Reset
        );
        self.state.send_replace(if failed {
            ConnectionState::Failed
        } else {
            ConnectionState::Closed
        });
        self.emit(ConnectionEvent::Closed { error: mapped });
    }
}

fn role_tag(role: Role) -> &'static str {
    match role {
        Role::Client => "c",
        Role::Server => "s",
    }
}

/// The driver task.
async fn run(shared: Arc<Shared>, mut sends: HashMap<u64, quinn::SendStream>) {
    let mut finishing = tokio::task::JoinSet::new();
    loop {
        // Forget acknowledged streams as we go.
        while finishing.try_join_next().is_some() {}
        let deadline = {
            let mut inner = shared.lock();
            let d = inner.core.poll_timeout();
            inner.armed = d;
            d
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = shared.cmd.recv() => match cmd {
                Cmd::Register(id, s) => {
                    sends.insert(id, s);
                }
                Cmd::Write { stream, data, fin } => {
                    let Some(s) = sends.get_mut(&stream) else {
                        trace!(stream, "write for a stream no longer open");
                        continue;
                    };
                    if !data.is_empty() {
                        if let Err(e) = s.write_all(&data).await {
                            debug!(conn = %shared.id, stream, error = %e, "write on an HTTP/3 stream failed");
                            sends.remove(&stream);
                            continue;
                        }
                    }
                    if fin {
                        let _ = s.finish();
                        if let Some(s) = sends.remove(&stream) {
                            // Watch for the peer's acknowledgement, so that a graceful
                            // close can wait until the close capsule has arrived.
                            finishing.spawn(async move {
                                let _ = s.stopped().await;
                            });
                        }
                    }
                }
                Cmd::Flush(done) => {
                    while finishing.join_next().await.is_some() {}
                    let _ = done.send(());
                }
                Cmd::Reset { stream, code } => {
                    if let Some(mut s) = sends.remove(&stream) {
                        let _ = s.reset(quinn_code(code));
                    }
                }
            },
            r = shared.quic.accept_uni() => match r {
                Ok(recv) => {
                    start_reading(&shared, recv, None);
                }
                Err(e) => {
                    shared.on_closed(&e);
                    break;
                }
            },
            r = shared.quic.accept_bi() => match r {
                Ok((send, recv)) => {
                    start_reading(&shared, recv, Some(send));
                }
                Err(e) => {
                    shared.on_closed(&e);
                    break;
                }
            },
            _ = sleep => {
                let mut inner = shared.lock();
                inner.core.handle_timeout(Instant::now());
                shared.pump(&mut inner);
            }
            _ = shared.timer.notified() => {}
        }
    }
    shared.cmd.close();
}

/// Datagrams handed to the core under one lock and one `pump`.
const DATAGRAM_BATCH: usize = 64;

async fn read_datagrams(shared: Arc<Shared>) {
    use futures_util::FutureExt;
    while let Ok(d) = shared.quic.read_datagram().await {
        let mut inner = shared.lock();
        let now = Instant::now();
        inner.core.handle_datagram(now, d);
        // Whatever else has arrived already goes in with it: one wake-up of this task,
        // one lock and one pump per burst instead of per datagram.
        for _ in 1..DATAGRAM_BATCH {
            match shared.quic.read_datagram().now_or_never() {
                Some(Ok(d)) => inner.core.handle_datagram(now, d),
                _ => break,
            }
        }
        shared.pump(&mut inner);
    }
}

/// Starts [`read_stream`] on a stream the peer opened: polled once right here, since a
/// WebTransport stream's preamble nearly always arrives with its first bytes and the core
/// hands the stream to its session at once; only a stream that needs more reading gets a
/// task of its own. That saves a task spawn and a scheduling hop per stream.
fn start_reading(shared: &Arc<Shared>, recv: quinn::RecvStream, send: Option<quinn::SendStream>) {
    use futures_util::FutureExt;
    let mut reading = Box::pin(read_stream(shared.clone(), recv, send));
    if reading.as_mut().now_or_never().is_none() {
        // Polled again by its task at once, which registers the real waker.
        tokio::spawn(reading);
    }
}

/// Reads one incoming stream into the core until the core is done with it or hands it
/// to a session.
pub(crate) async fn read_stream(
    shared: Arc<Shared>,
    mut recv: quinn::RecvStream,
    mut send: Option<quinn::SendStream>,
) {
    let id: u64 = recv.id().into();
    let mut stop_rx: Option<oneshot::Receiver<Code>> = None;
    // The first bytes of a peer's bidi stream, until they tell a request stream (whose send
    // half the core answers on) from a WebTransport stream: a peer may write the 0x41
    // preamble in pieces (wtransport 0.7 does), and such a stream keeps its send half.
    let mut head: Vec<u8> = Vec::new();
    loop {
        let chunk = match stop_rx.as_mut() {
            Some(rx) => tokio::select! {
                c = recv.read_chunk(usize::MAX, true) => c,
                code = rx => {
                    if let Ok(code) = code {
                        let _ = recv.stop(quinn_code(code));
                    }
                    return;
                }
            },
            None => recv.read_chunk(usize::MAX, true).await,
        };
        let (data, fin) = match chunk {
            Ok(Some(c)) => (c.bytes, false),
            Ok(None) => (Bytes::new(), true),
            Err(quinn::ReadError::Reset(code)) => {
                let mut inner = shared.lock();
                inner.stop_signals.remove(&id);
                inner.core.handle_stream_reset(id, Code(code.into_inner()));
                shared.pump(&mut inner);
                return;
            }
            Err(_) => return,
        };
        let mut inner = shared.lock();
        inner.feeding_stop = None;
        let feed = inner
            .core
            .handle_stream_data(Instant::now(), id, &data, fin);
        match feed {
            Feed::Detach => {
                inner.detached.insert(id, (recv, send));
                shared.pump(&mut inner);
                return;
            }
            Feed::Continue => {
                if send.is_some() {
                    head.extend_from_slice(&data[..data.len().min(16 - head.len())]);
                    if let Ok(Some((BidiStreamHeader::Request, _))) =
                        BidiStreamHeader::decode(&head)
                    {
                        if let Some(s) = send.take() {
                            let _ = shared.cmd.send(Cmd::Register(id, s));
                        }
                    }
                }
                if stop_rx.is_none() && !fin {
                    let (tx, rx) = oneshot::channel();
                    inner.stop_signals.insert(id, tx);
                    stop_rx = Some(rx);
                }
                shared.pump(&mut inner);
                if fin {
                    inner.stop_signals.remove(&id);
                    return;
                }
            }
            Feed::Done => {
                if let Some(s) = send.take() {
                    let _ = shared.cmd.send(Cmd::Register(id, s));
                }
                inner.stop_signals.remove(&id);
                shared.pump(&mut inner);
                if let Some((stream, code)) = inner.feeding_stop.take() {
                    if stream == id {
                        let _ = recv.stop(quinn_code(code));
                    }
                }
                return;
            }
        }
    }
}
