//! [`TransportConfig`]: the QUIC settings both sides share, and their quinn form.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_util::{duration_serde, format_duration, opt_duration_serde};
use super::validate::{positive, window};
use super::{ConfigError, MIB, VARINT_MAX};

/// The QUIC congestion controller (quinn's implementations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CongestionController {
    /// CUBIC (RFC 9438): quinn's and pywebtransport's default.
    #[default]
    Cubic,
    /// NewReno (RFC 9002 §7). TOML also accepts `"reno"`, pywebtransport's name for it.
    #[serde(alias = "reno")]
    NewReno,
    /// BBR (quinn's experimental BBRv1): higher throughput on lossy long-delay paths.
    Bbr,
}

/// QUIC transport settings shared by clients and servers.
///
/// The defaults aim at >1 Gbit/s on loopback and on ordinary paths: a single stream may have
/// 8 MiB in flight (at 10 ms RTT that is 6.7 Gbit/s per stream; at 100 ms, 670 Mbit/s) and a
/// connection 16 MiB. Receive windows are memory a peer can make us hold while the application
/// does not read, so a server with many connections may want smaller ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Close the connection after this long without any packet from the peer (RFC 9000 §10.1).
    /// The effective value is the smaller of ours and the peer's. Default 30 s (RFC 9308 §3.2;
    /// Chromium also uses 30 s).
    #[serde(with = "duration_serde")]
    pub max_idle_timeout: Duration,
    /// Send a PING after this long without sending anything, so an idle session survives the
    /// idle timeout and NAT bindings stay open. Must be shorter than `max_idle_timeout`.
    /// Default 10 s: a third of the idle timeout, so two lost PINGs are survivable.
    #[serde(with = "opt_duration_serde")]
    pub keep_alive_interval: Option<Duration>,
    /// Bytes the peer may send on one stream before we read them. Default 8 MiB.
    pub stream_receive_window: u64,
    /// Bytes the peer may send on all streams together before we read them. Default 16 MiB.
    pub receive_window: u64,
    /// Bytes we keep unacknowledged in flight on all streams together. Default 16 MiB.
    pub send_window: u64,
    /// Bidirectional streams the peer may have open at once. Default 256 (RFC 9114 §6.1
    /// recommends at least 100 for the server's limit).
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once. A peer's HTTP/3 uses up to three
    /// (control and two QPACK streams; we open only the control stream). Default 256.
    pub max_concurrent_uni_streams: u32,
    /// Bytes of received datagrams quinn buffers before the application reads them (the oldest
    /// are dropped beyond). Always advertised, so the `max_datagram_frame_size` transport
    /// parameter that WebTransport needs is non-zero. Default 4 MiB.
    pub datagram_receive_buffer: usize,
    /// Bytes of outgoing datagrams quinn queues before dropping the oldest. Default 4 MiB.
    /// Datagrams are built in 32 KiB blocks that are reused once sent: a connection keeps
    /// at most this many bytes of them (the most quinn can hold queued anyway), gives them
    /// back while its datagram rate falls, and holds what it has while it sends none.
    pub datagram_send_buffer: usize,
    /// Congestion controller. Default CUBIC.
    pub congestion_controller: CongestionController,
    /// RTT assumed before the first measurement. Default 333 ms (RFC 9002 §6.2.2's kInitialRtt).
    #[serde(with = "duration_serde")]
    pub initial_rtt: Duration,
    /// Probe for a path MTU above 1200 bytes (RFC 8899 DPLPMTUD): larger datagrams and fewer
    /// packets. Default on. The search tries 1326 bytes, then quinn's upper bound (1452)
    /// at once when the next halving step would be under [`MTU_SEARCH_STEP`] bytes: two
    /// probes on an Ethernet-sized path instead of quinn's default four.
    pub mtu_discovery: bool,
    /// Bytes the kernel may queue on the endpoint's UDP socket before it drops what arrives
    /// (SO_RCVBUF); 0 keeps the system's default. Packets that arrive faster than the
    /// endpoint reads them in a burst are lost before QUIC sees them: 32 handshakes at once
    /// overflowed Linux's usual default (208 KiB), and every lost Initial cost its client a
    /// probe timeout of about a second (docs/benchmarks.md). The system caps the size (Linux:
    /// `net.core.rmem_max`; a capped size is logged at debug level). Default 2 MiB.
    pub socket_receive_buffer: usize,
    /// Bytes the kernel may queue to send on the endpoint's UDP socket (SO_SNDBUF); 0, the
    /// default, keeps the system's (a full buffer makes quinn wait, it loses nothing).
    pub socket_send_buffer: usize,
}

