//! Peak memory of one rank of one pipeline stage: model state by ZeRO stage, activations of
//! the micro-batches in flight, working buffers, and the runtime's own memory.

use crate::graph::{ModelGraph, OpGraph, Shard};
use crate::spec::{ClusterSpec, Framework, ModelSpec, Plan, Recompute, Schedule};
use crate::units::{Dtype, MIB};
use serde::Serialize;

/// Memory of one rank, in bytes, by what holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MemoryBytes {
    /// Weights (16-bit working copy; gathered layers under ZeRO-3).
    pub weights: f64,
    /// Gradient accumulation buffers.
    pub grads: f64,
    /// Optimizer state: fp32 master weights and Adam moments.
    pub optimizer: f64,
    /// Saved activations of the micro-batches in flight.
    pub activations: f64,
    /// Transient buffers at the peak (a recomputed layer, activation gradients, logits).
    pub working: f64,
    /// CUDA context, cuBLAS workspace, NCCL buffers and allocator fragmentation.
    pub runtime: f64,
}

impl MemoryBytes {
    /// Total bytes.
    pub fn total(&self) -> f64 {
        self.weights + self.grads + self.optimizer + self.activations + self.working + self.runtime
    }
}

/// NCCL buffers per communicator: NCCL_BUFFSIZE (4 MiB, NCCL environment docs) per channel
/// for each of 2 ring peers, over 16 channels (NCCL's usual channel count on NVSwitch
/// systems).
pub const NCCL_BYTES_PER_COMMUNICATOR: f64 = 2.0 * 16.0 * 4.0 * MIB;

/// Bytes per parameter of Transformer Engine's FP8 weight cache on Hopper: a linear module
/// under FP8 keeps the FP8 cast of its weight across micro-batches (Megatron-Core's TE
/// linears pass `is_first_microbatch`, so TE keeps it in the module's `_fp8_workspaces`
/// rather than re-casting each micro-batch: TE `pytorch/module/linear.py`, Megatron-Core
/// `extensions/transformer_engine.py`, `disable_parameter_transpose_cache` off by default),
/// next to the 16-bit weight; Hopper's FP8 GEMMs take only the TN layout, so the cache holds
/// the transposed copy for the input-gradient GEMM too (TE `non_tn_fp8_gemm_supported`
/// false before Blackwell): 1 + 1 bytes. Blackwell's FP8 GEMMs take every layout (TE
/// `is_non_tn_fp8_gemm_supported`: compute capability 10.x and 13+), so there the cache is the
/// FP8 weight alone, 1 byte ([`DeviceSpec::fp8_any_layout`]).
pub const FP8_WEIGHT_CACHE_BYTES_PER_PARAM: f64 = 2.0;

/// Share of dynamically allocated memory (activations and working buffers) lost to the
/// caching allocator's fragmentation at peak (PyTorch reserved vs allocated).
pub const ALLOCATOR_FRAGMENTATION: f64 = 0.05;

/// Model-state bytes per parameter on one rank — (weights, gradients, optimizer state incl.
/// fp32 master weights) — for Adam under ZeRO stage `zero` over `n` ranks (Rajbhandari et
/// al. 2020 §5: stage 1 shards the optimizer state, 2 also the gradients, 3 also the weights),
/// as each framework lays the state out:
/// - Megatron: 16-bit weights, fp32 main gradients, fp32 master + two moments: 2 + 4 + 12 = 18,
///   6 + 12/n with the distributed optimizer (Megatron-LM `theoretical_memory_usage`); pure
///   fp32 keeps no master copy: 4 + 4 + 8.
/// - DeepSpeed, BF16 optimizer (ZeRO ≤ 1, as BLOOM trained): the 16-bit `.grad` next to an
///   fp32 accumulation buffer, and a *whole* fp32 master copy — only the moments are
///   partitioned (deepspeed/runtime/bf16_optimizer.py keeps `fp32_groups_flat` unsharded,
///   as its own comment there admits): 2 + 6 + 4 + 8/n. With ZeRO ≥ 2
///   the ZeRO optimizer partitions master, moments and gradients.
/// - FSDP (torchtitan, llm-foundry): the sharded parameters are the fp32 master copy, with fp32
///   gradients and moments, 16/n under full sharding (PyTorch FSDP `MixedPrecision` keeps
///   full-precision flat parameters); ZeRO-2 (`SHARD_GRAD_OP`, FSDP2
///   `reshard_after_forward=False`) shards them the same way at rest but keeps every layer's
///   16-bit gathered weights from its forward to its backward: 2 + 16/n at the peak; without
///   sharding, autocast also caches 16-bit weights.
pub fn sharded_state_bytes(
    framework: Framework,
    dtype: Dtype,
    zero: u8,
    n: u64,
) -> (f64, f64, f64) {
    let n = n as f64;
    let shard = |bytes: f64, from: u8| if zero >= from { bytes / n } else { bytes };
    match framework {
        _ if matches!(dtype, Dtype::Fp32 | Dtype::Tf32) => {
            (shard(4.0, 3), shard(4.0, 2), shard(8.0, 1))
        }
        Framework::Megatron => (shard(2.0, 3), shard(4.0, 2), shard(12.0, 1)),
        Framework::DeepSpeed if zero <= 1 => (2.0, 6.0, 4.0 + shard(8.0, 1)),
        Framework::DeepSpeed => (shard(2.0, 3), 6.0 / n, 12.0 / n),
        Framework::Torchtitan | Framework::LlmFoundry if zero >= 3 => (4.0 / n, 4.0 / n, 8.0 / n),
        Framework::Torchtitan | Framework::LlmFoundry if zero == 2 => {
            (2.0 + 4.0 / n, 4.0 / n, 8.0 / n)
        }
        Framework::Torchtitan | Framework::LlmFoundry => (6.0, shard(4.0, 2), shard(8.0, 1)),
    }
}

