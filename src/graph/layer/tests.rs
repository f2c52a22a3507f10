//! The layer graph: parameters, saved activations, FP8 casts, attention variants per shard (the MoE layer's in `moe/tests.rs`).

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

/// One Mixtral micro-batch (b = 1, s = 4096, bf16) at tp 4 with SP and ep 4, experts split
/// over the TP ranks.
pub(super) fn moe_shard() -> Shard {
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

/// The collectives of operator `op`'s forward, with their bytes.
pub(super) fn fwd_comms(g: &OpGraph, op: &str) -> Vec<(Coll, f64)> {
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
