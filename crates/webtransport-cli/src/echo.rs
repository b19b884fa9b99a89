//! The echo service behind `wt serve`'s `/echo` route, and the lines it reports about
//! sessions opening and closing.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::debug;
use webtransport::{ReadError, RecvStream, SendStream, Session, SessionError, WriteError};

use crate::output;

/// Chunk size for copying stream data back: large enough for throughput, small enough to
/// keep the echo streaming rather than buffering.
const CHUNK: usize = 64 * 1024;

/// Who a session is, for the lines printed about it.
#[derive(Debug, Clone)]
pub struct SessionLabel {
    /// The connection's id (session ids are only unique within a connection).
    pub connection: String,
    /// The session id (its CONNECT stream id).
    pub session: u64,
    /// The client's address.
    pub remote: SocketAddr,
}

/// Prints session events: JSON lines with `--json`, short sentences otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Events {
    pub json: bool,
}

impl Events {
    pub fn opened(&self, who: &SessionLabel, path: &str, protocol: Option<&str>) {
        if self.json {
            output::json_line(&[
                ("event", "session_opened".into()),
                ("session", who.session.into()),
                ("path", path.into()),
                ("remote", who.remote.to_string().into()),
                ("protocol", protocol.into()),
                ("connection", who.connection.clone().into()),
            ]);
        } else {
            let protocol = protocol
                .map(|p| format!(" (subprotocol {p:?})"))
                .unwrap_or_default();
            output::line(format!(
                "session {} from {}: opened on {path}{protocol}",
                who.session, who.remote
            ));
        }
    }

    pub fn rejected(&self, path: &str, remote: SocketAddr, status: u16) {
        if self.json {
            output::json_line(&[
                ("event", "session_rejected".into()),
                ("path", path.into()),
                ("remote", remote.to_string().into()),
                ("status", status.into()),
            ]);
        } else {
            output::line(format!(
                "request from {remote} for {path}: refused with {status} (only /echo exists)"
            ));
        }
    }

    pub fn closed(&self, who: &SessionLabel, how: &Result<webtransport::CloseInfo, SessionError>) {
        // A session can also end with its connection (the client vanished, the idle
        // timeout, the server shutting down); that is reported as code 0 with the
        // connection's error as the reason.
        let (code, reason, remote) = match how {
            Ok(info) => (info.code, info.reason.clone(), info.remote),
            Err(SessionError::Connection(e)) => (
                0,
                format!("connection ended: {e}"),
                !matches!(e, webtransport::ConnectionError::LocallyClosed),
            ),
            Err(e) => (0, e.to_string(), false),
        };
        if self.json {
            output::json_line(&[
                ("event", "session_closed".into()),
                ("session", who.session.into()),
                ("code", code.into()),
                ("reason", reason.into()),
                ("remote", remote.into()),
                ("connection", who.connection.clone().into()),
            ]);
        } else {
            let by = if remote { "the client" } else { "the server" };
            output::line(format!(
                "session {} from {}: closed by {by}, code {code}, reason {reason:?}",
                who.session, who.remote
            ));
        }
    }
}

/// Serves one session until it closes: bidirectional streams are echoed on themselves,
/// unidirectional streams come back on a new server-opened unidirectional stream, datagrams
/// are sent back as they are. Reports the close through `events`.
pub async fn run(session: Session, who: SessionLabel, events: Events) {
    let who = Arc::new(who);
    // Dropping the set at the end aborts whatever still runs; every task also ends by
    // itself once the session is gone.
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_bi(session.clone(), who.clone()));
    tasks.spawn(accept_uni(session.clone(), who.clone()));
    tasks.spawn(datagrams(session.clone(), who.clone()));
    let how = session.closed().await;
    events.closed(&who, &how);
}

async fn accept_bi(session: Session, who: Arc<SessionLabel>) {
    let mut streams = JoinSet::new();
    while let Ok((send, recv)) = session.accept_bi().await {
        let who = who.clone();
        streams.spawn(async move {
            let id = recv.id();
            if let Err(e) = echo_bi(send, recv).await {
                debug!(session = who.session, stream = id, error = %e, "bidirectional echo ended early");
            }
        });
        reap(&mut streams);
    }
}

async fn accept_uni(session: Session, who: Arc<SessionLabel>) {
    let mut streams = JoinSet::new();
    while let Ok(recv) = session.accept_uni().await {
        let who = who.clone();
        let session = session.clone();
        streams.spawn(async move {
            let id = recv.id();
            if let Err(e) = echo_uni(&session, recv).await {
                debug!(session = who.session, stream = id, error = %e, "unidirectional echo ended early");
            }
        });
        reap(&mut streams);
    }
}

/// Forgets finished stream tasks so a long session does not accumulate them.
fn reap(set: &mut JoinSet<()>) {
    while set.try_join_next().is_some() {}
}

async fn datagrams(session: Session, who: Arc<SessionLabel>) {
    while let Ok(datagram) = session.read_datagram().await {
        // Datagrams are unreliable by design: one we cannot send back is just dropped.
        if let Err(e) = session.send_datagram(&datagram) {
            debug!(session = who.session, error = %e, "datagram not echoed");
        }
    }
}

/// Why an echo stopped: a failure of the side we read from or the side we write to.
#[derive(Debug)]
enum EchoError {
    Read(ReadError),
    Write(WriteError),
    Open(webtransport::OpenStreamError),
}

impl std::fmt::Display for EchoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EchoError::Read(e) => write!(f, "reading: {e}"),
            EchoError::Write(e) => write!(f, "writing: {e}"),
            EchoError::Open(e) => write!(f, "opening the reply stream: {e}"),
        }
    }
}

impl std::error::Error for EchoError {}

/// Copies `recv` into `send` chunk by chunk and finishes `send` at the end. A reset of
/// `recv` is passed on as a reset of `send` with the same code, and a stop of `send` as a
/// stop of `recv`, so the client sees its own abort mirrored.
async fn copy(recv: &mut RecvStream, send: &mut SendStream) -> Result<(), EchoError> {
    loop {
        match recv.read_chunk(CHUNK).await {
            Ok(Some(chunk)) => {
                if let Err(e) = send.write_all(&chunk).await {
                    if let WriteError::Stopped(Some(code)) = e {
                        let _ = recv.stop(code);
                    }
                    return Err(EchoError::Write(e));
                }
            }
            Ok(None) => return send.finish().map_err(EchoError::Write),
            Err(e) => {
                if let ReadError::Reset(Some(code)) = e {
                    let _ = send.reset(code);
                }
                return Err(EchoError::Read(e));
            }
        }
    }
}

async fn echo_bi(mut send: SendStream, mut recv: RecvStream) -> Result<(), EchoError> {
    copy(&mut recv, &mut send).await
}

async fn echo_uni(session: &Session, mut recv: RecvStream) -> Result<(), EchoError> {
    // The reply stream opens right away and the bytes stream through it, so a large
    // upload is never held in memory.
    let mut send = session.open_uni().await.map_err(EchoError::Open)?;
    copy(&mut recv, &mut send).await
}
