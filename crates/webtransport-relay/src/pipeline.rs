//! One direction of the relay as a sans-IO state machine: packets in with
//! [`Pipeline::handle_packet`], time in with [`Pipeline::advance`], packets out with
//! [`Pipeline::poll_transmit`], the next wake-up from [`Pipeline::poll_timeout`]. It owns
//! no socket and reads no clock, so every decision is a function of its inputs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Impairment;
use crate::prng::{below_inclusive, SplitMix64};
use crate::stats::DirectionStats;

/// The longest a packet picked for reordering waits for a later packet to overtake it.
pub(crate) const MAX_REORDER_HOLD: Duration = Duration::from_millis(10);

/// A packet on its way through: which client it belongs to (the destination on the way back,
/// the source on the way out) and its payload.
#[derive(Debug)]
pub(crate) struct Transmit {
    pub(crate) client: SocketAddr,
    pub(crate) data: Vec<u8>,
}

/// A copy of a packet inside the pipeline, with the decisions drawn when it arrived.
#[derive(Debug)]
struct Held {
    packet: Transmit,
    /// Delay plus this copy's jitter, applied once it passes the rate limit.
    extra_delay: Duration,
    /// Picked for reordering.
    reorder: bool,
}

/// The random values every packet draws on arrival, always all of them and always in this
/// order, so that the k-th packet of a direction gets the same values whatever the settings
/// and whatever happened to the packets before it.
struct Draws {
    loss: f64,
    duplicate: f64,
    reorder: f64,
    jitter: u64,
    duplicate_jitter: u64,
}

impl Draws {
    fn take(rng: &mut SplitMix64) -> Self {
        Self {
            loss: rng.next_f64(),
            duplicate: rng.next_f64(),
            reorder: rng.next_f64(),
            jitter: rng.next_u64(),
            duplicate_jitter: rng.next_u64(),
        }
    }
}

/// Scale of the token bucket: tokens are counted in billionths of a byte, so that a rate in
/// bytes per second adds exactly `rate` tokens per nanosecond and no rounding accumulates.
const TOKENS_PER_BYTE: i128 = 1_000_000_000;

/// The rate limiter's token bucket.
#[derive(Debug)]
struct Bucket {
    /// In billionths of a byte; negative while a packet larger than the bucket is paid off.
    tokens: i128,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl Bucket {
    fn full(burst: u64, now: Instant) -> Self {
        Self {
            tokens: i128::from(burst) * TOKENS_PER_BYTE,
            updated: now,
        }
    }

    /// Adds the tokens earned since the last update, up to `burst`.
    fn refill(&mut self, now: Instant, rate: u64, burst: u64) {
        let elapsed = i128::try_from(now.saturating_duration_since(self.updated).as_nanos())
            .unwrap_or(i128::MAX);
        let earned = elapsed.saturating_mul(i128::from(rate));
        self.tokens = self
            .tokens
            .saturating_add(earned)
            .min(i128::from(burst) * TOKENS_PER_BYTE);
        self.updated = self.updated.max(now);
    }

    /// What a packet of `len` bytes needs before it may pass: its size, or the whole bucket
    /// for a packet larger than the bucket (which then leaves the bucket in debt).
    fn needed(len: usize, burst: u64) -> i128 {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        i128::from(len.min(burst)) * TOKENS_PER_BYTE
    }

    /// When a packet of `len` bytes may pass, if no other packet goes first.
    fn ready_at(&self, len: usize, rate: u64, burst: u64) -> Instant {
        let missing = Self::needed(len, burst) - self.tokens;
        if missing <= 0 {
            return self.updated;
        }
        let rate = i128::from(rate);
        let nanos = (missing + rate - 1) / rate;
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        // A wait this long only comes from absurd settings; cap it rather than overflow.
        self.updated
            .checked_add(wait)
            .unwrap_or_else(|| self.updated + Duration::from_secs(86_400))
    }
}

/// One direction of the relay: impairment, counters, random stream and the packets held.
#[derive(Debug)]
pub(crate) struct Pipeline {
    impairment: Impairment,
    stats: DirectionStats,
    rng: SplitMix64,
    bucket: Bucket,
    /// Waiting for the rate limit, in arrival order.
    rate_queue: VecDeque<Held>,
    /// Waiting for their delay to pass, in departure order (departures never decrease).
    delay_line: VecDeque<(Instant, Held)>,
    /// The latest departure given out, so that a later packet never leaves before it.
    last_departure: Option<Instant>,
    /// Picked for reordering and due, waiting for the next packet to go first.
    held_back: Vec<Held>,
    /// When `held_back` is sent anyway.
    held_back_until: Option<Instant>,
    /// Ready to send.
    out: VecDeque<Transmit>,
}

impl Pipeline {
    /// A pipeline applying `impairment`, drawing from random stream `stream` of `seed`.
    pub(crate) fn new(impairment: Impairment, seed: u64, stream: u64, now: Instant) -> Self {
        Self {
            bucket: Bucket::full(impairment.burst, now),
            impairment,
            stats: DirectionStats::default(),
            rng: SplitMix64::new(seed, stream),
            rate_queue: VecDeque::new(),
            delay_line: VecDeque::new(),
            last_departure: None,
            held_back: Vec::new(),
            held_back_until: None,
            out: VecDeque::new(),
        }
    }

