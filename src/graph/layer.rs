//! One transformer layer as operators, following Megatron-LM's layer (ParallelTransformerLayer
//! / TransformerLayer): column-parallel QKV and fc1, row-parallel projection and fc2 (Shoeybi
//! et al. 2019 §3), the f/g conjugate collectives, and sequence parallelism (Korthikanti et al.
//! 2022 §4.2.2). Saved activations per operator reproduce Korthikanti et al. §4.1 term by term:
//! sbh(34 + 5as/h) bytes for a 16-bit GPT layer with dropout.

use super::linear::{column_linear, fp8_casts, row_linear, tp_conjugates};
use super::{Coll, Group, Kernel, Op, OpGraph, Shard};
use crate::spec::{Arch, AttentionImpl, ModelSpec, Positions};

/// A norm (LayerNorm or RMSNorm) over `tokens` rows of width h.
///
/// Fused (apex / Transformer Engine / aten LayerNorm): reads x and writes y forward, reads x
/// and dy and writes dx backward; saves its input. Eager RMSNorm (torchtitan `RMSNorm`:
/// `x.float()`, `pow(2)`, `mean`, `rsqrt`, multiply, `type_as`, `* weight`) moves 36 bytes per
/// element forward (2+4, 4+4, 4, 4+4, 4+2, 2+2) and about 66 backward through autograd, and
/// keeps the fp32 upcast (4 bytes) and the normalised 16-bit output (2) for backward.
pub(super) fn norm(name: &'static str, model: &ModelSpec, sh: &Shard, tokens: u64) -> Op {
    let e = sh.dtype.bytes();
    let n = (tokens * model.hidden) as f64;
    let mut op = if sh.framework.fused_kernels() || model.arch != Arch::Llama {
        Op::reduction(name, 2.0 * e * n, 3.0 * e * n, e * n)
    } else {
        Op::reduction(name, 36.0 * n, 66.0 * n, 6.0 * n)
    };
    op.params = model.arch.norm_params_per_hidden() * model.hidden as f64;
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

/// Operators of the attention core for `sh`, Megatron's `CoreAttention` (unfused) or one
/// flash-attention kernel.
fn attention_core(model: &ModelSpec, sh: &Shard) -> Vec<Op> {
    let e = sh.dtype.bytes();
    let (t, d) = (sh.tp, model.head_dim());
    let heads = model.heads / t;
    let (s_q, s_kv) = (sh.s / sh.cp, sh.s);
    let tokens = sh.tokens() as f64;
    let q = tokens * (model.hidden / t) as f64 * e;
    let kv = tokens * (model.kv_hidden() / t) as f64 * e;
    let bh = sh.b * heads;
    let causal = model.arch.causal();
    // Context parallelism: a ring passes each K/V block to the next rank, cp−1 hops forward,
    // and K/V plus their gradients backward, overlapped with the block computations
    // (Megatron-Core context parallelism; Liu et al. 2023, Ring Attention).
    let ring = |mult: f64| Kernel::Comm {
        coll: Coll::SendRecv,
        group: Group::Cp,
        bytes: mult * (sh.cp - 1) as f64 * 2.0 * kv,
        overlapped: true,
    };
    match sh.attention {
        AttentionImpl::Flash | AttentionImpl::FlashTriton => {
            let k = |backward| Kernel::Attention {
                batch_heads: bh,
                s_q,
                s_kv,
                head_dim: d,
                causal,
                backward,
                kernel: sh.attention,
            };
            let mut fwd = vec![k(false)];
            let mut bwd = vec![k(true)];
            if sh.cp > 1 {
                fwd.insert(0, ring(1.0));
                bwd.insert(0, ring(2.0));
            }
            // Saves Q, K, V and the fp32 log-sum-exp per query row (Dao 2023, Algorithm 1).
            let lse = (bh * s_q) as f64 * 4.0;
            let mut saved = q + 2.0 * kv + lse;
            if !sh.framework.fused_kernels() {
                // torchtitan's eager attention (`Attention.forward`): `repeat_kv` copies K and
                // V up to every query head when heads are grouped, so SDPA saves them at Q's
                // size; SDPA also keeps its output, which `transpose(1, 2).contiguous()` copies
                // for `wo` (whose input the projection counts). Forward moves the copies,
                // backward sums the repeated gradients and copies the output gradient back.
                let mem = |bytes| Kernel::Memory {
                    bytes,
                    class: super::MemClass::Elementwise,
                };
                if kv < q {
                    let repeat = 2.0 * (kv + q);
                    fwd.insert(fwd.len() - 1, mem(repeat));
                    bwd.push(mem(repeat));
                }
                fwd.push(mem(2.0 * q));
                bwd.insert(0, mem(2.0 * q));
                saved = 4.0 * q + lse;
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
    let (h, t) = (model.hidden, sh.tp);
    let f = model.ffn_hidden / t;
    let gated = model.arch.gated_mlp();
    let bias = model.arch.biases();
    let width = if gated { 2 * f } else { f };
    let fc1_params = (h * width) as f64 + if bias { width as f64 } else { 0.0 };
    let fc2_params = (f * h) as f64 + if bias { h as f64 } else { 0.0 };
    let tokens = sh.tokens() as f64;
    let fc1 = column_linear("fc1", sh, (width, h), fc1_params, true);
    let fc2 = row_linear("fc2", sh, h, f, fc2_params);
    vec![
        fp8_casts(fc1, sh, tokens * h as f64, tokens * width as f64, true),
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

/// The MLP of an MoE layer as Megatron-Core's all-to-all dispatcher runs it (Fedus et al.
/// 2021; `MoEAlltoAllTokenDispatcher`, megatron/core/transformer/moe/token_dispatcher.py:
/// "permute → A2A(EP) → AG(TP) → sort_chunk", and back "sort_chunk → RS(TP) → A2A(EP) →
/// unpermute"). Each rank routes its own sequence-parallel shard of the tokens; the
/// all-to-all moves its top-k copies over the EP group; the expert-TP group (tp, Megatron's
/// default `--expert-tensor-parallel-size`) then all-gathers the routed tokens so each rank's
/// expert shard (width f/tp) sees all of them, and reduce-scatters the outputs back. Tokens
/// are assumed balanced: the local experts receive b·s·top_k tokens in total. Without
/// sequence parallelism and tp > 1 (which Megatron refuses for MoE) every TP rank holds all
/// tokens: conjugates wrap the block and nothing is gathered inside it.
fn moe_mlp(model: &ModelSpec, sh: &Shard) -> Vec<Op> {
    let m = model
        .moe
        .as_ref()
        .expect("moe layer of a model with experts");
    let e = sh.dtype.bytes();
    let (h, t) = (model.hidden, sh.tp);
    let local = m.experts / sh.ep;
    // Tokens this rank routes, and those its expert shards compute after the TP gather.
    let own = sh.tokens_sp();
    let own_routed = own * m.top_k;
    let routed = sh.tokens() * m.top_k;
    let per_expert = routed.div_ceil(local);
    let gated = model.arch.gated_mlp();
    let f = m.expert_ffn_hidden / t;
    let width = if gated { 2 * f } else { f };
    let own_f = own as f64;
    let sent = own_routed as f64 * h as f64 * e;
    let gathered = routed as f64 * h as f64 * e;
    // The router's GEMM keeps its input for the weight gradient, and the fp32 logits for the
    // softmax/top-k backward.
    let mut router = Op::linear(
        "router",
        own,
        m.experts,
        h,
        (h * m.experts) as f64,
        own_f * h as f64 * e + own_f * m.experts as f64 * 4.0,
    );
    // Megatron-Core's TopKRouter multiplies by its weight outside Transformer Engine.
    router.fp8 = false;
    router.fwd.push(Kernel::Memory {
        class: super::MemClass::Reduction,
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
    let (gather, scatter) = if sh.sp {
        tp_conjugates(sh, gathered)
    } else {
        (None, None)
    };
    let grouped = |name, n, k, params: f64, saved: f64| Op {
        name,
        fwd: vec![Kernel::Gemm {
            batch: local,
            m: per_expert,
            n,
            k,
        }],
        bwd: vec![
            Kernel::Gemm {
                batch: local,
                m: per_expert,
                n: k,
                k: n,
            },
            Kernel::Gemm {
                batch: local,
                m: k,
                n,
                k: per_expert,
            },
        ],
        params,
        saved_bytes: saved,
        saved_selective_bytes: saved,
        selective_fwd: Vec::new(),
        fp8: true,
    };
    let r = routed as f64;
    let fc1 = grouped("expert_fc1", width, h, (local * h * width) as f64, gathered);
    let fc2 = grouped("expert_fc2", h, f, (local * f * h) as f64, r * f as f64 * e);
    let mut ops = vec![router, a2a("dispatch")];
    ops.extend(gather.map(|mut op| {
        op.name = "expert_tp_gather";
        op
    }));
    ops.extend([
        fp8_casts(fc1, sh, r * h as f64, r * width as f64, false),
        activation(gated, r, f as f64, sh),
        fp8_casts(fc2, sh, r * f as f64, r * h as f64, false),
    ]);
    ops.extend(scatter.map(|mut op| {
        op.name = "expert_tp_scatter";
        op
    }));
    ops.push(a2a("combine"));
    ops
}

/// One transformer layer (dense, or MoE when `moe`) for one rank and one micro-batch.
pub fn transformer_layer(model: &ModelSpec, sh: &Shard, moe: bool) -> OpGraph {
    let e = sh.dtype.bytes();
    let (h, t) = (model.hidden, sh.tp);
    let bias = model.arch.biases();
    let qkv_n = (h + 2 * model.kv_hidden()) / t;
    let qkv_bias = if model.qkv_bias { qkv_n as f64 } else { 0.0 };
    let qkv_params = (h * qkv_n) as f64 + qkv_bias;
    let proj_params = (h / t * h) as f64 + if bias { h as f64 } else { 0.0 };

    let tokens = sh.tokens() as f64;
    let qkv = column_linear("qkv", sh, (qkv_n, h), qkv_params, true);
    let mut attn: Vec<Op> = vec![fp8_casts(
        qkv,
        sh,
        tokens * h as f64,
        tokens * qkv_n as f64,
        true,
    )];
    if model.positions == Positions::Rotary {
        // Rotary embedding rewrites Q and K in place (Su et al. 2021); linear, nothing saved.
        let qk = sh.tokens() as f64 * ((h + model.kv_hidden()) / t) as f64;
        attn.push(rope(sh, qk));
    }
    attn.extend(attention_core(model, sh));
    let proj = row_linear("proj", sh, h, h / t, proj_params);
    attn.push(fp8_casts(
        proj,
        sh,
        tokens * (h / t) as f64,
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
    }
    OpGraph::new(ops, &edges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Dtype;

    fn gpt() -> ModelSpec {
        crate::spec::load_model("gpt3-175b").unwrap()
    }

    fn shard(tp: u64, sp: bool, attention: AttentionImpl) -> Shard {
        Shard {
            b: 1,
            s: 2048,
            tp,
            sp,
            cp: 1,
            ep: 1,
            attention,
            dtype: Dtype::Fp16,
            tp_overlap: crate::spec::TpOverlap::Backward,
            framework: crate::spec::Framework::Megatron,
        }
    }

    /// FP8 casts of Llama 3 8B's linears on b·s = 2048 tokens (tp = 1): QKV's input comes
    /// from its fused norm, 1 byte × 2048 × 4096 = 8,388,608 forward; its output gradient is
    /// cast and transposed, 4 × 2048 × (4096 + 2·1024) = 50,331,648 backward; fc2's input
    /// (the 14,336-wide activation) is cast and transposed, 4 × 2048 × 14,336 = 117,440,512,
    /// and its gradient 4 × 2048 × 4096 = 33,554,432. A BF16 plan casts nothing.
    #[test]
    fn fp8_linears_cast_and_transpose_their_operands() {
        let m = crate::spec::load_model("llama3-8b").unwrap();
        let cast_bytes = |dtype, op: &str| -> (f64, f64) {
            let sh = Shard {
                dtype,
                ..shard(1, false, AttentionImpl::Flash)
            };
            let g = transformer_layer(&m, &sh, false);
            let o = g.op(op).unwrap();
            (Kernel::memory_bytes(&o.fwd), Kernel::memory_bytes(&o.bwd))
        };
        assert_eq!(cast_bytes(Dtype::Fp8, "qkv"), (8_388_608.0, 50_331_648.0));
        assert_eq!(cast_bytes(Dtype::Fp8, "fc2"), (117_440_512.0, 33_554_432.0));
        assert_eq!(cast_bytes(Dtype::Bf16, "qkv"), (0.0, 0.0));
    }

    /// Korthikanti et al. 2022, Table 2: activation bytes per layer for each TP/SP/recompute mode.
    #[test]
    fn korthikanti_activation_bytes() {
        let m = gpt();
        let (s, b, h, a) = (2048.0, 1.0, 12288.0, 96.0);
        let t = 8.0;
        let sbh = s * b * h;
        let attn = 5.0 * a * s / h;
        let un = transformer_layer(&m, &shard(1, false, AttentionImpl::Unfused), false);
        assert_eq!(un.saved_bytes(), sbh * (34.0 + attn)); // sbh(34 + 5as/h)
        let tp = transformer_layer(&m, &shard(8, false, AttentionImpl::Unfused), false);
        assert_eq!(tp.saved_bytes(), sbh * (10.0 + 24.0 / t + attn / t)); // sbh(10 + 24/t + 5as/ht)
        let sp = transformer_layer(&m, &shard(8, true, AttentionImpl::Unfused), false);
        assert_eq!(sp.saved_bytes(), sbh / t * (34.0 + attn)); // sbh/t(34 + 5as/h)
        assert_eq!(sp.saved_selective_bytes(), 34.0 * sbh / t); // 34sbh/t
        assert_eq!(tp.saved_selective_bytes(), sbh * (10.0 + 24.0 / t));
    }

    /// Per-layer forward FLOPs of DESIGN.md §3: 24bsh² + 4bs²h for a GPT layer with f = 4h.
    #[test]
    fn gpt_layer_forward_flops() {
        let m = gpt();
        let g = transformer_layer(&m, &shard(1, false, AttentionImpl::Unfused), false);
        let (b, s, h) = (1.0, 2048.0, 12288.0);
        // QKV 6bsh² + scores 2bs²h + context 2bs²h + projection 2bsh² + MLP 16bsh²
        assert_eq!(g.fwd_flops(), 24.0 * b * s * h * h + 4.0 * b * s * s * h);
        assert_eq!(g.bwd_flops(), 2.0 * g.fwd_flops());
        // TP splits every GEMM evenly.
        let g8 = transformer_layer(&m, &shard(8, false, AttentionImpl::Unfused), false);
        assert_eq!(g8.fwd_flops() * 8.0, g.fwd_flops());
        // Per rank at tp=8: QKV 3h²/8 + 3h/8, projection h²/8 + h (bias unsplit), fc1 4h²/8
        // + 4h/8, fc2 4h²/8 + h, two LayerNorms 4h: 1.5h² + 6.875h.
        assert_eq!(g8.params(), 1.5 * h * h + 6.875 * h);
    }

    /// Flash attention executes half the causal score blocks and 2.5× that backward.
    #[test]
    fn flash_attention_flops_and_memory() {
        let m = gpt();
        let g = transformer_layer(&m, &shard(1, false, AttentionImpl::Flash), false);
        let a = g.op("attention").unwrap();
        let (s, h) = (2048.0, 12288.0);
        assert_eq!(a.fwd_flops(), 4.0 * s * s * h / 2.0);
        assert_eq!(a.bwd_flops(), 2.5 * a.fwd_flops());
        // No s² term: Q, K, V (6sbh) + log-sum-exp (4·a·s).
        assert_eq!(a.saved_bytes, 6.0 * s * h + 4.0 * 96.0 * s);
    }

    #[test]
    fn llama_gqa_layer_params_match_spec() {
        let m = crate::spec::load_model("llama2-70b").unwrap();
        let g = transformer_layer(&m, &shard(1, false, AttentionImpl::Flash), false);
        assert_eq!(g.params(), m.layer_params(0));
        let g8 = transformer_layer(&m, &shard(8, true, AttentionImpl::Flash), false);
        // Everything but the two RMSNorms (2h, replicated) is split 8 ways.
        assert_eq!(
            g8.params(),
            (m.layer_params(0) - 2.0 * 8192.0) / 8.0 + 2.0 * 8192.0
        );
    }

    #[test]
    fn moe_layer_params_match_spec() {
        let m = crate::spec::load_model("mixtral-8x7b").unwrap();
        let sh = Shard {
            b: 1,
            s: 4096,
            tp: 1,
            sp: false,
            cp: 1,
            ep: 1,
            attention: AttentionImpl::Flash,
            dtype: Dtype::Bf16,
            tp_overlap: crate::spec::TpOverlap::Backward,
            framework: crate::spec::Framework::Megatron,
        };
        let g = transformer_layer(&m, &sh, true);
        assert_eq!(g.params(), m.layer_params(0));
        // Top-2 routing: expert GEMM FLOPs are twice a dense MLP of the same width.
        let dense = transformer_layer(&m, &sh, false);
        let mlp = |g: &OpGraph, names: &[&str]| {
            names
                .iter()
                .map(|n| g.op(n).unwrap().fwd_flops())
                .sum::<f64>()
        };
        assert_eq!(
            mlp(&g, &["expert_fc1", "expert_fc2"]),
            2.0 * mlp(&dense, &["fc1", "fc2"])
        );
        let ep = transformer_layer(&m, &Shard { ep: 4, ..sh }, true);
        assert_eq!(
            ep.op("expert_fc1").unwrap().params * 4.0,
            g.op("expert_fc1").unwrap().params
        );
        assert!(ep.op("dispatch").unwrap().fwd.iter().any(Kernel::is_comm));
    }

    /// Megatron-Core's all-to-all dispatcher at tp 4 with SP, ep 4 (Mixtral, b = 1,
    /// s = 4096, bf16): each rank routes its 4096/4 = 1024 tokens, so the all-to-all sends
    /// 1024 × top-2 × 4096 × 2 B = 16,777,216 B; the expert-TP all-gather then assembles all
    /// 4096 × 2 routed tokens, 67,108,864 B, and reduce-scatters the outputs back. Nothing
    /// is gathered around the block. The router keeps its 1024 × 4096 × 2 B input and the
    /// 1024 × 8 fp32 logits: 8,388,608 + 32,768 B.
    #[test]
    fn moe_routes_the_sequence_parallel_shard_and_gathers_routed_tokens() {
        let m = crate::spec::load_model("mixtral-8x7b").unwrap();
        let sh = Shard {
            b: 1,
            s: 4096,
            tp: 4,
            sp: true,
            cp: 1,
            ep: 4,
            attention: AttentionImpl::Flash,
            dtype: Dtype::Bf16,
            tp_overlap: crate::spec::TpOverlap::Backward,
            framework: crate::spec::Framework::Megatron,
        };
        let g = transformer_layer(&m, &sh, true);
        let comm = |op: &str| -> Vec<(Coll, Group, f64)> {
            g.op(op)
                .unwrap()
                .fwd
                .iter()
                .filter_map(|k| match k {
                    Kernel::Comm {
                        coll, group, bytes, ..
                    } => Some((*coll, *group, *bytes)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            comm("dispatch"),
            [(Coll::AllToAll, Group::Ep, 16_777_216.0)]
        );
        assert_eq!(
            comm("expert_tp_gather"),
            [(Coll::AllGather, Group::Tp, 67_108_864.0)]
        );
        assert_eq!(
            comm("expert_tp_scatter"),
            [(Coll::ReduceScatter, Group::Tp, 67_108_864.0)]
        );
        assert!(g.op("tp_enter").is_none() && g.op("tp_exit").is_none());
        assert_eq!(g.op("router").unwrap().saved_bytes, 8_388_608.0 + 32_768.0);
        // The experts still compute every routed token: 4096 × 2 over 8 / 4 local experts.
        match &g.op("expert_fc1").unwrap().fwd[..] {
            [.., Kernel::Gemm { batch, m, .. }] => assert_eq!((*batch, *m), (2, 4096)),
            k => panic!("{k:?}"),
        }
    }
}
