//! The connection API's behaviours as pywebtransport 0.8.1 describes them (the seed's
//! `WebTransportConnection`), each checked on real sockets: states in order and waits that
//! wait, a closed connection that stays closed, a graceful close and an abrupt one, health
//! monitoring that notices a silent peer, an idle timer that activity resets, and
//! statistics counted where the seed counts them. Tests about time run on tokio's paused
//! clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use webtransport::*;
use webtransport_relay::{Direction, Relay, RelayConfig};

const T: Duration = Duration::from_secs(10);

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server that accepts every session and records how each ended.
struct Fixture {
    server: Arc<Server>,
    cert: SelfSignedCertificate,
    ends: Arc<Mutex<Vec<Result<CloseInfo, SessionError>>>>,
}

impl Fixture {
    async fn new(tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
        init_log();
        let cert = generate_self_signed(&["localhost", "127.0.0.1"]).unwrap();
        let mut cfg = ServerConfig {
            bind: vec!["127.0.0.1:0".parse().unwrap()],
            certificate: cert.to_certificate_source(),
            ..ServerConfig::default()
        };
        tweak(&mut cfg);
        let server = Arc::new(Server::bind(cfg).await.unwrap());
        let ends: Arc<Mutex<Vec<_>>> = Arc::default();
        let (s, e) = (server.clone(), ends.clone());
        tokio::spawn(async move {
            while let Some(req) = s.accept().await {
                if req.path() == "/missing" {
                    req.reject(404);
                    continue;
                }
                let Ok(session) = req.accept() else { continue };
                let e = e.clone();
                tokio::spawn(async move {
                    // Echo datagrams while the session lives.
                    let echo = async {
                        while let Ok(d) = session.read_datagram().await {
                            let _ = session.send_datagram(&d);
                        }
                    };
                    let end = tokio::select! {
                        end = session.closed() => end,
                        _ = echo => session.closed().await,
                    };
                    e.lock().unwrap().push(end);
                });
            }
        });
        Fixture { server, cert, ends }
    }

