//! The per-connection HTTP/3 + WebTransport state machine, for both roles.
//!
//! [`Connection`] owns no socket and reads no clock. The caller (the async library, or a
//! test harness) runs QUIC and moves bytes:
//!
//! ```text
//!   QUIC stream bytes, FIN ──▶ handle_stream_data ─┐          ┌─▶ poll_action: Write / Reset /
//!   RESET_STREAM         ──▶ handle_stream_reset  ├─▶ state ─┤     StopSending / CloseConnection
//!   STOP_SENDING         ──▶ handle_stop_sending  │          └─▶ poll_event: SETTINGS, sessions,
//!   QUIC datagrams       ──▶ handle_datagram      │                incoming streams, datagrams
//!   timer fired          ──▶ handle_timeout ──────┘          poll_timeout: when to call again
//! ```
//!
//! The four kinds of methods are: getters (`role`, `peer_settings`, `draft`, `session`);
//! input `handle_*(now, ...)`; application commands (`open_session`, `accept_session`,
//! `reject_session`, `close_session`, `drain_session`, `open_stream`, `goaway`,
//! `encode_datagram`); and outputs drained with `poll_action`, `poll_event`,
//! `poll_timeout`.
//!
//! The core reads the streams that belong to HTTP/3 itself: the peer's control and QPACK
//! streams, CONNECT streams, and the preamble of every peer-initiated stream. Once a
//! stream's preamble names a WebTransport session, [`handle_stream_data`] answers
//! [`Feed::Detach`] and the caller reads the rest of that stream itself (the bytes that
//! followed the preamble in the same chunk travel in [`Event::IncomingStream`]). Payload of
//! WebTransport streams and datagrams never has to pass through this type.
//!
//! [`handle_stream_data`]: Connection::handle_stream_data

mod request;
mod streams;
mod types;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tracing::debug;

use crate::capsule::{Capsule, CapsuleError, CapsuleReader};
use crate::datagram;
use crate::error::Code;
use crate::frame::{Frame, FrameEvent, FrameHeader, FrameLimits, FrameReader};
use crate::headers::{ConnectRequest, ConnectResponse, UpgradeToken};
use crate::qpack;
use crate::settings::{Settings, WtDraft};
use crate::stream_header::{BidiStreamHeader, Preamble, SessionId, UniStreamHeader};
use crate::varint;

pub use types::{
    Action, Config, Event, Feed, LocalStreams, RejectReason, Role, SessionError, Stats,
};

/// Session lifecycle:
///
/// ```text
///  client: AwaitingSettings ─▶ Requested ─▶ Established ─▶ (Closed)
///                                    └──────▶ (rejected: removed)
///  server: Requested ─▶ Established ─▶ (Closed)
///             └──▶ (rejected: removed)
/// ```
#[derive(Debug)]
enum SessionState {
    /// Client: request waits for the server's SETTINGS to choose the upgrade token.
    AwaitingSettings {
        /// Boxed: it is the largest state by far and short-lived, and a session's size
        /// sets the size of the session map's nodes for the connection's life.
        request: Box<ConnectRequest>,
        deadline: Instant,
    },
    /// Client: request sent; server: request received, waiting for the application.
    Requested { deadline: Option<Instant> },
    /// Open for streams and datagrams.
    Established { draining: bool },
}

#[derive(Debug)]
struct Session {
    state: SessionState,
}

/// What a peer-initiated or CONNECT stream is, as far as the core reads it.
#[derive(Debug)]
enum StreamKind {
    /// Preamble not complete yet.
    UniPreamble(BytesMut),
    BidiPreamble(BytesMut),
    Control {
        reader: FrameReader,
        got_settings: bool,
    },
    QpackEncoder(BytesMut),
    QpackDecoder(BytesMut),
    /// A CONNECT (request) stream; `session` is its own id.
    Request(Box<RequestStream>),
}

#[derive(Debug)]
struct RequestStream {
    reader: FrameReader,
    capsules: CapsuleReader,
    /// HEADERS seen (request on a server, response on a client).
    got_headers: bool,
    /// Set once the session closed; bytes after that are dropped.
    closed: bool,
}

