//! Per-stage, per-chunk work of one micro-batch under a plan: the operator costs the pipeline
//! simulator (sim/) schedules, priced exactly as [`estimate_priced`](super::estimate_priced)
//! prices them (a test pins the two together).

use super::memory::{self, MemoryBytes, StageLayout};
use super::step::overlap_exposed_s;
use super::{
    GroupShape, Machine, PassCost, Placement, PricedGraphs, Provenance, grad_accumulate_s,
    grad_reduce_bytes, optimizer_bytes_per_param,
};
use crate::calib::Source;
use crate::graph::{Coll, MemClass, OpGraph, Shard};
use crate::spec::{Framework, ModelSpec, Plan, Recompute};
use serde::Serialize;
use std::cell::RefCell;

/// One model chunk's work on one stage for one micro-batch (the whole stage when not
/// interleaved).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ChunkWork {
    /// Transformer layers in the chunk.
    pub layers: u64,
    /// Forward pass: compute, TP and CP/EP collectives on the critical path.
    pub fwd: PassCost,
    /// Backward pass.
    pub bwd: PassCost,
    /// Forward work recomputation repeats before the backward.
    pub recompute: PassCost,
    /// ZeRO-3 all-gather of the chunk's weights, issued with every forward and backward.
    pub zero_gather_s: f64,
    /// ZeRO-2/3 reduce-scatter of the chunk's gradients, issued with every backward: a rank
    /// that keeps only its shard of the gradients cannot accumulate whole ones over the
    /// micro-batches (DeepSpeed stage 2 reduces at every micro-step; FSDP without `no_sync`).
    pub zero_reduce_s: f64,
    /// Data-parallel reduction of the chunk's gradients, once per step.
    pub dp_reduce_s: f64,
    /// Share of its rate the compute stream loses while a collective overlaps it
    /// (`DeviceEfficiency::overlap_interference`).
    pub overlap_interference: f64,
    /// Activation bytes one micro-batch leaves saved from its forward to its backward.
    pub activation_bytes: f64,
}

impl ChunkWork {
    /// ZeRO-3 gather time the forward cannot hide behind its compute (FSDP prefetches the
    /// next layer's weights during the current one: Zhao et al. 2023 §3.3).
    pub fn zero_fwd_exposed_s(&self) -> f64 {
        overlap_exposed_s(
            self.zero_gather_s,
            self.fwd.compute_s,
            0.0,
            self.overlap_interference,
        )
    }

    /// ZeRO gather and reduce-scatter time the backward (with recomputation) cannot hide.
    pub fn zero_bwd_exposed_s(&self) -> f64 {
        let compute = self.bwd.compute_s + self.recompute.compute_s;
        let comm = self.zero_gather_s + self.zero_reduce_s;
        overlap_exposed_s(comm, compute, 0.0, self.overlap_interference)
    }

    /// Seconds the forward holds the compute stream.
    pub fn fwd_s(&self) -> f64 {
        self.fwd.total() + self.zero_fwd_exposed_s()
    }

    /// Seconds recomputation and the backward hold the compute stream.
    pub fn bwd_s(&self) -> f64 {
        self.recompute.total() + self.bwd.total() + self.zero_bwd_exposed_s()
    }
}

/// One pipeline stage's work: its chunks, the pipeline transfers and the once-per-step work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageWork {
    /// Stage index.
    pub stage_idx: u64,
    /// Model chunks held (v when interleaved), in chunk order.
    pub chunks: Vec<ChunkWork>,
    /// Pipeline transfer time on the stage's timeline per pass of one micro-batch and chunk:
    /// one transfer where the framework posts the receive of the next micro-batch together
    /// with this send (Megatron's batched `send_forward_recv_backward`), two where receive
    /// and send are separate blocking calls (DeepSpeed, [`p2p_pass_s`]); 0 without
    /// pipelining.
    pub p2p_s: f64,
    /// The stage's whole gradient reduction after its last backward, as the closed form
    /// prices it (one collective per kind rather than one per chunk).
    pub dp_reduce_s: f64,
    /// Optimizer step on the rank's optimizer shard.
    pub optimizer_s: f64,
    /// Peak memory of one rank by the closed form (activations: the in-flight formula).
    pub memory: MemoryBytes,
}

