//! A tiny counter-based random generator: splitmix64 keyed by (seed, stream ids).
//!
//! Every random decision of the SDR code draws from a stream keyed by *what* it is for (seed, field, item,
//! module or row), never from a shared sequential state, so results do not depend on the order in which threads
//! run or on how many there are.

/// One splitmix64 step (Steele, Lea & Flood 2014): a bijective 64-bit mixer.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random stream keyed by `seed` and a list of ids.
#[derive(Debug, Clone)]
pub struct Stream {
    state: u64,
}

impl Stream {
    /// The stream of `(seed, ids...)`; different id lists give independent-looking streams.
    pub fn new(seed: u64, ids: &[u64]) -> Self {
        // The seed and each id go through different mixers (and the running state is rotated), so that swapping a
        // seed with an id, or two ids, gives another stream (a plain XOR of mixed values would be symmetric).
        let mut s = mix(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x9e37_79b9_7f4a_7c15);
        for (i, id) in ids.iter().enumerate() {
            let salt = (i as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f);
            s = mix(s.rotate_left(23).wrapping_add(mix(id ^ salt)));
        }
        Self { state: s }
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)` (`n > 0`), by rejection so there is no modulo bias.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut s = Stream::new(7, &[1, 2]);
                move |_| s.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut s = Stream::new(7, &[1, 2]);
                move |_| s.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut s = Stream::new(7, &[2, 1]);
                move |_| s.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn swapped_keys_give_other_streams() {
        for a in 0..20u64 {
            for b in 0..20u64 {
                if a != b {
                    assert_ne!(Stream::new(a, &[b]).next_u64(), Stream::new(b, &[a]).next_u64());
                    assert_ne!(Stream::new(7, &[a, b]).next_u64(), Stream::new(7, &[b, a]).next_u64());
                }
            }
        }
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut s = Stream::new(1, &[]);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[s.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }
}
