//! The CUDA backend: bf16 activations and weights, f32 gradients and statistics,
//! f32 accumulation everywhere; GEMMs through cuBLASLt (algorithm chosen once per
//! shape and cached), everything else through the kernels in `trainer/kernels/`,
//! compiled by NVRTC at first use for the GPU found and cached on disk by source
//! hash and architecture.
//!
//! The CUDA libraries are loaded at run time (cudarc `dynamic-loading`), so this
//! module builds everywhere; [`CudaBackend::new`] fails cleanly without a GPU.
//! Ops only enqueue work on one stream: no allocation, compilation or
//! synchronization happens inside an op once its GEMM shape has been seen, so a
//! warmed-up step can be captured as a CUDA graph ([`CudaBackend::begin_capture`]).
//!
//! The memory-bound ops (bias + activation and its bias gradient, sigmoid gating,
//! transposes and copies, row scaling, residual + dropout, LayerNorm) pick a
//! vectorised kernel (`kernels/vectorized.cu`, the `_k{2,4,8}` LayerNorm kernels:
//! 16-byte accesses, 32-bit indices) whenever every operand is 16-byte aligned, rows
//! are whole groups of 8 (LayerNorm: 64, 128 or 256 columns) and the tensor has
//! fewer than 2^31 elements; otherwise, or with `SCALEFOLD_VECTOR_KERNELS=off`, the
//! scalar kernels run. Both compute the same bits (bias gradients up to float-atomic order).

use super::{
    Activation, AdamStep, AttnShape, Backend, CLASSES, Class, Dropout, Gemm, OptimizerState,
    SharedAxis, TensorId, View,
    tensors::{Placement, TensorTable},
};
use crate::error::{Result, TrainerError, ensure};
use cudarc::cublaslt::{result as lt, sys as ltsys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaGraph, CudaModule, CudaStream, LaunchConfig, PushKernelArg,
    result as drv, sys as dsys,
};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use half::bf16;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

/// Elements every parameter (and its gradient) is rounded up to in the flat
/// blocks: 256 bytes of bf16, 512 of f32.
const PARAM_ALIGN: usize = 128;

const KERNEL_SOURCES: [&str; 8] = [
    include_str!("../../kernels/common.cuh"),
    include_str!("../../kernels/vector.cuh"),
    include_str!("../../kernels/elementwise.cu"),
    include_str!("../../kernels/vectorized.cu"),
    include_str!("../../kernels/layernorm.cu"),
    include_str!("../../kernels/attention.cu"),
    include_str!("../../kernels/attention_tc.cu"),
    include_str!("../../kernels/optim.cu"),
];

const KERNEL_NAMES: &[&str] = &[
    "grad_norm_sq",
    "scale_rows",
    "adam_ema",
    "fill_bf16",
    "fill_f32",
    "bias_act_fwd",
    "bias_act_bwd",
    "sigmoid_mul_fwd",
    "sigmoid_mul_bwd",
    "softmax_fwd",
    "softmax_bwd",
    "residual_dropout_fwd",
    "dropout_bwd_b",
    "dropout_bwd_f",
    "transpose_bb",
    "transpose_fb",
    "transpose_bf",
    "transpose_ff",
    "transpose_tiled_bb",
    "transpose_tiled_fb",
    "transpose_tiled_bf",
    "transpose_tiled_ff",
    "transpose_v1_bb",
    "transpose_v1_fb",
    "transpose_v1_bf",
    "transpose_v1_ff",
    "transpose_v8_bb",
    "transpose_v8_fb",
    "transpose_v8_bf",
    "transpose_v8_ff",
    "transpose_tiled64_bb",
    "transpose_tiled64_fb",
    "transpose_tiled64_bf",
    "transpose_tiled64_ff",
    "scale_rows_v8",
    "residual_dropout_fwd_v8",
    "dropout_bwd_v8_b",
    "dropout_bwd_v8_f",
    "bias_act_fwd_v8",
    "bias_act_bwd_v8",
    "sigmoid_mul_fwd_v8",
    "sigmoid_mul_bwd_v8",
    "layer_norm_fwd_k2",
    "layer_norm_fwd_k4",
    "layer_norm_fwd_k8",
    "layer_norm_bwd_b_k2",
    "layer_norm_bwd_b_k4",
    "layer_norm_bwd_b_k8",
    "layer_norm_bwd_f_k2",
    "layer_norm_bwd_f_k4",
    "layer_norm_bwd_f_k8",
    "layer_norm_fwd",
    "layer_norm_bwd_b",
    "layer_norm_bwd_f",
    "attn_fwd_d8",
    "attn_bwd_q_d8",
    "attn_bwd_kv_d8",
    "attn_fwd_d16",
    "attn_bwd_q_d16",
    "attn_bwd_kv_d16",
    "attn_fwd_d32",
    "attn_bwd_q_d32",
    "attn_bwd_kv_d32",
    "attn_tc_fwd_d8",
    "attn_tc_bwd_q_d8",
    "attn_tc_bwd_kv_d8",
    "attn_tc_fwd_d16",
    "attn_tc_bwd_q_d16",
    "attn_tc_bwd_kv_d16",
    "attn_tc_fwd_d32",
    "attn_tc_bwd_q_d32",
    "attn_tc_bwd_kv_d32",
    "attn_tc_bwd_q1_d8",
    "attn_tc_bwd_q1_d16",
    "attn_tc_bwd_q1_d32",
];

/// The tensor-core attention backward for queries (dq, dg, dbias) per head
/// width: it takes dynamic shared memory for its bias-gradient accumulator.
const ATTN_TC_BWD_Q: [&str; 3] = ["attn_tc_bwd_q_d8", "attn_tc_bwd_q_d16", "attn_tc_bwd_q_d32"];
/// The same without a bias gradient: one warp per 16 queries, 128 threads.
const ATTN_TC_BWD_Q1: [&str; 3] = [
    "attn_tc_bwd_q1_d8",
    "attn_tc_bwd_q1_d16",
    "attn_tc_bwd_q1_d32",
];
/// Rows (queries or keys) one CTA of the tensor-core attention kernels owns,
/// and the tile they walk the other axis in (`TC_ROWS`, `TC_TILE` in the source).
const ATTN_TC_ROWS: usize = 64;
/// Threads per CTA of the tensor-core dq kernel with a bias gradient (two warps
/// per 16 queries).
const ATTN_TC_BWD_Q_THREADS: u32 = 256;

/// Which attention kernels [`CudaBackend`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernels {
    /// Tensor cores (`kernels/attention_tc.cu`: mma.sync bf16, f32 accumulation,
    /// FlashAttention-2 style), the default. Falls back to
    /// [`AttentionKernels::Simt`] for a call it does not cover: operands not
    /// aligned for paired (4-byte) or 16-byte access, or a bias gradient whose
    /// per-CTA shared-memory accumulator (`64 x L` f32) does not fit.
    TensorCore,
    /// One thread per query or key on the CUDA cores (`kernels/attention.cu`).
    Simt,
}

/// Environment variable that picks the attention kernels of a new backend:
/// `tensor_core` (the default when unset) or `simt`.
pub const ATTENTION_KERNELS_ENV: &str = "SCALEFOLD_ATTENTION_KERNELS";

impl AttentionKernels {
    /// The choice named by [`ATTENTION_KERNELS_ENV`] (tensor cores when unset).
    pub fn from_env() -> Result<Self> {
        match std::env::var(ATTENTION_KERNELS_ENV).as_deref() {
            Err(_) | Ok("tensor_core") => Ok(Self::TensorCore),
            Ok("simt") => Ok(Self::Simt),
            Ok(other) => Err(TrainerError::Config {
                field: ATTENTION_KERNELS_ENV,
                detail: format!("`{other}`; expected `tensor_core` or `simt`"),
            }),
        }
    }
}

/// Environment variable that turns the vectorised element-wise and LayerNorm
/// kernels off (`off`: the scalar kernels run everywhere), for side-by-side timings.
pub const VECTOR_KERNELS_ENV: &str = "SCALEFOLD_VECTOR_KERNELS";

/// Whether [`VECTOR_KERNELS_ENV`] leaves the vectorised kernels on (the default).
pub fn vector_kernels_from_env() -> Result<bool> {
    match std::env::var(VECTOR_KERNELS_ENV).as_deref() {
        Err(_) | Ok("on") => Ok(true),
        Ok("off") => Ok(false),
        Ok(other) => Err(TrainerError::Config {
            field: VECTOR_KERNELS_ENV,
            detail: format!("`{other}`; expected `on` or `off`"),
        }),
    }
}

