//! Hugging Face `config.json` import: the transformers configurations of the Llama 2/3,
//! Mistral, Mixtral, Qwen2, GPT-2, GPT-NeoX (Pythia) and BERT families mapped onto a
//! [`ModelSpec`], every missing field reported at once and every approximation said in words.
//!
//! Templates (the closest [`Arch`], and what differs):
//! - `llama`, `mistral`, `mixtral` → llama (RMSNorm, SwiGLU, rotary, no biases). Mistral's
//!   sliding-window attention is priced as full causal attention (exact when seq_len ≤ window,
//!   an overestimate beyond).
//! - `qwen2` → llama with `qkv_bias: true` (`Qwen2Attention` puts biases on Q, K, V only).
//! - `gpt2` → gpt (LayerNorm, GeLU, learned positions, biases, tied head).
//! - `gpt_neox` (GPT-NeoX-20B, Pythia) → gpt with `positions: rotary` and an untied head. NeoX
//!   computes attention and MLP in parallel from the same input (`use_parallel_residual`); we
//!   price them one after the other: the same FLOPs and weights, and two TP all-reduces per
//!   layer where NeoX's own trainer sums both branches before one, so TP communication is
//!   over-, never under-estimated. Partial rotary (`rotary_pct`) is priced as full rotary.
//! - `bert` → bert (post-LayerNorm encoder, two token types, MLM head and pooler).

use super::error::{Problem, SpecError};
use super::model::{
    Arch, MAX_HIDDEN, MAX_LAYERS, MAX_SEQ, MAX_VOCAB, ModelSpec, MoeSpec, Positions,
};
use serde_json::{Map, Value};
use std::path::Path;

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

/// The model families planner imports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `llama` (Llama 2, Llama 3).
    Llama,
    /// `mistral`.
    Mistral,
    /// `mixtral` (mixture of experts).
    Mixtral,
    /// `qwen2`.
    Qwen2,
    /// `gpt2`.
    Gpt2,
    /// `gpt_neox` (GPT-NeoX-20B, Pythia).
    GptNeox,
    /// `bert`.
    Bert,
}

/// `model_type`, the `architectures` class names, and the family.
const FAMILIES: [(&str, &[&str], Family); 7] = [
    ("llama", &["LlamaForCausalLM"], Family::Llama),
    ("mistral", &["MistralForCausalLM"], Family::Mistral),
    ("mixtral", &["MixtralForCausalLM"], Family::Mixtral),
    ("qwen2", &["Qwen2ForCausalLM"], Family::Qwen2),
    ("gpt2", &["GPT2LMHeadModel", "GPT2Model"], Family::Gpt2),
    (
        "gpt_neox",
        &["GPTNeoXForCausalLM", "GPTNeoXModel"],
        Family::GptNeox,
    ),
    (
        "bert",
        &["BertForMaskedLM", "BertForPreTraining", "BertModel"],
        Family::Bert,
    ),
];

const SUPPORTED: &str = "llama, mistral, mixtral, qwen2, gpt2, gpt_neox, bert";

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
    let doc: Value = serde_json::from_str(text).map_err(|e| SpecError::Json {
        file: file.to_string(),
        message: e.to_string(),
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
                Err(SpecError::Invalid(more))
            }
        }
        _ => Err(SpecError::Invalid(f.problems)),
    }
}

