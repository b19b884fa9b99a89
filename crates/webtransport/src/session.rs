//! [`Session`]: one WebTransport session — streams, datagrams, close and drain.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::stream_header::SessionId;

use crate::connection::{Connection, ConnectionEvent};
use crate::driver::{SessionNotify, SessionSlot, SessionStatus};
use crate::error::{DatagramError, OpenStreamError, SessionError};
use crate::stream::{RecvStream, SendStream};

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    /// Bidirectional streams we opened.
    pub streams_opened_bi: u64,
    /// Unidirectional streams we opened.
    pub streams_opened_uni: u64,
    /// Bidirectional streams the peer opened.
    pub streams_accepted_bi: u64,
    /// Unidirectional streams the peer opened.
    pub streams_accepted_uni: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams dropped because the application did not read them in time.
    pub datagrams_dropped: u64,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseInfo {
    /// Application code (0 for a close without a capsule).
    pub code: u32,
    /// Reason.
    pub reason: String,
    /// Whether the peer closed it.
    pub remote: bool,
}

/// A summary of a session (pywebtransport's `WebTransportSessionInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The session id (its CONNECT stream id).
    #[serde(serialize_with = "ser_sid")]
    pub session_id: SessionId,
    /// `pending`, `established`, `closed`, `failed` or `lost`.
    pub state: &'static str,
    /// Request path.
    pub path: Option<String>,
    /// Negotiated subprotocol.
    pub protocol: Option<String>,
    /// Whether the peer asked to drain.
    pub draining: bool,
    /// When the request was made or seen.
    pub created_at: SystemTime,
    /// When it was established.
    pub established_at: Option<SystemTime>,
    /// When it closed.
    pub closed_at: Option<SystemTime>,
    /// How it closed.
    pub close: Option<CloseInfo>,
    /// Counters.
    pub stats: SessionStats,
}

fn ser_sid<S: serde::Serializer>(s: &SessionId, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u64(s.stream_id())
}

impl SessionInfo {
    pub(crate) fn from_slot(id: SessionId, s: &SessionSlot) -> Self {
        let (state, close) = match &s.status {
            SessionStatus::Pending => ("pending", None),
            SessionStatus::Established => ("established", None),
            SessionStatus::Closed {
                code,
                reason,
                remote,
            } => (
                "closed",
                Some(CloseInfo {
                    code: *code,
                    reason: reason.clone(),
                    remote: *remote,
                }),
            ),
            SessionStatus::Failed(_) => ("failed", None),
            SessionStatus::Lost(_) => ("lost", None),
        };
        SessionInfo {
            session_id: id,
            state,
            path: s.request.as_ref().map(|r| r.path.clone()),
            protocol: s.response.as_ref().and_then(|r| r.protocol.clone()),
            draining: s.draining,
            created_at: s.created_at,
            established_at: s.established_at,
            closed_at: s.closed_at,
            close,
            stats: s.stats,
        }
    }
}

/// An event of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The session is established.
    Ready,
    /// A stream was opened.
    StreamOpened {
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// Opened by the peer.
        incoming: bool,
    },
    /// A datagram arrived (read it with [`Session::read_datagram`]).
    Datagram {
        /// Payload length.
        len: usize,
    },
    /// The peer asked to wind the session down.
    Draining,
    /// The session closed.
    Closed(CloseInfo),
    /// The connection under the session closed.
    ConnectionClosed(crate::error::ConnectionError),
}

/// The typed event stream of one session, from [`Session::events`].
#[derive(Debug)]
pub struct SessionEvents {
    rx: tokio::sync::broadcast::Receiver<ConnectionEvent>,
    id: SessionId,
}

impl SessionEvents {
    /// The next event; `None` once the connection's event channel is gone. Events missed
    /// because the receiver lagged more than 256 behind are skipped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let ev = match self.rx.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            };
            let mapped = match ev {
                ConnectionEvent::SessionReady { session } if session == self.id => {
                    SessionEvent::Ready
                }
                ConnectionEvent::StreamOpened {
                    session,
                    bidi,
                    incoming,
                } if session == self.id => SessionEvent::StreamOpened { bidi, incoming },
                ConnectionEvent::DatagramReceived { session, len } if session == self.id => {
                    SessionEvent::Datagram { len }
                }
                ConnectionEvent::SessionDraining { session } if session == self.id => {
                    SessionEvent::Draining
                }
                ConnectionEvent::SessionClosed {
                    session,
                    code,
                    reason,
                    remote,
                } if session == self.id => SessionEvent::Closed(CloseInfo {
                    code,
                    reason,
                    remote,
                }),
                ConnectionEvent::Closed { error } => SessionEvent::ConnectionClosed(error),
                _ => continue,
            };
            return Some(mapped);
        }
    }
}

