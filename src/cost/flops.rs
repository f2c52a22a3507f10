//! Model FLOPs (for MFU) and hardware FLOPs (for HFU), the conventions published runs use.

use crate::graph::{ATTENTION_CORE, Kernel, Shard, causal_share, layer_graph};
use crate::spec::{AttentionImpl, Framework, ModelSpec, Plan, Recompute, RecomputeModules};

/// Forward FLOPs of one sequence of `s` tokens through the whole model, counting the full s×s
/// attention (no causal halving), as Megatron-LM's `num_floating_point_operations` and the
/// SC'21 paper do: per layer QKV 2sh(q + 2h_kv), scores and context 4s²q, projection 2sqh
/// (q = a·d, which is h unless the head size is set apart; under MLA its linears and
/// 2s²·a·(d + d_v)), MLP 2shf·(2 or 3), MoE router
/// 2shE, top_k experts and the shared experts (of total width f_s: 2shf_s·(2 or 3)); plus
/// the LM head 2shV.
pub fn forward_flops_per_sequence(model: &ModelSpec, s: u64) -> f64 {
    let scores = score_flops_per_layer(model, s);
    let (s, h) = (s as f64, model.hidden as f64);
    let (q, kv) = (model.q_hidden() as f64, model.kv_hidden() as f64);
    let mats = if model.arch.gated_mlp() { 3.0 } else { 2.0 };
    let attn = match model.mla {
        Some(m) => 2.0 * s * m.linear_params(model.hidden, model.heads) + scores,
        None => 2.0 * s * h * (q + 2.0 * kv) + scores + 2.0 * s * q * h,
    };
    let dense_mlp = 2.0 * s * h * model.ffn_hidden as f64 * mats;
    let moe_mlp = model.moe.as_ref().map_or(0.0, |m| {
        2.0 * s * h * m.experts as f64
            + (m.top_k * m.expert_ffn_hidden + m.shared_ffn_hidden) as f64 * 2.0 * s * h * mats
    });
    let n_moe = model.moe_layers() as f64;
    let n_dense = model.layers as f64 - n_moe;
    let bert_head = if model.arch == crate::spec::Arch::Bert {
        2.0 * s * h * h
    } else {
        0.0
    };
    // Multi-token prediction, per depth: the 2h → h projection, one layer of the last
    // layer's kind and the output head again (DeepSeek-V3 §2.2; `graph::head`).
    let last_mlp = if model.is_moe_layer(model.mtp_layer_kind()) {
        moe_mlp
    } else {
        dense_mlp
    };
    let head = 2.0 * s * h * model.vocab as f64;
    let mtp = model.mtp_layers as f64 * (2.0 * s * 2.0 * h * h + attn + last_mlp + head);
    n_dense * (attn + dense_mlp) + n_moe * (attn + moe_mlp) + head + bert_head + mtp
}

/// Score and context FLOPs of one layer's forward over a sequence of `s` tokens in the
/// full-matrix convention: 2s²·a·(d + d_v), 4s²q where the value heads are the query's, times
/// the layers' mean window share.
fn score_flops_per_layer(model: &ModelSpec, s: u64) -> f64 {
    let window = window_share(model, s);
    let (s, q) = (s as f64, model.q_hidden() as f64);
    2.0 * s * s * (q + model.attn_out_hidden() as f64) * window
}

/// FLOPs of one step that the model and hardware conventions count but the kernels do not
/// run: the half of each causal score matrix above the diagonal, which FlashAttention skips
/// block by block (Dao 2023, Algorithm 1; the full-matrix count doubles the causal share the
/// mask keeps, [`window_share`]), in the forward, the backward (twice the forward) and the
/// recomputed forward where the plan re-runs the attention core (full recomputation on
/// `fraction` of the layers; Megatron's selective recomputation of the attention core).
/// None for a bidirectional model or the unfused kernel, which computes the masked scores.
/// The diagonal blocks, computed whole, are counted as skipped (a share of 1/blocks).
pub fn skipped_score_flops_per_step(model: &ModelSpec, plan: &Plan, fraction: f64) -> f64 {
    if !model.arch.causal() || plan.attention == AttentionImpl::Unfused {
        return 0.0;
    }
    let depths = (model.layers + model.mtp_layers) as f64;
    let fwd = 0.5 * depths * score_flops_per_layer(model, plan.seq_len);
    let recomputed = match plan.recompute {
        Recompute::None => 0.0,
        Recompute::Full => fraction,
        // The module policy re-runs the attention core; the op-level policy never SDPA
        // ([`selective_recompute_flops_per_sequence`]).
        Recompute::Selective
            if !plan.framework.op_level_selective()
                && plan.recompute_modules.has(RecomputeModules::CORE_ATTN) =>
        {
            fraction
        }
        Recompute::Selective => 0.0,
    };
    plan.global_batch as f64 * fwd * (3.0 + recomputed)
}

