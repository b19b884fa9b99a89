//! Stream preambles: the type byte of HTTP/3 unidirectional streams (RFC 9114 §6.2) and
//! the WebTransport stream headers (draft-ietf-webtrans-http3 §4.2-4.3).

use bytes::{BufMut, Bytes};

use crate::error::{is_grease_id, Code};
use crate::frame;
use crate::varint;

/// Unidirectional stream type codepoints.
pub mod uni {
    /// Control stream (RFC 9114 §6.2.1).
    pub const CONTROL: u64 = 0x00;
    /// Push stream (RFC 9114 §6.2.2).
    pub const PUSH: u64 = 0x01;
    /// QPACK encoder stream (RFC 9204 §4.2).
    pub const QPACK_ENCODER: u64 = 0x02;
    /// QPACK decoder stream (RFC 9204 §4.2).
    pub const QPACK_DECODER: u64 = 0x03;
    /// WebTransport unidirectional stream.
    pub const WEBTRANSPORT: u64 = 0x54;
}

/// A WebTransport session id: the QUIC stream id of the session's CONNECT stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(u64);

impl SessionId {
    /// The session of the CONNECT request on `stream_id`. Session ids must be
    /// client-initiated bidirectional stream ids (`id % 4 == 0`).
    pub fn from_stream_id(stream_id: u64) -> Result<SessionId, HeaderError> {
        if stream_id % 4 != 0 || stream_id >= 1 << 62 {
            return Err(HeaderError::InvalidSessionId(stream_id));
        }
        Ok(SessionId(stream_id))
    }

    /// The CONNECT stream id.
    pub fn stream_id(self) -> u64 {
        self.0
    }

    /// The quarter stream id carried in HTTP datagrams (RFC 9297 §2.1).
    pub fn quarter(self) -> u64 {
        self.0 / 4
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What the first bytes of a peer-initiated unidirectional stream say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniStreamHeader {
    /// HTTP/3 control stream.
    Control,
    /// Push stream (never allowed: we send no MAX_PUSH_ID).
    Push,
    /// QPACK encoder stream.
    QpackEncoder,
    /// QPACK decoder stream.
    QpackDecoder,
    /// WebTransport stream of a session.
    WebTransport(SessionId),
    /// An unknown or GREASE type, which the receiver aborts (RFC 9114 §6.2).
    Unknown(u64),
}

/// What the first bytes of a peer-initiated bidirectional stream say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BidiStreamHeader {
    /// A WebTransport stream (signal 0x41) of a session.
    WebTransport(SessionId),
    /// An HTTP/3 request stream: the first frame's type, which the frame parser must see
    /// again, so nothing is consumed.
    Request,
}

/// A stream preamble that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// A session id that is not a client-initiated bidirectional stream id.
    #[error("{0} is not a client-initiated bidirectional stream id")]
    InvalidSessionId(u64),
}

impl HeaderError {
    /// The connection error: RFC 9114 §8.1 H3_ID_ERROR for a stream id used wrongly.
    pub fn code(&self) -> Code {
        Code::H3_ID_ERROR
    }
}

impl UniStreamHeader {
    /// Parses the preamble; `Ok(None)` means more bytes are needed. On success also gives
    /// the bytes consumed.
    pub fn decode(buf: &[u8]) -> Result<Option<(UniStreamHeader, usize)>, HeaderError> {
        let Some((t, n)) = varint::decode(buf) else {
            return Ok(None);
        };
        Ok(Some(match t {
            uni::CONTROL => (UniStreamHeader::Control, n),
            uni::PUSH => (UniStreamHeader::Push, n),
            uni::QPACK_ENCODER => (UniStreamHeader::QpackEncoder, n),
            uni::QPACK_DECODER => (UniStreamHeader::QpackDecoder, n),
            uni::WEBTRANSPORT => {
                let Some((sid, m)) = varint::decode(&buf[n..]) else {
                    return Ok(None);
                };
                (
                    UniStreamHeader::WebTransport(SessionId::from_stream_id(sid)?),
                    n + m,
                )
            }
            other => (UniStreamHeader::Unknown(other), n),
        }))
    }

