//! The state machine's public types: configuration, inputs' answers, outputs, errors.

use bytes::Bytes;
use std::time::Duration;

use crate::error::Code;
use crate::headers::{ConnectRequest, ConnectResponse, HeaderError};
use crate::settings::{Settings, WtDraft, WtDrafts};
use crate::stream_header::SessionId;

use super::error::ProtocolError;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Opens sessions with extended CONNECT.
    Client,
    /// Accepts or rejects sessions.
    Server,
}

/// How capsules are written on a CONNECT stream.
///
/// HTTP/3 carries capsules inside DATA frames. pywebtransport 0.8.1 writes them bare and
/// closes the connection with H3_FRAME_UNEXPECTED when it receives a framed one
/// (docs/protocol.md), so a stack that wants to reach it must write them bare too.
/// Capsules are read in both forms whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CapsuleFraming {
    /// Framed, until the peer shows that it wants them bare: a server that announces only
    /// the draft-13/14 setting (neither draft-02's nor draft-15's); a client that does so
    /// and also sends ENABLE_CONNECT_PROTOCOL, or whose `user-agent` is
    /// `pywebtransport/0.8.x`; or any peer that sent a bare capsule itself.
    #[default]
    Auto,
    /// Always inside DATA frames (RFC 9297 §3.2 over HTTP/3).
    Framed,
    /// Always bare.
    Unframed,
}

/// The session-level flow-control windows one side gives its peer, per session
/// (draft-ietf-webtrans-http3 §5). Announced as SETTINGS_WT_INITIAL_MAX_DATA /
/// _STREAMS_BIDI / _STREAMS_UNI and kept open as the application reads and closes
/// streams. All zero: this side does not take part in flow control (the settings are not
/// sent), and flow control stays off for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowLimits {
    /// Stream payload bytes the peer may send in a session beyond what was read.
    pub max_data: u64,
    /// Bidirectional streams the peer may have open in a session.
    pub max_streams_bidi: u64,
    /// Unidirectional streams the peer may have open in a session.
    pub max_streams_uni: u64,
}

impl FlowLimits {
    /// No flow control.
    pub const OFF: FlowLimits = FlowLimits {
        max_data: 0,
        max_streams_bidi: 0,
        max_streams_uni: 0,
    };

    /// Whether these limits declare the intent to use flow control (draft-ietf-webtrans-http3
    /// §5.1: any of the three settings non-zero).
    pub fn enabled(&self) -> bool {
        *self != FlowLimits::OFF
    }

    /// The limits a peer's SETTINGS announce (absent settings are 0).
    pub fn from_settings(settings: &Settings) -> FlowLimits {
        use crate::settings::id;
        FlowLimits {
            max_data: settings.get(id::WT_INITIAL_MAX_DATA).unwrap_or(0),
            max_streams_bidi: settings.get(id::WT_INITIAL_MAX_STREAMS_BIDI).unwrap_or(0),
            max_streams_uni: settings.get(id::WT_INITIAL_MAX_STREAMS_UNI).unwrap_or(0),
        }
    }

    pub(super) fn streams(&self, bidi: bool) -> u64 {
        if bidi {
            self.max_streams_bidi
        } else {
            self.max_streams_uni
        }
    }
}

impl Default for FlowLimits {
    /// 16 MiB of data (the default QUIC connection window) and 256 streams of each kind.
    fn default() -> Self {
        FlowLimits {
            max_data: 16 * 1024 * 1024,
            max_streams_bidi: 256,
            max_streams_uni: 256,
        }
    }
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
    /// Most incoming streams of one session handed to the application but not yet taken
    /// by it ([`Connection::stream_accepted`](super::Connection::stream_accepted)); more
    /// are refused with WT_BUFFERED_STREAM_REJECTED.
    pub max_queued_streams: usize,
    /// How long a stream or datagram may wait for its session before it is refused.
    pub pending_timeout: Duration,
    /// How long a client waits for the answer to its CONNECT request.
    pub session_timeout: Duration,
    /// Ended sessions remembered (their end, so late streams for them are refused with
    /// WT_SESSION_GONE rather than buffered, and callers can ask how they ended).
    pub closed_session_memory: usize,
    /// How capsules are written.
    pub capsule_framing: CapsuleFraming,
    /// The flow-control windows we give the peer in each session.
    pub flow: FlowLimits,
    /// The WebTransport drafts we offer: their codepoints go in our SETTINGS, and the
    /// draft spoken is the newest one both sides offer. Default: all of them.
    pub drafts: WtDrafts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_sessions: 16,
            max_field_section_size: 16 * 1024,
            max_capsule_size: 8 * 1024,
            max_pending_streams: 32,
            max_pending_datagrams: 64,
            max_queued_streams: 256,
            pending_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(10),
            closed_session_memory: 64,
            capsule_framing: CapsuleFraming::Auto,
            flow: FlowLimits::default(),
            drafts: WtDrafts::ALL,
        }
    }
}

