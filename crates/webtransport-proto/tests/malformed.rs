//! Malformed peer input against the connection state machine, each case checked for the
//! exact error code RFC 9114, RFC 9204, RFC 9297 or draft-ietf-webtrans-http3 asks for,
//! as the public API shows it: `Action::CloseConnection` plus `Event::ConnectionError` for
//! connection errors, `Action::Reset` / `Action::StopSending` for stream errors.
//!
//! Every case starts from a connection whose peer already opened its control stream
//! (with valid SETTINGS) and its two QPACK streams, then sends one thing wrong. Bytes are
//! built with the crate's own encoders wherever the malformation allows it.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use webtransport_proto::capsule::{self, Capsule};
use webtransport_proto::connection::{
    Action, Config, Connection, Event, Feed, LocalStreams, Role, SessionEnd,
};
use webtransport_proto::frame::{Frame, FrameHeader, FrameLimits};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::qpack::{self, DecoderInstruction, EncoderInstruction, HeaderField};
use webtransport_proto::settings::{id, Settings};
use webtransport_proto::stream_header::{BidiStreamHeader, SessionId, UniStreamHeader};
use webtransport_proto::varint::{self, VarInt};
use webtransport_proto::{datagram, Code};

// ---- byte builders ----

fn frame(f: Frame) -> Vec<u8> {
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

/// A frame with an arbitrary type and payload, for types `Frame` cannot express.
fn raw_frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader {
        ty,
        len: payload.len() as u64,
    }
    .encode(&mut out);
    out.extend_from_slice(payload);
    out
}

fn uni_preamble(h: UniStreamHeader) -> Vec<u8> {
    let mut out = Vec::new();
    h.encode(&mut out);
    out
}

fn var(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint::encode(v, &mut out);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn settings_frame(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for &(i, v) in pairs {
        varint::encode(i, &mut payload);
        varint::encode(v, &mut payload);
    }
    raw_frame(webtransport_proto::frame::ty::SETTINGS, &payload)
}

fn headers_frame(fields: &[HeaderField]) -> Vec<u8> {
    let mut block = Vec::new();
    qpack::encode_field_section(fields, &mut block);
    frame(Frame::Headers(block.into()))
}

/// A HEADERS frame around a hand-made (usually broken) field section.
fn raw_headers(block: &[u8]) -> Vec<u8> {
    frame(Frame::Headers(Bytes::copy_from_slice(block)))
}

fn field(name: &str, value: &str) -> HeaderField {
    HeaderField::new(name.to_owned(), value.to_owned())
}

fn request() -> ConnectRequest {
    ConnectRequest {
        authority: "example.test:4433".into(),
        path: "/wt".into(),
        origin: Some("https://example.test".into()),
        ..ConnectRequest::default()
    }
}

fn request_fields_with(edit: impl FnOnce(&mut Vec<HeaderField>)) -> Vec<u8> {
    let mut fields = request().to_fields();
    edit(&mut fields);
    headers_frame(&fields)
}

/// A capsule with any type and value (the crate's encoder refuses an over-long close
/// reason, which is the point of some cases).
fn raw_capsule(ty: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint::encode(ty, &mut out);
    varint::encode(value.len() as u64, &mut out);
    out.extend_from_slice(value);
    out
}

fn data_frame(payload: &[u8]) -> Vec<u8> {
    frame(Frame::Data(Bytes::copy_from_slice(payload)))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// ---- the harness ----

/// Stream ids as a real QUIC connection would number them: client-initiated ids are
/// even, server-initiated odd; bit 1 marks unidirectional streams.
fn local_streams(role: Role) -> LocalStreams {
    let base = match role {
        Role::Client => 2,
        Role::Server => 3,
    };
    LocalStreams {
        control: base,
        encoder: Some(base + 4),
        decoder: Some(base + 8),
    }
}

/// The `n`th unidirectional stream the peer opens.
fn peer_uni(role: Role, n: u64) -> u64 {
    match role {
        Role::Client => 3 + 4 * n,
        Role::Server => 2 + 4 * n,
    }
}

/// The `n`th bidirectional stream the peer opens.
fn peer_bidi(role: Role, n: u64) -> u64 {
    match role {
        Role::Client => 1 + 4 * n,
        Role::Server => 4 * n,
    }
}

/// The peer's control, encoder and decoder streams are its uni streams 0, 1 and 2; the
/// next free one is 3.
const PEER_CONTROL: u64 = 0;
const PEER_ENCODER: u64 = 1;
const PEER_DECODER: u64 = 2;
const PEER_FIRST_FREE_UNI: u64 = 3;

struct H {
    conn: Connection,
    role: Role,
    now: Instant,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl H {
    /// A connection that has not heard from its peer at all.
    fn bare(role: Role, config: Config) -> Self {
        let mut h = H {
            conn: Connection::new(role, config, local_streams(role)),
            role,
            now: Instant::now(),
            actions: Vec::new(),
            events: Vec::new(),
        };
        h.drain();
        h.actions.clear();
        h.events.clear();
        h
    }

    /// A connection whose peer opened its control stream with valid SETTINGS (the set
    /// our own stack sends) and its two QPACK streams.
    fn new(role: Role) -> Self {
        Self::with_config(role, Config::default())
    }

    fn with_config(role: Role, config: Config) -> Self {
        let mut h = Self::bare(role, config);
        let peer_settings =
            Settings::local(role == Role::Client, 16, 16 * 1024, Default::default());
        let control = cat(&[
            &uni_preamble(UniStreamHeader::Control),
            &frame(Frame::Settings(peer_settings)),
        ]);
        assert_eq!(
            h.feed(h.peer_uni(PEER_CONTROL), &control, false),
            Feed::Continue
        );
        let enc = uni_preamble(UniStreamHeader::QpackEncoder);
        assert_eq!(
            h.feed(h.peer_uni(PEER_ENCODER), &enc, false),
            Feed::Continue
        );
        let dec = uni_preamble(UniStreamHeader::QpackDecoder);
        assert_eq!(
            h.feed(h.peer_uni(PEER_DECODER), &dec, false),
            Feed::Continue
        );
        h.assert_alive();
        assert!(h.conn.peer_settings().is_some());
        h.actions.clear();
        h.events.clear();
        h
    }

    fn peer_uni(&self, n: u64) -> u64 {
        peer_uni(self.role, n)
    }

    fn peer_bidi(&self, n: u64) -> u64 {
        peer_bidi(self.role, n)
    }

    fn drain(&mut self) {
        while let Some(a) = self.conn.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
        }
    }

    fn feed(&mut self, stream: u64, data: &[u8], fin: bool) -> Feed {
        let feed = self.conn.handle_stream_data(self.now, stream, data, fin);
        self.drain();
        feed
    }

    /// Feeds bytes where what the core answers does not matter to the case.
    fn send(&mut self, stream: u64, data: &[u8], fin: bool) {
        let _ = self.feed(stream, data, fin);
    }

    /// Feeds bytes on the peer's control stream (after its SETTINGS).
    fn control(&mut self, data: &[u8]) {
        self.send(self.peer_uni(PEER_CONTROL), data, false)
    }

    fn datagram(&mut self, data: Vec<u8>) {
        self.conn.handle_datagram(self.now, data.into());
        self.drain();
    }

    fn reset(&mut self, stream: u64, code: Code) {
        self.conn.handle_stream_reset(stream, code);
        self.drain();
    }

    fn stop_sending(&mut self, stream: u64, code: Code) {
        self.conn.handle_stop_sending(stream, code);
        self.drain();
    }

    /// Asserts the connection was closed with `code`, both as an action and an event,
    /// and nothing else closed it first.
    #[track_caller]
    fn assert_connection_error(&self, code: Code) {
        let closes: Vec<Code> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::CloseConnection { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
        assert_eq!(closes, [code], "actions: {:?}", self.actions);
        let errors: Vec<Code> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ConnectionError { error } => Some(error.code()),
                _ => None,
            })
            .collect();
        assert_eq!(errors, [code], "events: {:?}", self.events);
        assert_eq!(self.conn.error().map(|e| e.code()), Some(code));
    }

    /// Asserts the connection is still up.
    #[track_caller]
    fn assert_alive(&self) {
        assert!(
            self.conn.error().is_none(),
            "connection error {:?}",
            self.conn.error()
        );
        assert!(
            !self
                .actions
                .iter()
                .any(|a| matches!(a, Action::CloseConnection { .. })),
            "actions: {:?}",
            self.actions
        );
    }

    fn stops(&self) -> Vec<(u64, Code)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::StopSending { stream, code } => Some((*stream, *code)),
                _ => None,
            })
            .collect()
    }

    fn resets(&self) -> Vec<(u64, Code)> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Reset { stream, code } => Some((*stream, *code)),
                _ => None,
            })
            .collect()
    }

    /// Asserts a stream error on a bidirectional stream: both directions aborted with
    /// `code`, the connection untouched.
    #[track_caller]
    fn assert_bidi_stream_error(&self, stream: u64, code: Code) {
        self.assert_alive();
        assert_eq!(
            self.stops(),
            [(stream, code)],
            "actions: {:?}",
            self.actions
        );
        assert_eq!(
            self.resets(),
            [(stream, code)],
            "actions: {:?}",
            self.actions
        );
    }

    /// (Server) Delivers a valid CONNECT request on the peer's first bidi stream and
    /// returns the session it asks for.
    fn requested_session(&mut self) -> SessionId {
        let stream = self.peer_bidi(0);
        assert_eq!(
            self.feed(stream, &headers_frame(&request().to_fields()), false),
            Feed::Request
        );
        let sid = SessionId::from_stream_id(stream).unwrap();
        assert!(self
            .events
            .iter()
            .any(|e| matches!(e, Event::SessionRequested { session, .. } if *session == sid)));
        self.actions.clear();
        self.events.clear();
        sid
    }

    /// (Server) An established session on the peer's first bidi stream.
    fn established_session(&mut self) -> SessionId {
        let sid = self.requested_session();
        self.conn
            .accept_session(sid, ConnectResponse::default())
            .unwrap();
        self.drain();
        self.actions.clear();
        self.events.clear();
        sid
    }

    /// (Client) Opens a session on our first bidi stream; the request goes out at once
    /// since the server's SETTINGS are in.
    fn client_session(&mut self) -> SessionId {
        let sid = self.conn.open_session(self.now, 0, request()).unwrap();
        self.drain();
        assert!(self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Write { stream: 0, .. })));
        self.actions.clear();
        self.events.clear();
        sid
    }
}