/// The family from `model_type`, else from the first `architectures` entry.
fn family(f: &mut Fields<'_>) -> Option<Family> {
    let model_type = match f.map.get("model_type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(v) => {
            let msg = format!("expected a name such as \"llama\", found {v}");
            f.bad(
                "model_type",
                &msg,
                "write the transformers model type as a string",
            );
            return None;
        }
        None => None,
    };
    let class = match f.map.get("architectures") {
        Some(Value::Array(a)) => a.first().and_then(Value::as_str),
        Some(Value::String(c)) => Some(c.as_str()),
        _ => None,
    };
    let found = match (model_type, class) {
        (Some(t), _) => FAMILIES.iter().find(|(mt, _, _)| *mt == t),
        (None, Some(c)) => FAMILIES.iter().find(|(_, cs, _)| cs.contains(&c)),
        (None, None) if f.map.contains_key("layers") || f.map.contains_key("hidden") => {
            // planner's own model keys, written as JSON without its `arch`.
            f.bad(
                "arch",
                "missing: a planner model file needs `arch` (gpt, llama or bert); without it the JSON reads as a Hugging Face config, which it is not",
                "add \"arch\": \"llama\" (or gpt, bert), or give a transformers config.json",
            );
            return None;
        }
        (None, None) => {
            f.bad(
                "model_type",
                "missing, and no `architectures` either: not a Hugging Face model config",
                "give the config.json of a transformers model",
            );
            return None;
        }
    };
    if let Some((_, _, fam)) = found {
        return Some(*fam);
    }
    let (field, value) = match model_type {
        Some(t) => ("model_type", t),
        None => ("architectures", class.unwrap_or_default()),
    };
    let why = if value.starts_with("qwen2_moe") || value.starts_with("Qwen2Moe") {
        "Qwen2-MoE's shared experts (shared_expert_intermediate_size) are not modelled".to_string()
    } else {
        format!("unsupported {field} `{value}`")
    };
    f.bad(
        field,
        &why,
        &format!("planner imports {SUPPORTED}; write the model YAML by hand for others (`planner models` lists the preset YAMLs under models/ to start from)"),
    );
    None
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
        Family::Qwen2 => (A::Llama, P::Rotary, false, true, &["attention_dropout"], 0.0),
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
    let hidden = f.need(&["hidden_size", "n_embd"], MAX_HIDDEN);
    let layers = f.need(&["num_hidden_layers", "n_layer"], MAX_LAYERS);
    let heads = f.need(&["num_attention_heads", "n_head"], MAX_HIDDEN);
    let kv_heads = f.count(&["num_key_value_heads"], MAX_HIDDEN);
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
    let seq_len = seq_len(f, positions, opts, notes);
    let moe = if fam == Family::Mixtral {
        let experts = f.need(&["num_local_experts"], 1 << 16);
        let top_k = f.need(&["num_experts_per_tok"], 1 << 16);
        Some((experts?, top_k?))
    } else {
        None
    };
    family_checks(f, fam, hidden.zip(heads), seq_len, notes);
    let (hidden, heads) = (hidden?, heads?);
    let ffn_hidden = ffn.unwrap_or(4 * hidden);
    Some(ModelSpec {
        name: name(f, opts),
        arch,
        layers: layers?,
        hidden,
        heads,
        kv_heads: kv_heads.unwrap_or(heads),
        ffn_hidden,
        vocab: vocab?,
        seq_len: seq_len?,
        tied_embeddings: tied,
        qkv_bias,
        positions,
        dropout,
        moe: moe.map(|(experts, top_k)| MoeSpec {
            experts,
            top_k,
            every: 1,
            expert_ffn_hidden: ffn_hidden,
        }),
    })
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
    let table = f.count(&["max_position_embeddings", "n_positions"], MAX_SEQ);
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
                    "seq_len {t} is max_position_embeddings, the longest context the model supports; pass --seq-len for the length you train at"
                ));
            }
            Some(t)
        }
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

/// What a family may set that planner does not model: an error when it changes the shape, a
/// note when only the price is approximate.
fn family_checks(
    f: &mut Fields<'_>,
    fam: Family,
    hidden_heads: Option<(u64, u64)>,
    seq_len: Option<u64>,
    notes: &mut Vec<String>,
) {
    match fam {
        Family::GptNeox => neox_checks(f, notes),
        Family::Bert => bert_checks(f),
        Family::Gpt2 => {}
        _ => llama_checks(f, fam, hidden_heads, seq_len, notes),
    }
    // GPT-2 and BERT configs can add a cross-attention block to every layer (an
    // encoder-decoder's decoder, `add_cross_attention`), which none of the templates has.
    if f.flag("add_cross_attention") == Some(true) {
        f.bad(
            "add_cross_attention",
            "true: a cross-attention block in every layer (an encoder-decoder's decoder) is not modelled",
            "import the decoder-only or encoder-only config; planner has no cross-attention",
        );
    }
}

fn llama_checks(
    f: &mut Fields<'_>,
    fam: Family,
    hidden_heads: Option<(u64, u64)>,
    seq_len: Option<u64>,
    notes: &mut Vec<String>,
) {
    for key in ["attention_bias", "mlp_bias"] {
        if f.flag(key) == Some(true) {
            f.bad(
                key,
                "true: planner's llama template has no biases on these projections",
                "write the model YAML by hand (arch gpt has biases everywhere)",
            );
        }
    }
    let head_dim = f.count(&["head_dim"], MAX_HIDDEN);
    if let (Some(d), Some((h, a))) = (head_dim, hidden_heads)
        && d * a != h
    {
        f.bad(
            "head_dim",
            &format!("{d} differs from hidden_size/num_attention_heads = {h}/{a}"),
            "planner needs head_dim = hidden/heads",
        );
    }
    let sliding = fam != Family::Qwen2 || f.flag("use_sliding_window") == Some(true);
    let window = f.count(&["sliding_window"], MAX_SEQ);
    if let (true, Some(w), Some(s)) = (sliding, window, seq_len)
        && w < s
    {
        notes.push(format!(
            "sliding_window {w} < seq_len {s}: attention is priced as full causal attention (an overestimate)"
        ));
    }
}