/// Layers (with their recomputation) of chunk `c` of stage `st`: `stage_layouts` lists a
/// stage's layers chunk by chunk, L/(p·v) per chunk when interleaved (Narayanan et al. SC'21
/// §2.2.2).
pub fn chunk_layers<'a>(st: &'a StageLayout, plan: &Plan, c: u64) -> &'a [(u64, Recompute)] {
    let per = st.layers.len() / plan.vpp as usize;
    &st.layers[c as usize * per..(c as usize + 1) * per]
}

fn expert_params(g: &OpGraph) -> f64 {
    g.graph
        .node_weights()
        .filter(|o| o.name.starts_with("expert_"))
        .map(|o| o.params)
        .sum()
}

/// Parameters of one rank's chunk: (dense, expert).
pub fn chunk_params(
    model: &ModelSpec,
    plan: &Plan,
    pg: &PricedGraphs,
    layout: &StageLayout,
    c: u64,
) -> (f64, f64) {
    let st = layout.stage;
    let (mut dense, mut experts) = (0.0, 0.0);
    for &(i, _) in chunk_layers(layout, plan, c) {
        let g = pg.graphs.layer(model, i);
        let e = expert_params(g);
        experts += e;
        dense += g.params() - e;
    }
    let last = (st, c) == (plan.pp - 1, plan.vpp - 1);
    if (st, c) == (0, 0) {
        dense += pg.graphs.embedding.params();
    }
    if last {
        dense += pg.graphs.head.params();
        if model.tied_embeddings && plan.pp > 1 {
            // Megatron keeps a copy of the tied word embeddings on the last stage.
            dense += (model.vocab.div_ceil(plan.tp) * model.hidden) as f64;
        }
    }
    (dense, experts)
}

/// What every stage shares: the plan's groups and the prices of its transfers.
struct Ctx<'a> {
    model: &'a ModelSpec,
    plan: &'a Plan,
    m: &'a Machine<'a>,
    pg: &'a PricedGraphs,
    place: Placement,
    /// Expert-parallel ranks' gradient-reduction group: DP×CP ranks / ep.
    ep_group: GroupShape,
    /// First and last stage all-reduce the tied embedding's gradient.
    tied_s: f64,
    /// Seconds of the collectives priced here, by source, weighted by how often a step runs
    /// them.
    provenance: RefCell<Provenance>,
}

