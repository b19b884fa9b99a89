//! The connection-management layer (`webtransport::manage`) against real `Server`s on
//! loopback: load-balancer strategies, failover and recovery, coalescing, timeouts, the
//! reconnecting client, fleets, pools and client statistics.
//!
//! Measured numbers are printed (`cargo test --test manage -- --nocapture` shows them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use webtransport::manage::*;
use webtransport::*;

const T: Duration = Duration::from_secs(10);

fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn cert() -> SelfSignedCertificate {
    generate_self_signed(&["localhost", "127.0.0.1"]).unwrap()
}

fn client_config(cert: &SelfSignedCertificate, connect_timeout: Duration) -> ClientConfig {
    ClientConfig {
        verification: CertVerification::ServerCertificateHashes(vec![cert.sha256]),
        connect_timeout,
        ..ClientConfig::default()
    }
}

/// A `Server` that accepts every session and keeps it until the client closes it, and that
/// can be stopped and started again on the same address.
struct TestServer {
    certificate: CertificateSource,
    addr: SocketAddr,
    server: Option<Arc<Server>>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    async fn start(cert: &SelfSignedCertificate) -> TestServer {
        let mut s = TestServer {
            certificate: cert.to_certificate_source(),
            addr: "127.0.0.1:0".parse().unwrap(),
            server: None,
            accept: None,
        };
        s.bind().await;
        s
    }

    /// Binds `self.addr`; after a stop the old socket may linger for a moment while its
    /// connections drain, so this retries for a while.
    async fn bind(&mut self) {
        let started = Instant::now();
        let server = loop {
            let cfg = ServerConfig {
                bind: vec![self.addr],
                certificate: self.certificate.clone(),
                ..ServerConfig::default()
            };
            match Server::bind(cfg).await {
                Ok(s) => break Arc::new(s),
                Err(e) if started.elapsed() < Duration::from_secs(5) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("could not bind {}: {e}", self.addr),
            }
        };
        self.addr = server.local_addrs()[0];
        let s = server.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Some(req) = s.accept().await {
                if let Ok(session) = req.accept() {
                    tokio::spawn(async move {
                        let _ = session.closed().await;
                    });
                }
            }
        }));
        self.server = Some(server);
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn target(&self) -> (String, u16) {
        ("127.0.0.1".to_owned(), self.port())
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port())
    }

    /// Graceful shutdown, then the server is dropped: its port is closed.
    async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_millis(100)).await;
            if let Some(a) = self.accept.take() {
                a.abort();
                let _ = a.await;
            }
            drop(server);
        }
    }

    async fn restart(&mut self) {
        assert!(self.server.is_none());
        self.bind().await;
    }
}

/// A UDP relay on 127.0.0.1 that forwards datagrams to `upstream` and back, each one
/// `delay` late: a slow path to a server on loopback.
struct Relay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(upstream: SocketAddr, delay: Duration) -> Relay {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // One upstream socket per client address, so the server sees distinct peers.
        let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        // Aborted with this task when the relay is dropped.
        let mut pumps = JoinSet::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = front.recv_from(&mut buf).await else {
                continue;
            };
            let up = match flows.get(&from) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    s.connect(upstream).await.unwrap();
                    flows.insert(from, s.clone());
                    let (back, front) = (s.clone(), front.clone());
                    pumps.spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        loop {
                            let Ok(n) = back.recv(&mut buf).await else {
                                continue;
                            };
                            let packet = buf[..n].to_vec();
                            let front = front.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = front.send_to(&packet, from).await;
                            });
                        }
                    });
                    s
                }
            };
            let packet = buf[..n].to_vec();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = up.send(&packet).await;
            });
        }
    });
    Relay { addr, task }
}

async fn three_servers(cert: &SelfSignedCertificate) -> Vec<TestServer> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(TestServer::start(cert).await);
    }
    v
}

type Counts = Arc<Mutex<HashMap<u16, usize>>>;

/// The default factory, counting connects per port.
fn counting_factory(counts: Counts) -> ConnectionFactory {
    let real = default_connection_factory();
    Arc::new(move |config, host, port, path| {
        *counts.lock().unwrap().entry(port).or_insert(0) += 1;
        real(config, host, port, path)
    })
}

fn lb_config(factory: Option<ConnectionFactory>, reuse: bool) -> LoadBalancerConfig {
    LoadBalancerConfig {
        health_check_interval: Duration::from_millis(150),
        health_check_timeout: Duration::from_millis(500),
        reuse_connections: reuse,
        connection_factory: factory,
        health_checker: None,
    }
}

fn spread(picks: &[u16], ports: &[u16]) -> Vec<usize> {
    ports
        .iter()
        .map(|p| picks.iter().filter(|x| *x == p).count())
        .collect()
}

