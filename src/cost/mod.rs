//! The cost model (DESIGN.md §3): prices a plan's operator graphs on a machine and composes
//! them into step time, throughput, MFU/HFU and peak memory per GPU. Pure: no IO.

pub mod dp;
pub mod flops;
pub mod memory;
pub mod placement;
pub mod price;
pub mod priced;
pub mod stages;
pub mod step;

pub use memory::{MemoryBytes, StageLayout};
pub use placement::{GroupShape, Placement};
pub use price::Machine;
pub use priced::{
    GraphCost, PassCost, PricedGraphs, Provenance, graph_instances, op_cost, op_times,
};

use crate::calib::Profile;
use crate::graph::Shard;
use crate::spec::{ClusterSpec, Framework, ModelSpec, Plan, Recompute};
use crate::units::{Dtype, GIB};
use serde::Serialize;

/// Where a step's time goes; the parts add up to the step time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Breakdown {
    /// Forward and backward compute of the slowest stage, all micro-batches.
    pub compute_s: f64,
    /// Recomputed forward work.
    pub recompute_s: f64,
    /// Exposed tensor-parallel collectives.
    pub tp_comm_s: f64,
    /// Pipeline sends and receives.
    pub pp_comm_s: f64,
    /// Exposed data-parallel (gradient, ZeRO) communication.
    pub dp_comm_s: f64,
    /// Exposed context- and expert-parallel communication.
    pub other_comm_s: f64,
    /// Pipeline fill and drain, and waiting on slower stages.
    pub bubble_s: f64,
    /// Optimizer step.
    pub optimizer_s: f64,
}

impl Breakdown {
    /// Sum of the parts.
    pub fn total(&self) -> f64 {
        self.compute_s
            + self.recompute_s
            + self.tp_comm_s
            + self.pp_comm_s
            + self.dp_comm_s
            + self.other_comm_s
            + self.bubble_s
            + self.optimizer_s
    }

    /// The largest part, by name.
    pub fn bottleneck(&self) -> &'static str {
        let parts = [
            ("compute", self.compute_s),
            ("recompute", self.recompute_s),
            ("tp_comm", self.tp_comm_s),
            ("pp_comm", self.pp_comm_s),
            ("dp_comm", self.dp_comm_s),
            ("cp/ep_comm", self.other_comm_s),
            ("bubble", self.bubble_s),
            ("optimizer", self.optimizer_s),
        ];
        parts
            .iter()
            .fold(("compute", f64::MIN), |b, p| if p.1 > b.1 { *p } else { b })
            .0
    }
}

/// Peak memory per GPU in GiB by holder, the estimate's contract fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MemoryGib {
    /// Weights.
    pub weights: f64,
    /// Gradients.
    pub grads: f64,
    /// Optimizer state.
    pub optimizer: f64,
    /// Activations (saved ones and the working set at the peak).
    pub activations: f64,
    /// CUDA context, NCCL buffers, allocator fragmentation.
    pub other: f64,
}

impl From<MemoryBytes> for MemoryGib {
    fn from(m: MemoryBytes) -> MemoryGib {
        MemoryGib {
            weights: m.weights / GIB,
            grads: m.grads / GIB,
            optimizer: m.optimizer / GIB,
            activations: (m.activations + m.working) / GIB,
            other: m.runtime / GIB,
        }
    }
}

/// Per-stage detail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageCost {
    /// Stage index.
    pub stage_idx: u64,
    /// Layers on the stage.
    pub layers: u64,
    /// Forward time per micro-batch.
    pub fwd_s: f64,
    /// Backward time per micro-batch, recomputation included.
    pub bwd_s: f64,
    /// Peak memory of one rank, GiB.
    pub memory_gib: f64,
    /// Memory in detail, bytes.
    pub memory: MemoryBytes,
}

