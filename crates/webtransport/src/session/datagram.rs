//! [`DatagramBuffer`]: a datagram's payload written where it will be sent from.

use std::ops::{Deref, DerefMut};

use bytes::BytesMut;
use webtransport_proto::stream_header::SessionId;

/// A buffer lent by [`Session::datagram_buffer`](super::Session::datagram_buffer) to
/// write one datagram's payload in, sent with
/// [`Session::send_datagram_buffer`](super::Session::send_datagram_buffer).
///
/// A WebTransport datagram is the session's id followed by the payload, and QUIC sends
/// it from one piece of memory, so [`Session::send_datagram`](super::Session::send_datagram)
/// copies the payload behind the id. This buffer has the id in front already, in the
/// memory the connection builds its datagrams in: what is written here is sent as it
/// is. It derefs to the payload written so far, and writes append (also through
/// [`std::io::Write`], for serializers that take a writer).
///
/// Writing more than the capacity asked for moves the buffer to memory of its own
/// (correct, one copy). Dropping it unsent discards it.
pub struct DatagramBuffer {
    session: SessionId,
    /// The session's id, then the payload.
    buf: BytesMut,
    header: usize,
}

impl DatagramBuffer {
    pub(crate) fn new(session: SessionId, buf: BytesMut) -> Self {
        let header = buf.len();
        DatagramBuffer {
            session,
            buf,
            header,
        }
    }

    /// The session it was lent by (whose id is written in front).
    pub(crate) fn session(&self) -> SessionId {
        self.session
    }

    /// The whole datagram: the session's id, then the payload.
    pub(crate) fn into_datagram(self) -> BytesMut {
        self.buf
    }

    /// Payload bytes it holds without moving.
    pub fn capacity(&self) -> usize {
        self.buf.capacity() - self.header
    }

    /// Appends `data` to the payload.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Makes the payload `len` bytes long, cutting it or appending `value`s.
    pub fn resize(&mut self, len: usize, value: u8) {
        self.buf.resize(self.header + len, value);
    }

    /// Empties the payload.
    pub fn clear(&mut self) {
        self.buf.truncate(self.header);
    }
}

impl Deref for DatagramBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.header..]
    }
}

impl DerefMut for DatagramBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.header..]
    }
}

impl std::io::Write for DatagramBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for DatagramBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramBuffer")
            .field("session", &self.session)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}
