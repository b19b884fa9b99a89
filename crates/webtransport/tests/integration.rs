//! Integration tests on real UDP sockets (127.0.0.1:0): a `Server` and `Client`s of this
//! crate talking through quinn.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use webtransport::app::{handlers, RouteOptions, ServerApp};
use webtransport::*;

const T: Duration = Duration::from_secs(10);

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct Fixture {
    server: Arc<Server>,
    addr: SocketAddr,
    hash: [u8; 32],
}

fn server_config(cert: &SelfSignedCertificate) -> ServerConfig {
    ServerConfig {
        bind: vec!["127.0.0.1:0".parse().unwrap()],
        certificate: cert.to_certificate_source(),
        ..ServerConfig::default()
    }
}

async fn fixture_with(f: impl FnOnce(&mut ServerConfig)) -> Fixture {
    init_log();
    let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let mut cfg = server_config(&cert);
    f(&mut cfg);
    let server = Arc::new(Server::bind(cfg).await.unwrap());
    let addr = server.local_addrs()[0];
    Fixture {
        server,
        addr,
        hash: cert.sha256,
    }
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

impl Fixture {
    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![self.hash]),
            ..ClientConfig::default()
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    async fn connect(&self, path: &str) -> Result<Session, ConnectError> {
        let client = Client::new(self.client_config()).unwrap();
        tokio::time::timeout(T, client.connect(&self.url(path)))
            .await
            .expect("connect timed out")
    }

    /// A CONNECT request for `path` on this server, for another session on a connection
    /// that has one (`Connection::open_session`).
    fn request(&self, path: &str) -> webtransport::proto::headers::ConnectRequest {
        webtransport::proto::headers::ConnectRequest {
            authority: format!("127.0.0.1:{}", self.addr.port()),
            path: path.into(),
            ..Default::default()
        }
    }

    /// A session seen from both ends: the client's, and the server's (accepted here,
    /// with no application behind the server).
    async fn session_pair(&self, path: &str) -> (Session, Session) {
        let client = Client::new(self.client_config()).unwrap();
        let url = self.url(path);
        let connect = tokio::spawn(async move { client.connect(&url).await });
        let request = tokio::time::timeout(T, self.server.accept()).await.unwrap();
        let server = request.unwrap().accept().unwrap();
        (connect.await.unwrap().unwrap(), server)
    }

    /// Another session on `client`'s connection, for `path`, seen from both ends as
    /// [`Fixture::session_pair`] gives them.
    async fn second_session(&self, client: &Session, path: &str) -> (Session, Session) {
        let conn = client.connection().clone();
        let req = self.request(path);
        let open = tokio::spawn(async move { conn.open_session(req).await });
        let request = tokio::time::timeout(T, self.server.accept()).await.unwrap();
        let server = request.unwrap().accept().unwrap();
        (open.await.unwrap().unwrap(), server)
    }

    /// Serves `/echo` like `wt serve` does: a `ServerApp` with the echo route (accepting
    /// the first subprotocol offered) and its default limits (100 sessions per address),
    /// every other path 404. Ends when the server shuts down.
    fn spawn_echo(&self) -> tokio::task::JoinHandle<()> {
        let app = ServerApp::new().route_with(
            "/echo",
            RouteOptions::new().accept_first_offered(),
            handlers::echo(),
        );
        let server = self.server.clone();
        tokio::spawn(async move { app.serve(server).await.expect("valid routes") })
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn checksum(data: &[u8]) -> u64 {
    // FNV-1a: enough to tell a reordered or corrupted byte.
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

async fn bidi_echo(session: &Session, data: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let payload = data.to_vec();
    let writer = tokio::spawn(async move {
        send.write_all(&payload).await.unwrap();
        send.finish().unwrap();
    });
    let back = recv.read_to_end(64 << 20).await.unwrap();
    writer.await.unwrap();
    back
}

/// `0.0.0.0:P` and `[::]:P` together, the usual way to serve both families on one port:
/// Linux makes `[::]` dual-stack, so the server binds it IPv6-only when the same port is
/// also bound for IPv4; both families then reach the server.
#[tokio::test]
async fn one_port_on_ipv4_and_ipv6_wildcards() {
    init_log();
    let cert = generate_self_signed(&["localhost", "127.0.0.1", "::1"]).unwrap();
    // A port free on both families (another process may take it in between: try a few).
    let mut server = None;
    for _ in 0..5 {
        let port = std::net::UdpSocket::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = ServerConfig {
            bind: vec![
                format!("0.0.0.0:{port}").parse().unwrap(),
                format!("[::]:{port}").parse().unwrap(),
            ],
            ..server_config(&cert)
        };
        match Server::bind(cfg).await {
            Ok(s) => {
                server = Some(s);
                break;
            }
            Err(ServerError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(e) => panic!("bind failed: {e:?}"),
        }
    }
    let fx = Fixture {
        server: Arc::new(server.expect("a free port in five tries")),
        addr: "127.0.0.1:0".parse().unwrap(),
        hash: cert.sha256,
    };
    let port = fx.server.local_addrs()[0].port();
    assert_eq!(fx.server.local_addrs()[1].port(), port);
    let _echo = fx.spawn_echo();
    for host in ["127.0.0.1", "[::1]"] {
        let client = Client::new(fx.client_config()).unwrap();
        let url = format!("https://{host}:{port}/echo");
        let s = tokio::time::timeout(T, client.connect(&url))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(bidi_echo(&s, host.as_bytes()).await, host.as_bytes());
        s.close(0, "done").unwrap();
    }
}

/// A task reading `session`'s next datagram.
fn spawn_datagram_read(
    session: &Session,
) -> tokio::task::JoinHandle<Result<bytes::Bytes, SessionError>> {
    let s = session.clone();
    tokio::spawn(async move { s.read_datagram().await })
}

/// Sends a datagram from `from` with `send` until `to` reads one (loopback rarely loses
/// one) and returns what it read.
async fn datagram_through(
    from: &Session,
    to: &Session,
    mut send: impl FnMut(&Session) -> Result<(), DatagramError>,
) -> bytes::Bytes {
    for _ in 0..20 {
        send(from).unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), to.read_datagram()).await {
            return r.unwrap();
        }
    }
    panic!("no datagram arrived");
}

#[tokio::test]
async fn bidi_uni_and_datagram_echo() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    assert_eq!(bidi_echo(&s, b"hello").await, b"hello");

    let mut u = s.open_uni().await.unwrap();
    u.write_all(b"uni payload").await.unwrap();
    u.finish().unwrap();
    let mut back = tokio::time::timeout(T, s.accept_uni())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.read_to_end(1024).await.unwrap(), b"uni payload");

    let max = s.max_datagram_size().unwrap();
    assert!(max >= 1000, "max datagram {max}");
    let got = datagram_through(&s, &s, |s| s.send_datagram(b"dgram")).await;
    assert_eq!(&got[..], b"dgram");
    assert!(s.stats().datagrams_sent >= 1 && s.stats().datagrams_received >= 1);
}

