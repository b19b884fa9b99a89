//! [`State`]: everything about one connection that changes, behind the connection's one
//! lock. Its fields are private; the handles and the driver call its methods through
//! [`Engine::update`](super::Engine::update), which carries out what the core decided
//! afterwards (`pump`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use webtransport_proto::connection::{
    self as core, CommandError, Feed, RejectReason, SessionEnd, SessionStatus, StreamHalf,
};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::stream_header::{Preamble, SessionId};
use webtransport_proto::vec_map::VecMap;
use webtransport_proto::Code;

use super::cells::{RecvCell, SendCell};
use super::reader::ReaderSignal;
use super::slot::{SessionNotify, SessionSlot};
use super::writer::Writer;
use super::{Engine, PendingRequest};
use crate::arena::DatagramArena;
use crate::error::{ConnectError, ConnectionError, DatagramError, SessionError};
use crate::info::{CloseInfo, ProtocolInfo, SessionInfo};

/// The halves of a WebTransport stream the application holds, so that the core's
/// WT_SESSION_GONE reaches them.
#[derive(Debug, Default)]
pub(super) struct Halves {
    pub(super) send: Option<Weak<std::sync::Mutex<super::cells::SendHalf>>>,
    pub(super) recv: Option<Weak<std::sync::Mutex<super::cells::RecvHalf>>>,
}

/// Why a stream cannot be reserved now.
#[derive(Debug)]
pub(crate) enum Reserve {
    /// The peer's WT_MAX_STREAMS: wait for credit.
    Blocked,
    /// The session is not open.
    Failed(SessionError),
}

/// The mutable state of one connection.
#[derive(Debug)]
pub(crate) struct State {
    pub(super) core: core::Connection,
    /// One entry per session (most connections have one): a sorted `Vec`.
    pub(super) slots: VecMap<SessionId, SessionSlot>,
    /// WebTransport streams the application holds.
    pub(super) halves: HashMap<u64, Halves>,
    /// WebTransport streams the core detached, until it hands them to a session (or
    /// refuses them): few at a time (each is handed over at once unless its session is
    /// not open yet, and those are bounded by `max_pending_streams`), so a sorted `Vec`.
    pub(super) detached: VecMap<u64, (quinn::RecvStream, Option<quinn::SendStream>)>,
    pub(super) writer: Writer,
    /// Readers of core-read streams, to stop them.
    pub(super) readers: VecMap<u64, Arc<ReaderSignal>>,
    /// Where a server's session requests go (`None`: refused).
    pub(super) requests: Option<mpsc::UnboundedSender<PendingRequest>>,
    /// Why the connection ended (or the error it is closing with); boxed, since a live
    /// connection has none.
    pub(super) error: Option<Box<ConnectionError>>,
    pub(super) established_at: Option<SystemTime>,
    pub(super) closed_at: Option<SystemTime>,
    /// Errors seen above the core (a connection that ended badly).
    pub(super) errors: u64,
    /// The core deadline the driver sleeps until.
    pub(super) armed: Option<Instant>,
    /// Made by the first datagram sent: many connections never send one.
    arena: Option<Box<DatagramArena>>,
    /// Datagrams dropped because a session's queue was full.
    pub(super) datagrams_dropped: u64,
    /// Payload of the datagrams delivered in this `pump`, counted in the activity at its
    /// end.
    pub(super) datagram_bytes: u64,
    /// The buffer sessions' done halves are handed over in (see `session_progress`).
    spare_done: Vec<(u64, StreamHalf)>,
}

impl State {
    pub(super) fn new(
        core: core::Connection,
        writer: Writer,
        requests: Option<mpsc::UnboundedSender<PendingRequest>>,
    ) -> Self {
        State {
            core,
            slots: VecMap::default(),
            halves: HashMap::new(),
            detached: VecMap::default(),
            writer,
            readers: VecMap::default(),
            requests,
            error: None,
            established_at: None,
            closed_at: None,
            errors: 0,
            armed: None,
            arena: None,
            datagrams_dropped: 0,
            datagram_bytes: 0,
            spare_done: Vec::new(),
        }
    }

