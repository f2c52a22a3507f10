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
            let elems = (bh * s_q * s_kv) as f64;
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

/// The MLP of an MoE layer: router, token dispatch (all-to-all over the EP group), the local
/// experts as grouped GEMMs, and the combine (Fedus et al. 2021; Megatron-Core MoE). Tokens
/// are assumed balanced: each rank's experts receive b·s·top_k tokens in total.
fn moe_mlp(model: &ModelSpec, sh: &Shard) -> Vec<Op> {
    let m = model
        .moe
        .as_ref()
        .expect("moe layer of a model with experts");
    let e = sh.dtype.bytes();
    let (h, t) = (model.hidden, sh.tp);
    let local = m.experts / sh.ep;
    let routed = sh.tokens() * m.top_k;
    let per_expert = routed.div_ceil(local);
    let gated = model.arch.gated_mlp();
    let f = m.expert_ffn_hidden / t;
    let width = if gated { 2 * f } else { f };
    let tokens = sh.tokens() as f64;
    let moved = routed as f64 * h as f64 * e;
    let mut router = Op::linear(
        "router",
        sh.tokens(),
        m.experts,
        h,
        (h * m.experts) as f64,
        0.0,
    );
    // Megatron-Core's TopKRouter multiplies by its weight outside Transformer Engine.
    router.fp8 = false;
    router.saved_bytes = tokens * m.experts as f64 * 4.0;
    router.saved_selective_bytes = router.saved_bytes;
    router.fwd.push(Kernel::Memory {
        class: super::MemClass::Reduction,
        bytes: tokens * m.experts as f64 * 8.0,
    });
    let a2a = |name| {
        let k = Kernel::Comm {
            coll: Coll::AllToAll,
            group: Group::Ep,
            bytes: moved,
            overlapped: false,
        };
        let mut op = Op::memory(name, 2.0 * moved, 2.0 * moved, 0.0);
        if sh.ep > 1 {
            op.fwd.push(k.clone());
            op.bwd.insert(0, k);
        }
        op
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
    let fc1 = grouped("expert_fc1", width, h, (local * h * width) as f64, moved);
    let fc2 = grouped("expert_fc2", h, f, (local * f * h) as f64, r * f as f64 * e);
    vec![
        router,
        a2a("dispatch"),
        fp8_casts(fc1, sh, r * h as f64, r * width as f64, false),
        activation(gated, r, f as f64, sh),
        fp8_casts(fc2, sh, r * f as f64, r * h as f64, false),
        a2a("combine"),
    ]
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
    if moe {
        // The conjugates wrap the whole MoE block: tokens enter full and leave reduced.
        let full = (sh.tokens() * h) as f64 * e;
        let (enter, exit) = tp_conjugates(sh, full);
        mlp.extend(enter);
        mlp.extend(moe_mlp(model, sh));
        mlp.extend(exit);
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
        op_level_selective(&mut ops, model, sh);
    }
    OpGraph::new(ops, &edges)
}

/// The matmuls (`aten.mm` calls) operator `name` makes in a torchtitan block, in call order,
/// as output widths: `wq`, `wk`, `wv` in the QKV operator; `w1`, `w3` for a gated MLP's fc1
/// (`w2(silu(w1(x)) * w3(x))` evaluates `w1` first); one for the others. Row-parallel outputs
/// are full width before their reduction. Expert GEMMs are grouped (not `aten.mm`), the
/// attention core is SDPA, and a linear with a bias dispatches `aten.addmm`, which the policy
/// neither counts nor keeps: none.
fn matmul_widths(name: &str, model: &ModelSpec, sh: &Shard) -> Vec<u64> {
    let (h, t) = (model.hidden, sh.tp);
    let kv = model.kv_hidden() / t;
    let biased = model.arch.biases();
    match name {
        "qkv" if biased || model.qkv_bias => Vec::new(),
        "proj" | "fc1" | "fc2" if biased => Vec::new(),
        "qkv" => vec![h / t, kv, kv],
        "fc1" if model.arch.gated_mlp() => vec![model.ffn_hidden / t; 2],
        "fc1" => vec![model.ffn_hidden / t],
        "proj" | "fc2" => vec![h],
        "router" => vec![model.moe.as_ref().map_or(0, |m| m.experts)],
        _ => Vec::new(),
    }
}

/// torchtitan's op-level selective activation checkpointing (`selective_ac_option = "op"`,
/// pytorch/torchtitan `parallelize_llama.py` `_apply_ac_to_transformer_block`): each block
/// runs under `torch.utils.checkpoint` with a policy that saves the outputs of `aten.mm`,
/// SDPA and `reduce_scatter_tensor`, "except every second mm", and re-runs everything else in
/// backward. The block's matmuls count 1, 2, 3… in call order ([`matmul_widths`]): a Llama
/// block keeps `wq`, `wv`, `w1` and `w2` and re-runs `wk`, `wo` and `w3`, its norms, rotary
/// embedding, KV repeat and SwiGLU. An MoE block keeps its router's output and the
/// expert-parallel exchanges (`all_to_all_single`, in the list since torchtitan's MoE) and
/// re-runs the grouped expert GEMMs. The checkpoint itself keeps the block input.
///
/// Sets every operator's `saved_selective_bytes` (what the policy keeps of it) and
/// `selective_fwd` (the kernels it re-runs: its forward with the kept matmuls, SDPA and
/// reduce-scatters left out).
fn op_level_selective(ops: &mut [Op], model: &ModelSpec, sh: &Shard) {
    let e = sh.dtype.bytes();
    let tokens = sh.tokens();
    let mut count = 0;
    for (i, op) in ops.iter_mut().enumerate() {
        let widths = matmul_widths(op.name, model, sh);
        let mut saved = if i == 0 {
            (sh.tokens_sp() * model.hidden) as f64 * e
        } else {
            0.0
        };
        let mut rerun = Vec::new();
        for k in &op.fwd {
            match *k {
                Kernel::Gemm { batch: 1, m, k, .. } if !widths.is_empty() => {
                    for &n in &widths {
                        count += 1;
                        if count % 2 == 1 {
                            saved += (tokens * n) as f64 * e;
                        } else {
                            rerun.push(Kernel::Gemm { batch: 1, m, n, k });
                        }
                    }
                }
                Kernel::Attention { .. } => {
                    // SDPA keeps its output and log-sum-exp.
                    saved += (sh.tokens() * model.hidden / sh.tp) as f64 * e
                        + (sh.b * (model.heads / sh.tp) * (sh.s / sh.cp)) as f64 * 4.0;
                }
                Kernel::Comm {
                    coll: Coll::ReduceScatter,
                    ..
                } => saved += (sh.tokens_sp() * model.hidden) as f64 * e,
                // The MoE token exchange (`all_to_all_single`, saved since torchtitan's MoE).
                Kernel::Comm {
                    coll: Coll::AllToAll,
                    bytes,
                    ..
                } => saved += bytes,
                // A context-parallel ring runs inside the SDPA call it feeds.
                Kernel::Comm {
                    group: Group::Cp, ..
                } => {}
                _ => rerun.push(k.clone()),
            }
        }
        op.saved_selective_bytes = saved;
        op.selective_fwd = rerun;
    }
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

    /// torchtitan's op-level selective checkpointing on a Llama 2 70B block (h 8192, KV 1024,
    /// f 28672, 64 heads), b·s = 4096 tokens, tp = 1. Kept per token, in 16-bit: the block
    /// input h, the outputs of wq (h), wv (KV), SDPA (h, plus its fp32 log-sum-exp per head),
    /// w1 (f) and w2 (h) = 2·(4h + KV + f) bytes. Re-run: the matmuls wk (2h·KV FLOPs per
    /// token), wo (2h²) and w3 (2hf); never SDPA.
    #[test]
    fn torchtitan_op_level_selective_keeps_every_other_matmul() {
        let m = crate::spec::load_model("llama2-70b").unwrap();
        let sh = Shard {
            b: 1,
            s: 4096,
            dtype: Dtype::Bf16,
            framework: crate::spec::Framework::Torchtitan,
            ..shard(1, false, AttentionImpl::Flash)
        };
        let g = transformer_layer(&m, &sh, false);
        let (t, h, kv, f) = (4096.0, 8192.0, 1024.0, 28672.0);
        let lse = 4.0 * 64.0 * t;
        assert_eq!(
            g.saved_selective_bytes(),
            2.0 * t * (4.0 * h + kv + f) + lse
        );
        let rerun = g.selective_flops();
        assert_eq!(rerun, 2.0 * t * (h * kv + h * h + h * f));
        assert!(
            g.op("attention")
                .unwrap()
                .selective_fwd
                .iter()
                .all(|k| !matches!(k, Kernel::Attention { .. }))
        );
        // Without checkpointing, eager attention keeps Q, the K and V that `repeat_kv` widened
        // to Q's size, and SDPA's own output (4·2h per token) besides the log-sum-exp; the
        // repeat moves 2·(KV + h) per token each way and the output copy 2h.
        let a = g.op("attention").unwrap();
        assert_eq!(a.saved_bytes, 4.0 * 2.0 * t * h + lse);
        let copies = 2.0 * (2.0 * t * kv + 2.0 * t * h) + 2.0 * 2.0 * t * h;
        assert_eq!(Kernel::memory_bytes(&a.fwd), copies);
        assert_eq!(Kernel::memory_bytes(&a.bwd), copies);
        // Megatron-LM's selective recomputation re-runs the attention core alone.
        let mg = transformer_layer(
            &m,
            &Shard {
                framework: crate::spec::Framework::Megatron,
                ..sh
            },
            false,
        );
        let names: Vec<_> = mg
            .ops()
            .iter()
            .filter(|o| !o.selective_fwd.is_empty())
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["attention"]);
        // Tensor-parallel over 2 with sequence parallelism: the block input and the
        // reduce-scatter outputs (after wo and w2) are sequence shards (t/2 × h); wq, wv, w1
        // and SDPA's output are this rank's column shards (h/2, KV/2, f/2, h/2); w2's own
        // output is full width before its reduction.
        let tp = Shard {
            tp: 2,
            sp: true,
            ..sh
        };
        let g = transformer_layer(&m, &tp, false);
        let seq_shard = 2.0 * (t / 2.0) * h;
        let want =
            3.0 * seq_shard + 2.0 * t * (h / 2.0 + kv / 2.0 + h / 2.0 + f / 2.0 + h) + lse / 2.0;
        assert_eq!(g.saved_selective_bytes(), want);
        // An MoE block under the op-level policy keeps its expert-parallel exchanges (their
        // received tokens) and re-runs the grouped expert GEMMs, not the all-to-alls.
        let mx = crate::spec::load_model("mixtral-8x7b").unwrap();
        let g = transformer_layer(&mx, &Shard { ep: 8, ..sh }, true);
        for name in ["dispatch", "combine"] {
            let o = g.op(name).unwrap();
            assert!(!o.selective_fwd.iter().any(Kernel::is_comm), "{name}");
            // top-2 routing of 4096 tokens, 4096 wide, 16-bit.
            assert_eq!(
                o.saved_selective_bytes,
                2.0 * 4096.0 * 4096.0 * 2.0,
                "{name}"
            );
        }
        let fc1 = g.op("expert_fc1").unwrap();
        assert_eq!(
            (fc1.saved_selective_bytes, &fc1.selective_fwd),
            (0.0, &fc1.fwd)
        );
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
}
