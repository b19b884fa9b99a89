//! Session flow control (draft-ietf-webtrans-http3 §5) on real sockets: credit refills
//! under long transfers with small windows, peers that exceed our limits get
//! WT_FLOW_CONTROL_ERROR, and we honour the limits a peer gives us.

use std::sync::Arc;
use std::time::Duration;

use webtransport::app::handlers::echo;
use webtransport::proto::capsule::{ty, Capsule};
use webtransport::proto::varint::VarInt;
use webtransport::*;

mod support;

const T: Duration = Duration::from_secs(30);
const KIB: u64 = 1024;

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server with these session limits, serving `/echo`.
async fn echo_server(limits: SessionLimits) -> (Arc<Server>, SelfSignedCertificate) {
    let (server, cert) = support::limited_server(limits).await;
    let s = server.clone();
    tokio::spawn(async move {
        while let Some(req) = s.accept().await {
            if let Ok(session) = req.accept() {
                tokio::spawn(echo::serve(session));
            }
        }
    });
    (server, cert)
}

fn small_windows() -> SessionLimits {
    SessionLimits {
        max_data: 64 * KIB,
        max_streams_bidi: 4,
        max_streams_uni: 4,
        ..SessionLimits::default()
    }
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_both_ways_through_64_kib_windows() {
    init_log();
    let (server, cert) = echo_server(small_windows()).await;
    let config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        limits: small_windows(),
        ..ClientConfig::default()
    };
    let addr = server.local_addrs()[0];
    let session = Client::new(config)
        .unwrap()
        .connect(&format!("https://127.0.0.1:{}/echo", addr.port()))
        .await
        .unwrap();
    assert!(session.connection().protocol().flow_control);
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for piece in sent.chunks(256 * 1024) {
            send.write_all(piece).await.unwrap();
        }
        send.finish().unwrap();
    });
    let back = tokio::time::timeout(T, recv.read_to_end(65 << 20))
        .await
        .expect("the transfer kept moving: credit was refilled")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(checksum(&back), checksum(&data));
    // Many more streams than the window of 4, one after another: WT_MAX_STREAMS refills.
    for i in 0..20u8 {
        let (mut s, mut r) = tokio::time::timeout(T, session.open_bi())
            .await
            .expect("stream credit came back")
            .unwrap();
        s.write_all(&[i]).await.unwrap();
        s.finish().unwrap();
        assert_eq!(r.read_to_end(16).await.unwrap(), [i]);
    }
}

/// Many writers of one session share its send credit: with a 64 KiB window, 16 streams
/// writing at once all finish (no writer misses the credit another gave back or the peer
/// raised), and every byte comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_writers_share_a_small_window_and_all_finish() {
    let (server, cert) = echo_server(small_windows()).await;
    let config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        limits: small_windows(),
        ..ClientConfig::default()
    };
    let port = server.local_addrs()[0].port();
    let session = Client::new(config)
        .unwrap()
        .connect(&format!("https://127.0.0.1:{port}/echo"))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16u8 {
        let session = session.clone();
        tasks.spawn(async move {
            let data = vec![i; 1 << 20];
            let (mut send, mut recv) = session.open_bi().await.unwrap();
            let writer = async {
                for piece in data.chunks(10_000) {
                    send.write_all(piece).await.unwrap();
                }
                send.finish().unwrap();
            };
            let (_, back) = tokio::join!(writer, recv.read_to_end(2 << 20));
            assert_eq!(back.unwrap(), data);
        });
    }
    tokio::time::timeout(T, async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("every writer finished: credit kept moving");
}

/// Streams end without a lock each: their ends reach the core in batches (a quarter of
/// the stream window, here 16 of 64). A thousand short streams, eight at a time, through
/// windows of 64 streams on both sides still all finish: the batches never hold back the
/// WT_MAX_STREAMS either side waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_short_streams_through_windows_of_64() {
    let limits = || SessionLimits {
        max_data: 64 * KIB,
        max_streams_bidi: 64,
        max_streams_uni: 64,
        ..SessionLimits::default()
    };
    let (server, cert) = echo_server(limits()).await;
    let config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        limits: limits(),
        ..ClientConfig::default()
    };
    let port = server.local_addrs()[0].port();
    let session = Client::new(config)
        .unwrap()
        .connect(&format!("https://127.0.0.1:{port}/echo"))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u32 {
        let session = session.clone();
        tasks.spawn(async move {
            for i in 0..125u32 {
                let data = (t * 1000 + i).to_be_bytes();
                let (mut send, mut recv) = session.open_bi().await.unwrap();
                send.write_all(&data).await.unwrap();
                send.finish().unwrap();
                assert_eq!(recv.read_to_end(16).await.unwrap(), data);
            }
        });
    }
    tokio::time::timeout(T, async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("every stream finished: stream credit kept coming back");
}

