//! [`Session`]: one WebTransport session — streams, datagrams, close and drain.

mod datagram;
mod events;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use webtransport_proto::connection::CommandError;
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::stream_header::SessionId;

use crate::connection::Connection;
use crate::engine::cells::{lock, RecvCell, RecvHalf, SendCell, SendHalf};
use crate::engine::slot::{SessionGuard, SessionNotify};
use crate::engine::state::Reserve;
use crate::engine::Engine;
use crate::error::{ConnectError, ConnectionError, DatagramError, OpenStreamError, SessionError};
use crate::events::ConnectionEvent;
use crate::stream::{RecvStream, SendStream, StreamLink};

pub use crate::info::{CloseInfo, SessionInfo, SessionStats};
pub use datagram::DatagramBuffer;
pub use events::{SessionEvent, SessionEvents};

impl Connection {
    /// A handle to a session of this connection. (Defined here, with [`Session`], so
    /// that the connection module does not depend on the session module above it.)
    pub fn session(&self, session: SessionId) -> Option<Session> {
        Session::attach(self.clone(), session)
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
    /// A handle on a session of `conn` the engine knows.
    pub(crate) fn attach(conn: Connection, id: SessionId) -> Option<Session> {
        let engine = conn.engine().clone();
        let (notify, guard) = engine.update(|st| st.attach(&engine, id))?;
        Some(Session {
            conn,
            id,
            notify,
            _guard: guard,
        })
    }

    fn engine(&self) -> &Arc<Engine> {
        self.conn.engine()
    }

    /// The session id (its CONNECT stream id).
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The connection carrying it.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn guard(&self) -> Arc<SessionGuard> {
        self._guard.clone()
    }

    fn slot<R>(&self, f: impl FnOnce(&crate::engine::slot::SessionSlot) -> R) -> Option<R> {
        self.engine().read(|st| st.slot(self.id).map(f))
    }

    /// `Ok` while the session is established; how it ended (or that it is not open yet)
    /// otherwise.
    fn check_open(&self) -> Result<(), SessionError> {
        let config = self.engine().config();
        self.engine().read(|st| {
            if st.is_established(self.id) {
                return Ok(());
            }
            Err(st
                .session_error(self.id, config)
                .unwrap_or(SessionError::NotEstablished))
        })
    }

    /// The request that opened the session (path, authority, origin, headers).
    pub fn request(&self) -> Option<ConnectRequest> {
        self.slot(|s| s.request.clone()).flatten()
    }

    /// The response that accepted it.
    pub fn response(&self) -> Option<ConnectResponse> {
        self.slot(|s| s.response.clone()).flatten()
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
        SessionEvents::new(self.conn.events(), self.id)
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.slot(|s| s.stats).unwrap_or_default()
    }

    /// A summary.
    pub fn info(&self) -> Option<SessionInfo> {
        self.conn.get_session_info(self.id)
    }

    /// Whether the peer asked to drain the session.
    pub fn is_draining(&self) -> bool {
        self.engine().read(|st| st.is_draining(self.id))
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        let config = self.engine().config();
        self.engine()
            .read(|st| st.session_error(self.id, config).is_some())
    }

    async fn open(&self, bidi: bool) -> Result<(SendStream, Option<RecvStream>), OpenStreamError> {
        let engine = self.engine().clone();
        let config = engine.config();
        let quic = engine.quic();
        let timeout = config.open_timeout;
        let deadline = Instant::now() + timeout;
        // The peer's WT_MAX_STREAMS first (no wait where flow control is off), then
        // QUIC's stream limit. A QUIC stream is nearly always available at once: it is
        // then opened and registered under the same lock as the credit is taken, and no
        // timer is set up.
        let fast = loop {
            let credit = self.notify.changed.notified();
            tokio::pin!(credit);
            credit.as_mut().enable();
            let step = engine.update(|st| {
                st.reserve_stream(self.id, bidi, config)?;
                let Some(opened) = open_quic(quic, bidi).now_or_never() else {
                    return Ok(None);
                };
                let registered = opened.map(NewStream::new).map(|new| {
                    let r = st.open_stream(self.id, &new.send, new.recv.as_ref(), new.id, config);
                    (new, r)
                });
                if !matches!(registered, Ok((_, Ok(_)))) {
                    st.release_stream(self.id, bidi);
                }
                Ok(Some(registered))
            });
            match step {
                Ok(fast) => break fast,
                Err(Reserve::Failed(e)) => return Err(e.into()),
                Err(Reserve::Blocked) => {}
            }
            tokio::select! {
                _ = credit => {}
                _ = tokio::time::sleep_until(deadline) => return Err(OpenStreamError::Timeout(timeout)),
            }
        };
        let (new, registered) = match fast {
            Some(opened) => {
                opened.map_err(|e| SessionError::Connection(ConnectionError::from_quinn(&e)))?
            }
            None => {
                // Credit is reserved; QUIC has no stream yet.
                let mut reservation = Reservation {
                    engine: &engine,
                    session: self.id,
                    bidi,
                    held: true,
                };
                let opened = tokio::select! {
                    r = tokio::time::timeout_at(deadline, open_quic(quic, bidi)) => match r {
                        Ok(r) => r,
                        Err(_) => return Err(OpenStreamError::Timeout(timeout)),
                    },
                    e = self.closed() => return Err(match e {
                        Ok(c) => SessionError::Closed { code: c.code, reason: c.reason, remote: c.remote },
                        Err(e) => e,
                    }.into()),
                };
                let new = NewStream::new(
                    opened
                        .map_err(|e| SessionError::Connection(ConnectionError::from_quinn(&e)))?,
                );
                let registered = engine.update(|st| {
                    st.open_stream(self.id, &new.send, new.recv.as_ref(), new.id, config)
                });
                reservation.held = registered.is_err();
                (new, registered)
            }
        };
        let (preamble, flow) = registered?;
        let NewStream { id, send, recv } = new;
        // The preamble is not stream payload: it takes no WT_MAX_DATA credit
        // (draft-ietf-webtrans-http3 §5.4).
        let mut preamble = preamble.to_bytes();
        while !preamble.is_empty() {
            std::future::poll_fn(|cx| lock(&send).poll_write_bytes(cx, &mut preamble))
                .await
                .map_err(|e| match e {
                    crate::error::WriteError::SessionGone => self
                        .check_open()
                        .err()
                        .unwrap_or(SessionError::NotEstablished),
                    crate::error::WriteError::Connection(c) => SessionError::Connection(c),
                    _ => SessionError::NotEstablished,
                })?;
        }
        let link = StreamLink {
            engine: engine.clone(),
            id,
            session: self.id,
            flow,
            notify: self.notify.clone(),
        };
        engine.events().emit(ConnectionEvent::StreamOpened {
            session: self.id,
            bidi,
            incoming: false,
        });
        Ok((
            SendStream::new(send, link.clone()),
            recv.map(|r| RecvStream::new(r, link)),
        ))
    }

    /// Opens a bidirectional stream. Waits for stream credit from the peer (its QUIC
    /// stream limit and, where session flow control is in effect, its WT_MAX_STREAMS) up
    /// to the config's `stream_creation_timeout`.
    ///
    /// # Cancel safety
    /// Cancel safe until the stream is open; a stream opened and then cancelled is
    /// finished at once.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), OpenStreamError> {
        let (send, recv) = self.open(true).await?;
        let recv = recv.ok_or(OpenStreamError::Session(SessionError::NotEstablished))?;
        Ok((send, recv))
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
        loop {
            let (incoming, link) = self.take_incoming(true).await?;
            if let Some(send) = incoming.send {
                return Ok((
                    SendStream::new(send, link.clone()),
                    RecvStream::new(incoming.recv, link),
                ));
            }
        }
    }

