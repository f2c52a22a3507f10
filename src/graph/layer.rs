//! One transformer layer as operators, following Megatron-LM's layer (ParallelTransformerLayer
//! / TransformerLayer): column-parallel QKV and fc1, row-parallel projection and fc2 (Shoeybi
//! et al. 2019 §3), the f/g conjugate collectives, and sequence parallelism (Korthikanti et al.
//! 2022 §4.2.2). Saved activations per operator reproduce Korthikanti et al. §4.1 term by term:
//! sbh(34 + 5as/h) bytes for a 16-bit GPT layer with dropout.

use super::linear::{column_linear, fp8_casts, row_linear, tp_conjugates};
use super::{Coll, Group, Kernel, Op, OpGraph, Shard};
use crate::spec::{Arch, AttentionImpl, Mla, ModelSpec, Positions};
use crate::units::Dtype;
use moe::moe_mlp;

/// A norm (LayerNorm or RMSNorm) over `tokens` rows of width h.
///
/// Fused (apex / Transformer Engine / aten LayerNorm): reads x and writes y forward, reads x
/// and dy and writes dx backward; saves its input. Eager RMSNorm (torchtitan `RMSNorm`:
/// `x.float()`, `pow(2)`, `mean`, `rsqrt`, multiply, `type_as`, `* weight`) moves 36 bytes per
/// element forward (2+4, 4+4, 4, 4+4, 4+2, 2+2) and about 66 backward through autograd, and
/// keeps the fp32 upcast (4 bytes) and the normalised 16-bit output (2) for backward.
pub(super) fn norm(name: &'static str, model: &ModelSpec, sh: &Shard, tokens: u64) -> Op {
    let n = (tokens * model.hidden) as f64;
    let params = model.arch.norm_params_per_hidden() * model.hidden as f64;
    norm_over(name, model, sh, n, params)
}

/// A norm over `n` elements with `params` weights: fused, or torchtitan's eager RMSNorm
/// (fp32 upcast, 6 bytes per element kept).
fn norm_over(name: &'static str, model: &ModelSpec, sh: &Shard, n: f64, params: f64) -> Op {
    let e = sh.dtype.bytes();
    let mut op = if sh.framework.fused_kernels() || model.arch != Arch::Llama {
        Op::reduction(name, 2.0 * e * n, 3.0 * e * n, e * n)
    } else {
        Op::reduction(name, 36.0 * n, 66.0 * n, 6.0 * n)
    };
    op.params = params;
    op
}

/// Rotary embedding of Q and K over `elems` elements: one fused kernel reading and writing
/// them (Su et al. 2021), or torchtitan's eager `apply_rotary_emb` (fp32 upcast, complex
/// multiply, cast back: 6 + 8 + 6 = 20 bytes per element each way). Linear: nothing saved.
fn rope(sh: &Shard, elems: f64) -> Op {
    let e = sh.dtype.bytes();
    let b = if sh.framework.fused_kernels() {
        2.0 * e
    } else {
        20.0
    };
    Op::memory("rope", b * elems, b * elems, 0.0)
}

/// Residual add, fused with bias and dropout where the model has dropout (Megatron
/// `bias_dropout_add_fused_train`): forward reads the branch and the residual and writes the
/// sum (+ a 1-byte mask); backward applies the mask to the gradient. Without dropout the
/// backward is free (the gradient flows to both inputs unchanged).
fn residual(name: &'static str, model: &ModelSpec, tokens: u64, e: f64) -> Op {
    let x = (tokens * model.hidden) as f64;
    if model.dropout > 0.0 {
        Op::memory(name, (3.0 * e + 1.0) * x, (2.0 * e + 1.0) * x, x)
    } else {
        Op::memory(name, 3.0 * e * x, 0.0, 0.0)
    }
}