    /// The impairment in force.
    pub(crate) fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> DirectionStats {
        self.stats
    }

    /// Replaces the impairment. Packets already past the rate limit keep their departure
    /// time; packets waiting for it are served at the new rate from now on.
    pub(crate) fn set_impairment(&mut self, impairment: Impairment, now: Instant) {
        match self.impairment.rate {
            Some(rate) => {
                // Earn what the old rate owed up to now before the new one takes over.
                self.bucket.refill(now, rate, self.impairment.burst);
                self.bucket.tokens = self
                    .bucket
                    .tokens
                    .min(i128::from(impairment.burst) * TOKENS_PER_BYTE);
            }
            // Without a limit the link was as good as idle: start with a full bucket.
            None => self.bucket = Bucket::full(impairment.burst, now),
        }
        self.impairment = impairment;
    }

    /// Switches the blackhole on or off.
    pub(crate) fn set_blackhole(&mut self, on: bool) {
        self.impairment.blackhole = on;
    }

    /// Packets inside the pipeline.
    fn held(&self) -> usize {
        self.rate_queue.len() + self.delay_line.len() + self.held_back.len() + self.out.len()
    }

    /// A packet arrived from (or, on the way back, for) `client` at `now`.
    pub(crate) fn handle_packet(&mut self, now: Instant, client: SocketAddr, data: Vec<u8>) {
        self.stats.received_packets += 1;
        self.stats.received_bytes += data.len() as u64;
        let draws = Draws::take(&mut self.rng);
        if self.impairment.blackhole {
            self.stats.dropped_blackhole += 1;
            return;
        }
        if draws.loss < self.impairment.loss {
            self.stats.dropped_loss += 1;
            return;
        }
        let reorder = draws.reorder < self.impairment.reorder;
        let copy = (draws.duplicate < self.impairment.duplicate).then(|| Held {
            packet: Transmit {
                client,
                data: data.clone(),
            },
            extra_delay: self.delay_with_jitter(draws.duplicate_jitter),
            reorder,
        });
        let original = Held {
            packet: Transmit { client, data },
            extra_delay: self.delay_with_jitter(draws.jitter),
            reorder,
        };
        self.enqueue(now, original);
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.enqueue(now, copy);
        }
    }

    /// `delay` plus a uniform share of `jitter` chosen by `bits`.
    fn delay_with_jitter(&self, bits: u64) -> Duration {
        let jitter = u64::try_from(self.impairment.jitter.as_nanos()).unwrap_or(u64::MAX);
        self.impairment
            .delay
            .saturating_add(Duration::from_nanos(below_inclusive(bits, jitter)))
    }

    /// Takes a copy in, or drops it if the queue is full.
    fn enqueue(&mut self, now: Instant, held: Held) {
        if self.held() >= self.impairment.queue_limit {
            self.stats.dropped_queue += 1;
        } else if self.impairment.rate.is_some() {
            self.rate_queue.push_back(held);
        } else {
            self.start_delay(now, held);
        }
    }

    /// Starts a copy's delay at `now`, never ending before the previous copy's.
    fn start_delay(&mut self, now: Instant, held: Held) {
        let due = now
            .checked_add(held.extra_delay)
            .unwrap_or(now)
            .max(self.last_departure.unwrap_or(now));
        self.last_departure = Some(due);
        self.delay_line.push_back((due, held));
    }

