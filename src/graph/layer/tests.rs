//! The layer graph: parameters, saved activations, FP8 casts and MoE dispatch per shard.

use super::*;
use crate::graph::MemClass;
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
        etp: tp,
        attention,
        dtype: Dtype::Fp16,
        fp8_recipe: Default::default(),
        loss_fusion: false,
        tp_overlap: crate::spec::TpOverlap::Backward,
        framework: crate::spec::Framework::Megatron,
        modules: Default::default(),
        vocab_divisor: 128,
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

/// Current scaling (`Fp8Recipe::Tensorwise`) reads each operand once more for its amax
/// before the cast, except where the fused norm computed it, and then casts in full because
/// the norm wrote 16 bits. Llama 3 8B on 2048 tokens: QKV forward is the cast-transpose of the
/// norm's output, 4 × 2048 × 4096 = 33,554,432 (1 byte under delayed scaling); backward its
/// output gradient's amax and cast, (2 + 4) × 2048 × 6144 = 75,497,472. fc2 forward
/// (2 + 4) × 2048 × 14,336 = 176,160,768, backward (2 + 4) × 2048 × 4096 = 50,331,648. The
/// amax pass is a kernel of its own; the transposed copy is written inside the cast.
#[test]
fn current_scaling_reads_each_operand_for_its_amax() {
    let m = crate::spec::load_model("llama3-8b").unwrap();
    let layer = |recipe| {
        let sh = Shard {
            dtype: Dtype::Fp8,
            fp8_recipe: recipe,
            ..shard(1, false, AttentionImpl::Flash)
        };
        transformer_layer(&m, &sh, false)
    };
    let cs = layer(crate::spec::Fp8Recipe::Tensorwise);
    let bytes = |op: &str| {
        let o = cs.op(op).unwrap();
        (Kernel::memory_bytes(&o.fwd), Kernel::memory_bytes(&o.bwd))
    };
    assert_eq!(bytes("qkv"), (33_554_432.0, 75_497_472.0));
    assert_eq!(bytes("fc2"), (176_160_768.0, 50_331_648.0));
    // The passes before each GEMM, per element: current scaling's amax (a kernel of its own),
    // the cast (read 2, write 1) and the transposed copy it writes (1); after a fused norm
    // under delayed scaling, a transpose kernel of its own.
    let passes = |g: &OpGraph, op: &str| -> Vec<(f64, MemClass)> {
        g.op(op)
            .unwrap()
            .fwd
            .iter()
            .take_while(|k| !matches!(k, Kernel::Gemm { .. }))
            .filter_map(|k| match *k {
                Kernel::Memory { bytes, class } => Some((bytes / (2048.0 * 14_336.0), class)),
                _ => None,
            })
            .collect()
    };
    use MemClass::{Elementwise as E, Fp8Transpose as T};
    assert_eq!(passes(&cs, "fc2"), [(2.0, E), (3.0, E), (1.0, T)]);
    let delayed = layer(crate::spec::Fp8Recipe::Delayed);
    assert_eq!(passes(&delayed, "fc2"), [(3.0, E), (1.0, T)]);
    let qkv = passes(&delayed, "qkv");
    assert_eq!(qkv.len(), 1);
    assert_eq!(qkv[0].1, MemClass::Fp8TransposeKernel);
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
        etp: 1,
        attention: AttentionImpl::Flash,
        dtype: Dtype::Bf16,
        fp8_recipe: Default::default(),
        loss_fusion: false,
        tp_overlap: crate::spec::TpOverlap::Backward,
        framework: crate::spec::Framework::Megatron,
        modules: Default::default(),
        vocab_divisor: 128,
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

/// One Mixtral micro-batch (b = 1, s = 4096, bf16) at tp 4 with SP and ep 4, experts split
/// over the TP ranks.
fn moe_shard() -> Shard {
    Shard {
        b: 1,
        s: 4096,
        tp: 4,
        sp: true,
        cp: 1,
        ep: 4,
        etp: 4,
        attention: AttentionImpl::Flash,
        dtype: Dtype::Bf16,
        fp8_recipe: Default::default(),
        loss_fusion: false,
        tp_overlap: crate::spec::TpOverlap::Backward,
        framework: crate::spec::Framework::Megatron,
        modules: Default::default(),
        vocab_divisor: 128,
    }
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
    let sh = moe_shard();
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

/// With several experts on a rank the dispatcher regroups the received tokens by expert
/// before the GEMMs and back after (Megatron-Core's "Permutation 2"): on the shard above (two
/// local experts of Mixtral's eight at ep 4), a copy of the TP group's 4096 × 2 routed tokens,
/// 67,108,864 bytes read and written, each way and again for the gradients. One expert per
/// rank (ep 8) sorts nothing.
#[test]
fn several_local_experts_regroup_their_tokens() {
    let m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let g = transformer_layer(&m, &moe_shard(), true);
    for name in ["sort_chunks", "unsort_chunks"] {
        let o = g.op(name).unwrap();
        assert_eq!(
            (Kernel::memory_bytes(&o.fwd), Kernel::memory_bytes(&o.bwd)),
            (134_217_728.0, 134_217_728.0),
            "{name}"
        );
    }
    let one = transformer_layer(
        &m,
        &Shard {
            ep: 8,
            ..moe_shard()
        },
        true,
    );
    assert!(one.op("sort_chunks").is_none() && one.op("unsort_chunks").is_none());
}

/// An MoE layer of `m` on `sh` under another framework.
fn under(m: &crate::spec::ModelSpec, sh: Shard, framework: crate::spec::Framework) -> OpGraph {
    transformer_layer(m, &Shard { framework, ..sh }, true)
}

/// gpt-oss-120b on the shard above at tp 1 and ep 8, whole experts (16 local).
fn gpt_oss_ep8() -> (crate::spec::ModelSpec, Shard) {
    let sh = Shard {
        tp: 1,
        sp: false,
        ep: 8,
        etp: 1,
        ..moe_shard()
    };
    (crate::spec::load_model("gpt-oss-120b").unwrap(), sh)
}

/// Transformer Engine runs a grouped linear as one cuBLAS GEMM per local expert over its 4
/// compute streams: gpt-oss at ep 8 holds 128 / 8 = 16 experts, each over 4096 × 4 / 16 =
/// 1024 routed tokens (one 4096-token sequence, balanced), so fc1's forward is 16 / 4 = 4
/// rounds of 4 GEMMs 1024 × 5760 × 2880 and its backward 4 rounds each of the data and the
/// weight gradients; torchtitan's `torch._grouped_mm` is one kernel over all 16, DeepSpeed-MoE
/// one kernel per expert in turn. The FLOPs
/// are the same: 2 · 16 · 1024 · 5760 · 2880.
#[test]
fn te_runs_the_experts_gemms_in_rounds_of_its_streams() {
    let (m, sh) = gpt_oss_ep8();
    let gemms = |o: &Vec<Kernel>| -> Vec<(u64, u64, u64, u64)> {
        o.iter()
            .filter_map(|k| match *k {
                Kernel::Gemm { batch, m, n, k } => Some((batch, m, n, k)),
                _ => None,
            })
            .collect()
    };
    let g = transformer_layer(&m, &sh, true);
    let fc1 = g.op("expert_fc1").unwrap();
    assert_eq!(gemms(&fc1.fwd), vec![(4, 1024, 5760, 2880); 4]);
    assert_eq!(
        gemms(&fc1.bwd),
        [
            vec![(4, 1024, 2880, 5760); 4],
            vec![(4, 2880, 5760, 1024); 4]
        ]
        .concat()
    );
    let flops: f64 = fc1.fwd.iter().map(Kernel::flops).sum();
    assert_eq!(flops, 2.0 * 16.0 * 1024.0 * 5760.0 * 2880.0);
    let tt = under(&m, sh, crate::spec::Framework::Torchtitan);
    assert_eq!(
        gemms(&tt.op("expert_fc1").unwrap().fwd),
        vec![(16, 1024, 5760, 2880)]
    );
    // DeepSpeed-MoE loops over its 16 experts: 16 kernels of one GEMM each.
    let ds = under(&m, sh, crate::spec::Framework::DeepSpeed);
    assert_eq!(
        gemms(&ds.op("expert_fc1").unwrap().fwd),
        vec![(1, 1024, 5760, 2880); 16]
    );
}

/// gpt-oss's clamped activation and fc2 bias as Megatron-Core runs them, on one 4096-token
/// sequence in bf16 at tp 1, ep 8 (128 experts, 16 local, top-4): every rank computes
/// 4096 × 4 = 16,384 routed tokens (balanced), fc1 writing 2 × 2880 wide, fc2 2880.
/// x = 16,384 × 2880 × 2 B = 94,371,840 B for one half of fc1's output or fc2's output.
/// - The clamp (`chunk`, two `clamp`s, `cat`): forward 8x = 754,974,720 B, backward 10x =
///   943,718,400 B, keeping fc1's output, 2x = 188,743,680 B.
/// - fc2's bias (`_apply_bias`): forward 2·16 kernels moving 4x and a concatenation moving 2x
///   (6x = 566,231,040 B in 33 kernels); backward 4·16 kernels moving 6x and one moving 2x
///   (8x = 754,974,720 B in 65 kernels); nothing kept.
///
/// Under `moe_act` the checkpoint keeps fc1's output (the clamp's input) and re-runs both;
/// the activation, whose input the clamp recomputes, keeps nothing. Under torchtitan the clamp
/// concatenates nothing (4x, 6x) and the bias is not Megatron's loop.
#[test]
fn gpt_oss_clamp_and_expert_bias_run_outside_the_fused_kernels() {
    let (m, sh) = gpt_oss_ep8();
    let g = transformer_layer(&m, &sh, true);
    let x = 16_384.0 * 2880.0 * 2.0;
    let clamp = g.op("glu_clamp").unwrap();
    assert_eq!(
        (
            Kernel::memory_bytes(&clamp.fwd),
            Kernel::memory_bytes(&clamp.bwd),
            clamp.saved_bytes
        ),
        (8.0 * x, 10.0 * x, 2.0 * x)
    );
    let bias = g.op("expert_fc2_bias").unwrap();
    assert_eq!((bias.fwd.len(), bias.bwd.len()), (33, 65));
    let close = |a: f64, b: f64| (a - b).abs() < 1e-3 * b;
    assert!(close(Kernel::memory_bytes(&bias.fwd), 6.0 * x));
    assert!(close(Kernel::memory_bytes(&bias.bwd), 8.0 * x));
    assert_eq!(bias.saved_bytes, 0.0);
    // The order: fc1, clamp, activation, fc2, bias.
    let names: Vec<&str> = g.ops().iter().map(|o| o.name).collect();
    let at = |n: &str| names.iter().position(|&o| o == n).unwrap();
    assert!(at("expert_fc1") < at("glu_clamp") && at("glu_clamp") < at("swiglu"));
    assert!(at("expert_fc2") < at("expert_fc2_bias"));
    // Selective recomputation of the experts' activation.
    let act = transformer_layer(
        &m,
        &Shard {
            modules: crate::spec::RecomputeModules::MOE_ACT,
            ..sh
        },
        true,
    );
    let (c, a) = (act.op("glu_clamp").unwrap(), act.op("swiglu").unwrap());
    assert_eq!(c.saved_selective_bytes, 2.0 * x);
    assert_eq!(c.selective_fwd, c.fwd);
    assert_eq!(a.saved_selective_bytes, 0.0);
    assert_eq!(a.selective_fwd, a.fwd);
    // torchtitan: two clamps of strided views, no Megatron bias loop.
    let tt = under(&m, sh, crate::spec::Framework::Torchtitan);
    let c = tt.op("glu_clamp").unwrap();
    assert_eq!(
        (Kernel::memory_bytes(&c.fwd), Kernel::memory_bytes(&c.bwd)),
        (4.0 * x, 6.0 * x)
    );
    assert!(tt.op("expert_fc2_bias").is_none());
    // A model without a clamp or expert biases (Mixtral) has neither.
    let mix = transformer_layer(&crate::spec::load_model("mixtral-8x7b").unwrap(), &sh, true);
    assert!(mix.op("glu_clamp").is_none() && mix.op("expert_fc2_bias").is_none());
}

/// The grouped expert GEMMs keep their inputs for the weight gradients: 16-bit in bf16, the
/// FP8 cast under FP8 training (TE `GroupedLinear`), as dense linears do. Mixtral on the
/// shard above: the expert-TP group's 4096 × 2 routed tokens, fc1's input 8192 × 4096 and
/// fc2's 8192 × 14,336 / 4 = 8192 × 3584 elements: 67,108,864 and 58,720,256 bytes in bf16,
/// half that in FP8.
#[test]
fn fp8_experts_keep_their_inputs_in_fp8() {
    let m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let saved = |dtype| {
        let sh = Shard {
            dtype,
            ..moe_shard()
        };
        let g = transformer_layer(&m, &sh, true);
        let s = |op: &str| g.op(op).unwrap().saved_bytes;
        (s("expert_fc1"), s("expert_fc2"))
    };
    assert_eq!(saved(Dtype::Bf16), (67_108_864.0, 58_720_256.0));
    assert_eq!(saved(Dtype::Fp8), (33_554_432.0, 29_360_128.0));
}

/// Whole experts on each rank (etp 1, Mixtral, tp 4 with SP, ep 4, b·s = 4096): the rank
/// routes its own 1024 tokens' 2 × 1024 copies (dispatch 2048 × 4096 × 2 B = 16,777,216 B, as
/// with experts split over TP), gathers nothing over the TP ranks, and its 8 / 4 = 2 experts
/// compute the 2048 routed tokens, 1024 each, at full width: fc1 n = 2 × 14336 = 28672 (the
/// split layout's 4096-token GEMMs at 7168 wide do the same 2·1024·28672·4096 FLOPs per
/// expert). Each rank holds its two experts whole: 2 × 3 × 4096 × 14336 = 352,321,536
/// parameters, four times the split layout's.
#[test]
fn whole_experts_gather_nothing_and_compute_their_own_routed_tokens() {
    let m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let split = moe_shard();
    let whole = Shard { etp: 1, ..split };
    let g = transformer_layer(&m, &whole, true);
    assert!(g.op("expert_tp_gather").is_none() && g.op("expert_tp_scatter").is_none());
    let dispatch: f64 = g
        .op("dispatch")
        .unwrap()
        .fwd
        .iter()
        .map(|k| match k {
            Kernel::Comm { bytes, .. } => *bytes,
            _ => 0.0,
        })
        .sum();
    assert_eq!(dispatch, 16_777_216.0);
    match &g.op("expert_fc1").unwrap().fwd[..] {
        [.., Kernel::Gemm { batch, m, n, k }] => {
            assert_eq!((*batch, *m, *n, *k), (2, 1024, 28672, 4096))
        }
        k => panic!("{k:?}"),
    }
    let experts =
        |g: &OpGraph| g.op("expert_fc1").unwrap().params + g.op("expert_fc2").unwrap().params;
    let s = transformer_layer(&m, &split, true);
    assert_eq!(experts(&g), 352_321_536.0);
    assert_eq!(experts(&g), 4.0 * experts(&s));
    let flops = |g: &OpGraph| g.op("expert_fc1").unwrap().fwd_flops();
    assert_eq!(flops(&g), flops(&s));
}

/// The collectives of operator `op`'s forward, with their bytes.
fn fwd_comms(g: &OpGraph, op: &str) -> Vec<(Coll, f64)> {
    g.op(op)
        .unwrap()
        .fwd
        .iter()
        .filter_map(|k| match k {
            Kernel::Comm { coll, bytes, .. } => Some((*coll, *bytes)),
            _ => None,
        })
        .collect()
}

/// Shared experts (Mixtral's shape with a 2 × 14336 shared MLP and its gate, tp 4 with SP, ep
/// 4): a dense MLP split over the TP ranks as fc1/fc2 are, after the combine, gathering the
/// rank's 1024 tokens (all-gather of 4096 × 4096 × 2 B = 33,554,432 B) and reduce-scattering
/// its output; fc1 computes 2·4096·(2·28672/4)·4096 FLOPs. The gate adds h weights
/// (replicated), the add reads two 1024 × 4096 × 2 B inputs and writes one. On one rank the
/// layer's parameters are the spec's.
#[test]
fn shared_experts_run_as_a_tensor_parallel_mlp_after_the_combine() {
    let mut m = crate::spec::load_model("mixtral-8x7b").unwrap();
    let e = m.moe.as_mut().unwrap();
    (e.shared_ffn_hidden, e.shared_gate) = (28672, true);
    let g = transformer_layer(&m, &moe_shard(), true);
    let names: Vec<&str> = g.ops().iter().map(|o| o.name).collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(at("combine") < at("shared_fc1"));
    assert_eq!(
        &names[at("shared_fc1")..=at("shared_add")],
        [
            "shared_fc1",
            "shared_swiglu",
            "shared_fc2",
            "shared_gate",
            "shared_add"
        ]
    );
    let fc1 = g.op("shared_fc1").unwrap();
    assert_eq!(
        fc1.fwd_flops(),
        2.0 * 4096.0 * (2.0 * 28672.0 / 4.0) * 4096.0
    );
    assert_eq!(
        fwd_comms(&g, "shared_fc1"),
        [(Coll::AllGather, 33_554_432.0)]
    );
    assert_eq!(
        fwd_comms(&g, "shared_fc2"),
        [(Coll::ReduceScatter, 33_554_432.0)]
    );
    assert_eq!(g.op("shared_gate").unwrap().params, 4096.0);
    assert_eq!(
        Kernel::memory_bytes(&g.op("shared_add").unwrap().fwd),
        3.0 * 1024.0 * 4096.0 * 2.0
    );
    let one = Shard {
        tp: 1,
        sp: false,
        ep: 1,
        etp: 1,
        ..moe_shard()
    };
    assert_eq!(
        transformer_layer(&m, &one, true).params(),
        m.layer_params(0)
    );
}

/// DeepSeek-V3's latent attention at tp 2 with SP (b = 1, s = 4096, bf16): the two
/// down-projections run duplicated on the rank's own 2048 tokens and gather nothing
/// (q: 2048 × 1536 × 7168, kv: 2048 × 576 × 7168); the up-projections gather the latents,
/// 4096 × 1536 × 2 B = 12,582,912 B for the query and 4096 × 512 × 2 B = 4,194,304 B plus
/// the rotary key 4096 × 64 × 2 B = 524,288 B for keys and values, and compute this rank's
/// 64 heads: 64·192 = 12,288 and 64·256 = 16,384 wide. The core attends at head size 192
/// with values of 128; the projection reads 64·128 = 8192 channels. On one rank the
/// graph's parameters are the spec's, for a dense and an MoE layer.
#[test]
fn latent_attention_projects_through_duplicated_downs_and_gathered_latents() {
    let m = crate::spec::load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/deepseek-v3.json"
    ))
    .unwrap();
    let sh = Shard {
        tp: 2,
        sp: true,
        ep: 1,
        etp: 1,
        ..moe_shard()
    };
    let g = transformer_layer(&m, &sh, false);
    let gemm = |op: &str| -> (u64, u64, u64) {
        g.op(op)
            .unwrap()
            .fwd
            .iter()
            .find_map(|k| match *k {
                Kernel::Gemm { m, n, k, .. } => Some((m, n, k)),
                _ => None,
            })
            .unwrap()
    };
    let comms = |op: &str| fwd_comms(&g, op);
    assert_eq!(gemm("q_down"), (2048, 1536, 7168));
    assert_eq!(gemm("kv_down"), (2048, 576, 7168));
    assert!(comms("q_down").is_empty() && comms("kv_down").is_empty());
    assert_eq!(gemm("q_up"), (4096, 12288, 1536));
    assert_eq!(comms("q_up"), [(Coll::AllGather, 12_582_912.0)]);
    assert_eq!(gemm("kv_up"), (4096, 16384, 512));
    assert_eq!(
        comms("kv_up"),
        [(Coll::AllGather, 524_288.0), (Coll::AllGather, 4_194_304.0)]
    );
    assert_eq!(gemm("proj"), (4096, 7168, 8192));
    match g.op("attention").unwrap().fwd[..] {
        [
            Kernel::Attention {
                batch_heads,
                head_dim,
                v_dim,
                ..
            },
        ] => assert_eq!((batch_heads, head_dim, v_dim), (64, 192, 128)),
        ref k => panic!("{k:?}"),
    }
    assert!(g.op("qkv").is_none());
    let one = Shard {
        tp: 1,
        sp: false,
        ..sh
    };
    assert_eq!(
        transformer_layer(&m, &one, false).params(),
        m.layer_params(0)
    );
    assert_eq!(
        transformer_layer(&m, &one, true).params(),
        m.layer_params(3)
    );
}

