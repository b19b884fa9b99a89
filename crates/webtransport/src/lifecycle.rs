//! [`ConnectionState`] and the one place that moves it: forward only, so that a closed
//! connection stays closed whatever is called on it afterwards.

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

/// The state of one connection and its watchers. Transitions only go forward in the
/// order of [`ConnectionState`]'s diagram; a step back is ignored.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    tx: watch::Sender<ConnectionState>,
}

impl Lifecycle {
    pub(crate) fn new(initial: ConnectionState) -> Self {
        Lifecycle {
            tx: watch::channel(initial).0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forward() {
        let l = Lifecycle::new(ConnectionState::Idle);
        assert!(l.advance(ConnectionState::Connected));
        assert!(!l.advance(ConnectionState::Connecting));
        assert!(l.advance(ConnectionState::Closing));
        assert!(!l.advance(ConnectionState::Draining), "GOAWAY after close");
        assert!(l.advance(ConnectionState::Closed));
        assert!(!l.advance(ConnectionState::Failed), "closed stays closed");
        assert!(!l.advance(ConnectionState::Closing));
        assert_eq!(l.get(), ConnectionState::Closed);
    }
}
