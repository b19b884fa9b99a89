//! Errors, one enum per kind of operation. Each says whether the local or the remote side
//! caused it where that is known, and whether retrying can help ([`is_retriable`]).
//!
//! [`is_retriable`]: ConnectError::is_retriable

use std::io;

use webtransport_proto::connection::RejectReason;
use webtransport_proto::Code;

use crate::config::ConfigError;
use crate::tls::TlsError;

/// Why a connection or a session did not come up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The URL could not be used.
    #[error("invalid URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The host name did not resolve.
    #[error("could not resolve {host}: {why}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver error.
        why: String,
    },
    /// Setting up TLS failed (certificate files, verifier).
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Binding the local UDP socket failed.
    #[error("could not bind a UDP socket: {0}")]
    Bind(String),
    /// The QUIC handshake failed (includes certificate verification failures, reported
    /// by the peer's TLS alert or our verifier).
    #[error("QUIC handshake failed: {0}")]
    Handshake(String),
    /// The connect took longer than the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The server refused the session with an HTTP status.
    #[error("server refused the session with status {0}")]
    Rejected(u16),
    /// The server does not offer WebTransport.
    #[error("server does not support WebTransport: missing {0}")]
    Unsupported(&'static str),
    /// The server's answer was malformed.
    #[error("malformed answer from the server: {0}")]
    Protocol(String),
    /// The connection closed before the session was ready.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
}

impl ConnectError {
    /// Whether trying again later may succeed (network, timeout, 5xx, 429), as opposed
    /// to errors that will repeat (bad config, certificate, 4xx).
    pub fn is_retriable(&self) -> bool {
        match self {
            ConnectError::Resolve { .. } | ConnectError::Timeout(_) => true,
            ConnectError::Rejected(s) => *s >= 500 || *s == 429,
            ConnectError::Handshake(msg) => !msg.contains("certificate"),
            ConnectError::ConnectionLost(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// The error for a refused session request; `timeout` is how long the request was
    /// given (what [`RejectReason::Timeout`] means).
    pub(crate) fn from_reject(r: RejectReason, timeout: std::time::Duration) -> Self {
        match r {
            RejectReason::Status(s) => ConnectError::Rejected(s),
            RejectReason::Unsupported(what) => ConnectError::Unsupported(what),
            RejectReason::Timeout => ConnectError::Timeout(timeout),
            RejectReason::Reset(code) => {
                ConnectError::Protocol(format!("request stream reset with {code}"))
            }
            RejectReason::Malformed(m) => ConnectError::Protocol(m),
            RejectReason::GoingAway => ConnectError::ConnectionLost(ConnectionError::GoingAway),
            other => ConnectError::Protocol(format!("{other:?}")),
        }
    }
}

impl From<ConfigError> for ConnectError {
    fn from(e: ConfigError) -> Self {
        ConnectError::Config(e.to_string())
    }
}

impl From<TlsError> for ConnectError {
    fn from(e: TlsError) -> Self {
        ConnectError::Tls(e.to_string())
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// We closed it.
    #[error("closed locally")]
    LocallyClosed,
    /// The peer closed it with an application (HTTP/3) code.
    #[error("closed by peer with {code}: {reason}")]
    ApplicationClosed {
        /// HTTP/3 error code.
        code: Code,
        /// Reason phrase.
        reason: String,
    },
    /// An HTTP/3 protocol error; `remote` says whether the peer detected it.
    #[error("HTTP/3 error {code} ({}): {reason}", if *remote { "by peer" } else { "detected locally" })]
    Protocol {
        /// HTTP/3 error code.
        code: Code,
        /// What went wrong.
        reason: String,
        /// Whether the peer reported it.
        remote: bool,
    },
    /// A QUIC transport error.
    #[error("QUIC transport error: {0}")]
    Transport(String),
    /// No packets for the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The peer reset the connection (stateless reset).
    #[error("connection reset by peer")]
    Reset,
    /// The server is going away (GOAWAY).
    #[error("connection is going away")]
    GoingAway,
}

impl ConnectionError {
    /// Whether a new connection may succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(
            self,
            ConnectionError::LocallyClosed | ConnectionError::Protocol { remote: false, .. }
        )
    }

    pub(crate) fn from_quinn(e: &quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as Q;
        match e {
            Q::LocallyClosed => ConnectionError::LocallyClosed,
            Q::ApplicationClosed(a) => ConnectionError::ApplicationClosed {
                code: Code(a.error_code.into_inner()),
                reason: String::from_utf8_lossy(&a.reason).into_owned(),
            },
            Q::TimedOut => ConnectionError::TimedOut,
            Q::Reset => ConnectionError::Reset,
            other => ConnectionError::Transport(other.to_string()),
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is closed; the code and reason are those of the close.
    #[error("session closed with code {code}: {reason}")]
    Closed {
        /// Application close code.
        code: u32,
        /// Reason.
        reason: String,
        /// Whether the peer closed it.
        remote: bool,
    },
    /// The connection under the session ended.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The session is not established yet.
    #[error("session is not established")]
    NotEstablished,
    /// The close reason is over 1024 bytes.
    #[error("close reason over 1024 bytes")]
    ReasonTooLong,
    /// The operation did not complete within the timeout.
    #[error("timed out")]
    Timeout,
}

impl SessionError {
    /// Whether a new session may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            SessionError::Connection(c) => c.is_retriable(),
            SessionError::Timeout => true,
            _ => false,
        }
    }
}

/// Why a datagram could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// Larger than [`Session::max_datagram_size`](crate::Session::max_datagram_size).
    #[error("datagram of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Current maximum payload.
        max: usize,
    },
    /// The peer does not accept datagrams.
    #[error("peer does not accept datagrams")]
    Unsupported,
    /// The session or connection is closed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl DatagramError {
    /// Whether sending again may succeed.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// Why a stream write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The peer asked us to stop with this WebTransport application code (`None` if the
    /// HTTP/3 code carried no WebTransport code).
    #[error("peer stopped the stream (code {0:?})")]
    Stopped(Option<u32>),
    /// The stream was finished or reset already.
    #[error("stream already closed")]
    ClosedStream,
    /// The session closed; the stream was reset with WT_SESSION_GONE.
    #[error("session is gone")]
    SessionGone,
    /// The connection ended.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

impl WriteError {
    /// Whether writing again may succeed (never: a failed stream stays failed).
    pub fn is_retriable(&self) -> bool {
        false
    }