    fn port(&self) -> u16 {
        self.server.local_addrs()[0].port()
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            verification: CertVerification::ServerCertificateHashes(vec![self.cert.sha256]),
            ..ClientConfig::default()
        }
    }

    fn options(&self, port: u16) -> ConnectOptions {
        ConnectOptions {
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
            ..ConnectOptions::default()
        }
    }

    async fn connect(&self) -> Connection {
        Connection::connect(&self.client_config(), "127.0.0.1", self.port(), "/")
            .await
            .unwrap()
    }

    /// Waits until the server recorded `n` session ends.
    async fn ends(&self, n: usize) -> Vec<Result<CloseInfo, SessionError>> {
        tokio::time::timeout(T, async {
            loop {
                if self.ends.lock().unwrap().len() >= n {
                    return self.ends.lock().unwrap().clone();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the server saw the sessions end")
    }
}

#[tokio::test]
async fn a_connection_is_idle_then_connecting_then_connected() {
    let fx = Fixture::new(|_| {}).await;
    let conn = Connection::new_client(&fx.client_config(), fx.options(fx.port())).unwrap();
    assert_eq!(conn.state(), ConnectionState::Idle);
    assert!(!conn.is_connected() && !conn.is_closed());
    assert_eq!(conn.remote_address(), None);
    conn.start();
    assert_eq!(conn.state(), ConnectionState::Connecting);
    let waiter = conn.clone();
    let ready = tokio::spawn(async move { waiter.wait_ready(T).await });
    ready.await.unwrap().unwrap();
    assert!(conn.is_connected());
    assert_eq!(conn.state(), ConnectionState::Connected);
    let id = conn.wait_for_ready_session(T).await.unwrap();
    let session = conn.establish().await.unwrap();
    assert_eq!(session.id(), id);
    assert_eq!(conn.remote_address(), Some(fx.server.local_addrs()[0]));
}

#[tokio::test(start_paused = true)]
async fn wait_ready_says_why_a_connection_never_came_up() {
    init_log();
    // A UDP port where nobody answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cert = generate_self_signed(&["localhost"]).unwrap();
    let config = ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        connect_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    };
    let opts = ConnectOptions {
        host: "127.0.0.1".into(),
        port: silent.local_addr().unwrap().port(),
        ..ConnectOptions::default()
    };
    let conn = Connection::new_client(&config, opts).unwrap();
    conn.start();
    let started = tokio::time::Instant::now();
    let err = conn.wait_ready(Duration::from_secs(60)).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::Timeout(d) if d == Duration::from_secs(3)),
        "{err:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(conn.state(), ConnectionState::Failed);
    assert!(err.is_retriable());
}

#[tokio::test]
async fn a_closed_connection_stays_closed() {
    let fx = Fixture::new(|_| {}).await;
    let conn = fx.connect().await;
    for c in fx.server.connections() {
        c.abort(Code::H3_INTERNAL_ERROR, "server crashed");
    }
    let why = tokio::time::timeout(T, conn.wait_closed()).await.unwrap();
    assert!(
        matches!(&why, ConnectionError::PeerError { code, .. } if *code == Code::H3_INTERNAL_ERROR),
        "{why:?}"
    );
    assert_eq!(conn.state(), ConnectionState::Failed);
    // Closing, aborting or sending GOAWAY afterwards changes nothing.
    conn.close(0, "too late").await;
    conn.abort(Code::H3_NO_ERROR, "too late");
    conn.goaway();
    assert_eq!(conn.state(), ConnectionState::Failed);
    assert_eq!(conn.close_reason(), Some(why));

    // The same after a clean close by the peer: Closed, not Closing.
    let conn = fx.connect().await;
    for c in fx.server.connections() {
        c.abort(Code::H3_NO_ERROR, "bye");
    }
    tokio::time::timeout(T, conn.wait_closed()).await.unwrap();
    assert_eq!(conn.state(), ConnectionState::Closed);
    conn.close(0, "too late").await;
    assert_eq!(conn.state(), ConnectionState::Closed);
    assert!(!conn.is_closing());
}

#[tokio::test]
async fn close_is_graceful_and_abort_is_not() {
    let fx = Fixture::new(|_| {}).await;
    let conn = fx.connect().await;
    let request = conn
        .session(conn.get_ready_session_id().unwrap())
        .unwrap()
        .request()
        .unwrap();
    let _second = conn.open_session(request).await.unwrap();
    assert_eq!(conn.get_all_sessions().len(), 2);
    conn.close(7, "bye from both").await;
    assert!(conn.is_closed());
    assert_eq!(conn.state(), ConnectionState::Closed);
    assert_eq!(conn.close_reason(), Some(ConnectionError::LocallyClosed));
    // Every session got its close capsule before the connection went.
    let ends = fx.ends(2).await;
    for end in &ends {
        assert_eq!(
            end.as_ref().ok(),
            Some(&CloseInfo {
                code: 7,
                reason: "bye from both".into(),
                remote: true
            }),
            "{ends:?}"
        );
    }

    // Abort: no capsule, the server's session ends with the connection.
    let conn = fx.connect().await;
    conn.abort(Code::H3_NO_ERROR, "gone");
    let ends = fx.ends(3).await;
    assert!(
        matches!(
            &ends[2],
            Err(SessionError::Connection(ConnectionError::ApplicationClosed { reason, .. })) if reason == "gone"
        ),
        "{:?}",
        ends[2]
    );
}

#[tokio::test(start_paused = true)]
async fn monitor_health_measures_rtt_and_notices_a_silent_peer() {
    let fx = Fixture::new(|_| {}).await;
    let relay = Relay::start(fx.server.local_addrs()[0], RelayConfig::default()).unwrap();
    let conn = Connection::connect(&fx.client_config(), "127.0.0.1", relay.addr().port(), "/")
        .await
        .unwrap();
    let mut events = conn.events();
    let monitor = tokio::spawn({
        let conn = conn.clone();
        async move {
            conn.monitor_health(Duration::from_secs(1), Duration::from_millis(500))
                .await
        }
    });
    // Answered while the path works, with a measured round trip.
    let rtt = loop {
        match tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ConnectionEvent::HealthCheckPassed { rtt } => break rtt,
            ConnectionEvent::HealthCheckFailed { .. } => panic!("failed on a working path"),
            _ => {}
        }
    };
    assert!(rtt < Duration::from_millis(500), "{rtt:?}");
    // The path goes silent: the next check is not answered.
    relay.set_blackhole(Direction::Both, true);
    let silent_since = tokio::time::Instant::now();
    let waited = loop {
        let event = tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let ConnectionEvent::HealthCheckFailed { waited } = event {
            break waited;
        }
    };
    assert_eq!(waited, Duration::from_millis(500));
    assert!(silent_since.elapsed() <= Duration::from_millis(1500));
    monitor.abort();

    // A zero interval neither panics nor spins: it counts as 1 ms.
    let conn = fx.connect().await;
    let zero = tokio::spawn(async move {
        conn.monitor_health(Duration::ZERO, Duration::ZERO).await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!zero.is_finished());
    zero.abort();
}

#[tokio::test(start_paused = true)]
async fn record_activity_and_traffic_reset_the_servers_idle_timer() {
    let fx = Fixture::new(|c| c.connection_idle_timeout = Some(Duration::from_secs(2))).await;

    // Nothing happens: the server closes the connection after its idle timeout, although
    // QUIC keep-alives flow.
    let quiet = fx.connect().await;
    let started = tokio::time::Instant::now();
    let why = tokio::time::timeout(T, quiet.wait_closed()).await.unwrap();
    assert!(
        matches!(&why, ConnectionError::ApplicationClosed { reason, .. } if reason == "idle timeout"),
        "{why:?}"
    );
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_secs(2) && idle < Duration::from_secs(3),
        "{idle:?}"
    );

    // The server's application records activity: the connection stays.
    let kept = fx.connect().await;
    let server_side = fx.server.connections().pop().unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        server_side.record_activity();
    }
    assert!(kept.is_connected(), "closed while activity was recorded");

    // So does traffic: a datagram each half second for 5 s.
    let session = kept.session(kept.get_ready_session_id().unwrap()).unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        session.send_datagram(b"still here").unwrap();
    }
    assert!(kept.is_connected(), "closed while datagrams flowed");
    // Then it goes quiet, and is closed.
    let why = tokio::time::timeout(T, kept.wait_closed()).await.unwrap();
    assert!(
        matches!(&why, ConnectionError::ApplicationClosed { reason, .. } if reason == "idle timeout"),
        "{why:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn traffic_keeps_a_connection_from_looking_stale() {
    let fx = Fixture::new(|_| {}).await;
    let conn = fx.connect().await;
    let session = conn.session(conn.get_ready_session_id().unwrap()).unwrap();
    // 40 s of a datagram every 5 s: older than the 30 s of staleness, never idle that long.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        session.send_datagram(b"tick").unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), session.read_datagram()).await;
    }
    let d = conn.diagnostics();
    assert!(d.stats.uptime() >= Duration::ZERO);
    assert!(d.idle < Duration::from_secs(6), "{:?}", d.idle);
    assert!(
        !d.issues().iter().any(|i| matches!(i, Issue::Stale { .. })),
        "{:?}",
        d.issues()
    );
    // 31 s without WebTransport traffic (QUIC keep-alives go on): stale.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert!(conn.is_connected());
    assert!(
        conn.diagnostics()
            .issues()
            .iter()
            .any(|i| matches!(i, Issue::Stale { .. })),
        "{:?}",
        conn.diagnostics().issues()
    );
}

