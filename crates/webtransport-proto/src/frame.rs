//! HTTP/3 frames (RFC 9114 §7).
//!
//! Every frame is `Type (i) | Length (i) | Payload`. [`Frame::decode`] parses one complete
//! frame from a slice; [`FrameReader`] is the streaming form the state machine uses: it
//! hands DATA payload on in chunks as they arrive, buffers other known frames up to a hard
//! cap, and skips unknown and GREASE frames without buffering them.

use std::borrow::Cow;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{is_grease_id, Code};
use crate::settings::{Settings, SettingsError};
use crate::varint::{self, VarInt};

/// Frame type codepoints (RFC 9114 §11.2.1).
pub mod ty {
    /// DATA.
    pub const DATA: u64 = 0x00;
    /// HEADERS.
    pub const HEADERS: u64 = 0x01;
    /// CANCEL_PUSH.
    pub const CANCEL_PUSH: u64 = 0x03;
    /// SETTINGS.
    pub const SETTINGS: u64 = 0x04;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u64 = 0x05;
    /// GOAWAY.
    pub const GOAWAY: u64 = 0x07;
    /// MAX_PUSH_ID.
    pub const MAX_PUSH_ID: u64 = 0x0d;
    /// WebTransport draft-02 bidirectional stream signal (not a real frame: the first
    /// varint of a WebTransport bidi stream).
    pub const WEBTRANSPORT_STREAM: u64 = 0x41;

    /// Frame types reserved because they were HTTP/2 frames (RFC 9114 §7.2.8, §11.2.1):
    /// PRIORITY, PING, WINDOW_UPDATE, CONTINUATION.
    pub const fn is_http2_only(t: u64) -> bool {
        matches!(t, 0x02 | 0x06 | 0x08 | 0x09)
    }
}

/// Largest payload accepted for a frame other than DATA, HEADERS or an unknown type.
/// SETTINGS, GOAWAY, CANCEL_PUSH and MAX_PUSH_ID are tiny; this leaves room for a peer
/// that sends many GREASE settings.
pub const MAX_CONTROL_FRAME_PAYLOAD: u64 = 16 * 1024;

/// A parsed HTTP/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA with its whole payload.
    Data(Bytes),
    /// HEADERS with its encoded field section (QPACK).
    Headers(Bytes),
    /// CANCEL_PUSH with a push id.
    CancelPush(VarInt),
    /// SETTINGS.
    Settings(Settings),
    /// GOAWAY with a stream id (from a server) or push id (from a client).
    Goaway(VarInt),
    /// MAX_PUSH_ID.
    MaxPushId(VarInt),
    /// A PUSH_PROMISE; its payload is not decoded since we never allow push.
    PushPromise,
    /// An unknown, extension or GREASE frame, which receivers ignore (RFC 9114 §9).
    Unknown {
        /// Its type.
        ty: u64,
        /// Its payload length.
        len: u64,
    },
}

/// A frame that cannot be parsed. Each maps onto one connection or stream error code in
/// [`FrameError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The payload ended before a field it must contain, or had bytes after it.
    #[error("malformed {name} frame: {what}")]
    Malformed {
        /// Frame name.
        name: &'static str,
        /// What is wrong.
        what: &'static str,
    },
    /// The frame is larger than this endpoint accepts.
    #[error("frame type {ty:#x} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Frame type.
        ty: u64,
        /// Declared length.
        len: u64,
        /// Our cap.
        max: u64,
    },
    /// An HTTP/2-only frame type (RFC 9114 §7.2.8).
    #[error("HTTP/2 frame type {0:#x} is not allowed in HTTP/3")]
    Http2Frame(u64),
    /// A SETTINGS frame whose content is invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

impl FrameError {
    /// The HTTP/3 error code this failure is reported with.
    pub fn code(&self) -> Code {
        match self {
            FrameError::Malformed { .. } | FrameError::TooLarge { .. } => Code::H3_FRAME_ERROR,
            // RFC 9114 §7.2.8: "Receipt of these frame types MUST be treated as a connection
            // error of type H3_FRAME_UNEXPECTED."
            FrameError::Http2Frame(_) => Code::H3_FRAME_UNEXPECTED,
            FrameError::Settings(e) => e.code(),
        }
    }
}