/// Stream bytes that arrive are counted in the connection's activity by the time the
/// application has read them, even short of the stream's end (they are counted once per
/// batch taken from QUIC, not per read).
#[tokio::test]
async fn bytes_read_short_of_the_end_are_already_counted() {
    let (server, cert) = echo_server(SessionLimits::default()).await;
    let config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        ..ClientConfig::default()
    };
    let port = server.local_addrs()[0].port();
    let session = Client::new(config)
        .unwrap()
        .connect(&format!("https://127.0.0.1:{port}/echo"))
        .await
        .unwrap();
    let conn = session.connection().clone();
    let before = conn.info().bytes_received;
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(&[7u8; 20_000]).await.unwrap();
    let mut echoed = vec![0u8; 20_000];
    tokio::time::timeout(T, recv.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    let received = conn.info().bytes_received - before;
    assert!((20_000..20_200).contains(&received), "{received}");
    send.finish().unwrap();
}

/// A raw client with a session on `path` of `server`; returns its connection and the
/// CONNECT stream's halves after the 200.
async fn raw_session(
    addr: std::net::SocketAddr,
    hash: [u8; 32],
) -> (
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
    quinn::SendStream,
) {
    let conn = support::raw_client(addr, hash).await;
    let control = support::control_with(&conn, support::client_settings(1 << 20, 100))
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&support::connect_request("/echo"))
        .await
        .unwrap();
    // The response: a HEADERS frame; its first bytes are enough to know it came.
    let mut first = [0u8; 1];
    recv.read_exact(&mut first).await.unwrap();
    (conn, send, recv, control)
}

/// The server's session, as its application sees it.
async fn server_session(server: &Server) -> Session {
    tokio::time::timeout(T, server.accept())
        .await
        .unwrap()
        .unwrap()
        .accept()
        .unwrap()
}

/// A server that accepts one session and hands it to the test.
#[tokio::test]
async fn a_peer_over_our_max_data_gets_wt_flow_control_error() {
    init_log();
    let limits = SessionLimits {
        max_data: 4 * KIB,
        ..SessionLimits::default()
    };
    let (server, cert) = support::limited_server(limits).await;
    let addr = server.local_addrs()[0];
    let srv = server.clone();
    let accept = tokio::spawn(async move { server_session(&srv).await });
    let (conn, _connect_send, mut connect_recv, _control) = raw_session(addr, cert.sha256).await;
    let session = accept.await.unwrap();
    // A unidirectional stream with 16 KiB of payload against a window of 4 KiB.
    let mut uni = conn.open_uni().await.unwrap();
    let mut data = vec![0x40, 0x54, 0x00]; // stream type 0x54 as a 2-byte varint, session 0
    data.extend(std::iter::repeat_n(7u8, 16 * 1024));
    uni.write_all(&data).await.unwrap();
    uni.finish().unwrap();
    // Everything arrived (the server's QUIC acknowledged it) before the application reads.
    tokio::time::timeout(T, uni.stopped())
        .await
        .unwrap()
        .unwrap();
    let mut recv = session.accept_uni().await.unwrap();
    let read = recv.read_to_end(1 << 20).await;
    assert!(
        read.is_err(),
        "the overrun is refused, not delivered: {:?}",
        read.map(|d| d.len())
    );
    let end = tokio::time::timeout(T, session.closed()).await.unwrap();
    assert!(
        matches!(
            end,
            Err(SessionError::Aborted { code, remote: false }) if code == Code::WT_FLOW_CONTROL_ERROR
        ),
        "{end:?}"
    );
    // The peer sees its CONNECT stream reset with the draft's code.
    let reset = loop {
        match connect_recv.read_chunk(usize::MAX, true).await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(&reset, Err(quinn::ReadError::Reset(c)) if c.into_inner() == Code::WT_FLOW_CONTROL_ERROR.0),
        "{reset:?}"
    );
    // The connection itself stays up.
    assert!(session.connection().is_connected());
}

#[tokio::test]
async fn a_peer_over_our_max_streams_gets_wt_flow_control_error() {
    init_log();
    let limits = SessionLimits {
        max_streams_uni: 2,
        ..SessionLimits::default()
    };
    let (server, cert) = support::limited_server(limits).await;
    let addr = server.local_addrs()[0];
    let srv = server.clone();
    let accept = tokio::spawn(async move { server_session(&srv).await });
    let (conn, _connect_send, mut connect_recv, _control) = raw_session(addr, cert.sha256).await;
    let session = accept.await.unwrap();
    for _ in 0..3 {
        let mut uni = conn.open_uni().await.unwrap();
        uni.write_all(&[0x40, 0x54, 0x00, b'x']).await.unwrap();
        uni.finish().unwrap();
    }
    let end = tokio::time::timeout(T, session.closed()).await.unwrap();
    assert!(
        matches!(
            end,
            Err(SessionError::Aborted { code, remote: false }) if code == Code::WT_FLOW_CONTROL_ERROR
        ),
        "{end:?}"
    );
    let reset = loop {
        match connect_recv.read_chunk(usize::MAX, true).await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(&reset, Err(quinn::ReadError::Reset(c)) if c.into_inner() == Code::WT_FLOW_CONTROL_ERROR.0),
        "{reset:?}"
    );
}

