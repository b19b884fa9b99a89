//! A whole client/server pair of the core, talking through the in-memory harness of the
//! proto crate's tests (`tests/support/pair.rs`), driven by arbitrary interleavings of
//! application operations on both sides, partial delivery (any stream's next write may
//! arrive first; bytes within one stream stay in order), time passing, and, sometimes,
//! bytes that no correct peer sends.
//!
//! Nothing may panic and the pair must always settle. While only correct operations ran
//! (no injected bytes), the pair must also agree: neither side closes the connection with
//! an error, the server never holds more sessions than its limit, and a session that one
//! side closed with a code and reason ends on the other side with that code and reason.

#![no_main]

#[path = "../../crates/webtransport-proto/tests/support/pair.rs"]
mod pair;

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pair::{Pair, Side};
use webtransport_proto::connection::{Config, Event, Role, SessionEnd, StreamHalf};
use webtransport_proto::headers::ConnectResponse;
use webtransport_proto::stream_header::SessionId;
use webtransport_proto::Code;

#[derive(Debug, Arbitrary)]
struct Input {
    server_max_sessions: u8,
    max_data: u16,
    max_streams: u8,
    ops: Vec<Op>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// The client requests a session (on its next bidi stream).
    Request,
    /// The server accepts the `k`-th request it saw.
    Accept {
        k: u8,
    },
    /// The server refuses it.
    Reject {
        k: u8,
        status: u16,
    },
    Close {
        server: bool,
        k: u8,
        code: u32,
        reason: u16,
    },
    Drain {
        server: bool,
        k: u8,
    },
    /// Opens a stream in session `k` and writes up to `len` bytes (as much as the
    /// session's flow control allows).
    Stream {
        server: bool,
        k: u8,
        bidi: bool,
        len: u16,
        fin: bool,
    },
    Datagram {
        server: bool,
        k: u8,
        len: u16,
    },
    /// The application resets or stops one of the streams it holds.
    Reset {
        server: bool,
        n: u8,
        code: u32,
    },
    Stop {
        server: bool,
        n: u8,
        code: u32,
    },
    /// The application reads everything that arrived (and reports it to the core).
    Read {
        server: bool,
    },
    Goaway,
    Grease {
        server: bool,
    },
    Advance {
        ms: u16,
    },
    /// One write in flight reaches `to`.
    DeliverOne {
        to_server: bool,
        pick: u8,
    },
    /// Everything in flight is delivered until both sides are quiet.
    Settle,
    /// Bytes no correct peer sends, on a new stream or after the control stream.
    Inject {
        to_server: bool,
        target: u8,
        bytes: Vec<u8>,
    },
}

/// What the fuzz driver keeps beside the harness.
#[derive(Default)]
struct Books {
    /// Sessions the client requested, in order.
    sessions: Vec<SessionId>,
    /// Requests the server saw, in order.
    requests: Vec<SessionId>,
    /// Bytes of each detached stream reported to each side's core.
    reported: [BTreeMap<u64, u64>; 2],
    /// Streams each side opened.
    opened: [Vec<u64>; 2],
    /// The first close of each session: (by server, code, reason).
    closes: BTreeMap<SessionId, (bool, u32, String)>,
    injected: bool,
}

fn idx(server: bool) -> usize {
    usize::from(server)
}

fn role(server: bool) -> Role {
    if server {
        Role::Server
    } else {
        Role::Client
    }
}

fn pick<T: Copy>(list: &[T], k: u8) -> Option<T> {
    (!list.is_empty()).then(|| list[usize::from(k) % list.len()])
}

/// Moves the events the harness collected into the books.
fn note_events(p: &mut Pair, books: &mut Books) {
    for e in &p.server.events {
        if let Event::SessionRequested { session, .. } = e {
            if !books.requests.contains(session) {
                books.requests.push(*session);
            }
        }
    }
}

