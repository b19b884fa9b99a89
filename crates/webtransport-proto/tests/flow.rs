//! Session flow control, WT_SESSION_GONE, determinism and capsule framing, through the
//! in-memory pair (tests/support/pair.rs).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::pair::Pair;
use webtransport_proto::connection::{
    CapsuleFraming, CommandError, Config, Connection, Event, Feed, FlowLimits, LocalStreams, Role,
    SessionEnd, StreamHalf,
};
use webtransport_proto::frame::Frame;
use webtransport_proto::headers::ConnectRequest;
use webtransport_proto::qpack::HeaderField;
use webtransport_proto::settings::{id, Settings};
use webtransport_proto::stream_header::{Preamble, SessionId, UniStreamHeader};
use webtransport_proto::Code;

fn windows(max_data: u64, bidi: u64, uni: u64) -> Config {
    Config {
        flow: FlowLimits {
            max_data,
            max_streams_bidi: bidi,
            max_streams_uni: uni,
        },
        ..Config::default()
    }
}

fn ended(events: &[Event], sid: SessionId) -> Option<SessionEnd> {
    events.iter().find_map(|e| match e {
        Event::SessionEnded { session, end } if *session == sid => Some(end.clone()),
        _ => None,
    })
}

/// Writes a forged WebTransport stream from the client, bypassing its own checks: what a
/// misbehaving peer sends.
fn forge_stream(p: &mut Pair, sid: SessionId, bidi: bool, payload: &[u8]) -> u64 {
    let id = if bidi {
        p.client.open_bidi()
    } else {
        p.client.open_uni()
    };
    let mut data = Preamble::new(sid, bidi).to_vec();
    data.extend_from_slice(payload);
    p.wire_to_server.push((id, data.into(), false));
    p.drive();
    id
}

#[test]
fn flow_control_is_on_only_when_both_sides_announce_it() {
    let p = Pair::new();
    assert!(p.client.conn.flow_control() && p.server.conn.flow_control());
    let off = Config {
        flow: FlowLimits::OFF,
        ..Config::default()
    };
    let p = Pair::with(off.clone(), Config::default());
    assert!(!p.client.conn.flow_control() && !p.server.conn.flow_control());
    let settings = p.client.conn.local_settings();
    assert_eq!(settings.get(id::WT_INITIAL_MAX_DATA), None);
    // Without flow control, credit is never limited and capsules are ignored.
    let mut p = Pair::with(off, Config::default());
    let sid = p.open_session();
    assert_eq!(p.client.conn.take_send_credit(sid, u64::MAX), u64::MAX);
}

/// A server with flow control and the SETTINGS a client sends, fed on its control stream.
fn server_with_client_settings(config: Config, settings: &Settings) -> Connection {
    let local = LocalStreams {
        control: 3,
        encoder: None,
        decoder: None,
    };
    let mut s = Connection::new(Role::Server, config, local);
    let mut control = Vec::new();
    UniStreamHeader::Control.encode(&mut control);
    Frame::Settings(settings.clone()).encode(&mut control);
    assert_eq!(
        s.handle_stream_data(Instant::now(), 2, &control, false),
        Feed::Continue
    );
    s
}

