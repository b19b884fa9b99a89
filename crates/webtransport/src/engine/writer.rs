//! [`Writer`]: the bytes the core writes on the HTTP/3 streams it owns (our control
//! stream, CONNECT streams), queued per stream and written as QUIC flow control allows,
//! so that a stream the peer gives no credit never holds up anything else.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, trace};
use webtransport_proto::vec_map::VecMap;
use webtransport_proto::Code;

use crate::quic::quinn_code;

/// What is queued for one stream.
#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    bytes: usize,
    fin: bool,
}

#[derive(Debug)]
struct Outgoing {
    stream: quinn::SendStream,
    queue: Queue,
}

/// What writing a stream's queue left.
enum Flushed {
    /// The stream stays: something is still queued, or no FIN yet.
    Open,
    /// All written and finished.
    Finished,
    /// The write failed; the code if the peer stopped the stream.
    Failed(Option<Code>),
}

impl Outgoing {
    /// Writes what QUIC takes of the queue, and the FIN after it. The queued `Bytes` go
    /// to QUIC as they are (it copies a slice, but keeps a `Bytes`).
    fn flush(&mut self, id: u64, cx: &mut Context<'_>) -> Flushed {
        while !self.queue.chunks.is_empty() {
            let polled = {
                let chunks = self.queue.chunks.make_contiguous();
                std::pin::pin!(self.stream.write_chunks(chunks)).poll(cx)
            };
            match polled {
                Poll::Ready(Ok(written)) => {
                    self.queue.bytes -= written.bytes;
                    self.queue.chunks.drain(..written.chunks);
                    if written.bytes == 0 {
                        return Flushed::Open;
                    }
                }
                Poll::Ready(Err(e)) => {
                    debug!(stream = id, error = %e, "write on an HTTP/3 stream failed");
                    return Flushed::Failed(match e {
                        quinn::WriteError::Stopped(code) => Some(crate::quic::h3_code(code)),
                        _ => None,
                    });
                }
                Poll::Pending => return Flushed::Open,
            }
        }
        if self.queue.fin {
            let _ = self.stream.finish();
            return Flushed::Finished;
        }
        // These streams live as long as the connection and are written seldom (SETTINGS,
        // an answer, a capsule): an empty queue gives its room back.
        self.queue.chunks = VecDeque::new();
        Flushed::Open
    }
}

/// A write queue exceeded its cap: the peer is not reading one of our HTTP/3 streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backlog {
    pub(crate) stream: u64,
    pub(crate) bytes: usize,
}

/// Per-stream write queues of the HTTP/3 streams the core writes.
#[derive(Debug)]
pub(crate) struct Writer {
    /// A connection holds two or three (our control stream, its CONNECT streams), each
    /// for its life: a sorted `Vec` of exactly that, written in stream order.
    streams: VecMap<u64, Outgoing>,
    /// Writes for streams whose quinn handle has not been handed over yet.
    unregistered: VecMap<u64, Queue>,
    /// Resets for streams whose quinn handle has not been handed over yet.
    early_resets: VecMap<u64, Code>,
    /// The most bytes one stream may have queued.
    cap: usize,
    /// Streams finished and not yet acknowledged by the peer, and who waits for that:
    /// made when a stream finishes or a graceful close asks (most connections never
    /// finish one of these streams before they end).
    acks: Option<Arc<Acks>>,
}

/// Finished streams the peer has not acknowledged yet.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    unacked: AtomicUsize,
    acked: Notify,
}

impl Acks {
    /// Notified when a finished stream is acknowledged (or the connection is gone).
    pub(crate) fn acked(&self) -> &Notify {
        &self.acked
    }
}

impl Writer {
    pub(crate) fn new(cap: usize) -> Self {
        Writer {
            streams: VecMap::default(),
            unregistered: VecMap::default(),
            early_resets: VecMap::default(),
            cap,
            acks: None,
        }
    }

    /// Hands over a stream's quinn handle; what was queued for it goes with it.
    pub(crate) fn register(&mut self, id: u64, mut stream: quinn::SendStream) {
        if let Some(code) = self.early_resets.remove(&id) {
            self.unregistered.remove(&id);
            let _ = stream.reset(quinn_code(code));
            return;
        }
        let queue = self.unregistered.remove(&id).unwrap_or_default();
        self.streams.insert(id, Outgoing { stream, queue });
    }