// ---- control stream ----

#[test]
fn truncated_frame_type_at_control_stream_fin() {
    // A two-byte varint cut after its first byte, then FIN: the control stream closed,
    // which RFC 9114 §6.2.1 makes H3_CLOSED_CRITICAL_STREAM whatever was half-sent.
    let mut h = H::new(Role::Server);
    let ctrl = h.peer_uni(PEER_CONTROL);
    assert_eq!(h.feed(ctrl, &[0x40], true), Feed::Done);
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn truncated_frame_length_at_control_stream_fin() {
    // GOAWAY type, then an 8-byte length varint cut after two bytes.
    let mut h = H::new(Role::Client);
    let ctrl = h.peer_uni(PEER_CONTROL);
    assert_eq!(h.feed(ctrl, &[0x07, 0xc0, 0x00], true), Feed::Done);
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn truncated_varint_inside_goaway_payload() {
    // RFC 9114 §7.1: a payload that ends before its fields is H3_FRAME_ERROR. The GOAWAY
    // payload is one byte announcing a two-byte varint.
    let mut h = H::new(Role::Client);
    h.control(&raw_frame(0x07, &[0x40]));
    h.assert_connection_error(Code::H3_FRAME_ERROR);
}

#[test]
fn goaway_payload_with_trailing_bytes() {
    // RFC 9114 §7.1: "additional bytes after the identified fields" is H3_FRAME_ERROR.
    let mut h = H::new(Role::Client);
    h.control(&raw_frame(0x07, &[0x00, 0x00]));
    h.assert_connection_error(Code::H3_FRAME_ERROR);
}

#[test]
fn truncated_varint_inside_settings_payload() {
    // SETTINGS whose last value is a four-byte varint cut after one byte.
    let mut h = H::bare(Role::Server, Config::default());
    let bytes = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &raw_frame(0x04, &[0x06, 0x80]),
    ]);
    h.send(peer_uni(Role::Server, 0), &bytes, false);
    h.assert_connection_error(Code::H3_FRAME_ERROR);
}

#[test]
fn truncated_max_push_id_payload() {
    // From a client MAX_PUSH_ID is legal, so only its malformed payload is at fault.
    let mut h = H::new(Role::Server);
    h.control(&raw_frame(0x0d, &[0x80, 0x01]));
    h.assert_connection_error(Code::H3_FRAME_ERROR);
}

#[test]
fn first_control_frame_is_not_settings() {
    // RFC 9114 §6.2.1: "If the first frame of the control stream is any other frame type,
    // this MUST be treated as a connection error of type H3_MISSING_SETTINGS."
    let mut h = H::bare(Role::Server, Config::default());
    let bytes = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &frame(Frame::Goaway(VarInt::from_u32(0))),
    ]);
    h.send(peer_uni(Role::Server, 0), &bytes, false);
    h.assert_connection_error(Code::H3_MISSING_SETTINGS);
}

#[test]
fn first_control_frame_is_grease() {
    // GREASE frames are ignored everywhere except in first place on the control stream.
    let mut h = H::bare(Role::Client, Config::default());
    let bytes = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &frame(Frame::Unknown {
            ty: 0x21 + 0x1f * 3,
            len: 2,
        }),
        &frame(Frame::Settings(Settings::local(
            true,
            1,
            16384,
            Default::default(),
        ))),
    ]);
    h.send(peer_uni(Role::Client, 0), &bytes, false);
    h.assert_connection_error(Code::H3_MISSING_SETTINGS);
}

