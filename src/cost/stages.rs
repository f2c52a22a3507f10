//! Per-stage, per-chunk work of one micro-batch under a plan: the operator costs the pipeline
//! simulator (sim/) schedules, priced exactly as [`estimate_priced`](super::estimate_priced)
//! prices them (a test pins the two together).

use super::dp::StepReduce;
use super::memory::{self, MemoryBytes, StageLayout};
use super::step::overlap_exposed_s;
use super::{
    GroupShape, Machine, PassCost, Placement, PricedGraphs, Provenance, grad_passes_s,
    step_memory_bytes,
};
use crate::calib::Source;
use crate::graph::{Coll, MemClass, Shard};
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
    /// All-gather of the chunk's sharded weights issued with every forward (ZeRO-3, FSDP's
    /// ZeRO-2; [`dp::schedule`](super::dp::schedule)).
    pub zero_gather_fwd_s: f64,
    /// … and with every backward (ZeRO-3).
    pub zero_gather_bwd_s: f64,
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
    /// ZeRO gather time the forward cannot hide behind its compute (FSDP prefetches the
    /// next layer's weights during the current one: Zhao et al. 2023 §3.3).
    pub fn zero_fwd_exposed_s(&self) -> f64 {
        overlap_exposed_s(
            self.zero_gather_fwd_s,
            self.fwd.compute_s,
            0.0,
            self.overlap_interference,
        )
    }

    /// ZeRO gather and reduce-scatter time the backward (with recomputation) cannot hide.
    pub fn zero_bwd_exposed_s(&self) -> f64 {
        let compute = self.bwd.compute_s + self.recompute.compute_s;
        let comm = self.zero_gather_bwd_s + self.zero_reduce_s;
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

impl StageWork {
    /// Transfers of [`p2p_s`](Self::p2p_s) each micro-batch puts on the stage's timeline in
    /// its forward and in its backward under `plan`: one per chunk, less the forward send of
    /// the pipeline's last virtual stage and the backward send of its first (which have no
    /// one to send to; what they receive is a wait, part of the bubble). Middle stages 2v in
    /// all, the two ends 2v − 1.
    pub fn sends(&self, plan: &Plan) -> (f64, f64) {
        let v = plan.vpp as f64;
        let (first, last) = (self.stage_idx == 0, self.stage_idx + 1 == plan.pp);
        (
            v - f64::from(u8::from(last)),
            v - f64::from(u8::from(first)),
        )
    }
}

mod params;
pub use params::{chunk_fp8_params, chunk_layers, chunk_params};

/// What every stage shares: the plan's groups and the prices of its transfers.
struct Ctx<'a> {
    model: &'a ModelSpec,
    plan: &'a Plan,
    m: &'a Machine<'a>,
    pg: &'a PricedGraphs,
    place: Placement,
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

    /// Once-per-step gradient reduction of `params` ([`dp::schedule`](super::dp::schedule)):
    /// all-reduce, or reduce-scatter + all-gather of the updated weights with a sharded
    /// optimizer (ZeRO-1, Megatron's distributed optimizer, which accumulates whole fp32
    /// gradients); DeepSpeed's ZeRO-2 gathers the updated weights only, its gradients reduced
    /// with every micro-batch (`ChunkWork::zero_reduce_s`); ZeRO-3 and FSDP have nothing left
    /// for the step.
    /// `fp8`: of `params`, those gathered in FP8, one byte each (`chunk_fp8_params`).
    /// `times`: how often the step runs it, for the provenance (0: priced, not recorded).
    fn reduce_s(&self, params: f64, fp8: f64, g: GroupShape, times: f64) -> f64 {
        let (grad_b, e) = (self.plan.grad_reduce_bytes(), self.plan.dtype.bytes());
        let gathered = params * e - fp8 * (e - 1.0);
        match super::dp::schedule(self.plan).step {
            StepReduce::AllReduce => self.coll(Coll::AllReduce, g, params * grad_b, times),
            StepReduce::ReduceScatterGather => {
                self.coll(Coll::ReduceScatter, g, params * grad_b, times)
                    + self.coll(Coll::AllGather, g, gathered, times)
            }
            StepReduce::Gather => self.coll(Coll::AllGather, g, gathered, times),
            StepReduce::ReduceScatter => self.coll(Coll::ReduceScatter, g, params * grad_b, times),
            StepReduce::Nothing => 0.0,
        }
    }

    /// Chunk `c` of stage `st` with its collectives; returns it with its [dense, expert]
    /// parameters and, of them, the [dense, expert] ones gathered in FP8.
    fn chunk(&self, st: &StageLayout, c: u64) -> (ChunkWork, [f64; 4]) {
        let (model, plan) = (self.model, self.plan);
        let (d, x) = chunk_params(model, plan, self.pg, st, c);
        let mut w = chunk_costs(model, plan, self.pg, &Shard::of(plan), st, c);
        // The framework's passes over the chunk's gradients after each micro-batch's backward.
        w.bwd.compute_s += grad_passes_s(plan, self.m, d + x);
        w.overlap_interference = self.m.cluster.gpu.efficiency.overlap_interference;
        // Dense parameters shard over the data-parallel group, experts over theirs.
        let nm = plan.n_micro() as f64;
        let dp = super::dp::schedule(plan);
        let groups = [(d, self.place.dp), (x, self.place.edp)];
        for (params, g) in groups.into_iter().filter(|&(p, _)| p > 0.0) {
            if dp.reduce_per_micro {
                let grads = params * plan.grad_reduce_bytes();
                w.zero_reduce_s += self.coll(Coll::ReduceScatter, g, grads, nm);
            }
            let passes = f64::from(u8::from(dp.gather_fwd) + u8::from(dp.gather_bwd));
            if passes > 0.0 {
                let t = self.coll(Coll::AllGather, g, params * plan.dtype.bytes(), passes * nm);
                if dp.gather_fwd {
                    w.zero_gather_fwd_s += t;
                }
                if dp.gather_bwd {
                    w.zero_gather_bwd_s += t;
                }
            }
        }
        let ends = (st.stage, c) == (0, 0) || (st.stage, c) == (plan.pp - 1, plan.vpp - 1);
        let (fd, fx) = chunk_fp8_params(model, plan, self.pg, st, c);
        w.dp_reduce_s = self.reduce_s(d, fd, self.place.dp, 0.0)
            + self.reduce_s(x, fx, self.place.edp, 0.0)
            + if ends { self.tied_s } else { 0.0 };
        (w, [d, x, fd, fx])
    }

    /// Stage `st`: its chunks, transfers, reduction, optimizer step and memory.
    fn stage(&self, st: &StageLayout, p2p_s: f64, largest_layer: f64, comms: u64) -> StageWork {
        let plan = self.plan;
        // The stage's (dense, expert) parameters and, of them, those gathered in FP8.
        let (mut dense, mut experts, mut fp8) = (0.0, 0.0, (0.0, 0.0));
        let chunks = (0..plan.vpp)
            .map(|c| {
                let (w, [d, x, fd, fx]) = self.chunk(st, c);
                (dense, experts, fp8) = (dense + d, experts + x, (fp8.0 + fd, fp8.1 + fx));
                w
            })
            .collect();
        let shard = |n: u64| if plan.zero >= 1 { n.max(1) as f64 } else { 1.0 };
        let local = dense / shard(self.place.dp.n) + experts / shard(self.place.edp.n);
        let ends = st.embedding || st.head;
        StageWork {
            stage_idx: st.stage,
            chunks,
            p2p_s,
            dp_reduce_s: self.reduce_s(dense, fp8.0, self.place.dp, 1.0)
                + self.reduce_s(experts, fp8.1, self.place.edp, 1.0)
                + if ends { self.tied_s } else { 0.0 },
            optimizer_s: self
                .m
                .memory_s(
                    step_memory_bytes(plan, local, dense + experts),
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
                self.m.cluster,
            ),
        }
    }
}

