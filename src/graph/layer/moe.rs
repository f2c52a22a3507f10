//! The MLP of a mixture-of-experts layer: router, token exchange, routed experts and the
//! shared experts beside them.

use super::super::linear::{fp8_casts, tp_conjugates};
use super::super::{Coll, Group, Kernel, MemClass, Op, Shard};
use super::{activation, mlp_ops};
use crate::spec::{Framework, ModelSpec};
use crate::units::Dtype;

/// CUDA streams Transformer Engine spreads a grouped linear's per-expert GEMMs over
/// (`transformer_engine/common/util/multi_stream.cpp`, `get_num_compute_streams`: 4).
/// Each round of this many GEMMs shares the SMs: a round of 4 experts' 256 × 1536 GEMMs in
/// 128 × 256 tiles holds 48 tiles for an H100's 132 SMs, where one kernel over 128 experts'
/// tiles would fill its waves (the preset model then picks the tile shape and split-K that
/// fill a round best, as cuBLAS's heuristics would).
pub const TE_GEMM_STREAMS: u64 = 4;

/// The clamp of a clamped gated activation (gpt-oss: gate ≤ l, |up| ≤ l before
/// `(up + 1)·gate·σ(1.702·gate)`), outside the fused activation kernel, over `tokens` × 2`f`
/// of fc1's output. Megatron-Core's `weighted_bias_quick_geglu_impl`
/// (megatron/core/fusions/fused_bias_geglu.py) splits the input (`chunk`, a view), clamps each
/// half and concatenates them (`torch.cat`) before the fused kernel: forward reads 4f and
/// writes 4f per token; autograd's clamp backward reads the gradient and the saved input of
/// each half and writes the masked gradient (reads 4f, writes 2f), and `chunk`'s backward
/// concatenates the two (reads 2f, writes 2f). The clamps keep their input, fc1's output
/// (2f), beside the clamped copy the fused kernel keeps. Other frameworks are priced as
/// transformers' `GptOssExperts` and torchtitan clamp, two strided views of the output: no
/// concatenation either way, the same masked gradients, the same kept input.
fn glu_clamp(tokens: f64, f: f64, sh: &Shard) -> Op {
    let x = tokens * f * sh.dtype.bytes();
    if sh.framework == Framework::Megatron {
        Op::memory("glu_clamp", 8.0 * x, 10.0 * x, 2.0 * x)
    } else {
        Op::memory("glu_clamp", 4.0 * x, 6.0 * x, 2.0 * x)
    }
}

/// fc2's bias on Megatron-Core's grouped experts, scaled by each token's routing
/// probability: `TEGroupedMLP._apply_bias` (megatron/core/transformer/moe/experts.py) adds it
/// outside the grouped GEMM, expert by expert: `torch.cat([t + b * p for t, b, p in
/// zip(split(out), biases, split(probs))])`. Forward, per local expert, `b * p` writes a
/// token-wide tensor and the add reads it with fc2's output and writes the sum (4 units of
/// `out` bytes over the experts, 2·`local` kernels), and the concatenation copies the whole
/// (2 units, a kernel). Backward, per expert, the bias gradient (`grad · p`, summed over the
/// tokens) and the probability gradient (`grad · b`, summed over the hidden size) each write
/// a product and read it back (6 units, 4·`local` kernels), and `split`'s backward
/// concatenates the gradient (2 units). fc1's bias is added in the GEMM's epilogue (Transformer
/// Engine's `GroupedLinear`), priced with the GEMM.
fn expert_fc2_bias(out: f64, local: u64) -> Op {
    let n = local as f64;
    let pass = |units: f64, kernels: f64| {
        (0..kernels as usize).map(move |_| Kernel::Memory {
            class: MemClass::Elementwise,
            bytes: units * out / kernels,
        })
    };
    let mut op = Op::memory("expert_fc2_bias", 0.0, 0.0, 0.0);
    op.fwd = pass(4.0, 2.0 * n).chain(pass(2.0, 1.0)).collect();
    op.bwd = pass(6.0, 4.0 * n).chain(pass(2.0, 1.0)).collect();
    op
}

