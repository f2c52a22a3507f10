//! Which transformers family a `config.json` is: `model_type` and the `architectures`
//! classes, which must name the family's language-model class (not a task head, a headless
//! body, another family's class or custom code).

use super::fields::Fields;
use serde_json::Value;

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
    /// `qwen2_moe` (Qwen1.5-MoE, Qwen2-57B-A14B: Qwen2's attention, routed experts and a
    /// gated shared expert).
    Qwen2Moe,
    /// `qwen3` (dense; QK-norm, head size set apart from hidden/heads).
    Qwen3,
    /// `qwen3_moe` (Qwen3-30B-A3B, Qwen3-235B-A22B: routed experts, no shared ones).
    Qwen3Moe,
    /// `gpt_oss` (gpt-oss-20b, gpt-oss-120b: routed experts with biases, attention sinks,
    /// a sliding window on every other layer).
    GptOss,
    /// `deepseek_v2` (DeepSeek-V2, V2-Lite: multi-head latent attention, shared and routed
    /// experts after dense layers first).
    DeepseekV2,
    /// `deepseek_v3` (DeepSeek-V3, R1; as V2, with a query latent).
    DeepseekV3,
    /// `gpt2`.
    Gpt2,
    /// `gpt_neox` (GPT-NeoX-20B, Pythia).
    GptNeox,
    /// `bert`.
    Bert,
}

/// `model_type`, the `architectures` class names, and the family.
const FAMILIES: [(&str, &[&str], Family); 13] = [
    ("llama", &["LlamaForCausalLM"], Family::Llama),
    ("mistral", &["MistralForCausalLM"], Family::Mistral),
    ("mixtral", &["MixtralForCausalLM"], Family::Mixtral),
    ("qwen2", &["Qwen2ForCausalLM"], Family::Qwen2),
    ("qwen2_moe", &["Qwen2MoeForCausalLM"], Family::Qwen2Moe),
    ("qwen3", &["Qwen3ForCausalLM"], Family::Qwen3),
    ("qwen3_moe", &["Qwen3MoeForCausalLM"], Family::Qwen3Moe),
    ("gpt_oss", &["GptOssForCausalLM"], Family::GptOss),
    (
        "deepseek_v2",
        &["DeepseekV2ForCausalLM"],
        Family::DeepseekV2,
    ),
    (
        "deepseek_v3",
        &["DeepseekV3ForCausalLM"],
        Family::DeepseekV3,
    ),
    ("gpt2", &["GPT2LMHeadModel"], Family::Gpt2),
    ("gpt_neox", &["GPTNeoXForCausalLM"], Family::GptNeox),
    (
        "bert",
        &["BertForMaskedLM", "BertForPreTraining"],
        Family::Bert,
    ),
];

/// Class-name endings of the task heads transformers puts on a family's body in place of its
/// language-model head (`LlamaForSequenceClassification`, `BertForQuestionAnswering`, …).
const TASK_HEADS: [&str; 5] = [
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
    "ForNextSentencePrediction",
];

const SUPPORTED: &str = "llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, gpt_oss, deepseek_v2, deepseek_v3, gpt2, gpt_neox, bert";

/// The family from `model_type`, else from the first `architectures` entry.
pub(super) fn family(f: &mut Fields<'_>) -> Option<Family> {
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
                "missing, and `architectures` names no class either: not a Hugging Face model config",
                "give the config.json of a transformers model",
            );
            return None;
        }
    };
    if let Some((mt, classes, fam)) = found {
        return classes_agree(f, mt, classes).then_some(*fam);
    }
    let (field, value) = match model_type {
        Some(t) => ("model_type", t),
        None => ("architectures", class.unwrap_or_default()),
    };
    f.bad(
        field,
        &format!("unsupported {field} `{value}`"),
        &format!("planner imports {SUPPORTED}; write the model YAML by hand for others (`planner models` lists the preset YAMLs under models/ to start from)"),
    );
    None
}

/// Whether every class `architectures` names is the language-model class of `model_type`'s
/// family, which the import's template describes; otherwise a problem each. The classes say
/// what was trained and saved, which `model_type` alone does not: a task head replaces the
/// LM head (a reward model's `LlamaForSequenceClassification` has no vocabulary projection), a
/// headless body has none, and another family's class or custom code (`auto_map`, e.g.
/// SantaCoder's multi-query `GPT2LMHeadCustomModel` under `model_type: gpt2`) has other layers
/// — each would be priced silently wrong as the family's LM.
fn classes_agree(f: &mut Fields<'_>, model_type: &str, classes: &[&str]) -> bool {
    let named: Vec<String> = match f.map.get("architectures") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        Some(Value::String(c)) => vec![c.clone()],
        _ => Vec::new(),
    };
    let lm = classes.join(" or ");
    let mut ok = true;
    for class in named.iter().filter(|c| !classes.contains(&c.as_str())) {
        ok = false;
        let head = TASK_HEADS.iter().find(|h| class.ends_with(*h));
        let headless = class.ends_with("Model") && !class.ends_with("LMHeadModel");
        let (why, fix) = if let Some(h) = head {
            (
                format!(
                    "`{class}`: a task head ({h}) in place of the language-model head planner prices (its FLOPs, logits and memory would be overstated)"
                ),
                format!(
                    "planner prices language-model training: import the same model as {lm} (the body is the same)"
                ),
            )
        } else if headless {
            (
                format!(
                    "`{class}`: the body without a head, where planner prices a language-model head"
                ),
                format!("if it trains as a language model, import it as {lm}"),
            )
        } else {
            (
                format!("`{class}` is not the `{model_type}` family's {lm}, whose layers the import describes"),
                "correct model_type or architectures, whichever is wrong; for a class of its own, write the model YAML by hand".to_string(),
            )
        };
        f.bad("architectures", &why, &fix);
    }
    // DeepSeek's Hub configs name their remote code, which transformers' own `deepseek_v2`
    // and `deepseek_v3` classes have replaced with the same layers.
    if let Some(code) = f
        .map
        .get("auto_map")
        .filter(|_| !model_type.starts_with("deepseek"))
    {
        ok = false;
        f.bad(
            "auto_map",
            &format!("the model loads custom code ({code}), whose layers may differ from transformers' `{model_type}` classes"),
            "remove auto_map if the code is transformers' own class; otherwise write the model YAML by hand",
        );
    }
    ok
}
