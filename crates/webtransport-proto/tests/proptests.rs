//! Property tests: random bytes into every parser, and random operation sequences into a
//! client and a server `Connection`.
//!
//! The parsers must never panic whatever they are fed, and the streaming readers must not
//! care how their input is cut into chunks. The state machine must never panic, and what
//! it buffers for sessions that are not established yet must stay within the configured
//! caps, as far as the public API lets a caller count it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use proptest::prelude::*;
use proptest::sample::Index;
use webtransport_proto::capsule::{self, Capsule, CapsuleError, CapsuleReader};
use webtransport_proto::connection::{
    Action, CapsuleFraming, CommandError, Config, Connection, Event, Feed, LocalStreams, Role,
    SessionStatus,
};
use webtransport_proto::frame::{Frame, FrameError, FrameEvent, FrameLimits, FrameReader};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::qpack::{self, HeaderField};
use webtransport_proto::settings::Settings;
use webtransport_proto::stream_header::{BidiStreamHeader, SessionId, UniStreamHeader};
use webtransport_proto::varint;
use webtransport_proto::{datagram, Code};

// ---- parsers ----

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn limits() -> impl Strategy<Value = FrameLimits> {
    (0u64..64, 0u64..64, any::<bool>()).prop_map(|(h, c, default)| {
        if default {
            FrameLimits::default()
        } else {
            FrameLimits {
                max_headers: h,
                max_control: c,
            }
        }
    })
}

/// Cuts `data` at the given points (taken modulo its length) into chunks.
fn chunks<'a>(data: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// Frame events with DATA payload merged, so that chunking does not show.
#[derive(Debug, PartialEq)]
enum Seen {
    Frame(Frame),
    DataStart(u64),
    Data(Vec<u8>),
    Raw(u64, Bytes),
}

fn record(out: &mut Vec<Seen>, ev: FrameEvent) {
    match ev {
        FrameEvent::Frame(f) => out.push(Seen::Frame(f)),
        FrameEvent::DataStart(n) => out.push(Seen::DataStart(n)),
        FrameEvent::DataChunk(c) => match out.last_mut() {
            Some(Seen::Data(d)) => d.extend_from_slice(&c),
            _ => out.push(Seen::Data(c.to_vec())),
        },
        FrameEvent::Raw { ty, payload } => out.push(Seen::Raw(ty, payload)),
    }
}

/// Runs a FrameReader over the chunks: the events, the error that stopped it (if any),
/// and whether it ended at a frame boundary.
fn read_frames(
    limits: FrameLimits,
    raw: &[u64],
    parts: &[&[u8]],
) -> (Vec<Seen>, Option<FrameError>, bool) {
    let mut r = FrameReader::new(limits);
    for &t in raw {
        r.buffer_type(t);
    }
    let mut seen = Vec::new();
    for part in parts {
        r.push(part);
        loop {
            match r.poll() {
                Ok(Some(ev)) => record(&mut seen, ev),
                Ok(None) => break,
                Err(e) => return (seen, Some(e), false),
            }
        }
    }
    let at_boundary = r.is_at_boundary();
    (seen, None, at_boundary)
}

fn read_capsules(max: u64, parts: &[&[u8]]) -> (Vec<Capsule>, Option<CapsuleError>, bool) {
    let mut r = CapsuleReader::new(max);
    let mut seen = Vec::new();
    for part in parts {
        r.push(part);
        loop {
            match r.poll() {
                Ok(Some(c)) => seen.push(c),
                Ok(None) => break,
                Err(e) => return (seen, Some(e), false),
            }
        }
    }
    let clean = r.finish().is_ok();
    (seen, None, clean)
}

/// Input that looks like frames: a sequence of (type, length, payload) with types drawn
/// mostly from the known ones, so that the payload parsers are reached.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let ty = prop_oneof![
        prop::sample::select(vec![
            0u64, 1, 3, 4, 5, 7, 0xd, 0x21, 0x2843, 0x78ae, 0x2, 0x41
        ]),
        any::<u64>().prop_map(|t| t & ((1 << 62) - 1)),
    ];
    prop::collection::vec((ty, bytes(24), any::<bool>()), 0..8).prop_map(|frames| {
        let mut out = Vec::new();
        for (ty, payload, lie) in frames {
            varint::encode(ty, &mut out);
            let len = if lie {
                payload.len() as u64 + 3
            } else {
                payload.len() as u64
            };
            varint::encode(len, &mut out);
            out.extend_from_slice(&payload);
        }
        out
    })
}

fn capsule_like() -> impl Strategy<Value = Vec<u8>> {
    let ty = prop_oneof![
        prop::sample::select(vec![
            capsule::ty::DATAGRAM,
            capsule::ty::CLOSE_WEBTRANSPORT_SESSION,
            capsule::ty::DRAIN_WEBTRANSPORT_SESSION,
            capsule::ty::WT_MAX_DATA,
            capsule::ty::WT_MAX_STREAMS_BIDI,
            capsule::ty::WT_MAX_STREAMS_UNI,
            capsule::ty::WT_DATA_BLOCKED,
            capsule::ty::WT_STREAMS_BLOCKED_BIDI,
            capsule::ty::WT_STREAMS_BLOCKED_UNI,
            0x17 + 0x29,
        ]),
        any::<u32>().prop_map(u64::from),
    ];
    prop::collection::vec((ty, bytes(40)), 0..6).prop_map(|caps| {
        let mut out = Vec::new();
        for (ty, value) in caps {
            varint::encode(ty, &mut out);
            varint::encode(value.len() as u64, &mut out);
            out.extend_from_slice(&value);
        }
        out
    })
}

