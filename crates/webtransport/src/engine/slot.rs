//! [`SessionSlot`]: what the application side of a session needs besides the protocol
//! state (which the core owns): its queues of incoming streams and datagrams, the wake-ups
//! of its waiters, its counters and timestamps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::Notify;
use webtransport_proto::connection::StreamHalf;
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::stream_header::SessionId;

use super::cells::{RecvCell, SendCell};
use super::Engine;
use crate::info::SessionStats;

/// What one session's handles share without taking the connection's lock: wake-ups for
/// its waiters, and the send credit taken from the core for its writers.
#[derive(Debug, Default)]
pub(crate) struct SessionNotify {
    /// The rare events, in one `Notify` whose waiters each check what they wait for: the
    /// session was established, began draining or ended, or the peer raised a
    /// flow-control limit (stream openers wait for that).
    pub(crate) changed: Notify,
    /// An incoming bidirectional stream is queued.
    pub(crate) bi: Notify,
    /// An incoming unidirectional stream is queued.
    pub(crate) uni: Notify,
    /// A datagram is queued.
    pub(crate) datagram: Notify,
    /// Session flow control's send credit (draft-ietf-webtrans-http3 §5.4) that the core
    /// has handed out and no write has used yet. The core counts it as sent; writers take
    /// from here without the connection's lock and go to the core (`refill_send_credit`)
    /// only when it is empty. It grows only under the connection's lock, so a writer that
    /// finds both empty there can wait for the peer's WT_MAX_DATA without missing credit.
    send_credit: AtomicU64,
    /// What this session's stream handles have not told the core yet. They leave it
    /// here instead of taking the connection's lock, and one of them takes the lock to
    /// hand it over once it is large (see [`Deferred`]).
    deferred: Mutex<Deferred>,
    /// Received datagrams until the application reads them. Here rather than under the
    /// connection's lock, so that a reader takes each one without that lock (which the
    /// driver, or another reader, holds for a whole burst of arrivals). Filled only under
    /// the connection's lock (so that the session's end, which empties it there, is
    /// final); read without it.
    datagrams: Mutex<VecDeque<Bytes>>,
}

/// Reports of one session's streams waiting for the core: payload arrived and read
/// (together, since the core must see arrivals before the reads they allow), and halves
/// of streams that are done. Handed over in that order.
///
/// How large it may grow is what keeps the peer from stalling: with every reader waiting,
/// what the core has not been told stays under half of each window, so WT_MAX_DATA and
/// WT_MAX_STREAMS (sent at half) have gone out.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pub(crate) received: u64,
    pub(crate) consumed: u64,
    pub(crate) done: Vec<(u64, StreamHalf)>,
}

impl Deferred {
    /// Whether this is enough to hand over: `bytes` of payload either way, or `ends`
    /// halves done.
    fn is_due(&self, bytes: u64, ends: usize) -> bool {
        self.received >= bytes || self.consumed >= bytes || self.done.len() >= ends
    }
}

impl SessionNotify {
    /// Takes up to `want` bytes of the credit held here.
    pub(crate) fn take_send_credit(&self, want: u64) -> u64 {
        let mut have = self.send_credit.load(Ordering::Acquire);
        loop {
            let take = have.min(want);
            if take == 0 {
                return 0;
            }
            match self.send_credit.compare_exchange_weak(
                have,
                have - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take,
                Err(now) => have = now,
            }
        }
    }

    /// Leaves a stream's report for the core: `received` more bytes arrived, the
    /// application took `consumed` more, perhaps a half of `stream` is `done`. Returns
    /// whether what waits is now due (see [`Deferred::is_due`]): then the caller hands it
    /// over ([`State::session_progress`](super::State::session_progress)).
    pub(crate) fn defer(
        &self,
        received: u64,
        consumed: u64,
        done: Option<(u64, StreamHalf)>,
        due: (u64, usize),
    ) -> bool {
        let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        d.received += received;
        d.consumed += consumed;
        d.done.extend(done);
        d.is_due(due.0, due.1)
    }

    /// Takes what waits for the core: the payload (received, read) as returned, the
    /// halves done into `done` (empty), whose buffer stays here for the next reports, so
    /// that a busy session reuses two buffers instead of allocating one per hand-over.
    pub(crate) fn take_deferred(&self, done: &mut Vec<(u64, StreamHalf)>) -> (u64, u64) {
        debug_assert!(done.is_empty());
        let mut d = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut d.done, done);
        (
            std::mem::take(&mut d.received),
            std::mem::take(&mut d.consumed),
        )
    }

    /// The oldest queued datagram.
    pub(crate) fn take_datagram(&self) -> Option<Bytes> {
        self.lock_datagrams().pop_front()
    }

    fn lock_datagrams(&self) -> std::sync::MutexGuard<'_, VecDeque<Bytes>> {
        self.datagrams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts credit here: only under the connection's lock (see the field).
    fn add_send_credit(&self, n: u64) {
        self.send_credit.fetch_add(n, Ordering::AcqRel);
    }

    fn all(&self) {
        self.changed.notify_waiters();
        self.bi.notify_waiters();
        self.uni.notify_waiters();
        self.datagram.notify_waiters();
    }
}

/// Closes the session (code 0) when the last handle of it is dropped.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    engine: Arc<Engine>,
    id: SessionId,
}

impl SessionGuard {
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.engine.update(|st| st.close_on_last_handle(self.id));
    }
}

/// An incoming stream waiting for the application.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) id: u64,
    pub(crate) send: Option<SendCell>,
    pub(crate) recv: RecvCell,
    /// Session flow control is in effect on the connection.
    pub(crate) flow: bool,
}

