//! A model as YAML: reading a document into a [`ModelSpec`] (every problem collected, then
//! the cross-field checks) and writing one back.

use super::*;
use crate::spec::error::SpecError;
use crate::spec::yaml::{Reader, parse};

impl ModelSpec {
    /// Parses and validates a model YAML document. `file` names it in messages.
    pub fn from_yaml(file: &str, text: &str) -> Result<ModelSpec, SpecError> {
        let doc = parse(file, text)?;
        let mut problems = Vec::new();
        let spec = {
            let mut r = Reader::new(file, "", &doc, &mut problems);
            let spec = read_model(&mut r);
            r.finish();
            spec
        };
        match spec {
            Some(s) if problems.is_empty() => {
                let more = s.check(file);
                if more.is_empty() {
                    Ok(s)
                } else {
                    Err(SpecError::Invalid(more))
                }
            }
            _ => Err(SpecError::Invalid(problems)),
        }
    }

    /// The model as a YAML document that [`ModelSpec::from_yaml`] reads back to an equal model,
    /// each `comments` line written as a `#` comment on top. Optional keys are written when
    /// they differ from the arch's defaults (`qkv_bias`, `positions`) or always (the rest).
    pub fn to_yaml(&self, comments: &[String]) -> String {
        let mut out: String = comments.iter().map(|c| format!("# {c}\n")).collect();
        let name = serde_json::to_string(&self.name).expect("a string serialises");
        out += &format!("name: {name}\narch: {}\n", self.arch.name());
        for (key, v) in [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("ffn_hidden", self.ffn_hidden),
            ("vocab", self.vocab),
            ("seq_len", self.seq_len),
        ] {
            out += &format!("{key}: {v}\n");
        }
        out += &format!("tied_embeddings: {}\n", self.tied_embeddings);
        if self.qkv_bias != self.arch.biases() {
            out += &format!("qkv_bias: {}\n", self.qkv_bias);
        }
        if self.proj_bias != self.arch.biases() {
            out += &format!("proj_bias: {}\n", self.proj_bias);
        }
        if self.mlp_bias != self.arch.biases() {
            out += &format!("mlp_bias: {}\n", self.mlp_bias);
        }
        if self.attention_sinks {
            out += "attention_sinks: true\n";
        }
        if let Some(l) = self.swiglu_limit {
            out += &format!("swiglu_limit: {l:?}\n");
        }
        if self.positions != Positions::default_for(self.arch) {
            out += &format!("positions: {}\n", self.positions.name());
        }
        out += &format!("dropout: {:?}\n", self.dropout);
        if let Some(m) = &self.moe {
            let router_bias = if m.router_bias != self.mlp_bias {
                format!(", router_bias: {}", m.router_bias)
            } else {
                String::new()
            };
            let mut shared = String::new();
            if m.shared_ffn_hidden > 0 {
                shared += &format!(", shared_ffn_hidden: {}", m.shared_ffn_hidden);
            }
            if m.shared_gate {
                shared += ", shared_gate: true";
            }
            if m.first_dense > 0 {
                shared += &format!(", first_dense: {}", m.first_dense);
            }
            out += &format!(
                "moe: {{experts: {}, top_k: {}, every: {}, expert_ffn_hidden: {}{router_bias}{shared}}}\n",
                m.experts, m.top_k, m.every, m.expert_ffn_hidden
            );
        }
        if let Some(m) = self.mla {
            let q = m
                .q_lora_rank
                .map_or(String::new(), |r| format!("q_lora_rank: {r}, "));
            out += &format!(
                "mla: {{{q}kv_lora_rank: {}, qk_nope_dim: {}, qk_rope_dim: {}, v_dim: {}}}\n",
                m.kv_lora_rank, m.qk_nope_dim, m.qk_rope_dim, m.v_dim
            );
        }
        if let Some(w) = self.attention_window {
            out += &format!("sliding_window: {}\n", w.size);
            match w.layers {
                WindowLayers::All => {}
                WindowLayers::FullEvery(n) => out += &format!("full_attention_every: {n}\n"),
                WindowLayers::From(i) => out += &format!("sliding_from_layer: {i}\n"),
            }
        }
        if self.arch == Arch::Bert && !self.pooler {
            out += "pooler: false\n";
        }
        if let Some(d) = self.head_size {
            out += &format!("head_dim: {d}\n");
        }
        if self.qk_norm {
            out += "qk_norm: true\n";
        }
        if let Some(t) = self.rope_theta {
            out += &format!("rope_theta: {t}\n");
        }
        if self.mtp_layers > 0 {
            out += &format!("mtp_layers: {}\n", self.mtp_layers);
        }
        out
    }
}

