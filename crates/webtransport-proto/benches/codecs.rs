//! Criterion micro-benchmarks of the protocol core's hot paths, over the bytes Chromium 156
//! sent (the same samples as `tests/chromium_vectors.rs`):
//!
//! - HTTP/3 frames: SETTINGS decode/encode, `FrameReader` over DATA;
//! - capsules: CLOSE_WEBTRANSPORT_SESSION decode/encode, `CapsuleReader`;
//! - QPACK: the CONNECT request's field section decode/encode, and the request rules;
//! - datagrams: quarter-stream-id encode/decode, and one datagram through a server
//!   `Connection` (`encode_datagram`, `handle_datagram` + `poll_event`).
//!
//! Run with `cargo bench -p webtransport-proto` (release profile, line tables).

use std::hint::black_box;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use webtransport_proto::capsule::{Capsule, CapsuleReader};
use webtransport_proto::connection::{Config, Connection, Event, LocalStreams, Role};
use webtransport_proto::frame::{Frame, FrameEvent, FrameHeader, FrameLimits, FrameReader};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse};
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::{datagram, qpack, varint};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Chromium's control stream: the stream type byte, then SETTINGS with a GREASE pair.
const CONTROL_STREAM_START: &str =
    "00042901800100000680004000074064330180ffd27701ab60374201c0000004457a6c63c000000092a03aaf";
const QPACK_ENCODER_CAPACITY0: &str = "20";
/// Chromium's CONNECT request field section.
const CONNECT_HEADER_BLOCK: &str = "0000d7cf508b089d5c0b8170dc6c01681f518460a49cff2f00b95d8749c87a3f89f058d360ea4567b13f2f0e4148b782c69b07522b3d895a74a6b65692c1ca900b01315f4b8694d416e30c7f";
/// Chromium's CLOSE_WEBTRANSPORT_SESSION capsule value (code 4242, "bye from chromium").
const CAPSULE_CLOSE: (u64, &str) = (0x2843, "000010926279652066726f6d206368726f6d69756d");

const FIELD_SECTION_LIMIT: u64 = 16 * 1024;

fn frames(c: &mut Criterion) {
    let control = hex(CONTROL_STREAM_START);
    let settings_bytes = &control[1..];
    let limits = FrameLimits::default();
    let mut g = c.benchmark_group("frame");
    g.bench_function("settings_decode", |b| {
        b.iter(|| Frame::decode(black_box(settings_bytes), &limits))
    });
    let (settings, _) = Frame::decode(settings_bytes, &limits)
        .expect("valid")
        .expect("complete");
    g.bench_function("settings_encode", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            black_box(&settings).encode(&mut out);
            black_box(out.len())
        })
    });

    // A CONNECT stream carrying 16 DATA frames of 1,200 bytes, fed in 1,350-byte pieces
    // (a QUIC packet's worth), as `FrameReader` sees capsule traffic.
    let mut stream = Vec::new();
    for _ in 0..16 {
        FrameHeader { ty: 0, len: 1200 }.encode(&mut stream);
        stream.extend(std::iter::repeat_n(0x5a_u8, 1200));
    }
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("reader_data_16x1200", |b| {
        b.iter(|| {
            let mut r = FrameReader::new(limits);
            let mut payload = 0;
            for piece in stream.chunks(1350) {
                r.push(piece);
                while let Some(e) = r.poll().expect("valid") {
                    if let FrameEvent::DataChunk(c) = e {
                        payload += c.len();
                    }
                }
            }
            black_box(payload)
        })
    });
    g.finish();
}

