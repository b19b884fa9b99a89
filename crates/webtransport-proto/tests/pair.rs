//! Whole sessions through an in-memory client/server pair (tests/support/pair.rs).

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::pair::{other, Pair};
use webtransport_proto::connection::{
    CapsuleFraming, Config, Event, RejectReason, Role, SessionEnd,
};
use webtransport_proto::headers::ConnectResponse;
use webtransport_proto::settings::WtDraft;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

#[test]
fn settings_exchanged_and_draft_chosen() {
    let mut p = Pair::new();
    for side in [&mut p.client, &mut p.server] {
        let ev = side.take_events();
        let draft = ev.iter().find_map(|e| match e {
            Event::PeerSettings { draft, .. } => Some(*draft),
            _ => None,
        });
        // Both sides offer every draft, draft-17 included (draft-ietf-webtrans-http3-17 §7.1:
        // the highest version both support is selected).
        assert_eq!(draft, Some(Some(WtDraft::Draft17)), "{:?}", side.role);
        assert_eq!(side.conn.draft(), Some(WtDraft::Draft17));
        assert!(side.closed.is_none());
    }
    assert!(p
        .client
        .conn
        .peer_settings()
        .unwrap()
        .connect_protocol_enabled());
    assert!(!p
        .server
        .conn
        .peer_settings()
        .unwrap()
        .connect_protocol_enabled());
}

#[test]
fn session_streams_both_ways_and_datagrams() {
    let mut p = Pair::new();
    let sid = p.open_session();

    // Client bidi and uni streams reach the server's application with their payload.
    let b = p.send_stream(Role::Client, sid, true, b"hello bidi", true);
    let u = p.send_stream(Role::Client, sid, false, b"hello uni", true);
    let ev = p.server.take_events();
    let incoming: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::IncomingStream {
                session,
                stream,
                bidi,
                ..
            } => Some((*session, *stream, *bidi)),
            _ => None,
        })
        .collect();
    assert_eq!(incoming, [(sid, b, true), (sid, u, false)]);
    assert_eq!(p.server.app_streams[&b], (b"hello bidi".to_vec(), true));
    assert_eq!(p.server.app_streams[&u], (b"hello uni".to_vec(), true));

    // Server-initiated streams reach the client.
    let sb = p.send_stream(Role::Server, sid, true, b"from server", false);
    let su = p.send_stream(Role::Server, sid, false, b"uni back", true);
    let ev = p.client.take_events();
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::IncomingStream { stream, bidi: true, .. } if *stream == sb)));
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::IncomingStream { stream, bidi: false, .. } if *stream == su)));
    assert_eq!(p.client.app_streams[&sb].0, b"from server");

    // Datagrams both ways.
    let d = p.client.conn.encode_datagram(sid, b"ping").unwrap();
    p.to_server.push(d);
    let d = p.server.conn.encode_datagram(sid, b"pong").unwrap();
    p.to_client.push(d);
    p.drive();
    assert!(p.server.take_events().contains(&Event::Datagram {
        session: sid,
        payload: Bytes::from_static(b"ping")
    }));
    assert!(p.client.take_events().contains(&Event::Datagram {
        session: sid,
        payload: Bytes::from_static(b"pong")
    }));
}

fn closed_event(ev: &[Event]) -> Option<(SessionId, u32, String, bool)> {
    ev.iter().find_map(|e| match e {
        Event::SessionEnded {
            session,
            end:
                SessionEnd::Closed {
                    code,
                    reason,
                    remote,
                },
        } => Some((*session, *code, reason.clone(), *remote)),
        _ => None,
    })
}

/// A close capsule sent just before the peer's CONNECTION_CLOSE: QUIC may report the
/// connection gone before the CONNECT stream's last bytes are read. The session waits for
/// its CONNECT stream, so the close code is not lost (Firefox closes this way).
#[test]
fn a_close_capsule_read_after_the_connection_is_gone_still_counts() {
    let mut p = Pair::new();
    let sid = p.open_session();
    p.client.conn.close_session(sid, 4242, "bye now").unwrap();
    p.collect();
    p.server.conn.handle_connection_lost();
    p.collect();
    assert_eq!(closed_event(&p.server.take_events()), None);
    assert!(p.server.conn.is_established(sid));
    p.drive();
    assert_eq!(
        closed_event(&p.server.take_events()),
        Some((sid, 4242, "bye now".into(), true))
    );
    // What is still read after that ends normally.
    p.server.conn.handle_stream_lost(sid.stream_id());
    p.collect();
    assert!(p.server.take_events().is_empty());

    // Without a capsule, the session ends with the connection once its stream is lost.
    let mut p = Pair::new();
    let sid = p.open_session();
    p.server.conn.handle_connection_lost();
    p.collect();
    assert!(p.server.conn.is_established(sid));
    p.server.conn.handle_stream_lost(sid.stream_id());
    p.collect();
    assert!(p.server.events.iter().any(|e| matches!(e,
        Event::SessionEnded { session, end: SessionEnd::ConnectionClosed } if *session == sid)));
}