/// Head widths the attention kernels are instantiated for.
pub const ATTENTION_HEAD_DIMS: [usize; 3] = [8, 16, 32];
/// Longest sequence the attention backward accepts with a bias (shared-memory reduction).
pub const ATTENTION_BIAS_MAX_LEN: usize = 256;
/// Widest row the LayerNorm kernels accept.
pub const LAYER_NORM_MAX_COLS: usize = 256;
const WORKSPACE_BYTES: usize = 32 << 20;

fn cuda_err(
    context: impl Into<String>,
) -> impl FnOnce(cudarc::driver::DriverError) -> TrainerError {
    let context = context.into();
    move |e| TrainerError::Cuda {
        context,
        detail: format!("{e:?}"),
    }
}

fn lt_err(context: &str) -> impl FnOnce(lt::CublasError) -> TrainerError + '_ {
    move |e| TrainerError::Cuda {
        context: context.to_string(),
        detail: format!("{e:?}"),
    }
}

/// Element type of a class on the GPU.
fn is_f32(class: Class) -> bool {
    matches!(class, Class::WeightGrad | Class::Stat)
}

fn elem_bytes(class: Class) -> usize {
    if is_f32(class) { 4 } else { 2 }
}

struct Root {
    class: Class,
    ptr: dsys::CUdeviceptr,
    bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct GemmKey {
    dims: [usize; 4],
    trans: (bool, bool),
    ld: [usize; 3],
    stride: [usize; 3],
    c_f32: bool,
    align: [u32; 3],
    /// cuBLASLt epilogue code (1 default, 4 bias, 6 ReLU + bias).
    epilogue: u32,
}

struct GemmPlan {
    desc: ltsys::cublasLtMatmulDesc_t,
    layouts: [ltsys::cublasLtMatrixLayout_t; 3],
    algo: ltsys::cublasLtMatmulAlgo_t,
}

/// A kernel argument, kept alive until the launch.
enum KArg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    F32(f32),
}

/// The CUDA backend on one GPU.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    funcs: HashMap<&'static str, CudaFunction>,
    tensors: TensorTable,
    roots: Vec<Root>,
    lt: ltsys::cublasLtHandle_t,
    workspace: dsys::CUdeviceptr,
    /// One u64 in device memory: the step seed of dropout masks
    /// ([`Backend::set_dropout_seed`]), read by the dropout kernels.
    dropout_seed: dsys::CUdeviceptr,
    gemms: HashMap<GemmKey, GemmPlan>,
    device: String,
    sm_count: u32,
    attention_kernels: AttentionKernels,
    /// Whether the vectorised element-wise and LayerNorm kernels may run ([`VECTOR_KERNELS_ENV`]).
    vector_kernels: bool,
    /// Largest dynamic shared memory (bytes) each `ATTN_TC_BWD_Q` kernel was opened up to.
    attn_tc_dyn_smem: [usize; 3],
    /// Resident CTAs per SM of `ATTN_TC_BWD_Q[k]` with a given dynamic shared memory.
    attn_tc_resident: HashMap<(usize, usize), usize>,
}

fn arch_name(cc: (i32, i32)) -> Result<&'static str> {
    Ok(match cc {
        (7, 5) => "sm_75",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (12, 0) => "sm_120",
        other => {
            return Err(TrainerError::Cuda {
                context: "choosing the NVRTC target".into(),
                detail: format!("unsupported compute capability {other:?}"),
            });
        }
    })
}

