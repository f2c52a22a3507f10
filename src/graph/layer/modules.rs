//! Megatron-Core's selective recomputation modules (`--recompute-modules`) as what each
//! operator keeps and re-runs under selective recomputation (`Op::saved_selective_bytes`,
//! `Op::selective_fwd`).

use super::super::{Coll, Kernel, Op, Shard};
use crate::spec::{Arch, ModelSpec, RecomputeModules as M};

/// The attention core's operators (flash, or the unfused scores, softmax, dropout, context).
pub const ATTENTION_CORE: [&str; 5] = ["attention", "scores", "softmax", "attn_dropout", "context"];

/// Re-run `op` whole in backward, keeping `kept` bytes of what it saved.
fn rerun(op: &mut Op, kept: f64) {
    op.saved_selective_bytes = kept;
    op.selective_fwd = op.fwd.clone();
}

/// Applies the plan's modules to one layer's operators (`moe`: an expert layer), as
/// Megatron-Core's `TransformerLayer`, `MLASelfAttention`, `MoELayer` and `TEGroupedMLP` run
/// them (megatron/core/transformer, `recompute_modules` in transformer_config.py). The layer
/// is built with the attention core marked (`core_attn`, the default); every other module:
///
/// - `layernorm` re-runs the norms that are modules of their own and frees their output
///   (`CheckpointWithoutOutput`): MLA's input norm, whose output both down-projections read,
///   and an MoE layer's pre-MLP norm, whose output the router and the shared experts read
///   (the TE layer spec fuses every other norm into the next linear: an `IdentityOp`, which
///   Megatron skips). Under FP8 the consumers save that 16-bit output in place of their FP8
///   cast (`set_save_original_input`), freed too.
/// - `mla_up_proj` re-runs the latents' norms, the up-projections and the rotary embedding
///   (`qkv_up_proj_and_rope_apply`) and frees their outputs: Q, K and V, which the attention
///   core would keep; kept are its inputs, the latents (what the norms save) and the rotary
///   key.
/// - `moe_act` re-runs the routed experts' activation and frees its output (what fc2 saves).
/// - `mlp` checkpoints a dense layer's MLP: it keeps the MLP's input (the pre-norm hidden
///   state the fused norm saves) and re-runs norm, fc1, activation and fc2 with their TP
///   collectives.
/// - `moe` checkpoints an expert layer's MLP (`MoELayer`, `moe_layer_recompute`): it keeps
///   the norm's output (the router's input) and re-runs router, token exchange, experts and
///   shared experts.
/// - `shared_experts` checkpoints the shared experts (`SharedExpertMLP`, gate included): their
///   input is the router's, kept already.
pub(super) fn megatron_modules(ops: &mut [Op], model: &ModelSpec, sh: &Shard, moe: bool) {
    let m = sh.modules;
    if m.is_default() {
        return;
    }
    let e = sh.dtype.bytes();
    let own = sh.tokens_sp() as f64;
    let tokens = sh.tokens() as f64;
    // The router's 16-bit input, the norm's output.
    let x = own * model.hidden as f64 * e;
    let mla = model.mla;
    let ln = m.has(M::LAYERNORM);
    let up = mla.is_some() && m.has(M::MLA_UP_PROJ);
    // Q, K and V of this rank's heads as the attention core saves them.
    let (q, k, v) = super::qkv_bytes(model, sh);
    let qkv = q + k + v;
    let post_norm = model.arch == Arch::Bert;
    let mut in_mlp = false;
    // A clamp before the experts' activation (gpt-oss) takes fc1's output as its input.
    let mut clamped = false;
    for op in ops.iter_mut() {
        let name = op.name;
        if ATTENTION_CORE.contains(&name) {
            if !m.has(M::CORE_ATTN) {
                op.saved_selective_bytes = op.saved_bytes;
                op.selective_fwd.clear();
            }
            if up {
                op.saved_selective_bytes = (op.saved_selective_bytes - qkv).max(0.0);
            }
            continue;
        }
        match name {
            "norm_attn" if ln && mla.is_some() => rerun(op, op.saved_bytes),
            // BERT's post-norm of the attention block: its output is the MLP's input.
            "norm_attn" => {}
            "residual_attn" => in_mlp = true,
            "q_down" | "kv_down" if ln => op.saved_selective_bytes = 0.0,
            "q_proj" if up => rerun(op, if ln { 0.0 } else { op.saved_bytes }),
            "q_proj" if ln => op.saved_selective_bytes = 0.0,
            "q_norm" | "kv_norm" | "rope" if up => rerun(op, op.saved_bytes),
            "q_up" if up => rerun(op, 0.0),
            "kv_up" if up => {
                // The rotary key is gathered over the sequence before the checkpoint
                // (`gather_from_sequence_parallel_region`): kept whole, not re-gathered.
                let rope_key = tokens * mla.map_or(0, |l| l.qk_rope_dim) as f64 * e;
                rerun(op, rope_key);
                let gathered = |k: &Kernel| matches!(k, Kernel::Comm { coll: Coll::AllGather, bytes, .. } if *bytes == rope_key);
                if sh.sp && sh.tp > 1 && op.selective_fwd.first().is_some_and(gathered) {
                    op.selective_fwd.remove(0);
                }
            }
            // A pre-norm (BERT's post-norm follows the block and stays).
            "norm_mlp" if in_mlp && ((moe && ln) || (!moe && m.has(M::MLP))) => {
                rerun(op, op.saved_bytes)
            }
            "norm_mlp" => {}
            "residual_mlp" => in_mlp = false,
            _ if !in_mlp => {}
            // The checkpoint keeps the MLP's input: the pre-norm hidden state the fused norm
            // saves, or (BERT, post-norm) the attention block's output that fc1 saves.
            "fc1" if !moe && m.has(M::MLP) && post_norm => rerun(op, op.saved_bytes),
            _ if !moe && m.has(M::MLP) => rerun(op, 0.0),
            _ if !moe => {}
            "router" if m.has(M::MOE) => rerun(op, if ln { 0.0 } else { x }),
            _ if m.has(M::MOE) => rerun(op, 0.0),
            "router" if ln => op.saved_selective_bytes = op.saved_bytes - x,
            // The checkpoint keeps fc1's output: the activation's input, or the clamp's where
            // a clamp comes first (gpt-oss), the activation's then recomputed from it.
            "glu_clamp" if m.has(M::MOE_ACT) => {
                clamped = true;
                rerun(op, op.saved_bytes)
            }
            "swiglu" | "gelu" if m.has(M::MOE_ACT) => {
                rerun(op, if clamped { 0.0 } else { op.saved_bytes })
            }
            "expert_fc2" if m.has(M::MOE_ACT) => op.saved_selective_bytes = 0.0,
            "shared_fc1" | "shared_swiglu" | "shared_gelu" | "shared_fc2" | "shared_gate"
                if m.has(M::SHARED_EXPERTS) =>
            {
                rerun(op, 0.0)
            }
            "shared_fc1" if ln => op.saved_selective_bytes = 0.0,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{Kernel, OpGraph, Shard};
    use super::super::transformer_layer;
    use crate::spec::{AttentionImpl, Framework, ModelSpec, RecomputeModules as M, TpOverlap};
    use crate::units::Dtype;

    /// One 4096-token sequence in bf16 under Megatron, `tp` with sequence parallelism.
    fn shard(tp: u64, modules: M) -> Shard {
        Shard {
            b: 1,
            s: 4096,
            tp,
            sp: tp > 1,
            cp: 1,
            ep: 1,
            etp: 1,
            attention: AttentionImpl::Flash,
            dtype: Dtype::Bf16,
            fp8_recipe: Default::default(),
            loss_fusion: false,
            tp_overlap: TpOverlap::Backward,
            framework: Framework::Megatron,
            modules,
            vocab_divisor: 128,
        }
    }

    fn model(name: &str) -> ModelSpec {
        crate::spec::load_model(name).unwrap()
    }

    /// (bytes kept, forward FLOPs re-run) under selective recomputation.
    fn selective(g: &OpGraph) -> (f64, f64) {
        let flops = g.sum(|o| o.selective_fwd.iter().map(Kernel::flops).sum());
        (g.saved_selective_bytes(), flops)
    }

    /// `mla_up_proj` on a DeepSeek-V3 dense layer at tp 2 with SP (b·s = 4096, this rank's
    /// 2048 tokens and 64 heads, bf16). Freed: Q and K at head size 192 and V at 128 that
    /// the attention core keeps, 4096·64·(192 + 192 + 128)·2 = 268,435,456 B, and the
    /// up-projections' own inputs, the latents 2048·(1536 + 512)·2 = 8,388,608 B, less the
    /// rotary key the checkpoint keeps, gathered over the sequence, 4096·64·2 = 524,288 B:
    /// 276,299,776 B. Re-run: the
    /// up-projections, 2·4096·1536·(64·192) + 2·4096·512·(64·256) FLOPs.
    #[test]
    fn mla_up_proj_frees_queries_keys_and_values() {
        let m = model(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hf/deepseek-v3.json"
        ));
        let (base_b, base_f) = selective(&transformer_layer(&m, &shard(2, M::CORE_ATTN), false));
        let up = M::CORE_ATTN.with(M::MLA_UP_PROJ);
        let (b, f) = selective(&transformer_layer(&m, &shard(2, up), false));
        assert_eq!(base_b - b, 268_435_456.0 + 8_388_608.0 - 524_288.0);
        let up_flops = 2.0 * 4096.0 * (1536.0 * 64.0 * 192.0 + 512.0 * 64.0 * 256.0);
        assert_eq!(f - base_f, up_flops);
        // Without the attention core the core keeps only its log-sum-exp, 64·4096 fp32.
        let g = transformer_layer(&m, &shard(2, M::MLA_UP_PROJ), false);
        assert_eq!(
            g.op("attention").unwrap().saved_selective_bytes,
            64.0 * 4096.0 * 4.0
        );
        // `layernorm` on MLA re-runs the separate input norm and frees its 16-bit output,
        // which the query's down-projection keeps: 2048·7168·2 = 29,360,128 B.
        let ln = up.with(M::LAYERNORM);
        let (l, _) = selective(&transformer_layer(&m, &shard(2, ln), false));
        assert_eq!(b - l, 29_360_128.0);
    }

    /// Mixtral 8x7B's MoE layer at tp 1 (4096 tokens, top-2 of 8 experts: 8192 routed, h 4096,
    /// expert f 14336, SwiGLU, bf16). `moe_act` frees the activation's output that fc2 keeps,
    /// 8192·14336·2 = 234,881,024 B, and re-runs no GEMM. `layernorm` frees the pre-MLP
    /// norm's output the router keeps, 4096·4096·2 = 33,554,432 B. `moe` keeps that input
    /// alone of the block's router input and fp32 logits (33,554,432 + 4096·8·4), fc1's
    /// input (8192·4096·2 = 67,108,864), the SwiGLU input (2·234,881,024) and fc2's input
    /// (234,881,024), and re-runs router and experts: 2·4096·4096·8 + 3·2·8192·4096·14336
    /// FLOPs.
    #[test]
    fn expert_modules_free_what_megatron_discards() {
        let m = model("mixtral-8x7b");
        let run = |mods| selective(&transformer_layer(&m, &shard(1, mods), true));
        let (base_b, base_f) = run(M::CORE_ATTN);
        let (act_b, act_f) = run(M::CORE_ATTN.with(M::MOE_ACT));
        assert_eq!(base_b - act_b, 234_881_024.0);
        assert_eq!(act_f, base_f);
        let (ln_b, _) = run(M::CORE_ATTN.with(M::LAYERNORM));
        assert_eq!(base_b - ln_b, 33_554_432.0);
        let (moe_b, moe_f) = run(M::CORE_ATTN.with(M::MOE));
        let block = 131_072.0 + 67_108_864.0 + 2.0 * 234_881_024.0 + 234_881_024.0;
        assert_eq!(base_b - moe_b, block);
        let gemms = 2.0 * 4096.0 * 4096.0 * 8.0 + 3.0 * 2.0 * 8192.0 * 4096.0 * 14336.0;
        assert_eq!(moe_f - base_f, gemms);
        // The dense-layer module leaves an expert layer alone.
        assert_eq!(run(M::CORE_ATTN.with(M::MLP)), (base_b, base_f));
    }

    /// `mlp` on a Llama 2 70B layer at tp 1 (4096 tokens, h 8192, f 28672, SwiGLU, bf16):
    /// the checkpoint keeps the norm's input and frees fc1's input (4096·8192·2), the SwiGLU
    /// input (2·4096·28672·2) and fc2's input (4096·28672·2) = 771,751,936 B, re-running fc1
    /// and fc2, 3·2·4096·8192·28672 FLOPs. A module the layer lacks (`moe_act`, with no
    /// attention core) leaves everything kept and nothing re-run. BERT's post-norm layer
    /// checkpoints its MLP too.
    #[test]
    fn mlp_checkpoints_the_dense_mlp() {
        let m = model("llama2-70b");
        let run = |mods| selective(&transformer_layer(&m, &shard(1, mods), false));
        let (base_b, base_f) = run(M::CORE_ATTN);
        let (b, f) = run(M::CORE_ATTN.with(M::MLP));
        assert_eq!(base_b - b, 771_751_936.0);
        assert_eq!(f - base_f, 3.0 * 2.0 * 4096.0 * 8192.0 * 28672.0);
        let g = transformer_layer(&m, &shard(1, M::MOE_ACT), false);
        assert_eq!(selective(&g), (g.saved_bytes(), 0.0));
        // BERT-large's post-norm layer (h 1024, f 4096, GeLU): the MLP's input is the
        // attention block's normed output, which fc1 keeps; freed are the GeLU's input and
        // fc2's, 2·4096·4096·2 = 67,108,864 B, for fc1 and fc2 again, 2·2·4096·1024·4096.
        let bert = model("bert-large");
        let run = |mods| selective(&transformer_layer(&bert, &shard(1, mods), false));
        let (base_b, base_f) = run(M::CORE_ATTN);
        let (b, f) = run(M::CORE_ATTN.with(M::MLP));
        assert_eq!(base_b - b, 67_108_864.0);
        assert_eq!(f - base_f, 2.0 * 2.0 * 4096.0 * 1024.0 * 4096.0);
    }
}
