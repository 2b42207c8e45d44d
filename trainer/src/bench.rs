//! The Evoformer block benchmark behind `scalefold bench evoformer`: ms per
//! block forward + backward on the GPU, eager and as a CUDA-graph replay, the
//! arena's memory, and optionally a per-op profile with FLOP/s and GB/s.

use crate::EvoformerBlock;
use crate::backend::cuda::{AttentionKernels, CudaBackend};
use crate::backend::profile::{OpStats, Profiled};
use crate::backend::{AttnShape, Backend, Class, TensorId, mix64};
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
    /// The attention kernels the blocks ran with (`SCALEFOLD_ATTENTION_KERNELS`).
    pub block_attention_kernels: String,
    /// Whether the vectorised element-wise and LayerNorm kernels ran (`SCALEFOLD_VECTOR_KERNELS`).
    pub vector_kernels: bool,
    /// One entry per block kind.
    pub results: Vec<BlockResult>,
    /// The fused attention alone at the blocks' shapes, per kernel kind.
    pub attention: Vec<AttentionResult>,
}

/// bf16 dense-GEMM rate measured on the H100 (cuBLASLt), the ceiling the
/// attention's FLOP/s are compared with.
pub const GEMM_CEILING_TFLOPS: f64 = 770.0;

/// Timing of one fused attention shape with one kind of kernels.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttentionResult {
    /// Where the shape occurs ("msa_row", "msa_column", "triangle", "extra_msa_row").
    pub site: String,
    /// Batch, length, heads, head width.
    pub shape: [usize; 4],
    /// With the pair bias (and its gradient).
    pub bias: bool,
    /// "tensor_core" or "simt".
    pub kernels: String,
    /// Median ms of one forward.
    pub fwd_ms: f64,
    /// Median ms of one backward.
    pub bwd_ms: f64,
    /// Forward TFLOP/s counting `4 B H L^2 D` (q.k and p.v).
    pub fwd_tflops: f64,
    /// Backward TFLOP/s counting `10 B H L^2 D` (logits recomputed, dP, dV, dK, dQ).
    pub bwd_tflops: f64,
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
    let attention = attention_bench(opts)?;
    Ok(BenchReport {
        device,
        iters: opts.iters,
        block_attention_kernels: kernels_name(AttentionKernels::from_env()?).into(),
        vector_kernels: crate::backend::cuda::vector_kernels_from_env()?,
        results,
        attention,
    })
}

/// Times `attention_fwd` and `attention_bwd` alone at the shapes the two blocks
/// use (all keys live under an all-ones key mask, as in the blocks), with the
/// tensor-core kernels and with the CUDA-core ones. With `opts.iters == 0` each
/// op runs once per kernel kind, untimed (for a kernel profiler), and nothing is
/// returned.
pub fn attention_bench(opts: &BenchOptions) -> Result<Vec<AttentionResult>> {
    let sites = [
        ("msa_row", opts.n_seq, opts.n_res, 8, 32, true),
        ("msa_column", opts.n_res, opts.n_seq, 8, 32, false),
        ("triangle", opts.n_res, opts.n_res, 4, 32, true),
        ("extra_msa_row", opts.n_extra, opts.n_res, 8, 8, true),
    ];
    let mut out = vec![];
    for (site, batch, len, heads, head_dim, with_bias) in sites {
        let s = AttnShape {
            batch,
            len,
            heads,
            head_dim,
        };
        let mut gpu = CudaBackend::new(opts.device)?;
        let (rows, w) = (s.rows(), s.width());
        let qkvg = gpu.declare("qkvg", rows * 4 * w, Class::Activation);
        let bias = gpu.declare("bias", heads * len * len, Class::Activation);
        let mask = gpu.declare("key_mask", batch * len, Class::Stat);
        let attn = gpu.declare("attn", rows * w, Class::Activation);
        let o = gpu.declare("out", rows * w, Class::Activation);
        let lse = gpu.declare("lse", batch * heads * len, Class::Stat);
        let dout = gpu.declare("dout", rows * w, Class::Activation);
        let dqkvg = gpu.declare("dqkvg", rows * 4 * w, Class::Activation);
        let dbias = gpu.declare("dbias", heads * len * len, Class::Stat);
        gpu.materialize()?;
        for (k, t) in [qkvg, bias, dout].into_iter().enumerate() {
            let v: Vec<f32> = (0..gpu.len(t))
                .map(|i| (mix64(((k as u64) << 40) ^ i as u64) >> 40) as f32 / 4_194_304.0 - 2.0)
                .collect();
            gpu.write(t, &v)?;
        }
        gpu.fill(mask, 1.0)?;
        gpu.fill(dbias, 0.0)?;
        let b = with_bias.then_some(bias);
        let db = with_bias.then_some(dbias);
        let flops = (s.batch * s.heads * s.len * s.len * s.head_dim) as f64;
        for kernels in [AttentionKernels::TensorCore, AttentionKernels::Simt] {
            gpu.set_attention_kernels(kernels);
            let fwd = |g: &mut CudaBackend| g.attention_fwd(s, qkvg, b, Some(mask), attn, o, lse);
            let bwd = |g: &mut CudaBackend| {
                g.attention_bwd(s, qkvg, b, Some(mask), attn, lse, dout, dqkvg, db)
            };
            if opts.iters == 0 {
                fwd(&mut gpu)?;
                bwd(&mut gpu)?;
                gpu.sync()?;
                continue;
            }
            let fwd_ms = time_per_call(opts.iters, &mut gpu, fwd)?;
            let bwd_ms = time_per_call(opts.iters, &mut gpu, bwd)?;
            out.push(AttentionResult {
                site: site.into(),
                shape: [batch, len, heads, head_dim],
                bias: with_bias,
                kernels: kernels_name(kernels).into(),
                fwd_ms,
                bwd_ms,
                fwd_tflops: 4.0 * flops / fwd_ms / 1e9,
                bwd_tflops: 10.0 * flops / bwd_ms / 1e9,
            });
        }
    }
    Ok(out)
}