/// A plan priced: the estimate's JSON shape is a contract (DESIGN.md, issue 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The plan.
    pub plan: Plan,
    /// GPUs used.
    pub n_gpus: u64,
    /// Seconds per training step (one global batch).
    pub step_time_s: f64,
    /// Tokens per second over the whole cluster.
    pub tokens_per_s: f64,
    /// Model TFLOP/s per GPU.
    pub tflops_per_gpu: f64,
    /// Hardware TFLOP/s per GPU (recomputation counted), in the published convention
    /// (Narayanan et al. SC'21 eq. 3: the full s×s attention).
    pub hw_tflops_per_gpu: f64,
    /// TFLOP/s per GPU the kernels execute: the hardware count less the causal score blocks
    /// FlashAttention skips ([`flops::skipped_score_flops_per_step`]). At long context the
    /// conventions count up to twice what runs.
    pub exec_tflops_per_gpu: f64,
    /// Model FLOPs utilisation.
    pub mfu: f64,
    /// Hardware FLOPs utilisation.
    pub hfu: f64,
    /// Peak memory per GPU over all ranks, GiB.
    pub memory_gib_per_gpu: f64,
    /// Device memory, GiB.
    pub capacity_gib: f64,
    /// Whether the peak fits the device.
    pub fits: bool,
    /// Where the time goes.
    pub breakdown: Breakdown,
    /// Memory of the fullest rank by holder.
    pub memory_gib: MemoryGib,
    /// The largest breakdown term.
    pub bottleneck: &'static str,
    /// Per stage.
    pub stages: Vec<StageCost>,
    /// Where the numbers came from.
    pub provenance: Provenance,
}

/// Prices `plan` for `model` on `cluster`, with a measured profile when given.
/// The plan must pass [`Plan::check`]; out of memory is reported through `fits`.
pub fn estimate(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    plan: &Plan,
    profile: Option<&Profile>,
) -> Estimate {
    let m = Machine { cluster, profile };
    let priced = PricedGraphs::new(model, plan, &m);
    estimate_priced(model, plan, &m, &priced)
}

/// Stage layouts of a plan: the layers of each stage's model chunks as
/// [`Plan::chunk_layer_counts`] deals them (even, `plan.stage_layers`, or with the embedding
/// and loss taking a layer's slot), the embedding on the first stage and the head on the
/// last. Interleaving gives stage i the virtual stages i, i + p, i + 2p, …, each starting
/// where the layers of the virtual stages before it end (Narayanan et al. SC'21 §2.2.2;
/// Megatron-Core `get_transformer_layer_offset`, uneven ends included); without it, stage i
/// holds the layers after stage i − 1's. With `plan.recompute_layers`, only the first r_i
/// layers of stage i recompute (Megatron-LM `--recompute-method block`).
pub fn stage_layouts(model: &ModelSpec, plan: &Plan) -> Vec<StageLayout> {
    let sizes = plan.chunk_layer_counts(model.layers);
    let (p, v) = (plan.pp.max(1) as usize, plan.vpp.max(1) as usize);
    // Where virtual stage c·p + i starts: the layers of the virtual stages before it.
    let mut starts = vec![vec![0u64; v]; p];
    let mut next = 0;
    for c in 0..v {
        for (i, s) in starts.iter_mut().enumerate() {
            s[c] = next;
            next += sizes[i][c];
        }
    }
    (0..p)
        .map(|i| {
            let ids: Vec<u64> = (0..v)
                .flat_map(|c| starts[i][c]..starts[i][c] + sizes[i][c])
                .collect();
            let n = ids.len() as u64;
            let r = plan.recompute_layers.as_ref().map_or(n, |rc| rc[i]);
            let layers = ids
                .into_iter()
                .enumerate()
                .map(|(k, id)| {
                    (
                        id,
                        if (k as u64) < r {
                            plan.recompute
                        } else {
                            Recompute::None
                        },
                    )
                })
                .collect();
            StageLayout {
                stage: i as u64,
                layers,
                chunks: sizes[i].clone(),
                embedding: i == 0,
                head: i + 1 == p,
            }
        })
        .collect()
}

