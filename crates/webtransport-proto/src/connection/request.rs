//! CONNECT streams: requests, responses and capsules.

use super::*;

impl Connection {
    /// Handles one frame event on a request (CONNECT) stream. `Some(feed)` ends the
    /// stream's processing.
    pub(super) fn on_request_frame(
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
                match Capsule::from_value(ty, payload) {
                    Ok(capsule) => self.on_capsule(now, session, capsule),
                    Err(e) => return Ok(Some(self.malformed_capsule(stream, session, &e))),
                }
                if !self.sessions.contains_key(&session) {
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

    pub(super) fn on_request_headers(
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

    pub(super) fn on_session_request(&mut self, session: SessionId, request: ConnectRequest) {
        if self.draft.is_none() {
            debug!(%session, "client SETTINGS announce no WebTransport draft; assuming draft-02");
        }
        self.events.push_back(Event::SessionRequested {
            session,
            request: Box::new(request),
        });
    }

    pub(super) fn on_response_headers(
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

    pub(super) fn on_capsule(&mut self, _now: Instant, session: SessionId, capsule: Capsule) {
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

    /// A malformed capsule on a CONNECT stream. RFC 9297 §3.3 makes the message
    /// malformed, which RFC 9114 §4.1.2 treats as a stream error of type H3_MESSAGE_ERROR
    /// (H3_EXCESSIVE_LOAD for one over our size cap): the CONNECT stream is reset and
    /// stopped, which ends its session; the connection stays up.
    pub(super) fn malformed_capsule(
        &mut self,
        stream: u64,
        session: SessionId,
        e: &CapsuleError,
    ) -> Feed {
        debug!(stream, %session, error = %e, "malformed capsule: CONNECT stream refused");
        self.refuse_stream(stream, true, e.code());
        self.close_session_state(session, 0, format!("malformed capsule: {e}"), true);
        self.forget_session(session);
        Feed::Done
    }
}
