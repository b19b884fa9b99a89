//! The two halves of a WebTransport stream as the connection and the application share
//! them: the application's [`SendStream`](crate::SendStream) / [`RecvStream`](crate::RecvStream)
//! own a half, and the connection keeps a weak reference so that it can reset or stop the
//! half with WT_SESSION_GONE when the session ends.
//!
//! Lock order: a half's lock may be taken while the connection's state is locked, never
//! the other way round.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

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

    /// Writes what quinn takes of `buf` without copying it (quinn keeps the `Bytes`),
    /// leaving the rest in `buf`.
    pub(crate) fn poll_write_bytes(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Bytes,
    ) -> Poll<Result<(), WriteError>> {
        self.check()?;
        let mut bufs = [std::mem::take(buf)];
        let written = std::pin::pin!(self.stream.write_chunks(&mut bufs)).poll(cx);
        *buf = std::mem::take(&mut bufs[0]);
        written.map_ok(|_| ()).map_err(WriteError::from_quinn)
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
    pending: Chunks,
    /// How the stream ended, when that was seen while taking chunks: handed out after
    /// `pending`.
    end: Option<Result<(), ReadError>>,
    /// Stopped by the connection because the session ended.
    gone: bool,
    /// Read to its end, reset, or stopped.
    done: bool,
    /// Payload that arrived and is not yet reported to flow control.
    received: u64,
    /// Payload handed out and not yet reported.
    consumed: u64,
    /// Payload taken from QUIC and not yet counted in the connection's activity.
    arrived: u64,
    /// Bytes at the front of `pending` handed out once already (put back by
    /// `read_until`): not counted as consumed again.
    recounted: u64,
}

/// What one read of a [`RecvHalf`] gave, besides the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOutcome {
    /// Payload taken from QUIC, to count in the connection's activity (bytes received,
    /// last activity): once per batch of chunks rather than per chunk handed out.
    pub(crate) arrived: u64,
    /// The half just became done (end of stream, or a reset read).
    pub(crate) finished: bool,
    /// Payload arrivals to report to flow control now.
    pub(crate) received: u64,
    /// Payload consumption to report now (after `received`).
    pub(crate) consumed: u64,
}

