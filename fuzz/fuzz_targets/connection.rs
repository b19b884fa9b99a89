//! The connection state machine, driven by arbitrary operations: stream bytes (mostly
//! well-formed pieces, so sequences reach sessions), resets, stop-sendings, datagrams,
//! time passing and application commands, on a client or a server.
//!
//! Nothing may panic, and the books kept from the public API must hold: no more streams
//! and datagrams buffered than configured, refusals that match the stats, no deadline
//! left due after `handle_timeout`.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes};
use libfuzzer_sys::fuzz_target;
use webtransport_proto::capsule::{self, Capsule};
use webtransport_proto::connection::{
    Action, CapsuleFraming, CommandError, Config, Connection, Event, Feed, LocalStreams, Role,
};
use webtransport_proto::datagram;
use webtransport_proto::frame::{Frame, FrameHeader};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::qpack::{self, HeaderField};
use webtransport_proto::settings::{id, Settings, WtDraft, WtDrafts};
use webtransport_proto::stream_header::{BidiStreamHeader, SessionId, UniStreamHeader};
use webtransport_proto::varint::{self, VarInt};
use webtransport_proto::Code;

#[derive(Debug, Arbitrary)]
struct Input {
    server: bool,
    config: ConfigIn,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
struct ConfigIn {
    max_sessions: u8,
    max_pending_streams: u8,
    max_pending_datagrams: u8,
    closed_session_memory: u8,
    max_capsule_size: u16,
    unframed_capsules: bool,
    drafts: u8,
}

impl ConfigIn {
    fn config(&self) -> Config {
        Config {
            max_sessions: u32::from(self.max_sessions % 5),
            max_pending_streams: usize::from(self.max_pending_streams % 6),
            max_pending_datagrams: usize::from(self.max_pending_datagrams % 6),
            closed_session_memory: usize::from(self.closed_session_memory % 6),
            max_capsule_size: u64::from(self.max_capsule_size),
            pending_timeout: Duration::from_millis(1000),
            session_timeout: Duration::from_millis(2500),
            capsule_framing: if self.unframed_capsules {
                CapsuleFraming::Unframed
            } else {
                CapsuleFraming::Auto
            },
            drafts: drafts_from(self.drafts),
            ..Config::default()
        }
    }
}

/// A stream: `kind` 0 = peer uni, 1 = peer bidi, 2 = our bidi; `n` its index.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Pick {
    kind: u8,
    n: u8,
}

