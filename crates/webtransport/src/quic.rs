//! Every conversion between quinn's types and ours, in one place: error codes, quinn's
//! connection, read and write errors, and the handshake's failures. (The congestion
//! controller we wrap around quinn's is in `congestion.rs`, which `config` uses, so that
//! this module, which needs `error`, stays above `config`.)

use webtransport_proto::Code;

use crate::error::{ConnectionError, HandshakeError, ReadError, TransportError, WriteError};

/// An HTTP/3 code as quinn's varint (codes above 2^62 - 1 cannot exist on the wire).
pub(crate) fn quinn_code(code: Code) -> quinn::VarInt {
    quinn::VarInt::from_u64(code.0).unwrap_or(quinn::VarInt::MAX)
}

/// quinn's varint as an HTTP/3 code.
pub(crate) fn h3_code(v: quinn::VarInt) -> Code {
    Code(v.into_inner())
}

impl HandshakeError {
    pub(crate) fn from_quinn(e: &quinn::ConnectionError) -> Self {
        Self::from_connection(ConnectionError::from_quinn(e))
    }

    /// A connection that ended before it was set up: a TLS or transport failure is the
    /// handshake's, anything else lost it.
    pub(crate) fn from_connection(e: ConnectionError) -> Self {
        match e {
            ConnectionError::Transport(t) if t.code == 0x2 && t.remote => HandshakeError::Refused,
            ConnectionError::Transport(t) if t.is_certificate() => HandshakeError::Certificate(t),
            ConnectionError::Transport(t) if t.tls_alert().is_some() => HandshakeError::Tls(t),
            ConnectionError::Transport(t) => HandshakeError::Transport(t),
            ConnectionError::TimedOut => HandshakeError::TimedOut,
            other => HandshakeError::Lost(other),
        }
    }

    pub(crate) fn from_quinn_connect(e: quinn::ConnectError) -> Self {
        match e {
            quinn::ConnectError::InvalidServerName(name) => HandshakeError::InvalidServerName(name),
            other => HandshakeError::NotStarted(other.to_string()),
        }
    }
}

impl ConnectionError {
    /// The mapping of quinn's errors.
    pub(crate) fn from_quinn(e: &quinn::ConnectionError) -> Self {
        use quinn::ConnectionError as Q;
        match e {
            Q::LocallyClosed => ConnectionError::LocallyClosed,
            Q::ApplicationClosed(a) => {
                let code = Code(a.error_code.into_inner());
                let reason = String::from_utf8_lossy(&a.reason).into_owned();
                // 0 is not an HTTP/3 code, but aioquic-based peers and quinn-based ones
                // that simply drop their connection close with it: a clean close too.
                if code == Code::H3_NO_ERROR || code == Code(0) {
                    ConnectionError::ApplicationClosed { code, reason }
                } else {
                    ConnectionError::PeerError { code, reason }
                }
            }
            Q::ConnectionClosed(c) => ConnectionError::Transport(TransportError {
                code: u64::from(c.error_code),
                reason: String::from_utf8_lossy(&c.reason).into_owned(),
                remote: true,
            }),
            Q::TransportError(t) => ConnectionError::Transport(TransportError {
                code: u64::from(t.code),
                reason: t.reason.clone(),
                remote: false,
            }),
            Q::TimedOut => ConnectionError::TimedOut,
            Q::Reset => ConnectionError::Reset,
            Q::VersionMismatch => ConnectionError::VersionMismatch,
            Q::CidsExhausted => ConnectionError::Transport(TransportError {
                code: 0x1,
                reason: "connection ids exhausted".into(),
                remote: false,
            }),
        }
    }
}

impl WriteError {
    pub(crate) fn from_quinn(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => WriteError::Stopped(h3_code(code).to_wt_app()),
            quinn::WriteError::ConnectionLost(c) => {
                WriteError::Connection(ConnectionError::from_quinn(&c))
            }
            quinn::WriteError::ClosedStream => WriteError::ClosedStream,
            // We never send 0-RTT data, so quinn cannot reject it.
            quinn::WriteError::ZeroRttRejected => WriteError::ClosedStream,
        }
    }
}

impl ReadError {
    pub(crate) fn from_quinn(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => ReadError::Reset(h3_code(code).to_wt_app()),
            quinn::ReadError::ConnectionLost(c) => {
                ReadError::Connection(ConnectionError::from_quinn(&c))
            }
            quinn::ReadError::ClosedStream | quinn::ReadError::IllegalOrderedRead => {
                ReadError::ClosedStream
            }
            quinn::ReadError::ZeroRttRejected => ReadError::ClosedStream,
        }
    }
}