/// When a stage starts reducing each chunk's gradients over the data-parallel group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradSync {
    /// After the stage's last backward: no overlap.
    AfterDrain,
    /// With each chunk's last backward, its buckets reduced as the backward fills them
    /// (Megatron-LM `--overlap-grad-reduce` without pipelining, DDP, FSDP).
    WithLastBackward,
    /// Megatron-LM's default under pipelining with `--overlap-grad-reduce` (since September
    /// 2023: `--no-delay-grad-reduce` unset, renamed `--no-align-grad-reduce` in August 2024:
    /// "all PP stages will launch gradient reduces simultaneously"): the schedule calls a
    /// chunk's `grad_sync_func` after the backward `rank` steps past the chunk's last one
    /// (`schedules.py`, `forward_backward_pipelining_with_interleaving`:
    /// `grad_sync_virtual_microbatch_id = virtual_microbatch_id - pipeline_parallel_rank`),
    /// or, where that is past the stage's last backward, once the stage is done ("Launch any
    /// remaining grad reductions"). Without interleaving only stage 0 reduces during its last
    /// backward; the others "do grad reduction during pipeline bubble" (the 1F1B schedule's
    /// cooldown: `if config.grad_sync_func is None or rank == 0: enable_grad_sync()`).
    Aligned,
}