/// The MLP of an MoE layer as Megatron-Core's all-to-all dispatcher runs it (Fedus et al.
/// 2021; `MoEAlltoAllTokenDispatcher`, megatron/core/transformer/moe/token_dispatcher.py:
/// "permute → A2A(EP) → AG(TP) → sort_chunk", and back "sort_chunk → RS(TP) → A2A(EP) →
/// unpermute"; the chunk sorts where a rank holds several experts). Each rank routes its own
/// sequence-parallel shard of the tokens; the all-to-all moves its top-k copies over the EP
/// group; the expert-TP group (etp ranks: tp, Megatron's default
/// `--expert-tensor-parallel-size`, or 1) then all-gathers the routed tokens so each rank's
/// expert shard (width f/etp) sees all of them, and reduce-scatters the outputs back; with
/// etp 1 nothing is gathered and each rank computes whole experts on the tokens routed to it.
/// Tokens are assumed balanced: the local experts receive etp times the rank's own routed
/// tokens in total. Without sequence parallelism and tp > 1 (which Megatron refuses for MoE)
/// every TP rank holds all tokens: conjugates wrap the block and nothing is gathered inside
/// it.
pub(super) fn moe_mlp(model: &ModelSpec, sh: &Shard) -> Vec<Op> {
    let m = model
        .moe
        .as_ref()
        .expect("moe layer of a model with experts");
    let e = sh.dtype.bytes();
    let (h, t) = (model.hidden, sh.etp);
    let local = m.experts / sh.ep;
    // Tokens this rank routes, and those its expert shards compute after the expert-TP
    // gather (all of the TP group's with etp = tp; its own with etp 1).
    let own = sh.tokens_sp();
    let own_routed = own * m.top_k;
    let routed = if sh.sp {
        own_routed * t
    } else {
        sh.tokens() * m.top_k
    };
    let per_expert = routed.div_ceil(local);
    let gated = model.arch.gated_mlp();
    let f = m.expert_ffn_hidden / t;
    let width = if gated { 2 * f } else { f };
    let own_f = own as f64;
    let sent = own_routed as f64 * h as f64 * e;
    let gathered = routed as f64 * h as f64 * e;
    // The router's GEMM keeps its input for the weight gradient, and the fp32 logits for the
    // softmax/top-k backward.
    let router_params = (h * m.experts) as f64 + if m.router_bias { m.experts as f64 } else { 0.0 };
    let mut router = Op::linear(
        "router",
        own,
        m.experts,
        h,
        router_params,
        own_f * h as f64 * e + own_f * m.experts as f64 * 4.0,
    );
    // Megatron-Core's TopKRouter multiplies by its weight outside Transformer Engine.
    router.fp8 = false;
    router.fwd.push(Kernel::Memory {
        class: MemClass::Reduction,
        bytes: own_f * m.experts as f64 * 8.0,
    });
    let a2a = |name| {
        let k = Kernel::Comm {
            coll: Coll::AllToAll,
            group: Group::Ep,
            bytes: sent,
            overlapped: false,
        };
        let mut op = Op::memory(name, 2.0 * sent, 2.0 * sent, 0.0);
        if sh.ep > 1 {
            op.fwd.push(k.clone());
            op.bwd.insert(0, k);
        }
        op
    };
    let (gather, scatter) = if sh.sp && t > 1 {
        tp_conjugates(sh, gathered)
    } else {
        (None, None)
    };
    // The local experts' GEMMs as kernels: Transformer Engine's `GroupedLinear` (Megatron's
    // `TEGroupedMLP`) issues one cuBLAS GEMM per expert, spread over its compute streams, so
    // a round of `TE_GEMM_STREAMS` GEMMs shares the SMs at once; DeepSpeed-MoE's `Experts`
    // (deepspeed/moe/experts.py) runs its experts one after the other on one stream; one
    // grouped kernel tiles every expert's GEMM together in torchtitan (`torch._grouped_mm`)
    // and llm-foundry (MegaBlocks' dMoE, `grouped_gemm`).
    let rounds = |m: u64, n: u64, k: u64| -> Vec<Kernel> {
        let per = match sh.framework {
            Framework::Megatron => TE_GEMM_STREAMS,
            Framework::DeepSpeed => 1,
            Framework::Torchtitan | Framework::LlmFoundry => local,
        };
        (0..local)
            .step_by(per as usize)
            .map(|first| Kernel::Gemm {
                batch: per.min(local - first),
                m,
                n,
                k,
            })
            .collect()
    };
    let grouped = |name, n, k, params: f64, saved: f64| Op {
        name,
        fwd: rounds(per_expert, n, k),
        bwd: [rounds(per_expert, k, n), rounds(k, n, per_expert)].concat(),
        params,
        saved_bytes: saved,
        saved_selective_bytes: saved,
        selective_fwd: Vec::new(),
        fp8: true,
    };
    let r = routed as f64;
    // Each grouped GEMM keeps its input for the weight gradient: the FP8 cast under FP8
    // training (Transformer Engine's `GroupedLinear` saves its quantized `inputmats`, as
    // `Linear` does), else the 16-bit activation.
    let kept = sh.saved_gemm_input_bytes();
    // Biases (gpt-oss's experts): fc1's split over the expert-TP ranks with its columns, fc2's
    // whole on each, as a row-parallel linear keeps it.
    let (b1, b2) = if model.mlp_bias { (width, h) } else { (0, 0) };
    let fc1 = grouped(
        "expert_fc1",
        width,
        h,
        (local * (h * width + b1)) as f64,
        r * h as f64 * kept,
    );
    let fc2 = grouped(
        "expert_fc2",
        h,
        f,
        (local * (f * h + b2)) as f64,
        r * f as f64 * kept,
    );
    let mut ops = vec![router, a2a("dispatch")];
    ops.extend(gather.map(|mut op| {
        op.name = "expert_tp_gather";
        op
    }));
    // The received tokens arrive grouped by source rank; with several local experts the
    // dispatcher regroups them by expert before the GEMMs and back after ("Permutation 2",
    // `sort_chunks_by_idxs`, megatron/core/transformer/moe/token_dispatcher.py, fused or
    // not): a copy of every routed token each way, and of its gradient in the backward.
    let regroup = |name| Op::memory(name, 2.0 * gathered, 2.0 * gathered, 0.0);
    if local > 1 {
        ops.push(regroup("sort_chunks"));
    }
    ops.push(fp8_casts(fc1, sh, r * h as f64, r * width as f64, false));
    if let (true, Some(_)) = (gated, model.swiglu_limit) {
        ops.push(glu_clamp(r, f as f64, sh));
    }
    ops.extend([
        activation(gated, r, f as f64, sh),
        fp8_casts(fc2, sh, r * f as f64, r * h as f64, false),
    ]);
    if model.mlp_bias && sh.framework == Framework::Megatron {
        ops.push(expert_fc2_bias(r * h as f64 * e, local));
    }
    if local > 1 {
        ops.push(regroup("unsort_chunks"));
    }
    ops.extend(scatter.map(|mut op| {
        op.name = "expert_tp_scatter";
        op
    }));
    ops.push(a2a("combine"));
    if m.shared_ffn_hidden > 0 {
        ops.extend(shared_experts(
            model,
            sh,
            m.shared_ffn_hidden,
            m.shared_gate,
        ));
    }
    ops
}