    /// Moves everything that is due by `now` along: through the rate limit, out of the
    /// delay line, and out of the reordering hold, into the output queue.
    pub(crate) fn advance(&mut self, now: Instant) {
        self.serve_rate_queue(now);
        loop {
            let next_due = self
                .delay_line
                .front()
                .map(|(due, _)| *due)
                .filter(|due| *due <= now);
            if let Some(until) = self.held_back_until {
                if until <= now && next_due.is_none_or(|due| until < due) {
                    // Nothing overtook the held packets in time: they go in order.
                    self.release_held_back(false);
                    continue;
                }
            }
            if next_due.is_none() {
                break;
            }
            let Some((due, held)) = self.delay_line.pop_front() else {
                break;
            };
            if held.reorder {
                if self.held_back.is_empty() {
                    self.held_back_until = Some(due + MAX_REORDER_HOLD);
                }
                self.held_back.push(held);
            } else {
                self.emit(held.packet);
                self.release_held_back(true);
            }
        }
    }

    /// Lets through the rate limit whatever the bucket pays for at `now`.
    fn serve_rate_queue(&mut self, now: Instant) {
        let Some(rate) = self.impairment.rate else {
            // No limit (any more): everything waiting goes on at once.
            while let Some(held) = self.rate_queue.pop_front() {
                self.start_delay(now, held);
            }
            return;
        };
        let burst = self.impairment.burst;
        self.bucket.refill(now, rate, burst);
        while let Some(front) = self.rate_queue.front() {
            let len = front.packet.data.len();
            if self.bucket.tokens < Bucket::needed(len, burst) {
                break;
            }
            self.bucket.tokens -=
                i128::from(u64::try_from(len).unwrap_or(u64::MAX)) * TOKENS_PER_BYTE;
            if let Some(held) = self.rate_queue.pop_front() {
                self.start_delay(now, held);
            }
        }
    }

    /// Sends the held-back packets, in their order; `overtaken` when a later packet has just
    /// gone before them.
    fn release_held_back(&mut self, overtaken: bool) {
        self.held_back_until = None;
        for held in std::mem::take(&mut self.held_back) {
            if overtaken && !self.impairment.blackhole {
                self.stats.reordered += 1;
            }
            self.emit(held.packet);
        }
    }

    /// Queues a packet for sending, unless the blackhole is on.
    fn emit(&mut self, packet: Transmit) {
        if self.impairment.blackhole {
            self.stats.dropped_blackhole += 1;
        } else {
            self.out.push_back(packet);
        }
    }

    /// The next packet to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The sender reports that a packet of `len` bytes left.
    pub(crate) fn record_forwarded(&mut self, len: usize) {
        self.stats.forwarded_packets += 1;
        self.stats.forwarded_bytes += len as u64;
    }

    /// The sender reports that a packet could not be sent.
    pub(crate) fn record_error(&mut self) {
        self.stats.dropped_error += 1;
    }

