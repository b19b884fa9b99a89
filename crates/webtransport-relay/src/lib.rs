//! A network impairment relay for tests: an in-process tokio UDP relay that sits between
//! QUIC clients and a server and degrades the path, so that tests can show the stack
//! survives loss, reordering, duplication, delay, jitter, rate limits and a path that goes
//! silent.
//!
//! ```text
//!  client A ──┐                    ┌── socket for A ──┐
//!             ├──▶ relay.addr() ──▶┤                  ├──▶ upstream server
//!  client B ──┘                    └── socket for B ──┘
//!        (each direction degraded by its own Impairment)
//! ```
//!
//! Clients send to [`Relay::addr`] instead of the server. Each client address gets its own
//! socket towards the server, as behind a NAT, so several QUIC connections can share one
//! relay. Each direction has its own [`Impairment`]: loss, duplication, reordering, delay,
//! jitter, a rate limit with a bounded queue, and a blackhole switch. Both can be changed
//! while the relay runs, and [`Relay::stats`] counts what happened to the packets.
//!
//! ```
//! use std::time::Duration;
//! use tokio::net::UdpSocket;
//! use webtransport_relay::{Direction, Impairment, Relay, RelayConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = UdpSocket::bind("127.0.0.1:0").await?;
//! let config = RelayConfig {
//!     seed: 42,
//!     ..RelayConfig::both(Impairment {
//!         delay: Duration::from_millis(5),
//!         ..Impairment::default()
//!     })
//! };
//! let relay = Relay::start(server.local_addr()?, config)?;
//!
//! let client = UdpSocket::bind("127.0.0.1:0").await?;
//! client.send_to(b"hello", relay.addr()).await?;
//! let mut buf = [0u8; 16];
//! let (len, _via_relay) = server.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..len], b"hello");
//!
//! // The path goes silent for the client's packets.
//! relay.set_blackhole(Direction::ClientToServer, true);
//! client.send_to(b"lost", relay.addr()).await?;
//! tokio::time::sleep(Duration::from_millis(20)).await;
//! assert_eq!(relay.stats().client_to_server.dropped_blackhole, 1);
//!
//! relay.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Reproducibility
//!
//! Every random decision comes from [`RelayConfig::seed`]: each direction draws from its
//! own stream derived from it, and each packet that arrives in a direction draws the same
//! fixed set of values (loss, duplication, reordering, and two jitters), whether or not it
//! uses them. So the k-th packet of a direction meets the same fate in every run with the
//! same seed and settings, and its loss decision does not even change when only the other
//! probabilities do. Two runs therefore treat the same packets the same way as long as the
//! packets reach the relay in the same order.
//!
//! What is not reproducible is the order in which the operating system and the runtime
//! deliver packets: when several clients send at once, or the two directions interleave,
//! their packets may reach the relay in a different order from run to run, and so draw
//! different values. A single sender per direction, or a paused clock
//! (`#[tokio::test(start_paused = true)]`), keeps that order stable. The relay also cannot
//! see packets the system drops before it reads them (a full socket buffer), which can
//! happen when a test sends thousands of packets without yielding.
//!
//! # Time
//!
//! All timing uses [`tokio::time`], so a relay works under a paused clock: delays cost no
//! real time. tokio's timers fire on millisecond ticks, so a packet leaves at the first tick
//! at or after its due time.
#![warn(missing_docs)]

mod config;
mod error;
mod pipeline;
mod prng;
mod relay;
mod stats;

pub use config::{Direction, Impairment, RelayConfig};
pub use error::RelayError;
pub use relay::Relay;
pub use stats::{DirectionStats, RelayStats};