impl Ctx<'_> {
    /// A collective's time, recorded `times` per step in the provenance.
    fn coll(&self, c: Coll, g: GroupShape, bytes: f64, times: f64) -> f64 {
        let (t, src) = self.m.collective_s(c, g, bytes);
        self.provenance.borrow_mut().communication[src as usize] += times * t;
        t
    }

    /// Once-per-step gradient reduction of `params`: all-reduce, or reduce-scatter + all-gather
    /// of the updated weights with a sharded optimizer (ZeRO-1, Megatron's distributed
    /// optimizer, which accumulates whole fp32 gradients); ZeRO-2 gathers the updated weights
    /// only, its gradients reduced with every micro-batch (`ChunkWork::zero_reduce_s`); ZeRO-3
    /// has nothing left for the step.
    /// `times`: how often the step runs it, for the provenance (0: priced, not recorded).
    fn reduce_s(&self, params: f64, g: GroupShape, times: f64) -> f64 {
        let (grad_b, e) = (grad_reduce_bytes(self.plan), self.plan.dtype.bytes());
        match self.plan.zero {
            0 => self.coll(Coll::AllReduce, g, params * grad_b, times),
            1 => {
                self.coll(Coll::ReduceScatter, g, params * grad_b, times)
                    + self.coll(Coll::AllGather, g, params * e, times)
            }
            2 => self.coll(Coll::AllGather, g, params * e, times),
            _ => 0.0,
        }
    }

    /// Chunk `c` of stage `st` with its collectives; returns it with its (dense, expert)
    /// parameters.
    fn chunk(&self, st: &StageLayout, c: u64) -> (ChunkWork, f64, f64) {
        let (model, plan) = (self.model, self.plan);
        let (d, x) = chunk_params(model, plan, self.pg, st, c);
        let mut w = chunk_costs(model, plan, self.pg, &Shard::of(plan), st, c);
        // The chunk's gradients accumulated after each micro-batch's backward.
        w.bwd.compute_s += grad_accumulate_s(plan, self.m, d + x);
        w.overlap_interference = self.m.cluster.gpu.efficiency.overlap_interference;
        // Dense parameters shard over the data-parallel group, experts over theirs.
        let nm = plan.n_micro() as f64;
        let groups = [(d, self.place.dp), (x, self.ep_group)];
        for (params, g) in groups.into_iter().filter(|&(p, _)| p > 0.0) {
            if plan.zero >= 2 {
                let grads = params * grad_reduce_bytes(plan);
                w.zero_reduce_s += self.coll(Coll::ReduceScatter, g, grads, nm);
            }
            if plan.zero >= 3 {
                let bytes = params * plan.dtype.bytes();
                w.zero_gather_s += self.coll(Coll::AllGather, g, bytes, 2.0 * nm);
            }
        }
        let ends = (st.stage, c) == (0, 0) || (st.stage, c) == (plan.pp - 1, plan.vpp - 1);
        w.dp_reduce_s = self.reduce_s(d, self.place.dp, 0.0)
            + self.reduce_s(x, self.ep_group, 0.0)
            + if ends { self.tied_s } else { 0.0 };
        (w, d, x)
    }

    /// Stage `st`: its chunks, transfers, reduction, optimizer step and memory.
    fn stage(&self, st: &StageLayout, p2p_s: f64, largest_layer: f64, comms: u64) -> StageWork {
        let plan = self.plan;
        let (mut dense, mut experts) = (0.0, 0.0);
        let chunks = (0..plan.vpp)
            .map(|c| {
                let (w, d, x) = self.chunk(st, c);
                dense += d;
                experts += x;
                w
            })
            .collect();
        let shard = |n: u64| if plan.zero >= 1 { n.max(1) as f64 } else { 1.0 };
        let local = dense / shard(self.place.dp.n) + experts / shard(self.ep_group.n);
        let ends = st.embedding || st.head;
        StageWork {
            stage_idx: st.stage,
            chunks,
            p2p_s,
            dp_reduce_s: self.reduce_s(dense, self.place.dp, 1.0)
                + self.reduce_s(experts, self.ep_group, 1.0)
                + if ends { self.tied_s } else { 0.0 },
            optimizer_s: self
                .m
                .memory_s(
                    local * optimizer_bytes_per_param(plan.dtype),
                    MemClass::Elementwise,
                )
                .0,
            memory: memory::stage_memory(
                self.model,
                plan,
                &self.pg.graphs,
                st,
                dense,
                experts,
                largest_layer,
                comms,
                self.m.cluster.cuda_context_gib * crate::units::GIB,
            ),
        }
    }
}

/// Seconds the once-per-step data-parallel reduction adds after the pipeline drains.
///
/// Stage i runs its last backward (`b_i`: one micro-batch's backward and recomputation over
/// its chunks) `slack_i = Σ_{j<i} b_j` before stage 0 ends, and without overlap reduces
/// afterwards: `dp_i − slack_i`. With overlap the reduction starts with that last backward
/// and slows it by `e_i = ι · min(dp_i, b_i)`, the interference over the time they run
/// together (as the simulator charges it); the last micro-batch's backward passes from stage
/// p − 1 down to stage 0, so stage i's last backward ends
/// `D_i = Σ_{j≥i} e_j` late and its reduction, started `D_{i+1}` late, ends at
/// `max(D_i − slack_i, dp_i − b_i − slack_i + D_{i+1})` past the undisturbed drain. The step
/// waits for the latest stage (0 when none outlasts the drain).
pub fn dp_exposed_s(plan: &Plan, work: &[StageWork]) -> f64 {
    let overlap = reduction_overlaps(plan);
    let bwd = |s: &StageWork| -> f64 {
        s.chunks
            .iter()
            .map(|c| c.bwd.total() + c.recompute.total())
            .sum()
    };
    // Walking from the last stage, `slack` starts at Σ b_j over all stages and loses each
    // stage's own b before it is used: Σ_{j<i} b_j.
    let mut slack: f64 = work.iter().map(bwd).sum();
    let (mut exposed, mut delay_after) = (0.0f64, 0.0);
    for s in work.iter().rev() {
        let (b, dp) = (bwd(s), s.dp_reduce_s);
        slack -= b;
        if !overlap {
            exposed = exposed.max(dp - slack);
            continue;
        }
        let iota = s.chunks.first().map_or(0.0, |c| c.overlap_interference);
        let delay = delay_after + iota * dp.min(b);
        exposed = exposed.max(delay - slack).max(dp - b - slack + delay_after);
        delay_after = delay;
    }
    exposed
}

