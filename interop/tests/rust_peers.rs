//! The Rust peers, both ways: wtransport 0.7 and web-transport-quinn 0.13.
//!
//! - (a) their clients against our route server (`interop::start`, routes in `src/lib.rs`);
//! - (b) our client against a small server written here with each crate: `/echo` (bidi
//!   echo, each uni stream's bytes sent back on a new uni stream, datagram echo),
//!   `/server-bidi`, `/close` (closes with a code and reason once the client's first bidi
//!   stream arrived), `/close-watch` (reports the client's close code and reason), and 404
//!   for anything else.
//!
//! Each direction also runs through the impairment relay at 2 % loss each way
//! (`*_through_loss`): the same checks, with the relay between our side and the peer.
//!
//! Both peers speak one session per connection, so every check opens its own connection.
//! Each check prints one matrix line: `ok`, `ok*` (the peer's API cannot do it the way the
//! draft means; the behaviour it does have is asserted instead, see docs/interop.md) or
//! `FAIL`, and the test fails on any `FAIL`. The SETTINGS each side sent and the draft we
//! chose are printed per direction (our driver also logs them at info under
//! `webtransport::engine`). Every network wait is bounded.

use std::future::Future;
use std::time::{Duration, Instant};

use interop::{lossy_path, via};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use webtransport::{CertVerification, Client, ClientConfig, Code, ConnectionError, SessionError};
use webtransport_relay::{Relay, RelayConfig};

/// The bound on every single wait for the network.
const STEP: Duration = Duration::from_secs(10);
/// The bound on one whole check.
const CHECK: Duration = Duration::from_secs(30);
/// The large echo.
const BIG: usize = 1 << 20;

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| format!("{what}: nothing within {STEP:?}"))
}

// ---------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------

struct Cell {
    detail: String,
    quirk: bool,
}

type Check = Result<Cell, String>;

fn pass(detail: impl Into<String>) -> Check {
    Ok(Cell {
        detail: detail.into(),
        quirk: false,
    })
}

/// Passed, but only as far as the peer can: the detail says what differs.
fn quirk(detail: impl Into<String>) -> Check {
    Ok(Cell {
        detail: detail.into(),
        quirk: true,
    })
}

struct Matrix {
    label: &'static str,
    started: Instant,
    failed: Vec<&'static str>,
    rows: usize,
}

impl Matrix {
    fn new(label: &'static str) -> Self {
        interop::init_log();
        println!("== {label}");
        Matrix {
            label,
            started: Instant::now(),
            failed: Vec::new(),
            rows: 0,
        }
    }

    async fn check(&mut self, name: &'static str, f: impl Future<Output = Check>) {
        let t = Instant::now();
        let r = tokio::time::timeout(CHECK, f)
            .await
            .unwrap_or_else(|_| Err(format!("the check took over {CHECK:?}")));
        let ms = t.elapsed().as_millis();
        let (mark, detail) = match r {
            Ok(c) => (if c.quirk { "ok* " } else { "ok  " }, c.detail),
            Err(e) => {
                self.failed.push(name);
                ("FAIL", e)
            }
        };
        println!("[{}] {name:22} {mark} {ms:>5}ms  {detail}", self.label);
        self.rows += 1;
    }

    /// Prints what the relay between the two sides did, if there is one.
    fn relay(&self, relay: Option<&Relay>) {
        if let Some(relay) = relay {
            let s = relay.stats();
            for (way, d) in [("c->s", s.client_to_server), ("s->c", s.server_to_client)] {
                println!(
                    "[{}] relay {way}: {} packets, {} lost, {} forwarded",
                    self.label, d.received_packets, d.dropped_loss, d.forwarded_packets
                );
            }
        }
    }

    fn finish(self) {
        println!(
            "[{}] {} checks in {:.2?}",
            self.label,
            self.rows,
            self.started.elapsed()
        );
        assert!(
            self.failed.is_empty(),
            "[{}] failed: {:?}",
            self.label,
            self.failed
        );
    }
}

// ---------------------------------------------------------------------------------------
// Payloads and stream helpers shared by every peer (all streams are tokio AsyncRead /
// AsyncWrite, and shutdown finishes the stream)
// ---------------------------------------------------------------------------------------

/// Deterministic bytes that no off-by-one or reordering leaves unchanged (xorshift64).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn same(sent: &[u8], got: &[u8]) -> Check {
    if sent == got {
        pass(format!(
            "{} bytes intact (fnv1a {:016x})",
            got.len(),
            fnv1a(got)
        ))
    } else {
        let at = sent.iter().zip(got).position(|(a, b)| a != b);
        Err(format!(
            "sent {} bytes, got {} back; first difference at {at:?}",
            sent.len(),
            got.len()
        ))
    }
}

/// Writes `data` and finishes while reading the echo to its end.
async fn roundtrip(
    mut send: impl AsyncWrite + Unpin,
    recv: impl AsyncRead + Unpin,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    let write = async {
        send.write_all(data)
            .await
            .map_err(|e| format!("write: {e}"))?;
        send.shutdown().await.map_err(|e| format!("finish: {e}"))
    };
    let (w, r) = tokio::join!(write, read_all(recv));
    w?;
    r
}

async fn read_all(mut recv: impl AsyncRead + Unpin) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    bounded("read to the end", recv.read_to_end(&mut got))
        .await?
        .map_err(|e| format!("read: {e}"))?;
    Ok(got)
}