/// draft-ietf-webtrans-http3-17 on real sockets: a client configured to offer draft-17
/// alone (SETTINGS_WT_ENABLED 0x20b8933b, docs/interop.md) reaches our default server, which
/// offers every draft, and both ends' protocol views say draft-17 (§7.1: the highest
/// version both support). A client offering draft-17 to a server held to draft-15/16
/// speaks draft-15/16 with it instead.
#[tokio::test]
async fn draft17_client_reaches_our_server() {
    use webtransport::proto::settings::{id, WtDraft, WtDrafts};

    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let config = ClientConfig {
        drafts: WtDrafts::only(WtDraft::Draft17),
        ..fx.client_config()
    };
    let client = Client::new(config).unwrap();
    let s = tokio::time::timeout(T, client.connect(&fx.url("/echo")))
        .await
        .unwrap()
        .unwrap();
    let ours = s.connection().protocol();
    assert_eq!(ours.draft, Some(WtDraft::Draft17));
    assert_eq!(ours.local_settings.get(id::WT_ENABLED_DRAFT17), Some(1));
    assert_eq!(ours.local_settings.get(id::WT_ENABLED), None);
    let peer = ours.peer_settings.expect("server SETTINGS");
    assert_eq!(peer.get(id::WT_ENABLED_DRAFT17), Some(1));
    assert_eq!(
        peer.get(id::WT_ENABLED),
        Some(1),
        "the server offers 15/16 too"
    );
    assert_eq!(bidi_echo(&s, b"draft-17").await, b"draft-17");
    let server_side = fx.server.connections();
    assert_eq!(server_side.len(), 1);
    assert_eq!(server_side[0].protocol().draft, Some(WtDraft::Draft17));

    // The same client against a server that stops at draft-15/16.
    let fx16 = fixture_with(|c| c.drafts = WtDrafts::ALL.without(WtDraft::Draft17)).await;
    let _echo16 = fx16.spawn_echo();
    let client = Client::new(ClientConfig {
        drafts: WtDrafts::ALL,
        ..fx16.client_config()
    })
    .unwrap();
    let s = tokio::time::timeout(T, client.connect(&fx16.url("/echo")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.connection().protocol().draft, Some(WtDraft::Draft15));
    assert_eq!(bidi_echo(&s, b"draft-15").await, b"draft-15");
}

#[tokio::test]
async fn sixteen_mib_with_checksum() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    let data = pattern(16 << 20, 7);
    let back = bidi_echo(&s, &data).await;
    assert_eq!(back.len(), data.len());
    assert_eq!(checksum(&back), checksum(&data));
}

#[tokio::test]
async fn thousand_streams_on_one_session() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let s = s.clone();
        tasks.spawn(async move {
            let msg = format!("stream {i}");
            let back = bidi_echo(&s, msg.as_bytes()).await;
            assert_eq!(back, msg.as_bytes());
        });
        // Keep at most ~64 in flight, well under the server's stream limit.
        if tasks.len() >= 64 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(s.stats().streams_opened_bi, 1000);
}

#[tokio::test]
async fn hundred_concurrent_connections() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let fx = Arc::new(fx);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100u32 {
        let fx = fx.clone();
        tasks.spawn(async move {
            let s = fx.connect("/echo").await.unwrap();
            let msg = format!("conn {i}");
            assert_eq!(bidi_echo(&s, msg.as_bytes()).await, msg.as_bytes());
            s
        });
    }
    let mut sessions = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sessions.push(r.unwrap());
    }
    assert_eq!(sessions.len(), 100);
    assert!(fx.server.connections().len() >= 100);
}

#[tokio::test]
async fn close_code_and_reason_both_directions() {
    // Client closes: the server sees the code and reason.
    let fx = fixture().await;
    let server = fx.server.clone();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        s.closed().await
    });
    let c = fx.connect("/x").await.unwrap();
    c.close(4242, "client says bye").unwrap();
    let seen = tokio::time::timeout(T, srv)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        CloseInfo {
            code: 4242,
            reason: "client says bye".into(),
            remote: true
        }
    );
    assert_eq!(
        c.closed().await.unwrap(),
        CloseInfo {
            code: 4242,
            reason: "client says bye".into(),
            remote: false
        }
    );

    // Server closes: the client sees them.
    let server = fx.server.clone();
    tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        s.close(7, "server says bye").unwrap();
        // Keep the handle until the close is out.
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let c = fx.connect("/y").await.unwrap();
    let seen = tokio::time::timeout(T, c.closed()).await.unwrap().unwrap();
    assert_eq!(
        seen,
        CloseInfo {
            code: 7,
            reason: "server says bye".into(),
            remote: true
        }
    );
    // After close, operations fail with the close info.
    match c.open_bi().await {
        Err(OpenStreamError::Session(SessionError::Closed { code: 7, .. })) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.send_datagram(b"x"),
        Err(DatagramError::Session(SessionError::Closed { .. }))
    ));
    // The connection itself stays up.
    assert!(c.connection().is_connected());
}

