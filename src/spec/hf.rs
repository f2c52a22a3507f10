//! Hugging Face `config.json` import: the transformers configurations of the Llama 2/3,
//! Mistral, Mixtral, Qwen2, Qwen2-MoE, Qwen3, Qwen3-MoE, GPT-2, GPT-NeoX (Pythia) and BERT families
//! mapped onto a
//! [`ModelSpec`], every missing field reported at once and every approximation said in words.
//!
//! Templates (the closest [`Arch`], and what differs):
//! - `llama`, `mistral`, `mixtral` → llama (RMSNorm, SwiGLU, rotary, no biases). A sliding
//!   attention window is kept (`sliding_window`, and which layers slide) and priced.
//! - `qwen2` → llama with `qkv_bias: true` (`Qwen2Attention` puts biases on Q, K, V only);
//!   `qwen2_moe` adds routed experts as `qwen3_moe` reads them and a shared expert
//!   (`shared_expert_intermediate_size`) with its sigmoid gate.
//! - `qwen3`, `qwen3_moe` → llama with `qk_norm` (an RMSNorm on every query and key head) and
//!   the head size `head_dim` where it differs from hidden/heads; `qwen3_moe` adds routed
//!   experts (`num_experts`, `num_experts_per_tok`, `moe_intermediate_size`, in every
//!   `decoder_sparse_step`-th layer), no shared ones.
//! - `deepseek_v2`, `deepseek_v3` → llama with multi-head latent attention (`mla`: the query
//!   and key/value latents' ranks and head sizes), shared experts
//!   (`n_shared_experts · moe_intermediate_size`) beside the routed ones, in every layer from
//!   `first_k_dense_replace` on. Their Hub configs name remote code (`auto_map`), which
//!   transformers' own classes replace with the same layers: accepted for these two.
//!   Multi-token prediction (`num_nextn_predict_layers`) becomes `mtp_layers`, priced as
//!   Megatron-LM trains it.
//! - `gpt2` → gpt (LayerNorm, GeLU, learned positions, biases, tied head).
//! - `gpt_neox` (GPT-NeoX-20B, Pythia) → gpt with `positions: rotary` and an untied head. NeoX
//!   computes attention and MLP in parallel from the same input (`use_parallel_residual`); we
//!   price them one after the other: the same FLOPs and weights, and two TP all-reduces per
//!   layer where NeoX's own trainer sums both branches before one, so TP communication is
//!   over-, never under-estimated. Partial rotary (`rotary_pct`) is priced as full rotary.
//! - `bert` → bert (post-LayerNorm encoder, two token types, MLM head; the pooler only for
//!   `BertForPreTraining`, as `BertForMaskedLM` builds none).
//!
//! Only the language-model classes of these families are imported (`architectures`): task
//! heads, headless bodies, another family's class and custom code (`auto_map`) are refused.

mod checks;
mod family;
mod fields;
mod moe;
mod window;

use super::error::SpecError;
use super::model::{
    Arch, MAX_HEAD_DIM, MAX_HIDDEN, MAX_LAYERS, MAX_MTP_LAYERS, MAX_ROPE_THETA, MAX_SEQ, MAX_VOCAB,
    ModelSpec, MoeSpec, Positions,
};
use checks::family_checks;
pub use family::Family;
use family::family;
use fields::Fields;
use moe::{HfMoe, deepseek_mla, deepseek_moe, qwen_moe, qwen2_moe};
use serde_json::{Map, Value};
use std::path::Path;
use window::sliding_window;

/// Options of an import.
#[derive(Clone, Debug, Default)]
pub struct HfOptions {
    /// Model name (default: the config's `_name_or_path`, else its directory or file stem).
    pub name: Option<String>,
    /// Training sequence length of a rotary model (default: `max_position_embeddings`). A model
    /// with learned positions keeps its position table's length.
    pub seq_len: Option<u64>,
}

/// An imported model and the approximations the import made, in words.
#[derive(Clone, Debug)]
pub struct Imported {
    /// The model.
    pub model: ModelSpec,
    /// What the model description leaves out or approximates; empty when exact.
    pub notes: Vec<String>,
}