/// Closes the session when the last [`Session`] handle goes.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    shared: Arc<crate::driver::Shared>,
    id: SessionId,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut inner = shared.lock();
        if inner
            .sessions
            .get(&self.id)
            .is_some_and(|s| s.is_established())
        {
            let _ = inner.core.close_session(self.id, 0, "");
            shared.pump(&mut inner);
        }
    }
}

/// A WebTransport session. Cheap to clone; the session is closed with code 0 when the
/// last handle is dropped.
#[derive(Debug, Clone)]
pub struct Session {
    conn: Connection,
    id: SessionId,
    notify: Arc<SessionNotify>,
    _guard: Arc<SessionGuard>,
}

impl Session {
    pub(crate) fn attach(conn: Connection, id: SessionId, slot: &mut SessionSlot) -> Session {
        let guard = match slot.guard.upgrade() {
            Some(g) => g,
            None => {
                let g = Arc::new(SessionGuard {
                    shared: conn.shared().clone(),
                    id,
                });
                slot.guard = Arc::downgrade(&g);
                g
            }
        };
        Session {
            notify: slot.notify.clone(),
            conn,
            id,
            _guard: guard,
        }
    }

    /// The session id (its CONNECT stream id).
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The connection carrying it.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn with_slot<R>(&self, f: impl FnOnce(&mut SessionSlot) -> R) -> Option<R> {
        let mut inner = self.conn.shared().lock();
        inner.sessions.get_mut(&self.id).map(|s| f(s))
    }

    fn status_error(status: &SessionStatus) -> SessionError {
        match status {
            SessionStatus::Closed {
                code,
                reason,
                remote,
            } => SessionError::Closed {
                code: *code,
                reason: reason.clone(),
                remote: *remote,
            },
            SessionStatus::Lost(e) => SessionError::Connection(e.clone()),
            SessionStatus::Failed(e) => {
                SessionError::Connection(crate::error::ConnectionError::Transport(e.to_string()))
            }
            SessionStatus::Pending | SessionStatus::Established => SessionError::NotEstablished,
        }
    }

    /// Why an operation the core refused failed: the session's end, or not established.
    fn why_not_open(&self) -> SessionError {
        self.check_open()
            .err()
            .unwrap_or(SessionError::NotEstablished)
    }

    fn check_open(&self) -> Result<(), SessionError> {
        match self.conn.slot_status(self.id) {
            Some(SessionStatus::Established) => Ok(()),
            Some(other) => Err(Self::status_error(&other)),
            None => Err(SessionError::Closed {
                code: 0,
                reason: "session forgotten".into(),
                remote: false,
            }),
        }
    }

    /// The request that opened the session (path, authority, origin, headers).
    pub fn request(&self) -> Option<ConnectRequest> {
        self.with_slot(|s| s.request.clone()).flatten()
    }

    /// The response that accepted it.
    pub fn response(&self) -> Option<ConnectResponse> {
        self.with_slot(|s| s.response.clone()).flatten()
    }

    /// The request path.
    pub fn path(&self) -> Option<String> {
        self.request().map(|r| r.path)
    }

    /// The negotiated subprotocol (`wt-protocol`), if any.
    pub fn protocol(&self) -> Option<String> {
        self.response().and_then(|r| r.protocol)
    }

    /// A receiver of this session's events (from now on).
    pub fn events(&self) -> SessionEvents {
        SessionEvents {
            rx: self.conn.events(),
            id: self.id,
        }
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.with_slot(|s| s.stats).unwrap_or_default()
    }

    /// A summary.
    pub fn info(&self) -> Option<SessionInfo> {
        self.conn.get_session_info(self.id)
    }

    /// Whether the peer asked to drain the session.
    pub fn is_draining(&self) -> bool {
        self.with_slot(|s| s.draining).unwrap_or(false)
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        !matches!(
            self.conn.slot_status(self.id),
            Some(SessionStatus::Established | SessionStatus::Pending)
        )
    }