/// 300 round-robin `get_connection` calls through a fresh balancer over `servers`: the
/// balancer, the calls per target and the connects the factory made per target.
async fn round_robin_300(
    servers: &[TestServer],
    ports: &[u16],
    cfg: &ClientConfig,
    reuse: bool,
) -> (LoadBalancer, Vec<usize>, Vec<usize>) {
    let counts: Counts = Arc::default();
    let lb = LoadBalancer::new(
        servers.iter().map(TestServer::target),
        lb_config(Some(counting_factory(counts.clone())), reuse),
    )
    .unwrap();
    let mut picks = Vec::new();
    for _ in 0..300 {
        let c = lb
            .get_connection(cfg, "/", Strategy::RoundRobin)
            .await
            .unwrap();
        picks.push(c.remote_address().expect("connected").port());
    }
    let connects = ports
        .iter()
        .map(|p| counts.lock().unwrap().get(p).copied().unwrap_or(0))
        .collect();
    (lb, spread(&picks, ports), connects)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    init_log();
    let cert = cert();
    let servers = three_servers(&cert).await;
    let ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    let cfg = client_config(&cert, T);

    // Without reuse: every call is a new connection to the next target.
    let (lb, by_target, connects) = round_robin_300(&servers, &ports, &cfg, false).await;
    println!("round robin, no reuse: picks {by_target:?}, connects {connects:?}");
    for n in &by_target {
        assert!(n.abs_diff(100) <= 1, "{by_target:?}");
    }
    assert_eq!(connects, by_target, "every call made its own connection");
    assert_eq!(lb.get_load_balancer_stats().active_connections, 0);
    lb.shutdown().await;

    // With reuse: the same rotation, served by one connection per target.
    let (lb, by_target, connects) = round_robin_300(&servers, &ports, &cfg, true).await;
    println!("round robin, reuse: picks {by_target:?}, connects {connects:?}");
    assert_eq!(by_target, [100, 100, 100]);
    assert_eq!(connects.iter().sum::<usize>(), 3);
    let stats = lb.get_load_balancer_stats();
    assert_eq!(
        stats,
        LoadBalancerStats {
            total_targets: 3,
            failed_targets: 0,
            active_connections: 3,
            available_targets: 3
        }
    );
    assert!(lb
        .get_target_stats()
        .iter()
        .all(|t| t.connected && !t.failed && t.latency.is_some() && t.connect_attempts == 1));
    lb.shutdown().await;
    assert_eq!(lb.get_load_balancer_stats().active_connections, 0);
    assert!(matches!(
        lb.get_connection(&cfg, "/", Strategy::RoundRobin).await,
        Err(LoadBalancerError::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_weights_and_updates() {
    init_log();
    let cert = cert();
    let servers = three_servers(&cert).await;
    let ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    let cfg = client_config(&cert, T);
    let lb = LoadBalancer::new(
        servers.iter().map(TestServer::target),
        lb_config(None, true),
    )
    .unwrap();

    let check = async |weights: [f64; 3]| {
        for (s, w) in servers.iter().zip(weights) {
            lb.update_target_weight("127.0.0.1", s.port(), w).unwrap();
        }
        let mut picks = Vec::new();
        for _ in 0..1000 {
            let c = lb
                .get_connection(&cfg, "/", Strategy::Weighted)
                .await
                .unwrap();
            picks.push(c.remote_address().expect("connected").port());
        }
        let total: f64 = weights.iter().sum();
        let pct: Vec<f64> = spread(&picks, &ports)
            .iter()
            .map(|n| *n as f64 / 10.0)
            .collect();
        println!("weighted {weights:?}: {pct:?} %");
        for (p, w) in pct.iter().zip(weights) {
            let want = 100.0 * w / total;
            assert!((p - want).abs() <= 5.0, "{pct:?} vs weights {weights:?}");
        }
    };
    check([5.0, 3.0, 2.0]).await;
    check([1.0, 1.0, 8.0]).await;
    check([0.0, 1.0, 1.0]).await;
    assert_eq!(
        lb.get_target_stats()
            .iter()
            .map(|t| t.weight)
            .collect::<Vec<_>>(),
        [0.0, 1.0, 1.0]
    );
    assert!(matches!(
        lb.update_target_weight("127.0.0.1", 1, 1.0),
        Err(LoadBalancerError::UnknownTarget { .. })
    ));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_latency_picks_the_target_without_a_relay() {
    init_log();
    let cert = cert();
    let servers = three_servers(&cert).await;
    let delay = Duration::from_millis(40);
    let slow1 = relay(servers[0].addr, delay).await;
    let slow2 = relay(servers[1].addr, delay).await;
    // The fast target comes last, so the first pick (all unmeasured) is not it.
    let targets = vec![
        ("127.0.0.1".to_owned(), slow1.addr.port()),
        ("127.0.0.1".to_owned(), slow2.addr.port()),
        servers[2].target(),
    ];
    let fast = servers[2].port();
    let cfg = client_config(&cert, T);
    let lb = LoadBalancer::new(targets.clone(), lb_config(None, true)).unwrap();
    let mut explored = Vec::new();
    for _ in 0..3 {
        let c = lb
            .get_connection(&cfg, "/", Strategy::LeastLatency)
            .await
            .unwrap();
        explored.push(c.remote_address().expect("connected").port());
    }
    assert_eq!(
        explored,
        targets.iter().map(|t| t.1).collect::<Vec<_>>(),
        "each unmeasured target is tried once, in order"
    );
    let mut picks = Vec::new();
    for _ in 0..30 {
        let c = lb
            .get_connection(&cfg, "/", Strategy::LeastLatency)
            .await
            .unwrap();
        picks.push(c.remote_address().expect("connected").port());
    }
    let latencies: Vec<Duration> = lb
        .get_target_stats()
        .iter()
        .map(|t| t.latency.unwrap())
        .collect();
    println!(
        "least latency: connect latencies {latencies:?}, next 30 picks all to port {}? {}",
        fast,
        picks.iter().all(|p| *p == fast)
    );
    assert!(picks.iter().all(|p| *p == fast), "{picks:?}");
    assert!(latencies[2] < latencies[0] && latencies[2] < latencies[1]);
    assert!(
        latencies[0] >= 2 * delay && latencies[1] >= 2 * delay,
        "{latencies:?}"
    );

    // Without reuse every call measures again and still lands on the fast target.
    let lb2 = LoadBalancer::new(targets, lb_config(None, false)).unwrap();
    let mut picks = Vec::new();
    for _ in 0..13 {
        let c = lb2
            .get_connection(&cfg, "/", Strategy::LeastLatency)
            .await
            .unwrap();
        picks.push(c.remote_address().expect("connected").port());
    }
    println!("least latency, no reuse: picks {picks:?}");
    assert!(picks[3..].iter().all(|p| *p == fast), "{picks:?}");
    lb.shutdown().await;
    lb2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_loses_its_traffic_and_gets_it_back_after_restart() {
    init_log();
    let cert = cert();
    let mut servers = three_servers(&cert).await;
    let ports: Vec<u16> = servers.iter().map(TestServer::port).collect();
    let victim = ports[1];
    let cfg = client_config(&cert, Duration::from_millis(1500));
    let lb = LoadBalancer::new(
        servers.iter().map(TestServer::target),
        lb_config(None, true),
    )
    .unwrap();

    // Traffic: one get_connection after another until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (lb, cfg, stop) = (lb.clone(), cfg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut log: Vec<(Instant, Result<u16, LoadBalancerError>)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let at = Instant::now();
                let r = lb.get_connection(&cfg, "/", Strategy::RoundRobin).await;
                log.push((at, r.map(|c| c.remote_address().expect("connected").port())));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            log
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    servers[1].stop().await;
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before_restart = Instant::now();
    let failed_while_down = lb.get_target_stats()[1].clone();
    servers[1].restart().await;
    assert_eq!(servers[1].port(), victim);
    let restarted = Instant::now();
    let back = loop {
        if !lb.get_target_stats()[1].failed {
            break Instant::now();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "never put back"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    let log = traffic.await.unwrap();

    let errors: Vec<_> = log.iter().filter(|(_, r)| r.is_err()).collect();
    let window = |from: Instant, to: Instant| -> Vec<u16> {
        log.iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .filter_map(|(_, r)| r.as_ref().ok().copied())
            .collect()
    };
    let before = window(log[0].0, stopped - Duration::from_millis(50));
    let down = window(stopped + Duration::from_millis(50), before_restart);
    let after = window(back, Instant::now());
    println!(
        "failover: {} calls, {} errors; before stop {:?}, while down {:?}, after restart {:?} \
         (per target); back in rotation {:?} after the restart",
        log.len(),
        errors.len(),
        spread(&before, &ports),
        spread(&down, &ports),
        spread(&after, &ports),
        back - restarted
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(spread(&before, &ports).iter().all(|n| *n > 0));
    assert!(!down.is_empty() && !down.contains(&victim), "{down:?}");
    assert!(failed_while_down.failed && failed_while_down.connect_failures >= 1);
    assert!(after.contains(&victim), "{after:?}");
    // Put back by the first health check after the restart (interval 150 ms).
    assert!(back - restarted < Duration::from_millis(1000));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_calls_share_one_connect() {
    init_log();
    let cert = cert();
    let server = TestServer::start(&cert).await;
    let cfg = client_config(&cert, T);
    let counts: Counts = Arc::default();
    let lb = LoadBalancer::new(
        [server.target()],
        lb_config(Some(counting_factory(counts.clone())), true),
    )
    .unwrap();
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let (lb, cfg) = (lb.clone(), cfg.clone());
        calls.spawn(async move {
            lb.get_connection(&cfg, "/", Strategy::RoundRobin)
                .await
                .map(|c| (c.local_address(), c))
        });
    }
    // All 50 are alive together, so two connections would have two local ports.
    let ids: Vec<(Option<SocketAddr>, Connection)> = calls
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let connects = counts.lock().unwrap()[&server.port()];
    println!(
        "coalescing: 50 calls, {connects} connect(s), {} distinct connection(s)",
        ids.iter()
            .map(|i| i.0)
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    assert_eq!(connects, 1);
    assert!(ids[0].0.is_some() && ids.iter().all(|id| id.0 == ids[0].0));
    assert_eq!(lb.get_target_stats()[0].connect_attempts, 1);
    lb.shutdown().await;
}

/// Every target down: the call tries each once, each for at most its own `connect_timeout`,
/// and says no target is available; the next call says so at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_target_available_within_one_timeout_per_target() {
    init_log();
    let cert = cert();
    let timeout = Duration::from_millis(900);
    let cfg = client_config(&cert, timeout);

    // Three servers that were up and then went away.
    let mut servers = three_servers(&cert).await;
    let lb = LoadBalancer::new(
        servers.iter().map(TestServer::target),
        lb_config(None, true),
    )
    .unwrap();
    for _ in 0..3 {
        lb.get_connection(&cfg, "/", Strategy::RoundRobin)
            .await
            .unwrap();
    }
    for s in &mut servers {
        s.stop().await;
    }
    let started = Instant::now();
    let r = lb.get_connection(&cfg, "/", Strategy::RoundRobin).await;
    let took = started.elapsed();
    println!("all down (were up): {took:?}: {r:?}");
    assert!(
        matches!(
            r,
            Err(LoadBalancerError::NoTargetsAvailable { total: 3, .. })
        ),
        "{r:?}"
    );
    assert!(took < 3 * timeout + Duration::from_millis(300), "{took:?}");
    let started = Instant::now();
    let r = lb.get_connection(&cfg, "/", Strategy::RoundRobin).await;
    assert!(matches!(
        r,
        Err(LoadBalancerError::NoTargetsAvailable { .. })
    ));
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(lb.get_load_balancer_stats().available_targets, 0);
    lb.shutdown().await;

    // Three ports where nothing ever listened: every target is tried, once.
    let mut dead = Vec::new();
    for _ in 0..3 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        dead.push(("127.0.0.1".to_owned(), s.local_addr().unwrap().port()));
    }
    let lb = LoadBalancer::new(dead, lb_config(None, true)).unwrap();
    let started = Instant::now();
    let r = lb.get_connection(&cfg, "/", Strategy::RoundRobin).await;
    let took = started.elapsed();
    let attempts: Vec<u64> = lb
        .get_target_stats()
        .iter()
        .map(|t| t.connect_attempts)
        .collect();
    println!("all down (never up): {took:?}, attempts {attempts:?}: {r:?}");
    assert!(matches!(
        r,
        Err(LoadBalancerError::NoTargetsAvailable {
            total: 3,
            last_error: Some(_)
        })
    ));
    assert_eq!(attempts, [1, 1, 1]);
    assert!(took < 3 * timeout + Duration::from_millis(300), "{took:?}");
    lb.shutdown().await;
}

// The time limit of `get_connection`: each candidate's connect has the config's whole
// `connect_timeout`, and only a connect that fails or runs past it marks its target failed.
// These run on the paused clock. A QUIC handshake does not belong on it: the paused clock
// jumps to the next timer whenever the runtime waits, even for a packet already on its way,
// and quinn keeps its own time with `std::time::Instant`. So the one real connection these
// tests hand out is made first and the clock paused after it (`tokio::time::pause`, as
// `start_paused` would); from then on the factories only wait on tokio's clock.

/// Four targets on ports 1 to 4 that nothing contacts (the factories below ignore the
/// address), with no health check during the test.
fn four_targets() -> Vec<(String, u16)> {
    (1..=4).map(|p| ("127.0.0.1".to_owned(), p)).collect()
}

fn paused_lb_config(factory: ConnectionFactory) -> LoadBalancerConfig {
    LoadBalancerConfig {
        health_check_interval: Duration::from_secs(3600),
        ..lb_config(Some(factory), true)
    }
}

/// A server and a live connection to it, made on the running clock; then the clock is paused.
async fn connection_then_pause(cert: &SelfSignedCertificate) -> (TestServer, Connection) {
    let server = TestServer::start(cert).await;
    let conn = Connection::connect(&client_config(cert, T), "127.0.0.1", server.port(), "/")
        .await
        .unwrap();
    tokio::time::pause();
    (server, conn)
}

/// The `connect_timeout` of every config a factory was given.
type Seen = Arc<Mutex<Vec<Duration>>>;

/// A factory whose connect to `slow_port` takes `delay` on tokio's clock before it hands out
/// `conn`; connects to other ports hand it out at once.
fn slow_factory(
    conn: Connection,
    slow_port: u16,
    delay: Duration,
    seen: Seen,
) -> ConnectionFactory {
    Arc::new(move |config, _host, port, _path| {
        seen.lock().unwrap().push(config.connect_timeout);
        let conn = conn.clone();
        Box::pin(async move {
            if port == slow_port {
                tokio::time::sleep(delay).await;
            }
            Ok(conn)
        })
    })
}

/// A factory whose connects never answer.
fn silent_factory(seen: Seen) -> ConnectionFactory {
    Arc::new(move |config, _host, _port, _path| {
        seen.lock().unwrap().push(config.connect_timeout);
        Box::pin(std::future::pending())
    })
}

fn failed(lb: &LoadBalancer) -> Vec<bool> {
    lb.get_target_stats().iter().map(|t| t.failed).collect()
}

/// Four targets and 5 s: the old even split gave the first candidate 1.25 s, so a healthy
/// target needing 3 s was marked failed. Now it has the whole 5 s.
#[tokio::test]
async fn a_healthy_target_slower_than_an_even_share_is_not_marked_failed() {
    init_log();
    let cert = cert();
    let (_server, conn) = connection_then_pause(&cert).await;
    let seen = Seen::default();
    let lb = LoadBalancer::new(
        four_targets(),
        paused_lb_config(slow_factory(conn, 1, Duration::from_secs(3), seen.clone())),
    )
    .unwrap();
    let cfg = client_config(&cert, Duration::from_secs(5));
    let started = Instant::now();
    let r = lb.get_connection(&cfg, "/", Strategy::RoundRobin).await;
    let took = started.elapsed();
    let stats = lb.get_target_stats();
    println!(
        "slow target: {took:?}, factory given {:?}: {:?}",
        seen.lock().unwrap(),
        r.as_ref().map(|_| "a connection")
    );
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(failed(&lb), [false; 4]);
    assert_eq!(stats[0].connect_failures, 0);
    assert!(stats[0].connected, "the slow target served the call");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
        "{took:?}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [Duration::from_secs(5)],
        "config passed unchanged"
    );
    lb.shutdown().await;
}

/// The caller's own limit (a `tokio::time::timeout` around the call) running out drops the
/// call; that is no target's fault. A call that was waiting for the dropped connect starts
/// its own and gets the target.
#[tokio::test]
async fn the_callers_timeout_running_out_marks_no_target_failed() {
    init_log();
    let cert = cert();
    let (_server, conn) = connection_then_pause(&cert).await;
    let seen = Seen::default();
    let lb = LoadBalancer::new(
        four_targets(),
        paused_lb_config(slow_factory(conn, 1, Duration::from_secs(3), seen.clone())),
    )
    .unwrap();
    let cfg = client_config(&cert, Duration::from_secs(5));
    // Least latency with nothing measured picks the first target in both calls, so the
    // second one joins the first one's connect.
    let first = {
        let (lb, cfg) = (lb.clone(), cfg.clone());
        tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                lb.get_connection(&cfg, "/", Strategy::LeastLatency),
            )
            .await
        })
    };
    tokio::task::yield_now().await;
    let started = Instant::now();
    let joined = {
        let (lb, cfg) = (lb.clone(), cfg.clone());
        tokio::spawn(async move { lb.get_connection(&cfg, "/", Strategy::LeastLatency).await })
    };
    let first = first.await.unwrap();
    println!(
        "caller's timeout: {:?}; targets failed {:?}",
        first.as_ref().map(|r| r.as_ref().map(|_| "a connection")),
        failed(&lb)
    );
    assert!(first.is_err(), "the caller's 2 s did not run out first");
    assert_eq!(failed(&lb), [false; 4]);
    assert_eq!(lb.get_target_stats()[0].connect_failures, 0);

    let joined = joined.await.unwrap();
    let took = started.elapsed();
    println!(
        "the call that had joined: {took:?}: {:?}",
        joined.as_ref().map(|_| "a connection")
    );
    assert!(joined.is_ok(), "{joined:?}");
    // It waited for the dropped connect (2 s), then made its own (3 s).
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_millis(5100),
        "{took:?}"
    );
    let stats = lb.get_target_stats();
    assert_eq!(stats[0].connect_attempts, 2);
    assert!(stats[0].connected && !stats[0].failed);
    assert_eq!(failed(&lb), [false; 4]);
    lb.shutdown().await;
}

/// A call that joins a connect in flight waits for that connect, however short its own
/// `connect_timeout`: it starts no connect, so it has no limit of its own to run out.
#[tokio::test]
async fn a_call_that_joins_waits_for_the_connect_in_flight() {
    init_log();
    let cert = cert();
    let (_server, conn) = connection_then_pause(&cert).await;
    let seen = Seen::default();
    let lb = LoadBalancer::new(
        four_targets(),
        paused_lb_config(slow_factory(conn, 1, Duration::from_secs(3), seen.clone())),
    )
    .unwrap();
    let first = {
        let (lb, cfg) = (lb.clone(), client_config(&cert, Duration::from_secs(5)));
        tokio::spawn(async move { lb.get_connection(&cfg, "/", Strategy::LeastLatency).await })
    };
    tokio::task::yield_now().await;
    let short = client_config(&cert, Duration::from_secs(1));
    let started = Instant::now();
    let joined = lb.get_connection(&short, "/", Strategy::LeastLatency).await;
    let took = started.elapsed();
    println!(
        "joined with a 1 s connect_timeout: {took:?}: {:?}",
        joined.as_ref().map(|_| "a connection")
    );
    assert!(joined.is_ok(), "{joined:?}");
    assert!(first.await.unwrap().is_ok());
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_millis(3100),
        "{took:?}"
    );
    assert_eq!(
        lb.get_target_stats()[0].connect_attempts,
        1,
        "one connect, shared"
    );
    assert_eq!(failed(&lb), [false; 4]);
    lb.shutdown().await;
}

/// Targets that never answer: each is given up after its own whole `connect_timeout` and
/// marked failed (the old even split gave up on each after half of it).
#[tokio::test(start_paused = true)]
async fn a_target_past_its_own_connect_timeout_is_marked_failed() {
    init_log();
    let seen = Seen::default();
    let lb = LoadBalancer::new(
        four_targets().into_iter().take(2),
        paused_lb_config(silent_factory(seen.clone())),
    )
    .unwrap();
    let cfg = ClientConfig {
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let started = Instant::now();
    let r = lb.get_connection(&cfg, "/", Strategy::RoundRobin).await;
    let took = started.elapsed();
    println!(
        "two silent targets: {took:?}, factory given {:?}: {r:?}",
        seen.lock().unwrap()
    );
    match &r {
        Err(LoadBalancerError::NoTargetsAvailable {
            total: 2,
            last_error: Some(ConnectError::Timeout(limit)),
        }) => assert_eq!(*limit, Duration::from_secs(5)),
        other => panic!("{other:?}"),
    }
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_millis(10100),
        "{took:?}"
    );
    assert_eq!(*seen.lock().unwrap(), [Duration::from_secs(5); 2]);
    assert_eq!(failed(&lb), [true, true]);
    assert!(lb
        .get_target_stats()
        .iter()
        .all(|t| t.connect_failures == 1));
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_client_survives_a_server_restart() {
    init_log();
    let cert = cert();
    let mut server = TestServer::start(&cert).await;
    let config = ClientConfig {
        retry_delay: Duration::from_millis(50),
        retry_backoff: 2.0,
        max_retry_delay: Duration::from_millis(400),
        max_retries: 100,
        ..client_config(&cert, Duration::from_millis(500))
    };
    let client = Client::new(config.clone()).unwrap();
    let rc = ReconnectingClient::start(client.clone(), &server.url()).unwrap();
    // Timestamp every event as it happens.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut rx = rc.events();
    let collector = tokio::spawn(async move {
        while let Ok(ev) = rx.recv().await {
            let _ = tx.send((Instant::now(), ev));
        }
    });
    let first = rc.get_session(T).await.unwrap();
    assert!(rc.is_connected());
    assert_eq!(rc.background_tasks(), 1);

    server.stop().await;
    let mut next = async || {
        tokio::time::timeout(T, events.recv())
            .await
            .unwrap()
            .unwrap()
    };
    loop {
        match next().await.1 {
            ReconnectEvent::Connected { attempt: 1, .. } => continue, // the first connect
            ReconnectEvent::Lost { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(first.is_closed());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.restart().await;
    let restarted = Instant::now();

    let mut failures = Vec::new();
    let (attempt, reconnected) = loop {
        match next().await {
            (
                at,
                ReconnectEvent::AttemptFailed {
                    attempt, retry_in, ..
                },
            ) => failures.push((at, attempt, retry_in)),
            (at, ReconnectEvent::Connected { attempt, .. }) => break (attempt, at),
            other => panic!("unexpected {other:?}"),
        }
    };
    let took = reconnected - restarted;
    println!(
        "reconnect: {} failed attempts while down (delays {:?}), back {took:?} after the \
         restart on attempt {attempt}",
        failures.len(),
        failures.iter().map(|f| f.2).collect::<Vec<_>>()
    );
    // Every delay follows the schedule 50, 100, 200, 400, 400, ... ms.
    for (_, n, delay) in &failures {
        assert_eq!(*delay, backoff_delay(&config, *n));
        assert!(*delay <= config.max_retry_delay);
    }
    assert_eq!(attempt as usize, failures.len() + 1);
    // Consecutive failures are at least the announced delay apart.
    for w in failures.windows(2) {
        assert!(w[1].0 - w[0].0 >= w[0].2, "{:?}", w[1].0 - w[0].0);
    }
    // Back within one maximum backoff delay plus one connect attempt after the restart.
    assert!(
        took <= config.max_retry_delay + config.connect_timeout + Duration::from_millis(300),
        "{took:?}"
    );
    let second = rc.get_session(T).await.unwrap();
    assert_ne!(
        first.connection().connection_id(),
        second.connection().connection_id()
    );
    assert!(!second.is_closed());
    let stats = client.stats();
    assert_eq!(stats.connections_attempted, attempt as u64 + 1);
    assert_eq!(stats.connections_successful, 2);

    rc.close().await;
    assert_eq!(rc.background_tasks(), 0);
    collector.abort();
    assert!(matches!(
        rc.get_session(Duration::from_millis(10)).await,
        Err(ReconnectError::Closed)
    ));
    tokio::time::timeout(T, second.closed()).await.unwrap().ok();
    assert!(second.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_client_gives_up_after_max_retries() {
    init_log();
    let cert = cert();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ClientConfig {
        retry_delay: Duration::from_millis(10),
        max_retry_delay: Duration::from_millis(20),
        max_retries: 2,
        ..client_config(&cert, Duration::from_millis(200))
    };
    let rc = ReconnectingClient::start(
        Client::new(config).unwrap(),
        &format!("https://127.0.0.1:{port}/"),
    )
    .unwrap();
    let r = rc.get_session(T).await;
    assert!(matches!(r, Err(ReconnectError::GaveUp(_))), "{r:?}");
    tokio::time::timeout(T, async {
        while rc.background_tasks() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
}

/// A health check that never answers: the loop is inside a check when shut down.
fn hanging_checker() -> HealthChecker {
    Arc::new(|_, _, _| Box::pin(std::future::pending::<bool>()))
}

fn failing_factory() -> ConnectionFactory {
    Arc::new(|_, _, _, _| Box::pin(async { Err(ConnectError::Handshake(HandshakeError::Refused)) }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_health_check_and_closes_connections() {
    init_log();
    let cert = cert();
    let servers = three_servers(&cert).await;
    let cfg = client_config(&cert, T);
    let mut targets: Vec<(String, u16)> = servers.iter().map(TestServer::target).collect();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    targets.push(("127.0.0.1".into(), dead.local_addr().unwrap().port()));
    let lb = LoadBalancer::new(
        targets,
        LoadBalancerConfig {
            health_checker: Some(hanging_checker()),
            health_check_timeout: Duration::from_secs(60),
            ..lb_config(None, true)
        },
    )
    .unwrap();
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(
            lb.get_connection(
                &client_config(&cert, Duration::from_secs(2)),
                "/",
                Strategy::RoundRobin,
            )
            .await
            .unwrap(),
        );
    }
    assert_eq!(lb.get_load_balancer_stats().failed_targets, 1);
    // Let the checker start (and hang on) the dead target.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lb.background_tasks(), 1);
    let started = Instant::now();
    lb.shutdown().await;
    println!(
        "shutdown took {:?}; background tasks after: {}",
        started.elapsed(),
        lb.background_tasks()
    );
    assert_eq!(lb.background_tasks(), 0);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(conns.iter().all(Connection::is_closed));
    assert_eq!(lb.get_load_balancer_stats().active_connections, 0);
    assert!(matches!(
        lb.get_connection(&cfg, "/", Strategy::RoundRobin).await,
        Err(LoadBalancerError::ShutDown)
    ));
}

/// The same with tokio's own count of live tasks: the balancer's task exists while it
/// runs and is gone after `shutdown` (a current-thread runtime: nothing else runs here).
#[tokio::test]
async fn shutdown_leaves_no_task_by_tokio_metrics() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let lb = LoadBalancer::new(
        [("127.0.0.1".to_owned(), 9)],
        LoadBalancerConfig {
            connection_factory: Some(failing_factory()),
            health_checker: Some(hanging_checker()),
            health_check_interval: Duration::from_millis(10),
            health_check_timeout: Duration::from_secs(60),
            ..LoadBalancerConfig::default()
        },
    )
    .unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    let r = lb
        .get_connection(&ClientConfig::default(), "/", Strategy::RoundRobin)
        .await;
    assert!(matches!(
        r,
        Err(LoadBalancerError::NoTargetsAvailable { .. })
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    lb.shutdown().await;
    assert_eq!(metrics.num_alive_tasks(), baseline);
    assert_eq!(lb.background_tasks(), 0);
    // Dropping the last handle without shutdown also ends the task.
    let lb =
        LoadBalancer::new([("127.0.0.1".to_owned(), 9)], LoadBalancerConfig::default()).unwrap();
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    drop(lb);
    // The abort takes effect when the scheduler next runs the task.
    tokio::time::timeout(Duration::from_secs(1), async {
        while metrics.num_alive_tasks() != baseline {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the health-check task outlived its balancer");
}

#[test]
fn load_balancer_needs_targets_and_a_runtime() {
    assert!(matches!(
        LoadBalancer::new(Vec::<(String, u16)>::new(), LoadBalancerConfig::default()),
        Err(LoadBalancerError::NoTargets)
    ));
    assert!(matches!(
        LoadBalancer::new([("h".to_owned(), 1)], LoadBalancerConfig::default()),
        Err(LoadBalancerError::NoRuntime)
    ));
}

#[tokio::test]
async fn a_config_error_fails_the_call_without_marking_targets() {
    let bad: ConnectionFactory =
        Arc::new(|_, _, _, _| Box::pin(async { Err(ConnectError::from(bad_config())) }));
    let lb = LoadBalancer::new(
        [
            ("a".to_owned(), 1),
            ("b".to_owned(), 2),
            ("a".to_owned(), 1),
        ],
        LoadBalancerConfig {
            connection_factory: Some(bad),
            ..LoadBalancerConfig::default()
        },
    )
    .unwrap();
    assert_eq!(lb.targets().len(), 2, "duplicates dropped");
    let r = lb
        .get_connection(&ClientConfig::default(), "/", Strategy::RoundRobin)
        .await;
    assert!(matches!(r, Err(LoadBalancerError::Connect(_))), "{r:?}");
    assert_eq!(lb.get_load_balancer_stats().failed_targets, 0);
    lb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_connects_all_and_closes_all() {
    init_log();
    let cert = cert();
    let server = TestServer::start(&cert).await;
    let fleet = ClientFleet::with_config(client_config(&cert, T), 4).unwrap();
    assert_eq!(fleet.client_count(), 4);
    let sessions = fleet.connect_all(&server.url()).await.unwrap();
    assert!(sessions.iter().all(Result::is_ok));
    drop(sessions);
    assert_eq!(fleet.open_sessions(), 4, "the fleet keeps what it opened");
    let stats = fleet.stats();
    assert_eq!(
        (stats.connections_attempted, stats.connections_successful),
        (4, 4)
    );
    let a = fleet.get_client().unwrap();
    let b = fleet.get_client().unwrap();
    assert_eq!(a.stats().created_at, fleet.clients()[0].stats().created_at);
    assert_eq!(b.stats().created_at, fleet.clients()[1].stats().created_at);
    fleet.close_all().await;
    assert_eq!(fleet.open_sessions(), 0);
    assert!(matches!(fleet.get_client(), Err(FleetError::Closed)));
    assert!(matches!(
        fleet.connect_all(&server.url()).await,
        Err(FleetError::Closed)
    ));
    assert!(matches!(ClientFleet::new(vec![]), Err(FleetError::Empty)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stats_count_connects() {
    init_log();
    let cert = cert();
    let server = TestServer::start(&cert).await;
    let client = Client::new(client_config(&cert, Duration::from_millis(300))).unwrap();
    assert_eq!(client.stats().success_rate(), 1.0);
    let s1 = client.connect(&server.url()).await.unwrap();
    let s2 = client.connect(&server.url()).await.unwrap();
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}/", dead.local_addr().unwrap().port());
    assert!(client.connect(&url).await.is_err());
    assert!(client.connect("not a url").await.is_err());
    let d = client.diagnostics();
    let st = &d.stats;
    println!(
        "client stats: attempted {}, ok {}, failed {}, rate {:.2}, connect min {:?} avg {:?} max {:?}",
        st.connections_attempted,
        st.connections_successful,
        st.connections_failed,
        st.success_rate(),
        st.min_connect_time,
        st.avg_connect_time(),
        st.max_connect_time
    );
    assert_eq!(
        (
            st.connections_attempted,
            st.connections_successful,
            st.connections_failed
        ),
        (3, 2, 1)
    );
    assert!((st.success_rate() - 2.0 / 3.0).abs() < 1e-9);
    let min = st.min_connect_time.unwrap();
    assert!(min <= st.avg_connect_time() && st.avg_connect_time() <= st.max_connect_time);
    assert_eq!(
        d.connection_states.get(&ConnectionState::Connected),
        Some(&2)
    );
    assert!(d.issues().is_empty());
    drop((s1, s2));
    tokio::time::timeout(T, async {
        while client
            .diagnostics()
            .connection_states
            .contains_key(&ConnectionState::Connected)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("dropped connections stop counting as connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pool_reuses_checks_health_and_expires() {
    init_log();
    let cert = cert();
    let server = TestServer::start(&cert).await;
    let client = Client::new(client_config(&cert, T)).unwrap();
    let pool = SessionPool::for_url(
        client.clone(),
        &server.url(),
        PoolConfig {
            max_size: 2,
            idle_timeout: Some(Duration::from_millis(300)),
        },
    )
    .unwrap();
    let a = pool.acquire().await.unwrap();
    let b = pool.acquire().await.unwrap();
    assert_eq!(pool.stats().in_use, 2);
    // Full: a third checkout waits.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), pool.acquire())
            .await
            .is_err()
    );
    let a_addr = a.connection().local_address();
    drop(a);
    let c = pool.acquire().await.unwrap();
    assert_eq!(c.connection().local_address(), a_addr, "reused");
    assert_eq!(pool.stats().reused, 1);
    // An idle session that closed is not handed out.
    let c_clone: Session = (*c).clone();
    drop(c);
    c_clone.close(0, "").unwrap();
    drop(c_clone);
    let d = pool.acquire().await.unwrap();
    assert!(!d.is_closed());
    assert_eq!((pool.stats().unhealthy, pool.stats().created), (1, 3));
    // An idle session past the idle timeout is closed, not handed out.
    let d_session: Session = (*d).clone();
    drop(d);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = pool.acquire().await.unwrap();
    assert!(!e.is_closed());
    let stats = pool.stats();
    println!("session pool: {stats:?}");
    assert_eq!(stats.expired, 1);
    assert_eq!((stats.created, stats.reused), (4, 1));
    tokio::time::timeout(T, d_session.closed())
        .await
        .unwrap()
        .ok();
    drop((b, e));
    assert_eq!(pool.stats().idle, 2);
    pool.close();
    assert_eq!(pool.stats().idle, 0);
    assert!(matches!(pool.acquire().await, Err(PoolError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_hands_out_live_connections() {
    init_log();
    let cert = cert();
    let server = TestServer::start(&cert).await;
    let pool = ConnectionPool::for_target(
        client_config(&cert, T),
        "127.0.0.1",
        server.port(),
        "/",
        PoolConfig::default(),
    )
    .unwrap();
    let c = pool.acquire().await.unwrap();
    assert!(c.is_connected());
    let addr = c.local_address();
    drop(c);
    let c = pool.acquire().await.unwrap();
    assert_eq!(c.local_address(), addr);
    assert_eq!((pool.stats().created, pool.stats().reused), (1, 1));
    let detached = c.detach();
    assert_eq!(pool.stats().in_use, 0);
    assert!(detached.is_connected());
    assert!(matches!(
        Pool::<Connection>::new(
            PoolConfig {
                max_size: 0,
                idle_timeout: None
            },
            Arc::new(|| Box::pin(async { Err(ConnectError::from(bad_config())) }))
        ),
        Err(PoolError::ZeroSize)
    ));
}

/// A client, a pool and the load balancer's default factory open their connections through
/// one TLS state, so that reconnecting to a server resumes its TLS session (the server
/// counts the tickets redeemed); `tls_resumption: false` makes every handshake full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_resume_tls_sessions() {
    init_log();
    let cert = cert();
    let server = TestServer::start(&cert).await;
    let resumed = || server.server.as_ref().unwrap().tls_resumptions();
    let cfg = client_config(&cert, T);

    let client = Client::new(cfg.clone()).unwrap();
    for _ in 0..3 {
        let session = client.connect(&server.url()).await.unwrap();
        session.close(0, "").unwrap();
    }
    assert_eq!(
        resumed(),
        2,
        "the second and third connects resume the first's session"
    );

    let pool = ConnectionPool::for_target(
        cfg.clone(),
        "127.0.0.1",
        server.port(),
        "/",
        PoolConfig::default(),
    )
    .unwrap();
    let (first, second) = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
    assert_eq!(pool.stats().created, 2);
    assert_eq!(
        resumed(),
        3,
        "the pool's second connection resumes its first's session"
    );
    drop((first, second));
    pool.close();

    let lb = LoadBalancer::new([server.target()], lb_config(None, false)).unwrap();
    for _ in 0..2 {
        let c = lb
            .get_connection(&cfg, "/", Strategy::RoundRobin)
            .await
            .unwrap();
        c.close_within(0, "", Duration::from_millis(100)).await;
    }
    assert_eq!(
        resumed(),
        4,
        "the balancer's second connection resumes its first's session"
    );

    let full = Client::new(ClientConfig {
        tls_resumption: false,
        ..cfg
    })
    .unwrap();
    for _ in 0..2 {
        full.connect(&server.url())
            .await
            .unwrap()
            .close(0, "")
            .unwrap();
    }
    assert_eq!(resumed(), 4, "no resumption when it is off");
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<LoadBalancer>();
    check::<LoadBalancerConfig>();
    check::<LoadBalancerError>();
    check::<LoadBalancerStats>();
    check::<TargetStats>();
    check::<Strategy>();
    check::<ReconnectingClient>();
    check::<ReconnectEvent>();
    check::<ReconnectError>();
    check::<ClientFleet>();
    check::<FleetError>();
    check::<ConnectionPool>();
    check::<SessionPool>();
    check::<Pooled<Connection>>();
    check::<Pooled<Session>>();
    check::<PoolConfig>();
    check::<PoolError>();
    check::<PoolStats>();
    check::<ClientStats>();
    check::<ClientDiagnostics>();
    check::<ClientIssue>();
}

/// A configuration error, as a factory would meet one.
fn bad_config() -> webtransport::ConfigError {
    let mut c = ClientConfig::default();
    c.limits.max_sessions = 0;
    c.validate().expect_err("max_sessions 0 is invalid")
}
