//! A hostile-peer suite: a raw quinn client (`support/peer.rs`) that writes HTTP/3 by hand
//! sends our server what a correct peer never sends. Each scenario checks three things:
//! the error code the spec names, as our server sends it (connection close, stream reset
//! or stop, HTTP status); that what the server holds stays under its configured cap (the
//! library's own counters: `Connection::protocol()`, `SessionInfo`, the app's
//! diagnostics); and that a well-behaved client on the same server, from another address,
//! keeps working during and after the attack.
//!
//! Run with `cargo test -p webtransport --test hostile`; `RUST_LOG=debug` shows the
//! server's side of each attack.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use webtransport::app::{handlers, AppHandle, RouteOptions, ServerApp};
use webtransport::proto::capsule::{ty as capsule_ty, Capsule};
use webtransport::proto::frame::{ty, Frame};
use webtransport::proto::settings::{id, Settings};
use webtransport::proto::stream_header::{SessionId, UniStreamHeader};
use webtransport::proto::varint::VarInt;
use webtransport::*;

mod support;
use support::peer::{self, Peer, T};

const KIB: usize = 1024;

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server as `wt serve` runs it: a `ServerApp` with the echo route, plus `/sink`, whose
/// handler holds its session and reads nothing (so whatever the peer sends stays queued
/// for the application, up to the caps).
struct Fx {
    server: Arc<Server>,
    app: AppHandle,
    addr: SocketAddr,
    hash: [u8; 32],
    client: Client,
}

async fn fixture(tweak: impl FnOnce(&mut ServerConfig)) -> Fx {
    init_log();
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let mut cfg = ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    };
    tweak(&mut cfg);
    let server = Arc::new(Server::bind(cfg).await.unwrap());
    let addr = server.local_addrs()[0];
    let app = ServerApp::new()
        .route_with(
            "/echo",
            RouteOptions::new().accept_first_offered(),
            handlers::echo(),
        )
        .route("/sink", |session: Session, _ctx| async move {
            let _ = session.closed().await;
            Ok::<_, std::io::Error>(())
        });
    let handle = app.handle();
    let srv = server.clone();
    tokio::spawn(async move { app.serve(srv).await.expect("valid routes") });
    let client = Client::new(ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        ..ClientConfig::default()
    })
    .unwrap();
    Fx {
        server,
        app: handle,
        addr,
        hash: cert.sha256,
        client,
    }
}

impl Fx {
    /// A raw peer from the hostile address with HTTP/3 SETTINGS sent.
    async fn peer(&self) -> Peer {
        let mut p = Peer::connect(self.addr, self.hash).await;
        p.settings(peer::draft02_settings()).await;
        p
    }