async fn write_and_finish(mut send: impl AsyncWrite + Unpin, data: &[u8]) -> Result<(), String> {
    bounded("write", async {
        send.write_all(data).await?;
        send.shutdown().await
    })
    .await?
    .map_err(|e| format!("write: {e}"))
}

/// Echoes one bidi stream: everything read is written back, then the stream is finished.
async fn copy_back(mut send: impl AsyncWrite + Unpin, mut recv: impl AsyncRead + Unpin) {
    if tokio::io::copy(&mut recv, &mut send).await.is_ok() {
        let _ = send.shutdown().await;
    }
}

/// Sends numbered datagrams until one of them comes back (datagrams may be lost): five
/// tries, 500 ms each. `recv` must be cancel safe.
async fn datagram_roundtrip<F>(
    send: impl Fn(&[u8]) -> Result<(), String>,
    recv: impl Fn() -> F,
) -> Check
where
    F: Future<Output = Result<Vec<u8>, String>>,
{
    let mut sent: Vec<Vec<u8>> = Vec::new();
    for attempt in 1..=5 {
        let msg = format!("datagram {attempt}").into_bytes();
        send(&msg)?;
        sent.push(msg);
        if let Ok(got) = tokio::time::timeout(Duration::from_millis(500), recv()).await {
            let got = got?;
            if !sent.contains(&got) {
                return Err(format!("unexpected datagram {got:?}"));
            }
            return pass(format!(
                "{:?} echoed, {attempt} sent",
                String::from_utf8_lossy(&got)
            ));
        }
    }
    Err("no datagram came back after 5 tries".into())
}

/// The SETTINGS both sides sent and the draft we chose, from our side of a connection.
fn describe(conn: &webtransport::Connection, peer: &str) -> String {
    let p = conn.protocol();
    let draft = p
        .draft
        .map(|d| d.to_string())
        .unwrap_or_else(|| "none".into());
    println!(
        "  {peer} SETTINGS: {}",
        p.peer_settings
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into())
    );
    println!("  our SETTINGS: {}", p.local_settings);
    println!("  draft we chose for {peer}: {draft}");
    format!("draft we chose: {draft}")
}

fn hash_bytes(hex: &str) -> [u8; 32] {
    webtransport::tls::parse_sha256_hex(hex).expect("certificate hash")
}

// ---------------------------------------------------------------------------------------
// (a) their clients against our route server
// ---------------------------------------------------------------------------------------

