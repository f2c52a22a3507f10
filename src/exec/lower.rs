//! Lowers a plan into one program per rank (DESIGN.md §7): the graph's kernels for that rank's
//! shard (GEMMs, attention, memory-bound kernels by their bytes, TP/CP/EP collectives on the
//! rank's own groups), the pipeline sends and receives, recomputation, ZeRO-3 gathers, the
//! data-parallel gradient reduction and the optimizer step, in the order the plan's schedule
//! runs its passes (`sim::schedule::order`, Megatron's GPipe / 1F1B / interleaved order).
//! Every instruction carries the cost model's price for it. Pure: a program is a value, and
//! backends (cpu threads, cuda processes) only interpret it.

use crate::cost::dp::{self, StepReduce};
use crate::cost::memory::{
    layer_activation_bytes, mtp_activation_bytes, plan_state_bytes, whole_state_bytes,
};
use crate::cost::stages::{chunk_layers, chunk_params};
use crate::cost::{
    Machine, Placement, PricedGraphs, StageLayout, p2p_bytes, stage_layouts, step_memory_bytes,
};
use crate::graph::{Coll, Group, Kernel, Op as GraphOp, OpGraph, Shard};

mod groups;
use crate::sim::schedule::{Pass, order};
use crate::spec::{ModelSpec, Plan, Recompute};
pub use groups::{Coords, GroupDef, GroupKind};
use groups::{group_kind, make_groups};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What an instruction's time counts as in the report (`Estimate::breakdown`'s classes, with
/// compute split into GEMMs and memory-bound kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// GEMMs and attention, forward and backward.
    Gemm,
    /// Memory-bound kernels, forward and backward.
    Memory,
    /// GEMMs and memory-bound kernels run again by recomputation.
    Recompute,
    /// Tensor-parallel collectives.
    TpComm,
    /// Pipeline sends and receives.
    PpComm,
    /// Gradient reduction, ZeRO-3 gathers, the tied-embedding reduction.
    DpComm,
    /// Context- and expert-parallel communication.
    OtherComm,
    /// The optimizer step.
    Optimizer,
    /// Allocating or freeing saved activations (no time of its own).
    Bookkeeping,
}

/// One instruction of a rank's program.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Op {
    /// `batch` GEMMs C[m,n] = A[m,k]·B[k,n].
    Gemm {
        /// Independent problems.
        batch: u64,
        /// Rows of C.
        m: u64,
        /// Columns of C.
        n: u64,
        /// Reduction dimension.
        k: u64,
    },
    /// A fused attention kernel (`Kernel::Attention`), run as the block GEMMs it is made of.
    Attention(Kernel),
    /// A memory-bound kernel moving `bytes` (read plus write).
    Memory {
        /// Bytes read plus bytes written.
        bytes: f64,
    },
    /// A collective with message size `bytes` on communicator `group`.
    Coll {
        /// Which collective.
        coll: Coll,
        /// Index into [`Lowered::groups`].
        group: usize,
        /// NCCL's message size.
        bytes: f64,
    },
    /// Send `bytes` to global rank `peer`.
    Send {
        /// Receiver.
        peer: u64,
        /// Bytes.
        bytes: f64,
        /// Matches the receive.
        tag: u64,
    },
    /// Receive `bytes` from global rank `peer`.
    Recv {
        /// Sender.
        peer: u64,
        /// Bytes.
        bytes: f64,
        /// Matches the send.
        tag: u64,
    },
    /// Keep `bytes` of activations of (chunk, micro-batch) `slot` until its backward.
    Keep {
        /// Chunk · n_micro + micro-batch.
        slot: u64,
        /// Bytes saved.
        bytes: f64,
    },
    /// Free the activations of `slot`.
    Release {
        /// Slot.
        slot: u64,
    },
}

/// An instruction with its report class and the cost model's price for it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Instr {
    /// What to run.
    pub op: Op,
    /// What its time counts as.
    pub class: Class,
    /// Predicted seconds (`Machine::kernel_s`, `Machine::collective_s`, `Machine::memory_s`).
    pub predicted_s: f64,
}

