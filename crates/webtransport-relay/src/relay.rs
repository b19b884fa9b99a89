//! The relay itself: [`Relay`], its sockets and its one driver task.

use std::collections::HashMap;
use std::future::{pending, poll_fn};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::config::{Direction, Impairment, RelayConfig};
use crate::error::RelayError;
use crate::pipeline::{Pipeline, Transmit};
use crate::stats::RelayStats;

/// The largest UDP payload; every receive buffer has this size.
const MAX_DATAGRAM: usize = 65_535;

/// Random streams of the two directions (see [`SplitMix64::new`](crate::prng::SplitMix64)).
const CLIENT_TO_SERVER_STREAM: u64 = 0;
const SERVER_TO_CLIENT_STREAM: u64 = 1;

/// A UDP relay between QUIC clients and one upstream server that degrades the path as its
/// [`RelayConfig`] says. See the [crate documentation](crate) for an example.
///
/// One tokio task does all the work. Dropping the `Relay` aborts it (the task ends the next
/// time the runtime runs it); [`shutdown`](Self::shutdown) aborts it and waits until it has
/// ended. Either way its sockets are closed and any packets still held are discarded.
pub struct Relay {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// What the [`Relay`] handle and the driver task share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the driver after a configuration change, so that it recomputes its timer.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a panic elsewhere while it was
        // locked leaves nothing half-done worth refusing to read.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct State {
    seed: u64,
    client_to_server: Pipeline,
    server_to_client: Pipeline,
}

impl State {
    fn selected(&mut self, direction: Direction) -> impl Iterator<Item = &mut Pipeline> {
        let c2s = direction.includes_client_to_server();
        let s2c = direction.includes_server_to_client();
        [
            c2s.then_some(&mut self.client_to_server),
            s2c.then_some(&mut self.server_to_client),
        ]
        .into_iter()
        .flatten()
    }
}

