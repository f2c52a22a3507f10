//! torchtitan's op-level selective activation checkpointing as a recomputation policy over a
//! block's operators: which outputs the policy keeps and which kernels it re-runs
//! (`Op::saved_selective_bytes`, `Op::selective_fwd`). Megatron-Core's modules are
//! `layer/modules.rs`'s pass (the attention core, their default, `layer.rs` marks as it
//! builds it).

use super::{Coll, Group, Kernel, Op, Shard};
use crate::spec::ModelSpec;

/// The matmuls (`aten.mm` calls) operator `name` makes in a torchtitan block, in call order,
/// as output widths: `wq`, `wk`, `wv` in the QKV operator; `w1`, `w3` for a gated MLP's fc1
/// (`w2(silu(w1(x)) * w3(x))` evaluates `w1` first), and the same for shared experts (a
/// `FeedForward` after the routed ones in torchtitan's `MoE`); one for the others. Row-parallel outputs
/// are full width before their reduction. Expert GEMMs are grouped (not `aten.mm`), the
/// attention core is SDPA, and a linear with a bias dispatches `aten.addmm`, which the policy
/// neither counts nor keeps: none.
fn matmul_widths(name: &str, model: &ModelSpec, sh: &Shard) -> Vec<u64> {
    let (h, t) = (model.hidden, sh.tp);
    let kv = model.kv_hidden() / t;
    match name {
        "qkv" if model.qkv_bias => Vec::new(),
        "proj" if model.proj_bias => Vec::new(),
        "fc1" | "fc2" | "shared_fc1" | "shared_fc2" if model.mlp_bias => Vec::new(),
        "router" if model.moe.as_ref().is_some_and(|m| m.router_bias) => Vec::new(),
        "qkv" => vec![model.q_hidden() / t, kv, kv],
        "fc1" if model.arch.gated_mlp() => vec![model.ffn_hidden / t; 2],
        "fc1" => vec![model.ffn_hidden / t],
        "shared_fc1" => {
            let f = model.moe.as_ref().map_or(0, |m| m.shared_ffn_hidden) / t;
            vec![f; if model.arch.gated_mlp() { 2 } else { 1 }]
        }
        "proj" | "fc2" | "shared_fc2" => vec![h],
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
pub(super) fn op_level_selective(ops: &mut [Op], model: &ModelSpec, sh: &Shard) {
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
                    saved += (sh.tokens() * model.q_hidden() / sh.tp) as f64 * e
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
    use super::super::transformer_layer;
    use super::*;
    use crate::spec::{Framework, Plan};

    /// One 4096-token sequence at tp 1, priced for torchtitan.
    fn shard() -> Shard {
        let mut p = Plan::new(1, 1, 1, 1, 1, 4096);
        p.framework = Framework::Torchtitan;
        Shard::of(&p)
    }

    /// torchtitan's op-level selective checkpointing on a Llama 2 70B block (h 8192, KV 1024,
    /// f 28672, 64 heads), b·s = 4096 tokens, tp = 1. Kept per token, in 16-bit: the block
    /// input h, the outputs of wq (h), wv (KV), SDPA (h, plus its fp32 log-sum-exp per head),
    /// w1 (f) and w2 (h) = 2·(4h + KV + f) bytes. Re-run: the matmuls wk (2h·KV FLOPs per
    /// token), wo (2h²) and w3 (2hf); never SDPA.
    #[test]
    fn torchtitan_op_level_selective_keeps_every_other_matmul() {
        let m = crate::spec::load_model("llama2-70b").unwrap();
        let sh = shard();
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
        // Without checkpointing, eager attention keeps Q and the K and V that `repeat_kv`
        // widened to Q's size (3·2h per token) besides the log-sum-exp; SDPA's output is
        // `wo`'s saved input (no copy: `transpose(1, 2).contiguous()` of the kernel's
        // (b, s, heads, d) output is a view). The repeat moves 2·(KV + h) per token each way.
        let a = g.op("attention").unwrap();
        assert_eq!(a.saved_bytes, 3.0 * 2.0 * t * h + lse);
        assert_eq!(g.op("proj").unwrap().saved_bytes, 2.0 * t * h);
        let copies = 2.0 * (2.0 * t * kv + 2.0 * t * h);
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
}
