//! Runs a lowered plan on the cpu: one thread per rank standing for its device. GEMMs are real
//! f32 GEMMs of the shard's shapes (matrixmultiply, one core per rank), memory-bound kernels
//! stream their bytes through real buffers, collectives and pipeline transfers move real data
//! between the threads (`cpu_comm`), and each rank allocates its model state (touched) and its
//! saved activations (from forward to backward) at the plan's sizes. Time is device time
//! (`clock`): thread CPU time, carried across messages, so the step's critical path is
//! measured as if every rank had a core of its own.

use super::cpu_comm::{self, Call, Mailbox, PeerGone};
use super::lower::{Class, GroupDef, Lowered, Op, Program};
use super::run::{
    KernelKey, MemoryPeak, RankRun, RunConfig, RunResult, Sizes, StepRecord, attention_gemms,
};
use super::{ExecError, Progress};
use crate::graph::Kernel;
use std::collections::HashMap;
use std::sync::mpsc::{Sender, channel};
use std::time::Instant;

fn gone(e: PeerGone) -> ExecError {
    ExecError::Device {
        backend: "cpu",
        call: "receive".into(),
        message: format!("rank {} stopped before the step ended", e.0),
    }
}

/// Model state at least this large (per half) holds the memory-bound kernels' streams:
/// twice the host's last-level cache of a typical server core complex, so they run from
/// main memory.
pub(super) const ARENA_BYTES: usize = 64 << 20;

/// A rank's buffers and its place in the mesh.
struct Rank<'a> {
    mail: Mailbox,
    world: usize,
    prog: &'a Program,
    groups: &'a [GroupDef],
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    src: Vec<u8>,
    dst: Vec<u8>,
    comm: Vec<f32>,
    out: Vec<f32>,
    state: Vec<f32>,
    slots: HashMap<u64, Vec<u8>>,
    calls: HashMap<usize, u64>,
    kept: f64,
    offset: usize,
    memory: MemoryPeak,
}

/// `len` operand values, as the probes fill theirs (`cpu::fill`).
fn filled(len: usize) -> Vec<f32> {
    let mut v = Vec::new();
    super::cpu::fill(&mut v, len);
    v
}

/// Copies `bytes` from `src` to `dst` (the same positions of each), starting at `at` and
/// wrapping around to the start when the buffers are shorter; returns the bytes copied (all
/// of them unless the buffers are empty).
fn stream(src: &[u8], dst: &mut [u8], at: usize, bytes: usize) -> usize {
    let len = src.len().min(dst.len());
    if len == 0 {
        return 0;
    }
    let (mut at, mut left) = (at % len, bytes);
    while left > 0 {
        let n = left.min(len - at);
        dst[at..at + n].copy_from_slice(&src[at..at + n]);
        left -= n;
        at = 0;
    }
    bytes
}

/// Whether memory-bound kernels stream through the model state (`state_bytes` of it): when
/// each half is at least `ARENA_BYTES`; else through scratch buffers of the largest kernel's
/// size. `Rank::new` sizes the scratch by the same test.
fn streams_in_state(state_bytes: usize) -> bool {
    state_bytes / 2 >= ARENA_BYTES
}

/// A memory-bound kernel of `half` bytes each way on `state` (a rank's model state as bytes)
/// or on the scratch `src`/`dst`: the optimizer step from the state's start, other kernels at
/// `offset`, which moves on with every kernel, wrapping around the state's halves when the
/// kernel is larger. Returns the bytes copied: always `half`.
fn memory_kernel(
    state: &mut [u8],
    (src, dst): (&[u8], &mut [u8]),
    offset: &mut usize,
    half: usize,
    class: Class,
) -> usize {
    if class == Class::Optimizer || streams_in_state(state.len()) {
        let (lo, hi) = state.split_at_mut(state.len() / 2);
        let at = if class == Class::Optimizer {
            0
        } else {
            *offset
        };
        *offset = offset.wrapping_add(half.next_multiple_of(4096));
        stream(lo, hi, at, half)
    } else {
        stream(src, dst, 0, half)
    }
}