/// [`sharded_state_bytes`] of `plan` over `n` ranks, with Megatron's gradient buffer in the
/// precision the plan reduces in ([`Plan::grad_reduce_bytes`]): Megatron
/// allocates its `main_grad` buffers in fp32 when `accumulate_allreduce_grads_in_fp32` (forced
/// for bf16 by `arguments.py`, off with `--grad-reduce-in-bf16`), else in the parameters' type
/// (`megatron/core/distributed/distributed_data_parallel.py`: `torch.float if
/// grad_reduce_in_fp32 else param_dtype`) — 2 bytes for fp16 by default.
pub fn plan_state_bytes(plan: &Plan, n: u64) -> (f64, f64, f64) {
    let (w, g, o) = sharded_state_bytes(plan.framework, plan.dtype, plan.zero, n);
    if plan.framework != Framework::Megatron || matches!(plan.dtype, Dtype::Fp32 | Dtype::Tf32) {
        return (w, g, o);
    }
    let per = plan.grad_reduce_bytes();
    (
        w,
        if plan.zero >= 2 {
            per / n.max(1) as f64
        } else {
            per
        },
        o,
    )
}

/// Bytes a rank keeps whole, besides its sharded state, of `params` parameters where the
/// schedule holds them whole between micro-batches (FSDP under pipelining,
/// [`dp::schedule`](super::dp::schedule)): (the 16-bit weights under ZeRO-3, which ZeRO-2's
/// layout already counts; every gradient in the reduction precision). Zeros otherwise.
pub fn whole_state_bytes(plan: &Plan, params: f64) -> (f64, f64) {
    if !super::dp::schedule(plan).holds_whole {
        return (0.0, 0.0);
    }
    let weights = if plan.zero >= 3 {
        params * plan.dtype.bytes()
    } else {
        0.0
    };
    (weights, params * plan.grad_reduce_bytes())
}

/// Micro-batches whose activations stage `stage` holds at once (counted in model chunks of
/// L/(p·v) layers for interleaving, else in whole stages).
///
/// GPipe keeps all m; 1F1B keeps min(p − i, m) (Narayanan et al. 2021 §2.2.1); interleaved
/// 1F1B runs (p − i − 1)·2 + (v − 1)·p warm-up chunks plus one (Megatron-LM
/// `forward_backward_pipelining_with_interleaving`), i.e. p·(1 + (p−1)/(pv)) stages' worth on
/// the first rank (Korthikanti et al. 2022 §4.2.3).
pub fn in_flight_chunks(plan: &Plan, stage: u64) -> f64 {
    let (p, m, v) = (plan.pp, plan.n_micro(), plan.vpp);
    match plan.schedule {
        Schedule::Gpipe => m as f64,
        Schedule::OneFOneB => (p - stage).min(m) as f64,
        Schedule::Interleaved => {
            let chunks = ((p - stage - 1) * 2 + (v - 1) * p + 1).min(m * v);
            chunks as f64 / v as f64
        }
    }
}

