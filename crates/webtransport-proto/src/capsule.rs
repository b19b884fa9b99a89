//! Capsules (RFC 9297 §3) and the WebTransport capsules (draft-ietf-webtrans-http3 §5-6).
//!
//! A capsule is `Type (i) | Length (i) | Value`. On an HTTP/3 CONNECT stream capsules travel
//! inside DATA frames, and one capsule may span several frames: [`CapsuleReader`] takes the
//! concatenated DATA payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Code;
use crate::varint::{self, VarInt};

/// Capsule type codepoints.
pub mod ty {
    /// DATAGRAM (RFC 9297 §3.5).
    pub const DATAGRAM: u64 = 0x00;
    /// CLOSE_WEBTRANSPORT_SESSION.
    pub const CLOSE_WEBTRANSPORT_SESSION: u64 = 0x2843;
    /// DRAIN_WEBTRANSPORT_SESSION.
    pub const DRAIN_WEBTRANSPORT_SESSION: u64 = 0x78ae;
    /// WT_MAX_DATA.
    pub const WT_MAX_DATA: u64 = 0x190b_4d3d;
    /// WT_MAX_STREAMS (bidirectional).
    pub const WT_MAX_STREAMS_BIDI: u64 = 0x190b_4d3f;
    /// WT_MAX_STREAMS (unidirectional).
    pub const WT_MAX_STREAMS_UNI: u64 = 0x190b_4d40;
    /// WT_DATA_BLOCKED.
    pub const WT_DATA_BLOCKED: u64 = 0x190b_4d41;
    /// WT_STREAMS_BLOCKED (bidirectional).
    pub const WT_STREAMS_BLOCKED_BIDI: u64 = 0x190b_4d43;
    /// WT_STREAMS_BLOCKED (unidirectional).
    pub const WT_STREAMS_BLOCKED_UNI: u64 = 0x190b_4d44;
    /// WT_MAX_STREAM_DATA (draft-ietf-webtrans-http2 only; prohibited over HTTP/3).
    pub const WT_MAX_STREAM_DATA: u64 = 0x190b_4d3e;
    /// WT_STREAM_DATA_BLOCKED (draft-ietf-webtrans-http2 only; prohibited over HTTP/3).
    pub const WT_STREAM_DATA_BLOCKED: u64 = 0x190b_4d42;

    /// Whether `t` is one of WebTransport over HTTP/3's session capsules (close, drain and
    /// the six flow-control capsules): the types a CONNECT stream may carry bare, unframed.
    pub const fn is_session_capsule(t: u64) -> bool {
        matches!(
            t,
            CLOSE_WEBTRANSPORT_SESSION
                | DRAIN_WEBTRANSPORT_SESSION
                | WT_MAX_DATA
                | WT_MAX_STREAMS_BIDI
                | WT_MAX_STREAMS_UNI
                | WT_DATA_BLOCKED
                | WT_STREAMS_BLOCKED_BIDI
                | WT_STREAMS_BLOCKED_UNI
        )
    }

    /// Whether `t` is a reserved capsule type `0x29 * N + 0x17` (RFC 9297 §5.4).
    pub const fn is_grease(t: u64) -> bool {
        t >= 0x17 && (t - 0x17) % 0x29 == 0
    }
}

/// The longest close reason allowed (draft-ietf-webtrans-http3 §5: "at most 1024 bytes").
pub const MAX_CLOSE_REASON: usize = 1024;