fn capsules(c: &mut Criterion) {
    let value = hex(CAPSULE_CLOSE.1);
    let mut wire = Vec::new();
    varint::encode(CAPSULE_CLOSE.0, &mut wire);
    varint::encode(value.len() as u64, &mut wire);
    wire.extend_from_slice(&value);
    let mut g = c.benchmark_group("capsule");
    g.bench_function("close_decode", |b| {
        b.iter(|| Capsule::decode(black_box(&wire), 64 * 1024))
    });
    let (close, _) = Capsule::decode(&wire, 64 * 1024)
        .expect("valid")
        .expect("complete");
    g.bench_function("close_encode", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            black_box(&close).encode(&mut out);
            black_box(out.len())
        })
    });
    // DATAGRAM capsules of 1,000 bytes back to back, the capsule fallback for datagrams.
    let mut stream = Vec::new();
    for _ in 0..16 {
        Capsule::Datagram(Bytes::from(vec![0x5a; 1000])).encode(&mut stream);
    }
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("reader_datagram_16x1000", |b| {
        b.iter(|| {
            let mut r = CapsuleReader::new(64 * 1024);
            let mut n = 0;
            for piece in stream.chunks(1350) {
                r.push(piece);
                while let Some(c) = r.poll().expect("valid") {
                    if let Capsule::Datagram(d) = c {
                        n += d.len();
                    }
                }
            }
            black_box(n)
        })
    });
    g.finish();
}

fn qpack_sections(c: &mut Criterion) {
    let block = hex(CONNECT_HEADER_BLOCK);
    let mut g = c.benchmark_group("qpack");
    g.bench_function("connect_decode", |b| {
        b.iter(|| qpack::decode_field_section(black_box(&block), FIELD_SECTION_LIMIT))
    });
    let fields = qpack::decode_field_section(&block, FIELD_SECTION_LIMIT).expect("valid");
    g.bench_function("connect_encode", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            qpack::encode_field_section(black_box(&fields), &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("connect_request_from_fields", |b| {
        b.iter(|| ConnectRequest::from_fields(black_box(&fields)))
    });
    let response = ConnectResponse::default().to_fields();
    g.bench_function("response_200_encode", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            qpack::encode_field_section(black_box(&response), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// A server `Connection` with Chromium's session 0 established.
fn established_server() -> (Connection, SessionId) {
    let now = Instant::now();
    let mut c = Connection::new(
        Role::Server,
        Config::default(),
        LocalStreams {
            control: 3,
            encoder: Some(7),
            decoder: Some(11),
        },
    );
    let _ = c.handle_stream_data(now, 2, &hex(CONTROL_STREAM_START), false);
    let mut encoder = vec![0x02];
    encoder.extend(hex(QPACK_ENCODER_CAPACITY0));
    let _ = c.handle_stream_data(now, 6, &encoder, false);
    let mut req = Vec::new();
    Frame::Headers(hex(CONNECT_HEADER_BLOCK).into()).encode(&mut req);
    let _ = c.handle_stream_data(now, 0, &req, false);
    let mut session = None;
    while let Some(e) = c.poll_event() {
        if let Event::SessionRequested { session: s, .. } = e {
            session = Some(s);
        }
    }
    let session = session.expect("Chromium's request opens a session");
    c.accept_session(session, ConnectResponse::default())
        .expect("accepted");
    while c.poll_event().is_some() {}
    while c.poll_action().is_some() {}
    (c, session)
}

fn datagrams(c: &mut Criterion) {
    let payload = vec![0x5a_u8; 1000];
    let session = SessionId::from_stream_id(0).expect("client bidi stream");
    let mut g = c.benchmark_group("datagram");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("encode_1000", |b| {
        b.iter(|| datagram::encode(session, black_box(&payload)))
    });
    let wire = datagram::encode(session, &payload);
    g.bench_function("decode_1000", |b| {
        b.iter(|| datagram::decode(black_box(&wire)))
    });
    g.bench_function("encode_header_into", |b| {
        let mut out = BytesMut::with_capacity(1100);
        b.iter(|| {
            out.clear();
            datagram::encode_header(session, &mut out);
            out.extend_from_slice(black_box(&payload));
            black_box(out.len())
        })
    });

    let (mut conn, session) = established_server();
    g.bench_function("connection_encode_1000", |b| {
        b.iter(|| conn.encode_datagram(session, black_box(&payload)))
    });
    let now = Instant::now();
    g.bench_function("connection_receive_1000", |b| {
        b.iter(|| {
            conn.handle_datagram(now, wire.clone());
            black_box(conn.poll_event())
        })
    });
    g.finish();
}

criterion_group!(benches, frames, capsules, qpack_sections, datagrams);
criterion_main!(benches);
