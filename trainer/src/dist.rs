//! Communicators for Dynamic Axial Parallelism and data parallelism.
//!
//! DAP splits the MSA and pair tensors by rows across ranks; an op that needs
//! the other axis is preceded by an all-to-all (a distributed transpose) and
//! whole-tensor contractions by an all-gather. Data parallelism averages the
//! flat gradient block over ranks. [`LocalGroup`] is a single-process fake with
//! the same semantics, for tests; [`nccl::NcclGroup`] is the NCCL implementation
//! for the CUDA backend (one process or one thread per GPU, grouped send/recv for
//! the all-to-all, everything queued on the backend's stream so that it can be
//! captured in a CUDA graph).
//!
//! The length checks every implementation applies are the plain functions
//! [`all_to_all_chunk`] and [`all_gather_shard`]: a collective called with
//! lengths that do not fit fails before any data moves.

pub mod nccl;

pub use nccl::{NcclGroup, all_reduce_gradients};

use crate::backend::{Backend, Class, TensorId};
use crate::error::{Result, TrainerError};
use std::sync::{Arc, Barrier, Mutex};

/// Collective operations over the tensors of one backend. Every rank calls each
/// collective in the same order with tensors of the same lengths (NCCL cannot
/// check this across ranks: a mismatch there hangs or corrupts, so the layout
/// that decides the lengths must be the same on every rank).
pub trait Communicator<B: Backend> {
    /// This rank's index.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum(&self, be: &mut B, t: TensorId) -> Result<()>;
    /// `full = concat(shard of rank 0, shard of rank 1, ...)`. `shard` may be this
    /// rank's own chunk of `full` (in place); otherwise the two must not overlap.
    /// Both tensors have the same element type (the same class on the GPU).
    fn all_gather(&self, be: &mut B, shard: TensorId, full: TensorId) -> Result<()>;
    /// Chunk `j` of `send` (of `world` equal chunks) goes to rank `j`, landing in
    /// chunk `rank` of its `recv`. `send` and `recv` have the same length and
    /// element type and do not overlap.
    fn all_to_all(&self, be: &mut B, send: TensorId, recv: TensorId) -> Result<()>;
}

/// Elements per chunk of an all-to-all over `world` ranks: `send_len / world`.
/// Fails unless both tensors have the same length and it splits into `world`
/// equal chunks.
pub fn all_to_all_chunk(send_len: usize, recv_len: usize, world: usize) -> Result<usize> {
    if world == 0 || !send_len.is_multiple_of(world) || recv_len != send_len {
        return Err(TrainerError::Comm(format!(
            "all_to_all: send has {send_len} elements and recv {recv_len}; both must be \
             the same multiple of the {world} ranks"
        )));
    }
    Ok(send_len / world)
}

/// Elements of this rank's shard in an all-gather: fails unless `full_len` is
/// exactly `world * shard_len`.
pub fn all_gather_shard(shard_len: usize, full_len: usize, world: usize) -> Result<usize> {
    if shard_len.checked_mul(world) != Some(full_len) {
        return Err(TrainerError::Comm(format!(
            "all_gather: full has {full_len} elements, expected {world} ranks x {shard_len}"
        )));
    }
    Ok(shard_len)
}

/// Whether the byte ranges `[a, a + a_len)` and `[b, b + b_len)` share a byte.
pub(crate) fn overlaps(a: u64, a_len: usize, b: u64, b_len: usize) -> bool {
    a_len > 0 && b_len > 0 && a < b + b_len as u64 && b < a + a_len as u64
}

/// Memory a collective moves on the GPU: one tensor, or every storage block of a
/// class (the flat gradient block).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Region {
    /// One declared tensor (or view).
    Tensor(TensorId),
    /// Every block of a class, padding included.
    Class(Class),
}

