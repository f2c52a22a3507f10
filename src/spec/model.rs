//! The model description (DESIGN.md §2): architecture family and shape, with derived sizes.

use super::error::{Problem, SpecError};
use super::yaml::{Reader, parse};
use serde::Serialize;

/// Decoder/encoder template: which norm, MLP, position embedding and attention mask a layer has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// GPT-2/3 style: LayerNorm, GeLU MLP, learned positions, biases, causal.
    Gpt,
    /// Llama style: RMSNorm, SwiGLU MLP, RoPE, no biases, causal, GQA allowed.
    Llama,
    /// BERT encoder: post-LayerNorm, GeLU MLP, learned positions and token types, bidirectional.
    Bert,
}

impl Arch {
    /// Name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gpt => "gpt",
            Arch::Llama => "llama",
            Arch::Bert => "bert",
        }
    }
    /// Whether linear layers carry biases.
    pub fn biases(self) -> bool {
        !matches!(self, Arch::Llama)
    }
    /// Whether the MLP is gated (SwiGLU: three weight matrices instead of two).
    pub fn gated_mlp(self) -> bool {
        matches!(self, Arch::Llama)
    }
    /// Whether attention is causal (decoder) rather than bidirectional.
    pub fn causal(self) -> bool {
        !matches!(self, Arch::Bert)
    }
    /// Parameters of one norm per hidden unit: LayerNorm has gain and bias, RMSNorm gain only.
    pub fn norm_params_per_hidden(self) -> f64 {
        if matches!(self, Arch::Llama) {
            1.0
        } else {
            2.0
        }
    }
}

/// Where token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned table of `seq_len` × h position embeddings added to the input (GPT-2/3, BERT).
    Learned,
    /// Rotary embeddings applied to Q and K in every layer, no parameters (Su et al. 2021;
    /// Llama, GPT-NeoX).
    Rotary,
}

impl Positions {
    /// Name as written in YAML.
    pub fn name(self) -> &'static str {
        match self {
            Positions::Learned => "learned",
            Positions::Rotary => "rotary",
        }
    }
    /// The template's default: rotary for llama, learned for gpt and bert.
    pub fn default_for(arch: Arch) -> Positions {
        if arch == Arch::Llama {
            Positions::Rotary
        } else {
            Positions::Learned
        }
    }
}

/// Mixture-of-experts settings of a model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MoeSpec {
    /// Number of experts per MoE layer.
    pub experts: u64,
    /// Experts each token is routed to.
    pub top_k: u64,
    /// Every `every`-th layer is an MoE layer (1: all layers).
    pub every: u64,
    /// Hidden size of one expert's MLP.
    pub expert_ffn_hidden: u64,
}

/// A validated model description, with every optional field resolved to its default.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSpec {
    /// Display name.
    pub name: String,
    /// Layer template.
    pub arch: Arch,
    /// Transformer layers.
    pub layers: u64,
    /// Hidden size h.
    pub hidden: u64,
    /// Attention (query) heads a.
    pub heads: u64,
    /// Size of one attention head where it is not h/a (transformers' `head_dim`: Qwen3's
    /// 30B-A3B and 235B-A22B, 32 and 64 heads of 128 on hidden 2048 and 4096; Mistral-Nemo).
    /// The query projection is then a·d wide, not h. Optional in YAML (`head_dim: 128`);
    /// `None`: h/a.
    pub head_size: Option<u64>,
    /// RMSNorm on every query and key head before the rotary embedding (Qwen3's `q_norm` and
    /// `k_norm`, one d-wide weight each; Dehghani et al. 2023, "Scaling Vision Transformers to
    /// 22 Billion Parameters", §3.1). Optional in YAML (`qk_norm: true`), llama only.
    pub qk_norm: bool,
    /// Key/value heads (GQA when fewer than `heads`).
    pub kv_heads: u64,
    /// MLP hidden size f.
    pub ffn_hidden: u64,
    /// Vocabulary size V (as padded for training).
    pub vocab: u64,
    /// Training sequence length s.
    pub seq_len: u64,
    /// Whether the LM head shares the input embedding matrix.
    pub tied_embeddings: bool,
    /// Whether the Q, K and V projections carry biases. Optional in YAML, default: the arch's
    /// `biases()`. `true` on a llama model gives Qwen2's attention (biases on Q, K, V only).
    pub qkv_bias: bool,
    /// Position embedding. Optional in YAML, default: [`Positions::default_for`] the arch;
    /// `rotary` on a gpt model gives GPT-NeoX / Pythia (no position table).
    pub positions: Positions,
    /// Dropout probability on attention probabilities and residual branches (0 disables the
    /// dropout kernels and their masks).
    pub dropout: f64,
    /// Mixture-of-experts settings, if any.
    pub moe: Option<MoeSpec>,
    /// Sliding attention window (Mistral's `sliding_window`): each query attends to at most
    /// this many keys. Optional in YAML (`sliding_window: N`), default none. The planner prices
    /// full causal attention, exact up to the window; longer sequences are refused
    /// ([`Infeasible::SeqBeyondWindow`](super::Infeasible::SeqBeyondWindow)).
    pub attention_window: Option<u64>,
    /// BERT's pooler, a dense h×h + bias and tanh on each sequence's first token: built by
    /// Megatron-LM's `BertModel` and transformers' `BertForPreTraining`, not by
    /// `BertForMaskedLM` (`BertModel(config, add_pooling_layer=False)`). Optional in YAML for
    /// bert (`pooler: false`), default true; always false for the other architectures.
    pub pooler: bool,
    /// Base θ of the rotary position angles (`rope_theta` in Hugging Face configs): Llama 2
    /// 10,000, Llama 3 500,000, Mixtral 1,000,000. No cost depends on it; exports write it
    /// (Megatron-LM `--rotary-base`, default 10,000) so the launch trains the model named.
    /// Optional in YAML (`rope_theta: 500000`), only with rotary positions; `None` where the
    /// model does not say.
    pub rope_theta: Option<f64>,
}