    /// The server's side of `peer`'s connection, once the server has it up.
    async fn server_side(&self, peer: &Peer) -> Connection {
        let port = peer.endpoint.local_addr().unwrap().port();
        let find = || {
            self.server.connections().into_iter().find(|c| {
                c.remote_address()
                    .is_some_and(|a| a.port() == port && a.ip() == IpAddr::from(peer::HOSTILE_IP))
            })
        };
        tokio::time::timeout(T, async {
            loop {
                if let Some(c) = find() {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server knows the peer's connection")
    }

    /// A well-behaved client's session on `/echo` does a bidirectional echo and a datagram
    /// echo; returns how long that took.
    async fn healthy(&self) -> Duration {
        let started = Instant::now();
        let url = format!("https://127.0.0.1:{}/echo", self.addr.port());
        let session = tokio::time::timeout(T, self.client.connect(&url))
            .await
            .expect("a well-behaved client connects in time")
            .expect("a well-behaved client gets a session");
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        let data: Vec<u8> = (0..4 * KIB).map(|i| i as u8).collect();
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        let back = tokio::time::timeout(T, recv.read_to_end(1 << 20))
            .await
            .expect("echo in time")
            .unwrap();
        assert_eq!(back, data);
        // Datagrams are unreliable: a few tries.
        let mut echoed = false;
        for _ in 0..20 {
            session.send_datagram(b"ping").unwrap();
            if let Ok(Ok(d)) =
                tokio::time::timeout(Duration::from_millis(250), session.read_datagram()).await
            {
                assert_eq!(&d[..], b"ping");
                echoed = true;
                break;
            }
        }
        assert!(echoed, "no datagram echoed");
        session.close(0, "").unwrap();
        started.elapsed()
    }

    /// Waits until `done` holds for the server's side of `peer` (bounded by [`T`]).
    async fn until(&self, peer: &Peer, done: impl Fn(&Connection) -> bool) -> Connection {
        let conn = self.server_side(peer).await;
        tokio::time::timeout(T, async {
            while !done(&conn) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server got there in time");
        conn
    }
}

/// A session id no CONNECT stream has: a client bidi stream id far beyond those opened.
const NEVER: u64 = 4000;

fn never() -> SessionId {
    SessionId::from_stream_id(NEVER).unwrap()
}

// ---- 1. streams and datagrams for a session that never comes ----

/// draft-ietf-webtrans-http3 §4.6: streams and datagrams that name a session the server
/// has not seen are buffered, up to a limit; "When the number of buffered streams is
/// exceeded, a stream MUST be closed by sending a RESET_STREAM and/or STOP_SENDING with
/// the WT_BUFFERED_STREAM_REJECTED error code", and datagrams beyond the limit are dropped.
/// What is still buffered when `limits.pending_timeout` passes is refused the same way.
#[tokio::test(start_paused = true)]
async fn streams_and_datagrams_for_a_session_that_never_comes() {
    let fx = fixture(|_| {}).await;
    let limits = SessionLimits::default();
    let peer = fx.peer().await;
    let payload = [7u8; 100];

    // More streams than the buffer holds: uni and bidi, each with 100 bytes of payload.
    let mut unis = Vec::new();
    for _ in 0..40 {
        unis.push(peer.wt_uni(never(), &payload).await);
    }
    let mut bidis = Vec::new();
    for _ in 0..8 {
        bidis.push(peer.wt_bidi(never(), &payload).await);
    }
    let total = unis.len() + bidis.len();
    let conn = fx
        .until(&peer, |c| {
            let p = c.protocol();
            p.buffered.pending_streams + p.streams_rejected as usize == total
        })
        .await;
    let p = conn.protocol();
    assert_eq!(p.buffered.pending_streams, limits.max_pending_streams);
    assert_eq!(
        p.streams_rejected as usize,
        total - limits.max_pending_streams
    );

    // Datagrams: the buffer takes `max_pending_datagrams`, the rest are dropped and counted.
    for _ in 0..100 {
        peer.datagram(never(), &payload).unwrap();
    }
    let conn = fx
        .until(&peer, |c| {
            let p = c.protocol();
            p.buffered.pending_datagrams as u64 + p.datagrams_dropped == 100
        })
        .await;
    let p = conn.protocol();
    assert_eq!(p.buffered.pending_datagrams, limits.max_pending_datagrams);
    assert_eq!(
        p.datagrams_dropped,
        100 - limits.max_pending_datagrams as u64
    );
    // What is held: at most the payload of every buffered stream and datagram.
    let cap = (limits.max_pending_streams + limits.max_pending_datagrams) * payload.len();
    assert!(p.buffered.bytes <= cap, "{} > {cap}", p.buffered.bytes);
    eprintln!(
        "scenario 1: {} streams and {} datagrams buffered ({} bytes), {} streams refused",
        p.buffered.pending_streams,
        p.buffered.pending_datagrams,
        p.buffered.bytes,
        p.streams_rejected
    );

    // The refused ones heard WT_BUFFERED_STREAM_REJECTED: STOP_SENDING on every refused
    // stream, and RESET_STREAM too on a bidirectional one.
    let mut refused = 0;
    for s in unis.iter_mut() {
        if let Ok(Some(code)) = tokio::time::timeout(Duration::from_millis(50), s.stopped())
            .await
            .unwrap_or(Ok(None))
        {
            assert_eq!(Code(code.into_inner()), Code::WT_BUFFERED_STREAM_REJECTED);
            refused += 1;
        }
    }
    for (send, recv) in bidis.iter_mut() {
        if let Ok(Some(code)) = tokio::time::timeout(Duration::from_millis(50), send.stopped())
            .await
            .unwrap_or(Ok(None))
        {
            assert_eq!(Code(code.into_inner()), Code::WT_BUFFERED_STREAM_REJECTED);
            assert_eq!(
                peer::reset_code(recv).await,
                Some(Code::WT_BUFFERED_STREAM_REJECTED)
            );
            refused += 1;
        }
    }
    assert_eq!(refused, total - limits.max_pending_streams);

    // Meanwhile a well-behaved client is served.
    fx.healthy().await;

    // The session never comes: after `pending_timeout` every buffered stream is refused
    // with the same code, and the buffered datagrams are dropped.
    tokio::time::sleep(limits.pending_timeout).await;
    let conn = fx
        .until(&peer, |c| c.protocol().buffered.pending_streams == 0)
        .await;
    let p = conn.protocol();
    assert_eq!(p.streams_rejected as usize, total);
    assert_eq!(p.buffered.pending_datagrams, 0);
    assert_eq!(p.datagrams_dropped, 100);
    assert_eq!(p.buffered.bytes, 0);
    for s in unis.iter_mut() {
        assert_eq!(
            peer::stop_code(s).await,
            Some(Code::WT_BUFFERED_STREAM_REJECTED)
        );
    }
    for (send, _) in bidis.iter_mut() {
        assert_eq!(
            peer::stop_code(send).await,
            Some(Code::WT_BUFFERED_STREAM_REJECTED)
        );
    }
    assert!(conn.is_connected(), "buffering is not a connection error");
    fx.healthy().await;
}

/// draft-ietf-webtrans-http3 §4.6 / §4.3: a session id that is not a client-initiated
/// bidirectional stream id can never be a session; a stream naming one is a connection
/// error of type H3_ID_ERROR.
#[tokio::test]
async fn a_session_id_that_cannot_be_a_session_is_h3_id_error() {
    let fx = fixture(|_| {}).await;
    let peer = fx.peer().await;
    let mut s = peer.conn.open_uni().await.unwrap();
    let mut out = Vec::new();
    webtransport::proto::varint::encode(0x54, &mut out);
    webtransport::proto::varint::encode(2, &mut out); // a server-initiated uni stream id
    s.write_all(&out).await.unwrap();
    assert_eq!(peer.closed_with(T).await, Some(Code::H3_ID_ERROR));
    fx.healthy().await;
}