#[tokio::test]
async fn reject_statuses_seen_by_client() {
    let fx = fixture().await;
    let server = fx.server.clone();
    tokio::spawn(async move {
        while let Some(req) = server.accept().await {
            match req.path() {
                "/forbidden" => req.reject(403),
                _ => req.reject(404),
            }
        }
    });
    for (path, status) in [("/forbidden", 403), ("/missing", 404)] {
        match fx.connect(path).await {
            Err(ConnectError::Rejected(s)) => assert_eq!(s, status),
            other => panic!("{path}: {other:?}"),
        }
    }
    assert!(!ConnectError::Rejected(404).is_retriable());
    assert!(ConnectError::Rejected(503).is_retriable());
}

/// Path-MTU discovery, with the coarser search step we give it (two probes instead of
/// four), still reaches quinn's upper bound (1452-byte UDP payloads) on a path that carries
/// it, in both directions: the session's datagram limit ends exactly 1452 - 1200 bytes above
/// that of a client without discovery, and a datagram of that size comes back through the
/// echo. A step too coarse to try the upper bound stops at the first probe (1326).
#[tokio::test]
async fn mtu_discovery_reaches_the_upper_bound_on_loopback() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let mut fixed = fx.client_config();
    fixed.transport.mtu_discovery = false;
    let base = tokio::time::timeout(T, Client::new(fixed).unwrap().connect(&fx.url("/echo")))
        .await
        .expect("connect timed out")
        .unwrap()
        .max_datagram_size()
        .unwrap();
    let target = base + (1452 - 1200);
    let s = fx.connect("/echo").await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while s.max_datagram_size().unwrap() < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "datagram limit {} after {T:?}, expected {target} (without discovery {base})",
            s.max_datagram_size().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.max_datagram_size().unwrap(), target);
    // The server's side has searched too: its echo of a full-size datagram fits.
    let payload = pattern(target, 7);
    let echoed = tokio::time::timeout(T, async {
        loop {
            s.send_datagram(&payload).unwrap();
            match tokio::time::timeout(Duration::from_millis(200), s.read_datagram()).await {
                Ok(d) => break d.unwrap(),
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("no full-size datagram came back");
    assert_eq!(echoed.len(), target);
    assert_eq!(checksum(&echoed), checksum(&payload));
}

#[tokio::test]
async fn datagram_too_large_is_refused_clearly() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    let max = s.max_datagram_size().unwrap();
    let err = s.send_datagram(&vec![0u8; max + 1]).unwrap_err();
    assert!(
        matches!(err, DatagramError::TooLarge { size, max: m } if size == max + 1 && m == max),
        "{err:?}"
    );
    assert!(err.to_string().contains("exceeds the maximum"), "{err}");
    s.send_datagram(&vec![0u8; max]).unwrap();
}

/// A datagram written in a buffer the session lends arrives as written: through
/// `io::Write`, past the capacity asked for (it moves, and is still sent whole), and from
/// a buffer another session lent (sent as this session's). The session's count includes
/// it, and once the session is closed the buffer is refused as `send_datagram` is.
#[tokio::test]
async fn datagrams_written_in_place_arrive_as_written() {
    use std::io::Write;

    let fx = fixture().await;
    let (client, server) = fx.session_pair("/in-place").await;
    let got = datagram_through(&client, &server, |s| {
        let mut buf = s.datagram_buffer(16);
        assert_eq!(buf.capacity(), 16);
        write!(buf, "in place {}", 42).unwrap();
        buf[..2].copy_from_slice(b"IN");
        assert_eq!(&buf[..], b"IN place 42");
        s.send_datagram_buffer(buf)
    })
    .await;
    assert_eq!(&got[..], b"IN place 42");

    let big = pattern(1000, 7);
    let got = datagram_through(&client, &server, |s| {
        let mut buf = s.datagram_buffer(10);
        buf.extend_from_slice(&big);
        s.send_datagram_buffer(buf)
    })
    .await;
    assert_eq!(got, big);

    // Lent by the connection's second session, whose id is written in front of it.
    let (other, _other_server) = fx.second_session(&client, "/other").await;
    assert_ne!(other.id(), client.id());
    let got = datagram_through(&client, &server, |s| {
        let mut buf = other.datagram_buffer(8);
        buf.resize(5, b'x');
        s.send_datagram_buffer(buf)
    })
    .await;
    assert_eq!(&got[..], b"xxxxx");
    assert!(client.stats().datagrams_sent >= 3);
    assert_eq!(other.stats().datagrams_sent, 0);

    // Too large for QUIC: refused as `send_datagram` refuses it, and not counted.
    let max = client.max_datagram_size().unwrap();
    let sent = client.stats().datagrams_sent;
    let mut buf = client.datagram_buffer(usize::MAX);
    assert_eq!(buf.capacity(), 65_535);
    buf.resize(max + 1, 0);
    let err = client.send_datagram_buffer(buf).unwrap_err();
    assert!(
        matches!(err, DatagramError::TooLarge { size, max: m } if size == max + 1 && m == max),
        "{err:?}"
    );
    assert_eq!(client.stats().datagrams_sent, sent);

    client.close(0, "done").unwrap();
    let mut buf = client.datagram_buffer(4);
    buf.extend_from_slice(b"late");
    let err = client.send_datagram_buffer(buf).unwrap_err();
    assert!(
        matches!(err, DatagramError::Session(SessionError::Closed { .. })),
        "{err:?}"
    );
    assert!(matches!(
        client.send_datagram(b"late").unwrap_err(),
        DatagramError::Session(SessionError::Closed { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_the_connection() {
    let fx = fixture_with(|c| {
        c.transport.max_idle_timeout = Duration::from_millis(300);
        c.transport.keep_alive_interval = None;
    })
    .await;
    let server = fx.server.clone();
    tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        let _ = s.closed().await;
    });
    let mut cfg = fx.client_config();
    cfg.transport.max_idle_timeout = Duration::from_millis(300);
    cfg.transport.keep_alive_interval = None;
    let client = Client::new(cfg).unwrap();
    let s = client.connect(&fx.url("/idle")).await.unwrap();
    let err = tokio::time::timeout(T, s.closed())
        .await
        .expect("idle timeout fired")
        .unwrap_err();
    assert!(
        matches!(err, SessionError::Connection(ConnectionError::TimedOut)),
        "{err:?}"
    );
    assert!(s.connection().is_closed());
}

#[tokio::test]
async fn server_going_away_gives_client_an_error_not_a_hang() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    let (mut send, mut recv) = s.open_bi().await.unwrap();
    send.write_all(b"partial").await.unwrap();
    // The server side vanishes: every connection is closed at once.
    for c in fx.server.connections() {
        c.abort(Code::H3_INTERNAL_ERROR, "server crashed");
    }
    let read = tokio::time::timeout(T, recv.read_to_end(1 << 20))
        .await
        .expect("read must not hang");
    assert!(matches!(read, Err(ReadError::Connection(_))), "{read:?}");
    let closed = tokio::time::timeout(T, s.closed()).await.unwrap();
    match closed {
        Err(SessionError::Connection(ConnectionError::PeerError { code, .. })) => {
            assert_eq!(code, Code::H3_INTERNAL_ERROR)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pinned_hash_mismatch_is_refused() {
    let fx = fixture().await;
    let mut cfg = fx.client_config();
    cfg.verification = CertVerification::ServerCertificateHashes(vec![[0xab; 32]]);
    let client = Client::new(cfg).unwrap();
    let err = client.connect(&fx.url("/echo")).await.unwrap_err();
    match &err {
        ConnectError::Handshake(HandshakeError::Certificate(t)) => {
            assert!(!t.remote, "our verifier refused it: {t}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retriable());
    // The server, whose connection was linked at 0.5-RTT (its SETTINGS already sent), sees
    // the same refusal as a handshake failure with the client's TLS alert, not as a
    // connection lost.
    let conn = fx
        .server
        .connections()
        .into_iter()
        .next()
        .expect("the server had the connection");
    match conn.wait_ready(T).await {
        Err(ConnectError::Handshake(HandshakeError::Certificate(t))) => {
            assert!(t.remote, "the client refused it: {t}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn validate_names_the_bad_field() {
    let mut c = ClientConfig::default();
    c.transport.stream_receive_window = 0;
    let e = c.validate().unwrap_err();
    assert_eq!(e.field(), Some("transport.stream_receive_window"));
    let mut s = ServerConfig::default();
    s.limits.max_sessions = 0;
    assert_eq!(
        s.validate().unwrap_err().field(),
        Some("limits.max_sessions")
    );
    // Client::new refuses an invalid config with the field in the message.
    let err = Client::new(c).unwrap_err();
    let source = std::error::Error::source(&err).expect("the config error is the source");
    assert!(
        source.to_string().contains("stream_receive_window"),
        "{source}"
    );
}

#[tokio::test]
async fn subprotocol_headers_and_request_inspection() {
    let fx = fixture().await;
    let server = fx.server.clone();
    let port = fx.addr.port();
    let srv = tokio::spawn(async move {
        let req = server.accept().await.unwrap();
        assert_eq!(req.path(), "/chat?room=1");
        assert_eq!(req.authority(), format!("127.0.0.1:{port}"));
        assert_eq!(req.origin(), Some("https://app.example"));
        assert_eq!(req.protocols(), ["v2", "v1"]);
        assert!(req
            .headers()
            .iter()
            .any(|h| &h.name[..] == b"x-token" && &h.value[..] == b"abc"));
        let s = req
            .accept_with(Some("v1".into()), vec![("x-server".into(), "yes".into())])
            .unwrap();
        let _ = s.closed().await;
    });
    let client = Client::new(fx.client_config()).unwrap();
    let opts = ConnectOptions {
        protocols: vec!["v2".into(), "v1".into()],
        headers: vec![("x-token".into(), "abc".into())],
        origin: Some("https://app.example".into()),
        ..ConnectOptions::default()
    };
    let s = client
        .connect_with(&fx.url("/chat?room=1"), opts)
        .await
        .unwrap();
    assert_eq!(s.protocol().as_deref(), Some("v1"));
    let resp = s.response().unwrap();
    assert!(resp.headers.iter().any(|h| &h.name[..] == b"x-server"));
    s.close(0, "").unwrap();
    tokio::time::timeout(T, srv).await.unwrap().unwrap();
}

#[tokio::test]
async fn reset_and_stop_codes_both_ways() {
    let fx = fixture().await;
    let server = fx.server.clone();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        // 1. The client resets its send side with 11: the server's read sees 11. The
        // server acknowledges the first bytes first: a RESET_STREAM that overtakes the
        // stream's preamble lets QUIC discard it, and then no session can claim the
        // stream (draft-15's RESET_STREAM_AT fixes that; quinn lacks it).
        let (mut send, mut recv) = s.accept_bi().await.unwrap();
        let mut first = [0u8; 3];
        recv.read_exact(&mut first).await.unwrap();
        send.write_all(b"k").await.unwrap();
        let r = recv.read_to_end(1 << 20).await;
        assert_eq!(r.unwrap_err(), ReadError::Reset(Some(11)));
        // 2. The server stops the client's stream with 12.
        let (_send, mut recv) = s.accept_bi().await.unwrap();
        recv.stop(12).unwrap();
        // 3. The server resets a stream it opened with 13.
        let (mut send, mut recv) = s.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        let mut ack = [0u8; 1];
        recv.read_exact(&mut ack).await.unwrap();
        send.reset(13).unwrap();
        // 4. The client stops a server uni stream with 14: the server's write sees it.
        let mut send = s.open_uni().await.unwrap();
        send.write_all(b"y").await.unwrap();
        let code = send.stopped().await.unwrap();
        assert_eq!(code, Some(14));
        s.closed().await
    });
    let s = fx.connect("/codes").await.unwrap();
    let (mut send, mut recv) = s.open_bi().await.unwrap();
    send.write_all(b"abc").await.unwrap();
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await.unwrap();
    send.reset(11).unwrap();
    let (mut send, _recv2) = s.open_bi().await.unwrap();
    send.write_all(b"abc").await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, send.stopped())
            .await
            .unwrap()
            .unwrap(),
        Some(12)
    );
    let (mut send, mut recv) = tokio::time::timeout(T, s.accept_bi())
        .await
        .unwrap()
        .unwrap();
    let mut x = [0u8; 1];
    recv.read_exact(&mut x).await.unwrap();
    send.write_all(b"k").await.unwrap();
    assert_eq!(
        recv.read_to_end(1024).await.unwrap_err(),
        ReadError::Reset(Some(13))
    );
    let mut recv = tokio::time::timeout(T, s.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let mut b = [0u8; 1];
    recv.read_exact(&mut b).await.unwrap();
    recv.stop(14).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.close(0, "done").unwrap();
    tokio::time::timeout(T, srv)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn server_initiated_bidi_and_session_close_resets_streams() {
    let fx = fixture().await;
    let server = fx.server.clone();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        let (mut send, mut recv) = s.open_bi().await.unwrap();
        send.write_all(b"from server").await.unwrap();
        send.finish().unwrap();
        let reply = recv.read_to_end(100).await.unwrap();
        assert_eq!(reply, b"reply");
        // A stream left open when the session closes is reset with WT_SESSION_GONE.
        let (mut open_send, _r) = s.open_bi().await.unwrap();
        open_send.write_all(b"pending").await.unwrap();
        s.close(9, "closing with open streams").unwrap();
        assert_eq!(
            open_send.write_all(b"more").await.unwrap_err(),
            WriteError::SessionGone
        );
    });
    let s = fx.connect("/srv").await.unwrap();
    let (mut send, mut recv) = tokio::time::timeout(T, s.accept_bi())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv.read_to_end(100).await.unwrap(), b"from server");
    send.write_all(b"reply").await.unwrap();
    send.finish().unwrap();
    // The second stream is either reset with WT_SESSION_GONE (not a WebTransport app
    // code: None), stopped locally when our side saw the close first, or never handed
    // out because the close came before we accepted it.
    match tokio::time::timeout(T, s.accept_bi()).await.unwrap() {
        Ok((_send2, mut recv2)) => {
            let r = tokio::time::timeout(T, recv2.read_to_end(100))
                .await
                .unwrap();
            assert!(
                matches!(r, Err(ReadError::Reset(None)) | Err(ReadError::SessionGone)),
                "{r:?}"
            );
        }
        Err(e) => assert!(matches!(e, SessionError::Closed { code: 9, .. }), "{e:?}"),
    }
    assert_eq!(s.closed().await.unwrap().code, 9);
    srv.await.unwrap();
}

#[tokio::test]
async fn several_sessions_on_one_connection_and_session_info() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let client = Client::new(fx.client_config()).unwrap();
    let first = client.connect(&fx.url("/echo")).await.unwrap();
    let conn = first.connection().clone();
    let req = fx.request("/echo");
    let second = conn.open_session(req).await.unwrap();
    assert_ne!(first.id(), second.id());
    assert_eq!(bidi_echo(&second, b"two").await, b"two");
    assert_eq!(bidi_echo(&first, b"one").await, b"one");
    let all = conn.get_all_sessions();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|i| i.state == "established"));
    assert_eq!(conn.get_ready_session_id(), Some(first.id()));
    assert_eq!(conn.wait_for_ready_session(T).await.unwrap(), first.id());
    second.close(1, "second done").unwrap();
    let info = conn.get_session_info(second.id()).unwrap();
    assert_eq!(info.state, "closed");
    assert_eq!(info.close.unwrap().reason, "second done");
    // The protocol view shows what was negotiated.
    let p = conn.protocol();
    assert!(p.peer_settings.unwrap().connect_protocol_enabled());
    assert!(p.draft.is_some());
    // Diagnostics come from QUIC.
    let d = conn.diagnostics();
    assert!(d.rtt > Duration::ZERO && d.cwnd > 0);
    assert!(d.issues().is_empty(), "{:?}", d.issues());
    assert!(d.stats.bytes_sent > 0 && d.stats.packets_received > 0);
    assert_eq!(conn.state(), ConnectionState::Connected);
}

#[tokio::test]
async fn connection_connect_api_like_the_seed() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let conn = Connection::connect(&fx.client_config(), "127.0.0.1", fx.addr.port(), "/echo")
        .await
        .unwrap();
    conn.wait_ready(T).await.unwrap();
    let id = conn.wait_for_ready_session(T).await.unwrap();
    let s = conn.session(id).unwrap();
    assert_eq!(bidi_echo(&s, b"seed").await, b"seed");
    assert!(conn.is_connected() && !conn.is_closed() && !conn.is_closing());
    assert_eq!(conn.remote_address(), Some(fx.addr));
    assert!(conn.local_address().is_some());
    let mut events = conn.events();
    conn.abort(Code::H3_NO_ERROR, "bye");
    let e = conn.wait_closed().await;
    assert_eq!(e, ConnectionError::LocallyClosed);
    assert!(conn.is_closed());
    // A Closed event was broadcast.
    let mut saw_closed = false;
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        saw_closed |= matches!(ev, ConnectionEvent::Closed { .. });
    }
    assert!(saw_closed);
    assert!(conn.info().uptime() > Duration::ZERO);
}

#[tokio::test]
async fn proxy_address_keeps_sni_and_authority() {
    // The "proxy" is the server itself reached by IP while SNI says localhost: the
    // certificate check (SAN localhost) and :authority follow the host name.
    let fx = fixture().await;
    let server = fx.server.clone();
    let srv = tokio::spawn(async move {
        let req = server.accept().await.unwrap();
        let authority = req.authority().to_owned();
        let s = req.accept().unwrap();
        let _ = s.closed().await;
        authority
    });
    let cfg = ClientConfig {
        verification: CertVerification::DangerousNoVerify,
        ..ClientConfig::default()
    };
    let opts = ConnectOptions {
        host: "localhost".into(),
        port: 9999,
        path: "/p".into(),
        proxy: Some(fx.addr),
        ..ConnectOptions::default()
    };
    let (_conn, s) = Connection::connect_with(&cfg, opts).await.unwrap();
    s.close(0, "").unwrap();
    assert_eq!(
        tokio::time::timeout(T, srv).await.unwrap().unwrap(),
        "localhost:9999"
    );
}

#[tokio::test]
async fn graceful_shutdown_drains_and_closes() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    let mut events = s.connection().events();
    let server = fx.server.clone();
    let shut = tokio::spawn(async move { server.shutdown(Duration::from_secs(2)).await });
    // The client sees GOAWAY and DRAIN, then closes its session as asked.
    let mut saw_drain = false;
    let mut saw_goaway = false;
    while !(saw_drain && saw_goaway) {
        match tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ConnectionEvent::SessionDraining { .. } => saw_drain = true,
            ConnectionEvent::GoAway { .. } => saw_goaway = true,
            _ => {}
        }
    }
    assert!(s.is_draining());
    s.close(0, "drained").unwrap();
    tokio::time::timeout(T, shut).await.unwrap().unwrap();
    // New connections are refused.
    assert!(fx.connect("/echo").await.is_err());
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Client>();
    check::<Server>();
    check::<Connection>();
    check::<Session>();
    check::<SessionRequest>();
    check::<SendStream>();
    check::<RecvStream>();
    check::<ClientConfig>();
    check::<ServerConfig>();
    check::<ConnectError>();
    check::<ConnectionError>();
    check::<SessionError>();
    check::<ReadError>();
    check::<WriteError>();
    check::<DatagramError>();
    check::<OpenStreamError>();
    check::<ConnectionEvent>();
    check::<ConnectionInfo>();
    check::<ConnectionDiagnostics>();
    check::<SessionInfo>();
    check::<SelfSignedCertificate>();
}

#[tokio::test]
async fn dropping_a_client_closes_its_session_gracefully() {
    let fx = fixture().await;
    let server = fx.server.clone();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        s.closed().await
    });
    let s = fx.connect("/drop").await.unwrap();
    drop(s);
    // The peer sees a clean close (code 0) at once, not an idle timeout 30 s later.
    let seen = tokio::time::timeout(Duration::from_secs(3), srv)
        .await
        .expect("close delivered")
        .unwrap();
    assert_eq!(
        seen.unwrap(),
        CloseInfo {
            code: 0,
            reason: String::new(),
            remote: true
        }
    );
}