/// A QUIC varint that may be absent (a stream or push id the connection has seen or
/// sent), in 8 bytes where an `Option<u64>` takes 16: `u64::MAX`, above every varint
/// (RFC 9000 §16), stands for none.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct MaybeVarint(u64);

impl MaybeVarint {
    pub(crate) const NONE: Self = MaybeVarint(u64::MAX);

    pub(crate) fn get(self) -> Option<u64> {
        (self.0 != u64::MAX).then_some(self.0)
    }

    /// Sets it to `v`, which is not `u64::MAX` (the caller's values are varints, or a
    /// varint plus a few).
    pub(crate) fn set(&mut self, v: u64) {
        debug_assert_ne!(v, u64::MAX);
        self.0 = v;
    }
}

impl std::fmt::Debug for MaybeVarint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
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
    /// It is an HTTP/3 request stream: keep feeding it, and from now on its sending half
    /// belongs to the core (answers come as [`Action::Write`] on it). Said once per stream.
    Request,
    /// It is a WebTransport stream: read it yourself from now on (the bytes already fed
    /// after its preamble come with [`Event::IncomingStream`]).
    Detach,
    /// Stop reading it; the core has no further use for its bytes.
    Done,
}

/// One half of a WebTransport stream, as the application holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamHalf {
    /// The sending half: finished, reset, or dropped.
    Send,
    /// The receiving half: read to its end, reset by the peer, stopped, or dropped.
    Recv,
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

/// A setting a server must send for a client to open sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissingSetting {
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 9220).
    ConnectProtocol,
    /// SETTINGS_H3_DATAGRAM (RFC 9297).
    Datagrams,
    /// Any of the WebTransport settings of the drafts we speak.
    WebTransport,
}

impl std::fmt::Display for MissingSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MissingSetting::ConnectProtocol => "ENABLE_CONNECT_PROTOCOL",
            MissingSetting::Datagrams => "H3_DATAGRAM",
            MissingSetting::WebTransport => "a WebTransport setting",
        })
    }
}

/// Why a client's session did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The server answered with a status outside 2xx.
    #[error("server answered with status {0}")]
    Status(u16),
    /// The server's SETTINGS do not offer WebTransport.
    #[error("server does not support WebTransport: missing {0}")]
    Unsupported(MissingSetting),
    /// No answer came within the session timeout.
    #[error("no answer within the session timeout")]
    Timeout,
    /// The request stream was reset, with this code.
    #[error("request stream reset with {0}")]
    Reset(Code),
    /// The answer was malformed.
    #[error("malformed response")]
    Malformed(#[source] HeaderError),
    /// The request stream ended without an answer.
    #[error("request stream ended without a response")]
    NoResponse,
    /// The server sent GOAWAY before answering.
    #[error("server is going away (GOAWAY)")]
    GoingAway,
    /// The connection closed before an answer came.
    #[error("connection closed before an answer")]
    ConnectionClosed,
    /// This side cancelled the request.
    #[error("cancelled")]
    Cancelled,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// Closed by a CLOSE_WEBTRANSPORT_SESSION capsule, or by a FIN on the CONNECT stream
    /// (code 0, empty reason; draft-ietf-webtrans-http3 §6).
    Closed {
        /// Application error code.
        code: u32,
        /// Reason.
        reason: String,
        /// Whether the peer closed it.
        remote: bool,
    },
    /// The CONNECT stream was reset: by the peer, or by this side for a session error
    /// (a flow-control violation, a malformed capsule).
    Aborted {
        /// HTTP/3 error code.
        code: Code,
        /// Whether the peer reset it.
        remote: bool,
    },
    /// (Client) the session never opened.
    Rejected {
        /// Why.
        reason: RejectReason,
        /// The response, if one came.
        response: Option<ConnectResponse>,
    },
    /// (Server) the request was answered with a non-2xx status.
    Refused {
        /// The status sent.
        status: u16,
    },
    /// (Server) the client gave up on its request before it was answered.
    Withdrawn,
    /// The connection closed under it.
    ConnectionClosed,
}