fn kernel_cache_dir() -> Option<std::path::PathBuf> {
    if let Some(d) = std::env::var_os("SCALEFOLD_KERNEL_CACHE") {
        return Some(d.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("scalefold").join("kernels"))
}

/// Compiles (or loads from the disk cache) the kernel module for `arch`.
fn compile_kernels(arch: &'static str) -> Result<Ptx> {
    let src: String = KERNEL_SOURCES.join("\n");
    let key = xxhash_rust::xxh3::xxh3_64(format!("{src}\0{arch}").as_bytes());
    let cache = kernel_cache_dir().map(|d| d.join(format!("{key:016x}-{arch}.ptx")));
    if let Some(ptx) = cache
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
    {
        return Ok(Ptx::from_src(ptx));
    }
    let include = std::env::var("CUDA_HOME")
        .map(|h| format!("{h}/include"))
        .unwrap_or_else(|_| "/usr/local/cuda/include".into());
    let opts = CompileOptions {
        arch: Some(arch),
        include_paths: vec![include],
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(&src, opts).map_err(|e| TrainerError::Cuda {
        context: "compiling trainer/kernels with NVRTC".into(),
        detail: format!("{e:?}"),
    })?;
    if let Some(path) = &cache {
        // The cache is an optimisation: a read-only or missing cache directory only costs a recompile.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .is_ok()
            && std::fs::write(&tmp, ptx.to_src()).is_ok();
        if written && std::fs::rename(&tmp, path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(ptx)
}

impl CudaBackend {
    /// Opens GPU `ordinal`, compiles or loads the kernels, creates the cuBLASLt handle.
    pub fn new(ordinal: usize) -> Result<Self> {
        // cudarc panics on first use of a library it cannot load: check first.
        // SAFETY: these only try to dlopen the libraries and report success.
        let present = unsafe {
            [
                ("the CUDA driver (libcuda)", dsys::is_culib_present()),
                ("NVRTC", cudarc::nvrtc::sys::is_culib_present()),
                ("cuBLASLt", ltsys::is_culib_present()),
            ]
        };
        if let Some((lib, _)) = present.iter().find(|(_, ok)| !ok) {
            return Err(TrainerError::Cuda {
                context: "opening the GPU".into(),
                detail: format!(
                    "{lib} could not be loaded: no NVIDIA driver or CUDA toolkit on this machine (LD_LIBRARY_PATH?)"
                ),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("opening the GPU"))?;
        let stream = ctx.new_stream().map_err(cuda_err("creating a stream"))?;
        let device = ctx.name().map_err(cuda_err("reading the device name"))?;
        let arch = arch_name(
            ctx.compute_capability()
                .map_err(cuda_err("reading the compute capability"))?,
        )?;
        let sm_count = ctx
            .attribute(dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err("reading the SM count"))? as u32;
        let module = ctx
            .load_module(compile_kernels(arch)?)
            .map_err(cuda_err("loading the kernel module"))?;
        let mut funcs = HashMap::new();
        for &name in KERNEL_NAMES {
            funcs.insert(
                name,
                module
                    .load_function(name)
                    .map_err(cuda_err(format!("loading kernel {name}")))?,
            );
        }
        let smem_optin = ctx
            .attribute(
                dsys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(cuda_err("reading the shared-memory limit"))?
            .max(0) as usize;
        let mut attn_tc_dyn_smem = [0usize; 3];
        for (slot, name) in attn_tc_dyn_smem.iter_mut().zip(ATTN_TC_BWD_Q) {
            let f = &funcs[name];
            let fixed = f
                .get_attribute(dsys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(cuda_err(format!("reading the shared memory of {name}")))?
                .max(0) as usize;
            let dynamic = smem_optin.saturating_sub(fixed);
            f.set_attribute(
                dsys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic as i32,
            )
            .map_err(cuda_err(format!(
                "raising the shared-memory limit of {name}"
            )))?;
            *slot = dynamic;
        }
        let lt = lt::create_handle().map_err(lt_err("creating the cuBLASLt handle"))?;
        ctx.bind_to_thread()
            .map_err(cuda_err("binding the context"))?;
        // SAFETY: a plain device allocation of a fixed size, freed in Drop.
        let workspace = unsafe { drv::malloc_sync(WORKSPACE_BYTES) }
            .map_err(cuda_err("allocating the cuBLASLt workspace"))?;
        // SAFETY: a plain device allocation of one u64, freed in Drop.
        let dropout_seed = unsafe { drv::malloc_sync(std::mem::size_of::<u64>()) }
            .map_err(cuda_err("allocating the dropout seed"))?;
        let mut backend = Self {
            ctx,
            stream,
            _module: module,
            funcs,
            tensors: TensorTable::default(),
            roots: Vec::new(),
            lt,
            workspace,
            dropout_seed,
            gemms: HashMap::new(),
            device,
            sm_count,
            attention_kernels: AttentionKernels::from_env()?,
            vector_kernels: vector_kernels_from_env()?,
            attn_tc_dyn_smem,
            attn_tc_resident: HashMap::new(),
        };
        backend.set_dropout_seed(0)?;
        Ok(backend)
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn device_name(&self) -> &str {
        &self.device
    }

    /// Chooses the attention kernels (tensor cores by default); for comparisons
    /// in tests and benchmarks. Both compute the same function.
    pub fn set_attention_kernels(&mut self, k: AttentionKernels) {
        self.attention_kernels = k;
    }

    /// Whether the vectorised element-wise and LayerNorm kernels may run
    /// (`SCALEFOLD_VECTOR_KERNELS`, on unless set to `off`).
    pub fn vector_kernels(&self) -> bool {
        self.vector_kernels
    }

    /// The attention kernels in use.
    pub fn attention_kernels(&self) -> AttentionKernels {
        self.attention_kernels
    }

    /// The stream every op is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Copies `src` to device memory at `dst` in the stream's order and waits
    /// until it has landed. A plain `cuMemcpyHtoD` from pageable memory is not
    /// enough: it runs on the legacy stream, which this non-blocking stream does
    /// not wait for, and may return before its DMA lands, so a kernel queued (or
    /// a graph replayed) right after could read the old contents.
    ///
    /// # Safety
    /// `dst` must address at least `src.len()` elements of `T` in a live allocation.
    unsafe fn upload<T>(
        &self,
        dst: dsys::CUdeviceptr,
        src: &[T],
        what: impl Fn() -> String,
    ) -> Result<()> {
        // SAFETY: the caller guarantees `dst`; `src` outlives the copy because
        // the stream is synchronized before returning.
        unsafe { drv::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| cuda_err(what())(e))?;
        self.stream.synchronize().map_err(|e| cuda_err(what())(e))
    }

    /// Starts capturing the stream's work into a graph.
    pub fn begin_capture(&mut self) -> Result<()> {
        self.stream
            .begin_capture(dsys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_err("beginning graph capture"))
    }

    /// Ends the capture and instantiates the graph.
    pub fn end_capture(&mut self) -> Result<CudaGraph> {
        self.stream
            .end_capture(dsys::CUgraphInstantiate_flags(0))
            .map_err(cuda_err("ending graph capture"))?
            .ok_or_else(|| TrainerError::Cuda {
                context: "ending graph capture".into(),
                detail: "nothing was captured".into(),
            })
    }

    /// Replays a captured graph on the stream.
    pub fn replay(&mut self, graph: &CudaGraph) -> Result<()> {
        graph.launch().map_err(cuda_err("replaying a graph"))
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(cuda_err("reading memory info"))
    }

    fn ptr(&self, t: TensorId) -> Result<u64> {
        let p = self.tensors.placement(t)?;
        Ok(self.roots[p.arena].ptr + (p.offset * elem_bytes(p.class)) as u64)
    }

    fn class(&self, t: TensorId) -> Class {
        self.tensors.class(t)
    }

    fn need(&self, op: &'static str, t: TensorId, n: usize) -> Result<()> {
        self.tensors.need_len(op, t, n)
    }

    fn need_f32(&self, op: &'static str, t: TensorId, want: bool) -> Result<()> {
        let class = self.tensors.class(t);
        ensure(is_f32(class) == want, op, || {
            format!(
                "tensor {} is {class:?}; this operand must be {}",
                self.tensors.name(t),
                if want {
                    "f32 (WeightGrad or Stat)"
                } else {
                    "bf16 (Activation or Weight)"
                }
            )
        })
    }

    /// Checks an attention key mask (`[batch, len]`, f32) and returns its device
    /// pointer, 0 for none.
    fn key_mask_ptr(
        &self,
        op: &'static str,
        key_mask: Option<TensorId>,
        s: AttnShape,
    ) -> Result<u64> {
        match key_mask {
            Some(m) => {
                self.need(op, m, s.batch * s.len)?;
                self.need_f32(op, m, true)?;
                self.ptr(m)
            }
            None => Ok(0),
        }
    }

    fn need_view(&self, op: &'static str, v: &View, rows: usize, cols: usize) -> Result<()> {
        self.need_f32(op, v.t, false)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        self.need(op, v.t, v.at(rows - 1, cols - 1) + 1)
    }

    fn launch(
        &self,
        name: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[KArg],
    ) -> Result<()> {
        self.launch_smem(name, grid, block, 0, args)
    }

    /// [`Self::launch`] with `shared_mem_bytes` of dynamic shared memory.
    fn launch_smem(
        &self,
        name: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_mem_bytes: u32,
        args: &[KArg],
    ) -> Result<()> {
        let f = self.funcs.get(name).ok_or_else(|| TrainerError::Cuda {
            context: "launching".into(),
            detail: format!("kernel {name} not loaded"),
        })?;
        let mut lb = self.stream.launch_builder(f);
        for a in args {
            match a {
                KArg::Ptr(v) => lb.arg(v),
                KArg::I64(v) => lb.arg(v),
                KArg::I32(v) => lb.arg(v),
                KArg::F32(v) => lb.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes,
        };
        // SAFETY: every kernel's parameter list matches `args` (pointers as u64,
        // `long` as i64, `int` as i32, `float` as f32), and every pointer is a live
        // arena allocation whose extent was checked by the caller.
        unsafe { lb.launch(cfg) }.map_err(cuda_err(format!("launching {name}")))?;
        Ok(())
    }

    /// A 1-D grid-stride launch over `n` elements.
    fn launch_1d(&self, name: &'static str, n: usize, args: &[KArg]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let blocks = n.div_ceil(256).min(self.sm_count as usize * 16) as u32;
        self.launch(name, (blocks, 1, 1), (256, 1, 1), args)
    }

    /// Whether `t` at element offset `off` starts on a 16-byte boundary (the
    /// vectorised kernels' 16-byte accesses).
    fn aligned16(&self, t: TensorId, off: usize) -> Result<bool> {
        Ok((self.ptr(t)? + (off * elem_bytes(self.class(t))) as u64).is_multiple_of(16))
    }

    /// Whether the 8-wide kernels (`kernels/vectorized.cu`) take `[rows, cols]`
    /// views: whole groups of 8 columns, every row start 16-byte aligned, and 32-bit
    /// element indices.
    fn views_vec8(&self, rows: usize, cols: usize, views: &[&View]) -> Result<bool> {
        if !self.vector_kernels || !cols.is_multiple_of(8) || rows * cols >= 1 << 31 {
            return Ok(false);
        }
        for v in views {
            if !v.ld.is_multiple_of(8) || v.ld >= 1 << 31 || !self.aligned16(v.t, v.off)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn view_args(&self, v: &View) -> Result<[KArg; 4]> {
        Ok([
            KArg::Ptr(self.ptr(v.t)?),
            KArg::I64(v.off as i64),
            KArg::I64(v.ld as i64),
            KArg::I64(v.row_div as i64),
        ])
    }

    fn gemm_plan(&mut self, key: GemmKey) -> Result<&GemmPlan> {
        if !self.gemms.contains_key(&key) {
            let plan = self.make_gemm_plan(&key)?;
            self.gemms.insert(key, plan);
        }
        Ok(&self.gemms[&key])
    }

    fn make_gemm_plan(&self, key: &GemmKey) -> Result<GemmPlan> {
        let [m, n, k, batch] = key.dims;
        let (ta, tb) = key.trans;
        let [lda, ldb, ldc] = key.ld;
        let [sa, sb, sc] = key.stride;
        let ctx = "planning a cuBLASLt GEMM";
        let bf = ltsys::cudaDataType_t::CUDA_R_16BF;
        let cty = if key.c_f32 {
            ltsys::cudaDataType_t::CUDA_R_32F
        } else {
            bf
        };
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T:
        // cuBLASLt's "A" is our B and its "B" is our A.
        let (la_rows, la_cols) = if tb { (k, n) } else { (n, k) };
        let (lb_rows, lb_cols) = if ta { (m, k) } else { (k, m) };
        let desc = lt::create_matmul_desc(
            ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ltsys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(lt_err(ctx))?;
        let layouts = [
            lt::create_matrix_layout(bf, la_rows as u64, la_cols as u64, ldb as i64)
                .map_err(lt_err(ctx))?,
            lt::create_matrix_layout(bf, lb_rows as u64, lb_cols as u64, lda as i64)
                .map_err(lt_err(ctx))?,
            lt::create_matrix_layout(cty, n as u64, m as u64, ldc as i64).map_err(lt_err(ctx))?,
        ];
        let set_desc = |attr, v: i32| {
            // SAFETY: `desc` is live; the attribute takes an int32 operation code.
            unsafe {
                lt::set_matmul_desc_attribute(desc, attr, &v as *const i32 as *const c_void, 4)
            }
            .map_err(lt_err(ctx))
        };
        set_desc(
            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            tb as i32,
        )?;
        set_desc(
            ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
            ta as i32,
        )?;
        if key.epilogue != 1 {
            set_desc(
                ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
                key.epilogue as i32,
            )?;
        }
        if batch > 1 {
            for (layout, stride) in layouts.iter().zip([sb, sa, sc]) {
                let count = batch as i32;
                let stride = stride as i64;
                // SAFETY: live layouts; BATCH_COUNT is int32, STRIDED_BATCH_OFFSET int64.
                unsafe {
                    lt::set_matrix_layout_attribute(
                        *layout,
                        ltsys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                        &count as *const i32 as *const c_void,
                        4,
                    )
                    .map_err(lt_err(ctx))?;
                    lt::set_matrix_layout_attribute(*layout, ltsys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride as *const i64 as *const c_void, 8).map_err(lt_err(ctx))?;
                }
            }
        }
        let pref = lt::create_matmul_pref().map_err(lt_err(ctx))?;
        let ws = WORKSPACE_BYTES as u64;
        let [al_a, al_b, al_c] = key.align;
        // SAFETY: live preference handle; attribute sizes match their documented types.
        let algo = unsafe {
            use ltsys::cublasLtMatmulPreferenceAttributes_t as P;
            lt::set_matmul_pref_attribute(
                pref,
                P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
            .map_err(lt_err(ctx))?;
            for (attr, al) in [
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, al_b),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, al_a),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, al_c),
                (P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, al_c),
            ] {
                lt::set_matmul_pref_attribute(pref, attr, &al as *const u32 as *const c_void, 4)
                    .map_err(lt_err(ctx))?;
            }
            let h = lt::get_matmul_algo_heuristic(
                self.lt, desc, layouts[0], layouts[1], layouts[2], layouts[2], pref,
            );
            lt::destroy_matmul_pref(pref).map_err(lt_err(ctx))?;
            h.map_err(|e| TrainerError::Cuda { context: ctx.into(), detail: format!("no algorithm for m={m} n={n} k={k} batch={batch} trans=({ta},{tb}) ld=({lda},{ldb},{ldc}): {e:?}") })?.algo
        };
        Ok(GemmPlan {
            desc,
            layouts,
            algo,
        })
    }

    /// Device memory of `region` for `crate::dist` (NCCL moves it on
    /// [`CudaBackend::stream`]): `(pointer, elements)` of each extent (one for a
    /// tensor, one per storage block for a class), and whether the elements are
    /// f32 (else bf16).
    pub(crate) fn device_region(
        &self,
        region: crate::dist::Region,
    ) -> Result<(Vec<(u64, usize)>, bool)> {
        Ok(match region {
            crate::dist::Region::Tensor(t) => (
                vec![(self.ptr(t)?, self.tensors.len(t))],
                is_f32(self.class(t)),
            ),
            crate::dist::Region::Class(c) => (
                self.roots
                    .iter()
                    .filter(|r| r.class == c)
                    .map(|r| (r.ptr, r.bytes / elem_bytes(c)))
                    .collect(),
                is_f32(c),
            ),
        })
    }
}

/// Attention kernels per head width (the order of [`ATTENTION_HEAD_DIMS`]):
/// forward, backward dq/dg/dbias, backward dk/dv.
const ATTN_SIMT: [[&str; 3]; 3] = [
    ["attn_fwd_d8", "attn_bwd_q_d8", "attn_bwd_kv_d8"],
    ["attn_fwd_d16", "attn_bwd_q_d16", "attn_bwd_kv_d16"],
    ["attn_fwd_d32", "attn_bwd_q_d32", "attn_bwd_kv_d32"],
];
/// The tensor-core versions of [`ATTN_SIMT`].
const ATTN_TC: [[&str; 3]; 3] = [
    ["attn_tc_fwd_d8", ATTN_TC_BWD_Q[0], "attn_tc_bwd_kv_d8"],
    ["attn_tc_fwd_d16", ATTN_TC_BWD_Q[1], "attn_tc_bwd_kv_d16"],
    ["attn_tc_fwd_d32", ATTN_TC_BWD_Q[2], "attn_tc_bwd_kv_d32"],
];

/// Index of the attention's head width in [`ATTENTION_HEAD_DIMS`].
fn attention_width_index(op: &'static str, s: AttnShape) -> Result<usize> {
    ATTENTION_HEAD_DIMS
        .iter()
        .position(|&d| d == s.head_dim)
        .ok_or_else(|| TrainerError::Shape {
            op,
            detail: format!(
                "head width {}; kernels exist for {ATTENTION_HEAD_DIMS:?}",
                s.head_dim
            ),
        })
}

impl CudaBackend {
    /// CTAs of the tensor-core dq kernel for head width index `k` that fit on one
    /// SM with `dbs_bytes` of dynamic shared memory (cached per shape: the
    /// driver's occupancy query is a host call, not stream work).
    fn attn_tc_bwd_q_resident(&mut self, k: usize, dbs_bytes: usize) -> Result<usize> {
        if let Some(&n) = self.attn_tc_resident.get(&(k, dbs_bytes)) {
            return Ok(n);
        }
        let n = self.funcs[ATTN_TC_BWD_Q[k]]
            .occupancy_max_active_blocks_per_multiprocessor(ATTN_TC_BWD_Q_THREADS, dbs_bytes, None)
            .map_err(cuda_err("querying the occupancy of the attention backward"))?
            .max(1) as usize;
        self.attn_tc_resident.insert((k, dbs_bytes), n);
        Ok(n)
    }

    /// Whether the tensor-core attention kernels take a call: they are chosen,
    /// the tensors in `packed` sit on 16-byte boundaries (read with 16-byte
    /// loads: q|k|v|g, and attn and dout in the backward) and those in `paired`
    /// on 4-byte ones (read or written as bf16 pairs). The bias needs nothing:
    /// the kernels check its alignment themselves.
    fn attention_tc_aligned(&self, packed: &[TensorId], paired: &[TensorId]) -> Result<bool> {
        if self.attention_kernels != AttentionKernels::TensorCore {
            return Ok(false);
        }
        for &t in packed {
            if !self.ptr(t)?.is_multiple_of(16) {
                return Ok(false);
            }
        }
        for &t in paired {
            if !self.ptr(t)?.is_multiple_of(4) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl CudaBackend {
    /// Whether the 8-wide dropout kernels take a `[d0, d1, c]` dropout over `tensors`:
    /// rows of whole groups of 8, 32-bit indices, every tensor 16-byte aligned.
    fn dropout_vec8(&self, d: &Dropout, tensors: &[TensorId]) -> Result<bool> {
        let n: usize = d.shape.iter().product();
        if !self.vector_kernels || !d.shape[2].is_multiple_of(8) || n >= 1 << 31 {
            return Ok(false);
        }
        for &t in tensors {
            if !self.aligned16(t, 0)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The lane-contiguous LayerNorm kernels (`layer_norm_*_k{2,4,8}`) for rows of
    /// 64, 128 or 256 columns whose tensors start on 16-byte boundaries: the index
    /// of K = 2, 4, 8, or `None` for the general kernels.
    fn layer_norm_lanes(&self, cols: usize, tensors: &[TensorId]) -> Result<Option<usize>> {
        let Some(k) = [64, 128, 256].iter().position(|&c| c == cols) else {
            return Ok(None);
        };
        if !self.vector_kernels {
            return Ok(None);
        }
        for &t in tensors {
            if !self.aligned16(t, 0)? {
                return Ok(None);
            }
        }
        Ok(Some(k))
    }
}

fn alignment(ptr: u64) -> u32 {
    let mut a = 256u32;
    while a > 2 && !ptr.is_multiple_of(a as u64) {
        a /= 2;
    }
    a
}

impl CudaBackend {
    /// One cuBLASLt matmul, optionally with a bias (+ ReLU) epilogue `(bias pointer, epilogue code)`.
    fn gemm_impl(&mut self, g: &Gemm, epilogue: Option<(u64, u32)>) -> Result<()> {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        let (ar, ac) = if g.trans_a { (g.k, g.m) } else { (g.m, g.k) };
        let (br, bc) = if g.trans_b { (g.n, g.k) } else { (g.k, g.n) };
        let ext = |m: &super::MatRef, r: usize, c: usize| {
            m.off + (g.batch - 1) * m.stride + (r - 1) * m.ld + c
        };
        self.need_f32("gemm(A)", g.a.t, false)?;
        self.need_f32("gemm(B)", g.b.t, false)?;
        self.need("gemm(A)", g.a.t, ext(&g.a, ar, ac))?;
        self.need("gemm(B)", g.b.t, ext(&g.b, br, bc))?;
        self.need("gemm(C)", g.c.t, ext(&g.c, g.m, g.n))?;
        let c_f32 = is_f32(self.class(g.c.t));
        let pa = self.ptr(g.a.t)? + (g.a.off * 2) as u64;
        let pb = self.ptr(g.b.t)? + (g.b.off * 2) as u64;
        let pc = self.ptr(g.c.t)? + (g.c.off * if c_f32 { 4 } else { 2 }) as u64;
        let key = GemmKey {
            dims: [g.m, g.n, g.k, g.batch],
            trans: (g.trans_a, g.trans_b),
            ld: [g.a.ld, g.b.ld, g.c.ld],
            stride: [g.a.stride, g.b.stride, g.c.stride],
            c_f32,
            align: [alignment(pa), alignment(pb), alignment(pc)],
            epilogue: epilogue.map_or(1, |e| e.1),
        };
        let (alpha, beta) = (g.alpha, g.beta);
        let (lt_handle, ws, stream) = (self.lt, self.workspace, self.stream.cu_stream());
        let plan = self.gemm_plan(key)?;
        if let Some((bias_ptr, _)) = epilogue {
            // SAFETY: live descriptor; the attribute is a device pointer (8 bytes) to
            // `n` bf16 values checked by the caller. Setting it is host-side only.
            unsafe {
                lt::set_matmul_desc_attribute(
                    plan.desc,
                    ltsys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &bias_ptr as *const u64 as *const c_void,
                    8,
                )
            }
            .map_err(lt_err("setting the GEMM bias pointer"))?;
        }
        // SAFETY: the plan's layouts describe exactly the extents checked above; the
        // pointers are live arena memory; alpha/beta are host f32 scalars (scale type 32F).
        unsafe {
            lt::matmul(
                lt_handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pb as *const c_void,
                plan.layouts[0],
                pa as *const c_void,
                plan.layouts[1],
                pc as *const c_void,
                plan.layouts[2],
                pc as *mut c_void,
                plan.layouts[2],
                &plan.algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                stream as _,
            )
        }
        .map_err(|e| TrainerError::Cuda {
            context: format!(
                "cuBLASLt matmul m={} n={} k={} batch={}",
                g.m, g.n, g.k, g.batch
            ),
            detail: format!("{e:?}"),
        })
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        // SAFETY: every handle and allocation below was created by this backend and
        // is destroyed once; the stream is idle.
        unsafe {
            for plan in self.gemms.values() {
                for l in plan.layouts {
                    let _ = lt::destroy_matrix_layout(l);
                }
                let _ = lt::destroy_matmul_desc(plan.desc);
            }
            let _ = lt::destroy_handle(self.lt);
            let _ = drv::free_sync(self.workspace);
            let _ = drv::free_sync(self.dropout_seed);
            for r in self.roots.iter().filter(|r| r.bytes > 0) {
                let _ = drv::free_sync(r.ptr);
            }
        }
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        format!("cuda-bf16 on {}", self.device)
    }

    fn declare(&mut self, name: &str, len: usize, class: Class) -> TensorId {
        self.tensors.declare(name, len, class)
    }

    fn view(&mut self, parent: TensorId, offset: usize, len: usize) -> Result<TensorId> {
        self.tensors.view(parent, offset, len)
    }

    fn materialize(&mut self) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(cuda_err("binding the context"))?;
        for class in CLASSES {
            // 256-byte alignment for every tensor keeps cuBLASLt on its fast paths.
            // Weights (bf16) and their gradients (f32) round to the same element
            // count, so both flat blocks share one element layout.
            let per = match class {
                Class::Weight | Class::WeightGrad => PARAM_ALIGN,
                _ => 256 / elem_bytes(class),
            };
            let Some(total) = self.tensors.lay_out(class, self.roots.len(), per) else {
                continue;
            };
            let bytes = total * elem_bytes(class);
            let ptr = if bytes == 0 {
                // Only empty tensors: nothing to allocate, and nothing is ever read.
                0
            } else {
                // SAFETY: plain device allocation, freed in Drop.
                unsafe { drv::malloc_sync(bytes) }.map_err(cuda_err(format!(
                    "allocating {bytes} bytes for the {class:?} arena"
                )))?
            };
            self.roots.push(Root { class, ptr, bytes });
        }
        self.tensors.place_views();
        Ok(())
    }

    fn len(&self, t: TensorId) -> usize {
        self.tensors.len(t)
    }

    fn tensor_name(&self, t: TensorId) -> &str {
        self.tensors.name(t)
    }

    fn arena_bytes(&self) -> Vec<(Class, usize)> {
        CLASSES
            .iter()
            .map(|&c| {
                (
                    c,
                    self.roots
                        .iter()
                        .filter(|r| r.class == c)
                        .map(|r| r.bytes)
                        .sum(),
                )
            })
            .collect()
    }

    fn write(&mut self, t: TensorId, data: &[f32]) -> Result<()> {
        let Placement { len, class, .. } = self.tensors.placement(t)?;
        ensure(len == data.len(), "write", || {
            format!(
                "{} elements into {} of {len}",
                data.len(),
                self.tensors.name(t)
            )
        })?;
        let dst = self.ptr(t)?;
        let what = || format!("writing {}", self.tensors.name(t));
        // SAFETY: `dst` addresses `len` elements of the class's type inside a live allocation.
        unsafe {
            if is_f32(class) {
                self.upload(dst, data, what)
            } else {
                let v: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
                self.upload(dst, &v, what)
            }
        }
    }

    fn read(&mut self, t: TensorId) -> Result<Vec<f32>> {
        let Placement { len, class, .. } = self.tensors.placement(t)?;
        let src = self.ptr(t)?;
        self.stream.synchronize().map_err(cuda_err(format!(
            "synchronizing before reading {}",
            self.tensors.name(t)
        )))?;
        // SAFETY: `src` addresses `len` elements of the class's type inside a live allocation.
        unsafe {
            if is_f32(class) {
                let mut v = vec![0f32; len];
                drv::memcpy_dtoh_sync(&mut v, src).map_err(cuda_err("reading"))?;
                Ok(v)
            } else {
                let mut v = vec![bf16::ZERO; len];
                drv::memcpy_dtoh_sync(&mut v, src).map_err(cuda_err("reading"))?;
                Ok(v.into_iter().map(f32::from).collect())
            }
        }
    }

    fn fill(&mut self, t: TensorId, value: f32) -> Result<()> {
        let Placement { len, class, .. } = self.tensors.placement(t)?;
        let name = if is_f32(class) {
            "fill_f32"
        } else {
            "fill_bf16"
        };
        self.launch_1d(
            name,
            len,
            &[
                KArg::Ptr(self.ptr(t)?),
                KArg::I64(len as i64),
                KArg::F32(value),
            ],
        )
    }

    fn fill_class(&mut self, class: Class, value: f32) -> Result<()> {
        let name = if is_f32(class) {
            "fill_f32"
        } else {
            "fill_bf16"
        };
        for i in 0..self.roots.len() {
            let r = &self.roots[i];
            if r.class == class {
                let n = r.bytes / elem_bytes(class);
                self.launch_1d(
                    name,
                    n,
                    &[KArg::Ptr(r.ptr), KArg::I64(n as i64), KArg::F32(value)],
                )?;
            }
        }
        Ok(())
    }

    fn scale_rows(&mut self, rows: usize, cols: usize, x: TensorId, scale: TensorId) -> Result<()> {
        self.need("scale_rows", x, rows * cols)?;
        self.need_f32("scale_rows", x, false)?;
        self.need("scale_rows(scale)", scale, rows)?;
        self.need_f32("scale_rows(scale)", scale, true)?;
        let a = [
            KArg::Ptr(self.ptr(x)?),
            KArg::Ptr(self.ptr(scale)?),
            KArg::I32(rows as i32),
            KArg::I32(cols as i32),
        ];
        if self.views_vec8(rows, cols, &[&View::dense(x, cols)])? {
            return self.launch_1d("scale_rows_v8", rows * cols / 8, &a);
        }
        self.launch_1d("scale_rows", rows * cols, &a)
    }

    fn param_align(&self) -> usize {
        PARAM_ALIGN
    }

    fn class_len(&self, class: Class) -> usize {
        self.roots
            .iter()
            .filter(|r| r.class == class)
            .map(|r| r.bytes / elem_bytes(class))
            .sum()
    }

    fn grad_norm_sq(&mut self, out: TensorId) -> Result<()> {
        self.need("grad_norm_sq", out, 1)?;
        self.need_f32("grad_norm_sq", out, true)?;
        self.fill(out, 0.0)?;
        let out_ptr = self.ptr(out)?;
        for i in 0..self.roots.len() {
            let r = &self.roots[i];
            if r.class == Class::WeightGrad {
                let n = r.bytes / elem_bytes(Class::WeightGrad);
                self.launch_1d(
                    "grad_norm_sq",
                    n,
                    &[KArg::Ptr(r.ptr), KArg::I64(n as i64), KArg::Ptr(out_ptr)],
                )?;
            }
        }
        Ok(())
    }

    fn adam_ema_step(&mut self, step: &AdamStep, st: &OptimizerState) -> Result<()> {
        let root = |me: &Self, class: Class| -> Result<(u64, usize)> {
            let mut it = me.roots.iter().filter(|r| r.class == class);
            match (it.next(), it.next()) {
                (Some(r), None) => Ok((r.ptr, r.bytes / elem_bytes(class))),
                _ => Err(TrainerError::Shape {
                    op: "adam_ema_step",
                    detail: format!("needs exactly one {class:?} block"),
                }),
            }
        };
        let (w_ptr, n) = root(self, Class::Weight)?;
        let (g_ptr, ng) = root(self, Class::WeightGrad)?;
        ensure(ng == n, "adam_ema_step", || {
            format!("{ng} gradients for {n} weights")
        })?;
        for t in [st.master, st.m, st.v, st.ema] {
            self.need("adam_ema_step", t, n)?;
            self.need_f32("adam_ema_step", t, true)?;
        }
        self.need("adam_ema_step(norm_sq)", st.norm_sq, 1)?;
        self.need_f32("adam_ema_step(norm_sq)", st.norm_sq, true)?;
        let a = [
            KArg::Ptr(g_ptr),
            KArg::Ptr(self.ptr(st.master)?),
            KArg::Ptr(self.ptr(st.m)?),
            KArg::Ptr(self.ptr(st.v)?),
            KArg::Ptr(self.ptr(st.ema)?),
            KArg::Ptr(w_ptr),
            KArg::I64(n as i64),
            KArg::Ptr(self.ptr(st.norm_sq)?),
            KArg::F32(step.lr),
            KArg::F32(step.beta1),
            KArg::F32(step.beta2),
            KArg::F32(step.eps),
            KArg::F32(step.bc1),
            KArg::F32(step.bc2),
            KArg::F32(step.ema_decay),
            KArg::F32(step.clip_norm),
        ];
        self.launch_1d("adam_ema", n, &a)
    }

    fn sync(&mut self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err("synchronizing"))
    }

    fn gemm(&mut self, g: &Gemm) -> Result<()> {
        self.gemm_impl(g, None)
    }

    fn gemm_bias_act(&mut self, g: &Gemm, bias: TensorId, act: Activation) -> Result<()> {
        let fusable = g.batch == 1
            && g.beta == 0.0
            && !is_f32(self.class(g.c.t))
            && !is_f32(self.class(bias));
        if !fusable {
            self.gemm(g)?;
            let y = View {
                t: g.c.t,
                off: g.c.off,
                ld: g.c.ld,
                row_div: 1,
            };
            return self.bias_act_fwd(g.m, g.n, y, bias, act);
        }
        self.need("gemm_bias_act(bias)", bias, g.n)?;
        let epilogue = if act == Activation::Relu { 6 } else { 4 };
        self.gemm_impl(g, Some((self.ptr(bias)?, epilogue)))
    }

    fn layer_norm_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        y: TensorId,
        mean: TensorId,
        rstd: TensorId,
    ) -> Result<()> {
        ensure(cols <= LAYER_NORM_MAX_COLS, "layer_norm_fwd", || {
            format!("{cols} columns; the kernel handles at most {LAYER_NORM_MAX_COLS}")
        })?;
        for (t, n, f) in [
            (x, rows * cols, false),
            (y, rows * cols, false),
            (gamma, cols, false),
            (beta, cols, false),
            (mean, rows, true),
            (rstd, rows, true),
        ] {
            self.need("layer_norm_fwd", t, n)?;
            self.need_f32("layer_norm_fwd", t, f)?;
        }
        let blocks = (rows * 32).div_ceil(256) as u32;
        let args = [x, gamma, beta, y, mean, rstd].map(|t| self.ptr(t).map(KArg::Ptr));
        let mut a: Vec<KArg> = args.into_iter().collect::<Result<_>>()?;
        a.push(KArg::I32(rows as i32));
        let name = match self.layer_norm_lanes(cols, &[x, gamma, beta, y])? {
            Some(k) => [
                "layer_norm_fwd_k2",
                "layer_norm_fwd_k4",
                "layer_norm_fwd_k8",
            ][k],
            None => {
                a.push(KArg::I32(cols as i32));
                "layer_norm_fwd"
            }
        };
        self.launch(name, (blocks.max(1), 1, 1), (256, 1, 1), &a)
    }

    fn layer_norm_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        x: TensorId,
        gamma: TensorId,
        mean: TensorId,
        rstd: TensorId,
        dy: TensorId,
        dx: TensorId,
        accumulate: bool,
        dgamma: TensorId,
        dbeta: TensorId,
    ) -> Result<()> {
        ensure(cols <= LAYER_NORM_MAX_COLS, "layer_norm_bwd", || {
            format!("{cols} columns; the kernel handles at most {LAYER_NORM_MAX_COLS}")
        })?;
        let dx_f32 = is_f32(self.class(dx));
        for (t, n, f) in [
            (x, rows * cols, false),
            (dy, rows * cols, false),
            (dx, rows * cols, dx_f32),
            (gamma, cols, false),
            (mean, rows, true),
            (rstd, rows, true),
            (dgamma, cols, true),
            (dbeta, cols, true),
        ] {
            self.need("layer_norm_bwd", t, n)?;
            self.need_f32("layer_norm_bwd", t, f)?;
        }
        let blocks = (rows.div_ceil(8)).min(self.sm_count as usize * 4).max(1) as u32;
        let mut a = vec![
            KArg::Ptr(self.ptr(x)?),
            KArg::Ptr(self.ptr(gamma)?),
            KArg::Ptr(self.ptr(mean)?),
            KArg::Ptr(self.ptr(rstd)?),
            KArg::Ptr(self.ptr(dy)?),
            KArg::Ptr(self.ptr(dx)?),
            KArg::I32(accumulate as i32),
            KArg::Ptr(self.ptr(dgamma)?),
            KArg::Ptr(self.ptr(dbeta)?),
            KArg::I32(rows as i32),
        ];
        let name = match self.layer_norm_lanes(cols, &[x, gamma, dy, dx])? {
            Some(k) if dx_f32 => [
                "layer_norm_bwd_f_k2",
                "layer_norm_bwd_f_k4",
                "layer_norm_bwd_f_k8",
            ][k],
            Some(k) => [
                "layer_norm_bwd_b_k2",
                "layer_norm_bwd_b_k4",
                "layer_norm_bwd_b_k8",
            ][k],
            None => {
                a.push(KArg::I32(cols as i32));
                if dx_f32 {
                    "layer_norm_bwd_f"
                } else {
                    "layer_norm_bwd_b"
                }
            }
        };
        self.launch(name, (blocks, 1, 1), (256, 1, 1), &a)
    }

    fn bias_act_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        bias: TensorId,
        act: Activation,
    ) -> Result<()> {
        self.need_view("bias_act_fwd", &y, rows, cols)?;
        self.need("bias_act_fwd", bias, cols)?;
        self.need_f32("bias_act_fwd", bias, false)?;
        if self.views_vec8(rows, cols, &[&y])? && self.aligned16(bias, 0)? {
            let a = [
                KArg::Ptr(self.ptr(y.t)?),
                KArg::I64(y.off as i64),
                KArg::I32(y.ld as i32),
                KArg::Ptr(self.ptr(bias)?),
                KArg::I32(rows as i32),
                KArg::I32(cols as i32),
                KArg::I32((act == Activation::Relu) as i32),
            ];
            return self.launch_1d("bias_act_fwd_v8", rows * cols / 8, &a);
        }
        let a = [
            KArg::Ptr(self.ptr(y.t)?),
            KArg::I64(y.off as i64),
            KArg::I64(y.ld as i64),
            KArg::Ptr(self.ptr(bias)?),
            KArg::I32(rows as i32),
            KArg::I32(cols as i32),
            KArg::I32((act == Activation::Relu) as i32),
        ];
        self.launch_1d("bias_act_fwd", rows * cols, &a)
    }

    fn bias_act_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: View,
        dy: View,
        dbias: TensorId,
        act: Activation,
    ) -> Result<()> {
        self.need_view("bias_act_bwd", &y, rows, cols)?;
        self.need_view("bias_act_bwd", &dy, rows, cols)?;
        self.need("bias_act_bwd", dbias, cols)?;
        self.need_f32("bias_act_bwd", dbias, true)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        if self.views_vec8(rows, cols, &[&y, &dy])? {
            // A warp spans `lpr` lanes x 8 columns and 32 / lpr rows; 8 warps per block;
            // enough blocks for about 8 per SM, each thread summing at least 4 rows.
            let lpr = (cols / 8).next_power_of_two().min(32);
            let gx = cols.div_ceil(lpr * 8);
            let rows_per_step = 8 * (32 / lpr);
            let gy = rows
                .div_ceil(rows_per_step * 4)
                .min((self.sm_count as usize * 8).div_ceil(gx))
                .max(1);
            let a = [
                KArg::Ptr(self.ptr(y.t)?),
                KArg::I64(y.off as i64),
                KArg::I32(y.ld as i32),
                KArg::Ptr(self.ptr(dy.t)?),
                KArg::I64(dy.off as i64),
                KArg::I32(dy.ld as i32),
                KArg::Ptr(self.ptr(dbias)?),
                KArg::I32(rows as i32),
                KArg::I32(cols as i32),
                KArg::I32((act == Activation::Relu) as i32),
                KArg::I32(lpr as i32),
            ];
            return self.launch("bias_act_bwd_v8", (gx as u32, gy as u32, 1), (32, 8, 1), &a);
        }
        let gy = rows.div_ceil(64).min(256) as u32;
        let a = [
            KArg::Ptr(self.ptr(y.t)?),
            KArg::I64(y.off as i64),
            KArg::I64(y.ld as i64),
            KArg::Ptr(self.ptr(dy.t)?),
            KArg::I64(dy.off as i64),
            KArg::I64(dy.ld as i64),
            KArg::Ptr(self.ptr(dbias)?),
            KArg::I32(rows as i32),
            KArg::I32(cols as i32),
            KArg::I32((act == Activation::Relu) as i32),
        ];
        self.launch(
            "bias_act_bwd",
            (cols.div_ceil(32) as u32, gy, 1),
            (32, 8, 1),
            &a,
        )
    }

    fn sigmoid_mul_fwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        out: View,
    ) -> Result<()> {
        for v in [&a, &g, &out] {
            self.need_view("sigmoid_mul_fwd", v, rows, cols)?;
        }
        let mut args = vec![KArg::I32(rows as i32), KArg::I32(cols as i32)];
        for v in [&a, &g, &out] {
            args.extend(self.view_args(v)?);
        }
        if self.views_vec8(rows, cols, &[&a, &g, &out])? {
            return self.launch_1d("sigmoid_mul_fwd_v8", rows * cols / 8, &args);
        }
        self.launch_1d("sigmoid_mul_fwd", rows * cols, &args)
    }

    fn sigmoid_mul_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        a: View,
        g: View,
        dout: View,
        da: View,
        dg: View,
    ) -> Result<()> {
        for v in [&a, &g, &dout, &da, &dg] {
            self.need_view("sigmoid_mul_bwd", v, rows, cols)?;
        }
        let mut args = vec![KArg::I32(rows as i32), KArg::I32(cols as i32)];
        for v in [&a, &g, &dout, &da, &dg] {
            args.extend(self.view_args(v)?);
        }
        if self.views_vec8(rows, cols, &[&a, &g, &dout, &da, &dg])? {
            return self.launch_1d("sigmoid_mul_bwd_v8", rows * cols / 8, &args);
        }
        self.launch_1d("sigmoid_mul_bwd", rows * cols, &args)
    }

    fn attention_fwd(
        &mut self,
        s: AttnShape,
        qkvg: TensorId,
        bias: Option<TensorId>,
        key_mask: Option<TensorId>,
        attn: TensorId,
        out: TensorId,
        lse: TensorId,
    ) -> Result<()> {
        let k = attention_width_index("attention_fwd", s)?;
        let w = s.width();
        for (t, n, f) in [
            (qkvg, s.rows() * 4 * w, false),
            (attn, s.rows() * w, false),
            (out, s.rows() * w, false),
            (lse, s.batch * s.heads * s.len, true),
        ] {
            self.need("attention_fwd", t, n)?;
            self.need_f32("attention_fwd", t, f)?;
        }
        if let Some(b) = bias {
            self.need("attention_fwd(bias)", b, s.heads * s.len * s.len)?;
            self.need_f32("attention_fwd(bias)", b, false)?;
        }
        let mask_ptr = self.key_mask_ptr("attention_fwd(key_mask)", key_mask, s)?;
        if s.batch == 0 || s.len == 0 {
            return Ok(());
        }
        let a = [
            KArg::Ptr(self.ptr(qkvg)?),
            KArg::Ptr(bias.map(|b| self.ptr(b)).transpose()?.unwrap_or(0)),
            KArg::Ptr(mask_ptr),
            KArg::Ptr(self.ptr(attn)?),
            KArg::Ptr(self.ptr(out)?),
            KArg::Ptr(self.ptr(lse)?),
            KArg::I32(s.len as i32),
            KArg::I32(s.heads as i32),
            KArg::F32(1.0 / (s.head_dim as f32).sqrt()),
        ];
        let grid = (
            s.len.div_ceil(ATTN_TC_ROWS) as u32,
            s.heads as u32,
            s.batch as u32,
        );
        if self.attention_tc_aligned(&[qkvg], &[attn, out])? {
            self.launch(ATTN_TC[k][0], grid, (128, 1, 1), &a)
        } else {
            self.launch(ATTN_SIMT[k][0], grid, (64, 1, 1), &a)
        }
    }

    fn attention_bwd(
        &mut self,
        s: AttnShape,
        qkvg: TensorId,
        bias: Option<TensorId>,
        key_mask: Option<TensorId>,
        attn: TensorId,
        lse: TensorId,
        dout: TensorId,
        dqkvg: TensorId,
        dbias: Option<TensorId>,
    ) -> Result<()> {
        let k = attention_width_index("attention_bwd", s)?;
        let w = s.width();
        for (t, n, f) in [
            (qkvg, s.rows() * 4 * w, false),
            (dqkvg, s.rows() * 4 * w, false),
            (attn, s.rows() * w, false),
            (dout, s.rows() * w, false),
            (lse, s.batch * s.heads * s.len, true),
        ] {
            self.need("attention_bwd", t, n)?;
            self.need_f32("attention_bwd", t, f)?;
        }
        if let Some(db) = dbias {
            self.need("attention_bwd(dbias)", db, s.heads * s.len * s.len)?;
            self.need_f32("attention_bwd(dbias)", db, true)?;
        }
        let bias_ptr = bias.map(|b| self.ptr(b)).transpose()?.unwrap_or(0);
        let mask_ptr = self.key_mask_ptr("attention_bwd(key_mask)", key_mask, s)?;
        // The tensor-core dq kernel sums the bias gradient of its 64 queries over
        // its batch entries in shared memory: [64][round_up(L, 64) + 8] f32.
        let dbs_stride = s.len.next_multiple_of(ATTN_TC_ROWS) + 8;
        let dbs_bytes = if dbias.is_some() {
            ATTN_TC_ROWS * dbs_stride * 4
        } else {
            0
        };
        let tc = self.attention_tc_aligned(&[qkvg, dqkvg, attn, dout], &[])?
            && dbs_bytes <= self.attn_tc_dyn_smem[k];
        if !tc {
            ensure(
                dbias.is_none() || s.len <= ATTENTION_BIAS_MAX_LEN,
                "attention_bwd",
                || {
                    format!(
                        "length {} with a bias gradient on the CUDA-core kernels; at most {ATTENTION_BIAS_MAX_LEN}",
                        s.len
                    )
                },
            )?;
        }
        if s.batch == 0 || s.len == 0 {
            return Ok(());
        }
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let common = |me: &Self| -> Result<[KArg; 7]> {
            Ok([
                KArg::Ptr(me.ptr(qkvg)?),
                KArg::Ptr(bias_ptr),
                KArg::Ptr(mask_ptr),
                KArg::Ptr(me.ptr(attn)?),
                KArg::Ptr(me.ptr(lse)?),
                KArg::Ptr(me.ptr(dout)?),
                KArg::Ptr(me.ptr(dqkvg)?),
            ])
        };
        let dbias_ptr = dbias.map(|b| self.ptr(b)).transpose()?.unwrap_or(0);
        let tiles = s.len.div_ceil(ATTN_TC_ROWS) as u32;
        let mut a: Vec<KArg> = common(self)?.into_iter().collect();
        a.extend([
            KArg::Ptr(dbias_ptr),
            KArg::I32(s.batch as i32),
            KArg::I32(s.len as i32),
            KArg::I32(s.heads as i32),
            KArg::F32(scale),
        ]);
        if tc {
            // Batch entries per dq CTA: 1 without a bias gradient; with one, as
            // many as leave one full wave of CTAs (the shared-memory accumulator
            // limits how many fit on an SM), so that each CTA adds its bias
            // gradient to global memory once and no SM idles in a last partial wave.
            let (name, threads, group) = if dbias.is_some() {
                let resident = self.attn_tc_bwd_q_resident(k, dbs_bytes)?;
                let slots = resident * self.sm_count as usize;
                let per_batch = tiles as usize * s.heads;
                let groups = (slots / per_batch).clamp(1, s.batch);
                (
                    ATTN_TC[k][1],
                    ATTN_TC_BWD_Q_THREADS,
                    s.batch.div_ceil(groups),
                )
            } else {
                (ATTN_TC_BWD_Q1[k], 128, 1)
            };
            a.extend([KArg::I32(group as i32), KArg::I32(dbs_stride as i32)]);
            self.launch_smem(
                name,
                (tiles, s.heads as u32, s.batch.div_ceil(group) as u32),
                (threads, 1, 1),
                dbs_bytes as u32,
                &a,
            )?;
        } else {
            self.launch(
                ATTN_SIMT[k][1],
                (
                    s.len.div_ceil(32) as u32,
                    s.heads as u32,
                    s.batch.div_ceil(16) as u32,
                ),
                (128, 1, 1),
                &a,
            )?;
        }
        let mut a: Vec<KArg> = common(self)?.into_iter().collect();
        a.extend([
            KArg::I32(s.len as i32),
            KArg::I32(s.heads as i32),
            KArg::F32(scale),
        ]);
        let (name, threads) = if tc {
            (ATTN_TC[k][2], 128)
        } else {
            (ATTN_SIMT[k][2], 64)
        };
        self.launch(
            name,
            (tiles, s.heads as u32, s.batch as u32),
            (threads, 1, 1),
            &a,
        )
    }

    fn softmax_fwd(&mut self, rows: usize, cols: usize, x: TensorId, y: TensorId) -> Result<()> {
        for t in [x, y] {
            self.need("softmax_fwd", t, rows * cols)?;
            self.need_f32("softmax_fwd", t, false)?;
        }
        let a = [
            KArg::Ptr(self.ptr(x)?),
            KArg::Ptr(self.ptr(y)?),
            KArg::I32(rows as i32),
            KArg::I32(cols as i32),
        ];
        self.launch(
            "softmax_fwd",
            ((rows * 32).div_ceil(256).max(1) as u32, 1, 1),
            (256, 1, 1),
            &a,
        )
    }

    fn softmax_bwd(
        &mut self,
        rows: usize,
        cols: usize,
        y: TensorId,
        dy: TensorId,
        dx: TensorId,
    ) -> Result<()> {
        for t in [y, dy, dx] {
            self.need("softmax_bwd", t, rows * cols)?;
            self.need_f32("softmax_bwd", t, false)?;
        }
        let a = [
            KArg::Ptr(self.ptr(y)?),
            KArg::Ptr(self.ptr(dy)?),
            KArg::Ptr(self.ptr(dx)?),
            KArg::I32(rows as i32),
            KArg::I32(cols as i32),
        ];
        self.launch(
            "softmax_bwd",
            ((rows * 32).div_ceil(256).max(1) as u32, 1, 1),
            (256, 1, 1),
            &a,
        )
    }

    fn transpose(
        &mut self,
        dims: [usize; 4],
        x: TensorId,
        y: TensorId,
        accumulate: bool,
    ) -> Result<()> {
        let [a, b, c, d] = dims;
        let n = a * b * c * d;
        self.need("transpose", x, n)?;
        self.need("transpose", y, n)?;
        let (fx, fy) = (is_f32(self.class(x)), is_f32(self.class(y)));
        let tag = match (fx, fy) {
            (false, false) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (true, true) => 3,
        };
        let (px, py) = (self.ptr(x)?, self.ptr(y)?);
        let pairs = b.is_multiple_of(2)
            && c.is_multiple_of(2)
            && px.is_multiple_of(8)
            && py.is_multiple_of(8);
        if self.vector_kernels && d == 1 && b >= 32 && c >= 32 && pairs && n < 1 << 31 {
            // 64 x 64 tiles moved two elements per access.
            let name = by_io_dtype!("transpose_tiled64")[tag];
            let args = [
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::I32(b as i32),
                KArg::I32(c as i32),
                KArg::I32(accumulate as i32),
            ];
            self.launch(
                name,
                (c.div_ceil(64) as u32, b.div_ceil(64) as u32, a as u32),
                (32, 8, 1),
                &args,
            )
        } else if d == 1 && b >= 32 && c >= 32 {
            let name = by_io_dtype!("transpose_tiled")[tag];
            let args = [
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::I64(b as i64),
                KArg::I64(c as i64),
                KArg::I32(accumulate as i32),
            ];
            self.launch(
                name,
                (c.div_ceil(32) as u32, b.div_ceil(32) as u32, a as u32),
                (32, 8, 1),
                &args,
            )
        } else if self.vector_kernels && n < 1 << 31 {
            // 32-bit indices; a swap with a length-1 axis is a plain copy (one row of
            // n elements); 8 consecutive elements per thread where rows allow.
            let [a, b, c, d] = if b == 1 || c == 1 { [1, 1, 1, n] } else { dims };
            let vec8 = d.is_multiple_of(8) && px.is_multiple_of(16) && py.is_multiple_of(16);
            let name = if vec8 {
                by_io_dtype!("transpose_v8")[tag]
            } else {
                by_io_dtype!("transpose_v1")[tag]
            };
            let args = [
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::I32(a as i32),
                KArg::I32(b as i32),
                KArg::I32(c as i32),
                KArg::I32(d as i32),
                KArg::I32(accumulate as i32),
            ];
            self.launch_1d(name, if vec8 { n / 8 } else { n }, &args)
        } else {
            let name = by_io_dtype!("transpose")[tag];
            let args = [
                KArg::Ptr(px),
                KArg::Ptr(py),
                KArg::I64(a as i64),
                KArg::I64(b as i64),
                KArg::I64(c as i64),
                KArg::I64(d as i64),
                KArg::I32(accumulate as i32),
            ];
            self.launch_1d(name, n, &args)
        }
    }

    fn set_dropout_seed(&mut self, seed: u64) -> Result<()> {
        // SAFETY: `self.dropout_seed` is a live allocation of exactly one u64.
        unsafe {
            self.upload(self.dropout_seed, &[seed], || {
                "writing the dropout seed".to_string()
            })
        }
    }

    fn residual_dropout_fwd(
        &mut self,
        d: &Dropout,
        resid: TensorId,
        x: TensorId,
        out: TensorId,
    ) -> Result<()> {
        let n: usize = d.shape.iter().product();
        for t in [resid, x, out] {
            self.need("residual_dropout_fwd", t, n)?;
            self.need_f32("residual_dropout_fwd", t, false)?;
        }
        let a = [
            KArg::Ptr(self.ptr(resid)?),
            KArg::Ptr(self.ptr(x)?),
            KArg::Ptr(self.ptr(out)?),
            KArg::I64(n as i64),
            KArg::F32(d.p),
            KArg::I64(d.seed as i64),
            KArg::Ptr(self.dropout_seed),
            KArg::I64(d.shape[1] as i64),
            KArg::I64(d.shape[2] as i64),
            KArg::I32(shared_code(d.shared)),
        ];
        if self.dropout_vec8(d, &[resid, x, out])? {
            return self.launch_1d("residual_dropout_fwd_v8", n / 8, &a);
        }
        self.launch_1d("residual_dropout_fwd", n, &a)
    }

    fn dropout_bwd(&mut self, d: &Dropout, dout: TensorId, dx: TensorId) -> Result<()> {
        let n: usize = d.shape.iter().product();
        let dout_f32 = is_f32(self.class(dout));
        self.need("dropout_bwd", dout, n)?;
        self.need("dropout_bwd", dx, n)?;
        self.need_f32("dropout_bwd", dx, false)?;
        let a = [
            KArg::Ptr(self.ptr(dout)?),
            KArg::Ptr(self.ptr(dx)?),
            KArg::I64(n as i64),
            KArg::F32(d.p),
            KArg::I64(d.seed as i64),
            KArg::Ptr(self.dropout_seed),
            KArg::I64(d.shape[1] as i64),
            KArg::I64(d.shape[2] as i64),
            KArg::I32(shared_code(d.shared)),
        ];
        if self.dropout_vec8(d, &[dout, dx])? {
            let name = if dout_f32 {
                "dropout_bwd_v8_f"
            } else {
                "dropout_bwd_v8_b"
            };
            return self.launch_1d(name, n / 8, &a);
        }
        self.launch_1d(
            if dout_f32 {
                "dropout_bwd_f"
            } else {
                "dropout_bwd_b"
            },
            n,
            &a,
        )
    }
}

/// The four dtype variants of a kernel family, indexed by the transpose's
/// `tag`: input and output bf16 (`_bb`), f32 in (`_fb`), f32 out (`_bf`), both f32 (`_ff`).
macro_rules! by_io_dtype {
    ($base:literal) => {
        [
            concat!($base, "_bb"),
            concat!($base, "_fb"),
            concat!($base, "_bf"),
            concat!($base, "_ff"),
        ]
    };
}
use by_io_dtype;

fn shared_code(s: SharedAxis) -> i32 {
    match s {
        SharedAxis::None => 0,
        SharedAxis::Axis0 => 1,
        SharedAxis::Axis1 => 2,
    }
}
