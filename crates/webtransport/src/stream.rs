//! WebTransport streams: [`SendStream`] and [`RecvStream`], with tokio's `AsyncWrite` and
//! `AsyncRead` and the conveniences of pywebtransport's streams (`read_exact`,
//! `read_line`, `read_until`, `read_to_end`, `write_all`, reset and stop with codes).
//!
//! Codes are WebTransport application codes (`u32`); on the wire they travel in the
//! HTTP/3 error space (see [`webtransport_proto::error::wt_to_h3`]).
//!
//! When the session ends, every stream of it still open is reset (sending side) or
//! stopped (receiving side) with WT_SESSION_GONE, and further calls fail with
//! `SessionGone`.
//!
//! Where session flow control is in effect (draft-13 and later peers), writes take the
//! session's credit first and wait for the peer's WT_MAX_DATA when there is none; reads
//! give credit back as they go.
//!
//! Dropping a [`SendStream`] finishes it (the peer sees a clean end after the data
//! written so far); dropping a [`RecvStream`] before its end stops it with code 0.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use webtransport_proto::connection::StreamHalf;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use crate::engine::cells::{lock, ReadOutcome, RecvCell, SendCell};
use crate::engine::slot::SessionNotify;
use crate::engine::Engine;
use crate::error::{ReadError, WriteError};

/// What a stream half needs to know of its connection.
#[derive(Debug, Clone)]
pub(crate) struct StreamLink {
    pub(crate) engine: Arc<Engine>,
    pub(crate) id: u64,
    pub(crate) session: SessionId,
    /// Session flow control is in effect.
    pub(crate) flow: bool,
    /// The session's shared state: its writers' send credit, its streams' reports.
    pub(crate) notify: Arc<SessionNotify>,
}

/// Leaves a stream's report with its session: `received` and `consumed` payload for flow
/// control, perhaps a `done` half. Hands what waits there to the core (under the
/// connection's lock) once it is due, so that a stream costs no lock of its own for
/// either.
fn defer_report(
    engine: &Arc<Engine>,
    notify: &SessionNotify,
    session: SessionId,
    received: u64,
    consumed: u64,
    done: Option<(u64, StreamHalf)>,
) {
    if notify.defer(received, consumed, done, engine.config().report_due) {
        engine.update(|st| st.session_progress(session, notify));
    }
}

/// The sending half of a WebTransport stream.
#[derive(Debug)]
pub struct SendStream {
    cell: SendCell,
    engine: Arc<Engine>,
    id: u64,
    session: SessionId,
    flow: bool,
    notify: Arc<SessionNotify>,
}

impl SendStream {
    pub(crate) fn new(cell: SendCell, link: StreamLink) -> Self {
        SendStream {
            cell,
            engine: link.engine,
            id: link.id,
            session: link.session,
            flow: link.flow,
            notify: link.notify,
        }
    }

    /// The QUIC stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session this stream belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    fn poll_write_inner(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Session credit first, where flow control is in effect: from what the session
        // holds, without the connection's lock, else from the core.
        let n = if self.flow {
            let want = buf.len() as u64;
            let mut granted = self.notify.take_send_credit(want);
            if granted == 0 {
                granted = self
                    .engine
                    .update(|st| st.refill_send_credit(self.session, want, cx.waker()));
            }
            if granted == 0 {
                return Poll::Pending;
            }
            usize::try_from(granted).unwrap_or(buf.len()).min(buf.len())
        } else {
            buf.len()
        };
        let r = lock(&self.cell).poll_write(cx, &buf[..n]);
        let written = match &r {
            Poll::Ready(Ok(w)) => *w,
            _ => 0,
        };
        if self.flow && written < n {
            self.engine
                .update(|st| st.return_send_credit(self.session, (n - written) as u64));
        }
        if written > 0 {
            self.engine.activity().sent(written);
        }
        r
    }

    /// Reports a half that just became done.
    fn done(&self) {
        let done = Some((self.id, StreamHalf::Send));
        defer_report(&self.engine, &self.notify, self.session, 0, 0, done);
    }

    /// Writes some of `buf`, returning how much.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, nothing was written.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, WriteError> {
        poll_fn(|cx| self.poll_write_inner(cx, buf)).await
    }

    /// Writes all of `buf`.
    ///
    /// # Cancel safety
    /// Not cancel safe: if cancelled, an unknown prefix of `buf` was written.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), WriteError> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Finishes the stream: the peer reads to the end of what was written.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let first = lock(&self.cell).finish()?;
        if first {
            self.done();
        }
        Ok(())
    }

    /// Abandons the stream with a WebTransport application `code` (RESET_STREAM).
    pub fn reset(&mut self, code: u32) -> Result<(), WriteError> {
        let first = lock(&self.cell).reset(Code::from_wt_app(code))?;
        if first {
            self.done();
        }
        Ok(())
    }

    /// Sets the send priority relative to the connection's other streams (higher first).
    pub fn set_priority(&self, priority: i32) -> Result<(), WriteError> {
        lock(&self.cell)
            .quinn()
            .set_priority(priority)
            .map_err(|_| WriteError::ClosedStream)
    }

    /// The send priority.
    pub fn priority(&self) -> Result<i32, WriteError> {
        lock(&self.cell)
            .quinn()
            .priority()
            .map_err(|_| WriteError::ClosedStream)
    }

    /// Waits until the peer stops the stream (returning its WebTransport code, `None`
    /// when the code is outside the WebTransport range) or has received everything after
    /// `finish` (returning `Ok(None)` too: use the stream's state to tell).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn stopped(&mut self) -> Result<Option<u32>, WriteError> {
        let fut = lock(&self.cell).quinn().stopped();
        match fut.await {
            Ok(Some(code)) => Ok(Code(code.into_inner()).to_wt_app()),
            Ok(None) => Ok(None),
            Err(quinn::StoppedError::ConnectionLost(c)) => Err(WriteError::Connection(
                crate::error::ConnectionError::from_quinn(&c),
            )),
            Err(_) => Err(WriteError::ClosedStream),
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        // quinn finishes a dropped stream; the core forgets our half of it.
        let open = lock(&self.cell).close_on_drop();
        if open {
            self.done();
        }
    }
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_inner(cx, buf).map_err(Into::into)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.finish().map_err(Into::into))
    }
}