/// Bytes one pipeline send carries per rank: a micro-batch's activations b·s/cp·h, split over
/// the TP ranks, each sending its part, where sequence parallelism has sharded them; and
/// without it, under legacy Megatron-LM's scatter/gather ([`Plan::p2p_scatter_gather`];
/// Narayanan et al. SC'21 §4.1) and DeepSpeed's partitioned pipeline buffers
/// (`PipelineEngine` `is_pipe_partitioned = is_model_parallel`: a `PartitionedTensor` per TP
/// rank, gathered whole by the receiver — priced in `stages`); other frameworks' TP shards
/// the sequence too (torchtitan's TP plan is sequence-parallel). Megatron-Core without
/// sequence parallelism sends the whole tensor from every TP rank (`schedules.py`
/// `get_tensor_shapes`).
pub fn p2p_bytes(model: &ModelSpec, plan: &Plan) -> f64 {
    let full = (Shard::of(plan).tokens() * model.hidden) as f64 * plan.dtype.bytes();
    let whole = plan.framework == Framework::Megatron && !plan.sp() && !plan.p2p_scatter_gather;
    if whole { full } else { full / plan.tp as f64 }
}

/// Bytes per local parameter a framework moves after *every* micro-batch's backward to
/// accumulate the 16-bit gradients into fp32 ones, as a separate memory-bound pass.
///
/// - DeepSpeed's BF16 optimizer (BLOOM's Megatron-DeepSpeed): `BF16_Optimizer.backward` →
///   `update_hp_grads` runs `hp_grad.add_(lp.grad.to(fp32))` for every parameter after each
///   micro-batch (microsoft/DeepSpeed `deepspeed/runtime/bf16_optimizer.py`): the cast reads
///   2 and writes a 4-byte temporary, the add reads 4 + 4 and writes 4 — 18 bytes.
/// - Megatron without gradient-accumulation fusion (Megatron-LM 2021): the DDP hook
///   `param.main_grad.add_(param.grad.data)` (megatron/model/distributed.py
///   `_make_param_hook`) reads the 16-bit gradient (2) and the fp32 buffer (4) and writes it
///   (4) — 10 bytes. (PyTorch DDP's autograd accumulation of 16-bit `.grad`, the 2021 `torch`
///   DDP, moves 6 from the second micro-batch on; priced at the same 10.)
/// - Fused Megatron adds into the fp32 `main_grad` in the weight-gradient GEMM's epilogue
///   (TE `fuse_wgrad_accumulation`); FSDP accumulates reduced *sharded* gradients (1/dp of
///   the parameters): no separate pass is priced for them. Megatron's ZeRO-3 is FSDP2
///   (`--use-torch-fsdp2`, which runs without gradient-accumulation fusion), priced so
///   whatever the fusion flag says.
pub fn grad_accumulate_bytes(plan: &Plan) -> f64 {
    let low_precision = !matches!(plan.dtype, Dtype::Fp32 | Dtype::Tf32);
    match plan.framework {
        Framework::DeepSpeed if plan.dtype == Dtype::Bf16 => 18.0,
        Framework::Megatron if low_precision && !plan.grad_accumulation_fusion && plan.zero < 3 => {
            10.0
        }
        _ => 0.0,
    }
}

/// Bytes per local parameter of the memory passes `plan`'s framework runs over the gradients
/// after *every* micro-batch's backward: the accumulation into fp32 ([`grad_accumulate_bytes`]);
/// FSDP's preparation of the reduce-scatter input ([`grad_reduce_copy_bytes`]) where it
/// reduces every micro-batch; and where FSDP holds whole gradients over the step (under
/// pipelining, [`dp::DpSchedule::holds_whole`]), FSDP2's accumulation in the reduction dtype
/// (`FSDPParam.to_accumulated_grad_if_needed` casts the first micro-batch's gradient,
/// `accumulate_unsharded_grad_if_needed` adds the later ones: the 16-bit gradient and the
/// accumulator read, the accumulator written; in the training dtype, autograd's in-place
/// `.grad` add moves the same e + 2e).
pub fn grad_micro_bytes(plan: &Plan) -> f64 {
    let dp = dp::schedule(plan);
    let (e, r) = (plan.dtype.bytes(), plan.grad_reduce_bytes());
    let fsdp = if dp.reduce_per_micro {
        grad_reduce_copy_bytes(plan)
    } else if dp.holds_whole {
        e + 2.0 * r
    } else {
        0.0
    };
    grad_accumulate_bytes(plan) + fsdp
}

