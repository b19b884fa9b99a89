//! An in-memory client/server pair driving the state machine through whole sessions,
//! with no sockets: the harness plays QUIC, moving stream bytes and datagrams between two
//! `Connection`s, and holds the WebTransport streams the cores detach.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use webtransport_proto::connection::{
    Action, Config, Connection, Event, Feed, LocalStreams, RejectReason, Role,
};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse, UpgradeToken};
use webtransport_proto::settings::WtDraft;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

/// One side of the pair.
struct Side {
    conn: Connection,
    role: Role,
    next_bidi: u64,
    next_uni: u64,
    /// Streams the core reads: id -> bytes not yet delivered.
    core_streams: HashMap<u64, (Vec<u8>, bool)>,
    /// Detached WebTransport streams: id -> bytes received (prefix + later data), FIN seen.
    app_streams: BTreeMap<u64, (Vec<u8>, bool)>,
    events: Vec<Event>,
    resets: Vec<(u64, Code)>,
    stops: Vec<(u64, Code)>,
    closed: Option<Code>,
}

impl Side {
    fn new(role: Role, config: Config) -> Self {
        let (bidi0, uni0) = match role {
            Role::Client => (0, 2),
            Role::Server => (1, 3),
        };
        let local = LocalStreams {
            control: uni0,
            encoder: Some(uni0 + 4),
            decoder: Some(uni0 + 8),
        };
        Side {
            conn: Connection::new(role, config, local),
            role,
            next_bidi: bidi0,
            next_uni: uni0 + 12,
            core_streams: HashMap::new(),
            app_streams: BTreeMap::new(),
            events: Vec::new(),
            resets: Vec::new(),
            stops: Vec::new(),
            closed: None,
        }
    }

    fn open_bidi(&mut self) -> u64 {
        let id = self.next_bidi;
        self.next_bidi += 4;
        id
    }