/// Whether `text` is a JSON object that names a transformers model (`model_type` or
/// `architectures`): how `--model` tells a Hugging Face config from a planner model file.
pub fn looks_like_hf(text: &str) -> bool {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m.contains_key("model_type") || m.contains_key("architectures"),
        _ => false,
    }
}

/// Reads a transformers `config.json`. `file` names it in messages and, without a name in
/// `opts` or the config, gives the model its name.
pub fn import(file: &str, text: &str, opts: &HfOptions) -> Result<Imported, SpecError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Value = super::json::parse(text).map_err(|message| SpecError::Json {
        file: file.to_string(),
        message,
    })?;
    let empty = Map::new();
    let mut f = Fields {
        file,
        map: doc.as_object().unwrap_or(&empty),
        problems: Vec::new(),
    };
    if !doc.is_object() {
        f.bad("(document)", "expected a JSON object", "give a config.json");
        return Err(SpecError::Invalid(f.problems));
    }
    let Some(fam) = family(&mut f) else {
        return Err(SpecError::Invalid(f.problems));
    };
    let mut notes = Vec::new();
    let model = build(&mut f, fam, opts, &mut notes);
    match model {
        Some(m) if f.problems.is_empty() => {
            let more = m.check(file);
            if more.is_empty() {
                Ok(Imported { model: m, notes })
            } else {
                Err(SpecError::Invalid(f.in_config_terms(more)))
            }
        }
        _ => Err(SpecError::Invalid(f.problems)),
    }
}

/// Template of a family: arch, positions, default `tie_word_embeddings` (the transformers
/// config class's default), QKV biases, and the dropout fields with their default.
type Template = (Arch, Positions, bool, bool, &'static [&'static str], f64);

#[rustfmt::skip]
fn template(fam: Family) -> Template {
    use {Arch as A, Positions as P};
    match fam {
        Family::Llama | Family::Mistral | Family::Mixtral =>
            (A::Llama, P::Rotary, false, false, &["attention_dropout"], 0.0),
        Family::Qwen2 | Family::Qwen2Moe =>
            (A::Llama, P::Rotary, false, true, &["attention_dropout"], 0.0),
        Family::Qwen3 | Family::Qwen3Moe | Family::GptOss | Family::DeepseekV2
            | Family::DeepseekV3 =>
            (A::Llama, P::Rotary, false, false, &["attention_dropout"], 0.0),
        Family::Gpt2 =>
            (A::Gpt, P::Learned, true, true, &["resid_pdrop", "embd_pdrop", "attn_pdrop"], 0.1),
        Family::GptNeox =>
            (A::Gpt, P::Rotary, false, true, &["attention_dropout", "hidden_dropout"], 0.0),
        Family::Bert => (A::Bert, P::Learned, true, true,
            &["hidden_dropout_prob", "attention_probs_dropout_prob"], 0.1),
    }
}

