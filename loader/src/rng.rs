//! Deterministic randomness: seed mixing, unbiased bounded integers, shuffles and
//! an alias table, all defined here so the results never depend on a library's
//! choice of algorithm (the same seed gives the same plan on any machine and
//! with any version of `rand`; only the ChaCha8 stream itself is relied on).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One step of SplitMix64: a bijective, well-mixing 64-bit hash.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Mixes several words into one seed; order matters.
pub fn mix(words: &[u64]) -> u64 {
    words.iter().fold(0x5CA1_EF01_D000_0000u64, |acc, &w| {
        splitmix64(acc ^ splitmix64(w))
    })
}

/// A ChaCha8 generator seeded from the mixed words.
pub fn rng_from(words: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(words))
}

/// A uniform integer in `0..bound` (bound > 0), without modulo bias (Lemire's method).
pub fn below(rng: &mut impl RngCore, bound: u64) -> u64 {
    debug_assert!(bound > 0);
    let threshold = bound.wrapping_neg() % bound;
    loop {
        let product = (rng.next_u64() as u128) * (bound as u128);
        if (product as u64) >= threshold {
            return (product >> 64) as u64;
        }
    }
}

/// A uniform float in `[0, 1)` with 53 random bits.
pub fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Fisher-Yates shuffle in place.
pub fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Walker/Vose alias table: O(1) draws from a fixed discrete distribution.
#[derive(Debug, Clone)]
pub struct AliasTable {
    probability: Vec<f64>,
    alias: Vec<u64>,
}

impl AliasTable {
    /// Builds the table; `weights` must be finite, non-negative, with a positive sum.
    /// Returns the index of the first offending weight as the error otherwise.
    pub fn new(weights: &[f64]) -> Result<Self, String> {
        if weights.is_empty() {
            return Err("no weights".into());
        }
        if let Some((i, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(format!(
                "weight of row {i} is {w}; weights must be finite and >= 0"
            ));
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 || !total.is_finite() {
            return Err(format!(
                "weights sum to {total}; the sum must be positive and finite"
            ));
        }
        let n = weights.len();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut probability = vec![1.0; n];
        let mut alias: Vec<u64> = (0..n as u64).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
        for (i, s) in scaled.iter().enumerate() {
            if *s < 1.0 {
                small.push(i)
            } else {
                large.push(i)
            }
        }
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            probability[s] = scaled[s];
            alias[s] = l as u64;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left has probability 1 (up to rounding).
        Ok(Self { probability, alias })
    }

    /// Draws one index.
    pub fn sample(&self, rng: &mut impl RngCore) -> u64 {
        let column = below(rng, self.probability.len() as u64);
        if unit(rng) < self.probability[column as usize] {
            column
        } else {
            self.alias[column as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = rng_from(&[1]);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[below(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn alias_matches_weights() {
        let weights = [1.0, 0.0, 3.0, 6.0];
        let table = AliasTable::new(&weights).unwrap();
        let mut rng = rng_from(&[2]);
        let mut counts = [0u32; 4];
        let draws = 100_000;
        for _ in 0..draws {
            counts[table.sample(&mut rng) as usize] += 1;
        }
        assert_eq!(counts[1], 0, "a zero weight is never drawn");
        for (c, w) in counts.iter().zip(weights) {
            let expected = draws as f64 * w / 10.0;
            assert!(
                (*c as f64 - expected).abs() < 0.02 * draws as f64,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn alias_rejects_bad_weights() {
        assert!(AliasTable::new(&[]).is_err());
        assert!(
            AliasTable::new(&[1.0, f64::NAN])
                .unwrap_err()
                .contains("row 1")
        );
        assert!(AliasTable::new(&[0.0, 0.0]).is_err());
        assert!(AliasTable::new(&[1.0, -1.0]).is_err());
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut rng_from(&[9, 1]), &mut a);
        shuffle(&mut rng_from(&[9, 1]), &mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }
}