#[derive(Debug, Arbitrary)]
enum Piece {
    /// Control stream preamble and SETTINGS (as a server or a client sends them),
    /// offering the drafts whose bits are set in `drafts` (bit 7: draft-17's WT_ENABLED
    /// set to the whole byte instead of 1, a value a draft-17 client must refuse).
    ControlStream {
        as_server: bool,
        drafts: u8,
    },
    QpackEncoderStream,
    QpackDecoderStream,
    /// A uni stream type other than WebTransport.
    UniType(u64),
    /// Frames after SETTINGS on a control stream.
    Goaway(u64),
    MaxPushId(u64),
    CancelPush(u64),
    Grease(u8),
    /// A CONNECT request, with a few fields edited.
    Request {
        edits: Vec<(u8, Field)>,
    },
    Response {
        status: u16,
    },
    Capsules {
        capsules: Vec<CapsuleIn>,
        framed: bool,
    },
    WtUni {
        session: u8,
        payload: Vec<u8>,
    },
    WtBidi {
        session: u8,
        payload: Vec<u8>,
    },
    /// A frame header claiming a length, without the payload.
    FrameHeader {
        ty: u64,
        len: u64,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Field {
    Remove,
    /// Replace the value.
    Value(Vec<u8>),
    /// Insert a field.
    Add(Vec<u8>, Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum CapsuleIn {
    Close { code: u32, reason_len: u16 },
    Drain,
    Datagram(Vec<u8>),
    MaxData(u64),
    Raw { ty: u64, value: Vec<u8> },
}

#[derive(Debug, Arbitrary)]
enum Op {
    Data {
        stream: Pick,
        piece: Piece,
        /// Feed only this much of it (modulo its length + 1).
        cut: Option<u16>,
        /// Feed it in two calls, split here.
        split: Option<u16>,
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
        quarter: u64,
        len: u8,
    },
    Advance {
        ms: u16,
    },
    OpenSession {
        stream: Pick,
    },
    Accept {
        session: u8,
        status: u16,
    },
    Reject {
        session: u8,
        status: u16,
    },
    CloseSession {
        session: u8,
        code: u32,
        reason_len: u16,
    },
    Drain {
        session: u8,
    },
    Goaway,
    OpenStream {
        session: u8,
        bidi: bool,
    },
    EncodeDatagram {
        session: u8,
    },
    Close {
        code: u64,
    },
}

fn vi(v: u64) -> VarInt {
    VarInt::from_u64(v & ((1 << 62) - 1)).unwrap_or(VarInt::MAX)
}

fn session(i: u8) -> SessionId {
    SessionId::from_stream_id(4 * u64::from(i % 8)).unwrap()
}

/// The drafts whose bits (0 = draft-02 ... 4 = draft-17) are set; none set is every draft,
/// so that most inputs speak to each other.
fn drafts_from(bits: u8) -> WtDrafts {
    let set: WtDrafts = WtDraft::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, d)| d)
        .collect();
    if set.is_empty() {
        WtDrafts::ALL
    } else {
        set
    }
}

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

impl Piece {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Piece::ControlStream { as_server, drafts } => {
                UniStreamHeader::Control.encode(&mut out);
                let mut settings = Settings::local_offering(
                    *as_server,
                    4,
                    16384,
                    Default::default(),
                    drafts_from(*drafts),
                );
                if drafts & 0x80 != 0 {
                    settings.set(id::WT_ENABLED_DRAFT17, u64::from(*drafts));
                }
                Frame::Settings(settings).encode(&mut out);
            }
            Piece::QpackEncoderStream => UniStreamHeader::QpackEncoder.encode(&mut out),
            Piece::QpackDecoderStream => UniStreamHeader::QpackDecoder.encode(&mut out),
            Piece::UniType(t) => varint::encode(t & ((1 << 62) - 1), &mut out),
            Piece::Goaway(id) => out = encoded(Frame::Goaway(vi(*id))),
            Piece::MaxPushId(id) => out = encoded(Frame::MaxPushId(vi(*id))),
            Piece::CancelPush(id) => out = encoded(Frame::CancelPush(vi(*id))),
            Piece::Grease(n) => {
                out = encoded(Frame::Unknown {
                    ty: 0x21 + 0x1f * u64::from(*n),
                    len: u64::from(*n % 8),
                })
            }
            Piece::Request { edits } => {
                let mut fields = ConnectRequest {
                    authority: "example.test".into(),
                    path: "/wt".into(),
                    ..ConnectRequest::default()
                }
                .to_fields();
                for (at, edit) in edits {
                    let i = usize::from(*at) % (fields.len() + 1);
                    match edit {
                        Field::Remove if i < fields.len() => {
                            fields.remove(i);
                        }
                        Field::Value(v) if i < fields.len() => {
                            fields[i].value = Bytes::copy_from_slice(v);
                        }
                        Field::Add(n, v) => fields.insert(
                            i,
                            HeaderField {
                                name: Bytes::copy_from_slice(n),
                                value: Bytes::copy_from_slice(v),
                            },
                        ),
                        Field::Remove | Field::Value(_) => {}
                    }
                }
                out = headers(&fields);
            }
            Piece::Response { status } => {
                out = headers(&ConnectResponse::new(*status).to_fields());
            }
            Piece::Capsules { capsules, framed } => {
                let mut body = Vec::new();
                for c in capsules {
                    match c {
                        CapsuleIn::Close { code, reason_len } => {
                            // Up to a little over the 1024-byte limit.
                            let n = usize::from(*reason_len % 1100);
                            varint::encode(capsule::ty::CLOSE_WEBTRANSPORT_SESSION, &mut body);
                            varint::encode(4 + n as u64, &mut body);
                            body.put_u32(*code);
                            body.extend(std::iter::repeat_n(b'r', n));
                        }
                        CapsuleIn::Drain => Capsule::DrainSession.encode(&mut body),
                        CapsuleIn::Datagram(p) => {
                            let mut payload = vec![b'C'];
                            payload.extend_from_slice(p);
                            Capsule::Datagram(payload.into()).encode(&mut body);
                        }
                        CapsuleIn::MaxData(v) => Capsule::MaxData(vi(*v)).encode(&mut body),
                        CapsuleIn::Raw { ty, value } => {
                            varint::encode(ty & ((1 << 62) - 1), &mut body);
                            varint::encode(value.len() as u64, &mut body);
                            body.extend_from_slice(value);
                        }
                    }
                }
                out = if *framed {
                    encoded(Frame::Data(body.into()))
                } else {
                    body
                };
            }
            Piece::WtUni {
                session: s,
                payload,
            } => {
                UniStreamHeader::WebTransport(session(*s)).encode(&mut out);
                out.extend_from_slice(payload);
            }
            Piece::WtBidi {
                session: s,
                payload,
            } => {
                BidiStreamHeader::encode_webtransport(session(*s), &mut out);
                out.extend_from_slice(payload);
            }
            Piece::FrameHeader { ty, len } => FrameHeader {
                ty: ty & ((1 << 62) - 1),
                len: len & ((1 << 62) - 1),
            }
            .encode(&mut out),
            Piece::Raw(b) => out.extend_from_slice(b),
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Core,
    Detached,
    Done,
}

struct Driver {
    conn: Connection,
    role: Role,
    config: Config,
    now: Instant,
    streams: HashMap<u64, State>,
    pending: HashSet<u64>,
    datagrams_in: u64,
    datagrams_out: u64,
    in_flight: HashSet<Bytes>,
    tag: u32,
    rejected_stops: u64,
    gone_streams: HashSet<u64>,
    next_local: u64,
    failed: bool,
}

impl Driver {
    fn new(role: Role, config: Config) -> Self {
        let base = if role == Role::Client { 2 } else { 3 };
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
            pending: HashSet::new(),
            datagrams_in: 0,
            datagrams_out: 0,
            in_flight: HashSet::new(),
            tag: 0,
            rejected_stops: 0,
            gone_streams: HashSet::new(),
            next_local: 0,
            failed: false,
        };
        d.drain();
        d
    }

    fn id(&self, p: Pick) -> u64 {
        let (peer, local) = if self.role == Role::Client {
            (1, 0)
        } else {
            (0, 1)
        };
        let n = u64::from(p.n % 16);
        match p.kind % 3 {
            0 => 4 * n + 2 + peer,
            1 => 4 * n + peer,
            _ => 4 * n + local,
        }
    }

    fn is_local(&self, stream: u64) -> bool {
        (stream & 1 == 0) == (self.role == Role::Client)
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
                Event::IncomingStream { stream, .. } => {
                    assert_eq!(self.streams.get(&stream), Some(&State::Detached));
                    self.pending.remove(&stream);
                }
                Event::Datagram { payload, .. } => {
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
        // Both entry points, which share everything but how the payload after a whole
        // preamble is taken (a copy, or a slice of the bytes given).
        let feed = if data.len().is_multiple_of(2) {
            self.conn.handle_stream_data(self.now, stream, data, fin)
        } else {
            let bytes = bytes::Bytes::copy_from_slice(data);
            self.conn.handle_stream_bytes(self.now, stream, bytes, fin)
        };
        let state = match feed {
            Feed::Continue | Feed::Request if !fin => State::Core,
            Feed::Continue | Feed::Request | Feed::Done => State::Done,
            Feed::Detach => {
                self.pending.insert(stream);
                State::Detached
            }
        };
        self.streams.insert(stream, state);
        feed
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Data {
                stream,
                piece,
                cut,
                split,
                fin,
            } => {
                let id = self.id(*stream);
                let readable = match self.streams.get(&id) {
                    Some(State::Core) => true,
                    None => !self.is_local(id),
                    _ => false,
                };
                if readable {
                    let mut data = piece.bytes();
                    if let Some(c) = cut {
                        data.truncate(usize::from(*c) % (data.len() + 1));
                    }
                    let at = split.map_or(data.len(), |s| usize::from(s) % (data.len() + 1));
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
                let id = self.id(*stream);
                self.conn.handle_stream_reset(id, Code(*code));
                self.pending.remove(&id);
                if !self.is_local(id) || self.streams.contains_key(&id) {
                    self.streams.insert(id, State::Done);
                }
            }
            Op::StopSending { stream, code } => {
                let id = self.id(*stream);
                self.conn.handle_stop_sending(id, Code(*code));
            }
            Op::Datagram { quarter, len } => {
                let mut data = Vec::new();
                varint::encode(quarter & ((1 << 62) - 1), &mut data);
                data.push(b'Q');
                data.put_u32(self.tag);
                self.tag += 1;
                data.resize(data.len() + usize::from(*len % 32), 0);
                let data = Bytes::from(data);
                let up = self.conn.error().is_none();
                self.conn.handle_datagram(self.now, data.clone());
                if let Ok((_, payload)) = datagram::decode(&data) {
                    if up && self.conn.error().is_none() {
                        self.datagrams_in += 1;
                        self.in_flight.insert(payload);
                    }
                }
            }
            Op::Advance { ms } => {
                self.now += Duration::from_millis(u64::from(*ms));
                self.conn.handle_timeout(self.now);
                assert!(self.conn.poll_timeout().is_none_or(|t| t > self.now));
            }
            Op::OpenSession { stream } => {
                let id = self.id(*stream);
                if !self.streams.contains_key(&id) || !self.is_local(id) {
                    let request = ConnectRequest {
                        authority: "example.test".into(),
                        path: "/wt".into(),
                        ..ConnectRequest::default()
                    };
                    if self.conn.open_session(self.now, id, request).is_ok() {
                        self.streams.insert(id, State::Core);
                    }
                }
            }
            Op::Accept { session: s, status } => {
                let _ = self
                    .conn
                    .accept_session(session(*s), ConnectResponse::new(*status));
            }
            Op::Reject { session: s, status } => {
                let _ = self.conn.reject_session(session(*s), *status);
            }
            Op::CloseSession {
                session: s,
                code,
                reason_len,
            } => {
                let reason = "x".repeat(usize::from(*reason_len % 1100));
                let r = self.conn.close_session(session(*s), *code, &reason);
                if reason.len() > capsule::MAX_CLOSE_REASON {
                    assert!(r.is_err());
                }
            }
            Op::Drain { session: s } => {
                let _ = self.conn.drain_session(session(*s));
            }
            Op::Goaway => {
                let _ = self.conn.goaway();
            }
            Op::OpenStream { session: s, bidi } => {
                let established = self.conn.is_established(session(*s));
                match self.conn.reserve_stream(session(*s), *bidi) {
                    Ok(()) => {
                        // A fresh local stream id of the right kind, far above the picks.
                        let local_bit = u64::from(self.role == Role::Server);
                        let id =
                            4 * (1000 + self.next_local) + local_bit + if *bidi { 0 } else { 2 };
                        self.next_local += 1;
                        assert!(established);
                        assert!(self.conn.open_stream(session(*s), id, *bidi).is_ok());
                    }
                    Err(CommandError::StreamsBlocked { .. }) => assert!(established),
                    Err(_) => assert!(!established),
                }
            }
            Op::EncodeDatagram { session: s } => {
                if let Ok(d) = self.conn.encode_datagram(session(*s), b"payload") {
                    assert_eq!(datagram::decode(&d).map(|x| x.0), Ok(session(*s)));
                }
            }
            Op::Close { code } => self.conn.close(Code(*code), "fuzz"),
        }
        self.drain();
        self.check();
    }

    fn check(&self) {
        let stats = self.conn.stats();
        assert!(self.conn.live_sessions() <= self.config.max_sessions as usize);
        assert!(
            self.conn.session_ids().count()
                <= self.config.max_sessions as usize + self.config.closed_session_memory
        );
        assert_eq!(stats.streams_rejected, self.rejected_stops);
        assert!(stats.streams_gone <= self.gone_streams.len() as u64);
        if self.failed {
            assert!(self.conn.error().is_some());
            return;
        }
        assert!(self.pending.len() <= self.config.max_pending_streams);
        let accounted = self.datagrams_out + stats.datagrams_dropped;
        assert!(accounted <= self.datagrams_in);
        assert!(self.datagrams_in - accounted <= self.config.max_pending_datagrams as u64);
    }

    fn finish(&mut self) {
        self.now += Duration::from_secs(3600);
        self.conn.handle_timeout(self.now);
        self.drain();
        self.check();
        assert_eq!(self.conn.poll_timeout(), None);
        if !self.failed {
            assert!(self.pending.is_empty());
            assert_eq!(
                self.datagrams_out + self.conn.stats().datagrams_dropped,
                self.datagrams_in
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let role = if input.server {
        Role::Server
    } else {
        Role::Client
    };
    let mut d = Driver::new(role, input.config.config());
    for op in &input.ops {
        d.apply(op);
    }
    d.finish();
});
