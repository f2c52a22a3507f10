//! Runs this process's rank of a lowered plan on one GPU (one process per GPU): cuBLAS GEMMs
//! (strided-batched GemmEx, tensor cores, fp32 accumulation) on scratch operands of the
//! shard's shapes, memory-bound kernels as device copies of their bytes, NCCL collectives on
//! communicators for each of the plan's groups (unique ids from rank 0 through the TCP
//! rendezvous), NCCL send/receive between stages (a send directly followed by a receive is
//! posted as one group, as Megatron's send_forward_recv_backward does, so blocking transfers
//! cannot deadlock), real allocations of the model state and of each micro-batch's saved
//! activations, everything on one stream and timed with CUDA events. CUDA is loaded at run
//! time: callers check `cuda::driver_present` first.

use super::ExecError;
use super::cuda::device_err;
use super::cuda_nccl::{issue, nccl_err};
use super::lower::{Class, GroupKind, Lowered, Op, Program};
use super::rendezvous::Rendezvous;
use super::run::{KernelKey, MemoryPeak, RankRun, RunConfig, RunResult, Sizes, StepRecord};
use crate::graph::{Coll, Kernel};
use crate::units::Dtype;
use cudarc::cublas::sys as blas;
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr};
use cudarc::nccl::{result as nccl, sys};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// One rank's GPU, stream, communicators and buffers.
struct Gpu<'a> {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: cudarc::cublas::CudaBlas,
    prog: &'a Program,
    l: &'a Lowered,
    /// Group index → (communicator, this rank's position, ranks).
    comms: HashMap<usize, (sys::ncclComm_t, usize)>,
    bufs: [CudaSlice<u8>; 7],
    slots: HashMap<u64, CudaSlice<u8>>,
    dtype: Dtype,
    memory: MemoryPeak,
    kept: f64,
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const SRC: usize = 3;
const DST: usize = 4;
const SEND: usize = 5;
const RECV: usize = 6;

/// Creates a communicator for every group of `l` this rank belongs to, in the groups' order
/// (every process walks the same order, so each blocking init meets its peers); rank 0 makes
/// the unique ids and the rendezvous hands them to everyone.
fn communicators(
    l: &Lowered,
    rank: u64,
    rdv: Option<&mut Rendezvous>,
) -> Result<HashMap<usize, (sys::ncclComm_t, usize)>, ExecError> {
    let mut out = HashMap::new();
    if l.groups.is_empty() {
        return Ok(out);
    }
    let rdv = rdv.ok_or_else(|| ExecError::Config("several ranks need a rendezvous".into()))?;
    let mine = if rank == 0 {
        let mut ids = Vec::new();
        for _ in &l.groups {
            let id = nccl::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
            ids.extend(id.internal.iter().map(|&c| c as u8));
        }
        Some(ids)
    } else {
        None
    };
    let ids = rdv.broadcast(mine.as_deref())?;
    for (g, def) in l.groups.iter().enumerate() {
        let Some(pos) = def.members.iter().position(|&r| r == rank) else {
            continue;
        };
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(&ids[g * 128..(g + 1) * 128]) {
            *d = *s as std::ffi::c_char;
        }
        let id = sys::ncclUniqueId { internal };
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        let n = def.members.len() as i32;
        // SAFETY: `comm` is written by NCCL; every member passes the same id.
        unsafe { nccl::comm_init_rank(&mut comm, n, id, pos as i32) }
            .map_err(|e| nccl_err("ncclCommInitRank", e))?;
        out.insert(g, (comm, pos));
    }
    Ok(out)
}