/// Micro-batches whose chunk-`c` activations stage `stage` holds at most at once: the whole
/// stage's [`in_flight_chunks`] without interleaving. Interleaved, the schedule runs forward k
/// on chunk (k / p) mod v and backward j on chunk v − 1 − (j / p) mod v (Megatron-LM
/// `get_model_chunk_id`), W = (p − i − 1)·2 + (v − 1)·p forwards ahead of the first backward
/// and then one of each (`forward_backward_pipelining_with_interleaving`): after forward W + t,
/// chunk c holds its share of the first W + t + 1 forwards less its share of t backwards. Chunk
/// 0's forwards come first and its backwards last, so it holds more micro-batches than the
/// stage's average — all m of them on stage 0 of a deep pipeline. The difference is periodic
/// in t with period p·v, so one period gives the maximum.
pub fn chunk_in_flight(plan: &Plan, stage: u64, c: u64) -> f64 {
    if plan.schedule != Schedule::Interleaved {
        return in_flight_chunks(plan, stage);
    }
    let mut one = vec![0.0; plan.vpp as usize];
    one[c as usize] = 1.0;
    peak_chunk_bytes(plan, stage, &one)
}

/// Peak activation bytes on stage `stage` whose model chunk c keeps `bytes[c]` per
/// micro-batch: without interleaving [`in_flight_chunks`] micro-batches of the (one) chunk;
/// interleaved, the largest over one period of the schedule (as [`chunk_in_flight`] walks it)
/// of Σ_c (chunk c's micro-batches held after forward W + t) · bytes[c] — the chunks' peaks
/// fall at different steps, so where their sizes differ (the embedding and loss slots, MoE
/// and dense layers, uneven chunks) the stage's peak is not its average chunk times
/// [`in_flight_chunks`]. Equal chunks give exactly that: W + 1 chunk-passes are held at every
/// step of the steady state.
pub fn peak_chunk_bytes(plan: &Plan, stage: u64, bytes: &[f64]) -> f64 {
    if plan.schedule != Schedule::Interleaved {
        return in_flight_chunks(plan, stage) * bytes.iter().sum::<f64>();
    }
    let (p, m, v) = (plan.pp, plan.n_micro(), plan.vpp);
    debug_assert!(
        stage < p && bytes.len() as u64 == v,
        "{} chunks of {v}",
        bytes.len()
    );
    let total = m * v;
    let warmup = ((p - stage - 1) * 2 + (v - 1) * p).min(total);
    let group = p * v;
    // Chunk `k`'s share of the first `n` passes issued chunk-major in groups of p.
    let share = |n: u64, k: u64| (n / group) * p + (n % group).saturating_sub(k * p).min(p);
    // Backward j runs chunk v − 1 − (j / p) mod v: chunk c's are the share of chunk v − 1 − c.
    let held = |t: u64, c: u64| {
        share((warmup + t + 1).min(total), c).saturating_sub(share(t, v - 1 - c)) as f64
    };
    (0..=group.min(total))
        .map(|t| (0..v).map(|c| held(t, c) * bytes[c as usize]).sum::<f64>())
        .fold(0.0, f64::max)
}

/// Activation bytes one layer keeps per micro-batch under `rc`: all saved tensors, those the
/// selective policy keeps (outside the recomputed Megatron-Core modules, the attention core by
/// default), or only the layer input (full, Korthikanti et al. §4.2: 2sbh, /t with sequence
/// parallelism).
pub fn layer_activation_bytes(g: &OpGraph, model: &ModelSpec, sh: &Shard, rc: Recompute) -> f64 {
    match rc {
        Recompute::None => g.saved_bytes(),
        Recompute::Selective => g.saved_selective_bytes(),
        Recompute::Full => (sh.tokens_sp() * model.hidden) as f64 * sh.dtype.bytes(),
    }
}

/// Activation bytes one multi-token prediction depth keeps per micro-batch under `rc`: as a
/// layer, but under full recomputation Megatron-Core checkpoints the depth's projection and
/// layer (`MultiTokenPredictionLayer._proj_and_transformer_layer`) with two h-wide inputs,
/// the hidden state and the embedded tokens, the lookup outside it.
pub fn mtp_activation_bytes(g: &OpGraph, model: &ModelSpec, sh: &Shard, rc: Recompute) -> f64 {
    match rc {
        Recompute::Full => 2.0 * layer_activation_bytes(g, model, sh, rc),
        _ => layer_activation_bytes(g, model, sh, rc),
    }
}

/// What a stage holds: its layers (every chunk's, with each layer's recomputation), and
/// whether it has the embedding and the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageLayout {
    /// Index of the stage.
    pub stage: u64,
    /// (layer index, its recomputation) for every layer held, chunk by chunk.
    pub layers: Vec<(u64, Recompute)>,
    /// Layers of each model chunk, in chunk order (they sum to `layers.len()`).
    pub chunks: Vec<u64>,
    /// Holds the input embedding.
    pub embedding: bool,
    /// Holds the LM head and loss.
    pub head: bool,
}

