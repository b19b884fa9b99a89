//! Session-level flow control (draft-ietf-webtrans-http3 §5): how much stream payload and
//! how many streams each side may send in one session, and the capsules that move the
//! limits.
//!
//! Each session whose connection has flow control in effect holds one [`Flow`]. It counts
//! both directions and decides when a limit is broken and when a capsule must go out; the
//! caller sends what it returns and aborts the session with WT_FLOW_CONTROL_ERROR on an
//! error.

use crate::capsule::Capsule;
use crate::varint::VarInt;

use super::types::FlowLimits;

/// The largest stream count a WT_MAX_STREAMS or WT_STREAMS_BLOCKED capsule may carry
/// (draft-ietf-webtrans-http3 §5.6.2, §5.6.3).
const MAX_STREAM_COUNT: u64 = 1 << 60;

/// A flow-control rule the peer broke; the session is closed with WT_FLOW_CONTROL_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum FlowViolation {
    #[error("{read} bytes of stream data exceed WT_MAX_DATA {max}")]
    Data { read: u64, max: u64 },
    #[error("stream {opened} exceeds WT_MAX_STREAMS {max} (bidi: {bidi})")]
    Streams { bidi: bool, opened: u64, max: u64 },
    #[error("WT_MAX_DATA {got} does not increase {had}")]
    MaxDataNotIncreasing { had: u64, got: u64 },
    #[error("WT_MAX_STREAMS {got} does not increase {had} (bidi: {bidi})")]
    MaxStreamsNotIncreasing { bidi: bool, had: u64, got: u64 },
    #[error("stream count {0} above 2^60")]
    StreamCountTooLarge(u64),
    #[error("WT_MAX_STREAM_DATA / WT_STREAM_DATA_BLOCKED are not used over HTTP/3")]
    StreamDataCapsule,
}

fn idx(bidi: bool) -> usize {
    usize::from(bidi)
}

fn varint(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}

/// No WT_*_BLOCKED sent yet: above every limit (a limit is a varint, below 2^62).
const NEVER: u64 = u64::MAX;

/// One session's flow-control state. `send_*`: what the peer lets us do; `recv_*`: what we
/// let the peer do.
#[derive(Debug, Clone)]
pub(super) struct Flow {
    send_max_data: u64,
    sent: u64,
    /// The limit at which we last sent WT_DATA_BLOCKED (one capsule per limit), or
    /// `NEVER`.
    data_blocked_at: u64,
    send_max_streams: [u64; 2],
    opened: [u64; 2],
    streams_blocked_at: [u64; 2],

    // Our windows are the connection's config (`FlowLimits`), passed in where needed:
    // every session has the same, and an idle one should not carry a copy.
    recv_max_data: u64,
    /// Stream payload that arrived.
    received: u64,
    /// Stream payload the application took.
    consumed: u64,
    recv_max_streams: [u64; 2],
    peer_opened: [u64; 2],
    peer_closed: [u64; 2],
}

impl Flow {
    /// A session's state: `ours` are the windows we announced, `peer` the peer's initial
    /// limits from its SETTINGS.
    pub(super) fn new(ours: FlowLimits, peer: FlowLimits) -> Flow {
        Flow {
            send_max_data: peer.max_data,
            sent: 0,
            data_blocked_at: NEVER,
            send_max_streams: [peer.max_streams_uni, peer.max_streams_bidi],
            opened: [0; 2],
            streams_blocked_at: [NEVER; 2],
            recv_max_data: ours.max_data,
            received: 0,
            consumed: 0,
            recv_max_streams: [ours.max_streams_uni, ours.max_streams_bidi],
            peer_opened: [0; 2],
            peer_closed: [0; 2],
        }
    }

    // ---- sending ----

    /// Takes up to `want` bytes of send credit. Zero means blocked; the capsule (at most
    /// one per limit) tells the peer.
    pub(super) fn take_send_credit(&mut self, want: u64) -> (u64, Option<Capsule>) {
        let available = self.send_max_data.saturating_sub(self.sent);
        let granted = want.min(available);
        self.sent += granted;
        if granted == 0 && want > 0 && self.data_blocked_at != self.send_max_data {
            // §5.6.5: "A sender SHOULD send a WT_DATA_BLOCKED capsule ... when it wishes to
            // send data but is unable to do so due to WebTransport session-level flow
            // control."
            self.data_blocked_at = self.send_max_data;
            return (0, Some(Capsule::DataBlocked(varint(self.send_max_data))));
        }
        (granted, None)
    }

