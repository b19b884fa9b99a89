//! The relay on real loopback sockets: plain tokio UDP clients, and an upstream that
//! echoes or records. Time runs on tokio's paused clock, so delays cost no real time.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use webtransport_relay::{
    Direction, DirectionStats, Impairment, Relay, RelayConfig, RelayError, RelayStats,
};

/// How long an upstream or a client waits for more packets before it decides the stream
/// has ended (virtual time: free on the paused clock).
const QUIET: Duration = Duration::from_secs(1);

/// Packets sent per millisecond of virtual time: the runtime drains the sockets between
/// batches, so the system never drops packets for a full receive buffer.
const BATCH: u32 = 25;

async fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// A packet numbered `index`, `len` bytes long (at least 4).
fn numbered(index: u32, len: usize) -> Vec<u8> {
    let mut data = index.to_be_bytes().to_vec();
    data.resize(len.max(4), 0xab);
    data
}

fn index_of(data: &[u8]) -> u32 {
    u32::from_be_bytes(data[..4].try_into().unwrap())
}

/// One packet as the receiving side saw it.
#[derive(Debug)]
struct Arrival {
    index: u32,
    len: usize,
    at: Instant,
}

/// Receives on `socket` until it has been quiet for [`QUIET`], and returns what arrived.
fn spawn_recorder(socket: UdpSocket) -> JoinHandle<Vec<Arrival>> {
    tokio::spawn(async move {
        let mut arrivals = Vec::new();
        let mut buf = vec![0u8; 65_535];
        while let Ok(received) = timeout(QUIET, socket.recv_from(&mut buf)).await {
            let (len, _) = received.unwrap();
            arrivals.push(Arrival {
                index: index_of(&buf[..len]),
                len,
                at: Instant::now(),
            });
        }
        arrivals
    })
}

/// Echoes every packet to its sender, and notes the senders, until aborted.
fn spawn_echo(socket: UdpSocket) -> (JoinHandle<()>, Arc<Mutex<HashSet<SocketAddr>>>) {
    let senders = Arc::new(Mutex::new(HashSet::new()));
    let seen = Arc::clone(&senders);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.unwrap();
            seen.lock().unwrap().insert(from);
            socket.send_to(&buf[..len], from).await.unwrap();
        }
    });
    (task, senders)
}

/// Sends packets `0..count` of `len` bytes to `to`, [`BATCH`] per millisecond.
async fn send_numbered(socket: &UdpSocket, to: SocketAddr, count: u32, len: usize) {
    for index in 0..count {
        if index > 0 && index % BATCH == 0 {
            sleep(Duration::from_millis(1)).await;
        }
        socket.send_to(&numbered(index, len), to).await.unwrap();
    }
}

/// Everything `received + duplicated` accounts for, once nothing is held any more.
fn assert_accounted(stats: &DirectionStats) {
    assert_eq!(
        stats.received_packets + stats.duplicated,
        stats.forwarded_packets
            + stats.dropped_loss
            + stats.dropped_blackhole
            + stats.dropped_queue
            + stats.dropped_error,
        "{stats:?}"
    );
}

/// Sends `count` numbered packets through a relay with `config` to a recording upstream;
/// returns the arrivals and the relay's counters.
async fn run_through(config: RelayConfig, count: u32, len: usize) -> (Vec<Arrival>, RelayStats) {
    let server = bind().await;
    let relay = Relay::start(server.local_addr().unwrap(), config).unwrap();
    let recorder = spawn_recorder(server);
    let client = bind().await;
    send_numbered(&client, relay.addr(), count, len).await;
    let arrivals = recorder.await.unwrap();
    let stats = relay.stats();
    relay.shutdown().await;
    assert_accounted(&stats.client_to_server);
    (arrivals, stats)
}