#[tokio::test]
async fn connection_shutdown_delivers_session_closes_before_exit() {
    let fx = fixture().await;
    let server = fx.server.clone();
    let srv = tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        s.closed().await
    });
    let s = fx.connect("/shutdown").await.unwrap();
    let conn = s.connection().clone();
    conn.close_within(0, "client exiting", T).await;
    assert!(conn.is_closed() || conn.is_closing());
    let seen = tokio::time::timeout(T, srv)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        CloseInfo {
            code: 0,
            reason: "client exiting".into(),
            remote: true
        }
    );
}

#[tokio::test]
async fn server_shutdown_closes_open_sessions_with_a_reason() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let s = fx.connect("/echo").await.unwrap();
    // This client ignores DRAIN, so the server closes the session when its wait ends.
    fx.server.shutdown(Duration::from_millis(200)).await;
    let seen = tokio::time::timeout(T, s.closed()).await.unwrap();
    assert_eq!(
        seen.unwrap(),
        CloseInfo {
            code: 0,
            reason: "server shutting down".into(),
            remote: true
        }
    );
}

#[test]
fn connection_ids_are_unique() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fx = fixture().await;
        let _echo = fx.spawn_echo();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..20 {
            let s = fx.connect("/echo").await.unwrap();
            assert!(ids.insert(s.connection().connection_id().to_owned()));
            s.connection()
                .close_within(0, "", Duration::from_millis(200))
                .await;
        }
    });
}

