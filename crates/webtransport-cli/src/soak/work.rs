//! The client side of `wt soak`: one cycle (a session opened, one echo checked, closed),
//! the idle sessions of `--idle`, and what went wrong, by step and by the variant of the
//! library's typed error (never by its text).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use webtransport::error::{
    ConnectError, ConnectionError, HandshakeError, OpenStreamError, ReadError, SessionError,
    WriteError,
};
use webtransport::proto::headers::ConnectRequest;
use webtransport::{Client, Connection, Session};

/// The steps of a cycle, in order, and the checks of `--idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// A new connection and its first session.
    Connect,
    /// Another session on a connection that has one already.
    OpenSession,
    /// The bidirectional stream of the echo.
    OpenStream,
    /// Writing the payload and finishing.
    Write,
    /// Reading the echo to its end.
    Read,
    /// Comparing the echo with what was sent.
    Verify,
    /// Closing the session (and, after its last session, the connection).
    Close,
    /// `--idle`: the session ended while it was held.
    Held,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::OpenSession => "open_session",
            Step::OpenStream => "open_stream",
            Step::Write => "write",
            Step::Read => "read",
            Step::Verify => "verify",
            Step::Close => "close",
            Step::Held => "held",
        }
    }
}

/// Why a step failed: the library's error, or one of ours.
#[derive(Debug, Clone)]
pub enum Cause {
    /// Connecting or opening a session.
    Connect(ConnectError),
    /// Opening the stream.
    OpenStream(OpenStreamError),
    /// Writing.
    Write(WriteError),
    /// Reading.
    Read(ReadError),
    /// The session ended or could not be closed.
    Session(SessionError),
    /// The echo differed from what was sent.
    Mismatch,
    /// The step took longer than `--timeout`.
    Timeout,
}

/// A failed step.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Where.
    pub step: Step,
    /// Why.
    pub cause: Cause,
}

/// What failures are counted by: the step, the error's variant, the variant of the error
/// inside it where there is one (a lost connection's), and a number the variant carries
/// when it tells failures apart (an HTTP status, an error code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorKind {
    step: Step,
    variant: &'static str,
    inner: Option<&'static str>,
    detail: Option<Detail>,
}

/// The number a variant carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Detail {
    /// An HTTP status (shown in decimal).
    Status(u16),
    /// An error code (shown in hex).
    Code(u64),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.step.name(), self.variant)?;
        if let Some(inner) = self.inner {
            write!(f, ".{inner}")?;
        }
        match self.detail {
            Some(Detail::Status(s)) => write!(f, "({s})")?,
            Some(Detail::Code(c)) => write!(f, "({c:#x})")?,
            None => {}
        }
        Ok(())
    }
}

/// (variant, inner variant, detail) of each error type.
type Variant = (&'static str, Option<&'static str>, Option<Detail>);

fn connection_variant(e: &ConnectionError) -> (&'static str, Option<Detail>) {
    match e {
        ConnectionError::LocallyClosed => ("locally_closed", None),
        ConnectionError::ApplicationClosed { code, .. } => {
            ("application_closed", Some(Detail::Code(code.0)))
        }
        ConnectionError::PeerError { code, .. } => ("peer_error", Some(Detail::Code(code.0))),
        ConnectionError::Protocol(p) => ("protocol", Some(Detail::Code(p.code().0))),
        ConnectionError::Transport(t) => ("transport", Some(Detail::Code(t.code))),
        ConnectionError::TimedOut => ("timed_out", None),
        ConnectionError::Reset => ("reset", None),
        ConnectionError::VersionMismatch => ("version_mismatch", None),
        ConnectionError::GoingAway => ("going_away", None),
        _ => ("other", None),
    }
}

fn lost(variant: &'static str, e: &ConnectionError) -> Variant {
    let (inner, detail) = connection_variant(e);
    (variant, Some(inner), detail)
}

fn connect_variant(e: &ConnectError) -> Variant {
    match e {
        ConnectError::Config(_) => ("config", None, None),
        ConnectError::InvalidUrl { .. } => ("invalid_url", None, None),
        ConnectError::Resolve { .. } => ("resolve", None, None),
        ConnectError::Tls(_) => ("tls", None, None),
        ConnectError::Bind(_) => ("bind", None, None),
        ConnectError::Handshake(h) => {
            let inner = match h {
                HandshakeError::Certificate(_) => "certificate",
                HandshakeError::Tls(_) => "tls",
                HandshakeError::Transport(_) => "transport",
                HandshakeError::Refused => "refused",
                HandshakeError::TimedOut => "timed_out",
                HandshakeError::InvalidServerName(_) => "invalid_server_name",
                HandshakeError::NotStarted(_) => "not_started",
                HandshakeError::Lost(c) => connection_variant(c).0,
                _ => "other",
            };
            ("handshake", Some(inner), None)
        }
        ConnectError::Timeout(_) => ("timeout", None, None),
        ConnectError::Rejected(status) => ("rejected", None, Some(Detail::Status(*status))),
        ConnectError::Unsupported(_) => ("unsupported", None, None),
        ConnectError::RequestReset(code) => ("request_reset", None, Some(Detail::Code(code.0))),
        ConnectError::MalformedResponse(_) => ("malformed_response", None, None),
        ConnectError::NoResponse => ("no_response", None, None),
        ConnectError::Cancelled => ("cancelled", None, None),
        ConnectError::NoRuntime => ("no_runtime", None, None),
        ConnectError::ConnectionLost(c) => lost("connection_lost", c),
        _ => ("other", None, None),
    }
}

