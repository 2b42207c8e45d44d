//! The Evoformer block benchmark behind `scalefold bench evoformer`: ms per
//! block forward + backward on the GPU, eager and as a CUDA-graph replay, the
//! arena's memory, and optionally a per-op profile with FLOP/s and GB/s.

use crate::EvoformerBlock;
use crate::backend::cuda::CudaBackend;
use crate::backend::profile::{OpStats, Profiled};
use crate::backend::{Backend, Class, TensorId, mix64};
use crate::config::BlockConfig;
use crate::error::{Result, TrainerError};
use crate::layers::ParamTable;
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed iterations per measurement (the median is reported).
    pub iters: usize,
    /// MSA rows of the Evoformer block.
    pub n_seq: usize,
    /// Residues.
    pub n_res: usize,
    /// Rows of the extra-MSA block.
    pub n_extra: usize,
    /// Also time every op separately.
    pub profile: bool,
    /// GPU ordinal.
    pub device: usize,
}

/// The benchmark's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    /// The GPU's name.
    pub device: String,
    /// Timed iterations per figure.
    pub iters: usize,
    /// One entry per block kind.
    pub results: Vec<BlockResult>,
}

/// Measures the Evoformer block and the extra-MSA block.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let configs = [
        ("evoformer", BlockConfig::evoformer(opts.n_seq, opts.n_res)),
        (
            "extra_msa",
            BlockConfig::extra_msa(opts.n_extra, opts.n_res),
        ),
    ];
    let mut results = vec![];
    let mut device = String::new();
    for (name, cfg) in &configs {
        let (r, d) = measure(name, cfg, opts)?;
        device = d;
        results.push(r);
    }
    Ok(BenchReport {
        device,
        iters: opts.iters,
        results,
    })
}

impl BenchReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!("device: {}\n", self.device);
        for r in &self.results {
            let c = &r.config;
            out += &format!(
                "{:<10} n_seq {:>4} n_res {:>3} c_m {:>3} c_z {:>3}: fwd+bwd eager {:>8.3} ms, graph {:>8.3} ms; fwd eager {:>7.3} ms; arena {:.2} GiB, device used {:.2} GiB, {} params\n",
                r.block,
                c.n_seq,
                c.n_res,
                c.c_m,
                c.c_z,
                r.eager_fwd_bwd_ms,
                r.graph_fwd_bwd_ms,
                r.eager_fwd_ms,
                r.arena_bytes as f64 / (1u64 << 30) as f64,
                r.device_bytes_used as f64 / (1u64 << 30) as f64,
                r.params
            );
            if !r.profile.is_empty() {
                let total: f64 = r.profile.iter().map(|(_, s)| s.seconds).sum();
                out += &format!(
                    "  {:<32} {:>6} {:>9} {:>6} {:>10} {:>9}\n",
                    "op (synchronized)", "calls", "ms", "%", "TFLOP/s", "GB/s"
                );
                for (op, s) in &r.profile {
                    out += &format!(
                        "  {:<32} {:>6} {:>9.3} {:>5.1}% {:>10.1} {:>9.0}\n",
                        op,
                        s.calls,
                        s.seconds * 1e3,
                        100.0 * s.seconds / total,
                        s.flops / s.seconds / 1e12,
                        s.bytes / s.seconds / 1e9
                    );
                }
            }
        }
        out
    }
}

/// Timings and memory of one block.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BlockResult {
    /// Block kind ("evoformer" or "extra_msa").
    pub block: String,
    /// Its configuration.
    pub config: BlockConfig,
    /// Median ms of one eager forward + backward step.
    pub eager_fwd_bwd_ms: f64,
    /// Median ms of one CUDA-graph replay of that step.
    pub graph_fwd_bwd_ms: f64,
    /// Median ms of the eager forward alone.
    pub eager_fwd_ms: f64,
    /// Bytes of all planned arenas.
    pub arena_bytes: usize,
    /// Device memory taken while planning and running (cuMemGetInfo).
    pub device_bytes_used: usize,
    /// Parameter count.
    pub params: usize,
    /// Per-op statistics, slowest first (empty without profiling).
    pub profile: Vec<(String, OpStats)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Planned {
    block: EvoformerBlock,
    table: ParamTable,
    seeds: [TensorId; 2],
}