#[tokio::test]
async fn session_events_are_typed_and_filtered() {
    let fx = fixture().await;
    let _echo = fx.spawn_echo();
    let client = Client::new(fx.client_config()).unwrap();
    let s = client.connect(&fx.url("/echo")).await.unwrap();
    let mut events = s.events();
    let (mut send, mut recv) = s.open_bi().await.unwrap();
    send.write_all(b"e").await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(10).await.unwrap();
    let mut got_datagram = false;
    for _ in 0..20 {
        s.send_datagram(b"d").unwrap();
        if tokio::time::timeout(Duration::from_millis(200), s.read_datagram())
            .await
            .is_ok()
        {
            got_datagram = true;
            break;
        }
    }
    assert!(got_datagram);
    s.close(5, "events").unwrap();
    let mut seen = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        let done = matches!(ev, SessionEvent::Closed(_));
        seen.push(ev);
        if done {
            break;
        }
    }
    assert_eq!(
        seen.first(),
        Some(&SessionEvent::StreamOpened {
            bidi: true,
            incoming: false
        }),
        "{seen:?}"
    );
    assert!(
        seen.contains(&SessionEvent::Datagram { len: 1 }),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&SessionEvent::Closed(CloseInfo {
            code: 5,
            reason: "events".into(),
            remote: false
        })),
        "{seen:?}"
    );
}