    /// Waits for the peer's next unidirectional stream.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        let (incoming, link) = self.take_incoming(false).await?;
        Ok(RecvStream::new(incoming.recv, link))
    }

    async fn take_incoming(
        &self,
        bidi: bool,
    ) -> Result<(crate::engine::slot::Incoming, StreamLink), SessionError> {
        // First without registering for a wake-up: under load the stream is usually
        // queued already.
        let incoming = match self.queued_stream(bidi) {
            Some(r) => r?,
            None => self.accept_or_wait(bidi).await?,
        };
        let link = StreamLink {
            engine: self.engine().clone(),
            id: incoming.id,
            session: self.id,
            flow: incoming.flow,
            notify: self.notify.clone(),
        };
        Ok((incoming, link))
    }

    /// The session's next queued incoming stream, or why there is none to wait for.
    fn queued_stream(
        &self,
        bidi: bool,
    ) -> Option<Result<crate::engine::slot::Incoming, SessionError>> {
        let engine = self.engine();
        engine.read_mut(|st| st.take_incoming(self.id, bidi, engine.config()))
    }

    /// Waits until a stream is queued for the session (or there is none to wait for),
    /// taking the peer's new streams of that direction from QUIC meanwhile, so that one
    /// for this session reaches it without a turn of the driver (see `engine::accept`).
    /// Cancel safe: a stream taken from QUIC is started (queued with its session) before
    /// the next await.
    async fn accept_or_wait(
        &self,
        bidi: bool,
    ) -> Result<crate::engine::slot::Incoming, SessionError> {
        let engine = self.engine();
        let notify = if bidi {
            &self.notify.bi
        } else {
            &self.notify.uni
        };
        let mut accepting = Some(engine.accepting(bidi));
        loop {
            // The registration ends with this block, before a stream taken here is
            // started: queuing it notifies the session's acceptors, and this task, which
            // looks at the queue next anyway, would be woken by its own stream and polled
            // once more for nothing (and rescheduled, where another worker may steal it).
            let accepted = {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(r) = self.queued_stream(bidi) {
                    return r;
                }
                if accepting.is_none() {
                    notified.await;
                    continue;
                }
                let quic = engine.quic();
                if bidi {
                    let accept = std::pin::pin!(quic.accept_bi());
                    unless_notified(notified, accept)
                        .await
                        .map(|r| r.map(|(send, recv)| (recv, Some(send))))
                } else {
                    let accept = std::pin::pin!(quic.accept_uni());
                    unless_notified(notified, accept)
                        .await
                        .map(|r| r.map(|recv| (recv, None)))
                }
            };
            match accepted {
                Some(Ok((recv, send))) => engine.start_peer_stream(recv, send),
                // The connection is gone. The driver takes over (woken if this was the
                // last task accepting), meets the same error, and ends the sessions.
                Some(Err(_)) => accepting = None,
                None => {}
            }
        }
    }

    /// The largest datagram payload that can be sent now (the QUIC limit minus the
    /// quarter stream id); `None` if the peer does not accept datagrams.
    pub fn max_datagram_size(&self) -> Option<usize> {
        let max = self.engine().quic().max_datagram_size()?;
        Some(max.saturating_sub(webtransport_proto::datagram::header_len(self.id)))
    }

    /// Bytes free in the connection's outgoing datagram buffer (shared by its sessions):
    /// a sender that keeps below it loses nothing locally, since [`Session::send_datagram`]
    /// drops the oldest queued datagrams to make room.
    pub fn datagram_send_buffer_space(&self) -> usize {
        self.engine().quic().datagram_send_buffer_space()
    }

    /// Sends a datagram. Unreliable: it may be lost, and it is dropped locally when the
    /// send buffer is full.
    ///
    /// The payload is copied behind the session's id; to write it in place instead, see
    /// [`Session::datagram_buffer`].
    pub fn send_datagram(&self, payload: &[u8]) -> Result<(), DatagramError> {
        // No size check of our own up front: quinn checks the whole datagram anyway, and
        // asking it for the limit first costs a second lock of its connection state on
        // every datagram.
        let engine = self.engine();
        let config = engine.config();
        let datagram = engine.read_mut(|st| st.encode_datagram(self.id, payload, config))?;
        self.send_built_datagram(datagram, payload.len())
    }

    /// A buffer to write a datagram's payload of up to `capacity` bytes in, for
    /// [`Session::send_datagram_buffer`]: the datagram is sent from where it is written,
    /// without the copy [`Session::send_datagram`] makes. `capacity` is held to 65,535
    /// (no QUIC datagram is larger; [`Session::max_datagram_size`] is what fits now).
    pub fn datagram_buffer(&self, capacity: usize) -> DatagramBuffer {
        let capacity = capacity.min(usize::from(u16::MAX));
        let engine = self.engine();
        let config = engine.config();
        let buf = engine.read_mut(|st| st.lend_datagram(self.id, capacity, config));
        DatagramBuffer::new(self.id, buf)
    }

    /// Sends a datagram written in a buffer from [`Session::datagram_buffer`]; as
    /// [`Session::send_datagram`] otherwise. A buffer lent by another session is sent as
    /// this session's (by copy).
    pub fn send_datagram_buffer(&self, buffer: DatagramBuffer) -> Result<(), DatagramError> {
        if buffer.session() != self.id {
            return self.send_datagram(&buffer);
        }
        let len = buffer.len();
        let engine = self.engine();
        let config = engine.config();
        let datagram =
            engine.read_mut(|st| st.seal_datagram(self.id, buffer.into_datagram(), config))?;
        self.send_built_datagram(datagram, len)
    }

    /// Hands QUIC a datagram the engine built and counted (`len` bytes of payload).
    fn send_built_datagram(&self, datagram: Bytes, len: usize) -> Result<(), DatagramError> {
        let engine = self.engine();
        let error = match engine.quic().send_datagram(datagram) {
            Ok(()) => {
                engine.activity().sent(len);
                return Ok(());
            }
            Err(quinn::SendDatagramError::TooLarge) => match self.max_datagram_size() {
                Some(max) => DatagramError::TooLarge { size: len, max },
                None => DatagramError::Unsupported,
            },
            Err(quinn::SendDatagramError::ConnectionLost(e)) => {
                SessionError::Connection(crate::error::ConnectionError::from_quinn(&e)).into()
            }
            Err(_) => DatagramError::Unsupported,
        };
        engine.read_mut(|st| st.datagram_not_sent(self.id));
        Err(error)
    }

    /// Waits for the next datagram.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read_datagram(&self) -> Result<Bytes, SessionError> {
        let engine = self.engine();
        let config = engine.config();
        let quic = engine.quic();
        let mut reading = true;
        loop {
            // The queue is the session's own: the connection's lock only when it is empty.
            if let Some(d) = self.notify.take_datagram() {
                return Ok(d);
            }
            // The registration ends with this block, before a datagram taken here is
            // queued (see `accept_or_wait`).
            let taken = {
                let queued = self.notify.datagram.notified();
                tokio::pin!(queued);
                queued.as_mut().enable();
                if let Some(d) = self.notify.take_datagram() {
                    return Ok(d);
                }
                // After the registration: the session's end wakes it.
                if let Some(e) = engine.read(|st| st.datagrams_over(self.id, config)) {
                    return Err(e);
                }
                if !reading {
                    queued.await;
                    continue;
                }
                // While it waits, this task takes what arrives from QUIC itself, as the
                // driver does, so that a datagram reaches it without a turn of the driver
                // in between: under a flood, that hop made the reader fall behind and
                // lose what overflowed its queue (docs/benchmarks.md). Datagrams of other
                // sessions go to their queues. A datagram taken is queued before the next
                // await (cancel safe).
                let read = std::pin::pin!(quic.read_datagram());
                unless_notified(queued, read).await
            };
            match taken {
                Some(Ok(d)) => engine.take_datagrams(quic, d),
                // The connection is gone: the driver meets the same error and ends the
                // session, which wakes this task.
                Some(Err(_)) => reading = false,
                None => {}
            }
        }
    }

    /// Closes the session with an application `code` and `reason` (at most 1024 bytes):
    /// a close capsule, then FIN. Its streams are reset and stopped with WT_SESSION_GONE.
    pub fn close(&self, code: u32, reason: &str) -> Result<(), SessionError> {
        if reason.len() > webtransport_proto::capsule::MAX_CLOSE_REASON {
            return Err(SessionError::ReasonTooLong);
        }
        match self
            .engine()
            .update(|st| st.close_session(self.id, code, reason))
        {
            Ok(()) => Ok(()),
            Err(CommandError::ReasonTooLong) => Err(SessionError::ReasonTooLong),
            Err(_) => self.check_open(),
        }
    }

    /// Asks the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION).
    pub fn drain(&self) -> Result<(), SessionError> {
        match self.engine().update(|st| st.drain_session(self.id)) {
            Ok(()) => Ok(()),
            Err(_) => self.check_open().and(Err(SessionError::NotEstablished)),
        }
    }

    /// Waits until the session ends. `Ok` with the code and reason of a clean close by
    /// either side; `Err` if its CONNECT stream was reset, the connection ended, or it
    /// never opened.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn closed(&self) -> Result<CloseInfo, SessionError> {
        let engine = self.engine();
        let config = engine.config();
        let end = wait_for(&self.notify.changed, || {
            engine.read(|st| st.session_error(self.id, config).map(Ok))
        })
        .await;
        match end {
            Ok(SessionError::Closed {
                code,
                reason,
                remote,
            }) => Ok(CloseInfo {
                code,
                reason,
                remote,
            }),
            Ok(other) | Err(other) => Err(other),
        }
    }

    /// Waits until the session is established (client side, right after the request).
    /// A session that was established and ended at once still counts as established: its
    /// end is then what the application sees.
    pub(crate) async fn ready(&self) -> Result<(), SessionError> {
        let engine = self.engine();
        let config = engine.config();
        wait_for(&self.notify.changed, || {
            engine.read(|st| {
                if st.is_established(self.id) {
                    return Some(Ok(()));
                }
                let ever = st.slot(self.id).is_some_and(|s| s.established_at.is_some());
                match st.session_error(self.id, config) {
                    None => None,
                    Some(_) if ever => Some(Ok(())),
                    Some(e) => Some(Err(e)),
                }
            })
        })
        .await
    }

    /// The error a client gets for a session that did not open.
    pub(crate) fn connect_error(e: SessionError) -> ConnectError {
        match e {
            SessionError::NotOpened(c) => *c,
            SessionError::Connection(c) => ConnectError::ConnectionLost(c),
            SessionError::Closed { .. } | SessionError::Aborted { .. } => ConnectError::NoResponse,
            _ => ConnectError::ConnectionLost(crate::error::ConnectionError::LocallyClosed),
        }
    }
}