/// draft-ietf-webtrans-http3-14 §5.1: sending WT_MAX_SESSIONS above 1 declares the intent
/// to use flow control, as a non-zero WT_INITIAL_* setting does. So without windows of our
/// own we announce WT_MAX_SESSIONS 1 (else a draft-14 peer that declares it too holds itself
/// to initial limits of 0 that we never raise: the stall Safari users report), and a
/// draft-13/14 peer that declares it by WT_MAX_SESSIONS alone gets flow control, starting
/// from no credit. For draft-15 peers only the WT_INITIAL_* settings count.
#[test]
fn wt_max_sessions_above_one_declares_flow_control_for_draft_14() {
    let off = Settings::local(true, 16, 16384, FlowLimits::OFF);
    assert_eq!(off.get(id::WT_MAX_SESSIONS), Some(1));
    assert_eq!(off.get(id::WEBTRANSPORT_MAX_SESSIONS_DRAFT07), Some(16));
    assert_eq!(off.get(id::WT_INITIAL_MAX_DATA), None);
    let on = Settings::local(true, 16, 16384, FlowLimits::default());
    assert_eq!(on.get(id::WT_MAX_SESSIONS), Some(16));
    assert!(on.declares_flow_control());

    let mut d14 = Settings::new();
    d14.set(id::H3_DATAGRAM, 1);
    d14.set(id::WT_MAX_SESSIONS, 16);
    assert!(d14.declares_flow_control());
    let server = server_with_client_settings(Config::default(), &d14);
    assert!(server.flow_control());
    // The same peer with WT_MAX_SESSIONS 1 declares nothing, unless a WT_INITIAL_* does.
    let mut single = d14.clone();
    single.set(id::WT_MAX_SESSIONS, 1);
    assert!(!single.declares_flow_control());
    assert!(!server_with_client_settings(Config::default(), &single).flow_control());
    single.set(id::WT_INITIAL_MAX_STREAMS_UNI, 1);
    assert!(single.declares_flow_control());
    // We declare nothing without windows, whatever the peer does.
    let no_windows = Config {
        flow: FlowLimits::OFF,
        ..Config::default()
    };
    assert!(!server_with_client_settings(no_windows, &d14).flow_control());
    // draft-15 has no WT_MAX_SESSIONS: WT_ENABLED with it counts for nothing.
    let mut d15 = d14;
    d15.set(id::WT_ENABLED, 1);
    assert!(!d15.declares_flow_control());
    assert!(!server_with_client_settings(Config::default(), &d15).flow_control());
}

#[test]
fn send_credit_blocks_then_refills_as_the_peer_reads() {
    let mut p = Pair::with(Config::default(), windows(1000, 4, 4));
    let sid = p.open_session();
    let s = p.send_stream(Role::Client, sid, false, b"", false);
    assert_eq!(p.client.conn.take_send_credit(sid, 1500), 1000);
    assert_eq!(p.client.conn.take_send_credit(sid, 1), 0);
    assert_eq!(p.client.conn.stats().flow_blocked, 1);
    p.wire_to_server.push((s, vec![7u8; 1000].into(), false));
    p.drive();
    assert_eq!(p.server.app_streams[&s].0.len(), 1000);
    p.client.take_events();
    // Reading past half the window sends WT_MAX_DATA = read + window.
    p.server.conn.stream_data_received(s, 1000);
    p.server.conn.stream_data_read(s, 600);
    p.drive();
    assert!(p
        .client
        .take_events()
        .contains(&Event::SessionCredit { session: sid }));
    assert_eq!(p.client.conn.take_send_credit(sid, 5000), 600);
    assert!(p.server.conn.is_established(sid));
    assert_eq!(p.server.conn.stats().errors, 0);
}

#[test]
fn a_peer_over_our_max_data_gets_wt_flow_control_error() {
    let mut p = Pair::with(Config::default(), windows(100, 4, 4));
    let sid = p.open_session();
    let s = forge_stream(&mut p, sid, true, &[1u8; 150]);
    p.server.take_events();
    // 150 bytes arrived against a window of 100.
    p.server.conn.stream_data_received(s, 150);
    p.drive();
    assert_eq!(
        ended(&p.server.take_events(), sid),
        Some(SessionEnd::Aborted {
            code: Code::WT_FLOW_CONTROL_ERROR,
            remote: false
        })
    );
    assert!(p
        .server
        .resets
        .contains(&(sid.stream_id(), Code::WT_FLOW_CONTROL_ERROR)));
    // The session's stream goes with it, and the client sees the CONNECT stream reset.
    assert!(p.server.resets.contains(&(s, Code::WT_SESSION_GONE)));
    assert!(p.server.stops.contains(&(s, Code::WT_SESSION_GONE)));
    assert_eq!(
        ended(&p.client.take_events(), sid),
        Some(SessionEnd::Aborted {
            code: Code::WT_FLOW_CONTROL_ERROR,
            remote: true
        })
    );
    assert!(p.server.closed.is_none() && p.client.closed.is_none());
}

