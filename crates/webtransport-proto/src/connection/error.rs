//! [`ProtocolError`]: why the core closes a connection, typed so that callers can branch on
//! it, with the parse error that caused it as its source and the HTTP/3 code it sends.

use crate::datagram::DatagramError;
use crate::error::Code;
use crate::frame::FrameError;
use crate::qpack::QpackError;
use crate::stream_header;

/// A connection error: the core closes the QUIC connection with [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame that cannot be parsed, or is too large.
    #[error("malformed frame")]
    Frame(#[from] FrameError),
    /// A field section or QPACK stream instruction that cannot be decoded.
    #[error("QPACK")]
    Qpack(#[from] QpackError),
    /// An HTTP datagram that cannot be parsed.
    #[error("malformed HTTP datagram")]
    Datagram(#[from] DatagramError),
    /// A stream preamble that names something impossible.
    #[error("stream header")]
    StreamHeader(#[from] stream_header::HeaderError),
    /// A rule of HTTP/3 broken by the peer.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// The application closed the connection with this code.
    #[error("closed by the application with {code}: {reason}")]
    Local {
        /// HTTP/3 error code.
        code: Code,
        /// Reason phrase.
        reason: String,
    },
}

impl ProtocolError {
    /// The HTTP/3 error code the connection is closed with.
    pub fn code(&self) -> Code {
        match self {
            ProtocolError::Frame(e) => e.code(),
            ProtocolError::Qpack(e) => e.code(),
            ProtocolError::StreamHeader(e) => e.code(),
            ProtocolError::Datagram(e) => e.code(),
            ProtocolError::Violation(v) => v.code(),
            ProtocolError::Local { code, .. } => *code,
        }
    }

    /// The reason phrase sent in CONNECTION_CLOSE: the error and its sources.
    pub fn reason(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// One of the peer's HTTP/3 streams that must stay open for the connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CriticalStream {
    /// The control stream.
    Control,
    /// The QPACK encoder stream.
    QpackEncoder,
    /// The QPACK decoder stream.
    QpackDecoder,
}

impl std::fmt::Display for CriticalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CriticalStream::Control => "control",
            CriticalStream::QpackEncoder => "QPACK encoder",
            CriticalStream::QpackDecoder => "QPACK decoder",
        })
    }
}

/// How a critical stream was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Closure {
    /// The peer finished it.
    Finished,
    /// The peer reset it with this code.
    Reset(Code),
    /// The peer stopped ours with this code.
    Stopped(Code),
}

/// Where a frame was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FramePlace {
    /// The control stream.
    ControlStream,
    /// A request (CONNECT) stream, before its HEADERS.
    BeforeHeaders,
    /// A request (CONNECT) stream.
    RequestStream,
}

/// A rule of HTTP/3 (RFC 9114) the peer broke; each names its error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// RFC 9114 §6.1: a server opened a bidirectional stream that is not WebTransport.
    #[error("server opened bidirectional stream {0} that is not WebTransport")]
    ServerBidiStream(u64),
    /// RFC 9114 §6.2.1, RFC 9204 §4.2: a second control or QPACK stream.
    #[error("second {kind} stream {stream}")]
    DuplicateCriticalStream {
        /// Which.
        kind: CriticalStream,
        /// Its id.
        stream: u64,
    },
    /// RFC 9114 §6.2.1, RFC 9204 §4.2: a critical stream closed.
    #[error("{kind} stream closed ({how:?})")]
    CriticalStreamClosed {
        /// Which.
        kind: CriticalStream,
        /// How.
        how: Closure,
    },
    /// RFC 9114 §6.2.2: a push stream from a client.
    #[error("push stream {0} from a client")]
    PushStreamFromClient(u64),
    /// RFC 9114 §6.2.2 and §4.6: a push stream although we never sent MAX_PUSH_ID.
    #[error("push stream {0} without MAX_PUSH_ID")]
    PushWithoutMaxPushId(u64),
    /// RFC 9114 §6.2.1: the control stream did not start with SETTINGS.
    #[error("first control frame is type {0:#x}, not SETTINGS")]
    MissingSettings(u64),
    /// RFC 9114 §7.2: a frame type not allowed where it came.
    #[error("frame type {frame:#x} not allowed on the {place:?}")]
    FrameUnexpected {
        /// The frame type.
        frame: u64,
        /// Where it came.
        place: FramePlace,
    },
    /// RFC 9114 §7.1: a stream ended inside a frame.
    #[error("stream {0} ended inside a frame")]
    TruncatedFrame(u64),
    /// RFC 9114 §7.2.7: MAX_PUSH_ID decreased.
    #[error("MAX_PUSH_ID decreased to {0}")]
    MaxPushIdDecreased(u64),
    /// RFC 9114 §7.2.3: CANCEL_PUSH for a push id never allowed.
    #[error("CANCEL_PUSH for push id {0}, which was never allowed")]
    CancelPush(u64),
    /// RFC 9114 §5.2: a GOAWAY from a server that does not carry a client-initiated
    /// bidirectional stream id.
    #[error("GOAWAY id {0} is not a client bidirectional stream id")]
    GoawayNotRequestId(u64),
    /// RFC 9114 §5.2: a GOAWAY id larger than an earlier one.
    #[error("GOAWAY id grew to {0}")]
    GoawayIncreased(u64),
    /// draft-ietf-webtrans-http3-16 §3.1 (kept in -17): a server's SETTINGS_WT_ENABLED (draft-17
    /// codepoint) above 1.
    #[error("server's WT_ENABLED {id:#x} is {value}, not 0 or 1")]
    WtEnabledValue {
        /// The setting identifier.
        id: u64,
        /// The value received.
        value: u64,
    },
}

impl Violation {
    /// The HTTP/3 error code RFC 9114 names for it.
    pub fn code(&self) -> Code {
        match self {
            Violation::ServerBidiStream(_)
            | Violation::DuplicateCriticalStream { .. }
            | Violation::PushStreamFromClient(_) => Code::H3_STREAM_CREATION_ERROR,
            Violation::CriticalStreamClosed { .. } => Code::H3_CLOSED_CRITICAL_STREAM,
            Violation::MissingSettings(_) => Code::H3_MISSING_SETTINGS,
            Violation::FrameUnexpected { .. } => Code::H3_FRAME_UNEXPECTED,
            Violation::TruncatedFrame(_) => Code::H3_FRAME_ERROR,
            Violation::PushWithoutMaxPushId(_)
            | Violation::MaxPushIdDecreased(_)
            | Violation::CancelPush(_)
            | Violation::GoawayNotRequestId(_)
            | Violation::GoawayIncreased(_) => Code::H3_ID_ERROR,
            Violation::WtEnabledValue { .. } => Code::H3_SETTINGS_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons_carry_the_source() {
        let e = ProtocolError::from(FrameError::Http2Frame(0x2));
        assert_eq!(e.code(), Code::H3_FRAME_UNEXPECTED);
        assert!(
            e.reason().contains("HTTP/2 frame type 0x2"),
            "{}",
            e.reason()
        );
        let v = ProtocolError::from(Violation::MissingSettings(0x1));
        assert_eq!(v.code(), Code::H3_MISSING_SETTINGS);
        let l = ProtocolError::Local {
            code: Code::H3_EXCESSIVE_LOAD,
            reason: "too much".into(),
        };
        assert_eq!(l.code(), Code::H3_EXCESSIVE_LOAD);
    }
}