impl<'a> Gpu<'a> {
    fn open(
        l: &'a Lowered,
        rank: u64,
        device: usize,
        dtype: Dtype,
        rdv: Option<&mut Rendezvous>,
    ) -> Result<Gpu<'a>, ExecError> {
        let prog = &l.programs[rank as usize];
        let ctx = CudaContext::new(device)
            .map_err(|e| device_err(&format!("cuCtxCreate({device})"), e))?;
        // SAFETY: every buffer is used on this one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| device_err("cuStreamCreate", e))?;
        let blas = cudarc::cublas::CudaBlas::new(stream.clone())
            .map_err(|e| device_err("cublasCreate", e))?;
        let comms = communicators(l, rank, rdv)?;
        let elem = dtype.bytes() as usize;
        let s = Sizes::of(prog, true);
        let alloc = |n: usize| {
            stream
                .alloc_zeros::<u8>(n.max(1))
                .map_err(|e| device_err("cuMemAlloc", e))
        };
        let comm_bytes = 4 * s.comm.max(s.dp_comm);
        let bufs = [
            alloc(elem * s.a)?,
            alloc(elem * s.b)?,
            alloc(elem * s.c)?,
            alloc(s.copy)?,
            alloc(s.copy)?,
            alloc(comm_bytes)?,
            alloc(comm_bytes)?,
        ];
        let working = elem * (s.a + s.b + s.c) + 2 * s.copy + 2 * comm_bytes;
        let state = prog.state.total() as usize;
        let mut slots = HashMap::new();
        slots.insert(u64::MAX, alloc(state)?);
        Ok(Gpu {
            ctx,
            stream,
            blas,
            prog,
            l,
            comms,
            bufs,
            slots,
            dtype,
            memory: MemoryPeak {
                state_bytes: state as f64,
                working_bytes: working as f64,
                ..MemoryPeak::default()
            },
            kept: 0.0,
        })
    }

    fn ptr(&self, i: usize) -> u64 {
        self.bufs[i].device_ptr(&self.stream).0
    }

    /// Row-major C[m,n] = A[m,k]·B[k,n] for `batch` problems, as column-major
    /// Cᵀ[n,m] = Bᵀ[n,k]·Aᵀ[k,m].
    fn gemm(&self, batch: u64, m: u64, n: u64, k: u64) -> Result<(), ExecError> {
        let (ty, compute) = match self.dtype {
            Dtype::Bf16 => (
                blas::cudaDataType::CUDA_R_16BF,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            // GemmEx has no FP8 (cuBLASLt does); `executable_plan` refuses such plans first.
            Dtype::Fp8 => {
                return Err(ExecError::Config(
                    "fp8 GEMMs need cuBLASLt, which the cuda backend does not use yet".into(),
                ));
            }
            Dtype::Fp16 => (
                blas::cudaDataType::CUDA_R_16F,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
            Dtype::Tf32 => (
                blas::cudaDataType::CUDA_R_32F,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            ),
            Dtype::Fp32 => (
                blas::cudaDataType::CUDA_R_32F,
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (mi, ni, ki) = (m as i32, n as i32, k as i32);
        // SAFETY: the scratch operands hold batch·m·k, batch·k·n and batch·m·n elements of
        // `elem` bytes (`Sizes`), on this handle's stream's device.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.blas.handle(),
                blas::cublasOperation_t::CUBLAS_OP_N,
                blas::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                (&alpha as *const f32).cast(),
                self.ptr(B) as *const _,
                ty,
                ni,
                (k * n) as i64,
                self.ptr(A) as *const _,
                ty,
                ki,
                (m * k) as i64,
                (&beta as *const f32).cast(),
                self.ptr(C) as *mut _,
                ty,
                ni,
                (m * n) as i64,
                batch as i32,
                compute,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT_TENSOR_OP,
            )
        }
        .map_err(|e| device_err(&format!("cublasGemmStridedBatchedEx {m}x{n}x{k}"), e))
    }

    /// A fused attention kernel as its block GEMMs (`run::attention_gemms`).
    fn attention(&self, k: &Kernel) -> Result<(), ExecError> {
        let Some((batch, visited, shapes)) = super::run::attention_gemms(k) else {
            return Ok(());
        };
        for _ in 0..visited {
            for &(m, n, kk) in &shapes {
                self.gemm(batch, m, n, kk)?;
            }
        }
        Ok(())
    }

    /// Copies `half` bytes device to device (the optimizer through the model state).
    fn copy(&self, half: usize, class: Class) -> Result<(), ExecError> {
        let (src, dst, len) = if class == Class::Optimizer {
            let st = &self.slots[&u64::MAX];
            let p = st.device_ptr(&self.stream).0;
            let n = st.len() / 2;
            (p, p + n as u64, n)
        } else {
            (self.ptr(SRC), self.ptr(DST), self.bufs[SRC].len())
        };
        let mut left = half;
        while left > 0 && len > 0 {
            let n = left.min(len);
            // SAFETY: both ranges hold ≥ n bytes on this stream's device and do not overlap.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(dst, src, n, self.stream.cu_stream())
            }
            .map_err(|e| device_err("cuMemcpyDtoDAsync", e))?;
            left -= n;
        }
        Ok(())
    }
}

