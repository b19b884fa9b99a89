//! Errors, one enum per kind of operation. Each is `Clone`, keeps what caused it as its
//! [`source`](std::error::Error::source), says whether the local or the remote side caused
//! it where that is known, and whether retrying can help ([`is_retriable`]), decided from
//! its type, never from its text.
//!
//! [`is_retriable`]: ConnectError::is_retriable

use std::io;
use std::sync::Arc;
use std::time::Duration;

use webtransport_proto::connection::{MissingSetting, ProtocolError};
use webtransport_proto::headers::HeaderError;
use webtransport_proto::Code;

use crate::config::ConfigError;
use crate::tls::TlsError;

/// TLS alerts that say a certificate was refused (RFC 8446 §6.2): bad_certificate (42),
/// unsupported_certificate (43), certificate_revoked (44), certificate_expired (45),
/// certificate_unknown (46), unknown_ca (48), certificate_required (116).
const CERTIFICATE_ALERTS: [u8; 7] = [42, 43, 44, 45, 46, 48, 116];

/// A QUIC transport error: its code (RFC 9000 §20.1; 0x100-0x1ff carry a TLS alert) and
/// reason, and which side raised it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("QUIC transport error {code:#x} ({}): {reason}", if *remote { "from peer" } else { "detected locally" })]
pub struct TransportError {
    /// The transport error code.
    pub code: u64,
    /// The reason phrase.
    pub reason: String,
    /// Whether the peer sent it.
    pub remote: bool,
}

impl TransportError {
    /// The TLS alert this error carries (a code of `0x100 + alert`), if any.
    pub fn tls_alert(&self) -> Option<u8> {
        (self.code & !0xff == 0x100).then_some((self.code & 0xff) as u8)
    }

    /// Whether it says a certificate was refused.
    pub fn is_certificate(&self) -> bool {
        self.tls_alert()
            .is_some_and(|a| CERTIFICATE_ALERTS.contains(&a))
    }
}

