//! Readers of the streams the core reads: every stream the peer opens until its preamble
//! is known (and, for HTTP/3's own streams, all of it), and the CONNECT streams of our own
//! sessions. A reader feeds the core and hands WebTransport streams over when the core
//! detaches them.
//!
//! What already arrived is read at once, where the stream is accepted ([`start`]); a
//! stream that needs more reading (HTTP/3's control stream and CONNECT streams, for the
//! connection's or the session's life) goes to the driver's [`Readers`], which polls it
//! when its own waker fires. No task per stream: a task would cost each of these ~500
//! bytes for as long as the connection lives.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use webtransport_proto::connection::Feed;
use webtransport_proto::vec_map::VecMap;
use webtransport_proto::Code;

use super::wake::WakeFlag;
use super::Engine;
use crate::error::ConnectionError;
use crate::quic::{h3_code, quinn_code};

/// Starts reading a stream the peer opened (with its sending half for a bidirectional
/// one), or one of our own the core reads: feeds what already arrived. A preamble nearly
/// always comes with the first bytes and the core hands the stream to its session at
/// once; the reader of a stream that needs more is returned, for [`Readers`].
#[must_use]
pub(crate) fn start(
    engine: &Arc<Engine>,
    recv: quinn::RecvStream,
    send: Option<quinn::SendStream>,
) -> Option<Reader> {
    let mut reader = Reader {
        id: recv.id().into(),
        recv: Some(recv),
        send,
        signal: None,
        watched: false,
    };
    // Without a waker: one that goes on is polled by the driver with its own.
    match reader.poll(engine, &mut Context::from_waker(Waker::noop())) {
        Poll::Ready(()) => None,
        Poll::Pending => Some(reader),
    }
}

/// Reads one stream into the core until the core is done with it or detaches it.
#[derive(Debug)]
pub(crate) struct Reader {
    id: u64,
    /// Taken when the core detaches the stream.
    recv: Option<quinn::RecvStream>,
    send: Option<quinn::SendStream>,
    /// Its waker in the driver's [`Readers`] and how the core stops it: made when the
    /// reader goes there, or by the first feed that does not detach the stream. A
    /// WebTransport stream whose preamble came with its first bytes (nearly all) never
    /// needs one.
    signal: Option<Arc<ReaderSignal>>,
    /// The signal is registered with the state (`watch_reader`), which the first feed
    /// that does not detach the stream does under its lock, before the core's actions
    /// are carried out, so that a STOP_SENDING the core decides on at once finds it.
    watched: bool,
}