    async fn open(&self, bidi: bool) -> Result<(SendStream, Option<RecvStream>), OpenStreamError> {
        self.check_open()?;
        let shared = self.conn.shared();
        let timeout = shared.open_timeout;
        let opened = async {
            if bidi {
                shared.quic.open_bi().await.map(|(s, r)| (s, Some(r)))
            } else {
                shared.quic.open_uni().await.map(|s| (s, None))
            }
        };
        let (send, recv) = tokio::select! {
            r = tokio::time::timeout(timeout, opened) => match r {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return Err(SessionError::Connection(crate::error::ConnectionError::from_quinn(&e)).into()),
                Err(_) => return Err(OpenStreamError::Timeout(timeout)),
            },
            e = self.closed() => return Err(match e {
                Ok(c) => SessionError::Closed { code: c.code, reason: c.reason, remote: c.remote },
                Err(e) => e,
            }.into()),
        };
        // One lock for the core's check and the preamble, the registration of both
        // halves with the session (so that its close resets them) and the counters.
        let (mut send, recv, preamble) = {
            let mut inner = shared.lock();
            let preamble = inner.core.open_stream(self.id, bidi);
            let slot = inner.sessions.get_mut(&self.id);
            let (Ok(preamble), Some(slot)) = (preamble, slot) else {
                drop(inner);
                return Err(self.why_not_open().into());
            };
            let (send, cell) = SendStream::new(send, self.id);
            slot.register_send(&cell);
            let recv = recv.map(|recv| {
                let (recv, cell) = RecvStream::new(recv, Bytes::new(), self.id);
                slot.register_recv(&cell);
                recv
            });
            if bidi {
                slot.stats.streams_opened_bi += 1;
            } else {
                slot.stats.streams_opened_uni += 1;
            }
            (send, recv, preamble)
        };
        send.write_all(&preamble).await.map_err(|e| match e {
            crate::error::WriteError::SessionGone => self.why_not_open(),
            e => SessionError::Connection(crate::error::ConnectionError::Transport(e.to_string())),
        })?;
        shared.emit(ConnectionEvent::StreamOpened {
            session: self.id,
            bidi,
            incoming: false,
        });
        Ok((send, recv))
    }

