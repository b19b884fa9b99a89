//! Session and stream records: how a session lives and ends, what happens to its streams
//! when it does (draft-ietf-webtrans-http3 §6), and where streams and datagrams go that
//! arrive before their session (§4.6).

use super::*;

/// Session lifecycle:
///
/// ```text
///  client: AwaitingSettings ─▶ Requested ─▶ Established ─▶ Ended(Closed | Aborted | ConnectionClosed)
///                │                 └──────────────────────▶ Ended(Rejected)
///                └────────────────────────────────────────▶ Ended(Rejected)
///  server: Requested ─▶ Established ─▶ Ended(Closed | Aborted | ConnectionClosed)
///             └──────▶ Ended(Refused | Withdrawn | ConnectionClosed)
/// ```
#[derive(Debug)]
pub(super) enum SessionState {
    /// Client: request waits for the server's SETTINGS to choose the upgrade token.
    AwaitingSettings {
        /// Boxed: it is the largest state by far and short-lived, and a session's size
        /// sets the size of the session map's nodes for the connection's life.
        request: Box<ConnectRequest>,
        deadline: Instant,
    },
    /// Client: request sent; server: request received, waiting for the application.
    Requested {
        deadline: Option<Instant>,
        /// Server: the client asked with `sec-webtransport-http3-draft02`, so the answer
        /// says draft02 too.
        draft02: bool,
    },
    /// Open for streams and datagrams.
    Established {
        draining: bool,
        /// Session flow control, when in effect (boxed: most sessions of browsers have
        /// none, and the map's nodes stay small).
        flow: Option<Box<Flow>>,
    },
    /// Over; remembered for a while.
    Ended(SessionEnd),
}

impl SessionState {
    /// When an unanswered request times out.
    fn deadline(&self) -> Option<Instant> {
        match self {
            SessionState::AwaitingSettings { deadline, .. } => Some(*deadline),
            SessionState::Requested { deadline, .. } => *deadline,
            _ => None,
        }
    }
}

/// One session.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) state: SessionState,
    /// Incoming streams handed to the application and not yet taken: `[uni, bidi]`.
    pub(super) queued: [usize; 2],
}

impl Session {
    pub(super) fn new(state: SessionState) -> Self {
        Session {
            state,
            queued: [0; 2],
        }
    }

    pub(super) fn flow_mut(&mut self) -> Option<&mut Flow> {
        match &mut self.state {
            SessionState::Established { flow, .. } => flow.as_deref_mut(),
            _ => None,
        }
    }
}

/// A WebTransport stream the application holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct WtStream {
    pub(super) session: SessionId,
    pub(super) bidi: bool,
    /// Opened by the peer.
    pub(super) incoming: bool,
    pub(super) send_open: bool,
    pub(super) recv_open: bool,
}