    /// The current time for the core: tokio's, so that tests on the paused clock move it.
    pub(super) fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    // ---- readers ----

    pub(crate) fn watch_reader(&mut self, id: u64, stop: Arc<ReaderSignal>) {
        self.readers.insert(id, stop);
    }

    pub(crate) fn unwatch_reader(&mut self, id: u64) {
        self.readers.remove(&id);
    }

    pub(crate) fn reader_reset(&mut self, id: u64, code: Code) {
        self.readers.remove(&id);
        self.core.handle_stream_reset(id, code);
    }

    /// A core-read stream gives no more bytes: the connection is gone (`error`, if the
    /// reader learnt why before the driver did).
    pub(crate) fn reader_lost(&mut self, id: u64, error: Option<ConnectionError>) {
        self.readers.remove(&id);
        if let Some(e) = error {
            self.record_error(e);
        }
        self.core.handle_stream_lost(id);
    }

    pub(crate) fn feed(&mut self, id: u64, data: Bytes, fin: bool) -> Feed {
        self.core.handle_stream_bytes(Self::now(), id, data, fin)
    }

    pub(crate) fn register_request_stream(&mut self, id: u64, send: quinn::SendStream) {
        self.writer.register(id, send);
    }

    pub(crate) fn detached(
        &mut self,
        id: u64,
        recv: quinn::RecvStream,
        send: Option<quinn::SendStream>,
    ) {
        self.readers.remove(&id);
        self.detached.insert(id, (recv, send));
    }

    // ---- sessions ----

    /// (Client) Sends an extended CONNECT on `stream` (whose sending half is `send`).
    pub(crate) fn open_session(
        &mut self,
        stream: u64,
        send: quinn::SendStream,
        request: ConnectRequest,
    ) -> Result<SessionId, ConnectError> {
        self.writer.register(stream, send);
        match self.core.open_session(Self::now(), stream, request.clone()) {
            Ok(id) => {
                self.slots.insert(id, SessionSlot::new(Some(request)));
                Ok(id)
            }
            Err(e) => {
                self.writer.reset(stream, Code::H3_REQUEST_CANCELLED);
                Err(match (e, self.error.as_deref()) {
                    (_, Some(err)) => ConnectError::ConnectionLost(err.clone()),
                    (CommandError::TooManySessions(_), None) => {
                        ConnectError::RequestReset(Code::H3_REQUEST_REJECTED)
                    }
                    (_, None) => ConnectError::ConnectionLost(ConnectionError::GoingAway),
                })
            }
        }
    }

    /// A handle's view of a session: its wake-ups and guard.
    pub(crate) fn attach(
        &mut self,
        engine: &Arc<Engine>,
        id: SessionId,
    ) -> Option<(Arc<SessionNotify>, Arc<super::slot::SessionGuard>)> {
        let slot = self.slots.get_mut(&id)?;
        Some((slot.notify().clone(), slot.guard(engine, id)))
    }

    /// `None` while the session is pending or established; how it ended otherwise.
    pub(crate) fn session_error(
        &self,
        id: SessionId,
        config: &super::EngineConfig,
    ) -> Option<SessionError> {
        match self.core.session_status(id) {
            None => Some(SessionError::Unknown),
            Some(SessionStatus::Pending | SessionStatus::Established { .. }) => None,
            Some(SessionStatus::Ended(end)) => Some(self.end_error(end, config)),
        }
    }

