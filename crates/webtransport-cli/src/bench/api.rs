//! What a benchmarked implementation provides: a client and a server that hand out
//! connections (a WebTransport session, or a bare QUIC connection for the baseline), and
//! the stream and datagram operations the scenarios use.
//!
//! The scenario code in `scenarios.rs` is written once against these traits, so every
//! implementation runs the same code path; only the few lines in each implementation's
//! module differ. The peer harness in `bench/` includes this file and `scenarios.rs` by
//! path, so its wtransport and web-transport-quinn runs use the very same code.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Result;
use bytes::Bytes;

pub use super::scenarios::DatagramSource;

/// One benchmarked implementation: how to start its server and connect its client.
pub trait Stack: Send + Sync + 'static {
    /// A session (or a QUIC connection for the raw-quinn baseline).
    type Conn: Conn;
    /// A bound server that yields accepted sessions.
    type Server: Listener<Conn = Self::Conn>;

    /// The name in tables and JSON (`webtransport`, `quinn`, `wtransport`, ...).
    fn name(&self) -> &'static str;

    /// Binds a server on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Server>> + Send;

    /// Opens a new connection to `addr` and, for WebTransport, a session on it; ready for
    /// streams when it returns.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = Result<Self::Conn>> + Send;

    /// The same client with TLS session resumption off, so that every handshake is a full
    /// one (what the `resumed` scenario compares with); `None` where it cannot be had.
    fn without_tls_resumption(&self) -> Result<Option<Self>>
    where
        Self: Sized,
    {
        Ok(None)
    }
}

/// A bound server.
pub trait Listener: Send + Sync + 'static {
    /// What it accepts.
    type Conn: Conn;

    /// The address it listens on.
    fn local_addr(&self) -> SocketAddr;

    /// The next established session (or connection); `None` once the server is gone.
    fn accept(&self) -> impl Future<Output = Option<Self::Conn>> + Send;
}

/// A session: streams both ways and datagrams.
pub trait Conn: Clone + Send + Sync + 'static {
    /// Sending half of a stream.
    type Send: SendHalf;
    /// Receiving half of a stream.
    type Recv: RecvHalf;

    /// Opens a bidirectional stream.
    fn open_bi(&self) -> impl Future<Output = Result<(Self::Send, Self::Recv)>> + Send;

    /// Waits for the peer's next bidirectional stream.
    fn accept_bi(&self) -> impl Future<Output = Result<(Self::Send, Self::Recv)>> + Send;

    /// Queues the next datagram of `source`; never waits (a full send buffer drops the
    /// oldest). A stack that lends buffers to write datagrams in has `source` write it
    /// there; the others are handed the buffer `source` wrote it in.
    fn send_datagram(&self, source: &mut DatagramSource) -> Result<()>;

    /// Waits for the next datagram.
    fn read_datagram(&self) -> impl Future<Output = Result<Bytes>> + Send;

    /// Bytes free in the outgoing datagram buffer; a sender that stays below it loses
    /// nothing locally.
    fn datagram_send_buffer_space(&self) -> usize;

    /// The largest datagram payload the peer accepts now.
    fn max_datagram_size(&self) -> Option<usize>;

    /// Closes at once (the whole connection, so that handshake loops do not pile up
    /// half-closed state).
    fn close(&self);
}

/// The sending half of a stream.
pub trait SendHalf: Send + 'static {
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = Result<()>> + Send;
    /// Ends the stream after what was written.
    fn finish(&mut self) -> Result<()>;
}

/// The receiving half of a stream.
pub trait RecvHalf: Send + 'static {
    /// The next chunk as the transport has it; `None` at the end of the stream.
    fn read_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;
}
