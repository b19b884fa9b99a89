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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::debug;

use crate::capsule::{Capsule, CapsuleError, CapsuleReader};
use crate::datagram;
use crate::error::Code;
use crate::frame::{Frame, FrameEvent, FrameHeader, FrameLimits, FrameReader};
use crate::headers::{ConnectRequest, ConnectResponse, UpgradeToken};
use crate::qpack;
use crate::settings::{Settings, WtDraft};
use crate::stream_header::{BidiStreamHeader, SessionId, UniStreamHeader};
use crate::varint;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens sessions with extended CONNECT.
    Client,
    /// Accepts or rejects sessions.
    Server,
}

/// Limits and options of the state machine. Every buffer a peer can fill has a cap here.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most sessions open at once on this connection (requested or established).
    pub max_sessions: u32,
    /// Largest field section we accept (sent as SETTINGS_MAX_FIELD_SECTION_SIZE).
    pub max_field_section_size: u64,
    /// Largest capsule we buffer (close reasons need 1028 bytes).
    pub max_capsule_size: u64,
    /// Most WebTransport streams held, over all sessions, while their session is not yet
    /// established. More are refused with WT_BUFFERED_STREAM_REJECTED.
    pub max_pending_streams: usize,
    /// Most datagrams held while their session is not yet established; more are dropped
    /// and counted.
    pub max_pending_datagrams: usize,
    /// How long a stream or datagram may wait for its session before it is refused.
    pub pending_timeout: Duration,
    /// How long a client waits for the answer to its CONNECT request.
    pub session_timeout: Duration,
    /// Closed sessions remembered, so that late streams for them are refused with
    /// WT_SESSION_GONE rather than buffered.
    pub closed_session_memory: usize,
    /// Write capsules onto the CONNECT stream without the HTTP/3 DATA frame around them.
    /// Only for pywebtransport 0.8.1, which expects that (docs/protocol.md); off by default.
    pub unframed_capsules: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_sessions: 16,
            max_field_section_size: 16 * 1024,
            max_capsule_size: 8 * 1024,
            max_pending_streams: 32,
            max_pending_datagrams: 64,
            pending_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            closed_session_memory: 64,
            unframed_capsules: false,
        }
    }
}

/// The stream ids of our own three unidirectional HTTP/3 streams, opened by the caller
/// before the state machine is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStreams {
    /// Our control stream.
    pub control: u64,
    /// Our QPACK encoder stream.
    pub encoder: u64,
    /// Our QPACK decoder stream.
    pub decoder: u64,
}

/// What the caller should do with a stream after [`Connection::handle_stream_data`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Feed {
    /// Keep reading it and feeding the bytes here.
    Continue,
    /// It is a WebTransport stream: read it yourself from now on (the bytes already fed
    /// after its preamble come with [`Event::IncomingStream`]).
    Detach,
    /// Stop reading it; the core has no further use for its bytes.
    Done,
}

/// Something the caller must do on the QUIC connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `data` on a stream, then finish it if `fin`.
    Write {
        /// QUIC stream id.
        stream: u64,
        /// Bytes to write.
        data: Bytes,
        /// Finish the stream after them.
        fin: bool,
    },
    /// Reset the sending side of a stream.
    Reset {
        /// QUIC stream id.
        stream: u64,
        /// HTTP/3 error code.
        code: Code,
    },
    /// Ask the peer to stop sending on a stream.
    StopSending {
        /// QUIC stream id.
        stream: u64,
        /// HTTP/3 error code.
        code: Code,
    },
    /// Close the whole QUIC connection.
    CloseConnection {
        /// HTTP/3 error code.
        code: Code,
        /// Reason phrase.
        reason: String,
    },
}

