//! The bytes Chromium 156 sent (shared/data/chromium-156/vectors.json, embedded here),
//! fed through a server-side `Connection` as one session: SETTINGS with GREASE, a GREASE
//! frame, the QPACK encoder instruction, the CONNECT request, a GREASE capsule and the
//! close capsule.

use std::time::Instant;

use webtransport_proto::connection::{
    Action, Config, Connection, Event, Feed, LocalStreams, Role, SessionEnd,
};
use webtransport_proto::frame::{Frame, FrameHeader};
use webtransport_proto::headers::{ConnectResponse, UpgradeToken};
use webtransport_proto::settings::WtDraft;
use webtransport_proto::varint;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const CONTROL_STREAM_START: &str =
    "00042901800100000680004000074064330180ffd27701ab60374201c0000004457a6c63c000000092a03aaf";
const CONTROL_GREASE_FRAME: &str = "c0000008c11a3d7c01f5";
const QPACK_ENCODER_CAPACITY0: &str = "20";
const CONNECT_HEADER_BLOCK: &str = "0000d7cf508b089d5c0b8170dc6c01681f518460a49cff2f00b95d8749c87a3f89f058d360ea4567b13f2f0e4148b782c69b07522b3d895a74a6b65692c1ca900b01315f4b8694d416e30c7f";
const CONNECT_HEADER_BLOCK_DYNAMIC: &str = "0600d7cf8483828180";
const CAPSULE_GREASE: (u64, &str) = (0xb3da0b70a613a59, "6065");
const CAPSULE_CLOSE: (u64, &str) = (0x2843, "000010926279652066726f6d206368726f6d69756d");

fn server() -> Connection {
    Connection::new(
        Role::Server,
        Config::default(),
        LocalStreams {
            control: 3,
            encoder: Some(7),
            decoder: Some(11),
        },
    )
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn capsule_in_data(ty: u64, payload: &str) -> Vec<u8> {
    let payload = hex(payload);
    let mut capsule = Vec::new();
    varint::encode(ty, &mut capsule);
    varint::encode(payload.len() as u64, &mut capsule);
    capsule.extend_from_slice(&payload);
    let mut out = Vec::new();
    FrameHeader {
        ty: 0,
        len: capsule.len() as u64,
    }
    .encode(&mut out);
    out.extend_from_slice(&capsule);
    out
}

#[test]
fn a_whole_chromium_session() {
    let now = Instant::now();
    let mut c = server();
    // Client control stream (id 2): type byte, SETTINGS with a GREASE pair, then a GREASE
    // frame. Client QPACK encoder stream (id 6): "Set Dynamic Table Capacity = 0".
    let mut control = hex(CONTROL_STREAM_START);
    control.extend(hex(CONTROL_GREASE_FRAME));
    assert_eq!(
        c.handle_stream_data(now, 2, &control, false),
        Feed::Continue
    );
    let mut encoder = vec![0x02];
    encoder.extend(hex(QPACK_ENCODER_CAPACITY0));
    assert_eq!(
        c.handle_stream_data(now, 6, &encoder, false),
        Feed::Continue
    );
    let ev = events(&mut c);
    let Some(Event::PeerSettings {
        settings,
        draft,
        flow_control,
    }) = ev.first()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*draft, Some(WtDraft::Draft02));
    assert!(
        !flow_control,
        "Chromium speaks draft-02: no session flow control"
    );
    assert_eq!(settings.get(0x1), Some(65536));
    assert_eq!(settings.len(), 6, "the GREASE setting is dropped");

    // The CONNECT request on stream 0.
    let mut req = Vec::new();
    Frame::Headers(hex(CONNECT_HEADER_BLOCK).into()).encode(&mut req);
    assert_eq!(c.handle_stream_data(now, 0, &req, false), Feed::Request);
    let ev = events(&mut c);
    let Some(Event::SessionRequested { session, request }) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(session.stream_id(), 0);
    assert_eq!(request.authority, "127.0.0.1:50140");
    assert_eq!(request.path, "/echo");
    assert_eq!(request.protocol, UpgradeToken::WebTransport);
    assert!(request.draft02);
    assert_eq!(request.origin.as_deref(), Some("file://"));
    let session = *session;
    c.accept_session(session, ConnectResponse::default())
        .unwrap();
    assert!(matches!(
        events(&mut c).first(),
        Some(Event::SessionEstablished { .. })
    ));

    // A GREASE capsule, then the close capsule, each in a DATA frame.
    let mut data = capsule_in_data(CAPSULE_GREASE.0, CAPSULE_GREASE.1);
    data.extend(capsule_in_data(CAPSULE_CLOSE.0, CAPSULE_CLOSE.1));
    assert_eq!(c.handle_stream_data(now, 0, &data, false), Feed::Continue);
    let ev = events(&mut c);
    assert_eq!(
        ev,
        [Event::SessionEnded {
            session,
            end: SessionEnd::Closed {
                code: 4242,
                reason: "bye from chromium".into(),
                remote: true
            }
        }]
    );
    // Our side of the CONNECT stream is finished in answer, and nothing failed.
    let actions: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Write {
                stream: 0,
                fin: true,
                ..
            }
        )),
        "{actions:?}"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::CloseConnection { .. })),
        "{actions:?}"
    );
    assert!(c.error().is_none());
}

#[test]
fn chromium_dynamic_table_request_fails_decompression() {
    // The same request when a server advertised a dynamic table: we advertise capacity 0,
    // so Required Insert Count > 0 is QPACK_DECOMPRESSION_FAILED (RFC 9204 §4.5.1.1).
    let now = Instant::now();
    let mut c = server();
    assert_eq!(
        c.handle_stream_data(now, 2, &hex(CONTROL_STREAM_START), false),
        Feed::Continue
    );
    let mut req = Vec::new();
    Frame::Headers(hex(CONNECT_HEADER_BLOCK_DYNAMIC).into()).encode(&mut req);
    let _ = c.handle_stream_data(now, 0, &req, false);
    let error = c.error().cloned().expect("connection error");
    assert_eq!(
        error.code(),
        webtransport_proto::Code::QPACK_DECOMPRESSION_FAILED
    );
}