/// A head size set apart from hidden/heads (Qwen3-30B-A3B: 32 heads of 128 on hidden 2048)
/// widens Q and the attention output to a·d = 4096: at tp 2 QKV is 2048 → (4096 + 2·512)/2 =
/// 2560 and the projection 2048 ← 4096/2 = 2048; QK-norm rewrites Q and K, (4096 + 512)/2 =
/// 2304 per token, with its two 128-wide weights (replicated on the TP ranks). On one rank
/// the graph's parameters are the spec's.
#[test]
fn head_size_set_apart_widens_q_and_the_projection() {
    let m = crate::spec::load_model(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/hf/qwen3-30b-a3b.json"
    ))
    .unwrap();
    let sh = Shard {
        tp: 2,
        ep: 1,
        etp: 2,
        ..moe_shard()
    };
    let g = transformer_layer(&m, &sh, true);
    let gemm = |op: &str| match &g.op(op).unwrap().fwd[..] {
        [.., Kernel::Gemm { n, k, .. }] | [Kernel::Gemm { n, k, .. }, ..] => (*n, *k),
        k => panic!("{op}: {k:?}"),
    };
    assert_eq!(gemm("qkv"), (2560, 2048));
    assert_eq!(gemm("proj"), (2048, 2048));
    let qk = g.op("qk_norm").unwrap();
    assert_eq!(qk.params, 256.0);
    // Tokens 4096 × 2304 elements, 2 bytes each, kept for the backward.
    assert_eq!(qk.saved_bytes, 4096.0 * 2304.0 * 2.0);
    let one = Shard {
        tp: 1,
        sp: false,
        etp: 1,
        ..sh
    };
    assert_eq!(
        transformer_layer(&m, &one, true).params(),
        m.layer_params(0)
    );
}

