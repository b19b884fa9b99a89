//! The Devious Baton protocol, the WebTransport interoperability test application: a
//! server ([`serve`]) and a client ([`run_client`]) written on the public API only.
//!
//! # Source
//!
//! draft-frindell-webtrans-devious-baton-00 (A. Frindell, July 2023; protocol version 0),
//! the only revision published. Read from the draft's source repository
//! (`github.com/afrind/draft-frindell-webtrans-devious-baton`, file
//! `draft-frindell-webtrans-devious-baton.md` at the merge of 10 July 2023, the text
//! submitted as -00) and checked against the -00 HTML copies in the IETF draft archive.
//! Section numbers below are those of -00.
//!
//! # The protocol
//!
//! * **Session** (§3): the client opens a session on [`PATH`] (RECOMMENDED for interop) with
//!   the query parameters `version` (default 0), `count` (batons in parallel, default 1,
//!   positive) and `baton` (the initial value of every baton, 1..=255; absent: the server
//!   picks one at random). A version the server does not speak, an invalid baton or a
//!   count over what the server runs MUST be rejected with a 4xx; this server uses 400.
//! * **Setup** (§4.1): the server opens one unidirectional stream per baton and sends a
//!   Baton message with the initial value on each, then FIN.
//! * **Message** (§4.3): `padding length (varint) | padding | baton (1 byte)`; one message
//!   per stream, then FIN.
//! * **Passing** (§4.2): on a message with value `v` ≠ 0 an endpoint MUST send `v + 1 mod
//!   256`, then FIN: on a new bidirectional stream if `v` came on a unidirectional stream;
//!   on the same stream if it came on a bidirectional stream the peer opened; on a new
//!   unidirectional stream if it came on a bidirectional stream it opened itself. A value
//!   of 0 ends that baton. With the same initial value for all batons, a baton goes
//!   `server uni → client bidi → server reply → client uni → server bidi → client reply →`
//!   and round again.
//! * **Datagrams** (§4.4): a client that receives a message with `v mod 7 = 1`, and a
//!   server that receives one with `v mod 7 = 0`, sends the same message in a datagram
//!   (padding cut to fit).
//! * **End** (§4.5): each side counts active batons, starting from `count`, less one for
//!   each baton that reaches 0 or is reset; at 0 it MUST close the session without error.
//!   Here the side that *receives* the last 0 closes at once (after the peer has
//!   acknowledged any 0 it sent earlier), and the side that *sends* it waits for that close
//!   (up to [`BatonParams::idle_timeout`], then closes itself): a sender closing at once
//!   would race its own last message, which the close discards.
//! * **Errors** (§4.6): session codes [`session_code`] (DA_YAMN, BRUH, SUS, BORED) and
//!   stream codes [`stream_code`] (IDC, WHATEVER, I_LIED).
//!
//! # Choices where the draft leaves room
//!
//! * Unexpected values (§4.2 says MAY close with SUS): this side always does. Each side
//!   knows what it sent, so it knows which stream kind and value the peer's next message
//!   must have; any other message (including one on a stream of a baton already at 0, or
//!   after every baton ended) is SUS. Datagram values are only counted, never judged.
//! * A padding length over [`BatonParams::max_padding`] is a malformed message (BRUH).
//!   Bytes after the baton byte are malformed too (a stream carries one message).
//! * A message counts only once its stream has ended (the sender MUST send FIN after it).
//! * A stream the peer resets before its message is complete counts as a reset baton if a
//!   message of that stream kind was due; a reset stream nobody expected is ignored.
//! * On STOP_SENDING (a failed write) this side resets with WHATEVER; on a reset of a
//!   bidirectional stream the peer opened, it resets its own half with WHATEVER (§4.6). It
//!   sends STOP_SENDING (IDC) only on the reply half of a stream of its own whose sending
//!   half the peer stopped, and never resets a stream spontaneously (so never I_LIED).
//! * Without a `baton` parameter the server draws one random value for all its batons
//!   (§3.1 speaks of one value for all). With one, the client accepts initial messages of
//!   exactly that value; without, any value from 1 to 255.
//! * When a bidirectional stream the peer opened brings a 0, nothing is sent back, so the
//!   stream's sending half is left open (a FIN alone would be an incomplete message) until
//!   the session ends.
//! * BORED after [`BatonParams::idle_timeout`] in which no stream was opened or ended
//!   (§4.6 MAY); datagrams do not count as progress.
//! * DA_YAMN when a stream cannot be opened within the connection's stream-creation
//!   timeout (the library waits for credit up to then).
//! * A close without error is sent as this library's `close(0, "")`: a close capsule with
//!   code 0, then FIN. The draft describes a FIN alone; a peer reads both as code 0.