/// Whether the once-per-step reduction ([`StageWork::dp_reduce_s`]) overlaps the last
/// backward: where the framework overlaps it (Megatron-LM `--overlap-grad-reduce`, DDP, FSDP),
/// except under ZeRO-2, whose gradients were reduced with every micro-batch and whose step
/// work left is gathering the updated weights after the optimizer step (DeepSpeed
/// `stage_1_and_2.py` `step`: `all_gather_dp_groups` once the partitions are updated).
pub fn reduction_overlaps(plan: &Plan) -> bool {
    plan.overlap_grad_reduce && plan.zero != 2
}

/// Every stage's work for `plan`, from graphs priced for it. The plan must pass
/// [`Plan::check`].
pub fn stage_work(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
    pg: &PricedGraphs,
) -> Vec<StageWork> {
    stage_work_with_provenance(model, plan, m, pg).0
}

/// Pipeline transfer time on a middle stage's timeline per pass and micro-batch, with the
/// source of the send/receive price. Megatron posts each pass's receive and send as one
/// batched `isend`/`irecv` (`p2p_communication.py` `send_forward_recv_backward`): one transfer
/// time. DeepSpeed's pipeline engine executes `RecvActivation` … `SendActivation` and
/// `RecvGrad` … `SendGrad` as separate instructions, each a blocking `broadcast` in a two-rank
/// group (`deepspeed/runtime/pipe/engine.py`, `pipe/p2p.py` `send`/`recv` with
/// `async_op=False`): two, and with TP > 1 the receiver gathers the TP parts into the whole
/// boundary tensor before its pass (`PartitionedTensor.full()`, an all-gather over the TP
/// group; see [`super::p2p_bytes`]). (The first and last stages receive or send only; they
/// are given the middle stages' time.)
fn p2p_pass_s(model: &ModelSpec, plan: &Plan, m: &Machine, place: &Placement) -> (f64, Source) {
    let bytes = super::p2p_bytes(model, plan);
    let (t, src) = m.collective_s(Coll::SendRecv, place.pp, bytes);
    let t = match plan.framework {
        Framework::DeepSpeed if plan.tp > 1 => {
            let gather = m.collective_s(Coll::AllGather, place.tp, bytes * plan.tp as f64);
            2.0 * t + gather.0
        }
        Framework::DeepSpeed => 2.0 * t,
        _ => t,
    };
    (t, src)
}

/// [`stage_work`], with the sources of the collectives priced outside the graphs (pipeline
/// transfers, gradient reduction, ZeRO-3), weighted by how often one step runs them.
pub fn stage_work_with_provenance(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
    pg: &PricedGraphs,
) -> (Vec<StageWork>, Provenance) {
    let place = Placement::of(plan, m.cluster.gpus_per_node);
    let mut provenance = Provenance::default();
    let p2p_s = if plan.pp > 1 {
        let (t, src) = p2p_pass_s(model, plan, m, &place);
        // Each way once per micro-batch and chunk.
        provenance.communication[src as usize] += 2.0 * (plan.n_micro() * plan.vpp) as f64 * t;
        t
    } else {
        0.0
    };
    let tied_s = if model.tied_embeddings && plan.pp > 1 {
        let bytes = (model.vocab.div_ceil(plan.tp) * model.hidden) as f64 * grad_reduce_bytes(plan);
        let pair = Placement::tied_pair(plan, m.cluster.gpus_per_node);
        m.collective_s(Coll::AllReduce, pair, bytes).0
    } else {
        0.0
    };
    let ctx = Ctx {
        model,
        plan,
        m,
        pg,
        place,
        ep_group: GroupShape {
            n: (place.dp.n / plan.ep).max(1),
            per_node: (place.dp.per_node / plan.ep).max(1),
        },
        tied_s,
        provenance: RefCell::new(provenance),
    };
    let largest_layer = (0..model.layers)
        .map(|i| pg.graphs.layer(model, i).params())
        .fold(0.0, f64::max);
    let comms = [place.tp, place.cp, place.ep, place.dp, place.pp]
        .iter()
        .filter(|g| g.n > 1)
        .count() as u64;
    let work = super::stage_layouts(model, plan)
        .iter()
        .map(|st| ctx.stage(st, p2p_s, largest_layer, comms))
        .collect();
    (work, ctx.provenance.into_inner())
}