/// Why the QUIC handshake did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A certificate was refused: the server's by our verification (`remote: false`), or
    /// ours by the server. Retrying does not help.
    #[error("certificate refused")]
    Certificate(#[source] TransportError),
    /// TLS failed for another reason (no common ALPN or cipher suite, say).
    #[error("TLS handshake failed")]
    Tls(#[source] TransportError),
    /// Another QUIC transport error.
    #[error("QUIC handshake failed")]
    Transport(#[source] TransportError),
    /// The server refused the connection (CONNECTION_REFUSED: it is at capacity or
    /// shutting down).
    #[error("server refused the connection")]
    Refused,
    /// The server stopped answering during the handshake (QUIC idle timeout).
    #[error("server stopped answering during the handshake")]
    TimedOut,
    /// The server name cannot be used for TLS.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// The connection could not even start (endpoint stopping, no QUIC version in
    /// common, invalid remote address).
    #[error("could not start the QUIC handshake: {0}")]
    NotStarted(String),
    /// The connection ended otherwise during the handshake.
    #[error("connection lost during the handshake")]
    Lost(#[source] ConnectionError),
}

impl HandshakeError {
    /// Whether a new attempt may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            HandshakeError::Certificate(_)
            | HandshakeError::Tls(_)
            | HandshakeError::InvalidServerName(_) => false,
            HandshakeError::Lost(e) => e.is_retriable(),
            _ => true,
        }
    }
}

/// Why a connection or a session did not come up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[source] Arc<ConfigError>),
    /// The URL could not be used.
    #[error("invalid URL {url:?}: {why}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The host name did not resolve.
    #[error("could not resolve {host}")]
    Resolve {
        /// Host name.
        host: String,
        /// Resolver error (`None`: it resolved to no address).
        #[source]
        source: Option<Arc<io::Error>>,
    },
    /// Setting up TLS failed (certificate files, verifier).
    #[error("TLS setup")]
    Tls(#[source] Arc<TlsError>),
    /// Binding the local UDP socket failed.
    #[error("could not bind a UDP socket")]
    Bind(#[source] Arc<io::Error>),
    /// The QUIC handshake failed.
    #[error("QUIC handshake")]
    Handshake(#[source] HandshakeError),
    /// The connect took longer than the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The server refused the session with an HTTP status.
    #[error("server refused the session with status {0}")]
    Rejected(u16),
    /// The server does not offer WebTransport.
    #[error("server does not support WebTransport: missing {0}")]
    Unsupported(MissingSetting),
    /// The server reset the request stream with this HTTP/3 code (H3_REQUEST_REJECTED:
    /// its session limit).
    #[error("server reset the request with {0}")]
    RequestReset(Code),
    /// The server's answer was malformed.
    #[error("malformed answer from the server")]
    MalformedResponse(#[source] HeaderError),
    /// The server finished the request stream without answering.
    #[error("server ended the request without an answer")]
    NoResponse,
    /// The session request was cancelled on this side (or every handle of a connection
    /// still connecting was dropped).
    #[error("cancelled")]
    Cancelled,
    /// Called outside a tokio runtime, where it must spawn a task.
    #[error("must be called inside a tokio runtime")]
    NoRuntime,
    /// The connection closed before the session was ready.
    #[error("connection lost")]
    ConnectionLost(#[source] ConnectionError),
}

impl ConnectError {
    /// Whether trying again later may succeed (network, timeout, 5xx, 429, a server at
    /// its session limit), as opposed to errors that will repeat (configuration,
    /// certificate, 4xx, a server without WebTransport).
    pub fn is_retriable(&self) -> bool {
        match self {
            ConnectError::Resolve { .. } | ConnectError::Timeout(_) => true,
            ConnectError::Rejected(s) => *s >= 500 || *s == 429,
            ConnectError::RequestReset(code) => *code == Code::H3_REQUEST_REJECTED,
            ConnectError::NoResponse => true,
            ConnectError::Handshake(h) => h.is_retriable(),
            ConnectError::ConnectionLost(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// Whether the fault is the server's or the path's (as opposed to this side's
    /// configuration): what a load balancer counts against a target.
    pub fn is_target_fault(&self) -> bool {
        !matches!(
            self,
            ConnectError::Config(_)
                | ConnectError::Tls(_)
                | ConnectError::InvalidUrl { .. }
                | ConnectError::Bind(_)
                | ConnectError::Cancelled
                | ConnectError::NoRuntime
        )
    }
}

impl From<ConfigError> for ConnectError {
    fn from(e: ConfigError) -> Self {
        ConnectError::Config(Arc::new(e))
    }
}

impl From<TlsError> for ConnectError {
    fn from(e: TlsError) -> Self {
        ConnectError::Tls(Arc::new(e))
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// This side closed it.
    #[error("closed locally")]
    LocallyClosed,
    /// The peer closed it without an error (H3_NO_ERROR, or 0, which peers that simply
    /// drop their connection send).
    #[error("closed by peer: {reason}")]
    ApplicationClosed {
        /// HTTP/3 code.
        code: Code,
        /// Reason phrase.
        reason: String,
    },
    /// The peer closed it reporting an HTTP/3 error it detected.
    #[error("closed by peer with {code}: {reason}")]
    PeerError {
        /// HTTP/3 error code.
        code: Code,
        /// Reason phrase.
        reason: String,
    },
    /// This side closed it for an HTTP/3 error the peer committed.
    #[error("HTTP/3 protocol error {}", .0.code())]
    Protocol(#[source] ProtocolError),
    /// A QUIC transport error.
    #[error("QUIC transport error")]
    Transport(#[source] TransportError),
    /// No packets for the idle timeout.
    #[error("idle timeout")]
    TimedOut,
    /// The peer reset the connection (stateless reset).
    #[error("connection reset by peer")]
    Reset,
    /// No QUIC version in common.
    #[error("no QUIC version in common with the peer")]
    VersionMismatch,
    /// The server is going away (GOAWAY).
    #[error("connection is going away")]
    GoingAway,
}

impl ConnectionError {
    /// Whether a new connection may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ConnectionError::LocallyClosed
            | ConnectionError::Protocol(_)
            | ConnectionError::VersionMismatch => false,
            ConnectionError::Transport(t) => !t.is_certificate(),
            _ => true,
        }
    }

    /// The HTTP/3 code the connection was closed with, when one is known.
    pub fn code(&self) -> Option<Code> {
        match self {
            ConnectionError::ApplicationClosed { code, .. }
            | ConnectionError::PeerError { code, .. } => Some(*code),
            ConnectionError::Protocol(e) => Some(e.code()),
            _ => None,
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The session's CONNECT stream was reset, by the peer or by this side for a session
    /// error (WT_FLOW_CONTROL_ERROR, H3_MESSAGE_ERROR).
    #[error("session aborted with {code} ({})", if *remote { "by peer" } else { "locally" })]
    Aborted {
        /// HTTP/3 error code.
        code: Code,
        /// Whether the peer reset it.
        remote: bool,
    },
    /// The session never opened.
    #[error("session did not open")]
    NotOpened(#[source] Box<ConnectError>),
    /// The connection under the session ended.
    #[error("connection lost")]
    Connection(#[source] ConnectionError),
    /// The session is not established yet.
    #[error("session is not established")]
    NotEstablished,
    /// The session ended so long ago that nothing is remembered of it.
    #[error("session is gone and forgotten")]
    Unknown,
    /// The close reason is over 1024 bytes.
    #[error("close reason over 1024 bytes")]
    ReasonTooLong,
    /// The operation did not complete within the timeout.
    #[error("timed out")]
    Timeout,
}

impl From<ConnectionError> for SessionError {
    fn from(e: ConnectionError) -> Self {
        SessionError::Connection(e)
    }
}

impl SessionError {
    /// Whether a new session may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            SessionError::Connection(c) => c.is_retriable(),
            SessionError::NotOpened(e) => e.is_retriable(),
            SessionError::Timeout => true,
            _ => false,
        }
    }
}

/// Why a datagram could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Whether sending again may succeed (never: a datagram too large stays too large).
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
    #[error("connection lost")]
    Connection(#[source] ConnectionError),
}

impl WriteError {
    /// Whether writing again may succeed (never: a failed stream stays failed).
    pub fn is_retriable(&self) -> bool {
        false
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
    #[error("connection lost")]
    Connection(#[source] ConnectionError),
}

impl ReadError {
    /// Whether reading again may succeed (never).
    pub fn is_retriable(&self) -> bool {
        false
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
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The session is not open.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Neither the peer's QUIC stream limit nor its WT_MAX_STREAMS granted a stream within
    /// the timeout.
    #[error("no stream credit from the peer within {0:?}")]
    Timeout(Duration),
}

impl OpenStreamError {
    /// Whether trying again may succeed (after a timeout, when the peer grants credit).
    pub fn is_retriable(&self) -> bool {
        matches!(self, OpenStreamError::Timeout(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(code: u64, remote: bool) -> TransportError {
        TransportError {
            code,
            reason: String::new(),
            remote,
        }
    }

    #[test]
    fn retriability_follows_the_type() {
        let cert = ConnectError::Handshake(HandshakeError::Certificate(transport(0x12a, false)));
        assert!(!cert.is_retriable());
        let tls = ConnectError::Handshake(HandshakeError::Tls(transport(0x178, true)));
        assert!(!tls.is_retriable());
        assert!(ConnectError::Handshake(HandshakeError::Refused).is_retriable());
        assert!(
            ConnectError::Handshake(HandshakeError::Transport(transport(0xa, true))).is_retriable()
        );
        assert!(ConnectError::Timeout(Duration::from_secs(1)).is_retriable());
        assert!(ConnectError::Rejected(503).is_retriable());
        assert!(ConnectError::Rejected(429).is_retriable());
        assert!(!ConnectError::Rejected(404).is_retriable());
        assert!(ConnectError::RequestReset(Code::H3_REQUEST_REJECTED).is_retriable());
        assert!(!ConnectError::Unsupported(MissingSetting::WebTransport).is_retriable());
        assert!(ConnectError::ConnectionLost(ConnectionError::TimedOut).is_retriable());
        assert!(!ConnectError::ConnectionLost(ConnectionError::LocallyClosed).is_retriable());
    }

    #[test]
    fn certificate_alerts_are_recognised() {
        assert_eq!(transport(0x12a, false).tls_alert(), Some(42));
        assert!(transport(0x12a, false).is_certificate());
        assert!(transport(0x130, true).is_certificate(), "unknown_ca");
        assert!(
            !transport(0x178, true).is_certificate(),
            "no_application_protocol"
        );
        assert_eq!(transport(0xa, true).tls_alert(), None);
    }

    #[test]
    fn sources_chain_to_the_cause() {
        let e = ConnectError::Handshake(HandshakeError::Certificate(TransportError {
            code: 0x12a,
            reason: "invalid peer certificate: UnknownIssuer".into(),
            remote: false,
        }));
        let mut chain = Vec::new();
        let mut cur: Option<&dyn std::error::Error> = Some(&e);
        while let Some(c) = cur {
            chain.push(c.to_string());
            cur = c.source();
        }
        assert_eq!(chain.len(), 3, "{chain:?}");
        assert!(chain[2].contains("UnknownIssuer"));
    }
}