#[test]
fn second_settings_frame() {
    // RFC 9114 §7.2.4: a second SETTINGS frame is H3_FRAME_UNEXPECTED.
    let mut h = H::new(Role::Server);
    h.control(&frame(Frame::Settings(Settings::local(
        false,
        1,
        100,
        Default::default(),
    ))));
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn duplicate_setting_identifier() {
    // RFC 9114 §7.2.4: a duplicate identifier MAY be H3_SETTINGS_ERROR; we do.
    let mut h = H::bare(Role::Server, Config::default());
    let bytes = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &settings_frame(&[
            (id::H3_DATAGRAM, 1),
            (id::MAX_FIELD_SECTION_SIZE, 100),
            (id::H3_DATAGRAM, 1),
        ]),
    ]);
    h.send(peer_uni(Role::Server, 0), &bytes, false);
    h.assert_connection_error(Code::H3_SETTINGS_ERROR);
}

#[test]
fn duplicate_grease_setting_identifier() {
    // GREASE entries are dropped on decode, but a repeated one is still a duplicate.
    let grease = 0x21 + 0x1f * 9;
    let mut h = H::bare(Role::Server, Config::default());
    let bytes = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &settings_frame(&[(grease, 1), (id::H3_DATAGRAM, 1), (grease, 2)]),
    ]);
    h.send(peer_uni(Role::Server, 0), &bytes, false);
    h.assert_connection_error(Code::H3_SETTINGS_ERROR);
}

#[test]
fn http2_setting_identifiers() {
    // RFC 9114 §7.2.4.1: identifiers that were HTTP/2 settings (0x00, 0x02-0x05) MUST be
    // treated as H3_SETTINGS_ERROR.
    for http2_id in [0x00, 0x02, 0x03, 0x04, 0x05] {
        let mut h = H::bare(Role::Client, Config::default());
        let bytes = cat(&[
            &uni_preamble(UniStreamHeader::Control),
            &settings_frame(&[(id::H3_DATAGRAM, 1), (http2_id, 0)]),
        ]);
        h.send(peer_uni(Role::Client, 0), &bytes, false);
        h.assert_connection_error(Code::H3_SETTINGS_ERROR);
    }
}

#[test]
fn h3_datagram_setting_not_boolean() {
    // RFC 9297 §2.1.1: an H3_DATAGRAM value other than 0 or 1 MUST be H3_SETTINGS_ERROR.
    let mut h = H::bare(Role::Client, Config::default());
    let bytes = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &settings_frame(&[(id::H3_DATAGRAM, 2)]),
    ]);
    h.send(peer_uni(Role::Client, 0), &bytes, false);
    h.assert_connection_error(Code::H3_SETTINGS_ERROR);
}

#[test]
fn http2_frame_types_on_control_stream() {
    // RFC 9114 §7.2.8: PRIORITY (0x02), PING (0x06), WINDOW_UPDATE (0x08) and
    // CONTINUATION (0x09) "MUST be treated as a connection error of type
    // H3_FRAME_UNEXPECTED".
    for ty in [0x02, 0x06, 0x08, 0x09] {
        for role in [Role::Client, Role::Server] {
            let mut h = H::new(role);
            h.control(&frame(Frame::Unknown { ty, len: 0 }));
            h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
        }
    }
}

