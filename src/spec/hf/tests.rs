//! The import's refusals, notes and field reading.

use super::*;
use crate::spec::{SlidingWindow, WindowLayers};

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

/// Llama's biases are refused; a head size set apart from hidden/heads is kept (Mistral-Nemo:
/// 32 heads of 128 on hidden 5120), and one equal to it is no override.
#[test]
fn llama_biases_and_head_dim_are_kept() {
    let cfg = |extra: &str| {
        format!(
            r#"{{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 10,
                "max_position_embeddings": 32 {extra}}}"#
        )
    };
    let m = imp(&cfg(r#", "attention_bias": true, "head_dim": 32"#))
        .unwrap()
        .model;
    assert_eq!(
        (m.qkv_bias, m.proj_bias, m.mlp_bias, m.q_hidden()),
        (true, true, false, 128)
    );
    let m = imp(&cfg(r#", "head_dim": 32"#)).unwrap().model;
    assert_eq!((m.head_size, m.q_hidden()), (Some(32), 128));
    let m = imp(&cfg(r#", "head_dim": 16"#)).unwrap().model;
    assert_eq!((m.head_size, m.q_hidden()), (None, 64));
    let e = imp(&cfg(r#", "head_dim": 0"#)).unwrap_err();
    assert_eq!(e.problems()[0].field, "head_dim");
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

/// The classes say what was trained and saved, which `model_type` alone does not: each class that
/// is not the family's language-model class is refused naming it — a task head (a reward
/// model's score head: 8.03 B priced where it has 7.50 B), a headless body, another
/// family's class (Mixtral under `model_type: mistral` had imported as a dense 7.24 B), and
/// custom code (SantaCoder's multi-query `GPT2LMHeadCustomModel`, priced +16.8% as GPT-2).
#[test]
fn classes_other_than_the_language_model_are_refused() {
    let body = r#""hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 128, "vocab_size": 10, "max_position_embeddings": 32"#;
    let refused = |extra: &str| {
        let e = imp(&format!("{{{body}, {extra}}}")).unwrap_err();
        e.problems()
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e =
        refused(r#""model_type": "llama", "architectures": ["LlamaForSequenceClassification"]"#);
    assert!(e.starts_with("architectures: `LlamaForSequenceClassification`: a task head (ForSequenceClassification)"), "{e}");
    let e = refused(r#""model_type": "mistral", "architectures": ["MixtralForCausalLM"]"#);
    assert!(
        e.contains("is not the `mistral` family's MistralForCausalLM"),
        "{e}"
    );
    let e = refused(r#""model_type": "llama", "architectures": ["LlamaModel"]"#);
    assert!(e.contains("the body without a head"), "{e}");
    let e = refused(
        r#""model_type": "gpt2", "architectures": ["GPT2LMHeadCustomModel"],
           "auto_map": {"AutoModelForCausalLM": "modeling_gpt2_mq.GPT2LMHeadCustomModel"}"#,
    );
    assert!(
        e.contains("architectures: `GPT2LMHeadCustomModel`")
            && e.contains("auto_map: the model loads custom code"),
        "{e}"
    );
    // The language-model classes import, by model_type or by class alone.
    imp(&format!(
        r#"{{{body}, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}}"#
    ))
    .unwrap();
    imp(&format!(
        r#"{{{body}, "architectures": ["MistralForCausalLM"]}}"#
    ))
    .unwrap();
}

/// GPT-2, GPT-NeoX and BERT attention ignores `num_key_value_heads` in transformers, so
/// the import does too (it had priced GPT-2 with one K/V head: −10.4% parameters), noting
/// it; the Llama-style families read it.
#[test]
fn kv_heads_are_read_only_where_the_family_has_them() {
    let gpt2 = r#"{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4,
                   "vocab_size": 10, "n_positions": 32, "num_key_value_heads": 1}"#;
    let i = imp(gpt2).unwrap();
    assert_eq!(i.model.kv_heads, 4);
    assert!(
        i.notes
            .iter()
            .any(|n| n.starts_with("num_key_value_heads 1: ignored")),
        "{:?}",
        i.notes
    );
    let llama = r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 1,
                    "intermediate_size": 128, "vocab_size": 10, "max_position_embeddings": 32}"#;
    assert_eq!(imp(llama).unwrap().model.kv_heads, 1);
}

/// A multimodal wrapper's language model sits under `text_config`: the missing fields are
/// named with where they are.
#[test]
fn nested_text_config_is_pointed_at() {
    let e = imp(r#"{"model_type": "llama", "text_config": {"hidden_size": 64}}"#).unwrap_err();
    assert!(e.problems().iter().any(|p| p.field == "text_config"), "{e}");
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

/// The window is read where transformers' class slides: Mistral's always, Qwen2's with
/// `use_sliding_window` on some layers, Llama's never (it had capped a Llama config's
/// sequence at a key its class ignores).
#[test]
fn sliding_windows_are_read_where_the_class_slides() {
    let body = r#""hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "intermediate_size": 128, "vocab_size": 10, "max_position_embeddings": 8192,
                  "sliding_window": 4096"#;
    let window = |extra: &str| {
        imp(&format!("{{{body}, {extra}}}"))
            .unwrap()
            .model
            .attention_window
    };
    let all = |size| {
        Some(SlidingWindow {
            size,
            layers: WindowLayers::All,
        })
    };
    assert_eq!(window(r#""model_type": "mistral""#), all(4096));
    assert_eq!(window(r#""model_type": "llama""#), None);
    assert_eq!(window(r#""model_type": "qwen2""#), None);
    assert_eq!(
        window(r#""model_type": "qwen2", "use_sliding_window": true, "max_window_layers": 4"#),
        None
    );
    assert_eq!(
        window(r#""model_type": "qwen2", "use_sliding_window": true, "max_window_layers": 2"#),
        Some(SlidingWindow {
            size: 4096,
            layers: WindowLayers::From(2)
        })
    );
}

/// A rotary model's oversized max_position_embeddings (a 1e9 "unlimited" placeholder) is
/// refused naming --seq-len, and --seq-len then imports it (it had been refused either way,
/// also as "missing").
#[test]
fn an_oversized_position_count_yields_to_seq_len() {
    let text = r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 10,
                   "max_position_embeddings": 1000000000}"#;
    let e = imp(text).unwrap_err();
    assert_eq!(e.problems().len(), 1, "{e}");
    assert!(e.problems()[0].fix.contains("--seq-len"), "{e}");
    let opts = HfOptions {
        seq_len: Some(4096),
        ..HfOptions::default()
    };
    let i = import("dir/config.json", text, &opts).unwrap();
    assert_eq!(i.model.seq_len, 4096);
    assert!(
        i.notes.iter().any(|n| n.contains("is not read")),
        "{:?}",
        i.notes
    );
}

/// A model that reads but does not hold together is refused in the config's own terms: the
/// field is the key it was read from and the message says where each name it uses came from
/// (it had named only the planner's `kv_heads`, a key the config does not have).
#[test]
fn model_check_problems_name_the_config_keys() {
    let e = imp(
        r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
            "num_attention_heads": 32, "num_hidden_layers": 2, "num_key_value_heads": 5,
            "vocab_size": 32000, "max_position_embeddings": 4096}"#,
    )
    .unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(p.field, "num_key_value_heads");
    assert_eq!(
        p.message,
        "heads 32 is not a multiple of kv_heads 5 (in the config: heads is \
         num_attention_heads, kv_heads is num_key_value_heads)"
    );
    // GPT-2's keys: hidden 1600 over 24 heads.
    let e = imp(
        r#"{"model_type": "gpt2", "n_embd": 1600, "n_head": 24, "n_layer": 2,
            "vocab_size": 50257, "n_positions": 1024}"#,
    )
    .unwrap_err();
    let p = &e.problems()[0];
    assert_eq!(p.field, "n_head");
    assert!(
        p.message
            .ends_with("(in the config: hidden is n_embd, heads is n_head)"),
        "{}",
        p.message
    );
}

/// Keys a config leaves out take their class's default, as transformers loads them:
/// `MistralConfig` slides a 4096-token window in every layer, and the sequence is still
/// `max_position_embeddings` (the window is priced), an explicit `null` is no window; `Qwen2Config`
/// slides from layer `max_window_layers` = 28, so a 28-layer Qwen2 with `use_sliding_window`
/// has no sliding layer. A value that is there but unreadable is one problem, not also a
/// missing field.
#[test]
fn absent_keys_take_the_class_defaults() {
    let mistral = r#"{"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_hidden_layers": 2, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 32768"#;
    let m = imp(&format!("{mistral}}}")).unwrap().model;
    let all = Some(SlidingWindow {
        size: 4096,
        layers: WindowLayers::All,
    });
    assert_eq!((m.attention_window, m.seq_len), (all, 32768));
    let m = imp(&format!(r#"{mistral}, "sliding_window": null}}"#))
        .unwrap()
        .model;
    assert_eq!((m.attention_window, m.seq_len), (None, 32768));
    let qwen = |layers: u64| {
        format!(
            r#"{{"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
            "num_attention_heads": 28, "num_hidden_layers": {layers}, "num_key_value_heads": 4,
            "vocab_size": 152064, "max_position_embeddings": 32768, "use_sliding_window": true}}"#
        )
    };
    assert_eq!(imp(&qwen(28)).unwrap().model.attention_window, None);
    let from_28 = SlidingWindow {
        size: 4096,
        layers: WindowLayers::From(28),
    };
    assert_eq!(
        imp(&qwen(29)).unwrap().model.attention_window,
        Some(from_28)
    );
    assert_eq!(from_28.sliding_layers(29), 1);
    let e = imp(
        r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
            "max_position_embeddings": -1}"#,
    )
    .unwrap_err();
    assert_eq!(e.problems().len(), 1, "{e}");
    assert_eq!(e.problems()[0].field, "max_position_embeddings");
    assert!(!e.to_string().contains("missing"), "{e}");
}

/// `attention_bias` and `mlp_bias` are `LlamaConfig` keys: Mistral's and Qwen2's classes fix
/// their biases whatever the config says (none; Q, K and V), while Llama's take them: Q, K,
/// V and the output projection, and the MLP's three linears (they had been refused). At
/// h = 64, f = 128: attention 4·64² + 4·64 biases, MLP 3·64·128 + 2·128 + 64.
#[test]
fn bias_keys_are_read_where_the_class_reads_them() {
    let cfg = |ty: &str| {
        format!(
            r#"{{"model_type": "{ty}", "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100,
            "max_position_embeddings": 256, "attention_bias": true, "mlp_bias": true}}"#
        )
    };
    let biases = |m: &ModelSpec| (m.qkv_bias, m.proj_bias, m.mlp_bias);
    assert_eq!(
        biases(&imp(&cfg("mistral")).unwrap().model),
        (false, false, false)
    );
    assert_eq!(
        biases(&imp(&cfg("qwen2")).unwrap().model),
        (true, false, false)
    );
    let l = imp(&cfg("llama")).unwrap().model;
    assert_eq!(biases(&l), (true, true, true));
    assert_eq!(l.attention_params(), 4.0 * 64.0 * 64.0 + 4.0 * 64.0);
    assert_eq!(l.mlp_params(128), 3.0 * 64.0 * 128.0 + 2.0 * 128.0 + 64.0);
}

/// Qwen3-MoE takes `Qwen3MoeConfig`'s defaults where keys are absent (128 experts of 768,
/// top 8, QK-norm; no head size of its own: its attention reads hidden/heads, where dense
/// Qwen3's config defaults to 128) and refuses layers `mlp_only_layers` makes dense, which an
/// every-k-th pattern cannot say; Qwen3's `attention_bias` biases all four projections.
#[test]
fn qwen3_moe_takes_class_defaults_and_refuses_what_it_cannot_say() {
    let base = r#""model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512,
        "vocab_size": 1000, "max_position_embeddings": 64"#;
    let m = imp(&format!("{{{base}}}")).unwrap().model;
    let e = m.moe.clone().unwrap();
    assert_eq!(
        (e.experts, e.top_k, e.every, e.expert_ffn_hidden),
        (128, 8, 1, 768)
    );
    assert_eq!((m.head_size, m.q_hidden(), m.qk_norm), (None, 256, true));
    let dense = imp(&format!("{{{}}}", base.replace("qwen3_moe", "qwen3")))
        .unwrap()
        .model;
    assert_eq!((dense.head_size, dense.q_hidden()), (Some(128), 512));
    let e = imp(&format!(r#"{{{base}, "mlp_only_layers": [0]}}"#)).unwrap_err();
    assert_eq!(e.problems()[0].field, "mlp_only_layers", "{e}");
    let b = imp(&format!(r#"{{{base}, "attention_bias": true}}"#))
        .unwrap()
        .model;
    assert_eq!((b.qkv_bias, b.proj_bias, b.mlp_bias), (true, true, false));
}

/// transformers 5 keeps the rotary base under `rope_parameters`: read there (it had fallen
/// back to the class default, 10,000, and the export had written that), with a note for a
/// scaled rope type.
#[test]
fn rope_theta_is_read_from_rope_parameters() {
    let cfg = |params: &str| {
        format!(
            r#"{{"model_type": "qwen3", "hidden_size": 256, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512,
                "vocab_size": 1000, "max_position_embeddings": 64, "rope_parameters": {params}}}"#
        )
    };
    let i = imp(&cfg(r#"{"rope_theta": 1000000.0, "rope_type": "default"}"#)).unwrap();
    assert_eq!(i.model.rope_theta, Some(1e6));
    assert!(
        i.notes.iter().all(|n| !n.contains("rope_type")),
        "{:?}",
        i.notes
    );
    let i = imp(&cfg(
        r#"{"rope_theta": 500000.0, "rope_type": "yarn", "factor": 4.0}"#,
    ))
    .unwrap();
    assert_eq!(i.model.rope_theta, Some(5e5));
    assert!(
        i.notes.iter().any(|n| n.contains("rope_type yarn")),
        "{:?}",
        i.notes
    );
    let e = imp(&cfg(r#"{"rope_theta": 0}"#)).unwrap_err();
    assert_eq!(e.problems()[0].field, "rope_parameters");
}

/// `max_window_layers: 0` (every layer slides) is a valid Qwen2 value; `mlp_only_layers` must
/// be a list.
#[test]
fn qwen_window_from_layer_zero_and_mlp_only_layers_as_a_list() {
    let base = r#""hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 64"#;
    let m = imp(&format!(
        r#"{{"model_type": "qwen2", {base}, "use_sliding_window": true, "max_window_layers": 0, "sliding_window": 32}}"#
    ))
    .unwrap()
    .model;
    assert_eq!(
        m.attention_window,
        Some(SlidingWindow {
            size: 32,
            layers: WindowLayers::All
        })
    );
    let e = imp(&format!(
        r#"{{"model_type": "qwen3_moe", {base}, "mlp_only_layers": "0"}}"#
    ))
    .unwrap_err();
    assert_eq!(e.problems()[0].field, "mlp_only_layers");
}

/// A gated MLP with another activation (GeGLU) costs what SwiGLU does: imported with a note
/// that the Megatron export trains SiLU.
#[test]
fn another_gated_activation_is_noted() {
    let i = imp(
        r#"{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 10,
            "max_position_embeddings": 32, "hidden_act": "gelu"}"#,
    )
    .unwrap();
    assert!(
        i.notes.iter().any(|n| n.contains("hidden_act gelu")),
        "{:?}",
        i.notes
    );
}

/// A Qwen config that writes `layer_types` (transformers 4.53 on) says with it which layers
/// slide, over `max_window_layers` (it had been ignored: an alternating list imported with
/// no window, an all-sliding one from layer 28): alternating is one layer in 2 full, all
/// sliding every layer; a pattern planner does not price, or a list of the wrong length, is
/// refused naming the key; without `use_sliding_window` no layer slides.
#[test]
fn layer_types_say_which_layers_slide() {
    let base = r#""hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 8192,
        "sliding_window": 128"#;
    let with = |family: &str, on: bool, types: &str| {
        imp(&format!(
            r#"{{"model_type": "{family}", {base}, "use_sliding_window": {on}, "layer_types": [{types}]}}"#
        ))
    };
    let (s, f) = (r#""sliding_attention""#, r#""full_attention""#);
    let window = |family: &str, on: bool, types: &str| {
        with(family, on, types)
            .unwrap()
            .model
            .attention_window
            .map(|w| w.layers)
    };
    assert_eq!(
        window("qwen2", true, &[s, f, s, f].join(",")),
        Some(WindowLayers::FullEvery(2))
    );
    assert_eq!(
        window("qwen3", true, &[s, s, s, s].join(",")),
        Some(WindowLayers::All)
    );
    assert_eq!(
        window("qwen3_moe", true, &[f, f, s, s].join(",")),
        Some(WindowLayers::From(2))
    );
    assert_eq!(window("qwen2", false, &[s, s, s, s].join(",")), None);
    assert_eq!(window("qwen2", true, &[f, f, f, f].join(",")), None);
    for types in [
        [s, f, f, s].join(","),
        [s, s].join(","),
        "1, 2, 3, 4".to_string(),
    ] {
        let e = with("qwen2", true, &types).unwrap_err();
        assert_eq!(e.problems()[0].field, "layer_types", "{types}: {e}");
    }
}

/// QA: a key several readers take (`num_hidden_layers`: the layers, the window pattern, the
/// layer types) had been reported once per reader; the model's own checks of expert fields
/// had named `moe.every` and `qkv_bias`, keys no config.json has.
#[test]
fn problems_are_told_once_and_in_config_keys() {
    let qwen = include_str!("../../../tests/data/hf/qwen3-30b-a3b.json");
    let mut cfg: Value = serde_json::from_str(qwen).unwrap();
    cfg["num_hidden_layers"] = (-1).into();
    let e = imp(&cfg.to_string()).unwrap_err();
    assert_eq!(e.problems().len(), 1, "{e}");
    assert_eq!(e.problems()[0].field, "num_hidden_layers");
    let mut cfg: Value = serde_json::from_str(qwen).unwrap();
    cfg["decoder_sparse_step"] = 100.into();
    let e = imp(&cfg.to_string()).unwrap_err();
    assert_eq!(e.problems()[0].field, "decoder_sparse_step", "{e}");
}