impl<'a> Rank<'a> {
    fn new(mail: Mailbox, world: usize, prog: &'a Program, groups: &'a [GroupDef]) -> Rank<'a> {
        let s = Sizes::of(prog, false);
        // The model state, touched; the gradient reduction runs in place on it when it is
        // large enough (it holds the gradients), else on a buffer of its own.
        let state = vec![1.0f32; (prog.state.total() / 4.0).ceil() as usize];
        let dp = if state.len() >= s.dp_comm {
            0
        } else {
            s.dp_comm
        };
        // Memory-bound kernels stream through the state when it exceeds the caches.
        let copy = if streams_in_state(4 * state.len()) {
            0
        } else {
            s.copy
        };
        let working = 4 * (s.a + s.b + s.c + 2 * s.comm + dp) + 2 * copy;
        Rank {
            mail,
            world,
            prog,
            groups,
            a: filled(s.a),
            b: filled(s.b),
            c: vec![0.0; s.c],
            src: vec![1u8; copy],
            dst: vec![0u8; copy],
            comm: filled(s.comm.max(dp)),
            out: vec![0.0; s.comm],
            memory: MemoryPeak {
                state_bytes: 4.0 * state.len() as f64,
                working_bytes: working as f64,
                ..MemoryPeak::default()
            },
            state,
            slots: HashMap::new(),
            calls: HashMap::new(),
            kept: 0.0,
            offset: 0,
        }
    }

    /// C = A·B for `batch` problems, each on the rank's scratch operands, as the probes run
    /// them (`cpu::sgemm`, so a batched GEMM costs what `batch` of the profile's GEMMs cost;
    /// its heads' own operands would come colder from memory). The scratch is sized for the
    /// program's largest shape (`Sizes`).
    fn gemm(&mut self, batch: u64, m: u64, n: u64, k: u64) {
        let shape = (m as usize, n as usize, k as usize);
        for _ in 0..batch {
            super::cpu::sgemm(&self.a, &self.b, &mut self.c, shape);
        }
    }

    /// A fused attention kernel as its block GEMMs (`run::attention_gemms`).
    fn attention(&mut self, k: &Kernel) {
        let Some((batch, visited, shapes)) = attention_gemms(k) else {
            return;
        };
        for _ in 0..visited {
            for &(m, n, kk) in &shapes {
                self.gemm(batch, m, n, kk);
            }
        }
    }

    /// A memory-bound kernel: copies `half` bytes. The optimizer step streams through the
    /// model state; other kernels through the rank's memory at an offset that moves on with
    /// every kernel, so (like activations in a GPU's HBM) their bytes come from main memory
    /// rather than from a cache the previous kernel warmed.
    fn memory_kernel(&mut self, half: usize, class: Class) {
        // SAFETY: any bytes of f32s are valid u8s; the view borrows the state mutably.
        let state = unsafe {
            std::slice::from_raw_parts_mut(
                self.state.as_mut_ptr().cast::<u8>(),
                4 * self.state.len(),
            )
        };
        let scratch = (self.src.as_slice(), self.dst.as_mut_slice());
        memory_kernel(state, scratch, &mut self.offset, half, class);
    }

    /// Runs one instruction; returns the device seconds spent waiting for a sender.
    fn exec(&mut self, op: &Op, class: Class) -> Result<f64, ExecError> {
        match op {
            Op::Gemm { batch, m, n, k } => self.gemm(*batch, *m, *n, *k),
            Op::Attention(k) => self.attention(k),
            Op::Memory { bytes } => self.memory_kernel((*bytes / 2.0) as usize, class),
            Op::Coll { coll, group, bytes } => {
                let members: Vec<usize> = self.groups[*group]
                    .members
                    .iter()
                    .map(|&r| r as usize)
                    .collect();
                let n = members.len();
                let len = ((*bytes / 4.0 / n as f64).ceil() as usize).max(1) * n;
                let seq = self.calls.entry(*group).or_default();
                let call = Call {
                    members: &members,
                    stream: *group as u64 + 1,
                    seq: *seq,
                };
                *seq += 1;
                let in_state = class == Class::DpComm && self.state.len() >= len;
                let olen = len.min(self.out.len());
                let (buf, out) = if in_state {
                    (&mut self.state[..len], &mut self.out[..0])
                } else {
                    (&mut self.comm[..len], &mut self.out[..olen])
                };
                return cpu_comm::collective(&mut self.mail, *coll, &call, buf, out).map_err(gone);
            }
            Op::Send { peer, bytes, tag } => {
                let len = (*bytes / 4.0).ceil() as usize;
                let data = &self.comm[..len];
                self.mail
                    .send(*peer as usize, (0, *tag), data)
                    .map_err(gone)?;
            }
            Op::Recv { peer, bytes, tag } => {
                let out = &mut self.out[..(*bytes / 4.0).ceil() as usize];
                let f = |m: &[f32]| out.copy_from_slice(m);
                return self.mail.recv(*peer as usize, (0, *tag), f).map_err(gone);
            }
            Op::Keep { slot, bytes } => {
                self.slots.insert(*slot, vec![0u8; *bytes as usize]);
                self.kept += bytes;
                self.memory.activation_bytes = self.memory.activation_bytes.max(self.kept);
            }
            Op::Release { slot } => {
                if let Some(v) = self.slots.remove(slot) {
                    self.kept -= v.len() as f64;
                }
            }
        }
        Ok(0.0)
    }

    /// A barrier through rank 0 that also aligns device clocks: every rank's clock ends at
    /// the latest clock of all (Lamport).
    fn barrier(&mut self, step: u64) -> Result<(), ExecError> {
        let n = self.world;
        let tag = (u64::MAX, step);
        if self.mail.rank == 0 {
            for r in 1..n {
                self.mail.recv(r, tag, |_| {}).map_err(gone)?;
            }
            for r in 1..n {
                self.mail.send(r, tag, &[]).map_err(gone)?;
            }
        } else {
            self.mail.send(0, tag, &[]).map_err(gone)?;
            self.mail.recv(0, tag, |_| {}).map_err(gone)?;
        }
        Ok(())
    }

    /// One step of the program, recorded in `rec` (and each kernel's time in `samples`).
    fn step(
        &mut self,
        rec: &mut StepRecord,
        mut samples: Option<&mut HashMap<KernelKey, Vec<f64>>>,
    ) -> Result<(), ExecError> {
        let prog = self.prog;
        let start = self.mail.clock.now();
        for i in &prog.instrs {
            let t0 = self.mail.clock.now();
            let wait = self.exec(&i.op, i.class)?;
            let dt = self.mail.clock.now() - t0;
            rec.add(i, dt, wait);
            if let Some(s) = samples.as_deref_mut()
                && let Some(k) =
                    KernelKey::of(&i.op, |g| (self.groups[g].members.len() as u64, false))
            {
                s.entry(k).or_default().push(dt);
            }
        }
        rec.end_s = self.mail.clock.now() - start;
        Ok(())
    }
}

