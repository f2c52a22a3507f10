//! What running a lowered plan measures, whatever the backend: per rank and step, the
//! seconds of each instruction class, the time spent waiting for pipeline neighbours, the
//! rank's end time, its peak memory, and per-kernel samples (for `--write-back`).

use super::lower::{Class, Instr, Op, Program};
use crate::graph::Coll;
use crate::graph::Kernel;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How many steps to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// Untimed steps first (allocation, caches, lazy initialisation).
    pub warmup: u32,
    /// Timed steps.
    pub steps: u32,
}

/// One rank in one timed step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Seconds by instruction class.
    pub class_s: BTreeMap<Class, f64>,
    /// Seconds spent waiting in pipeline receives for the sender.
    pub wait_s: f64,
    /// Seconds from the step's common start to this rank's last instruction.
    pub end_s: f64,
}

impl StepRecord {
    /// Seconds of `class`.
    pub fn get(&self, c: Class) -> f64 {
        self.class_s.get(&c).copied().unwrap_or(0.0)
    }

    /// Seconds the rank was busy (every class).
    pub fn busy_s(&self) -> f64 {
        self.class_s.values().sum()
    }

    /// Adds `s` seconds of `instr`'s class, of which `wait_s` were spent waiting.
    pub fn add(&mut self, instr: &Instr, s: f64, wait_s: f64) {
        *self.class_s.entry(instr.class).or_default() += s - wait_s;
        self.wait_s += wait_s;
    }
}

/// Peak memory of one rank, bytes, by holder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryPeak {
    /// Model state: weights, gradients, optimizer state.
    pub state_bytes: f64,
    /// Saved activations at the peak.
    pub activation_bytes: f64,
    /// Working buffers (GEMM operands, kernel and communication buffers).
    pub working_bytes: f64,
    /// All of it at the peak (cuda: the device's used memory, context and NCCL included).
    pub total_bytes: f64,
}

/// A kernel whose measured time can go back into a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum KernelKey {
    /// A single GEMM m×n×k.
    Gemm {
        /// Rows.
        m: u64,
        /// Columns.
        n: u64,
        /// Reduction.
        k: u64,
    },
    /// A collective of `bytes` on `ranks` ranks.
    Coll {
        /// Which.
        coll: Coll,
        /// Group size.
        ranks: u64,
        /// Whether the group spans nodes.
        inter: bool,
        /// Message size.
        bytes: u64,
    },
}

impl KernelKey {
    /// The key of an instruction, when it is one profiles hold; `group` gives a group's size
    /// and whether it spans nodes.
    pub fn of(op: &Op, group: impl Fn(usize) -> (u64, bool)) -> Option<KernelKey> {
        match *op {
            Op::Gemm { batch: 1, m, n, k } => Some(KernelKey::Gemm { m, n, k }),
            Op::Coll {
                coll,
                group: g,
                bytes,
            } => Some(KernelKey::Coll {
                coll,
                ranks: group(g).0,
                inter: group(g).1,
                bytes: bytes as u64,
            }),
            _ => None,
        }
    }
}

/// One rank's measurements.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RankRun {
    /// Global rank.
    pub rank: u64,
    /// One record per timed step.
    pub steps: Vec<StepRecord>,
    /// Peak memory over all steps.
    pub memory: MemoryPeak,
    /// Seconds of every timed run of each kernel with a profile key.
    #[serde(skip)]
    pub samples: HashMap<KernelKey, Vec<f64>>,
}

/// A lowered plan run on a backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunResult {
    /// Per rank.
    pub ranks: Vec<RankRun>,
    /// Seconds of each timed step, the device clock of the backend (cpu: device time; cuda:
    /// wall time between barriers).
    pub step_times_s: Vec<f64>,
    /// Wall-clock seconds of each timed step.
    pub wall_step_times_s: Vec<f64>,
}

impl RunResult {
    /// Step times as the latest rank end of every step.
    pub fn from_ranks(ranks: Vec<RankRun>, wall: Vec<f64>) -> RunResult {
        let steps = ranks.first().map_or(0, |r| r.steps.len());
        let step_times_s = (0..steps)
            .map(|s| ranks.iter().map(|r| r.steps[s].end_s).fold(0.0, f64::max))
            .collect();
        RunResult {
            ranks,
            step_times_s,
            wall_step_times_s: wall,
        }
    }

    /// Every rank's samples of each kernel, pooled.
    pub fn samples(&self) -> BTreeMap<KernelKey, Vec<f64>> {
        let mut out: BTreeMap<KernelKey, Vec<f64>> = BTreeMap::new();
        for r in &self.ranks {
            for (k, v) in &r.samples {
                out.entry(*k).or_default().extend(v);
            }
        }
        out
    }
}