fn field_section_like() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(vec![0u8, 0x80, 0x06]), bytes(48)).prop_map(|(sign, rest)| {
        let mut out = vec![0x00, sign];
        out.extend_from_slice(&rest);
        out
    })
}

fn header_field() -> impl Strategy<Value = HeaderField> {
    let name = prop_oneof![
        prop::sample::select(vec![
            ":method",
            ":scheme",
            ":authority",
            ":path",
            ":protocol",
            ":status",
            ":foo",
            "origin",
            "host",
            "te",
            "connection",
            "sec-webtransport-http3-draft02",
            "sec-webtransport-http3-draft",
            "wt-available-protocols",
            "wt-protocol",
            "X-Upper",
            "",
        ])
        .prop_map(|s| Bytes::from_static(s.as_bytes())),
        "[a-z-]{1,12}".prop_map(Bytes::from),
        bytes(12).prop_map(Bytes::from),
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "CONNECT",
            "GET",
            "https",
            "/",
            "/wt",
            "example.test",
            "u@example.test",
            "webtransport",
            "webtransport-h3",
            "200",
            "101",
            "99",
            "1",
            "draft02",
            "trailers",
            "\"echo\", \"chat\";q=1",
            "\"a\\\"b\"",
            "(\"inner\")",
            "\"unterminated",
            "",
        ])
        .prop_map(|s| Bytes::from_static(s.as_bytes())),
        bytes(20).prop_map(Bytes::from),
    ];
    (name, value).prop_map(|(name, value)| HeaderField { name, value })
}

