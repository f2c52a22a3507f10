//! What a family's config may set that planner does not model: an error where it changes the
//! shape, a note where only the price is approximate.

use super::family::Family;
use super::fields::Fields;
use serde_json::Value;

/// What a family may set that planner does not model: an error when it changes the shape, a
/// note when only the price is approximate.
pub(super) fn family_checks(f: &mut Fields<'_>, fam: Family, notes: &mut Vec<String>) {
    match fam {
        Family::GptNeox => neox_checks(f, notes),
        Family::Bert => bert_checks(f),
        Family::Gpt2 => {}
        _ => llama_checks(f, fam, notes),
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

/// The gated MLP's activation, and gpt-oss's approximations.
fn llama_checks(f: &mut Fields<'_>, fam: Family, notes: &mut Vec<String>) {
    // The gated MLP `act(gate(x)) * up(x)` costs the same whatever `act` is; only the
    // Megatron-LM export, which writes SwiGLU, would train another activation.
    // gpt-oss's experts ignore `hidden_act` (their activation is fixed, said below).
    if let Some(act) = f
        .map
        .get("hidden_act")
        .and_then(Value::as_str)
        .filter(|a| !matches!(*a, "silu" | "swish") && fam != Family::GptOss)
    {
        notes.push(format!(
            "hidden_act {act}: priced as the gated MLP the class builds (the same GEMMs and \
             elementwise passes as SwiGLU); a Megatron-LM export writes --swiglu, which trains \
             SiLU"
        ));
    }
    if matches!(fam, Family::DeepseekV2 | Family::DeepseekV3)
        && let Some(n) = f
            .map
            .get("num_nextn_predict_layers")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
    {
        notes.push(format!(
            "num_nextn_predict_layers {n}: DeepSeek-V3's multi-token prediction module (a \
             further layer and pass through the output head per depth on the last pipeline \
             stage) is priced as Megatron-LM trains it (--mtp-num-layers {n}); transformers' \
             class does not build it: set `mtp_layers: 0` to price training without it"
        ));
    }
    if fam == Family::GptOss {
        notes.push(
            "gpt_oss: the experts' clamped SwiGLU (gate·σ(1.702·gate)·(up + 1), clamped at \
             swiglu_limit) is priced as SwiGLU (the same GEMMs and elementwise passes); the \
             attention sinks as weights only (a logit per head in each softmax)"
                .into(),
        );
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
