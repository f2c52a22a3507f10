//! The MoE layer graph: the experts' parameters and GEMMs (Transformer Engine's rounds),
//! the dispatcher's collectives and regrouping, gpt-oss's clamp and fc2 bias, FP8 expert
//! inputs, shared experts.

use super::super::tests::{fwd_comms, moe_shard};
use super::super::*;
use crate::units::Dtype;

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