mod message;
mod params;
mod run;

use std::time::Duration;

use crate::error::{OpenStreamError, ReadError, SessionError, WriteError};
use crate::session::{CloseInfo, Session};

pub use message::{decode as decode_message, encode as encode_message, Decoder, MessageError};
pub use params::{
    query_of, BatonParams, QueryError, DEFAULT_DATAGRAM_PADDING, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_COUNT, DEFAULT_MAX_PADDING, DEFAULT_PADDING, VERSION,
};

/// The path this library serves Devious Baton on (§3: RECOMMENDED for interoperability).
pub const PATH: &str = "/webtransport/devious-baton";

/// Session error codes (§4.6.2), sent in CLOSE_WEBTRANSPORT_SESSION.
pub mod session_code {
    /// DA_YAMN: insufficient stream credit to continue the protocol.
    pub const DA_YAMN: u32 = 0x01;
    /// BRUH: received a malformed Baton message.
    pub const BRUH: u32 = 0x02;
    /// SUS: received an unexpected Baton message.
    pub const SUS: u32 = 0x03;
    /// BORED: got tired of waiting for the next message.
    pub const BORED: u32 = 0x04;
}

/// Stream error codes (§4.6.1), sent in RESET_STREAM and STOP_SENDING.
pub mod stream_code {
    /// IDC: "I don't care about this stream" (the only code STOP_SENDING may carry).
    pub const IDC: u32 = 0x01;
    /// WHATEVER: the reset the peer asked for (answering STOP_SENDING or a reset).
    pub const WHATEVER: u32 = 0x02;
    /// I_LIED: a spontaneous reset.
    pub const I_LIED: u32 = 0x03;
}

/// How a Baton message reached this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A unidirectional stream (the peer opened it).
    Uni,
    /// A bidirectional stream the peer opened.
    PeerBidi,
    /// The reply half of a bidirectional stream this side opened.
    SelfBidi,
}

impl std::fmt::Display for Carrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Carrier::Uni => "a unidirectional stream",
            Carrier::PeerBidi => "a bidirectional stream the peer opened",
            Carrier::SelfBidi => "a bidirectional stream this side opened",
        })
    }
}

/// What a Devious Baton session came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatonOutcome {
    /// The batons run in parallel.
    pub count: u64,
    /// The initial baton value: the one chosen (server) or the first received (client).
    pub initial: Option<u8>,
    /// Baton messages received on streams.
    pub batons_received: u64,
    /// Baton messages sent on streams.
    pub batons_sent: u64,
    /// Batons that reached 0.
    pub batons_finished: u64,
    /// Batons lost to a reset or a stop of their stream.
    pub batons_reset: u64,
    /// Well-formed Baton datagrams received.
    pub datagrams_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams that could not be sent (the peer takes none, or none fits).
    pub datagrams_not_sent: u64,
    /// How the session closed (`code` 0; `remote` says which side closed).
    pub close: CloseInfo,
}

