//! [`SessionLimits`]: the caps on what a peer can make the WebTransport layer buffer.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use webtransport_proto::connection::{CapsuleFraming, FlowLimits};

use super::{ConfigError, KIB, MIB, VARINT_MAX};

/// The TOML form of [`CapsuleFraming`]: `"auto"`, `"framed"` or `"unframed"`.
#[derive(Serialize, Deserialize)]
#[serde(remote = "CapsuleFraming", rename_all = "snake_case")]
enum CapsuleFramingDef {
    Auto,
    Framed,
    Unframed,
}

/// Caps on what a peer can make the WebTransport layer buffer, and the application-side
/// queues. Every buffer a peer can fill has one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLimits {
    /// WebTransport sessions on one connection (advertised as WT_MAX_SESSIONS /
    /// WEBTRANSPORT_MAX_SESSIONS; WT_MAX_SESSIONS is 1 when session flow control is off,
    /// see `max_data`). Default 16: browsers that pool sessions
    /// (`allowPooling`) put several on one connection, and Chromium's own draft-07 mode
    /// advertises 16; the cap keeps one connection's memory bounded. A request counts
    /// from its first byte: requests whose headers are still coming and sessions together
    /// are at most this many (more are refused with H3_REQUEST_REJECTED). Must be >= 1.
    pub max_sessions: u32,
    /// Streams that name a session not yet established (or not yet accepted by the
    /// application) and are held until it is; beyond this they are reset with
    /// WT_BUFFERED_STREAM_REJECTED. Default 32. 0 refuses every early stream.
    pub max_pending_streams: usize,
    /// Datagrams held for a session not yet established; beyond this they are dropped.
    /// Default 64. 0 drops every early datagram.
    pub max_pending_datagrams: usize,
    /// How long streams and datagrams wait for their session (see `max_pending_streams`)
    /// before they are refused with WT_BUFFERED_STREAM_REJECTED or dropped, and how long
    /// a request's HEADERS may take to come whole before the request is refused with
    /// H3_REQUEST_REJECTED. Default 5 s.
    #[serde(with = "super::serde_util::duration_serde")]
    pub pending_timeout: Duration,
    /// Accepted incoming streams queued per session until the application takes them.
    /// Default 256 (the default stream concurrency, so QUIC flow control is the limit).
    pub incoming_stream_queue: usize,
    /// Received datagrams queued per session until the application reads them (the oldest are
    /// dropped beyond). Default 4096: about what QUIC's own receive buffer
    /// (`transport.datagram_receive_buffer`, 4 MiB) holds of 1 KB datagrams. The connection's
    /// driver moves datagrams out of that buffer as they come, so a smaller queue loses
    /// datagrams, while the reader is descheduled, that QUIC alone would have kept
    /// (docs/benchmarks.md, stop 32). Each datagram is at most one QUIC packet (~1.4 KB on
    /// the internet), so a session whose application reads none holds ~6 MB at most.
    pub incoming_datagram_queue: usize,
    /// Largest header section we accept, advertised as SETTINGS_MAX_FIELD_SECTION_SIZE
    /// (RFC 9114 §4.2.2). A server answers a larger request 431, from its HEADERS frame's
    /// length alone when that is over (nothing of it is held). Default 16 KiB, what
    /// Chromium sends.
    pub max_field_section_size: u64,
    /// Largest capsule payload buffered on a CONNECT stream. Default 64 KiB (room for a
    /// DATAGRAM capsule of maximal size); must be >= 1028 so a CLOSE_WEBTRANSPORT_SESSION
    /// capsule with a maximal reason fits.
    pub max_capsule_size: u64,
    /// How capsules are written on CONNECT streams. pywebtransport 0.8.1 wants them
    /// without the HTTP/3 DATA frame around them and closes the connection with
    /// H3_FRAME_UNEXPECTED on a framed one (docs/protocol.md). `auto` (the default) frames
    /// them unless the peer shows it is that peer: see docs/design.md, "Capsule framing".
    /// Capsules are read in both forms whatever this says.
    #[serde(with = "CapsuleFramingDef")]
    pub capsule_framing: CapsuleFraming,
    /// Session flow control (draft-ietf-webtrans-http3 §5, draft-13 and later peers): the
    /// stream payload bytes a peer may send in one session beyond what the application
    /// has read. Announced as SETTINGS_WT_INITIAL_MAX_DATA and kept open with WT_MAX_DATA
    /// as the application reads; a peer that sends more gets WT_FLOW_CONTROL_ERROR.
    /// Default 16 MiB (the default QUIC connection window). With all three flow-control
    /// limits at 0, flow control is off: no WT_INITIAL_* settings are sent, WT_MAX_SESSIONS
    /// is 1 (draft-14 counts a larger value as declaring flow control), and a draft-13+
    /// peer gets one session per connection. Safari is reported to refuse a server without
    /// the WT_INITIAL_* settings (docs/interop.md).
    pub max_data: u64,
    /// Session flow control: bidirectional streams a peer may have open in one session
    /// (SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI, then WT_MAX_STREAMS as streams close); one
    /// more is WT_FLOW_CONTROL_ERROR. Default 256.
    pub max_streams_bidi: u64,
    /// Session flow control: unidirectional streams, likewise. Default 256.
    pub max_streams_uni: u64,
    /// Bytes queued for one of our HTTP/3 streams (the control stream, a CONNECT stream)
    /// that the peer gives no flow credit to; beyond this the connection is closed with
    /// H3_EXCESSIVE_LOAD. Default 256 KiB (such a stream carries a few capsules).
    pub max_write_backlog: usize,
}

