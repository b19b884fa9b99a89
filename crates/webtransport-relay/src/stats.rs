//! Counters of what the relay did: [`RelayStats`].

/// What the relay did to the packets of one direction.
///
/// Every packet received is, in the end, forwarded or dropped for exactly one cause, and
/// every duplicate copy too, so once nothing is held any more:
/// `received_packets + duplicated == forwarded_packets + dropped_loss + dropped_blackhole
/// + dropped_queue + dropped_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DirectionStats {
    /// Packets that arrived at the relay in this direction.
    pub received_packets: u64,
    /// UDP payload bytes of those packets.
    pub received_bytes: u64,
    /// Packets sent on (duplicates included).
    pub forwarded_packets: u64,
    /// UDP payload bytes of those packets.
    pub forwarded_bytes: u64,
    /// Packets dropped by random loss.
    pub dropped_loss: u64,
    /// Packets dropped because the blackhole was on when they arrived or came due.
    pub dropped_blackhole: u64,
    /// Packets dropped because the queue was full (rate limit or held-packet cap).
    pub dropped_queue: u64,
    /// Packets the operating system would not send, or for which no upstream socket could
    /// be made.
    pub dropped_error: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Packets that left after a packet that arrived later than they did.
    pub reordered: u64,
}

/// A snapshot of the relay's counters, one set per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RelayStats {
    /// Packets from the clients to the server.
    pub client_to_server: DirectionStats,
    /// Packets from the server to the clients.
    pub server_to_client: DirectionStats,
}