fn config(input: &Input, server: bool) -> Config {
    let mut c = Config::default();
    if server {
        c.max_sessions = u32::from(input.server_max_sessions % 4) + 1;
    }
    // Small windows, so that credit runs out and is given back.
    c.flow.max_data = u64::from(input.max_data % 4096) + 1;
    c.flow.max_streams_bidi = u64::from(input.max_streams % 6) + 1;
    c.flow.max_streams_uni = u64::from(input.max_streams % 6) + 1;
    c.pending_timeout = Duration::from_millis(500);
    c.session_timeout = Duration::from_millis(1500);
    c
}

fn run(input: Input) {
    let mut p = Pair::with(config(&input, false), config(&input, true));
    let mut books = Books::default();
    let max_sessions = p.server.conn.config().max_sessions as usize;
    for op in input.ops.iter().take(256) {
        match *op {
            Op::Request => {
                let stream = p.client.open_bidi();
                let now = p.now;
                if let Ok(sid) = p
                    .client
                    .conn
                    .open_session(now, stream, Pair::request("/fuzz"))
                {
                    books.sessions.push(sid);
                }
            }
            Op::Accept { k } => {
                if let Some(sid) = pick(&books.requests, k) {
                    let _ = p
                        .server
                        .conn
                        .accept_session(sid, ConnectResponse::default());
                }
            }
            Op::Reject { k, status } => {
                if let Some(sid) = pick(&books.requests, k) {
                    let _ = p.server.conn.reject_session(sid, status);
                }
            }
            Op::Close {
                server,
                k,
                code,
                reason,
            } => {
                if let Some(sid) = pick(&books.sessions, k) {
                    let text = "r".repeat(usize::from(reason % 1100));
                    let side = p.side(role(server));
                    let both_open = side.conn.is_established(sid);
                    if side.conn.close_session(sid, code, &text).is_ok() && both_open {
                        books.closes.entry(sid).or_insert((server, code, text));
                    }
                }
            }
            Op::Drain { server, k } => {
                if let Some(sid) = pick(&books.sessions, k) {
                    let _ = p.side(role(server)).conn.drain_session(sid);
                }
            }
            Op::Stream {
                server,
                k,
                bidi,
                len,
                fin,
            } => {
                if let Some(sid) = pick(&books.sessions, k) {
                    open_stream(&mut p, &mut books, server, sid, bidi, len, fin);
                }
            }
            Op::Datagram { server, k, len } => {
                if let Some(sid) = pick(&books.sessions, k) {
                    let payload = vec![0xd7; usize::from(len % 1500)];
                    let side = p.side(role(server));
                    if let Ok(d) = side.conn.encode_datagram(sid, &payload) {
                        match server {
                            true => p.to_client.push(d),
                            false => p.to_server.push(d),
                        }
                    }
                }
            }
            Op::Reset { server, n, code } => {
                if let Some(stream) = held_stream(&p, &books, server, n) {
                    p.side(role(server))
                        .conn
                        .stream_done(stream, StreamHalf::Send);
                    let peer = p.side(role(!server));
                    peer.conn
                        .handle_stream_reset(stream, Code::from_wt_app(code));
                }
            }
            Op::Stop { server, n, code } => {
                if let Some(stream) = held_stream(&p, &books, server, n) {
                    p.side(role(server))
                        .conn
                        .stream_done(stream, StreamHalf::Recv);
                    let peer = p.side(role(!server));
                    peer.conn
                        .handle_stop_sending(stream, Code::from_wt_app(code));
                }
            }
            Op::Read { server } => read_all(&mut p, &mut books, server),
            Op::Goaway => {
                p.server.conn.goaway();
            }
            Op::Grease { server } => p.side(role(server)).conn.send_grease(),
            Op::Advance { ms } => {
                p.now += Duration::from_millis(u64::from(ms % 2000));
                let now = p.now;
                p.client.conn.handle_timeout(now);
                p.server.conn.handle_timeout(now);
            }
            Op::DeliverOne { to_server, pick } => {
                p.deliver_one(role(to_server), usize::from(pick));
            }
            Op::Settle => p.drive(),
            Op::Inject {
                to_server,
                target,
                ref bytes,
            } => {
                books.injected = true;
                // A new peer stream of either kind, or more bytes on one the peer opened.
                let sender = p.side(role(!to_server));
                let stream = match target % 3 {
                    0 => sender.open_uni(),
                    1 => sender.open_bidi(),
                    _ => sender.next_uni.saturating_sub(4),
                };
                let data = Bytes::copy_from_slice(bytes);
                match to_server {
                    true => p.wire_to_server.push((stream, data, target & 0x80 != 0)),
                    false => p.wire_to_client.push((stream, data, target & 0x80 != 0)),
                }
            }
        }
        p.collect();
        note_events(&mut p, &mut books);
        assert!(
            books.injected || p.server.conn.live_sessions() <= max_sessions,
            "server holds {} sessions, limit {max_sessions}",
            p.server.conn.live_sessions()
        );
    }
    // The end: everything delivered, and the applications read what arrived.
    for _ in 0..4 {
        p.drive();
        read_all(&mut p, &mut books, false);
        read_all(&mut p, &mut books, true);
    }
    p.drive();
    note_events(&mut p, &mut books);
    if books.injected {
        return;
    }
    for side in [&p.client, &p.server] {
        if let Some(code) = side.closed {
            assert_eq!(
                code,
                Code::H3_NO_ERROR,
                "{:?} closed the connection",
                side.role
            );
        }
        assert!(
            side.conn.error().is_none(),
            "{:?}: {:?}",
            side.role,
            side.conn.error()
        );
    }
    for (sid, (by_server, code, reason)) in &books.closes {
        let other = if *by_server { &p.client } else { &p.server };
        let ends: Vec<&SessionEnd> = other
            .events
            .iter()
            .filter_map(|e| match e {
                Event::SessionEnded { session, end } if session == sid => Some(end),
                _ => None,
            })
            .collect();
        // The peer may have closed it first (then it saw its own close), but if it saw
        // the remote close, that close carries the code and reason sent.
        for end in ends {
            if let SessionEnd::Closed {
                code: c,
                reason: r,
                remote: true,
            } = end
            {
                assert_eq!((c, r), (code, reason), "session {sid:?}");
            }
        }
    }
}