/// The shared experts of an MoE layer, as Megatron-Core's `MoELayer` runs them without
/// `--moe-shared-expert-overlap`: a tensor-parallel MLP (`SharedExpertMLP`, an `MLP`) on the
/// layer's input, its output scaled by a sigmoid gate where the model has one (Qwen2-MoE:
/// `sigmoid(x·w)` per token, `shared_experts.py`), then added to the routed output (reads
/// both, writes the sum; its backward passes the gradient to both unchanged). Megatron-LM
/// @000c4ac computes them before the router and adds them in the combine; earlier versions
/// after the combine: the same work, which planner prices one after the other (no overlap
/// with the token exchange). Their fc1 reads the input the router already keeps in 16 bits
/// (under FP8, Transformer Engine keeps its own cast).
fn shared_experts(model: &ModelSpec, sh: &Shard, ffn: u64, gate: bool) -> Vec<Op> {
    let e = sh.dtype.bytes();
    let x = (sh.tokens_sp() * model.hidden) as f64 * e;
    let mut ops = mlp_ops(model, sh, ffn, ["shared_fc1", "shared_fc2"], false);
    if sh.dtype != Dtype::Fp8 {
        ops[0].saved_bytes = 0.0;
        ops[0].saved_selective_bytes = 0.0;
    }
    ops[1].name = if model.arch.gated_mlp() {
        "shared_swiglu"
    } else {
        "shared_gelu"
    };
    if gate {
        // The 1×h gate's GEMV reads the input (its logits are negligible), and the scaling
        // reads and writes the output, keeping it for the gate's gradient; backward the
        // same again.
        let mut g = Op::memory("shared_gate", 3.0 * x, 3.0 * x, x);
        g.params = model.hidden as f64;
        ops.push(g);
    }
    ops.push(Op::memory("shared_add", 3.0 * x, 0.0, 0.0));
    ops
}

#[cfg(test)]
mod tests;
