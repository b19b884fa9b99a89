//! The echo service: what `wt serve`'s `/echo` route, the interop route server and the
//! tests all run, and a quick way for an application to check a path end to end.
//!
//! Bidirectional streams are echoed on themselves; each unidirectional stream comes back
//! on a new server-opened unidirectional stream (streaming, so a large upload is never
//! held in memory); datagrams are sent back as they are. A reset of an incoming stream is
//! mirrored as a reset of the reply with the same code, and a stop of the reply as a stop
//! of the incoming stream.

use tokio::task::JoinSet;
use tracing::debug;

use crate::error::{OpenStreamError, ReadError, SessionError, WriteError};
use crate::session::{CloseInfo, Session};
use crate::stream::{RecvStream, SendStream};

/// Chunk size for copying stream data back: large enough for throughput, small enough to
/// keep the echo streaming rather than buffering.
const CHUNK: usize = 64 * 1024;

/// Serves `session` as an echo until it closes, and returns how it closed.
///
/// # Cancel safety
/// Cancel safe: cancelling stops the echo (its tasks are aborted); the session stays open.
pub async fn serve(session: Session) -> Result<CloseInfo, SessionError> {
    // Dropping the set at the end aborts whatever still runs; every task also ends by
    // itself once the session is gone.
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_bi(session.clone()));
    tasks.spawn(accept_uni(session.clone()));
    tasks.spawn(datagrams(session.clone()));
    session.closed().await
}

async fn accept_bi(session: Session) {
    let mut streams = JoinSet::new();
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        let sid = session.id();
        streams.spawn(async move {
            let id = recv.id();
            if let Err(e) = copy(&mut recv, &mut send).await {
                debug!(session = %sid, stream = id, error = %e, "bidirectional echo ended early");
            }
        });
        reap(&mut streams);
    }
}

async fn accept_uni(session: Session) {
    let mut streams = JoinSet::new();
    while let Ok(mut recv) = session.accept_uni().await {
        let session = session.clone();
        streams.spawn(async move {
            let id = recv.id();
            let result = match session.open_uni().await {
                Ok(mut send) => copy(&mut recv, &mut send).await,
                Err(e) => Err(EchoError::Open(e)),
            };
            if let Err(e) = result {
                debug!(session = %session.id(), stream = id, error = %e, "unidirectional echo ended early");
            }
        });
        reap(&mut streams);
    }
}

/// Forgets finished stream tasks so a long session does not accumulate them.
fn reap(set: &mut JoinSet<()>) {
    while set.try_join_next().is_some() {}
}

async fn datagrams(session: Session) {
    while let Ok(datagram) = session.read_datagram().await {
        // Datagrams are unreliable by design: one we cannot send back is just dropped.
        if let Err(e) = session.send_datagram(&datagram) {
            debug!(session = %session.id(), error = %e, "datagram not echoed");
        }
    }
}

/// Why an echo stopped.
#[derive(Debug, thiserror::Error)]
enum EchoError {
    #[error("reading: {0}")]
    Read(ReadError),
    #[error("writing: {0}")]
    Write(WriteError),
    #[error("opening the reply stream: {0}")]
    Open(OpenStreamError),
}

/// Copies `recv` into `send` chunk by chunk and finishes `send` at the end, mirroring a
/// reset of `recv` onto `send` and a stop of `send` onto `recv`.
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
