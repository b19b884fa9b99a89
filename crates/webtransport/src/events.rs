//! [`ConnectionEvent`]: what a connection tells its subscribers, and the channel that
//! carries it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::broadcast;
use webtransport_proto::settings::WtDraft;
use webtransport_proto::stream_header::SessionId;

use crate::error::ConnectionError;

/// Events of a connection, delivered to every [`Connection::events`](crate::Connection::events)
/// receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// QUIC and our HTTP/3 streams are up.
    Established,
    /// The peer's SETTINGS arrived; the WebTransport draft chosen.
    SettingsReceived {
        /// The draft, if the peer offers WebTransport.
        draft: Option<WtDraft>,
        /// Whether session flow control is in effect.
        flow_control: bool,
    },
    /// A session is open.
    SessionReady {
        /// The session.
        session: SessionId,
    },
    /// A stream was opened.
    StreamOpened {
        /// Its session.
        session: SessionId,
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// Opened by the peer.
        incoming: bool,
    },
    /// A datagram arrived for a session.
    DatagramReceived {
        /// The session.
        session: SessionId,
        /// Payload length.
        len: usize,
    },
    /// The peer asked to wind a session down.
    SessionDraining {
        /// The session.
        session: SessionId,
    },
    /// A session closed cleanly (by a close capsule or a FIN).
    SessionClosed {
        /// The session.
        session: SessionId,
        /// Application code.
        code: u32,
        /// Reason.
        reason: String,
        /// Closed by the peer.
        remote: bool,
    },
    /// A session ended otherwise: its CONNECT stream was reset, it never opened, or the
    /// connection went.
    SessionFailed {
        /// The session.
        session: SessionId,
    },
    /// The peer sent GOAWAY.
    GoAway {
        /// The GOAWAY id.
        id: u64,
    },
    /// A protocol error was detected locally; the connection is closed with its code.
    Error {
        /// What went wrong.
        error: webtransport_proto::connection::ProtocolError,
    },
    /// A health check was answered (see `Connection::monitor_health`).
    HealthCheckPassed {
        /// Time from the probe to the peer's acknowledgement of it.
        rtt: Duration,
    },
    /// Health monitoring saw no answer within the RTT timeout.
    HealthCheckFailed {
        /// How long it waited.
        waited: Duration,
    },
    /// The connection closed.
    Closed {
        /// Why.
        error: ConnectionError,
    },
}

/// Capacity of a connection's event channel, made when the first receiver subscribes.
const EVENT_QUEUE: usize = 256;

/// The broadcast channel of one connection's events, made on the first `subscribe`: its
/// slots would otherwise be most of an idle connection's memory, and events sent before
/// anyone subscribes reach nobody anyway.
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    tx: OnceLock<broadcast::Sender<ConnectionEvent>>,
}

impl EventHub {
    /// Sends an event to the current receivers, if there are any.
    pub(crate) fn emit(&self, event: ConnectionEvent) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(event);
        }
    }

    /// Whether anyone receives events (to skip building costly ones).
    pub(crate) fn has_subscribers(&self) -> bool {
        self.tx.get().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// A receiver of the events from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.tx
            .get_or_init(|| broadcast::channel(EVENT_QUEUE).0)
            .subscribe()
    }
}
