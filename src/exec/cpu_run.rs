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
const ARENA_BYTES: usize = 64 << 20;

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

fn filled(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect()
}

/// Copies `bytes` from `src` to `dst`, wrapping around the buffers when they are shorter.
fn stream(src: &[u8], dst: &mut [u8], bytes: usize) {
    let len = src.len().min(dst.len());
    let mut left = bytes;
    while left > 0 && len > 0 {
        let n = left.min(len);
        dst[..n].copy_from_slice(&src[..n]);
        left -= n;
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
        let copy = if state.len() * 2 >= ARENA_BYTES {
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
    /// them (so a batched GEMM costs what `batch` of the profile's GEMMs cost; its heads'
    /// own operands would come colder from memory).
    fn gemm(&mut self, batch: u64, m: u64, n: u64, k: u64) {
        let (m, n, k) = (m as usize, n as usize, k as usize);
        for _ in 0..batch {
            let (a, b, c) = (&self.a, &self.b, &mut self.c);
            // SAFETY: a holds ≥ m·k, b ≥ k·n and c ≥ m·n f32s (the scratch is sized for the
            // program's largest shape), row-major with the strides given; c does not alias a
            // or b.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
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
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(
                self.state.as_mut_ptr().cast::<u8>(),
                4 * self.state.len(),
            )
        };
        let n = bytes.len() / 2;
        if class == Class::Optimizer || n >= half.max(ARENA_BYTES) {
            let (lo, hi) = bytes.split_at_mut(n);
            let at = if class == Class::Optimizer {
                0
            } else {
                self.offset % (n - half + 1)
            };
            stream(&lo[at..], &mut hi[at..], half);
            self.offset = self.offset.wrapping_add(half.next_multiple_of(4096));
        } else {
            stream(&self.src, &mut self.dst, half);
        }
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
    let outs: Vec<RankOut> = std::thread::scope(|s| {
        let handles: Vec<_> = cpu_comm::mesh(n)
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
