//! What the application asks of the core: sessions, streams, flow-control credit,
//! datagrams, GOAWAY.

use bytes::BufMut;

use super::*;
use crate::datagram;
use crate::stream_header::Preamble;

impl Connection {
    /// (Client) Opens a session with an extended CONNECT on `stream`, a new bidirectional
    /// stream the caller opened. The request is sent once the server's SETTINGS have
    /// arrived (they decide the upgrade token).
    pub fn open_session(
        &mut self,
        now: Instant,
        stream: u64,
        request: ConnectRequest,
    ) -> Result<SessionId, CommandError> {
        if self.role != Role::Client {
            return Err(CommandError::WrongRole(self.role));
        }
        if self.error.is_some() || self.lost || self.goaway_received.get().is_some() {
            return Err(CommandError::Closed);
        }
        let session =
            SessionId::from_stream_id(stream).map_err(|_| CommandError::BadStream(stream))?;
        if is_uni(stream) || !self.is_local(stream) || self.sessions.contains_key(&session) {
            return Err(CommandError::BadStream(stream));
        }
        let limit = self.session_limit();
        if self.live_sessions as u64 >= limit {
            self.stats.sessions_refused += 1;
            return Err(CommandError::TooManySessions(limit));
        }
        let deadline = now + self.config.session_timeout;
        self.insert_session(
            session,
            SessionState::AwaitingSettings {
                request: Box::new(request),
                deadline,
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
    /// 2xx; 200 is used if it is not). The response says draft-02 when the request did.
    pub fn accept_session(
        &mut self,
        session: SessionId,
        mut response: ConnectResponse,
    ) -> Result<(), CommandError> {
        if self.role != Role::Server {
            return Err(CommandError::WrongRole(self.role));
        }
        match self.sessions.get(&session).map(|s| &s.state) {
            Some(SessionState::Requested { draft02, .. }) => response.draft02 = *draft02,
            _ => return Err(CommandError::NotOpen(session)),
        }
        let flow = self.new_flow();
        self.set_state(
            session,
            SessionState::Established {
                draining: false,
                flow,
            },
        );
        if !(200..300).contains(&response.status) {
            response.status = 200;
        }
        self.send_headers(session.stream_id(), &response.to_fields(), false);
        self.events
            .push_back(Event::SessionEstablished { session, response });
        self.release_pending(session);
        Ok(())
    }

    /// (Server) Rejects a requested session with a non-2xx `status` (a 2xx becomes 400)
    /// and finishes the stream.
    pub fn reject_session(&mut self, session: SessionId, status: u16) -> Result<(), CommandError> {
        self.reject_session_with(session, ConnectResponse::new(status))
    }

    /// [`Connection::reject_session`] with a whole response: its status (a 2xx is turned
    /// into 400) and headers (for example `retry-after` with a 429).
    pub fn reject_session_with(
        &mut self,
        session: SessionId,
        mut response: ConnectResponse,
    ) -> Result<(), CommandError> {
        if self.role != Role::Server {
            return Err(CommandError::WrongRole(self.role));
        }
        match self.sessions.get(&session).map(|s| &s.state) {
            Some(SessionState::Requested { .. }) => {}
            _ => return Err(CommandError::NotOpen(session)),
        }
        if (200..300).contains(&response.status) {
            response.status = 400;
        }
        // A refusal chooses no subprotocol.
        response.protocol = None;
        let status = response.status;
        // The response and FIN are all: a STOP_SENDING could overtake the response and
        // make the client see a reset instead of the status. What the client still
        // sends on the stream is read and dropped.
        self.send_headers(session.stream_id(), &response.to_fields(), true);
        self.stats.sessions_refused += 1;
        self.end_session(session, SessionEnd::Refused { status });
        Ok(())
    }

    /// Closes a session with an application code and reason (CLOSE_WEBTRANSPORT_SESSION,
    /// then FIN). A client's session that is still being requested is cancelled instead;
    /// a server's unanswered request is refused with 404.
    pub fn close_session(
        &mut self,
        session: SessionId,
        code: u32,
        reason: &str,
    ) -> Result<(), CommandError> {
        let capsule = Capsule::close(code, reason).map_err(|_| CommandError::ReasonTooLong)?;
        let Some(s) = self.sessions.get(&session) else {
            return Err(CommandError::NotOpen(session));
        };
        match s.state {
            SessionState::Established { .. } => {
                // draft-ietf-webtrans-http3 §6: "An endpoint that sends a WT_CLOSE_SESSION
                // capsule MUST immediately send a FIN on the CONNECT Stream." Chromium
                // wants no STOP_SENDING before the capsule (docs/protocol.md); we keep
                // reading until the peer's FIN.
                self.send_capsule(session, &capsule, true);
                self.end_session(
                    session,
                    SessionEnd::Closed {
                        code,
                        reason: reason.to_owned(),
                        remote: false,
                    },
                );
                Ok(())
            }
            SessionState::AwaitingSettings { .. } | SessionState::Requested { .. } => {
                match self.role {
                    Role::Client => {
                        self.fail_request(session, RejectReason::Cancelled, None, true);
                        Ok(())
                    }
                    Role::Server => self.reject_session(session, 404),
                }
            }
            SessionState::Ended(_) => Err(CommandError::NotOpen(session)),
        }
    }

    /// Asks the peer to wind a session down (DRAIN_WEBTRANSPORT_SESSION).
    pub fn drain_session(&mut self, session: SessionId) -> Result<(), CommandError> {
        if !self.is_established(session) {
            return Err(CommandError::NotEstablished(session));
        }
        self.send_capsule(session, &Capsule::DrainSession, false);
        Ok(())
    }

    /// Counts a stream the application is about to open in `session` against the peer's
    /// WT_MAX_STREAMS. When the limit is reached the answer is
    /// [`CommandError::StreamsBlocked`] (and the peer is told once per limit with
    /// WT_STREAMS_BLOCKED); try again after [`Event::SessionCredit`]. Follow a success
    /// with [`Connection::open_stream`], or with [`Connection::release_stream`] if the
    /// stream could not be opened after all.
    pub fn reserve_stream(&mut self, session: SessionId, bidi: bool) -> Result<(), CommandError> {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Err(CommandError::NotEstablished(session));
        };
        if !matches!(s.state, SessionState::Established { .. }) {
            return Err(CommandError::NotEstablished(session));
        }
        let Some(flow) = s.flow_mut() else {
            return Ok(());
        };
        match flow.reserve_stream(bidi) {
            Ok(()) => Ok(()),
            Err((limit, capsule)) => {
                self.stats.flow_blocked += 1;
                if let Some(c) = capsule {
                    self.send_capsule(session, &c, false);
                }
                Err(CommandError::StreamsBlocked {
                    session,
                    bidi,
                    limit,
                })
            }
        }
    }

    /// Undoes a [`Connection::reserve_stream`] whose stream was never opened.
    pub fn release_stream(&mut self, session: SessionId, bidi: bool) {
        if let Some(f) = self.sessions.get_mut(&session).and_then(Session::flow_mut) {
            f.release_stream(bidi);
        }
    }

    /// Registers `stream`, which the caller opened for a reserved stream of `session`, and
    /// returns the preamble to write at its start. From now on the core resets it with
    /// WT_SESSION_GONE if the session ends, until [`Connection::stream_done`] says the
    /// application is done with it.
    pub fn open_stream(
        &mut self,
        session: SessionId,
        stream: u64,
        bidi: bool,
    ) -> Result<Preamble, CommandError> {
        if !self.is_established(session) {
            return Err(CommandError::NotEstablished(session));
        }
        if !self.is_local(stream) || is_uni(stream) == bidi || self.wt_streams.contains_key(&stream)
        {
            return Err(CommandError::BadStream(stream));
        }
        self.wt_streams.insert(
            stream,
            WtStream {
                session,
                bidi,
                incoming: false,
                send_open: true,
                recv_open: bidi,
            },
        );
        Ok(Preamble::new(session, bidi))
    }

    /// The application took an incoming stream of its session's queue (so the queue has
    /// room for another, see [`Config::max_queued_streams`]).
    pub fn stream_accepted(&mut self, stream: u64) {
        let Some(s) = self.wt_streams.get(&stream) else {
            return;
        };
        let i = usize::from(s.bidi);
        if let Some(session) = self.sessions.get_mut(&s.session) {
            session.queued[i] = session.queued[i].saturating_sub(1);
        }
    }

    /// The application is done with one half of a WebTransport stream (finished, reset,
    /// read to the end, stopped, or dropped). Once both halves are done the core forgets
    /// the stream; one the peer opened gives back its session stream credit.
    pub fn stream_done(&mut self, stream: u64, half: StreamHalf) {
        let Some(s) = self.wt_streams.get_mut(&stream) else {
            return;
        };
        match half {
            StreamHalf::Send => s.send_open = false,
            StreamHalf::Recv => s.recv_open = false,
        }
        if s.send_open || s.recv_open {
            return;
        }
        let s = *s;
        self.wt_streams.remove(&stream);
        if !s.incoming {
            return;
        }
        let ours = self.config.flow;
        let capsule = self
            .sessions
            .get_mut(&s.session)
            .and_then(Session::flow_mut)
            .and_then(|f| f.on_peer_stream_closed(s.bidi, &ours));
        if let Some(c) = capsule {
            self.send_capsule(s.session, &c, false);
        }
    }

    /// Takes up to `want` bytes of the peer's WT_MAX_DATA credit for stream payload in
    /// `session`. Returns `want` itself when flow control is not in effect; zero means
    /// blocked until [`Event::SessionCredit`] (the peer is told once per limit with
    /// WT_DATA_BLOCKED). Credit taken counts as sent: a caller that does not write all of
    /// it keeps the rest for its next writes.
    pub fn take_send_credit(&mut self, session: SessionId, want: u64) -> u64 {
        let Some(flow) = self.sessions.get_mut(&session).and_then(Session::flow_mut) else {
            return want;
        };
        let (granted, capsule) = flow.take_send_credit(want);
        if granted == 0 && want > 0 {
            self.stats.flow_blocked += 1;
        }
        if let Some(c) = capsule {
            self.send_capsule(session, &c, false);
        }
        granted
    }

    /// `n` more bytes of payload of `stream` (the preamble not counted) arrived. Ends the
    /// session with WT_FLOW_CONTROL_ERROR if the peer sent more than the session allows.
    /// Report arrivals before the consumption they enable ([`Connection::stream_data_read`]).
    pub fn stream_data_received(&mut self, stream: u64, n: u64) {
        if let Some(session) = self.wt_streams.get(&stream).map(|s| s.session) {
            self.session_data_received(session, n);
        }
    }

    /// The application took `n` more bytes of payload of `stream`: the session's receive
    /// window moves, sending WT_MAX_DATA as it goes.
    pub fn stream_data_read(&mut self, stream: u64, n: u64) {
        if let Some(session) = self.wt_streams.get(&stream).map(|s| s.session) {
            self.session_data_read(session, n);
        }
    }

    /// [`Connection::stream_data_received`] for payload of any of `session`'s streams, for
    /// a caller that adds up several streams' arrivals before it reports them.
    pub fn session_data_received(&mut self, session: SessionId, n: u64) {
        let result = match self.sessions.get_mut(&session).and_then(Session::flow_mut) {
            Some(f) => f.on_received(n),
            None => return,
        };
        if let Err(v) = result {
            self.flow_violation(session, v);
        }
    }

    /// [`Connection::stream_data_read`] for payload of any of `session`'s streams.
    pub fn session_data_read(&mut self, session: SessionId, n: u64) {
        let ours = self.config.flow;
        let capsule = self
            .sessions
            .get_mut(&session)
            .and_then(Session::flow_mut)
            .and_then(|f| f.on_consumed(n, &ours));
        if let Some(c) = capsule {
            self.send_capsule(session, &c, false);
        }
    }

    /// Builds the QUIC datagram for `payload` in `session`.
    pub fn encode_datagram(
        &self,
        session: SessionId,
        payload: &[u8],
    ) -> Result<Bytes, CommandError> {
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
    ) -> Result<(), CommandError> {
        self.may_send_datagram(session)?;
        datagram::encode_header(session, out);
        out.put_slice(payload);
        Ok(())
    }

    /// Whether a datagram of `session` may be sent now: the session is established and the
    /// peer's SETTINGS accept HTTP datagrams. For a datagram built elsewhere (its header
    /// from [`datagram::encode_header`]).
    pub fn may_send_datagram(&self, session: SessionId) -> Result<(), CommandError> {
        if !self.is_established(session) {
            return Err(CommandError::NotEstablished(session));
        }
        if !self.peer_datagrams {
            return Err(CommandError::DatagramsDisabled);
        }
        Ok(())
    }

    /// Sends GOAWAY: a server names the first request it will not process, so no new
    /// sessions beyond those already requested. Returns the id sent.
    pub fn goaway(&mut self) -> u64 {
        let id = match self.role {
            // RFC 9114 §5.2: a server sends the first client-initiated bidirectional
            // stream id it will not process.
            Role::Server => self.max_request_id.get().map_or(0, |m| m + 4),
            // A client sends a push id; we never allow push, so 0.
            Role::Client => 0,
        };
        let id = self.goaway_sent.get().map_or(id, |prev| prev.min(id));
        self.goaway_sent.set(id);
        let mut out = Vec::new();
        Frame::Goaway(varint::VarInt::from_u64(id).unwrap_or(varint::VarInt::MAX)).encode(&mut out);
        self.write(self.local.control, out.into(), false);
        id
    }

    /// Writes a reserved (GREASE) frame on our control stream, which the peer ignores
    /// (RFC 9114 §7.2.8).
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
    /// own limits are exceeded); live sessions end.
    pub fn close(&mut self, code: Code, reason: impl Into<String>) {
        self.connection_error(ProtocolError::Local {
            code,
            reason: reason.into(),
        });
    }

    // ---- helpers of the commands ----

    /// A new established session's flow control, when in effect.
    pub(super) fn new_flow(&self) -> Option<Box<Flow>> {
        if !self.flow_control {
            return None;
        }
        let peer = self
            .peer_settings
            .as_ref()
            .map(FlowLimits::from_settings)
            .unwrap_or(FlowLimits::OFF);
        Some(Box::new(Flow::new(self.config.flow, peer)))
    }

    /// Sessions a client may have open at once.
    fn session_limit(&self) -> u64 {
        let ours = u64::from(self.config.max_sessions);
        let peer = self.peer_settings.as_ref();
        if self.draft.is_some_and(|d| d >= WtDraft::Draft13) && !self.flow_control {
            // draft-ietf-webtrans-http3 §5.1: "If flow control is not enabled, clients MUST
            // NOT attempt to establish more than one simultaneous WebTransport session."
            return 1;
        }
        match peer.and_then(Settings::wt_max_sessions) {
            Some(limit) => ours.min(limit.max(1)),
            None => ours,
        }
    }

    pub(super) fn request_stream(&self) -> RequestStream {
        let mut reader = FrameReader::new(self.frame_limits());
        // pywebtransport 0.8.1 writes capsules onto the CONNECT stream without a DATA
        // frame around them (docs/protocol.md). A capsule has a frame's layout, so they
        // read as frames of the capsules' types; HTTP/3 would skip them as unknown
        // frames, which would lose the peer's close code and its flow-control credit. We
        // take them (and answer in kind, see CapsuleFraming).
        use crate::capsule::ty;
        const CAPSULE_TYPES: &[u64] = &[
            ty::CLOSE_WEBTRANSPORT_SESSION,
            ty::DRAIN_WEBTRANSPORT_SESSION,
            ty::WT_MAX_DATA,
            ty::WT_MAX_STREAMS_BIDI,
            ty::WT_MAX_STREAMS_UNI,
            ty::WT_DATA_BLOCKED,
            ty::WT_STREAMS_BLOCKED_BIDI,
            ty::WT_STREAMS_BLOCKED_UNI,
        ];
        reader.buffer_types(CAPSULE_TYPES);
        // A bare capsule is held up to the same cap as a framed one.
        reader.raw_limit(self.config.max_capsule_size);
        RequestStream {
            reader,
            capsules: CapsuleReader::new(self.config.max_capsule_size),
            got_headers: false,
            closed: false,
            header_deadline: None,
        }
    }

    /// (Client) Sends the CONNECT request of a session that waited for SETTINGS.
    pub(super) fn send_request(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let SessionState::AwaitingSettings { request, deadline } = &s.state else {
            return;
        };
        let deadline = *deadline;
        let mut request = ConnectRequest::clone(request);
        let missing = match self.peer_settings.as_ref() {
            Some(p) if !p.connect_protocol_enabled() => Some(MissingSetting::ConnectProtocol),
            Some(p) if !p.datagrams_enabled() => Some(MissingSetting::Datagrams),
            // No draft that both sides offer (draft-ietf-webtrans-http3-16 §7.1, kept in -17).
            Some(_) if self.draft.is_none() => Some(MissingSetting::WebTransport),
            _ => None,
        };
        if let Some(what) = missing {
            self.fail_request(session, RejectReason::Unsupported(what), None, false);
            return;
        }
        let draft = self.draft.unwrap_or(WtDraft::Draft02);
        request.protocol = if draft >= WtDraft::Draft15 {
            UpgradeToken::WebTransportH3
        } else {
            UpgradeToken::WebTransport
        };
        request.draft02 = draft == WtDraft::Draft02;
        self.set_state(
            session,
            SessionState::Requested {
                deadline: Some(deadline),
                draft02: request.draft02,
            },
        );
        self.send_headers(session.stream_id(), &request.to_fields(), false);
    }
}
