//! The scenarios, written once against the traits of `api.rs`.
//!
//! The server side is the same for every scenario: each accepted session counts the
//! datagrams it receives and serves each bidirectional stream by its first byte:
//!
//! | byte | the server |
//! |---|---|
//! | `U` | reads to the end, answers the byte count (8 bytes, little endian), finishes |
//! | `E` | echoes every chunk as it arrives, finishes when the client does |
//! | `D` | answers the datagrams counted since the last `D`, finishes |
//! | `M` | answers its process's resident memory (VmRSS, bytes), finishes |
//!
//! so a `--server` process in another process (or on another machine) serves every
//! scenario of a `--client` without knowing which one runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;

use super::api::{Conn, Listener, RecvHalf, SendHalf, Stack};
use super::report::Metric;
use crate::rss;

const CMD_UPLOAD: u8 = b'U';
const CMD_ECHO: u8 = b'E';
const CMD_DATAGRAMS: u8 = b'D';
const CMD_MEMORY: u8 = b'M';

/// Bytes per `write_all` in the throughput scenario: what an application copying from a
/// socket or a file typically hands over at once.
const WRITE_SIZE: usize = 64 * 1024;
/// Request and response size of the latency scenario.
const LATENCY_MESSAGE: usize = 64;
/// Round trips before the latency histogram starts recording.
const LATENCY_WARMUP: u64 = 100;
/// Most buffers the datagram sender writes its datagrams in, in turn (64 MiB of
/// 1,000-byte datagrams).
const DATAGRAM_RING_MAX: usize = 64 * 1024;
/// Datagrams queued between two yields of the sender.
const DATAGRAM_BURST: usize = 32;
/// Time the receiver gets after the sender stops, for datagrams still in flight.
const DATAGRAM_GRACE: Duration = Duration::from_millis(300);

/// How much work each scenario does.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Bytes through one stream.
    pub throughput_bytes: u64,
    /// Streams in the many-streams scenario.
    pub streams: u64,
    /// Bytes uploaded on each of them.
    pub stream_size: usize,
    /// Streams open at once.
    pub in_flight: usize,
    /// Round trips in each latency mode.
    pub requests: u64,
    /// How long the datagram sender runs.
    pub datagram_time: Duration,
    /// Datagram payload size.
    pub datagram_size: usize,
    /// Connections in each handshake mode.
    pub handshakes: u64,
    /// Handshakes at once in the concurrent mode.
    pub handshake_concurrency: usize,
    /// Idle sessions held at once.
    pub sessions: u64,
}

impl Sizes {
    /// The sizes of the issue: 1 GiB, 10,000 streams of 16 KiB, ...
    pub fn full() -> Self {
        Sizes {
            throughput_bytes: 1 << 30,
            streams: 10_000,
            stream_size: 16 * 1024,
            in_flight: 64,
            requests: 10_000,
            datagram_time: Duration::from_secs(5),
            datagram_size: 1000,
            handshakes: 1000,
            handshake_concurrency: 32,
            sessions: 10_000,
        }
    }