fn read_model(r: &mut Reader<'_>) -> Option<ModelSpec> {
    let name = r.req_str("name", "add `name: my-model`");
    let arch = match r
        .req_str("arch", "add `arch: gpt` (or llama, bert)")
        .as_deref()
    {
        Some("gpt") => Some(Arch::Gpt),
        Some("llama") => Some(Arch::Llama),
        Some("bert") => Some(Arch::Bert),
        Some(other) => {
            r.problem(
                "arch",
                format!("unknown architecture `{other}`"),
                "use gpt, llama or bert",
            );
            None
        }
        None => None,
    };
    let layers = r.req_count("layers", MAX_LAYERS, "add `layers: N` (transformer layers)");
    let hidden = r.req_count("hidden", MAX_HIDDEN, "add `hidden: N` (model width)");
    let heads = r.req_count("heads", MAX_HIDDEN, "add `heads: N` (attention heads)");
    let kv_heads = r.opt_count("kv_heads", MAX_HIDDEN);
    let head_size = r.opt_count("head_dim", MAX_HEAD_DIM);
    let qk_norm = r.opt_bool("qk_norm");
    let ffn_hidden = r.opt_count("ffn_hidden", 16 * MAX_HIDDEN);
    let vocab = r.req_count(
        "vocab",
        MAX_VOCAB,
        "add `vocab: N` (the tokenizer's vocabulary size; Megatron plans pad it to 128·tp themselves)",
    );
    let seq_len = r.req_count(
        "seq_len",
        MAX_SEQ,
        "add `seq_len: N` (training sequence length)",
    );
    let tied = r.opt_bool("tied_embeddings");
    let qkv_bias = r.opt_bool("qkv_bias");
    let proj_bias = r.opt_bool("proj_bias");
    let mlp_bias = r.opt_bool("mlp_bias");
    let attention_sinks = r.opt_bool("attention_sinks");
    // 0 is none, as leaving the key out.
    let mtp_layers = match r.raw("mtp_layers") {
        Some(v) if v.as_u64().is_some_and(|n| n <= MAX_MTP_LAYERS) => v.as_u64(),
        Some(v) => {
            r.problem(
                "mtp_layers",
                format!("expected a whole number from 0 to {MAX_MTP_LAYERS}, found {v}"),
                "give the multi-token prediction depths (DeepSeek-V3: 1; 0: none)",
            );
            None
        }
        None => Some(0),
    };
    let swiglu_limit = r
        .raw("swiglu_limit")
        .map(|v| v.as_f64().unwrap_or(f64::NAN));
    if swiglu_limit.is_some_and(|l| !(l > 0.0 && l <= 1e6)) {
        r.problem(
            "swiglu_limit",
            "expected a positive number",
            "give gpt-oss's clamp, e.g. 7.0",
        );
    }
    let window_size = r.opt_count("sliding_window", MAX_SEQ);
    let full_every = r.opt_count("full_attention_every", MAX_LAYERS);
    // 0-based: 0 is every layer, as transformers' `max_window_layers: 0` (no key needed).
    let from_zero = r
        .raw("sliding_from_layer")
        .is_some_and(|v| v.as_u64() == Some(0));
    let sliding_from = if from_zero {
        Some(0)
    } else {
        r.opt_count("sliding_from_layer", MAX_LAYERS)
    };
    let window_layers = match (full_every, sliding_from) {
        (Some(_), Some(_)) => {
            r.problem(
                "sliding_from_layer",
                "given with `full_attention_every`: the two describe different layer patterns",
                "keep one of them",
            );
            None
        }
        (Some(n), None) => Some(WindowLayers::FullEvery(n)),
        (None, Some(0)) | (None, None) => Some(WindowLayers::All),
        (None, Some(i)) => Some(WindowLayers::From(i)),
    };
    if window_size.is_none() && (full_every.is_some() || sliding_from.is_some()) {
        let key = if full_every.is_some() {
            "full_attention_every"
        } else {
            "sliding_from_layer"
        };
        r.problem(
            key,
            "says which layers slide, but the model has no `sliding_window`",
            "add `sliding_window: N` (keys per query), or remove it",
        );
    }
    let attention_window = window_size
        .zip(window_layers)
        .map(|(size, layers)| SlidingWindow { size, layers });
    let mla_raw = r.nested("mla", |m| {
        let q_lora_rank = m.opt_count("q_lora_rank", MAX_HIDDEN);
        let fields = [
            m.req_count(
                "kv_lora_rank",
                MAX_HIDDEN,
                "add `kv_lora_rank: N` (DeepSeek-V3: 512)",
            ),
            m.req_count(
                "qk_nope_dim",
                MAX_HIDDEN,
                "add `qk_nope_dim: N` (DeepSeek-V3: 128)",
            ),
            m.req_count(
                "qk_rope_dim",
                MAX_HIDDEN,
                "add `qk_rope_dim: N` (DeepSeek-V3: 64)",
            ),
            m.req_count("v_dim", MAX_HIDDEN, "add `v_dim: N` (DeepSeek-V3: 128)"),
        ];
        match fields {
            [Some(kv), Some(n), Some(r), Some(v)] => Some(Mla {
                q_lora_rank,
                kv_lora_rank: kv,
                qk_nope_dim: n,
                qk_rope_dim: r,
                v_dim: v,
            }),
            _ => None,
        }
    });
    let pooler = r.opt_bool("pooler");
    let positions = match r.opt_str("positions").as_deref() {
        None => None,
        Some("learned") => Some(Positions::Learned),
        Some("rotary") => Some(Positions::Rotary),
        Some(other) => {
            r.problem(
                "positions",
                format!("unknown position embedding `{other}`"),
                "use learned or rotary",
            );
            None
        }
    };
    let rope_theta = r.raw("rope_theta").map(|v| v.as_f64().unwrap_or(f64::NAN));
    if rope_theta.is_some_and(|t| !(t > 1.0 && t <= MAX_ROPE_THETA)) {
        r.problem(
            "rope_theta",
            format!("expected a number above 1 and at most {MAX_ROPE_THETA:e}"),
            "give the config's rope_theta, e.g. 500000 for Llama 3",
        );
    }
    let dropout = r.raw("dropout").map(|v| v.as_f64().unwrap_or(f64::NAN));
    if dropout.is_some_and(|d| d.is_nan()) {
        r.problem(
            "dropout",
            "expected a number",
            "give a probability such as 0.1",
        );
    }
    let moe_raw = r.nested("moe", |m| {
        let experts = m.req_count("experts", 1 << 16, "add `experts: N`");
        let top_k = m.req_count("top_k", 1 << 16, "add `top_k: N`");
        let every = m.opt_count("every", MAX_LAYERS).unwrap_or(1);
        let ffn = m.opt_count("expert_ffn_hidden", 16 * MAX_HIDDEN);
        let router_bias = m.opt_bool("router_bias");
        // Shared experts are described by their total width: DeepSeek's count of them is
        // not a routed-expert count, nor a width.
        for key in ["shared_experts", "n_shared_experts", "shared_expert_ffn_hidden"] {
            if m.raw(key).is_some() {
                m.problem(
                    key,
                    "not a key planner reads: shared experts are given by their total width",
                    "write `shared_ffn_hidden: N` (DeepSeek: n_shared_experts × moe_intermediate_size; Qwen2-MoE: shared_expert_intermediate_size)",
                );
            }
        }
        // 0 is none, as leaving the key out.
        let mut count_or_zero = |key, max| match m.raw(key) {
            Some(v) if v.as_u64() == Some(0) => Some(0),
            _ => m.opt_count(key, max),
        };
        let shared = (
            count_or_zero("shared_ffn_hidden", 16 * MAX_HIDDEN),
            count_or_zero("first_dense", MAX_LAYERS),
            m.opt_bool("shared_gate"),
        );
        (experts, top_k, every, ffn, router_bias, shared)
    });

    let arch = arch?;
    if swiglu_limit.is_some() && arch != Arch::Llama {
        r.problem(
            "swiglu_limit",
            "only llama models have a gated activation to clamp",
            "remove `swiglu_limit`, or use arch: llama",
        );
    }
    if qk_norm == Some(true) && arch != Arch::Llama {
        r.problem(
            "qk_norm",
            "only llama models take a norm on the query and key heads here",
            "remove `qk_norm`, or use arch: llama",
        );
    }
    if mtp_layers.is_some_and(|n| n > 0) && arch == Arch::Bert {
        r.problem(
            "mtp_layers",
            "multi-token prediction predicts further tokens of a causal language model; bert has none",
            "remove `mtp_layers`, or use arch: gpt or llama",
        );
    }
    if pooler == Some(true) && arch != Arch::Bert {
        r.problem(
            "pooler",
            "only bert has a pooler",
            "remove `pooler`, or use arch: bert",
        );
    }
    // Only when it is absent: a value given but refused has its own problem already.
    if arch == Arch::Llama && ffn_hidden.is_none() && r.raw("ffn_hidden").is_none() {
        r.problem(
            "ffn_hidden",
            "llama models need an explicit MLP size",
            "add `ffn_hidden: N` (e.g. 11008 for Llama-2-7B)",
        );
    }
    let positions = positions.unwrap_or(Positions::default_for(arch));
    if rope_theta.is_some() && positions != Positions::Rotary {
        r.problem(
            "rope_theta",
            format!("the model has {} positions, not rotary", positions.name()),
            "remove `rope_theta`, or add `positions: rotary`",
        );
    }
    let (hidden, heads) = (hidden?, heads?);
    let ffn_hidden = ffn_hidden.unwrap_or(4 * hidden);
    let moe = match moe_raw {
        Some((Some(experts), Some(top_k), every, ffn, router_bias, shared)) => Some(MoeSpec {
            experts,
            top_k,
            every,
            expert_ffn_hidden: ffn.unwrap_or(ffn_hidden),
            router_bias: router_bias.unwrap_or(mlp_bias.unwrap_or(arch.biases())),
            shared_ffn_hidden: shared.0.unwrap_or(0),
            first_dense: shared.1.unwrap_or(0),
            shared_gate: shared.2.unwrap_or(false),
        }),
        Some(_) => return None,
        None => None,
    };
    let mla = match mla_raw {
        Some(None) => return None,
        Some(m) => m,
        None => None,
    };
    Some(ModelSpec {
        name: name?,
        arch,
        layers: layers?,
        hidden,
        heads,
        kv_heads: kv_heads.unwrap_or(heads),
        head_size,
        qk_norm: qk_norm.unwrap_or(false),
        ffn_hidden,
        vocab: vocab?,
        seq_len: seq_len?,
        tied_embeddings: tied.unwrap_or(arch != Arch::Llama),
        qkv_bias: qkv_bias.unwrap_or(arch.biases()),
        proj_bias: proj_bias.unwrap_or(arch.biases()),
        mlp_bias: mlp_bias.unwrap_or(arch.biases()),
        attention_sinks: attention_sinks.unwrap_or(false),
        swiglu_limit: swiglu_limit.filter(|l| l.is_finite()),
        positions,
        dropout: dropout.unwrap_or(match arch {
            // Megatron-LM defaults --hidden-dropout 0.1 --attention-dropout 0.1
            // (megatron/training/arguments.py); Llama trains without dropout (Touvron et al. 2023).
            Arch::Gpt | Arch::Bert => 0.1,
            Arch::Llama => 0.0,
        }),
        moe,
        mla,
        attention_window,
        pooler: arch == Arch::Bert && pooler.unwrap_or(true),
        rope_theta: rope_theta.filter(|t| t.is_finite()),
        mtp_layers: mtp_layers.unwrap_or(0),
    })
}
