//! Feeding peer streams: preambles, the control stream, the QPACK streams.

use super::*;

/// The outcome of feeding a stream: its new state (`None`: forget it) and what the caller
/// should do, or a connection error.
type Fed = Result<(Option<StreamKind>, Feed), ProtocolError>;

impl Connection {
    /// Feeds bytes to one stream.
    pub(super) fn feed(
        &mut self,
        now: Instant,
        stream: u64,
        kind: StreamKind,
        data: &[u8],
        fin: bool,
    ) -> Fed {
        match kind {
            StreamKind::UniPreamble(mut buf) => {
                buf.extend_from_slice(data);
                let Some((header, n)) = UniStreamHeader::decode(&buf)? else {
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
                let Some((header, n)) = BidiStreamHeader::decode(&buf)? else {
                    if fin {
                        if self.role == Role::Server {
                            // RFC 9114 §4.1.2: a request stream that ends without a
                            // complete request is H3_REQUEST_INCOMPLETE.
                            self.refuse_stream(stream, true, Code::H3_REQUEST_INCOMPLETE);
                            self.stats.errors += 1;
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
                            return Err(Violation::ServerBidiStream(stream).into());
                        }
                        let max = self.max_request_id.get().map_or(stream, |m| m.max(stream));
                        self.max_request_id.set(max);
                        if self.goaway_sent.get().is_some_and(|g| stream >= g) {
                            // RFC 9114 §5.2: requests at or above the GOAWAY id are refused.
                            self.refuse_stream(stream, true, Code::H3_REQUEST_REJECTED);
                            return Ok((None, Feed::Done));
                        }
                        let req = self.request_stream();
                        let (kind, feed) =
                            self.feed(now, stream, StreamKind::Request(Box::new(req)), &buf, fin)?;
                        // The caller learns once that this stream's sending half is ours.
                        let feed = match feed {
                            Feed::Continue => Feed::Request,
                            other => other,
                        };
                        Ok((kind, feed))
                    }
                }
            }
            StreamKind::Control {
                mut reader,
                mut got_settings,
            } => {
                reader.push(data);
                while let Some(ev) = reader.poll()? {
                    self.on_control(&mut got_settings, ev)?;
                }
                if fin {
                    return Err(Violation::CriticalStreamClosed {
                        kind: CriticalStream::Control,
                        how: Closure::Finished,
                    }
                    .into());
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
                while let Some((_, n)) = qpack::parse_encoder_instruction(&buf)? {
                    let _ = buf.split_to(n);
                }
                if fin {
                    return Err(Violation::CriticalStreamClosed {
                        kind: CriticalStream::QpackEncoder,
                        how: Closure::Finished,
                    }
                    .into());
                }
                Ok((Some(StreamKind::QpackEncoder(buf)), Feed::Continue))
            }
            StreamKind::QpackDecoder(mut buf) => {
                buf.extend_from_slice(data);
                while let Some((_, n)) = qpack::parse_decoder_instruction(&buf)? {
                    let _ = buf.split_to(n);
                }
                if fin {
                    return Err(Violation::CriticalStreamClosed {
                        kind: CriticalStream::QpackDecoder,
                        how: Closure::Finished,
                    }
                    .into());
                }
                Ok((Some(StreamKind::QpackDecoder(buf)), Feed::Continue))
            }
            StreamKind::Request(req) => self.feed_request(now, stream, req, data, fin),
        }
    }

    /// A new stream whose first bytes hold a whole WebTransport preamble: routed to its
    /// session with `rest(n)`, the bytes after it, as feeding it would (`None`: anything
    /// else, left to [`Connection::feed`]).
    pub(super) fn whole_preamble(
        &mut self,
        now: Instant,
        stream: u64,
        data: &[u8],
        rest: impl FnOnce(usize) -> Bytes,
    ) -> Option<Feed> {
        let (session, n, bidi) = if is_uni(stream) {
            match UniStreamHeader::decode(data) {
                Ok(Some((UniStreamHeader::WebTransport(s), n))) => (s, n, false),
                _ => return None,
            }
        } else {
            match BidiStreamHeader::decode(data) {
                Ok(Some((BidiStreamHeader::WebTransport(s), n))) => (s, n, true),
                _ => return None,
            }
        };
        Some(self.route_stream(now, stream, session, bidi, rest(n)))
    }

    pub(super) fn start_uni(
        &mut self,
        now: Instant,
        stream: u64,
        header: UniStreamHeader,
        rest: BytesMut,
        fin: bool,
    ) -> Fed {
        let critical =
            |slot: &mut MaybeVarint, kind: CriticalStream| -> Result<(), ProtocolError> {
                // RFC 9114 §6.2.1: "Only one control stream per peer is permitted; receipt
                // of a second stream claiming to be a control stream MUST be treated as a
                // connection error of type H3_STREAM_CREATION_ERROR." RFC 9204 §4.2:
                // likewise for the QPACK streams.
                if slot.get().is_some() {
                    return Err(Violation::DuplicateCriticalStream { kind, stream }.into());
                }
                slot.set(stream);
                Ok(())
            };
        let kind = match header {
            UniStreamHeader::Control => {
                critical(&mut self.peer_control, CriticalStream::Control)?;
                StreamKind::Control {
                    reader: FrameReader::new(self.frame_limits()),
                    got_settings: false,
                }
            }
            UniStreamHeader::QpackEncoder => {
                critical(&mut self.peer_encoder, CriticalStream::QpackEncoder)?;
                StreamKind::QpackEncoder(BytesMut::new())
            }
            UniStreamHeader::QpackDecoder => {
                critical(&mut self.peer_decoder, CriticalStream::QpackDecoder)?;
                StreamKind::QpackDecoder(BytesMut::new())
            }
            UniStreamHeader::Push => {
                // RFC 9114 §6.2.2: only servers push, and only after MAX_PUSH_ID, which we
                // never send: a push stream from a client is H3_STREAM_CREATION_ERROR, one
                // from a server H3_ID_ERROR.
                return Err(match self.role {
                    Role::Server => Violation::PushStreamFromClient(stream),
                    Role::Client => Violation::PushWithoutMaxPushId(stream),
                }
                .into());
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
    ) -> Result<(), ProtocolError> {
        let unexpected = |frame: u64| -> ProtocolError {
            Violation::FrameUnexpected {
                frame,
                place: FramePlace::ControlStream,
            }
            .into()
        };
        let frame = match ev {
            FrameEvent::Frame(f) => f,
            FrameEvent::Raw { ty, .. } => Frame::Unknown { ty, len: 0 },
            // RFC 9114 §7.2.1: DATA on a control stream is H3_FRAME_UNEXPECTED.
            FrameEvent::DataStart(_) | FrameEvent::DataChunk(_) => {
                return Err(unexpected(crate::frame::ty::DATA));
            }
        };
        if !*got_settings {
            // RFC 9114 §6.2.1: "If the first frame of the control stream is any other frame
            // type, this MUST be treated as a connection error of type H3_MISSING_SETTINGS."
            let Frame::Settings(settings) = frame else {
                return Err(Violation::MissingSettings(frame.ty()).into());
            };
            *got_settings = true;
            // draft-ietf-webtrans-http3-16 §3.1 (kept in -17): "Clients MUST treat values greater than
            // "1" as a connection error of type H3_SETTINGS_ERROR." Only a client that
            // speaks draft-17 knows the codepoint; to any other it is an unknown setting,
            // which RFC 9114 §7.2.4 says to ignore.
            if self.role == Role::Client && self.config.drafts.contains(WtDraft::Draft17) {
                if let Err(SettingsError::NotBoolean { id, value }) =
                    settings.check_wt_enabled_draft17()
                {
                    return Err(Violation::WtEnabledValue { id, value }.into());
                }
            }
            self.on_peer_settings(settings);
            return Ok(());
        }
        match frame {
            // RFC 9114 §7.2.4: "If an endpoint receives a second SETTINGS frame on the
            // control stream, the endpoint MUST respond with a connection error of type
            // H3_FRAME_UNEXPECTED."
            Frame::Settings(_) | Frame::Headers(_) | Frame::Data(_) | Frame::PushPromise => {
                Err(unexpected(frame.ty()))
            }
            Frame::Goaway(id) => self.on_goaway(id.into_inner()),
            // RFC 9114 §7.2.7: a client receiving MAX_PUSH_ID: H3_FRAME_UNEXPECTED.
            Frame::MaxPushId(_) if self.role == Role::Client => Err(unexpected(frame.ty())),
            Frame::MaxPushId(id) => {
                // RFC 9114 §7.2.7: "receipt of a MAX_PUSH_ID frame that contains a smaller
                // value than previously received MUST be treated as a connection error of
                // type H3_ID_ERROR."
                let id = id.into_inner();
                if self.max_push_id.get().is_some_and(|prev| id < prev) {
                    return Err(Violation::MaxPushIdDecreased(id).into());
                }
                self.max_push_id.set(id);
                Ok(())
            }
            // RFC 9114 §7.2.3: a push id we never allowed (no MAX_PUSH_ID sent, or server
            // side where push ids are ours) is H3_ID_ERROR.
            Frame::CancelPush(id) => Err(Violation::CancelPush(id.into_inner()).into()),
            Frame::Unknown { ty, len } => {
                debug!(
                    frame_type = ty,
                    len, "unknown frame on the control stream skipped"
                );
                Ok(())
            }
        }
    }

    pub(super) fn on_goaway(&mut self, id: u64) -> Result<(), ProtocolError> {
        // RFC 9114 §5.2: a GOAWAY from a server carries a client-initiated bidirectional
        // stream id (else H3_ID_ERROR), and the id must never increase (H3_ID_ERROR).
        if self.role == Role::Client && id % 4 != 0 {
            return Err(Violation::GoawayNotRequestId(id).into());
        }
        if self.goaway_received.get().is_some_and(|prev| id > prev) {
            return Err(Violation::GoawayIncreased(id).into());
        }
        self.goaway_received.set(id);
        self.events.push_back(Event::GoAway { id });
        if self.role == Role::Client {
            let refused: Vec<SessionId> = self
                .sessions
                .iter()
                .filter(|(sid, s)| {
                    sid.stream_id() >= id
                        && matches!(
                            s.state,
                            SessionState::AwaitingSettings { .. } | SessionState::Requested { .. }
                        )
                })
                .map(|(sid, _)| *sid)
                .collect();
            for s in refused {
                self.fail_request(s, RejectReason::GoingAway, None, true);
            }
        }
        Ok(())
    }

    pub(super) fn on_peer_settings(&mut self, settings: Settings) {
        // draft-ietf-webtrans-http3-16 §7.1 (kept in -17): "The highest version supported by both
        // endpoints is selected."
        let draft = settings.wt_draft_within(self.config.drafts);
        self.draft = draft;
        // draft-ietf-webtrans-http3 §5.1: "If both endpoints take at least one of these
        // actions, flow control is enabled". Only drafts 13 and later have it. We declare
        // it exactly when our windows are on (Settings::local keeps WT_MAX_SESSIONS at 1
        // otherwise); the peer by its draft's rule, where a draft-14 peer may declare it
        // with WT_MAX_SESSIONS > 1 alone, giving us no initial credit.
        self.flow_control = draft.is_some_and(|d| d >= WtDraft::Draft13)
            && self.config.flow.enabled()
            && settings.declares_flow_control();
        debug!(role = ?self.role, settings = %settings, draft = ?draft, flow_control = self.flow_control, "peer SETTINGS received");
        // pywebtransport 0.8.1 announces draft-13/14 alone and refuses framed capsules
        // (CapsuleFraming::Auto). Its client also sends ENABLE_CONNECT_PROTOCOL, which RFC
        // 9220 §3 gives a meaning only from servers; a draft-13/14 client without it (such
        // as a browser) keeps framed capsules.
        match self.role {
            Role::Client if settings.announces_only_draft13() => {
                self.prefer_unframed("server announces only draft-13/14");
            }
            Role::Server
                if settings.announces_only_draft13() && settings.connect_protocol_enabled() =>
            {
                self.prefer_unframed("client announces only draft-13/14 and extended CONNECT");
            }
            _ => {}
        }
        self.peer_datagrams = settings.datagrams_enabled();
        self.peer_settings = Some(settings.clone());
        self.events.push_back(Event::PeerSettings {
            settings,
            draft,
            flow_control: self.flow_control,
        });
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