impl Reader {
    /// Feeds the core what the stream has; `Ready` once the stream is no longer read
    /// here, `Pending` with `cx`'s waker registered with the stream (a stop wakes the
    /// reader through its signal).
    fn poll(&mut self, engine: &Arc<Engine>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let Some(stream) = self.recv.as_mut() else {
                return Poll::Ready(());
            };
            let chunk = if self.signal.as_ref().is_some_and(|s| s.stop_requested()) {
                // `take` acts on the stop before anything else.
                Ok(Some(quinn::Chunk {
                    offset: 0,
                    bytes: Bytes::new(),
                }))
            } else {
                match std::pin::pin!(stream.read_chunk(usize::MAX, true)).poll(cx) {
                    Poll::Ready(chunk) => chunk,
                    Poll::Pending => return Poll::Pending,
                }
            };
            if !self.take(engine, chunk) {
                return Poll::Ready(());
            }
        }
    }

    /// The connection is gone and the driver with it: the stream reads once more (and
    /// meets the error), or is reported lost if it still waits.
    fn finish(&mut self, engine: &Arc<Engine>) {
        if self
            .poll(engine, &mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            let id = self.id;
            engine.update(|st| st.reader_lost(id, None));
        }
    }

    /// Feeds what one read gave to the core; `false` once the stream is no longer read
    /// here.
    fn take(
        &mut self,
        engine: &Arc<Engine>,
        chunk: Result<Option<quinn::Chunk>, quinn::ReadError>,
    ) -> bool {
        let id = self.id;
        let Some(stream) = self.recv.as_mut() else {
            return false;
        };
        if let Some(code) = self.signal.as_ref().and_then(|s| s.take_stop()) {
            let _ = stream.stop(quinn_code(code));
            engine.update(|st| st.unwatch_reader(id));
            return false;
        }
        let (data, fin) = match chunk {
            Ok(Some(c)) => (c.bytes, false),
            Ok(None) => (Bytes::new(), true),
            Err(quinn::ReadError::Reset(code)) => {
                engine.update(|st| st.reader_reset(id, h3_code(code)));
                return false;
            }
            Err(e) => {
                // The connection is gone (or the stream was stopped here). Its error is
                // recorded now, since this may come before the driver sees the close.
                let error = match e {
                    quinn::ReadError::ConnectionLost(c) => Some(ConnectionError::from_quinn(&c)),
                    _ => None,
                };
                engine.update(|st| st.reader_lost(id, error));
                return false;
            }
        };
        if data.is_empty() && !fin {
            return true;
        }
        // What the feed decides about the stream's halves is carried out under the same
        // lock, before the core's events are delivered: a detached stream must be where
        // its `IncomingStream` looks for it, and a request stream's answer must find its
        // sending half.
        let done = |st: &mut super::state::State, feed: &Feed| {
            // Once its STOP_SENDING, if any, has reached the signal.
            if *feed == Feed::Done || (fin && *feed == Feed::Continue) {
                st.unwatch_reader(id);
            }
        };
        let (recv, send) = (&mut self.recv, &mut self.send);
        let (signal, watched) = (&mut self.signal, &mut self.watched);
        let feed = engine.update_then(
            |st| {
                if signal.as_ref().is_some_and(|s| s.stop_requested()) {
                    // The core refused the stream since the last feed (a request whose
                    // headers timed out): it has forgotten it, and would take these
                    // bytes for a new stream's.
                    return Feed::Done;
                }
                let feed = st.feed(id, data, fin);
                if feed != Feed::Detach && !*watched {
                    let signal =
                        signal.get_or_insert_with(|| ReaderSignal::new(id, engine.reader_inbox()));
                    st.watch_reader(id, signal.clone());
                    *watched = true;
                }
                match feed {
                    Feed::Continue => {}
                    Feed::Request => {
                        if let Some(s) = send.take() {
                            st.register_request_stream(id, s);
                        }
                    }
                    Feed::Detach => {
                        if let Some(r) = recv.take() {
                            st.detached(id, r, send.take());
                        }
                    }
                    Feed::Done => {
                        if let Some(s) = send.take() {
                            // A request stream refused before its HEADERS still gets the
                            // core's answer (a reset, or a status) on its sending half.
                            st.register_request_stream(id, s);
                        }
                    }
                }
                feed
            },
            done,
        );
        match feed {
            Feed::Continue => {}
            // What the core already answered on it can be written now.
            Feed::Request => engine.wake_driver(),
            Feed::Detach => return false,
            Feed::Done => {
                let code = self.signal.as_ref().and_then(|s| s.take_stop());
                if let (Some(code), Some(r)) = (code, self.recv.as_mut()) {
                    let _ = r.stop(quinn_code(code));
                }
                engine.wake_driver();
                // A CONNECT stream the peer closed: a graceful close may be waiting for it.
                engine.notify_progress();
                return false;
            }
        }
        if fin {
            engine.notify_progress();
            return false;
        }
        true
    }
}

/// The readers the driver polls: each with a waker of its own that names it, so a wake-up
/// polls that stream alone however many the connection has.
#[derive(Debug)]
pub(super) struct Readers {
    streams: VecMap<u64, Reader>,
    inbox: Arc<Inbox>,
}

/// What reaches the driver's readers from elsewhere: readers started outside the driver,
/// and which readers were woken. As a waker, it tells the driver that QUIC has a stream
/// no application task takes (see `accept`).
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Something below is waiting; wakes the driver.
    pending: WakeFlag,
    /// A watched direction of QUIC's new streams has one for the driver to take. A flag
    /// with a waker of its own: were it told through `pending`, which the readers take
    /// whenever they are polled, a wake-up that came after the driver looked here and
    /// while `pending` had no waker registered (a wake-up takes it) would be taken by
    /// the readers, and the driver would sleep with a stream in QUIC (stop 32: one
    /// session setup in ~15,000 stalled until its timeout).
    unattended: WakeFlag,
    new: Mutex<NewReaders>,
    woken: Mutex<Vec<u64>>,
}

impl Inbox {
    /// Hands a reader started outside the driver (a client's CONNECT stream) to it.
    pub(crate) fn adopt(&self, engine: &Arc<Engine>, mut reader: Reader) {
        {
            let mut new = self.lock_new();
            if !new.closed {
                new.readers.push(reader);
                drop(new);
                self.wake_driver();
                return;
            }
        }
        reader.finish(engine);
    }

    fn lock_new(&self) -> std::sync::MutexGuard<'_, NewReaders> {
        self.new.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_driver(&self) {
        self.pending.set();
    }

    /// Has the driver take the peer's new streams that no application task takes.
    pub(crate) fn wake_unattended(&self) {
        self.unattended.set();
    }