    pub(crate) fn from_quinn(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => {
                WriteError::Stopped(Code(code.into_inner()).to_wt_app())
            }
            quinn::WriteError::ConnectionLost(c) => {
                WriteError::Connection(ConnectionError::from_quinn(&c))
            }
            quinn::WriteError::ClosedStream => WriteError::ClosedStream,
            quinn::WriteError::ZeroRttRejected => {
                WriteError::Connection(ConnectionError::Transport("0-RTT rejected".into()))
            }
        }
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        let kind = match e {
            WriteError::Stopped(_) | WriteError::SessionGone => io::ErrorKind::ConnectionReset,
            WriteError::ClosedStream => io::ErrorKind::NotConnected,
            WriteError::Connection(_) => io::ErrorKind::ConnectionAborted,
        };
        io::Error::new(kind, e)
    }
}

/// Why a stream read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The peer reset the stream with this WebTransport application code (`None` if the
    /// HTTP/3 code carried no WebTransport code).
    #[error("peer reset the stream (code {0:?})")]
    Reset(Option<u32>),
    /// The stream was stopped or already read to the end.
    #[error("stream already closed")]
    ClosedStream,
    /// The session closed; the stream was stopped with WT_SESSION_GONE.
    #[error("session is gone")]
    SessionGone,
    /// `read_to_end` found more than its limit.
    #[error("stream is longer than the limit of {0} bytes")]
    TooLong(usize),
    /// The stream ended before `read_exact` filled its buffer.
    #[error("stream ended early")]
    FinishedEarly,
    /// The connection ended.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

impl ReadError {
    /// Whether reading again may succeed (never).
    pub fn is_retriable(&self) -> bool {
        false
    }

    pub(crate) fn from_quinn(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => ReadError::Reset(Code(code.into_inner()).to_wt_app()),
            quinn::ReadError::ConnectionLost(c) => {
                ReadError::Connection(ConnectionError::from_quinn(&c))
            }
            quinn::ReadError::ClosedStream => ReadError::ClosedStream,
            quinn::ReadError::IllegalOrderedRead => ReadError::ClosedStream,
            quinn::ReadError::ZeroRttRejected => {
                ReadError::Connection(ConnectionError::Transport("0-RTT rejected".into()))
            }
        }
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        let kind = match e {
            ReadError::Reset(_) | ReadError::SessionGone => io::ErrorKind::ConnectionReset,
            ReadError::ClosedStream => io::ErrorKind::NotConnected,
            ReadError::TooLong(_) => io::ErrorKind::InvalidData,
            ReadError::FinishedEarly => io::ErrorKind::UnexpectedEof,
            ReadError::Connection(_) => io::ErrorKind::ConnectionAborted,
        };
        io::Error::new(kind, e)
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The session is not open.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The peer's stream limit did not grant a stream within the timeout.
    #[error("no stream credit from the peer within {0:?}")]
    Timeout(std::time::Duration),
}

impl OpenStreamError {
    /// Whether trying again may succeed (after a timeout, when the peer grants credit).
    pub fn is_retriable(&self) -> bool {
        matches!(self, OpenStreamError::Timeout(_))
    }
}