#[test]
fn http2_frame_type_on_request_stream() {
    let mut h = H::new(Role::Server);
    let stream = h.peer_bidi(0);
    let bytes = cat(&[
        &headers_frame(&request().to_fields()),
        &raw_frame(0x06, &[0; 8]),
    ]);
    h.send(stream, &bytes, false);
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn data_on_control_stream() {
    // RFC 9114 §7.2.1: DATA on a control stream is H3_FRAME_UNEXPECTED.
    let mut h = H::new(Role::Server);
    h.control(&data_frame(b"nope"));
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn headers_on_control_stream() {
    // RFC 9114 §7.2.2: HEADERS on a control stream is H3_FRAME_UNEXPECTED.
    let mut h = H::new(Role::Client);
    h.control(&headers_frame(&[field(":status", "200")]));
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn push_promise_on_control_stream() {
    // RFC 9114 §7.2.5: PUSH_PROMISE on a control stream is H3_FRAME_UNEXPECTED.
    let mut h = H::new(Role::Client);
    h.control(&raw_frame(0x05, &[0x00, 0x00, 0x00]));
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn oversized_settings_frame() {
    // A SETTINGS frame over the control-frame cap is refused from its header alone,
    // without buffering the payload: H3_FRAME_ERROR.
    let mut h = H::bare(Role::Server, Config::default());
    let mut bytes = uni_preamble(UniStreamHeader::Control);
    FrameHeader {
        ty: 0x04,
        len: FrameLimits::default().max_control + 1,
    }
    .encode(&mut bytes);
    h.send(peer_uni(Role::Server, 0), &bytes, false);
    h.assert_connection_error(Code::H3_FRAME_ERROR);
}

/// The status of the response the core wrote on `stream`, if it wrote one.
fn written_status(h: &H, stream: u64) -> Option<u16> {
    h.actions.iter().find_map(|a| match a {
        Action::Write {
            stream: s, data, ..
        } if *s == stream => {
            let (f, _) = Frame::decode(data, &FrameLimits::default()).ok()??;
            let Frame::Headers(block) = f else {
                return None;
            };
            let fields = qpack::decode_field_section(&block, 1 << 16).ok()?;
            ConnectResponse::from_fields(&fields).ok().map(|r| r.status)
        }
        _ => None,
    })
}

#[test]
fn oversized_headers_frame() {
    // A HEADERS frame longer than our SETTINGS_MAX_FIELD_SECTION_SIZE, refused from its
    // header alone: RFC 9114 §4.2.2's 431, and STOP_SENDING H3_NO_ERROR for the rest
    // (RFC 9114 §4.1.1). A stream-level answer: the connection stays.
    let mut h = H::new(Role::Server);
    let mut bytes = Vec::new();
    FrameHeader {
        ty: 0x01,
        len: Config::default().max_field_section_size + 1,
    }
    .encode(&mut bytes);
    let stream = h.peer_bidi(0);
    assert_eq!(h.feed(stream, &bytes, false), Feed::Done);
    assert_eq!(written_status(&h, stream), Some(431));
    assert_eq!(h.stops(), [(stream, Code::H3_NO_ERROR)]);
    h.assert_alive();
}

#[test]
fn field_section_that_decodes_too_large() {
    // Under the limit on the wire, over it once decoded (one-byte static references count
    // 32 bytes and more each): 431 too, decoding stops at the limit.
    let mut h = H::new(Role::Server);
    let mut block = vec![0u8, 0u8];
    block.extend(std::iter::repeat_n(0xc0 | 15, 10_000));
    let stream = h.peer_bidi(0);
    assert_eq!(
        h.feed(stream, &frame(Frame::Headers(block.into())), false),
        Feed::Done
    );
    assert_eq!(written_status(&h, stream), Some(431));
    assert_eq!(h.stops(), [(stream, Code::H3_NO_ERROR)]);
    h.assert_alive();
}

#[test]
fn incomplete_request_headers_time_out() {
    // A request whose HEADERS never comes whole is refused unprocessed after
    // pending_timeout (RFC 9114 §4.1.1: H3_REQUEST_REJECTED), and its bytes are let go.
    let mut h = H::new(Role::Server);
    let mut bytes = Vec::new();
    FrameHeader { ty: 0x01, len: 100 }.encode(&mut bytes);
    bytes.extend_from_slice(&[0; 10]);
    let stream = h.peer_bidi(0);
    assert_eq!(h.feed(stream, &bytes, false), Feed::Request);
    assert_eq!(h.conn.buffered().partial_requests, 1);
    let deadline = h.conn.poll_timeout().expect("a deadline for the request");
    assert_eq!(deadline, h.now + Config::default().pending_timeout);
    h.now = deadline;
    h.conn.handle_timeout(h.now);
    h.drain();
    h.assert_bidi_stream_error(stream, Code::H3_REQUEST_REJECTED);
    assert_eq!(h.conn.buffered(), Default::default());
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn unfinished_requests_count_against_the_session_limit() {
    // max_sessions requests in progress: one more is refused at once, unprocessed.
    let config = Config {
        max_sessions: 2,
        ..Config::default()
    };
    let mut h = H::with_config(Role::Server, config);
    let mut bytes = Vec::new();
    FrameHeader { ty: 0x01, len: 100 }.encode(&mut bytes);
    for n in 0..2 {
        assert_eq!(h.feed(h.peer_bidi(n), &bytes, false), Feed::Request);
    }
    let third = h.peer_bidi(2);
    assert_eq!(h.feed(third, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(third, Code::H3_REQUEST_REJECTED);
    assert_eq!(h.conn.buffered().partial_requests, 2);
}

#[test]
fn a_second_session_without_flow_control_from_a_draft_13_client() {
    // draft-ietf-webtrans-http3-14 §5.1: "A server that receives more than one session on
    // an underlying transport connection when flow control is not enabled MUST reset the
    // excessive CONNECT streams with a H3_REQUEST_REJECTED status". A draft-13/14 client
    // that declares no flow control (WT_MAX_SESSIONS 1, no WT_INITIAL_*) to a server with
    // room for 16 sessions: the second CONNECT is refused, the first stays.
    let mut h = H::bare(Role::Server, Config::default());
    let mut d13 = Settings::new();
    d13.set(id::H3_DATAGRAM, 1);
    d13.set(id::WT_MAX_SESSIONS, 1);
    let control = cat(&[
        &uni_preamble(UniStreamHeader::Control),
        &frame(Frame::Settings(d13)),
    ]);
    assert_eq!(
        h.feed(h.peer_uni(PEER_CONTROL), &control, false),
        Feed::Continue
    );
    assert!(!h.conn.flow_control());
    let first = h.requested_session();
    let second = h.peer_bidi(1);
    h.send(second, &headers_frame(&request().to_fields()), false);
    h.assert_bidi_stream_error(second, Code::H3_REQUEST_REJECTED);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionRequested { .. })));
    assert!(h.conn.session_ids().any(|s| s == first));
}

#[test]
fn oversized_bare_capsule() {
    // A capsule without a DATA frame over max_capsule_size gets what the same capsule in a
    // DATA frame gets: H3_EXCESSIVE_LOAD on its CONNECT stream only.
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    let mut bytes = Vec::new();
    FrameHeader {
        ty: capsule::ty::CLOSE_WEBTRANSPORT_SESSION,
        len: Config::default().max_capsule_size + 1,
    }
    .encode(&mut bytes);
    h.send(sid.stream_id(), &bytes, false);
    h.assert_bidi_stream_error(sid.stream_id(), Code::H3_EXCESSIVE_LOAD);
}

#[test]
fn second_control_stream() {
    // RFC 9114 §6.2.1: a second control stream MUST be H3_STREAM_CREATION_ERROR.
    let mut h = H::new(Role::Server);
    let second = h.peer_uni(PEER_FIRST_FREE_UNI);
    h.send(second, &uni_preamble(UniStreamHeader::Control), false);
    h.assert_connection_error(Code::H3_STREAM_CREATION_ERROR);
}

#[test]
fn second_qpack_encoder_stream() {
    // RFC 9204 §4.2: "Receipt of a second instance of either stream type MUST be treated
    // as a connection error of type H3_STREAM_CREATION_ERROR."
    let mut h = H::new(Role::Client);
    let second = h.peer_uni(PEER_FIRST_FREE_UNI);
    h.send(second, &uni_preamble(UniStreamHeader::QpackEncoder), false);
    h.assert_connection_error(Code::H3_STREAM_CREATION_ERROR);
}

#[test]
fn second_qpack_decoder_stream() {
    let mut h = H::new(Role::Server);
    let second = h.peer_uni(PEER_FIRST_FREE_UNI);
    h.send(second, &uni_preamble(UniStreamHeader::QpackDecoder), false);
    h.assert_connection_error(Code::H3_STREAM_CREATION_ERROR);
}

#[test]
fn control_stream_reset() {
    // RFC 9114 §6.2.1: "If either control stream is closed at any point, this MUST be
    // treated as a connection error of type H3_CLOSED_CRITICAL_STREAM."
    let mut h = H::new(Role::Server);
    h.reset(h.peer_uni(PEER_CONTROL), Code::H3_NO_ERROR);
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn control_stream_fin() {
    let mut h = H::new(Role::Client);
    let ctrl = h.peer_uni(PEER_CONTROL);
    assert_eq!(h.feed(ctrl, &[], true), Feed::Done);
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn qpack_encoder_stream_fin_and_decoder_stream_reset() {
    // RFC 9204 §4.2: closing either QPACK stream MUST be H3_CLOSED_CRITICAL_STREAM.
    let mut h = H::new(Role::Server);
    let enc = h.peer_uni(PEER_ENCODER);
    h.send(enc, &[], true);
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);

    let mut h = H::new(Role::Client);
    h.reset(h.peer_uni(PEER_DECODER), Code(0x1234));
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn stop_sending_on_our_control_stream() {
    // The peer cannot read our control stream any more: the same as closing it.
    let mut h = H::new(Role::Server);
    h.stop_sending(local_streams(Role::Server).control, Code::H3_NO_ERROR);
    h.assert_connection_error(Code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn push_stream_to_a_server() {
    // RFC 9114 §6.2.2: "Only servers can push; if a server receives a client-initiated
    // push stream, this MUST be treated as a connection error of type
    // H3_STREAM_CREATION_ERROR."
    let mut h = H::new(Role::Server);
    let s = h.peer_uni(PEER_FIRST_FREE_UNI);
    h.send(
        s,
        &cat(&[&uni_preamble(UniStreamHeader::Push), &var(0)]),
        false,
    );
    h.assert_connection_error(Code::H3_STREAM_CREATION_ERROR);
}

#[test]
fn push_stream_to_a_client() {
    // RFC 9114 §4.6: a push ID beyond the maximum the client sent (it sent no MAX_PUSH_ID
    // at all) MUST be H3_ID_ERROR.
    let mut h = H::new(Role::Client);
    let s = h.peer_uni(PEER_FIRST_FREE_UNI);
    h.send(
        s,
        &cat(&[&uni_preamble(UniStreamHeader::Push), &var(0)]),
        false,
    );
    h.assert_connection_error(Code::H3_ID_ERROR);
}

#[test]
fn unknown_uni_stream_type_is_stopped() {
    // RFC 9114 §6.2: unknown stream types are aborted, and "the recipient SHOULD use the
    // H3_STREAM_CREATION_ERROR error code"; the connection goes on.
    let mut h = H::new(Role::Server);
    let s = h.peer_uni(PEER_FIRST_FREE_UNI);
    let bytes = cat(&[&var(0x1234), b"whatever follows"]);
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_alive();
    assert_eq!(h.stops(), [(s, Code::H3_STREAM_CREATION_ERROR)]);
    assert!(
        h.resets().is_empty(),
        "a uni stream has no sending side to reset"
    );
    // And the connection still serves a session.
    h.actions.clear();
    h.requested_session();
}

#[test]
fn grease_uni_stream_type_is_stopped() {
    // RFC 9114 §6.2.3: reserved stream types 0x1f * N + 0x21 are treated like unknown ones.
    let mut h = H::new(Role::Client);
    let s = h.peer_uni(PEER_FIRST_FREE_UNI);
    let grease = UniStreamHeader::Unknown(0x1f * 1000 + 0x21);
    assert!(grease.is_grease());
    assert_eq!(h.feed(s, &uni_preamble(grease), false), Feed::Done);
    h.assert_alive();
    assert_eq!(h.stops(), [(s, Code::H3_STREAM_CREATION_ERROR)]);
}

// ---- QPACK ----

fn encoder_instruction(i: EncoderInstruction) -> Vec<u8> {
    let mut out = Vec::new();
    i.encode(&mut out);
    out
}

#[test]
fn qpack_set_capacity_above_zero() {
    // RFC 9204 §4.3.1: a capacity above the maximum we advertised (0) MUST be
    // QPACK_ENCODER_STREAM_ERROR. Capacity 0 itself (Chromium sends it) is fine.
    let mut h = H::new(Role::Server);
    let enc = h.peer_uni(PEER_ENCODER);
    let zero = encoder_instruction(EncoderInstruction::SetDynamicTableCapacity(0));
    assert_eq!(h.feed(enc, &zero, false), Feed::Continue);
    h.assert_alive();
    let one = encoder_instruction(EncoderInstruction::SetDynamicTableCapacity(1));
    h.send(enc, &one, false);
    h.assert_connection_error(Code::QPACK_ENCODER_STREAM_ERROR);
}

#[test]
fn qpack_insert_on_encoder_stream() {
    // RFC 9204 §3.2.2: an insert that cannot fit the table (capacity 0) MUST be
    // QPACK_ENCODER_STREAM_ERROR.
    let mut h = H::new(Role::Client);
    let enc = h.peer_uni(PEER_ENCODER);
    let insert = encoder_instruction(EncoderInstruction::InsertWithLiteralName {
        name: Bytes::from_static(b"x-key"),
        value: Bytes::from_static(b"value"),
    });
    h.send(enc, &insert, false);
    h.assert_connection_error(Code::QPACK_ENCODER_STREAM_ERROR);
}

#[test]
fn qpack_insert_count_increment_on_decoder_stream() {
    // RFC 9204 §4.4.3: an increment beyond what the encoder sent (we insert nothing)
    // MUST be QPACK_DECODER_STREAM_ERROR.
    let mut h = H::new(Role::Server);
    let dec = h.peer_uni(PEER_DECODER);
    let mut bytes = Vec::new();
    DecoderInstruction::InsertCountIncrement(1).encode(&mut bytes);
    h.send(dec, &bytes, false);
    h.assert_connection_error(Code::QPACK_DECODER_STREAM_ERROR);
}

#[test]
fn qpack_section_acknowledgment_on_decoder_stream() {
    // RFC 9204 §4.4.1: acknowledging a section that needed no acknowledgment MUST be
    // QPACK_DECODER_STREAM_ERROR. Stream Cancellation is harmless and accepted.
    let mut h = H::new(Role::Client);
    let dec = h.peer_uni(PEER_DECODER);
    let mut bytes = Vec::new();
    DecoderInstruction::StreamCancellation(0).encode(&mut bytes);
    assert_eq!(h.feed(dec, &bytes, false), Feed::Continue);
    h.assert_alive();
    let mut bytes = Vec::new();
    DecoderInstruction::SectionAcknowledgment(0).encode(&mut bytes);
    h.send(dec, &bytes, false);
    h.assert_connection_error(Code::QPACK_DECODER_STREAM_ERROR);
}

#[test]
fn qpack_nonzero_required_insert_count() {
    // Chromium's CONNECT when a dynamic table is allowed: Required Insert Count 6, which
    // no conformant encoder produces against our capacity 0 (RFC 9204 §4.5.1.1):
    // QPACK_DECOMPRESSION_FAILED.
    let mut h = H::new(Role::Server);
    let bytes = frame(Frame::Headers(hex("0600d7cf8483828180").into()));
    h.send(h.peer_bidi(0), &bytes, false);
    h.assert_connection_error(Code::QPACK_DECOMPRESSION_FAILED);
}

#[test]
fn qpack_bad_huffman_in_header_value() {
    // :path (static name index 1) with a one-byte Huffman value 0x00: the symbol '0'
    // (00000) then padding 000, which is not the EOS prefix (RFC 7541 §5.2).
    let mut h = H::new(Role::Server);
    let block = [0x00, 0x00, 0x51, 0x81, 0x00];
    h.send(h.peer_bidi(0), &raw_headers(&block), false);
    h.assert_connection_error(Code::QPACK_DECOMPRESSION_FAILED);
}

#[test]
fn qpack_huffman_eos_in_header_name() {
    // A literal name whose Huffman string is four 0xff bytes: the 30-bit EOS code
    // (RFC 7541 §5.2: containing EOS is a decoding error).
    let mut h = H::new(Role::Client);
    let sid = h.client_session();
    let block = [0x00, 0x00, 0x2c, 0xff, 0xff, 0xff, 0xff, 0x00];
    h.send(sid.stream_id(), &raw_headers(&block), false);
    h.assert_connection_error(Code::QPACK_DECOMPRESSION_FAILED);
}

#[test]
fn qpack_static_index_out_of_range() {
    // RFC 9204 §3.1: an invalid static index MUST be QPACK_DECOMPRESSION_FAILED. Index 99
    // (0xc0 | 63, then 36) is one past the last entry.
    let mut h = H::new(Role::Server);
    let block = [0x00, 0x00, 0xff, 36];
    h.send(h.peer_bidi(0), &raw_headers(&block), false);
    h.assert_connection_error(Code::QPACK_DECOMPRESSION_FAILED);
}

#[test]
fn qpack_dynamic_table_reference() {
    // RFC 9204 §2.2.3: an indexed line into the (empty) dynamic table (T=0).
    let mut h = H::new(Role::Server);
    let block = [0x00, 0x00, 0x80];
    h.send(h.peer_bidi(0), &raw_headers(&block), false);
    h.assert_connection_error(Code::QPACK_DECOMPRESSION_FAILED);
}

// ---- the CONNECT request ----

#[test]
fn unknown_pseudo_header() {
    // RFC 9114 §4.3: undefined pseudo-headers make the request malformed; §4.1.2: a
    // malformed request is a stream error of type H3_MESSAGE_ERROR.
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| f.insert(1, field(":foo", "bar")));
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_MESSAGE_ERROR);
}

#[test]
fn method_get() {
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| {
        for x in f.iter_mut().filter(|x| &x.name[..] == b":method") {
            x.value = Bytes::from_static(b"GET");
        }
    });
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_MESSAGE_ERROR);
}

#[test]
fn missing_protocol_pseudo_header() {
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| f.retain(|x| &x.name[..] != b":protocol"));
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_MESSAGE_ERROR);
}

#[test]
fn uppercase_field_name() {
    // RFC 9114 §4.2: uppercase characters in a field name make the message malformed.
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| f.push(field("X-Custom", "1")));
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_MESSAGE_ERROR);
}