/// How `plan`'s framework issues the once-per-step reduction ([`GradSync`]).
pub fn grad_sync(plan: &Plan) -> GradSync {
    if !reduction_overlaps(plan) {
        GradSync::AfterDrain
    } else if plan.framework == Framework::Megatron && plan.pp > 1 {
        GradSync::Aligned
    } else {
        GradSync::WithLastBackward
    }
}

/// When chunk `c` of pipeline stage `stage` starts its reduction, in seconds before the
/// stage's final backward ends (the undisturbed schedule), under `sync`; `bwd[c]` is the
/// chunk's backward (with recomputation) for one micro-batch, `group` the micro-batch group
/// of the interleaved schedule (p). Interleaved 1F1B runs the backwards of the last group
/// chunk by chunk in reverse (Megatron-Core `forward_backward_pipelining_with_interleaving`;
/// the simulator's schedule orders them the same), so chunk c's last backward ends
/// `group · Σ_{c'<c} bwd[c']` before the stage's final one, taking the drain's backwards as
/// back to back (conservative: its bubbles only widen the windows).
/// - [`GradSync::WithLastBackward`]: with the chunk's last backward.
/// - [`GradSync::Aligned`]: `stage` backwards after it (of chunk c − 1, as stage < group),
///   or at the end for chunk 0; without interleaving, stage 0 with its last backward and the
///   others at the end.
pub fn grad_sync_lead_s(sync: GradSync, stage: u64, bwd: &[f64], group: f64, c: usize) -> f64 {
    let ends_before = group * bwd[..c].iter().sum::<f64>();
    match sync {
        GradSync::AfterDrain => 0.0,
        GradSync::WithLastBackward => ends_before + bwd[c],
        GradSync::Aligned if bwd.len() == 1 && stage == 0 => bwd[0],
        GradSync::Aligned if c == 0 => 0.0,
        GradSync::Aligned => (ends_before - stage as f64 * bwd[c - 1]).max(0.0),
    }
}