fn request_like() -> impl Strategy<Value = Vec<HeaderField>> {
    // A valid request with a few fields edited, dropped, swapped or added.
    let valid = ConnectRequest {
        authority: "example.test".into(),
        path: "/wt".into(),
        origin: Some("https://example.test".into()),
        available_protocols: vec!["echo".into()],
        ..ConnectRequest::default()
    }
    .to_fields();
    (
        prop::collection::vec((any::<Index>(), header_field(), 0u8..4), 0..4),
        Just(valid),
    )
        .prop_map(|(edits, mut fields)| {
            for (at, f, how) in edits {
                let i = at.index(fields.len().max(1));
                match how {
                    0 if !fields.is_empty() => fields[i] = f,
                    1 if !fields.is_empty() => {
                        fields.remove(i);
                    }
                    2 if fields.len() > 1 => {
                        let j = (i + 1) % fields.len();
                        fields.swap(i, j);
                    }
                    _ => fields.insert(i.min(fields.len()), f),
                }
            }
            fields
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn frame_decode_never_panics(
        data in prop_oneof![bytes(64), frame_like()],
        limits in limits(),
    ) {
        if let Ok(Some((_, n))) = Frame::decode(&data, &limits) {
            prop_assert!(n > 0 && n <= data.len());
        }
    }

    #[test]
    fn frame_reader_does_not_care_about_chunking(
        data in prop_oneof![bytes(64), frame_like()],
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        limits in limits(),
        raw in prop::collection::vec(prop::sample::select(vec![0x21u64, 0x2843, 0x78ae, 0x4]), 0..2),
    ) {
        let whole = read_frames(limits, &raw, &[&data]);
        let chunked = read_frames(limits, &raw, &chunks(&data, &cuts));
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn frame_decode_agrees_with_the_reader_on_one_control_frame(data in frame_like()) {
        // For a complete non-DATA frame that the reader buffers (not skips), both parsers
        // see the same frame.
        let limits = FrameLimits::default();
        if let Ok(Some((f, n))) = Frame::decode(&data, &limits) {
            if !matches!(f, Frame::Data(_) | Frame::Unknown { .. }) {
                let (seen, err, _) = read_frames(limits, &[], &[&data[..n]]);
                prop_assert!(err.is_none());
                prop_assert_eq!(seen, vec![Seen::Frame(f)]);
            }
        }
    }

    #[test]
    fn settings_decode_never_panics(data in prop_oneof![bytes(64), frame_like()]) {
        if let Ok(s) = Settings::decode(&data) {
            // What decodes re-encodes to something that decodes the same.
            let mut out = Vec::new();
            s.encode(&mut out);
            prop_assert_eq!(out.len(), s.encoded_len());
            prop_assert_eq!(Settings::decode(&out).unwrap(), s);
        }
    }

    #[test]
    fn capsule_decode_never_panics(
        data in prop_oneof![bytes(64), capsule_like()],
        max in prop_oneof![0u64..64, Just(u64::MAX)],
    ) {
        if let Ok(Some((c, n))) = Capsule::decode(&data, max) {
            prop_assert!(n > 0 && n <= data.len());
            // Known capsules re-encode to the same bytes (unknown ones are written zeroed).
            if !matches!(c, Capsule::Unknown { .. }) {
                let mut out = Vec::new();
                c.encode(&mut out);
                prop_assert_eq!(out.len(), c.encoded_len());
                prop_assert_eq!(Capsule::decode(&out, u64::MAX).unwrap(), Some((c, out.len())));
            }
        }
    }

    #[test]
    fn capsule_reader_does_not_care_about_chunking(
        data in prop_oneof![bytes(64), capsule_like()],
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        max in prop_oneof![0u64..64, Just(8192u64)],
    ) {
        let whole = read_capsules(max, &[&data]);
        let chunked = read_capsules(max, &chunks(&data, &cuts));
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn stream_headers_never_panic(data in bytes(24)) {
        if let Ok(Some((h, n))) = UniStreamHeader::decode(&data) {
            prop_assert!(n > 0 && n <= data.len());
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(out.len(), h.encoded_len());
            prop_assert_eq!(UniStreamHeader::decode(&out), Ok(Some((h, out.len()))));
        }
        if let Ok(Some((h, n))) = BidiStreamHeader::decode(&data) {
            prop_assert!(n <= data.len());
            if let BidiStreamHeader::WebTransport(s) = h {
                prop_assert!(n >= BidiStreamHeader::webtransport_len(s));
            }
        }
    }

    #[test]
    fn datagram_decode_never_panics(data in bytes(24)) {
        let data = Bytes::from(data);
        if let Ok((session, payload)) = datagram::decode(&data) {
            prop_assert!(datagram::header_len(session) <= data.len() - payload.len());
            prop_assert_eq!(&data[data.len() - payload.len()..], &payload[..]);
        }
    }

    #[test]
    fn qpack_decode_never_panics(
        data in prop_oneof![bytes(64), field_section_like()],
        max in prop_oneof![0u64..256, Just(u64::MAX)],
    ) {
        if let Ok(fields) = qpack::decode_field_section(&data, max) {
            let size: u64 = fields.iter().map(HeaderField::size).sum();
            prop_assert!(size <= max);
            // What decodes re-encodes (our way) to something that decodes the same.
            let mut out = Vec::new();
            qpack::encode_field_section(&fields, &mut out);
            prop_assert_eq!(qpack::decode_field_section(&out, u64::MAX).unwrap(), fields);
        }
    }

    #[test]
    fn qpack_instructions_never_panic(data in bytes(32)) {
        let mut rest = &data[..];
        while let Ok(Some((_, n))) = qpack::parse_encoder_instruction(rest) {
            prop_assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
        let mut rest = &data[..];
        while let Ok(Some((_, n))) = qpack::parse_decoder_instruction(rest) {
            prop_assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
        }
    }

    #[test]
    fn connect_headers_from_random_fields(
        fields in prop_oneof![
            prop::collection::vec(header_field(), 0..10),
            request_like(),
        ],
    ) {
        if let Ok(req) = ConnectRequest::from_fields(&fields) {
            // An accepted request survives our own encoding.
            prop_assert_eq!(ConnectRequest::from_fields(&req.to_fields()), Ok(req));
        }
        if let Ok(resp) = ConnectResponse::from_fields(&fields) {
            prop_assert_eq!(ConnectResponse::from_fields(&resp.to_fields()), Ok(resp));
        }
    }
}

// ---- the state machine ----

fn encoded(f: Frame) -> Vec<u8> {
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

fn headers(fields: &[HeaderField]) -> Vec<u8> {
    let mut block = Vec::new();
    qpack::encode_field_section(fields, &mut block);
    encoded(Frame::Headers(block.into()))
}

/// Capsule datagram payloads start with "C"; QUIC datagram payloads carry a unique tag,
/// so the two are never confused in the events.
fn capsule_payload(p: &[u8]) -> Bytes {
    let mut out = vec![b'C'];
    out.extend_from_slice(p);
    out.into()
}

fn session_id() -> impl Strategy<Value = SessionId> + Clone {
    (0u64..5).prop_map(|i| SessionId::from_stream_id(4 * i).unwrap())
}

/// A request: mostly valid, sometimes with fields edited, dropped, swapped or added.
fn request_headers() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(request_valid_fields()),
        1 => request_like(),
    ]
    .prop_map(|f| headers(&f))
}

fn request_valid_fields() -> Vec<HeaderField> {
    ConnectRequest {
        authority: "example.test".into(),
        path: "/wt".into(),
        ..ConnectRequest::default()
    }
    .to_fields()
}

fn response_headers() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => Just(200u16),
        1 => prop::sample::select(vec![204u16, 103, 404, 500]),
    ]
    .prop_map(|s| headers(&ConnectResponse::new(s).to_fields()))
}

/// Capsules as a CONNECT stream carries them: inside a DATA frame, or bare (the
/// pywebtransport 0.8.1 way).
fn capsules() -> impl Strategy<Value = Vec<u8>> {
    let capsule = prop_oneof![
        2 => (any::<u32>(), prop_oneof![5 => 0usize..8, 1 => 1020usize..1030]).prop_map(
            |(code, n)| Capsule::CloseSession {
                code,
                reason: "r".repeat(n),
            }
        ),
        2 => Just(Capsule::DrainSession),
        4 => bytes(8).prop_map(|p| Capsule::Datagram(capsule_payload(&p))),
        1 => Just(Capsule::MaxData(varint::VarInt::from_u32(1000))),
        2 => Just(Capsule::Unknown { ty: 0x17 + 0x29, len: 5 }),
    ];
    (
        prop::collection::vec(capsule, 1..3),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(caps, framed)| {
            let mut body = Vec::new();
            for c in caps {
                c.encode(&mut body);
            }
            if framed {
                encoded(Frame::Data(body.into()))
            } else {
                body
            }
        })
}

fn wt_uni_preamble() -> impl Strategy<Value = Vec<u8>> {
    (session_id(), bytes(6)).prop_map(|(s, payload)| {
        let mut out = Vec::new();
        UniStreamHeader::WebTransport(s).encode(&mut out);
        out.extend_from_slice(&payload);
        out
    })
}

fn wt_bidi_preamble() -> impl Strategy<Value = Vec<u8>> {
    (session_id(), bytes(6)).prop_map(|(s, payload)| {
        let mut out = Vec::new();
        BidiStreamHeader::encode_webtransport(s, &mut out);
        out.extend_from_slice(&payload);
        out
    })
}

/// Frames after SETTINGS on the peer's control stream: mostly harmless ones, rarely a
/// violation.
fn control_frames(role: Role) -> impl Strategy<Value = Vec<u8>> {
    // A server's GOAWAY carries a client bidi stream id; a client's a push id.
    let goaway = (0u64..6).prop_map(move |k| {
        let id = if role == Role::Client { 4 * k } else { k };
        encoded(Frame::Goaway(varint::VarInt::from_u64(id).unwrap()))
    });
    prop_oneof![
        12 => Just(encoded(Frame::Unknown { ty: 0x21, len: 3 })),
        2 => goaway,
        1 => Just(encoded(Frame::MaxPushId(varint::VarInt::from_u32(3)))),
        1 => prop::sample::select(vec![
            encoded(Frame::CancelPush(varint::VarInt::from_u32(0))),
            encoded(Frame::Settings(Settings::new())),
            encoded(Frame::Data(Bytes::from_static(b"xyz"))),
            encoded(Frame::Goaway(varint::VarInt::from_u32(1))),
        ]),
    ]
}

/// The first bytes of a new peer unidirectional stream: mostly WebTransport, sometimes
/// an unknown type, rarely a second critical stream or a push stream.
fn uni_stream_start() -> impl Strategy<Value = Vec<u8>> {
    let header = |h: UniStreamHeader| {
        let mut out = Vec::new();
        h.encode(&mut out);
        out
    };
    let unknown = prop::sample::select(vec![
        UniStreamHeader::Unknown(0x21),
        UniStreamHeader::Unknown(0x1234),
    ])
    .prop_map(header);
    let critical = prop::sample::select(vec![
        UniStreamHeader::Control,
        UniStreamHeader::QpackEncoder,
        UniStreamHeader::Push,
    ])
    .prop_map(header);
    prop_oneof![30 => wt_uni_preamble(), 4 => unknown, 1 => critical]
}

/// What starts a peer bidirectional stream. To a server: a CONNECT request or a
/// WebTransport preamble; to a client only the latter is legal.
fn peer_bidi_start(role: Role) -> BoxedStrategy<Vec<u8>> {
    match role {
        Role::Server => prop_oneof![
            12 => request_headers(),
            8 => wt_bidi_preamble(),
            1 => capsules(),
        ]
        .boxed(),
        Role::Client => prop_oneof![
            30 => wt_bidi_preamble(),
            1 => request_headers(),
        ]
        .boxed(),
    }
}

/// What a server sends first on a client's CONNECT stream.
fn connect_stream_start() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => response_headers(),
        1 => capsules(),
        1 => Just(encoded(Frame::Unknown { ty: 0x21, len: 1 })),
    ]
}

