//! The per-connection HTTP/3 + WebTransport state machine, for both roles.
//!
//! [`Connection`] owns no socket and reads no clock, and it is deterministic: the same
//! inputs in the same order give the same actions and events in the same order (every map
//! whose order can be observed is ordered). The caller (the async library, or a test
//! harness) runs QUIC and moves bytes:
//!
//! ```text
//!   QUIC stream bytes, FIN ──▶ handle_stream_data ─┐          ┌─▶ poll_action: Write / Reset /
//!   RESET_STREAM         ──▶ handle_stream_reset  ├─▶ state ─┤     StopSending / CloseConnection
//!   STOP_SENDING         ──▶ handle_stop_sending  │          └─▶ poll_event: SETTINGS, sessions,
//!   QUIC datagrams       ──▶ handle_datagram      │                incoming streams, datagrams
//!   timer fired          ──▶ handle_timeout       │          poll_timeout: when to call again
//!   QUIC connection gone ──▶ handle_connection_lost
//! ```
//!
//! The four kinds of methods are: getters (`role`, `peer_settings`, `draft`,
//! `session_status`, `stats`); input `handle_*(now, ...)`; application commands
//! (`open_session`, `accept_session`, `reject_session`, `close_session`, `drain_session`,
//! `reserve_stream` + `open_stream`, `stream_accepted`, `stream_done`, `take_send_credit`,
//! `stream_data_read`, `goaway`, `encode_datagram`); and outputs drained with
//! `poll_action`, `poll_event`, `poll_timeout`.
//!
//! The core reads the streams that belong to HTTP/3 itself: the peer's control and QPACK
//! streams, CONNECT streams, and the preamble of every peer-initiated stream. Once a
//! stream's preamble names a WebTransport session, [`handle_stream_data`] answers
//! [`Feed::Detach`] and the caller reads the rest of that stream itself (the bytes that
//! followed the preamble in the same chunk travel in [`Event::IncomingStream`]). Payload of
//! WebTransport streams and datagrams never passes through this type; the caller reports
//! how much it read and wrote, so that session flow control (draft-ietf-webtrans-http3 §5)
//! lives here with every other protocol decision.
//!
//! One record per session holds its state, its flow control and, once it ended, how it
//! ended; one record per WebTransport stream lives while the application holds the
//! stream. When a session ends, the core itself resets and stops every stream of it with
//! WT_SESSION_GONE.
//!
//! [`handle_stream_data`]: Connection::handle_stream_data

mod commands;
mod error;
mod flow;
mod request;
mod session;
mod streams;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::vec_map::VecMap;
use types::MaybeVarint;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use crate::capsule::{Capsule, CapsuleError, CapsuleReader};
use crate::error::Code;
use crate::frame::{Frame, FrameEvent, FrameHeader, FrameLimits, FrameReader};
use crate::headers::{ConnectRequest, ConnectResponse, UpgradeToken};
use crate::qpack;
use crate::settings::{Settings, SettingsError, WtDraft};
use crate::stream_header::{BidiStreamHeader, SessionId, UniStreamHeader};
use crate::varint;

pub use error::{Closure, CriticalStream, FramePlace, ProtocolError, Violation};
pub use types::{
    Action, Buffered, CapsuleFraming, CommandError, Config, Event, Feed, FlowLimits, LocalStreams,
    MissingSetting, RejectReason, Role, SessionEnd, SessionStatus, Stats, StreamHalf,
};

use flow::{Flow, FlowViolation};
use session::{Session, SessionState, WtStream};

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
    /// A CONNECT (request) stream; its id is its session's.
    Request(Box<RequestStream>),
}

#[derive(Debug)]
struct RequestStream {
    reader: FrameReader,
    capsules: CapsuleReader,
    /// HEADERS seen (request on a server, response on a client).
    got_headers: bool,
    /// Set once the session ended; bytes after that are dropped.
    closed: bool,
    /// (Server) When a request whose HEADERS has not come whole is refused; its entry in
    /// `Connection::header_deadlines`.
    header_deadline: Option<Instant>,
}