/// Opens a stream in `sid` from `server`'s side and sends what credit allows.
fn open_stream(
    p: &mut Pair,
    books: &mut Books,
    server: bool,
    sid: SessionId,
    bidi: bool,
    len: u16,
    fin: bool,
) {
    let side = p.side(role(server));
    if side.conn.reserve_stream(sid, bidi).is_err() {
        return;
    }
    let id = if bidi {
        side.open_bidi()
    } else {
        side.open_uni()
    };
    let Ok(preamble) = side.conn.open_stream(sid, id, bidi) else {
        side.conn.release_stream(sid, bidi);
        return;
    };
    let mut data = preamble.to_vec();
    let granted = side.conn.take_send_credit(sid, u64::from(len % 2048));
    data.resize(data.len() + granted as usize, 0x5a);
    books.opened[idx(server)].push(id);
    let write = (
        id,
        Bytes::from(data),
        fin && granted == u64::from(len % 2048),
    );
    match server {
        true => p.wire_to_client.push(write),
        false => p.wire_to_server.push(write),
    }
}

/// A stream `server`'s application holds: one it opened, or one the peer opened.
fn held_stream(p: &Pair, books: &Books, server: bool, n: u8) -> Option<u64> {
    let side: &Side = if server { &p.server } else { &p.client };
    let mut all: Vec<u64> = books.opened[idx(server)].clone();
    all.extend(side.app_streams.keys().copied());
    pick(&all, n)
}

/// The application of `server`'s side reads every byte that arrived on the streams the
/// peer opened, telling the core (which gives the peer credit back).
fn read_all(p: &mut Pair, books: &mut Books, server: bool) {
    let side = p.side(role(server));
    let arrived: Vec<(u64, u64)> = side
        .app_streams
        .iter()
        .map(|(id, (bytes, _))| (*id, bytes.len() as u64))
        .collect();
    for (id, len) in arrived {
        let done = books.reported[idx(server)].entry(id).or_insert(0);
        let new = len.saturating_sub(*done);
        if new > 0 {
            side.conn.stream_data_received(id, new);
            side.conn.stream_data_read(id, new);
            *done = len;
        }
    }
}

fuzz_target!(|input: Input| run(input));