impl Connection {
    /// Whether a session is requested or established.
    pub(super) fn is_live(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| !matches!(s.state, SessionState::Ended(_)))
    }

    pub(super) fn insert_session(&mut self, session: SessionId, state: SessionState) {
        if let Some(d) = state.deadline() {
            self.deadlines.insert((d, session));
        }
        if let Some(old) = self.sessions.insert(session, Session::new(state)) {
            if let Some(d) = old.state.deadline() {
                self.deadlines.remove(&(d, session));
            }
            if !matches!(old.state, SessionState::Ended(_)) {
                self.live_sessions -= 1;
            }
        }
        self.live_sessions += 1;
    }

    /// Moves a known session to `state`, keeping the index of deadlines in step.
    pub(super) fn set_state(
        &mut self,
        session: SessionId,
        state: SessionState,
    ) -> Option<&mut Session> {
        let s = self.sessions.get_mut(&session)?;
        if let Some(d) = s.state.deadline() {
            self.deadlines.remove(&(d, session));
        }
        if let Some(d) = state.deadline() {
            self.deadlines.insert((d, session));
        }
        s.state = state;
        Some(s)
    }

    /// Ends a live session: remembers how, stops reading its CONNECT stream, resets and
    /// stops its streams with WT_SESSION_GONE, refuses what was buffered for it, and tells
    /// the application.
    pub(super) fn end_session(&mut self, session: SessionId, end: SessionEnd) {
        match self.sessions.get(&session) {
            None
            | Some(Session {
                state: SessionState::Ended(_),
                ..
            }) => return,
            Some(_) => {}
        }
        if let Some(s) = self.set_state(session, SessionState::Ended(end.clone())) {
            s.queued = [0; 2];
        }
        self.live_sessions -= 1;
        if let Some(StreamKind::Request(r)) = self.streams.get_mut(&session.stream_id()) {
            r.closed = true;
        }
        if end != SessionEnd::ConnectionClosed {
            self.streams_gone(session);
        }
        self.drop_pending(session, Code::WT_SESSION_GONE);
        self.events.push_back(Event::SessionEnded { session, end });
        self.ended.push_back(session);
        while self.ended.len() > self.config.closed_session_memory {
            let Some(old) = self.ended.pop_front() else {
                break;
            };
            self.sessions.remove(&old);
            self.events
                .push_back(Event::SessionForgotten { session: old });
        }
    }

    /// draft-ietf-webtrans-http3 §6: "Upon learning that the session has been terminated,
    /// the endpoint MUST reset the send side and abort reading on the receive side of all
    /// unidirectional and bidirectional streams associated with the session ... using the
    /// WT_SESSION_GONE error code".
    fn streams_gone(&mut self, session: SessionId) {
        let ids: Vec<u64> = self
            .wt_streams
            .iter()
            .filter(|(_, s)| s.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(s) = self.wt_streams.remove(&id) else {
                continue;
            };
            if s.send_open {
                self.actions.push_back(Action::Reset {
                    stream: id,
                    code: Code::WT_SESSION_GONE,
                });
            }
            if s.recv_open {
                self.actions.push_back(Action::StopSending {
                    stream: id,
                    code: Code::WT_SESSION_GONE,
                });
            }
            self.stats.streams_gone += 1;
        }
    }

    /// A session error (a flow-control violation, a malformed capsule): the CONNECT
    /// stream is reset and stopped with `code`, which ends the session; the connection
    /// stays up.
    pub(super) fn abort_session(&mut self, session: SessionId, code: Code) {
        if !self.is_live(session) {
            return;
        }
        self.stats.errors += 1;
        self.refuse_stream(session.stream_id(), true, code);
        self.end_session(
            session,
            SessionEnd::Aborted {
                code,
                remote: false,
            },
        );
    }

    /// A flow-control rule broken by the peer: draft-ietf-webtrans-http3 §5.6 says to
    /// "close the WebTransport session with a WT_FLOW_CONTROL_ERROR error code".
    pub(super) fn flow_violation(&mut self, session: SessionId, v: FlowViolation) {
        debug!(%session, violation = %v, "session flow-control error");
        self.abort_session(session, Code::WT_FLOW_CONTROL_ERROR);
    }

    /// (Client) A session that did not open. `reset` cancels the request stream.
    pub(super) fn fail_request(
        &mut self,
        session: SessionId,
        reason: RejectReason,
        response: Option<ConnectResponse>,
        reset: bool,
    ) {
        if self.role == Role::Server {
            // A server's requests have no deadline; this is only a client's.
            return;
        }
        if !self.is_live(session) {
            return;
        }
        if reset {
            self.refuse_stream(session.stream_id(), true, Code::H3_REQUEST_CANCELLED);
        }
        if reason != RejectReason::Cancelled {
            self.stats.errors += 1;
        }
        self.streams.remove(&session.stream_id());
        self.end_session(session, SessionEnd::Rejected { reason, response });
    }

    /// The peer's side of a CONNECT stream ended: finished (`reset` is `None`) or reset.
    pub(super) fn connect_stream_ended(&mut self, session: SessionId, reset: Option<Code>) {
        let stream = session.stream_id();
        match self.sessions.get(&session).map(|s| &s.state) {
            Some(SessionState::Established { .. }) => {
                // draft-ietf-webtrans-http3 §6: the session ends when its CONNECT stream
                // is closed, cleanly or abruptly; "Cleanly terminating a CONNECT stream
                // without a WT_CLOSE_SESSION capsule SHALL be semantically equivalent to
                // terminating it with a WT_CLOSE_SESSION capsule that has an error code of
                // 0 and an empty error string." Our side is finished too.
                self.write(stream, Bytes::new(), true);
                let end = match reset {
                    None => SessionEnd::Closed {
                        code: 0,
                        reason: String::new(),
                        remote: true,
                    },
                    Some(code) => {
                        self.stats.errors += 1;
                        SessionEnd::Aborted { code, remote: true }
                    }
                };
                self.end_session(session, end);
            }
            Some(SessionState::Ended(_)) | None => {}
            Some(_) if self.role == Role::Client => {
                let reason = match reset {
                    Some(code) => RejectReason::Reset(code),
                    None => RejectReason::NoResponse,
                };
                self.fail_request(session, reason, None, false);
            }
            Some(_) => {
                // Server: the client gave up on its request.
                self.end_session(session, SessionEnd::Withdrawn);
            }
        }
    }

    /// Refuses a stream: STOP_SENDING, and RESET_STREAM for a bidirectional one.
    pub(super) fn refuse_stream(&mut self, stream: u64, bidi: bool, code: Code) {
        self.actions.push_back(Action::StopSending { stream, code });
        if bidi {
            self.actions.push_back(Action::Reset { stream, code });
        }
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
            self.stats.streams_gone += 1;
        }
        let before = self.pending_datagrams.len();
        self.pending_datagrams.retain(|d| d.0 != session);
        self.stats.datagrams_dropped += (before - self.pending_datagrams.len()) as u64;
    }

    /// Hands what arrived early for a session that just opened to the application, in
    /// stream id order.
    pub(super) fn release_pending(&mut self, session: SessionId) {
        let ids: Vec<u64> = self
            .pending_streams
            .iter()
            .filter(|(_, p)| p.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(p) = self.pending_streams.remove(&id) {
                let _ = self.deliver_stream(id, session, p.bidi, p.prefix);
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
        if self.error.is_some() {
            return false;
        }
        match self.sessions.get(&session) {
            Some(s) => !matches!(s.state, SessionState::Ended(_)),
            // A client knows every session it opened.
            None if self.role == Role::Client => false,
            // A server may not have seen the CONNECT stream yet.
            None => self
                .goaway_sent
                .get()
                .is_none_or(|g| session.stream_id() < g),
        }
    }

    pub(super) fn route_datagram(&mut self, now: Instant, session: SessionId, payload: Bytes) {
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

    /// A peer's stream named `session` in its preamble.
    pub(super) fn route_stream(
        &mut self,
        now: Instant,
        stream: u64,
        session: SessionId,
        bidi: bool,
        prefix: Bytes,
    ) -> Feed {
        if self.is_established(session) {
            return self.deliver_stream(stream, session, bidi, prefix);
        }
        if !self.may_open(session) {
            debug!(stream, %session, "stream for an ended or unknown session refused");
            self.refuse_stream(stream, bidi, Code::WT_SESSION_GONE);
            self.stats.streams_gone += 1;
            return Feed::Done;
        }
        if self.pending_streams.len() >= self.config.max_pending_streams {
            // draft-ietf-webtrans-http3 §4.6: "When the number of buffered streams is
            // exceeded, a stream MUST be closed by sending a RESET_STREAM and/or
            // STOP_SENDING with the WT_BUFFERED_STREAM_REJECTED error code."
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

    /// Gives an established session's new peer stream to the application, unless the
    /// peer broke the session's stream limit or the application's queue is full.
    fn deliver_stream(
        &mut self,
        stream: u64,
        session: SessionId,
        bidi: bool,
        prefix: Bytes,
    ) -> Feed {
        let max_queued = self.config.max_queued_streams;
        let ours = self.config.flow;
        let Some(s) = self.sessions.get_mut(&session) else {
            return Feed::Done;
        };
        let counted = match s.flow_mut().map(|f| f.on_peer_stream(bidi)) {
            Some(Err(v)) => {
                // The stream is refused with the rest of the session's.
                self.refuse_stream(stream, bidi, Code::WT_SESSION_GONE);
                self.flow_violation(session, v);
                return Feed::Done;
            }
            Some(Ok(())) => true,
            None => false,
        };
        let i = usize::from(bidi);
        if s.queued[i] >= max_queued {
            // The application is not accepting: refuse rather than queue without bound.
            debug!(%session, stream, "incoming stream queue full: stream refused");
            let capsule = if counted {
                s.flow_mut()
                    .and_then(|f| f.on_peer_stream_closed(bidi, &ours))
            } else {
                None
            };
            self.refuse_stream(stream, bidi, Code::WT_BUFFERED_STREAM_REJECTED);
            self.stats.streams_rejected += 1;
            if let Some(c) = capsule {
                self.send_capsule(session, &c, false);
            }
            return Feed::Done;
        }
        s.queued[i] += 1;
        self.wt_streams.insert(
            stream,
            WtStream {
                session,
                bidi,
                incoming: true,
                send_open: bidi,
                recv_open: true,
            },
        );
        self.events.push_back(Event::IncomingStream {
            session,
            stream,
            bidi,
            prefix,
        });
        Feed::Detach
    }
}