fn neox_checks(f: &mut Fields<'_>, notes: &mut Vec<String>) {
    let pct = f.map.get("rotary_pct").and_then(Value::as_f64);
    if let Some(p) = pct.filter(|p| *p != 1.0) {
        notes.push(format!(
            "rotary_pct {p}: priced as full rotary (the same GEMMs; rotary is a small elementwise \
             cost), and the model has no field for it: a Megatron-LM launch of this model needs \
             --rotary-percent {p} added by hand"
        ));
    }
    if f.flag("attention_bias") == Some(false) {
        f.bad(
            "attention_bias",
            "false: the gpt template has biases",
            "write the model YAML by hand",
        );
    }
    if f.flag("use_parallel_residual") != Some(false) {
        notes.push("gpt_neox: parallel attention + MLP priced as sequential (same FLOPs and weights; two TP all-reduces per layer where NeoX needs one)".into());
    }
}

fn bert_checks(f: &mut Fields<'_>) {
    if f.flag("is_decoder") == Some(true) {
        f.bad(
            "is_decoder",
            "true: a causal BERT decoder is not modelled (the bert template is a bidirectional encoder)",
            "import the encoder config (is_decoder false)",
        );
    }
    if let Some(n) = f.count(&["type_vocab_size"], 1 << 16).filter(|n| *n != 2) {
        f.bad(
            "type_vocab_size",
            &format!("{n}: the bert template has 2 token types"),
            "write the model YAML by hand",
        );
    }
    let kind = f.map.get("position_embedding_type").and_then(Value::as_str);
    if let Some(k) = kind.filter(|k| *k != "absolute") {
        f.bad(
            "position_embedding_type",
            &format!("`{k}`: the bert template has absolute (learned) positions"),
            "write the model YAML by hand",
        );
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

/// Typed access to a config's fields, collecting problems.
struct Fields<'a> {
    file: &'a str,
    map: &'a Map<String, Value>,
    problems: Vec<Problem>,
}

impl Fields<'_> {
    fn bad(&mut self, field: &str, message: &str, fix: &str) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            field: field.to_string(),
            message: message.to_string(),
            fix: fix.to_string(),
        });
    }

    /// The first of `names` that is present and not null.
    fn get(&self, names: &[&'static str]) -> Option<(&'static str, &Value)> {
        names
            .iter()
            .find_map(|n| self.map.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    /// An optional positive whole number under any of `names`.
    fn count(&mut self, names: &[&'static str], max: u64) -> Option<u64> {
        let (key, v) = self.get(names)?;
        match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                let msg = format!("expected a whole number from 1 to {max}, found {v}");
                self.bad(key, &msg, "fix the value");
                None
            }
        }
    }

    /// A required positive whole number under any of `names`.
    fn need(&mut self, names: &[&'static str], max: u64) -> Option<u64> {
        if self.get(names).is_none() {
            let also = if names.len() > 1 {
                format!(" (or `{}`)", names[1..].join("`, `"))
            } else {
                String::new()
            };
            self.bad(
                names[0],
                &format!("missing required field{also}"),
                &format!("add `\"{}\": N`", names[0]),
            );
            return None;
        }
        self.count(names, max)
    }

    fn flag(&mut self, key: &'static str) -> Option<bool> {
        let (_, v) = self.get(&[key])?;
        match v.as_bool() {
            Some(b) => Some(b),
            None => {
                let msg = format!("expected true or false, found {v}");
                self.bad(key, &msg, "write true or false");
                None
            }
        }
    }

    fn prob(&mut self, key: &'static str) -> Option<f64> {
        let (_, v) = self.get(&[key])?;
        match v.as_f64() {
            Some(p) if (0.0..1.0).contains(&p) => Some(p),
            _ => {
                let msg = format!("expected a probability in [0, 1), found {v}");
                self.bad(key, &msg, "fix the value");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(text: &str) -> Result<Imported, SpecError> {
        import("dir/config.json", text, &HfOptions::default())
    }

    #[test]
    fn missing_fields_are_all_named_with_aliases() {
        let e = imp(r#"{"model_type": "gpt2", "n_layer": 2}"#).unwrap_err();
        let fields: Vec<&str> = e.problems().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "hidden_size",
                "num_attention_heads",
                "vocab_size",
                "max_position_embeddings"
            ]
        );
        assert!(e.to_string().contains("(or `n_embd`)"), "{e}");
    }

    #[test]
    fn unsupported_architectures_are_named() {
        let e = imp(r#"{"model_type": "gemma", "hidden_size": 8}"#).unwrap_err();
        assert_eq!(e.problems()[0].field, "model_type");
        assert!(
            e.to_string().contains("unsupported model_type `gemma`"),
            "{e}"
        );
        let e = imp(r#"{"architectures": ["Qwen2MoeForCausalLM"]}"#).unwrap_err();
        assert!(
            e.to_string().contains("shared_expert_intermediate_size"),
            "{e}"
        );
        let e = imp(r#"{"hidden_size": 8}"#).unwrap_err();
        assert!(
            e.to_string().contains("not a Hugging Face model config"),
            "{e}"
        );
        assert!(matches!(imp("{"), Err(SpecError::Json { .. })));
    }

    #[test]
    fn learned_positions_keep_their_table() {
        let cfg = r#"{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                      "vocab_size": 100, "n_positions": 128}"#;
        let opts = HfOptions {
            name: None,
            seq_len: Some(64),
        };
        let e = import("gpt2.json", cfg, &opts).unwrap_err();
        assert_eq!(e.problems()[0].field, "--seq-len");
        let m = imp(cfg).unwrap().model;
        // n_inner absent: 4h; tied by default; dropout 0.1; name from the directory.
        assert_eq!(
            (m.ffn_hidden, m.tied_embeddings, m.dropout),
            (256, true, 0.1)
        );
        assert_eq!((m.name.as_str(), m.seq_len), ("dir", 128));
    }

    #[test]
    fn llama_biases_and_head_dim_are_refused() {
        let e = imp(
            r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 10,
                "max_position_embeddings": 32, "attention_bias": true, "head_dim": 32}"#,
        )
        .unwrap_err();
        let fields: Vec<&str> = e.problems().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["attention_bias", "head_dim"]);
    }

    /// A cross-attention block (an encoder-decoder's decoder) and a causal BERT would be
    /// priced without it, 18.6% fewer parameters for GPT-2 small: refused, naming the field.
    #[test]
    fn cross_attention_and_bert_decoders_are_refused() {
        let gpt2 = r#"{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                       "vocab_size": 100, "n_positions": 128, "add_cross_attention": true}"#;
        let e = imp(gpt2).unwrap_err();
        assert_eq!(e.problems()[0].field, "add_cross_attention");
        let bert = r#"{"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 100,
                       "max_position_embeddings": 128, "is_decoder": true}"#;
        let e = imp(bert).unwrap_err();
        assert_eq!(e.problems()[0].field, "is_decoder");
    }

    /// What the import prices differently from the model is said: Llama's attention-only
    /// dropout priced on the residuals too, NeoX's partial rotary as full (and missing from a
    /// Megatron launch).
    #[test]
    fn approximations_are_noted() {
        let llama = r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 10,
                        "max_position_embeddings": 32, "attention_dropout": 0.1}"#;
        let i = imp(llama).unwrap();
        assert_eq!(i.model.dropout, 0.1);
        assert!(
            i.notes
                .iter()
                .any(|n| n.starts_with("attention_dropout 0.1")),
            "{:?}",
            i.notes
        );
        let neox = r#"{"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 100,
                       "max_position_embeddings": 128, "rotary_pct": 0.25}"#;
        let i = imp(neox).unwrap();
        assert!(
            i.notes.iter().any(|n| n.contains("--rotary-percent 0.25")),
            "{:?}",
            i.notes
        );
        let full = neox.replace("0.25", "1.0");
        assert!(
            !imp(&full)
                .unwrap()
                .notes
                .iter()
                .any(|n| n.contains("rotary_pct"))
        );
    }

    /// A non-string `model_type` is an error, not skipped for `architectures`; a string
    /// `architectures` is read; planner keys without `arch` are told apart from a broken
    /// Hugging Face config.
    #[test]
    fn family_fields_are_read_or_refused_by_what_they_hold() {
        let e = imp(r#"{"model_type": 7, "architectures": ["LlamaForCausalLM"]}"#).unwrap_err();
        assert_eq!(e.problems()[0].field, "model_type");
        let e = imp(r#"{"architectures": "GemmaForCausalLM"}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported architectures `GemmaForCausalLM`"),
            "{e}"
        );
        let e = imp(r#"{"name": "x", "layers": 2, "hidden": 64}"#).unwrap_err();
        assert_eq!(e.problems()[0].field, "arch");
    }
}