/// Bytes of model state a rank holds (the plan's data types and ZeRO sharding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StateBytes {
    /// Weights.
    pub weights: f64,
    /// Gradients.
    pub grads: f64,
    /// Optimizer state.
    pub optimizer: f64,
}

impl StateBytes {
    /// All of it.
    pub fn total(&self) -> f64 {
        self.weights + self.grads + self.optimizer
    }
}

/// One rank's program for one training step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Program {
    /// Global rank.
    pub rank: u64,
    /// Its coordinates.
    pub coords: Coords,
    /// Model state it holds.
    pub state: StateBytes,
    /// Instructions in order.
    pub instrs: Vec<Instr>,
}

impl Program {
    /// Predicted seconds of the instructions of `class`.
    pub fn predicted(&self, class: Class) -> f64 {
        self.instrs
            .iter()
            .filter(|i| i.class == class)
            .map(|i| i.predicted_s)
            .sum()
    }
}

/// A plan lowered: its communicators and every rank's program.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lowered {
    /// Communicators with at least two ranks, in a fixed order (every process creates them in
    /// this order).
    pub groups: Vec<GroupDef>,
    /// One program per global rank.
    pub programs: Vec<Program>,
}

/// What every rank's lowering shares.
struct Ctx<'a> {
    model: &'a ModelSpec,
    plan: &'a Plan,
    m: &'a Machine<'a>,
    pg: &'a PricedGraphs,
    place: Placement,
    sh: Shard,
    layouts: Vec<StageLayout>,
    groups: HashMap<(GroupKind, u64), usize>,
    p2p_bytes: f64,
    /// One send (or one receive): half the price of a send/receive pair.
    p2p_half_s: f64,
}

/// Message tag of a pipeline transfer: direction, receiving virtual stage, micro-batch.
fn p2p_tag(backward: bool, vs: u64, mb: u64) -> u64 {
    u64::from(backward) << 62 | vs << 32 | mb
}