/// Seconds the once-per-step data-parallel reduction adds after the pipeline drains.
///
/// The last micro-batch's backward of chunk 0 passes from stage p − 1 down to stage 0, so
/// stage i runs its final backward `slack_i = Σ_{j<i} b_j` before stage 0 ends, `b_j` being
/// chunk 0's backward (with recomputation) on stage j. Without overlap the stage reduces its
/// whole gradients afterwards: `dp_i − slack_i`.
///
/// With overlap each chunk's reduction starts [`grad_sync_lead_s`] before the stage's final
/// backward ends, on one data-parallel stream (as the simulator runs it, `sim::engine`), each
/// queued behind the one before: the chain ends at `t_0 = max(−lead_0 + D_{i+1}, t_1) +
/// dp_0`, with `t_c` built the same way from chunk v − 1 down.
///
/// A reduction slows the compute beside it by the interference `ι` over the time they run
/// together (as the simulator charges it). What it slows during the stage's final backward
/// (the last micro-batch's, on the chain every stage below waits for) adds to the delay the
/// stage inherits, `chain_i`; what it slows before, while the stages below are busy with their
/// own drain, overlaps that delay, `early_i`: stage i's final backward ends
/// `D_i = max(D_{i+1}, early_i) + chain_i` late. A reduction issued `lead` before the
/// stage's end starts at that end less `lead`, the end counted with the delays so far. The
/// chain of reductions on the stage's one data-parallel stream ends at `t_0`; the stage
/// outlasts the undisturbed drain by `max(D_i, t_0) − slack_i`, and the step waits for the
/// latest stage (0 when none outlasts the drain). With one chunk reduced with its last
/// backward this is `max(D_i − slack_i, dp_i − b_i − slack_i + D_{i+1})`,
/// `D_i = D_{i+1} + ι · min(dp_i, b_i)`. (Early slowdowns also delay the inputs of the
/// stages below earlier in the drain, which the simulator follows and this does not: on
/// random interleaved pipelines it may read a little below the simulator.)
pub fn dp_exposed_s(plan: &Plan, work: &[StageWork]) -> f64 {
    dp_exposed_with_s(grad_sync(plan), work)
}

/// [`dp_exposed_s`] for stages that issue their reductions as `sync` says (the interleaved
/// micro-batch group is the pipeline depth, `work.len()`).
pub fn dp_exposed_with_s(sync: GradSync, work: &[StageWork]) -> f64 {
    let group = work.len() as f64;
    let bwd = |c: &ChunkWork| c.bwd.total() + c.recompute.total();
    let last_bwd = |s: &StageWork| s.chunks.first().map_or(0.0, bwd);
    // Walking from the last stage, `slack` starts at Σ b_j over all stages and loses each
    // stage's own b before it is used: Σ_{j<i} b_j.
    let mut slack: f64 = work.iter().map(last_bwd).sum();
    let (mut exposed, mut delay_after) = (0.0f64, 0.0f64);
    for s in work.iter().rev() {
        slack -= last_bwd(s);
        if sync == GradSync::AfterDrain {
            exposed = exposed.max(s.dp_reduce_s - slack);
            continue;
        }
        let b: Vec<f64> = s.chunks.iter().map(bwd).collect();
        let iota = s.chunks.first().map_or(0.0, |c| c.overlap_interference);
        let final_bwd = b.first().copied().unwrap_or(0.0);
        let (mut early, mut chain, mut end) = (0.0f64, 0.0f64, f64::NEG_INFINITY);
        // Chunks in the order their reductions are issued: the largest lead first.
        for (c, w) in s.chunks.iter().enumerate().rev() {
            let lead = grad_sync_lead_s(sync, s.stage_idx, &b, group, c);
            // The stage's delay before its final backward, and its end so far.
            let shift = delay_after.max(early);
            let stage_end = shift + chain;
            let start = end.max(stage_end - lead);
            end = start + w.dp_reduce_s;
            let beside = (end.min(stage_end) - start).max(0.0);
            let in_final = (end.min(stage_end) - start.max(stage_end - final_bwd)).max(0.0);
            early += iota * (beside - in_final);
            chain += iota * in_final;
        }
        let delay = delay_after.max(early) + chain;
        exposed = exposed.max(delay - slack).max(end - slack);
        delay_after = delay;
    }
    exposed
}