/// Transformer Engine's FP8 weight bytes on one rank of stage `st` beyond the 16-bit weight
/// the model state counts, over every TE linear's parameters (`Op::fp8`, the multi-token
/// prediction depth's included): FP8 Megatron plans whose weights stay whole on the rank
/// (ZeRO < 3) keep the FP8 cache beside the 16-bit weight ([`FP8_WEIGHT_CACHE_BYTES_PER_PARAM`],
/// 1 byte where the device's FP8 GEMMs take every layout, `any_layout`). With FP8 weights
/// (`Plan::fp8_param_gather`) the FP8 weight and its transpose replace the 16-bit copy, 1 + 1
/// bytes where it took 2 (nothing beyond it), and on a device that needs no transpose the FP8
/// weight alone, 1 byte fewer. Zero otherwise: 16-bit plans keep no FP8 copy, and with
/// weights gathered per use (ZeRO-3, FSDP) the copy is taken to live as long as the gathered
/// weight (an assumption: no source was found for how Megatron's FSDP paths keep TE's cache).
pub fn fp8_weight_cache_bytes(
    model: &ModelSpec,
    plan: &Plan,
    graphs: &ModelGraph,
    st: &StageLayout,
    any_layout: bool,
) -> f64 {
    let per_param = if plan.keeps_fp8_weight_copy() {
        if any_layout {
            FP8_WEIGHT_CACHE_BYTES_PER_PARAM / 2.0
        } else {
            FP8_WEIGHT_CACHE_BYTES_PER_PARAM
        }
    } else if any_layout && plan.fp8_param_gather && plan.fp8_param_gather_refusal().is_none() {
        -1.0
    } else {
        return 0.0;
    };
    let te = |g: &OpGraph| {
        let (dense, experts) = g.te_params();
        dense + experts
    };
    let layers: f64 = st
        .layers
        .iter()
        .map(|&(i, _)| te(graphs.layer(model, i)))
        .sum();
    let mtp = match &graphs.mtp {
        Some(g) if st.head => model.mtp_layers as f64 * te(g),
        _ => 0.0,
    };
    per_param * (layers + mtp)
}