/// Pass costs and saved activations of chunk `c` of stage `st` for one micro-batch.
fn chunk_costs(
    model: &ModelSpec,
    plan: &Plan,
    pg: &PricedGraphs,
    sh: &Shard,
    st: &StageLayout,
    c: u64,
) -> ChunkWork {
    let mut w = ChunkWork::default();
    for &(i, rc) in chunk_layers(st, plan, c) {
        let gc = pg.layer(model, i);
        w.fwd.add(&gc.fwd, 1.0);
        w.bwd.add(&gc.bwd, 1.0);
        match rc {
            Recompute::None => {}
            Recompute::Selective => w.recompute.add(&gc.selective_fwd, 1.0),
            Recompute::Full => w.recompute.add(&gc.fwd, 1.0),
        }
        let g = pg.graphs.layer(model, i);
        w.activation_bytes += memory::layer_activation_bytes(g, model, sh, rc);
        w.layers += 1;
    }
    if st.embedding && c == 0 {
        w.fwd.add(&pg.embedding.fwd, 1.0);
        w.bwd.add(&pg.embedding.bwd, 1.0);
        w.activation_bytes += pg.graphs.embedding.saved_bytes();
    }
    if st.head && c == plan.vpp - 1 {
        w.fwd.add(&pg.head.fwd, 1.0);
        w.bwd.add(&pg.head.bwd, 1.0);
        w.activation_bytes += pg.graphs.head.saved_bytes();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{estimate_priced, step};
    use crate::spec::{ClusterSpec, Framework, Schedule, load_cluster, load_model};
    use crate::units::Dtype;

    fn plan(dp: u64, tp: u64, pp: u64, vpp: u64, gb: u64) -> Plan {
        let mut p = Plan::new(dp, tp, pp, 1, gb, 2048);
        p.vpp = vpp;
        p.recompute = Recompute::Selective;
        p.zero = 1;
        p.sequence_parallel = tp > 1;
        if vpp > 1 {
            p.schedule = Schedule::Interleaved;
        }
        p
    }

    /// The closed form of `estimate_priced`, recomposed from the stage work: pipeline time of
    /// the per-micro-batch stage times (2 transfers per chunk), the exposed gradient
    /// reduction, the slowest optimizer step.
    fn closed_form(plan: &Plan, w: &[StageWork]) -> f64 {
        let v = plan.vpp as f64;
        let per_micro: Vec<f64> = w
            .iter()
            .map(|s| {
                s.chunks.iter().map(|c| c.fwd_s() + c.bwd_s()).sum::<f64>() + 2.0 * s.p2p_s * v
            })
            .collect();
        let pipe = step::pipeline_time(plan.schedule, &per_micro, plan.n_micro(), plan.vpp);
        let opt = w.iter().map(|s| s.optimizer_s).fold(0.0, f64::max);
        pipe + dp_exposed_s(plan, w) + opt
    }

    /// The stage work recomposes the estimate exactly: same step time, same memory, for
    /// plain, interleaved, overlapped, ZeRO-3 and MoE plans.
    #[test]
    fn stage_work_recomposes_the_estimate() {
        let c = load_cluster("a100-80g-x1024").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let gpt = load_model("gpt3-175b").unwrap();
        let mut overlapped = plan(8, 8, 16, 1, 1536);
        overlapped.overlap_grad_reduce = true;
        let mut z3 = plan(128, 8, 1, 1, 1024);
        z3.zero = 3;
        let mut interleaved_overlapped = plan(8, 8, 16, 3, 1536);
        interleaved_overlapped.overlap_grad_reduce = true;
        let mixtral = load_model("mixtral-8x7b").unwrap();
        let mut moe = plan(32, 8, 4, 1, 1024);
        moe.ep = 8;
        // ZeRO-3 on experts too: they gather and reduce over their own group.
        let mut moe_z3 = plan(256, 4, 1, 1, 1024);
        moe_z3.ep = 8;
        moe_z3.zero = 3;
        // Uneven stages, recomputing fewer layers where fewer micro-batches are in flight.
        let mut uneven = plan(32, 8, 4, 1, 1024);
        uneven.stage_layers = Some(vec![23, 24, 24, 25]);
        uneven.recompute = Recompute::Full;
        uneven.recompute_layers = Some(vec![23, 12, 6, 0]);
        let cases = [
            (&gpt, plan(8, 8, 16, 1, 1536)),
            (&gpt, plan(8, 8, 16, 3, 1536)),
            (&gpt, overlapped),
            (&gpt, interleaved_overlapped),
            (&gpt, z3),
            (&mixtral, moe),
            (&mixtral, moe_z3),
            (&gpt, uneven),
        ];
        for (model, p) in cases {
            assert!(p.check(model, &c).is_empty(), "{}", p.short());
            let pg = PricedGraphs::new(model, &p, &m);
            let est = estimate_priced(model, &p, &m, &pg);
            let w = stage_work(model, &p, &m, &pg);
            let cf = closed_form(&p, &w);
            assert!(
                (cf - est.step_time_s).abs() <= 1e-9 * est.step_time_s,
                "{}: {cf} vs {}",
                p.short(),
                est.step_time_s
            );
            for (s, e) in w.iter().zip(&est.stages) {
                assert_eq!(s.memory, e.memory, "{}", p.short());
            }
            // Chunks partition the stage's layers.
            let layers: u64 = w.iter().flat_map(|s| &s.chunks).map(|c| c.layers).sum();
            assert_eq!(layers, model.layers);
        }
    }

    /// ZeRO-2 keeps only its shard of the gradients, so it reduce-scatters them with every
    /// micro-batch and gathers the updated weights once per step; ZeRO-1 accumulates whole
    /// gradients and does both once per step; ZeRO-3 also gathers the weights with every
    /// forward and backward. gpt2-xl on 8 A100s under DeepSpeed: fp32 gradient reduction
    /// (4 bytes per parameter), 16-bit weights (2).
    #[test]
    fn zero2_reduces_gradients_every_micro_batch() {
        let gpt = load_model("gpt2-xl").unwrap();
        let c = load_cluster("a100x8").unwrap();
        let m = Machine {
            cluster: &c,
            profile: None,
        };
        let work = |zero| {
            let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
            p.zero = zero;
            p.framework = Framework::DeepSpeed;
            let pg = PricedGraphs::new(&gpt, &p, &m);
            stage_work(&gpt, &p, &m, &pg).remove(0)
        };
        let dp = GroupShape { n: 8, per_node: 8 };
        let params = gpt.params();
        let rs = m.collective_s(Coll::ReduceScatter, dp, 4.0 * params).0;
        let ag = m.collective_s(Coll::AllGather, dp, 2.0 * params).0;
        let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-12 * b.max(1e-9), "{a} vs {b}");
        let one = work(1);
        close(one.dp_reduce_s, rs + ag);
        assert_eq!(
            (one.chunks[0].zero_reduce_s, one.chunks[0].zero_gather_s),
            (0.0, 0.0)
        );
        let two = work(2);
        close(two.dp_reduce_s, ag);
        close(two.chunks[0].zero_reduce_s, rs);
        assert_eq!(two.chunks[0].zero_gather_s, 0.0);
        // The gather follows the optimizer step: nothing left to overlap, even when asked.
        let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
        (p.zero, p.overlap_grad_reduce) = (2, true);
        assert!(!reduction_overlaps(&p));
        close(dp_exposed_s(&p, std::slice::from_ref(&two)), ag);
        let three = work(3);
        assert_eq!(three.dp_reduce_s, 0.0);
        close(three.chunks[0].zero_reduce_s, rs);
        close(three.chunks[0].zero_gather_s, ag);
        // A plan that reduces in bf16 (Composer's `mixed_precision: PURE`) moves 2 bytes per
        // gradient; llm-foundry's default (Composer's DEFAULT) reduces in fp32 like the rest.
        let reduce = |framework, dtype| {
            let mut p = Plan::new(8, 1, 1, 2, 64, 1024);
            (p.zero, p.framework, p.grad_reduce_dtype) = (3, framework, dtype);
            let pg = PricedGraphs::new(&gpt, &p, &m);
            stage_work(&gpt, &p, &m, &pg)[0].chunks[0].zero_reduce_s
        };
        let rs16 = m.collective_s(Coll::ReduceScatter, dp, 2.0 * params).0;
        close(reduce(Framework::LlmFoundry, None), rs);
        close(reduce(Framework::LlmFoundry, Some(Dtype::Bf16)), rs16);
    }

    /// An overlapped collective slows the compute it hides behind: ZeRO-3's gathers for
    /// gpt2-xl on 8 A100s (mbs 8, s 1024) hide inside the forward, costing
    /// `overlap_interference` (0.16 on the A100 preset) of their time; the reduce-scatter with
    /// them in the backward likewise. With the interference at 0 they are free.
    #[test]
    fn hidden_zero3_collectives_cost_their_interference() {
        let gpt = load_model("gpt2-xl").unwrap();
        let mut c = load_cluster("a100x8").unwrap();
        assert_eq!(c.gpu.efficiency.overlap_interference, 0.16);
        let mut p = Plan::new(8, 1, 1, 8, 64, 1024);
        p.zero = 3;
        p.framework = Framework::Torchtitan;
        let chunk = |c: &ClusterSpec| {
            let m = Machine {
                cluster: c,
                profile: None,
            };
            let pg = PricedGraphs::new(&gpt, &p, &m);
            stage_work(&gpt, &p, &m, &pg).remove(0).chunks.remove(0)
        };
        let w = chunk(&c);
        assert!(
            w.zero_gather_s < w.fwd.compute_s,
            "the gather hides in the forward"
        );
        let bwd_comm = w.zero_gather_s + w.zero_reduce_s;
        assert!(bwd_comm < w.bwd.compute_s);
        let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-12 * b, "{a} vs {b}");
        close(w.zero_fwd_exposed_s(), 0.16 * w.zero_gather_s);
        close(w.zero_bwd_exposed_s(), 0.16 * bwd_comm);
        close(w.fwd_s(), w.fwd.total() + 0.16 * w.zero_gather_s);
        c.gpu.efficiency.overlap_interference = 0.0;
        let free = chunk(&c);
        assert_eq!(
            (free.zero_fwd_exposed_s(), free.zero_bwd_exposed_s()),
            (0.0, 0.0)
        );
    }

    /// Interleaving deals layers round-robin: with p = 4, v = 2 and 96 layers (12 per
    /// chunk), stage 1 holds layers 12..24 and 60..72.
    #[test]
    fn interleaved_chunks_deal_layers_round_robin() {
        let gpt = load_model("gpt3-175b").unwrap();
        let p = plan(1, 1, 4, 2, 8);
        let st = &crate::cost::stage_layouts(&gpt, &p)[1];
        let ids = |c| {
            chunk_layers(st, &p, c)
                .iter()
                .map(|l| l.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(0), (12..24).collect::<Vec<_>>());
        assert_eq!(ids(1), (60..72).collect::<Vec<_>>());
    }

    /// Gradient accumulation outside the GEMM, per micro-batch: GPT-2 XL whole on one A100
    /// (1,557,611,200 parameters, HF `gpt2-xl`). DeepSpeed's BF16 optimizer moves 18 B/param:
    /// 28.037 GB at 2,039 GB/s × 0.88 = 15.625 ms + a 4 µs launch; Megatron without fusion
    /// 10 B/param: 8.683 ms; fused Megatron nothing (the GEMM epilogue adds into main_grad).
    #[test]
    fn gradient_accumulation_pass_is_priced_per_micro_batch_by_framework() {
        let gpt = load_model("gpt2-xl").unwrap();
        let c = load_cluster("a100x8").unwrap().with_gpus(1).unwrap();
        let machine = Machine {
            cluster: &c,
            profile: None,
        };
        let bwd = |framework, fused| {
            let mut p = Plan::new(1, 1, 1, 1, 4, 1024);
            p.framework = framework;
            p.grad_accumulation_fusion = fused;
            let pg = PricedGraphs::new(&gpt, &p, &machine);
            stage_work(&gpt, &p, &machine, &pg)[0].chunks[0]
                .bwd
                .compute_s
        };
        let fused = bwd(Framework::Megatron, true);
        let deepspeed = bwd(Framework::DeepSpeed, true) - fused;
        assert!((deepspeed - 15.629e-3).abs() < 0.01e-3, "{deepspeed}");
        let unfused = bwd(Framework::Megatron, false) - fused;
        assert!((unfused - 8.687e-3).abs() < 0.01e-3, "{unfused}");
    }

    /// Pipeline transfers per pass: GPT-3 175B at tp = 2, pp = 2 on four GPUs of one DGX A100
    /// (NVSwitch 300 GB/s × 0.77 = 231 GB/s, 3 µs per step), b·s = 2048 tokens. Each rank
    /// sends its TP half, 2048 · 12,288 · 2 / 2 = 25,165,824 bytes: 3 µs + 108.943 µs =
    /// 111.943 µs, once per pass under Megatron (receive and send batched). DeepSpeed receives
    /// and sends in separate blocking calls (2 × 111.943 µs) and gathers the halves over TP,
    /// an all-gather of 50,331,648 bytes on 2 ranks: 3 µs + ½ · 217.886 µs = 111.943 µs —
    /// 335.83 µs in all.
    #[test]
    fn deepspeed_pipeline_transfers_block_and_gather() {
        let gpt = load_model("gpt3-175b").unwrap();
        let c = load_cluster("a100x8").unwrap().with_gpus(4).unwrap();
        let machine = Machine {
            cluster: &c,
            profile: None,
        };
        let p2p = |framework| {
            let mut p = Plan::new(1, 2, 2, 1, 4, 2048);
            p.framework = framework;
            let pg = PricedGraphs::new(&gpt, &p, &machine);
            stage_work(&gpt, &p, &machine, &pg)[0].p2p_s
        };
        let (megatron, deepspeed) = (p2p(Framework::Megatron), p2p(Framework::DeepSpeed));
        assert!((megatron - 111.943e-6).abs() < 0.01e-6, "{megatron}");
        assert!((deepspeed - 335.83e-6).abs() < 0.01e-6, "{deepspeed}");
    }

    /// The tied-embedding gradient all-reduce between the first and last stage runs over
    /// NVLink when one node holds both. GPT-2 XL (vocab 50,257, hidden 1,600; fp32 gradients
    /// under Megatron: 4 B) at tp = 1, pp = 2: 50,257 · 1,600 · 4 = 321.6 MB, an all-reduce
    /// of 2 ranks moving 2·(2−1)/2 = 1× the bytes. dp = 1 on one DGX A100 (NVSwitch 300 GB/s
    /// × 0.77 = 231 GB/s): 321.6e6 / 231e9 = 1.392 ms + 2 steps × 3 µs = 1.398 ms. dp = 8
    /// puts the stages on two nodes: one 200 Gb/s HDR NIC × 0.96 = 24 GB/s, 13.40 ms +
    /// 2·log2(2)·5 µs = 13.41 ms.
    #[test]
    fn tied_embedding_reduction_stays_on_the_node_when_both_stages_do() {
        let tied = load_model("gpt2-xl").unwrap();
        assert!(tied.tied_embeddings);
        let mut untied = tied.clone();
        untied.tied_embeddings = false;
        // Stage 0 holds the same parameters either way (the untied LM head sits on the last
        // stage), so the difference of its reductions is the tied pair's all-reduce.
        let pair_s = |c: &ClusterSpec, dp: u64| {
            let machine = Machine {
                cluster: c,
                profile: None,
            };
            let p = Plan::new(dp, 1, 2, 1, 16 * dp, 1024);
            let first = |m: &ModelSpec| {
                let pg = PricedGraphs::new(m, &p, &machine);
                stage_work(m, &p, &machine, &pg)[0].dp_reduce_s
            };
            first(&tied) - first(&untied)
        };
        let one_node = pair_s(&load_cluster("a100x8").unwrap(), 1);
        assert!((one_node - 1.398e-3).abs() < 0.005e-3, "{one_node}");
        let c = load_cluster("a100-80g-x1024")
            .unwrap()
            .with_gpus(16)
            .unwrap();
        let two_nodes = pair_s(&c, 8);
        assert!((two_nodes - 13.41e-3).abs() < 0.05e-3, "{two_nodes}");
    }
}
