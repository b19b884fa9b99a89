//! WebTransport streams: [`SendStream`] and [`RecvStream`], with tokio's `AsyncWrite` and
//! `AsyncRead` and the conveniences of pywebtransport's streams (`read_exact`,
//! `read_line`, `read_until`, `read_to_end`, `write_all`, reset and stop with codes).
//!
//! Codes are WebTransport application codes (`u32`); on the wire they travel in the
//! HTTP/3 error space (see [`webtransport_proto::error::wt_to_h3`]).
//!
//! When the session closes, every stream of it still open is reset (sending side) or
//! stopped (receiving side) with WT_SESSION_GONE, and further calls fail with
//! `SessionGone`.
//!
//! Dropping a [`SendStream`] finishes it (the peer sees a clean end after the data
//! written so far); dropping a [`RecvStream`] before its end stops it with code 0.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

use crate::driver::quinn_code;
use crate::error::{ReadError, WriteError};

#[derive(Debug)]
pub(crate) struct SendInner {
    stream: quinn::SendStream,
    gone: bool,
}

#[derive(Debug)]
pub(crate) struct RecvInner {
    stream: quinn::RecvStream,
    /// Bytes read from QUIC but not yet handed out (the preamble's leftovers, or what
    /// `read_until` read past its delimiter).
    pending: Bytes,
    gone: bool,
}

pub(crate) type SendCell = Arc<Mutex<SendInner>>;
pub(crate) type RecvCell = Arc<Mutex<RecvInner>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resets a stream of a closed session with WT_SESSION_GONE.
pub(crate) fn send_gone(cell: &SendCell) {
    let mut s = lock(cell);
    if !s.gone {
        s.gone = true;
        let _ = s.stream.reset(quinn_code(Code::WT_SESSION_GONE));
    }
}

/// Stops a stream of a closed session with WT_SESSION_GONE.
pub(crate) fn recv_gone(cell: &RecvCell) {
    let mut s = lock(cell);
    if !s.gone {
        s.gone = true;
        let _ = s.stream.stop(quinn_code(Code::WT_SESSION_GONE));
    }
}

/// The sending half of a WebTransport stream.
#[derive(Debug)]
pub struct SendStream {
    cell: SendCell,
    id: u64,
    session: SessionId,
}

impl SendStream {
    pub(crate) fn new(stream: quinn::SendStream, session: SessionId) -> (Self, SendCell) {
        let id = stream.id().into();
        let cell = Arc::new(Mutex::new(SendInner {
            stream,
            gone: false,
        }));
        (
            SendStream {
                cell: cell.clone(),
                id,
                session,
            },
            cell,
        )
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
        let mut s = lock(&self.cell);
        if s.gone {
            return Poll::Ready(Err(WriteError::SessionGone));
        }
        Pin::new(&mut s.stream)
            .poll_write(cx, buf)
            .map_err(WriteError::from_quinn)
    }

    /// Writes some of `buf`, returning how much.
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, nothing was written.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, WriteError> {
        std::future::poll_fn(|cx| self.poll_write_inner(cx, buf)).await
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
        let mut s = lock(&self.cell);
        if s.gone {
            return Err(WriteError::SessionGone);
        }
        s.stream.finish().map_err(|_| WriteError::ClosedStream)
    }

    /// Abandons the stream with a WebTransport application `code` (RESET_STREAM).
    pub fn reset(&mut self, code: u32) -> Result<(), WriteError> {
        let mut s = lock(&self.cell);
        if s.gone {
            return Err(WriteError::SessionGone);
        }
        s.stream
            .reset(quinn_code(Code::from_wt_app(code)))
            .map_err(|_| WriteError::ClosedStream)
    }

    /// Sets the send priority relative to the connection's other streams (higher first).
    pub fn set_priority(&self, priority: i32) -> Result<(), WriteError> {
        lock(&self.cell)
            .stream
            .set_priority(priority)
            .map_err(|_| WriteError::ClosedStream)
    }

    /// The send priority.
    pub fn priority(&self) -> Result<i32, WriteError> {
        lock(&self.cell)
            .stream
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
        let fut = {
            let s = lock(&self.cell);
            s.stream.stopped()
        };
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
    id: u64,
    session: SessionId,
}

impl RecvStream {
    pub(crate) fn new(
        stream: quinn::RecvStream,
        prefix: Bytes,
        session: SessionId,
    ) -> (Self, RecvCell) {
        let id = stream.id().into();
        let cell = Arc::new(Mutex::new(RecvInner {
            stream,
            pending: prefix,
            gone: false,
        }));
        (
            RecvStream {
                cell: cell.clone(),
                id,
                session,
            },
            cell,
        )
    }

    /// The QUIC stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The session this stream belongs to.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// Reads the next chunk of at most `max` bytes; `None` at the end of the stream.
    fn poll_chunk(
        &self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        let mut s = lock(&self.cell);
        if s.gone {
            return Poll::Ready(Err(ReadError::SessionGone));
        }
        if !s.pending.is_empty() {
            let n = s.pending.len().min(max);
            return Poll::Ready(Ok(Some(s.pending.split_to(n))));
        }
        let fut = s.stream.read_chunk(max, true);
        tokio::pin!(fut);
        match ready!(fut.poll(cx)) {
            Ok(Some(chunk)) => Poll::Ready(Ok(Some(chunk.bytes))),
            Ok(None) => Poll::Ready(Ok(None)),
            Err(e) => Poll::Ready(Err(ReadError::from_quinn(e))),
        }
    }

    fn poll_read_inner(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<Option<usize>, ReadError>> {
        let mut s = lock(&self.cell);
        if s.gone {
            return Poll::Ready(Err(ReadError::SessionGone));
        }
        if !s.pending.is_empty() {
            let n = s.pending.len().min(buf.len());
            buf[..n].copy_from_slice(&s.pending[..n]);
            s.pending.advance(n);
            return Poll::Ready(Ok(Some(n)));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(Some(0)));
        }
        let mut rb = ReadBuf::new(buf);
        match ready!(s.stream.poll_read_buf(cx, &mut rb)) {
            Ok(()) if rb.filled().is_empty() => Poll::Ready(Ok(None)),
            Ok(()) => Poll::Ready(Ok(Some(rb.filled().len()))),
            Err(e) => Poll::Ready(Err(ReadError::from_quinn(e))),
        }
    }

    /// Reads into `buf`; `None` at the end of the stream.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        std::future::poll_fn(|cx| self.poll_read_inner(cx, buf)).await
    }

    /// Reads the next chunk of at most `max` bytes without copying; `None` at the end.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        std::future::poll_fn(|cx| self.poll_chunk(cx, max)).await
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
                if !rest.is_empty() {
                    let mut s = lock(&self.cell);
                    let mut pending = BytesMut::from(&rest[..]);
                    pending.extend_from_slice(&s.pending);
                    s.pending = pending.freeze();
                }
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
        let mut s = lock(&self.cell);
        if s.gone {
            return Err(ReadError::SessionGone);
        }
        s.stream
            .stop(quinn_code(Code::from_wt_app(code)))
            .map_err(|_| ReadError::ClosedStream)
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

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match ready!(self.poll_read_inner(cx, dst)) {
            Ok(Some(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }
}

use std::future::Future;