impl Ctx<'_> {
    fn instr(op: Op, class: Class, predicted_s: f64) -> Instr {
        Instr {
            op,
            class,
            predicted_s,
        }
    }

    /// A graph kernel on `rank`; `None` for a collective on a group of one.
    fn kernel(&self, rank: u64, op: &GraphOp, k: &Kernel, recompute: bool) -> Option<Instr> {
        let t = self
            .m
            .kernel_s(op.kernel_dtype(self.plan.dtype, k), k, &self.place)
            .0;
        let compute = |c| if recompute { Class::Recompute } else { c };
        Some(match *k {
            Kernel::Gemm { batch, m, n, k } => {
                Self::instr(Op::Gemm { batch, m, n, k }, compute(Class::Gemm), t)
            }
            Kernel::Attention { .. } => {
                Self::instr(Op::Attention(k.clone()), compute(Class::Gemm), t)
            }
            Kernel::Memory { bytes, .. } => {
                Self::instr(Op::Memory { bytes }, compute(Class::Memory), t)
            }
            Kernel::Comm {
                coll, group, bytes, ..
            } => {
                let id = *self.groups.get(&(group_kind(group), rank))?;
                let class = match group {
                    Group::Tp => Class::TpComm,
                    Group::Cp | Group::Ep => Class::OtherComm,
                    Group::Dp => Class::DpComm,
                    Group::Pp => Class::PpComm,
                };
                Self::instr(
                    Op::Coll {
                        coll,
                        group: id,
                        bytes,
                    },
                    class,
                    t,
                )
            }
        })
    }

    /// A collective outside the graphs (gradient reduction, ZeRO-3), priced on `shape`.
    fn coll(&self, rank: u64, kind: GroupKind, coll: Coll, bytes: f64) -> Option<Instr> {
        let id = *self.groups.get(&(kind, rank))?;
        let shape = match kind {
            GroupKind::ExpertDp => self.place.edp,
            GroupKind::Tied => Placement::tied_pair(self.plan, self.m.cluster.gpus_per_node),
            _ => self.place.dp,
        };
        let t = self.m.collective_s(coll, shape, bytes).0;
        let op = Op::Coll {
            coll,
            group: id,
            bytes,
        };
        Some(Self::instr(op, Class::DpComm, t))
    }

    /// The graphs of chunk `c` of stage `st` in forward order, each layer (and multi-token
    /// prediction depth) with its recomputation (`None` for the embedding and the head).
    fn chunk_graphs(&self, st: &StageLayout, c: u64) -> Vec<(&OpGraph, Option<Recompute>)> {
        let g = &self.pg.graphs;
        let mut out = Vec::new();
        if st.embedding && c == 0 {
            out.push((&g.embedding, None));
        }
        for &(i, rc) in chunk_layers(st, self.plan, c) {
            out.push((g.layer(self.model, i), Some(rc)));
        }
        if st.head && c == self.plan.vpp - 1 {
            if let Some(mtp) = &g.mtp {
                let rc = crate::cost::stages::mtp_recompute(self.plan);
                out.extend((0..self.model.mtp_layers).map(|_| (mtp, Some(rc))));
            }
            out.push((&g.head, None));
        }
        out
    }

    /// Activation bytes one micro-batch leaves saved in chunk `c` (as `cost::stages` counts
    /// them).
    fn saved_bytes(&self, st: &StageLayout, c: u64) -> f64 {
        let mtp = self.pg.graphs.mtp.as_ref();
        self.chunk_graphs(st, c)
            .iter()
            .map(|(g, rc)| match rc {
                Some(rc) if mtp.is_some_and(|m| std::ptr::eq(*g, m)) => {
                    mtp_activation_bytes(g, self.model, &self.sh, *rc)
                }
                Some(rc) => layer_activation_bytes(g, self.model, &self.sh, *rc),
                None => g.saved_bytes(),
            })
            .sum()
    }

    /// Global rank of stage `pp` in `rank`'s pipeline.
    fn stage_rank(&self, rank: u64, pp: u64) -> u64 {
        Coords {
            pp,
            ..Coords::of(self.plan, rank)
        }
        .rank(self.plan)
    }

    /// The chunk's per-micro-batch ZeRO collective `coll` around a forward (`fwd`) or a
    /// backward, as [`dp::schedule`] runs it: its dense weights over the data-parallel group
    /// and its experts over theirs, gathered before the passes that gather, gradients
    /// reduce-scattered after every backward.
    fn zero_micro(&self, rank: u64, st: &StageLayout, c: u64, coll: Coll, fwd: bool) -> Vec<Instr> {
        let s = dp::schedule(self.plan);
        let on = match coll {
            Coll::AllGather if fwd => s.gather_fwd,
            Coll::AllGather => s.gather_bwd,
            _ => s.reduce_per_micro,
        };
        if !on {
            return Vec::new();
        }
        let (dense, experts) = chunk_params(self.model, self.plan, self.pg, st, c);
        let per = match coll {
            Coll::AllGather => self.plan.dtype.bytes(),
            _ => self.plan.grad_reduce_bytes(),
        };
        [(dense, GroupKind::Dp), (experts, GroupKind::ExpertDp)]
            .into_iter()
            .filter(|&(p, _)| p > 0.0)
            .filter_map(|(p, kind)| self.coll(rank, kind, coll, p * per))
            .collect()
    }
}