/// Caps on what a peer may make us buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest HEADERS payload (an encoded field section), usually our
    /// SETTINGS_MAX_FIELD_SECTION_SIZE.
    pub max_headers: u64,
    /// Largest payload of any other frame that is buffered whole.
    pub max_control: u64,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_headers: 16 * 1024,
            max_control: MAX_CONTROL_FRAME_PAYLOAD,
        }
    }
}

/// A frame header: type and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame type.
    pub ty: u64,
    /// Payload length.
    pub len: u64,
}

impl FrameHeader {
    /// Parses a frame header; `None` means more bytes are needed.
    pub fn decode(buf: &[u8]) -> Option<(FrameHeader, usize)> {
        let (ty, a) = varint::decode(buf)?;
        let (len, b) = varint::decode(&buf[a..])?;
        Some((FrameHeader { ty, len }, a + b))
    }

    /// Writes the header.
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        varint::encode(self.ty, out);
        varint::encode(self.len, out);
    }

    /// Bytes the header takes.
    pub fn encoded_len(&self) -> usize {
        varint::encoded_len(self.ty) + varint::encoded_len(self.len)
    }
}

fn single_varint(payload: &[u8], name: &'static str) -> Result<VarInt, FrameError> {
    match VarInt::decode(payload) {
        Some((v, n)) if n == payload.len() => Ok(v),
        Some(_) => Err(FrameError::Malformed {
            name,
            what: "bytes after the value",
        }),
        None => Err(FrameError::Malformed {
            name,
            what: "truncated value",
        }),
    }
}

impl Frame {
    /// Builds a frame from its type and complete payload.
    pub fn from_payload(ty: u64, payload: Bytes) -> Result<Frame, FrameError> {
        Ok(match ty {
            ty::DATA => Frame::Data(payload),
            ty::HEADERS => Frame::Headers(payload),
            ty::CANCEL_PUSH => Frame::CancelPush(single_varint(&payload, "CANCEL_PUSH")?),
            ty::SETTINGS => Frame::Settings(Settings::decode(&payload)?),
            ty::GOAWAY => Frame::Goaway(single_varint(&payload, "GOAWAY")?),
            ty::MAX_PUSH_ID => Frame::MaxPushId(single_varint(&payload, "MAX_PUSH_ID")?),
            ty::PUSH_PROMISE => Frame::PushPromise,
            t if ty::is_http2_only(t) => return Err(FrameError::Http2Frame(t)),
            t => Frame::Unknown {
                ty: t,
                len: payload.len() as u64,
            },
        })
    }

    /// Parses one complete frame from the front of `buf`, enforcing `limits`.
    ///
    /// `Ok(None)` means `buf` holds only part of a frame.
    pub fn decode(buf: &[u8], limits: &FrameLimits) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some((h, hlen)) = FrameHeader::decode(buf) else {
            return Ok(None);
        };
        check_len(h, limits)?;
        let rest = &buf[hlen..];
        if (rest.len() as u64) < h.len {
            return Ok(None);
        }
        let payload = Bytes::copy_from_slice(&rest[..h.len as usize]);
        Ok(Some((
            Frame::from_payload(h.ty, payload)?,
            hlen + h.len as usize,
        )))
    }

    /// The frame type.
    pub fn ty(&self) -> u64 {
        match self {
            Frame::Data(_) => ty::DATA,
            Frame::Headers(_) => ty::HEADERS,
            Frame::CancelPush(_) => ty::CANCEL_PUSH,
            Frame::Settings(_) => ty::SETTINGS,
            Frame::Goaway(_) => ty::GOAWAY,
            Frame::MaxPushId(_) => ty::MAX_PUSH_ID,
            Frame::PushPromise => ty::PUSH_PROMISE,
            Frame::Unknown { ty, .. } => *ty,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::Data(b) | Frame::Headers(b) => b.len(),
            Frame::CancelPush(v) | Frame::Goaway(v) | Frame::MaxPushId(v) => v.encoded_len(),
            Frame::Settings(s) => s.encoded_len(),
            Frame::PushPromise => 0,
            Frame::Unknown { len, .. } => *len as usize,
        }
    }

    /// Bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let len = self.payload_len();
        varint::encoded_len(self.ty()) + varint::encoded_len(len as u64) + len
    }

    /// Writes the frame. An `Unknown` frame is written with a zero-filled payload (used for
    /// GREASE).
    pub fn encode<B: BufMut>(&self, out: &mut B) {
        FrameHeader {
            ty: self.ty(),
            len: self.payload_len() as u64,
        }
        .encode(out);
        match self {
            Frame::Data(b) | Frame::Headers(b) => out.put_slice(b),
            Frame::CancelPush(v) | Frame::Goaway(v) | Frame::MaxPushId(v) => v.encode(out),
            Frame::Settings(s) => s.encode(out),
            Frame::PushPromise => {}
            Frame::Unknown { len, .. } => out.put_bytes(0, *len as usize),
        }
    }
}

