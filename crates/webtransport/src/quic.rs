//! Every conversion between quinn's types and ours, in one place: error codes, quinn's
//! connection, read and write errors, and the handshake's failures.

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
        match ConnectionError::from_quinn(e) {
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

/// A congestion controller that watches another one: it counts what the controller is
/// told (packet numbers sent, the largest acknowledged) so that a connection can say how
/// many packets are in flight, which quinn does not expose. Everything else is the
/// wrapped controller's, so congestion control is unchanged.
struct Observed {
    inner: Box<dyn quinn::congestion::Controller>,
    counts: std::sync::Arc<InFlight>,
}

/// Packet numbers the controller saw, shared by the copies quinn makes of it.
#[derive(Debug, Default)]
struct InFlight {
    /// One past the last packet number sent (0: none yet).
    sent: std::sync::atomic::AtomicU64,
    /// One past the largest packet number acknowledged (0: none yet).
    acked: std::sync::atomic::AtomicU64,
}

impl quinn::congestion::Controller for Observed {
    fn on_sent(&mut self, now: std::time::Instant, bytes: u64, last_packet_number: u64) {
        self.counts
            .sent
            .fetch_max(last_packet_number + 1, std::sync::atomic::Ordering::Relaxed);
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &quinn_proto::RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: std::time::Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        if let Some(largest) = largest_packet_num_acked {
            self.counts
                .acked
                .fetch_max(largest + 1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: std::time::Instant,
        sent: std::time::Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window()
    }

    fn metrics(&self) -> quinn::congestion::ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn quinn::congestion::Controller> {
        Box::new(Observed {
            inner: self.inner.clone_box(),
            counts: self.counts.clone(),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Makes [`Observed`] controllers around the ones `inner` makes.
struct ObservedFactory(std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>);

impl quinn::congestion::ControllerFactory for ObservedFactory {
    fn build(
        self: std::sync::Arc<Self>,
        now: std::time::Instant,
        current_mtu: u16,
    ) -> Box<dyn quinn::congestion::Controller> {
        Box::new(Observed {
            inner: self.0.clone().build(now, current_mtu),
            counts: std::sync::Arc::default(),
        })
    }
}

/// Wraps a congestion controller factory so that [`packets_in_flight`] can read the
/// connections it controls.
pub(crate) fn observed(
    inner: std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync>,
) -> std::sync::Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> {
    std::sync::Arc::new(ObservedFactory(inner))
}

/// Packets sent after the largest one the peer acknowledged: those not yet acknowledged
/// or declared lost. `None` for a connection whose controller is not [`observed`].
pub(crate) fn packets_in_flight(quic: &quinn::Connection) -> Option<u64> {
    let state = quic
        .congestion_state()
        .into_any()
        .downcast::<Observed>()
        .ok()?;
    let sent = state.counts.sent.load(std::sync::atomic::Ordering::Relaxed);
    let acked = state
        .counts
        .acked
        .load(std::sync::atomic::Ordering::Relaxed);
    Some(sent.saturating_sub(acked))
}