/// Forward FLOPs of one sequence that full recomputation does not re-run: the LM head, once
/// and again for each multi-token prediction depth (whose bodies it re-runs as layers).
fn head_flops_per_sequence(model: &ModelSpec, s: u64) -> f64 {
    (1 + model.mtp_layers) as f64 * 2.0 * s as f64 * (model.hidden * model.vocab) as f64
}

/// The share of the s×s score FLOPs a sliding window leaves, in the full-matrix convention
/// above: twice the causal share the mask keeps ([`causal_share`], the layers' mean), so 1
/// without a window; a window of w < s on every layer counts (2sw − w²)/s², the pairs it
/// keeps doubled as the full count doubles the causal triangle's.
fn window_share(model: &ModelSpec, s: u64) -> f64 {
    model.window_at(s).map_or(1.0, |w| {
        let sliding = w.sliding_layers(model.layers) as f64 / model.layers as f64;
        2.0 * (sliding * causal_share(s, Some(w.size)) + (1.0 - sliding) * 0.5)
    })
}

/// Forward FLOPs of one sequence that Megatron-Core's recompute modules other than the
/// attention core re-run (`graph::layer` `megatron_modules`: MLA's up-projections, the norms,
/// the activation, whole MLPs), summed from each kind of layer's `selective_fwd` at tp 1.
/// None for the default modules, the attention core alone.
fn module_flops_per_sequence(
    model: &ModelSpec,
    s: u64,
    fw: Framework,
    modules: RecomputeModules,
) -> f64 {
    if modules.is_default() {
        return 0.0;
    }
    let mut p = Plan::new(1, 1, 1, 1, 1, s);
    (p.framework, p.recompute_modules) = (fw, modules);
    let sh = Shard::of(&p);
    let not_core = |g: &crate::graph::OpGraph| {
        g.sum(|o| {
            if ATTENTION_CORE.contains(&o.name) {
                0.0
            } else {
                o.selective_fwd.iter().map(Kernel::flops).sum()
            }
        })
    };
    let mtp = crate::graph::mtp(model, &sh).map_or(0.0, |g| model.mtp_layers as f64 * not_core(&g));
    let mut kinds: Vec<((bool, bool), f64)> = Vec::new();
    mtp + (0..model.layers)
        .map(|i| {
            let kind = (model.is_moe_layer(i), model.slides(i));
            if let Some(&(_, f)) = kinds.iter().find(|(k, _)| *k == kind) {
                return f;
            }
            let f = not_core(&layer_graph(model, &sh, kind.0, kind.1));
            kinds.push((kind, f));
            f
        })
        .sum::<f64>()
}