    fn end_error(&self, end: &SessionEnd, config: &super::EngineConfig) -> SessionError {
        let lost = || {
            self.error
                .as_deref()
                .cloned()
                .unwrap_or(ConnectionError::LocallyClosed)
        };
        match end {
            SessionEnd::Closed {
                code,
                reason,
                remote,
            } => SessionError::Closed {
                code: *code,
                reason: reason.clone(),
                remote: *remote,
            },
            SessionEnd::Aborted { code, remote } => SessionError::Aborted {
                code: *code,
                remote: *remote,
            },
            SessionEnd::Rejected { reason, .. } => {
                SessionError::NotOpened(Box::new(match reason {
                    RejectReason::Status(s) => ConnectError::Rejected(*s),
                    RejectReason::Unsupported(m) => ConnectError::Unsupported(*m),
                    RejectReason::Timeout => ConnectError::Timeout(config.session_timeout),
                    RejectReason::Reset(code) => ConnectError::RequestReset(*code),
                    RejectReason::Malformed(e) => ConnectError::MalformedResponse(e.clone()),
                    RejectReason::NoResponse => ConnectError::NoResponse,
                    RejectReason::GoingAway => {
                        ConnectError::ConnectionLost(ConnectionError::GoingAway)
                    }
                    RejectReason::Cancelled => ConnectError::Cancelled,
                    _ => ConnectError::ConnectionLost(lost()),
                }))
            }
            SessionEnd::Refused { status } => {
                SessionError::NotOpened(Box::new(ConnectError::Rejected(*status)))
            }
            SessionEnd::Withdrawn => SessionError::NotOpened(Box::new(ConnectError::Cancelled)),
            _ => SessionError::Connection(lost()),
        }
    }

    /// How a session ended cleanly, if it did.
    pub(crate) fn close_info(&self, id: SessionId) -> Option<CloseInfo> {
        match self.core.session_status(id)? {
            SessionStatus::Ended(SessionEnd::Closed {
                code,
                reason,
                remote,
            }) => Some(CloseInfo {
                code: *code,
                reason: reason.clone(),
                remote: *remote,
            }),
            _ => None,
        }
    }

    pub(crate) fn is_established(&self, id: SessionId) -> bool {
        self.core.is_established(id)
    }

    pub(crate) fn is_draining(&self, id: SessionId) -> bool {
        matches!(
            self.core.session_status(id),
            Some(SessionStatus::Established { draining: true })
        )
    }

    pub(crate) fn slot(&self, id: SessionId) -> Option<&SessionSlot> {
        self.slots.get(&id)
    }

    pub(crate) fn session_info(&self, id: SessionId) -> Option<SessionInfo> {
        let slot = self.slots.get(&id)?;
        let status = self.core.session_status(id)?;
        let (state, draining) = match status {
            SessionStatus::Pending => ("pending", false),
            SessionStatus::Established { draining } => ("established", draining),
            SessionStatus::Ended(SessionEnd::Closed { .. }) => ("closed", false),
            SessionStatus::Ended(SessionEnd::ConnectionClosed) => ("lost", false),
            SessionStatus::Ended(_) => ("failed", false),
        };
        Some(SessionInfo {
            session_id: id,
            state,
            path: slot.request.as_ref().map(|r| r.path.clone()),
            protocol: slot.response.as_ref().and_then(|r| r.protocol.clone()),
            draining,
            created_at: slot.created_at,
            established_at: slot.established_at,
            closed_at: slot.closed_at,
            close: self.close_info(id),
            stats: slot.stats,
            queued_datagrams: slot.queued_datagrams(),
            queued_streams: slot.queued_streams(),
        })
    }

    /// Every session remembered, in id order.
    pub(crate) fn session_ids(&self) -> Vec<SessionId> {
        self.core
            .session_ids()
            .filter(|id| self.slots.contains_key(id))
            .collect()
    }

    pub(crate) fn protocol_info(&self) -> ProtocolInfo {
        ProtocolInfo {
            peer_settings: self.core.peer_settings().cloned(),
            draft: self.core.draft(),
            flow_control: self.core.flow_control(),
            unframed_capsules: self.core.unframed_capsules(),
            local_settings: self.core.local_settings(),
            sessions: self.session_ids(),
            datagrams_dropped: self.core.stats().datagrams_dropped + self.datagrams_dropped,
            buffered: self.core.buffered(),
            streams_rejected: self.core.stats().streams_rejected,
            write_backlog: self.writer.largest_queue(),
        }
    }

