//! The experts of the mixture-of-experts families (Mixtral's aside), and DeepSeek's
//! multi-head latent attention, as their transformers configuration classes read them.

use super::family::Family;
use super::fields::Fields;
use crate::spec::model::{MAX_HIDDEN, MAX_LAYERS, Mla};
use serde_json::Value;

/// A config's experts, as the import reads them.
pub(super) struct HfMoe {
    pub(super) experts: u64,
    pub(super) top_k: u64,
    pub(super) every: u64,
    /// Each routed expert's width; `None`: `intermediate_size`.
    pub(super) width: Option<u64>,
    /// The shared experts' total width (0: none), and whether a gate scales them.
    pub(super) shared: u64,
    pub(super) gate: bool,
    /// Dense layers before the first expert layer.
    pub(super) first_dense: u64,
}

impl HfMoe {
    /// Routed experts only, in every `every`-th layer.
    pub(super) fn routed(experts: u64, top_k: u64, every: u64, width: Option<u64>) -> HfMoe {
        HfMoe {
            experts,
            top_k,
            every,
            width,
            shared: 0,
            gate: false,
            first_dense: 0,
        }
    }
}

/// `key`'s whole number, or `default` where the config leaves it out (or writes null), as
/// the transformers class reads it.
fn count_or(f: &mut Fields<'_>, key: &'static str, default: u64) -> Option<u64> {
    if f.map.get(key).is_none_or(Value::is_null) {
        Some(default)
    } else {
        f.count(&[key], 1 << 20)
    }
}

/// DeepSeek's experts (`DeepseekV3Config`, transformers; V3's class defaults where a key is
/// absent, V2's keys required): `n_routed_experts` (256) of `moe_intermediate_size` (2048),
/// `num_experts_per_tok` (8) per token, `n_shared_experts` (1) of the same width beside
/// them (null or 0: none), in every layer from `first_k_dense_replace` (3) on
/// (`DeepseekV3DecoderLayer`:
/// `layer_idx >= first_k_dense_replace`; the remote code also reads `moe_layer_freq`, which
/// every published config sets to 1). Routing by groups (`n_group`, `topk_group`) and the
/// score function change which experts a token meets, not the work: planner prices balanced
/// routing.
pub(super) fn deepseek_moe(f: &mut Fields<'_>, fam: Family) -> Option<HfMoe> {
    let v3 = fam == Family::DeepseekV3;
    let key = |f: &mut Fields<'_>, k: &'static str, v3_default: u64| {
        if v3 {
            count_or(f, k, v3_default)
        } else {
            f.need(&[k], 1 << 20)
        }
    };
    // No routed experts (null): every layer dense, as `DeepseekV3DecoderLayer` builds it.
    if f.map.get("n_routed_experts").is_some_and(Value::is_null) {
        return None;
    }
    let experts = key(f, "n_routed_experts", 256);
    let top_k = key(f, "num_experts_per_tok", 8);
    let width = key(f, "moe_intermediate_size", 2048);
    // None (null) or 0 shared experts: none.
    let shared = match f.map.get("n_shared_experts") {
        Some(Value::Null) => Some(0),
        Some(v) if v.as_u64() == Some(0) => Some(0),
        _ => key(f, "n_shared_experts", 1),
    };
    // 0 is valid: no dense layer first.
    let first_dense = match f.map.get("first_k_dense_replace") {
        None | Some(Value::Null) => Some(if v3 { 3 } else { 0 }),
        Some(v) => match v.as_u64().filter(|n| *n <= MAX_LAYERS) {
            Some(n) => Some(n),
            None => {
                let msg = format!("expected a whole number from 0 to {MAX_LAYERS}, found {v}");
                f.bad(
                    "first_k_dense_replace",
                    &msg,
                    "correct it in config.json to the value the model was published with",
                );
                None
            }
        },
    };
    if let Some(v) = f
        .map
        .get("moe_layer_freq")
        .filter(|v| v.as_u64() != Some(1) && !v.is_null())
    {
        let msg = format!(
            "{v}: expert layers at another frequency than every layer after the dense ones"
        );
        f.bad(
            "moe_layer_freq",
            &msg,
            "write the model YAML by hand with moe.every and moe.first_dense (planner's expert layers are those with (i + 1) % every = 0 from first_dense on; DeepSeek's remote code reads i % moe_layer_freq = 0)",
        );
    }
    let (width, shared) = (width?, shared?);
    Some(HfMoe {
        shared: shared * width,
        first_dense: first_dense?,
        ..HfMoe::routed(experts?, top_k?, 1, Some(width))
    })
}

