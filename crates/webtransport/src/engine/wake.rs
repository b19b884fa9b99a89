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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Sets before and while the task waits are each seen once, and wake it.
    #[test]
    fn a_set_wakes_the_poller_and_is_taken_once() {
        let flag = WakeFlag::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(flag.poll_take(&mut cx).is_pending());
        flag.set();
        flag.set();
        assert!(count.0.load(Ordering::SeqCst) >= 1);
        assert!(flag.poll_take(&mut cx).is_ready());
        assert!(flag.poll_take(&mut cx).is_pending());
        flag.set();
        assert!(flag.take());
        assert!(!flag.take());
    }
}
