//! [`SessionEvents`]: one session's view of its connection's events.

use tokio::sync::broadcast;
use webtransport_proto::stream_header::SessionId;

use crate::error::ConnectionError;
use crate::events::ConnectionEvent;
use crate::info::CloseInfo;

/// An event of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The session is established.
    Ready,
    /// A stream was opened.
    StreamOpened {
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// Opened by the peer.
        incoming: bool,
    },
    /// A datagram arrived (read it with [`Session::read_datagram`](crate::Session::read_datagram)).
    Datagram {
        /// Payload length.
        len: usize,
    },
    /// The peer asked to wind the session down.
    Draining,
    /// The session closed cleanly.
    Closed(CloseInfo),
    /// The session ended otherwise (its CONNECT stream was reset, or it never opened):
    /// [`Session::closed`](crate::Session::closed) says how.
    Failed,
    /// The connection under the session closed.
    ConnectionClosed(ConnectionError),
}

/// The typed event stream of one session, from [`Session::events`](crate::Session::events).
#[derive(Debug)]
pub struct SessionEvents {
    rx: broadcast::Receiver<ConnectionEvent>,
    id: SessionId,
}

impl SessionEvents {
    pub(crate) fn new(rx: broadcast::Receiver<ConnectionEvent>, id: SessionId) -> Self {
        SessionEvents { rx, id }
    }

    /// The next event; `None` once the connection's event channel is gone. Events missed
    /// because the receiver lagged more than 256 behind are skipped.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<SessionEvent> {
        use broadcast::error::RecvError;
        loop {
            let ev = match self.rx.recv().await {
                Ok(ev) => ev,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            };
            let mine = |s: SessionId| s == self.id;
            let mapped = match ev {
                ConnectionEvent::SessionReady { session } if mine(session) => SessionEvent::Ready,
                ConnectionEvent::StreamOpened {
                    session,
                    bidi,
                    incoming,
                } if mine(session) => SessionEvent::StreamOpened { bidi, incoming },
                ConnectionEvent::DatagramReceived { session, len } if mine(session) => {
                    SessionEvent::Datagram { len }
                }
                ConnectionEvent::SessionDraining { session } if mine(session) => {
                    SessionEvent::Draining
                }
                ConnectionEvent::SessionClosed {
                    session,
                    code,
                    reason,
                    remote,
                } if mine(session) => SessionEvent::Closed(CloseInfo {
                    code,
                    reason,
                    remote,
                }),
                ConnectionEvent::SessionFailed { session } if mine(session) => SessionEvent::Failed,
                ConnectionEvent::Closed { error } => SessionEvent::ConnectionClosed(error),
                _ => continue,
            };
            return Some(mapped);
        }
    }
}
