//! [`NcclGroup`]: the NCCL implementation of [`Communicator`] for the CUDA backend.
//!
//! One rank per GPU, either one process per GPU or one thread per GPU in one
//! process. Rank 0 creates an id ([`NcclGroup::unique_id`], 128 bytes; hex with
//! [`id_to_hex`] to pass it in an environment variable or on a command line),
//! every rank passes it to [`NcclGroup::from_id`] with its rank, and the ranks
//! meet there (the call blocks until all have joined).
//!
//! Every collective is queued on the backend's stream and returns at once, so
//! it orders with the ops around it and can be captured in a CUDA graph
//! ([`CudaBackend::begin_capture`]). Call each collective once eagerly before
//! capturing it: NCCL connects peers lazily, at the first operation between
//! them, and that setup must not happen inside a capture. A captured graph
//! must be dropped before its group.
//!
//! One thread per GPU in one process:
//!
//! ```no_run
//! use scalefold_trainer::backend::cuda::CudaBackend;
//! use scalefold_trainer::dist::NcclGroup;
//!
//! let world = 2;
//! let id = NcclGroup::unique_id()?;
//! let ranks: Vec<_> = (0..world)
//!     .map(|rank| {
//!         let id = id.clone();
//!         std::thread::spawn(move || -> scalefold_trainer::Result<()> {
//!             let mut be = CudaBackend::new(rank)?;
//!             let comm = NcclGroup::from_id(&id, rank, world, &be)?;
//!             // declare, materialize, then run steps that call comm's collectives
//!             # let _ = (&mut be, comm);
//!             Ok(())
//!         })
//!     })
//!     .collect();
//! for r in ranks {
//!     r.join().expect("a rank panicked")?;
//! }
//! # Ok::<(), scalefold_trainer::TrainerError>(())
//! ```
//!
//! The all-to-all is one NCCL group of `world` sends and `world` receives
//! (including to and from this rank itself); the all-gather and the all-reduce
//! are NCCL's own collectives. Tensors are moved in their element type on the
//! GPU: bf16 for activations and weights, f32 for statistics and gradients.

use super::{Communicator, Region, all_gather_shard, all_to_all_chunk, overlaps};
use crate::backend::cuda::CudaBackend;
use crate::backend::{Backend, Class, TensorId};
use crate::error::{Result, TrainerError};
use cudarc::driver::CudaContext;
use cudarc::nccl::{result as nres, sys as nsys};
use std::ffi::{CStr, c_void};
use std::mem::MaybeUninit;
use std::sync::{Arc, OnceLock};

/// Length in bytes of an NCCL unique id.
pub const NCCL_ID_BYTES: usize = 128;