    /// `Ready` when the driver should take the peer's new streams (once per wake-up);
    /// otherwise `cx` is woken when it should.
    pub(crate) fn poll_unattended(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.unattended.poll_take(cx)
    }
}

/// The waker of QUIC's accept while no application task waits for a direction's streams.
impl Wake for Inbox {
    fn wake(self: Arc<Self>) {
        self.wake_unattended();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_unattended();
    }
}

#[derive(Debug, Default)]
struct NewReaders {
    readers: Vec<Reader>,
    /// The driver is gone.
    closed: bool,
}

/// [`ReaderSignal::stop`]'s "no stop asked for".
const NO_STOP: u64 = u64::MAX;

/// A long-lived reader's waker, which lists it once in the inbox for the driver, and the
/// core's request to stop its stream (STOP_SENDING), which wakes it: one allocation per
/// reader for both.
#[derive(Debug)]
pub(crate) struct ReaderSignal {
    id: u64,
    /// In the inbox's `woken` and not polled since: a reader is listed once however
    /// often it is woken, so the list is bounded by the readers there are.
    queued: AtomicBool,
    /// The code the core stops the stream with, until the reader acts on it; `NO_STOP`
    /// when none.
    stop: AtomicU64,
    inbox: Arc<Inbox>,
}

impl ReaderSignal {
    fn new(id: u64, inbox: &Arc<Inbox>) -> Arc<Self> {
        Arc::new(ReaderSignal {
            id,
            queued: AtomicBool::new(false),
            stop: AtomicU64::new(NO_STOP),
            inbox: inbox.clone(),
        })
    }

    /// The core stops the stream: its reader is woken to do it.
    pub(crate) fn stop(self: &Arc<Self>, code: Code) {
        // An application error code is a varint: below `NO_STOP`.
        self.stop.store(code.0.min(NO_STOP - 1), Ordering::Release);
        self.wake_by_ref();
    }

    fn take_stop(&self) -> Option<Code> {
        Some(self.stop.swap(NO_STOP, Ordering::AcqRel))
            .filter(|&c| c != NO_STOP)
            .map(Code)
    }

    /// Whether the core asked to stop the stream (and the reader has not acted on it).
    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire) != NO_STOP
    }
}

impl Wake for ReaderSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inbox
            .woken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.id);
        self.inbox.wake_driver();
    }
}

impl Readers {
    pub(super) fn new(inbox: Arc<Inbox>) -> Self {
        Readers {
            streams: VecMap::default(),
            inbox,
        }
    }

    /// Starts reading a stream the driver accepted (see [`start`]).
    pub(super) fn start(
        &mut self,
        engine: &Arc<Engine>,
        recv: quinn::RecvStream,
        send: Option<quinn::SendStream>,
    ) {
        if let Some(reader) = start(engine, recv, send) {
            self.add(reader);
        }
    }

    /// Takes a reader that must go on reading; it is polled on the next
    /// [`Readers::poll`].
    fn add(&mut self, mut reader: Reader) {
        let id = reader.id;
        let signal = reader
            .signal
            .get_or_insert_with(|| ReaderSignal::new(id, &self.inbox));
        // Polled first with no waker: it must be polled with its own. Listed even if a
        // stop listed it before it got here, since that listing may be gone already.
        signal.queued.store(false, Ordering::Release);
        signal.wake_by_ref();
        self.streams.insert(id, reader);
    }

    /// The connection is gone: every reader reads once more (and meets the error), and
    /// one that still waits is reported lost.
    pub(super) fn close(mut self, engine: &Arc<Engine>) {
        let mut new = {
            let mut new = self.inbox.lock_new();
            new.closed = true;
            std::mem::take(&mut new.readers)
        };
        let waiting = self.streams.iter_mut().map(|(_, r)| r);
        for reader in waiting.chain(new.iter_mut()) {
            reader.finish(engine);
        }
    }