/// Seconds of the [`grad_micro_bytes`] passes over `params` local parameters, once per
/// micro-batch (0 where the framework runs none).
pub fn grad_passes_s(plan: &Plan, m: &Machine, params: f64) -> f64 {
    let bytes = params * grad_micro_bytes(plan);
    if bytes > 0.0 {
        m.memory_s(bytes, crate::graph::MemClass::Elementwise).0
    } else {
        0.0
    }
}

/// Bytes per stage parameter of the memory passes once per step, before the optimizer: FSDP
/// under pipelining copies the whole accumulated gradients into the reduce-scatter input
/// (FSDP2 `foreach_reduce_scatter_copy_in`: read and written in the reduction dtype).
pub fn grad_step_bytes(plan: &Plan) -> f64 {
    if dp::schedule(plan).holds_whole {
        2.0 * plan.grad_reduce_bytes()
    } else {
        0.0
    }
}

/// Bytes the step's memory passes move on a rank that holds `whole` parameters of its stage
/// and updates `local` of them (its optimizer shard): [`grad_step_bytes`] over the whole,
/// [`optimizer_bytes_per_param`] over the shard. What the cost model prices as the optimizer
/// step and what `exec::lower` runs for it.
pub fn step_memory_bytes(plan: &Plan, local: f64, whole: f64) -> f64 {
    local * optimizer_bytes_per_param(plan) + whole * grad_step_bytes(plan)
}

/// Bytes one local parameter's optimizer step reads and writes, as `plan`'s framework runs
/// Adam (memory-bound; fp32 gradient, master weight and moments):
/// - Megatron-LM and DeepSpeed: fused multi-tensor Adam (Apex/TE `FusedAdam`, DeepSpeed
///   `FusedAdam`): the gradient read for the norm and again for the update (4 + 4), master
///   weight and both moments read and written (24), and the 16-bit copy written (2; none when
///   training in fp32) — 34.
/// - torchtitan: `torch.optim.AdamW(foreach=True)` (torchtitan `build_optimizers`:
///   `"foreach": not fused`, `optimizer.fused` off by default; weight decay 0.1), whose
///   `_multi_tensor_adamw` runs one pass per operation: `_foreach_mul_(params)` (8),
///   `_foreach_lerp_(exp_avgs, grads)` (12), `_foreach_mul_(exp_avg_sqs)` (8),
///   `_foreach_addcmul_(exp_avg_sqs, grads, grads)` (12: the same gradient twice), `_foreach_sqrt`
///   into a new list, `_foreach_div_` and `_foreach_add_(eps)` on it (8 each) and
///   `_foreach_addcdiv_(params, exp_avgs, denom)` (16) — 80; plus `clip_grad_norm_(foreach=True)`
///   reading the gradients for the norm (4) and scaling them in place (8) — 92. The sharded
///   parameters are the fp32 master copy (FSDP2 casts them to 16 bits when it gathers them).
/// - llm-foundry: Composer's `DecoupledAdamW` (mosaicml/composer
///   `composer/optim/decoupled_weight_decay.py` `adamw`) loops over the parameters with the
///   same eager passes, `exp_avg.mul_(β1).add_(grad)` (8 + 12) in place of the lerp, and
///   skips the decay at the MPT recipes' `weight_decay: 0.0` — 80; with their
///   `gradient_clipping: norm` (llm-foundry `scripts/train/yamls/pretrain/mpt-*.yaml`) through
///   FSDP's `clip_grad_norm_` (4 + 8) — 92.
pub fn optimizer_bytes_per_param(plan: &Plan) -> f64 {
    match plan.framework {
        Framework::Torchtitan | Framework::LlmFoundry => 92.0,
        Framework::Megatron | Framework::DeepSpeed => {
            4.0 + 4.0
                + 24.0
                + if matches!(plan.dtype, Dtype::Fp32 | Dtype::Tf32) {
                    0.0
                } else {
                    2.0
                }
        }
    }
}

