//! Snapshots a connection and its sessions hand out: [`ConnectionInfo`],
//! [`ConnectionDiagnostics`] and its [`Issue`]s, [`ProtocolInfo`], [`SessionInfo`],
//! [`SessionStats`], [`CloseInfo`]. Plain data, `Serialize`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use webtransport_proto::connection::Buffered;
use webtransport_proto::settings::{Settings, WtDraft};
use webtransport_proto::stream_header::SessionId;

use crate::lifecycle::ConnectionState;

/// Statistics and state of a connection (pywebtransport's `ConnectionInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub connection_id: String,
    /// Its state.
    pub state: ConnectionState,
    /// Local address, if known.
    pub local_address: Option<SocketAddr>,
    /// Remote address, once known.
    pub remote_address: Option<SocketAddr>,
    /// When HTTP/3 came up.
    pub established_at: Option<SystemTime>,
    /// When it closed.
    pub closed_at: Option<SystemTime>,
    /// Bytes sent at the WebTransport layer: stream payload, datagram payload, and the
    /// HTTP/3 frames and capsules of the control and CONNECT streams (no QUIC overhead).
    pub bytes_sent: u64,
    /// Bytes received at the WebTransport layer, counted the same way.
    pub bytes_received: u64,
    /// QUIC packets sent.
    pub packets_sent: u64,
    /// QUIC packets received.
    pub packets_received: u64,
    /// Errors detected or reported: protocol errors either side found, sessions that
    /// failed or were aborted, requests refused for malformation, flow-control
    /// violations, and the connection's own end when it was not clean.
    pub error_count: u64,
    /// The last WebTransport-layer activity: traffic on its sessions, a session opened,
    /// or [`Connection::record_activity`](crate::Connection::record_activity).
    pub last_activity: Option<SystemTime>,
}

impl ConnectionInfo {
    /// Time from establishment to close (or to now while open).
    pub fn uptime(&self) -> Duration {
        match self.established_at {
            Some(start) => self
                .closed_at
                .unwrap_or_else(SystemTime::now)
                .duration_since(start)
                .unwrap_or_default(),
            None => Duration::ZERO,
        }
    }
}

/// A finding of [`ConnectionDiagnostics::issues`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "issue")]
#[non_exhaustive]
pub enum Issue {
    /// The connection is not connected.
    NotEstablished,
    /// Smoothed RTT above 1 s.
    HighRtt {
        /// RTT seen.
        rtt: Duration,
    },
    /// More than 5 % of packets lost.
    HighLoss {
        /// Loss rate 0..1.
        rate: f64,
    },
    /// No WebTransport-layer activity for more than [`STALE_AFTER`].
    Stale {
        /// Time since the last activity.
        idle: Duration,
    },
}

/// How long without activity before [`Issue::Stale`] is reported.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Issue::NotEstablished => f.write_str("Connection not established"),
            Issue::HighRtt { rtt } => write!(f, "High latency (RTT {rtt:?})"),
            Issue::HighLoss { rate } => write!(f, "High packet loss ({:.1}%)", rate * 100.0),
            Issue::Stale { idle } => write!(f, "Connection appears stale (idle {idle:?})"),
        }
    }
}

/// A snapshot of a connection's health (pywebtransport's `ConnectionDiagnostics`).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionDiagnostics {
    /// Statistics and state.
    pub stats: ConnectionInfo,
    /// Smoothed RTT from QUIC.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// QUIC packets sent and not yet acknowledged or declared lost: the packets sent after
    /// the largest one the peer acknowledged, as the congestion controller sees them.
    pub packets_in_flight: u64,
    /// Lost packets / sent packets.
    pub packet_loss_rate: f64,
    /// Time since the last activity when the snapshot was taken.
    pub idle: Duration,
}

impl ConnectionDiagnostics {
    /// Problems these numbers suggest.
    pub fn issues(&self) -> Vec<Issue> {
        let mut out = Vec::new();
        if !matches!(
            self.stats.state,
            ConnectionState::Connected | ConnectionState::Draining
        ) {
            out.push(Issue::NotEstablished);
        }
        if self.rtt > Duration::from_secs(1) {
            out.push(Issue::HighRtt { rtt: self.rtt });
        }
        if self.packet_loss_rate > 0.05 {
            out.push(Issue::HighLoss {
                rate: self.packet_loss_rate,
            });
        }
        if self.idle > STALE_AFTER {
            out.push(Issue::Stale { idle: self.idle });
        }
        out
    }
}