/// Whether the once-per-step reduction ([`StageWork::dp_reduce_s`]) overlaps the last
/// backward: where the framework overlaps it (Megatron-LM `--overlap-grad-reduce`, DDP, FSDP),
/// except where [`dp::schedule`](super::dp::schedule) says it cannot: the step's only work is
/// gathering the updated weights after the optimizer step (DeepSpeed ZeRO-2,
/// `stage_1_and_2.py` `step`: `all_gather_dp_groups` once the partitions are updated), or a
/// reduction called once the backward is over (FSDP under pipelining).
pub fn reduction_overlaps(plan: &Plan) -> bool {
    plan.overlap_grad_reduce && super::dp::schedule(plan).step_overlappable
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
/// group; see [`super::p2p_bytes`]). Legacy Megatron-LM's scatter/gather likewise gathers
/// the received parts over TP before the pass (`p2p_communication.py` `_communicate`:
/// `mpu.gather_split_1d_tensor`, [`Plan::p2p_scatter_gather`]). (The first and last stages
/// receive or send only; they are given the middle stages' time.)
fn p2p_pass_s(model: &ModelSpec, plan: &Plan, m: &Machine, place: &Placement) -> (f64, Source) {
    let bytes = super::p2p_bytes(model, plan);
    let (t, src) = m.collective_s(Coll::SendRecv, place.pp, bytes);
    let t = match plan.framework {
        Framework::DeepSpeed if plan.tp > 1 => {
            let gather = m.collective_s(Coll::AllGather, place.tp, bytes * plan.tp as f64);
            2.0 * t + gather.0
        }
        Framework::DeepSpeed => 2.0 * t,
        Framework::Megatron if plan.scatters_p2p() => {
            t + m
                .collective_s(Coll::AllGather, place.tp, bytes * plan.tp as f64)
                .0
        }
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
        // A middle stage's count, each way once per micro-batch and chunk (the two ends send
        // one fewer, `StageWork::sends`).
        provenance.communication[src as usize] += 2.0 * (plan.n_micro() * plan.vpp) as f64 * t;
        t
    } else {
        0.0
    };
    let tied_s = if model.embedding_on_last_stage() && plan.pp > 1 {
        let bytes = (plan.vocab_rows(model.vocab) * model.hidden) as f64 * plan.grad_reduce_bytes();
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
    // `n` passes of a layer-like graph: forward, backward and what `rc` re-runs.
    let passes = |w: &mut ChunkWork, gc: &super::GraphCost, rc: Recompute, n: f64| {
        w.fwd.add(&gc.fwd, n);
        w.bwd.add(&gc.bwd, n);
        match rc {
            Recompute::None => {}
            Recompute::Selective => w.recompute.add(&gc.selective_fwd, n),
            Recompute::Full => w.recompute.add(&gc.fwd, n),
        }
    };
    for &(i, rc) in chunk_layers(st, plan, c) {
        passes(&mut w, pg.layer(model, i), rc, 1.0);
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
        if let (Some(gc), Some(g)) = (&pg.mtp, &pg.graphs.mtp) {
            let (n, rc) = (model.mtp_layers as f64, mtp_recompute(plan));
            passes(&mut w, gc, rc, n);
            w.activation_bytes += n * memory::mtp_activation_bytes(g, model, sh, rc);
        }
        w.fwd.add(&pg.head.fwd, 1.0);
        w.bwd.add(&pg.head.bwd, 1.0);
        w.activation_bytes += pg.graphs.head.saved_bytes();
    }
    w
}

/// How the multi-token prediction depths recompute: as the layers, Megatron-Core building
/// them from the same config (`MultiTokenPredictionLayer` checkpoints its layer under full
/// granularity with the uniform method, not the block method, which per-stage
/// `recompute_layers` stand for: exports write them as block for such a model, and imports
/// keep a block over every layer as counts).
pub fn mtp_recompute(plan: &Plan) -> Recompute {
    match plan.recompute {
        Recompute::Full if plan.recompute_layers.is_some() => Recompute::None,
        rc => rc,
    }
}

#[cfg(test)]
mod tests;
