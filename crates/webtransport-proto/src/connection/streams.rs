//! Feeding peer streams: preambles, the control stream, the QPACK streams.

use super::*;

impl Connection {
    /// Feeds bytes to one stream. Returns the stream's new state (None: forget it) and
    /// what the caller should do, or a connection error.
    pub(super) fn feed(
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

    pub(super) fn start_uni(
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

    pub(super) fn on_control(
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

    pub(super) fn on_goaway(&mut self, id: u64) -> Result<(), (Code, String)> {
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

    pub(super) fn on_peer_settings(&mut self, settings: Settings) {
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
}