/// Largest sizes a program's instructions need, in elements or bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sizes {
    /// Elements of the A operands.
    pub a: usize,
    /// Elements of the B operands.
    pub b: usize,
    /// Elements of the C results.
    pub c: usize,
    /// Bytes one memory-bound kernel copies (half its traffic), the optimizer's excepted.
    pub copy: usize,
    /// f32 elements of the largest message other than the gradient reduction's, with room to
    /// round it to whole chunks.
    pub comm: usize,
    /// f32 elements of the largest gradient-reduction (or ZeRO) collective, likewise.
    pub dp_comm: usize,
}

/// Block size of the attention kernel's GEMMs (FlashAttention-2's 128 rows, or the whole
/// sequence when shorter).
pub const BLOCK: u64 = 128;

/// (query block, key block, visited block pairs) of an attention kernel: all pairs, or with a
/// causal mask those on or below the diagonal (whole diagonal blocks, as FlashAttention-2
/// computes them) and, under a sliding `window` of keys, from the block holding the window's
/// first key (FlashAttention's `window_size` skips the blocks before it).
pub fn attention_blocks(s_q: u64, s_kv: u64, causal: bool, window: Option<u64>) -> (u64, u64, u64) {
    let (bq, bk) = (BLOCK.min(s_q), BLOCK.min(s_kv));
    let (nq, nk) = (s_q.div_ceil(bq), s_kv.div_ceil(bk));
    let visited = if causal {
        crate::graph::causal_blocks(nq, nk, bk, window)
    } else {
        nq * nk
    };
    (bq, bk, visited)
}

/// A GEMM's (m, n, k).
pub type GemmShape = (u64, u64, u64);

/// A fused attention kernel as its block GEMMs: per visited block pair and head, QKᵀ and P·V
/// forward; recomputed QKᵀ, dV, dP, dQ and dK backward (Dao 2023, Algorithms 1-2). Returns
/// (batch of heads, visited block pairs, the (m, n, k) shapes each pair runs); `None` for
/// any other kernel.
pub fn attention_gemms(k: &Kernel) -> Option<(u64, u64, Vec<GemmShape>)> {
    let Kernel::Attention {
        batch_heads,
        s_q,
        s_kv,
        head_dim: d,
        v_dim: v,
        causal,
        backward,
        window,
        ..
    } = *k
    else {
        return None;
    };
    let (bq, bk, visited) = attention_blocks(s_q, s_kv, causal, window);
    let shapes = if backward {
        vec![
            (bq, bk, d),
            (bk, v, bq),
            (bq, bk, v),
            (bq, d, bk),
            (bk, d, bq),
        ]
    } else {
        vec![(bq, bk, d), (bq, v, bk)]
    };
    Some((batch_heads, visited, shapes))
}

impl Sizes {
    /// The sizes `p` needs; GEMM operands for every problem of a batch side by side when
    /// `batched` (cuda), else for one (the cpu runs a batch's problems on the same operands).
    pub fn of(p: &Program, batched: bool) -> Sizes {
        let mut s = Sizes::default();
        let mut gemm = |batch: u64, m: u64, n: u64, k: u64| {
            let batch = if batched { batch } else { 1 };
            s.a = s.a.max((batch * m * k) as usize);
            s.b = s.b.max((batch * k * n) as usize);
            s.c = s.c.max((batch * m * n) as usize);
        };
        for i in &p.instrs {
            match i.op {
                Op::Gemm { batch, m, n, k } => gemm(batch, m, n, k),
                Op::Attention(Kernel::Attention {
                    batch_heads,
                    s_q,
                    s_kv,
                    head_dim,
                    v_dim,
                    ..
                }) => {
                    let (bq, bk, _) = attention_blocks(s_q, s_kv, false, None);
                    let side = bq.max(bk).max(head_dim).max(v_dim);
                    gemm(batch_heads, side, side, side);
                }
                _ => {}
            }
        }
        for i in &p.instrs {
            match i.op {
                Op::Memory { bytes } if i.class != Class::Optimizer => {
                    s.copy = s.copy.max((bytes / 2.0) as usize)
                }
                Op::Coll { bytes, .. } if i.class == Class::DpComm => {
                    s.dp_comm = s.dp_comm.max((bytes / 4.0).ceil() as usize + 64)
                }
                Op::Coll { bytes, .. } | Op::Send { bytes, .. } | Op::Recv { bytes, .. } => {
                    s.comm = s.comm.max((bytes / 4.0).ceil() as usize + 64)
                }
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// s = 1024 in blocks of 128 (8 × 8). Causal: query block i visits i + 1 key blocks, 36 in
    /// all. A 256-key window: block i's first query (128i) reaches back to key 128i − 255, in
    /// block i − 2, so blocks from 2 on visit 3 (i − 2 … i), block 0 one and block 1 two: 21.
    /// Unmasked: 64.
    #[test]
    fn a_window_visits_the_blocks_of_its_band() {
        assert_eq!(attention_blocks(1024, 1024, true, None), (128, 128, 36));
        assert_eq!(
            attention_blocks(1024, 1024, true, Some(256)),
            (128, 128, 21)
        );
        assert_eq!(attention_blocks(1024, 1024, false, None), (128, 128, 64));
    }
}