/// The read-only protocol view (pywebtransport's `protocol_handler`).
#[derive(Debug, Clone)]
pub struct ProtocolInfo {
    /// The peer's SETTINGS, once received.
    pub peer_settings: Option<Settings>,
    /// The draft negotiated.
    pub draft: Option<WtDraft>,
    /// Whether session flow control is in effect.
    pub flow_control: bool,
    /// Whether capsules are written without DATA frames (pywebtransport 0.8.1's way).
    pub unframed_capsules: bool,
    /// Our SETTINGS.
    pub local_settings: Settings,
    /// Sessions open or remembered.
    pub sessions: Vec<SessionId>,
    /// Datagrams the core dropped (no session yet and buffer full, or session gone).
    pub datagrams_dropped: u64,
    /// What the protocol core holds for the peer now: streams and datagrams waiting for
    /// their session (capped by `limits.max_pending_streams` / `max_pending_datagrams`),
    /// requests whose headers are incomplete, and the bytes of all of it.
    pub buffered: Buffered,
    /// Streams refused with WT_BUFFERED_STREAM_REJECTED (no room to hold them, or their
    /// session did not come in time).
    pub streams_rejected: u64,
    /// Bytes queued, and not yet taken by QUIC, on whichever of our HTTP/3 streams (the
    /// control stream, CONNECT streams) has the most: what `limits.max_write_backlog`
    /// caps.
    pub write_backlog: usize,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SessionStats {
    /// Bidirectional streams we opened.
    pub streams_opened_bi: u64,
    /// Unidirectional streams we opened.
    pub streams_opened_uni: u64,
    /// Bidirectional streams the peer opened.
    pub streams_accepted_bi: u64,
    /// Unidirectional streams the peer opened.
    pub streams_accepted_uni: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams dropped because the application did not read them in time.
    pub datagrams_dropped: u64,
}

/// How a session closed cleanly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloseInfo {
    /// Application code (0 for a close without a capsule).
    pub code: u32,
    /// Reason.
    pub reason: String,
    /// Whether the peer closed it.
    pub remote: bool,
}

/// A summary of a session (pywebtransport's `WebTransportSessionInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The session id (its CONNECT stream id).
    #[serde(serialize_with = "ser_sid")]
    pub session_id: SessionId,
    /// `pending`, `established`, `closed`, `failed` or `lost`.
    pub state: &'static str,
    /// Request path.
    pub path: Option<String>,
    /// Negotiated subprotocol.
    pub protocol: Option<String>,
    /// Whether the peer asked to drain.
    pub draining: bool,
    /// When the request was made or seen.
    pub created_at: SystemTime,
    /// When it was established.
    pub established_at: Option<SystemTime>,
    /// When it ended.
    pub closed_at: Option<SystemTime>,
    /// How it closed, for a clean close.
    pub close: Option<CloseInfo>,
    /// Counters.
    pub stats: SessionStats,
    /// Received datagrams queued for the application now (at most
    /// `limits.incoming_datagram_queue`).
    pub queued_datagrams: usize,
    /// Incoming streams queued for the application now, bidirectional and unidirectional
    /// together (at most `limits.incoming_stream_queue` of each).
    pub queued_streams: usize,
}

fn ser_sid<S: serde::Serializer>(s: &SessionId, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_u64(s.stream_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnostics(state: ConnectionState, idle: Duration) -> ConnectionDiagnostics {
        ConnectionDiagnostics {
            stats: ConnectionInfo {
                connection_id: "c-1".into(),
                state,
                local_address: None,
                remote_address: None,
                established_at: Some(SystemTime::now()),
                closed_at: None,
                bytes_sent: 0,
                bytes_received: 0,
                packets_sent: 0,
                packets_received: 0,
                error_count: 0,
                last_activity: None,
            },
            rtt: Duration::from_millis(1),
            cwnd: 12_000,
            packets_in_flight: 0,
            packet_loss_rate: 0.0,
            idle,
        }
    }

    #[test]
    fn stale_only_after_thirty_seconds_without_activity() {
        assert!(
            diagnostics(ConnectionState::Connected, Duration::from_secs(5))
                .issues()
                .is_empty()
        );
        assert_eq!(
            diagnostics(ConnectionState::Connected, Duration::from_secs(31)).issues(),
            [Issue::Stale {
                idle: Duration::from_secs(31)
            }]
        );
        assert_eq!(
            diagnostics(ConnectionState::Connecting, Duration::ZERO).issues(),
            [Issue::NotEstablished]
        );
    }
}