#[test]
fn pseudo_header_after_regular_field() {
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| {
        let protocol = f.remove(4);
        assert_eq!(&protocol.name[..], b":protocol");
        f.push(protocol);
    });
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_MESSAGE_ERROR);
}

#[test]
fn connection_specific_field() {
    // RFC 9114 §4.2: connection-specific fields make the message malformed.
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| f.push(field("connection", "keep-alive")));
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_MESSAGE_ERROR);
}

#[test]
fn unknown_upgrade_token_is_answered_501() {
    // A well-formed extended CONNECT for a protocol we do not speak is not malformed: it
    // is answered 501 and the stream finished, with no reset.
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let bytes = request_fields_with(|f| {
        for x in f.iter_mut().filter(|x| &x.name[..] == b":protocol") {
            x.value = Bytes::from_static(b"websocket");
        }
    });
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_alive();
    assert!(
        h.stops().is_empty() && h.resets().is_empty(),
        "{:?}",
        h.actions
    );
    let (data, fin) = h
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Write { stream, data, fin } if *stream == s => Some((data.clone(), *fin)),
            _ => None,
        })
        .expect("a response is written");
    assert!(fin);
    let (f, n) = Frame::decode(&data, &FrameLimits::default())
        .unwrap()
        .unwrap();
    assert_eq!(n, data.len());
    let Frame::Headers(block) = f else {
        panic!("not HEADERS: {f:?}")
    };
    let fields = qpack::decode_field_section(&block, 16384).unwrap();
    assert_eq!(ConnectResponse::from_fields(&fields).unwrap().status, 501);
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionRequested { .. })));
}

