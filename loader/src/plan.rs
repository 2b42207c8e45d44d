//! The plan: which row each rank reads at each position of each epoch, and with
//! which seed.
//!
//! # Global order and ranks
//!
//! For every epoch the plan first builds one **global order** of rows from
//! `(run seed, epoch)` alone: a shuffled pass without replacement, or weighted
//! draws with replacement. The global order never depends on the number of ranks
//! or the batch size. It is cut into global steps of `world_size × batch_size`
//! rows; in step `k`, rank `r` takes global positions
//! `k·world·B + r·B .. k·world·B + (r+1)·B` as its batch `k`. Every rank therefore
//! has the same number of batches (`⌊len / (world·B)⌋`); the few rows of the
//! last, incomplete global step are left out of that epoch (they are at the end
//! of a fresh random order, so no row is systematically dropped).
//!
//! Each sample's seed is `mix(run seed, epoch, global position)`, so a sample's
//! random transform is the same on any machine and for any world size.
//!
//! # Changing the world size
//!
//! What stays: the global order of every epoch, every sample's seed, and the
//! set of samples consumed after `k` full global steps (`k·world·B` positions).
//! What changes: which rank reads which sample, the number of batches per rank,
//! and the handful of rows in the dropped tail of each epoch. To resume a run on
//! a different number of GPUs mid-epoch, start the new run at the global position
//! `cursor · world_old · B` ([`Plan::with_start_position`]); samples delivered
//! ahead of the cursor inside the ready-first window (at most `W − 1` batches per
//! rank) are seen again. Like Mosaic Streaming's canonical partitions, nothing
//! about the order depends on the hardware.
//!
//! # Locality
//!
//! A fully random order touches a random row group for every sample. The shuffle
//! is therefore a two-level *block shuffle*: row groups are permuted, grouped into
//! blocks of `block_row_groups`, and rows are shuffled within each block. With a
//! block as large as the dataset this is a uniform permutation.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::LoaderError;
use crate::rng::{self, AliasTable};

/// Domain tags so the different random streams never coincide.
const TAG_SHUFFLE: u64 = 0x5348_5546;
const TAG_WEIGHTED: u64 = 0x5745_4947;
const TAG_SAMPLE_SEED: u64 = 0x5345_4544;

/// How rows are drawn for an epoch.
#[derive(Debug, Clone)]
pub enum Sampling {
    /// Every row once per epoch, in a block-shuffled order.
    Shuffle {
        /// Row groups per shuffle block; 0 means one block of all row groups (a
        /// uniform permutation).
        block_row_groups: usize,
    },
    /// Draws with replacement, row `i` with probability `weights[i] / Σ weights`.
    Weighted {
        /// One non-negative weight per row of the source, in row order.
        weights: Arc<[f64]>,
        /// Draws per epoch (over all ranks).
        samples_per_epoch: u64,
    },
}

/// Everything that defines a rank's plan.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// The run seed.
    pub seed: u64,
    /// This rank, `0..world_size`.
    pub rank: usize,
    /// Number of data-parallel ranks (one loader each).
    pub world_size: usize,
    /// Samples per batch (1 in the AlphaFold recipe).
    pub batch_size: usize,
    /// Shuffle or weighted sampling.
    pub sampling: Sampling,
}

/// One planned sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanEntry {
    /// Position in the epoch's global order.
    pub position: u64,
    /// Global row id: rows are numbered across row groups in source order.
    pub row: u64,
    /// The sample's seed, from (run seed, epoch, position).
    pub seed: u64,
}

/// A rank's deterministic plan over a source with known row-group sizes.
#[derive(Debug, Clone)]
pub struct Plan {
    config: PlanConfig,
    /// `row_group_start[g]` is the global id of row group `g`'s first row; one extra
    /// entry holds the total.
    row_group_start: Vec<u64>,
    alias: Option<Arc<AliasTable>>,
    start_position: u64,
}