/// DeepSeek's multi-head latent attention (`DeepseekV3Config` defaults where a key is absent,
/// V2's keys required): `q_lora_rank` (1536; null: queries from the hidden state, as
/// V2-Lite), `kv_lora_rank` (512), `qk_nope_head_dim` (128), `qk_rope_head_dim` (64),
/// `v_head_dim` (128).
pub(super) fn deepseek_mla(f: &mut Fields<'_>, fam: Family) -> Option<Mla> {
    let v3 = fam == Family::DeepseekV3;
    let key = |f: &mut Fields<'_>, k: &'static str, v3_default: u64| {
        if v3 {
            count_or(f, k, v3_default)
        } else {
            f.need(&[k], MAX_HIDDEN)
        }
    };
    // Every key read before any is found missing, so all are reported at once.
    let q_lora_rank = match f.map.get("q_lora_rank") {
        Some(Value::Null) => Some(None),
        None if v3 => Some(Some(1536)),
        _ => f.need(&["q_lora_rank"], MAX_HIDDEN).map(Some),
    };
    let kv = key(f, "kv_lora_rank", 512);
    let nope = key(f, "qk_nope_head_dim", 128);
    let rope = key(f, "qk_rope_head_dim", 64);
    let v = key(f, "v_head_dim", 128);
    Some(Mla {
        q_lora_rank: q_lora_rank?,
        kv_lora_rank: kv?,
        qk_nope_dim: nope?,
        qk_rope_dim: rope?,
        v_dim: v?,
    })
}

/// Qwen2-MoE's experts (`Qwen2MoeConfig`: 60 of 1408, 4 per token) and its shared expert,
/// `shared_expert_intermediate_size` wide (5632), whose output a sigmoid gate scales
/// (`Qwen2MoeSparseMoeBlock`: `sigmoid(shared_expert_gate(x)) * shared_expert(x)`, a
/// hidden→1 linear).
pub(super) fn qwen2_moe(f: &mut Fields<'_>) -> Option<HfMoe> {
    let mut m = qwen_moe(f, [60, 4, 1408])?;
    m.shared = match f.map.get("shared_expert_intermediate_size") {
        // 0: no shared expert.
        Some(v) if v.as_u64() == Some(0) => 0,
        _ => count_or(f, "shared_expert_intermediate_size", 5632)?,
    };
    m.gate = m.shared > 0;
    Some(m)
}

/// Qwen-MoE's routed experts, as `Qwen3MoeConfig` and `Qwen2MoeConfig` read them
/// (transformers, class defaults where a key is absent: `defaults` = experts, per token,
/// width): `num_experts` routed experts of width `moe_intermediate_size`,
/// `num_experts_per_tok` per token, in every `decoder_sparse_step`-th layer (1; the others
/// dense at `intermediate_size`). Layers listed in `mlp_only_layers` are dense whatever the
/// step, which planner's every-k-th pattern cannot say: refused unless empty.
pub(super) fn qwen_moe(f: &mut Fields<'_>, defaults: [u64; 3]) -> Option<HfMoe> {
    let experts = count_or(f, "num_experts", defaults[0]);
    let top_k = count_or(f, "num_experts_per_tok", defaults[1]);
    let every = count_or(f, "decoder_sparse_step", 1);
    let width = count_or(f, "moe_intermediate_size", defaults[2]);
    match f.map.get("mlp_only_layers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(Value::Array(_)) => f.bad(
            "mlp_only_layers",
            "dense layers at listed indices: planner's experts sit in every k-th layer \
             (decoder_sparse_step), with no exceptions",
            "empty the list, or write the model YAML by hand with moe.every",
        ),
        Some(v) => {
            let msg = format!("expected a list of layer indices, found {v}");
            f.bad("mlp_only_layers", &msg, "write a list, e.g. []");
        }
    }
    Some(HfMoe::routed(experts?, top_k?, every?, Some(width?)))
}