fn session_variant(e: &SessionError) -> Variant {
    match e {
        SessionError::Closed { code, .. } => ("closed", None, Some(Detail::Code(u64::from(*code)))),
        SessionError::Aborted { code, .. } => ("aborted", None, Some(Detail::Code(code.0))),
        SessionError::NotOpened(c) => {
            let (v, _, d) = connect_variant(c);
            ("not_opened", Some(v), d)
        }
        SessionError::Connection(c) => lost("connection", c),
        SessionError::NotEstablished => ("not_established", None, None),
        SessionError::Unknown => ("unknown", None, None),
        SessionError::ReasonTooLong => ("reason_too_long", None, None),
        SessionError::Timeout => ("timeout", None, None),
        _ => ("other", None, None),
    }
}

impl Failure {
    /// What it is counted by.
    pub fn kind(&self) -> ErrorKind {
        let (variant, inner, detail) = match &self.cause {
            Cause::Connect(e) => connect_variant(e),
            Cause::OpenStream(OpenStreamError::Session(e)) => {
                let (v, _, d) = session_variant(e);
                ("session", Some(v), d)
            }
            Cause::OpenStream(OpenStreamError::Timeout(_)) => ("no_credit", None, None),
            Cause::OpenStream(_) => ("other", None, None),
            Cause::Write(e) => match e {
                WriteError::Stopped(code) => {
                    ("stopped", None, code.map(|c| Detail::Code(u64::from(c))))
                }
                WriteError::ClosedStream => ("closed_stream", None, None),
                WriteError::SessionGone => ("session_gone", None, None),
                WriteError::Connection(c) => lost("connection", c),
                _ => ("other", None, None),
            },
            Cause::Read(e) => match e {
                ReadError::Reset(code) => ("reset", None, code.map(|c| Detail::Code(u64::from(c)))),
                ReadError::ClosedStream => ("closed_stream", None, None),
                ReadError::SessionGone => ("session_gone", None, None),
                ReadError::TooLong(_) => ("too_long", None, None),
                ReadError::FinishedEarly => ("finished_early", None, None),
                ReadError::Connection(c) => lost("connection", c),
                _ => ("other", None, None),
            },
            Cause::Session(e) => session_variant(e),
            Cause::Mismatch => ("mismatch", None, None),
            Cause::Timeout => ("timeout", None, None),
        };
        ErrorKind {
            step: self.step,
            variant,
            inner,
            detail,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.step.name())?;
        match &self.cause {
            Cause::Connect(e) => write!(f, "{e}"),
            Cause::OpenStream(e) => write!(f, "{e}"),
            Cause::Write(e) => write!(f, "{e}"),
            Cause::Read(e) => write!(f, "{e}"),
            Cause::Session(e) => write!(f, "{e}"),
            Cause::Mismatch => write!(f, "the echo differs from what was sent"),
            Cause::Timeout => write!(f, "took too long"),
        }
    }
}

/// Runs `step`, failing with `Cause::Timeout` after `limit`.
async fn timed<T, E>(
    step: Step,
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
    cause: impl FnOnce(E) -> Cause,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure {
            step,
            cause: cause(e),
        }),
        Err(_) => Err(Failure {
            step,
            cause: Cause::Timeout,
        }),
    }
}

/// Where sessions are opened, and how long each step may take.
#[derive(Debug, Clone)]
pub struct Target {
    /// The client (one UDP endpoint for all its connections).
    pub client: Client,
    /// The echo route's URL.
    pub url: String,
    /// The time limit of each step.
    pub timeout: Duration,
}

/// A connection of a worker, with what it needs to open more sessions on it.
#[derive(Debug)]
pub struct Open {
    connection: Connection,
    request: ConnectRequest,
    /// Sessions opened on it so far.
    sessions: u32,
}

