//! The two halves of a WebTransport stream as the connection and the application share
//! them: the application's [`SendStream`](crate::SendStream) / [`RecvStream`](crate::RecvStream)
//! own a half, and the connection keeps a weak reference so that it can reset or stop the
//! half with WT_SESSION_GONE when the session ends.
//!
//! Lock order: a half's lock may be taken while the connection's state is locked, never
//! the other way round.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use std::collections::VecDeque;

use bytes::Bytes;
use webtransport_proto::Code;

use crate::error::{ReadError, WriteError};
use crate::quic::quinn_code;

/// A sending half, shared.
pub(crate) type SendCell = Arc<Mutex<SendHalf>>;
/// A receiving half, shared.
pub(crate) type RecvCell = Arc<Mutex<RecvHalf>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The sending half of a WebTransport stream.
#[derive(Debug)]
pub(crate) struct SendHalf {
    stream: quinn::SendStream,
    /// Reset by the connection because the session ended.
    gone: bool,
    /// Finished or reset: nothing more is written.
    done: bool,
}

impl SendHalf {
    pub(crate) fn new_cell(stream: quinn::SendStream) -> SendCell {
        Arc::new(Mutex::new(SendHalf {
            stream,
            gone: false,
            done: false,
        }))
    }

    fn check(&self) -> Result<(), WriteError> {
        if self.gone {
            Err(WriteError::SessionGone)
        } else {
            Ok(())
        }
    }

    /// Writes what quinn takes of `buf`.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        self.check()?;
        Pin::new(&mut self.stream)
            .poll_write(cx, buf)
            .map_err(WriteError::from_quinn)
    }

    /// Finishes the stream. `Ok(true)` the first time the half becomes done.
    pub(crate) fn finish(&mut self) -> Result<bool, WriteError> {
        self.check()?;
        self.stream.finish().map_err(|_| WriteError::ClosedStream)?;
        Ok(!std::mem::replace(&mut self.done, true))
    }

    /// Resets the stream with an HTTP/3 code. `Ok(true)` the first time the half becomes
    /// done.
    pub(crate) fn reset(&mut self, code: Code) -> Result<bool, WriteError> {
        self.check()?;
        self.stream
            .reset(quinn_code(code))
            .map_err(|_| WriteError::ClosedStream)?;
        Ok(!std::mem::replace(&mut self.done, true))
    }

    /// The connection resets the stream because its session ended.
    pub(crate) fn session_gone(&mut self) {
        if !self.gone {
            self.gone = true;
            if !self.done {
                let _ = self.stream.reset(quinn_code(Code::WT_SESSION_GONE));
            }
            self.done = true;
        }
    }

    /// Whether the half is done; marks it done (what a drop does, which finishes the
    /// quinn stream implicitly). Returns whether it was still open.
    pub(crate) fn close_on_drop(&mut self) -> bool {
        !std::mem::replace(&mut self.done, true)
    }

    pub(crate) fn quinn(&self) -> &quinn::SendStream {
        &self.stream
    }
}

/// The receiving half of a WebTransport stream.
#[derive(Debug)]
pub(crate) struct RecvHalf {
    stream: quinn::RecvStream,
    /// Bytes taken from QUIC (or that came with the preamble) and not yet handed out.
    pending: VecDeque<Bytes>,
    /// How the stream ended, when that was seen while draining: handed out after
    /// `pending`.
    end: Option<Result<(), ReadError>>,
    /// Stopped by the connection because the session ended.
    gone: bool,
    /// Read to its end, reset, or stopped.
    done: bool,
    /// Session flow control is in effect: every read first takes all that QUIC has for
    /// the stream, so that what arrived is counted when it is there to see (a peer that
    /// sends past its limit is caught even while the application reads slowly).
    drain: bool,
    /// Payload that arrived and is not yet reported to flow control.
    received: u64,
    /// Payload handed out and not yet reported.
    consumed: u64,
    /// Bytes at the front of `pending` handed out once already (put back by
    /// `read_until`): not counted as consumed again.
    recounted: u64,
}

/// What one read of a [`RecvHalf`] gave, besides the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOutcome {
    /// Bytes handed out by this read.
    pub(crate) n: usize,
    /// The half just became done (end of stream, or a reset read).
    pub(crate) finished: bool,
    /// Payload arrivals to report to flow control now.
    pub(crate) received: u64,
    /// Payload consumption to report now (after `received`).
    pub(crate) consumed: u64,
}

impl RecvHalf {
    /// A half whose first payload bytes, `prefix`, came with its preamble. `drain`: see
    /// the field.
    pub(crate) fn new_cell(stream: quinn::RecvStream, prefix: Bytes, drain: bool) -> RecvCell {
        let received = prefix.len() as u64;
        let mut pending = VecDeque::new();
        if !prefix.is_empty() {
            pending.push_back(prefix);
        }
        Arc::new(Mutex::new(RecvHalf {
            stream,
            pending,
            end: None,
            gone: false,
            done: false,
            drain,
            received,
            consumed: 0,
            recounted: 0,
        }))
    }

    fn check(&self) -> Result<(), ReadError> {
        if self.gone {
            Err(ReadError::SessionGone)
        } else {
            Ok(())
        }
    }

    fn ended(&mut self) -> bool {
        !std::mem::replace(&mut self.done, true)
    }