fn build(
    f: &mut Fields<'_>,
    fam: Family,
    opts: &HfOptions,
    notes: &mut Vec<String>,
) -> Option<ModelSpec> {
    let (arch, positions, tied_default, qkv_bias, drop_keys, drop_default) = template(fam);
    if f.get(&["hidden_size", "n_embd"]).is_none()
        && f.map.get("text_config").is_some_and(Value::is_object)
    {
        f.bad(
            "text_config",
            "the language model's fields are nested under text_config (a multimodal or wrapper config)",
            "import the text model's own config.json, or move text_config's fields to the top level",
        );
    }
    let hidden = f.need(&["hidden_size", "n_embd"], MAX_HIDDEN);
    let layers = f.need(&["num_hidden_layers", "n_layer"], MAX_LAYERS);
    let heads = f.need(&["num_attention_heads", "n_head"], MAX_HIDDEN);
    // Only the Llama-style classes read `num_key_value_heads`; GPT-2, GPT-NeoX and BERT
    // attention has a key/value head per query head whatever the config says.
    let gqa = matches!(
        fam,
        Family::Llama
            | Family::Mistral
            | Family::Mixtral
            | Family::Qwen2
            | Family::Qwen2Moe
            | Family::Qwen3
            | Family::Qwen3Moe
            | Family::GptOss
    );
    let kv_heads = if gqa {
        f.count(&["num_key_value_heads"], MAX_HIDDEN)
    } else {
        // MLA gives every head its own key and value, as DeepSeek's configs say.
        let mla_heads = |v: &Value| {
            matches!(fam, Family::DeepseekV2 | Family::DeepseekV3)
                && v.as_u64().is_some()
                && v.as_u64() == f.map.get("num_attention_heads").and_then(Value::as_u64)
        };
        if let Some((_, v)) = f
            .get(&["num_key_value_heads"])
            .filter(|(_, v)| !mla_heads(v))
        {
            notes.push(format!(
                "num_key_value_heads {v}: ignored, as transformers' class for this family ignores it (no grouped-query attention)"
            ));
        }
        None
    };
    let ffn = match fam {
        Family::Gpt2 => f.count(&["n_inner"], 16 * MAX_HIDDEN),
        _ => f.need(&["intermediate_size"], 16 * MAX_HIDDEN),
    };
    let vocab = f.need(&["vocab_size"], MAX_VOCAB);
    let tied = f.flag("tie_word_embeddings").unwrap_or(tied_default);
    let dropout = dropout(f, drop_keys, drop_default, notes);
    if arch == Arch::Llama && dropout > 0.0 {
        notes.push(format!(
            "attention_dropout {dropout}: planner applies one dropout probability to the \
             attention probabilities and to the residual and embedding outputs; this family \
             drops the attention probabilities only, so activation memory is overestimated \
             by the residual masks"
        ));
    }
    let window = sliding_window(f, fam);
    let seq_len = seq_len(f, positions, opts, notes);
    let moe = match fam {
        Family::Mixtral => {
            let experts = f.need(&["num_local_experts"], 1 << 16);
            let top_k = f.need(&["num_experts_per_tok"], 1 << 16);
            Some(HfMoe::routed(experts?, top_k?, 1, None))
        }
        Family::Qwen3Moe => qwen_moe(f, [128, 8, 768]),
        Family::Qwen2Moe => qwen2_moe(f),
        Family::DeepseekV2 | Family::DeepseekV3 => deepseek_moe(f, fam),
        // `GptOssConfig`: 128 local experts, 4 per token, in every layer, each
        // `intermediate_size` wide.
        Family::GptOss => {
            let experts = f.count(&["num_local_experts"], 1 << 16).unwrap_or(128);
            let top_k = f.count(&["num_experts_per_tok"], 1 << 16).unwrap_or(4);
            Some(HfMoe::routed(experts, top_k, 1, None))
        }
        _ => None,
    };
    let biases = biases(f, fam, qkv_bias);
    let head_size = head_size(f, fam, hidden.zip(heads));
    let qk_norm = matches!(fam, Family::Qwen3 | Family::Qwen3Moe);
    let rope_theta = rope_theta(f, fam, notes);
    // DeepSeek-V3's multi-token prediction depths (`num_nextn_predict_layers`, 0 or absent
    // none): priced as Megatron-LM trains them (`--mtp-num-layers`).
    let mtp_layers = match f.map.get("num_nextn_predict_layers") {
        Some(v) if v.is_null() => 0,
        Some(v) if matches!(fam, Family::DeepseekV2 | Family::DeepseekV3) => {
            match v.as_u64().filter(|n| *n <= MAX_MTP_LAYERS) {
                Some(n) => n,
                None => {
                    let msg =
                        format!("expected a whole number from 0 to {MAX_MTP_LAYERS}, found {v}");
                    f.bad(
                        "num_nextn_predict_layers",
                        &msg,
                        "correct it in config.json to the value the model was published with",
                    );
                    0
                }
            }
        }
        _ => 0,
    };
    family_checks(f, fam, notes);
    // Only `BertForPreTraining` builds the pooler (with the next-sentence head, 2h + 2
    // parameters, not modelled); `BertForMaskedLM` passes `add_pooling_layer=False`. A
    // config naming no class is priced as the masked-LM class the Hub's BERT configs name.
    let pooler = fam == Family::Bert
        && match f.map.get("architectures") {
            Some(Value::Array(a)) => a.iter().any(|c| c.as_str() == Some("BertForPreTraining")),
            Some(Value::String(c)) => c == "BertForPreTraining",
            _ => false,
        };
    let (hidden, heads) = (hidden?, heads?);
    let ffn_hidden = ffn.unwrap_or(4 * hidden);
    Some(ModelSpec {
        name: name(f, opts),
        arch,
        layers: layers?,
        hidden,
        heads,
        // `GptOssConfig` defaults to 8 KV heads; the others' classes to one per query head,
        // as MLA has.
        kv_heads: kv_heads.unwrap_or(if fam == Family::GptOss { 8 } else { heads }),
        head_size,
        qk_norm,
        ffn_hidden,
        vocab: vocab?,
        seq_len: seq_len?,
        tied_embeddings: tied,
        qkv_bias: biases.qkv,
        proj_bias: biases.proj,
        mlp_bias: biases.mlp,
        attention_sinks: fam == Family::GptOss,
        swiglu_limit: (fam == Family::GptOss).then(|| swiglu_limit(f)),
        mtp_layers,
        positions,
        dropout,
        moe: moe.map(|m| MoeSpec {
            experts: m.experts,
            top_k: m.top_k,
            every: m.every,
            expert_ffn_hidden: m.width.unwrap_or(ffn_hidden),
            router_bias: fam == Family::GptOss,
            shared_ffn_hidden: m.shared,
            shared_gate: m.gate,
            first_dense: m.first_dense,
        }),
        mla: matches!(fam, Family::DeepseekV2 | Family::DeepseekV3)
            .then(|| deepseek_mla(f, fam))
            .flatten(),
        attention_window: window,
        pooler,
        rope_theta,
    })
}

