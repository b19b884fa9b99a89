//! Who takes the peer's new streams from QUIC.
//!
//! An application task waiting in `Session::accept_bi` or `accept_uni` takes the streams
//! of that direction from QUIC itself while it waits, so that a stream the peer opens
//! reaches it without a turn of the connection's driver in between (that turn was 8–14 µs
//! of a new stream's ~110 µs round trip on loopback: docs/benchmarks.md). The driver takes
//! them while no such task waits. A stream is started the same way wherever it was taken
//! ([`reader::start`]): it goes to whichever session it names, a CONNECT request goes to
//! the core, and a stream that needs more reading goes to the driver's readers.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use super::{reader, Engine};

/// How many application tasks take streams from QUIC now, per direction.
#[derive(Debug, Default)]
pub(crate) struct Acceptors {
    /// Unidirectional, bidirectional.
    count: [AtomicU32; 2],
    /// The last acceptor of a direction left since the driver last looked.
    vacated: AtomicBool,
}

impl Acceptors {
    /// Whether an application task takes this direction's streams from QUIC now (the
    /// driver then leaves them to it).
    pub(crate) fn any(&self, bidi: bool) -> bool {
        self.count[usize::from(bidi)].load(Ordering::Acquire) > 0
    }

    /// Whether the last acceptor of a direction left since the last call. The driver,
    /// woken for that, lets the tasks already woken run first: an application accepts in
    /// a loop, and by then it is usually back (when the stream it just took is not
    /// delayed by a turn of the driver).
    pub(crate) fn take_vacated(&self) -> bool {
        self.vacated.swap(false, Ordering::AcqRel)
    }
}

/// An application task taking one direction's streams from QUIC while it waits. When the
/// last one of a direction goes, the driver is woken to take them again, so that a stream
/// never waits in QUIC for an application that stopped accepting (another session's
/// streams, a new CONNECT request, a stream to queue until it is accepted).
#[derive(Debug)]
pub(crate) struct Accepting<'a> {
    engine: &'a Engine,
    bidi: bool,
}

impl Drop for Accepting<'_> {
    fn drop(&mut self) {
        let acceptors = &self.engine.acceptors;
        if acceptors.count[usize::from(self.bidi)].fetch_sub(1, Ordering::AcqRel) == 1 {
            acceptors.vacated.store(true, Ordering::Release);
            self.engine.wake_driver();
        }
    }
}

impl Engine {
    /// The calling task takes `bidi`'s streams from QUIC until the guard is dropped.
    pub(crate) fn accepting(&self, bidi: bool) -> Accepting<'_> {
        self.acceptors.count[usize::from(bidi)].fetch_add(1, Ordering::AcqRel);
        Accepting { engine: self, bidi }
    }

    pub(crate) fn acceptors(&self) -> &Acceptors {
        &self.acceptors
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_last_acceptor_of_a_direction_wakes_the_driver() {
        let engine = crate::engine::tests::engine();
        let a = engine.accepting(true);
        let b = engine.accepting(true);
        let uni = engine.accepting(false);
        assert!(engine.acceptors().any(true) && engine.acceptors().any(false));
        drop(a);
        assert!(engine.acceptors().any(true));
        assert!(!engine.wake.take(), "one bidirectional acceptor is left");
        assert!(!engine.acceptors().take_vacated());
        drop(b);
        assert!(!engine.acceptors().any(true));
        assert!(
            engine.wake.take(),
            "the driver takes bidirectional streams again"
        );
        assert!(engine.acceptors().take_vacated());
        assert!(!engine.acceptors().take_vacated(), "said once");
        assert!(engine.acceptors().any(false));
        drop(uni);
        assert!(engine.wake.take());
    }
}