/// Bytes per unsharded parameter that an FSDP reduce-scatter of the gradients moves before
/// the collective, preparing its input:
/// - FSDP2 (torchtitan; Megatron-LM's ZeRO-3, `--use-torch-fsdp2`): `foreach_reduce` copies
///   every gradient into one flat reduce-scatter input in the reduction dtype
///   (`foreach_reduce_scatter_copy_in`), reading the training dtype and writing the
///   reduction's (2 + 4 for bf16 reduced in fp32).
/// - llm-foundry (FSDP1): the gradient already lies in the flat parameter's buffer; where the
///   reduction dtype differs from the training one (Composer's `mixed_precision: DEFAULT`
///   reduces in fp32) `_post_backward_hook` casts the whole flat gradient to it
///   (`flat_param.grad.to(handle._reduce_dtype)`, torch `distributed/fsdp/_runtime_utils.py`).
/// - 0 for DeepSpeed (it reduces its gradient buckets in place) and where the plan does not
///   shard gradients (ZeRO-0/1: Megatron's distributed optimizer reduces its fp32 `main_grad`
///   buffer in place).
pub fn grad_reduce_copy_bytes(plan: &Plan) -> f64 {
    let (e, r) = (plan.dtype.bytes(), plan.grad_reduce_bytes());
    match plan.framework {
        _ if plan.zero < 2 => 0.0,
        Framework::Torchtitan | Framework::Megatron => e + r,
        Framework::LlmFoundry if r != e => e + r,
        _ => 0.0,
    }
}

/// Prices a plan from already priced graphs (the search's memoised path): the per-stage
/// work of [`stages::stage_work`] composed by the closed forms.
///
/// Pipeline: [`step::pipeline_time`] over each stage's per-micro-batch time (its chunks'
/// forward and backward with exposed ZeRO collectives, plus two transfers per chunk:
/// Megatron's send_forward_recv_backward / send_backward_recv_forward). Data-parallel
/// reduction after the last micro-batch: [`stages::dp_exposed_s`]. The slowest optimizer step
/// ends the step.
pub fn estimate_priced(model: &ModelSpec, plan: &Plan, m: &Machine, pg: &PricedGraphs) -> Estimate {
    estimate_with_work(model, plan, m, pg).0
}