/// A raw server whose SETTINGS give `max_data` bytes and `max_streams` streams per
/// session, and that answers the first CONNECT with 200. Returns the connection and the
/// CONNECT stream's halves.
async fn raw_server_session(
    endpoint: quinn::Endpoint,
    max_data: u64,
    max_streams: u64,
) -> (
    quinn::Connection,
    quinn::SendStream,
    support::ConnectStream,
    quinn::SendStream,
) {
    let conn = endpoint.accept().await.unwrap().await.unwrap();
    let mut settings = support::client_settings(max_data, max_streams);
    settings.set(
        webtransport::proto::settings::id::ENABLE_CONNECT_PROTOCOL,
        1,
    );
    let control = support::control_with(&conn, settings).await.unwrap();
    let (mut send, recv) = conn.accept_bi().await.unwrap();
    let mut request = support::ConnectStream::new(recv);
    request.headers().await.unwrap();
    send.write_all(&support::response(200)).await.unwrap();
    (conn, send, request, control)
}

#[tokio::test]
async fn writes_wait_for_the_peers_max_data_and_say_so() {
    init_log();
    let support::RawServer {
        endpoint,
        port,
        client,
    } = support::raw_server();
    let server = tokio::spawn(raw_server_session(endpoint, 1000, 10));
    let session = client
        .connect(&format!("https://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let (conn, mut connect_send, mut connect_recv, _control) = server.await.unwrap();
    assert!(session.connection().protocol().flow_control);
    let mut uni = session.open_uni().await.unwrap();
    let writer = tokio::spawn(async move {
        uni.write_all(&[9u8; 5000]).await.unwrap();
        uni.finish().unwrap();
    });
    // The peer hears that we are blocked at its limit of 1000.
    let blocked = tokio::time::timeout(T, connect_recv.capsule(ty::WT_DATA_BLOCKED))
        .await
        .unwrap();
    assert_eq!(blocked, Some(Capsule::DataBlocked(VarInt::from_u32(1000))));
    // Exactly the credit came, no more.
    // Our control stream comes first, then the WebTransport stream.
    let _control = tokio::time::timeout(T, conn.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let mut stream = tokio::time::timeout(T, conn.accept_uni())
        .await
        .unwrap()
        .unwrap();
    let mut got = vec![0u8; 3 + 1000];
    tokio::time::timeout(T, stream.read_exact(&mut got))
        .await
        .expect("the first 1000 bytes came")
        .unwrap();
    assert_eq!(
        got[..3],
        [0x40, 0x54, 0x00],
        "a WebTransport stream of session 0"
    );
    assert!(!writer.is_finished());
    // More credit: the rest follows.
    connect_send
        .write_all(&support::framed_capsule(&Capsule::MaxData(
            VarInt::from_u32(6000),
        )))
        .await
        .unwrap();
    let rest = tokio::time::timeout(T, stream.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.len(), 4000);
    tokio::time::timeout(T, writer).await.unwrap().unwrap();
}

#[tokio::test]
async fn stream_opens_wait_for_the_peers_max_streams_and_say_so() {
    init_log();
    let support::RawServer {
        endpoint,
        port,
        client,
    } = support::raw_server();
    let server = tokio::spawn(raw_server_session(endpoint, 1 << 20, 1));
    let session = client
        .connect(&format!("https://127.0.0.1:{port}/"))
        .await
        .unwrap();
    let (_conn, mut connect_send, mut connect_recv, _control) = server.await.unwrap();
    let _first = session.open_bi().await.unwrap();
    let s = session.clone();
    let second = tokio::spawn(async move { s.open_bi().await.map(|_| ()) });
    let blocked = tokio::time::timeout(T, connect_recv.capsule(ty::WT_STREAMS_BLOCKED_BIDI))
        .await
        .unwrap();
    assert_eq!(
        blocked,
        Some(Capsule::StreamsBlocked {
            bidi: true,
            max: VarInt::from_u32(1)
        })
    );
    assert!(!second.is_finished());
    connect_send
        .write_all(&support::framed_capsule(&Capsule::MaxStreams {
            bidi: true,
            max: VarInt::from_u32(2),
        }))
        .await
        .unwrap();
    tokio::time::timeout(T, second)
        .await
        .expect("the open went through once credit came")
        .unwrap()
        .unwrap();
}
