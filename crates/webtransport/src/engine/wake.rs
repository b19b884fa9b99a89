//! [`WakeFlag`]: "the driver has something to do", set from any task and taken by the
//! driver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// A flag that wakes the one task polling it: set any number of times, taken once. Like
/// a `Notify` with one waiter, without a future kept in the waiter between polls (the
/// driver holds several sources at once, each for the connection's life).
#[derive(Debug, Default)]
pub(crate) struct WakeFlag {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl WakeFlag {
    /// Sets the flag and wakes the task that polls it.
    pub(crate) fn set(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// `Ready` (and cleared) if set since the last take; otherwise `cx` is woken when it
    /// is. Registered first, so a `set` between the two is not lost.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.set.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Takes the flag without registering a waker (tests).
    #[cfg(test)]
    pub(crate) fn take(&self) -> bool {
        self.set.swap(false, Ordering::AcqRel)
    }
}

/// A waker that counts its wake-ups, standing for a task's in tests.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct CountingWaker(std::sync::atomic::AtomicUsize);

#[cfg(test)]
impl CountingWaker {
    /// The counter, and a waker that counts on it.
    pub(crate) fn new() -> (std::sync::Arc<Self>, std::task::Waker) {
        let count = std::sync::Arc::new(CountingWaker::default());
        let waker = std::task::Waker::from(count.clone());
        (count, waker)
    }

    /// Wake-ups so far.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets before and while the task waits are each seen once, and wake it.
    #[test]
    fn a_set_wakes_the_poller_and_is_taken_once() {
        let flag = WakeFlag::default();
        let (count, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        assert!(flag.poll_take(&mut cx).is_pending());
        flag.set();
        flag.set();
        assert!(count.count() >= 1);
        assert!(flag.poll_take(&mut cx).is_ready());
        assert!(flag.poll_take(&mut cx).is_pending());
        flag.set();
        assert!(flag.take());
        assert!(!flag.take());
    }
}