    /// Writes the preamble.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        match self {
            UniStreamHeader::Control => varint::encode(uni::CONTROL, out),
            UniStreamHeader::Push => varint::encode(uni::PUSH, out),
            UniStreamHeader::QpackEncoder => varint::encode(uni::QPACK_ENCODER, out),
            UniStreamHeader::QpackDecoder => varint::encode(uni::QPACK_DECODER, out),
            UniStreamHeader::WebTransport(s) => {
                varint::encode(uni::WEBTRANSPORT, out);
                varint::encode(s.0, out);
            }
            UniStreamHeader::Unknown(t) => varint::encode(*t, out),
        }
    }

    /// Bytes [`UniStreamHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            UniStreamHeader::Control
            | UniStreamHeader::Push
            | UniStreamHeader::QpackEncoder
            | UniStreamHeader::QpackDecoder => 1,
            UniStreamHeader::WebTransport(s) => {
                varint::encoded_len(uni::WEBTRANSPORT) + varint::encoded_len(s.0)
            }
            UniStreamHeader::Unknown(t) => varint::encoded_len(*t),
        }
    }

    /// Whether an unknown type is a reserved GREASE type (RFC 9114 §6.2.3).
    pub fn is_grease(&self) -> bool {
        matches!(self, UniStreamHeader::Unknown(t) if is_grease_id(*t))
    }
}

impl BidiStreamHeader {
    /// Parses the start of a peer-initiated bidirectional stream.
    pub fn decode(buf: &[u8]) -> Result<Option<(BidiStreamHeader, usize)>, HeaderError> {
        let Some((t, n)) = varint::decode(buf) else {
            return Ok(None);
        };
        if t != frame::ty::WEBTRANSPORT_STREAM {
            return Ok(Some((BidiStreamHeader::Request, 0)));
        }
        let Some((sid, m)) = varint::decode(&buf[n..]) else {
            return Ok(None);
        };
        Ok(Some((
            BidiStreamHeader::WebTransport(SessionId::from_stream_id(sid)?),
            n + m,
        )))
    }

    /// Writes the WebTransport bidi preamble for `session`.
    pub fn encode_webtransport<B: BufMut>(session: SessionId, out: &mut B) {
        varint::encode(frame::ty::WEBTRANSPORT_STREAM, out);
        varint::encode(session.0, out);
    }

    /// Bytes of the WebTransport bidi preamble for `session`.
    pub fn webtransport_len(session: SessionId) -> usize {
        varint::encoded_len(frame::ty::WEBTRANSPORT_STREAM) + varint::encoded_len(session.0)
    }
}

/// The bytes that start a WebTransport stream of a session: the stream type and the
/// session id, at most 10 bytes, held inline so that opening a stream allocates nothing
/// for them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    buf: [u8; Preamble::MAX],
    len: u8,
}

impl Preamble {
    /// The longest preamble: a 2-byte stream type and an 8-byte session id.
    pub const MAX: usize = 10;

    /// The preamble of a bidirectional (`bidi`) or unidirectional stream of `session`.
    pub fn new(session: SessionId, bidi: bool) -> Self {
        let mut buf = [0u8; Self::MAX];
        let mut out = &mut buf[..];
        if bidi {
            BidiStreamHeader::encode_webtransport(session, &mut out);
        } else {
            UniStreamHeader::WebTransport(session).encode(&mut out);
        }
        let len = (Self::MAX - out.len()) as u8;
        Preamble { buf, len }
    }

    /// The preamble as [`Bytes`]: for the first sessions of a connection (ids below 64,
    /// one-byte varints) a static copy, so that handing it to QUIC costs no allocation
    /// (QUIC copies a slice into a buffer of its own, but keeps a `Bytes` as it is).
    pub fn to_bytes(&self) -> Bytes {
        match STATIC_PREAMBLES.get(self.static_index()) {
            Some(p) if p[..] == **self => Bytes::from_static(p),
            _ => Bytes::copy_from_slice(self),
        }
    }

    /// Where this preamble would be in [`STATIC_PREAMBLES`] (an index past its end when
    /// it cannot be there).
    fn static_index(&self) -> usize {
        if self.len != 3 {
            return usize::MAX;
        }
        let bidi = self.buf[1] == two_byte_varint(frame::ty::WEBTRANSPORT_STREAM)[1];
        usize::from(self.buf[2] / 4) * 2 + usize::from(!bidi)
    }
}

/// The preambles of sessions 0, 4, .., 60, bidirectional then unidirectional for each:
/// both stream types are two-byte varints, and these session ids one-byte ones.
static STATIC_PREAMBLES: [[u8; 3]; 32] = static_preambles();