/// MLA's projections up to the attention core, as Megatron-Core's `MLASelfAttention` runs
/// them with Transformer Engine (DeepSeek-V2 §2.1): the down-projections of the queries
/// (h → r_q) and of the keys and values (h → r_kv + d_r, with the rotary key) are
/// duplicated on every TP rank (`TELinear`, `parallel_mode="duplicated"`) and run on the
/// rank's own sequence-parallel tokens, gathering nothing; each latent's RMSNorm, then the
/// column-parallel up-projections (r_q → a·(d_n + d_r), r_kv → a·(d_n + d_v)), which gather
/// the latents (not the hidden state) under sequence parallelism, the rotary key with them.
/// Without a query latent, queries come from a column-parallel h → a·(d_n + d_r). The
/// rotary embedding and the concatenation of each head's query and key follow
/// (`rope` in [`layer_graph`]). The two down-projections read the same input, which autograd
/// keeps once (with the query's) in 16 bits. The TP all-reduce of the duplicated weights'
/// gradients once a step (as of the norms' under sequence parallelism) is not priced.
fn mla_projections(model: &ModelSpec, sh: &Shard, m: Mla) -> Vec<Op> {
    let (h, t) = (model.hidden, sh.tp);
    let own = sh.tokens_sp();
    let a = model.heads / t;
    let dq = m.qk_nope_dim + m.qk_rope_dim;
    let input = (own * h) as f64 * sh.saved_gemm_input_bytes();
    // A duplicated down-projection h → `n` on the rank's own tokens, the latent's norm
    // (`rank` wide) and the column-parallel up-projection `rank` → `up`, which the exported
    // `--qk-layernorm` fuses with that norm (`TELayerNormColumnParallelLinear`).
    let latent = |names: [&'static str; 3], rank: u64, n: u64, up: u64, saved: f64| {
        let mut down = Op::linear(names[0], own, n, h, (h * n) as f64, saved);
        down.fp8 = true;
        let down = fp8_casts(down, sh, (own * h) as f64, (own * n) as f64, false);
        let norm = norm_over(names[1], model, sh, (own * rank) as f64, rank as f64);
        let up_op = column_linear(names[2], sh, (up, rank), (rank * up) as f64, true);
        let tokens = sh.tokens() as f64;
        let up_op = fp8_casts(up_op, sh, tokens * rank as f64, tokens * up as f64, true);
        [down, norm, up_op]
    };
    let mut ops = Vec::new();
    match m.q_lora_rank {
        Some(r) => ops.extend(latent(["q_down", "q_norm", "q_up"], r, r, a * dq, input)),
        None => {
            let q = column_linear("q_proj", sh, (a * dq, h), (h * a * dq) as f64, true);
            let tokens = sh.tokens() as f64;
            ops.push(fp8_casts(
                q,
                sh,
                tokens * h as f64,
                tokens * (a * dq) as f64,
                false,
            ));
        }
    }
    // The keys' and values' down-projection reads the input the queries' already keeps in
    // 16 bits; under FP8 each Transformer Engine linear keeps its own cast of it.
    let kv_saved = if sh.dtype == Dtype::Fp8 { input } else { 0.0 };
    let kv = m.kv_lora_rank;
    let mut kv_ops = latent(
        ["kv_down", "kv_norm", "kv_up"],
        kv,
        kv + m.qk_rope_dim,
        a * (m.qk_nope_dim + m.v_dim),
        kv_saved,
    );
    if sh.sp && t > 1 {
        // The rotary key, one per token, is gathered beside the latent
        // (`gather_from_sequence_parallel_region`), its gradient reduce-scattered.
        let bytes = (sh.tokens() * m.qk_rope_dim) as f64 * sh.dtype.bytes();
        let comm = |coll| Kernel::Comm {
            coll,
            group: Group::Tp,
            bytes,
            overlapped: false,
        };
        kv_ops[2].fwd.insert(0, comm(Coll::AllGather));
        kv_ops[2].bwd.push(comm(Coll::ReduceScatter));
    }
    ops.extend(kv_ops);
    ops
}

/// Bytes of Q, K and V of this rank's heads for one micro-batch, as the attention core takes
/// them: V is K's size but for MLA's narrower value heads.
pub(super) fn qkv_bytes(model: &ModelSpec, sh: &Shard) -> (f64, f64, f64) {
    let (e, t) = (sh.dtype.bytes(), sh.tp);
    let tokens = sh.tokens() as f64;
    let q = tokens * (model.q_hidden() / t) as f64 * e;
    let kv = tokens * (model.kv_hidden() / t) as f64 * e;
    (
        q,
        kv,
        kv * model.v_head_dim() as f64 / model.head_dim() as f64,
    )
}