#[test]
fn close_from_each_side() {
    for closer in [Role::Client, Role::Server] {
        let mut p = Pair::new();
        let sid = p.open_session();
        p.side(closer)
            .conn
            .close_session(sid, 4242, "bye now")
            .unwrap();
        p.drive();
        let local = closed_event(&p.side(closer).take_events());
        let remote = closed_event(&p.side(other(closer)).take_events());
        assert_eq!(
            local,
            Some((sid, 4242, "bye now".into(), false)),
            "{closer:?}"
        );
        assert_eq!(
            remote,
            Some((sid, 4242, "bye now".into(), true)),
            "{closer:?}"
        );
        assert!(!p.client.conn.is_established(sid));
        assert!(!p.server.conn.is_established(sid));
        // Streams for the closed session are refused with WT_SESSION_GONE.
        let late = p.client.open_uni();
        let mut data = Vec::new();
        webtransport_proto::stream_header::UniStreamHeader::WebTransport(sid).encode(&mut data);
        p.wire_to_server.push((late, data.into(), false));
        p.drive();
        assert!(
            p.server.stops.contains(&(late, Code::WT_SESSION_GONE)),
            "{closer:?}"
        );
        assert!(p.client.closed.is_none() && p.server.closed.is_none());
    }
}

#[test]
fn fin_without_capsule_is_close_with_code_zero() {
    let mut p = Pair::new();
    let sid = p.open_session();
    p.wire_to_server.push((sid.stream_id(), Bytes::new(), true));
    p.drive();
    assert_eq!(
        closed_event(&p.server.take_events()),
        Some((sid, 0, String::new(), true))
    );
}

#[test]
fn drain() {
    let mut p = Pair::new();
    let sid = p.open_session();
    p.server.conn.drain_session(sid).unwrap();
    p.drive();
    assert!(p
        .client
        .take_events()
        .contains(&Event::SessionDraining { session: sid }));
    assert!(p.client.conn.is_established(sid));
}

#[test]
fn reject_with_404() {
    let mut p = Pair::new();
    let sid = p.request_session("/nope");
    p.server.conn.reject_session(sid, 404).unwrap();
    p.drive();
    let ev = p.client.take_events();
    let rej = ev.iter().find_map(|e| match e {
        Event::SessionEnded {
            session,
            end: SessionEnd::Rejected { reason, response },
        } => Some((*session, reason.clone(), response.clone())),
        _ => None,
    });
    let (session, reason, response) = rej.expect("rejected");
    assert_eq!(session, sid);
    assert_eq!(reason, RejectReason::Status(404));
    assert_eq!(response.unwrap().status, 404);
    assert!(!p.client.conn.is_established(sid));
    assert!(p.client.closed.is_none());
}

#[test]
fn streams_and_datagrams_before_accept_are_buffered_then_released() {
    let mut p = Pair::new();
    let sid = p.request_session("/echo");
    p.server.take_events();
    // The client cannot open streams yet, but a peer may send them early: forge them.
    for i in 0..3u8 {
        let id = p.client.open_uni();
        let mut data = Vec::new();
        webtransport_proto::stream_header::UniStreamHeader::WebTransport(sid).encode(&mut data);
        data.push(i);
        p.wire_to_server.push((id, data.into(), true));
    }
    p.to_server
        .push(webtransport_proto::datagram::encode(sid, b"early"));
    p.drive();
    assert!(!p
        .server
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::IncomingStream { .. })));
    p.server
        .conn
        .accept_session(sid, ConnectResponse::default())
        .unwrap();
    p.drive();
    let ev = p.server.take_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::IncomingStream { .. }))
            .count(),
        3
    );
    assert!(ev.contains(&Event::Datagram {
        session: sid,
        payload: Bytes::from_static(b"early")
    }));
}

