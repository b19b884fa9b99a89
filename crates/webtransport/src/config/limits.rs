//! [`SessionLimits`]: the caps on what a peer can make the WebTransport layer buffer.

use serde::{Deserialize, Serialize};

use super::{ConfigError, KIB, VARINT_MAX};

/// Caps on what a peer can make the WebTransport layer buffer, and the application-side
/// queues. Every buffer a peer can fill has one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionLimits {
    /// WebTransport sessions on one connection (advertised as WT_MAX_SESSIONS /
    /// WEBTRANSPORT_MAX_SESSIONS). Default 16: browsers that pool sessions
    /// (`allowPooling`) put several on one connection, and Chromium's own draft-07 mode
    /// advertises 16; the cap keeps one connection's memory bounded. Must be >= 1.
    pub max_sessions: u32,
    /// Streams that name a session not yet established (or not yet accepted by the
    /// application) and are held until it is; beyond this they are reset with
    /// WT_BUFFERED_STREAM_REJECTED. Default 32. 0 refuses every early stream.
    pub max_pending_streams: usize,
    /// Datagrams held for a session not yet established; beyond this they are dropped.
    /// Default 64. 0 drops every early datagram.
    pub max_pending_datagrams: usize,
    /// Accepted incoming streams queued per session until the application takes them.
    /// Default 256 (the default stream concurrency, so QUIC flow control is the limit).
    pub incoming_stream_queue: usize,
    /// Received datagrams queued per session until the application reads them (the oldest are
    /// dropped beyond). Default 1024.
    pub incoming_datagram_queue: usize,
    /// Largest header section we accept, advertised as SETTINGS_MAX_FIELD_SECTION_SIZE
    /// (RFC 9114 §4.2.2). Default 16 KiB, what Chromium sends.
    pub max_field_section_size: u64,
    /// Largest capsule payload buffered on a CONNECT stream. Default 64 KiB (room for a
    /// DATAGRAM capsule of maximal size); must be >= 1028 so a CLOSE_WEBTRANSPORT_SESSION
    /// capsule with a maximal reason fits.
    pub max_capsule_size: u64,
    /// Interop switch: write capsules on the CONNECT stream without the HTTP/3 DATA frame
    /// around them. pywebtransport 0.8.1 expects that and closes the connection with
    /// H3_FRAME_UNEXPECTED on a correctly framed close capsule (docs/protocol.md). Capsules
    /// are accepted in both forms whatever this says. Default false.
    pub unframed_capsules: bool,
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
            incoming_stream_queue: 256,
            incoming_datagram_queue: 1024,
            max_field_section_size: 16 * KIB,
            max_capsule_size: 64 * KIB,
            unframed_capsules: false,
        }
    }
}

impl SessionLimits {
    /// Checks every field; field paths in the error start with `limits.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_sessions == 0 {
            return Err(ConfigError::invalid(
                "limits.max_sessions",
                "must be at least 1 (Safari also refuses a server advertising 0)",
            ));
        }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testing::client_fails;

    #[test]
    fn each_limit_rule_names_its_field() {
        client_fails("limits.max_sessions", |c| c.limits.max_sessions = 0);
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
    }
}