/// Why a client's session did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The server answered with a status outside 2xx.
    Status(u16),
    /// The server's SETTINGS do not offer WebTransport (what is missing is said).
    Unsupported(&'static str),
    /// No answer came within the session timeout.
    Timeout,
    /// The request stream was reset, with this code.
    Reset(Code),
    /// The answer was malformed.
    Malformed(String),
    /// The connection is going away (GOAWAY) or closed.
    GoingAway,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer's SETTINGS arrived; `draft` is the WebTransport draft we will speak.
    PeerSettings {
        /// The settings, GREASE removed.
        settings: Settings,
        /// The draft chosen, if the peer offers WebTransport at all.
        draft: Option<WtDraft>,
    },
    /// (Server) A client asks for a session; answer with `accept_session` or
    /// `reject_session`.
    SessionRequested {
        /// The session.
        session: SessionId,
        /// The validated request.
        request: ConnectRequest,
    },
    /// The session is open (client: 2xx received; server: accepted).
    SessionEstablished {
        /// The session.
        session: SessionId,
        /// The response sent or received.
        response: ConnectResponse,
    },
    /// (Client) The session did not open.
    SessionRejected {
        /// The session.
        session: SessionId,
        /// Why.
        reason: RejectReason,
        /// The response, if one came.
        response: Option<ConnectResponse>,
    },
    /// The peer opened a WebTransport stream in an established session.
    IncomingStream {
        /// The session.
        session: SessionId,
        /// QUIC stream id.
        stream: u64,
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// Payload bytes that followed the preamble in what was fed so far.
        prefix: Bytes,
    },
    /// A datagram for an established session.
    Datagram {
        /// The session.
        session: SessionId,
        /// Its payload.
        payload: Bytes,
    },
    /// The peer asks to wind the session down (DRAIN_WEBTRANSPORT_SESSION).
    SessionDraining {
        /// The session.
        session: SessionId,
    },
    /// The session is closed; `remote` tells which side closed it.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Application error code (0 when the stream ended without a capsule).
        code: u32,
        /// Reason.
        reason: String,
        /// Whether the peer closed it.
        remote: bool,
    },
    /// The peer sent GOAWAY with this id.
    GoAway {
        /// Stream id (from a server) or push id (from a client).
        id: u64,
    },
    /// A connection error: the connection is closed with this code.
    ConnectionError {
        /// HTTP/3 error code.
        code: Code,
        /// What went wrong.
        reason: String,
    },
}

/// An application command that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No such session, or it is closed.
    #[error("session {0} is not open")]
    NotOpen(SessionId),
    /// The session is not established yet (or no longer).
    #[error("session {0} is not established")]
    NotEstablished(SessionId),
    /// Too many sessions on this connection.
    #[error("session limit of {0} reached")]
    TooManySessions(u64),
    /// The stream id cannot carry a session.
    #[error("stream {0} cannot carry a session")]
    BadStream(u64),
    /// This role cannot do that.
    #[error("a {0:?} cannot do this")]
    WrongRole(Role),
    /// The connection is closed or going away.
    #[error("connection is closed or going away")]
    Closed,
    /// The peer does not accept HTTP datagrams.
    #[error("peer did not enable HTTP datagrams")]
    DatagramsDisabled,
    /// A close reason over 1024 bytes.
    #[error("close reason over 1024 bytes")]
    ReasonTooLong,
}