#[test]
fn data_before_headers_on_request_stream() {
    // RFC 9114 §4.1: a DATA frame before HEADERS is H3_FRAME_UNEXPECTED.
    let mut h = H::new(Role::Server);
    h.send(h.peer_bidi(0), &data_frame(b"early"), false);
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn data_before_response_headers_on_client() {
    let mut h = H::new(Role::Client);
    let sid = h.client_session();
    h.send(sid.stream_id(), &data_frame(b"early"), false);
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

#[test]
fn settings_and_goaway_on_request_stream() {
    // RFC 9114 §7.2.4 / §7.2.6: SETTINGS or GOAWAY on a request stream is
    // H3_FRAME_UNEXPECTED.
    for bad in [
        frame(Frame::Settings(Settings::new())),
        frame(Frame::Goaway(VarInt::from_u32(0))),
    ] {
        let mut h = H::new(Role::Server);
        let bytes = cat(&[&headers_frame(&request().to_fields()), &bad]);
        h.send(h.peer_bidi(0), &bytes, false);
        h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
    }
}

#[test]
fn request_stream_fin_before_headers() {
    // RFC 9114 §4.1.2: a request stream that ends without a complete request: the server
    // aborts it with H3_REQUEST_INCOMPLETE. A GREASE frame stands in for "something that
    // is not HEADERS".
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let grease = frame(Frame::Unknown {
        ty: 0x21 + 0x1f,
        len: 3,
    });
    assert_eq!(h.feed(s, &grease, true), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_REQUEST_INCOMPLETE);
}

#[test]
fn empty_request_stream_fin() {
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    assert_eq!(h.feed(s, &[], true), Feed::Done);
    h.assert_bidi_stream_error(s, Code::H3_REQUEST_INCOMPLETE);
}

#[test]
fn frame_cut_by_fin_on_request_stream() {
    // RFC 9114 §7.1: a frame cut short by the end of its stream is H3_FRAME_ERROR.
    let mut h = H::new(Role::Server);
    let s = h.peer_bidi(0);
    let mut bytes = headers_frame(&request().to_fields());
    let cut = bytes.len() - 3;
    bytes.truncate(cut);
    h.send(s, &bytes, true);
    h.assert_connection_error(Code::H3_FRAME_ERROR);
}

#[test]
fn request_after_goaway_is_rejected() {
    // RFC 9114 §5.2: requests at or above the GOAWAY id are refused with
    // H3_REQUEST_REJECTED (a stream error).
    let mut h = H::new(Role::Server);
    let sid = h.requested_session();
    let id = h.conn.goaway();
    assert_eq!(id, sid.stream_id() + 4);
    h.drain();
    h.actions.clear();
    let late = h.peer_bidi(1);
    assert_eq!(late, id);
    assert_eq!(
        h.feed(late, &headers_frame(&request().to_fields()), false),
        Feed::Done
    );
    h.assert_bidi_stream_error(late, Code::H3_REQUEST_REJECTED);
}

#[test]
fn interim_response_then_success() {
    // RFC 9114 §4.1: a response is zero or more interim (1xx) HEADERS, then the final one.
    let mut h = H::new(Role::Client);
    let sid = h.client_session();
    let bytes = cat(&[
        &headers_frame(&ConnectResponse::new(103).to_fields()),
        &headers_frame(&ConnectResponse::new(200).to_fields()),
    ]);
    assert_eq!(h.feed(sid.stream_id(), &bytes, false), Feed::Continue);
    h.assert_alive();
    assert!(h.conn.is_established(sid), "events: {:?}", h.events);
}

// ---- capsules on the CONNECT stream ----

/// The code a malformed capsule is reported with. RFC 9297 §3.3 makes a malformed capsule
/// a malformed message, which RFC 9114 §4.1.2 makes a *stream* error of type
/// H3_MESSAGE_ERROR: the CONNECT stream is reset (ending its session) and the connection
/// stays up.
fn capsule_error_code(h: &H, stream: u64) -> Option<Code> {
    assert!(
        !h.actions
            .iter()
            .any(|a| matches!(a, Action::CloseConnection { .. })),
        "a malformed capsule must not close the connection: {:?}",
        h.actions
    );
    h.actions.iter().find_map(|a| match a {
        Action::Reset { stream: s, code } if *s == stream => Some(*code),
        _ => None,
    })
}

#[test]
fn close_capsule_reason_over_1024_bytes() {
    // draft-ietf-webtrans-http3 §6: the close message "MUST NOT exceed 1024 bytes".
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    let mut value = Vec::new();
    value.put_u32(7);
    value.extend_from_slice(&[b'a'; 1025]);
    let bytes = data_frame(&raw_capsule(
        capsule::ty::CLOSE_WEBTRANSPORT_SESSION,
        &value,
    ));
    h.send(sid.stream_id(), &bytes, false);
    assert_eq!(
        capsule_error_code(&h, sid.stream_id()),
        Some(Code::H3_MESSAGE_ERROR),
        "{:?}",
        h.actions
    );
    assert!(!h.conn.is_established(sid));
}

#[test]
fn close_capsule_of_exactly_1024_bytes_is_fine() {
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    let reason = "r".repeat(1024);
    let mut value = Vec::new();
    value.put_u32(9);
    value.extend_from_slice(reason.as_bytes());
    let bytes = data_frame(&raw_capsule(
        capsule::ty::CLOSE_WEBTRANSPORT_SESSION,
        &value,
    ));
    h.send(sid.stream_id(), &bytes, false);
    h.assert_alive();
    assert!(h.events.contains(&Event::SessionEnded {
        session: sid,
        end: SessionEnd::Closed {
            code: 9,
            reason,
            remote: true
        }
    }));
}

#[test]
fn close_capsule_shorter_than_its_code() {
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    let bytes = data_frame(&raw_capsule(
        capsule::ty::CLOSE_WEBTRANSPORT_SESSION,
        &[0, 0, 1],
    ));
    h.send(sid.stream_id(), &bytes, false);
    assert_eq!(
        capsule_error_code(&h, sid.stream_id()),
        Some(Code::H3_MESSAGE_ERROR)
    );
}

#[test]
fn close_capsule_reason_not_utf8() {
    let mut h = H::new(Role::Client);
    let sid = h.client_session();
    let ok = headers_frame(&ConnectResponse::new(200).to_fields());
    h.send(sid.stream_id(), &ok, false);
    assert!(h.conn.is_established(sid));
    h.actions.clear();
    let bytes = data_frame(&raw_capsule(
        capsule::ty::CLOSE_WEBTRANSPORT_SESSION,
        &[0, 0, 0, 1, 0xff, 0xfe],
    ));
    h.send(sid.stream_id(), &bytes, false);
    assert_eq!(
        capsule_error_code(&h, sid.stream_id()),
        Some(Code::H3_MESSAGE_ERROR)
    );
}

#[test]
fn drain_capsule_with_a_value() {
    // DRAIN_WEBTRANSPORT_SESSION has an empty value; anything else is malformed.
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    let bytes = data_frame(&raw_capsule(capsule::ty::DRAIN_WEBTRANSPORT_SESSION, &[1]));
    h.send(sid.stream_id(), &bytes, false);
    assert_eq!(
        capsule_error_code(&h, sid.stream_id()),
        Some(Code::H3_MESSAGE_ERROR)
    );
}

#[test]
fn oversized_known_capsule() {
    // A known capsule over max_capsule_size is refused from its header (no buffering):
    // H3_EXCESSIVE_LOAD (RFC 9114 §10.5), as a stream error on the CONNECT stream, which
    // ends that session only.
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    let mut capsule = Vec::new();
    varint::encode(capsule::ty::DATAGRAM, &mut capsule);
    varint::encode(Config::default().max_capsule_size + 1, &mut capsule);
    let mut bytes = Vec::new();
    FrameHeader {
        ty: 0x00,
        len: capsule.len() as u64,
    }
    .encode(&mut bytes);
    bytes.extend_from_slice(&capsule);
    h.send(sid.stream_id(), &bytes, false);
    h.assert_bidi_stream_error(sid.stream_id(), Code::H3_EXCESSIVE_LOAD);
    h.assert_alive();
}

#[test]
fn unframed_close_capsule_before_headers() {
    // A bare close capsule (pywebtransport 0.8.1 style) is only taken after HEADERS; in
    // first place it is a frame that does not belong there.
    let mut h = H::new(Role::Server);
    let close = Capsule::close(1, "x").unwrap();
    let mut bytes = Vec::new();
    close.encode(&mut bytes);
    h.send(h.peer_bidi(0), &bytes, false);
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}

// ---- WebTransport streams and datagrams ----

#[test]
fn wt_uni_stream_for_unknown_session_on_client() {
    // A client knows every session it opened; streams for any other are refused with
    // WT_SESSION_GONE rather than buffered.
    let mut h = H::new(Role::Client);
    let s = h.peer_uni(PEER_FIRST_FREE_UNI);
    let sid = SessionId::from_stream_id(8).unwrap();
    let bytes = cat(&[&uni_preamble(UniStreamHeader::WebTransport(sid)), b"data"]);
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_alive();
    assert_eq!(h.stops(), [(s, Code::WT_SESSION_GONE)]);
    assert_eq!(h.conn.stats().streams_gone, 1);
}

#[test]
fn wt_bidi_stream_for_unknown_session_on_client() {
    let mut h = H::new(Role::Client);
    let s = h.peer_bidi(0);
    let mut bytes = Vec::new();
    BidiStreamHeader::encode_webtransport(SessionId::from_stream_id(4).unwrap(), &mut bytes);
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_bidi_stream_error(s, Code::WT_SESSION_GONE);
}

#[test]
fn wt_streams_with_odd_session_id() {
    // A session id must be a client-initiated bidirectional stream id; anything else is
    // a misused stream id: H3_ID_ERROR (RFC 9114 §8.1).
    for bad in [1u64, 2, 3, 5, 6] {
        let mut h = H::new(Role::Server);
        let s = h.peer_uni(PEER_FIRST_FREE_UNI);
        h.send(s, &cat(&[&var(0x54), &var(bad)]), false);
        h.assert_connection_error(Code::H3_ID_ERROR);

        let mut h = H::new(Role::Server);
        let s = h.peer_bidi(0);
        h.send(s, &cat(&[&var(0x41), &var(bad)]), false);
        h.assert_connection_error(Code::H3_ID_ERROR);
    }
}

#[test]
fn server_initiated_request_stream_seen_by_client() {
    // RFC 9114 §6.1: "Clients MUST treat receipt of a server-initiated bidirectional
    // stream as a connection error of type H3_STREAM_CREATION_ERROR unless such an
    // extension has been negotiated" (WebTransport's 0x41 signal is that extension).
    let mut h = H::new(Role::Client);
    let s = h.peer_bidi(0);
    h.send(s, &headers_frame(&request().to_fields()), false);
    h.assert_connection_error(Code::H3_STREAM_CREATION_ERROR);
}

#[test]
fn wt_stream_after_goaway_for_later_session() {
    // A server that sent GOAWAY will never open sessions at or above its id: their
    // streams are refused with WT_SESSION_GONE rather than buffered.
    let mut h = H::new(Role::Server);
    let id = h.conn.goaway();
    h.drain();
    h.actions.clear();
    let s = h.peer_uni(PEER_FIRST_FREE_UNI);
    let sid = SessionId::from_stream_id(id).unwrap();
    let bytes = uni_preamble(UniStreamHeader::WebTransport(sid));
    assert_eq!(h.feed(s, &bytes, false), Feed::Done);
    h.assert_alive();
    assert_eq!(h.stops(), [(s, Code::WT_SESSION_GONE)]);
}

#[test]
fn datagram_quarter_stream_id_out_of_range() {
    // RFC 9297 §2.1: a quarter stream id above 2^60 - 1 MUST be H3_DATAGRAM_ERROR.
    let mut h = H::new(Role::Server);
    h.datagram(cat(&[&var(1 << 60), b"payload"]));
    h.assert_connection_error(Code::H3_DATAGRAM_ERROR);
}

#[test]
fn datagram_largest_quarter_stream_id_is_fine() {
    let mut h = H::new(Role::Server);
    h.datagram(cat(&[&var((1 << 60) - 1), b"payload"]));
    h.assert_alive();
}

#[test]
fn empty_datagram() {
    // No room for the quarter stream id: malformed, H3_DATAGRAM_ERROR.
    let mut h = H::new(Role::Client);
    h.datagram(Vec::new());
    h.assert_connection_error(Code::H3_DATAGRAM_ERROR);
    let mut h = H::new(Role::Client);
    h.datagram(vec![0x40]);
    h.assert_connection_error(Code::H3_DATAGRAM_ERROR);
}

#[test]
fn datagram_encoding_round_trips_through_the_decoder() {
    // Sanity for the builders above: what the crate encodes decodes to the same session.
    let sid = SessionId::from_stream_id(4 * 1000).unwrap();
    let d = datagram::encode(sid, b"x");
    assert_eq!(
        datagram::decode(&d).unwrap(),
        (sid, Bytes::from_static(b"x"))
    );
}

// ---- GOAWAY and push frames on the control stream ----

#[test]
fn goaway_from_server_with_non_request_stream_id() {
    // RFC 9114 §5.2: a client receiving a GOAWAY whose id is not a client-initiated
    // bidirectional stream id MUST treat it as H3_ID_ERROR.
    for id in [1u32, 2, 3, 6] {
        let mut h = H::new(Role::Client);
        h.control(&frame(Frame::Goaway(VarInt::from_u32(id))));
        h.assert_connection_error(Code::H3_ID_ERROR);
    }
}

#[test]
fn goaway_id_increases() {
    // RFC 9114 §5.2: a GOAWAY id larger than a previous one MUST be H3_ID_ERROR; equal or
    // smaller ones are fine.
    let mut h = H::new(Role::Client);
    h.control(&frame(Frame::Goaway(VarInt::from_u32(8))));
    h.control(&frame(Frame::Goaway(VarInt::from_u32(8))));
    h.control(&frame(Frame::Goaway(VarInt::from_u32(4))));
    h.assert_alive();
    assert_eq!(h.conn.goaway_received(), Some(4));
    h.control(&frame(Frame::Goaway(VarInt::from_u32(12))));
    h.assert_connection_error(Code::H3_ID_ERROR);

    // From a client the id is a push id, with the same rule.
    let mut h = H::new(Role::Server);
    h.control(&frame(Frame::Goaway(VarInt::from_u32(3))));
    h.assert_alive();
    h.control(&frame(Frame::Goaway(VarInt::from_u32(5))));
    h.assert_connection_error(Code::H3_ID_ERROR);
}

#[test]
fn cancel_push() {
    // RFC 9114 §7.2.3: CANCEL_PUSH for a push id never allowed (we send no MAX_PUSH_ID)
    // or never promised is H3_ID_ERROR, whichever side receives it.
    for role in [Role::Client, Role::Server] {
        let mut h = H::new(role);
        h.control(&frame(Frame::CancelPush(VarInt::from_u32(0))));
        h.assert_connection_error(Code::H3_ID_ERROR);
    }
}

#[test]
fn max_push_id_from_a_server() {
    // RFC 9114 §7.2.7: a client receiving MAX_PUSH_ID MUST treat it as
    // H3_FRAME_UNEXPECTED. A server may receive it.
    let mut h = H::new(Role::Client);
    h.control(&frame(Frame::MaxPushId(VarInt::from_u32(10))));
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);

    let mut h = H::new(Role::Server);
    h.control(&frame(Frame::MaxPushId(VarInt::from_u32(10))));
    h.assert_alive();
}

// ---- after an error ----

#[test]
fn nothing_more_happens_after_a_connection_error() {
    let mut h = H::new(Role::Server);
    h.control(&frame(Frame::CancelPush(VarInt::from_u32(0))));
    h.assert_connection_error(Code::H3_ID_ERROR);
    h.actions.clear();
    h.events.clear();
    assert_eq!(
        h.feed(
            h.peer_bidi(0),
            &headers_frame(&request().to_fields()),
            false
        ),
        Feed::Done
    );
    h.datagram(datagram::encode(SessionId::from_stream_id(0).unwrap(), b"x").to_vec());
    h.conn.handle_timeout(h.now + Duration::from_secs(60));
    h.drain();
    assert!(h.actions.is_empty(), "{:?}", h.actions);
    assert!(h.events.is_empty(), "{:?}", h.events);
}

#[test]
fn capsules_after_reject_are_dropped() {
    // After the server rejected a request, what the client still sends on the stream is
    // "read and dropped" (connection.rs reject_session): no events for a session that
    // never opened, and no second FIN on a stream already finished.
    for capsule in [Capsule::close(3, "late").unwrap(), Capsule::DrainSession] {
        let mut h = H::new(Role::Server);
        let sid = h.requested_session();
        h.conn.reject_session(sid, 404).unwrap();
        h.drain();
        h.actions.clear();
        h.events.clear();
        let mut bytes = Vec::new();
        capsule.encode(&mut bytes);
        h.send(sid.stream_id(), &data_frame(&bytes), false);
        h.assert_alive();
        assert!(h.events.is_empty(), "{capsule:?}: events {:?}", h.events);
        assert!(h.actions.is_empty(), "{capsule:?}: actions {:?}", h.actions);
    }
}

#[test]
fn bytes_after_stop_sending_on_connect_stream() {
    // STOP_SENDING only closes our sending side; the client may still send (a close
    // capsule, then FIN). That must not be taken for a new request.
    let mut h = H::new(Role::Server);
    let sid = h.established_session();
    h.stop_sending(sid.stream_id(), Code::H3_NO_ERROR);
    h.actions.clear();
    let mut bytes = Vec::new();
    Capsule::close(5, "bye").unwrap().encode(&mut bytes);
    h.send(sid.stream_id(), &data_frame(&bytes), true);
    h.assert_alive();
}

#[test]
fn max_push_id_decreasing() {
    // RFC 9114 §7.2.7: "receipt of a MAX_PUSH_ID frame that contains a smaller value than
    // previously received MUST be treated as a connection error of type H3_ID_ERROR."
    let mut h = H::new(Role::Server);
    h.control(&frame(Frame::MaxPushId(VarInt::from_u32(10))));
    h.assert_alive();
    h.control(&frame(Frame::MaxPushId(VarInt::from_u32(9))));
    h.assert_connection_error(Code::H3_ID_ERROR);
}

#[test]
fn push_promise_to_a_client() {
    // RFC 9114 §4.6: a push ID above the maximum the client sent (it sent none) MUST be
    // H3_ID_ERROR; only a server receiving PUSH_PROMISE answers H3_FRAME_UNEXPECTED
    // (§7.2.5), which the server-side case below checks.
    let mut h = H::new(Role::Client);
    let sid = h.client_session();
    h.send(
        sid.stream_id(),
        &raw_frame(0x05, &[0x00, 0x00, 0x00]),
        false,
    );
    h.assert_connection_error(Code::H3_ID_ERROR);
}

#[test]
fn push_promise_to_a_server() {
    // RFC 9114 §7.2.5: "A server MUST treat the receipt of a PUSH_PROMISE frame as a
    // connection error of type H3_FRAME_UNEXPECTED."
    let mut h = H::new(Role::Server);
    let bytes = cat(&[
        &headers_frame(&request().to_fields()),
        &raw_frame(0x05, &[0x00, 0x00, 0x00]),
    ]);
    h.send(h.peer_bidi(0), &bytes, false);
    h.assert_connection_error(Code::H3_FRAME_UNEXPECTED);
}