    /// Polls the readers woken since the last call (and those handed over); always
    /// pending, with `cx` woken when there is more to do.
    pub(super) fn poll(&mut self, engine: &Arc<Engine>, cx: &mut Context<'_>) -> Poll<()> {
        // A wake-up after this wakes the driver again: one pass is enough.
        if self.inbox.pending.poll_take(cx).is_pending() {
            return Poll::Pending;
        }
        let new = std::mem::take(&mut self.inbox.lock_new().readers);
        for reader in new {
            self.add(reader);
        }
        // Taken, buffer and all: these readers wake seldom (a control stream, a CONNECT
        // stream's capsules), and an idle connection should not hold the room.
        let woken =
            std::mem::take(&mut *self.inbox.woken.lock().unwrap_or_else(|e| e.into_inner()));
        for id in woken {
            let Some(reader) = self.streams.get_mut(&id) else {
                continue;
            };
            let Some(signal) = reader.signal.clone() else {
                continue;
            };
            // Cleared before the poll: a wake-up during it lists the reader again.
            signal.queued.store(false, Ordering::Release);
            let waker = Waker::from(signal);
            if reader
                .poll(engine, &mut Context::from_waker(&waker))
                .is_ready()
            {
                self.streams.remove(&id);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::wake::CountingWaker;

    /// An inbox, and a waker that counts its wake-ups for the driver's.
    fn inbox_and_driver() -> (Arc<Inbox>, Arc<CountingWaker>, Waker) {
        let (driver, waker) = CountingWaker::new();
        (Arc::new(Inbox::default()), driver, waker)
    }

    /// QUIC's accept, polled with the inbox as its waker, asks the driver once per wake-up
    /// to take the streams no application task takes, and wakes it.
    #[test]
    fn the_inbox_as_a_waker_has_the_driver_take_unattended_streams() {
        let (inbox, driver, driver_waker) = inbox_and_driver();
        let mut cx = Context::from_waker(&driver_waker);
        assert!(inbox.poll_unattended(&mut cx).is_pending());
        let waker = Waker::from(inbox.clone());
        waker.wake_by_ref();
        waker.wake();
        assert_eq!(driver.count(), 1, "the driver is woken");
        assert!(inbox.poll_unattended(&mut cx).is_ready());
        assert!(
            inbox.poll_unattended(&mut cx).is_pending(),
            "once per wake-up"
        );
    }

    /// The wake-up of a watch reaches the driver whatever the readers do meanwhile: here
    /// it comes after the driver looked for unattended streams and while the readers'
    /// flag has no waker (an earlier wake-up took it), and the readers take their flag in
    /// the same turn. Told through the readers' flag, as until stop 32, it was lost.
    #[test]
    fn a_watch_wakes_the_driver_even_when_the_readers_take_their_flag() {
        let (inbox, driver, driver_waker) = inbox_and_driver();
        let mut cx = Context::from_waker(&driver_waker);
        // The driver's turn: the readers registered, and an earlier wake-up (a reader's)
        // used their waker up.
        assert!(inbox.pending.poll_take(&mut cx).is_pending());
        inbox.wake_driver();
        assert!(inbox.pending.poll_take(&mut cx).is_ready());
        inbox.wake_driver();
        let woken = driver.count();
        // Next turn: no unattended stream yet...
        assert!(inbox.poll_unattended(&mut cx).is_pending());
        // ...then QUIC's accept wakes the inbox, and the readers take their flag.
        Waker::from(inbox.clone()).wake_by_ref();
        let _ = inbox.pending.poll_take(&mut cx);
        assert!(driver.count() > woken, "the driver is woken for the stream");
        assert!(inbox.poll_unattended(&mut cx).is_ready());
    }

    /// A reader woken again and again before the driver polls it is listed once; once
    /// polled, a new wake-up lists it again and wakes the driver.
    #[test]
    fn a_reader_is_listed_once_per_poll_however_often_woken() {
        let inbox = Arc::new(Inbox::default());
        let wake = ReaderSignal::new(7, &inbox);
        let waker = Waker::from(wake.clone());
        for _ in 0..1_000 {
            waker.wake_by_ref();
        }
        assert_eq!(*inbox.woken.lock().unwrap(), [7]);
        assert!(inbox.pending.take());
        // The driver takes the list and clears the flag before polling.
        inbox.woken.lock().unwrap().clear();
        wake.queued.store(false, Ordering::Release);
        waker.wake();
        assert_eq!(*inbox.woken.lock().unwrap(), [7]);
        assert!(inbox.pending.take());
    }

    /// The core's stop reaches a reader through its signal alone: the reader is listed for
    /// the driver, and the code is taken once.
    #[test]
    fn a_stop_lists_the_reader_and_is_taken_once() {
        let inbox = Arc::new(Inbox::default());
        let signal = ReaderSignal::new(3, &inbox);
        assert!(!signal.stop_requested());
        signal.stop(Code::H3_REQUEST_CANCELLED);
        assert_eq!(*inbox.woken.lock().unwrap(), [3]);
        assert!(inbox.pending.take());
        assert!(signal.stop_requested());
        assert_eq!(signal.take_stop(), Some(Code::H3_REQUEST_CANCELLED));
        assert_eq!(signal.take_stop(), None);
    }
}