impl Relay {
    /// Starts a relay in front of `upstream`: binds a UDP socket on the loopback address of
    /// `upstream`'s family (port chosen by the system) for clients to send to, and spawns the
    /// task that forwards packets on the current tokio runtime.
    ///
    /// Each client address seen gets its own socket towards `upstream`, as behind a NAT, so
    /// the server sees one address per client and its replies reach the right client. These
    /// sockets live as long as the relay.
    ///
    /// # Errors
    ///
    /// [`RelayError::InvalidConfig`] for an out-of-range setting, [`RelayError::NoRuntime`]
    /// outside a tokio runtime, [`RelayError::Bind`] if the socket cannot be bound.
    ///
    /// # Panics
    ///
    /// If the runtime has no IO or no time driver (`#[tokio::test]` and `#[tokio::main]`
    /// enable both; a hand-built runtime needs `enable_all()`), as tokio's own sockets and
    /// timers do.
    pub fn start(upstream: SocketAddr, config: RelayConfig) -> Result<Self, RelayError> {
        config.validate()?;
        let runtime = Handle::try_current().map_err(|_| RelayError::NoRuntime)?;
        let local: SocketAddr = match upstream {
            SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let socket = std::net::UdpSocket::bind(local).map_err(RelayError::Bind)?;
        socket.set_nonblocking(true).map_err(RelayError::Bind)?;
        let addr = socket.local_addr().map_err(RelayError::Bind)?;
        let socket = {
            let _entered = runtime.enter();
            UdpSocket::from_std(socket).map_err(RelayError::Bind)?
        };

        let now = Instant::now();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                seed: config.seed,
                client_to_server: Pipeline::new(
                    config.client_to_server,
                    config.seed,
                    CLIENT_TO_SERVER_STREAM,
                    now,
                ),
                server_to_client: Pipeline::new(
                    config.server_to_client,
                    config.seed,
                    SERVER_TO_CLIENT_STREAM,
                    now,
                ),
            }),
            changed: Notify::new(),
        });
        let driver = Driver {
            shared: Arc::clone(&shared),
            client_socket: socket,
            upstream,
            mappings: Vec::new(),
            by_client: HashMap::new(),
            next_poll: 0,
            outgoing: Vec::new(),
        };
        let task = runtime.spawn(driver.run());
        tracing::debug!(%addr, %upstream, "relay started");
        Ok(Self {
            addr,
            upstream,
            shared,
            task,
        })
    }

    /// Where clients send: the relay's client-facing address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server the relay forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A snapshot of the counters of both directions.
    pub fn stats(&self) -> RelayStats {
        let state = self.shared.lock();
        RelayStats {
            client_to_server: state.client_to_server.stats(),
            server_to_client: state.server_to_client.stats(),
        }
    }

    /// The configuration in force, with the changes made since the start.
    pub fn config(&self) -> RelayConfig {
        let state = self.shared.lock();
        RelayConfig {
            seed: state.seed,
            client_to_server: state.client_to_server.impairment().clone(),
            server_to_client: state.server_to_client.impairment().clone(),
        }
    }

    /// Replaces the impairment of one direction or both, while the relay runs.
    ///
    /// Random decisions are taken when a packet arrives, so the new probabilities, delay and
    /// jitter apply to packets arriving from now on; packets already delayed keep their
    /// departure time, packets waiting for the rate limit are served at the new rate. The
    /// random streams go on where they were (the seed cannot change).
    ///
    /// # Errors
    ///
    /// [`RelayError::InvalidConfig`] for an out-of-range setting; nothing is changed then.
    pub fn set_impairment(
        &self,
        direction: Direction,
        impairment: Impairment,
    ) -> Result<(), RelayError> {
        impairment.validate()?;
        let now = Instant::now();
        for pipeline in self.shared.lock().selected(direction) {
            pipeline.set_impairment(impairment.clone(), now);
        }
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Switches the blackhole of one direction or both on or off, while the relay runs.
    ///
    /// While it is on, nothing leaves that direction: packets that arrive are dropped, and so
    /// are packets held from before that come due. Other settings are kept.
    pub fn set_blackhole(&self, direction: Direction, on: bool) {
        for pipeline in self.shared.lock().selected(direction) {
            pipeline.set_blackhole(on);
        }
        self.shared.changed.notify_one();
    }

    /// Stops the relay and waits until its task has ended and its sockets are closed.
    ///
    /// # Panics
    ///
    /// If the relay's task panicked (a bug in the relay), that panic is resumed here.
    pub async fn shutdown(mut self) {
        self.task.abort();
        if let Err(error) = (&mut self.task).await {
            if error.is_panic() {
                std::panic::resume_unwind(error.into_panic());
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client seen by the relay and its own socket towards the server.
#[derive(Debug)]
struct Mapping {
    client: SocketAddr,
    socket: UdpSocket,
}

/// The relay's task: owns the sockets, feeds the pipelines and sends what they let out.
#[derive(Debug)]
struct Driver {
    shared: Arc<Shared>,
    client_socket: UdpSocket,
    upstream: SocketAddr,
    /// One per client, in the order they were first seen.
    mappings: Vec<Mapping>,
    /// Index into `mappings`.
    by_client: HashMap<SocketAddr, usize>,
    /// Where the next poll of the upstream sockets starts, so that no client starves another.
    next_poll: usize,
    /// Reused buffer of packets to send.
    outgoing: Vec<Transmit>,
}

/// What woke the driver.
enum Wake {
    FromClient(io::Result<(usize, SocketAddr)>),
    FromServer(SocketAddr, io::Result<usize>),
    Other,
}

impl Driver {
    async fn run(mut self) {
        let mut client_buf = vec![0u8; MAX_DATAGRAM];
        let mut server_buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let timeout = {
                let state = self.shared.lock();
                [
                    state.client_to_server.poll_timeout(),
                    state.server_to_client.poll_timeout(),
                ]
                .into_iter()
                .flatten()
                .min()
            };
            let timer = async {
                match timeout {
                    Some(deadline) => sleep_until(deadline).await,
                    None => pending().await,
                }
            };
            let wake = tokio::select! {
                received = self.client_socket.recv_from(&mut client_buf) => {
                    Wake::FromClient(received)
                }
                (client, received) = poll_upstreams(&self.mappings, &mut self.next_poll, &mut server_buf) => {
                    Wake::FromServer(client, received)
                }
                () = self.shared.changed.notified() => Wake::Other,
                () = timer => Wake::Other,
            };
            match wake {
                Wake::FromClient(Ok((len, client))) => {
                    self.ensure_mapping(client).await;
                    let data = client_buf.get(..len).unwrap_or_default().to_vec();
                    let now = Instant::now();
                    let mut state = self.shared.lock();
                    state.client_to_server.handle_packet(now, client, data);
                }
                Wake::FromClient(Err(error)) => {
                    // Not seen on Linux for an unconnected socket; other systems report an
                    // earlier send's ICMP error here. Either way the socket still works.
                    tracing::debug!(%error, "relay: receive from clients failed");
                }
                Wake::FromServer(client, Ok(len)) => {
                    let data = server_buf.get(..len).unwrap_or_default().to_vec();
                    let now = Instant::now();
                    let mut state = self.shared.lock();
                    state.server_to_client.handle_packet(now, client, data);
                }
                Wake::FromServer(client, Err(error)) => {
                    // Typically an ICMP port unreachable from an earlier send: the server is
                    // not (or no longer) listening. The socket still works.
                    tracing::debug!(%client, %error, "relay: receive from upstream failed");
                }
                Wake::Other => {}
            }
            self.flush().await;
        }
    }

    /// Makes sure `client` has its socket towards the server. A failure is logged; the
    /// client's packets are then counted as `dropped_error` when they come due, and the next
    /// packet tries again.
    async fn ensure_mapping(&mut self, client: SocketAddr) {
        if self.by_client.contains_key(&client) {
            return;
        }
        match connect_upstream(self.upstream).await {
            Ok(socket) => {
                tracing::debug!(
                    %client,
                    via = ?socket.local_addr().ok(),
                    "relay: new client"
                );
                self.by_client.insert(client, self.mappings.len());
                self.mappings.push(Mapping { client, socket });
            }
            Err(error) => {
                tracing::warn!(%client, %error, "relay: no socket towards the server");
            }
        }
    }

    /// Advances both pipelines to now and sends whatever they let out.
    async fn flush(&mut self) {
        let now = Instant::now();
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            {
                let mut state = self.shared.lock();
                let pipeline = state.pipeline(direction);
                pipeline.advance(now);
                while let Some(transmit) = pipeline.poll_transmit() {
                    self.outgoing.push(transmit);
                }
            }
            if self.outgoing.is_empty() {
                continue;
            }
            let mut results = Vec::with_capacity(self.outgoing.len());
            for transmit in self.outgoing.drain(..) {
                let sent = match direction {
                    Direction::ClientToServer => match self.by_client.get(&transmit.client) {
                        Some(&index) => match self.mappings.get(index) {
                            Some(mapping) => mapping.socket.send(&transmit.data).await,
                            None => Err(io::ErrorKind::NotFound.into()),
                        },
                        None => Err(io::ErrorKind::NotFound.into()),
                    },
                    _ => {
                        self.client_socket
                            .send_to(&transmit.data, transmit.client)
                            .await
                    }
                };
                if let Err(error) = &sent {
                    tracing::debug!(client = %transmit.client, ?direction, %error, "relay: send failed");
                }
                results.push(sent.map(|_| transmit.data.len()));
            }
            let mut state = self.shared.lock();
            let pipeline = state.pipeline(direction);
            for result in results {
                match result {
                    Ok(len) => pipeline.record_forwarded(len),
                    Err(_) => pipeline.record_error(),
                }
            }
        }
    }
}

impl State {
    /// The pipeline of one direction (`Both` is never asked for).
    fn pipeline(&mut self, direction: Direction) -> &mut Pipeline {
        match direction {
            Direction::ClientToServer => &mut self.client_to_server,
            _ => &mut self.server_to_client,
        }
    }
}

/// A socket connected to `upstream`, on the loopback address when `upstream` is a loopback
/// address (so tests expose nothing), otherwise on any address of its family.
async fn connect_upstream(upstream: SocketAddr) -> io::Result<UdpSocket> {
    let ip = upstream.ip();
    let local: SocketAddr = match (ip.is_loopback(), upstream) {
        (true, SocketAddr::V4(_)) => (Ipv4Addr::LOCALHOST, 0).into(),
        (true, SocketAddr::V6(_)) => (Ipv6Addr::LOCALHOST, 0).into(),
        (false, SocketAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, SocketAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected, so that the system only delivers packets from the server.
    socket.connect(upstream).await?;
    Ok(socket)
}

/// Waits for a packet from the server on any client's socket: which client it is for, and
/// its length in `buf`. Pending forever while there are no clients (the driver polls anew
/// after each wake-up, and a new client only appears after one).
///
/// Cancel safe: a packet is only taken from a socket when this returns it.
async fn poll_upstreams(
    mappings: &[Mapping],
    next_poll: &mut usize,
    buf: &mut [u8],
) -> (SocketAddr, io::Result<usize>) {
    poll_fn(|cx| {
        let count = mappings.len();
        for offset in 0..count {
            let index = (*next_poll + offset) % count;
            let Some(mapping) = mappings.get(index) else {
                continue;
            };
            let mut read = ReadBuf::new(buf);
            if let Poll::Ready(result) = mapping.socket.poll_recv(cx, &mut read) {
                *next_poll = index + 1;
                let len = read.filled().len();
                return Poll::Ready((mapping.client, result.map(|()| len)));
            }
        }
        Poll::Pending
    })
    .await
}
