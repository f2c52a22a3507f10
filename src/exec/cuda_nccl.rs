//! NCCL collectives for the cuda backend: one thread drives every local GPU (communicators
//! created with ncclCommInitRank inside one ncclGroupStart/End, NCCL's "multiple devices per
//! thread" pattern), one communicator per probed group, float32 buffers reused across sizes.
//! Across nodes the unique id travels through the TCP rendezvous, and every node issues the
//! same calls in the same order.

use super::ExecError;
use super::cuda::device_err;
use super::rendezvous::Rendezvous;
use crate::calib::Span;
use crate::graph::Coll;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use cudarc::nccl::{result as nccl, sys};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::Instant;

/// One communicator per local member GPU of a group, with the group's global ranks.
struct Group {
    comms: Vec<(usize, sys::ncclComm_t, usize)>,
    ranks: usize,
}

/// Local GPUs, their streams and buffers, and the communicators made so far.
pub struct Nccl {
    ctxs: Vec<Arc<CudaContext>>,
    streams: Vec<Arc<CudaStream>>,
    bufs: Vec<(CudaSlice<u8>, CudaSlice<u8>)>,
    groups: HashMap<(u64, Span), Option<Group>>,
    rdv: Option<Rendezvous>,
}

/// An NCCL call's failure (also `cuda_run`'s).
pub(super) fn nccl_err(call: &str, e: nccl::NcclError) -> ExecError {
    device_err(call, e)
}

impl Nccl {
    /// Opens `devices` local GPUs with send and receive buffers of `max_bytes` each.
    pub fn open(
        devices: usize,
        max_bytes: f64,
        rdv: Option<Rendezvous>,
    ) -> Result<Nccl, ExecError> {
        let mut n = Nccl {
            ctxs: Vec::new(),
            streams: Vec::new(),
            bufs: Vec::new(),
            groups: HashMap::new(),
            rdv,
        };
        for d in 0..devices {
            let ctx =
                CudaContext::new(d).map_err(|e| device_err(&format!("cuCtxCreate({d})"), e))?;
            // SAFETY: each buffer is only used on its own device's stream.
            unsafe { ctx.disable_event_tracking() };
            let stream = ctx
                .new_stream()
                .map_err(|e| device_err("cuStreamCreate", e))?;
            let alloc = || {
                stream
                    .alloc_zeros::<u8>(max_bytes as usize)
                    .map_err(|e| device_err("cuMemAlloc", e))
            };
            n.bufs.push((alloc()?, alloc()?));
            n.ctxs.push(ctx);
            n.streams.push(stream);
        }
        if let Some(r) = n.rdv.as_mut() {
            let counts = r.all_gather(&(devices as u64).to_le_bytes())?;
            if counts
                .iter()
                .any(|c| c.as_slice() != (devices as u64).to_le_bytes())
            {
                return Err(ExecError::Rendezvous(
                    "every node must probe the same number of GPUs (--devices)".into(),
                ));
            }
        }
        Ok(n)
    }

    /// (nodes in the job, this node).
    pub fn nodes(&self) -> (u64, u64) {
        self.rdv.as_ref().map_or((1, 0), |r| (r.world, r.rank))
    }

    /// The communicators of a group of `ranks`: the first `ranks` local GPUs (intra), or every
    /// local GPU of the first `ranks / devices` nodes (inter). `None` when this node is not in
    /// it. Making an inter-node group is collective over all nodes.
    fn group(&mut self, ranks: u64, span: Span) -> Result<Option<&Group>, ExecError> {
        if !self.groups.contains_key(&(ranks, span)) {
            let local = self.ctxs.len() as u64;
            let (_, node) = self.nodes();
            let id = match (span, self.rdv.as_mut()) {
                (Span::Inter, Some(r)) => {
                    let mine = if node == 0 {
                        Some(nccl::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?)
                    } else {
                        None
                    };
                    let bytes =
                        mine.map(|id| id.internal.iter().map(|&c| c as u8).collect::<Vec<u8>>());
                    let got = r.broadcast(bytes.as_deref())?;
                    let mut internal = [0 as std::ffi::c_char; 128];
                    for (d, s) in internal.iter_mut().zip(&got) {
                        *d = *s as std::ffi::c_char;
                    }
                    sys::ncclUniqueId { internal }
                }
                _ => nccl::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?,
            };
            let members: Vec<(usize, usize)> = match span {
                Span::Intra if node == 0 => {
                    (0..ranks.min(local) as usize).map(|d| (d, d)).collect()
                }
                Span::Inter if node < ranks / local => (0..local as usize)
                    .map(|d| (d, (node * local) as usize + d))
                    .collect(),
                _ => Vec::new(),
            };
            let g = if members.is_empty() {
                None
            } else {
                Some(self.init(&members, ranks as usize, id)?)
            };
            self.groups.insert((ranks, span), g);
        }
        Ok(self.groups[&(ranks, span)].as_ref())
    }