#[test]
fn a_peer_over_our_max_streams_gets_wt_flow_control_error() {
    let mut p = Pair::with(Config::default(), windows(1 << 20, 2, 2));
    let sid = p.open_session();
    forge_stream(&mut p, sid, true, b"a");
    forge_stream(&mut p, sid, true, b"b");
    assert!(p.server.conn.is_established(sid));
    let third = forge_stream(&mut p, sid, true, b"c");
    assert_eq!(
        ended(&p.server.take_events(), sid),
        Some(SessionEnd::Aborted {
            code: Code::WT_FLOW_CONTROL_ERROR,
            remote: false
        })
    );
    assert!(p.server.stops.contains(&(third, Code::WT_SESSION_GONE)));
}

#[test]
fn stream_credit_comes_back_as_streams_close() {
    let mut p = Pair::with(Config::default(), windows(1 << 20, 2, 2));
    let sid = p.open_session();
    let a = p.send_stream(Role::Client, sid, false, b"1", true);
    let b = p.send_stream(Role::Client, sid, false, b"2", true);
    assert_eq!(
        p.client.conn.reserve_stream(sid, false),
        Err(CommandError::StreamsBlocked {
            session: sid,
            bidi: false,
            limit: 2
        })
    );
    // Bidirectional streams have their own limit.
    assert!(p.client.conn.reserve_stream(sid, true).is_ok());
    p.client.conn.release_stream(sid, true);
    p.client.take_events();
    // The server's application is done with the first stream: half the window closed.
    p.server.conn.stream_accepted(a);
    p.server.conn.stream_done(a, StreamHalf::Recv);
    p.drive();
    assert!(p
        .client
        .take_events()
        .contains(&Event::SessionCredit { session: sid }));
    assert!(p.client.conn.reserve_stream(sid, false).is_ok());
    let _ = b;
}

#[test]
fn a_closed_session_resets_and_stops_its_streams_with_session_gone() {
    let mut p = Pair::new();
    let sid = p.open_session();
    let b = p.send_stream(Role::Client, sid, true, b"bidi", false);
    let u = p.send_stream(Role::Client, sid, false, b"uni", false);
    p.client.conn.close_session(sid, 1, "done").unwrap();
    p.drive();
    let gone = Code::WT_SESSION_GONE;
    // The client holds both sending halves and the bidi stream's receiving half.
    assert!(p.client.resets.contains(&(b, gone)));
    assert!(p.client.stops.contains(&(b, gone)));
    assert!(p.client.resets.contains(&(u, gone)));
    assert!(!p.client.stops.contains(&(u, gone)));
    // The server holds both receiving halves and the bidi stream's sending half.
    assert!(p.server.stops.contains(&(b, gone)));
    assert!(p.server.stops.contains(&(u, gone)));
    assert!(p.server.resets.contains(&(b, gone)));
    assert!(!p.server.resets.contains(&(u, gone)));
    assert_eq!(p.server.conn.stats().streams_gone, 2);
}

#[test]
fn streams_done_before_the_close_are_left_alone() {
    let mut p = Pair::new();
    let sid = p.open_session();
    let u = p.send_stream(Role::Client, sid, false, b"uni", true);
    p.client.conn.stream_done(u, StreamHalf::Send);
    p.client.conn.close_session(sid, 0, "").unwrap();
    p.drive();
    assert!(!p.client.resets.iter().any(|(s, _)| *s == u));
}

