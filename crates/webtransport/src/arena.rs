//! [`DatagramArena`]: where a connection builds its outgoing datagrams.
//!
//! A WebTransport datagram is the session's quarter stream id followed by the payload, so
//! sending one means copying the payload behind a header. Allocating a buffer for each
//! cost more than the copy: fresh memory for every datagram, and under a steady stream of
//! them the allocator kept returning pages to the kernel and faulting new ones in
//! (page faults were 82 % of a datagram sender's, and most of its extra CPU against raw
//! quinn). Datagrams are instead built one after another in blocks of [`BLOCK`] bytes;
//! a used-up block waits in a ring until quinn has sent (and dropped) every datagram in
//! it, and is then written again while its memory is still warm.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Size of one block: ~30 datagrams of 1,000 bytes.
pub(crate) const BLOCK: usize = 32 * 1024;

#[derive(Debug)]
pub(crate) struct DatagramArena {
    /// The block being written; empty (no allocation) until the first datagram.
    current: BytesMut,
    /// Used-up blocks, oldest first, some of whose datagrams may still be queued in quinn.
    spent: VecDeque<BytesMut>,
    /// How many used-up blocks to keep for reuse: enough to cover quinn's datagram send
    /// buffer, which bounds how much of them can still be in flight.
    keep: usize,
    /// Whether `current` is a block (to be kept when used up), not an oversized buffer
    /// or the empty start.
    in_block: bool,
}

impl DatagramArena {
    /// An arena for a connection whose QUIC datagram send buffer holds `send_buffer`
    /// bytes. Allocates nothing until the first datagram; holds at most about
    /// `send_buffer` plus two blocks (as much as quinn may hold queued), and gives its
    /// free blocks back once quinn has sent everything.
    pub fn new(send_buffer: usize) -> Self {
        DatagramArena {
            current: BytesMut::new(),
            spent: VecDeque::new(),
            keep: send_buffer.div_ceil(BLOCK) + 1,
            in_block: false,
        }
    }

    /// Room for `len` more bytes: write one datagram there, then [`DatagramArena::take`] it.
    pub fn room(&mut self, len: usize) -> &mut BytesMut {
        if self.current.capacity() - self.current.len() < len {
            self.next_block(len);
        }
        &mut self.current
    }

    /// What was written since the last `take`, as one datagram sharing the block.
    pub fn take(&mut self) -> Bytes {
        self.current.split().freeze()
    }

    /// `len` bytes of the block, empty, for a datagram written elsewhere (by the
    /// application, see `DatagramBuffer`): the block's memory is used as by
    /// [`DatagramArena::take`], and the block is reused only once the datagram is dropped.
    pub fn lend(&mut self, len: usize) -> BytesMut {
        self.room(len);
        let rest = self.current.split_off(len);
        std::mem::replace(&mut self.current, rest)
    }