/// Sometimes only a prefix arrives.
fn maybe_cut(s: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (s, any::<Index>(), prop::bool::weighted(0.1)).prop_map(|(mut p, at, cut)| {
        if cut {
            let n = at.index(p.len() + 1);
            p.truncate(n);
        }
        p
    })
}

/// Which stream an operation is about.
#[derive(Debug, Clone, Copy)]
enum Pick {
    PeerUni(u64),
    PeerBidi(u64),
    /// One of our own bidirectional streams (a client's CONNECT streams).
    LocalBidi(u64),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        (0u64..10).prop_map(Pick::PeerUni),
        (0u64..6).prop_map(Pick::PeerBidi),
        (0u64..4).prop_map(Pick::LocalBidi),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// Bytes on a stream that depend on whether it has carried anything yet: `first`
    /// (a request, a response, a WebTransport preamble) on a new stream, `later`
    /// (capsules) after that. Keeps most sequences well-formed enough to reach sessions.
    Next {
        stream: Pick,
        first: Vec<u8>,
        later: Vec<u8>,
        split: Option<Index>,
        fin: bool,
    },
    Data {
        stream: Pick,
        data: Vec<u8>,
        /// Feed it in two calls, cut here.
        split: Option<Index>,
        fin: bool,
    },
    Reset {
        stream: Pick,
        code: u64,
    },
    StopSending {
        stream: Pick,
        code: u64,
    },
    Datagram {
        /// The quarter stream id (0..5 are the sessions in play; others are noise).
        quarter: u64,
        payload_len: usize,
    },
    Advance {
        ms: u64,
    },
    OpenSession {
        stream: Pick,
    },
    Accept {
        session: u64,
        status: u16,
    },
    Reject {
        session: u64,
        status: u16,
    },
    CloseSession {
        session: u64,
        code: u32,
        reason_len: usize,
    },
    Drain {
        session: u64,
    },
    Goaway,
    OpenStream {
        session: u64,
        bidi: bool,
    },
    EncodeDatagram {
        session: u64,
    },
    Close,
}