#[test]
fn expired_streams_are_refused_in_stream_id_order() {
    // The same inputs give the same actions: buffered streams that time out are refused
    // in id order, whatever order they arrived in.
    let mut p = Pair::new();
    let sid = p.request_session("/echo");
    let ids: Vec<u64> = (0..8).map(|_| p.client.open_uni()).collect();
    for id in ids.iter().rev() {
        let mut data = Vec::new();
        UniStreamHeader::WebTransport(sid).encode(&mut data);
        p.wire_to_server.push((*id, data.into(), false));
    }
    p.drive();
    p.server.stops.clear();
    p.advance(Config::default().pending_timeout + Duration::from_millis(1));
    let refused: Vec<u64> = p
        .server
        .stops
        .iter()
        .filter(|(_, c)| *c == Code::WT_BUFFERED_STREAM_REJECTED)
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(refused, ids);
}

/// A client core fed a server control stream with these SETTINGS.
fn client_with_server_settings(framing: CapsuleFraming, settings: &Settings) -> Connection {
    let local = LocalStreams {
        control: 2,
        encoder: None,
        decoder: None,
    };
    let config = Config {
        capsule_framing: framing,
        ..Config::default()
    };
    let mut c = Connection::new(Role::Client, config, local);
    let mut control = Vec::new();
    UniStreamHeader::Control.encode(&mut control);
    Frame::Settings(settings.clone()).encode(&mut control);
    assert_eq!(
        c.handle_stream_data(Instant::now(), 3, &control, false),
        Feed::Continue
    );
    c
}

#[test]
fn capsules_go_unframed_for_a_server_announcing_only_draft_13() {
    let mut only13 = Settings::new();
    only13.set(id::ENABLE_CONNECT_PROTOCOL, 1);
    only13.set(id::H3_DATAGRAM, 1);
    only13.set(id::WT_MAX_SESSIONS, 1);
    assert!(client_with_server_settings(CapsuleFraming::Auto, &only13).unframed_capsules());
    assert!(!client_with_server_settings(CapsuleFraming::Framed, &only13).unframed_capsules());
    let mut with02 = only13.clone();
    with02.set(id::ENABLE_WEBTRANSPORT, 1);
    assert!(!client_with_server_settings(CapsuleFraming::Auto, &with02).unframed_capsules());
    let mut with15 = only13;
    with15.set(id::WT_ENABLED, 1);
    assert!(!client_with_server_settings(CapsuleFraming::Auto, &with15).unframed_capsules());
    let ours = Settings::local(true, 16, 16384, FlowLimits::default());
    assert!(!client_with_server_settings(CapsuleFraming::Auto, &ours).unframed_capsules());
}

#[test]
fn capsules_go_unframed_for_a_client_with_pywebtransport_081_settings() {
    // What pywebtransport 0.8.1's client sends (docs/interop.md): draft-13 alone, and
    // ENABLE_CONNECT_PROTOCOL although it is a client.
    let server = |settings: &Settings| {
        let local = LocalStreams {
            control: 3,
            encoder: None,
            decoder: None,
        };
        let mut s = Connection::new(Role::Server, Config::default(), local);
        let mut control = Vec::new();
        UniStreamHeader::Control.encode(&mut control);
        Frame::Settings(settings.clone()).encode(&mut control);
        let _ = s.handle_stream_data(Instant::now(), 2, &control, false);
        s
    };
    let mut pwt081 = Settings::new();
    pwt081.set(id::QPACK_MAX_TABLE_CAPACITY, 4096);
    pwt081.set(id::ENABLE_CONNECT_PROTOCOL, 1);
    pwt081.set(id::H3_DATAGRAM, 1);
    pwt081.set(id::WT_MAX_SESSIONS, 1);
    pwt081.set(id::WT_INITIAL_MAX_DATA, 1 << 24);
    assert!(server(&pwt081).unframed_capsules());
    // A draft-13/14 client that does not claim extended CONNECT keeps framed capsules.
    let mut draft13 = pwt081.clone();
    draft13.set(id::ENABLE_CONNECT_PROTOCOL, 0);
    assert!(!server(&draft13).unframed_capsules());
    // So does Chromium.
    let mut chromium = Settings::new();
    chromium.set(id::H3_DATAGRAM, 1);
    chromium.set(id::ENABLE_WEBTRANSPORT, 1);
    assert!(!server(&chromium).unframed_capsules());
}

