//! A tiny seeded pseudo-random generator (SplitMix64), so that every impairment decision
//! can be replayed from [`RelayConfig::seed`](crate::RelayConfig::seed).
//!
//! SplitMix64 walks a 64-bit counter by a fixed odd step and scrambles it; it is fast,
//! statistically good enough for test impairments, and its whole state is one `u64`. It is
//! not cryptographic, and it does not need to be.

/// The step of the counter: the odd integer closest to 2^64 divided by the golden ratio.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64: the state is a counter, each output a scrambled copy of it.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output depends on `seed` and on `stream`, so that the two
    /// directions of one relay get unrelated sequences from the same seed.
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        // Scramble the stream number first: seeds 0 and 1 of adjacent streams must not
        // produce shifted copies of each other's sequence.
        let offset = mix(stream.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA));
        Self {
            state: seed ^ offset,
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// A uniform value in `[0, 1)` with 53 bits of precision.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // 2^-53: the top 53 bits, as an integer, scaled into [0, 1).
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }
}

/// The SplitMix64 output function (a variant of MurmurHash3's 64-bit finalizer).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform integer in `[0, bound]`, inclusive, from 64 random bits (multiply-high; the
/// bias is at most `bound / 2^64`, far below what a test can see).
pub(crate) fn below_inclusive(bits: u64, bound: u64) -> u64 {
    let range = u128::from(bound) + 1;
    ((u128::from(bits) * range) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_streams_differ() {
        let mut a = SplitMix64::new(42, 0);
        let mut b = SplitMix64::new(42, 0);
        let mut c = SplitMix64::new(42, 1);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().zip(&zs).all(|(x, z)| x != z));
    }

    #[test]
    fn floats_are_in_range_and_roughly_uniform() {
        let mut rng = SplitMix64::new(7, 0);
        let n = 100_000;
        let mut below_quarter = 0;
        for _ in 0..n {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            if x < 0.25 {
                below_quarter += 1;
            }
        }
        let share = f64::from(below_quarter) / f64::from(n);
        assert!((share - 0.25).abs() < 0.01, "share below 0.25 was {share}");
    }

    #[test]
    fn below_inclusive_reaches_both_ends() {
        assert_eq!(below_inclusive(0, 10), 0);
        assert_eq!(below_inclusive(u64::MAX, 10), 10);
        assert_eq!(below_inclusive(u64::MAX, 0), 0);
        assert_eq!(below_inclusive(u64::MAX, u64::MAX), u64::MAX);
    }
}