/// The live server-side connection that carries a session at `path`.
async fn server_conn_at(
    srv: &interop::RouteServer,
    path: &str,
) -> Result<webtransport::Connection, String> {
    bounded(&format!("our server's session at {path}"), async {
        loop {
            let found = srv.server.connections().into_iter().find(|c| {
                !c.is_closed()
                    && c.get_all_sessions()
                        .iter()
                        .any(|s| s.path.as_deref() == Some(path) && s.closed_at.is_none())
            });
            if let Some(c) = found {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Waits until the route server recorded the close of a session at `path`.
async fn route_close_seen(
    srv: &interop::RouteServer,
    path: &str,
) -> Result<(u32, String, bool), String> {
    bounded(
        &format!("our server's record of the close at {path}"),
        async {
            loop {
                let seen = srv.observed.lock().unwrap().closes.clone();
                if let Some((_, code, reason, remote)) = seen.into_iter().find(|(p, ..)| p == path)
                {
                    return (code, reason, remote);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await
}

type WtClientEndpoint = wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>;

async fn wt_connect(
    ep: &WtClientEndpoint,
    port: u16,
    path: &str,
) -> Result<wtransport::Connection, String> {
    bounded(
        &format!("wtransport connect {path}"),
        ep.connect(format!("https://127.0.0.1:{port}{path}")),
    )
    .await?
    .map_err(|e| format!("wtransport connect {path}: {e}"))
}

async fn wt_open_bi(
    conn: &wtransport::Connection,
) -> Result<(wtransport::SendStream, wtransport::RecvStream), String> {
    bounded("wtransport open_bi", async {
        conn.open_bi()
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await?
    .map_err(|e| format!("wtransport open_bi: {e}"))
}

async fn wt_open_uni(conn: &wtransport::Connection) -> Result<wtransport::SendStream, String> {
    bounded("wtransport open_uni", async {
        conn.open_uni()
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await?
    .map_err(|e| format!("wtransport open_uni: {e}"))
}

/// wtransport reports a session's end only as the error of its next operation.
async fn wt_session_end(
    conn: &wtransport::Connection,
) -> Result<wtransport::error::ConnectionError, String> {
    match bounded("wtransport: the session's end", conn.accept_bi()).await? {
        Ok(_) => Err("wtransport: a stream instead of the session's end".into()),
        Err(e) => Ok(e),
    }
}

fn wt_app_close(e: &wtransport::error::ConnectionError) -> Option<(u64, String)> {
    match e {
        wtransport::error::ConnectionError::ApplicationClosed(c) => Some((
            c.code().into_inner(),
            String::from_utf8_lossy(c.reason()).into_owned(),
        )),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wtransport_client_vs_our_server() {
    wtransport_client_vs_ours("wtransport client -> our server", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wtransport_client_vs_our_server_through_loss() {
    wtransport_client_vs_ours(
        "wtransport client -> 2 % loss -> our server",
        Some(lossy_path()),
    )
    .await;
}

async fn wtransport_client_vs_ours(label: &'static str, path: Option<RelayConfig>) {
    let mut m = Matrix::new(label);
    let srv = interop::start(|_| {}).await;
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(hash_bytes(
            &srv.hash_hex,
        ))])
        .build();
    let ep = wtransport::Endpoint::client(cfg).expect("wtransport client endpoint");
    let (port, relay) = via(srv.port, path);

    m.check("session + SETTINGS", async {
        let _conn = wt_connect(&ep, port, "/echo").await?;
        let ours = server_conn_at(&srv, "/echo").await?;
        pass(describe(&ours, "wtransport client"))
    })
    .await;

    m.check("bidi echo", async {
        let conn = wt_connect(&ep, port, "/echo").await?;
        let (send, recv) = wt_open_bi(&conn).await?;
        let data = b"hello from wtransport";
        same(data, &roundtrip(send, recv, data).await?)
    })
    .await;

    m.check("bidi echo 1 MiB", async {
        let conn = wt_connect(&ep, port, "/echo").await?;
        let (send, recv) = wt_open_bi(&conn).await?;
        let data = pattern(BIG, 1);
        same(&data, &roundtrip(send, recv, &data).await?)
    })
    .await;

    m.check("uni round trip", async {
        let conn = wt_connect(&ep, port, "/echo").await?;
        let data = pattern(64 * 1024, 2);
        write_and_finish(wt_open_uni(&conn).await?, &data).await?;
        let recv = bounded("accept_uni", conn.accept_uni())
            .await?
            .map_err(|e| format!("accept_uni: {e}"))?;
        same(&data, &read_all(recv).await?)
    })
    .await;

    m.check("datagram round trip", async {
        let conn = wt_connect(&ep, port, "/echo").await?;
        datagram_roundtrip(
            |d| {
                conn.send_datagram(d)
                    .map_err(|e| format!("send_datagram: {e}"))
            },
            || async {
                let d = conn
                    .receive_datagram()
                    .await
                    .map_err(|e| format!("receive_datagram: {e}"))?;
                Ok(d.payload().to_vec())
            },
        )
        .await
    })
    .await;

    m.check("server-opened bidi", async {
        let conn = wt_connect(&ep, port, "/server-bidi").await?;
        let (send, recv) = bounded("accept_bi", conn.accept_bi())
            .await?
            .map_err(|e| format!("accept_bi: {e}"))?;
        let hello = read_all(recv).await?;
        if hello != b"hello from server" {
            return Err(format!("server sent {:?}", String::from_utf8_lossy(&hello)));
        }
        write_and_finish(send, b"hi from wtransport").await?;
        let end = wt_session_end(&conn).await?;
        match wt_app_close(&end) {
            Some((1, r)) if r == "hi from wtransport" => {
                pass("read the server's hello; close 1 carries our reply")
            }
            _ => Err(format!("session ended with {end:?}")),
        }
    })
    .await;

    m.check("close by server", async {
        let conn = wt_connect(&ep, port, "/close-by-server").await?;
        let end = wt_session_end(&conn).await?;
        match wt_app_close(&end) {
            Some((4000, r)) if r == "server bye" => pass("code 4000, reason \"server bye\""),
            _ => Err(format!("session ended with {end:?}")),
        }
    })
    .await;

    m.check("close by client", async {
        let conn = wt_connect(&ep, port, "/close-watch").await?;
        let ours = server_conn_at(&srv, "/close-watch").await?;
        conn.close(wtransport::VarInt::from_u32(4242), b"bye from wtransport");
        let err = bounded("our server: connection end", ours.wait_closed()).await?;
        // wtransport 0.7's Connection::close is quinn's close: CONNECTION_CLOSE with the
        // code as the HTTP/3 error code, no CLOSE_WEBTRANSPORT_SESSION capsule.
        match err {
            ConnectionError::PeerError { code: Code(4242), ref reason } if reason == "bye from wtransport" => quirk(
                "no close capsule: our server sees a QUIC CONNECTION_CLOSE with code 4242, reason \"bye from wtransport\"",
            ),
            other => Err(format!("our server saw {other:?}")),
        }
    })
    .await;

    m.check("rejected path", async {
        match bounded(
            "wtransport connect /nope",
            ep.connect(format!("https://127.0.0.1:{port}/nope")),
        )
        .await?
        {
            Err(wtransport::error::ConnectingError::SessionRejected) => {
                if srv
                    .observed
                    .lock()
                    .unwrap()
                    .paths
                    .iter()
                    .any(|p| p == "/nope")
                {
                    quirk("rejected; wtransport reports SessionRejected without the status (404)")
                } else {
                    Err("rejected, but our server never saw /nope".into())
                }
            }
            Err(e) => Err(format!("connect failed otherwise: {e}")),
            Ok(_) => Err("session opened at /nope".into()),
        }
    })
    .await;

    m.relay(relay.as_ref());
    m.finish();
}

async fn wtq_connect(
    client: &web_transport_quinn::Client,
    port: u16,
    path: &str,
) -> Result<web_transport_quinn::Session, String> {
    let url =
        url::Url::parse(&format!("https://127.0.0.1:{port}{path}")).map_err(|e| e.to_string())?;
    bounded(
        &format!("web-transport-quinn connect {path}"),
        client.connect(url),
    )
    .await?
    .map_err(|e| format!("web-transport-quinn connect {path}: {e}"))
}

/// The status of a refused web-transport-quinn connect, if it saw one.
fn wtq_status(e: &web_transport_quinn::ClientError) -> Option<u16> {
    use web_transport_quinn::{proto, ClientError, ConnectError};
    match e {
        ClientError::HttpError(ConnectError::ProtoError(proto::ConnectError::WrongStatus(
            Some(s),
        )))
        | ClientError::HttpError(ConnectError::ErrorStatus(s)) => Some(s.as_u16()),
        _ => None,
    }
}

fn wtq_closed(e: &web_transport_quinn::SessionError) -> Option<(u32, &str)> {
    match e {
        web_transport_quinn::SessionError::WebTransportError(
            web_transport_quinn::WebTransportError::Closed(code, reason),
        ) => Some((*code, reason.as_str())),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_transport_quinn_client_vs_our_server() {
    web_transport_quinn_client_vs_ours("web-transport-quinn client -> our server", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_transport_quinn_client_vs_our_server_through_loss() {
    web_transport_quinn_client_vs_ours(
        "web-transport-quinn client -> 2 % loss -> our server",
        Some(lossy_path()),
    )
    .await;
}

async fn web_transport_quinn_client_vs_ours(label: &'static str, path: Option<RelayConfig>) {
    let mut m = Matrix::new(label);
    let srv = interop::start(|_| {}).await;
    let client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![hash_bytes(&srv.hash_hex).to_vec()])
        .expect("web-transport-quinn client");
    let (port, relay) = via(srv.port, path);

    m.check("session + SETTINGS", async {
        let _session = wtq_connect(&client, port, "/echo").await?;
        let ours = server_conn_at(&srv, "/echo").await?;
        pass(describe(&ours, "web-transport-quinn client"))
    })
    .await;

    m.check("bidi echo", async {
        let session = wtq_connect(&client, port, "/echo").await?;
        let (send, recv) = bounded("open_bi", session.open_bi())
            .await?
            .map_err(|e| format!("open_bi: {e}"))?;
        let data = b"hello from web-transport-quinn";
        same(data, &roundtrip(send, recv, data).await?)
    })
    .await;

    m.check("bidi echo 1 MiB", async {
        let session = wtq_connect(&client, port, "/echo").await?;
        let (send, recv) = bounded("open_bi", session.open_bi())
            .await?
            .map_err(|e| format!("open_bi: {e}"))?;
        let data = pattern(BIG, 3);
        same(&data, &roundtrip(send, recv, &data).await?)
    })
    .await;

    m.check("uni round trip", async {
        let session = wtq_connect(&client, port, "/echo").await?;
        let data = pattern(64 * 1024, 4);
        let send = bounded("open_uni", session.open_uni())
            .await?
            .map_err(|e| format!("open_uni: {e}"))?;
        write_and_finish(send, &data).await?;
        let recv = bounded("accept_uni", session.accept_uni())
            .await?
            .map_err(|e| format!("accept_uni: {e}"))?;
        same(&data, &read_all(recv).await?)
    })
    .await;

    m.check("datagram round trip", async {
        let session = wtq_connect(&client, port, "/echo").await?;
        datagram_roundtrip(
            |d| {
                session
                    .send_datagram(bytes::Bytes::copy_from_slice(d))
                    .map_err(|e| format!("send_datagram: {e}"))
            },
            || async {
                let d = session
                    .read_datagram()
                    .await
                    .map_err(|e| format!("read_datagram: {e}"))?;
                Ok(d.to_vec())
            },
        )
        .await
    })
    .await;

    m.check("datagram, session 4", async {
        // web-transport-quinn writes and expects the session id in front of a datagram
        // where RFC 9297 puts the quarter stream id; they agree only for session 0. Take
        // QUIC stream 0 first (never written, so the server never hears of it) to put its
        // CONNECT on stream 4: quarter stream id 1.
        use web_transport_quinn::quinn;
        let cfg = ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![hash_bytes(
                &srv.hash_hex,
            )]),
            ..ClientConfig::default()
        };
        let quic = webtransport::tls::quinn_client_config(&cfg).map_err(|e| e.to_string())?;
        let ep =
            quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).map_err(|e| e.to_string())?;
        let connecting = ep
            .connect_with(quic, ([127, 0, 0, 1], port).into(), "localhost")
            .map_err(|e| e.to_string())?;
        let conn = bounded("QUIC handshake", connecting)
            .await?
            .map_err(|e| e.to_string())?;
        let _stream0 = conn.open_bi().await.map_err(|e| e.to_string())?;
        let url = url::Url::parse(&format!("https://127.0.0.1:{port}/echo"))
            .map_err(|e| e.to_string())?;
        let session = bounded(
            "connect",
            web_transport_quinn::Session::connect(conn.clone(), url),
        )
        .await?
        .map_err(|e| format!("connect: {e}"))?;
        // Its datagram carries 4 (our server reads quarter stream id 4: session 16).
        session
            .send_datagram(bytes::Bytes::from_static(b"from web-transport-quinn"))
            .map_err(|e| format!("send_datagram: {e}"))?;
        if let Ok(d) = tokio::time::timeout(Duration::from_secs(1), session.read_datagram()).await {
            return Err(format!("an answer came back: {d:?}"));
        }
        // A datagram with the right quarter stream id, sent on its connection: our echo
        // carries 1 too, which its reader refuses. Sent again until an answer comes, as
        // `datagram_roundtrip` does: either may be lost on the lossy runs.
        for attempt in 1..=5 {
            conn.send_datagram(bytes::Bytes::from_static(b"\x01from the side"))
                .map_err(|e| format!("raw send_datagram: {e}"))?;
            let Ok(answer) =
                tokio::time::timeout(Duration::from_millis(500), session.read_datagram()).await
            else {
                continue;
            };
            return match answer {
                Err(web_transport_quinn::SessionError::WebTransportError(
                    web_transport_quinn::WebTransportError::UnknownSession,
                )) => quirk(format!(
                    "session id instead of quarter stream id: its datagram (prefix 4) got no \
                     echo; our echo (prefix 1) failed its read_datagram with UnknownSession \
                     ({attempt} sent)"
                )),
                other => Err(format!("read_datagram gave {other:?}")),
            };
        }
        Err("no datagram came back after 5 tries".into())
    })
    .await;

    m.check("server-opened bidi", async {
        let session = wtq_connect(&client, port, "/server-bidi").await?;
        let (send, recv) = bounded("accept_bi", session.accept_bi())
            .await?
            .map_err(|e| format!("accept_bi: {e}"))?;
        let hello = read_all(recv).await?;
        if hello != b"hello from server" {
            return Err(format!("server sent {:?}", String::from_utf8_lossy(&hello)));
        }
        write_and_finish(send, b"hi from web-transport-quinn").await?;
        let end = bounded("closed", session.closed()).await?;
        match wtq_closed(&end) {
            Some((1, "hi from web-transport-quinn")) => {
                pass("read the server's hello; close 1 carries our reply")
            }
            _ => Err(format!("session ended with {end:?}")),
        }
    })
    .await;

    m.check("close by server", async {
        let session = wtq_connect(&client, port, "/close-by-server").await?;
        let end = bounded("closed", session.closed()).await?;
        match wtq_closed(&end) {
            Some((4000, "server bye")) => pass("code 4000, reason \"server bye\""),
            _ => Err(format!("session ended with {end:?}")),
        }
    })
    .await;

    m.check("close by client", async {
        let session = wtq_connect(&client, port, "/close-watch").await?;
        server_conn_at(&srv, "/close-watch").await?;
        session.close(4242, b"bye from web-transport-quinn");
        match route_close_seen(&srv, "/close-watch").await? {
            (4242, reason, true) if reason == "bye from web-transport-quinn" => {
                pass("our server saw code 4242, reason \"bye from web-transport-quinn\"")
            }
            other => Err(format!("our server saw {other:?}")),
        }
    })
    .await;

    m.check("rejected path", async {
        let url = url::Url::parse(&format!("https://127.0.0.1:{port}/nope"))
            .map_err(|e| e.to_string())?;
        match bounded("connect /nope", client.connect(url)).await? {
            // Its ConnectError::ErrorStatus is never built: the response parser already
            // fails on a status other than 200.
            Err(e) if wtq_status(&e) == Some(404) => pass("status 404"),
            Err(e) => Err(format!("connect failed otherwise: {e}")),
            Ok(_) => Err("session opened at /nope".into()),
        }
    })
    .await;

    m.relay(relay.as_ref());
    m.finish();
}

// ---------------------------------------------------------------------------------------
// (b) our client against their servers
// ---------------------------------------------------------------------------------------

/// How a peer server ends a session it closes itself.
#[derive(Clone, Copy, PartialEq)]
enum PeerClose {
    /// CLOSE_WEBTRANSPORT_SESSION on the CONNECT stream, as the draft says.
    Capsule,
    /// QUIC CONNECTION_CLOSE with the code as the HTTP/3 error code (wtransport 0.7).
    Connection,
}

/// How a peer server's refusal reaches the client.
#[derive(Clone, Copy, PartialEq)]
enum PeerReject {
    /// The status always arrives: wtransport 0.7 waits until its response is acknowledged.
    Delivered,
    /// web-transport-quinn 0.13: `Request::reject` writes the status and finishes the
    /// stream without waiting, and drops the request's control stream (a FIN there is
    /// H3_CLOSED_CRITICAL_STREAM); an application that then drops the request's connection
    /// closes it with code 0 at once. The 404 rarely arrives, to any client.
    MayBeLost,
}

/// A peer's server on 127.0.0.1 with a certificate of ours.
struct PeerServer {
    name: &'static str,
    port: u16,
    hash: [u8; 32],
    close: PeerClose,
    reject: PeerReject,
    /// What `/close-watch` saw of our close: (code, reason), or what happened instead.
    close_watch: mpsc::UnboundedReceiver<Result<(u64, String), String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn peer_reason(name: &str) -> String {
    format!("bye from the {name} server")
}

async fn wtransport_server() -> PeerServer {
    let cert =
        webtransport::generate_self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
    let identity = wtransport::Identity::new(
        wtransport::tls::CertificateChain::single(
            wtransport::tls::Certificate::from_der(cert.cert_der.to_vec())
                .expect("certificate for wtransport"),
        ),
        wtransport::tls::PrivateKey::from_der_pkcs8(cert.key_der.secret_pkcs8_der().to_vec()),
    );
    let cfg = wtransport::ServerConfig::builder()
        .with_bind_address("127.0.0.1:0".parse().unwrap())
        .with_identity(identity)
        .build();
    let ep = wtransport::Endpoint::server(cfg).expect("wtransport server endpoint");
    let port = ep.local_addr().expect("local address").port();
    let (tx, close_watch) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let incoming = ep.accept().await;
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(CHECK, wt_route(incoming, tx)).await {
                    Ok(Err(e)) => eprintln!("  wtransport server: {e}"),
                    Err(_) => eprintln!("  wtransport server: a connection outlived {CHECK:?}"),
                    Ok(Ok(())) => {}
                }
            });
        }
    });
    PeerServer {
        name: "wtransport",
        port,
        hash: webtransport::tls::certificate_sha256(&cert.cert_der),
        close: PeerClose::Connection,
        reject: PeerReject::Delivered,
        close_watch,
        task,
    }
}

async fn wt_route(
    incoming: wtransport::endpoint::IncomingSession,
    close_watch: mpsc::UnboundedSender<Result<(u64, String), String>>,
) -> Result<(), String> {
    let req = incoming.await.map_err(|e| e.to_string())?;
    let path = req.path().to_owned();
    if !["/echo", "/server-bidi", "/close", "/close-watch"].contains(&path.as_str()) {
        req.not_found().await;
        return Ok(());
    }
    let conn = req.accept().await.map_err(|e| e.to_string())?;
    match path.as_str() {
        "/echo" => {
            let bi = async {
                while let Ok((send, recv)) = conn.accept_bi().await {
                    tokio::spawn(copy_back(send, recv));
                }
            };
            let uni = async {
                while let Ok(recv) = conn.accept_uni().await {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let data = read_all(recv).await?;
                        write_and_finish(wt_open_uni(&conn).await?, &data).await
                    });
                }
            };
            let dg = async {
                while let Ok(d) = conn.receive_datagram().await {
                    let _ = conn.send_datagram(d.payload());
                }
            };
            tokio::join!(bi, uni, dg);
        }
        "/server-bidi" => {
            let (send, recv) = wt_open_bi(&conn).await?;
            write_and_finish(send, b"hello from wtransport").await?;
            let reply = read_all(recv).await?;
            conn.close(wtransport::VarInt::from_u32(1), &reply);
        }
        "/close" => {
            // Close only once the client's first stream shows it has our 200: quinn's close
            // would otherwise discard the response still in flight.
            let (_send, recv) = bounded("accept_bi", conn.accept_bi())
                .await?
                .map_err(|e| e.to_string())?;
            read_all(recv).await?;
            conn.close(
                wtransport::VarInt::from_u32(4001),
                peer_reason("wtransport").as_bytes(),
            );
        }
        _ => {
            let seen = match wt_session_end(&conn).await {
                Ok(e) => wt_app_close(&e).ok_or_else(|| format!("the session ended with {e:?}")),
                Err(e) => Err(e),
            };
            let _ = close_watch.send(seen);
        }
    }
    let _ = bounded("connection end", conn.closed()).await;
    Ok(())
}

async fn web_transport_quinn_server() -> PeerServer {
    let cert =
        webtransport::generate_self_signed(&["localhost", "127.0.0.1"]).expect("certificate");
    let mut server = web_transport_quinn::ServerBuilder::new()
        .with_addr("127.0.0.1:0".parse().unwrap())
        .with_certificate(vec![cert.cert_der.clone()], cert.private_key())
        .expect("web-transport-quinn server");
    let port = server.local_addr().expect("local address").port();
    let (tx, close_watch) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(req) = server.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(CHECK, wtq_route(req, tx)).await {
                    Ok(Err(e)) => eprintln!("  web-transport-quinn server: {e}"),
                    Err(_) => {
                        eprintln!("  web-transport-quinn server: a connection outlived {CHECK:?}")
                    }
                    Ok(Ok(())) => {}
                }
            });
        }
    });
    PeerServer {
        name: "web-transport-quinn",
        port,
        hash: webtransport::tls::certificate_sha256(&cert.cert_der),
        close: PeerClose::Capsule,
        reject: PeerReject::MayBeLost,
        close_watch,
        task,
    }
}

async fn wtq_route(
    req: web_transport_quinn::Request,
    close_watch: mpsc::UnboundedSender<Result<(u64, String), String>>,
) -> Result<(), String> {
    let path = req.url.path().to_owned();
    if !["/echo", "/server-bidi", "/close", "/close-watch"].contains(&path.as_str()) {
        return req
            .reject(web_transport_quinn::http::StatusCode::NOT_FOUND)
            .await
            .map_err(|e| e.to_string());
    }
    let session = req.ok().await.map_err(|e| e.to_string())?;
    match path.as_str() {
        "/echo" => {
            let bi = async {
                while let Ok((send, recv)) = session.accept_bi().await {
                    tokio::spawn(copy_back(send, recv));
                }
            };
            let uni = async {
                while let Ok(recv) = session.accept_uni().await {
                    let session = session.clone();
                    tokio::spawn(async move {
                        let data = read_all(recv).await?;
                        let send = session.open_uni().await.map_err(|e| e.to_string())?;
                        write_and_finish(send, &data).await
                    });
                }
            };
            let dg = async {
                while let Ok(d) = session.read_datagram().await {
                    let _ = session.send_datagram(d);
                }
            };
            tokio::join!(bi, uni, dg);
        }
        "/server-bidi" => {
            let (send, recv) = bounded("open_bi", session.open_bi())
                .await?
                .map_err(|e| e.to_string())?;
            write_and_finish(send, b"hello from web-transport-quinn").await?;
            let reply = read_all(recv).await?;
            session.close(1, &reply);
        }
        "/close" => {
            let (_send, recv) = bounded("accept_bi", session.accept_bi())
                .await?
                .map_err(|e| e.to_string())?;
            read_all(recv).await?;
            session.close(4001, peer_reason("web-transport-quinn").as_bytes());
        }
        _ => {
            let end = bounded("closed", session.closed()).await?;
            let seen = wtq_closed(&end)
                .map(|(code, reason)| (u64::from(code), reason.to_owned()))
                .ok_or_else(|| format!("the session ended with {end:?}"));
            let _ = close_watch.send(seen);
        }
    }
    let _ = bounded("session end", session.closed()).await;
    Ok(())
}

async fn our_connect(
    client: &Client,
    port: u16,
    path: &str,
) -> Result<webtransport::Session, String> {
    bounded(
        &format!("our connect {path}"),
        client.connect(&format!("https://127.0.0.1:{port}{path}")),
    )
    .await?
    .map_err(|e| format!("our connect {path}: {e}"))
}

/// What our session's end looks like when the peer closes with `code` and `reason`.
fn peer_close_seen(
    peer: &PeerServer,
    end: Result<webtransport::CloseInfo, SessionError>,
    code: u32,
    reason: &str,
) -> Check {
    match (peer.close, end) {
        (PeerClose::Capsule, Ok(c)) if c.code == code && c.reason == reason && c.remote => {
            pass(format!("code {code}, reason {reason:?}"))
        }
        (
            PeerClose::Connection,
            Err(SessionError::Connection(ConnectionError::PeerError { code: Code(c), reason: r })),
        ) if c == u64::from(code) && r == reason => quirk(format!(
            "no close capsule: a QUIC CONNECTION_CLOSE with code {code}, reason {reason:?}; our session ends with that connection error"
        )),
        (_, other) => Err(format!("our session ended with {other:?}")),
    }
}

/// How a refusal from a web-transport-quinn server gets lost (see [`PeerReject`]).
fn lost_rejection(e: &ConnectionError) -> Option<&'static str> {
    match e {
        ConnectionError::ApplicationClosed { code: Code(0), .. } => {
            Some("the server closed the connection (code 0) first")
        }
        ConnectionError::Protocol(e) if e.code() == Code::H3_CLOSED_CRITICAL_STREAM => {
            Some("the server closed its control stream first (H3_CLOSED_CRITICAL_STREAM)")
        }
        _ => None,
    }
}

async fn our_client_vs(mut peer: PeerServer, label: &'static str, path: Option<RelayConfig>) {
    let mut m = Matrix::new(label);
    let client = Client::new(ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![peer.hash]),
        ..ClientConfig::default()
    })
    .expect("our client");
    let (port, relay) = via(peer.port, path);
    let name = peer.name;

    m.check("session + SETTINGS", async {
        let session = our_connect(&client, port, "/echo").await?;
        pass(describe(session.connection(), &format!("{name} server")))
    })
    .await;

    m.check("bidi echo", async {
        let session = our_connect(&client, port, "/echo").await?;
        let (send, recv) = bounded("open_bi", session.open_bi())
            .await?
            .map_err(|e| format!("open_bi: {e}"))?;
        let data = b"hello from webtransport-rs";
        same(data, &roundtrip(send, recv, data).await?)
    })
    .await;

    m.check("bidi echo 1 MiB", async {
        let session = our_connect(&client, port, "/echo").await?;
        let (send, recv) = bounded("open_bi", session.open_bi())
            .await?
            .map_err(|e| format!("open_bi: {e}"))?;
        let data = pattern(BIG, 5);
        same(&data, &roundtrip(send, recv, &data).await?)
    })
    .await;

    m.check("uni round trip", async {
        let session = our_connect(&client, port, "/echo").await?;
        let data = pattern(64 * 1024, 6);
        let send = bounded("open_uni", session.open_uni())
            .await?
            .map_err(|e| format!("open_uni: {e}"))?;
        write_and_finish(send, &data).await?;
        let recv = bounded("accept_uni", session.accept_uni())
            .await?
            .map_err(|e| format!("accept_uni: {e}"))?;
        same(&data, &read_all(recv).await?)
    })
    .await;

    m.check("datagram round trip", async {
        let session = our_connect(&client, port, "/echo").await?;
        datagram_roundtrip(
            |d| {
                session
                    .send_datagram(d)
                    .map_err(|e| format!("send_datagram: {e}"))
            },
            || async {
                let d = session
                    .read_datagram()
                    .await
                    .map_err(|e| format!("read_datagram: {e}"))?;
                Ok(d.to_vec())
            },
        )
        .await
    })
    .await;

    m.check("server-opened bidi", async {
        let session = our_connect(&client, port, "/server-bidi").await?;
        let (send, recv) = bounded("accept_bi", session.accept_bi())
            .await?
            .map_err(|e| format!("accept_bi: {e}"))?;
        let hello = read_all(recv).await?;
        let expected = format!("hello from {name}");
        if hello != expected.as_bytes() {
            return Err(format!("server sent {:?}", String::from_utf8_lossy(&hello)));
        }
        write_and_finish(send, b"hi from webtransport-rs").await?;
        let end = bounded("closed", session.closed()).await?;
        peer_close_seen(&peer, end, 1, "hi from webtransport-rs")
    })
    .await;

    m.check("close by server", async {
        let session = our_connect(&client, port, "/close").await?;
        let (send, _recv) = bounded("open_bi", session.open_bi())
            .await?
            .map_err(|e| format!("open_bi: {e}"))?;
        write_and_finish(send, b"ping").await?;
        let end = bounded("closed", session.closed()).await?;
        peer_close_seen(&peer, end, 4001, &peer_reason(name))
    })
    .await;

    m.check("close by client", async {
        let session = our_connect(&client, port, "/close-watch").await?;
        session
            .close(4243, "bye from webtransport-rs")
            .map_err(|e| format!("close: {e}"))?;
        let seen = bounded("the peer's report", peer.close_watch.recv())
            .await?
            .ok_or("the peer server is gone")??;
        drop(session);
        match seen {
            (4243, reason) if reason == "bye from webtransport-rs" => {
                pass(format!("{name} saw code 4243, reason {reason:?}"))
            }
            other => Err(format!("{name} saw {other:?}")),
        }
    })
    .await;

    m.check("rejected path", async {
        match bounded(
            "connect /nope",
            client.connect(&format!("https://127.0.0.1:{port}/nope")),
        )
        .await?
        {
            Err(webtransport::ConnectError::Rejected(404)) => pass("status 404"),
            Err(webtransport::ConnectError::ConnectionLost(e))
                if peer.reject == PeerReject::MayBeLost =>
            {
                match lost_rejection(&e) {
                    Some(how) => quirk(format!("no session, but the 404 was lost: {how}")),
                    None => Err(format!("connect failed otherwise: {e}")),
                }
            }
            Err(e) => Err(format!("connect failed otherwise: {e}")),
            Ok(_) => Err("session opened at /nope".into()),
        }
    })
    .await;

    m.relay(relay.as_ref());
    m.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_vs_wtransport_server() {
    our_client_vs(
        wtransport_server().await,
        "our client -> wtransport server",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_vs_wtransport_server_through_loss() {
    our_client_vs(
        wtransport_server().await,
        "our client -> 2 % loss -> wtransport server",
        Some(lossy_path()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_vs_web_transport_quinn_server() {
    our_client_vs(
        web_transport_quinn_server().await,
        "our client -> web-transport-quinn server",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_vs_web_transport_quinn_server_through_loss() {
    our_client_vs(
        web_transport_quinn_server().await,
        "our client -> 2 % loss -> web-transport-quinn server",
        Some(lossy_path()),
    )
    .await;
}

/// Tells what several tries of one refused connect gave.
#[derive(Default)]
struct Tally(std::collections::BTreeMap<String, usize>);

impl Tally {
    fn add(&mut self, outcome: String) {
        *self.0.entry(outcome).or_default() += 1;
    }

    /// `ok` when every try saw the status, `ok*` with the outcomes otherwise.
    fn report(self, status: &str) -> Check {
        let tries: usize = self.0.values().sum();
        if self.0.len() == 1 && self.0.contains_key(status) {
            return pass(format!("{tries}/{tries} saw {status}"));
        }
        let outcomes: Vec<String> = self.0.iter().map(|(o, n)| format!("{n}x {o}")).collect();
        quirk(outcomes.join("; "))
    }
}

/// The proof that a lost 404 from a web-transport-quinn server is the server's doing: its
/// own client and wtransport's lose it too. Outcomes vary from run to run; every client
/// must refuse the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_transport_quinn_reject_seen_by_each_client() {
    const TRIES: usize = 8;
    let mut m = Matrix::new("web-transport-quinn server rejects /nope");
    let peer = web_transport_quinn_server().await;
    let url = format!("https://127.0.0.1:{}/nope", peer.port);

    m.check("web-transport-quinn client", async {
        let client = web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![peer.hash.to_vec()])
            .map_err(|e| e.to_string())?;
        let mut tally = Tally::default();
        for _ in 0..TRIES {
            let target = url::Url::parse(&url).map_err(|e| e.to_string())?;
            match bounded("connect", client.connect(target)).await? {
                Ok(_) => return Err("session opened at /nope".into()),
                Err(e) => tally.add(match wtq_status(&e) {
                    Some(s) => format!("status {s}"),
                    None => e.to_string(),
                }),
            }
        }
        tally.report("status 404")
    })
    .await;

    m.check("wtransport client", async {
        let cfg = wtransport::ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(peer.hash)])
            .build();
        let ep = wtransport::Endpoint::client(cfg).map_err(|e| e.to_string())?;
        let mut tally = Tally::default();
        for _ in 0..TRIES {
            match bounded("connect", ep.connect(url.clone())).await? {
                Ok(_) => return Err("session opened at /nope".into()),
                Err(wtransport::error::ConnectingError::SessionRejected) => {
                    tally.add("rejected".into())
                }
                Err(e) => tally.add(e.to_string()),
            }
        }
        tally.report("rejected")
    })
    .await;

    m.check("our client", async {
        let client = Client::new(ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![peer.hash]),
            ..ClientConfig::default()
        })
        .map_err(|e| e.to_string())?;
        let mut tally = Tally::default();
        for _ in 0..TRIES {
            match bounded("connect", client.connect(&url)).await? {
                Ok(_) => return Err("session opened at /nope".into()),
                Err(webtransport::ConnectError::Rejected(s)) => tally.add(format!("status {s}")),
                Err(webtransport::ConnectError::ConnectionLost(e))
                    if lost_rejection(&e).is_some() =>
                {
                    tally.add(e.to_string())
                }
                Err(e) => return Err(format!("connect failed otherwise: {e}")),
            }
        }
        tally.report("status 404")
    })
    .await;

    m.finish();
}