/// The application side of one session.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    notify: Arc<SessionNotify>,
    guard: Weak<SessionGuard>,
    incoming_bi: VecDeque<Incoming>,
    incoming_uni: VecDeque<Incoming>,
    /// Writers blocked on the peer's WT_MAX_DATA.
    credit_waiters: Vec<Waker>,
    pub(crate) request: Option<ConnectRequest>,
    pub(crate) response: Option<ConnectResponse>,
    pub(crate) stats: SessionStats,
    pub(crate) created_at: SystemTime,
    pub(crate) established_at: Option<SystemTime>,
    pub(crate) closed_at: Option<SystemTime>,
}

impl SessionSlot {
    pub(crate) fn new(request: Option<ConnectRequest>) -> Self {
        SessionSlot {
            notify: Arc::default(),
            guard: Weak::new(),
            incoming_bi: VecDeque::new(),
            incoming_uni: VecDeque::new(),
            credit_waiters: Vec::new(),
            request,
            response: None,
            stats: SessionStats::default(),
            created_at: SystemTime::now(),
            established_at: None,
            closed_at: None,
        }
    }

    pub(crate) fn notify(&self) -> &Arc<SessionNotify> {
        &self.notify
    }

    /// The guard shared by every handle of the session, made on first use.
    pub(crate) fn guard(&mut self, engine: &Arc<Engine>, id: SessionId) -> Arc<SessionGuard> {
        if let Some(g) = self.guard.upgrade() {
            return g;
        }
        let g = Arc::new(SessionGuard {
            engine: engine.clone(),
            id,
        });
        self.guard = Arc::downgrade(&g);
        g
    }

    pub(crate) fn queue_stream(&mut self, bidi: bool, incoming: Incoming) {
        if bidi {
            self.incoming_bi.push_back(incoming);
            self.stats.streams_accepted_bi += 1;
            self.notify.bi.notify_waiters();
        } else {
            self.incoming_uni.push_back(incoming);
            self.stats.streams_accepted_uni += 1;
            self.notify.uni.notify_waiters();
        }
    }

    pub(crate) fn take_stream(&mut self, bidi: bool) -> Option<Incoming> {
        if bidi {
            self.incoming_bi.pop_front()
        } else {
            self.incoming_uni.pop_front()
        }
    }

    /// Queues a datagram, dropping the oldest beyond `cap`; returns whether one was
    /// dropped.
    pub(crate) fn queue_datagram(&mut self, payload: Bytes, cap: usize) -> bool {
        let mut queue = self.notify.lock_datagrams();
        let dropped = queue.len() >= cap.max(1);
        if dropped {
            queue.pop_front();
            self.stats.datagrams_dropped += 1;
        }
        self.stats.datagrams_received += 1;
        let was_empty = queue.is_empty();
        queue.push_back(payload);
        drop(queue);
        // A reader waits only after finding the queue empty (with its wake-up registered
        // first, see `Session::read_datagram`): waking them when a datagram lands in an
        // empty queue is enough, and spares the `Notify`'s lock for every other datagram
        // of a burst.
        if was_empty {
            self.notify.datagram.notify_waiters();
        }
        dropped
    }

    /// Datagrams queued for the application.
    pub(crate) fn queued_datagrams(&self) -> usize {
        self.notify.lock_datagrams().len()
    }

    /// Incoming streams queued for the application, of both kinds.
    pub(crate) fn queued_streams(&self) -> usize {
        self.incoming_bi.len() + self.incoming_uni.len()
    }

    /// Credit for a writer that found none in [`SessionNotify`]: what is held there now,
    /// else all the core has (up to `want` for this writer, the rest held for the next
    /// ones), else nothing and the writer waits (`core` tells the peer it is blocked).
    pub(crate) fn refill_send_credit(
        &mut self,
        want: u64,
        waker: &Waker,
        core: impl FnOnce() -> u64,
    ) -> u64 {
        let held = self.notify.take_send_credit(want);
        if held > 0 {
            return held;
        }
        let all = core();
        if all == 0 {
            self.wait_for_credit(waker);
            return 0;
        }
        let mine = all.min(want);
        // u64::MAX: the session has no flow control after all; nothing to hold.
        if all != u64::MAX {
            self.notify.add_send_credit(all - mine);
        }
        mine
    }

    /// A writer took `n` bytes of credit and wrote none of them.
    pub(crate) fn return_send_credit(&mut self, n: u64) {
        self.notify.add_send_credit(n);
        for w in self.credit_waiters.drain(..) {
            w.wake();
        }
    }

    /// A writer waits for send credit.
    fn wait_for_credit(&mut self, waker: &Waker) {
        if !self.credit_waiters.iter().any(|w| w.will_wake(waker)) {
            self.credit_waiters.push(waker.clone());
        }
    }

    /// The peer gave credit: wake writers and stream openers.
    pub(crate) fn credit(&mut self) {
        for w in self.credit_waiters.drain(..) {
            w.wake();
        }
        self.notify.changed.notify_waiters();
    }

    /// The session is established.
    pub(crate) fn established(&mut self, response: ConnectResponse) {
        self.response = Some(response);
        self.established_at = Some(SystemTime::now());
        self.notify.changed.notify_waiters();
    }

    /// The session ended: queued streams and datagrams are dropped (the core has reset
    /// and stopped the streams) and every waiter wakes to see the end.
    pub(crate) fn ended(&mut self) {
        self.closed_at = Some(SystemTime::now());
        self.incoming_bi.clear();
        self.incoming_uni.clear();
        self.notify.lock_datagrams().clear();
        for w in self.credit_waiters.drain(..) {
            w.wake();
        }
        self.notify.all();
    }
}
