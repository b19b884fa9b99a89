//! Who takes the peer's new streams from QUIC.
//!
//! An application task waiting in `Session::accept_bi` or `accept_uni` takes the streams
//! of that direction from QUIC itself while it waits, so that a stream the peer opens
//! reaches it without a turn of the connection's driver in between (that turn was 8–14 µs
//! of a new stream's ~110 µs round trip on loopback: docs/benchmarks.md). The driver takes
//! them while no such task waits. A stream is started the same way wherever it was taken
//! ([`reader::start`]): it goes to whichever session it names, a CONNECT request goes to
//! the core, and a stream that needs more reading goes to the driver's readers.
//!
//! A direction no application task waits on is *watched*: QUIC's accept for it is polled
//! with a waker that wakes the driver ([`reader::Inbox`] as a waker), and the driver then
//! takes what came. The watch is dropped when a task starts waiting (QUIC would otherwise
//! wake the driver too, for every stream the task takes) and made again by the last task
//! to leave, which starts what already waits in QUIC itself. So an accept loop, which
//! leaves and comes back once per stream, costs the driver no wake-up per stream: it did
//! until stop 31, about 20 µs of the server's CPU per new stream when the wake-up found
//! the other tokio worker asleep (docs/benchmarks.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::cells::lock;
use super::{reader, Engine};

/// A stream QUIC gave: the receiving half, and the sending half of a bidirectional one.
type Taken = Result<(quinn::RecvStream, Option<quinn::SendStream>), quinn::ConnectionError>;

/// QUIC's accept of one direction, polled by whoever takes that direction's streams for
/// the driver.
type Watch = Pin<Box<dyn Future<Output = Taken> + Send>>;

/// Streams taken from QUIC at once, at most, before the driver looks at its other
/// sources (or, for the last task leaving, before it leaves the rest to the driver).
const ACCEPT_BATCH: usize = 32;

/// How many application tasks take streams from QUIC now, per direction, and the watches
/// of the directions none takes.
#[derive(Default)]
pub(crate) struct Acceptors {
    /// Unidirectional, bidirectional.
    count: [AtomicU32; 2],
    /// Unidirectional, bidirectional: made when first polled, dropped when a task starts
    /// waiting or the watch gave its stream.
    watches: Mutex<[Option<Watch>; 2]>,
}

impl std::fmt::Debug for Acceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptors")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl Acceptors {
    /// Whether an application task takes this direction's streams from QUIC now (the
    /// driver then leaves them to it).
    fn any(&self, bidi: bool) -> bool {
        self.count[usize::from(bidi)].load(Ordering::Acquire) > 0
    }
}

/// An application task taking one direction's streams from QUIC while it waits. When the
/// last one of a direction goes, the direction is watched again, so that a stream never
/// waits in QUIC for an application that stopped accepting (another session's streams, a
/// new CONNECT request, a stream to queue until it is accepted).
#[derive(Debug)]
pub(crate) struct Accepting<'a> {
    engine: &'a Arc<Engine>,
    bidi: bool,
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        let acceptors = &self.engine.acceptors;
        if acceptors.count[usize::from(self.bidi)].fetch_sub(1, Ordering::AcqRel) == 1 {
            // QUIC's streams of this direction are the driver's again: what already waits
            // is started here, and the watch wakes the driver for the next.
            let engine = self.engine;
            let started = engine.take_unattended(&[self.bidi], |recv, send| {
                engine.start_peer_stream(recv, send);
            });
            if started.is_err() {
                // The connection is gone: the driver meets the same error and ends the
                // sessions.
                engine.reader_inbox().wake_unattended();
            }
        }
    }
}

impl Engine {
    /// The calling task takes `bidi`'s streams from QUIC until the guard is dropped.
    pub(crate) fn accepting(self: &Arc<Self>, bidi: bool) -> Accepting<'_> {
        let d = usize::from(bidi);
        if self.acceptors.count[d].fetch_add(1, Ordering::AcqRel) == 0 {
            // QUIC wakes every task waiting for a stream: the watch would wake the
            // driver for each one this task takes.
            lock(&self.acceptors.watches)[d] = None;
        }
        Accepting { engine: self, bidi }
    }

    /// Starts a stream the peer opened that a task other than the driver took from QUIC:
    /// what already arrived is fed at once, and a stream that needs more reading goes to
    /// the driver.
    pub(crate) fn start_peer_stream(
        self: &Arc<Self>,
        recv: quinn::RecvStream,
        send: Option<quinn::SendStream>,
    ) {
        if let Some(reader) = reader::start(self, recv, send) {
            self.reader_inbox().adopt(self, reader);
        }
    }

    /// Starts (with `start`) the peer's new streams of the `directions` no application
    /// task takes, a batch at most (the driver is woken for the rest), leaving each such
    /// direction watched. `Err` once the connection is gone.
    pub(crate) fn take_unattended(
        self: &Arc<Self>,
        directions: &[bool],
        mut start: impl FnMut(quinn::RecvStream, Option<quinn::SendStream>),
    ) -> Result<(), quinn::ConnectionError> {
        let mut taken = 0;
        for &bidi in directions {
            while taken < ACCEPT_BATCH {
                match self.poll_watch(bidi) {
                    Poll::Ready(Ok((recv, send))) => {
                        start(recv, send);
                        taken += 1;
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
        }
        if taken == ACCEPT_BATCH {
            self.reader_inbox().wake_unattended();
        }
        Ok(())
    }

    /// The next stream of `bidi`'s direction from its watch, if no application task
    /// takes that direction: `Pending` otherwise, and when QUIC has none (the watch then
    /// wakes the driver when one comes).
    fn poll_watch(self: &Arc<Self>, bidi: bool) -> Poll<Taken> {
        let d = usize::from(bidi);
        let Some(link) = self.link() else {
            return Poll::Pending;
        };
        let mut watches = lock(&self.acceptors.watches);
        // Looked at under the watches' lock, which `accepting` takes after counting
        // itself: a task that started waiting either finds the watch made, and drops
        // it, or is seen here.
        if self.acceptors.any(bidi) {
            return Poll::Pending;
        }
        let watch = watches[d].get_or_insert_with(|| {
            let quic = link.quic.clone();
            if bidi {
                Box::pin(async move { quic.accept_bi().await.map(|(s, r)| (r, Some(s))) })
            } else {
                Box::pin(async move { quic.accept_uni().await.map(|r| (r, None)) })
            }
        });
        let waker = Waker::from(self.reader_inbox().clone());
        let taken = watch.as_mut().poll(&mut Context::from_waker(&waker));
        if taken.is_ready() {
            watches[d] = None;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    #[test]
    fn acceptors_are_counted_per_direction() {
        let engine = crate::engine::tests::engine();
        let a = engine.accepting(true);
        let b = engine.accepting(true);
        let uni = engine.accepting(false);
        assert!(engine.acceptors.any(true) && engine.acceptors.any(false));
        drop(a);
        assert!(engine.acceptors.any(true));
        drop(b);
        assert!(!engine.acceptors.any(true));
        assert!(engine.acceptors.any(false));
        drop(uni);
        assert!(!engine.acceptors.any(false));
        assert_eq!(engine.acceptors.count[0].load(Ordering::SeqCst), 0);
        // Not linked to QUIC: nothing to watch, and no wake-up of the driver.
        assert!(engine.poll_watch(true).is_pending());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(engine.reader_inbox().poll_unattended(&mut cx).is_pending());
    }
}