#[tokio::test]
async fn incoming_stream_queue_is_bounded() {
    let fx = fixture_with(|c| c.limits.incoming_stream_queue = 4).await;
    let server = fx.server.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let s = server.accept().await.unwrap().accept().unwrap();
        // Accept nothing until told.
        let _ = rx.await;
        let mut n = 0;
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), s.accept_uni()).await
        {
            n += 1;
        }
        n
    });
    let s = fx.connect("/queue").await.unwrap();
    let mut refused = 0;
    let mut sends = Vec::new();
    for _ in 0..10 {
        let mut u = s.open_uni().await.unwrap();
        u.write_all(b"x").await.unwrap();
        sends.push(u);
    }
    // Wait until the refusals have arrived: a refused stream's stopped() resolves, an
    // accepted one's does not (the timeout ends that wait). WT_BUFFERED_STREAM_REJECTED is
    // an HTTP/3 code, not a WebTransport one, so the write error carries None.
    for u in &mut sends {
        let _ = tokio::time::timeout(Duration::from_millis(300), u.stopped()).await;
    }
    for u in &mut sends {
        if let Err(WriteError::Stopped(None)) = u.write_all(b"y").await {
            refused += 1;
        }
    }
    let _ = tx.send(());
    assert_eq!(refused, 6, "10 streams against a queue of 4");
}