/// gpt-oss's clamp (`swiglu_limit`, `GptOssConfig` default 7.0), a positive number.
fn swiglu_limit(f: &mut Fields<'_>) -> f64 {
    match f.get(&["swiglu_limit"]).map(|(_, v)| v.as_f64()) {
        None => 7.0,
        Some(Some(l)) if l > 0.0 && l <= 1e6 => l,
        Some(_) => {
            f.bad(
                "swiglu_limit",
                "expected a positive number",
                "correct it in config.json to the value the model was published with",
            );
            7.0
        }
    }
}

/// Which linears carry biases.
struct Biases {
    qkv: bool,
    proj: bool,
    mlp: bool,
}

/// The biases the family's classes build: `LlamaConfig`'s `attention_bias` (Q, K, V and the
/// output projection; default false) and `mlp_bias` (gate, up, down; default false); Qwen3's
/// `attention_bias` likewise (no `mlp_bias`); `GptOssConfig`'s `attention_bias` (default
/// true) and always the experts' (`gate_up_proj_bias`, `down_proj_bias`); Qwen2's Q, K and V
/// whatever the config says; Mistral's and Mixtral's none; the gpt and bert templates
/// everywhere (`qkv_default`, the template's).
fn biases(f: &mut Fields<'_>, fam: Family, qkv_default: bool) -> Biases {
    let mut flag = |key, default| f.flag(key).unwrap_or(default);
    match fam {
        Family::Llama => {
            let attention = flag("attention_bias", false);
            Biases {
                qkv: attention,
                proj: attention,
                mlp: flag("mlp_bias", false),
            }
        }
        Family::Qwen3 | Family::Qwen3Moe => {
            let attention = flag("attention_bias", false);
            Biases {
                qkv: attention,
                proj: attention,
                mlp: false,
            }
        }
        // `DeepseekV3Attention`'s linears have no bias but the query latent's and output's
        // under `attention_bias` (which MLA's check then refuses).
        Family::DeepseekV2 | Family::DeepseekV3 => {
            let attention = flag("attention_bias", false);
            Biases {
                qkv: attention,
                proj: attention,
                mlp: false,
            }
        }
        Family::GptOss => {
            let attention = flag("attention_bias", true);
            Biases {
                qkv: attention,
                proj: attention,
                mlp: true,
            }
        }
        Family::Mistral | Family::Mixtral | Family::Qwen2 | Family::Qwen2Moe => Biases {
            qkv: qkv_default,
            proj: false,
            mlp: false,
        },
        Family::Gpt2 | Family::GptNeox | Family::Bert => Biases {
            qkv: true,
            proj: true,
            mlp: true,
        },
    }
}