fn plan<B: Backend>(be: &mut B, cfg: &BlockConfig) -> Result<Planned> {
    let mut table = ParamTable::default();
    let mut block = EvoformerBlock::new(be, &mut table, "block", cfg)?;
    block.dropout_seed = Some(7);
    let seeds = [
        be.declare("d_m_seed", be.len(block.d_m), Class::Activation),
        be.declare("d_z_seed", be.len(block.d_z), Class::Activation),
    ];
    be.materialize()?;
    block.init_constants(be)?;
    table.init(be, 7, true)?;
    for (k, t) in [block.m_in, block.z_in, seeds[0], seeds[1]]
        .into_iter()
        .enumerate()
    {
        // Uniform in [-1, 1) from a counter hash: random data, never zeros.
        let v: Vec<f32> = (0..be.len(t))
            .map(|i| (mix64(((k as u64) << 40) ^ i as u64) >> 40) as f32 / 8_388_608.0 - 1.0)
            .collect();
        be.write(t, &v)?;
    }
    Ok(Planned {
        block,
        table,
        seeds,
    })
}

/// One training step of the block: zero gradients, seed output gradients, forward, backward.
fn step<B: Backend>(be: &mut B, p: &Planned, backward: bool) -> Result<()> {
    p.table.zero_grads(be)?;
    be.transpose(
        [1, 1, be.len(p.seeds[0]), 1],
        p.seeds[0],
        p.block.d_m,
        false,
    )?;
    be.transpose(
        [1, 1, be.len(p.seeds[1]), 1],
        p.seeds[1],
        p.block.d_z,
        false,
    )?;
    p.block.forward(be)?;
    if backward {
        p.block.backward(be)?;
    }
    Ok(())
}

fn time_ms(
    iters: usize,
    be: &mut CudaBackend,
    mut f: impl FnMut(&mut CudaBackend) -> Result<()>,
) -> Result<f64> {
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        be.sync()?;
        let t0 = Instant::now();
        f(be)?;
        be.sync()?;
        v.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(v))
}

fn measure(name: &str, cfg: &BlockConfig, args: &BenchOptions) -> Result<(BlockResult, String)> {
    let mut gpu = CudaBackend::new(args.device)?;
    let device = gpu.device_name().to_string();
    let (free_before, _) = gpu.mem_info()?;
    let p = plan(&mut gpu, cfg)?;
    for _ in 0..3 {
        step(&mut gpu, &p, true)?;
    }
    let eager = time_ms(args.iters, &mut gpu, |g| step(g, &p, true))?;
    let fwd = time_ms(args.iters, &mut gpu, |g| step(g, &p, false))?;
    gpu.sync()?;
    gpu.begin_capture()?;
    step(&mut gpu, &p, true)?;
    let graph = gpu.end_capture()?;
    gpu.replay(&graph)?;
    let replay = time_ms(args.iters, &mut gpu, |g| g.replay(&graph))?;
    for t in [p.block.m_out, p.block.z_out, p.block.d_m, p.block.d_z] {
        let v = gpu.read(t)?;
        if !v.iter().all(|x| x.is_finite()) {
            return Err(TrainerError::Shape {
                op: "bench",
                detail: format!(
                    "{} has non-finite values after the timed steps",
                    gpu.tensor_name(t)
                ),
            });
        }
    }
    let (free_after, _) = gpu.mem_info()?;
    let arena: usize = gpu.arena_bytes().iter().map(|(_, b)| b).sum();
    let params = p.table.numel();
    drop(graph);
    drop(gpu);
    let mut profile = vec![];
    if args.profile {
        let mut pg = Profiled::new(CudaBackend::new(args.device)?);
        let pp = plan(&mut pg, cfg)?;
        step(&mut pg, &pp, true)?;
        pg.stats.clear();
        step(&mut pg, &pp, true)?;
        profile = pg.stats.into_iter().collect();
        profile.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    }
    Ok((
        BlockResult {
            block: name.into(),
            config: cfg.clone(),
            eager_fwd_bwd_ms: eager,
            graph_fwd_bwd_ms: replay,
            eager_fwd_ms: fwd,
            arena_bytes: arena,
            device_bytes_used: free_before.saturating_sub(free_after),
            params,
            profile,
        },
        device,
    ))
}