/// Payload of the largest CLOSE_WEBTRANSPORT_SESSION capsule: a 32-bit code and a reason of at
/// most 1024 bytes (draft-ietf-webtrans-http3 §5 "Session Termination").
const MAX_CLOSE_CAPSULE_PAYLOAD: u64 = 4 + 1024;

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 16,
            max_pending_streams: 32,
            max_pending_datagrams: 64,
            pending_timeout: Duration::from_secs(5),
            incoming_stream_queue: 256,
            incoming_datagram_queue: 4096,
            max_field_section_size: 16 * KIB,
            max_capsule_size: 64 * KIB,
            capsule_framing: CapsuleFraming::Auto,
            max_data: 16 * MIB,
            max_streams_bidi: 256,
            max_streams_uni: 256,
            max_write_backlog: 256 * KIB as usize,
        }
    }
}

impl SessionLimits {
    /// The flow-control windows, in the protocol core's form.
    pub fn flow_limits(&self) -> FlowLimits {
        FlowLimits {
            max_data: self.max_data,
            max_streams_bidi: self.max_streams_bidi,
            max_streams_uni: self.max_streams_uni,
        }
    }

    /// Checks every field; field paths in the error start with `limits.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError::invalid(
                "limits.max_sessions",
                "must be at least 1 (Safari also refuses a server advertising 0)",
            ));
        }
        super::validate::positive("limits", "pending_timeout", self.pending_timeout)?;
        if self.incoming_stream_queue == 0 {
            return Err(ConfigError::invalid(
                "limits.incoming_stream_queue",
                "must be at least 1: a zero-capacity queue can never deliver a stream",
            ));
        }
        if self.incoming_datagram_queue == 0 {
            return Err(ConfigError::invalid(
                "limits.incoming_datagram_queue",
                "must be at least 1: a zero-capacity queue can never deliver a datagram",
            ));
        }
        if self.max_field_section_size == 0 || self.max_field_section_size > VARINT_MAX {
            return Err(ConfigError::invalid(
                "limits.max_field_section_size",
                "must be between 1 and 2^62 - 1 (it is sent as an HTTP/3 setting)",
            ));
        }
        if self.max_capsule_size < MAX_CLOSE_CAPSULE_PAYLOAD || self.max_capsule_size > VARINT_MAX {
            return Err(ConfigError::invalid(
                "limits.max_capsule_size",
                format!(
                    "must be between {MAX_CLOSE_CAPSULE_PAYLOAD} (a CLOSE_WEBTRANSPORT_SESSION \
                     capsule with a 1024-byte reason) and 2^62 - 1"
                ),
            ));
        }
        if self.max_data > VARINT_MAX {
            return Err(ConfigError::invalid(
                "limits.max_data",
                "must be at most 2^62 - 1 (it is sent as an HTTP/3 setting)",
            ));
        }
        for (field, v) in [
            ("limits.max_streams_bidi", self.max_streams_bidi),
            ("limits.max_streams_uni", self.max_streams_uni),
        ] {
            if v > 1 << 60 {
                return Err(ConfigError::invalid(
                    field,
                    "must be at most 2^60 (draft-ietf-webtrans-http3 §5.6.2)",
                ));
            }
        }
        if self.max_write_backlog < 64 * KIB as usize {
            return Err(ConfigError::invalid(
                "limits.max_write_backlog",
                "must be at least 64 KiB: a CONNECT stream must hold a few capsules",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::client_fails;

    #[test]
    fn each_limit_rule_names_its_field() {
        client_fails("limits.max_sessions", |c| c.limits.max_sessions = 0);
        client_fails("limits.pending_timeout", |c| {
            c.limits.pending_timeout = std::time::Duration::ZERO
        });
        client_fails("limits.incoming_stream_queue", |c| {
            c.limits.incoming_stream_queue = 0
        });
        client_fails("limits.incoming_datagram_queue", |c| {
            c.limits.incoming_datagram_queue = 0
        });
        client_fails("limits.max_field_section_size", |c| {
            c.limits.max_field_section_size = 0
        });
        client_fails("limits.max_capsule_size", |c| {
            c.limits.max_capsule_size = 1000
        });
        client_fails("limits.max_data", |c| c.limits.max_data = u64::MAX);
        client_fails("limits.max_streams_uni", |c| {
            c.limits.max_streams_uni = (1 << 60) + 1
        });
        client_fails("limits.max_write_backlog", |c| {
            c.limits.max_write_backlog = 1000
        });
    }
}
