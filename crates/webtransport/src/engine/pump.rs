//! Carrying out what the core decided: its actions on QUIC streams, and its events turned
//! into session queues, wake-ups and connection events.

use std::sync::Arc;
use std::time::SystemTime;

use tracing::{debug, info};
use webtransport_proto::connection::{Action, Event, SessionEnd, StreamHalf};
use webtransport_proto::headers::ConnectRequest;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use super::cells::{lock, RecvHalf, SendHalf};
use super::slot::{Incoming, SessionSlot};
use super::state::{Halves, State};
use super::{Engine, PendingRequest};
use crate::error::ConnectionError;
use crate::events::ConnectionEvent;
use crate::lifecycle::ConnectionState;
use crate::quic::quinn_code;

impl State {
    /// Carries out the core's actions and delivers its events. Runs after every input or
    /// command given to the core ([`Engine::update`]).
    pub(super) fn pump(&mut self, engine: &Arc<Engine>) {
        loop {
            let mut any = false;
            while let Some(a) = self.core.poll_action() {
                any = true;
                self.act(engine, a);
            }
            while let Some(e) = self.core.poll_event() {
                any = true;
                self.on_event(engine, e);
            }
            if !any {
                break;
            }
        }
        if self.datagram_bytes > 0 {
            engine
                .activity()
                .received(std::mem::take(&mut self.datagram_bytes));
        }
        // Wake the driver only when the core's timer moved: most inputs (stream data,
        // datagrams) leave it alone, and a wake-up per datagram costs the driver a lock
        // and a rebuilt `select!`.
        if self.core.poll_timeout() != self.armed {
            engine.wake_driver();
        }
    }

    fn act(&mut self, engine: &Arc<Engine>, action: Action) {
        match action {
            Action::Write { stream, data, fin } => {
                engine.activity().sent(data.len());
                if let Err(backlog) = self.writer.write(stream, data, fin) {
                    // The peer reads none of what we write on one of our HTTP/3 streams,
                    // and what waits for it would grow without bound.
                    debug!(conn = %engine.id(), stream = backlog.stream, bytes = backlog.bytes, "HTTP/3 write queue over its cap");
                    self.core.close(
                        Code::H3_EXCESSIVE_LOAD,
                        format!("peer does not read stream {}", backlog.stream),
                    );
                    engine.wake_driver();
                } else if self.writer.write_now(stream) {
                    // A graceful close may be waiting for this to be written.
                    if !self.writer.has_pending() {
                        engine.notify_progress();
                    }
                } else {
                    engine.wake_driver();
                }
            }
            Action::Reset { stream, code } => {
                if let Some(h) = self.halves.get(&stream) {
                    if let Some(cell) = h.send.as_ref().and_then(|w| w.upgrade()) {
                        reset_half(&mut lock(&cell), code);
                    }
                    // The core is done with the half (its session ended, mostly), and
                    // the handle reports nothing more of a half that was reset.
                    self.forget_half(stream, StreamHalf::Send);
                } else if let Some((_, send)) = self.detached.get_mut(&stream) {
                    // A refused stream: its STOP_SENDING came first (see the core's
                    // `refuse_stream`), so nothing more is needed of it.
                    if let Some(mut s) = send.take() {
                        let _ = s.reset(quinn_code(code));
                    }
                    self.detached.remove(&stream);
                } else {
                    self.writer.reset(stream, code);
                }
            }
            Action::StopSending { stream, code } => {
                if let Some(h) = self.halves.get(&stream) {
                    if let Some(cell) = h.recv.as_ref().and_then(|w| w.upgrade()) {
                        stop_half(&mut lock(&cell), code);
                    }
                    self.forget_half(stream, StreamHalf::Recv);
                } else if let Some((recv, _)) = self.detached.get_mut(&stream) {
                    let _ = recv.stop(quinn_code(code));
                    // The sending half of a refused bidi stream gets its reset as a
                    // separate action; until then the entry stays.
                    if let Some((_, None)) = self.detached.get(&stream) {
                        self.detached.remove(&stream);
                    }
                } else if let Some(stop) = self.readers.get(&stream) {
                    stop.stop(code);
                }
            }
            Action::CloseConnection { code, reason } => {
                debug!(conn = %engine.id(), %code, %reason, "closing connection on a protocol error");
                if let Some(e) = self.core.error().cloned() {
                    self.record_error(ConnectionError::Protocol(e));
                }
                if let Some(link) = engine.link() {
                    link.quic.close(quinn_code(code), reason.as_bytes());
                }
            }
        }
    }