/// What one rank thread returns: its measurements and the wall seconds of each timed step.
type RankOut = Result<(RankRun, Vec<f64>), ExecError>;

fn rank_main(
    mut mail: Mailbox,
    world: usize,
    prog: &Program,
    groups: &[GroupDef],
    cfg: RunConfig,
    tx: Sender<Progress>,
) -> RankOut {
    mail.start_clock(0.0);
    let mut r = Rank::new(mail, world, prog, groups);
    let mut run = RankRun {
        rank: prog.rank,
        ..RankRun::default()
    };
    let mut wall = Vec::new();
    let total = u64::from(cfg.warmup + cfg.steps);
    for step in 0..total {
        r.barrier(step)?;
        let w0 = Instant::now();
        let timed = step >= u64::from(cfg.warmup);
        let mut rec = StepRecord::default();
        r.step(&mut rec, timed.then_some(&mut run.samples))?;
        if timed {
            run.steps.push(rec);
            wall.push(w0.elapsed().as_secs_f64());
        }
        if prog.rank == 0 {
            let what = if timed { "step" } else { "warm-up step" };
            let _ = tx.send(Progress {
                done: step + 1,
                total,
                what: format!("{what} {} of {total}", step + 1),
            });
        }
    }
    r.memory.total_bytes =
        r.memory.state_bytes + r.memory.working_bytes + r.memory.activation_bytes;
    run.memory = r.memory;
    Ok((run, wall))
}