#[derive(Debug)]
struct PendingStream {
    session: SessionId,
    bidi: bool,
    prefix: Bytes,
    deadline: Instant,
}

/// The HTTP/3 + WebTransport state of one QUIC connection. See the module docs.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    local: LocalStreams,
    peer_settings: Option<Settings>,
    draft: Option<WtDraft>,
    peer_control: Option<u64>,
    peer_encoder: Option<u64>,
    peer_decoder: Option<u64>,
    streams: HashMap<u64, StreamKind>,
    sessions: BTreeMap<SessionId, Session>,
    /// Server: requests that arrived before the client's SETTINGS.
    early_requests: Vec<(SessionId, ConnectRequest)>,
    closed_sessions: VecDeque<SessionId>,
    pending_streams: HashMap<u64, PendingStream>,
    pending_datagrams: VecDeque<(SessionId, Bytes, Instant)>,
    goaway_sent: Option<u64>,
    goaway_received: Option<u64>,
    /// Server: highest CONNECT stream id seen, for GOAWAY.
    max_request_id: Option<u64>,
    /// Server: the client's MAX_PUSH_ID (we never push, but it must not decrease).
    max_push_id: Option<u64>,
    error: Option<(Code, String)>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Connection {
    /// A new connection state. Queues our control stream (with SETTINGS) and the two QPACK
    /// stream preambles on the streams in `local`.
    pub fn new(role: Role, config: Config, local: LocalStreams) -> Self {
        let mut c = Connection {
            role,
            config,
            local,
            peer_settings: None,
            draft: None,
            peer_control: None,
            peer_encoder: None,
            peer_decoder: None,
            streams: HashMap::new(),
            sessions: BTreeMap::new(),
            early_requests: Vec::new(),
            closed_sessions: VecDeque::new(),
            pending_streams: HashMap::new(),
            pending_datagrams: VecDeque::new(),
            goaway_sent: None,
            goaway_received: None,
            max_request_id: None,
            max_push_id: None,
            error: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        };
        let settings = c.local_settings();
        let mut control = Vec::with_capacity(64);
        UniStreamHeader::Control.encode(&mut control);
        Frame::Settings(settings).encode(&mut control);
        c.write(local.control, control.into(), false);
        for (stream, header) in [
            (local.encoder, UniStreamHeader::QpackEncoder),
            (local.decoder, UniStreamHeader::QpackDecoder),
        ] {
            if let Some(stream) = stream {
                let mut out = Vec::new();
                header.encode(&mut out);
                c.write(stream, out.into(), false);
            }
        }
        c
    }

    /// The SETTINGS this side sends.
    pub fn local_settings(&self) -> Settings {
        Settings::local(
            self.role == Role::Server,
            self.config.max_sessions.into(),
            self.config.max_field_section_size,
        )
    }

    // ---- getters ----

    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The peer's SETTINGS, once received.
    pub fn peer_settings(&self) -> Option<&Settings> {
        self.peer_settings.as_ref()
    }

    /// The WebTransport draft negotiated with the peer, once its SETTINGS arrived.
    pub fn draft(&self) -> Option<WtDraft> {
        self.draft
    }

    /// Whether a session is established (and not closed).
    pub fn is_established(&self, session: SessionId) -> bool {
        matches!(
            self.sessions.get(&session),
            Some(Session {
                state: SessionState::Established { .. }
            })
        )
    }

    /// Sessions not yet closed.
    pub fn session_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
    }

    /// The connection error, once one happened.
    pub fn error(&self) -> Option<&(Code, String)> {
        self.error.as_ref()
    }

    /// The GOAWAY id received from the peer, if any.
    pub fn goaway_received(&self) -> Option<u64> {
        self.goaway_received
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    // ---- outputs ----

    /// The next thing to do on the QUIC connection.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Connection::handle_timeout`] must be called next, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().filter_map(|s| match &s.state {
            SessionState::AwaitingSettings { deadline, .. } => Some(*deadline),
            SessionState::Requested { deadline } => *deadline,
            SessionState::Established { .. } => None,
        });
        let streams = self.pending_streams.values().map(|p| p.deadline);
        let datagrams = self.pending_datagrams.front().map(|d| d.2);
        sessions.chain(streams).chain(datagrams).min()
    }

    // ---- inputs ----

    /// Time has passed: expire pending streams and datagrams and unanswered requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending_streams
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending_streams.remove(&id) {
                debug!(stream = id, session = %p.session, "buffered stream timed out");
                self.refuse_stream(id, p.bidi, Code::WT_BUFFERED_STREAM_REJECTED);
                self.stats.streams_rejected += 1;
            }
        }
        while self.pending_datagrams.front().is_some_and(|d| d.2 <= now) {
            self.pending_datagrams.pop_front();
            self.stats.datagrams_dropped += 1;
        }
        let timed_out: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| match &s.state {
                SessionState::AwaitingSettings { deadline, .. } => *deadline <= now,
                SessionState::Requested { deadline } => deadline.is_some_and(|d| d <= now),
                SessionState::Established { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in timed_out {
            self.reject_client_session(id, RejectReason::Timeout, None, true);
        }
    }

    /// Bytes arrived on a stream the core reads (any peer-initiated stream until it is
    /// detached, and the CONNECT streams of our own sessions). `fin` marks its end.
    pub fn handle_stream_data(
        &mut self,
        now: Instant,
        stream: u64,
        data: &[u8],
        fin: bool,
    ) -> Feed {
        if self.error.is_some() {
            return Feed::Done;
        }
        let kind = match self.streams.remove(&stream) {
            Some(k) => k,
            None => {
                if self.is_local(stream) {
                    // Only our CONNECT streams are read, and those are registered.
                    debug!(stream, "data on a local stream the core does not read");
                    return Feed::Done;
                }
                if is_uni(stream) {
                    StreamKind::UniPreamble(BytesMut::new())
                } else {
                    StreamKind::BidiPreamble(BytesMut::new())
                }
            }
        };
        match self.feed(now, stream, kind, data, fin) {
            Ok((Some(kind), feed)) => {
                self.streams.insert(stream, kind);
                feed
            }
            Ok((None, feed)) => feed,
            Err((code, reason)) => {
                self.connection_error(code, reason);
                Feed::Done
            }
        }
    }

    /// The peer reset a stream the core reads (RESET_STREAM with `code`).
    pub fn handle_stream_reset(&mut self, stream: u64, code: Code) {
        if let Some(p) = self.pending_streams.remove(&stream) {
            debug!(stream, session = %p.session, %code, "buffered stream reset by peer");
            return;
        }
        match self.streams.remove(&stream) {
            Some(StreamKind::Control { .. })
            | Some(StreamKind::QpackEncoder(_))
            | Some(StreamKind::QpackDecoder(_)) => {
                // RFC 9114 §6.2.1: "If either control stream is closed at any point, this
                // MUST be treated as a connection error of type H3_CLOSED_CRITICAL_STREAM."
                // RFC 9204 §4.2 says the same of the QPACK streams.
                self.connection_error(
                    Code::H3_CLOSED_CRITICAL_STREAM,
                    format!("critical stream {stream} reset with {code}"),
                );
            }
            Some(StreamKind::Request(_)) => {
                let session = SessionId::from_stream_id(stream).ok();
                if let Some(session) = session {
                    self.session_stream_ended(session, Some(code), true);
                }
            }
            _ => {}
        }
    }

    /// The peer asked us to stop sending on one of our streams.
    pub fn handle_stop_sending(&mut self, stream: u64, code: Code) {
        if stream == self.local.control
            || Some(stream) == self.local.encoder
            || Some(stream) == self.local.decoder
        {
            self.connection_error(
                Code::H3_CLOSED_CRITICAL_STREAM,
                format!("peer stopped our critical stream {stream} with {code}"),
            );
            return;
        }
        if let Ok(session) = SessionId::from_stream_id(stream) {
            if self.sessions.contains_key(&session) {
                // Our side of the CONNECT stream can no longer carry capsules: the session
                // is over. The peer's side stays open (it may still send its close
                // capsule and FIN), so its read state is kept and what comes is dropped.
                self.actions.push_back(Action::Reset { stream, code });
                self.session_stream_ended(session, Some(code), false);
            }
        }
    }

    /// A QUIC datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, data: Bytes) {
        if self.error.is_some() {
            return;
        }
        match datagram::decode(&data) {
            Ok((session, payload)) => self.route_datagram(now, session, payload),
            Err(e) => self.connection_error(e.code(), e.to_string()),
        }
    }

    // ---- application commands ----

    /// (Client) Opens a session with an extended CONNECT on `stream`, a new bidirectional
    /// stream the caller opened. The request is sent once the server's SETTINGS have
    /// arrived (they decide the upgrade token).
    pub fn open_session(
        &mut self,
        now: Instant,
        stream: u64,
        request: ConnectRequest,
    ) -> Result<SessionId, SessionError> {
        if self.role != Role::Client {
            return Err(SessionError::WrongRole(self.role));
        }
        if self.error.is_some() || self.goaway_received.is_some() {
            return Err(SessionError::Closed);
        }
        let session =
            SessionId::from_stream_id(stream).map_err(|_| SessionError::BadStream(stream))?;
        if is_uni(stream) || !self.is_local(stream) || self.sessions.contains_key(&session) {
            return Err(SessionError::BadStream(stream));
        }
        let limit = self.session_limit();
        if self.sessions.len() as u64 >= limit {
            self.stats.sessions_refused += 1;
            return Err(SessionError::TooManySessions(limit));
        }
        let deadline = now + self.config.session_timeout;
        self.sessions.insert(
            session,
            Session {
                state: SessionState::AwaitingSettings {
                    request: Box::new(request),
                    deadline,
                },
            },
        );
        self.streams
            .insert(stream, StreamKind::Request(Box::new(self.request_stream())));
        if self.peer_settings.is_some() {
            self.send_request(session);
        }
        Ok(session)
    }

    /// (Server) Accepts a requested session, sending `response` (its status should be
    /// 2xx; 200 is used if it is not).
    pub fn accept_session(
        &mut self,
        session: SessionId,
        mut response: ConnectResponse,
    ) -> Result<(), SessionError> {
        if self.role != Role::Server {
            return Err(SessionError::WrongRole(self.role));
        }
        match self.sessions.get_mut(&session) {
            Some(s) if matches!(s.state, SessionState::Requested { .. }) => {
                s.state = SessionState::Established { draining: false };
            }
            _ => return Err(SessionError::NotOpen(session)),
        }
        if !(200..300).contains(&response.status) {
            response.status = 200;
        }
        self.send_headers(session.stream_id(), &response.to_fields(), false);
        self.events
            .push_back(Event::SessionEstablished { session, response });
        self.release_pending(session);
        Ok(())
    }

    /// (Server) Rejects a requested session with a non-2xx `status` and finishes the
    /// stream.
    pub fn reject_session(&mut self, session: SessionId, status: u16) -> Result<(), SessionError> {
        if self.role != Role::Server {
            return Err(SessionError::WrongRole(self.role));
        }
        match self.sessions.get(&session) {
            Some(s) if matches!(s.state, SessionState::Requested { .. }) => {}
            _ => return Err(SessionError::NotOpen(session)),
        }
        let status = if (200..300).contains(&status) {
            400
        } else {
            status
        };
        let response = ConnectResponse {
            status,
            ..ConnectResponse::default()
        };
        // The response and FIN are all: a STOP_SENDING could overtake the response and
        // make the client see a reset instead of the status. What the client still
        // sends on the stream is read and dropped.
        self.send_headers(session.stream_id(), &response.to_fields(), true);
        self.forget_session(session);
        Ok(())
    }

    /// Closes a session with an application code and reason (CLOSE_WEBTRANSPORT_SESSION,
    /// then FIN). A client's session that is still being requested is cancelled instead.
    pub fn close_session(
        &mut self,
        session: SessionId,
        code: u32,
        reason: &str,
    ) -> Result<(), SessionError> {
        let capsule = Capsule::close(code, reason).map_err(|_| SessionError::ReasonTooLong)?;
        let Some(s) = self.sessions.get(&session) else {
            return Err(SessionError::NotOpen(session));
        };
        let stream = session.stream_id();
        match s.state {
            SessionState::Established { .. } => {
                // draft-ietf-webtrans-http3 §6: the capsule, then a FIN on the CONNECT
                // stream. Chromium wants no STOP_SENDING before the capsule
                // (docs/protocol.md); we keep reading until the peer's FIN.
                let bytes = self.capsule_bytes(&capsule);
                self.write(stream, bytes, true);
                self.close_session_state(session, code, reason.to_owned(), false);
            }
            SessionState::AwaitingSettings { .. } | SessionState::Requested { .. } => {
                match self.role {
                    Role::Client => {
                        self.actions.push_back(Action::Reset {
                            stream,
                            code: Code::H3_REQUEST_CANCELLED,
                        });
                        self.actions.push_back(Action::StopSending {
                            stream,
                            code: Code::H3_REQUEST_CANCELLED,
                        });
                        self.streams.remove(&stream);
                        self.close_session_state(session, code, reason.to_owned(), false);
                    }
                    Role::Server => return self.reject_session(session, 404),
                }
            }
        }
        Ok(())
    }

    /// Asks the peer to wind a session down (DRAIN_WEBTRANSPORT_SESSION).
    pub fn drain_session(&mut self, session: SessionId) -> Result<(), SessionError> {
        if !self.is_established(session) {
            return Err(SessionError::NotEstablished(session));
        }
        let bytes = self.capsule_bytes(&Capsule::DrainSession);
        self.write(session.stream_id(), bytes, false);
        Ok(())
    }

    /// Checks that a new stream may be opened in `session` and returns the preamble to
    /// write at its start.
    pub fn open_stream(&self, session: SessionId, bidi: bool) -> Result<Preamble, SessionError> {
        if !self.is_established(session) {
            return Err(SessionError::NotEstablished(session));
        }
        Ok(Preamble::new(session, bidi))
    }

    /// Builds the QUIC datagram for `payload` in `session`.
    pub fn encode_datagram(
        &self,
        session: SessionId,
        payload: &[u8],
    ) -> Result<Bytes, SessionError> {
        let mut out = Vec::with_capacity(datagram::header_len(session) + payload.len());
        self.encode_datagram_into(session, payload, &mut out)?;
        Ok(out.into())
    }

    /// Appends the QUIC datagram for `payload` in `session` to `out` (nothing on error):
    /// lets the caller build datagrams in a buffer it reuses instead of allocating one
    /// each.
    pub fn encode_datagram_into<B: BufMut>(
        &self,
        session: SessionId,
        payload: &[u8],
        out: &mut B,
    ) -> Result<(), SessionError> {
        if !self.is_established(session) {
            return Err(SessionError::NotEstablished(session));
        }
        if !self
            .peer_settings
            .as_ref()
            .is_some_and(Settings::datagrams_enabled)
        {
            return Err(SessionError::DatagramsDisabled);
        }
        datagram::encode_header(session, out);
        out.put_slice(payload);
        Ok(())
    }

    /// (Server) Sends GOAWAY: no new sessions after those already requested. Returns the
    /// id sent.
    pub fn goaway(&mut self) -> u64 {
        let id = match self.role {
            // RFC 9114 §5.2: a server sends the first client-initiated bidirectional
            // stream id it will not process.
            Role::Server => self.max_request_id.map_or(0, |m| m + 4),
            // A client sends a push id; we never allow push, so 0.
            Role::Client => 0,
        };
        let id = self.goaway_sent.map_or(id, |prev| prev.min(id));
        self.goaway_sent = Some(id);
        let mut out = Vec::new();
        Frame::Goaway(varint::VarInt::from_u64(id).unwrap_or(varint::VarInt::MAX)).encode(&mut out);
        self.write(self.local.control, out.into(), false);
        id
    }

    /// Writes a reserved (GREASE) frame on our control stream. The peer ignores it
    /// (RFC 9114 §7.2.8) but its QUIC stack acknowledges the packet, which makes it a
    /// liveness probe.
    pub fn send_grease(&mut self) {
        let mut out = Vec::new();
        Frame::Unknown {
            ty: 0x21 + 0x1f * 7,
            len: 0,
        }
        .encode(&mut out);
        self.write(self.local.control, out.into(), false);
    }

    /// Closes the connection with an application error (for example when the caller's
    /// own limits are exceeded); pending sessions are failed.
    pub fn close(&mut self, code: Code, reason: impl Into<String>) {
        self.connection_error(code, reason.into());
    }

    // ---- internals ----

    fn is_local(&self, stream: u64) -> bool {
        let client_initiated = stream & 1 == 0;
        client_initiated == (self.role == Role::Client)
    }

    fn session_limit(&self) -> u64 {
        let ours = u64::from(self.config.max_sessions);
        match self
            .peer_settings
            .as_ref()
            .and_then(Settings::wt_max_sessions)
        {
            Some(peer) if self.role == Role::Client => ours.min(peer.max(1)),
            _ => ours,
        }
    }

    fn request_stream(&self) -> RequestStream {
        let mut reader = FrameReader::new(self.frame_limits());
        // pywebtransport 0.8.1 writes capsules onto the CONNECT stream without a DATA
        // frame around them (docs/protocol.md). A capsule has a frame's layout, so its
        // close and drain capsules read as frames of those types; HTTP/3 would skip them
        // as unknown frames, which would lose the peer's close code. We take them.
        reader.buffer_type(crate::capsule::ty::CLOSE_WEBTRANSPORT_SESSION);
        reader.buffer_type(crate::capsule::ty::DRAIN_WEBTRANSPORT_SESSION);
        RequestStream {
            reader,
            capsules: CapsuleReader::new(self.config.max_capsule_size),
            got_headers: false,
            closed: false,
        }
    }

    fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_headers: self.config.max_field_section_size,
            ..FrameLimits::default()
        }
    }

    fn write(&mut self, stream: u64, data: Bytes, fin: bool) {
        self.actions.push_back(Action::Write { stream, data, fin });
    }

    fn capsule_bytes(&self, capsule: &Capsule) -> Bytes {
        let len = capsule.encoded_len();
        let mut out = Vec::with_capacity(len + 9);
        if !self.config.unframed_capsules {
            FrameHeader {
                ty: crate::frame::ty::DATA,
                len: len as u64,
            }
            .encode(&mut out);
        }
        capsule.encode(&mut out);
        out.into()
    }

    fn send_headers(&mut self, stream: u64, fields: &[qpack::HeaderField], fin: bool) {
        let mut block = Vec::new();
        qpack::encode_field_section(fields, &mut block);
        let mut out = Vec::with_capacity(block.len() + 9);
        Frame::Headers(block.into()).encode(&mut out);
        self.write(stream, out.into(), fin);
    }

    fn send_request(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let SessionState::AwaitingSettings { request, deadline } = &s.state else {
            return;
        };
        let deadline = *deadline;
        let mut request = ConnectRequest::clone(request);
        let peer = self.peer_settings.as_ref();
        let missing = match peer {
            Some(p) if !p.connect_protocol_enabled() => Some("ENABLE_CONNECT_PROTOCOL"),
            Some(p) if !p.datagrams_enabled() => Some("H3_DATAGRAM"),
            Some(p) if p.wt_draft().is_none() => Some("a WebTransport setting"),
            _ => None,
        };
        if let Some(what) = missing {
            self.reject_client_session(session, RejectReason::Unsupported(what), None, false);
            return;
        }
        let draft = self.draft.unwrap_or(WtDraft::Draft02);
        request.protocol = if draft >= WtDraft::Draft15 {
            UpgradeToken::WebTransportH3
        } else {
            UpgradeToken::WebTransport
        };
        request.draft02 = draft == WtDraft::Draft02;
        s.state = SessionState::Requested {
            deadline: Some(deadline),
        };
        self.send_headers(session.stream_id(), &request.to_fields(), false);
    }

    fn connection_error(&mut self, code: Code, reason: String) {
        if self.error.is_some() {
            return;
        }
        debug!(%code, %reason, "HTTP/3 connection error");
        self.error = Some((code, reason.clone()));
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            let established = self.is_established(id);
            if established {
                self.close_session_state(id, 0, reason.clone(), true);
            } else if self.role == Role::Client {
                self.reject_client_session(id, RejectReason::GoingAway, None, false);
            } else {
                self.forget_session(id);
            }
        }
        self.pending_streams.clear();
        self.pending_datagrams.clear();
        self.actions.push_back(Action::CloseConnection {
            code,
            reason: reason.clone(),
        });
        self.events
            .push_back(Event::ConnectionError { code, reason });
    }

    fn reject_client_session(
        &mut self,
        session: SessionId,
        reason: RejectReason,
        response: Option<ConnectResponse>,
        reset: bool,
    ) {
        if self.role == Role::Server {
            // A server's unanswered request: refuse it.
            let _ = self.reject_session(session, 503);
            return;
        }
        if reset {
            self.actions.push_back(Action::Reset {
                stream: session.stream_id(),
                code: Code::H3_REQUEST_CANCELLED,
            });
            self.actions.push_back(Action::StopSending {
                stream: session.stream_id(),
                code: Code::H3_REQUEST_CANCELLED,
            });
        }
        self.streams.remove(&session.stream_id());
        self.forget_session(session);
        self.events.push_back(Event::SessionRejected {
            session,
            reason,
            response,
        });
    }

    /// Drops a session that never opened, refusing what was buffered for it. What the
    /// peer still sends on its CONNECT stream is read and dropped.
    fn forget_session(&mut self, session: SessionId) {
        self.sessions.remove(&session);
        if let Some(StreamKind::Request(r)) = self.streams.get_mut(&session.stream_id()) {
            r.closed = true;
        }
        self.remember_closed(session);
        self.drop_pending(session, Code::WT_SESSION_GONE);
    }

    fn close_session_state(&mut self, session: SessionId, code: u32, reason: String, remote: bool) {
        if self.sessions.remove(&session).is_none() {
            return;
        }
        if let Some(StreamKind::Request(r)) = self.streams.get_mut(&session.stream_id()) {
            r.closed = true;
        }
        self.remember_closed(session);
        self.drop_pending(session, Code::WT_SESSION_GONE);
        self.events.push_back(Event::SessionClosed {
            session,
            code,
            reason,
            remote,
        });
    }

    fn remember_closed(&mut self, session: SessionId) {
        if self.config.closed_session_memory == 0 {
            return;
        }
        if self.closed_sessions.len() >= self.config.closed_session_memory {
            self.closed_sessions.pop_front();
        }
        self.closed_sessions.push_back(session);
    }

    fn drop_pending(&mut self, session: SessionId, code: Code) {
        let ids: Vec<(u64, bool)> = self
            .pending_streams
            .iter()
            .filter(|(_, p)| p.session == session)
            .map(|(id, p)| (*id, p.bidi))
            .collect();
        for (id, bidi) in ids {
            self.pending_streams.remove(&id);
            self.refuse_stream(id, bidi, code);
        }
        let before = self.pending_datagrams.len();
        self.pending_datagrams.retain(|d| d.0 != session);
        self.stats.datagrams_dropped += (before - self.pending_datagrams.len()) as u64;
    }

    fn refuse_stream(&mut self, stream: u64, bidi: bool, code: Code) {
        self.actions.push_back(Action::StopSending { stream, code });
        if bidi {
            self.actions.push_back(Action::Reset { stream, code });
        }
    }

    /// A CONNECT stream ended for the session: the peer's side finished or was reset
    /// (`reader_done`), or the peer stopped our side (`reset` carries its code).
    fn session_stream_ended(&mut self, session: SessionId, reset: Option<Code>, reader_done: bool) {
        let stream = session.stream_id();
        match self.sessions.get(&session).map(|s| &s.state) {
            Some(SessionState::Established { .. }) => {
                // A FIN without CLOSE_WEBTRANSPORT_SESSION is a close with code 0
                // (draft-ietf-webtrans-http3 §6). Finish our side too.
                self.write(stream, Bytes::new(), true);
                self.close_session_state(session, 0, String::new(), true);
            }
            Some(_) if self.role == Role::Client => {
                let reason = match reset {
                    Some(code) => RejectReason::Reset(code),
                    None => {
                        RejectReason::Malformed("request stream ended without a response".into())
                    }
                };
                self.reject_client_session(session, reason, None, false);
            }
            Some(_) => {
                // Server: the client gave up on its request.
                self.forget_session(session);
            }
            None => {}
        }
        if reader_done {
            self.streams.remove(&stream);
        } else if let Some(StreamKind::Request(r)) = self.streams.get_mut(&stream) {
            r.closed = true;
        }
    }

    fn release_pending(&mut self, session: SessionId) {
        let mut ids: Vec<u64> = self
            .pending_streams
            .iter()
            .filter(|(_, p)| p.session == session)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(p) = self.pending_streams.remove(&id) {
                self.events.push_back(Event::IncomingStream {
                    session,
                    stream: id,
                    bidi: p.bidi,
                    prefix: p.prefix,
                });
            }
        }
        let mut keep = VecDeque::with_capacity(self.pending_datagrams.len());
        for (s, payload, deadline) in self.pending_datagrams.drain(..) {
            if s == session {
                self.events.push_back(Event::Datagram { session, payload });
            } else {
                keep.push_back((s, payload, deadline));
            }
        }
        self.pending_datagrams = keep;
    }

    /// Whether a session id may still become a session (so its streams and datagrams
    /// are worth buffering).
    fn may_open(&self, session: SessionId) -> bool {
        if self.closed_sessions.contains(&session) || self.error.is_some() {
            return false;
        }
        match self.role {
            // A client knows every session it opened.
            Role::Client => self.sessions.contains_key(&session),
            // A server may not have seen the CONNECT stream yet.
            Role::Server => self.goaway_sent.is_none_or(|g| session.stream_id() < g),
        }
    }

    fn route_datagram(&mut self, now: Instant, session: SessionId, payload: Bytes) {
        if self.is_established(session) {
            self.events.push_back(Event::Datagram { session, payload });
        } else if self.may_open(session)
            && self.pending_datagrams.len() < self.config.max_pending_datagrams
        {
            self.pending_datagrams
                .push_back((session, payload, now + self.config.pending_timeout));
        } else {
            debug!(%session, "datagram dropped: session not open and buffer full or session gone");
            self.stats.datagrams_dropped += 1;
        }
    }

    fn route_stream(
        &mut self,
        now: Instant,
        stream: u64,
        session: SessionId,
        bidi: bool,
        prefix: Bytes,
    ) -> Feed {
        if self.is_established(session) {
            self.events.push_back(Event::IncomingStream {
                session,
                stream,
                bidi,
                prefix,
            });
            return Feed::Detach;
        }
        if !self.may_open(session) {
            debug!(stream, %session, "stream for a closed or unknown session refused");
            self.refuse_stream(stream, bidi, Code::WT_SESSION_GONE);
            self.stats.streams_gone += 1;
            return Feed::Done;
        }
        if self.pending_streams.len() >= self.config.max_pending_streams {
            debug!(stream, %session, "buffered stream limit reached");
            self.refuse_stream(stream, bidi, Code::WT_BUFFERED_STREAM_REJECTED);
            self.stats.streams_rejected += 1;
            return Feed::Done;
        }
        self.pending_streams.insert(
            stream,
            PendingStream {
                session,
                bidi,
                prefix,
                deadline: now + self.config.pending_timeout,
            },
        );
        Feed::Detach
    }
}

fn is_uni(stream: u64) -> bool {
    stream & 2 != 0
}
