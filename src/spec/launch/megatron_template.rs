//! The layer template as Megatron-LM arguments, where it differs from Megatron's GPT
//! (GeLU, LayerNorm, learned positions, a tied head, biases on every linear): activation,
//! norm, positions and rotary base, biases, QK-norm, attention sinks, and the sliding window
//! with the layers it covers. `megatron_shape` reads the same arguments back.

use super::megatron::{Args, arg, flag};
use super::{Collect, MegatronVersion};
use crate::spec::model::{Arch, ModelSpec, Positions, WindowLayers};
use crate::spec::plan::Plan;

/// The layer template where it differs from Megatron's GPT (GeLU, LayerNorm, learned
/// positions, tied head, biases).
pub(super) fn template(c: &mut Collect, a: &mut Args, model: &ModelSpec, v: MegatronVersion) {
    let llama = model.arch == Arch::Llama;
    let rotary = model.positions == Positions::Rotary;
    let flags: [(bool, &str, &'static str, Option<&str>); 8] = [
        (
            model.arch.gated_mlp() && model.swiglu_limit.is_none(),
            "arch",
            "--swiglu",
            None,
        ),
        (llama, "arch", "--normalization", Some("RMSNorm")),
        (
            rotary,
            "positions",
            "--position-embedding-type",
            Some("rope"),
        ),
        (
            !model.tied_embeddings,
            "tied_embeddings",
            "--untie-embeddings-and-output-weights",
            None,
        ),
        (
            !model.proj_bias && !model.mlp_bias,
            "mlp_bias",
            "--disable-bias-linear",
            None,
        ),
        // Megatron-Core's TE layer spec norms MLA's latents under the same flag.
        (
            model.qk_norm || model.mla.is_some(),
            "qk_norm",
            "--qk-layernorm",
            None,
        ),
        (model.mla.is_some(), "mla", "--multi-latent-attention", None),
        (
            model.attention_sinks,
            "attention_sinks",
            "--softmax-type",
            Some("learnable"),
        ),
    ];
    for (on, field, name, value) in flags {
        match (on, v, value) {
            (false, _, _) => {}
            (true, MegatronVersion::V2021, _) => c.refuse(field, format!("{name} is not in Megatron-LM 2021 (its GPT has GeLU, LayerNorm, learned positions, a tied head and biases)"), "use --megatron-version core"),
            (true, MegatronVersion::Core, Some(val)) => arg(a, name, val),
            (true, MegatronVersion::Core, None) => flag(a, name),
        }
    }
    if let (Some(m), MegatronVersion::Core) = (model.mla, v) {
        // Every size written: Megatron-LM's defaults (`_add_mla_args`: no query latent, a
        // 32-rank key/value latent, 128, 64, 128) are not DeepSeek's.
        if let Some(r) = m.q_lora_rank {
            arg(a, "--q-lora-rank", r);
        }
        arg(a, "--kv-lora-rank", m.kv_lora_rank);
        arg(a, "--qk-head-dim", m.qk_nope_dim);
        arg(a, "--qk-pos-emb-head-dim", m.qk_rope_dim);
        arg(a, "--v-head-dim", m.v_dim);
    }
    // Multi-token prediction (Megatron-Core `MultiTokenPredictionBlock`, on the last stage).
    match (model.mtp_layers, v) {
        (0, _) => {}
        (n, MegatronVersion::Core) => arg(a, "--mtp-num-layers", n),
        (_, MegatronVersion::V2021) => c.refuse(
            "mtp_layers",
            "multi-token prediction is not in Megatron-LM 2021",
            "use --megatron-version core",
        ),
    }
    // gpt-oss's activation: quick-GELU gate, the up projection offset by 1, both clamped
    // (Megatron-Core `TransformerConfig.glu_linear_offset`, `activation_func_clamp_value`;
    // NVIDIA-NeMo/Megatron-Bridge `gpt_oss_provider.py`).
    if let Some(l) = model.swiglu_limit {
        if v == MegatronVersion::V2021 {
            c.refuse(
                "swiglu_limit",
                "gpt-oss's clamped activation is not in Megatron-LM 2021",
                "use --megatron-version core",
            );
        } else {
            flag(a, "--quick-geglu");
            arg(a, "--glu-linear-offset", "1.0");
            arg(a, "--activation-func-clamp-value", format!("{l:?}"));
        }
    }
    // Megatron-LM reads `--rotary-base` as a whole number (`type=int`, default 10000).
    match model.rope_theta {
        Some(t) if rotary && v == MegatronVersion::Core && t.fract() == 0.0 => {
            arg(a, "--rotary-base", t as u64)
        }
        Some(t) if rotary && v == MegatronVersion::Core => c.refuse(
            "rope_theta",
            format!("{t}: Megatron-LM reads --rotary-base as a whole number"),
            "round rope_theta in the model YAML",
        ),
        _ => {}
    }
    // Megatron-LM biases every linear (`add_bias_linear`, the default), none
    // (`--disable-bias-linear`), or Q, K and V only (with `--add-qkv-bias`).
    if let Some(m) = model
        .moe
        .as_ref()
        .filter(|m| m.router_bias != model.mlp_bias)
    {
        c.refuse(
            "moe.router_bias",
            format!(
                "{} with mlp_bias {}: Megatron-Core biases the router exactly when it biases the other linears (add_bias_linear)",
                m.router_bias, model.mlp_bias
            ),
            "write the model with router_bias as mlp_bias",
        );
    }
    match (model.qkv_bias, model.proj_bias, model.mlp_bias) {
        (true, true, true) | (false, false, false) => {}
        (true, false, false) => flag(a, "--add-qkv-bias"),
        (qkv, proj, mlp) => c.refuse(
            "mlp_bias",
            format!("biases on Q/K/V {qkv}, the output projection {proj}, the MLP {mlp}: Megatron-LM biases every linear, none, or Q/K/V only"),
            "write the model's biases as one of those",
        ),
    }
}

/// The model's sliding window: Megatron-Core `--window-size W−1,0` (Transformer Engine's
/// (left, right): the W−1 keys before each query and the query's own; Megatron-LM
/// `megatron/training/arguments.py` reads a comma-separated pair) and, where not every layer
/// slides, `--window-attn-skip-freq`: n (layers n, 2n, … full, 1-based;
/// `megatron/core/transformer/utils.py` `is_layer_window_attention`), or a list pattern, 1
/// for a sliding layer and 0 for a full one. Left out where the window is no shorter than the
/// sequence and the plan splits it over context parallelism (Transformer Engine's ring
/// refuses any window) or runs Megatron-LM 2021 (which has none): the attention is the same.
pub(super) fn sliding_window(
    c: &mut Collect,
    a: &mut Args,
    model: &ModelSpec,
    plan: &Plan,
    v: MegatronVersion,
) {
    let Some(w) = model.attention_window else {
        return;
    };
    // Where the window is no shorter than the sequence the attention is the same without
    // it: left out under context parallelism (Transformer Engine's ring refuses any window)
    // and for Megatron-LM 2021 (which has none).
    let bites = model.window_at(plan.seq_len).is_some();
    if !bites && (plan.cp > 1 || v == MegatronVersion::V2021) {
        return;
    }
    if v == MegatronVersion::V2021 {
        return c.refuse(
            "sliding_window",
            "sliding-window attention is not in Megatron-LM 2021",
            "use --megatron-version core",
        );
    }
    arg(a, "--window-size", format!("{},0", w.size - 1));
    match w.layers {
        WindowLayers::All => {}
        WindowLayers::FullEvery(n) => arg(a, "--window-attn-skip-freq", n),
        WindowLayers::From(first) => arg(
            a,
            "--window-attn-skip-freq",
            format!("([0]*{first}+[1]*{})", model.layers - first),
        ),
    }
}
