//! CONNECT streams: requests, responses and capsules.

use super::*;

impl Connection {
    /// Feeds a CONNECT stream.
    pub(super) fn feed_request(
        &mut self,
        now: Instant,
        stream: u64,
        mut req: Box<RequestStream>,
        data: &[u8],
        fin: bool,
    ) -> Result<(Option<StreamKind>, Feed), ProtocolError> {
        let session = SessionId::from_stream_id(stream)?;
        req.reader.push(data);
        loop {
            let ev = match req.reader.poll() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(e) => return self.request_frame_error(stream, session, &req, e),
            };
            if req.closed {
                continue;
            }
            if let Some(feed) = self.on_request_frame(now, stream, session, &mut req, ev)? {
                return Ok((None, feed));
            }
        }
        if !fin {
            return Ok((Some(StreamKind::Request(req)), Feed::Continue));
        }
        if !req.reader.is_at_boundary() {
            // RFC 9114 §7.1: a frame cut short by the end of the stream.
            return Err(Violation::TruncatedFrame(stream).into());
        }
        if !req.got_headers && self.role == Role::Server {
            // RFC 9114 §4.1.2: a request stream that ends without a complete request is
            // H3_REQUEST_INCOMPLETE.
            self.refuse_stream(stream, true, Code::H3_REQUEST_INCOMPLETE);
            self.stats.errors += 1;
            return Ok((None, Feed::Done));
        }
        if !req.closed {
            if let Err(e) = req.capsules.finish() {
                debug!(stream, error = %e, "CONNECT stream ended inside a capsule");
            }
        }
        self.connect_stream_ended(session, None);
        Ok((None, Feed::Done))
    }

    /// A frame on a request stream that cannot be read. Two are refused on the stream
    /// rather than the connection: a request's HEADERS over our
    /// SETTINGS_MAX_FIELD_SECTION_SIZE (431, see [`Connection::headers_too_large`]) and a
    /// bare capsule over `max_capsule_size`, which is what the same capsule inside a DATA
    /// frame gets (H3_EXCESSIVE_LOAD on the CONNECT stream). Anything else is a connection
    /// error (RFC 9114 §7.1: H3_FRAME_ERROR, §7.2.8: H3_FRAME_UNEXPECTED).
    fn request_frame_error(
        &mut self,
        stream: u64,
        session: SessionId,
        req: &RequestStream,
        e: crate::frame::FrameError,
    ) -> Result<(Option<StreamKind>, Feed), ProtocolError> {
        use crate::frame::FrameError;
        match e {
            FrameError::TooLarge { ty, .. }
                if ty == crate::frame::ty::HEADERS
                    && self.role == Role::Server
                    && !req.got_headers =>
            {
                Ok((None, self.headers_too_large(stream)))
            }
            FrameError::TooLarge { ty, len, max } if req.got_headers && is_capsule_type(ty) => {
                let e = CapsuleError::TooLarge { ty, len, max };
                Ok((None, self.malformed_capsule(stream, session, &e)))
            }
            e => Err(e.into()),
        }
    }

    /// (Server) A request whose field section is over our SETTINGS_MAX_FIELD_SECTION_SIZE,
    /// announced by its HEADERS frame's length or counted while decoding it. RFC 9114
    /// §4.2.2: "A server that receives a larger header section than it is willing to
    /// handle can send an HTTP 431 (Request Header Fields Too Large) status code"; the
    /// rest of the request is not read: STOP_SENDING with H3_NO_ERROR, which RFC 9114
    /// §4.1.1 asks for when a server answers before the request is complete. Only this
    /// request is refused; the connection and its sessions go on.
    pub(super) fn headers_too_large(&mut self, stream: u64) -> Feed {
        debug!(
            stream,
            limit = self.config.max_field_section_size,
            "request header section too large: 431"
        );
        self.stats.errors += 1;
        self.send_headers(stream, &ConnectResponse::new(431).to_fields(), true);
        self.actions.push_back(Action::StopSending {
            stream,
            code: Code::H3_NO_ERROR,
        });
        Feed::Done
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
    ) -> Result<Option<Feed>, ProtocolError> {
        let before_headers = |frame: u64| -> ProtocolError {
            // RFC 9114 §4.1: DATA (or anything carrying a capsule) before HEADERS is
            // H3_FRAME_UNEXPECTED.
            Violation::FrameUnexpected {
                frame,
                place: FramePlace::BeforeHeaders,
            }
            .into()
        };
        let frame = match ev {
            FrameEvent::DataStart(_) if !req.got_headers => {
                return Err(before_headers(crate::frame::ty::DATA));
            }
            FrameEvent::DataStart(_) => return Ok(None),
            FrameEvent::Raw { ty, payload } => {
                if !req.got_headers {
                    return Err(before_headers(ty));
                }
                debug!(
                    stream,
                    capsule_type = ty,
                    "capsule without DATA framing (pywebtransport 0.8.1 style) accepted"
                );
                self.prefer_unframed("the peer sent a capsule without a DATA frame");
                match Capsule::from_value(ty, payload) {
                    Ok(capsule) => self.on_capsule(now, session, capsule),
                    Err(e) => return Ok(Some(self.malformed_capsule(stream, session, &e))),
                }
                if !self.is_live(session) {
                    req.closed = true;
                }
                return Ok(None);
            }
            FrameEvent::DataChunk(chunk) => {
                req.capsules.push(&chunk);
                loop {
                    match req.capsules.poll() {
                        Ok(Some(c)) => self.on_capsule(now, session, c),
                        Ok(None) => break,
                        Err(e) => return Ok(Some(self.malformed_capsule(stream, session, &e))),
                    }
                    if !self.is_live(session) {
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
                        Ok(fields) => fields,
                        Err(qpack::QpackError::FieldSectionTooLarge { .. })
                            if self.role == Role::Server && !req.got_headers =>
                        {
                            return Ok(Some(self.headers_too_large(stream)));
                        }
                        Err(e) => return Err(e.into()),
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
                    Role::Server => Ok(self.on_request_headers(stream, session, &fields)),
                    Role::Client => Ok(self.on_response_headers(session, &fields)),
                }
            }
            Frame::Data(_) => Ok(None),
            // RFC 9114 §7.2.4, §7.2.6, §7.2.7, §7.2.3: these frames on a request stream
            // are H3_FRAME_UNEXPECTED; RFC 9114 §7.2.5: so is PUSH_PROMISE at a server.
            Frame::Settings(_) | Frame::Goaway(_) | Frame::MaxPushId(_) | Frame::CancelPush(_) => {
                Err(Violation::FrameUnexpected {
                    frame: frame.ty(),
                    place: FramePlace::RequestStream,
                }
                .into())
            }
            Frame::PushPromise => Err(match self.role {
                Role::Server => Violation::FrameUnexpected {
                    frame: frame.ty(),
                    place: FramePlace::RequestStream,
                },
                // A client that never sent MAX_PUSH_ID sees a push id above its maximum,
                // which RFC 9114 §4.6 makes H3_ID_ERROR.
                Role::Client => Violation::PushWithoutMaxPushId(stream),
            }
            .into()),
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
    ) -> Option<Feed> {
        let request = match ConnectRequest::from_fields(fields) {
            Ok(r) => r,
            Err(e) => {
                // RFC 9114 §4.1.2: a malformed request is a stream error of type
                // H3_MESSAGE_ERROR.
                debug!(stream, error = %e, "malformed CONNECT request");
                self.stats.errors += 1;
                match e.status() {
                    Some(status) => {
                        self.send_headers(stream, &ConnectResponse::new(status).to_fields(), true)
                    }
                    None => self.refuse_stream(stream, true, e.code()),
                }
                return Some(Feed::Done);
            }
        };
        if self.live_sessions >= self.config.max_sessions as usize {
            debug!(
                stream,
                limit = self.config.max_sessions,
                "session limit reached: request rejected"
            );
            self.stats.sessions_refused += 1;
            self.refuse_stream(stream, true, Code::H3_REQUEST_REJECTED);
            return Some(Feed::Done);
        }
        if is_pywebtransport_081(&request) {
            self.prefer_unframed("client is pywebtransport 0.8");
        }
        self.insert_session(
            session,
            SessionState::Requested {
                deadline: None,
                draft02: request.draft02,
            },
        );
        if self.peer_settings.is_none() {
            // draft-ietf-webtrans-http3 §7.1: "the server MUST NOT process any incoming
            // WebTransport requests until the client's SETTINGS have been received."
            self.early_requests.push((session, request));
        } else {
            self.on_session_request(session, request);
        }
        None
    }

    /// (Server) A request that may now be handed to the application.
    pub(super) fn on_session_request(&mut self, session: SessionId, request: ConnectRequest) {
        if self.draft.is_none() {
            if !self.config.drafts.contains(WtDraft::Draft02) {
                // draft-ietf-webtrans-http3-16 §3.1 (kept in -17): "If the server receives SETTINGS that
                // do not have correct values for every required setting [...], the server
                // MUST treat all established and newly incoming WebTransport sessions as
                // malformed"; for draft versions the client's SETTINGS_WT_ENABLED names
                // its version (§7.1), and it names none we offer. A malformed request is
                // a stream error of type H3_MESSAGE_ERROR (RFC 9114 §4.1.2). With
                // draft-02 offered, a client without any WebTransport setting is taken to
                // speak it, as browsers' clients always have been.
                debug!(%session, offered = ?self.config.drafts, "client SETTINGS announce no draft we offer; request refused");
                self.stats.sessions_refused += 1;
                self.refuse_stream(session.stream_id(), true, Code::H3_MESSAGE_ERROR);
                self.streams.remove(&session.stream_id());
                self.end_session(session, SessionEnd::Refused { status: 0 });
                return;
            }
            debug!(%session, "client SETTINGS announce no WebTransport draft; assuming draft-02");
        }
        if self.draft.is_some_and(|d| d >= WtDraft::Draft13)
            && !self.flow_control
            && self.live_sessions > 1
        {
            // draft-ietf-webtrans-http3 §5.1: "A server that receives more than one session
            // on an underlying transport connection when flow control is not enabled MUST
            // reset the excessive CONNECT streams with a H3_REQUEST_REJECTED status".
            debug!(%session, "second session without flow control rejected");
            self.stats.sessions_refused += 1;
            self.refuse_stream(session.stream_id(), true, Code::H3_REQUEST_REJECTED);
            self.streams.remove(&session.stream_id());
            self.end_session(session, SessionEnd::Refused { status: 0 });
            return;
        }
        self.events.push_back(Event::SessionRequested {
            session,
            request: Box::new(request),
        });
    }

    fn on_response_headers(
        &mut self,
        session: SessionId,
        fields: &[qpack::HeaderField],
    ) -> Option<Feed> {
        let response = match ConnectResponse::from_fields(fields) {
            Ok(r) => r,
            Err(e) => {
                self.fail_request(session, RejectReason::Malformed(e), None, true);
                return Some(Feed::Done);
            }
        };
        if !matches!(
            self.sessions.get(&session).map(|s| &s.state),
            Some(SessionState::Requested { .. })
        ) {
            return Some(Feed::Done);
        }
        if (100..200).contains(&response.status) {
            // Interim responses precede the final one (RFC 9114 §4.1).
            return None;
        }
        if !response.is_success() {
            let status = response.status;
            self.actions.push_back(Action::StopSending {
                stream: session.stream_id(),
                code: Code::H3_NO_ERROR,
            });
            self.fail_request(session, RejectReason::Status(status), Some(response), false);
            return Some(Feed::Done);
        }
        let flow = self.new_flow();
        self.set_state(
            session,
            SessionState::Established {
                draining: false,
                flow,
            },
        );
        self.events
            .push_back(Event::SessionEstablished { session, response });
        self.release_pending(session);
        None
    }

    fn on_capsule(&mut self, _now: Instant, session: SessionId, capsule: Capsule) {
        let Some(state) = self.sessions.get(&session).map(|s| &s.state) else {
            debug!(%session, capsule_type = capsule.ty(), "capsule for an unknown session dropped");
            return;
        };
        match state {
            SessionState::Established { .. } => {}
            SessionState::Ended(_) => return,
            _ => {
                if matches!(capsule, Capsule::CloseSession { .. }) && self.role == Role::Server {
                    // The client closed before we answered: it gave up on the request.
                    self.end_session(session, SessionEnd::Withdrawn);
                }
                return;
            }
        }
        match capsule {
            Capsule::CloseSession { code, reason } => {
                // draft-ietf-webtrans-http3 §6: on WT_CLOSE_SESSION the receiver closes its
                // side of the CONNECT stream, and every stream of the session is reset and
                // stopped with WT_SESSION_GONE.
                self.write(session.stream_id(), Bytes::new(), true);
                self.end_session(
                    session,
                    SessionEnd::Closed {
                        code,
                        reason,
                        remote: true,
                    },
                );
            }
            Capsule::DrainSession => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    if let SessionState::Established { draining, .. } = &mut s.state {
                        *draining = true;
                    }
                }
                self.events.push_back(Event::SessionDraining { session });
            }
            Capsule::Datagram(payload) => {
                self.events.push_back(Event::Datagram { session, payload });
            }
            Capsule::MaxData(_)
            | Capsule::MaxStreams { .. }
            | Capsule::DataBlocked(_)
            | Capsule::StreamsBlocked { .. } => self.on_flow_capsule(session, capsule),
            Capsule::Unknown { ty, .. }
                if ty == crate::capsule::ty::WT_MAX_STREAM_DATA
                    || ty == crate::capsule::ty::WT_STREAM_DATA_BLOCKED =>
            {
                // draft-ietf-webtrans-http3 §5.4: "Endpoints MUST treat receipt of a
                // WT_MAX_STREAM_DATA or a WT_STREAM_DATA_BLOCKED capsule as a session
                // error."
                if self.flow_control {
                    self.flow_violation(session, FlowViolation::StreamDataCapsule);
                }
            }
            Capsule::Unknown { ty, len } => {
                debug!(%session, capsule_type = ty, len, "unknown capsule skipped");
            }
        }
    }

    /// A flow-control capsule. draft-ietf-webtrans-http3 §5.1: "if flow control is not
    /// enabled, an endpoint MUST ignore receipt of any flow control capsules".
    fn on_flow_capsule(&mut self, session: SessionId, capsule: Capsule) {
        let Some(flow) = self.sessions.get_mut(&session).and_then(Session::flow_mut) else {
            return;
        };
        let result = match capsule {
            Capsule::MaxData(max) => flow.on_max_data(max.into_inner()),
            Capsule::MaxStreams { bidi, max } => flow.on_max_streams(bidi, max.into_inner()),
            Capsule::StreamsBlocked { max, .. } => {
                flow.on_streams_blocked(max.into_inner()).map(|()| false)
            }
            Capsule::DataBlocked(max) => {
                debug!(%session, limit = max.into_inner(), "peer blocked by our WT_MAX_DATA");
                Ok(false)
            }
            _ => Ok(false),
        };
        match result {
            Ok(true) => self.events.push_back(Event::SessionCredit { session }),
            Ok(false) => {}
            Err(v) => self.flow_violation(session, v),
        }
    }

    /// A malformed capsule on a CONNECT stream. RFC 9297 §3.3 makes the message
    /// malformed, which RFC 9114 §4.1.2 treats as a stream error of type H3_MESSAGE_ERROR
    /// (H3_EXCESSIVE_LOAD for one over our size cap): the CONNECT stream is reset and
    /// stopped, which ends its session; the connection stays up.
    fn malformed_capsule(&mut self, stream: u64, session: SessionId, e: &CapsuleError) -> Feed {
        debug!(stream, %session, error = %e, "malformed capsule: CONNECT stream refused");
        if self.is_live(session) {
            self.abort_session(session, e.code());
        } else {
            self.refuse_stream(stream, true, e.code());
        }
        Feed::Done
    }
}

/// Whether a request comes from pywebtransport 0.8, which wants bare capsules
/// (`user-agent: pywebtransport/0.8.x`).
fn is_pywebtransport_081(request: &ConnectRequest) -> bool {
    request
        .headers
        .iter()
        .any(|h| &h.name[..] == b"user-agent" && h.value.starts_with(b"pywebtransport/0.8."))
}

/// Whether `ty` is a capsule type the CONNECT stream's reader takes bare (without a DATA
/// frame): see `Connection::request_stream`.
fn is_capsule_type(ty: u64) -> bool {
    crate::capsule::ty::is_session_capsule(ty)
}