/// `max_connections` counts the connections that have not ended: one over it is refused
/// (CONNECTION_REFUSED, a typed handshake error), and its place is free again once one of
/// them has closed.
#[tokio::test]
async fn connections_over_the_limit_are_refused_until_one_ends() {
    let fx = fixture_with(|c| c.max_connections = 2).await;
    let _serving = fx.spawn_echo();
    let first = fx.connect("/echo").await.expect("first");
    let _second = fx.connect("/echo").await.expect("second");
    match fx.connect("/echo").await {
        Err(ConnectError::Handshake(HandshakeError::Refused)) => {}
        other => panic!("a third connection: {other:?}"),
    }
    assert_eq!(fx.server.connections_refused(), 1);
    first.connection().close(0, "making room").await;
    let live = || {
        fx.server
            .connections()
            .iter()
            .filter(|c| !c.state().is_final())
            .count()
    };
    tokio::time::timeout(T, async {
        while live() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server saw the close");
    let third = fx.connect("/echo").await.expect("room again");
    assert_eq!(bidi_echo(&third, b"in").await, b"in");
}

/// Makes the driver of `to`'s connection take a turn: it reads a datagram from `from`
/// (sent again until one arrives).
async fn driver_turn(from: &Session, to: &Session) {
    for _ in 0..100 {
        from.send_datagram(b"turn").unwrap();
        let wait = Duration::from_millis(100);
        if let Ok(d) = tokio::time::timeout(wait, to.read_datagram()).await {
            assert_eq!(d.unwrap(), &b"turn"[..]);
            return;
        }
    }
    panic!("no datagram arrived");
}

/// Several tasks reading one session's datagrams are all woken by a burst: a datagram that
/// lands in an empty queue wakes every reader, the others of the burst wake none, and
/// each reader takes one (those that find the queue empty again wait for the next).
#[tokio::test]
async fn several_readers_of_a_session_share_a_burst_of_datagrams() {
    let fx = fixture().await;
    let (client, server) = fx.session_pair("/burst").await;
    let readers: Vec<_> = (0..3).map(|_| spawn_datagram_read(&server)).collect();
    // Let all three wait before the burst.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Sent again until every reader has one (loopback rarely loses one).
    for _ in 0..50 {
        for i in 0..3u8 {
            client.send_datagram(&[i]).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if readers.iter().all(|r| r.is_finished()) {
            break;
        }
    }
    for r in readers {
        let d = tokio::time::timeout(T, r)
            .await
            .expect("every reader got one");
        assert_eq!(d.unwrap().unwrap().len(), 1);
    }
}

/// A task waiting in `read_datagram` takes what arrives from QUIC itself (as the driver
/// does): another session's datagrams still reach that session (in some order: the
/// driver and the task may each take some), the waiting task is given none of them, and
/// the connection's end reaches it.
#[tokio::test]
async fn a_waiting_datagram_reader_leaves_other_sessions_their_datagrams() {
    let fx = fixture().await;
    let (first, a) = fx.session_pair("/a").await;
    let a_read = spawn_datagram_read(&a);
    let (second, b) = fx.second_session(&first, "/b").await;
    assert_eq!(
        datagram_through(&second, &b, |s| s.send_datagram(b"first")).await,
        &b"first"[..]
    );
    // A burst while b does not read: queued for b, none of it for a.
    for i in 0..32u8 {
        second.send_datagram(&[i]).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 32 {
        let d = tokio::time::timeout(T, b.read_datagram()).await;
        let d = d.expect("the burst reached b").unwrap();
        if d != b"first"[..] {
            got.push(d[0]);
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..32).collect::<Vec<u8>>());
    assert!(!a_read.is_finished(), "nothing came for a");
    first.connection().close(0, "done").await;
    let r = tokio::time::timeout(T, a_read).await.unwrap().unwrap();
    assert!(r.is_err(), "{r:?}");
}

/// The session's end reaches a task waiting in `read_datagram` while the connection
/// lives on (quinn's datagram read, which it also waits on, stays pending): it gets the
/// peer's close, and a read after the end gets it at once.
#[tokio::test]
async fn a_waiting_datagram_reader_sees_its_session_closed() {
    let fx = fixture().await;
    let (client, server) = fx.session_pair("/closing").await;
    let read = spawn_datagram_read(&server);
    // Let it run until it waits (one thread: it runs on this yield, up to its wait).
    tokio::task::yield_now().await;
    assert!(!read.is_finished());
    client.close(7, "bye").unwrap();
    let r = tokio::time::timeout(T, read).await.expect("woken").unwrap();
    let by_peer = |e: &SessionError| {
        matches!(
            e,
            SessionError::Closed {
                code: 7,
                remote: true,
                ..
            }
        )
    };
    assert!(r.as_ref().is_err_and(by_peer), "{r:?}");
    let again = tokio::time::timeout(T, server.read_datagram())
        .await
        .unwrap();
    assert!(again.as_ref().is_err_and(by_peer), "{again:?}");
    assert!(!client.connection().is_closed(), "the connection lives on");
}

/// A server task waiting in `accept_bi`/`accept_uni` takes the peer's new streams from
/// QUIC itself; while it waits, streams for another session and another session's
/// CONNECT request still get where they belong, and it is not given them.
#[tokio::test]
async fn a_waiting_accept_leaves_other_sessions_their_streams_and_requests() {
    let fx = fixture().await;
    let (first, a) = fx.session_pair("/a").await;
    let a_bi = tokio::spawn({
        let a = a.clone();
        async move { a.accept_bi().await.map(|_| ()) }
    });
    let a_uni = tokio::spawn({
        let a = a.clone();
        async move { a.accept_uni().await.map(|_| ()) }
    });
    // Let both reach their wait, and the driver take a turn after (it reads a datagram),
    // so that the tasks, not the driver, take what arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    driver_turn(&first, &a).await;

    let (second, b) = fx.second_session(&first, "/b").await;

    let (mut send, _recv) = second.open_bi().await.unwrap();
    send.write_all(b"bi for b").await.unwrap();
    send.finish().unwrap();
    let (_send, mut recv) = tokio::time::timeout(T, b.accept_bi())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"bi for b");
    let mut uni = second.open_uni().await.unwrap();
    uni.write_all(b"uni for b").await.unwrap();
    uni.finish().unwrap();
    let mut recv = tokio::time::timeout(T, b.accept_uni())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recv.read_to_end(64).await.unwrap(), b"uni for b");

    assert!(
        !a_bi.is_finished() && !a_uni.is_finished(),
        "nothing came for a"
    );
    // The connection's end reaches the tasks that took streams from QUIC.
    first.connection().close(0, "done").await;
    for task in [a_bi, a_uni] {
        let r = tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(r.is_err(), "{r:?}");
    }
}

/// Once no task waits in an accept any more (here one gave up), the connection's driver
/// takes new streams from QUIC again: they are queued for the session, and refused past
/// its queue, with no accept called.
#[tokio::test]
async fn streams_are_taken_after_an_accept_gave_up() {
    let fx = fixture_with(|c| c.limits.incoming_stream_queue = 1).await;
    let (session, a) = fx.session_pair("/a").await;
    let waiting = tokio::spawn({
        let a = a.clone();
        async move {
            tokio::time::timeout(Duration::from_millis(300), a.accept_bi())
                .await
                .is_err()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A turn of the driver while the task waits (it reads a datagram): from then on it
    // leaves bidirectional streams to the task, until the task gives up.
    driver_turn(&session, &a).await;
    assert!(waiting.await.unwrap(), "no stream was opened yet");

    let mut sends = Vec::new();
    for _ in 0..3 {
        let (mut send, recv) = session.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        sends.push((send, recv));
    }
    // Taken in order with no accept called: the first is queued, the other two are
    // refused (WT_BUFFERED_STREAM_REJECTED).
    for (send, _) in &mut sends[1..] {
        let stopped = tokio::time::timeout(T, send.stopped()).await;
        assert!(stopped.is_ok(), "a stream past the queue is refused");
    }
    let first = tokio::time::timeout(Duration::from_millis(100), sends[0].0.stopped()).await;
    assert!(first.is_err(), "the first stream is queued, not refused");
    let (_send, mut recv) = tokio::time::timeout(T, a.accept_bi())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        recv.read_chunk(16).await.unwrap().as_deref(),
        Some(&b"x"[..])
    );
}

/// Counts the wake-ups of a task polled by hand.
#[derive(Default)]
struct CountingWaker {
    wakes: std::sync::atomic::AtomicUsize,
    woken: tokio::sync::Notify,
}

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.woken.notify_one();
    }
}

impl CountingWaker {
    fn wakes(&self) -> usize {
        self.wakes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// An `accept_bi` that takes its stream from QUIC itself queues it with its session, which
/// wakes the session's acceptors: the task that took it is not among them (it would be
/// polled once more for nothing, one spurious poll per stream).
#[tokio::test]
async fn an_accept_is_not_woken_by_the_stream_it_took_itself() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let fx = fixture().await;
    let (client, server) = fx.session_pair("/wake").await;
    let waker = Arc::new(CountingWaker::default());
    let task = Waker::from(waker.clone());
    let mut cx = Context::from_waker(&task);
    let mut accept = Box::pin(server.accept_bi());
    assert!(accept.as_mut().poll(&mut cx).is_pending());
    // A turn of the driver while the accept waits: from then on it leaves bidirectional
    // streams to the accept.
    driver_turn(&client, &server).await;

    let (mut send, _recv) = client.open_bi().await.unwrap();
    send.write_all(b"x").await.unwrap();
    send.finish().unwrap();
    let (_send, mut recv) = loop {
        tokio::time::timeout(T, waker.woken.notified())
            .await
            .expect("the accept is woken for the stream");
        let before = waker.wakes();
        if let Poll::Ready(r) = accept.as_mut().poll(&mut cx) {
            assert_eq!(waker.wakes(), before, "woken by its own stream");
            break r.unwrap();
        }
    };
    assert_eq!(recv.read_to_end(16).await.unwrap(), b"x");
}

/// The peer learns of a stream we open even when no write comes first: one read first
/// (the peer may be the one to speak first), one finished with nothing written, and one
/// dropped. (What a change that holds the stream's header back for the first write must
/// keep: docs/benchmarks.md, stop 24.)
#[tokio::test]
async fn a_stream_opened_without_a_write_still_reaches_the_peer() {
    let fx = fixture().await;
    let (client, server) = fx.session_pair("/announce").await;

    // Read first: the server writes first on a stream it learns of from that read.
    let (_send, mut recv) = client.open_bi().await.unwrap();
    let reader = tokio::spawn(async move { recv.read_to_end(64).await });
    let (mut s_send, _s_recv) = tokio::time::timeout(T, server.accept_bi())
        .await
        .expect("the peer sees a stream opened and read first")
        .unwrap();
    s_send.write_all(b"server first").await.unwrap();
    s_send.finish().unwrap();
    let got = tokio::time::timeout(T, reader).await.unwrap().unwrap();
    assert_eq!(got.unwrap(), b"server first");

    // Finished with nothing written: an empty stream.
    let mut send = client.open_uni().await.unwrap();
    send.finish().unwrap();
    let mut s_recv = tokio::time::timeout(T, server.accept_uni())
        .await
        .expect("the peer sees a stream opened and finished")
        .unwrap();
    assert_eq!(s_recv.read_to_end(64).await.unwrap(), b"");

    // Dropped with nothing written: an empty stream too.
    drop(client.open_uni().await.unwrap());
    let mut s_recv = tokio::time::timeout(T, server.accept_uni())
        .await
        .expect("the peer sees a stream opened and dropped")
        .unwrap();
    assert_eq!(s_recv.read_to_end(64).await.unwrap(), b"");
}
