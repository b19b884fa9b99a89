//! [`ConnectionState`] and the one place that moves it: forward only, so that a closed
//! connection stays closed whatever is called on it afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

/// The lifecycle of a connection (pywebtransport's `ConnectionState`).
///
/// ```text
///  Idle ─▶ Connecting ─▶ Connected ─┬─▶ Draining ─┬─▶ Closing ─┬─▶ Closed
///    │          │                   └─────────────┴────────────┴─▶ Failed
///    └──────────┴──────────────────────────────────────────────────▶ Failed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Created, nothing sent.
    Idle,
    /// QUIC handshake and HTTP/3 setup under way.
    Connecting,
    /// QUIC and HTTP/3 are up.
    Connected,
    /// The peer sent GOAWAY: no new sessions.
    Draining,
    /// This side is closing it.
    Closing,
    /// Closed cleanly.
    Closed,
    /// Closed by an error, or never connected.
    Failed,
}

impl ConnectionState {
    /// Whether this is an end state.
    pub fn is_final(self) -> bool {
        matches!(self, ConnectionState::Closed | ConnectionState::Failed)
    }
}

/// How many connections have not reached an end state: a server's, for
/// `max_connections`. Each [`Lifecycle`] made with it counts itself in when made and out
/// when it turns final (or is dropped before), so the count costs nothing per check however
/// many connections there are.
#[derive(Debug, Default)]
pub(crate) struct LiveCount(AtomicUsize);

impl LiveCount {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// The state of one connection and its watchers. Transitions only go forward in the
/// order of [`ConnectionState`]'s diagram; a step back is ignored.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    tx: watch::Sender<ConnectionState>,
    live: Option<Arc<LiveCount>>,
}

impl Lifecycle {
    pub(crate) fn new(initial: ConnectionState, live: Option<Arc<LiveCount>>) -> Self {
        if let Some(l) = live.as_ref().filter(|_| !initial.is_final()) {
            l.0.fetch_add(1, Ordering::AcqRel);
        }
        Lifecycle {
            tx: watch::channel(initial).0,
            live,
        }
    }

    pub(crate) fn get(&self) -> ConnectionState {
        *self.tx.borrow()
    }

    /// Moves to `to` if that is forward; returns whether it moved.
    pub(crate) fn advance(&self, to: ConnectionState) -> bool {
        self.tx.send_if_modified(|s| {
            if to > *s && !s.is_final() {
                *s = to;
                // Once only: nothing leaves an end state.
                if to.is_final() {
                    if let Some(l) = &self.live {
                        l.0.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ConnectionState> {
        self.tx.subscribe()
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(l) = &self.live {
            if !self.get().is_final() {
                l.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forward() {
        let l = Lifecycle::new(ConnectionState::Idle, None);
        assert!(l.advance(ConnectionState::Connected));
        assert!(!l.advance(ConnectionState::Connecting));
        assert!(l.advance(ConnectionState::Closing));
        assert!(!l.advance(ConnectionState::Draining), "GOAWAY after close");
        assert!(l.advance(ConnectionState::Closed));
        assert!(!l.advance(ConnectionState::Failed), "closed stays closed");
        assert!(!l.advance(ConnectionState::Closing));
        assert_eq!(l.get(), ConnectionState::Closed);
    }

    #[test]
    fn live_count_counts_until_the_end_state_or_the_drop() {
        let live = Arc::new(LiveCount::default());
        let a = Lifecycle::new(ConnectionState::Connecting, Some(live.clone()));
        let b = Lifecycle::new(ConnectionState::Connecting, Some(live.clone()));
        assert_eq!(live.get(), 2);
        a.advance(ConnectionState::Closing);
        assert_eq!(live.get(), 2, "closing is not an end");
        a.advance(ConnectionState::Closed);
        a.advance(ConnectionState::Failed);
        assert_eq!(live.get(), 1, "counted out once");
        drop(a);
        assert_eq!(live.get(), 1, "an ended one is not counted out again");
        drop(b);
        assert_eq!(live.get(), 0, "dropped before its end");
    }
}
