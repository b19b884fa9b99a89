//! The state machine's public types: configuration, inputs' answers, outputs, errors.

use bytes::Bytes;
use std::time::Duration;

use crate::error::Code;
use crate::headers::{ConnectRequest, ConnectResponse};
use crate::settings::{Settings, WtDraft};
use crate::stream_header::SessionId;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens sessions with extended CONNECT.
    Client,
    /// Accepts or rejects sessions.
    Server,
}

/// Limits and options of the state machine. Every buffer a peer can fill has a cap here.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most sessions open at once on this connection (requested or established).
    pub max_sessions: u32,
    /// Largest field section we accept (sent as SETTINGS_MAX_FIELD_SECTION_SIZE).
    pub max_field_section_size: u64,
    /// Largest capsule we buffer (close reasons need 1028 bytes).
    pub max_capsule_size: u64,
    /// Most WebTransport streams held, over all sessions, while their session is not yet
    /// established. More are refused with WT_BUFFERED_STREAM_REJECTED.
    pub max_pending_streams: usize,
    /// Most datagrams held while their session is not yet established; more are dropped
    /// and counted.
    pub max_pending_datagrams: usize,
    /// How long a stream or datagram may wait for its session before it is refused.
    pub pending_timeout: Duration,
    /// How long a client waits for the answer to its CONNECT request.
    pub session_timeout: Duration,
    /// Closed sessions remembered, so that late streams for them are refused with
    /// WT_SESSION_GONE rather than buffered.
    pub closed_session_memory: usize,
    /// Write capsules onto the CONNECT stream without the HTTP/3 DATA frame around them.
    /// Only for pywebtransport 0.8.1, which expects that (docs/protocol.md); off by default.
    pub unframed_capsules: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_sessions: 16,
            max_field_section_size: 16 * 1024,
            max_capsule_size: 8 * 1024,
            max_pending_streams: 32,
            max_pending_datagrams: 64,
            pending_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            closed_session_memory: 64,
            unframed_capsules: false,
        }
    }
}

/// The stream ids of our own unidirectional HTTP/3 streams, opened by the caller before
/// the state machine is built.
///
/// The QPACK streams are optional: we use no dynamic table and allow the peer none, and
/// RFC 9204 §4.2 lets such an endpoint skip its encoder and decoder streams (each open
/// stream costs both sides memory for the connection's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalStreams {
    /// Our control stream.
    pub control: u64,
    /// Our QPACK encoder stream, if opened.
    pub encoder: Option<u64>,
    /// Our QPACK decoder stream, if opened.
    pub decoder: Option<u64>,
}

/// What the caller should do with a stream after [`Connection::handle_stream_data`](super::Connection::handle_stream_data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Feed {
    /// Keep reading it and feeding the bytes here.
    Continue,
    /// It is a WebTransport stream: read it yourself from now on (the bytes already fed
    /// after its preamble come with [`Event::IncomingStream`]).
    Detach,
    /// Stop reading it; the core has no further use for its bytes.
    Done,
}

/// Something the caller must do on the QUIC connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `data` on a stream, then finish it if `fin`.
    Write {
        /// QUIC stream id.
        stream: u64,
        /// Bytes to write.
        data: Bytes,
        /// Finish the stream after them.
        fin: bool,
    },
    /// Reset the sending side of a stream.
    Reset {
        /// QUIC stream id.
        stream: u64,
        /// HTTP/3 error code.
        code: Code,
    },
    /// Ask the peer to stop sending on a stream.
    StopSending {
        /// QUIC stream id.
        stream: u64,
        /// HTTP/3 error code.
        code: Code,
    },
    /// Close the whole QUIC connection.
    CloseConnection {
        /// HTTP/3 error code.
        code: Code,
        /// Reason phrase.
        reason: String,
    },
}

/// Why a client's session did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The server answered with a status outside 2xx.
    Status(u16),
    /// The server's SETTINGS do not offer WebTransport (what is missing is said).
    Unsupported(&'static str),
    /// No answer came within the session timeout.
    Timeout,
    /// The request stream was reset, with this code.
    Reset(Code),
    /// The answer was malformed.
    Malformed(String),
    /// The connection is going away (GOAWAY) or closed.
    GoingAway,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer's SETTINGS arrived; `draft` is the WebTransport draft we will speak.
    PeerSettings {
        /// The settings, GREASE removed.
        settings: Settings,
        /// The draft chosen, if the peer offers WebTransport at all.
        draft: Option<WtDraft>,
    },
    /// (Server) A client asks for a session; answer with `accept_session` or
    /// `reject_session`.
    SessionRequested {
        /// The session.
        session: SessionId,
        /// The validated request (boxed: the largest event by far, and the event queue's
        /// slots are as large as its largest event).
        request: Box<ConnectRequest>,
    },
    /// The session is open (client: 2xx received; server: accepted).
    SessionEstablished {
        /// The session.
        session: SessionId,
        /// The response sent or received.
        response: ConnectResponse,
    },
    /// (Client) The session did not open.
    SessionRejected {
        /// The session.
        session: SessionId,
        /// Why.
        reason: RejectReason,
        /// The response, if one came.
        response: Option<ConnectResponse>,
    },
    /// The peer opened a WebTransport stream in an established session.
    IncomingStream {
        /// The session.
        session: SessionId,
        /// QUIC stream id.
        stream: u64,
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// Payload bytes that followed the preamble in what was fed so far.
        prefix: Bytes,
    },
    /// A datagram for an established session.
    Datagram {
        /// The session.
        session: SessionId,
        /// Its payload.
        payload: Bytes,
    },
    /// The peer asks to wind the session down (DRAIN_WEBTRANSPORT_SESSION).
    SessionDraining {
        /// The session.
        session: SessionId,
    },
    /// The session is closed; `remote` tells which side closed it.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Application error code (0 when the stream ended without a capsule).
        code: u32,
        /// Reason.
        reason: String,
        /// Whether the peer closed it.
        remote: bool,
    },
    /// The peer sent GOAWAY with this id.
    GoAway {
        /// Stream id (from a server) or push id (from a client).
        id: u64,
    },
    /// A connection error: the connection is closed with this code.
    ConnectionError {
        /// HTTP/3 error code.
        code: Code,
        /// What went wrong.
        reason: String,
    },
}

/// An application command that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// No such session, or it is closed.
    #[error("session {0} is not open")]
    NotOpen(SessionId),
    /// The session is not established yet (or no longer).
    #[error("session {0} is not established")]
    NotEstablished(SessionId),
    /// Too many sessions on this connection.
    #[error("session limit of {0} reached")]
    TooManySessions(u64),
    /// The stream id cannot carry a session.
    #[error("stream {0} cannot carry a session")]
    BadStream(u64),
    /// This role cannot do that.
    #[error("a {0:?} cannot do this")]
    WrongRole(Role),
    /// The connection is closed or going away.
    #[error("connection is closed or going away")]
    Closed,
    /// The peer does not accept HTTP datagrams.
    #[error("peer did not enable HTTP datagrams")]
    DatagramsDisabled,
    /// A close reason over 1024 bytes.
    #[error("close reason over 1024 bytes")]
    ReasonTooLong,
}

/// Counters of what the core refused or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams dropped (no room in the pending buffer, unknown or closed session).
    pub datagrams_dropped: u64,
    /// Streams refused with WT_BUFFERED_STREAM_REJECTED.
    pub streams_rejected: u64,
    /// Streams refused with WT_SESSION_GONE.
    pub streams_gone: u64,
    /// Sessions refused by the limit.
    pub sessions_refused: u64,
}