#[test]
fn buffered_stream_limit_and_timeout() {
    let server = Config {
        max_pending_streams: 2,
        max_pending_datagrams: 1,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server);
    let sid = p.request_session("/echo");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = p.client.open_uni();
        ids.push(id);
        let mut data = Vec::new();
        webtransport_proto::stream_header::UniStreamHeader::WebTransport(sid).encode(&mut data);
        p.wire_to_server.push((id, data.into(), false));
    }
    for _ in 0..3 {
        p.to_server
            .push(webtransport_proto::datagram::encode(sid, b"x"));
    }
    p.drive();
    assert!(p
        .server
        .stops
        .contains(&(ids[2], Code::WT_BUFFERED_STREAM_REJECTED)));
    assert_eq!(p.server.conn.stats().streams_rejected, 1);
    assert_eq!(p.server.conn.stats().datagrams_dropped, 2);
    // The other two expire after the pending timeout.
    p.advance(Config::default().pending_timeout + Duration::from_millis(1));
    assert!(p
        .server
        .stops
        .contains(&(ids[0], Code::WT_BUFFERED_STREAM_REJECTED)));
    assert!(p
        .server
        .stops
        .contains(&(ids[1], Code::WT_BUFFERED_STREAM_REJECTED)));
    assert_eq!(p.server.conn.stats().datagrams_dropped, 3);
}

#[test]
fn session_limit_rejects_with_request_rejected() {
    let server = Config {
        max_sessions: 1,
        ..Config::default()
    };
    let mut p = Pair::with(Config::default(), server);
    let _first = p.open_session();
    // The client's own limit follows the server's advertised max sessions.
    let stream = p.client.open_bidi();
    let now = p.now;
    let err = p
        .client
        .conn
        .open_session(now, stream, Pair::request("/echo"))
        .unwrap_err();
    assert!(matches!(
        err,
        webtransport_proto::connection::CommandError::TooManySessions(1)
    ));
}

#[test]
fn client_request_times_out() {
    let mut p = Pair::new();
    let sid = p.request_session("/slow");
    p.advance(Config::default().session_timeout + Duration::from_millis(1));
    let ev = p.client.take_events();
    assert!(ev.iter().any(|e| matches!(e,
        Event::SessionEnded { session, end: SessionEnd::Rejected { reason: RejectReason::Timeout, .. } } if *session == sid)));
}

#[test]
fn an_answered_request_leaves_no_deadline_behind() {
    let mut p = Pair::new();
    let sid = p.request_session("/slow");
    assert!(p.client.conn.poll_timeout().is_some());
    // Answered before its deadline: nothing is left to time out, and the session
    // outlives the moment its request would have.
    p.server
        .conn
        .accept_session(sid, ConnectResponse::default())
        .unwrap();
    p.drive();
    assert!(p.client.conn.is_established(sid));
    assert_eq!(p.client.conn.poll_timeout(), None);
    p.advance(Config::default().session_timeout * 2);
    assert!(p.client.conn.is_established(sid));
}

#[test]
fn goaway_refuses_new_sessions() {
    let mut p = Pair::new();
    let sid = p.open_session();
    let id = p.server.conn.goaway();
    p.drive();
    assert_eq!(id, sid.stream_id() + 4);
    assert!(p.client.take_events().contains(&Event::GoAway { id }));
    let stream = p.client.open_bidi();
    let now = p.now;
    assert!(p
        .client
        .conn
        .open_session(now, stream, Pair::request("/echo"))
        .is_err());
    // The existing session still works.
    assert!(p.client.conn.is_established(sid));
}

#[test]
fn unframed_capsules_interoperate() {
    // A client configured like pywebtransport 0.8.1 writes capsules without DATA frames;
    // the server still sees its close code and reason.
    let client = Config {
        capsule_framing: CapsuleFraming::Unframed,
        ..Config::default()
    };
    let mut p = Pair::with(client, Config::default());
    let sid = p.open_session();
    p.client.conn.close_session(sid, 7, "unframed").unwrap();
    p.drive();
    assert_eq!(
        closed_event(&p.server.take_events()),
        Some((sid, 7, "unframed".into(), true))
    );
    assert!(p.server.closed.is_none());
}