/// [`estimate_priced`] and the per-stage work it composed, for a caller that also schedules
/// that work (the simulator), so it is computed once.
pub fn estimate_with_work(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
    pg: &PricedGraphs,
) -> (Estimate, Vec<stages::StageWork>) {
    let (work, comm_provenance) = stages::stage_work_with_provenance(model, plan, m, pg);
    let nm = plan.n_micro() as f64;
    let sum = |s: &stages::StageWork, f: &dyn Fn(&stages::ChunkWork) -> f64| {
        s.chunks.iter().map(f).sum::<f64>()
    };
    let per_micro: Vec<f64> = work
        .iter()
        .map(|s| {
            let (f, b) = s.sends(plan);
            sum(s, &|c| c.fwd_s() + c.bwd_s()) + s.p2p_s * (f + b)
        })
        .collect();
    let pipeline = if plan.schedule == crate::spec::Schedule::Gpipe && work.len() > 1 {
        let phase = |f: &dyn Fn(&stages::ChunkWork) -> f64, backward: bool| {
            work.iter()
                .map(|s| {
                    let (fs, bs) = s.sends(plan);
                    sum(s, f) + s.p2p_s * if backward { bs } else { fs }
                })
                .collect::<Vec<f64>>()
        };
        step::gpipe_time(
            &phase(&|c| c.fwd_s(), false),
            &phase(&|c| c.bwd_s(), true),
            plan.n_micro(),
        )
    } else {
        step::pipeline_time(plan.schedule, &per_micro, plan.n_micro(), plan.vpp)
    };
    let slow = per_micro
        .iter()
        .enumerate()
        .fold(0, |b, (i, t)| if *t > per_micro[b] { i } else { b });
    let ws = &work[slow];
    let (fs, bs) = ws.sends(plan);
    let slow_sends = fs + bs;

    let dp_exposed = stages::dp_exposed_s(plan, &work);

    let breakdown = Breakdown {
        compute_s: nm * sum(ws, &|c| c.fwd.compute_s + c.bwd.compute_s),
        recompute_s: nm * sum(ws, &|c| c.recompute.compute_s),
        tp_comm_s: nm * sum(ws, &|c| c.fwd.tp_s + c.bwd.tp_s + c.recompute.tp_s),
        pp_comm_s: nm * ws.p2p_s * slow_sends,
        dp_comm_s: dp_exposed + nm * sum(ws, &|c| c.zero_fwd_exposed_s() + c.zero_bwd_exposed_s()),
        other_comm_s: nm * sum(ws, &|c| c.fwd.other_s + c.bwd.other_s + c.recompute.other_s),
        bubble_s: pipeline - nm * per_micro[slow],
        optimizer_s: work.iter().map(|s| s.optimizer_s).fold(0.0, f64::max),
    };
    let stages: Vec<StageCost> = work
        .iter()
        .map(|s| StageCost {
            stage_idx: s.stage_idx,
            layers: s.chunks.iter().map(|c| c.layers).sum(),
            fwd_s: sum(s, &|c| c.fwd_s()) + s.p2p_s * s.sends(plan).0,
            bwd_s: sum(s, &|c| c.bwd_s()) + s.p2p_s * s.sends(plan).1,
            memory_gib: s.memory.total() / GIB,
            memory: s.memory,
        })
        .collect();
    let layouts = stage_layouts(model, plan);
    let recomputed = layouts
        .iter()
        .flat_map(|st| &st.layers)
        .filter(|(_, rc)| *rc != Recompute::None)
        .count();
    let held = layouts
        .iter()
        .map(|st| st.layers.len())
        .sum::<usize>()
        .max(1);
    // Over every stage, as the communication's sources are counted.
    let provenance = pg.step_provenance(model, nm).plus(&comm_provenance);
    let hw_flops = flops::hardware_flops_per_step(
        model,
        plan.seq_len,
        plan.global_batch,
        plan.recompute,
        pg.selective_flops_per_sequence,
        recomputed as f64 / held as f64,
    );
    let skipped = flops::skipped_score_flops_per_step(model, plan, recomputed as f64 / held as f64);
    let estimate = assemble(
        model,
        plan,
        m.cluster,
        breakdown,
        stages,
        (hw_flops, hw_flops - skipped),
        provenance,
    );
    (estimate, work)
}

/// Throughput, utilisation and memory verdict of a priced step.
fn assemble(
    model: &ModelSpec,
    plan: &Plan,
    cluster: &ClusterSpec,
    breakdown: Breakdown,
    stages: Vec<StageCost>,
    (hw_flops, exec_flops): (f64, f64),
    provenance: Provenance,
) -> Estimate {
    let step = breakdown.total();
    let peak = stages
        .iter()
        .map(|s| s.memory)
        .fold(MemoryBytes::default(), |a, b| {
            if b.total() > a.total() { b } else { a }
        });
    let n_gpus = plan.n_gpus();
    let model_flops = flops::model_flops_per_step(model, plan.seq_len, plan.global_batch);
    let peak_flops = cluster.gpu.peak_flops(plan.dtype);
    let per_gpu = |f: f64| f / step / n_gpus as f64;
    Estimate {
        plan: plan.clone(),
        n_gpus,
        step_time_s: step,
        tokens_per_s: (plan.global_batch * plan.seq_len) as f64 / step,
        tflops_per_gpu: per_gpu(model_flops) / 1e12,
        hw_tflops_per_gpu: per_gpu(hw_flops) / 1e12,
        exec_tflops_per_gpu: per_gpu(exec_flops) / 1e12,
        mfu: per_gpu(model_flops) / peak_flops,
        hfu: per_gpu(hw_flops) / peak_flops,
        memory_gib_per_gpu: peak.total() / GIB,
        capacity_gib: cluster.gpu.memory_gib,
        fits: peak.total() / GIB <= cluster.gpu.memory_gib,
        bottleneck: breakdown.bottleneck(),
        breakdown,
        memory_gib: peak.into(),
        stages,
        provenance,
    }
}
