//! Communicators for Dynamic Axial Parallelism and data parallelism.
//!
//! DAP splits the MSA and pair tensors by rows across ranks; an op that needs
//! the other axis is preceded by an all-to-all (a distributed transpose) and
//! whole-tensor contractions by an all-gather. Data parallelism all-reduces the
//! flat gradient block. [`LocalGroup`] is a single-process fake with the same
//! semantics, for tests. The NCCL implementation of this trait (cudarc's `nccl`
//! module, one process or thread per GPU, grouped send/recv for the all-to-all)
//! is not built yet.

use crate::backend::{Backend, TensorId};
use crate::error::{Result, TrainerError};
use std::sync::{Arc, Barrier, Mutex};

/// Collective operations over the tensors of one backend. Every rank calls each
/// collective in the same order with tensors of the same lengths.
pub trait Communicator<B: Backend> {
    /// This rank's index.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum(&self, be: &mut B, t: TensorId) -> Result<()>;
    /// `full = concat(shard of rank 0, shard of rank 1, ...)`.
    fn all_gather(&self, be: &mut B, shard: TensorId, full: TensorId) -> Result<()>;
    /// Chunk `j` of `send` (of `world` equal chunks) goes to rank `j`, landing in
    /// chunk `rank` of its `recv`.
    fn all_to_all(&self, be: &mut B, send: TensorId, recv: TensorId) -> Result<()>;
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
        let all = self.exchange(be.read(shard)?)?;
        if be.len(full) != all[0].len() * self.world {
            return Err(TrainerError::Comm(format!(
                "all_gather: full has {} elements, expected {}",
                be.len(full),
                all[0].len() * self.world
            )));
        }
        be.write(full, &all.concat())
    }

    fn all_to_all(&self, be: &mut B, send: TensorId, recv: TensorId) -> Result<()> {
        let n = be.len(send);
        if !n.is_multiple_of(self.world) || be.len(recv) != n {
            return Err(TrainerError::Comm(format!(
                "all_to_all: {n} elements do not split into {} chunks, or recv differs",
                self.world
            )));
        }
        let all = self.exchange(be.read(send)?)?;
        let chunk = n / self.world;
        let out: Vec<f32> = (0..self.world)
            .flat_map(|src| all[src][self.rank * chunk..(self.rank + 1) * chunk].to_vec())
            .collect();
        be.write(recv, &out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Class, cpu::CpuBackend};

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
}