/// Runs every program of `l` on its own thread for `cfg.warmup + cfg.steps` steps.
pub fn run(
    l: &Lowered,
    cfg: RunConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunResult, ExecError> {
    let n = l.programs.len();
    let (tx, rx) = channel();
    // Every rank computes all the time, as the probes timed it, where each has a core.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let outs: Vec<RankOut> = std::thread::scope(|s| {
        let handles: Vec<_> = cpu_comm::mesh(n, n <= cores)
            .into_iter()
            .zip(&l.programs)
            .map(|(mail, prog)| {
                let tx = tx.clone();
                let groups = &l.groups;
                s.spawn(move || rank_main(mail, n, prog, groups, cfg, tx))
            })
            .collect();
        drop(tx);
        for p in rx {
            progress(p);
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ExecError::Device {
                        backend: "cpu",
                        call: "rank thread".into(),
                        message: "panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut ranks = Vec::with_capacity(n);
    let mut wall = vec![0.0f64; cfg.steps as usize];
    for o in outs {
        let (r, w) = o?;
        for (a, b) in wall.iter_mut().zip(w) {
            *a = a.max(b);
        }
        ranks.push(r);
    }
    Ok(RunResult::from_ranks(ranks, wall))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_wraps_from_its_offset() {
        let src: Vec<u8> = (0..10).collect();
        let mut dst = vec![0u8; 10];
        assert_eq!(stream(&src, &mut dst, 7, 5), 5);
        assert_eq!(dst, [0, 1, 0, 0, 0, 0, 0, 7, 8, 9]);
        assert_eq!(stream(&[], &mut [], 3, 5), 0);
    }

    /// A kernel larger than the arena, on a state large enough to hold the streams (so the
    /// rank has no scratch buffers): it still copies all its bytes, wrapping around the state
    /// (it used to fall through to the empty scratch and copy nothing, measuring ~0 s).
    #[test]
    fn a_memory_kernel_larger_than_the_state_moves_all_its_bytes() {
        let n = ARENA_BYTES; // each half of the state
        assert!(streams_in_state(2 * n) && !streams_in_state(2 * n - 2));
        let mut state = vec![0u8; 2 * n];
        let pattern: Vec<u8> = (1..=251).collect();
        for c in state[..n].chunks_mut(251) {
            c.copy_from_slice(&pattern[..c.len()]);
        }
        let half = n + n / 2;
        let mut offset = 4096 * 3;
        let moved = memory_kernel(&mut state, (&[], &mut []), &mut offset, half, Class::Memory);
        assert_eq!(moved, half);
        assert_eq!(offset, 4096 * 3 + half.next_multiple_of(4096));
        // Every byte of the upper half was written (wrapped past its end), each with the
        // matching byte of the lower half.
        assert!(state[n..].iter().all(|&b| b != 0));
        assert_eq!(state[..n], state[n..]);

        // The optimizer starts at the state's start; a small state streams through it too.
        let mut small = vec![7u8; 64];
        small[32..].fill(0);
        let moved = memory_kernel(&mut small, (&[], &mut []), &mut 0, 40, Class::Optimizer);
        assert_eq!(moved, 40);
        assert!(small[32..].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_small_state_streams_through_the_scratch() {
        let mut state = vec![0u8; 64];
        let (src, mut dst) = (vec![5u8; 16], vec![0u8; 16]);
        let moved = memory_kernel(&mut state, (&src, &mut dst), &mut 0, 40, Class::Memory);
        assert_eq!(moved, 40);
        assert_eq!(dst, src);
        assert!(state.iter().all(|&b| b == 0));
    }
}