/// Operators of the attention core for `sh`, Megatron's `CoreAttention` (unfused) or one
/// flash-attention kernel.
fn attention_core(model: &ModelSpec, sh: &Shard, sliding: bool) -> Vec<Op> {
    let e = sh.dtype.bytes();
    let (t, d) = (sh.tp, model.head_dim());
    let heads = model.heads / t;
    let (s_q, s_kv) = (sh.s / sh.cp, sh.s);
    let (q, kv, v) = qkv_bytes(model, sh);
    let bh = sh.b * heads;
    let causal = model.arch.causal();
    // Context parallelism: a ring passes each K/V block to the next rank, cp−1 hops forward,
    // and K/V plus their gradients backward, overlapped with the block computations
    // (Megatron-Core context parallelism; Liu et al. 2023, Ring Attention).
    let ring = |mult: f64| Kernel::Comm {
        coll: Coll::SendRecv,
        group: Group::Cp,
        bytes: mult * (sh.cp - 1) as f64 * (kv + v),
        overlapped: true,
    };
    match sh.attention {
        AttentionImpl::Flash | AttentionImpl::FlashTriton => {
            let k = |backward| Kernel::Attention {
                batch_heads: bh,
                s_q,
                s_kv,
                head_dim: d,
                v_dim: model.v_head_dim(),
                causal,
                backward,
                kernel: sh.attention,
                window: model.window_at(sh.s).filter(|_| sliding).map(|w| w.size),
            };
            let mut fwd = vec![k(false)];
            let mut bwd = vec![k(true)];
            if sh.cp > 1 {
                fwd.insert(0, ring(1.0));
                bwd.insert(0, ring(2.0));
            }
            // Saves Q, K, V and the fp32 log-sum-exp per query row (Dao 2023, Algorithm 1).
            let lse = (bh * s_q) as f64 * 4.0;
            let mut saved = q + kv + v + lse;
            if !sh.framework.fused_kernels() {
                // torchtitan's eager attention (`Attention.forward`): `repeat_kv` copies K and
                // V up to every query head when heads are grouped, so SDPA saves them at Q's
                // size (forward moves the copies, backward sums the repeated gradients).
                // SDPA's output, which it also keeps, is the tensor `wo` saves as its input:
                // the flash and memory-efficient kernels write it as (b, s, heads, d) and
                // return a transposed view (PyTorch `aten/src/ATen/native/transformers/cuda/
                // attention.cu`, `_scaled_dot_product_flash_attention_cuda`), so
                // `output.transpose(1, 2).contiguous()` copies nothing, and the projection
                // counts it.
                if kv < q {
                    let repeat = 2.0 * (kv + q);
                    let mem = |bytes| Kernel::Memory {
                        bytes,
                        class: super::MemClass::Elementwise,
                    };
                    fwd.insert(fwd.len() - 1, mem(repeat));
                    bwd.push(mem(repeat));
                    saved = q + q + q * v / kv + lse;
                }
            }
            vec![Op {
                name: "attention",
                selective_fwd: fwd.clone(),
                fwd,
                bwd,
                params: 0.0,
                saved_bytes: saved,
                saved_selective_bytes: saved - lse,
                fp8: false,
            }]
        }
        AttentionImpl::Unfused => {
            // In f64: b·heads·s² leaves u64 for the longest sequences.
            let elems = bh as f64 * s_q as f64 * s_kv as f64;
            let bgemm = |name, m, n, k, saved, kept| Op {
                name,
                fwd: vec![Kernel::Gemm { batch: bh, m, n, k }],
                selective_fwd: vec![Kernel::Gemm { batch: bh, m, n, k }],
                bwd: vec![
                    Kernel::Gemm {
                        batch: bh,
                        m,
                        n: k,
                        k: n,
                    },
                    Kernel::Gemm {
                        batch: bh,
                        m: k,
                        n,
                        k: m,
                    },
                ],
                params: 0.0,
                saved_bytes: saved,
                saved_selective_bytes: kept,
                fp8: false,
            };
            let selective = |mut op: Op| {
                op.saved_selective_bytes = 0.0;
                op.selective_fwd = op.fwd.clone();
                op
            };
            let drop = model.dropout > 0.0;
            let mut ops = vec![
                // QKᵀ saves Q and K (4sbh/t of Korthikanti's 11sbh).
                bgemm("scores", s_q, s_kv, d, q + kv, q + kv),
                // Fused scale-mask-softmax saves its output (2as²b/t).
                selective(Op::reduction(
                    "softmax",
                    2.0 * e * elems,
                    3.0 * e * elems,
                    e * elems,
                )),
            ];
            if drop {
                // Dropout on the probabilities keeps a 1-byte mask (as²b/t).
                ops.push(selective(Op::memory(
                    "attn_dropout",
                    (2.0 * e + 1.0) * elems,
                    (2.0 * e + 1.0) * elems,
                    elems,
                )));
            }
            // P·V saves the dropped-out probabilities (2as²b/t) and V (2sbh/t).
            let probs = if drop { e * elems } else { 0.0 };
            ops.push(bgemm("context", s_q, d, s_kv, probs + kv, kv));
            ops
        }
    }
}