/// Counters of what the core refused or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams dropped (no room in the pending buffer, unknown or closed session).
    pub datagrams_dropped: u64,
    /// Streams refused with WT_BUFFERED_STREAM_REJECTED.
    pub streams_rejected: u64,
    /// Streams refused with WT_SESSION_GONE.
    pub streams_gone: u64,
    /// Sessions refused by the limit.
    pub sessions_refused: u64,
}

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
        request: ConnectRequest,
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
        let mut enc = Vec::new();
        UniStreamHeader::QpackEncoder.encode(&mut enc);
        c.write(local.encoder, enc.into(), false);
        let mut dec = Vec::new();
        UniStreamHeader::QpackDecoder.encode(&mut dec);
        c.write(local.decoder, dec.into(), false);
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
            || stream == self.local.encoder
            || stream == self.local.decoder
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
                state: SessionState::AwaitingSettings { request, deadline },
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
    pub fn open_stream(&self, session: SessionId, bidi: bool) -> Result<Bytes, SessionError> {
        if !self.is_established(session) {
            return Err(SessionError::NotEstablished(session));
        }
        let mut out = Vec::with_capacity(10);
        if bidi {
            BidiStreamHeader::encode_webtransport(session, &mut out);
        } else {
            UniStreamHeader::WebTransport(session).encode(&mut out);
        }
        Ok(out.into())
    }

    /// Builds the QUIC datagram for `payload` in `session`.
    pub fn encode_datagram(
        &self,
        session: SessionId,
        payload: &[u8],
    ) -> Result<Bytes, SessionError> {
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
        Ok(datagram::encode(session, payload))
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
        let mut request = request.clone();
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

    /// Feeds bytes to one stream. Returns the stream's new state (None: forget it) and
    /// what the caller should do, or a connection error.
    fn feed(
        &mut self,
        now: Instant,
        stream: u64,
        kind: StreamKind,
        data: &[u8],
        fin: bool,
    ) -> Result<(Option<StreamKind>, Feed), (Code, String)> {
        match kind {
            StreamKind::UniPreamble(mut buf) => {
                buf.extend_from_slice(data);
                let Some((header, n)) =
                    UniStreamHeader::decode(&buf).map_err(|e| (e.code(), e.to_string()))?
                else {
                    if fin {
                        // A uni stream that ended before saying what it is: nothing to do.
                        return Ok((None, Feed::Done));
                    }
                    return Ok((Some(StreamKind::UniPreamble(buf)), Feed::Continue));
                };
                let rest = buf.split_off(n);
                self.start_uni(now, stream, header, rest, fin)
            }
            StreamKind::BidiPreamble(mut buf) => {
                buf.extend_from_slice(data);
                let Some((header, n)) =
                    BidiStreamHeader::decode(&buf).map_err(|e| (e.code(), e.to_string()))?
                else {
                    if fin {
                        if self.role == Role::Server {
                            // RFC 9114 §4.1.2: a request stream that ends without a
                            // complete request is H3_REQUEST_INCOMPLETE.
                            self.refuse_stream(stream, true, Code::H3_REQUEST_INCOMPLETE);
                        }
                        return Ok((None, Feed::Done));
                    }
                    return Ok((Some(StreamKind::BidiPreamble(buf)), Feed::Continue));
                };
                match header {
                    BidiStreamHeader::WebTransport(session) => {
                        let rest = buf.split_off(n).freeze();
                        Ok((None, self.route_stream(now, stream, session, true, rest)))
                    }
                    BidiStreamHeader::Request => {
                        if self.role == Role::Client {
                            // RFC 9114 §6.1: "Clients MUST treat receipt of a
                            // server-initiated bidirectional stream as a connection error
                            // of type H3_STREAM_CREATION_ERROR unless such an extension has
                            // been negotiated" (WebTransport's is the 0x41 signal).
                            return Err((
                                Code::H3_STREAM_CREATION_ERROR,
                                format!("server opened bidirectional stream {stream} that is not WebTransport"),
                            ));
                        }
                        self.max_request_id =
                            Some(self.max_request_id.map_or(stream, |m| m.max(stream)));
                        if self.goaway_sent.is_some_and(|g| stream >= g) {
                            // RFC 9114 §5.2: requests at or above the GOAWAY id are refused.
                            self.refuse_stream(stream, true, Code::H3_REQUEST_REJECTED);
                            return Ok((None, Feed::Done));
                        }
                        let req = self.request_stream();
                        self.feed(now, stream, StreamKind::Request(Box::new(req)), &buf, fin)
                    }
                }
            }
            StreamKind::Control {
                mut reader,
                mut got_settings,
            } => {
                reader.push(data);
                while let Some(ev) = reader
                    .poll()
                    .map_err(|e| (e.code(), format!("control stream: {e}")))?
                {
                    self.on_control(&mut got_settings, ev)?;
                }
                if fin {
                    return Err((
                        Code::H3_CLOSED_CRITICAL_STREAM,
                        "peer closed its control stream".into(),
                    ));
                }
                Ok((
                    Some(StreamKind::Control {
                        reader,
                        got_settings,
                    }),
                    Feed::Continue,
                ))
            }
            StreamKind::QpackEncoder(mut buf) => {
                buf.extend_from_slice(data);
                while let Some((_, n)) = qpack::parse_encoder_instruction(&buf)
                    .map_err(|e| (e.code(), format!("QPACK encoder stream: {e}")))?
                {
                    let _ = buf.split_to(n);
                }
                if fin {
                    return Err((
                        Code::H3_CLOSED_CRITICAL_STREAM,
                        "peer closed its QPACK encoder stream".into(),
                    ));
                }
                Ok((Some(StreamKind::QpackEncoder(buf)), Feed::Continue))
            }
            StreamKind::QpackDecoder(mut buf) => {
                buf.extend_from_slice(data);
                while let Some((_, n)) = qpack::parse_decoder_instruction(&buf)
                    .map_err(|e| (e.code(), format!("QPACK decoder stream: {e}")))?
                {
                    let _ = buf.split_to(n);
                }
                if fin {
                    return Err((
                        Code::H3_CLOSED_CRITICAL_STREAM,
                        "peer closed its QPACK decoder stream".into(),
                    ));
                }
                Ok((Some(StreamKind::QpackDecoder(buf)), Feed::Continue))
            }
            StreamKind::Request(mut req) => {
                let session =
                    SessionId::from_stream_id(stream).map_err(|e| (e.code(), e.to_string()))?;
                req.reader.push(data);
                loop {
                    let ev = match req.reader.poll() {
                        Ok(Some(ev)) => ev,
                        Ok(None) => break,
                        Err(e) => return Err((e.code(), format!("request stream {stream}: {e}"))),
                    };
                    if req.closed {
                        continue;
                    }
                    if let Some(feed) = self.on_request_frame(now, stream, session, &mut req, ev)? {
                        return Ok((None, feed));
                    }
                }
                if fin {
                    if !req.reader.is_at_boundary() {
                        // RFC 9114 §7.1: a frame cut short by the end of the stream.
                        return Err((
                            Code::H3_FRAME_ERROR,
                            format!("request stream {stream} ended inside a frame"),
                        ));
                    }
                    if !req.got_headers && self.role == Role::Server {
                        // RFC 9114 §4.1.2: a request stream that ends without a complete
                        // request is H3_REQUEST_INCOMPLETE.
                        self.refuse_stream(stream, true, Code::H3_REQUEST_INCOMPLETE);
                        return Ok((None, Feed::Done));
                    }
                    if !req.closed {
                        if let Err(e) = req.capsules.finish() {
                            debug!(stream, error = %e, "CONNECT stream ended inside a capsule");
                        }
                    }
                    self.session_stream_ended(session, None, true);
                    return Ok((None, Feed::Done));
                }
                Ok((Some(StreamKind::Request(req)), Feed::Continue))
            }
        }
    }

    fn start_uni(
        &mut self,
        now: Instant,
        stream: u64,
        header: UniStreamHeader,
        rest: BytesMut,
        fin: bool,
    ) -> Result<(Option<StreamKind>, Feed), (Code, String)> {
        let critical = |slot: &mut Option<u64>, name: &str| -> Result<(), (Code, String)> {
            // RFC 9114 §6.2.1: "Only one control stream per peer is permitted; receipt of a
            // second stream claiming to be a control stream MUST be treated as a
            // connection error of type H3_STREAM_CREATION_ERROR." RFC 9204 §4.2: likewise
            // for the QPACK streams.
            if slot.is_some() {
                return Err((
                    Code::H3_STREAM_CREATION_ERROR,
                    format!("second {name} stream {stream}"),
                ));
            }
            *slot = Some(stream);
            Ok(())
        };
        let kind = match header {
            UniStreamHeader::Control => {
                critical(&mut self.peer_control, "control")?;
                StreamKind::Control {
                    reader: FrameReader::new(self.frame_limits()),
                    got_settings: false,
                }
            }
            UniStreamHeader::QpackEncoder => {
                critical(&mut self.peer_encoder, "QPACK encoder")?;
                StreamKind::QpackEncoder(BytesMut::new())
            }
            UniStreamHeader::QpackDecoder => {
                critical(&mut self.peer_decoder, "QPACK decoder")?;
                StreamKind::QpackDecoder(BytesMut::new())
            }
            UniStreamHeader::Push => {
                // RFC 9114 §6.2.2: only servers push, and only after MAX_PUSH_ID, which we
                // never send: a push stream from a client is H3_STREAM_CREATION_ERROR, one
                // from a server H3_ID_ERROR.
                let code = match self.role {
                    Role::Server => Code::H3_STREAM_CREATION_ERROR,
                    Role::Client => Code::H3_ID_ERROR,
                };
                return Err((code, format!("push stream {stream} without MAX_PUSH_ID")));
            }
            UniStreamHeader::WebTransport(session) => {
                return Ok((
                    None,
                    self.route_stream(now, stream, session, false, rest.freeze()),
                ));
            }
            UniStreamHeader::Unknown(t) => {
                // RFC 9114 §6.2: "Recipients of unknown stream types MUST either abort
                // reading of the stream or discard incoming data without further
                // processing. If reading is aborted, the recipient SHOULD use the
                // H3_STREAM_CREATION_ERROR error code".
                debug!(
                    stream,
                    stream_type = t,
                    grease = header.is_grease(),
                    "unknown uni stream type stopped"
                );
                self.actions.push_back(Action::StopSending {
                    stream,
                    code: Code::H3_STREAM_CREATION_ERROR,
                });
                return Ok((None, Feed::Done));
            }
        };
        self.feed(now, stream, kind, &rest, fin)
    }

    fn on_control(
        &mut self,
        got_settings: &mut bool,
        ev: FrameEvent,
    ) -> Result<(), (Code, String)> {
        let frame = match ev {
            FrameEvent::Frame(f) => f,
            FrameEvent::Raw { ty, .. } => Frame::Unknown { ty, len: 0 },
            FrameEvent::DataStart(_) | FrameEvent::DataChunk(_) => {
                // RFC 9114 §7.2.1: DATA on a control stream is H3_FRAME_UNEXPECTED.
                return Err((
                    Code::H3_FRAME_UNEXPECTED,
                    "DATA frame on the control stream".into(),
                ));
            }
        };
        if !*got_settings {
            // RFC 9114 §6.2.1: "If the first frame of the control stream is any other frame
            // type, this MUST be treated as a connection error of type H3_MISSING_SETTINGS."
            let Frame::Settings(settings) = frame else {
                return Err((
                    Code::H3_MISSING_SETTINGS,
                    format!("first control frame is type {:#x}", frame.ty()),
                ));
            };
            *got_settings = true;
            self.on_peer_settings(settings);
            return Ok(());
        }
        match frame {
            // RFC 9114 §7.2.4: "If an endpoint receives a second SETTINGS frame on the
            // control stream, the endpoint MUST respond with a connection error of type
            // H3_FRAME_UNEXPECTED."
            Frame::Settings(_) => Err((Code::H3_FRAME_UNEXPECTED, "second SETTINGS frame".into())),
            Frame::Headers(_) | Frame::Data(_) | Frame::PushPromise => Err((
                Code::H3_FRAME_UNEXPECTED,
                format!("frame type {:#x} on the control stream", frame.ty()),
            )),
            Frame::Goaway(id) => self.on_goaway(id.into_inner()),
            Frame::MaxPushId(_) if self.role == Role::Client => {
                // RFC 9114 §7.2.7: a client receiving MAX_PUSH_ID: H3_FRAME_UNEXPECTED.
                Err((
                    Code::H3_FRAME_UNEXPECTED,
                    "MAX_PUSH_ID sent by a server".into(),
                ))
            }
            Frame::MaxPushId(id) => {
                // RFC 9114 §7.2.7: "receipt of a MAX_PUSH_ID frame that contains a smaller
                // value than previously received MUST be treated as a connection error of
                // type H3_ID_ERROR."
                let id = id.into_inner();
                if self.max_push_id.is_some_and(|prev| id < prev) {
                    return Err((Code::H3_ID_ERROR, format!("MAX_PUSH_ID decreased to {id}")));
                }
                self.max_push_id = Some(id);
                Ok(())
            }
            Frame::CancelPush(id) => {
                // RFC 9114 §7.2.3: a push id we never allowed (no MAX_PUSH_ID sent, or
                // server side where push ids are ours) is H3_ID_ERROR.
                Err((
                    Code::H3_ID_ERROR,
                    format!("CANCEL_PUSH for push id {id} that was never allowed"),
                ))
            }
            Frame::Unknown { ty, len } => {
                debug!(
                    frame_type = ty,
                    len, "unknown frame on the control stream skipped"
                );
                Ok(())
            }
        }
    }

    fn on_goaway(&mut self, id: u64) -> Result<(), (Code, String)> {
        // RFC 9114 §5.2: a GOAWAY from a server carries a client-initiated bidirectional
        // stream id (else H3_ID_ERROR), and the id must never increase (H3_ID_ERROR).
        if self.role == Role::Client && id % 4 != 0 {
            return Err((
                Code::H3_ID_ERROR,
                format!("GOAWAY id {id} is not a client bidi stream id"),
            ));
        }
        if self.goaway_received.is_some_and(|prev| id > prev) {
            return Err((Code::H3_ID_ERROR, format!("GOAWAY id grew to {id}")));
        }
        self.goaway_received = Some(id);
        self.events.push_back(Event::GoAway { id });
        if self.role == Role::Client {
            let refused: Vec<SessionId> = self
                .sessions
                .iter()
                .filter(|(sid, s)| {
                    sid.stream_id() >= id && !matches!(s.state, SessionState::Established { .. })
                })
                .map(|(sid, _)| *sid)
                .collect();
            for s in refused {
                self.reject_client_session(s, RejectReason::GoingAway, None, true);
            }
        }
        Ok(())
    }

    fn on_peer_settings(&mut self, settings: Settings) {
        let draft = settings.wt_draft();
        self.draft = draft;
        debug!(role = ?self.role, settings = %settings, draft = ?draft, "peer SETTINGS received");
        self.peer_settings = Some(settings.clone());
        self.events
            .push_back(Event::PeerSettings { settings, draft });
        match self.role {
            Role::Client => {
                let waiting: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| matches!(s.state, SessionState::AwaitingSettings { .. }))
                    .map(|(id, _)| *id)
                    .collect();
                for id in waiting {
                    self.send_request(id);
                }
            }
            Role::Server => {
                for (session, request) in std::mem::take(&mut self.early_requests) {
                    self.on_session_request(session, request);
                }
            }
        }
    }

    /// Handles one frame event on a request (CONNECT) stream. `Some(feed)` ends the
    /// stream's processing.
    fn on_request_frame(
        &mut self,
        now: Instant,
        stream: u64,
        session: SessionId,
        req: &mut RequestStream,
        ev: FrameEvent,
    ) -> Result<Option<Feed>, (Code, String)> {
        let frame = match ev {
            FrameEvent::DataStart(_) if !req.got_headers => {
                // RFC 9114 §4.1: DATA before HEADERS is H3_FRAME_UNEXPECTED.
                return Err((
                    Code::H3_FRAME_UNEXPECTED,
                    format!("DATA before HEADERS on stream {stream}"),
                ));
            }
            FrameEvent::DataStart(_) => return Ok(None),
            FrameEvent::Raw { ty, payload } => {
                if !req.got_headers {
                    return Err((
                        Code::H3_FRAME_UNEXPECTED,
                        format!("capsule before HEADERS on stream {stream}"),
                    ));
                }
                debug!(
                    stream,
                    capsule_type = ty,
                    "capsule without DATA framing (pywebtransport 0.8.1 style) accepted"
                );
                let capsule =
                    Capsule::from_value(ty, payload).map_err(|e| capsule_error(stream, &e))?;
                self.on_capsule(now, session, capsule);
                if !self.sessions.contains_key(&session) {
                    req.closed = true;
                }
                return Ok(None);
            }
            FrameEvent::DataChunk(chunk) => {
                req.capsules.push(&chunk);
                while let Some(c) = req.capsules.poll().map_err(|e| capsule_error(stream, &e))? {
                    self.on_capsule(now, session, c);
                    if !self.sessions.contains_key(&session) {
                        req.closed = true;
                        break;
                    }
                }
                return Ok(None);
            }
            FrameEvent::Frame(f) => f,
        };
        match frame {
            Frame::Headers(block) => {
                if req.got_headers {
                    // Trailers end the message; a CONNECT stream has nothing after them.
                    debug!(stream, "trailing HEADERS on a CONNECT stream ignored");
                    return Ok(None);
                }
                let fields =
                    match qpack::decode_field_section(&block, self.config.max_field_section_size) {
                        Ok(f) => f,
                        Err(e) => {
                            return Err((
                                e.code(),
                                format!("field section on stream {stream}: {e}"),
                            ))
                        }
                    };
                // RFC 9114 §4.1: a response is zero or more interim (1xx) HEADERS and then
                // the final one; only the final one opens the way for DATA.
                let interim = self.role == Role::Client
                    && ConnectResponse::from_fields(&fields)
                        .is_ok_and(|r| (100..200).contains(&r.status));
                if !interim {
                    req.got_headers = true;
                }
                match self.role {
                    Role::Server => self.on_request_headers(stream, session, &fields),
                    Role::Client => self.on_response_headers(session, &fields),
                }
            }
            Frame::Data(_) => Ok(None),
            Frame::Settings(_) | Frame::Goaway(_) | Frame::MaxPushId(_) | Frame::CancelPush(_) => {
                // RFC 9114 §7.2.4, §7.2.6, §7.2.7, §7.2.3: these frames on a request stream
                // are H3_FRAME_UNEXPECTED.
                Err((
                    Code::H3_FRAME_UNEXPECTED,
                    format!("frame type {:#x} on request stream {stream}", frame.ty()),
                ))
            }
            // RFC 9114 §7.2.5: a server receiving PUSH_PROMISE is H3_FRAME_UNEXPECTED; a
            // client that never sent MAX_PUSH_ID sees a push id above its maximum, which
            // §4.6 makes H3_ID_ERROR.
            Frame::PushPromise => Err(match self.role {
                Role::Server => (
                    Code::H3_FRAME_UNEXPECTED,
                    "PUSH_PROMISE from a client".into(),
                ),
                Role::Client => (Code::H3_ID_ERROR, "PUSH_PROMISE without MAX_PUSH_ID".into()),
            }),
            Frame::Unknown { ty, len } => {
                debug!(
                    stream,
                    frame_type = ty,
                    len,
                    "unknown frame on a CONNECT stream skipped"
                );
                Ok(None)
            }
        }
    }

    fn on_request_headers(
        &mut self,
        stream: u64,
        session: SessionId,
        fields: &[qpack::HeaderField],
    ) -> Result<Option<Feed>, (Code, String)> {
        let request = match ConnectRequest::from_fields(fields) {
            Ok(r) => r,
            Err(e) => {
                // RFC 9114 §4.1.2: a malformed request is a stream error of type
                // H3_MESSAGE_ERROR.
                debug!(stream, error = %e, "malformed CONNECT request");
                if let Some(status) = e.status() {
                    let response = ConnectResponse {
                        status,
                        ..ConnectResponse::default()
                    };
                    self.send_headers(stream, &response.to_fields(), true);
                } else {
                    self.refuse_stream(stream, true, e.code());
                }
                return Ok(Some(Feed::Done));
            }
        };
        if self.sessions.len() >= self.config.max_sessions as usize {
            debug!(
                stream,
                limit = self.config.max_sessions,
                "session limit reached: request rejected"
            );
            self.stats.sessions_refused += 1;
            self.refuse_stream(stream, true, Code::H3_REQUEST_REJECTED);
            return Ok(Some(Feed::Done));
        }
        self.sessions.insert(
            session,
            Session {
                state: SessionState::Requested { deadline: None },
            },
        );
        if self.peer_settings.is_none() {
            self.early_requests.push((session, request));
        } else {
            self.on_session_request(session, request);
        }
        Ok(None)
    }

    fn on_session_request(&mut self, session: SessionId, request: ConnectRequest) {
        if self.draft.is_none() {
            debug!(%session, "client SETTINGS announce no WebTransport draft; assuming draft-02");
        }
        self.events
            .push_back(Event::SessionRequested { session, request });
    }

    fn on_response_headers(
        &mut self,
        session: SessionId,
        fields: &[qpack::HeaderField],
    ) -> Result<Option<Feed>, (Code, String)> {
        let response = match ConnectResponse::from_fields(fields) {
            Ok(r) => r,
            Err(e) => {
                self.reject_client_session(
                    session,
                    RejectReason::Malformed(e.to_string()),
                    None,
                    true,
                );
                return Ok(Some(Feed::Done));
            }
        };
        if !matches!(
            self.sessions.get(&session).map(|s| &s.state),
            Some(SessionState::Requested { .. })
        ) {
            return Ok(Some(Feed::Done));
        }
        if (100..200).contains(&response.status) {
            // Interim responses precede the final one (RFC 9114 §4.1).
            return Ok(None);
        }
        if !response.is_success() {
            let status = response.status;
            self.actions.push_back(Action::StopSending {
                stream: session.stream_id(),
                code: Code::H3_NO_ERROR,
            });
            self.reject_client_session(
                session,
                RejectReason::Status(status),
                Some(response),
                false,
            );
            return Ok(Some(Feed::Done));
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.state = SessionState::Established { draining: false };
        }
        self.events
            .push_back(Event::SessionEstablished { session, response });
        self.release_pending(session);
        Ok(None)
    }

    fn on_capsule(&mut self, _now: Instant, session: SessionId, capsule: Capsule) {
        let Some(state) = self.sessions.get(&session).map(|s| &s.state) else {
            debug!(%session, capsule_type = capsule.ty(), "capsule for a session that is gone dropped");
            return;
        };
        if !matches!(state, SessionState::Established { .. }) {
            if matches!(capsule, Capsule::CloseSession { .. }) && self.role == Role::Server {
                // The client closed before we answered: it gave up on the request.
                self.forget_session(session);
            }
            return;
        }
        match capsule {
            Capsule::CloseSession { code, reason } => {
                // draft-ietf-webtrans-http3 §6: on CLOSE_WEBTRANSPORT_SESSION the receiver
                // closes its side of the CONNECT stream; its streams are reset with
                // WT_SESSION_GONE by whoever holds them.
                self.write(session.stream_id(), Bytes::new(), true);
                self.close_session_state(session, code, reason, true);
            }
            Capsule::DrainSession => {
                if let Some(Session {
                    state: SessionState::Established { draining },
                }) = self.sessions.get_mut(&session)
                {
                    *draining = true;
                }
                self.events.push_back(Event::SessionDraining { session });
            }
            Capsule::Datagram(payload) => {
                if self.is_established(session) {
                    self.events.push_back(Event::Datagram { session, payload });
                }
            }
            // Flow control is announced so large that these carry nothing we act on.
            Capsule::MaxData(_)
            | Capsule::MaxStreams { .. }
            | Capsule::DataBlocked(_)
            | Capsule::StreamsBlocked { .. } => {}
            Capsule::Unknown { ty, len } => {
                debug!(%session, capsule_type = ty, len, "unknown capsule skipped");
            }
        }
    }
}

fn capsule_error(stream: u64, e: &CapsuleError) -> (Code, String) {
    (e.code(), format!("capsule on stream {stream}: {e}"))
}

fn is_uni(stream: u64) -> bool {
    stream & 2 != 0
}