/// A parsed capsule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capsule {
    /// DATAGRAM carrying an HTTP datagram payload.
    Datagram(Bytes),
    /// CLOSE_WEBTRANSPORT_SESSION: application error code and reason.
    CloseSession {
        /// Application error code.
        code: u32,
        /// UTF-8 reason, at most 1024 bytes.
        reason: String,
    },
    /// DRAIN_WEBTRANSPORT_SESSION.
    DrainSession,
    /// WT_MAX_DATA.
    MaxData(VarInt),
    /// WT_MAX_STREAMS; `bidi` tells which kind.
    MaxStreams {
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// The new limit.
        max: VarInt,
    },
    /// WT_DATA_BLOCKED.
    DataBlocked(VarInt),
    /// WT_STREAMS_BLOCKED.
    StreamsBlocked {
        /// Bidirectional or unidirectional.
        bidi: bool,
        /// The limit the sender is blocked at.
        max: VarInt,
    },
    /// A capsule type this crate does not handle, or GREASE; receivers skip it
    /// (RFC 9297 §3.2). Encoding writes a zero-filled value.
    Unknown {
        /// Capsule type.
        ty: u64,
        /// Value length.
        len: u64,
    },
}

/// A capsule that is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapsuleError {
    /// The value does not have the layout its type requires.
    #[error("malformed {name} capsule: {what}")]
    Malformed {
        /// Capsule name.
        name: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The close reason is longer than 1024 bytes.
    #[error("close reason of {0} bytes exceeds 1024")]
    ReasonTooLong(usize),
    /// The close reason is not UTF-8.
    #[error("close reason is not valid UTF-8")]
    ReasonNotUtf8,
    /// A capsule this endpoint would have to buffer is larger than its cap.
    #[error("capsule type {ty:#x} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Capsule type.
        ty: u64,
        /// Declared length.
        len: u64,
        /// Our cap.
        max: u64,
    },
    /// The stream ended inside a capsule (RFC 9297 §3.3).
    #[error("stream ended inside a capsule")]
    Truncated,
}

impl CapsuleError {
    /// The error code: RFC 9297 §3.3 makes a malformed capsule a malformed HTTP message
    /// (H3_MESSAGE_ERROR, RFC 9114 §4.1.2); an oversized one is H3_EXCESSIVE_LOAD.
    pub fn code(&self) -> Code {
        match self {
            CapsuleError::TooLarge { .. } => Code::H3_EXCESSIVE_LOAD,
            _ => Code::H3_MESSAGE_ERROR,
        }
    }
}

fn one_varint(value: &[u8], name: &'static str) -> Result<VarInt, CapsuleError> {
    match VarInt::decode(value) {
        Some((v, n)) if n == value.len() => Ok(v),
        _ => Err(CapsuleError::Malformed {
            name,
            what: "value is not exactly one varint",
        }),
    }
}

impl Capsule {
    /// A CLOSE_WEBTRANSPORT_SESSION capsule, checking the reason's length.
    pub fn close(code: u32, reason: impl Into<String>) -> Result<Capsule, CapsuleError> {
        let reason = reason.into();
        if reason.len() > MAX_CLOSE_REASON {
            return Err(CapsuleError::ReasonTooLong(reason.len()));
        }
        Ok(Capsule::CloseSession { code, reason })
    }

    /// Builds a capsule from its type and complete value.
    pub fn from_value(ty: u64, value: Bytes) -> Result<Capsule, CapsuleError> {
        Ok(match ty {
            ty::DATAGRAM => Capsule::Datagram(value),
            ty::CLOSE_WEBTRANSPORT_SESSION => {
                if value.len() < 4 {
                    return Err(CapsuleError::Malformed {
                        name: "CLOSE_WEBTRANSPORT_SESSION",
                        what: "shorter than the 32-bit error code",
                    });
                }
                let code = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                let reason = &value[4..];
                // draft-ietf-webtrans-http3 §5: the message "MUST NOT exceed 1024 bytes" and
                // is UTF-8.
                if reason.len() > MAX_CLOSE_REASON {
                    return Err(CapsuleError::ReasonTooLong(reason.len()));
                }
                let reason = std::str::from_utf8(reason)
                    .map_err(|_| CapsuleError::ReasonNotUtf8)?
                    .to_owned();
                Capsule::CloseSession { code, reason }
            }
            ty::DRAIN_WEBTRANSPORT_SESSION => {
                if !value.is_empty() {
                    return Err(CapsuleError::Malformed {
                        name: "DRAIN_WEBTRANSPORT_SESSION",
                        what: "value must be empty",
                    });
                }
                Capsule::DrainSession
            }
            ty::WT_MAX_DATA => Capsule::MaxData(one_varint(&value, "WT_MAX_DATA")?),
            ty::WT_MAX_STREAMS_BIDI | ty::WT_MAX_STREAMS_UNI => Capsule::MaxStreams {
                bidi: ty == ty::WT_MAX_STREAMS_BIDI,
                max: one_varint(&value, "WT_MAX_STREAMS")?,
            },
            ty::WT_DATA_BLOCKED => Capsule::DataBlocked(one_varint(&value, "WT_DATA_BLOCKED")?),
            ty::WT_STREAMS_BLOCKED_BIDI | ty::WT_STREAMS_BLOCKED_UNI => Capsule::StreamsBlocked {
                bidi: ty == ty::WT_STREAMS_BLOCKED_BIDI,
                max: one_varint(&value, "WT_STREAMS_BLOCKED")?,
            },
            t => Capsule::Unknown {
                ty: t,
                len: value.len() as u64,
            },
        })
    }

