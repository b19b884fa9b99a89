//! What the relay does to packets: [`RelayConfig`], one [`Impairment`] per direction.

use std::time::Duration;

use crate::error::RelayError;

/// Which way packets travel through the relay, for the methods that change one direction
/// or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the clients to the upstream server.
    ClientToServer,
    /// From the upstream server back to the clients.
    ServerToClient,
    /// Both directions at once.
    Both,
}

impl Direction {
    /// Whether this selects the client-to-server direction.
    pub(crate) fn includes_client_to_server(self) -> bool {
        matches!(self, Self::ClientToServer | Self::Both)
    }

    /// Whether this selects the server-to-client direction.
    pub(crate) fn includes_server_to_client(self) -> bool {
        matches!(self, Self::ServerToClient | Self::Both)
    }
}

/// How one direction of the path is degraded. [`Default`] degrades nothing.
///
/// A packet that arrives goes through these steps, in this order:
///
/// 1. **blackhole**: dropped if [`blackhole`](Self::blackhole) is on;
/// 2. **loss**: dropped with probability [`loss`](Self::loss);
/// 3. **duplication**: with probability [`duplicate`](Self::duplicate) a second copy
///    follows it through the remaining steps;
/// 4. **queue limit**: each copy is dropped if [`queue_limit`](Self::queue_limit) packets
///    are already held in this direction;
/// 5. **rate limit**: the copy waits in a FIFO queue until the token bucket of
///    [`rate`](Self::rate) and [`burst`](Self::burst) lets it pass;
/// 6. **delay and jitter**: it then waits [`delay`](Self::delay) plus a uniform extra in
///    `[0, jitter]`, but never leaves before a packet that entered this step earlier, so
///    jitter alone does not reorder;
/// 7. **reordering**: with probability [`reorder`](Self::reorder) the packet (both copies,
///    if duplicated) is held back when it is due, and sent right after the next packet that
///    leaves in this direction. If no packet follows within 10 ms it is sent anyway, in
///    order, and not counted as reordered.
///
/// Anything that comes due while the blackhole is on is dropped as well, so nothing leaves
/// a blackholed direction, not even packets that arrived before it was switched on.
///
/// All packets of a direction share its rate limit and its queue, as on one network path,
/// whichever client they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Probability in `[0, 1]` that a packet is dropped.
    pub loss: f64,
    /// Probability in `[0, 1]` that a packet is sent twice.
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a packet is held back and sent after the next one.
    pub reorder: f64,
    /// Fixed one-way delay added to every packet.
    pub delay: Duration,
    /// Upper bound of the uniform random delay added on top of [`delay`](Self::delay).
    /// Since a packet never leaves before one that arrived earlier, packets closer together
    /// than the jitter mostly wait for their predecessors: their delays bunch towards the
    /// top of the range rather than spread evenly over it.
    pub jitter: Duration,
    /// Rate limit in bytes per second (UDP payload bytes); `None` for no limit.
    pub rate: Option<u64>,
    /// Size of the rate limiter's token bucket in bytes: how much may pass at once after
    /// an idle period. A packet larger than the bucket passes when the bucket is full, and
    /// the next ones wait until its bytes are paid for.
    pub burst: u64,
    /// Most packets held in this direction at once (waiting for the rate limit, delayed, or
    /// held back for reordering). Packets beyond it are dropped and counted in
    /// [`DirectionStats::dropped_queue`](crate::DirectionStats::dropped_queue). This is both
    /// the bottleneck buffer of the rate limit and the relay's memory bound.
    pub queue_limit: usize,
    /// Drop everything in this direction.
    pub blackhole: bool,
}

impl Impairment {
    /// Default [`burst`](Self::burst): two full-size Ethernet packets.
    pub const DEFAULT_BURST: u64 = 3_000;
    /// Default [`queue_limit`](Self::queue_limit).
    pub const DEFAULT_QUEUE_LIMIT: usize = 1_024;

    /// Checks that the probabilities are in `[0, 1]`, the rate and the queue limit are not
    /// zero.
    pub(crate) fn validate(&self) -> Result<(), RelayError> {
        for (value, field) in [
            (self.loss, "loss"),
            (self.duplicate, "duplicate"),
            (self.reorder, "reorder"),
        ] {
            // Written this way round so that NaN fails too.
            if !(0.0..=1.0).contains(&value) {
                return Err(RelayError::InvalidConfig {
                    field,
                    reason: "must be a probability in [0, 1]",
                });
            }
        }
        if self.rate == Some(0) {
            return Err(RelayError::InvalidConfig {
                field: "rate",
                reason: "must be at least 1 byte per second (None for no limit)",
            });
        }
        if self.burst == 0 {
            return Err(RelayError::InvalidConfig {
                field: "burst",
                reason: "must be at least 1 byte",
            });
        }
        if self.queue_limit == 0 {
            return Err(RelayError::InvalidConfig {
                field: "queue_limit",
                reason: "must be at least 1 packet",
            });
        }
        Ok(())
    }
}

impl Default for Impairment {
    fn default() -> Self {
        Self {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate: None,
            burst: Self::DEFAULT_BURST,
            queue_limit: Self::DEFAULT_QUEUE_LIMIT,
            blackhole: false,
        }
    }
}

/// Configuration of a [`Relay`](crate::Relay). [`Default`] forwards everything untouched,
/// with seed 0.
///
/// ```
/// use std::time::Duration;
/// use webtransport_relay::{Impairment, RelayConfig};
///
/// // 2 % loss and 20 ms of delay each way, replayable from seed 7.
/// let config = RelayConfig {
///     seed: 7,
///     ..RelayConfig::both(Impairment {
///         loss: 0.02,
///         delay: Duration::from_millis(20),
///         ..Impairment::default()
///     })
/// };
/// assert_eq!(config.client_to_server, config.server_to_client);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RelayConfig {
    /// Seed of every random decision. Each direction draws from its own stream derived from
    /// it; see the crate documentation for what this makes reproducible.
    pub seed: u64,
    /// What happens to packets from the clients to the server.
    pub client_to_server: Impairment,
    /// What happens to packets from the server to the clients.
    pub server_to_client: Impairment,
}

impl RelayConfig {
    /// The same impairment in both directions, seed 0.
    pub fn both(impairment: Impairment) -> Self {
        Self {
            seed: 0,
            client_to_server: impairment.clone(),
            server_to_client: impairment,
        }
    }

    /// Only loss, with probability `loss`, in both directions, seed 0.
    pub fn lossy(loss: f64) -> Self {
        Self::both(Impairment {
            loss,
            ..Impairment::default()
        })
    }

    /// Checks both directions.
    pub(crate) fn validate(&self) -> Result<(), RelayError> {
        self.client_to_server.validate()?;
        self.server_to_client.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_checks_catch_bad_values() {
        assert!(RelayConfig::default().validate().is_ok());
        assert!(RelayConfig::lossy(1.0).validate().is_ok());
        for bad in [
            Impairment {
                loss: 1.5,
                ..Impairment::default()
            },
            Impairment {
                reorder: f64::NAN,
                ..Impairment::default()
            },
            Impairment {
                duplicate: -0.1,
                ..Impairment::default()
            },
            Impairment {
                rate: Some(0),
                ..Impairment::default()
            },
            Impairment {
                burst: 0,
                ..Impairment::default()
            },
            Impairment {
                queue_limit: 0,
                ..Impairment::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(RelayError::InvalidConfig { .. })),
                "{bad:?} passed"
            );
        }
    }
}