fn check_len(h: FrameHeader, limits: &FrameLimits) -> Result<(), FrameError> {
    if ty::is_http2_only(h.ty) {
        return Err(FrameError::Http2Frame(h.ty));
    }
    let max = match h.ty {
        ty::DATA => return Ok(()),
        ty::HEADERS => limits.max_headers,
        ty::CANCEL_PUSH | ty::SETTINGS | ty::GOAWAY | ty::MAX_PUSH_ID | ty::PUSH_PROMISE => {
            limits.max_control
        }
        _ => return Ok(()),
    };
    if h.len > max {
        return Err(FrameError::TooLarge {
            ty: h.ty,
            len: h.len,
            max,
        });
    }
    Ok(())
}

/// What [`FrameReader::poll`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent {
    /// A complete frame other than DATA (unknown frames are reported once their payload
    /// has been skipped).
    Frame(Frame),
    /// A DATA frame begins, with its declared payload length.
    DataStart(u64),
    /// Part of a DATA frame's payload.
    DataChunk(Bytes),
    /// A whole frame of a type registered with [`FrameReader::buffer_type`].
    Raw {
        /// Frame type.
        ty: u64,
        /// Payload.
        payload: Bytes,
    },
}

#[derive(Debug, Clone, Copy)]
enum ReadState {
    Header,
    Data { remaining: u64 },
    Buffer { ty: u64, len: u64 },
    Raw { ty: u64, len: u64 },
    Skip { ty: u64, len: u64, remaining: u64 },
}

/// Streaming frame parser over an append-only byte stream.
///
/// Feed bytes with [`FrameReader::push`] and drain events with [`FrameReader::poll`]; it
/// never holds more than one header plus the cap of one bufferable frame.
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    state: ReadState,
    limits: FrameLimits,
    raw_types: Cow<'static, [u64]>,
    /// Largest payload of a frame of a `raw_types` type.
    raw_max: u64,
}

impl FrameReader {
    /// A reader with the given caps.
    pub fn new(limits: FrameLimits) -> Self {
        FrameReader {
            buf: BytesMut::new(),
            state: ReadState::Header,
            limits,
            raw_types: Cow::Borrowed(&[]),
            raw_max: limits.max_control,
        }
    }

    /// Buffers frames of the otherwise unknown type `ty` (up to the control-frame cap,
    /// or what [`FrameReader::raw_limit`] set) and yields them as [`FrameEvent::Raw`]
    /// instead of skipping them.
    pub fn buffer_type(&mut self, ty: u64) {
        self.raw_types.to_mut().push(ty);
    }

    /// [`buffer_type`](Self::buffer_type) for each of `types`; a reader given only these
    /// shares the list instead of copying it.
    pub fn buffer_types(&mut self, types: &'static [u64]) {
        if self.raw_types.is_empty() {
            self.raw_types = Cow::Borrowed(types);
        } else {
            self.raw_types.to_mut().extend_from_slice(types);
        }
    }