    /// Takes everything QUIC has for the stream (registering for a wake-up when that is
    /// nothing): `Pending` when no byte and no end is available.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut got = false;
        while self.end.is_none() {
            let polled = {
                let fut = self.stream.read_chunk(usize::MAX, true);
                tokio::pin!(fut);
                std::future::Future::poll(fut, cx)
            };
            match polled {
                Poll::Ready(Ok(Some(chunk))) => {
                    self.received += chunk.bytes.len() as u64;
                    self.pending.push_back(chunk.bytes);
                    got = true;
                }
                Poll::Ready(Ok(None)) => self.end = Some(Ok(())),
                Poll::Ready(Err(e)) => self.end = Some(Err(ReadError::from_quinn(e))),
                Poll::Pending => break,
            }
            if !self.drain {
                break;
            }
        }
        if got || self.end.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Counts `n` bytes handed out.
    fn hand_out(&mut self, n: usize) {
        let again = self.recounted.min(n as u64);
        self.recounted -= again;
        self.consumed += n as u64 - again;
    }

    /// The outcome of a read that handed out `n` bytes: what is counted is due once it
    /// reaches `report_at`, when the reader is about to wait, or at the end.
    fn outcome(&mut self, n: usize, finished: bool, waiting: bool, report_at: u64) -> ReadOutcome {
        let due = finished
            || (waiting && self.received + self.consumed > 0)
            || self.received >= report_at
            || self.consumed >= report_at;
        if !due {
            return ReadOutcome {
                n,
                ..ReadOutcome::default()
            };
        }
        ReadOutcome {
            n,
            finished,
            received: std::mem::take(&mut self.received),
            consumed: std::mem::take(&mut self.consumed),
        }
    }

    /// The next piece of what is pending, at most `max` bytes, or the stream's end;
    /// `None` while there is nothing (the caller polls QUIC then).
    fn next(&mut self, max: usize) -> Option<Result<Option<Bytes>, ReadError>> {
        if let Some(front) = self.pending.front_mut() {
            let n = front.len().min(max);
            let chunk = front.split_to(n);
            if front.is_empty() {
                self.pending.pop_front();
            }
            self.hand_out(n);
            return Some(Ok(Some(chunk)));
        }
        self.end.take().map(|end| end.map(|()| None))
    }

    /// The next chunk of at most `max` bytes; `None` at the end of the stream.
    /// `report_at`: see [`RecvHalf::outcome`] (`u64::MAX` reports only at the end).
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        report_at: u64,
    ) -> (Poll<Result<Option<Bytes>, ReadError>>, ReadOutcome) {
        if let Err(e) = self.check() {
            return (Poll::Ready(Err(e)), ReadOutcome::default());
        }
        if (self.drain || self.pending.is_empty())
            && self.fill(cx).is_pending()
            && self.pending.is_empty()
        {
            let waiting = report_at != u64::MAX;
            return (Poll::Pending, self.outcome(0, false, waiting, report_at));
        }
        match self.next(max) {
            Some(Ok(Some(chunk))) => {
                let n = chunk.len();
                (
                    Poll::Ready(Ok(Some(chunk))),
                    self.outcome(n, false, false, report_at),
                )
            }
            Some(end) => {
                let finished = self.ended();
                (
                    Poll::Ready(end),
                    self.outcome(0, finished, false, report_at),
                )
            }
            None => (Poll::Pending, self.outcome(0, false, true, report_at)),
        }
    }

    /// Reads into `buf`; `None` at the end of the stream. `report_at` as for
    /// [`RecvHalf::poll_chunk`].
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        report_at: u64,
    ) -> (Poll<Result<Option<usize>, ReadError>>, ReadOutcome) {
        if buf.is_empty() {
            return (Poll::Ready(Ok(Some(0))), ReadOutcome::default());
        }
        let (poll, out) = self.poll_chunk(cx, buf.len(), report_at);
        let poll = poll.map(|r| {
            r.map(|chunk| {
                chunk.map(|c| {
                    buf[..c.len()].copy_from_slice(&c);
                    c.len()
                })
            })
        });
        (poll, out)
    }

    /// Puts bytes back in front of what is still to be read (not counted again).
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.recounted += bytes.len() as u64;
        self.pending.push_front(bytes);
    }

    /// Takes what is counted and not yet reported: `(received, consumed)`.
    pub(crate) fn take_unreported(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.received),
            std::mem::take(&mut self.consumed),
        )
    }

    /// Asks the peer to stop sending with an HTTP/3 code. `Ok(true)` the first time the
    /// half becomes done.
    pub(crate) fn stop(&mut self, code: Code) -> Result<bool, ReadError> {
        self.check()?;
        self.stream
            .stop(quinn_code(code))
            .map_err(|_| ReadError::ClosedStream)?;
        Ok(self.ended())
    }

    /// The connection stops the stream because its session ended.
    pub(crate) fn session_gone(&mut self) {
        if !self.gone {
            self.gone = true;
            if !self.done {
                let _ = self.stream.stop(quinn_code(Code::WT_SESSION_GONE));
            }
            self.done = true;
            self.pending.clear();
        }
    }

    /// Marks the half done as a drop does (quinn stops an unfinished stream when it is
    /// dropped). Returns whether it was still open.
    pub(crate) fn close_on_drop(&mut self) -> bool {
        self.ended()
    }
}