    /// Errors of the core and above it.
    pub(crate) fn error_count(&self) -> u64 {
        self.core.stats().errors + self.errors
    }

    pub(crate) fn error(&self) -> Option<&ConnectionError> {
        self.error.as_deref()
    }

    /// Records why the connection ends; the first reason recorded stands.
    pub(super) fn record_error(&mut self, error: ConnectionError) {
        self.error.get_or_insert_with(|| Box::new(error));
    }

    pub(crate) fn timestamps(&self) -> (Option<SystemTime>, Option<SystemTime>) {
        (self.established_at, self.closed_at)
    }

    /// (Server) Accepts a requested session.
    pub(crate) fn accept_session(
        &mut self,
        id: SessionId,
        response: ConnectResponse,
    ) -> Result<(), SessionError> {
        self.core
            .accept_session(id, response)
            .map_err(|_| SessionError::NotEstablished)
    }

    /// (Server) Rejects a requested session with `status`.
    pub(crate) fn reject_session(&mut self, id: SessionId, response: ConnectResponse) {
        let _ = self.core.reject_session_with(id, response);
    }

    pub(crate) fn close_session(
        &mut self,
        id: SessionId,
        code: u32,
        reason: &str,
    ) -> Result<(), CommandError> {
        self.core.close_session(id, code, reason)
    }

    /// The last handle of a session went: an established session is closed with code 0.
    pub(crate) fn close_on_last_handle(&mut self, id: SessionId) {
        if self.core.is_established(id) {
            let _ = self.core.close_session(id, 0, "");
        }
    }

    pub(crate) fn drain_session(&mut self, id: SessionId) -> Result<(), CommandError> {
        self.core.drain_session(id)
    }

    /// Closes every live session with `code` and `reason` (a graceful connection close).
    pub(crate) fn close_all_sessions(&mut self, code: u32, reason: &str) {
        for id in self.core.session_ids().collect::<Vec<_>>() {
            if self.core.is_established(id) {
                let _ = self.core.close_session(id, code, reason);
            }
        }
    }

    pub(crate) fn goaway(&mut self) {
        self.core.goaway();
    }

    /// No new session requests reach the application (they are answered 503).
    pub(crate) fn stop_accepting(&mut self) {
        self.requests = None;
    }

    // ---- streams ----

    /// Counts a stream about to be opened against the peer's limit.
    pub(crate) fn reserve_stream(
        &mut self,
        id: SessionId,
        bidi: bool,
        config: &super::EngineConfig,
    ) -> Result<(), Reserve> {
        match self.core.reserve_stream(id, bidi) {
            Ok(()) => Ok(()),
            Err(CommandError::StreamsBlocked { .. }) => Err(Reserve::Blocked),
            Err(_) => Err(Reserve::Failed(
                self.session_error(id, config)
                    .unwrap_or(SessionError::NotEstablished),
            )),
        }
    }

    pub(crate) fn release_stream(&mut self, id: SessionId, bidi: bool) {
        self.core.release_stream(id, bidi);
    }

    /// Registers a stream opened for a reserved slot; returns its preamble, and whether
    /// session flow control is in effect.
    pub(crate) fn open_stream(
        &mut self,
        session: SessionId,
        send: &SendCell,
        recv: Option<&RecvCell>,
        stream: u64,
        config: &super::EngineConfig,
    ) -> Result<(Preamble, bool), SessionError> {
        let bidi = recv.is_some();
        match self.core.open_stream(session, stream, bidi) {
            Ok(preamble) => {
                self.halves.insert(
                    stream,
                    Halves {
                        send: Some(Arc::downgrade(send)),
                        recv: recv.map(Arc::downgrade),
                    },
                );
                if let Some(slot) = self.slots.get_mut(&session) {
                    if bidi {
                        slot.stats.streams_opened_bi += 1;
                    } else {
                        slot.stats.streams_opened_uni += 1;
                    }
                }
                Ok((preamble, self.core.flow_control()))
            }
            Err(_) => Err(self
                .session_error(session, config)
                .unwrap_or(SessionError::NotEstablished)),
        }
    }

