//! Wire error codes: HTTP/3 (RFC 9114 §8.1), QPACK (RFC 9204 §6), HTTP Datagrams
//! (RFC 9297 §5) and WebTransport, plus the mapping of WebTransport application error
//! codes into the HTTP/3 error space.
//!
//! Codes are an open newtype so that a code this crate does not name still round-trips.

use std::fmt;

/// An HTTP/3 application error code, as carried in QUIC CONNECTION_CLOSE, RESET_STREAM
/// and STOP_SENDING frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u64);

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $val:expr, )*) => {
        impl Code {
            $( $(#[$doc])* pub const $name: Code = Code($val); )*

            /// The spec name of a known code.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// No error; used when closing a connection or stream without a problem.
    H3_NO_ERROR = 0x100,
    /// A protocol error without a more specific code.
    H3_GENERAL_PROTOCOL_ERROR = 0x101,
    /// An internal error in the HTTP stack.
    H3_INTERNAL_ERROR = 0x102,
    /// The peer created a stream that will not be accepted.
    H3_STREAM_CREATION_ERROR = 0x103,
    /// A stream required by the connection was closed or reset.
    H3_CLOSED_CRITICAL_STREAM = 0x104,
    /// A frame was received that is not permitted in the current state or stream.
    H3_FRAME_UNEXPECTED = 0x105,
    /// A frame fails layout requirements or has an invalid size.
    H3_FRAME_ERROR = 0x106,
    /// The peer generates excessive load.
    H3_EXCESSIVE_LOAD = 0x107,
    /// A stream or push id was used incorrectly.
    H3_ID_ERROR = 0x108,
    /// A SETTINGS frame was invalid.
    H3_SETTINGS_ERROR = 0x109,
    /// No SETTINGS frame came first on the control stream.
    H3_MISSING_SETTINGS = 0x10a,
    /// A request was rejected without any processing.
    H3_REQUEST_REJECTED = 0x10b,
    /// The request or its response was cancelled.
    H3_REQUEST_CANCELLED = 0x10c,
    /// The client's stream ended without a complete request.
    H3_REQUEST_INCOMPLETE = 0x10d,
    /// The HTTP message was malformed.
    H3_MESSAGE_ERROR = 0x10e,
    /// The TCP connection of a CONNECT request was reset or closed.
    H3_CONNECT_ERROR = 0x10f,
    /// The request should be retried over HTTP/1.1.
    H3_VERSION_FALLBACK = 0x110,
    /// A field section could not be decoded (RFC 9204 §6).
    QPACK_DECOMPRESSION_FAILED = 0x200,
    /// An instruction on the QPACK encoder stream could not be interpreted.
    QPACK_ENCODER_STREAM_ERROR = 0x201,
    /// An instruction on the QPACK decoder stream could not be interpreted.
    QPACK_DECODER_STREAM_ERROR = 0x202,
    /// A malformed HTTP datagram or datagram capsule (RFC 9297 §5).
    H3_DATAGRAM_ERROR = 0x33,
    /// A stream for a session that never came was dropped from the buffer.
    WT_BUFFERED_STREAM_REJECTED = 0x3994_bd84,
    /// The stream's session is closed.
    WT_SESSION_GONE = 0x170d_7b68,
    /// The peer exceeded a WebTransport session flow-control limit.
    WT_FLOW_CONTROL_ERROR = 0x045d_4487,
    /// The application protocol (`wt-protocol`) negotiation failed.
    WT_ALPN_ERROR = 0x0817_b3dd,
    /// The peer's SETTINGS lack what WebTransport requires.
    WT_REQUIREMENTS_NOT_MET = 0x212c_0d48,
}

impl Code {
    /// Whether this is a reserved GREASE code of the form `0x1f * N + 0x21` (RFC 9114 §8.1).
    pub fn is_grease(self) -> bool {
        is_grease_id(self.0)
    }

    /// The HTTP/3 code that carries WebTransport application error `code`
    /// (draft-ietf-webtrans-http3 §4.4, verified against Chromium 156).
    pub fn from_wt_app(code: u32) -> Code {
        Code(wt_to_h3(code))
    }

    /// The WebTransport application code this HTTP/3 code carries, if it is in the
    /// WebTransport range and not a reserved value.
    pub fn to_wt_app(self) -> Option<u32> {
        h3_to_wt(self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({:#x})", self.0),
            None => write!(f, "Code({:#x})", self.0),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<Code> for u64 {
    fn from(c: Code) -> u64 {
        c.0
    }
}

/// Whether `id` is a reserved GREASE value `0x1f * N + 0x21` (RFC 9114 §7.2.8, §7.2.4.1, §8.1).
pub const fn is_grease_id(id: u64) -> bool {
    id >= 0x21 && (id - 0x21) % 0x1f == 0
}

/// The first HTTP/3 code of the WebTransport application error range.
pub const WT_APP_FIRST: u64 = 0x52e4_a40f_a8db;
/// The last HTTP/3 code of the WebTransport application error range (carries `u32::MAX`).
pub const WT_APP_LAST: u64 = wt_to_h3(u32::MAX);

/// Maps a WebTransport application error code onto the HTTP/3 code space: the codes run
/// from [`WT_APP_FIRST`] upwards, stepping over the reserved GREASE values
/// `0x1f * N + 0x21` (one every 0x1f codes).
pub const fn wt_to_h3(n: u32) -> u64 {
    let n = n as u64;
    WT_APP_FIRST + n + n / 0x1e
}

/// The inverse of [`wt_to_h3`]: `None` for codes outside the range and for the reserved
/// values inside it.
pub const fn h3_to_wt(h: u64) -> Option<u32> {
    if h < WT_APP_FIRST || h > WT_APP_LAST || is_grease_id(h) {
        return None;
    }
    let shifted = h - WT_APP_FIRST;
    let n = shifted - shifted / 0x1f;
    if n > u32::MAX as u64 {
        return None;
    }
    Some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wt_mapping_round_trips_and_skips_grease() {
        for n in (0u32..2000).chain([u32::MAX - 100, u32::MAX]) {
            let h = wt_to_h3(n);
            assert!(!is_grease_id(h), "mapped {n} onto GREASE {h:#x}");
            assert_eq!(h3_to_wt(h), Some(n), "n = {n}");
        }
        // Every code in a stretch of the range is either a WT code or GREASE.
        for h in WT_APP_FIRST..WT_APP_FIRST + 500 {
            assert_eq!(h3_to_wt(h).is_none(), is_grease_id(h), "h = {h:#x}");
        }
        assert_eq!(h3_to_wt(WT_APP_FIRST - 1), None);
        assert_eq!(h3_to_wt(WT_APP_LAST + 1), None);
        assert_eq!(wt_to_h3(0), 0x52e4_a40f_a8db);
        // 0x1d is the last code before the first skipped value.
        assert_eq!(wt_to_h3(0x1d), 0x52e4_a40f_a8db + 0x1d);
        assert_eq!(wt_to_h3(0x1e), 0x52e4_a40f_a8db + 0x1f);
    }

    #[test]
    fn names_and_unknown_codes() {
        assert_eq!(
            Code::H3_FRAME_UNEXPECTED.name(),
            Some("H3_FRAME_UNEXPECTED")
        );
        assert_eq!(format!("{:?}", Code(0x1234)), "Code(0x1234)");
        assert!(Code(0x21).is_grease());
        assert!(Code(0x21 + 0x1f * 7).is_grease());
        assert!(!Code::H3_NO_ERROR.is_grease());
    }
}