fn nccl_err(context: impl Into<String>) -> impl FnOnce(nres::NcclError) -> TrainerError {
    let context = context.into();
    move |e| {
        // SAFETY: ncclGetLastError accepts a null communicator and returns null or a
        // NUL-terminated string owned by NCCL, copied here at once.
        let last = unsafe {
            let p = nsys::ncclGetLastError(std::ptr::null_mut());
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        TrainerError::Cuda {
            context,
            detail: format!("{:?}: {last}", e.0),
        }
    }
}

fn driver_err(context: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> TrainerError {
    move |e| TrainerError::Cuda {
        context: context.into(),
        detail: format!("{e:?}"),
    }
}

/// Fails cleanly where the NCCL library cannot be loaded (cudarc would panic
/// at the first call).
fn ensure_nccl_loaded() -> Result<()> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to dlopen the library and reports whether it could.
    if *PRESENT.get_or_init(|| unsafe { nsys::is_culib_present() }) {
        Ok(())
    } else {
        Err(TrainerError::Cuda {
            context: "loading NCCL".into(),
            detail: "the NCCL library could not be loaded: cudarc looks for libnccl.so \
                     (or libnccl.so.<CUDA major>), not libnccl.so.2; if only the latter is \
                     installed, link libnccl.so to it in a directory on LD_LIBRARY_PATH"
                .into(),
        })
    }
}

/// Checks the arguments of [`NcclGroup::from_id`] before NCCL sees them and
/// returns the id as a fixed-size array.
pub fn check_init(id: &[u8], rank: usize, world: usize) -> Result<[u8; NCCL_ID_BYTES]> {
    let id: [u8; NCCL_ID_BYTES] = id.try_into().map_err(|_| {
        TrainerError::Comm(format!(
            "an NCCL id has {NCCL_ID_BYTES} bytes, got {}",
            id.len()
        ))
    })?;
    if world == 0 || world > i32::MAX as usize || rank >= world {
        return Err(TrainerError::Comm(format!(
            "rank {rank} of world {world}: need 0 <= rank < world"
        )));
    }
    Ok(id)
}

/// Lower-case hex of an id (256 characters for an NCCL id).
pub fn id_to_hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`id_to_hex`]'s output back into the id's bytes (surrounding
/// whitespace ignored); fails on a length other than [`NCCL_ID_BYTES`] bytes or
/// a non-hex character, naming its position.
pub fn id_from_hex(hex: &str) -> Result<Vec<u8>> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 2 * NCCL_ID_BYTES {
        return Err(TrainerError::Comm(format!(
            "an NCCL id in hex has {} characters, got {}",
            2 * NCCL_ID_BYTES,
            hex.len()
        )));
    }
    let digit = |i: usize| -> Result<u8> {
        (hex[i] as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| {
                TrainerError::Comm(format!(
                    "NCCL id: character {i} ({:?}) is not a hex digit",
                    hex[i] as char
                ))
            })
    };
    (0..NCCL_ID_BYTES)
        .map(|i| Ok(digit(2 * i)? << 4 | digit(2 * i + 1)?))
        .collect()
}

/// NCCL element type of a GPU tensor: f32 or bf16.
fn nccl_type(is_f32: bool) -> nsys::ncclDataType_t {
    if is_f32 {
        nsys::ncclDataType_t::ncclFloat32
    } else {
        nsys::ncclDataType_t::ncclBfloat16
    }
}

fn elem_bytes(is_f32: bool) -> usize {
    if is_f32 { 4 } else { 2 }
}

/// One tensor's device memory: pointer, elements, f32 (else bf16).
#[derive(Clone, Copy)]
struct Extent {
    ptr: u64,
    len: usize,
    is_f32: bool,
}

impl Extent {
    fn of(be: &CudaBackend, t: TensorId) -> Result<Self> {
        let (parts, is_f32) = be.device_region(Region::Tensor(t))?;
        let &[(ptr, len)] = parts.as_slice() else {
            unreachable!("a tensor is one extent")
        };
        Ok(Self { ptr, len, is_f32 })
    }

    fn bytes(&self) -> usize {
        self.len * elem_bytes(self.is_f32)
    }

    /// Pointer to element `i`.
    fn at(&self, i: usize) -> u64 {
        self.ptr + (i * elem_bytes(self.is_f32)) as u64
    }
}

/// One rank of an NCCL communicator, bound to one GPU. Not `Sync`: NCCL
/// communicators are not safe to use from several threads at once.
pub struct NcclGroup {
    comm: nsys::ncclComm_t,
    rank: usize,
    world: usize,
    /// The GPU's context: kept alive while the communicator's resources live on it.
    ctx: Arc<CudaContext>,
}

// SAFETY: an NCCL communicator may move to another thread as long as only one
// thread uses it at a time, which `Send` without `Sync` guarantees; every call
// makes the GPU's context current on the calling thread first.
unsafe impl Send for NcclGroup {}

impl std::fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclGroup")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("gpu", &self.ctx.ordinal())
            .finish()
    }
}

impl NcclGroup {
    /// A fresh communicator id (on rank 0); every rank passes it to [`NcclGroup::from_id`].
    pub fn unique_id() -> Result<Vec<u8>> {
        ensure_nccl_loaded()?;
        let id = nres::get_uniqueid().map_err(nccl_err("creating an NCCL id"))?;
        Ok(id.internal.iter().map(|&c| c as u8).collect())
    }

