//! The model a runs-file row describes: its shape fields (GPT or Llama, dropout by the
//! software that ran), or a planner preset they must agree with (`model.preset`).

use super::Stack;
use crate::spec::runs::RunRecord;
use crate::spec::{self, Arch, ModelSpec, MoeSpec, Positions};

/// The model of `run`, checked; `fw` is the software that ran it.
pub(super) fn model_of(run: &RunRecord, fw: Stack) -> Result<ModelSpec, String> {
    let m = &run.model;
    let llama = m.kv_heads.is_some() || m.name.to_ascii_lowercase().contains("llama");
    let arch = if llama { Arch::Llama } else { Arch::Gpt };
    let dropout = match fw {
        // Llama models train without dropout (Touvron et al. 2023; NeMo's and Megatron-LM's
        // Llama recipes set hidden and attention dropout to 0).
        _ if llama => 0.0,
        // Megatron defaults (--attention-dropout 0.1 --hidden-dropout 0.1), not overridden by
        // the SC'21, Korthikanti, BLOOM or Megatron-Core benchmark scripts.
        Stack::Megatron2021
        | Stack::Megatron2022
        | Stack::MegatronDeepSpeed
        | Stack::MegatronCore => 0.1,
        // Llama (torchtitan) and MPT train without dropout.
        Stack::Fsdp => 0.0,
    };
    let model = ModelSpec {
        name: m.name.clone(),
        arch,
        layers: m.layers,
        hidden: m.hidden,
        heads: m.heads,
        kv_heads: m.kv_heads.unwrap_or(m.heads),
        head_size: None,
        qk_norm: false,
        ffn_hidden: m.ffn_hidden.unwrap_or(4 * m.hidden),
        vocab: m.vocab,
        seq_len: m.seq_len,
        tied_embeddings: m.tied_embeddings.unwrap_or(!llama),
        dropout,
        moe: match (m.experts, m.top_k) {
            (None, None) => None,
            (Some(experts), Some(top_k)) => Some(MoeSpec {
                experts,
                top_k,
                every: 1,
                expert_ffn_hidden: m.ffn_hidden.unwrap_or(4 * m.hidden),
                router_bias: arch.biases(),
                shared_ffn_hidden: 0,
                shared_gate: false,
                first_dense: 0,
            }),
            _ => {
                return Err(
                    "model.experts and model.top_k: a mixture of experts needs both".into(),
                );
            }
        },
        mla: None,
        attention_window: None,
        // No cost depends on the rotary base; validation writes no launch.
        rope_theta: None,
        mtp_layers: 0,
        qkv_bias: arch.biases(),
        proj_bias: arch.biases(),
        mlp_bias: arch.biases(),
        attention_sinks: false,
        swiglu_limit: None,
        // BLOOM's ALiBi has neither a position table nor rotary embeddings; the learned table
        // it is priced with adds s·h parameters (<0.02% of the model) and one add.
        positions: if llama {
            Positions::Rotary
        } else {
            Positions::Learned
        },
        pooler: false,
    };
    let model = match &m.preset {
        Some(name) => preset_model(name, m, &model)?,
        None => model,
    };
    let problems = model.check(&run.id);
    if !problems.is_empty() {
        return Err(problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(model)
}

/// The preset `name` at the row's sequence length, where the row's shape fields agree with
/// it (`built` is the model those fields alone describe).
fn preset_model(
    name: &str,
    m: &spec::runs::RunModel,
    built: &ModelSpec,
) -> Result<ModelSpec, String> {
    let p = spec::load_model(name).map_err(|e| format!("model.preset: {e}"))?;
    let experts = |x: &ModelSpec| x.moe.as_ref().map(|e| (e.experts, e.top_k));
    let pairs = [
        ("layers", built.layers, p.layers),
        ("hidden", built.hidden, p.hidden),
        ("heads", built.heads, p.heads),
        ("kv_heads", built.kv_heads, p.kv_heads),
        ("vocab", built.vocab, p.vocab),
    ];
    if let Some((field, row, preset)) = pairs.into_iter().find(|(_, a, b)| a != b) {
        return Err(format!(
            "model.{field} {row}, but the preset `{name}` has {preset}: correct the row, or name \
             the preset of this model"
        ));
    }
    // The row's ffn_hidden is each expert's width in a mixture of experts, else the MLP's.
    let ffn = |x: &ModelSpec| x.moe.as_ref().map_or(x.ffn_hidden, |e| e.expert_ffn_hidden);
    if m.ffn_hidden.is_some() && ffn(built) != ffn(&p) {
        return Err(format!(
            "model.ffn_hidden {}, but the preset `{name}` has {}: correct the row, or name the \
             preset of this model",
            ffn(built),
            ffn(&p)
        ));
    }
    if experts(built) != experts(&p) {
        let say = |x: Option<(u64, u64)>| {
            x.map_or("no experts".to_string(), |(e, k)| {
                format!("experts {e}, top_k {k}")
            })
        };
        return Err(format!(
            "model {}, but the preset `{name}` has {}: correct the row, or name the preset of \
             this model",
            say(experts(built)),
            say(experts(&p))
        ));
    }
    Ok(ModelSpec {
        name: m.name.clone(),
        seq_len: m.seq_len,
        ..p
    })
}