    /// Takes the next incoming stream of a session, or says why there is none to wait
    /// for.
    pub(crate) fn take_incoming(
        &mut self,
        session: SessionId,
        bidi: bool,
        config: &super::EngineConfig,
    ) -> Option<Result<super::slot::Incoming, SessionError>> {
        let Some(slot) = self.slots.get_mut(&session) else {
            return Some(Err(SessionError::Unknown));
        };
        if let Some(incoming) = slot.take_stream(bidi) {
            self.core.stream_accepted(incoming.id);
            return Some(Ok(incoming));
        }
        self.session_error(session, config).map(Err)
    }

    /// Why a session with no datagram queued will have none to read (it is unknown or
    /// over); `None` while one may still come.
    pub(crate) fn datagrams_over(
        &self,
        session: SessionId,
        config: &super::EngineConfig,
    ) -> Option<SessionError> {
        if !self.slots.contains_key(&session) {
            return Some(SessionError::Unknown);
        }
        self.session_error(session, config)
    }

    /// Builds the QUIC datagram for `payload` in the connection's arena.
    pub(crate) fn encode_datagram(
        &mut self,
        session: SessionId,
        payload: &[u8],
        config: &super::EngineConfig,
    ) -> Result<Bytes, DatagramError> {
        let len = webtransport_proto::datagram::header_len(session) + payload.len();
        let room = Self::arena(&mut self.arena, config).room(len);
        let built = self.core.encode_datagram_into(session, payload, room);
        self.datagram_built(session, built, config)?;
        Ok(Self::arena(&mut self.arena, config).take())
    }

    /// Room in the connection's arena for a datagram of `session` with up to `capacity`
    /// bytes of payload, its header already written (see `DatagramBuffer`).
    pub(crate) fn lend_datagram(
        &mut self,
        session: SessionId,
        capacity: usize,
        config: &super::EngineConfig,
    ) -> BytesMut {
        let header = webtransport_proto::datagram::header_len(session);
        let mut buf = Self::arena(&mut self.arena, config).lend(header + capacity);
        webtransport_proto::datagram::encode_header(session, &mut buf);
        buf
    }

    /// A datagram of `session` written in a buffer from [`State::lend_datagram`], ready
    /// for QUIC if the session may send it.
    pub(crate) fn seal_datagram(
        &mut self,
        session: SessionId,
        datagram: BytesMut,
        config: &super::EngineConfig,
    ) -> Result<Bytes, DatagramError> {
        let checked = self.core.may_send_datagram(session);
        self.datagram_built(session, checked, config)?;
        Ok(datagram.freeze())
    }