/// Client `id`'s `round`-th payload: `len` bytes no other client or round has (but the
/// empty one).
fn payload(id: usize, round: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (k as u8).wrapping_mul(31) ^ ((id as u8) << 5) ^ (round as u8))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn clean_relay_forwards_both_ways_byte_exact_and_keeps_clients_apart() {
    let server = bind().await;
    let upstream = server.local_addr().unwrap();
    let (echo, senders) = spawn_echo(server);
    let relay = Relay::start(upstream, RelayConfig::default()).unwrap();
    assert_eq!(relay.upstream(), upstream);

    // Up to the largest IPv4 UDP payload.
    let sizes = [0, 1, 1200, 9000, 65_507];
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(bind().await);
    }
    for (round, &len) in sizes.iter().enumerate() {
        for (id, client) in clients.iter().enumerate() {
            let data = payload(id, round, len);
            client.send_to(&data, relay.addr()).await.unwrap();
        }
        sleep(Duration::from_millis(1)).await;
    }

    let mut buf = vec![0u8; 65_535];
    for (id, client) in clients.iter().enumerate() {
        for (round, &len) in sizes.iter().enumerate() {
            let (len_back, from) = timeout(QUIET, client.recv_from(&mut buf))
                .await
                .expect("echo lost")
                .unwrap();
            assert_eq!(from, relay.addr());
            assert_eq!(
                buf[..len_back],
                payload(id, round, len),
                "client {id} round {round}"
            );
        }
        assert!(timeout(QUIET, client.recv_from(&mut buf)).await.is_err());
    }
    // The server saw each client from its own address.
    assert_eq!(senders.lock().unwrap().len(), clients.len());

    let bytes: u64 = sizes.iter().map(|&len| len as u64).sum::<u64>() * clients.len() as u64;
    let stats = relay.stats();
    for direction in [stats.client_to_server, stats.server_to_client] {
        assert_eq!(direction.received_packets, 15);
        assert_eq!(direction.forwarded_packets, 15);
        assert_eq!(direction.received_bytes, bytes);
        assert_eq!(direction.forwarded_bytes, bytes);
        assert_accounted(&direction);
    }
    echo.abort();
    relay.shutdown().await;
}

/// The indices `0..count` that did not arrive.
fn missing(arrivals: &[Arrival], count: u32) -> BTreeSet<u32> {
    let arrived: HashSet<u32> = arrivals.iter().map(|a| a.index).collect();
    (0..count).filter(|i| !arrived.contains(i)).collect()
}

#[tokio::test(start_paused = true)]
async fn loss_is_near_its_rate_and_replays_exactly_from_the_seed() {
    const COUNT: u32 = 10_000;
    let lossy = |seed| RelayConfig {
        seed,
        ..RelayConfig::lossy(0.2)
    };
    let (first, stats) = run_through(lossy(7), COUNT, 100).await;
    let lost = missing(&first, COUNT);
    // 20 % of 10,000 has a standard deviation of 40 packets: 2,000 ± 200 is 5 of them.
    assert!((1_800..=2_200).contains(&lost.len()), "lost {}", lost.len());
    assert_eq!(stats.client_to_server.dropped_loss, lost.len() as u64);
    assert_eq!(first.len() as u32, COUNT - lost.len() as u32);

    let (second, _) = run_through(lossy(7), COUNT, 100).await;
    assert_eq!(missing(&second, COUNT), lost, "same seed, different losses");

    let (other, _) = run_through(lossy(8), COUNT, 100).await;
    assert_ne!(
        missing(&other, COUNT),
        lost,
        "another seed, the same losses"
    );
}

/// How many arrivals came after one with a higher index: the reordered packets.
fn overtaken(arrivals: &[Arrival]) -> u64 {
    let mut highest = None;
    let mut count = 0;
    for arrival in arrivals {
        match highest {
            Some(high) if arrival.index < high => count += 1,
            _ => highest = Some(arrival.index),
        }
    }
    count
}

#[tokio::test(start_paused = true)]
async fn duplication_is_near_its_rate() {
    const COUNT: u32 = 5_000;
    let config = RelayConfig {
        seed: 11,
        ..RelayConfig::both(Impairment {
            duplicate: 0.1,
            ..Impairment::default()
        })
    };
    let (arrivals, stats) = run_through(config, COUNT, 100).await;
    assert!(missing(&arrivals, COUNT).is_empty());
    let extra = arrivals.len() as u64 - u64::from(COUNT);
    assert_eq!(extra, stats.client_to_server.duplicated);
    // 10 % of 5,000: a standard deviation of about 21 packets.
    assert!((400..=600).contains(&extra), "duplicated {extra}");
    // A copy follows its original: duplication alone does not reorder.
    assert_eq!(overtaken(&arrivals), 0);
}

#[tokio::test(start_paused = true)]
async fn reordering_is_near_its_rate_and_the_stream_stays_complete() {
    const COUNT: u32 = 5_000;
    let config = RelayConfig {
        seed: 12,
        ..RelayConfig::both(Impairment {
            reorder: 0.1,
            ..Impairment::default()
        })
    };
    let (arrivals, stats) = run_through(config, COUNT, 100).await;
    assert_eq!(arrivals.len() as u32, COUNT);
    assert!(missing(&arrivals, COUNT).is_empty());
    let reordered = overtaken(&arrivals);
    assert_eq!(reordered, stats.client_to_server.reordered);
    assert!((400..=600).contains(&reordered), "reordered {reordered}");
    // A packet held back goes right after the next one that is not: only a run of packets
    // picked in a row (10 % each) moves anything more than one place.
    let mut displacement = 0;
    for (place, arrival) in arrivals.iter().enumerate() {
        displacement = displacement.max(place.abs_diff(arrival.index as usize));
    }
    assert!(
        displacement <= 6,
        "a packet arrived {displacement} places off"
    );
}