    /// When [`advance`](Self::advance) next has something to do, if anything is held.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let rate_ready = match (self.impairment.rate, self.rate_queue.front()) {
            (Some(rate), Some(front)) => Some(self.bucket.ready_at(
                front.packet.data.len(),
                rate,
                self.impairment.burst,
            )),
            // Packets left in the queue after the limit was lifted go at once.
            (None, Some(_)) => Some(self.bucket.updated),
            (_, None) => None,
        };
        let due = self.delay_line.front().map(|(due, _)| *due);
        [rate_ready, due, self.held_back_until]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5000))
    }

    /// Packet `index` as 4 bytes, padded to `len`.
    fn numbered(index: u32, len: usize) -> Vec<u8> {
        let mut data = index.to_be_bytes().to_vec();
        data.resize(len.max(4), 0);
        data
    }

    fn index_of(data: &[u8]) -> u32 {
        u32::from_be_bytes([data[0], data[1], data[2], data[3]])
    }

    /// Everything the pipeline lets out at `now`.
    fn drain(pipeline: &mut Pipeline, now: Instant) -> Vec<u32> {
        pipeline.advance(now);
        std::iter::from_fn(|| pipeline.poll_transmit())
            .map(|t| index_of(&t.data))
            .collect()
    }

    #[test]
    fn no_impairment_passes_everything_at_once_in_order() {
        let now = Instant::now();
        let mut pipeline = Pipeline::new(Impairment::default(), 1, 0, now);
        for i in 0..10 {
            pipeline.handle_packet(now, client(), numbered(i, 100));
        }
        assert_eq!(drain(&mut pipeline, now), (0..10).collect::<Vec<_>>());
        assert_eq!(pipeline.poll_timeout(), None);
    }

    #[test]
    fn jitter_stays_in_bounds_and_does_not_reorder() {
        let start = Instant::now();
        let delay = Duration::from_millis(30);
        let jitter = Duration::from_millis(20);
        let impairment = Impairment {
            delay,
            jitter,
            ..Impairment::default()
        };
        let mut pipeline = Pipeline::new(impairment, 3, 0, start);
        let mut sent = Vec::new();
        for i in 0..1000u32 {
            let now = start + Duration::from_micros(100) * i;
            pipeline.handle_packet(now, client(), numbered(i, 10));
            sent.push(now);
        }
        let mut order = Vec::new();
        while let Some(due) = pipeline.poll_timeout() {
            for index in drain(&mut pipeline, due) {
                let latency = due - sent[index as usize];
                assert!(latency >= delay && latency <= delay + jitter, "{latency:?}");
                order.push(index);
            }
        }
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_reordered_packet_goes_after_the_next_or_after_the_hold() {
        let now = Instant::now();
        let impairment = Impairment {
            reorder: 1.0,
            ..Impairment::default()
        };
        let mut pipeline = Pipeline::new(impairment, 0, 0, now);
        pipeline.handle_packet(now, client(), numbered(0, 10));
        assert_eq!(drain(&mut pipeline, now), Vec::<u32>::new());
        // Nothing follows: sent in order once the hold ends, not counted as reordered.
        assert_eq!(pipeline.poll_timeout(), Some(now + MAX_REORDER_HOLD));
        assert_eq!(drain(&mut pipeline, now + MAX_REORDER_HOLD), vec![0]);
        assert_eq!(pipeline.stats().reordered, 0);

        // Two picked in a row go together after the next one that is not.
        let later = now + MAX_REORDER_HOLD;
        pipeline.handle_packet(later, client(), numbered(1, 10));
        pipeline.handle_packet(later, client(), numbered(2, 10));
        pipeline.set_impairment(Impairment::default(), later);
        pipeline.handle_packet(later, client(), numbered(3, 10));
        assert_eq!(drain(&mut pipeline, later), vec![3, 1, 2]);
        assert_eq!(pipeline.stats().reordered, 2);
    }

    #[test]
    fn rate_limit_spaces_packets_by_their_size() {
        let start = Instant::now();
        let impairment = Impairment {
            rate: Some(1_000),
            burst: 100,
            ..Impairment::default()
        };
        let mut pipeline = Pipeline::new(impairment, 0, 0, start);
        for i in 0..5 {
            pipeline.handle_packet(start, client(), numbered(i, 100));
        }
        // The full bucket pays for the first; each next one needs 100 ms of tokens.
        assert_eq!(drain(&mut pipeline, start), vec![0]);
        for i in 1..5 {
            let due = pipeline.poll_timeout().unwrap();
            assert_eq!(due, start + Duration::from_millis(100) * i);
            assert_eq!(drain(&mut pipeline, due), vec![i]);
        }
        // A packet larger than the bucket passes on a full bucket and leaves a debt.
        let later = start + Duration::from_secs(10);
        pipeline.handle_packet(later, client(), numbered(5, 300));
        pipeline.handle_packet(later, client(), numbered(6, 100));
        assert_eq!(drain(&mut pipeline, later), vec![5]);
        assert_eq!(
            pipeline.poll_timeout(),
            Some(later + Duration::from_millis(300))
        );
    }

    #[test]
    fn queue_limit_drops_the_excess() {
        let now = Instant::now();
        let impairment = Impairment {
            delay: Duration::from_millis(10),
            queue_limit: 3,
            ..Impairment::default()
        };
        let mut pipeline = Pipeline::new(impairment, 0, 0, now);
        for i in 0..5 {
            pipeline.handle_packet(now, client(), numbered(i, 10));
        }
        assert_eq!(pipeline.stats().dropped_queue, 2);
        assert_eq!(
            drain(&mut pipeline, now + Duration::from_millis(10)),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn loss_decisions_do_not_depend_on_the_other_settings() {
        let now = Instant::now();
        let lost = |impairment: Impairment| {
            let mut pipeline = Pipeline::new(impairment, 99, 0, now);
            let mut lost = Vec::new();
            for i in 0..2000 {
                let before = pipeline.stats().dropped_loss;
                pipeline.handle_packet(now, client(), numbered(i, 10));
                if pipeline.stats().dropped_loss > before {
                    lost.push(i);
                }
            }
            lost
        };
        let plain = lost(Impairment {
            loss: 0.1,
            ..Impairment::default()
        });
        let busy = lost(Impairment {
            loss: 0.1,
            duplicate: 0.3,
            reorder: 0.2,
            jitter: Duration::from_millis(5),
            ..Impairment::default()
        });
        assert_eq!(plain, busy);
        assert!((150..250).contains(&plain.len()), "{}", plain.len());
    }
}