    fn arena<'a>(
        arena: &'a mut Option<Box<DatagramArena>>,
        config: &super::EngineConfig,
    ) -> &'a mut DatagramArena {
        arena.get_or_insert_with(|| {
            let send_buffer = config.source.transport().datagram_send_buffer;
            Box::new(DatagramArena::new(send_buffer))
        })
    }

    /// Counts a datagram the core let `session` send, or says why it may not.
    fn datagram_built(
        &mut self,
        session: SessionId,
        built: Result<(), CommandError>,
        config: &super::EngineConfig,
    ) -> Result<(), DatagramError> {
        match built {
            Ok(()) => {
                if let Some(slot) = self.slots.get_mut(&session) {
                    slot.stats.datagrams_sent += 1;
                }
                Ok(())
            }
            Err(CommandError::DatagramsDisabled) => Err(DatagramError::Unsupported),
            Err(_) => Err(self
                .session_error(session, config)
                .unwrap_or(SessionError::NotEstablished)
                .into()),
        }
    }

    /// A datagram that quinn refused after it was counted.
    pub(crate) fn datagram_not_sent(&mut self, session: SessionId) {
        if let Some(slot) = self.slots.get_mut(&session) {
            slot.stats.datagrams_sent = slot.stats.datagrams_sent.saturating_sub(1);
        }
    }

    /// Takes up to `want` bytes of send credit; on zero, `waker` is woken when the peer
    /// gives more (or the session ends).
    /// Send credit for a writer that found none held for its session (see
    /// [`SessionSlot::refill_send_credit`]); 0: wait for the peer.
    pub(crate) fn refill_send_credit(
        &mut self,
        session: SessionId,
        want: u64,
        waker: &Waker,
    ) -> u64 {
        let core = &mut self.core;
        match self.slots.get_mut(&session) {
            Some(slot) if core.is_established(session) => {
                slot.refill_send_credit(want, waker, || core.take_send_credit(session, u64::MAX))
            }
            // The session is over: let the writer see it.
            _ => want,
        }
    }

    /// Credit a writer took and did not use goes back to its session's writers.
    pub(crate) fn return_send_credit(&mut self, session: SessionId, n: u64) {
        if let Some(slot) = self.slots.get_mut(&session) {
            slot.return_send_credit(n);
        }
    }

    /// Hands the core what `session`'s stream handles left for it (see
    /// [`Deferred`](super::slot::Deferred)): arrivals, reads, then the halves that are done.
    /// `notify` is the session's (its handles hold it, also after the slot is forgotten).
    pub(crate) fn session_progress(&mut self, session: SessionId, notify: &SessionNotify) {
        let mut done = std::mem::take(&mut self.spare_done);
        let (received, consumed) = notify.take_deferred(&mut done);
        if received > 0 {
            self.core.session_data_received(session, received);
        }
        if consumed > 0 {
            self.core.session_data_read(session, consumed);
        }
        for (stream, half) in done.drain(..) {
            self.core.stream_done(stream, half);
            self.forget_half(stream, half);
        }
        self.spare_done = done;
    }

    /// The application's `half` of `stream` is over: nothing more reaches it.
    pub(super) fn forget_half(&mut self, stream: u64, half: StreamHalf) {
        if let Some(h) = self.halves.get_mut(&stream) {
            match half {
                StreamHalf::Send => h.send = None,
                StreamHalf::Recv => h.recv = None,
            }
            if h.send.is_none() && h.recv.is_none() {
                self.halves.remove(&stream);
            }
        }
    }

    // ---- the link, writes, timers and the connection's end ----

    /// The QUIC connection is up and our control stream open.
    pub(super) fn linked(&mut self, control: u64, stream: quinn::SendStream) {
        self.writer.register(control, stream);
        self.established_at = Some(SystemTime::now());
    }

    /// This side is closing the connection.
    pub(crate) fn closing_locally(&mut self) {
        self.record_error(ConnectionError::LocallyClosed);
    }

    /// Writes what QUIC takes of the queued HTTP/3 bytes. Returns whether everything
    /// queued is written now.
    pub(super) fn poll_writes(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if !self.writer.has_pending() {
            return false;
        }
        for (id, code) in self.writer.poll_write(cx) {
            self.core.handle_stop_sending(id, code);
        }
        !self.writer.has_pending()
    }

    pub(crate) fn handle_timeout(&mut self) {
        self.core.handle_timeout(Self::now());
    }

    /// The next core deadline; remembered as the one the driver sleeps until.
    pub(crate) fn arm(&mut self) -> Option<Instant> {
        self.armed = self.core.poll_timeout();
        self.armed
    }

    pub(crate) fn handle_datagram(&mut self, now: Instant, d: Bytes) {
        self.core.handle_datagram(now, d);
    }

    /// Whether a graceful close has nothing more to wait for: everything written and
    /// acknowledged, and every CONNECT stream closed by the peer.
    pub(crate) fn close_done(&self) -> bool {
        self.writer.is_flushed() && !self.core.connect_streams_open()
    }

    pub(crate) fn writer_acks(&mut self) -> Arc<super::writer::Acks> {
        self.writer.acks().clone()
    }
}