#[test]
fn capsules_go_unframed_for_a_pywebtransport_081_client() {
    let mut p = Pair::new();
    let stream = p.client.open_bidi();
    let request = ConnectRequest {
        headers: vec![HeaderField::new("user-agent", "pywebtransport/0.8.1")],
        ..Pair::request("/echo")
    };
    p.client.conn.open_session(p.now, stream, request).unwrap();
    assert!(!p.server.conn.unframed_capsules());
    p.drive();
    assert!(p.server.conn.unframed_capsules());
    assert!(!p.client.conn.unframed_capsules());
}

#[test]
fn capsules_go_unframed_once_the_peer_sends_one_bare() {
    let bare = Config {
        capsule_framing: CapsuleFraming::Unframed,
        ..Config::default()
    };
    let mut p = Pair::with(bare, Config::default());
    let sid = p.open_session();
    assert!(!p.server.conn.unframed_capsules());
    p.client.conn.drain_session(sid).unwrap();
    p.drive();
    assert!(p.server.conn.unframed_capsules());
    // The server's close now travels bare and still reaches the client with its code.
    p.server.conn.close_session(sid, 9, "bare").unwrap();
    p.drive();
    assert_eq!(
        ended(&p.client.take_events(), sid),
        Some(SessionEnd::Closed {
            code: 9,
            reason: "bare".into(),
            remote: true
        })
    );
    let _ = Bytes::new();
}

/// `handle_stream_bytes` routes a stream whose preamble came whole with its first bytes
/// exactly as `handle_stream_data` does, and hands the payload after the preamble on as a
/// slice of the bytes given (no copy); a preamble split over two feeds still works.
#[test]
fn streams_fed_as_bytes_hand_their_payload_on_without_a_copy() {
    let mut p = Pair::new();
    let sid = p.open_session();
    let now = p.now;
    for (stream, bidi) in [(4u64, true), (2u64, false)] {
        let stream = stream + 4 * 10;
        let mut data = Preamble::new(sid, bidi).to_vec();
        let preamble = data.len();
        data.extend_from_slice(b"payload");
        let data = Bytes::from(data);
        let feed = p
            .server
            .conn
            .handle_stream_bytes(now, stream, data.clone(), false);
        assert_eq!(feed, Feed::Detach, "stream {stream}");
        p.collect();
        let prefix = p
            .server
            .take_events()
            .into_iter()
            .find_map(|e| match e {
                Event::IncomingStream {
                    stream: s,
                    prefix,
                    bidi: b,
                    ..
                } if s == stream && b == bidi => Some(prefix),
                _ => None,
            })
            .expect("the stream reached its session");
        assert_eq!(&prefix[..], b"payload");
        assert_eq!(
            prefix.as_ptr(),
            data[preamble..].as_ptr(),
            "a slice, not a copy"
        );
    }
    // A preamble that does not come whole is buffered as before.
    let stream = 4 * 20;
    let data = Preamble::new(sid, true).to_vec();
    let (a, b) = data.split_at(1);
    let feed = p
        .server
        .conn
        .handle_stream_bytes(now, stream, Bytes::copy_from_slice(a), false);
    assert_eq!(feed, Feed::Continue);
    let mut rest = b.to_vec();
    rest.extend_from_slice(b"late");
    let feed = p
        .server
        .conn
        .handle_stream_bytes(now, stream, rest.into(), false);
    assert_eq!(feed, Feed::Detach);
    p.collect();
    assert!(p.server.take_events().iter().any(|e| matches!(
        e,
        Event::IncomingStream { stream: s, prefix, .. } if *s == stream && &prefix[..] == b"late"
    )));
}