/// A QUIC stream of ours: both halves for a bidirectional one.
async fn open_quic(
    quic: &quinn::Connection,
    bidi: bool,
) -> Result<(quinn::SendStream, Option<quinn::RecvStream>), quinn::ConnectionError> {
    if bidi {
        quic.open_bi().await.map(|(s, r)| (s, Some(r)))
    } else {
        quic.open_uni().await.map(|s| (s, None))
    }
}

/// A stream just opened, as the halves the application will hold.
struct NewStream {
    id: u64,
    send: SendCell,
    recv: Option<RecvCell>,
}

impl NewStream {
    fn new((send, recv): (quinn::SendStream, Option<quinn::RecvStream>)) -> Self {
        NewStream {
            id: send.id().into(),
            send: SendHalf::new_cell(send),
            recv: recv.map(|r| RecvHalf::new_cell(r, Bytes::new())),
        }
    }
}

/// Undoes a stream reservation that did not become a stream.
struct Reservation<'a> {
    engine: &'a Arc<Engine>,
    session: SessionId,
    bidi: bool,
    held: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held {
            self.engine
                .update(|st| st.release_stream(self.session, self.bidi));
        }
    }
}

/// `work`'s output, or `None` once `notified` fires (looked at first). A hand-written
/// race rather than `select!`: an idle session's accept and datagram reader wait here for
/// as long as it lives, and this keeps their futures small.
fn unless_notified<'a, 'n, F: Future>(
    mut notified: Pin<&'a mut tokio::sync::futures::Notified<'n>>,
    mut work: Pin<&'a mut F>,
) -> impl Future<Output = Option<F::Output>> + use<'a, 'n, F> {
    std::future::poll_fn(move |cx| {
        if notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
}

/// Waits until `take` finds something (`Some(Ok)`) or says there is nothing to wait for
/// (`Some(Err)`), waking on `notify`. Cancel safe when `take` only removes what it
/// returns.
async fn wait_for<T>(
    notify: &Notify,
    mut take: impl FnMut() -> Option<Result<T, SessionError>>,
) -> Result<T, SessionError> {
    // First without registering for a wake-up: under load the item is usually queued
    // already, and registering costs a lock of the `Notify` per call.
    if let Some(r) = take() {
        return r;
    }
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(r) = take() {
            return r;
        }
        notified.await;
    }
}