    /// Every scenario for two implementations in well under 30 s on a small machine.
    pub fn quick() -> Self {
        Sizes {
            throughput_bytes: 64 << 20,
            streams: 1000,
            requests: 1000,
            datagram_time: Duration::from_secs(1),
            handshakes: 100,
            sessions: 300,
            ..Self::full()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// Serves every session `listener` accepts until it is gone.
pub async fn serve<L: Listener>(listener: Arc<L>) {
    while let Some(conn) = listener.accept().await {
        tokio::spawn(serve_conn(conn));
    }
}

async fn serve_conn<C: Conn>(conn: C) {
    let datagrams = Arc::new(AtomicU64::new(0));
    let reader = {
        let conn = conn.clone();
        let datagrams = datagrams.clone();
        tokio::spawn(async move {
            while conn.read_datagram().await.is_ok() {
                datagrams.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(send, recv, datagrams.clone()));
    }
    reader.abort();
}

async fn serve_stream<S: SendHalf, R: RecvHalf>(
    mut send: S,
    mut recv: R,
    datagrams: Arc<AtomicU64>,
) -> Result<()> {
    let Some(mut first) = recv.read_chunk().await? else {
        return Ok(());
    };
    while first.is_empty() {
        match recv.read_chunk().await? {
            Some(c) => first = c,
            None => return Ok(()),
        }
    }
    let cmd = first[0];
    let rest = first.slice(1..);
    match cmd {
        CMD_UPLOAD => {
            let mut n = rest.len() as u64;
            while let Some(c) = recv.read_chunk().await? {
                n += c.len() as u64;
            }
            send.write_all(&n.to_le_bytes()).await?;
        }
        CMD_ECHO => {
            if !rest.is_empty() {
                send.write_all(&rest).await?;
            }
            while let Some(c) = recv.read_chunk().await? {
                send.write_all(&c).await?;
            }
        }
        CMD_DATAGRAMS => {
            let n = datagrams.swap(0, Ordering::Relaxed);
            send.write_all(&n.to_le_bytes()).await?;
        }
        CMD_MEMORY => {
            send.write_all(
                &rss::resident_bytes(rss::Process::Current)
                    .unwrap_or(0)
                    .to_le_bytes(),
            )
            .await?;
        }
        other => bail!("unknown command byte {other:#x}"),
    }
    send.finish()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------

async fn read_to_end<R: RecvHalf>(recv: &mut R, limit: usize) -> Result<BytesMut> {
    let mut out = BytesMut::new();
    while let Some(c) = recv.read_chunk().await? {
        if out.len() + c.len() > limit {
            bail!("answer longer than {limit} bytes");
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// Sends one command byte on a new stream and reads the server's 8-byte answer.
async fn query<C: Conn>(conn: &C, cmd: u8) -> Result<u64> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[cmd]).await?;
    send.finish()?;
    let answer = read_to_end(&mut recv, 8).await?;
    let bytes: [u8; 8] = answer[..]
        .try_into()
        .context("the server's answer is not 8 bytes")?;
    Ok(u64::from_le_bytes(bytes))
}

fn gbits(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds from 1 ns to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(ns);
}

fn percentiles(scenario: &'static str, prefix: &str, h: &Histogram<u64>) -> Vec<Metric> {
    [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)]
        .into_iter()
        .map(|(name, q)| {
            Metric::lower(
                scenario,
                format!("{prefix}_{name}"),
                h.value_at_quantile(q) as f64 / 1000.0,
                "us",
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// Bulk bytes through one bidirectional stream, until the server confirms it has them all.
pub async fn throughput<C: Conn>(conn: &C, bytes: u64) -> Result<Vec<Metric>> {
    let chunk = vec![0x5a_u8; WRITE_SIZE];
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[CMD_UPLOAD]).await?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE_SIZE as u64) as usize;
        send.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    send.finish()?;
    let answer = read_to_end(&mut recv, 8).await?;
    let elapsed = start.elapsed();
    let got = u64::from_le_bytes(answer[..].try_into().context("short answer")?);
    if got != bytes {
        bail!("the server received {got} bytes of {bytes}");
    }
    Ok(vec![Metric::higher(
        "throughput",
        "goodput",
        gbits(bytes, elapsed),
        "Gbit/s",
    )])
}

/// Many short streams: each uploads `size` bytes and waits for the server's count,
/// `in_flight` of them at once.
pub async fn streams<C: Conn>(
    conn: &C,
    count: u64,
    size: usize,
    in_flight: usize,
) -> Result<Vec<Metric>> {
    let mut body = BytesMut::with_capacity(size + 1);
    body.extend_from_slice(&[CMD_UPLOAD]);
    body.resize(size + 1, 0x5a);
    let body = body.freeze();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let conn = conn.clone();
        let next = next.clone();
        let body = body.clone();
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&body).await?;
                send.finish()?;
                let answer = read_to_end(&mut recv, 8).await?;
                if answer[..] != (size as u64).to_le_bytes() {
                    bail!("the server counted a different stream size");
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let elapsed = start.elapsed();
    Ok(vec![
        Metric::higher(
            "streams",
            "streams_per_s",
            count as f64 / elapsed.as_secs_f64(),
            "streams/s",
        ),
        Metric::higher(
            "streams",
            "goodput",
            gbits(count * size as u64, elapsed),
            "Gbit/s",
        ),
    ])
}

/// Request/response of 64 bytes: `requests` round trips on one stream, then as many on a
/// new stream each.
pub async fn latency<C: Conn>(conn: &C, requests: u64) -> Result<Vec<Metric>> {
    let message = [0x5a_u8; LATENCY_MESSAGE];

    let mut same = histogram();
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[CMD_ECHO]).await?;
    for i in 0..LATENCY_WARMUP + requests {
        let start = Instant::now();
        send.write_all(&message).await?;
        let mut got = 0;
        while got < LATENCY_MESSAGE {
            match recv.read_chunk().await? {
                Some(c) => got += c.len(),
                None => bail!("the echo stream ended early"),
            }
        }
        if i >= LATENCY_WARMUP {
            record(&mut same, start.elapsed());
        }
    }
    send.finish()?;
    read_to_end(&mut recv, 0).await?;

    let mut request = Vec::with_capacity(1 + LATENCY_MESSAGE);
    request.push(CMD_ECHO);
    request.extend_from_slice(&message);
    let mut new = histogram();
    for i in 0..LATENCY_WARMUP + requests {
        let start = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&request).await?;
        send.finish()?;
        let answer = read_to_end(&mut recv, LATENCY_MESSAGE).await?;
        if answer.len() != LATENCY_MESSAGE {
            bail!("short echo on a new stream");
        }
        if i >= LATENCY_WARMUP {
            record(&mut new, start.elapsed());
        }
    }

    let mut out = percentiles("latency", "same_stream", &same);
    out.extend(percentiles("latency", "new_stream", &new));
    Ok(out)
}

/// Datagrams of `size` bytes as fast as the connection takes them, for `duration`, each
/// written by the sender before it goes (see [`DatagramSource`]).
///
/// The sender queues datagrams while the transport's send buffer has room and sleeps a
/// millisecond when it has none. Without that pacing a sender in the same process as
/// both connections only measures how much CPU it steals from them: the transport drops
/// the oldest queued datagrams to make room, and most of what is "sent" is dropped
/// before it leaves.
pub async fn datagrams<C: Conn>(conn: &C, duration: Duration, size: usize) -> Result<Vec<Metric>> {
    match conn.max_datagram_size() {
        Some(max) if max >= size => {}
        other => bail!("datagrams of {size} bytes do not fit (the limit is {other:?})"),
    }
    // Start from zero on the server's counter.
    query(conn, CMD_DATAGRAMS).await?;
    // Room for the payload plus the largest WebTransport and QUIC framing.
    let needed = size + 64;
    let mut source = DatagramSource::new(conn.datagram_send_buffer_space() / size.max(1), size);
    let mut sent = 0_u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        let mut queued = 0;
        while queued < DATAGRAM_BURST && conn.datagram_send_buffer_space() >= needed {
            if conn.send_datagram(&mut source).is_ok() {
                sent += 1;
            }
            queued += 1;
        }
        if queued < DATAGRAM_BURST {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    let elapsed = start.elapsed();
    tokio::time::sleep(DATAGRAM_GRACE).await;
    let received = query(conn, CMD_DATAGRAMS).await?;
    let secs = elapsed.as_secs_f64();
    Ok(vec![
        Metric::higher("datagrams", "sent_per_s", sent as f64 / secs, "datagrams/s"),
        Metric::higher(
            "datagrams",
            "received_per_s",
            received as f64 / secs,
            "datagrams/s",
        ),
        Metric::higher(
            "datagrams",
            "delivered",
            if sent == 0 {
                0.0
            } else {
                received as f64 * 100.0 / sent as f64
            },
            "%",
        ),
    ])
}

/// New connections plus session establishment: `count` one after another, then `count`
/// with `concurrency` at once. Each is closed as soon as it is ready.
pub async fn handshakes<S: Stack>(
    stack: Arc<S>,
    addr: std::net::SocketAddr,
    count: u64,
    concurrency: usize,
) -> Result<Vec<Metric>> {
    let start = Instant::now();
    for _ in 0..count {
        let conn = connect(stack.as_ref(), addr).await?;
        conn.close();
    }
    let sequential = count as f64 / start.elapsed().as_secs_f64();

    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let stack = stack.clone();
        let next = next.clone();
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let conn = connect(stack.as_ref(), addr).await?;
                conn.close();
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let concurrent = count as f64 / start.elapsed().as_secs_f64();
    Ok(vec![
        Metric::higher("handshakes", "sequential_per_s", sequential, "handshakes/s"),
        Metric::higher(
            "handshakes",
            format!("concurrent{concurrency}_per_s"),
            concurrent,
            "handshakes/s",
        ),
    ])
}

/// The blocks [`resumed`] alternates its two kinds of setups in.
const RESUMED_BLOCKS: u64 = 10;

/// Session setups one after another, each closed as soon as it is ready: `count` whose TLS
/// handshake resumes an earlier connection's session, and `count` full ones from the same
/// client with resumption off, alternating in [`RESUMED_BLOCKS`] blocks, so that a machine
/// that drifts meanwhile weighs on both alike. No 0-RTT: a WebTransport session may not be
/// requested in early data (draft-ietf-webtrans-http3 §3.2), so what resumption saves is
/// the server's certificate and signature and the client's check of them, not a round
/// trip.
pub async fn resumed<S: Stack>(
    stack: Arc<S>,
    addr: std::net::SocketAddr,
    count: u64,
) -> Result<Vec<Metric>> {
    async fn setups<S: Stack>(
        stack: &S,
        addr: std::net::SocketAddr,
        count: u64,
    ) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..count {
            connect(stack, addr).await?.close();
        }
        Ok(start.elapsed())
    }
    let full = stack.without_tls_resumption()?;
    // One setup each first, so that a session ticket is held from the start.
    setups(stack.as_ref(), addr, 1).await?;
    if let Some(full) = &full {
        setups(full, addr, 1).await?;
    }
    let (mut resumed, mut full_time) = (Duration::ZERO, Duration::ZERO);
    for block in 0..RESUMED_BLOCKS {
        let n = count * (block + 1) / RESUMED_BLOCKS - count * block / RESUMED_BLOCKS;
        resumed += setups(stack.as_ref(), addr, n).await?;
        if let Some(full) = &full {
            full_time += setups(full, addr, n).await?;
        }
    }
    let rate = |took: Duration| count as f64 / took.as_secs_f64();
    let mut metrics = vec![Metric::higher(
        "resumed",
        "resumed_per_s",
        rate(resumed),
        "setups/s",
    )];
    if full.is_some() {
        metrics.push(Metric::higher(
            "resumed",
            "full_per_s",
            rate(full_time),
            "setups/s",
        ));
    }
    Ok(metrics)
}

/// The datagrams the sender sends, written one by one as an application writes its own:
/// each the next number followed by filler, in memory of its own, so that no
/// implementation sends the same cached bytes over and over. Written where the stack
/// sends it from: a buffer our session lends ([`DatagramSource::next_into`]), or for the
/// others a buffer of the ring ([`DatagramSource::next`]), reused round a ring longer than
/// the send buffer holds, so that the allocator plays no part (freeing and allocating a
/// buffer per datagram makes glibc hand pages back to the kernel and fault them in again,
/// which would measure the allocator, not the stack).
pub struct DatagramSource {
    ring: Vec<Bytes>,
    template: Vec<u8>,
    sent: u64,
}

impl DatagramSource {
    /// A ring for a send buffer that holds `fit_in_buffer` datagrams of `size` bytes.
    fn new(fit_in_buffer: usize, size: usize) -> Self {
        let len = fit_in_buffer.min(DATAGRAM_RING_MAX) + 2 * DATAGRAM_BURST;
        let template = vec![0x5a_u8; size];
        DatagramSource {
            ring: (0..len).map(|_| counted_buffer(size).freeze()).collect(),
            template,
            sent: 0,
        }
    }

    /// Bytes in each datagram.
    pub fn size(&self) -> usize {
        self.template.len()
    }

    /// The next datagram, written into the ring's oldest buffer (a new one if the
    /// transport still holds that).
    pub fn next(&mut self) -> &Bytes {
        let slot = (self.sent % self.ring.len() as u64) as usize;
        let old = std::mem::take(&mut self.ring[slot]);
        let mut d = old
            .try_into_mut()
            .unwrap_or_else(|_| counted_buffer(self.template.len()));
        d.clear();
        d.extend_from_slice(&self.template);
        self.number(&mut d);
        self.ring[slot] = d.freeze();
        &self.ring[slot]
    }

    /// The next datagram, written into a buffer our stack lent (the same bytes as
    /// [`DatagramSource::next`] writes, with no ring).
    pub fn next_into(&mut self, buf: &mut webtransport::DatagramBuffer) {
        buf.extend_from_slice(&self.template);
        self.number(buf);
    }

    /// Counts a datagram and writes its number over the filler it starts with.
    fn number(&mut self, d: &mut [u8]) {
        self.sent += 1;
        let n = d.len().min(8);
        d[..n].copy_from_slice(&self.sent.to_be_bytes()[..n]);
    }
}

/// An empty buffer of `capacity` bytes whose `Bytes` are shared by a reference count from
/// the start. A buffer made from a `Vec` is not: each clone of its `Bytes` (the one a
/// transport keeps) first allocates the count, and taking it back as `BytesMut` once
/// unique frees the count again, so a ring of them would allocate on every datagram.
fn counted_buffer(capacity: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(capacity);
    // Splitting off nothing moves the buffer to a shared count, kept from then on.
    drop(buf.split());
    buf
}

/// `count` idle sessions held at once on the server at `addr`; the server reports its
/// resident memory before and after. The server should be a process of its own, so that
/// the client's memory is not counted.
pub async fn sessions<S: Stack>(
    stack: Arc<S>,
    addr: std::net::SocketAddr,
    count: u64,
    concurrency: usize,
) -> Result<Vec<Metric>> {
    let probe = connect(stack.as_ref(), addr).await?;
    // A first batch warms up the allocator and the runtime, so that one-off growth does
    // not count as per-session memory.
    let warm = open_many(&stack, addr, count.min(100), concurrency).await?;
    for c in &warm {
        c.close();
    }
    drop(warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = query(&probe, CMD_MEMORY).await?;
    let start = Instant::now();
    let held = open_many(&stack, addr, count, concurrency).await?;
    let opened = start.elapsed();
    // Let the server finish what each new session started (tasks, buffers, acks).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = query(&probe, CMD_MEMORY).await?;
    for c in &held {
        c.close();
    }
    probe.close();
    let per_session = after.saturating_sub(before) as f64 / count.max(1) as f64;
    Ok(vec![
        Metric::lower("sessions", "rss_per_session", per_session, "B"),
        Metric::higher(
            "sessions",
            "opened_per_s",
            count as f64 / opened.as_secs_f64(),
            "sessions/s",
        ),
    ])
}

/// How long one connect may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// `stack.connect(addr)`, failing after [`CONNECT_LIMIT`]: a connect that never
/// completes (a peer's server that stopped answering: wtransport 0.7's did once after
/// thousands of sessions) ends the scenario with an error instead of hanging the run.
async fn connect<S: Stack>(stack: &S, addr: std::net::SocketAddr) -> Result<S::Conn> {
    tokio::time::timeout(CONNECT_LIMIT, stack.connect(addr))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("connect took more than {CONNECT_LIMIT:?}")))
}

/// A session setup slower than this is reported by [`open_many`].
const SLOW_SETUP: Duration = Duration::from_secs(1);

async fn open_many<S: Stack>(
    stack: &Arc<S>,
    addr: std::net::SocketAddr,
    count: u64,
    concurrency: usize,
) -> Result<Vec<S::Conn>> {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let stack = stack.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                // One lost handshake among thousands should not void a memory
                // measurement: two more tries, then the error.
                let mut tries = 0;
                let conn = loop {
                    // Said, not hidden: a setup that stalls costs the rate the time it
                    // took (up to CONNECT_LIMIT).
                    let started = Instant::now();
                    match connect(stack.as_ref(), addr).await {
                        Ok(c) => {
                            let took = started.elapsed();
                            if took > SLOW_SETUP {
                                eprintln!("warning: a session setup took {took:?}");
                            }
                            break c;
                        }
                        Err(e) if tries < 2 => {
                            eprintln!("warning: a session setup failed, trying again: {e:#}");
                            tries += 1;
                        }
                        Err(e) => return Err(e),
                    }
                };
                mine.push(conn);
            }
            anyhow::Ok(mine)
        });
    }
    let mut all = Vec::with_capacity(count as usize);
    while let Some(r) = workers.join_next().await {
        all.extend(r??);
    }
    Ok(all)
}

/// The scenario names, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "throughput",
    "streams",
    "latency",
    "datagrams",
    "handshakes",
    "sessions",
    "resumed",
];