fn kernels_name(k: AttentionKernels) -> &'static str {
    match k {
        AttentionKernels::TensorCore => "tensor_core",
        AttentionKernels::Simt => "simt",
    }
}

/// Median ms of one call of `f`, from `iters` timings of 10 back-to-back calls
/// each (after 3 warm-up calls), so that launch gaps do not dominate.
fn time_per_call(
    iters: usize,
    be: &mut CudaBackend,
    mut f: impl FnMut(&mut CudaBackend) -> Result<()>,
) -> Result<f64> {
    const CALLS: usize = 10;
    for _ in 0..3 {
        f(be)?;
    }
    let ms = time_ms(iters.max(1), be, |g| {
        for _ in 0..CALLS {
            f(g)?;
        }
        Ok(())
    })?;
    Ok(ms / CALLS as f64)
}

impl BenchReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "device: {}; block attention kernels: {}; vector kernels: {}\n",
            self.device,
            self.block_attention_kernels,
            if self.vector_kernels { "on" } else { "off" }
        );
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
        out + &attention_table(&self.attention)
    }
}

/// The attention timings as a table (FLOP/s also as a share of the GEMM
/// ceiling); empty without timings.
pub fn attention_table(attention: &[AttentionResult]) -> String {
    if attention.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "fused attention alone (FLOP/s against the {GEMM_CEILING_TFLOPS} TFLOP/s bf16 GEMM ceiling):\n  {:<14} {:>22} {:>5} {:>12} {:>9} {:>8} {:>6} {:>9} {:>8} {:>6}\n",
        "site",
        "B x L x H x D",
        "bias",
        "kernels",
        "fwd ms",
        "TFLOP/s",
        "%",
        "bwd ms",
        "TFLOP/s",
        "%"
    );
    for a in attention {
        let [b, l, h, d] = a.shape;
        out += &format!(
            "  {:<14} {:>22} {:>5} {:>12} {:>9.3} {:>8.1} {:>5.1}% {:>9.3} {:>8.1} {:>5.1}%\n",
            a.site,
            format!("{b} x {l} x {h} x {d}"),
            a.bias,
            a.kernels,
            a.fwd_ms,
            a.fwd_tflops,
            100.0 * a.fwd_tflops / GEMM_CEILING_TFLOPS,
            a.bwd_ms,
            a.bwd_tflops,
            100.0 * a.bwd_tflops / GEMM_CEILING_TFLOPS
        );
    }
    out
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