    /// Opens a bidirectional stream. Waits for stream credit from the peer up to the
    /// config's stream creation timeout.
    ///
    /// # Cancel safety
    /// Cancel safe until the stream is open; a stream opened and then cancelled is
    /// finished at once.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), OpenStreamError> {
        let (send, recv) = self.open(true).await?;
        Ok((send, recv.expect("bidi stream has a receive half")))
    }

    /// Opens a unidirectional stream.
    ///
    /// # Cancel safety
    /// As [`Session::open_bi`].
    pub async fn open_uni(&self) -> Result<SendStream, OpenStreamError> {
        let (send, _) = self.open(false).await?;
        Ok(send)
    }

    /// Waits for the peer's next bidirectional stream.
    ///
    /// # Cancel safety
    /// Cancel safe: a stream is taken only when returned.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        self.wait_for(&self.notify.bi, |slot| slot.incoming_bi.pop_front())
            .await
    }

    /// Waits for the peer's next unidirectional stream.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        self.wait_for(&self.notify.uni, |slot| slot.incoming_uni.pop_front())
            .await
    }

    /// Waits until `take` finds something in the session's slot, waking on `notify`;
    /// fails once the session is neither pending nor established. Cancel safe: `take`
    /// runs under the lock, so an item is only removed when it is returned.
    async fn wait_for<T>(
        &self,
        notify: &tokio::sync::Notify,
        mut take: impl FnMut(&mut SessionSlot) -> Option<T>,
    ) -> Result<T, SessionError> {
        // First without registering for a wake-up: under load the item is usually queued
        // already, and registering costs a lock of the `Notify` per call.
        if let Some(r) = self.try_take(&mut take) {
            return r;
        }
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.try_take(&mut take) {
                return r;
            }
            notified.await;
        }
    }

    /// One look at the slot: the item, the session's end, or `None` to wait.
    fn try_take<T>(
        &self,
        take: &mut impl FnMut(&mut SessionSlot) -> Option<T>,
    ) -> Option<Result<T, SessionError>> {
        let mut inner = self.conn.shared().lock();
        let Some(slot) = inner.sessions.get_mut(&self.id) else {
            return Some(Err(SessionError::NotEstablished));
        };
        if let Some(item) = take(slot) {
            return Some(Ok(item));
        }
        if !matches!(
            slot.status,
            SessionStatus::Established | SessionStatus::Pending
        ) {
            return Some(Err(Self::status_error(&slot.status)));
        }
        None
    }

    /// The largest datagram payload that can be sent now (the QUIC limit minus the
    /// quarter stream id); `None` if the peer does not accept datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let max = self.conn.shared().quic.max_datagram_size()?;
        Some(max.saturating_sub(webtransport_proto::datagram::header_len(self.id)))
    }

    /// Bytes free in the connection's outgoing datagram buffer (shared by its sessions):
    /// a sender that keeps below it loses nothing locally, since [`Session::send_datagram`]
    /// drops the oldest queued datagrams to make room.
    pub fn datagram_send_buffer_space(&self) -> usize {
        self.conn.shared().quic.datagram_send_buffer_space()
    }

    /// Sends a datagram. Unreliable: it may be lost, and it is dropped locally when the
    /// send buffer is full.
    pub fn send_datagram(&self, payload: &[u8]) -> Result<(), DatagramError> {
        // No size check of our own up front: quinn checks the whole datagram anyway, and
        // asking it for the limit first costs a second lock of its connection state on
        // every datagram.
        let shared = self.conn.shared();
        let datagram = {
            let mut inner = shared.lock();
            match inner.encode_datagram(self.id, payload) {
                Ok(d) => {
                    if let Some(slot) = inner.sessions.get_mut(&self.id) {
                        slot.stats.datagrams_sent += 1;
                    }
                    d
                }
                Err(webtransport_proto::connection::SessionError::DatagramsDisabled) => {
                    return Err(DatagramError::Unsupported)
                }
                Err(_) => {
                    drop(inner);
                    return Err(self.why_not_open().into());
                }
            }
        };
        let error = match shared.quic.send_datagram(datagram) {
            Ok(()) => return Ok(()),
            Err(quinn::SendDatagramError::TooLarge) => match self.max_datagram_size() {
                Some(max) => DatagramError::TooLarge {
                    size: payload.len(),
                    max,
                },
                None => DatagramError::Unsupported,
            },
            Err(quinn::SendDatagramError::ConnectionLost(e)) => {
                SessionError::Connection(crate::error::ConnectionError::from_quinn(&e)).into()
            }
            Err(_) => DatagramError::Unsupported,
        };
        if let Some(slot) = shared.lock().sessions.get_mut(&self.id) {
            slot.stats.datagrams_sent = slot.stats.datagrams_sent.saturating_sub(1);
        }
        Err(error)
    }

    /// Waits for the next datagram.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read_datagram(&self) -> Result<Bytes, SessionError> {
        self.wait_for(&self.notify.datagram, |slot| slot.datagrams.pop_front())
            .await
    }

    /// Closes the session with an application `code` and `reason` (at most 1024 bytes).
    /// Its streams are reset with WT_SESSION_GONE.
    pub fn close(&self, code: u32, reason: &str) -> Result<(), SessionError> {
        if reason.len() > webtransport_proto::capsule::MAX_CLOSE_REASON {
            return Err(SessionError::ReasonTooLong);
        }
        let shared = self.conn.shared();
        let mut inner = shared.lock();
        let r = inner.core.close_session(self.id, code, reason);
        shared.pump(&mut inner);
        match r {
            Ok(()) => Ok(()),
            Err(_) => {
                drop(inner);
                self.check_open()
            }
        }
    }

    /// Asks the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION).
    pub fn drain(&self) -> Result<(), SessionError> {
        let shared = self.conn.shared();
        let mut inner = shared.lock();
        let r = inner.core.drain_session(self.id);
        shared.pump(&mut inner);
        r.map_err(|_| SessionError::NotEstablished)
    }

    /// Waits until the session closes. `Ok` with the code and reason of a close by
    /// either side; `Err` if the connection ended or the session never opened.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> Result<CloseInfo, SessionError> {
        loop {
            let notified = self.notify.state.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.conn.slot_status(self.id) {
                Some(SessionStatus::Closed {
                    code,
                    reason,
                    remote,
                }) => {
                    return Ok(CloseInfo {
                        code,
                        reason,
                        remote,
                    })
                }
                Some(SessionStatus::Pending | SessionStatus::Established) => {}
                Some(other) => return Err(Self::status_error(&other)),
                None => return Err(SessionError::NotEstablished),
            }
            notified.await;
        }
    }

    pub(crate) fn guard(&self) -> Arc<SessionGuard> {
        self._guard.clone()
    }

    /// Waits until the session is established (client side, right after the request).
    /// A session that was established and closed at once still counts as established:
    /// its close is then what the application sees.
    pub(crate) async fn ready(&self) -> Result<(), SessionStatus> {
        loop {
            let notified = self.notify.state.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let state = self.with_slot(|s| (s.status.clone(), s.established_at.is_some()));
            match state {
                Some((SessionStatus::Pending, _)) => {}
                Some((SessionStatus::Established, _)) | Some((_, true)) => return Ok(()),
                Some((other, false)) => return Err(other),
                None => {
                    return Err(SessionStatus::Lost(
                        crate::error::ConnectionError::LocallyClosed,
                    ))
                }
            }
            notified.await;
        }
    }
}