/// Runs one scenario of [`SCENARIOS`] against the server at `addr`. `sessions_server` is
/// where the sessions scenario measures memory: a server in a process of its own.
pub async fn run<S: Stack>(
    stack: &Arc<S>,
    addr: std::net::SocketAddr,
    scenario: &str,
    sizes: &Sizes,
    sessions_server: Option<std::net::SocketAddr>,
) -> Result<Vec<Metric>> {
    match scenario {
        "throughput" | "streams" | "latency" | "datagrams" => {
            // A fresh connection per scenario, so that no congestion or flow-control
            // state carries over.
            let conn = connect(stack.as_ref(), addr).await?;
            let r = match scenario {
                "throughput" => throughput(&conn, sizes.throughput_bytes).await,
                "streams" => {
                    streams(&conn, sizes.streams, sizes.stream_size, sizes.in_flight).await
                }
                "latency" => latency(&conn, sizes.requests).await,
                _ => datagrams(&conn, sizes.datagram_time, sizes.datagram_size).await,
            };
            conn.close();
            r
        }
        "handshakes" => {
            handshakes(
                stack.clone(),
                addr,
                sizes.handshakes,
                sizes.handshake_concurrency,
            )
            .await
        }
        "sessions" => {
            sessions(
                stack.clone(),
                sessions_server.unwrap_or(addr),
                sizes.sessions,
                sizes.handshake_concurrency,
            )
            .await
        }
        "resumed" => resumed(stack.clone(), addr, sizes.handshakes).await,
        other => bail!("no scenario {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_numbered_and_their_buffers_reused_once_free() {
        let mut source = DatagramSource::new(0, 1000);
        let ring = source.ring.len();
        let first = source.next().clone();
        assert_eq!(first.len(), 1000);
        assert_eq!(first[..8], 1_u64.to_be_bytes());
        assert!(first[8..].iter().all(|&b| b == 0x5a));
        let first_at = first.as_ptr();
        for _ in 1..ring {
            source.next();
        }
        // The first slot comes round again while `first` is still held (as a transport
        // holds a queued datagram): a new buffer, and `first` is left as it was.
        let again = source.next().as_ptr();
        assert_ne!(again, first_at);
        assert_eq!(first[..8], 1_u64.to_be_bytes());
        // Round once more with nothing held: the slot's buffer is written in place.
        drop(first);
        for _ in 1..ring {
            source.next();
        }
        let third = source.next();
        assert_eq!(third.as_ptr(), again);
        assert_eq!(third[..8], (2 * ring as u64 + 1).to_be_bytes());
    }

    #[test]
    fn datagrams_smaller_than_their_number_are_filled_with_it() {
        let mut source = DatagramSource::new(1, 3);
        assert_eq!(source.next()[..], 1_u64.to_be_bytes()[..3]);
    }
}