impl Plan {
    /// Builds a plan over row groups of the given sizes (in rows).
    pub fn new(config: PlanConfig, row_group_rows: &[u64]) -> Result<Self, LoaderError> {
        if config.world_size == 0 || config.rank >= config.world_size {
            return Err(LoaderError::Plan(format!(
                "rank {} is not in 0..world_size {}",
                config.rank, config.world_size
            )));
        }
        if config.batch_size == 0 {
            return Err(LoaderError::Plan("batch_size must be at least 1".into()));
        }
        let mut row_group_start = Vec::with_capacity(row_group_rows.len() + 1);
        let mut total = 0u64;
        for rows in row_group_rows {
            row_group_start.push(total);
            total += rows;
        }
        row_group_start.push(total);
        if total == 0 {
            return Err(LoaderError::Plan("the source has no rows".into()));
        }
        let alias = match &config.sampling {
            Sampling::Shuffle { .. } => None,
            Sampling::Weighted { weights, .. } => {
                if weights.len() as u64 != total {
                    return Err(LoaderError::Plan(format!(
                        "{} weights given for {total} rows",
                        weights.len()
                    )));
                }
                Some(Arc::new(
                    AliasTable::new(weights).map_err(LoaderError::Plan)?,
                ))
            }
        };
        let plan = Self {
            config,
            row_group_start,
            alias,
            start_position: 0,
        };
        if plan.batches_per_epoch() == 0 {
            return Err(LoaderError::Plan(format!(
                "an epoch of {} samples gives no full global step of world_size {} x batch_size {}",
                plan.epoch_len(),
                plan.config.world_size,
                plan.config.batch_size
            )));
        }
        Ok(plan)
    }

    /// A plan whose every epoch starts at global position `position` (rounded down
    /// to a global step); used to continue a run on a different world size.
    pub fn with_start_position(mut self, position: u64) -> Self {
        let step = self.global_step();
        self.start_position = (position / step * step).min(self.epoch_len() / step * step);
        self
    }

    /// The configuration this plan was built from.
    pub fn config(&self) -> &PlanConfig {
        &self.config
    }

    /// Rows in the source.
    pub fn total_rows(&self) -> u64 {
        *self.row_group_start.last().expect("at least one entry")
    }

    /// Number of row groups in the source.
    pub fn row_group_count(&self) -> usize {
        self.row_group_start.len() - 1
    }

    /// Samples in one epoch's global order (all ranks, before dropping the tail).
    pub fn epoch_len(&self) -> u64 {
        match &self.config.sampling {
            Sampling::Shuffle { .. } => self.total_rows(),
            Sampling::Weighted {
                samples_per_epoch, ..
            } => *samples_per_epoch,
        }
    }

    fn global_step(&self) -> u64 {
        (self.config.world_size * self.config.batch_size) as u64
    }

    /// Batches this rank gets per epoch (the same for every rank).
    pub fn batches_per_epoch(&self) -> u64 {
        (self.epoch_len() - self.start_position) / self.global_step()
    }

    /// The row group holding global row `row`, and the row's index inside it.
    pub fn locate(&self, row: u64) -> (usize, usize) {
        let group = self.row_group_start.partition_point(|&start| start <= row) - 1;
        (group, (row - self.row_group_start[group]) as usize)
    }

    /// Global row id of row `index` of row group `group`.
    pub fn row_id(&self, group: usize, index: usize) -> u64 {
        self.row_group_start[group] + index as u64
    }

    /// Rows in row group `group`.
    pub fn row_group_rows(&self, group: usize) -> u64 {
        self.row_group_start[group + 1] - self.row_group_start[group]
    }

    /// The epoch's global order of row ids (independent of rank and world size).
    pub fn global_order(&self, epoch: u64) -> Vec<u64> {
        match &self.config.sampling {
            Sampling::Shuffle { block_row_groups } => {
                let mut rng = rng::rng_from(&[TAG_SHUFFLE, self.config.seed, epoch]);
                let mut groups: Vec<usize> = (0..self.row_group_count()).collect();
                rng::shuffle(&mut rng, &mut groups);
                let block = if *block_row_groups == 0 {
                    groups.len()
                } else {
                    *block_row_groups
                };
                let mut order = Vec::with_capacity(self.total_rows() as usize);
                for chunk in groups.chunks(block) {
                    let begin = order.len();
                    for &g in chunk {
                        order.extend(self.row_group_start[g]..self.row_group_start[g + 1]);
                    }
                    rng::shuffle(&mut rng, &mut order[begin..]);
                }
                order
            }
            Sampling::Weighted {
                samples_per_epoch, ..
            } => {
                let alias = self.alias.as_ref().expect("weighted plans have a table");
                let mut rng = rng::rng_from(&[TAG_WEIGHTED, self.config.seed, epoch]);
                (0..*samples_per_epoch)
                    .map(|_| alias.sample(&mut rng))
                    .collect()
            }
        }
    }

    /// The seed of the sample at `position` of `epoch`.
    pub fn sample_seed(&self, epoch: u64, position: u64) -> u64 {
        rng::mix(&[TAG_SAMPLE_SEED, self.config.seed, epoch, position])
    }