    fn on_event(&mut self, engine: &Arc<Engine>, event: Event) {
        match event {
            Event::PeerSettings {
                settings,
                draft,
                flow_control,
            } => {
                info!(conn = %engine.id(), role = ?engine.role(), %settings, draft = ?draft.map(|d| d.name()), flow_control, "peer SETTINGS; WebTransport draft chosen");
                engine.events().emit(ConnectionEvent::SettingsReceived {
                    draft,
                    flow_control,
                });
            }
            Event::SessionRequested { session, request } => {
                debug!(conn = %engine.id(), %session, path = %request.path, headers = ?request.headers, "session requested");
                self.slots.insert(
                    session,
                    SessionSlot::new(Some(ConnectRequest::clone(&request))),
                );
                engine.activity().touch();
                engine.session_requested();
                let pending = PendingRequest {
                    engine: engine.clone(),
                    session,
                    request: *request,
                };
                let refused = match &self.requests {
                    Some(tx) => tx.send(pending).err().map(|_| 503),
                    None => Some(404),
                };
                if let Some(status) = refused {
                    // Nobody accepts sessions (a client, or a server shutting down).
                    let _ = self.core.reject_session(session, status);
                }
            }
            Event::SessionEstablished { session, response } => {
                let slot = self
                    .slots
                    .get_or_insert_with(session, || SessionSlot::new(None));
                slot.established(response);
                engine.activity().touch();
                engine
                    .events()
                    .emit(ConnectionEvent::SessionReady { session });
            }
            Event::SessionEnded { session, end } => self.session_ended(engine, session, end),
            Event::SessionForgotten { session } => {
                self.slots.remove(&session);
            }
            Event::IncomingStream {
                session,
                stream,
                bidi,
                prefix,
            } => self.incoming_stream(engine, session, stream, bidi, prefix),
            Event::Datagram { session, payload } => {
                // Counted once per pump (see `pump`), not per datagram.
                self.datagram_bytes += payload.len() as u64;
                let cap = engine.config().incoming_datagram_queue;
                let Some(slot) = self.slots.get_mut(&session) else {
                    return;
                };
                let len = payload.len();
                if slot.queue_datagram(payload, cap) {
                    self.datagrams_dropped += 1;
                }
                if engine.events().has_subscribers() {
                    engine
                        .events()
                        .emit(ConnectionEvent::DatagramReceived { session, len });
                }
            }
            Event::SessionDraining { session } => {
                if let Some(slot) = self.slots.get(&session) {
                    slot.notify().changed.notify_waiters();
                }
                engine
                    .events()
                    .emit(ConnectionEvent::SessionDraining { session });
            }
            Event::SessionCredit { session } => {
                if let Some(slot) = self.slots.get_mut(&session) {
                    slot.credit();
                }
            }
            Event::GoAway { id } => {
                debug!(conn = %engine.id(), id, "GOAWAY received");
                engine.lifecycle().advance(ConnectionState::Draining);
                engine.events().emit(ConnectionEvent::GoAway { id });
            }
            Event::ConnectionError { error } => {
                engine.events().emit(ConnectionEvent::Error { error });
            }
            _ => {}
        }
    }

    fn session_ended(&mut self, engine: &Arc<Engine>, session: SessionId, end: SessionEnd) {
        debug!(conn = %engine.id(), %session, ?end, "session ended");
        if let Some(slot) = self.slots.get_mut(&session) {
            slot.ended();
        }
        engine.notify_progress();
        let event = match end {
            SessionEnd::Closed {
                code,
                reason,
                remote,
            } => ConnectionEvent::SessionClosed {
                session,
                code,
                reason,
                remote,
            },
            _ => ConnectionEvent::SessionFailed { session },
        };
        engine.events().emit(event);
    }

    fn incoming_stream(
        &mut self,
        engine: &Arc<Engine>,
        session: SessionId,
        stream: u64,
        bidi: bool,
        prefix: bytes::Bytes,
    ) {
        let Some((recv, send)) = self.detached.remove(&stream) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&session) else {
            // The core knows the session, so its slot exists; drop the stream otherwise
            // (quinn stops and finishes dropped halves).
            self.core.stream_done(stream, StreamHalf::Recv);
            self.core.stream_done(stream, StreamHalf::Send);
            return;
        };
        engine.activity().received(prefix.len() as u64);
        let recv = RecvHalf::new_cell(recv, prefix);
        let send = match (bidi, send) {
            (true, Some(s)) => Some(SendHalf::new_cell(s)),
            _ => None,
        };
        self.halves.insert(
            stream,
            Halves {
                send: send.as_ref().map(Arc::downgrade),
                recv: Some(Arc::downgrade(&recv)),
            },
        );
        slot.queue_stream(
            bidi,
            Incoming {
                id: stream,
                send,
                recv,
                flow: self.core.flow_control(),
            },
        );
        engine.events().emit(ConnectionEvent::StreamOpened {
            session,
            bidi,
            incoming: true,
        });
    }

    /// The QUIC connection ended: every live session ends and waiters wake.
    pub(super) fn connection_lost(&mut self, engine: &Arc<Engine>, error: ConnectionError) {
        // A protocol error we detected is counted by the core already.
        if self.error.is_none()
            && !clean_end(&error)
            && !matches!(error, ConnectionError::Protocol(_))
        {
            self.errors += 1;
        }
        self.record_error(error);
        self.closed_at.get_or_insert_with(SystemTime::now);
        self.core.handle_connection_lost();
        self.pump(engine);
        // Readers end by themselves; a client's CONNECT stream may still hold its answer.
        self.detached.clear();
        self.writer.clear();
        let final_state = match self.error.as_deref() {
            Some(e) if clean_end(e) => ConnectionState::Closed,
            _ => ConnectionState::Failed,
        };
        engine.lifecycle().advance(final_state);
        engine.notify_progress();
    }
}

/// Whether a connection that ended with `e` ended cleanly.
fn clean_end(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::LocallyClosed
            | ConnectionError::ApplicationClosed { .. }
            | ConnectionError::GoingAway
    )
}

fn reset_half(half: &mut SendHalf, code: Code) {
    if code == Code::WT_SESSION_GONE {
        half.session_gone();
    } else {
        let _ = half.reset(code);
    }
}

fn stop_half(half: &mut RecvHalf, code: Code) {
    if code == Code::WT_SESSION_GONE {
        half.session_gone();
    } else {
        let _ = half.stop(code);
    }
}