fn data(stream: Pick, bytes: Vec<u8>, split: Option<Index>, fin: bool) -> Op {
    Op::Data {
        stream,
        data: bytes,
        split,
        fin,
    }
}

fn next(stream: Pick, first: Vec<u8>, later: Vec<u8>, split: Option<Index>, fin: bool) -> Op {
    Op::Next {
        stream,
        first,
        later,
        split,
        fin,
    }
}

/// Stream bytes aimed where they make sense for `role`, plus some noise anywhere.
fn data_op(role: Role) -> impl Strategy<Value = Op> {
    // Only a client reads its own bidirectional streams (CONNECT streams).
    let local_weight = if role == Role::Client { 10 } else { 1 };
    let split = || prop::option::weighted(0.3, any::<Index>());
    let fin = || prop::bool::weighted(0.05);
    // Uni streams 0-2 are the peer's control and QPACK streams (see with_settings).
    prop_oneof![
        2 => (maybe_cut(control_frames(role)), split())
            .prop_map(|(d, s)| data(Pick::PeerUni(0), d, s, false)),
        // Set Dynamic Table Capacity 0 on the encoder stream, Stream Cancellation of
        // stream 5 on the decoder stream: both legal.
        1 => prop::sample::select(vec![vec![0x20u8], vec![0x45]])
            .prop_map(|d| data(Pick::PeerUni(if d[0] == 0x20 { 1 } else { 2 }), d, None, false)),
        6 => (3u64..10, maybe_cut(uni_stream_start()), split(), fin())
            .prop_map(|(n, d, s, f)| data(Pick::PeerUni(n), d, s, f)),
        8 => (0u64..5, maybe_cut(peer_bidi_start(role)), maybe_cut(capsules()), split(), fin())
            .prop_map(|(n, a, b, s, f)| next(Pick::PeerBidi(n), a, b, s, f)),
        local_weight => (0u64..4, maybe_cut(connect_stream_start()), maybe_cut(capsules()), split(), fin())
            .prop_map(|(n, a, b, s, f)| next(Pick::LocalBidi(n), a, b, s, f)),
        1 => (pick(), bytes(16), split(), fin()).prop_map(|(p, d, s, f)| data(p, d, s, f)),
    ]
}

