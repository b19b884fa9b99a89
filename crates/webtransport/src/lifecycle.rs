//! [`ConnectionState`] and the one place that moves it: forward only, so that a closed
//! connection stays closed whatever is called on it afterwards.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;

/// The lifecycle of a connection (pywebtransport's `ConnectionState`).
///
/// ```text
///  Idle ─▶ Connecting ─▶ Connected ─┬─▶ Draining ─┬─▶ Closing ─┬─▶ Closed
///    │          │                   └─────────────┴────────────┴─▶ Failed
///    └──────────┴──────────────────────────────────────────────────▶ Failed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
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

    /// Every state, in order: `ALL[s as usize] == s`.
    const ALL: [ConnectionState; 7] = [
        ConnectionState::Idle,
        ConnectionState::Connecting,
        ConnectionState::Connected,
        ConnectionState::Draining,
        ConnectionState::Closing,
        ConnectionState::Closed,
        ConnectionState::Failed,
    ];

    fn from_u8(n: u8) -> Self {
        Self::ALL[usize::from(n)]
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
///
/// A byte and a `Notify`, held in the engine itself: every connection has one, and a
/// `watch` channel would cost each an allocation of its shared state (~340 bytes).
#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: AtomicU8,
    changed: Notify,
    live: Option<Arc<LiveCount>>,
}

impl Lifecycle {
    pub(crate) fn new(initial: ConnectionState, live: Option<Arc<LiveCount>>) -> Self {
        if let Some(l) = live.as_ref().filter(|_| !initial.is_final()) {
            l.0.fetch_add(1, Ordering::AcqRel);
        }
        Lifecycle {
            state: AtomicU8::new(initial as u8),
            changed: Notify::new(),
            live,
        }
    }

    pub(crate) fn get(&self) -> ConnectionState {
        ConnectionState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `to` if that is forward; returns whether it moved.
    pub(crate) fn advance(&self, to: ConnectionState) -> bool {
        let moved = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let s = ConnectionState::from_u8(s);
                (to > s && !s.is_final()).then_some(to as u8)
            })
            .is_ok();
        if moved {
            // Once only: nothing leaves an end state.
            if let Some(l) = self.live.as_ref().filter(|_| to.is_final()) {
                l.0.fetch_sub(1, Ordering::AcqRel);
            }
            self.changed.notify_waiters();
        }
        moved
    }

    /// Waits until the state is one `done` accepts, and returns it.
    pub(crate) async fn wait_for(&self, done: impl Fn(ConnectionState) -> bool) -> ConnectionState {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so an advance in between wakes it.
            changed.as_mut().enable();
            let s = self.get();
            if done(s) {
                return s;
            }
            changed.await;
        }
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
    fn states_round_trip_through_their_byte() {
        for s in ConnectionState::ALL {
            assert_eq!(ConnectionState::from_u8(s as u8), s);
        }
    }

    #[tokio::test]
    async fn a_waiter_sees_the_state_it_waits_for() {
        let l = Arc::new(Lifecycle::new(ConnectionState::Connecting, None));
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.wait_for(|s| s >= ConnectionState::Connected).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        l.advance(ConnectionState::Draining);
        assert_eq!(waiter.await.unwrap(), ConnectionState::Draining);
        // One already there returns at once.
        assert_eq!(
            l.wait_for(|s| s == ConnectionState::Draining).await,
            ConnectionState::Draining
        );
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