impl Target {
    /// A session: on `reuse`'s connection while it has opened fewer than `per_connection`
    /// sessions, else on a new connection (which then goes into `reuse`).
    pub async fn session(
        &self,
        reuse: &mut Option<Open>,
        per_connection: u32,
    ) -> Result<Session, Failure> {
        if let Some(open) = reuse.as_mut().filter(|o| o.sessions < per_connection) {
            let session = timed(
                Step::OpenSession,
                self.timeout,
                open.connection.open_session(open.request.clone()),
                Cause::Connect,
            )
            .await;
            // A connection that failed to open one is not used again.
            match session {
                Ok(s) => {
                    open.sessions += 1;
                    return Ok(s);
                }
                Err(e) => {
                    if let Some(open) = reuse.take() {
                        open.connection.abort(webtransport::Code::H3_NO_ERROR, "");
                    }
                    return Err(e);
                }
            }
        }
        if let Some(done) = reuse.take() {
            self.close_connection(done).await?;
        }
        let session = timed(
            Step::Connect,
            self.timeout,
            self.client.connect(&self.url),
            Cause::Connect,
        )
        .await?;
        if per_connection > 1 {
            if let Some(request) = session.request() {
                *reuse = Some(Open {
                    connection: session.connection().clone(),
                    request,
                    sessions: 1,
                });
            }
        }
        Ok(session)
    }

    /// Closes a connection that has opened its last session, and waits for it to end.
    pub async fn close_connection(&self, open: Open) -> Result<(), Failure> {
        let closing = open.connection.close_within(0, "", self.timeout);
        timed(
            Step::Close,
            self.timeout + Duration::from_secs(1),
            async {
                closing.await;
                Ok::<_, SessionError>(())
            },
            Cause::Session,
        )
        .await
    }

    /// One cycle: a session (new connection or `reuse`'s), one echo on a bidirectional
    /// stream checked byte for byte, the session closed and its end waited for; the
    /// connection closed with its last session.
    pub async fn cycle(
        &self,
        reuse: &mut Option<Open>,
        per_connection: u32,
        payload: &[u8],
    ) -> Result<(), Failure> {
        let session = self.session(reuse, per_connection).await?;
        let echoed = self.echo(&session, payload).await;
        let closed = self.close(&session).await;
        drop(session);
        if per_connection > 1 {
            if echoed.is_err() || closed.is_err() {
                // Whatever went wrong may have left the connection unusable.
                if let Some(open) = reuse.take() {
                    open.connection.abort(webtransport::Code::H3_NO_ERROR, "");
                }
            } else if reuse.as_ref().is_some_and(|o| o.sessions >= per_connection) {
                if let Some(done) = reuse.take() {
                    self.close_connection(done).await?;
                }
            }
        }
        echoed?;
        closed
    }

    /// One echo on a new bidirectional stream of `session`, compared with `payload`.
    pub async fn echo(&self, session: &Session, payload: &[u8]) -> Result<(), Failure> {
        let (mut send, mut recv) = timed(
            Step::OpenStream,
            self.timeout,
            session.open_bi(),
            Cause::OpenStream,
        )
        .await?;
        timed(
            Step::Write,
            self.timeout,
            async {
                send.write_all(payload).await?;
                send.finish()
            },
            Cause::Write,
        )
        .await?;
        let back = timed(
            Step::Read,
            self.timeout,
            recv.read_to_end(payload.len() + 1),
            Cause::Read,
        )
        .await?;
        if back != payload {
            return Err(Failure {
                step: Step::Verify,
                cause: Cause::Mismatch,
            });
        }
        Ok(())
    }

    /// Closes `session` with code 0 and waits until it has ended.
    pub async fn close(&self, session: &Session) -> Result<(), Failure> {
        let closing = async {
            session.close(0, "")?;
            session.closed().await.map(|_| ())
        };
        timed(Step::Close, self.timeout, closing, Cause::Session).await
    }
}

/// The failure of a held session that ended: how it ended.
pub fn ended_while_held(end: Result<webtransport::CloseInfo, SessionError>) -> Failure {
    let cause = match end {
        Ok(info) => Cause::Session(SessionError::Closed {
            code: info.code,
            reason: info.reason,
            remote: info.remote,
        }),
        Err(e) => Cause::Session(e),
    };
    Failure {
        step: Step::Held,
        cause,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webtransport::Code;

    #[test]
    fn kinds_name_step_variant_and_detail() {
        let f = Failure {
            step: Step::Connect,
            cause: Cause::Connect(ConnectError::Rejected(429)),
        };
        assert_eq!(f.kind().to_string(), "connect/rejected(429)");
        let f = Failure {
            step: Step::Read,
            cause: Cause::Read(ReadError::Connection(ConnectionError::TimedOut)),
        };
        assert_eq!(f.kind().to_string(), "read/connection.timed_out");
        let f = Failure {
            step: Step::OpenSession,
            cause: Cause::Connect(ConnectError::RequestReset(Code::H3_REQUEST_REJECTED)),
        };
        assert_eq!(f.kind().to_string(), "open_session/request_reset(0x10b)");
        // Same variant, other text: one kind.
        let a = Failure {
            step: Step::Held,
            cause: Cause::Session(SessionError::Closed {
                code: 0,
                reason: "a".into(),
                remote: true,
            }),
        };
        let b = Failure {
            step: Step::Held,
            cause: Cause::Session(SessionError::Closed {
                code: 0,
                reason: "b".into(),
                remote: false,
            }),
        };
        assert_eq!(a.kind(), b.kind());
    }
}