    fn init(
        &self,
        members: &[(usize, usize)],
        ranks: usize,
        id: sys::ncclUniqueId,
    ) -> Result<Group, ExecError> {
        let mut comms = Vec::new();
        nccl::group_start().map_err(|e| nccl_err("ncclGroupStart", e))?;
        for &(dev, rank) in members {
            self.ctxs[dev]
                .bind_to_thread()
                .map_err(|e| device_err("cuCtxSetCurrent", e))?;
            let mut comm: sys::ncclComm_t = std::ptr::null_mut();
            // SAFETY: `comm` is written by NCCL; the id is shared by all ranks of the group.
            unsafe { nccl::comm_init_rank(&mut comm, ranks as i32, id, rank as i32) }
                .map_err(|e| nccl_err("ncclCommInitRank", e))?;
            comms.push((dev, comm, rank));
        }
        nccl::group_end().map_err(|e| nccl_err("ncclGroupEnd", e))?;
        Ok(Group { comms, ranks })
    }

    /// Wall seconds for `iters` collectives of `bytes` on the group, all member streams
    /// synchronised before and after (nccl-tests' timing). NaN when this node is not in it.
    pub fn run(
        &mut self,
        coll: Coll,
        ranks: u64,
        span: Span,
        bytes: f64,
        iters: u32,
    ) -> Result<f64, ExecError> {
        let ptrs: Vec<(u64, u64)> = (0..self.bufs.len())
            .map(|d| {
                let (s, r) = &mut self.bufs[d];
                (
                    s.device_ptr(&self.streams[d]).0,
                    r.device_ptr_mut(&self.streams[d]).0,
                )
            })
            .collect();
        let streams = self.streams.clone();
        let Some(g) = self.group(ranks, span)? else {
            return Ok(f64::NAN);
        };
        let sync = || -> Result<(), ExecError> {
            for &(d, _, _) in &g.comms {
                streams[d]
                    .synchronize()
                    .map_err(|e| device_err("cuStreamSynchronize", e))?;
            }
            Ok(())
        };
        sync()?;
        let t0 = Instant::now();
        for _ in 0..iters {
            nccl::group_start().map_err(|e| nccl_err("ncclGroupStart", e))?;
            for &(d, comm, rank) in &g.comms {
                let cu = streams[d].cu_stream() as sys::cudaStream_t;
                // SAFETY: send and receive buffers hold max_bytes ≥ bytes on device d.
                unsafe { issue(coll, comm, rank, g.ranks, ptrs[d], bytes as usize, cu) }?;
            }
            nccl::group_end().map_err(|e| nccl_err("ncclGroupEnd", e))?;
        }
        sync()?;
        Ok(t0.elapsed().as_secs_f64())
    }
}

/// Enqueues one collective of message size `bytes` (float32) for `rank` of `n`, with NCCL's
/// size conventions: all-gather's `bytes` is the gathered result, reduce-scatter's the input,
/// all-to-all's what each rank sends in all (a 1/n chunk per peer, by grouped send/receive as
/// nccl-tests' alltoall_perf), sendrecv a ring shift.
///
/// # Safety
/// `send` and `recv` must point to ≥ `bytes` bytes on the communicator's device.
pub(super) unsafe fn issue(
    coll: Coll,
    comm: sys::ncclComm_t,
    rank: usize,
    n: usize,
    (send, recv): (u64, u64),
    bytes: usize,
    stream: sys::cudaStream_t,
) -> Result<(), ExecError> {
    let f32t = sys::ncclDataType_t::ncclFloat32;
    let sum = sys::ncclRedOp_t::ncclSum;
    let count = bytes / 4;
    let (s, r) = (send as *const c_void, recv as *mut c_void);
    let res = unsafe {
        match coll {
            Coll::AllReduce => nccl::all_reduce(s, r, count, f32t, sum, comm, stream).map(|_| ()),
            Coll::AllGather => nccl::all_gather(s, r, count / n, f32t, comm, stream).map(|_| ()),
            Coll::ReduceScatter => {
                nccl::reduce_scatter(s, r, count / n, f32t, sum, comm, stream).map(|_| ())
            }
            Coll::AllToAll => {
                let chunk = count / n;
                let mut out = Ok(());
                for peer in 0..n {
                    let off = (peer * chunk * 4) as u64;
                    out = out
                        .and_then(|_| {
                            nccl::send(
                                (send + off) as *const c_void,
                                chunk,
                                f32t,
                                peer as i32,
                                comm,
                                stream,
                            )
                            .map(|_| ())
                        })
                        .and_then(|_| {
                            nccl::recv(
                                (recv + off) as *mut c_void,
                                chunk,
                                f32t,
                                peer as i32,
                                comm,
                                stream,
                            )
                            .map(|_| ())
                        });
                }
                out
            }
            Coll::SendRecv => nccl::send(s, count, f32t, ((rank + 1) % n) as i32, comm, stream)
                .and_then(|_| nccl::recv(r, count, f32t, ((rank + n - 1) % n) as i32, comm, stream))
                .map(|_| ()),
        }
    };
    res.map_err(|e| nccl_err(coll.name(), e))
}

impl Drop for Nccl {
    fn drop(&mut self) {
        for g in self.groups.values().flatten() {
            for &(_, comm, _) in &g.comms {
                // SAFETY: each communicator is destroyed once, after its last use.
                let _ = unsafe { nccl::comm_destroy(comm) };
            }
        }
    }
}