    fn next_block(&mut self, len: usize) {
        let used = std::mem::take(&mut self.current);
        if std::mem::take(&mut self.in_block) {
            self.spent.push_back(used);
        }
        if len > BLOCK {
            // Larger than any block: its own allocation, not kept (QUIC datagrams are
            // smaller than a block, so this is only a payload quinn will refuse).
            self.current = BytesMut::with_capacity(len);
            return;
        }
        self.in_block = true;
        // The oldest used-up block is free again once quinn dropped its last datagram.
        if let Some(mut oldest) = self.spent.pop_front() {
            if oldest.try_reclaim(BLOCK) {
                self.current = oldest;
                // When even the newest used-up block is free, quinn has sent everything:
                // the ring is kept for bursts that are over. Give its free blocks back to
                // the allocator, so that a connection whose datagram rate fell does not
                // keep its peak's memory. (While datagrams queue up, the newest block is
                // still in flight and the ring is left alone.)
                if self.spent.back_mut().is_some_and(|b| b.try_reclaim(BLOCK)) {
                    self.spent.retain_mut(|b| !b.try_reclaim(BLOCK));
                }
                return;
            }
            self.spent.push_front(oldest);
            if self.spent.len() > self.keep {
                // Still in use although the ring covers the whole send buffer (blocks
                // are never quite full): stop waiting for it, so the ring never grows
                // past the send buffer.
                self.spent.pop_front();
            }
        }
        self.current = BytesMut::with_capacity(BLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(arena: &mut DatagramArena, payload: &[u8]) -> Bytes {
        arena.room(payload.len()).extend_from_slice(payload);
        arena.take()
    }

    #[test]
    fn datagrams_share_a_block_and_keep_their_bytes() {
        let mut a = DatagramArena::new(4 * BLOCK);
        let d1 = send(&mut a, b"first");
        let d2 = send(&mut a, b"second");
        assert_eq!(&d1[..], b"first");
        assert_eq!(&d2[..], b"second");
        // Consecutive in one allocation.
        assert_eq!(d1.as_ptr() as usize + d1.len(), d2.as_ptr() as usize);
    }

    #[test]
    fn a_block_is_written_again_once_its_datagrams_are_dropped() {
        let mut a = DatagramArena::new(4 * BLOCK);
        let payload = vec![7u8; 1000];
        let first = send(&mut a, &payload);
        let start = first.as_ptr();
        drop(first);
        // Fill the first block and one more, dropping each datagram as quinn would.
        for _ in 0..(2 * BLOCK / 1000 + 1) {
            drop(send(&mut a, &payload));
        }
        // The second block is used up too; the first (free) is taken back.
        let mut reused = false;
        for _ in 0..(BLOCK / 1000 + 1) {
            let d = send(&mut a, &payload);
            reused |= d.as_ptr() == start;
            assert_eq!(&d[..], &payload[..]);
        }
        assert!(reused, "the first block was not reused");
    }

    #[test]
    fn a_block_still_in_use_is_not_overwritten() {
        let mut a = DatagramArena::new(2 * BLOCK);
        // Keep every datagram alive: no block may be reused, and none is corrupted.
        let kept: Vec<Bytes> = (0..200u8).map(|i| send(&mut a, &[i; 1000])).collect();
        for (i, d) in kept.iter().enumerate() {
            assert!(d.iter().all(|b| *b == i as u8), "datagram {i} overwritten");
        }
        assert!(a.spent.len() <= a.keep + 1);
    }

    #[test]
    fn blocks_are_given_back_when_less_is_in_flight() {
        let mut a = DatagramArena::new(64 * BLOCK);
        let payload = vec![3u8; 1000];
        // A burst with everything held in flight: many blocks used up.
        let burst: Vec<Bytes> = (0..20 * BLOCK / 1000)
            .map(|_| send(&mut a, &payload))
            .collect();
        let peak = a.spent.len();
        assert!(peak >= 19, "{peak} blocks after the burst");
        drop(burst);
        // Then a trickle where each datagram is gone before the next: the ring shrinks.
        for _ in 0..(40 * BLOCK / 1000) {
            drop(send(&mut a, &payload));
        }
        assert!(a.spent.len() <= 2, "{} blocks kept", a.spent.len());
    }

    #[test]
    fn a_lent_buffer_is_written_in_place_and_keeps_its_block_busy() {
        let mut a = DatagramArena::new(4 * BLOCK);
        let mut lent = a.lend(1000);
        assert!(lent.is_empty());
        assert_eq!(lent.capacity(), 1000);
        let at = lent.as_ptr();
        // The datagram built next comes after the lent bytes, in the same block.
        let next = send(&mut a, b"after");
        assert_eq!(next.as_ptr() as usize, at as usize + 1000);
        lent.extend_from_slice(&[4u8; 1000]);
        // Written where it was lent: no copy out of the block.
        assert_eq!(lent.as_ptr(), at);
        let lent = lent.freeze();
        drop(next);
        // While the lent datagram lives, its block is never written again.
        for _ in 0..(4 * BLOCK / 1000) {
            drop(send(&mut a, &[5u8; 1000]));
        }
        assert!(lent.iter().all(|b| *b == 4));
    }

    #[test]
    fn oversized_payloads_get_their_own_buffer() {
        let mut a = DatagramArena::new(BLOCK);
        let big = vec![9u8; BLOCK + 1];
        let d = send(&mut a, &big);
        assert_eq!(d.len(), BLOCK + 1);
        let small = send(&mut a, b"x");
        assert_eq!(&small[..], b"x");
    }
}