    fn open_uni(&mut self) -> u64 {
        let id = self.next_uni;
        self.next_uni += 4;
        id
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

struct Pair {
    client: Side,
    server: Side,
    now: Instant,
    /// Datagrams in flight to the client / server.
    to_client: Vec<Bytes>,
    to_server: Vec<Bytes>,
    /// Bytes written by each side on streams, routed to the other: (stream, data, fin).
    wire_to_client: Vec<(u64, Bytes, bool)>,
    wire_to_server: Vec<(u64, Bytes, bool)>,
}

impl Pair {
    fn new() -> Self {
        Self::with(Config::default(), Config::default())
    }

    fn with(client: Config, server: Config) -> Self {
        let mut p = Pair {
            client: Side::new(Role::Client, client),
            server: Side::new(Role::Server, server),
            now: Instant::now(),
            to_client: Vec::new(),
            to_server: Vec::new(),
            wire_to_client: Vec::new(),
            wire_to_server: Vec::new(),
        };
        p.drive();
        p
    }

    fn side(&mut self, role: Role) -> &mut Side {
        match role {
            Role::Client => &mut self.client,
            Role::Server => &mut self.server,
        }
    }

    /// Collects actions and events from both sides.
    fn collect(&mut self) -> bool {
        let mut progress = false;
        for role in [Role::Client, Role::Server] {
            let side = self.side(role);
            let mut out = Vec::new();
            let mut resets = Vec::new();
            let mut stops = Vec::new();
            let mut close = None;
            while let Some(a) = side.conn.poll_action() {
                progress = true;
                match a {
                    Action::Write { stream, data, fin } => out.push((stream, data, fin)),
                    Action::Reset { stream, code } => resets.push((stream, code)),
                    Action::StopSending { stream, code } => stops.push((stream, code)),
                    Action::CloseConnection { code, .. } => close = Some(code),
                }
            }
            while let Some(e) = side.conn.poll_event() {
                progress = true;
                if let Event::IncomingStream { stream, prefix, .. } = &e {
                    side.app_streams
                        .entry(*stream)
                        .or_default()
                        .0
                        .extend_from_slice(prefix);
                }
                side.events.push(e);
            }
            side.resets.extend(resets.iter().copied());
            side.stops.extend(stops.iter().copied());
            if close.is_some() {
                side.closed = close;
            }
            let peer = match role {
                Role::Client => &mut self.wire_to_server,
                Role::Server => &mut self.wire_to_client,
            };
            peer.extend(out);
            // A reset is seen by the peer's reader.
            for (stream, code) in resets {
                let peer = self.side(other(role));
                peer.conn.handle_stream_reset(stream, code);
            }
            for (stream, code) in stops {
                let peer = self.side(other(role));
                peer.conn.handle_stop_sending(stream, code);
            }
        }
        progress
    }

    /// Moves everything until both sides are quiet.
    fn drive(&mut self) {
        for _ in 0..1000 {
            let mut progress = self.collect();
            for role in [Role::Client, Role::Server] {
                let wire = match role {
                    Role::Client => std::mem::take(&mut self.wire_to_client),
                    Role::Server => std::mem::take(&mut self.wire_to_server),
                };
                let dgrams = match role {
                    Role::Client => std::mem::take(&mut self.to_client),
                    Role::Server => std::mem::take(&mut self.to_server),
                };
                let now = self.now;
                let side = self.side(role);
                for d in dgrams {
                    progress = true;
                    side.conn.handle_datagram(now, d);
                }
                for (stream, data, fin) in wire {
                    progress = true;
                    if let Some(app) = side.app_streams.get_mut(&stream) {
                        app.0.extend_from_slice(&data);
                        app.1 |= fin;
                        continue;
                    }
                    let entry = side.core_streams.entry(stream).or_default();
                    entry.0.extend_from_slice(&data);
                    entry.1 |= fin;
                    let (buf, fin) = std::mem::take(entry);
                    // Feed one byte at a time for the first few bytes to exercise
                    // partial parsing, then the rest in one go.
                    let split = buf.len().min(3);
                    let mut feed = Feed::Continue;
                    for b in &buf[..split] {
                        feed = side.conn.handle_stream_data(
                            now,
                            stream,
                            std::slice::from_ref(b),
                            false,
                        );
                        if feed != Feed::Continue {
                            break;
                        }
                    }
                    let consumed = if feed == Feed::Continue {
                        feed = side
                            .conn
                            .handle_stream_data(now, stream, &buf[split..], fin);
                        buf.len()
                    } else {
                        split.min(buf.len())
                    };
                    match feed {
                        Feed::Continue => {}
                        Feed::Detach => {
                            side.core_streams.remove(&stream);
                            // Bytes not yet fed go to the app side directly.
                            let app = side.app_streams.entry(stream).or_default();
                            app.0.extend_from_slice(&buf[consumed.min(buf.len())..]);
                            app.1 |= fin;
                        }
                        Feed::Done => {
                            side.core_streams.remove(&stream);
                        }
                    }
                }
            }
            if !progress {
                return;
            }
        }
        panic!("pair did not settle");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        self.client.conn.handle_timeout(now);
        self.server.conn.handle_timeout(now);
        self.drive();
    }

    fn request(path: &str) -> ConnectRequest {
        ConnectRequest {
            scheme: "https".into(),
            authority: "localhost:4433".into(),
            path: path.into(),
            protocol: UpgradeToken::WebTransport,
            origin: Some("https://example.test".into()),
            draft02: false,
            available_protocols: vec!["echo-v1".into(), "chat".into()],
            headers: Vec::new(),
        }
    }

    /// Opens a session from the client; returns its id after the server saw the request.
    fn request_session(&mut self, path: &str) -> SessionId {
        let stream = self.client.open_bidi();
        let now = self.now;
        let sid = self
            .client
            .conn
            .open_session(now, stream, Self::request(path))
            .unwrap();
        self.drive();
        sid
    }

    fn open_session(&mut self) -> SessionId {
        let sid = self.request_session("/echo");
        let req = self.server.take_events().into_iter().find_map(|e| match e {
            Event::SessionRequested { session, request } => Some((session, request)),
            _ => None,
        });
        let (session, request) = req.expect("server saw the request");
        assert_eq!(session, sid);
        assert_eq!(request.path, "/echo");
        assert_eq!(request.available_protocols, ["echo-v1", "chat"]);
        let response = ConnectResponse {
            status: 200,
            protocol: Some("echo-v1".into()),
            ..ConnectResponse::default()
        };
        self.server.conn.accept_session(sid, response).unwrap();
        self.drive();
        let est = self.client.take_events().into_iter().find_map(|e| match e {
            Event::SessionEstablished { session, response } => Some((session, response)),
            _ => None,
        });
        let (session, response) = est.expect("client saw the session established");
        assert_eq!(session, sid);
        assert_eq!(response.protocol.as_deref(), Some("echo-v1"));
        assert!(self.client.conn.is_established(sid));
        assert!(self.server.conn.is_established(sid));
        self.server.take_events();
        sid
    }

    /// Opens a WebTransport stream from `role` and writes `payload` (+ FIN).
    fn send_stream(
        &mut self,
        role: Role,
        session: SessionId,
        bidi: bool,
        payload: &[u8],
        fin: bool,
    ) -> u64 {
        let side = self.side(role);
        let id = if bidi {
            side.open_bidi()
        } else {
            side.open_uni()
        };
        let mut data = side.conn.open_stream(session, bidi).unwrap().to_vec();
        data.extend_from_slice(payload);
        match role {
            Role::Client => self.wire_to_server.push((id, data.into(), fin)),
            Role::Server => self.wire_to_client.push((id, data.into(), fin)),
        }
        self.drive();
        id
    }
}

fn other(r: Role) -> Role {
    match r {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

#[test]
fn settings_exchanged_and_draft_chosen() {
    let mut p = Pair::new();
    for side in [&mut p.client, &mut p.server] {
        let ev = side.take_events();
        let draft = ev.iter().find_map(|e| match e {
            Event::PeerSettings { draft, .. } => Some(*draft),
            _ => None,
        });
        assert_eq!(draft, Some(Some(WtDraft::Draft15)), "{:?}", side.role);
        assert_eq!(side.conn.draft(), Some(WtDraft::Draft15));
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
        Event::SessionClosed {
            session,
            code,
            reason,
            remote,
        } => Some((*session, *code, reason.clone(), *remote)),
        _ => None,
    })
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
        Event::SessionRejected {
            session,
            reason,
            response,
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
        webtransport_proto::connection::SessionError::TooManySessions(1)
    ));
}

#[test]
fn client_request_times_out() {
    let mut p = Pair::new();
    let sid = p.request_session("/slow");
    p.advance(Config::default().session_timeout + Duration::from_millis(1));
    let ev = p.client.take_events();
    assert!(ev.iter().any(|e| matches!(e,
        Event::SessionRejected { session, reason: RejectReason::Timeout, .. } if *session == sid)));
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
        unframed_capsules: true,
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