/// The smallest MTU change the path-MTU search probes for (quinn's `minimum_change`,
/// default 20). Each probe is a padded packet that the receiver parses a byte at a time
/// (quinn reads PADDING as one-byte frames): with 64, a handshake costs 11 % fewer
/// instructions (docs/benchmarks.md), the search still ends at 1452 on paths that carry
/// it, and on a narrower path it ends within 64 bytes of the largest size that fits.
pub const MTU_SEARCH_STEP: u16 = 64;

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Some(Duration::from_secs(10)),
            stream_receive_window: 8 * MIB,
            receive_window: 16 * MIB,
            send_window: 16 * MIB,
            max_concurrent_bidi_streams: 256,
            max_concurrent_uni_streams: 256,
            datagram_receive_buffer: 4 * MIB as usize,
            datagram_send_buffer: 4 * MIB as usize,
            congestion_controller: CongestionController::Cubic,
            initial_rtt: Duration::from_millis(333),
            mtu_discovery: true,
            socket_receive_buffer: 2 * MIB as usize,
            socket_send_buffer: 0,
        }
    }
}

impl TransportConfig {
    /// Builds quinn's transport config.
    ///
    /// Values that [`validate`](Self::validate) would reject are clamped into quinn's ranges
    /// instead of panicking (a window above [`VARINT_MAX`] becomes `VARINT_MAX`, an idle timeout
    /// too large for QUIC disables the idle timeout); validate first to be told about them.
    pub fn to_quinn(&self) -> quinn::TransportConfig {
        let varint = |v: u64| quinn::VarInt::from_u64(v).unwrap_or(quinn::VarInt::MAX);
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.max_idle_timeout).ok())
            .keep_alive_interval(self.keep_alive_interval)
            .stream_receive_window(varint(self.stream_receive_window))
            .receive_window(varint(self.receive_window))
            .send_window(self.send_window)
            .max_concurrent_bidi_streams(self.max_concurrent_bidi_streams.into())
            .max_concurrent_uni_streams(self.max_concurrent_uni_streams.into())
            // `Some` makes quinn advertise max_datagram_frame_size (RFC 9221 §3), which
            // WebTransport datagrams require.
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer)
            .initial_rtt(self.initial_rtt)
            .mtu_discovery_config(self.mtu_discovery.then(|| {
                let mut m = quinn::MtuDiscoveryConfig::default();
                m.minimum_change(MTU_SEARCH_STEP);
                m
            }));
        let factory: Arc<dyn quinn::congestion::ControllerFactory + Send + Sync> = match self
            .congestion_controller
        {
            CongestionController::Cubic => Arc::new(quinn::congestion::CubicConfig::default()),
            CongestionController::NewReno => Arc::new(quinn::congestion::NewRenoConfig::default()),
            CongestionController::Bbr => Arc::new(quinn::congestion::BbrConfig::default()),
        };
        // Observed, so that diagnostics can tell how many packets are in flight.
        t.congestion_controller_factory(crate::congestion::observed(factory));
        t
    }

    /// Checks every field; field paths in the error start with `transport.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const P: &str = "transport";
        positive(P, "max_idle_timeout", self.max_idle_timeout)?;
        // RFC 9000 §18.2: max_idle_timeout is a varint count of milliseconds.
        if self.max_idle_timeout.as_millis() > u128::from(VARINT_MAX) {
            return Err(ConfigError::invalid(
                "transport.max_idle_timeout",
                "too large for the QUIC transport parameter (2^62 - 1 ms)",
            ));
        }
        if let Some(keep_alive) = self.keep_alive_interval {
            positive(P, "keep_alive_interval", keep_alive)?;
            if keep_alive >= self.max_idle_timeout {
                return Err(ConfigError::invalid(
                    "transport.keep_alive_interval",
                    format!(
                        "{} is not shorter than max_idle_timeout ({}): the connection would \
                         time out between keep-alives",
                        format_duration(keep_alive),
                        format_duration(self.max_idle_timeout)
                    ),
                ));
            }
        }
        window(P, "stream_receive_window", self.stream_receive_window)?;
        window(P, "receive_window", self.receive_window)?;
        window(P, "send_window", self.send_window)?;
        // RFC 9114 §6.1: the client opens the CONNECT request (and our bidi streams) on a
        // bidirectional stream, so a limit of 0 makes WebTransport impossible.
        if self.max_concurrent_bidi_streams == 0 {
            return Err(ConfigError::invalid(
                "transport.max_concurrent_bidi_streams",
                "must be at least 1: requests and WebTransport bidi streams need it",
            ));
        }
        // RFC 9114 §6.2: "the transport parameters sent by both clients and servers MUST allow
        // the peer to create at least three unidirectional streams".
        if self.max_concurrent_uni_streams < 3 {
            return Err(ConfigError::invalid(
                "transport.max_concurrent_uni_streams",
                "must be at least 3: HTTP/3 needs the control and two QPACK streams \
                 (RFC 9114 §6.2)",
            ));
        }
        // RFC 9297 §2.1.1 / draft-ietf-webtrans-http3 §3.1: datagrams need a non-zero
        // max_datagram_frame_size, which quinn derives from this buffer.
        if self.datagram_receive_buffer == 0 {
            return Err(ConfigError::invalid(
                "transport.datagram_receive_buffer",
                "must be > 0: WebTransport requires a non-zero max_datagram_frame_size",
            ));
        }
        if self.datagram_send_buffer == 0 {
            return Err(ConfigError::invalid(
                "transport.datagram_send_buffer",
                "must be > 0 or no datagram can be sent",
            ));
        }
        positive(P, "initial_rtt", self.initial_rtt)?;
        // setsockopt takes a C int.
        for (field, size) in [
            (
                "transport.socket_receive_buffer",
                self.socket_receive_buffer,
            ),
            ("transport.socket_send_buffer", self.socket_send_buffer),
        ] {
            if i32::try_from(size).is_err() {
                return Err(ConfigError::invalid(
                    field,
                    format!("{size} is more than a socket buffer can be (2^31 - 1 bytes)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::client_fails;

    #[test]
    fn default_windows_are_large_and_datagrams_on() {
        let t = TransportConfig::default();
        assert!(t.stream_receive_window >= 8 * MIB);
        assert!(t.receive_window >= 16 * MIB);
        assert!(t.max_concurrent_bidi_streams >= 100 && t.max_concurrent_uni_streams >= 100);
        assert!(t.datagram_receive_buffer >= MIB as usize);
        // Builds without panicking, for every controller and with clamping.
        for cc in [
            CongestionController::Cubic,
            CongestionController::NewReno,
            CongestionController::Bbr,
        ] {
            let t = TransportConfig {
                congestion_controller: cc,
                receive_window: u64::MAX,
                max_idle_timeout: Duration::MAX,
                mtu_discovery: false,
                ..TransportConfig::default()
            };
            let _ = t.to_quinn();
        }
    }

    #[test]
    fn each_transport_rule_names_its_field() {
        client_fails("transport.max_idle_timeout", |c| {
            c.transport.max_idle_timeout = Duration::ZERO
        });
        client_fails("transport.max_idle_timeout", |c| {
            c.transport.max_idle_timeout = Duration::from_secs(u64::MAX / 2);
            c.transport.keep_alive_interval = None;
        });
        client_fails("transport.keep_alive_interval", |c| {
            c.transport.keep_alive_interval = Some(Duration::from_secs(30))
        });
        client_fails("transport.keep_alive_interval", |c| {
            c.transport.keep_alive_interval = Some(Duration::ZERO)
        });
        client_fails("transport.stream_receive_window", |c| {
            c.transport.stream_receive_window = 0
        });
        client_fails("transport.receive_window", |c| {
            c.transport.receive_window = 1 << 62
        });
        client_fails("transport.send_window", |c| c.transport.send_window = 0);
        client_fails("transport.max_concurrent_bidi_streams", |c| {
            c.transport.max_concurrent_bidi_streams = 0
        });
        client_fails("transport.max_concurrent_uni_streams", |c| {
            c.transport.max_concurrent_uni_streams = 2
        });
        client_fails("transport.datagram_receive_buffer", |c| {
            c.transport.datagram_receive_buffer = 0
        });
        client_fails("transport.datagram_send_buffer", |c| {
            c.transport.datagram_send_buffer = 0
        });
        client_fails("transport.initial_rtt", |c| {
            c.transport.initial_rtt = Duration::ZERO
        });
        client_fails("transport.socket_receive_buffer", |c| {
            c.transport.socket_receive_buffer = 1 << 31
        });
        client_fails("transport.socket_send_buffer", |c| {
            c.transport.socket_send_buffer = usize::MAX
        });
    }
}