    /// The largest payload of a frame of a [`buffer_type`](Self::buffer_type) type; a
    /// longer one is [`FrameError::TooLarge`] from its header alone.
    pub fn raw_limit(&mut self, max: u64) {
        self.raw_max = max;
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Whether the reader stopped between frames with nothing buffered: the only place a
    /// stream may end cleanly (RFC 9114 §7.1: a frame cut by the end of the stream is an
    /// H3_FRAME_ERROR).
    pub fn is_at_boundary(&self) -> bool {
        matches!(self.state, ReadState::Header) && self.buf.is_empty()
    }

    /// Bytes buffered but not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the unparsed bytes out of the reader (used when a stream changes hands after
    /// its first frame, as WebTransport streams do).
    pub fn take_remaining(&mut self) -> Bytes {
        self.buf.split().freeze()
    }

    /// More bytes are needed. An emptied buffer gives its room back: frames split off it
    /// share its allocation, which would otherwise stay for the stream's life (a control
    /// or CONNECT stream that is idle after its first frames).
    fn need_more(&mut self) -> Result<Option<FrameEvent>, FrameError> {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        Ok(None)
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn poll(&mut self) -> Result<Option<FrameEvent>, FrameError> {
        loop {
            match self.state {
                ReadState::Header => {
                    let Some((h, n)) = FrameHeader::decode(&self.buf) else {
                        return self.need_more();
                    };
                    check_len(h, &self.limits)?;
                    self.buf.advance(n);
                    self.state = match h.ty {
                        ty::DATA => {
                            self.state = ReadState::Data { remaining: h.len };
                            return Ok(Some(FrameEvent::DataStart(h.len)));
                        }
                        ty::HEADERS
                        | ty::CANCEL_PUSH
                        | ty::SETTINGS
                        | ty::GOAWAY
                        | ty::MAX_PUSH_ID
                        | ty::PUSH_PROMISE => ReadState::Buffer {
                            ty: h.ty,
                            len: h.len,
                        },
                        t if self.raw_types.contains(&t) => {
                            if h.len > self.raw_max {
                                return Err(FrameError::TooLarge {
                                    ty: t,
                                    len: h.len,
                                    max: self.raw_max,
                                });
                            }
                            ReadState::Raw { ty: t, len: h.len }
                        }
                        t => ReadState::Skip {
                            ty: t,
                            len: h.len,
                            remaining: h.len,
                        },
                    };
                }
                ReadState::Data { remaining } => {
                    if remaining == 0 {
                        self.state = ReadState::Header;
                        continue;
                    }
                    if self.buf.is_empty() {
                        return self.need_more();
                    }
                    let n = (self.buf.len() as u64).min(remaining) as usize;
                    let chunk = self.buf.split_to(n).freeze();
                    self.state = ReadState::Data {
                        remaining: remaining - n as u64,
                    };
                    if remaining - n as u64 == 0 {
                        self.state = ReadState::Header;
                    }
                    return Ok(Some(FrameEvent::DataChunk(chunk)));
                }
                ReadState::Buffer { ty, len } => {
                    if (self.buf.len() as u64) < len {
                        return self.need_more();
                    }
                    let payload = self.buf.split_to(len as usize).freeze();
                    self.state = ReadState::Header;
                    return Frame::from_payload(ty, payload).map(|f| Some(FrameEvent::Frame(f)));
                }
                ReadState::Raw { ty, len } => {
                    if (self.buf.len() as u64) < len {
                        return self.need_more();
                    }
                    let payload = self.buf.split_to(len as usize).freeze();
                    self.state = ReadState::Header;
                    return Ok(Some(FrameEvent::Raw { ty, payload }));
                }
                ReadState::Skip { ty, len, remaining } => {
                    let n = (self.buf.len() as u64).min(remaining);
                    self.buf.advance(n as usize);
                    if remaining - n > 0 {
                        self.state = ReadState::Skip {
                            ty,
                            len,
                            remaining: remaining - n,
                        };
                        return self.need_more();
                    }
                    self.state = ReadState::Header;
                    return Ok(Some(FrameEvent::Frame(Frame::Unknown { ty, len })));
                }
            }
        }
    }
}

/// Whether a frame type is a reserved GREASE type (RFC 9114 §7.2.8).
pub fn is_grease_frame(ty: u64) -> bool {
    is_grease_id(ty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(out.len(), f.encoded_len(), "{f:?}");
        let (g, n) = Frame::decode(&out, &FrameLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(n, out.len());
        assert_eq!(g, f);
        // Every strict prefix needs more bytes.
        for cut in 0..out.len() {
            assert_eq!(
                Frame::decode(&out[..cut], &FrameLimits::default()),
                Ok(None)
            );
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut s = Settings::new();
        s.set(0x33, 1);
        s.set(0x2b603742, 1);
        round_trip(Frame::Data(Bytes::from_static(b"hello")));
        round_trip(Frame::Data(Bytes::new()));
        round_trip(Frame::Headers(Bytes::from_static(&[0, 0, 0xd1])));
        round_trip(Frame::CancelPush(VarInt::from_u32(7)));
        round_trip(Frame::Settings(s));
        round_trip(Frame::Goaway(VarInt::from_u32(1_000_000)));
        round_trip(Frame::MaxPushId(VarInt::from_u32(3)));
        round_trip(Frame::Unknown { ty: 0x21, len: 3 });
        round_trip(Frame::Unknown { ty: 0x4242, len: 0 });
    }

    #[test]
    fn chromium_grease_frame_is_skipped() {
        let bytes = [0xc0, 0x00, 0x00, 0x08, 0xc1, 0x1a, 0x3d, 0x7c, 0x01, 0xf5];
        let mut r = FrameReader::new(FrameLimits::default());
        r.push(&bytes);
        assert_eq!(
            r.poll().unwrap(),
            Some(FrameEvent::Frame(Frame::Unknown {
                ty: 0x8c11a3d7c,
                len: 1
            }))
        );
        assert!(is_grease_frame(0x8c11a3d7c));
        assert!(r.is_at_boundary());
    }

    /// A reader that has handed out every frame it held keeps no part of their buffer:
    /// an idle control or CONNECT stream would hold it for its life.
    #[test]
    fn reader_gives_an_emptied_buffer_back() {
        const TYPES: &[u64] = &[0x21];
        let mut r = FrameReader::new(FrameLimits::default());
        r.buffer_types(TYPES);
        let mut wire = Vec::new();
        FrameHeader { ty: 0x21, len: 3 }.encode(&mut wire);
        wire.extend_from_slice(b"abc");
        r.push(&wire);
        let Some(FrameEvent::Raw { ty: 0x21, payload }) = r.poll().unwrap() else {
            panic!("the raw frame");
        };
        assert_eq!(&payload[..], b"abc");
        assert!(!payload.is_unique(), "the reader still shares the buffer");
        assert_eq!(r.poll().unwrap(), None);
        assert!(payload.is_unique(), "released when the reader needed more");
        assert!(r.is_at_boundary());
    }

    #[test]
    fn reader_streams_data_and_skips_large_unknown() {
        let mut wire = Vec::new();
        Frame::Data(Bytes::from(vec![7u8; 1000])).encode(&mut wire);
        FrameHeader {
            ty: 0x1234,
            len: 1 << 40,
        }
        .encode(&mut wire);
        let mut r = FrameReader::new(FrameLimits::default());
        let mut data = 0;
        for chunk in wire.chunks(7) {
            r.push(chunk);
            while let Some(ev) = r.poll().unwrap() {
                match ev {
                    FrameEvent::DataStart(n) => assert_eq!(n, 1000),
                    FrameEvent::DataChunk(c) => data += c.len(),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(data, 1000);
        // Skipping a huge unknown frame buffers nothing.
        r.push(&[0u8; 4096]);
        assert_eq!(r.poll().unwrap(), None);
        assert_eq!(r.buffered(), 0);
        assert!(!r.is_at_boundary());
    }

    #[test]
    fn malformed_frames_have_the_spec_codes() {
        let lim = FrameLimits::default();
        let cases: &[(&[u8], Code)] = &[
            // HTTP/2 PRIORITY, PING, WINDOW_UPDATE, CONTINUATION (RFC 9114 §7.2.8).
            (&[0x02, 0x00], Code::H3_FRAME_UNEXPECTED),
            (&[0x06, 0x00], Code::H3_FRAME_UNEXPECTED),
            (&[0x08, 0x00], Code::H3_FRAME_UNEXPECTED),
            (&[0x09, 0x00], Code::H3_FRAME_UNEXPECTED),
            // GOAWAY with a truncated id and with trailing bytes.
            (&[0x07, 0x01, 0x40], Code::H3_FRAME_ERROR),
            (&[0x07, 0x02, 0x01, 0x01], Code::H3_FRAME_ERROR),
            // SETTINGS larger than the cap.
            (&[0x04, 0x80, 0x01, 0x00, 0x00], Code::H3_FRAME_ERROR),
            // HEADERS larger than max field section.
            (&[0x01, 0x80, 0x10, 0x00, 0x00], Code::H3_FRAME_ERROR),
            // MAX_PUSH_ID empty.
            (&[0x0d, 0x00], Code::H3_FRAME_ERROR),
        ];
        for (bytes, code) in cases {
            let err = Frame::decode(bytes, &lim).expect_err(&format!("{bytes:02x?}"));
            assert_eq!(err.code(), *code, "{bytes:02x?}: {err}");
        }
    }
}