    /// Joins communicator `id` as `rank` of `world`, on the GPU of `be`. Blocks
    /// until every rank has joined: with one thread per GPU, call it from all the
    /// threads at once.
    pub fn from_id(id: &[u8], rank: usize, world: usize, be: &CudaBackend) -> Result<Self> {
        let id = check_init(id, rank, world)?;
        ensure_nccl_loaded()?;
        let ctx = be.stream().context().clone();
        // NCCL takes the device from the thread's current context.
        ctx.bind_to_thread()
            .map_err(driver_err("binding the context for NCCL"))?;
        let uid = nsys::ncclUniqueId {
            internal: id.map(|b| b as std::ffi::c_char),
        };
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is a valid out-pointer; rank and world were checked to fit i32.
        unsafe { nres::comm_init_rank(comm.as_mut_ptr(), world as i32, uid, rank as i32) }
            .map_err(nccl_err(format!(
                "joining the NCCL communicator as rank {rank} of {world} on GPU {}",
                ctx.ordinal()
            )))?;
        Ok(Self {
            // SAFETY: ncclCommInitRank succeeded, so it wrote the communicator.
            comm: unsafe { comm.assume_init() },
            rank,
            world,
            ctx,
        })
    }

    /// This rank's index.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The backend's stream as NCCL's stream type, after checking that the backend
    /// is on this rank's GPU and making its context current.
    fn stream(&self, be: &CudaBackend) -> Result<nsys::cudaStream_t> {
        let gpu = be.stream().context().ordinal();
        if gpu != self.ctx.ordinal() {
            return Err(TrainerError::Comm(format!(
                "rank {} communicates from GPU {}, but the backend is on GPU {gpu}",
                self.rank,
                self.ctx.ordinal()
            )));
        }
        self.ctx
            .bind_to_thread()
            .map_err(driver_err("binding the context for NCCL"))?;
        Ok(be.stream().cu_stream() as nsys::cudaStream_t)
    }

    /// Runs `enqueue` between ncclGroupStart and ncclGroupEnd (the end is called
    /// even when `enqueue` fails, so the group never stays open).
    fn grouped(&self, what: &str, enqueue: impl FnOnce() -> Result<()>) -> Result<()> {
        nres::group_start().map_err(nccl_err(format!("{what}: ncclGroupStart")))?;
        let queued = enqueue();
        let ended = nres::group_end()
            .map(|_| ())
            .map_err(nccl_err(format!("{what}: ncclGroupEnd")));
        queued.and(ended)
    }

    /// In-place all-reduce of one device extent.
    fn all_reduce_raw(
        &self,
        stream: nsys::cudaStream_t,
        e: Extent,
        op: nsys::ncclRedOp_t,
        what: &str,
    ) -> Result<()> {
        if e.len == 0 {
            return Ok(());
        }
        // SAFETY: `e` is a live device allocation of `e.len` elements of its type on
        // this rank's GPU; in-place all-reduce reads and writes only that range.
        unsafe {
            nres::all_reduce(
                e.ptr as *const c_void,
                e.ptr as *mut c_void,
                e.len,
                nccl_type(e.is_f32),
                op,
                self.comm,
                stream,
            )
        }
        .map(|_| ())
        .map_err(nccl_err(what.to_string()))
    }

    /// Averages every storage block of `class` over ranks, in place, in one NCCL
    /// group (for the flat gradient block: [`all_reduce_gradients`]).
    pub fn all_reduce_mean_class(&self, be: &mut CudaBackend, class: Class) -> Result<()> {
        let stream = self.stream(be)?;
        let (parts, is_f32) = be.device_region(Region::Class(class))?;
        let what = format!("all-reduce (mean) of the {class:?} block");
        self.grouped(&what, || {
            parts.iter().try_for_each(|&(ptr, len)| {
                let e = Extent { ptr, len, is_f32 };
                self.all_reduce_raw(stream, e, nsys::ncclRedOp_t::ncclAvg, &what)
            })
        })
    }
}

