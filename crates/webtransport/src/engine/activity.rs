//! [`Activity`]: when a connection last did something at the WebTransport layer, and how
//! many bytes it moved there. Lock-free, so that stream reads and writes can record it
//! without taking the connection's lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Counters and the last-activity time of one connection. Time is tokio's, so that tests
/// on the paused clock see idle timers and staleness move with virtual time.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    origin_wall: SystemTime,
    /// Microseconds from `origin` to the last activity.
    last_us: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            origin: Instant::now(),
            origin_wall: SystemTime::now(),
            last_us: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    /// Records activity now.
    pub(crate) fn touch(&self) {
        let us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_us.fetch_max(us, Ordering::Relaxed);
    }

    /// `n` bytes sent at the WebTransport layer.
    pub(crate) fn sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.touch();
    }

    /// `n` bytes received at the WebTransport layer.
    pub(crate) fn received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Bytes sent and received so far.
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    /// When the last activity was.
    pub(crate) fn last(&self) -> Instant {
        self.origin + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }

    /// The same as a wall-clock time.
    pub(crate) fn last_wall(&self) -> SystemTime {
        self.origin_wall + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }

    /// Time since the last activity.
    pub(crate) fn idle(&self) -> Duration {
        self.last().elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_time_follows_activity() {
        let a = Activity::new();
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(a.idle(), Duration::from_secs(40));
        a.received(100);
        assert_eq!(a.idle(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(3)).await;
        a.sent(7);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(a.idle(), Duration::from_secs(2));
        assert_eq!(a.bytes(), (7, 100));
    }
}