/// The receiving half of a WebTransport stream.
#[derive(Debug)]
pub struct RecvStream {
    cell: RecvCell,
    engine: Arc<Engine>,
    notify: Arc<SessionNotify>,
    id: u64,
    session: SessionId,
    /// Read payload is reported to flow control in pieces of this size (`u64::MAX`: only
    /// at the end, flow control being off).
    report_at: u64,
}

impl RecvStream {
    pub(crate) fn new(cell: RecvCell, link: StreamLink) -> Self {
        let report_at = if link.flow {
            link.engine.config().read_report
        } else {
            u64::MAX
        };
        RecvStream {
            cell,
            engine: link.engine,
            notify: link.notify,
            id: link.id,
            session: link.session,
            report_at,
        }
    }

    /// The QUIC stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session this stream belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// After a read: counts the bytes, and tells the connection what flow control and
    /// the core need to know. Read payload is reported in pieces (and whenever the reader
    /// is about to wait, and at the end), so that credit flows back without a lock per
    /// read.
    fn after_read<T>(&self, (poll, out): (Poll<T>, ReadOutcome)) -> Poll<T> {
        self.report(out);
        poll
    }

    /// Counts what a read (or a stop, or the drop) reported, and leaves what flow control
    /// and the core need to know with the session.
    fn report(&self, out: ReadOutcome) {
        if out.arrived > 0 {
            self.engine.activity().received(out.arrived);
        }
        if out.received > 0 || out.consumed > 0 || out.finished {
            let done = out.finished.then_some((self.id, StreamHalf::Recv));
            let (received, consumed) = (out.received, out.consumed);
            defer_report(
                &self.engine,
                &self.notify,
                self.session,
                received,
                consumed,
                done,
            );
        }
    }

    fn poll_chunk(
        &self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        let r = lock(&self.cell).poll_chunk(cx, max, self.report_at);
        self.after_read(r)
    }

    fn poll_read_inner(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<Option<usize>, ReadError>> {
        let r = lock(&self.cell).poll_read(cx, buf, self.report_at);
        self.after_read(r)
    }

    /// Reads into `buf`; `None` at the end of the stream.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        poll_fn(|cx| self.poll_read_inner(cx, buf)).await
    }

    /// Reads the next chunk of at most `max` bytes without copying; `None` at the end.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        poll_fn(|cx| self.poll_chunk(cx, max)).await
    }

    /// Fills `buf` exactly.
    ///
    /// # Cancel safety
    /// Not cancel safe: bytes read before cancellation are lost.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]).await? {
                Some(n) => filled += n,
                None => return Err(ReadError::FinishedEarly),
            }
        }
        Ok(())
    }

    /// Reads to the end of the stream, failing with [`ReadError::TooLong`] past `limit`
    /// bytes.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(64 * 1024).await? {
            if out.len() + chunk.len() > limit {
                return Err(ReadError::TooLong(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads up to and including `delim`, or to the end of the stream; at most `limit`
    /// bytes (else [`ReadError::TooLong`]). Bytes after the delimiter stay for the next
    /// read.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn read_until(&mut self, delim: u8, limit: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = BytesMut::new();
        while let Some(mut chunk) = self.read_chunk(64 * 1024).await? {
            if let Some(pos) = chunk.iter().position(|b| *b == delim) {
                let rest = chunk.split_off(pos + 1);
                if out.len() + chunk.len() > limit {
                    return Err(ReadError::TooLong(limit));
                }
                out.extend_from_slice(&chunk);
                lock(&self.cell).unread(rest);
                return Ok(out.to_vec());
            }
            if out.len() + chunk.len() > limit {
                return Err(ReadError::TooLong(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.to_vec())
    }

    /// Reads one line (up to and including `\n`, or to the end), at most `limit` bytes.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>, ReadError> {
        self.read_until(b'\n', limit).await
    }

    /// Asks the peer to stop sending, with a WebTransport application `code`.
    pub fn stop(&mut self, code: u32) -> Result<(), ReadError> {
        let out = {
            let mut cell = lock(&self.cell);
            let first = cell.stop(Code::from_wt_app(code))?;
            cell.take_unreported(first)
        };
        self.report(out);
        Ok(())
    }

    /// Waits for the peer's reset: `Some(code)` if it reset the stream (with its
    /// WebTransport code, `None` inside when out of range), `None` if it finished cleanly.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn received_reset(&mut self) -> Result<Option<Option<u32>>, ReadError> {
        loop {
            match self.read_chunk(64 * 1024).await {
                Ok(Some(_)) => continue,
                Ok(None) => return Ok(None),
                Err(ReadError::Reset(code)) => return Ok(Some(code)),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // quinn stops a dropped stream that was not read to its end.
        let out = {
            let mut cell = lock(&self.cell);
            let open = cell.close_on_drop();
            cell.take_unreported(open)
        };
        self.report(out);
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match std::task::ready!(self.poll_read_inner(cx, dst)) {
            Ok(Some(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}