/// Where a session stands, from [`Connection::session_status`](super::Connection::session_status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus<'a> {
    /// Requested and not answered yet.
    Pending,
    /// Open for streams and datagrams.
    Established {
        /// The peer asked to wind it down.
        draining: bool,
    },
    /// Over.
    Ended(&'a SessionEnd),
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
        /// Whether session-level flow control is in effect.
        flow_control: bool,
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
    /// The session is over (see [`SessionEnd`]); its streams were reset and stopped with
    /// WT_SESSION_GONE by the actions that came with this event.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// How.
        end: SessionEnd,
    },
    /// An ended session dropped out of the core's memory
    /// ([`Config::closed_session_memory`]): forget what you keep about it.
    SessionForgotten {
        /// The session.
        session: SessionId,
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
    /// The peer raised a flow-control limit of the session: writers and stream openers
    /// that were blocked may try again.
    SessionCredit {
        /// The session.
        session: SessionId,
    },
    /// The peer sent GOAWAY with this id.
    GoAway {
        /// Stream id (from a server) or push id (from a client).
        id: u64,
    },
    /// A connection error: the connection is closed with its code.
    ConnectionError {
        /// What went wrong.
        error: ProtocolError,
    },
}

/// An application command that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such session, or it is over.
    #[error("session {0} is not open")]
    NotOpen(SessionId),
    /// The session is not established (yet, or any more).
    #[error("session {0} is not established")]
    NotEstablished(SessionId),
    /// Too many sessions on this connection.
    #[error("session limit of {0} reached")]
    TooManySessions(u64),
    /// The stream id cannot be used for this.
    #[error("stream {0} cannot be used for this")]
    BadStream(u64),
    /// The stream is not a live WebTransport stream the core knows.
    #[error("stream {0} is not a live WebTransport stream")]
    UnknownStream(u64),
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
    /// The peer's WT_MAX_STREAMS allows no further stream of this kind yet.
    #[error("stream limit of {limit} reached in session {session}")]
    StreamsBlocked {
        /// The session.
        session: SessionId,
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// The peer's current limit.
        limit: u64,
    },
}

/// What the core holds for the peer at one moment, from
/// [`Connection::buffered`](super::Connection::buffered). Every part has a cap in
/// [`Config`] (or in [`FrameLimits`](crate::frame::FrameLimits)); this is how a caller
/// sees that the caps hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffered {
    /// WebTransport streams waiting for their session ([`Config::max_pending_streams`]).
    pub pending_streams: usize,
    /// Datagrams waiting for their session ([`Config::max_pending_datagrams`]).
    pub pending_datagrams: usize,
    /// Request streams whose HEADERS frame has not come whole yet.
    pub partial_requests: usize,
    /// Bytes held in all: stream preambles, HTTP/3 frames and capsules not yet complete,
    /// the payload that came with early streams, early datagrams.
    pub bytes: usize,
}

/// Counters of what the core refused, dropped, or found wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams dropped (no room in the pending buffer, unknown or closed session).
    pub datagrams_dropped: u64,
    /// Streams refused with WT_BUFFERED_STREAM_REJECTED.
    pub streams_rejected: u64,
    /// Streams refused or reset with WT_SESSION_GONE.
    pub streams_gone: u64,
    /// Sessions refused by the limit.
    pub sessions_refused: u64,
    /// Errors detected here or reported by the peer: connection errors, sessions aborted
    /// or rejected, malformed requests, flow-control violations.
    pub errors: u64,
    /// Times this side was blocked by the peer's flow-control limits.
    pub flow_blocked: u64,
}

#[cfg(test)]
mod tests {
    use super::MaybeVarint;

    #[test]
    fn maybe_varint_holds_every_varint_and_none() {
        let mut v = MaybeVarint::NONE;
        assert_eq!(v.get(), None);
        assert_eq!(format!("{v:?}"), "None");
        for x in [0, 4, (1 << 62) - 1, (1 << 62) + 3] {
            v.set(x);
            assert_eq!(v.get(), Some(x));
        }
        assert_eq!(std::mem::size_of::<MaybeVarint>(), 8);
    }
}