/// The MLP of a dense layer: fc1, activation, fc2 (GeLU) or gate/up, SwiGLU, down (Llama).
fn dense_mlp(model: &ModelSpec, sh: &Shard) -> Vec<Op> {
    mlp_ops(model, sh, model.ffn_hidden, ["fc1", "fc2"], true)
}

/// A tensor-parallel MLP of width `ffn` named `names` (fc1, fc2), its fc1 fused with the
/// norm before it where `norm_fused` (Transformer Engine's `LayerNormLinear`).
fn mlp_ops(
    model: &ModelSpec,
    sh: &Shard,
    ffn: u64,
    names: [&'static str; 2],
    norm_fused: bool,
) -> Vec<Op> {
    let (h, t) = (model.hidden, sh.tp);
    let f = ffn / t;
    let gated = model.arch.gated_mlp();
    let bias = model.mlp_bias;
    let width = if gated { 2 * f } else { f };
    let fc1_params = (h * width) as f64 + if bias { width as f64 } else { 0.0 };
    let fc2_params = (f * h) as f64 + if bias { h as f64 } else { 0.0 };
    let tokens = sh.tokens() as f64;
    let fc1 = column_linear(names[0], sh, (width, h), fc1_params, true);
    let fc2 = row_linear(names[1], sh, h, f, fc2_params);
    vec![
        fp8_casts(
            fc1,
            sh,
            tokens * h as f64,
            tokens * width as f64,
            norm_fused,
        ),
        activation(gated, tokens, f as f64, sh),
        fp8_casts(fc2, sh, tokens * f as f64, tokens * h as f64, false),
    ]
}

/// Elementwise activation over `tokens` × `f`: fused bias-GeLU (reads and writes f wide, saves
/// its input, Korthikanti's 8sbh) or SwiGLU (reads 2f, writes f, saves its 2f-wide input).
/// Eager SwiGLU (torchtitan `F.silu(w1(x)) * w3(x)`) runs SiLU then a multiply: 10 units
/// forward, 16 backward, and keeps the SiLU output besides both GEMM outputs (3 units).
fn activation(gated: bool, tokens: f64, f: f64, sh: &Shard) -> Op {
    let x = tokens * f * sh.dtype.bytes();
    match (gated, sh.framework.fused_kernels()) {
        (true, true) => Op::memory("swiglu", 3.0 * x, 5.0 * x, 2.0 * x),
        (true, false) => Op::memory("swiglu", 5.0 * x, 8.0 * x, 3.0 * x),
        (false, _) => Op::memory("gelu", 2.0 * x, 3.0 * x, x),
    }
}

/// One transformer layer (dense, or MoE when `moe`) for one rank and one micro-batch, with
/// the attention of the model's first layer (sliding, where its window is shorter than the
/// sequence and layer 0 slides).
pub fn transformer_layer(model: &ModelSpec, sh: &Shard, moe: bool) -> OpGraph {
    layer_graph(model, sh, moe, model.slides(0))
}

/// One transformer layer (dense, or MoE when `moe`) for one rank and one micro-batch, its
/// attention through the model's sliding window when `sliding`.
pub fn layer_graph(model: &ModelSpec, sh: &Shard, moe: bool, sliding: bool) -> OpGraph {
    let e = sh.dtype.bytes();
    let (h, t) = (model.hidden, sh.tp);
    // The query (and attention output) width: h, or a·d where the head size is set apart.
    let q_w = model.q_hidden();
    let bias = model.proj_bias;
    let qkv_n = (q_w + 2 * model.kv_hidden()) / t;
    let qkv_bias = if model.qkv_bias { qkv_n as f64 } else { 0.0 };
    let qkv_params = (h * qkv_n) as f64 + qkv_bias;
    let proj_params = (model.attn_out_hidden() / t * h) as f64 + if bias { h as f64 } else { 0.0 };

    let tokens = sh.tokens() as f64;
    let mut attn: Vec<Op> = Vec::new();
    if let Some(m) = model.mla {
        attn.extend(mla_projections(model, sh, m));
    } else {
        let qkv = column_linear("qkv", sh, (qkv_n, h), qkv_params, true);
        attn.push(fp8_casts(
            qkv,
            sh,
            tokens * h as f64,
            tokens * qkv_n as f64,
            true,
        ));
    }
    // Q and K of this rank's heads, which QK-norm and the rotary embedding rewrite.
    let qk = sh.tokens() as f64 * ((q_w + model.kv_hidden()) / t) as f64;
    if model.qk_norm {
        // One RMSNorm per query and key head (Qwen3 `q_norm`, `k_norm`), keeping its input
        // for the backward; its two d-wide weights are replicated on every TP rank.
        attn.push(norm_over(
            "qk_norm",
            model,
            sh,
            qk,
            2.0 * model.head_dim() as f64,
        ));
    }
    if model.positions == Positions::Rotary {
        // Rotary embedding rewrites Q and K in place (Su et al. 2021); linear, nothing saved.
        attn.push(rope(sh, qk));
    }
    let mut core = attention_core(model, sh, sliding);
    if model.attention_sinks {
        // A sink logit per local head (Megatron-Core's `softmax_offset`, heads/tp wide).
        core[0].params += (model.heads / t) as f64;
    }
    attn.extend(core);
    let o_w = model.attn_out_hidden() / t;
    let proj = row_linear("proj", sh, h, o_w, proj_params);
    attn.push(fp8_casts(
        proj,
        sh,
        tokens * o_w as f64,
        tokens * h as f64,
        false,
    ));
    attn.push(residual("residual_attn", model, sh.tokens_sp(), e));

    let mut mlp: Vec<Op> = Vec::new();
    if moe && !sh.sp {
        // Without SP every TP rank holds all tokens: the conjugates wrap the whole block.
        let full = (sh.tokens() * h) as f64 * e;
        let (enter, exit) = tp_conjugates(sh, full);
        mlp.extend(enter);
        mlp.extend(moe_mlp(model, sh));
        mlp.extend(exit);
    } else if moe {
        mlp.extend(moe_mlp(model, sh));
    } else {
        mlp.extend(dense_mlp(model, sh));
    }
    mlp.push(residual("residual_mlp", model, sh.tokens_sp(), e));

    let n1 = norm("norm_attn", model, sh, sh.tokens_sp());
    let n2 = norm("norm_mlp", model, sh, sh.tokens_sp());
    let mut ops = Vec::new();
    let post_norm = model.arch == Arch::Bert;
    if !post_norm {
        ops.push(n1.clone());
    }
    let attn_end = ops.len() + attn.len() - 1;
    ops.extend(attn);
    if post_norm {
        ops.push(n1);
    }
    let mlp_start = ops.len();
    if !post_norm {
        ops.push(n2.clone());
    }
    ops.extend(mlp);
    let mlp_end = ops.len() - 1;
    if post_norm {
        ops.push(n2);
    }
    // Chain plus the two residual edges (the block input also feeds its residual add).
    let mut edges: Vec<(usize, usize)> = (1..ops.len()).map(|i| (i - 1, i)).collect();
    edges.push((0, attn_end));
    edges.push((mlp_start, mlp_end));
    if sh.framework.op_level_selective() {
        super::selective::op_level_selective(&mut ops, model, sh);
    } else {
        modules::megatron_modules(&mut ops, model, sh, moe);
    }
    OpGraph::new(ops, &edges)
}

mod modules;
pub use modules::ATTENTION_CORE;
mod moe;

#[cfg(test)]
mod tests;