/// Peak memory of one rank of stage `st`. `dense_params`/`expert_params` are the rank's
/// parameters; `comms` the number of NCCL communicators the rank belongs to;
/// `cluster` the device (its CUDA context share and FP8 layouts).
#[allow(clippy::too_many_arguments)]
pub fn stage_memory(
    model: &ModelSpec,
    plan: &Plan,
    graphs: &ModelGraph,
    st: &StageLayout,
    dense_params: f64,
    expert_params: f64,
    largest_layer_params: f64,
    comms: u64,
    cluster: &ClusterSpec,
) -> MemoryBytes {
    let cuda_context_bytes = cluster.cuda_context_gib * crate::units::GIB;
    let sh = Shard::of(plan);
    let dp_ranks = plan.dp * plan.cp;
    let (wd, gd, od) = plan_state_bytes(plan, dp_ranks);
    let (we, ge, oe) = plan_state_bytes(plan, plan.expert_dp());
    let mut weights = dense_params * wd + expert_params * we;
    let mut grads = dense_params * gd + expert_params * ge;
    let optimizer = dense_params * od + expert_params * oe;
    let (whole_w, whole_g) = whole_state_bytes(plan, dense_params + expert_params);
    weights += whole_w;
    grads += whole_g;
    weights += fp8_weight_cache_bytes(model, plan, graphs, st, cluster.gpu.fp8_any_layout);
    let holds_whole = super::dp::schedule(plan).holds_whole;
    if plan.zero >= 3 && !holds_whole {
        // FSDP gathers a layer's weights and prefetches the next (2 layers in 16-bit).
        weights += 2.0 * largest_layer_params * plan.dtype.bytes();
        if plan.framework == Framework::Torchtitan && (st.embedding || st.head) {
            // torchtitan shards the embedding, final norm and head as the root module, whose
            // parameters FSDP2 keeps gathered from the forward through the backward
            // (`fully_shard`: "The root FSDP state has its value specially set to False as a
            // heuristic since its parameters would typically be immediately all-gathered for
            // backward"). Counted beside two layers: one more than at the loss, where only
            // the last layer (which torchtitan keeps unsharded after its forward) is gathered.
            let root = graphs.embedding.params() + graphs.head.params();
            weights += root * plan.dtype.bytes();
        }
    }
    if !holds_whole && (plan.zero >= 3 || (plan.zero == 2 && plan.framework.fsdp())) {
        // FSDP holds one layer's unsharded gradients in the reduction precision before
        // reduce-scattering them.
        grads += largest_layer_params * plan.grad_reduce_bytes();
    }

    // Each chunk's bytes per micro-batch: its layers, the embedding with the first chunk of
    // the first stage, the head (and multi-token prediction depths) with the last chunk of the
    // last stage, whose backward follows each forward at once under 1F1B and interleaving (one
    // micro-batch held; GPipe keeps all m) — as the simulator holds them (`stages::chunk_costs`).
    let in_flight = in_flight_chunks(plan, st.stage);
    let mut chunk_bytes: Vec<f64> = (0..st.chunks.len() as u64)
        .map(|c| {
            super::stages::chunk_layers(st, plan, c)
                .iter()
                .map(|&(i, rc)| layer_activation_bytes(graphs.layer(model, i), model, &sh, rc))
                .sum()
        })
        .collect();
    if st.embedding {
        chunk_bytes[0] += graphs.embedding.saved_bytes();
    }
    if st.head {
        let last = chunk_bytes.len() - 1;
        chunk_bytes[last] += graphs.head.saved_bytes();
        if let Some(g) = &graphs.mtp {
            let rc = super::stages::mtp_recompute(plan);
            chunk_bytes[last] += model.mtp_layers as f64 * mtp_activation_bytes(g, model, &sh, rc);
        }
    }
    let activations = peak_chunk_bytes(plan, st.stage, &chunk_bytes);

    // Working set at the peak: the layer being back-propagated re-materialises what
    // recomputation dropped, plus two activation-gradient buffers of its widest tensor; the
    // last stage also holds 16-bit logits next to their fp32 copy during the loss (a fused
    // loss keeps no copy: only the logits' 16-bit gradient appears beside them).
    let mtp = graphs.mtp.as_ref().filter(|_| st.head).map(|g| {
        let rc = super::stages::mtp_recompute(plan);
        g.saved_bytes() - mtp_activation_bytes(g, model, &sh, rc)
    });
    let rematerialised = st
        .layers
        .iter()
        .map(|&(i, rc)| {
            let g = graphs.layer(model, i);
            g.saved_bytes() - layer_activation_bytes(g, model, &sh, rc)
        })
        .chain(mtp)
        .fold(0.0, f64::max);
    // Per token of the micro-batch: the MLP's hidden width on this rank, which in an MoE
    // layer holds top_k routed copies of every token at the expert's width over tp (the
    // expert-TP group gathers the routed tokens for shards f/tp wide, `graph::layer::moe_mlp`;
    // whole experts, etp 1, take a tp-th of them at full width: the same bytes), or the
    // shared experts' width where wider. MLA's up-projections can be wider still
    // (DeepSeek-V3's keys and values: 128·256 = 32768).
    let mla_width = model.mla.map_or(0, |m| {
        model.heads * (m.qk_nope_dim + m.v_dim).max(m.qk_nope_dim + m.qk_rope_dim) / plan.tp
    });
    let mlp_width = |i: u64| match &model.moe {
        Some(m) if model.is_moe_layer(i) => {
            (m.top_k * m.expert_ffn_hidden).max(m.shared_ffn_hidden) / plan.tp
        }
        _ => model.ffn_hidden / plan.tp,
    };
    let widest = st
        .layers
        .iter()
        .map(|&(i, _)| mlp_width(i))
        .fold(model.hidden.max(mla_width), u64::max) as f64;
    let grad_buffers = 2.0 * sh.tokens() as f64 * widest * sh.dtype.bytes();
    let mut working = rematerialised + grad_buffers;
    if st.head {
        let e = sh.dtype.bytes();
        let logits = sh.tokens() as f64 * plan.vocab_rows(model.vocab) as f64;
        let per_logit = plan.framework.loss_working_bytes(e, plan.loss_fusion);
        working = working.max(per_logit * logits);
        if plan.framework.train_metric_passes() > 0 {
            // Training metrics run after the backward, when one micro-batch's activations
            // are gone but its 16-bit logits stay with the outputs, beside one metric's fp32
            // copy and fp32 log-softmax at a time (`graph::ends::head`).
            working = working.max((e + 8.0) * logits - activations / in_flight.max(1.0));
        }
    }

    let runtime = cuda_context_bytes
        + comms as f64 * NCCL_BYTES_PER_COMMUNICATOR
        + ALLOCATOR_FRAGMENTATION * (activations + working);
    MemoryBytes {
        weights,
        grads,
        optimizer,
        activations,
        working,
        runtime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 2: 18 bytes/param without a distributed optimizer, 6 + 12/dp with it.
    #[test]
    fn bytes_per_param_by_zero_stage() {
        let sum = |t: (f64, f64, f64)| t.0 + t.1 + t.2;
        let m = Framework::Megatron;
        assert_eq!(sum(sharded_state_bytes(m, Dtype::Bf16, 0, 64)), 18.0);
        assert_eq!(
            sum(sharded_state_bytes(m, Dtype::Bf16, 1, 64)),
            6.0 + 12.0 / 64.0
        );
        assert_eq!(
            sum(sharded_state_bytes(m, Dtype::Bf16, 2, 64)),
            2.0 + 16.0 / 64.0
        );
        assert_eq!(sum(sharded_state_bytes(m, Dtype::Bf16, 3, 64)), 18.0 / 64.0);
        assert_eq!(sum(sharded_state_bytes(m, Dtype::Fp32, 0, 8)), 16.0);
        // DeepSpeed BF16 optimizer with ZeRO-1 (BLOOM): bf16 weights 2, bf16 + fp32 grads 6,
        // whole fp32 master 4, moments 8/dp.
        assert_eq!(
            sum(sharded_state_bytes(Framework::DeepSpeed, Dtype::Bf16, 1, 8)),
            12.0 + 8.0 / 8.0
        );
        // FSDP full shard: 16/N.
        assert_eq!(
            sum(sharded_state_bytes(
                Framework::Torchtitan,
                Dtype::Bf16,
                3,
                64
            )),
            16.0 / 64.0
        );
    }

    /// Megatron's gradient buffer follows the reduction precision: fp32 for bf16 (4 bytes,
    /// the 18 of a bf16 plan), bf16 under `--grad-reduce-in-bf16` (2), fp16 by default for an
    /// fp16 plan (2) and fp32 with `--accumulate-allreduce-grads-in-fp32` (4); ZeRO-2 shards
    /// it over the 64 ranks. Other frameworks keep their own layout.
    #[test]
    fn megatron_gradient_buffer_in_the_reduction_precision() {
        let grads = |dtype, reduce, zero| {
            let mut p = Plan::new(64, 1, 1, 1, 64, 2048);
            (p.dtype, p.grad_reduce_dtype, p.zero) = (dtype, reduce, zero);
            plan_state_bytes(&p, 64).1
        };
        assert_eq!(grads(Dtype::Bf16, None, 1), 4.0);
        assert_eq!(grads(Dtype::Bf16, Some(Dtype::Bf16), 1), 2.0);
        assert_eq!(grads(Dtype::Fp16, None, 0), 2.0);
        assert_eq!(grads(Dtype::Fp16, Some(Dtype::Fp32), 0), 4.0);
        assert_eq!(grads(Dtype::Bf16, Some(Dtype::Bf16), 2), 2.0 / 64.0);
        assert_eq!(grads(Dtype::Fp32, None, 0), 4.0);
        let mut t = Plan::new(64, 1, 1, 1, 64, 2048);
        (t.framework, t.zero, t.grad_reduce_dtype) = (Framework::Torchtitan, 3, Some(Dtype::Bf16));
        assert_eq!(
            plan_state_bytes(&t, 64),
            sharded_state_bytes(Framework::Torchtitan, Dtype::Bf16, 3, 64)
        );
    }

    /// FP8 Megatron plans keep Transformer Engine's FP8 weight and its transpose beside the
    /// 16-bit weight, 2 bytes per linear parameter (unless the weights themselves are FP8).
    /// Llama 3 8B's linears per layer: Q and O
    /// 4096² each, K and V 4096·1024 each, gate/up/down 3·4096·14336, 218,103,808; over 32
    /// layers 6,979,321,856, so 13,958,643,712 bytes on one GPU and half at tp 2. Nothing in
    /// bf16, and nothing under ZeRO-3, whose gathered weights are not kept.
    #[test]
    fn fp8_plans_cache_each_linear_weight_and_its_transpose() {
        use crate::spec::{load_cluster, load_model};
        let model = load_model("llama3-8b").unwrap();
        let cluster = load_cluster("h100x8").unwrap();
        let weights = |tp: u64, dtype: Dtype, zero: u8| {
            let mut p = Plan::new(8 / tp, tp, 1, 1, 64, 8192);
            (p.dtype, p.zero) = (dtype, zero);
            crate::cost::estimate(&model, &cluster, &p, None).stages[0]
                .memory
                .weights
        };
        let bf16 = weights(1, Dtype::Bf16, 1);
        assert_eq!(weights(1, Dtype::Fp8, 1) - bf16, 13_958_643_712.0);
        let bf16_tp2 = weights(2, Dtype::Bf16, 1);
        assert_eq!(weights(2, Dtype::Fp8, 1) - bf16_tp2, 6_979_321_856.0);
        assert_eq!(weights(1, Dtype::Fp8, 3), weights(1, Dtype::Bf16, 3));
        // FP8 weights (`--fp8-param-gather`): the FP8 weight and its transpose take the 16-bit
        // copy's 2 bytes, and no cache sits beside them.
        let mut p = Plan::new(8, 1, 1, 1, 64, 8192);
        (p.dtype, p.zero, p.fp8_param_gather) = (Dtype::Fp8, 1, true);
        let fp8_weights = crate::cost::estimate(&model, &cluster, &p, None).stages[0].memory;
        assert_eq!(fp8_weights.weights, bf16);
    }

    /// Blackwell's FP8 GEMMs take every layout (`DeviceSpec::fp8_any_layout`), so Transformer
    /// Engine keeps no transposed copy: on the B200 the cache is the FP8 weight alone, 1 byte
    /// per linear parameter (Llama 3 8B's 6,979,321,856 on one GPU: 6,979,321,856 bytes where
    /// the H100 holds twice that), and FP8 weights (`--fp8-param-gather`) take 1 byte where
    /// the 16-bit copy took 2: 6,979,321,856 bytes fewer than bf16.
    #[test]
    fn blackwell_fp8_weights_need_no_transpose() {
        use crate::spec::{load_cluster, load_model};
        let model = load_model("llama3-8b").unwrap();
        let weights = |cluster: &str, dtype: Dtype, fp8_params: bool| {
            let cluster = load_cluster(cluster).unwrap();
            let mut p = Plan::new(8, 1, 1, 1, 64, 8192);
            (p.dtype, p.zero, p.fp8_param_gather) = (dtype, 1, fp8_params);
            crate::cost::estimate(&model, &cluster, &p, None).stages[0]
                .memory
                .weights
        };
        let bf16 = weights("b200x8", Dtype::Bf16, false);
        assert_eq!(bf16, weights("h100x8", Dtype::Bf16, false));
        assert_eq!(weights("b200x8", Dtype::Fp8, false) - bf16, 6_979_321_856.0);
        assert_eq!(
            weights("h100x8", Dtype::Fp8, false) - bf16,
            13_958_643_712.0
        );
        assert_eq!(bf16 - weights("b200x8", Dtype::Fp8, true), 6_979_321_856.0);
        assert_eq!(weights("h100x8", Dtype::Fp8, true), bf16);
    }

    /// llm-foundry's training metrics run after the backward: one micro-batch's activations
    /// are freed, its bf16 logits stay beside an fp32 copy and an fp32 log-softmax, 10 bytes
    /// per logit. GPT-2 XL cut to 4 layers (vocabulary 50,257, hidden 1,600), fully
    /// recomputed (only each layer's input saved), b·s = 8·1024 on one GPU: 8,192 × 50,257 =
    /// 411,705,344 logits hold 4,117,053,440 bytes at that moment — more than the activations
    /// (the loss's saved logits among them) plus the loss's working set (2 + 4 bytes per
    /// logit), so the dynamic peak is exactly the metrics' bytes.
    #[test]
    fn training_metrics_can_set_the_peak() {
        use crate::spec::{Recompute, load_cluster, load_model};
        let mut model = load_model("gpt2-xl").unwrap();
        model.layers = 4;
        let cluster = load_cluster("a100x8").unwrap().with_gpus(1).unwrap();
        let mem = |framework| {
            let mut p = Plan::new(1, 1, 1, 8, 8, 1024);
            p.recompute = Recompute::Full;
            p.framework = framework;
            crate::cost::estimate(&model, &cluster, &p, None).stages[0].memory
        };
        let m = mem(Framework::LlmFoundry);
        assert_eq!(m.activations + m.working, 4_117_053_440.0);
        // Without training metrics the working set is the loss's: torchtitan's eager
        // cross-entropy holds 8 bytes per logit beside its saved output, 8 · 411,705,344.
        assert_eq!(mem(Framework::Torchtitan).working, 3_293_642_752.0);
        // Megatron's unfused loss over the vocabulary it pads to 50,304 (`vocab_rows`): 6
        // bytes per logit of 8,192 × 50,304.
        assert_eq!(mem(Framework::Megatron).working, 6.0 * 8_192.0 * 50_304.0);
    }

    /// A fused loss (flash-attn's cross-entropy, llm-foundry) keeps no fp32 copy of the
    /// logits: with all 48 GPT-2 XL layers' activations held (no recomputation) the metrics'
    /// moment no longer sets the peak, and the working set is the loss's bf16 logit gradient,
    /// 2 · 8,192 · 50,257 = 823,410,688 bytes (Megatron's unfused loss adds the fp32 copy: 6
    /// bytes; torchtitan's eager one holds two fp32 gradients beside its saved output: 8).
    #[test]
    fn a_fused_loss_keeps_no_fp32_logits() {
        use crate::spec::{load_cluster, load_model};
        let model = load_model("gpt2-xl").unwrap();
        let cluster = load_cluster("a100x8").unwrap().with_gpus(1).unwrap();
        let working = |framework| {
            let mut p = Plan::new(1, 1, 1, 8, 8, 1024);
            p.framework = framework;
            crate::cost::estimate(&model, &cluster, &p, None).stages[0]
                .memory
                .working
        };
        assert_eq!(working(Framework::LlmFoundry), 823_410_688.0);
        // Megatron pads the vocabulary to 50,304 (`Framework::vocab_rows`).
        assert_eq!(working(Framework::Megatron), 6.0 * 8_192.0 * 50_304.0);
        assert_eq!(working(Framework::Torchtitan), 4.0 * 823_410_688.0);
    }

    /// Transformer Engine's fused loss under Megatron (`Plan::loss_fusion`) writes the
    /// gradient into the bf16 logits it keeps: nothing besides them at the loss, so GPT-2 XL's
    /// working set is the two activation-gradient buffers, 2 · 8,192 · 6,400 · 2 =
    /// 209,715,200 bytes, and the loss keeps 2 bytes per logit where the unfused one keeps its
    /// fp32 softmax: 2 · 8,192 · 50,304 bytes fewer activations.
    #[test]
    fn te_fused_loss_writes_its_gradient_into_the_logits() {
        use crate::spec::{load_cluster, load_model};
        let model = load_model("gpt2-xl").unwrap();
        let cluster = load_cluster("a100x8").unwrap().with_gpus(1).unwrap();
        let memory = |loss_fusion| {
            let mut p = Plan::new(1, 1, 1, 8, 8, 1024);
            p.loss_fusion = loss_fusion;
            crate::cost::estimate(&model, &cluster, &p, None).stages[0].memory
        };
        let (fused, unfused) = (memory(true), memory(false));
        assert_eq!(fused.working, 209_715_200.0);
        assert_eq!(
            unfused.activations - fused.activations,
            2.0 * 8_192.0 * 50_304.0
        );
    }

    /// The activation-gradient buffers of a stage are as wide as its widest MLP on the rank:
    /// in a Mixtral layer the experts see top_k = 2 routed copies of each token at width
    /// 14,336, so stage 0 of a 4-layer Mixtral at pp = 2 (1,024 tokens, no recomputation, no
    /// head) works in 2 buffers × 1,024 × 2·14,336 × 2 bytes = 117,440,512; the same model
    /// dense has half of that, and with tp = 2 each rank's share halves again.
    #[test]
    fn moe_gradient_buffers_hold_the_routed_tokens() {
        use crate::spec::{load_cluster, load_model};
        let mut model = load_model("mixtral-8x7b").unwrap();
        model.layers = 4;
        let cluster = load_cluster("a100x8").unwrap();
        let working = |model: &ModelSpec, tp: u64| {
            let p = Plan::new(1, tp, 2, 1, 8, 1024);
            crate::cost::estimate(model, &cluster.with_gpus(2 * tp).unwrap(), &p, None).stages[0]
                .memory
                .working
        };
        assert_eq!(working(&model, 1), 117_440_512.0);
        assert_eq!(working(&model, 2), 117_440_512.0 / 2.0);
        let mut dense = model.clone();
        dense.moe = None;
        assert_eq!(working(&dense, 1), 117_440_512.0 / 2.0);
    }

    /// GPipe runs every forward before any backward, so each stage holds all m micro-batches
    /// of everything it saves — the head included — and 1F1B's last stage holds one: with
    /// pp = 2 and m = 8 the last stage's activations under GPipe are exactly 8× 1F1B's.
    #[test]
    fn gpipe_last_stage_holds_every_micro_batch_head_included() {
        use crate::spec::{load_cluster, load_model};
        let model = load_model("gpt2-xl").unwrap();
        let cluster = load_cluster("a100x8").unwrap();
        let act = |schedule| {
            let mut p = Plan::new(1, 1, 2, 1, 8, 1024);
            p.schedule = schedule;
            let e = crate::cost::estimate(&model, &cluster, &p, None);
            e.stages[1].memory.activations
        };
        let (gpipe, one_f_one_b) = (act(Schedule::Gpipe), act(Schedule::OneFOneB));
        assert!(
            (gpipe / one_f_one_b - 8.0).abs() < 1e-12,
            "{gpipe} vs {one_f_one_b}"
        );
    }
}
