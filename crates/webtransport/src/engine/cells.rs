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

use bytes::{Buf, Bytes};
use tokio::io::ReadBuf;
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
    /// Bytes read from QUIC but not yet handed out (what followed the preamble, or what
    /// `read_until` read past its delimiter).
    pending: Bytes,
    /// Stopped by the connection because the session ended.
    gone: bool,
    /// Read to its end, reset, or stopped.
    done: bool,
    /// Payload taken from QUIC (and the prefix) and not yet reported to the connection's
    /// flow control.
    unreported: u64,
}

/// What one read of a [`RecvHalf`] gave, besides the bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadOutcome {
    /// Bytes handed out by this read.
    pub(crate) n: usize,
    /// The half just became done (end of stream, or a reset read).
    pub(crate) finished: bool,
    /// Payload to report to flow control now (see [`RecvHalf::poll_read`]).
    pub(crate) report: u64,
}

impl RecvHalf {
    /// A half whose first payload bytes, `prefix`, came with its preamble.
    pub(crate) fn new_cell(stream: quinn::RecvStream, prefix: Bytes) -> RecvCell {
        Arc::new(Mutex::new(RecvHalf {
            stream,
            unreported: prefix.len() as u64,
            pending: prefix,
            gone: false,
            done: false,
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

    /// The outcome of a read of `n` bytes: the payload counted since the last report is
    /// due once it reaches `report_at`, when the reader is about to wait (`waiting`), or
    /// at the end.
    fn outcome(&mut self, n: usize, finished: bool, waiting: bool, report_at: u64) -> ReadOutcome {
        let due = finished || (waiting && self.unreported > 0) || self.unreported >= report_at;
        ReadOutcome {
            n,
            finished,
            report: if due {
                std::mem::take(&mut self.unreported)
            } else {
                0
            },
        }
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
        if !self.pending.is_empty() {
            let n = self.pending.len().min(max);
            let chunk = self.pending.split_to(n);
            return (
                Poll::Ready(Ok(Some(chunk))),
                self.outcome(n, false, false, report_at),
            );
        }
        let polled = {
            let fut = self.stream.read_chunk(max, true);
            tokio::pin!(fut);
            std::future::Future::poll(fut, cx)
        };
        let r = match polled {
            Poll::Pending => {
                let waiting = report_at != u64::MAX;
                return (Poll::Pending, self.outcome(0, false, waiting, report_at));
            }
            Poll::Ready(r) => r,
        };
        match r {
            Ok(Some(chunk)) => {
                let n = chunk.bytes.len();
                self.unreported += n as u64;
                (
                    Poll::Ready(Ok(Some(chunk.bytes))),
                    self.outcome(n, false, false, report_at),
                )
            }
            Ok(None) => {
                let finished = self.ended();
                (
                    Poll::Ready(Ok(None)),
                    self.outcome(0, finished, false, report_at),
                )
            }
            Err(e) => {
                let finished = self.ended();
                (
                    Poll::Ready(Err(ReadError::from_quinn(e))),
                    self.outcome(0, finished, false, report_at),
                )
            }
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
        if let Err(e) = self.check() {
            return (Poll::Ready(Err(e)), ReadOutcome::default());
        }
        if !self.pending.is_empty() {
            let n = self.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.advance(n);
            return (
                Poll::Ready(Ok(Some(n))),
                self.outcome(n, false, false, report_at),
            );
        }
        if buf.is_empty() {
            return (Poll::Ready(Ok(Some(0))), ReadOutcome::default());
        }
        let mut rb = ReadBuf::new(buf);
        let r = match self.stream.poll_read_buf(cx, &mut rb) {
            Poll::Pending => {
                let waiting = report_at != u64::MAX;
                return (Poll::Pending, self.outcome(0, false, waiting, report_at));
            }
            Poll::Ready(r) => r,
        };
        let n = rb.filled().len();
        match r {
            Ok(()) if n == 0 => {
                let finished = self.ended();
                (
                    Poll::Ready(Ok(None)),
                    self.outcome(0, finished, false, report_at),
                )
            }
            Ok(()) => {
                self.unreported += n as u64;
                (
                    Poll::Ready(Ok(Some(n))),
                    self.outcome(n, false, false, report_at),
                )
            }
            Err(e) => {
                let finished = self.ended();
                (
                    Poll::Ready(Err(ReadError::from_quinn(e))),
                    self.outcome(0, finished, false, report_at),
                )
            }
        }
    }

    /// Puts bytes back in front of what is still to be read. (Flow control counts bytes
    /// as they leave QUIC, so they are not counted again.)
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.pending = bytes;
        } else {
            let mut all = bytes::BytesMut::from(&bytes[..]);
            all.extend_from_slice(&self.pending);
            self.pending = all.freeze();
        }
    }

    /// Takes the count of payload read but not yet reported to flow control.
    pub(crate) fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
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
        }
    }

    /// Marks the half done as a drop does (quinn stops an unfinished stream when it is
    /// dropped). Returns whether it was still open.
    pub(crate) fn close_on_drop(&mut self) -> bool {
        self.ended()
    }
}