/// Forward FLOPs of one sequence that selective recomputation re-runs, by the framework's
/// policy: Megatron-LM's attention core, 4s²h per layer and multi-token prediction depth
/// (Korthikanti et al. 2022 §5; 2s²·a·(d + d_v) where the value heads are narrower, MLA's),
/// with the plan's other Megatron-Core modules ([`module_flops_per_sequence`]), or
/// torchtitan's op-level policy (`graph::layer` `op_level_selective`), which re-runs every
/// second matmul of a block — of wq, wk, wv, wo, [router], w1, w3, w2 that is wk, wo and w3
/// of a dense Llama block — the linears with a bias (`addmm`) and, in an MoE block, its
/// grouped expert GEMMs (not `aten.mm`); never SDPA.
pub fn selective_recompute_flops_per_sequence(
    model: &ModelSpec,
    s: u64,
    fw: Framework,
    modules: RecomputeModules,
) -> f64 {
    let seq = s;
    let (s, h) = (s as f64, model.hidden as f64);
    let q = model.q_hidden() as f64;
    if !fw.op_level_selective() {
        // Every layer's attention core, and each multi-token prediction depth's.
        let cores = (model.layers + model.mtp_layers) as f64;
        let core = if modules.has(RecomputeModules::CORE_ATTN) {
            score_flops_per_layer(model, seq) * cores
        } else {
            0.0
        };
        return core + module_flops_per_sequence(model, seq, fw, modules);
    }
    let kv = model.kv_hidden() as f64;
    let f = model.ffn_hidden as f64;
    let gated = model.arch.gated_mlp();
    // (forward FLOPs per token, dispatched as `aten.mm`): a linear with a bias is `addmm`,
    // which the policy neither counts nor keeps.
    let (qkv_mm, proj_mm, mm) = (!model.qkv_bias, !model.proj_bias, !model.mlp_bias);
    let attn = [
        (2.0 * h * q, qkv_mm),
        (2.0 * h * kv, qkv_mm),
        (2.0 * h * kv, qkv_mm),
        (2.0 * q * h, proj_mm),
    ];
    let mlp: Vec<(f64, bool)> = if gated {
        vec![(2.0 * h * f, mm), (2.0 * h * f, mm), (2.0 * f * h, mm)]
    } else {
        vec![(2.0 * h * f, mm), (2.0 * f * h, mm)]
    };
    // Re-run: every linear that is not `aten.mm`, and every second one that is.
    let rerun = |ops: &[(f64, bool)]| -> f64 {
        let mut count = 0;
        let per_token: f64 = ops
            .iter()
            .filter(|&&(_, is_mm)| {
                count += u32::from(is_mm);
                !is_mm || count % 2 == 0
            })
            .map(|&(flops, _)| flops)
            .sum();
        per_token * s
    };
    let dense = rerun(&[&attn[..], &mlp].concat());
    let moe = model.moe.as_ref().map_or(0.0, |m| {
        let mats = if gated { 3.0 } else { 2.0 };
        let experts = m.top_k as f64 * 2.0 * h * m.expert_ffn_hidden as f64 * mats * s;
        let fs = m.shared_ffn_hidden as f64;
        let shared: Vec<(f64, bool)> = match (fs > 0.0, gated) {
            (false, _) => Vec::new(),
            (true, true) => vec![(2.0 * h * fs, mm), (2.0 * h * fs, mm), (2.0 * fs * h, mm)],
            (true, false) => vec![(2.0 * h * fs, mm), (2.0 * fs * h, mm)],
        };
        let router = [(2.0 * h * m.experts as f64, !m.router_bias)];
        rerun(&[&attn[..], &router, &shared].concat()) + experts
    });
    let n_moe = model.moe_layers() as f64;
    (model.layers as f64 - n_moe) * dense + n_moe * moe
}

/// Model FLOPs of one training step: 3 × forward (backward is twice the forward).
pub fn model_flops_per_step(model: &ModelSpec, s: u64, global_batch: u64) -> f64 {
    3.0 * global_batch as f64 * forward_flops_per_sequence(model, s)
}