struct Shared {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

/// A single-process group of `world` ranks (one thread each), exchanging through host memory.
#[derive(Clone)]
pub struct LocalGroup {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl LocalGroup {
    /// One communicator per rank; hand each to its own thread.
    pub fn new(world: usize) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![Vec::new(); world]),
            barrier: Barrier::new(world),
        });
        (0..world)
            .map(|rank| LocalGroup {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Publishes this rank's data, waits for all, and returns every rank's data.
    fn exchange(&self, data: Vec<f32>) -> Result<Vec<Vec<f32>>> {
        self.shared
            .slots
            .lock()
            .map_err(|_| TrainerError::Comm("a rank panicked".into()))?[self.rank] = data;
        self.shared.barrier.wait();
        let all = self
            .shared
            .slots
            .lock()
            .map_err(|_| TrainerError::Comm("a rank panicked".into()))?
            .clone();
        self.shared.barrier.wait();
        let n = all[0].len();
        if all.iter().any(|v| v.len() != n) {
            return Err(TrainerError::Comm(format!(
                "ranks passed different lengths: {:?}",
                all.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        Ok(all)
    }
}

impl<B: Backend> Communicator<B> for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, be: &mut B, t: TensorId) -> Result<()> {
        let all = self.exchange(be.read(t)?)?;
        let sum: Vec<f32> = (0..all[0].len())
            .map(|i| all.iter().map(|v| v[i]).sum())
            .collect();
        be.write(t, &sum)
    }

    fn all_gather(&self, be: &mut B, shard: TensorId, full: TensorId) -> Result<()> {
        all_gather_shard(be.len(shard), be.len(full), self.world)?;
        let all = self.exchange(be.read(shard)?)?;
        be.write(full, &all.concat())
    }

    fn all_to_all(&self, be: &mut B, send: TensorId, recv: TensorId) -> Result<()> {
        let chunk = all_to_all_chunk(be.len(send), be.len(recv), self.world)?;
        let all = self.exchange(be.read(send)?)?;
        let out: Vec<f32> = (0..self.world)
            .flat_map(|src| all[src][self.rank * chunk..(self.rank + 1) * chunk].to_vec())
            .collect();
        be.write(recv, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use proptest::prelude::*;

    /// Row-split DAP transpose: each of 2 ranks holds 2 of 4 rows of a 4x4
    /// matrix; all-to-all of the column chunks plus a local transpose gives each
    /// rank 2 rows of the transposed matrix.
    #[test]
    fn all_to_all_transposes_row_shards_and_collectives_agree() {
        let world = 2;
        let full: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let handles: Vec<_> = LocalGroup::new(world)
            .into_iter()
            .map(|comm| {
                let full = full.clone();
                std::thread::spawn(move || {
                    let mut be = CpuBackend::<f32>::new();
                    let rank = Communicator::<CpuBackend>::rank(&comm);
                    let shard = be.declare("shard", 8, Class::Activation);
                    let packed = be.declare("packed", 8, Class::Activation);
                    let recv = be.declare("recv", 8, Class::Activation);
                    let gathered = be.declare("gathered", 16, Class::Activation);
                    be.materialize().unwrap();
                    be.write(shard, &full[rank * 8..rank * 8 + 8]).unwrap();
                    // Pack by destination: the 2x2 block of columns 2j..2j+2 goes to rank j.
                    be.transpose([1, 2, 2, 2], shard, packed, false).unwrap();
                    comm.all_to_all(&mut be, packed, recv).unwrap();
                    let got = be.read(recv).unwrap();
                    comm.all_gather(&mut be, shard, gathered).unwrap();
                    assert_eq!(be.read(gathered).unwrap(), full);
                    comm.all_reduce_sum(&mut be, shard).unwrap();
                    let sum = be.read(shard).unwrap();
                    (rank, got, sum)
                })
            })
            .collect();
        for h in handles {
            let (rank, got, sum) = h.join().unwrap();
            // recv holds, per source rank, that rank's 2 rows restricted to my 2 columns.
            let expect: Vec<f32> = (0..2)
                .flat_map(|src| {
                    (0..2).flat_map(move |r| {
                        (0..2).map(move |c| ((src * 2 + r) * 4 + rank * 2 + c) as f32)
                    })
                })
                .collect();
            assert_eq!(got, expect);
            let sum_expect: Vec<f32> = (0..8).map(|i| full[i] + full[8 + i]).collect();
            assert_eq!(sum, sum_expect);
        }
    }

    #[test]
    fn all_to_all_chunk_splits_or_names_the_lengths() {
        assert_eq!(all_to_all_chunk(12, 12, 3).unwrap(), 4);
        assert_eq!(all_to_all_chunk(0, 0, 2).unwrap(), 0);
        for (send, recv, world) in [(10, 10, 3), (12, 8, 2), (4, 4, 0)] {
            let msg = all_to_all_chunk(send, recv, world).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("send has {send} elements and recv {recv}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn all_gather_shard_needs_world_times_shard() {
        assert_eq!(all_gather_shard(5, 15, 3).unwrap(), 5);
        assert_eq!(all_gather_shard(0, 0, 4).unwrap(), 0);
        let msg = all_gather_shard(5, 14, 3).unwrap_err().to_string();
        assert!(
            msg.contains("full has 14 elements, expected 3 ranks x 5"),
            "{msg}"
        );
        assert!(all_gather_shard(usize::MAX, 0, 2).is_err());
    }

    #[test]
    fn overlap_of_byte_ranges() {
        assert!(overlaps(100, 10, 105, 10));
        assert!(overlaps(105, 10, 100, 10));
        assert!(overlaps(100, 10, 100, 1));
        assert!(!overlaps(100, 10, 110, 10));
        assert!(!overlaps(110, 10, 100, 10));
        assert!(!overlaps(100, 0, 100, 10));
    }

    #[test]
    fn nccl_init_arguments_are_checked() {
        let id = vec![7u8; nccl::NCCL_ID_BYTES];
        assert_eq!(
            nccl::check_init(&id, 1, 2).unwrap(),
            [7u8; nccl::NCCL_ID_BYTES]
        );
        let msg = nccl::check_init(&id[..100], 0, 2).unwrap_err().to_string();
        assert!(msg.contains("has 128 bytes, got 100"), "{msg}");
        for (rank, world) in [(2, 2), (0, 0)] {
            let msg = nccl::check_init(&id, rank, world).unwrap_err().to_string();
            assert!(
                msg.contains(&format!("rank {rank} of world {world}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn nccl_id_hex_errors_name_the_problem() {
        let msg = nccl::id_from_hex("abc").unwrap_err().to_string();
        assert!(msg.contains("has 256 characters, got 3"), "{msg}");
        let mut hex = "0".repeat(256);
        hex.replace_range(37..38, "g");
        let msg = nccl::id_from_hex(&hex).unwrap_err().to_string();
        assert!(msg.contains("character 37 ('g')"), "{msg}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn nccl_id_hex_round_trips(id in prop::collection::vec(any::<u8>(), nccl::NCCL_ID_BYTES)) {
            let hex = nccl::id_to_hex(&id);
            prop_assert_eq!(hex.len(), 2 * nccl::NCCL_ID_BYTES);
            prop_assert_eq!(nccl::id_from_hex(&format!(" {hex}\n")).unwrap(), id.clone());
            prop_assert_eq!(nccl::id_from_hex(&hex.to_uppercase()).unwrap(), id);
        }
    }

    /// Ranks that pass different lengths to a collective all get an error (none hangs).
    #[test]
    fn local_group_rejects_lengths_that_differ_across_ranks() {
        let handles: Vec<_> = LocalGroup::new(2)
            .into_iter()
            .map(|comm| {
                std::thread::spawn(move || {
                    let mut be = CpuBackend::<f32>::new();
                    let rank = Communicator::<CpuBackend>::rank(&comm);
                    let t = be.declare("t", 3 + rank, Class::Stat);
                    be.materialize().unwrap();
                    comm.all_reduce_sum(&mut be, t).unwrap_err().to_string()
                })
            })
            .collect();
        for h in handles {
            let msg = h.join().unwrap();
            assert!(msg.contains("different lengths: [3, 4]"), "{msg}");
        }
    }
}