    /// The capsule type.
    pub fn ty(&self) -> u64 {
        match self {
            Capsule::Datagram(_) => ty::DATAGRAM,
            Capsule::CloseSession { .. } => ty::CLOSE_WEBTRANSPORT_SESSION,
            Capsule::DrainSession => ty::DRAIN_WEBTRANSPORT_SESSION,
            Capsule::MaxData(_) => ty::WT_MAX_DATA,
            Capsule::MaxStreams { bidi: true, .. } => ty::WT_MAX_STREAMS_BIDI,
            Capsule::MaxStreams { bidi: false, .. } => ty::WT_MAX_STREAMS_UNI,
            Capsule::DataBlocked(_) => ty::WT_DATA_BLOCKED,
            Capsule::StreamsBlocked { bidi: true, .. } => ty::WT_STREAMS_BLOCKED_BIDI,
            Capsule::StreamsBlocked { bidi: false, .. } => ty::WT_STREAMS_BLOCKED_UNI,
            Capsule::Unknown { ty, .. } => *ty,
        }
    }

    fn value_len(&self) -> usize {
        match self {
            Capsule::Datagram(b) => b.len(),
            Capsule::CloseSession { reason, .. } => 4 + reason.len(),
            Capsule::DrainSession => 0,
            Capsule::MaxData(v) | Capsule::DataBlocked(v) => v.encoded_len(),
            Capsule::MaxStreams { max, .. } | Capsule::StreamsBlocked { max, .. } => {
                max.encoded_len()
            }
            Capsule::Unknown { len, .. } => *len as usize,
        }
    }