/// Upper bounds beyond which a value is a typo rather than a model. Layers: twice the deepest
/// Transformer published (DeepNet, Wang et al. 2022: 1,000 layers); a report's study grows
/// with the square of the depth (2,048 layers take about 2 minutes, 10,000 had not finished
/// in 10).
pub(crate) const MAX_LAYERS: u64 = 2048;
pub(crate) const MAX_HIDDEN: u64 = 1 << 20;
pub(crate) const MAX_VOCAB: u64 = 20_000_000;
pub(crate) const MAX_SEQ: u64 = 1 << 24;
/// Head sizes beyond this are typos: published models use 64 to 256 (Gemma 2 27B: 128; the
/// largest FlashAttention supports is 256).
pub(crate) const MAX_HEAD_DIM: u64 = 1024;
/// Rotary bases beyond this are typos: the largest published is 1e8 or so (long-context
/// variants; Llama 3 uses 5e5).
pub(crate) const MAX_ROPE_THETA: f64 = 1e10;

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

    /// Cross-field consistency checks (divisibility, ranges); empty when the model is sound.
    pub fn check(&self, file: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String, fix: String| {
            out.push(Problem {
                file: file.to_string(),
                field: field.to_string(),
                message,
                fix,
            })
        };
        if self.name.chars().any(char::is_control) || self.name.trim().is_empty() {
            bad(
                "name",
                format!(
                    "{:?} is empty or holds control characters (newlines, NUL)",
                    self.name
                ),
                "give a printable name; it heads reports and names their folder".into(),
            );
        }
        if let Some(d) = self.head_size {
            // The head size is given: the query width a·d need not be the hidden size, but it
            // is bounded as the hidden size is.
            if self.heads.saturating_mul(d) > MAX_HIDDEN {
                bad(
                    "head_dim",
                    format!("heads·head_dim = {}·{d} is beyond any model", self.heads),
                    format!("keep heads·head_dim ≤ {MAX_HIDDEN}"),
                );
            }
            if self.positions == Positions::Rotary && d % 2 != 0 {
                bad(
                    "head_dim",
                    format!("{d} is odd: rotary embeddings rotate pairs of a head's channels"),
                    "give an even head size".into(),
                );
            }
        } else if self.heads > self.hidden {
            bad(
                "heads",
                format!("{} heads exceed hidden {}", self.heads, self.hidden),
                "use fewer heads".into(),
            );
        } else if self.hidden % self.heads != 0 {
            bad(
                "heads",
                format!(
                    "hidden {} is not divisible by heads {}",
                    self.hidden, self.heads
                ),
                "choose heads so that hidden/heads is a whole head size (e.g. 64 or 128), or \
                 give head_dim"
                    .into(),
            );
        }
        if self.kv_heads > self.heads || self.heads % self.kv_heads != 0 {
            bad(
                "kv_heads",
                format!(
                    "heads {} is not a multiple of kv_heads {}",
                    self.heads, self.kv_heads
                ),
                "kv_heads must divide heads (GQA groups)".into(),
            );
        }
        if let Some(m) = &self.moe {
            if m.top_k > m.experts {
                bad(
                    "moe.top_k",
                    format!("top_k {} exceeds experts {}", m.top_k, m.experts),
                    "top_k ≤ experts".into(),
                );
            }
            if m.every > self.layers {
                bad(
                    "moe.every",
                    format!("every {} exceeds layers {}", m.every, self.layers),
                    "every ≤ layers".into(),
                );
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bad(
                "dropout",
                format!("{} is not a probability", self.dropout),
                "give a value in [0, 1)".into(),
            );
        }
        out
    }

    /// Size of one attention head d: `head_size`, else h/a.
    pub fn head_dim(&self) -> u64 {
        self.head_size.unwrap_or(self.hidden / self.heads.max(1))
    }

    /// Width of the query projection (and of the attention output), a·d: h unless the head
    /// size is set apart from it.
    pub fn q_hidden(&self) -> u64 {
        self.heads * self.head_dim()
    }

    /// Width of the key (and of the value) projection, kv_heads·d.
    pub fn kv_hidden(&self) -> u64 {
        self.kv_heads * self.head_dim()
    }

    /// Whether layer `i` (0-based) is a mixture-of-experts layer.
    pub fn is_moe_layer(&self, i: u64) -> bool {
        self.moe.as_ref().is_some_and(|m| (i + 1) % m.every == 0)
    }

    /// Number of MoE layers.
    pub fn moe_layers(&self) -> u64 {
        self.moe.as_ref().map_or(0, |m| self.layers / m.every)
    }

    /// Parameters of the attention block of one layer (QKV, output projection, their biases).
    ///
    /// QKV is h×(q + 2·h_kv) with q = a·d (= h unless the head size is set apart; GQA shrinks
    /// K and V; Ainslie et al. 2023 §2), output q×h; biases add q + 2h_kv (QKV, when
    /// `qkv_bias`) + h (output, when the arch has biases) (Megatron-LM `ParallelAttention`;
    /// Qwen2 `Qwen2Attention` has the QKV biases only); QK-norm adds its two d-wide weights.
    pub fn attention_params(&self) -> f64 {
        let (h, q, kv) = (
            self.hidden as f64,
            self.q_hidden() as f64,
            self.kv_hidden() as f64,
        );
        let weights = h * (q + 2.0 * kv) + q * h;
        let qkv_bias = if self.qkv_bias { q + 2.0 * kv } else { 0.0 };
        let proj_bias = if self.arch.biases() { h } else { 0.0 };
        let qk_norm = if self.qk_norm {
            2.0 * self.head_dim() as f64
        } else {
            0.0
        };
        weights + qkv_bias + proj_bias + qk_norm
    }

    /// Parameters of one dense MLP of hidden size `f`: 2hf (+ f + h biases) for GeLU,
    /// 3hf for SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6).
    pub fn mlp_params(&self, f: u64) -> f64 {
        let (h, f) = (self.hidden as f64, f as f64);
        if self.arch.gated_mlp() {
            3.0 * h * f
        } else {
            2.0 * h * f + if self.arch.biases() { f + h } else { 0.0 }
        }
    }

    /// Parameters of the two norms of one layer.
    pub fn layer_norm_params(&self) -> f64 {
        2.0 * self.arch.norm_params_per_hidden() * self.hidden as f64
    }

    /// Parameters of one transformer layer (dense or MoE, by index).
    ///
    /// GPT with f = 4h gives 12h² + 13h (Narayanan et al. SC'21 §5.1, the 12lh²(1 + 13/12h)
    /// term of their parameter count).
    pub fn layer_params(&self, i: u64) -> f64 {
        let mlp = match &self.moe {
            Some(m) if self.is_moe_layer(i) => {
                m.experts as f64 * self.mlp_params(m.expert_ffn_hidden)
                    + (self.hidden * m.experts) as f64
            }
            _ => self.mlp_params(self.ffn_hidden),
        };
        self.attention_params() + mlp + self.layer_norm_params()
    }

    /// Input-side embedding parameters: tokens V·h, plus learned positions s·h (when
    /// `positions` is learned) and BERT's two token-type rows and embedding LayerNorm.
    pub fn embedding_params(&self) -> f64 {
        let (h, v, s) = (self.hidden as f64, self.vocab as f64, self.seq_len as f64);
        let positions = if self.positions == Positions::Learned {
            s * h
        } else {
            0.0
        };
        let bert = if self.arch == Arch::Bert {
            2.0 * h + 2.0 * h
        } else {
            0.0
        };
        v * h + positions + bert
    }

    /// Output-side parameters: final norm, the LM head when untied, and BERT's MLM transform
    /// (dense h×h + bias + LayerNorm + output bias V) and, where it has one, pooler (h×h + h).
    pub fn head_params(&self) -> f64 {
        let (h, v) = (self.hidden as f64, self.vocab as f64);
        let final_norm = if self.arch == Arch::Bert {
            0.0
        } else {
            self.arch.norm_params_per_hidden() * h
        };
        let lm_head = if self.tied_embeddings { 0.0 } else { v * h };
        let bert_extra = if self.arch == Arch::Bert {
            h * h + h + 2.0 * h + v
        } else {
            0.0
        };
        let pooler = if self.pooler { h * h + h } else { 0.0 };
        final_norm + lm_head + bert_extra + pooler
    }

    /// The longest sequence the model can take: learned position embeddings cover `seq_len`
    /// positions only; rotary and sinusoidal positions have no table (`None`).
    pub fn max_seq_len(&self) -> Option<u64> {
        (self.positions == Positions::Learned).then_some(self.seq_len)
    }

    /// The longest sequence whose attention the planner prices as the model computes it: up
    /// to its sliding window, if it has one (beyond, the window skips keys that full causal
    /// attention would price).
    pub fn max_priced_seq_len(&self) -> Option<u64> {
        self.attention_window
    }

    /// All parameters, counted once (a tied embedding counts once).
    pub fn params(&self) -> f64 {
        (0..self.layers).map(|i| self.layer_params(i)).sum::<f64>()
            + self.embedding_params()
            + self.head_params()
    }

    /// Parameters touched per token: experts count `top_k` times instead of `experts` times.
    pub fn active_params(&self) -> f64 {
        match &self.moe {
            None => self.params(),
            Some(m) => {
                let per_expert = self.mlp_params(m.expert_ffn_hidden);
                self.params() - self.moe_layers() as f64 * (m.experts - m.top_k) as f64 * per_expert
            }
        }
    }
}