/// Data parallelism: averages the flat gradient block (class `WeightGrad`) over
/// ranks. Each rank's gradient is that of the mean loss over its own samples, so
/// their mean is the gradient of the mean loss over the global batch and the
/// learning rate does not depend on the number of ranks.
pub fn all_reduce_gradients(comm: &NcclGroup, be: &mut CudaBackend) -> Result<()> {
    comm.all_reduce_mean_class(be, Class::WeightGrad)
}

impl Communicator<CudaBackend> for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, be: &mut CudaBackend, t: TensorId) -> Result<()> {
        let stream = self.stream(be)?;
        let e = Extent::of(be, t)?;
        self.all_reduce_raw(
            stream,
            e,
            nsys::ncclRedOp_t::ncclSum,
            &format!("all-reduce of {}", be.tensor_name(t)),
        )
    }

    fn all_gather(&self, be: &mut CudaBackend, shard: TensorId, full: TensorId) -> Result<()> {
        let stream = self.stream(be)?;
        let (s, f) = (Extent::of(be, shard)?, Extent::of(be, full)?);
        same_type("all_gather", s, f)?;
        let n = all_gather_shard(s.len, f.len, self.world)?;
        let in_place = s.ptr == f.at(self.rank * n);
        if !in_place && overlaps(s.ptr, s.bytes(), f.ptr, f.bytes()) {
            return Err(TrainerError::Comm(format!(
                "all_gather: the shard overlaps full without being rank {}'s chunk of it",
                self.rank
            )));
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: both extents are live device allocations on this GPU; `full` holds
        // `world * n` elements and `shard` is either disjoint or chunk `rank` of it.
        unsafe {
            nres::all_gather(
                s.ptr as *const c_void,
                f.ptr as *mut c_void,
                n,
                nccl_type(s.is_f32),
                self.comm,
                stream,
            )
        }
        .map(|_| ())
        .map_err(nccl_err("all-gather"))
    }

    fn all_to_all(&self, be: &mut CudaBackend, send: TensorId, recv: TensorId) -> Result<()> {
        let stream = self.stream(be)?;
        let (s, r) = (Extent::of(be, send)?, Extent::of(be, recv)?);
        same_type("all_to_all", s, r)?;
        let chunk = all_to_all_chunk(s.len, r.len, self.world)?;
        if overlaps(s.ptr, s.bytes(), r.ptr, r.bytes()) {
            return Err(TrainerError::Comm(
                "all_to_all: send and recv overlap".into(),
            ));
        }
        if chunk == 0 {
            return Ok(());
        }
        let ty = nccl_type(s.is_f32);
        self.grouped("all-to-all", || {
            for peer in 0..self.world {
                // SAFETY: chunk `peer` of each extent lies inside its live allocation
                // (`world * chunk` elements); send and recv do not overlap.
                unsafe {
                    nres::send(
                        s.at(peer * chunk) as *const c_void,
                        chunk,
                        ty,
                        peer as i32,
                        self.comm,
                        stream,
                    )
                    .map_err(nccl_err(format!("all-to-all: send to rank {peer}")))?;
                    nres::recv(
                        r.at(peer * chunk) as *mut c_void,
                        chunk,
                        ty,
                        peer as i32,
                        self.comm,
                        stream,
                    )
                    .map_err(nccl_err(format!("all-to-all: receive from rank {peer}")))?;
                }
            }
            Ok(())
        })
    }
}

fn same_type(op: &str, a: Extent, b: Extent) -> Result<()> {
    if a.is_f32 != b.is_f32 {
        return Err(TrainerError::Comm(format!(
            "{op}: one tensor is f32 and the other bf16 on the GPU; NCCL moves data \
             without converting (use tensors of the same class)"
        )));
    }
    Ok(())
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `comm` came from ncclCommInitRank and is released exactly once.
        // Destroy waits for this rank's queued work; while unwinding from a panic,
        // peers may never arrive, so abort instead of risking a hang.
        unsafe {
            let _ = if std::thread::panicking() {
                nres::comm_abort(self.comm)
            } else {
                nres::comm_destroy(self.comm)
            };
        }
    }
}