    /// Queues `data` (then FIN if `fin`). Returns the backlog if the stream's queue went
    /// over the cap.
    pub(crate) fn write(&mut self, id: u64, data: Bytes, fin: bool) -> Result<(), Backlog> {
        let queue = match self.streams.get_mut(&id) {
            Some(o) => &mut o.queue,
            None => self.unregistered.get_or_insert_with(id, Queue::default),
        };
        if queue.fin {
            trace!(stream = id, "write after FIN dropped");
            return Ok(());
        }
        queue.bytes += data.len();
        if !data.is_empty() {
            queue.chunks.push_back(data);
        }
        queue.fin |= fin;
        if queue.bytes > self.cap {
            return Err(Backlog {
                stream: id,
                bytes: queue.bytes,
            });
        }
        Ok(())
    }

    /// Resets a stream, dropping what was queued for it.
    pub(crate) fn reset(&mut self, id: u64, code: Code) {
        self.unregistered.remove(&id);
        match self.streams.remove(&id) {
            Some(mut o) => {
                let _ = o.stream.reset(quinn_code(code));
            }
            None => {
                self.early_resets.insert(id, code);
            }
        }
    }

    /// Drops everything: the connection is gone.
    pub(crate) fn clear(&mut self) {
        self.streams.clear();
        self.unregistered.clear();
        self.early_resets.clear();
        if let Some(acks) = &self.acks {
            acks.acked.notify_waiters();
        }
    }

    /// Writes what QUIC flow control allows on every stream with something queued,
    /// without waiting: a stream that cannot take more registers the caller's waker.
    /// Returns the streams the peer stopped, with the codes.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Vec<(u64, Code)> {
        let mut done = Vec::new();
        let mut stopped = Vec::new();
        for (&id, o) in self.streams.iter_mut() {
            match o.flush(id, cx) {
                Flushed::Open => {}
                Flushed::Finished => done.push((id, true)),
                Flushed::Failed(code) => {
                    stopped.extend(code.map(|c| (id, c)));
                    done.push((id, false));
                }
            }
        }
        for (id, finished) in done {
            self.retire(id, finished);
        }
        stopped
    }

    /// A stream leaves the writer: finished (its acknowledgement is then watched) or
    /// failed.
    fn retire(&mut self, id: u64, finished: bool) {
        if let Some(o) = self.streams.remove(&id) {
            if finished {
                self.watch_ack(o.stream);
            }
        }
    }

    /// Writes one stream's queue at once, in the task that queued it, when QUIC takes
    /// all of it: an answer to a request, a request after the SETTINGS, a capsule then
    /// leave without waiting for the driver task to be scheduled. `false` when the
    /// driver is still needed for the stream: QUIC has no credit for all of it now (the
    /// driver registers for the credit), or the write failed (the driver sees the
    /// failure and reports it), or its quinn handle is not here yet.
    pub(crate) fn write_now(&mut self, id: u64) -> bool {
        let Some(o) = self.streams.get_mut(&id) else {
            return false;
        };
        // Without a waker: what QUIC cannot take now is the driver's, woken by the caller,
        // whose own poll registers for the credit (replacing this one).
        match o.flush(id, &mut Context::from_waker(Waker::noop())) {
            Flushed::Open => o.queue.chunks.is_empty(),
            Flushed::Finished => {
                self.retire(id, true);
                true
            }
            Flushed::Failed(_) => false,
        }
    }

    /// Watches a finished stream until the peer has acknowledged everything on it (or
    /// stopped it, or the connection ended), so that a graceful close can wait for its
    /// close capsules to arrive.
    fn watch_ack(&mut self, stream: quinn::SendStream) {
        let stopped = stream.stopped();
        let acks = self.acks().clone();
        acks.unacked.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = stopped.await;
            drop(stream);
            acks.unacked.fetch_sub(1, Ordering::SeqCst);
            acks.acked.notify_waiters();
        });
    }

    /// Whether nothing is queued and every finished stream is acknowledged.
    pub(crate) fn is_flushed(&self) -> bool {
        self.streams.values().all(|o| o.queue.chunks.is_empty())
            && self.unregistered.values().all(|q| q.chunks.is_empty())
            && self
                .acks
                .as_ref()
                .is_none_or(|a| a.unacked.load(Ordering::SeqCst) == 0)
    }

    /// The finished streams' acknowledgements, to wait for.
    pub(crate) fn acks(&mut self) -> &Arc<Acks> {
        self.acks.get_or_insert_with(Arc::default)
    }

    /// The bytes queued on the stream that has the most queued (what `cap` bounds).
    pub(crate) fn largest_queue(&self) -> usize {
        self.streams
            .values()
            .map(|o| &o.queue)
            .chain(self.unregistered.values())
            .map(|q| q.bytes)
            .max()
            .unwrap_or(0)
    }

    /// Whether any stream has bytes waiting.
    pub(crate) fn has_pending(&self) -> bool {
        self.streams
            .values()
            .any(|o| !o.queue.chunks.is_empty() || o.queue.fin)
    }
}