/// A WebTransport stream that arrived before its session was established.
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
    config: Arc<Config>,
    local: LocalStreams,
    peer_settings: Option<Settings>,
    /// The peer's SETTINGS allow HTTP datagrams: read from them once, not for every
    /// datagram sent.
    peer_datagrams: bool,
    draft: Option<WtDraft>,
    /// Session flow control in effect: both sides announced it (§5.1) on a draft that has
    /// it (draft-13 and later).
    flow_control: bool,
    /// Capsules are written without DATA frames (see [`CapsuleFraming`]).
    unframed: bool,
    peer_control: MaybeVarint,
    peer_encoder: MaybeVarint,
    peer_decoder: MaybeVarint,
    /// Streams the core reads, by id.
    streams: VecMap<u64, StreamKind>,
    /// Every session not yet forgotten, live or ended.
    sessions: VecMap<SessionId, Session>,
    /// Sessions not yet ended (requested or established).
    live_sessions: usize,
    /// The deadlines of sessions waiting for an answer, earliest first: kept in step with
    /// their states by [`Connection::set_state`], so that the next timeout is found
    /// without going through every session.
    deadlines: BTreeSet<(Instant, SessionId)>,
    /// Ended sessions, oldest first, forgotten beyond `closed_session_memory`.
    ended: VecDeque<SessionId>,
    /// WebTransport streams the application holds, by id.
    wt_streams: BTreeMap<u64, WtStream>,
    /// Server: requests that arrived before the client's SETTINGS.
    early_requests: Vec<(SessionId, ConnectRequest)>,
    pending_streams: BTreeMap<u64, PendingStream>,
    pending_datagrams: VecDeque<(SessionId, Bytes, Instant)>,
    /// (Server) Request streams whose HEADERS has not come whole, by the time they are
    /// refused (`pending_timeout` after their first bytes).
    header_deadlines: BTreeSet<(Instant, u64)>,
    goaway_sent: MaybeVarint,
    goaway_received: MaybeVarint,
    /// Server: highest CONNECT stream id seen, for GOAWAY.
    max_request_id: MaybeVarint,
    /// Server: the client's MAX_PUSH_ID (we never push, but it must not decrease).
    max_push_id: MaybeVarint,
    /// Boxed: a live connection has none.
    error: Option<Box<ProtocolError>>,
    /// The QUIC connection is gone: nothing more is sent.
    lost: bool,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Connection {
    /// A new connection state. Queues our control stream (with SETTINGS) and the two QPACK
    /// stream preambles on the streams in `local`.
    ///
    /// `config` may be shared by every connection made with it (an `Arc`).
    pub fn new(role: Role, config: impl Into<Arc<Config>>, local: LocalStreams) -> Self {
        let config = config.into();
        let unframed = config.capsule_framing == CapsuleFraming::Unframed;
        let mut c = Connection {
            role,
            config,
            local,
            peer_settings: None,
            peer_datagrams: false,
            draft: None,
            flow_control: false,
            unframed,
            peer_control: MaybeVarint::NONE,
            peer_encoder: MaybeVarint::NONE,
            peer_decoder: MaybeVarint::NONE,
            streams: VecMap::default(),
            sessions: VecMap::default(),
            live_sessions: 0,
            deadlines: BTreeSet::new(),
            ended: VecDeque::new(),
            wt_streams: BTreeMap::new(),
            early_requests: Vec::new(),
            pending_streams: BTreeMap::new(),
            pending_datagrams: VecDeque::new(),
            header_deadlines: BTreeSet::new(),
            goaway_sent: MaybeVarint::NONE,
            goaway_received: MaybeVarint::NONE,
            max_request_id: MaybeVarint::NONE,
            max_push_id: MaybeVarint::NONE,
            error: None,
            lost: false,
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
        Settings::local_offering(
            self.role == Role::Server,
            self.config.max_sessions.into(),
            self.config.max_field_section_size,
            self.config.flow,
            self.config.drafts,
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

    /// Whether session flow control is in effect (known once the peer's SETTINGS came).
    pub fn flow_control(&self) -> bool {
        self.flow_control
    }

    /// Whether capsules are written without DATA frames (see [`CapsuleFraming`]).
    pub fn unframed_capsules(&self) -> bool {
        self.unframed
    }

    /// Where a session stands; `None` for one never seen or already forgotten.
    pub fn session_status(&self, session: SessionId) -> Option<SessionStatus<'_>> {
        self.sessions.get(&session).map(|s| match &s.state {
            SessionState::AwaitingSettings { .. } | SessionState::Requested { .. } => {
                SessionStatus::Pending
            }
            SessionState::Established { draining, .. } => SessionStatus::Established {
                draining: *draining,
            },
            SessionState::Ended(end) => SessionStatus::Ended(end),
        })
    }

    /// Whether a session is established (and not over).
    pub fn is_established(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| matches!(s.state, SessionState::Established { .. }))
    }

    /// Every session not yet forgotten, live or ended, in id order.
    pub fn session_ids(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
    }

    /// Sessions requested or established.
    pub fn live_sessions(&self) -> usize {
        self.live_sessions
    }

    /// Whether the peer still has the reading side of some session's CONNECT stream open
    /// (a graceful close waits for the peer to close them all, draft-ietf-webtrans-http3
    /// §6).
    pub fn connect_streams_open(&self) -> bool {
        self.streams
            .values()
            .any(|k| matches!(k, StreamKind::Request(_)))
    }

    /// The connection error, once one happened.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.error.as_deref()
    }

    /// The GOAWAY id received from the peer, if any.
    pub fn goaway_received(&self) -> Option<u64> {
        self.goaway_received.get()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// What the core holds for the peer now (for diagnostics: it walks every stream the
    /// core reads).
    pub fn buffered(&self) -> Buffered {
        let mut b = Buffered {
            pending_streams: self.pending_streams.len(),
            pending_datagrams: self.pending_datagrams.len(),
            ..Buffered::default()
        };
        for kind in self.streams.values() {
            b.bytes += match kind {
                StreamKind::UniPreamble(buf)
                | StreamKind::BidiPreamble(buf)
                | StreamKind::QpackEncoder(buf)
                | StreamKind::QpackDecoder(buf) => buf.len(),
                StreamKind::Control { reader, .. } => reader.buffered(),
                StreamKind::Request(r) => {
                    if !r.got_headers {
                        b.partial_requests += 1;
                    }
                    r.reader.buffered() + r.capsules.buffered()
                }
            };
        }
        b.bytes += self
            .pending_streams
            .values()
            .map(|p| p.prefix.len())
            .sum::<usize>();
        b.bytes += self
            .pending_datagrams
            .iter()
            .map(|d| d.1.len())
            .sum::<usize>();
        b
    }

    // ---- outputs ----

    /// The next thing to do on the QUIC connection.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        pop_or_release(&mut self.actions)
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        pop_or_release(&mut self.events)
    }

    /// When [`Connection::handle_timeout`] must be called next, if at all.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.deadlines.first().map(|(d, _)| *d);
        let streams = self.pending_streams.values().map(|p| p.deadline);
        let datagrams = self.pending_datagrams.front().map(|d| d.2);
        let headers = self.header_deadlines.first().map(|(d, _)| *d);
        sessions
            .into_iter()
            .chain(streams)
            .chain(datagrams)
            .chain(headers)
            .min()
    }

    // ---- inputs ----

    /// Time has passed: expire pending streams and datagrams and unanswered requests, in
    /// stream and session id order.
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
        while let Some(&(deadline, stream)) = self.header_deadlines.first() {
            if deadline > now {
                break;
            }
            self.header_deadlines.remove(&(deadline, stream));
            let partial = matches!(
                self.streams.get(&stream),
                Some(StreamKind::Request(r)) if !r.got_headers && r.header_deadline == Some(deadline)
            );
            if partial {
                // A request whose HEADERS never came whole in `pending_timeout`: refused
                // unprocessed (RFC 9114 §4.1.1, H3_REQUEST_REJECTED), so that a peer
                // cannot hold the bytes of unfinished requests for the connection's life.
                debug!(
                    stream,
                    "request headers incomplete at the timeout: rejected"
                );
                self.streams.remove(&stream);
                self.refuse_stream(stream, true, Code::H3_REQUEST_REJECTED);
                self.stats.sessions_refused += 1;
            }
        }
        let timed_out: Vec<SessionId> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in timed_out {
            self.fail_request(id, RejectReason::Timeout, None, true);
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
        self.stream_data(now, stream, data, fin, |n| {
            Bytes::copy_from_slice(&data[n..])
        })
    }

    /// [`Connection::handle_stream_data`] for bytes held as [`Bytes`], as QUIC stacks hand
    /// them out: what follows a WebTransport stream's preamble that came whole in its
    /// first bytes (nearly always) goes to its session without a copy.
    pub fn handle_stream_bytes(
        &mut self,
        now: Instant,
        stream: u64,
        data: Bytes,
        fin: bool,
    ) -> Feed {
        self.stream_data(now, stream, &data, fin, |n| data.slice(n..))
    }

    /// Feeds `data`; `rest(n)` is what follows its first `n` bytes.
    fn stream_data(
        &mut self,
        now: Instant,
        stream: u64,
        data: &[u8],
        fin: bool,
        rest: impl FnOnce(usize) -> Bytes,
    ) -> Feed {
        if self.error.is_some() || (self.lost && !self.streams.contains_key(&stream)) {
            // Once the connection is gone only the CONNECT streams of requests still
            // waiting for their answer are read (see `handle_connection_lost`).
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
                if let Some(feed) = self.whole_preamble(now, stream, data, rest) {
                    return feed;
                }
                if is_uni(stream) {
                    StreamKind::UniPreamble(BytesMut::new())
                } else {
                    StreamKind::BidiPreamble(BytesMut::new())
                }
            }
        };
        let deadline = match &kind {
            StreamKind::Request(r) => r.header_deadline,
            _ => None,
        };
        match self.feed(now, stream, kind, data, fin) {
            Ok((Some(mut kind), feed)) => {
                if let StreamKind::Request(r) = &mut kind {
                    if !self.partial_request(now, stream, r) {
                        return Feed::Done;
                    }
                } else if let Some(d) = deadline {
                    self.header_deadlines.remove(&(d, stream));
                }
                self.streams.insert(stream, kind);
                feed
            }
            Ok((None, feed)) => {
                if let Some(d) = deadline {
                    self.header_deadlines.remove(&(d, stream));
                }
                feed
            }
            Err(e) => {
                self.connection_error(e);
                Feed::Done
            }
        }
    }

    /// (Server) Keeps a request stream's header deadline in step after a feed, and
    /// refuses a new request that cannot finish its HEADERS in its first bytes when
    /// incomplete requests and sessions already fill `max_sessions`. Returns whether the
    /// stream is kept.
    fn partial_request(&mut self, now: Instant, stream: u64, r: &mut RequestStream) -> bool {
        if self.role != Role::Server {
            return true;
        }
        if r.got_headers {
            if let Some(d) = r.header_deadline.take() {
                self.header_deadlines.remove(&(d, stream));
            }
            return true;
        }
        if r.header_deadline.is_some() {
            return true;
        }
        // A request that did not come whole in its first bytes. It counts against the
        // session limit from now on, as it would once complete (RFC 9114 §4.1.1: a
        // request refused unprocessed is H3_REQUEST_REJECTED), so a peer holds at most
        // `max_sessions` unfinished requests of `max_field_section_size` bytes each.
        let partial = self
            .streams
            .values()
            .filter(|k| matches!(k, StreamKind::Request(r) if !r.got_headers))
            .count();
        if self.live_sessions + partial >= self.config.max_sessions as usize {
            debug!(
                stream,
                limit = self.config.max_sessions,
                "unfinished requests and sessions at the session limit: request rejected"
            );
            self.refuse_stream(stream, true, Code::H3_REQUEST_REJECTED);
            self.stats.sessions_refused += 1;
            return false;
        }
        let d = now + self.config.pending_timeout;
        r.header_deadline = Some(d);
        self.header_deadlines.insert((d, stream));
        true
    }

    /// Forgets a request stream's header deadline, if it has one.
    fn forget_header_deadline(&mut self, stream: u64, kind: Option<&StreamKind>) {
        if let Some(StreamKind::Request(r)) = kind {
            if let Some(d) = r.header_deadline {
                self.header_deadlines.remove(&(d, stream));
            }
        }
    }

    /// The peer reset a stream the core reads (RESET_STREAM with `code`).
    pub fn handle_stream_reset(&mut self, stream: u64, code: Code) {
        if let Some(p) = self.pending_streams.remove(&stream) {
            debug!(stream, session = %p.session, %code, "buffered stream reset by peer");
            return;
        }
        let removed = self.streams.remove(&stream);
        self.forget_header_deadline(stream, removed.as_ref());
        let critical = match removed {
            Some(StreamKind::Control { .. }) => Some(CriticalStream::Control),
            Some(StreamKind::QpackEncoder(_)) => Some(CriticalStream::QpackEncoder),
            Some(StreamKind::QpackDecoder(_)) => Some(CriticalStream::QpackDecoder),
            Some(StreamKind::Request(_)) => {
                if let Ok(session) = SessionId::from_stream_id(stream) {
                    self.connect_stream_ended(session, Some(code));
                }
                None
            }
            _ => None,
        };
        if let Some(kind) = critical {
            // RFC 9114 §6.2.1: "If either control stream is closed at any point, this
            // MUST be treated as a connection error of type H3_CLOSED_CRITICAL_STREAM."
            // RFC 9204 §4.2 says the same of the QPACK streams.
            self.connection_error(
                Violation::CriticalStreamClosed {
                    kind,
                    how: Closure::Reset(code),
                }
                .into(),
            );
        }
    }

    /// The peer asked us to stop sending on one of the HTTP/3 streams the core writes.
    pub fn handle_stop_sending(&mut self, stream: u64, code: Code) {
        let critical = if stream == self.local.control {
            Some(CriticalStream::Control)
        } else if Some(stream) == self.local.encoder {
            Some(CriticalStream::QpackEncoder)
        } else if Some(stream) == self.local.decoder {
            Some(CriticalStream::QpackDecoder)
        } else {
            None
        };
        if let Some(kind) = critical {
            self.connection_error(
                Violation::CriticalStreamClosed {
                    kind,
                    how: Closure::Stopped(code),
                }
                .into(),
            );
            return;
        }
        let Ok(session) = SessionId::from_stream_id(stream) else {
            return;
        };
        if self.is_live(session) {
            // Our side of the CONNECT stream can no longer carry capsules: the session
            // is over. The peer's side stays open (it may still send its close capsule
            // and FIN), so its read state is kept and what comes is dropped.
            self.actions.push_back(Action::Reset { stream, code });
            self.end_session(session, SessionEnd::Aborted { code, remote: true });
            self.stats.errors += 1;
        }
    }

    /// A QUIC datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, data: Bytes) {
        if self.error.is_some() || self.lost {
            return;
        }
        match crate::datagram::decode(&data) {
            Ok((session, payload)) => self.route_datagram(now, session, payload),
            // RFC 9297 §2.1: a datagram whose quarter stream id is malformed or out of
            // range "MUST be treated as a connection error of type H3_DATAGRAM_ERROR".
            Err(e) => self.connection_error(e.into()),
        }
    }

    /// The QUIC connection is gone (closed by either side, timed out, reset): nothing more
    /// is sent, and live sessions end with [`SessionEnd::ConnectionClosed`]. A session
    /// whose CONNECT stream is still being read ends only when that stream gives no more
    /// ([`Connection::handle_stream_lost`]): what arrived with the close is still read,
    /// such as a peer's close capsule sent just before its CONNECTION_CLOSE, or a server's
    /// answer to a request it refused before closing.
    pub fn handle_connection_lost(&mut self) {
        if self.lost {
            return;
        }
        self.lost = true;
        let live: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !matches!(s.state, SessionState::Ended(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in live {
            let reading = matches!(
                self.streams.get(&id.stream_id()),
                Some(StreamKind::Request(r)) if !r.closed
            );
            if !reading {
                self.session_lost(id);
            }
        }
        self.pending_streams.clear();
        self.pending_datagrams.clear();
        self.header_deadlines.clear();
        self.streams
            .retain(|_, k| matches!(k, StreamKind::Request(r) if !r.closed));
        self.wt_streams.clear();
        self.actions.clear();
    }

    /// A stream the core reads will give no more bytes: the connection is gone. Its
    /// session, if still live, ends with the connection.
    pub fn handle_stream_lost(&mut self, stream: u64) {
        let removed = self.streams.remove(&stream);
        self.forget_header_deadline(stream, removed.as_ref());
        if let Ok(session) = SessionId::from_stream_id(stream) {
            if self.is_live(session) {
                self.session_lost(session);
            }
        }
    }

    /// A live session's connection is gone.
    fn session_lost(&mut self, session: SessionId) {
        match self.sessions.get(&session).map(|s| &s.state) {
            Some(SessionState::AwaitingSettings { .. } | SessionState::Requested { .. })
                if self.role == Role::Client =>
            {
                self.fail_request(session, RejectReason::ConnectionClosed, None, false)
            }
            _ => self.end_session(session, SessionEnd::ConnectionClosed),
        }
    }

    // ---- internals shared by the submodules ----

    fn is_local(&self, stream: u64) -> bool {
        let client_initiated = stream & 1 == 0;
        client_initiated == (self.role == Role::Client)
    }

    fn frame_limits(&self) -> FrameLimits {
        FrameLimits {
            max_headers: self.config.max_field_section_size,
            ..FrameLimits::default()
        }
    }

    fn write(&mut self, stream: u64, data: Bytes, fin: bool) {
        if self.lost {
            return;
        }
        self.actions.push_back(Action::Write { stream, data, fin });
    }

    fn capsule_bytes(&self, capsule: &Capsule) -> Bytes {
        let len = capsule.encoded_len();
        let mut out = Vec::with_capacity(len + 9);
        if !self.unframed {
            FrameHeader {
                ty: crate::frame::ty::DATA,
                len: len as u64,
            }
            .encode(&mut out);
        }
        capsule.encode(&mut out);
        out.into()
    }

    /// Writes a capsule on a session's CONNECT stream.
    fn send_capsule(&mut self, session: SessionId, capsule: &Capsule, fin: bool) {
        let bytes = self.capsule_bytes(capsule);
        self.write(session.stream_id(), bytes, fin);
    }

    fn send_headers(&mut self, stream: u64, fields: &[qpack::HeaderField], fin: bool) {
        let mut block = Vec::new();
        qpack::encode_field_section(fields, &mut block);
        let mut out = Vec::with_capacity(block.len() + 9);
        Frame::Headers(block.into()).encode(&mut out);
        self.write(stream, out.into(), fin);
    }

    /// Switches to bare capsules in [`CapsuleFraming::Auto`] mode.
    fn prefer_unframed(&mut self, why: &'static str) {
        if self.config.capsule_framing == CapsuleFraming::Auto && !self.unframed {
            debug!(role = ?self.role, why, "writing capsules without DATA frames from now on");
            self.unframed = true;
        }
    }

    fn connection_error(&mut self, error: ProtocolError) {
        if self.error.is_some() || self.lost {
            return;
        }
        debug!(code = %error.code(), error = %error.reason(), "HTTP/3 connection error");
        self.stats.errors += 1;
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !matches!(s.state, SessionState::Ended(_)))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if self.role == Role::Client && !self.is_established(id) {
                self.fail_request(id, RejectReason::ConnectionClosed, None, false);
            } else {
                self.end_session(id, SessionEnd::ConnectionClosed);
            }
        }
        self.pending_streams.clear();
        self.pending_datagrams.clear();
        self.header_deadlines.clear();
        self.actions.push_back(Action::CloseConnection {
            code: error.code(),
            reason: error.reason(),
        });
        self.error = Some(Box::new(error.clone()));
        self.events.push_back(Event::ConnectionError { error });
    }
}

fn is_uni(stream: u64) -> bool {
    stream & 2 != 0
}

/// The front of an output queue; once it is drained, its room is given back. Outputs are
/// taken as soon as they are made, so the queues are empty between inputs, and an idle
/// connection would otherwise hold the room of its largest burst (four events and four
/// actions, ~580 bytes, for an idle session) for its whole life; a burst pays one
/// allocation instead.
fn pop_or_release<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let front = queue.pop_front();
    if front.is_none() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
    front
}

#[cfg(test)]
mod output_queue_tests {
    use super::pop_or_release;
    use std::collections::VecDeque;

    #[test]
    fn a_drained_output_queue_gives_its_room_back() {
        let mut q: VecDeque<u64> = VecDeque::new();
        q.extend([1, 2, 3]);
        assert_eq!(pop_or_release(&mut q), Some(1));
        assert_eq!(pop_or_release(&mut q), Some(2));
        assert_eq!(pop_or_release(&mut q), Some(3));
        assert!(q.capacity() > 0, "kept while the burst is read");
        assert_eq!(pop_or_release(&mut q), None);
        assert_eq!(q.capacity(), 0);
        assert_eq!(pop_or_release(&mut q), None);
    }
}