impl Gpu<'_> {
    fn pp_comm(&self) -> Result<(sys::ncclComm_t, &[u64]), ExecError> {
        let rank = self.prog.rank;
        self.l
            .groups
            .iter()
            .enumerate()
            .find(|(_, g)| g.kind == GroupKind::Pp && g.members.contains(&rank))
            .and_then(|(i, g)| self.comms.get(&i).map(|c| (c.0, g.members.as_slice())))
            .ok_or_else(|| ExecError::Config("a pipeline transfer without a pipeline".into()))
    }

    /// Posts a send or receive of `bytes` to or from global rank `peer` (inside a group
    /// when paired).
    fn p2p(&self, send: bool, peer: u64, bytes: f64) -> Result<(), ExecError> {
        let (comm, members) = self.pp_comm()?;
        let pos = members.iter().position(|&r| r == peer).unwrap_or(0) as i32;
        let count = (bytes / 4.0).ceil() as usize;
        let f32t = sys::ncclDataType_t::ncclFloat32;
        let cu = self.stream.cu_stream() as sys::cudaStream_t;
        // SAFETY: the send and receive buffers hold the program's largest message.
        let r = unsafe {
            if send {
                nccl::send(self.ptr(SEND) as *const _, count, f32t, pos, comm, cu)
            } else {
                nccl::recv(self.ptr(RECV) as *mut _, count, f32t, pos, comm, cu)
            }
        };
        r.map(|_| ())
            .map_err(|e| nccl_err(if send { "ncclSend" } else { "ncclRecv" }, e))
    }

    fn coll(&self, coll: Coll, group: usize, bytes: f64) -> Result<(), ExecError> {
        let &(comm, pos) = self
            .comms
            .get(&group)
            .ok_or_else(|| ExecError::Config(format!("no communicator for group {group}")))?;
        let n = self.l.groups[group].members.len();
        let cu = self.stream.cu_stream() as sys::cudaStream_t;
        nccl::group_start().map_err(|e| nccl_err("ncclGroupStart", e))?;
        let bufs = (self.ptr(SEND), self.ptr(RECV));
        // SAFETY: both buffers hold ≥ `bytes` (rounded up to whole f32 chunks).
        let r = unsafe { issue(coll, comm, pos, n, bufs, bytes as usize, cu) };
        nccl::group_end().map_err(|e| nccl_err("ncclGroupEnd", e))?;
        r
    }

    /// Runs instruction `op` (with `next`, a receive posted together with a send).
    fn exec(&mut self, op: &Op, class: Class, next: Option<&Op>) -> Result<(), ExecError> {
        match op {
            Op::Gemm { batch, m, n, k } => self.gemm(*batch, *m, *n, *k)?,
            Op::Attention(k) => self.attention(k)?,
            Op::Memory { bytes } => self.copy((*bytes / 2.0) as usize, class)?,
            Op::Coll { coll, group, bytes } => self.coll(*coll, *group, *bytes)?,
            Op::Send { peer, bytes, .. } => {
                nccl::group_start().map_err(|e| nccl_err("ncclGroupStart", e))?;
                let r = self.p2p(true, *peer, *bytes).and_then(|_| match next {
                    Some(Op::Recv { peer, bytes, .. }) => self.p2p(false, *peer, *bytes),
                    _ => Ok(()),
                });
                nccl::group_end().map_err(|e| nccl_err("ncclGroupEnd", e))?;
                r?;
            }
            Op::Recv { peer, bytes, .. } => self.p2p(false, *peer, *bytes)?,
            Op::Keep { slot, bytes } => {
                // SAFETY: saved activations are only allocated, never read.
                let b = unsafe { self.stream.alloc::<u8>((*bytes as usize).max(1)) }
                    .map_err(|e| device_err("cuMemAlloc", e))?;
                self.slots.insert(*slot, b);
                self.kept += bytes;
                self.memory.activation_bytes = self.memory.activation_bytes.max(self.kept);
                if let Ok((free, total)) = self.ctx.mem_get_info() {
                    self.memory.total_bytes = self.memory.total_bytes.max((total - free) as f64);
                }
            }
            Op::Release { slot } => {
                if let Some(b) = self.slots.remove(slot) {
                    self.kept -= b.len() as f64;
                }
            }
        }
        Ok(())
    }
}

impl Gpu<'_> {
    /// One step, every instruction timed by the CUDA events around it.
    fn step(
        &mut self,
        events: &[CudaEvent],
        rec: &mut StepRecord,
        mut samples: Option<&mut HashMap<KernelKey, Vec<f64>>>,
    ) -> Result<(), ExecError> {
        let rec_err = |e| device_err("cuEventRecord", e);
        let instrs = &self.prog.instrs;
        events[0].record(&self.stream).map_err(rec_err)?;
        let mut i = 0;
        while i < instrs.len() {
            let next = instrs.get(i + 1).map(|x| &x.op);
            let paired =
                matches!(instrs[i].op, Op::Send { .. }) && matches!(next, Some(Op::Recv { .. }));
            self.exec(&instrs[i].op, instrs[i].class, next.filter(|_| paired))?;
            let span = if paired { 2 } else { 1 };
            for j in 1..=span {
                events[i + j].record(&self.stream).map_err(rec_err)?;
            }
            i += span;
        }
        self.stream
            .synchronize()
            .map_err(|e| device_err("cuStreamSynchronize", e))?;
        let groups = &self.l.groups;
        let per_node = self.ctx_devices();
        for (i, instr) in instrs.iter().enumerate() {
            let ms = events[i]
                .elapsed_ms(&events[i + 1])
                .map_err(|e| device_err("cuEventElapsedTime", e))?;
            let dt = f64::from(ms) * 1e-3;
            rec.add(instr, dt, 0.0);
            if let Some(s) = samples.as_deref_mut()
                && let Some(k) = KernelKey::of(&instr.op, |g| {
                    let m = &groups[g].members;
                    let nodes = |r: &u64| r / per_node;
                    (
                        m.len() as u64,
                        m.iter().map(nodes).min() != m.iter().map(nodes).max(),
                    )
                })
            {
                s.entry(k).or_default().push(dt);
            }
        }
        Ok(())
    }

    /// GPUs in this node, which ranks fill in order (for whether a group spans nodes).
    fn ctx_devices(&self) -> u64 {
        CudaContext::device_count().map_or(1, |n| n.max(1) as u64)
    }
}