    /// Counts one more stream of ours, if the peer's limit allows it.
    pub(super) fn reserve_stream(&mut self, bidi: bool) -> Result<(), (u64, Option<Capsule>)> {
        let i = idx(bidi);
        let limit = self.send_max_streams[i];
        if self.opened[i] < limit {
            self.opened[i] += 1;
            return Ok(());
        }
        // §5.6.3: WT_STREAMS_BLOCKED when a stream cannot be opened for the limit.
        let capsule = (self.streams_blocked_at[i] != limit).then(|| {
            self.streams_blocked_at[i] = limit;
            Capsule::StreamsBlocked {
                bidi,
                max: varint(limit),
            }
        });
        Err((limit, capsule))
    }

    /// Undoes [`Flow::reserve_stream`] for a stream that was never opened on the wire.
    pub(super) fn release_stream(&mut self, bidi: bool) {
        let i = idx(bidi);
        self.opened[i] = self.opened[i].saturating_sub(1);
    }

    /// WT_MAX_DATA from the peer. `Ok(true)` when it gives more credit.
    pub(super) fn on_max_data(&mut self, max: u64) -> Result<bool, FlowViolation> {
        // §5.6.4: "If an endpoint receives a WT_MAX_DATA capsule with a Maximum Data value
        // that does not increase the Maximum Data value previously received, it MUST close
        // the WebTransport session with a WT_FLOW_CONTROL_ERROR error code."
        if max <= self.send_max_data {
            return Err(FlowViolation::MaxDataNotIncreasing {
                had: self.send_max_data,
                got: max,
            });
        }
        self.send_max_data = max;
        Ok(true)
    }

    /// WT_MAX_STREAMS from the peer. `Ok(true)` when it allows more streams.
    pub(super) fn on_max_streams(&mut self, bidi: bool, max: u64) -> Result<bool, FlowViolation> {
        // §5.6.2: a value above 2^60, or one that does not increase the limit, MUST close
        // the session with WT_FLOW_CONTROL_ERROR.
        if max > MAX_STREAM_COUNT {
            return Err(FlowViolation::StreamCountTooLarge(max));
        }
        let i = idx(bidi);
        if max <= self.send_max_streams[i] {
            return Err(FlowViolation::MaxStreamsNotIncreasing {
                bidi,
                had: self.send_max_streams[i],
                got: max,
            });
        }
        self.send_max_streams[i] = max;
        Ok(true)
    }

    /// WT_STREAMS_BLOCKED from the peer: only its value is checked (§5.6.3).
    pub(super) fn on_streams_blocked(&self, max: u64) -> Result<(), FlowViolation> {
        if max > MAX_STREAM_COUNT {
            return Err(FlowViolation::StreamCountTooLarge(max));
        }
        Ok(())
    }

    // ---- receiving ----

    /// `n` more bytes of stream payload arrived in this session.
    pub(super) fn on_received(&mut self, n: u64) -> Result<(), FlowViolation> {
        self.received = self.received.saturating_add(n);
        // §5.6.4: "If an endpoint receives Stream Body data in excess of this limit, it
        // MUST close the WebTransport session with a WT_FLOW_CONTROL_ERROR error code."
        if self.received > self.recv_max_data {
            return Err(FlowViolation::Data {
                read: self.received,
                max: self.recv_max_data,
            });
        }
        Ok(())
    }

    /// The application took `n` more bytes of stream payload. Returns the WT_MAX_DATA
    /// capsule to send when half the window has been used: credit follows what the
    /// application consumed, so a slow reader holds the peer back. `ours`: the windows
    /// we announced.
    pub(super) fn on_consumed(&mut self, n: u64, ours: &FlowLimits) -> Option<Capsule> {
        self.consumed = self.consumed.saturating_add(n).min(self.received);
        // §5.6: "Endpoints SHOULD send WT_MAX_DATA and WT_MAX_STREAMS capsules as they
        // consume data or close streams": here once half the window is used.
        let window = ours.max_data;
        if window > 0 && self.recv_max_data.saturating_sub(self.consumed) <= window / 2 {
            self.recv_max_data = self.consumed.saturating_add(window);
            return Some(Capsule::MaxData(varint(self.recv_max_data)));
        }
        None
    }

    /// The peer opened a stream in this session.
    pub(super) fn on_peer_stream(&mut self, bidi: bool) -> Result<(), FlowViolation> {
        let i = idx(bidi);
        self.peer_opened[i] += 1;
        // §5.6.2: "If an endpoint receives an incoming stream for a session that would
        // exceed the advertised Maximum Streams value, it MUST close the WebTransport
        // session with a WT_FLOW_CONTROL_ERROR error code."
        if self.peer_opened[i] > self.recv_max_streams[i] {
            return Err(FlowViolation::Streams {
                bidi,
                opened: self.peer_opened[i],
                max: self.recv_max_streams[i],
            });
        }
        Ok(())
    }