/// Why a Devious Baton session failed. [`BatonError::session_code`] gives the code the
/// draft assigns (the one this side closed the session with), [`BatonError::http_status`]
/// the status a server rejects a bad query with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BatonError {
    /// The query parameters are invalid (§3.1): reject the session with
    /// [`QueryError::status`].
    #[error("invalid devious-baton query")]
    Query(#[from] QueryError),
    /// The peer sent a baton this side did not expect (SUS).
    #[error("unexpected baton {value} on {carrier}")]
    Unexpected {
        /// The baton value received.
        value: u8,
        /// How it came.
        carrier: Carrier,
    },
    /// The peer sent a malformed Baton message (BRUH).
    #[error("malformed baton message")]
    Malformed(#[source] MessageError),
    /// No stream credit to open the stream the protocol needs (DA_YAMN).
    #[error("no stream credit to go on")]
    StreamCredit(#[source] OpenStreamError),
    /// No message from the peer for this long (BORED).
    #[error("no baton message for {0:?}")]
    TimedOut(Duration),
    /// The peer closed the session before every baton ended, or with an error code.
    #[error("peer closed the session with code {code} ({active} batons active): {reason}")]
    PeerClosed {
        /// The peer's close code (see [`session_code`]).
        code: u32,
        /// The peer's reason.
        reason: String,
        /// Batons still active on this side when it closed.
        active: u64,
    },
    /// A stream could not be opened (the session or connection ended).
    #[error("opening a stream")]
    Open(#[source] OpenStreamError),
    /// Reading a stream failed (the session or connection ended).
    #[error("reading a baton stream")]
    Read(#[source] ReadError),
    /// Writing a stream failed (the session or connection ended).
    #[error("writing a baton stream")]
    Write(#[source] WriteError),
    /// The session ended otherwise (its CONNECT stream reset, the connection lost).
    #[error("session ended")]
    Session(#[source] SessionError),
}

impl BatonError {
    /// The session error code the draft assigns to this failure (§4.6.2): the code the side
    /// that detected it closes the session with. `None` for failures the draft gives no
    /// code (query errors, which are HTTP statuses; transport failures; the peer's close).
    pub fn session_code(&self) -> Option<u32> {
        match self {
            BatonError::Unexpected { .. } => Some(session_code::SUS),
            BatonError::Malformed(_) => Some(session_code::BRUH),
            BatonError::StreamCredit(_) => Some(session_code::DA_YAMN),
            BatonError::TimedOut(_) => Some(session_code::BORED),
            _ => None,
        }
    }

    /// The HTTP status to reject the session with, for an invalid query (§3.1).
    pub fn http_status(&self) -> Option<u16> {
        match self {
            BatonError::Query(q) => Some(q.status()),
            _ => None,
        }
    }

    /// Whether the peer is at fault (it broke the protocol, sent a bad query, went
    /// silent, or closed early), as opposed to the network or this side.
    pub fn is_peer_fault(&self) -> bool {
        self.session_code()
            .is_some_and(|c| c != session_code::DA_YAMN)
            || matches!(self, BatonError::Query(_) | BatonError::PeerClosed { .. })
    }
}

/// Runs the server side on an accepted session: opens `params.count` unidirectional
/// streams with the initial baton (`params.baton`, or one picked at random), passes the
/// batons back and forth, and returns when the session ends.
///
/// On a peer that breaks the protocol it closes the session with the draft's code and
/// returns the matching error. Validate the query with [`BatonParams::from_query`] (and
/// reject with its [`BatonError::http_status`]) before accepting the session.
///
/// # Cancel safety
/// Cancelling stops the protocol; the session stays open (drop it or close it).
pub async fn serve(session: Session, params: BatonParams) -> Result<BatonOutcome, BatonError> {
    run::run(session, params, run::Role::Server).await
}

/// Runs the client side on a session opened to [`BatonParams::to_path`] (the same
/// parameters): answers the server's batons until the session ends.
///
/// # Cancel safety
/// As [`serve`].
pub async fn run_client(
    session: Session,
    params: &BatonParams,
) -> Result<BatonOutcome, BatonError> {
    run::run(session, params.clone(), run::Role::Client).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_drafts() {
        assert_eq!(
            [
                session_code::DA_YAMN,
                session_code::BRUH,
                session_code::SUS,
                session_code::BORED
            ],
            [1, 2, 3, 4]
        );
        assert_eq!(
            [stream_code::IDC, stream_code::WHATEVER, stream_code::I_LIED],
            [1, 2, 3]
        );
    }

    #[test]
    fn errors_carry_their_code() {
        let sus = BatonError::Unexpected {
            value: 9,
            carrier: Carrier::Uni,
        };
        assert_eq!(sus.session_code(), Some(session_code::SUS));
        assert!(sus.is_peer_fault());
        let bruh = BatonError::Malformed(MessageError::TrailingBytes);
        assert_eq!(bruh.session_code(), Some(session_code::BRUH));
        assert!(std::error::Error::source(&bruh).is_some());
        let credit = BatonError::StreamCredit(OpenStreamError::Timeout(Duration::from_secs(1)));
        assert_eq!(credit.session_code(), Some(session_code::DA_YAMN));
        assert!(!credit.is_peer_fault());
        let bored = BatonError::TimedOut(Duration::from_secs(1));
        assert_eq!(bored.session_code(), Some(session_code::BORED));
        let gone = BatonError::Read(ReadError::SessionGone);
        assert_eq!(gone.session_code(), None);
        assert_eq!(gone.http_status(), None);
        assert!(!gone.is_peer_fault());
    }
}