/// The head size where it is set apart from hidden/heads (`head_dim`; `Qwen3Config` defaults
/// it to 128, `Qwen3MoeConfig` has no default and its attention reads hidden/heads, as the
/// others do), else `None`.
fn head_size(f: &mut Fields<'_>, fam: Family, hidden_heads: Option<(u64, u64)>) -> Option<u64> {
    let default = match fam {
        Family::Qwen3 => Some(128),
        Family::GptOss => Some(64),
        Family::Llama
        | Family::Mistral
        | Family::Mixtral
        | Family::Qwen2
        | Family::Qwen2Moe
        | Family::Qwen3Moe => None,
        // MLA sizes its heads itself (`mla`).
        Family::Gpt2 | Family::GptNeox | Family::Bert | Family::DeepseekV2 | Family::DeepseekV3 => {
            return None;
        }
    };
    // An explicit null is hidden/heads where the class falls back to it (gpt-oss's
    // attention), else the class default.
    let d = if f.map.get("head_dim").is_none() {
        default
    } else if f.map.get("head_dim").is_some_and(Value::is_null) {
        default.filter(|_| fam != Family::GptOss)
    } else {
        f.count(&["head_dim"], MAX_HEAD_DIM)
    };
    let (h, a) = hidden_heads?;
    d.filter(|&d| d * a != h)
}