fn op(role: Role) -> impl Strategy<Value = Op> {
    let session = 0u64..5;
    prop_oneof![
        14 => data_op(role),
        1 => (pick(), prop::sample::select(vec![0x100u64, 0x10c, 0x3994_bd84, 7]))
            .prop_map(|(stream, code)| Op::Reset { stream, code }),
        1 => (pick(), prop::sample::select(vec![0x100u64, 0x10c, 7]))
            .prop_map(|(stream, code)| Op::StopSending { stream, code }),
        4 => (
            prop_oneof![20 => 0u64..5, 1 => any::<u64>().prop_map(|q| q & ((1 << 62) - 1))],
            0usize..8,
        )
            .prop_map(|(quarter, payload_len)| Op::Datagram { quarter, payload_len }),
        2 => prop_oneof![6 => 0u64..100, 2 => 900u64..3000, 1 => Just(60_000)]
            .prop_map(|ms| Op::Advance { ms }),
        2 => prop_oneof![
            5 => (0u64..4).prop_map(Pick::LocalBidi),
            1 => pick(),
        ]
        .prop_map(|stream| Op::OpenSession { stream }),
        3 => (session.clone(), prop::sample::select(vec![200u16, 299, 404, 101]))
            .prop_map(|(session, status)| Op::Accept { session, status }),
        1 => (session.clone(), prop::sample::select(vec![404u16, 200, 503, 1000]))
            .prop_map(|(session, status)| Op::Reject { session, status }),
        1 => (
            session.clone(),
            any::<u32>(),
            prop_oneof![5 => 0usize..10, 1 => 1020usize..1030],
        )
            .prop_map(|(session, code, reason_len)| Op::CloseSession {
                session,
                code,
                reason_len
            }),
        1 => session.clone().prop_map(|session| Op::Drain { session }),
        2 => (session.clone(), any::<bool>())
            .prop_map(|(session, bidi)| Op::OpenStream { session, bidi }),
        1 => session.prop_map(|session| Op::EncodeDatagram { session }),
        // Rare: GOAWAY, or the application closes the whole connection.
        1 => prop::bool::weighted(0.2).prop_map(|c| if c { Op::Close } else { Op::Goaway }),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        1u32..4,
        0usize..4,
        0usize..4,
        0usize..4,
        prop_oneof![Just(1100u64), 16u64..64, Just(8192)],
        any::<bool>(),
    )
        .prop_map(
            |(max_sessions, streams, datagrams, memory, capsule, unframed)| Config {
                max_sessions,
                max_pending_streams: streams,
                max_pending_datagrams: datagrams,
                closed_session_memory: memory,
                max_capsule_size: capsule,
                pending_timeout: Duration::from_millis(1000),
                session_timeout: Duration::from_millis(2500),
                capsule_framing: if unframed {
                    CapsuleFraming::Unframed
                } else {
                    CapsuleFraming::Auto
                },
                ..Config::default()
            },
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// The core reads it (or has not seen it yet).
    Core,
    /// Handed to the application (buffered in the core or released).
    Detached,
    /// Nothing more to feed.
    Done,
}

/// Drives one `Connection` as a caller would, keeping the books the invariants need.
struct Driver {
    conn: Connection,
    role: Role,
    config: Config,
    now: Instant,
    streams: HashMap<u64, StreamState>,
    /// Streams that have carried bytes.
    started: HashSet<u64>,
    /// Streams detached but not yet released or refused: what the core holds for
    /// sessions that are not established.
    pending: HashSet<u64>,
    /// QUIC datagrams that decoded while the connection was up.
    datagrams_in: u64,
    /// Their payloads (each unique), until an event delivers them.
    in_flight: HashSet<Bytes>,
    datagrams_out: u64,
    next_tag: u32,
    next_local: u64,
    rejected_stops: u64,
    /// Streams stopped or reset with WT_SESSION_GONE.
    gone_streams: HashSet<u64>,
    failed: bool,
}

impl Driver {
    fn new(role: Role, config: Config) -> Self {
        let base = match role {
            Role::Client => 2,
            Role::Server => 3,
        };
        let local = LocalStreams {
            control: base,
            encoder: Some(base + 4),
            decoder: Some(base + 8),
        };
        let mut d = Driver {
            conn: Connection::new(role, config.clone(), local),
            role,
            config,
            now: Instant::now(),
            streams: HashMap::new(),
            started: HashSet::new(),
            pending: HashSet::new(),
            datagrams_in: 0,
            in_flight: HashSet::new(),
            datagrams_out: 0,
            next_tag: 0,
            next_local: 0,
            rejected_stops: 0,
            gone_streams: HashSet::new(),
            failed: false,
        };
        d.drain();
        d
    }

    fn stream_id(&self, p: Pick) -> u64 {
        let (peer_bit, local_bit) = match self.role {
            Role::Client => (1, 0),
            Role::Server => (0, 1),
        };
        match p {
            Pick::PeerUni(n) => 4 * n + 2 + peer_bit,
            Pick::PeerBidi(n) => 4 * n + peer_bit,
            Pick::LocalBidi(n) => 4 * n + local_bit,
        }
    }

    fn is_local(&self, stream: u64) -> bool {
        (stream & 1 == 0) == (self.role == Role::Client)
    }

    fn session(&self, i: u64) -> SessionId {
        SessionId::from_stream_id(4 * i).unwrap()
    }

    fn drain(&mut self) {
        while let Some(a) = self.conn.poll_action() {
            match a {
                Action::StopSending { stream, code } | Action::Reset { stream, code } => {
                    let stop = matches!(a, Action::StopSending { .. });
                    if code == Code::WT_BUFFERED_STREAM_REJECTED || code == Code::WT_SESSION_GONE {
                        self.pending.remove(&stream);
                    }
                    if stop && code == Code::WT_BUFFERED_STREAM_REJECTED {
                        self.rejected_stops += 1;
                    }
                    if code == Code::WT_SESSION_GONE {
                        self.gone_streams.insert(stream);
                    }
                }
                Action::CloseConnection { .. } => self.failed = true,
                Action::Write { .. } => {}
            }
        }
        while let Some(e) = self.conn.poll_event() {
            match e {
                Event::IncomingStream {
                    stream, session, ..
                } => {
                    // Delivered into an established session, which may have ended since.
                    assert!(
                        !matches!(
                            self.conn.session_status(session),
                            Some(SessionStatus::Pending)
                        ),
                        "stream {stream} released into session {session} that is not open"
                    );
                    assert_eq!(
                        self.streams.get(&stream),
                        Some(&StreamState::Detached),
                        "stream {stream} released without being detached"
                    );
                    self.pending.remove(&stream);
                }
                Event::Datagram { payload, .. } => {
                    // Capsule datagrams are not QUIC datagrams and are not counted.
                    let quic = self.in_flight.remove(&payload);
                    self.datagrams_out += u64::from(quic);
                }
                Event::ConnectionError { .. } => {
                    self.failed = true;
                    self.pending.clear();
                }
                _ => {}
            }
        }
    }

    fn feed(&mut self, stream: u64, data: &[u8], fin: bool) -> Feed {
        let feed = self.conn.handle_stream_data(self.now, stream, data, fin);
        match feed {
            Feed::Continue | Feed::Request if fin => {
                // The stream ended; nothing more will come.
                self.streams.insert(stream, StreamState::Done);
            }
            Feed::Continue | Feed::Request => {}
            Feed::Detach => {
                self.streams.insert(stream, StreamState::Detached);
                self.pending.insert(stream);
            }
            Feed::Done => {
                self.streams.insert(stream, StreamState::Done);
            }
        }
        feed
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Next {
                stream,
                first,
                later,
                split,
                fin,
            } => {
                let id = self.stream_id(*stream);
                let data = if self.started.contains(&id) {
                    later
                } else {
                    first
                };
                self.apply(&Op::Data {
                    stream: *stream,
                    data: data.clone(),
                    split: *split,
                    fin: *fin,
                });
                return;
            }
            Op::Data {
                stream,
                data,
                split,
                fin,
            } => {
                let id = self.stream_id(*stream);
                let state = self.streams.get(&id).copied();
                let readable = match state {
                    Some(StreamState::Core) => true,
                    None => !self.is_local(id),
                    _ => false,
                };
                if readable {
                    self.started.insert(id);
                    let at = split.map_or(data.len(), |i| i.index(data.len() + 1));
                    let (a, b) = data.split_at(at);
                    let more = matches!(
                        self.feed(id, a, *fin && b.is_empty()),
                        Feed::Continue | Feed::Request
                    );
                    if more && !b.is_empty() {
                        let _ = self.feed(id, b, *fin);
                    }
                }
            }
            Op::Reset { stream, code } => {
                let id = self.stream_id(*stream);
                self.conn.handle_stream_reset(id, Code(*code));
                // Whatever the core held for it is gone; the stream carries nothing more.
                self.pending.remove(&id);
                if !self.is_local(id) || self.streams.contains_key(&id) {
                    self.streams.insert(id, StreamState::Done);
                }
            }
            Op::StopSending { stream, code } => {
                let id = self.stream_id(*stream);
                self.conn.handle_stop_sending(id, Code(*code));
            }
            Op::Datagram {
                quarter,
                payload_len,
            } => {
                let mut data = Vec::new();
                varint::encode(*quarter, &mut data);
                data.push(b'Q');
                data.put_u32(self.next_tag);
                self.next_tag += 1;
                data.resize(data.len() + payload_len, 0);
                let data = Bytes::from(data);
                let up = self.conn.error().is_none();
                self.conn.handle_datagram(self.now, data.clone());
                // Delivered at once or not, the events are read below; record the payload
                // first so that an immediate delivery is matched.
                if let Ok((_, payload)) = datagram::decode(&data) {
                    if up && self.conn.error().is_none() {
                        self.datagrams_in += 1;
                        self.in_flight.insert(payload);
                    }
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(*ms);
                self.conn.handle_timeout(self.now);
                assert!(
                    self.conn.poll_timeout().is_none_or(|t| t > self.now),
                    "a deadline is still due right after handle_timeout"
                );
            }
            Op::OpenSession { stream } => {
                let id = self.stream_id(*stream);
                let request = ConnectRequest {
                    authority: "example.test".into(),
                    path: "/wt".into(),
                    ..ConnectRequest::default()
                };
                // A caller opens a session on a new stream; QUIC never reuses stream ids.
                let fresh = !self.streams.contains_key(&id);
                if fresh || !self.is_local(id) {
                    if let Ok(s) = self.conn.open_session(self.now, id, request) {
                        assert_eq!(self.role, Role::Client);
                        assert_eq!(s.stream_id(), id);
                        self.streams.insert(id, StreamState::Core);
                    }
                }
            }
            Op::Accept { session, status } => {
                let _ = self
                    .conn
                    .accept_session(self.session(*session), ConnectResponse::new(*status));
            }
            Op::Reject { session, status } => {
                let _ = self.conn.reject_session(self.session(*session), *status);
            }
            Op::CloseSession {
                session,
                code,
                reason_len,
            } => {
                let reason = "x".repeat(*reason_len);
                let r = self
                    .conn
                    .close_session(self.session(*session), *code, &reason);
                if *reason_len > capsule::MAX_CLOSE_REASON {
                    assert!(r.is_err());
                }
            }
            Op::Drain { session } => {
                let _ = self.conn.drain_session(self.session(*session));
            }
            Op::Goaway => {
                let _ = self.conn.goaway();
            }
            Op::OpenStream { session, bidi } => {
                let s = self.session(*session);
                let established = self.conn.is_established(s);
                match self.conn.reserve_stream(s, *bidi) {
                    Ok(()) => {
                        // A fresh local stream id of the right kind, far above the picks.
                        let local_bit = u64::from(self.role == Role::Server);
                        let id =
                            4 * (1000 + self.next_local) + local_bit + if *bidi { 0 } else { 2 };
                        self.next_local += 1;
                        assert!(established);
                        assert!(self.conn.open_stream(s, id, *bidi).is_ok());
                    }
                    Err(CommandError::StreamsBlocked { .. }) => assert!(established),
                    Err(_) => assert!(!established),
                }
            }
            Op::EncodeDatagram { session } => {
                let s = self.session(*session);
                if let Ok(d) = self.conn.encode_datagram(s, b"payload") {
                    assert_eq!(datagram::decode(&d).unwrap().0, s);
                }
            }
            Op::Close => self.conn.close(Code::H3_NO_ERROR, "bye"),
        }
        self.drain();
        self.check();
    }

    /// The invariants that hold after every step.
    fn check(&self) {
        let stats = self.conn.stats();
        assert!(
            self.conn.live_sessions() <= self.config.max_sessions as usize,
            "more sessions than max_sessions"
        );
        assert!(
            self.conn.session_ids().count()
                <= self.config.max_sessions as usize + self.config.closed_session_memory,
            "ended sessions remembered beyond closed_session_memory"
        );
        assert_eq!(
            stats.streams_rejected, self.rejected_stops,
            "streams_rejected does not match the WT_BUFFERED_STREAM_REJECTED refusals"
        );
        assert!(stats.streams_gone <= self.gone_streams.len() as u64);
        if self.failed {
            assert!(self.conn.error().is_some());
            return;
        }
        assert!(
            self.pending.len() <= self.config.max_pending_streams,
            "{} streams pending, cap {}",
            self.pending.len(),
            self.config.max_pending_streams
        );
        let accounted = self.datagrams_out + stats.datagrams_dropped;
        assert!(
            accounted <= self.datagrams_in,
            "more datagrams delivered or dropped ({accounted}) than received ({})",
            self.datagrams_in
        );
        let pending = self.datagrams_in - accounted;
        assert!(
            pending <= self.config.max_pending_datagrams as u64,
            "{pending} datagrams pending, cap {}",
            self.config.max_pending_datagrams
        );
    }

    /// After every deadline has passed nothing may be left waiting.
    fn finish(&mut self) {
        self.now += Duration::from_secs(3600);
        self.conn.handle_timeout(self.now);
        self.drain();
        self.check();
        assert_eq!(self.conn.poll_timeout(), None);
        if !self.failed {
            assert!(self.pending.is_empty(), "still pending: {:?}", self.pending);
            assert_eq!(
                self.datagrams_out + self.conn.stats().datagrams_dropped,
                self.datagrams_in
            );
        }
    }
}

fn run(role: Role, config: Config, ops: &[Op]) {
    let mut d = Driver::new(role, config);
    for op in ops {
        d.apply(op);
    }
    d.finish();
}

/// A start that gets the peer's SETTINGS in, so that most sequences reach sessions.
fn with_settings(role: Role, ops: Vec<Op>) -> Vec<Op> {
    let mut control = Vec::new();
    UniStreamHeader::Control.encode(&mut control);
    Frame::Settings(Settings::local(
        role == Role::Client,
        4,
        16384,
        Default::default(),
    ))
    .encode(&mut control);
    let mut enc = Vec::new();
    UniStreamHeader::QpackEncoder.encode(&mut enc);
    let mut dec = Vec::new();
    UniStreamHeader::QpackDecoder.encode(&mut dec);
    let mut all = vec![
        data(Pick::PeerUni(0), control, None, false),
        data(Pick::PeerUni(1), enc, None, false),
        data(Pick::PeerUni(2), dec, None, false),
    ];
    all.extend(ops);
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn server_survives_random_operations(
        config in config(),
        settings_first in prop::bool::weighted(0.8),
        ops in prop::collection::vec(op(Role::Server), 0..60),
    ) {
        let ops = if settings_first { with_settings(Role::Server, ops) } else { ops };
        run(Role::Server, config, &ops);
    }

    #[test]
    fn client_survives_random_operations(
        config in config(),
        settings_first in prop::bool::weighted(0.8),
        ops in prop::collection::vec(op(Role::Client), 0..60),
    ) {
        let ops = if settings_first { with_settings(Role::Client, ops) } else { ops };
        run(Role::Client, config, &ops);
    }
}

/// A directed sequence that is known to fill every buffer, so the caps are checked even
/// if the random ones rarely get there.
#[test]
fn server_buffers_stay_capped_under_a_flood() {
    let config = Config {
        max_pending_streams: 3,
        max_pending_datagrams: 2,
        ..Config::default()
    };
    let mut ops = Vec::new();
    for n in 3..10 {
        let mut data = Vec::new();
        UniStreamHeader::WebTransport(SessionId::from_stream_id(0).unwrap()).encode(&mut data);
        ops.push(Op::Data {
            stream: Pick::PeerUni(n),
            data,
            split: None,
            fin: false,
        });
        ops.push(Op::Datagram {
            quarter: 0,
            payload_len: 1,
        });
    }
    let ops = with_settings(Role::Server, ops);
    let mut d = Driver::new(Role::Server, config);
    for op in &ops {
        d.apply(op);
    }
    assert_eq!(d.pending.len(), 3);
    assert_eq!(d.conn.stats().streams_rejected, 4);
    assert_eq!(d.conn.stats().datagrams_dropped, 5);
    d.finish();
    assert_eq!(d.conn.stats().streams_rejected, 7);
}
