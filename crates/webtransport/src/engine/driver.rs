//! The per-connection driver task.
//!
//! The driver polls every source and never awaits anything the peer controls inside its
//! loop: queued HTTP/3 writes are polled stream by stream (a stream without credit only
//! registers a wake-up), accepted streams are handed to readers (streams of a direction
//! an application task takes itself while it waits are left to it, and the others come
//! through their watches, see `accept`),
//! datagrams go to the core, the core's timer and the idle timer fire, and the
//! connection's end is seen.
//! Datagrams are read here rather than by a task of their own (a task costs every
//! connection ~450 bytes for its life), and also by a session's `read_datagram` while it
//! waits: whoever takes one hands it to the core, which queues it with its session.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use super::reader::Readers;
use super::Engine;
use crate::error::ConnectionError;
use crate::events::ConnectionEvent;

pub(super) async fn run(engine: Arc<Engine>) {
    let quic = engine.quic().clone();
    // The core's deadline, asked again only when it may have moved: the core wakes this
    // task when it does (see `State::pump`), and firing it moves it.
    let mut deadline = None;
    let mut rearm = true;
    // One timer for the task's life, moved only when the time to wake moves: most turns of
    // the loop (a stream accepted, bytes written) leave it where it is, and a timer made
    // and dropped per turn costs two trips to tokio's timer wheel. Made when first needed:
    // an idle connection often has nothing to time, and a timer is 112 bytes.
    let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut armed_at = None;
    let mut readers = Readers::new(engine.reader_inbox().clone());
    // The first turn takes what QUIC has and watches both directions.
    engine.reader_inbox().wake_unattended();
    loop {
        if std::mem::take(&mut rearm) {
            deadline = engine.update(|st| st.arm()).map(Instant::from_std);
        }
        let idle = engine
            .config()
            .idle_timeout
            .map(|t| engine.activity().last() + t);
        let wake_at = match (deadline, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = wake_at.filter(|&at| armed_at != Some(at)) {
            match sleep.as_mut() {
                Some(s) => s.as_mut().reset(at),
                None => sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            armed_at = Some(at);
        }
        tokio::select! {
            () = poll_fn(|cx| engine.wake.poll_take(cx)) => rearm = true,
            _ = poll_fn(|cx| poll_writes(&engine, cx)) => {}
            _ = poll_fn(|cx| readers.poll(&engine, cx)) => {}
            // Woken by the watch of a direction no application task takes (see
            // `accept`), through the readers' inbox.
            () = poll_fn(|cx| engine.reader_inbox().poll_unattended(cx)) => {
                let started = engine.take_unattended(&[false, true], |recv, send| {
                    readers.start(&engine, recv, send);
                });
                if let Err(e) = started {
                    lost(&engine, &e);
                    break;
                }
            }
            r = quic.read_datagram() => match r {
                Ok(d) => engine.take_datagrams(&quic, d),
                Err(e) => {
                    lost(&engine, &e);
                    break;
                }
            },
            () = poll_fn(|cx| match sleep.as_mut() {
                Some(s) => s.as_mut().poll(cx),
                None => Poll::Pending,
            }), if wake_at.is_some() => {
                // Fired: armed again next turn, even for the same instant.
                armed_at = None;
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    engine.update(|st| st.handle_timeout());
                    rearm = true;
                }
                engine.idle_check();
            }
        }
    }
    // The streams still read learn that the connection is gone, as their own tasks would.
    readers.close(&engine);
}

/// Writes what can be written now; always pending (it makes progress when polled).
fn poll_writes(engine: &Arc<Engine>, cx: &mut Context<'_>) -> Poll<()> {
    let flushed = engine.update(|st| st.poll_writes(cx));
    if flushed {
        engine.notify_progress();
    }
    Poll::Pending
}

/// The QUIC connection ended.
fn lost(engine: &Arc<Engine>, e: &quinn::ConnectionError) {
    let error = engine.update(|st| {
        // Our own reason, if we closed it or saw a protocol error, wins over what QUIC
        // reports about that close.
        let error = st
            .error()
            .cloned()
            .unwrap_or_else(|| ConnectionError::from_quinn(e));
        st.connection_lost(engine, error.clone());
        st.error().cloned().unwrap_or(error)
    });
    tracing::debug!(conn = %engine.id(), %error, "connection closed");
    engine.events().emit(ConnectionEvent::Closed { error });
}