/// Hardware FLOPs of one step: model FLOPs plus the recomputed forward work — one more forward
/// of the recomputed layers and multi-token prediction bodies (not the heads) under full
/// recomputation (Narayanan et al. SC'21 eq. 3 counts it), what selective recomputation
/// re-runs under the framework's policy ([`selective_recompute_flops_per_sequence`]: the
/// plan's Megatron-Core modules, the attention core by default, Korthikanti et al. 2022 §5).
/// `fraction` is the share of layers that recompute (the depths are counted with them);
/// `selective` the FLOPs per sequence selective recomputation re-runs, which the plan's priced
/// graphs compute once for every plan that shares them (`PricedGraphs`).
pub fn hardware_flops_per_step(
    model: &ModelSpec,
    s: u64,
    global_batch: u64,
    rc: Recompute,
    selective: f64,
    fraction: f64,
) -> f64 {
    let fwd = global_batch as f64 * forward_flops_per_sequence(model, s);
    let extra = match rc {
        Recompute::None => 0.0,
        Recompute::Selective => global_batch as f64 * selective,
        Recompute::Full => fwd - global_batch as f64 * head_flops_per_sequence(model, s),
    };
    3.0 * fwd + fraction * extra
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernels skip of the conventions' count: the causal half of the score and
    /// context FLOPs under FlashAttention. Llama 3 8B (32 layers, q = d_v·a = 4096) at s =
    /// 8192, one sequence: 2s²·(4096 + 4096) per layer forward, half skipped, 3× for forward
    /// and backward: 0.5 · 32 · 2 · 8192² · 8192 · 3 = 5.277e13. Full recomputation of every
    /// layer re-runs the forward (4×), Megatron's selective recomputation the attention core
    /// (4×), torchtitan's op-level policy never SDPA (3×); the unfused kernel computes the
    /// masked scores and a bidirectional model has none: nothing skipped.
    #[test]
    fn causal_flash_attention_skips_half_the_counted_scores() {
        let m = crate::spec::load_model("llama3-8b").unwrap();
        let mut p = Plan::new(1, 1, 1, 1, 1, 8192);
        p.attention = AttentionImpl::Flash;
        let base = 0.5 * 32.0 * 2.0 * 8192f64.powi(2) * 8192.0 * 3.0;
        assert_eq!(skipped_score_flops_per_step(&m, &p, 1.0), base);
        p.recompute = Recompute::Full;
        assert_eq!(skipped_score_flops_per_step(&m, &p, 1.0), base * 4.0 / 3.0);
        assert_eq!(skipped_score_flops_per_step(&m, &p, 0.5), base * 3.5 / 3.0);
        p.recompute = Recompute::Selective;
        assert_eq!(skipped_score_flops_per_step(&m, &p, 1.0), base * 4.0 / 3.0);
        p.framework = Framework::Torchtitan;
        assert_eq!(skipped_score_flops_per_step(&m, &p, 1.0), base);
        p.attention = AttentionImpl::Unfused;
        assert_eq!(skipped_score_flops_per_step(&m, &p, 1.0), 0.0);
        let bert = crate::spec::load_model("bert-large").unwrap();
        let mut b = Plan::new(1, 1, 1, 1, 1, 512);
        b.attention = AttentionImpl::Flash;
        assert_eq!(skipped_score_flops_per_step(&bert, &b, 1.0), 0.0);
    }

    /// The recomputation FLOPs the convention counts are those the graph re-runs: Megatron-LM
    /// the attention core, 4s²h per layer; torchtitan's op-level policy the matmuls wk, wo and
    /// w3 of each Llama block, summed from one block's `selective_fwd` kernels (tp 1, one
    /// sequence) over the layers.
    #[test]
    fn selective_recompute_flops_follow_the_graph() {
        use crate::graph::{Shard, transformer_layer};
        use crate::spec::AttentionImpl;
        let m = crate::spec::load_model("llama2-70b").unwrap();
        let (s, h) = (4096.0, 8192.0);
        let mg = selective_recompute_flops_per_sequence(
            &m,
            4096,
            Framework::Megatron,
            RecomputeModules::CORE_ATTN,
        );
        assert_eq!(mg, 4.0 * s * s * h * 80.0);
        let mut p = crate::spec::Plan::new(1, 1, 1, 1, 1, 4096);
        (p.framework, p.attention) = (Framework::Torchtitan, AttentionImpl::Flash);
        let sh = Shard::of(&p);
        let g = transformer_layer(&m, &sh, false);
        let per_layer = g.selective_flops();
        let tt = selective_recompute_flops_per_sequence(
            &m,
            4096,
            Framework::Torchtitan,
            RecomputeModules::CORE_ATTN,
        );
        assert_eq!(tt, 80.0 * per_layer);
        assert_eq!(tt, 80.0 * 2.0 * s * (h * 1024.0 + h * h + h * 28672.0));
        // gpt2-xl's linears carry biases (`addmm`): all of them re-run, the graph agrees.
        let g2 = crate::spec::load_model("gpt2-xl").unwrap();
        let g = transformer_layer(
            &g2,
            &Shard::of(&crate::spec::Plan { seq_len: 1024, ..p }),
            false,
        );
        let per_layer = g.selective_flops();
        let (s2, h2) = (1024.0, 1600.0);
        assert_eq!(
            per_layer,
            2.0 * s2 * (3.0 * h2 * h2 + h2 * h2 + 2.0 * 4.0 * h2 * h2)
        );
        assert_eq!(
            selective_recompute_flops_per_sequence(
                &g2,
                1024,
                Framework::Torchtitan,
                RecomputeModules::CORE_ATTN
            ),
            48.0 * per_layer
        );
    }

    /// Shared experts add their MLP to every MoE layer's forward, 2·s·h·f_s·3 for SwiGLU
    /// (Mixtral with a 14336-wide shared MLP, s = 4096: 32 layers × 2·4096·4096·14336·3),
    /// and torchtitan's op-level policy re-runs every second of their matmuls as the graph
    /// does (one MoE layer at tp 1, one sequence).
    #[test]
    fn shared_experts_count_in_every_moe_layer() {
        use crate::graph::{Shard, transformer_layer};
        use crate::spec::AttentionImpl;
        let plain = crate::spec::load_model("mixtral-8x7b").unwrap();
        let mut m = plain.clone();
        m.moe.as_mut().unwrap().shared_ffn_hidden = 14336;
        let extra = 32.0 * 2.0 * 4096.0 * 4096.0 * 14336.0 * 3.0;
        assert_eq!(
            forward_flops_per_sequence(&m, 4096) - forward_flops_per_sequence(&plain, 4096),
            extra
        );
        let mut p = crate::spec::Plan::new(1, 1, 1, 1, 1, 4096);
        (p.framework, p.attention) = (Framework::Torchtitan, AttentionImpl::Flash);
        let g = transformer_layer(&m, &Shard::of(&p), true);
        assert_eq!(
            selective_recompute_flops_per_sequence(
                &m,
                4096,
                Framework::Torchtitan,
                RecomputeModules::CORE_ATTN
            ),
            32.0 * g.selective_flops()
        );
    }

    /// DeepSeek-V3 at s = 4096, term by term: per layer MLA's linears 2s·187,105,280
    /// (7168·1536 + 1536·128·192 + 7168·576 + 512·128·256 + 128·128·7168, NeMo's
    /// `per_layer_mla_params`) and scores and context 2s²·128·(192 + 128); 3 dense MLPs
    /// 2s·7168·18432·3; 58 MoE layers' router 2s·7168·256 and 8 routed + 1 shared experts
    /// 2s·7168·(9·2048)·3; the head 2s·7168·129280; one multi-token prediction depth.
    /// Selective recomputation re-runs the scores and context of the 61 layers and the
    /// depth's.
    #[test]
    fn latent_attention_counts_its_linears_and_unequal_heads() {
        let m = crate::spec::load_model(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hf/deepseek-v3.json"
        ))
        .unwrap();
        let s = 4096.0;
        let scores = 2.0 * s * s * 128.0 * (192.0 + 128.0);
        let attn = 61.0 * (2.0 * s * 187_105_280.0 + scores);
        let dense = 3.0 * 2.0 * s * 7168.0 * 18432.0 * 3.0;
        let moe = 58.0 * (2.0 * s * 7168.0 * 256.0 + 2.0 * s * 7168.0 * 9.0 * 2048.0 * 3.0);
        let head = 2.0 * s * 7168.0 * 129280.0;
        // One multi-token prediction depth: 2s·(2·7168)·7168, an MoE layer and the head.
        let mtp = 2.0 * s * 2.0 * 7168.0 * 7168.0 + attn / 61.0 + moe / 58.0 + head;
        assert_eq!(m.mtp_layers, 1);
        assert_eq!(
            forward_flops_per_sequence(&m, 4096),
            attn + dense + moe + head + mtp
        );
        // Full recomputation re-runs the layers and the depth's body, not the heads.
        let fw = Framework::Megatron;
        assert_eq!(
            hardware_flops_per_step(&m, 4096, 1, Recompute::Full, 0.0, 1.0),
            3.0 * (attn + dense + moe + head + mtp) + attn + dense + moe + (mtp - head)
        );
        assert_eq!(
            selective_recompute_flops_per_sequence(
                &m,
                4096,
                Framework::Megatron,
                RecomputeModules::CORE_ATTN
            ),
            62.0 * scores
        );
        // `mla_up_proj` adds the up-projections of every layer and the depth's, 2s·(1536·128·192
        // + 512·128·256); `moe_act` and `layernorm` re-run no GEMM.
        let up = 62.0 * 2.0 * s * (1536.0 * 128.0 * 192.0 + 512.0 * 128.0 * 256.0);
        let recipe = RecomputeModules::parse("core_attn,mla_up_proj,moe_act,layernorm").unwrap();
        assert_eq!(
            selective_recompute_flops_per_sequence(&m, 4096, fw, recipe),
            62.0 * scores + up
        );
        // `mlp` re-runs the 3 dense MLPs, `moe` the 58 MoE layers' router and experts and
        // the depth's.
        let mlps = RecomputeModules::parse("mlp,moe").unwrap();
        assert_eq!(
            selective_recompute_flops_per_sequence(&m, 4096, fw, mlps),
            dense + moe + moe / 58.0
        );
    }

    /// A window counts the score pairs it keeps, doubled as the full-matrix convention
    /// doubles the causal triangle: Mistral 7B (32 layers, q = 4096) at s = 8192 with a
    /// 4096-key window on every layer counts 2·(8192·4096 − 4096²/2) = 0.75·8192² pairs, so
    /// its forward is 0.25 · 4s²q · 32 below the same model's without the window; with only
    /// layers from 16 on sliding, half that.
    #[test]
    fn a_window_counts_the_scores_it_keeps() {
        use crate::spec::{SlidingWindow, WindowLayers};
        let mut m = crate::spec::load_model("llama3-8b").unwrap();
        let (s, q) = (8192.0, 4096.0);
        let full = forward_flops_per_sequence(&m, 8192);
        m.attention_window = Some(SlidingWindow {
            size: 4096,
            layers: WindowLayers::All,
        });
        let cut = 0.25 * 4.0 * s * s * q * 32.0;
        assert_eq!(full - forward_flops_per_sequence(&m, 8192), cut);
        assert_eq!(
            selective_recompute_flops_per_sequence(
                &m,
                8192,
                Framework::Megatron,
                RecomputeModules::CORE_ATTN
            ),
            0.75 * 4.0 * s * s * q * 32.0
        );
        m.attention_window = Some(SlidingWindow {
            size: 4096,
            layers: WindowLayers::From(16),
        });
        assert_eq!(full - forward_flops_per_sequence(&m, 8192), cut / 2.0);
        // At the window's length the window is the whole causal triangle.
        assert_eq!(
            forward_flops_per_sequence(&m, 4096),
            forward_flops_per_sequence(&crate::spec::load_model("llama3-8b").unwrap(), 4096)
        );
    }

    /// Narayanan et al. SC'21: model FLOPs 72·B·s·l·h²·(1 + s/6h + V/12lh) and, with the
    /// recompute forward, eq. (3) 96·B·s·l·h²·(1 + s/6h + V/16lh).
    #[test]
    fn matches_narayanan_closed_forms() {
        let m = crate::spec::load_model("gpt-1.7b").unwrap();
        let (b, s, l, h, v) = (512.0, 2048.0, 24.0, 2304.0, 51200.0);
        let model = 72.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (12.0 * l * h));
        let eq3 = 96.0 * b * s * l * h * h * (1.0 + s / (6.0 * h) + v / (16.0 * l * h));
        let ours = model_flops_per_step(&m, 2048, 512);
        assert!((ours / model - 1.0).abs() < 1e-12, "{ours} vs {model}");
        let hw = hardware_flops_per_step(&m, 2048, 512, Recompute::Full, 0.0, 1.0);
        assert!((hw / eq3 - 1.0).abs() < 1e-12, "{hw} vs {eq3}");
        // The paper's Table 1 row: 137 TFLOP/s on 32 GPUs ⇒ 3.53 s per iteration.
        assert!((eq3 / (32.0 * 137e12) - 3.528).abs() < 0.001);
    }
}
