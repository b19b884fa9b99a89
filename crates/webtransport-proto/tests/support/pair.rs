//! An in-memory client/server pair for the state machine: the harness plays QUIC, moving
//! stream bytes and datagrams between two `Connection`s, and holds the WebTransport
//! streams the cores detach, as an application would.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use webtransport_proto::connection::{Action, Config, Connection, Event, Feed, LocalStreams, Role};
use webtransport_proto::headers::{ConnectRequest, ConnectResponse, UpgradeToken};
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

/// One side of the pair.
pub struct Side {
    pub conn: Connection,
    pub role: Role,
    pub next_bidi: u64,
    pub next_uni: u64,
    /// Streams the core reads: id -> bytes not yet delivered.
    pub core_streams: HashMap<u64, (Vec<u8>, bool)>,
    /// Detached WebTransport streams: id -> bytes received (prefix + later data), FIN seen.
    pub app_streams: BTreeMap<u64, (Vec<u8>, bool)>,
    pub events: Vec<Event>,
    pub resets: Vec<(u64, Code)>,
    pub stops: Vec<(u64, Code)>,
    pub closed: Option<Code>,
}

impl Side {
    pub fn new(role: Role, config: Config) -> Self {
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

    pub fn open_bidi(&mut self) -> u64 {
        let id = self.next_bidi;
        self.next_bidi += 4;
        id
    }

    pub fn open_uni(&mut self) -> u64 {
        let id = self.next_uni;
        self.next_uni += 4;
        id
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

pub struct Pair {
    pub client: Side,
    pub server: Side,
    pub now: Instant,
    /// Datagrams in flight to the client / server.
    pub to_client: Vec<Bytes>,
    pub to_server: Vec<Bytes>,
    /// Bytes written by each side on streams, routed to the other: (stream, data, fin).
    pub wire_to_client: Vec<(u64, Bytes, bool)>,
    pub wire_to_server: Vec<(u64, Bytes, bool)>,
}

impl Pair {
    pub fn new() -> Self {
        Self::with(Config::default(), Config::default())
    }

    pub fn with(client: Config, server: Config) -> Self {
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

    pub fn side(&mut self, role: Role) -> &mut Side {
        match role {
            Role::Client => &mut self.client,
            Role::Server => &mut self.server,
        }
    }

    /// Collects actions and events from both sides.
    pub fn collect(&mut self) -> bool {
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
    pub fn drive(&mut self) {
        for _ in 0..1000 {
            if !self.step() {
                return;
            }
        }
        panic!("pair did not settle");
    }

    /// One round: collects both sides' output, then delivers everything in flight.
    /// Returns whether anything happened.
    pub fn step(&mut self) -> bool {
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
            for d in dgrams {
                progress = true;
                self.side(role).conn.handle_datagram(now, d);
            }
            for (stream, data, fin) in wire {
                progress = true;
                self.deliver(role, stream, &data, fin);
            }
        }
        progress
    }

    /// Delivers one of the stream writes in flight to `to`: the `pick`-th (modulo) of
    /// those that QUIC could deliver next, i.e. the first pending write of each stream
    /// (streams are independent; bytes within one stay in order). Returns whether there
    /// was one.
    pub fn deliver_one(&mut self, to: Role, pick: usize) -> bool {
        self.collect();
        let wire = match to {
            Role::Client => &mut self.wire_to_client,
            Role::Server => &mut self.wire_to_server,
        };
        let mut heads = Vec::new();
        for (i, (stream, _, _)) in wire.iter().enumerate() {
            if !wire[..i].iter().any(|(s, _, _)| s == stream) {
                heads.push(i);
            }
        }
        if heads.is_empty() {
            return false;
        }
        let (stream, data, fin) = wire.remove(heads[pick % heads.len()]);
        self.deliver(to, stream, &data, fin);
        true
    }

    /// Hands stream bytes to `role`: to its application if the stream was detached,
    /// otherwise to its core (the first few bytes one at a time, to exercise partial
    /// parsing).
    pub fn deliver(&mut self, role: Role, stream: u64, data: &[u8], fin: bool) {
        let now = self.now;
        let side = self.side(role);
        if let Some(app) = side.app_streams.get_mut(&stream) {
            app.0.extend_from_slice(data);
            app.1 |= fin;
            return;
        }
        let entry = side.core_streams.entry(stream).or_default();
        entry.0.extend_from_slice(data);
        entry.1 |= fin;
        let (buf, fin) = std::mem::take(entry);
        let split = buf.len().min(3);
        // `Feed::Request` (said once) means "keep feeding" here: the harness routes every
        // write by stream id anyway.
        let keep_going = |f: Feed| matches!(f, Feed::Continue | Feed::Request);
        let mut feed = Feed::Continue;
        let mut consumed = 0;
        while consumed < split && keep_going(feed) {
            feed = side.conn.handle_stream_data(
                now,
                stream,
                std::slice::from_ref(&buf[consumed]),
                false,
            );
            consumed += 1;
        }
        if keep_going(feed) {
            feed = side
                .conn
                .handle_stream_data(now, stream, &buf[split..], fin);
            consumed = buf.len();
        }
        match feed {
            Feed::Continue | Feed::Request => {}
            Feed::Detach => {
                side.core_streams.remove(&stream);
                // Bytes not yet fed go to the app side directly.
                let app = side.app_streams.entry(stream).or_default();
                app.0.extend_from_slice(&buf[consumed..]);
                app.1 |= fin;
            }
            Feed::Done => {
                side.core_streams.remove(&stream);
            }
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        self.client.conn.handle_timeout(now);
        self.server.conn.handle_timeout(now);
        self.drive();
    }

    pub fn request(path: &str) -> ConnectRequest {
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
    pub fn request_session(&mut self, path: &str) -> SessionId {
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

    pub fn open_session(&mut self) -> SessionId {
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
    pub fn send_stream(
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
        side.conn.reserve_stream(session, bidi).unwrap();
        let mut data = side.conn.open_stream(session, id, bidi).unwrap().to_vec();
        data.extend_from_slice(payload);
        match role {
            Role::Client => self.wire_to_server.push((id, data.into(), fin)),
            Role::Server => self.wire_to_client.push((id, data.into(), fin)),
        }
        self.drive();
        id
    }
}

pub fn other(r: Role) -> Role {
    match r {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}