    /// A stream the peer opened is closed on our side. Returns the WT_MAX_STREAMS capsule
    /// to send once half of the window's streams have closed since the last one. `ours`:
    /// the windows we announced.
    pub(super) fn on_peer_stream_closed(
        &mut self,
        bidi: bool,
        ours: &FlowLimits,
    ) -> Option<Capsule> {
        let i = idx(bidi);
        self.peer_closed[i] += 1;
        let window = ours.streams(bidi);
        if window == 0
            || self.recv_max_streams[i] - self.peer_closed[i].min(self.recv_max_streams[i])
                > window / 2
        {
            return None;
        }
        let max = (self.peer_closed[i] + window).min(MAX_STREAM_COUNT);
        if max <= self.recv_max_streams[i] {
            return None;
        }
        self.recv_max_streams[i] = max;
        Some(Capsule::MaxStreams {
            bidi,
            max: varint(max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(data: u64, bidi: u64, uni: u64) -> FlowLimits {
        FlowLimits {
            max_data: data,
            max_streams_bidi: bidi,
            max_streams_uni: uni,
        }
    }

    #[test]
    fn send_credit_blocks_once_per_limit_and_refills() {
        let mut f = Flow::new(limits(100, 4, 4), limits(10, 1, 0));
        assert_eq!(f.take_send_credit(6), (6, None));
        assert_eq!(f.take_send_credit(6), (4, None));
        assert_eq!(
            f.take_send_credit(1),
            (0, Some(Capsule::DataBlocked(VarInt::from_u32(10))))
        );
        assert_eq!(f.take_send_credit(1), (0, None), "one capsule per limit");
        assert_eq!(
            f.on_max_data(10),
            Err(FlowViolation::MaxDataNotIncreasing { had: 10, got: 10 })
        );
        assert_eq!(f.on_max_data(20), Ok(true));
        assert_eq!(f.take_send_credit(50), (10, None));
    }

    #[test]
    fn stream_reservations_follow_the_peer_limit() {
        let mut f = Flow::new(limits(100, 4, 4), limits(10, 1, 0));
        assert!(f.reserve_stream(true).is_ok());
        let (limit, capsule) = f.reserve_stream(true).unwrap_err();
        assert_eq!(limit, 1);
        assert!(matches!(
            capsule,
            Some(Capsule::StreamsBlocked { bidi: true, .. })
        ));
        assert!(f.reserve_stream(false).is_err());
        f.release_stream(true);
        assert!(f.reserve_stream(true).is_ok());
        assert_eq!(f.on_max_streams(true, 3), Ok(true));
        assert!(f.reserve_stream(true).is_ok());
        assert_eq!(
            f.on_max_streams(true, (1 << 60) + 1),
            Err(FlowViolation::StreamCountTooLarge((1 << 60) + 1))
        );
        assert!(f.on_max_streams(true, 3).is_err());
    }

    #[test]
    fn consuming_refills_the_window_and_arrivals_past_it_are_caught() {
        let ours = limits(100, 4, 4);
        let mut f = Flow::new(ours, limits(0, 0, 0));
        assert_eq!(f.on_received(60), Ok(()));
        assert_eq!(f.on_consumed(40, &ours), None);
        assert_eq!(
            f.on_consumed(10, &ours),
            Some(Capsule::MaxData(VarInt::from_u32(150)))
        );
        assert_eq!(f.on_received(90), Ok(()));
        assert_eq!(
            f.on_consumed(100, &ours),
            Some(Capsule::MaxData(VarInt::from_u32(250)))
        );
        assert_eq!(
            f.on_received(101),
            Err(FlowViolation::Data {
                read: 251,
                max: 250
            })
        );
        // Data that arrived at once past the window is caught whatever the reader does.
        let mut g = Flow::new(limits(100, 4, 4), limits(0, 0, 0));
        assert!(g.on_received(400).is_err());
    }

    #[test]
    fn peer_streams_are_counted_and_credit_comes_back_as_they_close() {
        let ours = limits(100, 4, 1);
        let mut f = Flow::new(ours, limits(0, 0, 0));
        for _ in 0..4 {
            assert!(f.on_peer_stream(true).is_ok());
        }
        assert!(f.on_peer_stream(true).is_err());
        assert_eq!(f.on_peer_stream_closed(true, &ours), None);
        assert_eq!(
            f.on_peer_stream_closed(true, &ours),
            Some(Capsule::MaxStreams {
                bidi: true,
                max: VarInt::from_u32(6)
            })
        );
        assert!(f.on_peer_stream(false).is_ok());
        assert_eq!(
            f.on_peer_stream_closed(false, &ours),
            Some(Capsule::MaxStreams {
                bidi: false,
                max: VarInt::from_u32(2)
            })
        );
    }
}