impl RecvHalf {
    /// A half whose first payload bytes, `prefix`, came with its preamble.
    pub(crate) fn new_cell(stream: quinn::RecvStream, prefix: Bytes) -> RecvCell {
        let received = prefix.len() as u64;
        let mut pending = Chunks::default();
        pending.push_front(prefix);
        Arc::new(Mutex::new(RecvHalf {
            stream,
            pending,
            end: None,
            gone: false,
            done: false,
            received,
            consumed: 0,
            arrived: 0,
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

    /// Takes what QUIC has for the stream, up to [`BATCH`] chunks in one call (registering
    /// for a wake-up when that is nothing): `Pending` when no byte and no end is
    /// available. Called only when nothing is pending. What arrived is counted here, as
    /// it leaves QUIC's buffers, so that flow control sees a peer's bytes up to a batch
    /// ahead of the application.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.end.is_some() {
            return Poll::Ready(());
        }
        while self.pending.is_empty() {
            let polled = {
                let fut = self.stream.read_chunks(self.pending.space());
                tokio::pin!(fut);
                std::future::Future::poll(fut, cx)
            };
            match polled {
                Poll::Ready(Ok(Some(n))) => {
                    let bytes = self.pending.filled(n);
                    self.received += bytes;
                    self.arrived += bytes;
                }
                Poll::Ready(Ok(None)) => self.end = Some(Ok(())),
                Poll::Ready(Err(e)) => self.end = Some(Err(ReadError::from_quinn(e))),
                Poll::Pending => return Poll::Pending,
            }
            if self.end.is_some() {
                break;
            }
        }
        Poll::Ready(())
    }

    /// Counts `n` bytes handed out.
    fn hand_out(&mut self, n: usize) {
        let again = self.recounted.min(n as u64);
        self.recounted -= again;
        self.consumed += n as u64 - again;
    }

    /// The outcome of a read: what arrived from QUIC, and what flow control counted once
    /// it reaches `report_at` (`u64::MAX`: flow control is off, only at the end), when the
    /// reader is about to wait, or at the end.
    fn outcome(&mut self, finished: bool, waiting: bool, report_at: u64) -> ReadOutcome {
        let now = finished || self.received >= report_at || self.consumed >= report_at;
        let flow = now || (waiting && report_at != u64::MAX);
        let mut out = ReadOutcome {
            arrived: std::mem::take(&mut self.arrived),
            finished,
            ..ReadOutcome::default()
        };
        if flow {
            out.received = std::mem::take(&mut self.received);
            out.consumed = std::mem::take(&mut self.consumed);
        }
        out
    }

    /// The next piece of what is pending, at most `max` bytes, or the stream's end;
    /// `None` while there is nothing (the caller polls QUIC then).
    fn next(&mut self, max: usize) -> Option<Result<Option<Bytes>, ReadError>> {
        if let Some(chunk) = self.pending.take(max) {
            self.hand_out(chunk.len());
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
        if self.pending.is_empty() && self.fill(cx).is_pending() {
            return (Poll::Pending, self.outcome(false, true, report_at));
        }
        match self.next(max) {
            Some(Ok(Some(chunk))) => (
                Poll::Ready(Ok(Some(chunk))),
                self.outcome(false, false, report_at),
            ),
            Some(end) => {
                let finished = self.ended();
                (Poll::Ready(end), self.outcome(finished, false, report_at))
            }
            None => (Poll::Pending, self.outcome(false, true, report_at)),
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

    /// Takes what is counted and not yet reported (`finished` as given).
    pub(crate) fn take_unreported(&mut self, finished: bool) -> ReadOutcome {
        ReadOutcome {
            arrived: std::mem::take(&mut self.arrived),
            finished,
            received: std::mem::take(&mut self.received),
            consumed: std::mem::take(&mut self.consumed),
        }
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

/// Chunks a read takes from QUIC at most.
const BATCH: usize = 16;

/// The chunks of a [`RecvHalf`] not yet handed out, `ring[head..head + len]`: kept inside
/// the half, so that a stream costs no allocation for them, and filled in one call to QUIC
/// when empty.
#[derive(Debug, Default)]
struct Chunks {
    ring: [Bytes; BATCH],
    head: usize,
    len: usize,
}

impl Chunks {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole ring, for QUIC to fill (only when empty).
    fn space(&mut self) -> &mut [Bytes] {
        debug_assert!(self.is_empty());
        self.head = 0;
        &mut self.ring
    }

    /// QUIC put `n` chunks into [`Chunks::space`]; returns their bytes.
    fn filled(&mut self, n: usize) -> u64 {
        self.len = n.min(BATCH);
        self.ring[..self.len].iter().map(|b| b.len() as u64).sum()
    }

    /// At most `max` bytes from the front.
    fn take(&mut self, max: usize) -> Option<Bytes> {
        while self.len > 0 {
            let front = &mut self.ring[self.head];
            if front.len() > max {
                return Some(front.split_to(max));
            }
            let chunk = std::mem::take(front);
            self.head += 1;
            self.len -= 1;
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
        None
    }

    /// Puts bytes back in front. Where the slot before the front is taken (the front was
    /// handed out in part), the two are joined.
    fn push_front(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.len == 0 {
            self.head = 0;
            self.ring[0] = bytes;
            self.len = 1;
        } else if self.head > 0 {
            self.head -= 1;
            self.ring[self.head] = bytes;
            self.len += 1;
        } else {
            let front = &mut self.ring[self.head];
            let mut joined = bytes::BytesMut::with_capacity(bytes.len() + front.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(front);
            *front = joined.freeze();
        }
    }

    fn clear(&mut self) {
        for b in &mut self.ring[self.head..self.head + self.len] {
            *b = Bytes::new();
        }
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(chunks: &[&'static [u8]]) -> Chunks {
        let mut c = Chunks::default();
        let space = c.space();
        for (slot, b) in space.iter_mut().zip(chunks) {
            *slot = Bytes::from_static(b);
        }
        let n = c.filled(chunks.len());
        assert_eq!(n, chunks.iter().map(|b| b.len() as u64).sum::<u64>());
        c
    }

    #[test]
    fn hands_out_in_order_and_splits_at_max() {
        let mut c = filled(&[b"abcd", b"", b"ef"]);
        assert_eq!(c.take(3).unwrap(), &b"abc"[..]);
        assert_eq!(c.take(3).unwrap(), &b"d"[..]);
        // The empty chunk is skipped.
        assert_eq!(c.take(3).unwrap(), &b"ef"[..]);
        assert!(c.take(3).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn bytes_put_back_come_first_even_before_a_split_front() {
        let mut c = filled(&[b"hello", b"world"]);
        let first = c.take(16).unwrap();
        c.push_front(first.slice(2..));
        assert_eq!(c.take(16).unwrap(), &b"llo"[..]);
        let part = c.take(2).unwrap();
        assert_eq!(part, &b"wo"[..]);
        // A free slot before the split front takes the first; the second finds none and
        // is joined to the front.
        c.push_front(Bytes::from_static(b"xx"));
        c.push_front(Bytes::from_static(b"yy"));
        assert_eq!(c.take(16).unwrap(), &b"yyxx"[..]);
        assert_eq!(c.take(16).unwrap(), &b"rld"[..]);
        assert!(c.take(16).is_none());
    }

    #[test]
    fn a_full_batch_is_taken_and_cleared() {
        let all: Vec<&'static [u8]> = vec![b"x"; BATCH];
        let mut c = filled(&all);
        assert_eq!(c.len, BATCH);
        c.clear();
        assert!(c.is_empty());
        assert!(c.take(1).is_none());
        assert!(c.ring.iter().all(Bytes::is_empty));
    }
}
