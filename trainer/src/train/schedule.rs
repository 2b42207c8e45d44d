//! Pure per-step schedules: the learning rate and the number of recycling
//! iterations, both functions of the step number (and the run seed) only, so a
//! resumed run and every data-parallel rank agree without shared state.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::mix64;
use crate::error::{Result, TrainerError};

/// Learning rate: linear warm-up to the peak (the optimizer's `lr`), then a step decay.
///
/// `lr(s) = peak · min(1, (s + 1) / warmup_steps) · decay_factor^⌊s / decay_every⌋`
/// for the 0-based step `s`. AlphaFold2 (supplement 1.11.3): warm-up over 1000
/// steps to 1e-3, then ×0.95 every 50 000 steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// Steps of linear warm-up (0: none).
    pub warmup_steps: u64,
    /// Steps between decays (0: no decay).
    pub decay_every: u64,
    /// Factor applied at each decay, in (0, 1].
    pub decay_factor: f64,
}

impl LrSchedule {
    /// The AlphaFold2 recipe.
    pub fn af2() -> Self {
        Self {
            warmup_steps: 1000,
            decay_every: 50_000,
            decay_factor: 0.95,
        }
    }

    /// The learning rate of 0-based step `step` for peak learning rate `peak`.
    pub fn lr(&self, step: u64, peak: f32) -> f32 {
        let warm = if self.warmup_steps == 0 {
            1.0
        } else {
            ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
        };
        let decays = step.checked_div(self.decay_every).unwrap_or(0);
        let decay = self.decay_factor.powi(decays.min(i32::MAX as u64) as i32);
        (peak as f64 * warm * decay) as f32
    }

    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        if !(self.decay_factor > 0.0 && self.decay_factor <= 1.0) {
            return Err(TrainerError::Config {
                field: "schedule.decay_factor",
                detail: format!("{}; expected a value in (0, 1]", self.decay_factor),
            });
        }
        Ok(())
    }
}

/// Domain tags of the per-step random streams (they never coincide).
const TAG_RECYCLES: u64 = 0x5245_4359;
const TAG_DROPOUT: u64 = 0x4452_4f50;

/// One 64-bit value from (seed, tag, step), well mixed.
fn stream(seed: u64, tag: u64, step: u64) -> u64 {
    mix64(mix64(seed ^ tag).wrapping_add(step))
}

/// Extra recycling iterations of step `step`: uniform over `0..=max_extra`,
/// drawn from (seed, step) alone, as the MLPerf recipe (every rank draws the
/// same number, a resumed run draws the same as an uninterrupted one).
pub fn recycles_for_step(seed: u64, step: u64, max_extra: usize) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(stream(seed, TAG_RECYCLES, step));
    rng.random_range(0..=max_extra)
}

/// The dropout seed of step `step` (every dropout mask of the step derives from it).
pub fn dropout_seed(seed: u64, step: u64) -> u64 {
    stream(seed, TAG_DROPOUT, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn af2_warmup_is_linear_then_flat_then_decays() {
        let s = LrSchedule::af2();
        let peak = 1e-3f32;
        let exact = |v: f64| (peak as f64 * v) as f32;
        assert_eq!(s.lr(0, peak), exact(1e-3));
        assert_eq!(s.lr(499, peak), exact(0.5));
        assert_eq!(s.lr(999, peak), peak);
        assert_eq!(s.lr(49_999, peak), peak);
        assert_eq!(s.lr(50_000, peak), exact(0.95));
        assert_eq!(s.lr(100_000, peak), exact(0.95 * 0.95));
        // Monotone: warm-up up, then never up again.
        let lrs: Vec<f32> = (0..2000).map(|t| s.lr(t, peak)).collect();
        assert!(lrs[..1000].windows(2).all(|w| w[0] < w[1]));
        assert!(lrs[1000..].windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn no_warmup_no_decay_is_constant() {
        let s = LrSchedule {
            warmup_steps: 0,
            decay_every: 0,
            decay_factor: 1.0,
        };
        assert!((0..100).all(|t| s.lr(t, 3e-4) == 3e-4));
        assert!(s.validate().is_ok());
        let bad = LrSchedule {
            decay_factor: 0.0,
            ..s
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn recycles_are_deterministic_uniform_and_seed_dependent() {
        let draws: Vec<usize> = (0..4000).map(|t| recycles_for_step(7, t, 3)).collect();
        let again: Vec<usize> = (0..4000).map(|t| recycles_for_step(7, t, 3)).collect();
        assert_eq!(draws, again);
        let mut counts = [0usize; 4];
        for &d in &draws {
            counts[d] += 1;
        }
        // Each of 4 outcomes expects 1000 draws; ±150 is > 5 standard deviations.
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
        let other: Vec<usize> = (0..4000).map(|t| recycles_for_step(8, t, 3)).collect();
        assert_ne!(draws, other);
        assert!((0..100).all(|t| recycles_for_step(7, t, 0) == 0));
    }

    #[test]
    fn dropout_seeds_differ_per_step_and_from_recycles() {
        let seeds: std::collections::BTreeSet<u64> =
            (0..1000).map(|t| dropout_seed(1, t)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(dropout_seed(1, 5), stream(1, TAG_RECYCLES, 5));
    }
}