/// The rotary base θ: `rope_theta` (Llama-style classes) or `rotary_emb_base` (GPT-NeoX),
/// else the class's default (transformers: `LlamaConfig`, `MistralConfig`, `Qwen2Config`
/// and `GPTNeoXConfig` 10,000; `MixtralConfig` 1,000,000). `None` for learned positions.
fn rope_theta(f: &mut Fields<'_>, fam: Family, notes: &mut Vec<String>) -> Option<f64> {
    let (keys, default): (&[&'static str], f64) = match fam {
        Family::Llama
        | Family::Mistral
        | Family::Qwen2
        | Family::Qwen2Moe
        | Family::Qwen3
        | Family::Qwen3Moe => (&["rope_theta"], 1e4),
        Family::Mixtral => (&["rope_theta"], 1e6),
        Family::GptOss => (&["rope_theta"], 1.5e5),
        Family::DeepseekV2 | Family::DeepseekV3 => (&["rope_theta"], 1e4),
        Family::GptNeox => (&["rotary_emb_base"], 1e4),
        Family::Gpt2 | Family::Bert => return None,
    };
    if let Some((_, v)) = f.get(&["rope_scaling"]) {
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(Value::as_str);
        let fix = if kind == Some("llama3") {
            "add `--use-rope-scaling`"
        } else {
            "configure it where the launch allows (Megatron-Bridge's providers set YaRN)"
        };
        notes.push(format!(
            "rope_scaling {v}: not modelled (no cost depends on it); a Megatron-LM export \
             writes no rope scaling: {fix}"
        ));
    }
    // transformers 5 keeps the base under `rope_parameters` (`rope_theta`, with `rope_type`).
    if let Some(Value::Object(p)) = f.map.get("rope_parameters") {
        let kind = p.get("rope_type").and_then(Value::as_str);
        if let Some(kind) = kind.filter(|k| *k != "default") {
            notes.push(format!(
                "rope_parameters rope_type {kind}: not modelled (no cost depends on it); a \
                 Megatron-LM export writes no rope scaling"
            ));
        }
        if let Some(t) = p.get("rope_theta") {
            return match t.as_f64().filter(|t| *t > 1.0 && *t <= MAX_ROPE_THETA) {
                Some(t) => Some(t),
                None => {
                    let msg = format!("rope_theta: expected a number above 1, found {t}");
                    f.bad(
                        "rope_parameters",
                        &msg,
                        "correct it in config.json to the value the model was published with",
                    );
                    None
                }
            };
        }
    }
    Some(f.above_one(keys, MAX_ROPE_THETA).unwrap_or(default))
}

/// One dropout probability for the model: the family's dropout fields, their largest value
/// when they differ (said in a note).
fn dropout(
    f: &mut Fields<'_>,
    keys: &[&'static str],
    default: f64,
    notes: &mut Vec<String>,
) -> f64 {
    let values: Vec<(&str, f64)> = keys
        .iter()
        .map(|k| (*k, f.prob(k).unwrap_or(default)))
        .collect();
    let max = values.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    if values.iter().any(|(_, v)| *v != max) {
        let listed: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        notes.push(format!(
            "dropout: planner applies one probability everywhere; using the largest of {} ({max})",
            listed.join(", ")
        ));
    }
    max
}

/// The model's sequence length: the position table's length for learned positions (which
/// `--seq-len` may not change: it would change the parameter count), else `--seq-len` or
/// `max_position_embeddings`.
fn seq_len(
    f: &mut Fields<'_>,
    positions: Positions,
    opts: &HfOptions,
    notes: &mut Vec<String>,
) -> Option<u64> {
    let key = ["max_position_embeddings", "n_positions"];
    let given = f.get(&key).map(|(_, v)| v.clone());
    let oversized = given
        .as_ref()
        .is_some_and(|v| v.as_u64().is_none_or(|n| n > MAX_SEQ));
    let table = match (positions, opts.seq_len) {
        // Rotary positions have no table: given --seq-len, max_position_embeddings is not
        // read, however large (a 1e9 "unlimited" placeholder).
        (Positions::Rotary, Some(_)) => {
            if let Some(v) = given.filter(|_| oversized) {
                notes.push(format!(
                    "max_position_embeddings {v} is not read: the model's rotary positions have no table, and --seq-len is priced"
                ));
            }
            None
        }
        (Positions::Rotary, None)
            if given
                .as_ref()
                .and_then(Value::as_u64)
                .is_some_and(|n| n > MAX_SEQ) =>
        {
            f.bad(
                "max_position_embeddings",
                &format!("beyond the {MAX_SEQ} tokens planner prices"),
                "pass --seq-len with the length you train at",
            );
            return None;
        }
        _ => f.count(&key, MAX_SEQ),
    };
    match (positions, opts.seq_len, table) {
        (Positions::Learned, Some(s), Some(t)) if s != t => {
            f.bad(
                "--seq-len",
                &format!("{s}, but the model's learned position table has {t} rows"),
                &format!("import without --seq-len (the model keeps seq_len {t}) and give the training length to `planner estimate --seq-len` (≤ {t})"),
            );
            None
        }
        (_, Some(s), _) if (1..=MAX_SEQ).contains(&s) => Some(s),
        (_, Some(s), _) => {
            f.bad(
                "--seq-len",
                &format!("{s} is out of range"),
                "give 1 to 16M",
            );
            None
        }
        (_, None, Some(t)) => {
            if positions == Positions::Rotary {
                notes.push(format!(
                    "seq_len {t} is max_position_embeddings, the longest context the model supports; without --seq-len, that is the length priced"
                ));
            }
            Some(t)
        }
        // A value that was there but unreadable has been reported already.
        (_, None, None) if f.get(&key).is_some() => None,
        (_, None, None) => {
            f.bad(
                "max_position_embeddings",
                "missing required field",
                "add it, or pass --seq-len",
            );
            None
        }
    }
}

/// `--name`, else the last part of `_name_or_path`, else the directory of a `config.json`,
/// else the file stem.
fn name(f: &Fields<'_>, opts: &HfOptions) -> String {
    if let Some(n) = &opts.name {
        return n.clone();
    }
    let from_config = f
        .map
        .get("_name_or_path")
        .and_then(Value::as_str)
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .filter(|n| !n.is_empty());
    if let Some(n) = from_config {
        return n.to_string();
    }
    let path = Path::new(f.file);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let dir = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str());
    match dir {
        Some(d) if stem == "config" => d.to_string(),
        _ => stem.to_string(),
    }
}

#[cfg(test)]
mod tests;