    /// This rank's entries for one epoch, batch after batch
    /// (`batches_per_epoch() × batch_size` entries).
    pub fn rank_epoch(&self, epoch: u64) -> Vec<PlanEntry> {
        let order = self.global_order(epoch);
        let batch = self.config.batch_size as u64;
        let step = self.global_step();
        let mut entries = Vec::with_capacity((self.batches_per_epoch() * batch) as usize);
        for k in 0..self.batches_per_epoch() {
            let first = self.start_position + k * step + self.config.rank as u64 * batch;
            for position in first..first + batch {
                entries.push(PlanEntry {
                    position,
                    row: order[position as usize],
                    seed: self.sample_seed(epoch, position),
                });
            }
        }
        entries
    }

    /// A fingerprint of everything that shapes the plan, stored in a resume state
    /// so a state is never applied to a different plan.
    pub fn fingerprint(&self) -> u64 {
        let mut words = vec![
            self.config.seed,
            self.config.rank as u64,
            self.config.world_size as u64,
            self.config.batch_size as u64,
            self.start_position,
        ];
        match &self.config.sampling {
            Sampling::Shuffle { block_row_groups } => {
                words.extend([TAG_SHUFFLE, *block_row_groups as u64])
            }
            Sampling::Weighted {
                weights,
                samples_per_epoch,
            } => {
                words.extend([TAG_WEIGHTED, *samples_per_epoch]);
                words.extend(weights.iter().map(|w| w.to_bits()));
            }
        }
        words.extend(&self.row_group_start);
        rng::mix(&words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn plan(rank: usize, world: usize, batch: usize, sampling: Sampling) -> Plan {
        let config = PlanConfig {
            seed: 42,
            rank,
            world_size: world,
            batch_size: batch,
            sampling,
        };
        Plan::new(config, &[10, 7, 0, 13, 10]).unwrap()
    }

    #[test]
    fn shuffle_is_a_permutation_per_epoch() {
        for block in [0, 1, 2] {
            let p = plan(
                0,
                1,
                1,
                Sampling::Shuffle {
                    block_row_groups: block,
                },
            );
            let mut order = p.global_order(3);
            assert_ne!(order, p.global_order(4), "epochs differ");
            order.sort();
            assert_eq!(order, (0..40).collect::<Vec<_>>());
        }
    }

    #[test]
    fn block_shuffle_keeps_blocks_together() {
        let p = plan(
            0,
            1,
            1,
            Sampling::Shuffle {
                block_row_groups: 1,
            },
        );
        let order = p.global_order(0);
        let groups: Vec<usize> = order.iter().map(|&r| p.locate(r).0).collect();
        let changes = groups.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(
            changes, 3,
            "4 non-empty row groups, each read as one run: {groups:?}"
        );
    }

    #[test]
    fn ranks_are_disjoint_and_equal_sized() {
        for (world, batch) in [(1, 1), (3, 2), (4, 3), (7, 1)] {
            let mut seen = HashSet::new();
            let mut sizes = HashSet::new();
            for rank in 0..world {
                let p = plan(
                    rank,
                    world,
                    batch,
                    Sampling::Shuffle {
                        block_row_groups: 2,
                    },
                );
                let entries = p.rank_epoch(1);
                sizes.insert(entries.len());
                for e in entries {
                    assert!(seen.insert(e.row), "row {} given twice", e.row);
                }
            }
            assert_eq!(sizes.len(), 1);
            assert_eq!(
                seen.len() as u64,
                40 / (world * batch) as u64 * (world * batch) as u64
            );
        }
    }

    #[test]
    fn global_order_and_seeds_do_not_depend_on_world_size() {
        let interleave = |world: usize, batch: usize| {
            let plans: Vec<Plan> = (0..world)
                .map(|r| {
                    plan(
                        r,
                        world,
                        batch,
                        Sampling::Shuffle {
                            block_row_groups: 0,
                        },
                    )
                })
                .collect();
            let per_rank: Vec<Vec<PlanEntry>> = plans.iter().map(|p| p.rank_epoch(2)).collect();
            let mut all = Vec::new();
            for k in 0..plans[0].batches_per_epoch() as usize {
                for entries in &per_rank {
                    all.extend_from_slice(&entries[k * batch..(k + 1) * batch]);
                }
            }
            all
        };
        let one = interleave(1, 1);
        for (world, batch) in [(2, 1), (4, 2), (3, 3)] {
            let many = interleave(world, batch);
            assert_eq!(many[..], one[..many.len()], "world {world} batch {batch}");
        }
    }

    #[test]
    fn start_position_continues_the_global_order() {
        let full = plan(
            0,
            1,
            1,
            Sampling::Shuffle {
                block_row_groups: 0,
            },
        )
        .rank_epoch(5);
        let resumed = plan(
            1,
            2,
            2,
            Sampling::Shuffle {
                block_row_groups: 0,
            },
        )
        .with_start_position(12);
        let entries = resumed.rank_epoch(5);
        assert_eq!(entries[0], full[14]);
        assert_eq!(entries[1], full[15]);
        assert_eq!(resumed.batches_per_epoch(), 7);
    }

    #[test]
    fn weighted_draws_follow_weights() {
        let mut weights = vec![0.0; 40];
        weights[3] = 1.0;
        weights[17] = 3.0;
        let sampling = Sampling::Weighted {
            weights: weights.into(),
            samples_per_epoch: 4000,
        };
        let p = plan(0, 1, 1, sampling);
        let order = p.global_order(0);
        let count3 = order.iter().filter(|&&r| r == 3).count();
        assert_eq!(order.iter().filter(|&&r| r != 3 && r != 17).count(), 0);
        assert!((850..1150).contains(&count3), "{count3}");
    }

    #[test]
    fn bad_plans_are_rejected() {
        let cfg = |rank, world, batch| PlanConfig {
            seed: 1,
            rank,
            world_size: world,
            batch_size: batch,
            sampling: Sampling::Shuffle {
                block_row_groups: 0,
            },
        };
        assert!(Plan::new(cfg(2, 2, 1), &[4]).is_err());
        assert!(Plan::new(cfg(0, 1, 0), &[4]).is_err());
        assert!(Plan::new(cfg(0, 1, 1), &[0, 0]).is_err());
        assert!(
            Plan::new(cfg(0, 3, 2), &[4]).is_err(),
            "no full global step"
        );
        let weighted = PlanConfig {
            sampling: Sampling::Weighted {
                weights: vec![1.0; 3].into(),
                samples_per_epoch: 4,
            },
            ..cfg(0, 1, 1)
        };
        assert!(
            Plan::new(weighted, &[4])
                .unwrap_err()
                .to_string()
                .contains("3 weights")
        );
    }

    #[test]
    fn locate_inverts_row_id() {
        let p = plan(
            0,
            1,
            1,
            Sampling::Shuffle {
                block_row_groups: 0,
            },
        );
        for row in 0..40 {
            let (g, i) = p.locate(row);
            assert_eq!(p.row_id(g, i), row);
            assert!((i as u64) < p.row_group_rows(g));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// For any row-group sizes, world size and batch size: ranks get equal,
        /// disjoint shares, and interleaving them step by step gives a prefix of the
        /// single-rank global order.
        #[test]
        fn ranks_partition_a_prefix_of_the_global_order(
            groups in proptest::collection::vec(0u64..20, 1..12),
            world in 1usize..6,
            batch in 1usize..4,
            block in 0usize..4,
            seed in 0u64..1000,
            epoch in 0u64..5,
        ) {
            let total: u64 = groups.iter().sum();
            proptest::prop_assume!(total >= (world * batch) as u64);
            let make = |rank, world, batch| {
                let sampling = Sampling::Shuffle { block_row_groups: block };
                Plan::new(PlanConfig { seed, rank, world_size: world, batch_size: batch, sampling }, &groups).unwrap()
            };
            let global = make(0, 1, 1).rank_epoch(epoch);
            let per_rank: Vec<Vec<PlanEntry>> = (0..world).map(|r| make(r, world, batch).rank_epoch(epoch)).collect();
            let steps = per_rank[0].len() / batch;
            proptest::prop_assert!(per_rank.iter().all(|e| e.len() == steps * batch));
            proptest::prop_assert_eq!(steps as u64, total / (world * batch) as u64);
            let mut interleaved = Vec::new();
            for k in 0..steps {
                for entries in &per_rank {
                    interleaved.extend_from_slice(&entries[k * batch..(k + 1) * batch]);
                }
            }
            proptest::prop_assert_eq!(&interleaved[..], &global[..interleaved.len()]);
            let distinct: HashSet<u64> = interleaved.iter().map(|e| e.row).collect();
            proptest::prop_assert_eq!(distinct.len(), interleaved.len());
        }
    }
}