    /// Bytes [`Capsule::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let n = self.value_len();
        varint::encoded_len(self.ty()) + varint::encoded_len(n as u64) + n
    }

    /// Writes the capsule.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        varint::encode(self.ty(), out);
        varint::encode(self.value_len() as u64, out);
        match self {
            Capsule::Datagram(b) => out.put_slice(b),
            Capsule::CloseSession { code, reason } => {
                out.put_u32(*code);
                out.put_slice(reason.as_bytes());
            }
            Capsule::DrainSession => {}
            Capsule::MaxData(v) | Capsule::DataBlocked(v) => v.encode(out),
            Capsule::MaxStreams { max, .. } | Capsule::StreamsBlocked { max, .. } => {
                max.encode(out)
            }
            Capsule::Unknown { len, .. } => out.put_bytes(0, *len as usize),
        }
    }

    /// Parses one complete capsule from the front of `buf`; `Ok(None)` means more bytes
    /// are needed.
    pub fn decode(buf: &[u8], max_len: u64) -> Result<Option<(Capsule, usize)>, CapsuleError> {
        let mut r = CapsuleReader::new(max_len);
        r.push(buf);
        match r.poll()? {
            Some(c) => Ok(Some((c, buf.len() - r.buffered()))),
            None => Ok(None),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Header,
    Value { ty: u64, len: u64 },
    Skip { ty: u64, len: u64, remaining: u64 },
}

/// Streaming capsule parser over the concatenated DATA payload of a CONNECT stream.
///
/// Known capsules are buffered up to `max_len`; unknown and GREASE capsules are skipped
/// without buffering, whatever their length.
#[derive(Debug)]
pub struct CapsuleReader {
    buf: BytesMut,
    state: ReadState,
    max_len: u64,
}

impl CapsuleReader {
    /// A reader that refuses known capsules longer than `max_len` bytes.
    pub fn new(max_len: u64) -> Self {
        CapsuleReader {
            buf: BytesMut::new(),
            state: ReadState::Header,
            max_len,
        }
    }

    /// Appends DATA payload bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Call when the stream ends: an error if it ended inside a capsule.
    pub fn finish(&self) -> Result<(), CapsuleError> {
        if matches!(self.state, ReadState::Header) && self.buf.is_empty() {
            Ok(())
        } else {
            Err(CapsuleError::Truncated)
        }
    }

    /// The next complete capsule; `Ok(None)` when more bytes are needed. Skipped unknown
    /// capsules are reported as [`Capsule::Unknown`] once fully skipped.
    pub fn poll(&mut self) -> Result<Option<Capsule>, CapsuleError> {
        loop {
            match self.state {
                ReadState::Header => {
                    let Some((t, a)) = varint::decode(&self.buf) else {
                        return Ok(None);
                    };
                    let Some((len, b)) = varint::decode(&self.buf[a..]) else {
                        return Ok(None);
                    };
                    self.buf.advance(a + b);
                    let known = t == ty::DATAGRAM || ty::is_session_capsule(t);
                    if known {
                        if len > self.max_len {
                            return Err(CapsuleError::TooLarge {
                                ty: t,
                                len,
                                max: self.max_len,
                            });
                        }
                        self.state = ReadState::Value { ty: t, len };
                    } else {
                        self.state = ReadState::Skip {
                            ty: t,
                            len,
                            remaining: len,
                        };
                    }
                }
                ReadState::Value { ty, len } => {
                    if (self.buf.len() as u64) < len {
                        return Ok(None);
                    }
                    let value = self.buf.split_to(len as usize).freeze();
                    self.state = ReadState::Header;
                    return Capsule::from_value(ty, value).map(Some);
                }
                ReadState::Skip { ty, len, remaining } => {
                    let n = (self.buf.len() as u64).min(remaining);
                    self.buf.advance(n as usize);
                    if n < remaining {
                        self.state = ReadState::Skip {
                            ty,
                            len,
                            remaining: remaining - n,
                        };
                        return Ok(None);
                    }
                    self.state = ReadState::Header;
                    return Ok(Some(Capsule::Unknown { ty, len }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::hex;

    #[test]
    fn round_trips() {
        let all = [
            Capsule::Datagram(Bytes::from_static(b"dg")),
            Capsule::close(0, "").unwrap(),
            Capsule::close(u32::MAX, "x".repeat(1024)).unwrap(),
            Capsule::close(4242, "bye from chromium").unwrap(),
            Capsule::DrainSession,
            Capsule::MaxData(VarInt::from_u32(1 << 20)),
            Capsule::MaxStreams {
                bidi: true,
                max: VarInt::from_u32(100),
            },
            Capsule::MaxStreams {
                bidi: false,
                max: VarInt::from_u32(7),
            },
            Capsule::DataBlocked(VarInt::from_u32(9)),
            Capsule::StreamsBlocked {
                bidi: true,
                max: VarInt::from_u32(1),
            },
            Capsule::StreamsBlocked {
                bidi: false,
                max: VarInt::from_u32(2),
            },
            Capsule::Unknown {
                ty: 0x17 + 0x29 * 5,
                len: 3,
            },
        ];
        for c in all {
            let mut out = Vec::new();
            c.encode(&mut out);
            assert_eq!(out.len(), c.encoded_len(), "{c:?}");
            let (d, n) = Capsule::decode(&out, 4096).unwrap().unwrap();
            assert_eq!((d, n), (c.clone(), out.len()));
            for cut in 0..out.len() {
                assert_eq!(
                    Capsule::decode(&out[..cut], 4096),
                    Ok(None),
                    "{c:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn chromium_close_and_grease_capsules() {
        let c = Capsule::from_value(
            ty::CLOSE_WEBTRANSPORT_SESSION,
            Bytes::from(hex("000010926279652066726f6d206368726f6d69756d")),
        )
        .unwrap();
        assert_eq!(c, Capsule::close(4242, "bye from chromium").unwrap());
        assert!(ty::is_grease(0xb3da0b70a613a59));
        let mut wire = Vec::new();
        varint::encode(0xb3da0b70a613a59, &mut wire);
        varint::encode(2, &mut wire);
        wire.extend_from_slice(&hex("6065"));
        Capsule::close(4242, "bye from chromium")
            .unwrap()
            .encode(&mut wire);
        let mut r = CapsuleReader::new(64);
        for b in &wire {
            r.push(std::slice::from_ref(b));
            if let Some(c) = r.poll().unwrap() {
                if let Capsule::Unknown { ty, len } = c {
                    assert_eq!((ty, len), (0xb3da0b70a613a59, 2));
                } else {
                    assert_eq!(c, Capsule::close(4242, "bye from chromium").unwrap());
                }
            }
        }
        r.finish().unwrap();
    }

    #[test]
    fn malformed_capsules() {
        let mk = |t: u64, v: &[u8]| {
            let mut w = Vec::new();
            varint::encode(t, &mut w);
            varint::encode(v.len() as u64, &mut w);
            w.extend_from_slice(v);
            w
        };
        let long = [&[0u8, 0, 0, 1][..], &[b'a'; 1025]].concat();
        let cases: Vec<(Vec<u8>, Code)> = vec![
            (
                mk(ty::CLOSE_WEBTRANSPORT_SESSION, &[0, 0, 1]),
                Code::H3_MESSAGE_ERROR,
            ),
            (
                mk(ty::CLOSE_WEBTRANSPORT_SESSION, &long),
                Code::H3_EXCESSIVE_LOAD,
            ),
            (
                mk(ty::CLOSE_WEBTRANSPORT_SESSION, &[0, 0, 0, 1, 0xff, 0xfe]),
                Code::H3_MESSAGE_ERROR,
            ),
            (
                mk(ty::DRAIN_WEBTRANSPORT_SESSION, &[1]),
                Code::H3_MESSAGE_ERROR,
            ),
            (mk(ty::WT_MAX_DATA, &[0x40]), Code::H3_MESSAGE_ERROR),
            (mk(ty::WT_MAX_DATA, &[1, 2]), Code::H3_MESSAGE_ERROR),
        ];
        for (bytes, code) in cases {
            let e = Capsule::decode(&bytes, 1024).expect_err(&format!("{bytes:02x?}"));
            assert_eq!(e.code(), code, "{bytes:02x?}: {e}");
        }
        // With a cap large enough to buffer it, the 1025-byte reason is refused as such.
        let e = Capsule::decode(&mk(ty::CLOSE_WEBTRANSPORT_SESSION, &long), 1 << 20).unwrap_err();
        assert_eq!(e, CapsuleError::ReasonTooLong(1025));
        assert_eq!(e.code(), Code::H3_MESSAGE_ERROR);
        assert!(Capsule::close(1, "x".repeat(1025)).is_err());
        // Ending inside a capsule.
        let mut r = CapsuleReader::new(64);
        r.push(&mk(ty::WT_MAX_DATA, &[5])[..2]);
        assert_eq!(r.poll(), Ok(None));
        assert_eq!(r.finish(), Err(CapsuleError::Truncated));
    }
}