impl Ctx<'_> {
    /// Forward of micro-batch `mb` through chunk `c`: receive the input (from the previous
    /// virtual stage), run the kernels, keep the saved activations, send the output.
    fn forward(&self, rank: u64, st: &StageLayout, c: u64, mb: u64, out: &mut Vec<Instr>) {
        let (pp, stage) = (self.plan.pp, st.stage);
        let vs = c * pp + stage;
        let last = pp * self.plan.vpp - 1;
        let (bytes, half) = (self.p2p_bytes, self.p2p_half_s);
        if vs > 0 {
            let peer = self.stage_rank(rank, (stage + pp - 1) % pp);
            let tag = p2p_tag(false, vs, mb);
            out.push(Self::instr(
                Op::Recv { peer, bytes, tag },
                Class::PpComm,
                half,
            ));
        }
        out.extend(self.zero_micro(rank, st, c, Coll::AllGather, true));
        for (g, _) in self.chunk_graphs(st, c) {
            for op in g.ops() {
                out.extend(
                    op.fwd
                        .iter()
                        .filter_map(|k| self.kernel(rank, op, k, false)),
                );
            }
        }
        let slot = c * self.plan.n_micro() + mb;
        let keep = Op::Keep {
            slot,
            bytes: self.saved_bytes(st, c),
        };
        out.push(Self::instr(keep, Class::Bookkeeping, 0.0));
        if vs < last {
            let peer = self.stage_rank(rank, (stage + 1) % pp);
            let tag = p2p_tag(false, vs + 1, mb);
            out.push(Self::instr(
                Op::Send { peer, bytes, tag },
                Class::PpComm,
                half,
            ));
        }
    }

    /// Backward of micro-batch `mb` through chunk `c`: receive the output gradient, per layer
    /// (last first) recompute what the plan recomputes and run the backward kernels, free the
    /// saved activations, send the input gradient.
    fn backward(&self, rank: u64, st: &StageLayout, c: u64, mb: u64, out: &mut Vec<Instr>) {
        let (pp, stage) = (self.plan.pp, st.stage);
        let vs = c * pp + stage;
        let last = pp * self.plan.vpp - 1;
        let (bytes, half) = (self.p2p_bytes, self.p2p_half_s);
        if vs < last {
            let peer = self.stage_rank(rank, (stage + 1) % pp);
            let tag = p2p_tag(true, vs, mb);
            out.push(Self::instr(
                Op::Recv { peer, bytes, tag },
                Class::PpComm,
                half,
            ));
        }
        out.extend(self.zero_micro(rank, st, c, Coll::AllGather, false));
        for (g, rc) in self.chunk_graphs(st, c).into_iter().rev() {
            let ops = g.ops();
            for op in &ops {
                let again: &[Kernel] = match rc {
                    Some(Recompute::Full) => &op.fwd,
                    Some(Recompute::Selective) => &op.selective_fwd,
                    _ => &[],
                };
                out.extend(again.iter().filter_map(|k| self.kernel(rank, op, k, true)));
            }
            for op in ops.iter().rev() {
                out.extend(
                    op.bwd
                        .iter()
                        .filter_map(|k| self.kernel(rank, op, k, false)),
                );
            }
        }
        let slot = c * self.plan.n_micro() + mb;
        out.push(Self::instr(Op::Release { slot }, Class::Bookkeeping, 0.0));
        out.extend(self.zero_micro(rank, st, c, Coll::ReduceScatter, false));
        if vs > 0 {
            let peer = self.stage_rank(rank, (stage + pp - 1) % pp);
            let tag = p2p_tag(true, vs - 1, mb);
            out.push(Self::instr(
                Op::Send { peer, bytes, tag },
                Class::PpComm,
                half,
            ));
        }
    }

    /// After the last backward: the step's gradient reduction of the stage's dense and expert
    /// parameters as [`dp::schedule`] runs it (all-reduce; reduce-scatter + all-gather of the
    /// updated weights with a sharded optimizer; the gather alone after DeepSpeed's ZeRO-2;
    /// nothing under ZeRO-3 and FSDP), the tied embedding's all-reduce, and
    /// the optimizer step on the rank's shard of the state. Returns the rank's model state.
    /// FP8 plans never reach here (`verify::executable_plan` refuses them), so neither TE's
    /// FP8 weight cache nor the one-byte gather of `Plan::fp8_param_gather`
    /// (`cost::memory::fp8_weight_cache_bytes`, `cost::stages::chunk_fp8_params`) is lowered.
    fn tail(&self, rank: u64, st: &StageLayout, out: &mut Vec<Instr>) -> StateBytes {
        let plan = self.plan;
        let (mut dense, mut experts) = (0.0, 0.0);
        for c in 0..plan.vpp {
            let (d, x) = chunk_params(self.model, plan, self.pg, st, c);
            dense += d;
            experts += x;
        }
        let (grad_b, e) = (plan.grad_reduce_bytes(), plan.dtype.bytes());
        for (params, kind) in [(dense, GroupKind::Dp), (experts, GroupKind::ExpertDp)] {
            if params <= 0.0 {
                continue;
            }
            match dp::schedule(plan).step {
                StepReduce::AllReduce => {
                    out.extend(self.coll(rank, kind, Coll::AllReduce, params * grad_b))
                }
                StepReduce::ReduceScatterGather => {
                    out.extend(self.coll(rank, kind, Coll::ReduceScatter, params * grad_b));
                    out.extend(self.coll(rank, kind, Coll::AllGather, params * e));
                }
                StepReduce::Gather => {
                    out.extend(self.coll(rank, kind, Coll::AllGather, params * e))
                }
                StepReduce::ReduceScatter => {
                    out.extend(self.coll(rank, kind, Coll::ReduceScatter, params * grad_b))
                }
                StepReduce::Nothing => {}
            }
        }
        if self.model.embedding_on_last_stage() && plan.pp > 1 && (st.embedding || st.head) {
            let emb = (plan.vocab_rows(self.model.vocab) * self.model.hidden) as f64;
            out.extend(self.coll(rank, GroupKind::Tied, Coll::AllReduce, emb * grad_b));
        }
        let n_dp = plan.dp * plan.cp;
        let n_ep = plan.expert_dp();
        let shard = |n: u64| if plan.zero >= 1 { n as f64 } else { 1.0 };
        let local = dense / shard(n_dp) + experts / shard(n_ep);
        let bytes = step_memory_bytes(plan, local, dense + experts);
        let t = self
            .m
            .memory_s(bytes, crate::graph::MemClass::Elementwise)
            .0;
        out.push(Self::instr(Op::Memory { bytes }, Class::Optimizer, t));
        let (wd, gd, od) = plan_state_bytes(plan, n_dp);
        let (we, ge, oe) = plan_state_bytes(plan, n_ep);
        let (whole_weights, whole_grads) = whole_state_bytes(plan, dense + experts);
        StateBytes {
            weights: dense * wd + experts * we + whole_weights,
            grads: dense * gd + experts * ge + whole_grads,
            optimizer: dense * od + experts * oe,
        }
    }

    fn program(&self, rank: u64) -> Result<Program, crate::sim::SimError> {
        let coords = Coords::of(self.plan, rank);
        let st = &self.layouts[coords.pp as usize];
        let (p, m, v) = (self.plan.pp, self.plan.n_micro(), self.plan.vpp);
        let mut instrs = Vec::new();
        for task in order(self.plan.schedule, p, coords.pp, m, v)? {
            let (c, mb) = (u64::from(task.chunk), u64::from(task.mb));
            match task.pass {
                Pass::Fwd => self.forward(rank, st, c, mb, &mut instrs),
                Pass::Bwd => self.backward(rank, st, c, mb, &mut instrs),
            }
        }
        let state = self.tail(rank, st, &mut instrs);
        Ok(Program {
            rank,
            coords,
            state,
            instrs,
        })
    }
}

/// Lowers `plan` (which must pass `Plan::check`) into one program per rank, each instruction
/// priced on `m` exactly as the cost model prices it.
pub fn lower(model: &ModelSpec, plan: &Plan, m: &Machine) -> Result<Lowered, crate::sim::SimError> {
    let place = Placement::of(plan, m.cluster.gpus_per_node);
    let pg = PricedGraphs::new(model, plan, m);
    let (groups, member) = make_groups(plan);
    let bytes = p2p_bytes(model, plan);
    let ctx = Ctx {
        model,
        plan,
        m,
        pg: &pg,
        place,
        sh: Shard::of(plan),
        layouts: stage_layouts(model, plan),
        groups: member,
        p2p_bytes: bytes,
        p2p_half_s: m.collective_s(Coll::SendRecv, place.pp, bytes).0 / 2.0,
    };
    let programs = (0..plan.n_gpus())
        .map(|r| ctx.program(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Lowered { groups, programs })
}

#[cfg(test)]
mod tests;