impl Drop for Gpu<'_> {
    fn drop(&mut self) {
        for &(comm, _) in self.comms.values() {
            // SAFETY: each communicator is destroyed once, after its last use.
            let _ = unsafe { nccl::comm_destroy(comm) };
        }
    }
}

/// What every rank sends rank 0 at the end.
#[derive(Serialize, Deserialize)]
struct Wire {
    rank: u64,
    steps: Vec<StepRecord>,
    memory: MemoryPeak,
    samples: Vec<(KernelKey, Vec<f64>)>,
    wall: Vec<f64>,
}

/// Runs rank `rank` of `l` on local GPU `device` for `cfg.warmup + cfg.steps` steps, each
/// started together through the rendezvous; rank 0 returns every rank's measurements.
pub fn run(
    l: &Lowered,
    rank: u64,
    device: usize,
    dtype: Dtype,
    mut rdv: Option<Rendezvous>,
    cfg: RunConfig,
    progress: &mut dyn FnMut(super::Progress),
) -> Result<Option<RunResult>, ExecError> {
    let mut gpu = Gpu::open(l, rank, device, dtype, rdv.as_mut())?;
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    let events = (0..=gpu.prog.instrs.len())
        .map(|_| gpu.ctx.new_event(flags))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| device_err("cuEventCreate", e))?;
    let mut run = RankRun {
        rank,
        ..RankRun::default()
    };
    let mut wall = Vec::new();
    let total = u64::from(cfg.warmup + cfg.steps);
    for step in 0..total {
        if let Some(r) = rdv.as_mut() {
            r.barrier()?;
        }
        let t0 = Instant::now();
        let timed = step >= u64::from(cfg.warmup);
        let mut rec = StepRecord::default();
        gpu.step(&events, &mut rec, timed.then_some(&mut run.samples))?;
        rec.end_s = t0.elapsed().as_secs_f64();
        if timed {
            wall.push(rec.end_s);
            run.steps.push(rec);
        }
        progress(super::Progress {
            done: step + 1,
            total,
            what: format!("step {} of {total}", step + 1),
        });
    }
    if let Ok((free, total)) = gpu.ctx.mem_get_info() {
        gpu.memory.total_bytes = gpu.memory.total_bytes.max((total - free) as f64);
    }
    run.memory = gpu.memory;
    drop(gpu);
    gather(rdv.as_mut(), run, wall)
}

/// Every rank's measurements on rank 0 (`None` elsewhere).
fn gather(
    rdv: Option<&mut Rendezvous>,
    run: RankRun,
    wall: Vec<f64>,
) -> Result<Option<RunResult>, ExecError> {
    let Some(rdv) = rdv else {
        return Ok(Some(RunResult::from_ranks(vec![run], wall)));
    };
    let w = Wire {
        rank: run.rank,
        steps: run.steps,
        memory: run.memory,
        samples: run.samples.into_iter().collect(),
        wall,
    };
    let mine = serde_json::to_vec(&w).expect("measurements serialise");
    let all = rdv.all_gather(&mine)?;
    if rdv.rank != 0 {
        return Ok(None);
    }
    let mut ranks = Vec::new();
    let mut wall = Vec::new();
    for blob in all {
        let w: Wire = serde_json::from_slice(&blob)
            .map_err(|e| ExecError::Rendezvous(format!("a rank's measurements: {e}")))?;
        if wall.is_empty() {
            wall = w.wall.clone();
        }
        for (a, b) in wall.iter_mut().zip(&w.wall) {
            *a = f64::max(*a, *b);
        }
        ranks.push(RankRun {
            rank: w.rank,
            steps: w.steps,
            memory: w.memory,
            samples: w.samples.into_iter().collect(),
        });
    }
    ranks.sort_by_key(|r| r.rank);
    Ok(Some(RunResult::from_ranks(ranks, wall)))
}