#[tokio::test(start_paused = true)]
async fn delay_and_jitter_keep_every_arrival_in_range_and_in_order() {
    const SPARSE: u32 = 200;
    const DENSE: u32 = 500;
    let delay = Duration::from_millis(30);
    let jitter = Duration::from_millis(20);
    let server = bind().await;
    let config = RelayConfig::both(Impairment {
        delay,
        jitter,
        ..Impairment::default()
    });
    let relay = Relay::start(server.local_addr().unwrap(), config).unwrap();
    let recorder = spawn_recorder(server);
    let client = bind().await;
    // First one packet every 25 ms, more than the jitter, so each draws its own latency;
    // then one every millisecond, where jitter would reorder if it could.
    let mut sent = Vec::new();
    for index in 0..SPARSE + DENSE {
        sent.push(Instant::now());
        client
            .send_to(&numbered(index, 50), relay.addr())
            .await
            .unwrap();
        let gap = if index < SPARSE { 25 } else { 1 };
        sleep(Duration::from_millis(gap)).await;
    }
    let arrivals = recorder.await.unwrap();
    relay.shutdown().await;

    assert_eq!(arrivals.len() as u32, SPARSE + DENSE);
    assert_eq!(overtaken(&arrivals), 0, "jitter alone reordered");
    let latency = |a: &Arrival| a.at - sent[a.index as usize];
    for arrival in &arrivals {
        let latency = latency(arrival);
        assert!(
            latency >= delay && latency <= delay + jitter,
            "packet {} took {latency:?}",
            arrival.index
        );
    }
    // Where packets are far enough apart, the whole range is used.
    let sparse: Vec<Duration> = arrivals
        .iter()
        .filter(|a| a.index < SPARSE)
        .map(latency)
        .collect();
    let fastest = sparse.iter().min().unwrap();
    let slowest = sparse.iter().max().unwrap();
    assert!(*fastest <= delay + Duration::from_millis(2), "{fastest:?}");
    assert!(
        *slowest >= delay + jitter - Duration::from_millis(2),
        "{slowest:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_holds_throughput_near_the_rate() {
    const RATE: u64 = 100_000;
    const LEN: usize = 1_000;
    let server = bind().await;
    let config = RelayConfig::both(Impairment {
        rate: Some(RATE),
        queue_limit: 20,
        ..Impairment::default()
    });
    let relay = Relay::start(server.local_addr().unwrap(), config).unwrap();
    let recorder = spawn_recorder(server);
    let client = bind().await;
    // Offer twice the rate for two seconds: two packets every 10 ms.
    let start = Instant::now();
    for index in 0..400 {
        client
            .send_to(&numbered(index, LEN), relay.addr())
            .await
            .unwrap();
        if index % 2 == 1 {
            sleep(Duration::from_millis(10)).await;
        }
    }
    let arrivals = recorder.await.unwrap();
    let stats = relay.stats().client_to_server;
    relay.shutdown().await;

    // The second virtual second, when the initial burst is long gone and the queue is full.
    let window = start + Duration::from_secs(1)..start + Duration::from_secs(2);
    let bytes: usize = arrivals
        .iter()
        .filter(|a| window.contains(&a.at))
        .map(|a| a.len)
        .sum();
    let rate = bytes as f64;
    assert!(
        (rate - RATE as f64).abs() <= 0.03 * RATE as f64,
        "{bytes} bytes in one second"
    );
    // About half the offered load could not pass; the queue dropped it.
    assert!(stats.dropped_queue > 150, "{stats:?}");
    assert_accounted(&stats);
}

/// A client and a plain server socket through `relay`, with the server knowing the address
/// the relay uses for this client.
async fn connected_pair(relay: &Relay, server: &UdpSocket) -> (UdpSocket, SocketAddr) {
    let client = bind().await;
    client.send_to(b"\0\0\0\0hi", relay.addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let (_, via) = timeout(QUIET, server.recv_from(&mut buf))
        .await
        .expect("first packet lost")
        .unwrap();
    (client, via)
}

/// Whether `socket` receives anything within [`QUIET`].
async fn receives(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    timeout(QUIET, socket.recv_from(&mut buf)).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn blackhole_silences_the_chosen_direction_until_switched_off() {
    let server = bind().await;
    let relay = Relay::start(server.local_addr().unwrap(), RelayConfig::default()).unwrap();
    let (client, via) = connected_pair(&relay, &server).await;

    relay.set_blackhole(Direction::ClientToServer, true);
    assert!(relay.config().client_to_server.blackhole);
    client.send_to(b"up", relay.addr()).await.unwrap();
    assert!(
        !receives(&server).await,
        "client to server went through the blackhole"
    );
    server.send_to(b"down", via).await.unwrap();
    assert!(receives(&client).await, "server to client was silenced too");

    relay.set_blackhole(Direction::ClientToServer, false);
    client.send_to(b"up", relay.addr()).await.unwrap();
    assert!(
        receives(&server).await,
        "switching off did not restore forwarding"
    );

    relay.set_blackhole(Direction::Both, true);
    client.send_to(b"up", relay.addr()).await.unwrap();
    server.send_to(b"down", via).await.unwrap();
    assert!(!receives(&server).await);
    assert!(!receives(&client).await);

    relay.set_blackhole(Direction::Both, false);
    client.send_to(b"up", relay.addr()).await.unwrap();
    server.send_to(b"down", via).await.unwrap();
    assert!(receives(&server).await);
    assert!(receives(&client).await);

    let stats = relay.stats();
    assert_eq!(stats.client_to_server.dropped_blackhole, 2);
    assert_eq!(stats.server_to_client.dropped_blackhole, 1);
    assert_accounted(&stats.client_to_server);
    assert_accounted(&stats.server_to_client);
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn blackhole_also_drops_packets_already_delayed() {
    let server = bind().await;
    let config = RelayConfig::both(Impairment {
        delay: Duration::from_millis(50),
        ..Impairment::default()
    });
    let relay = Relay::start(server.local_addr().unwrap(), config).unwrap();
    let client = bind().await;
    client.send_to(b"late", relay.addr()).await.unwrap();
    sleep(Duration::from_millis(10)).await;
    relay.set_blackhole(Direction::ClientToServer, true);
    assert!(!receives(&server).await);
    assert_eq!(relay.stats().client_to_server.dropped_blackhole, 1);
    relay.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn impairment_changes_live_and_bad_values_are_refused() {
    let server = bind().await;
    let relay = Relay::start(server.local_addr().unwrap(), RelayConfig::default()).unwrap();
    let (client, _) = connected_pair(&relay, &server).await;

    let all_lost = Impairment {
        loss: 1.0,
        ..Impairment::default()
    };
    relay
        .set_impairment(Direction::ClientToServer, all_lost.clone())
        .unwrap();
    assert_eq!(relay.config().client_to_server, all_lost);
    assert_eq!(relay.config().server_to_client, Impairment::default());
    client.send_to(b"gone", relay.addr()).await.unwrap();
    assert!(!receives(&server).await);
    assert_eq!(relay.stats().client_to_server.dropped_loss, 1);

    let bad = Impairment {
        loss: 2.0,
        ..Impairment::default()
    };
    assert!(matches!(
        relay.set_impairment(Direction::Both, bad),
        Err(RelayError::InvalidConfig { field: "loss", .. })
    ));
    assert_eq!(
        relay.config().client_to_server,
        all_lost,
        "a refused change applied"
    );

    relay
        .set_impairment(Direction::Both, Impairment::default())
        .unwrap();
    client.send_to(b"back", relay.addr()).await.unwrap();
    assert!(receives(&server).await);
    relay.shutdown().await;
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    assert!(matches!(
        Relay::start(upstream, RelayConfig::default()),
        Err(RelayError::NoRuntime)
    ));
}

#[tokio::test(start_paused = true)]
async fn shutdown_and_drop_leave_no_task_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let server = bind().await;
    let upstream = server.local_addr().unwrap();
    let config = RelayConfig::both(Impairment {
        delay: Duration::from_millis(100),
        ..Impairment::default()
    });

    // With several clients and packets still held.
    let relay = Relay::start(upstream, config.clone()).unwrap();
    for _ in 0..3 {
        bind().await.send_to(b"held", relay.addr()).await.unwrap();
    }
    sleep(Duration::from_millis(1)).await;
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    relay.shutdown().await;
    assert_eq!(metrics.num_alive_tasks(), baseline);

    let relay = Relay::start(upstream, config).unwrap();
    bind().await.send_to(b"held", relay.addr()).await.unwrap();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(metrics.num_alive_tasks(), baseline + 1);
    drop(relay);
    // An aborted task ends the next time the runtime gets to it.
    tokio::task::yield_now().await;
    assert_eq!(metrics.num_alive_tasks(), baseline);
    // Nothing was sent after the relay went away.
    assert!(!receives(&server).await);
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Relay>();
    check::<RelayConfig>();
    check::<Impairment>();
    check::<Direction>();
    check::<RelayStats>();
    check::<DirectionStats>();
    check::<RelayError>();
}