/// A sliding window of w = 1024 keys on Llama 3 8B at s = 4096 (tp 1, b = 1): a sliding
/// layer's attention kernel keeps (w/s)(1 − w/2s) = 0.25 · 0.875 = 0.21875 of the s² score
/// pairs (4096·1024 − 1024²/2 = 3,670,016 = 0.21875 · 4096²), against 1/2 causal: forward
/// FLOPs 4 · 32 heads · 4096² · 128 · 0.21875. With every second layer full, the model's
/// graphs give layer 0 the sliding graph and layer 1 the full one. A window no shorter than
/// the sequence changes nothing, and builds no sliding graph.
#[test]
fn sliding_window_keeps_the_band_of_scores() {
    use crate::graph::ModelGraph;
    use crate::spec::{SlidingWindow, WindowLayers};
    let mut m = crate::spec::load_model("llama3-8b").unwrap();
    let sh = Shard {
        s: 4096,
        ..shard(1, false, AttentionImpl::Flash)
    };
    let flops = |g: &OpGraph| {
        g.op("attention")
            .unwrap()
            .fwd
            .iter()
            .map(Kernel::flops)
            .sum::<f64>()
    };
    let scores = 4.0 * 32.0 * 4096.0 * 4096.0 * 128.0;
    assert_eq!(flops(&transformer_layer(&m, &sh, false)), scores * 0.5);
    m.attention_window = Some(SlidingWindow {
        size: 1024,
        layers: WindowLayers::FullEvery(2),
    });
    assert_eq!(flops(&layer_graph(&m, &sh, false, true)), scores * 0.21875);
    assert_eq!(flops(&layer_graph(&m, &sh, false, false)), scores * 0.5);
    let g = ModelGraph::build(&m, &sh);
    assert_eq!(flops(g.layer(&m, 0)), scores * 0.21875);
    assert_eq!(flops(g.layer(&m, 1)), scores * 0.5);
    m.attention_window = Some(SlidingWindow {
        size: 4096,
        layers: WindowLayers::All,
    });
    let g = ModelGraph::build(&m, &sh);
    assert!(g.sliding.is_none());
    assert_eq!(flops(g.layer(&m, 0)), scores * 0.5);
}
