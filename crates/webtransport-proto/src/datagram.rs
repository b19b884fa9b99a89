//! HTTP datagrams (RFC 9297 §2.1): `Quarter Stream ID (i) | Payload`.

use bytes::{BufMut, Bytes};

use crate::error::Code;
use crate::stream_header::SessionId;
use crate::varint;

/// A malformed HTTP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is empty or ends inside the quarter stream id.
    #[error("datagram too short for its quarter stream id")]
    Truncated,
    /// The quarter stream id names a stream id beyond 2^62 (RFC 9297 §2.1).
    #[error("quarter stream id {0} is out of range")]
    OutOfRange(u64),
}

impl DatagramError {
    /// RFC 9297 §2.1: such a datagram "MUST be treated as a connection error of type
    /// H3_DATAGRAM_ERROR".
    pub fn code(&self) -> Code {
        Code::H3_DATAGRAM_ERROR
    }
}

/// Splits a received QUIC datagram into the session it belongs to and its payload.
pub fn decode(datagram: &Bytes) -> Result<(SessionId, Bytes), DatagramError> {
    let (q, n) = varint::decode(datagram).ok_or(DatagramError::Truncated)?;
    // RFC 9297 §2.1: the largest legal value is 2^60 - 1 (a stream id / 4).
    if q >= 1 << 60 {
        return Err(DatagramError::OutOfRange(q));
    }
    let session = SessionId::from_stream_id(q * 4).map_err(|_| DatagramError::OutOfRange(q))?;
    Ok((session, datagram.slice(n..)))
}

/// Bytes the datagram header for `session` takes; the payload room is the QUIC datagram
/// size minus this.
pub fn header_len(session: SessionId) -> usize {
    varint::encoded_len(session.quarter())
}

/// Writes the datagram header for `session`.
pub fn encode_header<B: BufMut>(session: SessionId, out: &mut B) {
    varint::encode(session.quarter(), out);
}

/// Builds a whole HTTP datagram.
pub fn encode(session: SessionId, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(header_len(session) + payload.len());
    encode_header(session, &mut out);
    out.extend_from_slice(payload);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for sid in [0u64, 4, 400, 4 * 100_000] {
            let s = SessionId::from_stream_id(sid).unwrap();
            let d = encode(s, b"hi");
            assert_eq!(d.len(), header_len(s) + 2);
            assert_eq!(decode(&d), Ok((s, Bytes::from_static(b"hi"))));
        }
        // Chromium's session 0 prefix.
        assert_eq!(
            &encode(SessionId::from_stream_id(0).unwrap(), b"x")[..],
            &[0x00, b'x']
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(&Bytes::new()), Err(DatagramError::Truncated));
        assert_eq!(
            decode(&Bytes::from_static(&[0x40])),
            Err(DatagramError::Truncated)
        );
        let big = Bytes::from_static(&[0xd0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(&big).unwrap_err().code(), Code::H3_DATAGRAM_ERROR);
    }
}