const fn static_preambles() -> [[u8; 3]; 32] {
    let bidi = two_byte_varint(frame::ty::WEBTRANSPORT_STREAM);
    let uni = two_byte_varint(uni::WEBTRANSPORT);
    let mut table = [[0u8; 3]; 32];
    let mut i = 0;
    while i < 16 {
        let id = (i * 4) as u8;
        table[2 * i] = [bidi[0], bidi[1], id];
        table[2 * i + 1] = [uni[0], uni[1], id];
        i += 1;
    }
    table
}

/// A value in 64..16384 as a varint (RFC 9000 §16).
const fn two_byte_varint(v: u64) -> [u8; 2] {
    assert!(v >= 64 && v < 16384);
    [0x40 | (v >> 8) as u8, v as u8]
}

impl std::ops::Deref for Preamble {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Preamble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Preamble({:02x?})", &**self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_bytes_are_its_bytes_static_or_not() {
        for sid in (0u64..200).step_by(4).chain([(1 << 62) - 4]) {
            let session = SessionId::from_stream_id(sid).unwrap();
            for bidi in [true, false] {
                let p = Preamble::new(session, bidi);
                let bytes = p.to_bytes();
                assert_eq!(bytes[..], p[..], "session {sid} bidi {bidi}");
                // The first 16 sessions' are the static table's, so no allocation.
                let in_table = STATIC_PREAMBLES
                    .iter()
                    .any(|t| std::ptr::eq(t.as_ptr(), bytes.as_ptr()));
                assert_eq!(in_table, sid < 64, "session {sid} bidi {bidi}");
            }
        }
    }

    #[test]
    fn preamble_decodes_back_to_its_session() {
        // The largest session id (an 8-byte varint) fills the buffer exactly.
        for sid in [0u64, 4, 400, (1 << 62) - 4] {
            let session = SessionId::from_stream_id(sid).unwrap();
            let bi = Preamble::new(session, true);
            assert_eq!(
                BidiStreamHeader::decode(&bi).unwrap(),
                Some((BidiStreamHeader::WebTransport(session), bi.len()))
            );
            assert_eq!(bi.len(), BidiStreamHeader::webtransport_len(session));
            let uni = Preamble::new(session, false);
            assert_eq!(
                UniStreamHeader::decode(&uni).unwrap(),
                Some((UniStreamHeader::WebTransport(session), uni.len()))
            );
        }
    }

    #[test]
    fn uni_round_trip() {
        let s = SessionId::from_stream_id(400).unwrap();
        for h in [
            UniStreamHeader::Control,
            UniStreamHeader::Push,
            UniStreamHeader::QpackEncoder,
            UniStreamHeader::QpackDecoder,
            UniStreamHeader::WebTransport(s),
            UniStreamHeader::Unknown(0x21 + 0x1f * 3),
        ] {
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out.len(), h.encoded_len());
            assert_eq!(UniStreamHeader::decode(&out), Ok(Some((h, out.len()))));
            for cut in 0..out.len() {
                assert_eq!(UniStreamHeader::decode(&out[..cut]), Ok(None));
            }
        }
        assert!(UniStreamHeader::Unknown(0x21).is_grease());
    }

    #[test]
    fn bidi_round_trip_and_request() {
        let s = SessionId::from_stream_id(0).unwrap();
        let mut out = Vec::new();
        BidiStreamHeader::encode_webtransport(s, &mut out);
        out.extend_from_slice(b"payload");
        assert_eq!(out.len() - 7, BidiStreamHeader::webtransport_len(s));
        assert_eq!(
            BidiStreamHeader::decode(&out),
            Ok(Some((BidiStreamHeader::WebTransport(s), 3)))
        );
        assert_eq!(
            BidiStreamHeader::decode(&[0x01, 0x05]),
            Ok(Some((BidiStreamHeader::Request, 0)))
        );
        assert_eq!(BidiStreamHeader::decode(&[0x41]), Ok(None));
    }

    #[test]
    fn bad_session_ids() {
        for sid in [1u64, 2, 3, 5, 4 * 1000 + 2] {
            let mut out = vec![0x40, 0x54];
            varint::encode(sid, &mut out);
            let e = UniStreamHeader::decode(&out).unwrap_err();
            assert_eq!(e.code(), Code::H3_ID_ERROR);
            let mut out = vec![0x40, 0x41];
            varint::encode(sid, &mut out);
            assert_eq!(
                BidiStreamHeader::decode(&out).unwrap_err().code(),
                Code::H3_ID_ERROR
            );
        }
    }
}