#[tokio::test]
async fn bytes_errors_and_packets_in_flight_are_counted_where_the_seed_counts_them() {
    let fx = Fixture::new(|_| {}).await;
    let conn = fx.connect().await;
    // Only HTTP/3 has been sent so far: SETTINGS and the CONNECT request, not the TLS
    // handshake that QUIC's own counters include.
    let start = conn.info();
    assert!(start.bytes_sent > 0 && start.bytes_sent < 300, "{start:?}");
    let session = conn.session(conn.get_ready_session_id().unwrap()).unwrap();
    let mut send = session.open_uni().await.unwrap();
    send.write_all(&[1u8; 10_000]).await.unwrap();
    send.finish().unwrap();
    let after = conn.info();
    let delta = after.bytes_sent - start.bytes_sent;
    assert!((10_000..10_100).contains(&delta), "{delta}");

    // A datagram that arrives is counted by the time the application has it.
    let before = conn.info().bytes_received;
    session.send_datagram(&[3u8; 500]).unwrap();
    let echoed = tokio::time::timeout(T, session.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.len(), 500);
    let received = conn.info().bytes_received - before;
    assert!((500..600).contains(&received), "{received}");

    // Every refused session is an error of the connection's.
    let request = session.request().unwrap();
    for _ in 0..3 {
        let refused = webtransport::proto::headers::ConnectRequest {
            path: "/missing".into(),
            ..request.clone()
        };
        assert!(matches!(
            conn.open_session(refused).await,
            Err(ConnectError::Rejected(404))
        ));
    }
    assert_eq!(conn.info().error_count, 3);

    // Once everything is acknowledged, nothing is in flight (not the congestion window
    // divided by the MTU).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = conn.diagnostics();
    assert!(
        d.packets_in_flight <= 1,
        "{} in flight",
        d.packets_in_flight
    );
    assert!(d.cwnd / 1200 >= 10);
}