impl ModelSpec {
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
        if self.positions != Positions::default_for(self.arch) {
            out += &format!("positions: {}\n", self.positions.name());
        }
        out += &format!("dropout: {:?}\n", self.dropout);
        if let Some(m) = &self.moe {
            out += &format!(
                "moe: {{experts: {}, top_k: {}, every: {}, expert_ffn_hidden: {}}}\n",
                m.experts, m.top_k, m.every, m.expert_ffn_hidden
            );
        }
        if let Some(w) = self.attention_window {
            out += &format!("sliding_window: {w}\n");
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
        "add `vocab: N` (padded vocabulary size)",
    );
    let seq_len = r.req_count(
        "seq_len",
        MAX_SEQ,
        "add `seq_len: N` (training sequence length)",
    );
    let tied = r.opt_bool("tied_embeddings");
    let qkv_bias = r.opt_bool("qkv_bias");
    let attention_window = r.opt_count("sliding_window", MAX_SEQ);
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
        // Shared experts (DeepSeek-MoE, Qwen-MoE) run beside the routed ones on every token:
        // not a routed-expert count, and not modelled.
        for key in ["shared_experts", "n_shared_experts", "shared_expert_ffn_hidden"] {
            if m.raw(key).is_some() {
                m.problem(
                    key,
                    "shared experts (an MLP every token runs beside the routed experts, as in DeepSeek-MoE and Qwen-MoE) are not modelled",
                    "planner prices routed experts only; it cannot price this model",
                );
            }
        }
        (experts, top_k, every, ffn)
    });

    let arch = arch?;
    if qk_norm == Some(true) && arch != Arch::Llama {
        r.problem(
            "qk_norm",
            "only llama models take a norm on the query and key heads here",
            "remove `qk_norm`, or use arch: llama",
        );
    }
    if pooler == Some(true) && arch != Arch::Bert {
        r.problem(
            "pooler",
            "only bert has a pooler",
            "remove `pooler`, or use arch: bert",
        );
    }
    if arch == Arch::Llama && ffn_hidden.is_none() {
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
        Some((Some(experts), Some(top_k), every, ffn)) => Some(MoeSpec {
            experts,
            top_k,
            every,
            expert_ffn_hidden: ffn.unwrap_or(ffn_hidden),
        }),
        Some(_) => return None,
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
        positions,
        dropout: dropout.unwrap_or(match arch {
            // Megatron-LM defaults --hidden-dropout 0.1 --attention-dropout 0.1
            // (megatron/training/arguments.py); Llama trains without dropout (Touvron et al. 2023).
            Arch::Gpt | Arch::Bert => 0.1,
            Arch::Llama => 0.0,
        }),
        moe,
        attention_window,
        pooler: arch == Arch::Bert && pooler.unwrap_or(true),
        rope_theta: rope_theta.filter(|t| t.is_finite()),
    })
}

#[cfg(test)]
mod tests;
