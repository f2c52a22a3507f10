//! The model description (DESIGN.md §2): architecture family and shape, with derived sizes.

use super::error::Problem;
use serde::Serialize;

pub use mla::Mla;

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
    /// Whether the router's linear carries a bias, one per expert (gpt-oss's `router.bias`;
    /// Megatron-Core's `TopKRouter` takes one with `add_bias_linear`, as the other linears).
    /// Optional in YAML (`moe.router_bias: true`), default: the model's `mlp_bias`.
    pub router_bias: bool,
    /// Width of the shared experts, one MLP every token runs beside the routed ones, split
    /// over tensor parallelism as a dense MLP is (Dai et al. 2024, "DeepSeekMoE", §3.2;
    /// Megatron-Core `SharedExpertMLP`, `--moe-shared-expert-intermediate-size`: DeepSeek's
    /// `n_shared_experts · moe_intermediate_size`, Qwen2-MoE's
    /// `shared_expert_intermediate_size`). Optional in YAML (`moe.shared_ffn_hidden`),
    /// default 0: none.
    pub shared_ffn_hidden: u64,
    /// A sigmoid gate scales the shared experts' output per token: a 1×h weight (Qwen2-MoE's
    /// `shared_expert_gate`; Megatron-Core `TransformerConfig.moe_shared_expert_gate`, which
    /// Megatron-LM's arguments.py @000c4ac has no flag for). Optional in YAML
    /// (`moe.shared_gate: true`), default false.
    pub shared_gate: bool,
    /// Layers before this one (0-based) are dense whatever `every` says (DeepSeek-V2/V3's
    /// `first_k_dense_replace`: 1 and 3). Optional in YAML (`moe.first_dense`), default 0.
    pub first_dense: u64,
}

impl MoeSpec {
    /// Parameters of the shared experts of one MoE layer, with their gate.
    pub fn shared_params(&self, model: &ModelSpec) -> f64 {
        if self.shared_ffn_hidden == 0 {
            return 0.0;
        }
        let gate = if self.shared_gate {
            model.hidden as f64
        } else {
            0.0
        };
        model.mlp_params(self.shared_ffn_hidden) + gate
    }
}

/// Which layers of a model attend through a sliding window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowLayers {
    /// Every layer (Mistral 7B v0.1).
    All,
    /// Every layer but each n-th (1-based: layers n, 2n, … attend to the whole sequence):
    /// gpt-oss alternates, n = 2 (transformers `layer_types`); Megatron-Core
    /// `--window-attn-skip-freq n`. YAML `full_attention_every: n`.
    FullEvery(u64),
    /// The layers from this one on (0-based), as transformers' Qwen2 attention reads
    /// `max_window_layers`. YAML `sliding_from_layer: i`.
    From(u64),
}

impl WindowLayers {
    /// The pattern of a list saying, per layer, whether it slides: `Some(None)` where no
    /// layer does, `Some(Some(p))` for every layer, all but every n-th, or those from one
    /// on; `None` for another pattern, which planner does not price.
    pub fn from_slides(slides: &[bool]) -> Option<Option<WindowLayers>> {
        if !slides.contains(&true) {
            return Some(None);
        }
        let first_full = slides.iter().position(|s| !s).unwrap_or(slides.len()) as u64;
        let first_sliding = slides.iter().position(|s| *s).unwrap_or(0) as u64;
        [
            WindowLayers::All,
            WindowLayers::FullEvery(first_full + 1),
            WindowLayers::From(first_sliding),
        ]
        .into_iter()
        .find(|&layers| {
            let w = SlidingWindow { size: 1, layers };
            slides
                .iter()
                .enumerate()
                .all(|(i, &s)| w.slides(i as u64) == s)
        })
        .map(Some)
    }
}

/// A sliding attention window and the layers that use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SlidingWindow {
    /// Keys each query attends to at most (transformers' `sliding_window`).
    pub size: u64,
    /// Which layers slide.
    pub layers: WindowLayers,
}

impl SlidingWindow {
    /// Whether layer `i` (0-based) attends through the window.
    pub fn slides(&self, i: u64) -> bool {
        match self.layers {
            WindowLayers::All => true,
            WindowLayers::FullEvery(n) => (i + 1) % n != 0,
            WindowLayers::From(first) => i >= first,
        }
    }

    /// In words: "4096 keys in every layer", "128 keys, one layer in 2 full", "4096 keys
    /// from layer 28" (0-based, as `sliding_from_layer`).
    pub fn describe(&self) -> String {
        match self.layers {
            WindowLayers::All => format!("{} keys in every layer", self.size),
            WindowLayers::FullEvery(n) => {
                format!("{} keys, one layer in {n} full", self.size)
            }
            WindowLayers::From(i) => format!("{} keys from layer {i}", self.size),
        }
    }

    /// How many of a model's `layers` layers slide.
    pub fn sliding_layers(&self, layers: u64) -> u64 {
        match self.layers {
            WindowLayers::All => layers,
            WindowLayers::FullEvery(n) => layers - layers / n.max(1),
            WindowLayers::From(first) => layers.saturating_sub(first),
        }
    }
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
    /// Whether the attention's output projection carries a bias. Optional in YAML
    /// (`proj_bias`), default: the arch's `biases()` (transformers' `attention_bias` sets it
    /// with `qkv_bias`: Llama's and gpt-oss's).
    pub proj_bias: bool,
    /// Whether the MLP's (and the experts') linears carry biases. Optional in YAML
    /// (`mlp_bias`), default: the arch's `biases()` (gpt-oss's experts have them).
    pub mlp_bias: bool,
    /// A learnable sink logit per attention head, added to each softmax's denominator
    /// (gpt-oss's `sinks`; Xiao et al. 2024, "Efficient Streaming Language Models with
    /// Attention Sinks"; Megatron-Core `--softmax-type learnable`): a heads-wide weight per
    /// layer, no cost planner prices. Optional in YAML (`attention_sinks: true`), default
    /// false.
    pub attention_sinks: bool,
    /// gpt-oss's gated activation in place of SwiGLU, clamped at this limit:
    /// `(clamp(up, ±l) + 1) · g·σ(1.702·g)` with `g = min(gate, l)` (transformers
    /// `GptOssExperts`; Megatron-Core `--quick-geglu --glu-linear-offset 1
    /// --activation-func-clamp-value l`). The same GEMMs and fused kernel as SwiGLU; the
    /// routed experts' clamp runs outside it (`graph::layer::moe`, `glu_clamp`: Megatron-Core
    /// clamps and concatenates fc1's output before the fused kernel), priced there; dense
    /// MLPs are priced as SwiGLU. Exports write it. Optional in YAML (`swiglu_limit: 7.0`),
    /// llama only; `None`: SwiGLU.
    pub swiglu_limit: Option<f64>,
    /// Position embedding. Optional in YAML, default: [`Positions::default_for`] the arch;
    /// `rotary` on a gpt model gives GPT-NeoX / Pythia (no position table).
    pub positions: Positions,
    /// Dropout probability on attention probabilities and residual branches (0 disables the
    /// dropout kernels and their masks).
    pub dropout: f64,
    /// Mixture-of-experts settings, if any.
    pub moe: Option<MoeSpec>,
    /// Multi-head latent attention in place of the Q, K, V projections (DeepSeek-V2/V3), if
    /// any. Optional in YAML (`mla: {q_lora_rank: 1536, kv_lora_rank: 512, qk_nope_dim: 128,
    /// qk_rope_dim: 64, v_dim: 128}`), llama only; `None`: multi-head (or grouped) attention.
    pub mla: Option<Mla>,
    /// Sliding attention window (Mistral's and gpt-oss's `sliding_window`), if any: in the
    /// layers it names, each query attends to at most `size` keys. Optional in YAML
    /// (`sliding_window: N`, with `full_attention_every: n` or `sliding_from_layer: i` where
    /// not every layer slides), default none.
    pub attention_window: Option<SlidingWindow>,
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
    /// Multi-token prediction depths (DeepSeek-V3 §2.2; Megatron-Core
    /// `MultiTokenPredictionBlock`, `--mtp-num-layers`): after the main model each depth
    /// embeds the tokens one further ahead, joins them with the previous depth's hidden
    /// state (two norms and a 2h → h projection), runs one transformer layer of the last
    /// layer's kind and the shared output head and loss, on the last pipeline stage
    /// (`graph::head`). Optional in YAML (`mtp_layers: 1`), 0 none. [`ModelSpec::params`]
    /// counts the main model, as DeepSeek's 671 B does; [`ModelSpec::mtp_params`] the
    /// module's own weights.
    pub mtp_layers: u64,
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
/// Multi-token prediction depths beyond this are typos: DeepSeek-V3 trains 1, its paper
/// studies up to 4 (§2.2 and §5.4.1).
pub(crate) const MAX_MTP_LAYERS: u64 = 16;
/// Rotary bases beyond this are typos: the largest published is 1e8 or so (long-context
/// variants; Llama 3 uses 5e5).
pub(crate) const MAX_ROPE_THETA: f64 = 1e10;

impl ModelSpec {
    /// Size of one attention head's query and key d: under MLA its unpositioned and rotary
    /// channels, else `head_size`, else h/a.
    pub fn head_dim(&self) -> u64 {
        match self.mla {
            Some(m) => m.qk_nope_dim + m.qk_rope_dim,
            None => self.head_size.unwrap_or(self.hidden / self.heads.max(1)),
        }
    }

    /// Size of one attention head's value (and output): MLA's `v_dim`, else the head size.
    pub fn v_head_dim(&self) -> u64 {
        self.mla.map_or(self.head_dim(), |m| m.v_dim)
    }

    /// Width of the attention's output, the projection's input: a·d_v.
    pub fn attn_out_hidden(&self) -> u64 {
        self.heads * self.v_head_dim()
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

    /// Whether layer `i` (0-based) is a mixture-of-experts layer: every `every`-th layer
    /// (layers every−1, 2·every−1, …) from `first_dense` on.
    pub fn is_moe_layer(&self, i: u64) -> bool {
        self.moe
            .as_ref()
            .is_some_and(|m| i >= m.first_dense && (i + 1) % m.every == 0)
    }

    /// Number of MoE layers.
    pub fn moe_layers(&self) -> u64 {
        // Layer numbers j = i + 1 in (first_dense, layers] that `every` divides.
        self.moe.as_ref().map_or(0, |m| {
            let e = m.every.max(1);
            (self.layers / e).saturating_sub(m.first_dense.min(self.layers) / e)
        })
    }

    /// Parameters of the attention block of one layer (QKV, output projection, their biases).
    ///
    /// QKV is h×(q + 2·h_kv) with q = a·d (= h unless the head size is set apart; GQA shrinks
    /// K and V; Ainslie et al. 2023 §2), output q×h; biases add q + 2h_kv (QKV, when
    /// `qkv_bias`) + h (output, when the arch has biases) (Megatron-LM `ParallelAttention`;
    /// Qwen2 `Qwen2Attention` has the QKV biases only); QK-norm adds its two d-wide weights.
    pub fn attention_params(&self) -> f64 {
        if let Some(m) = self.mla {
            return self.mla_params(m);
        }
        let (h, q, kv) = (
            self.hidden as f64,
            self.q_hidden() as f64,
            self.kv_hidden() as f64,
        );
        let weights = h * (q + 2.0 * kv) + q * h;
        let qkv_bias = if self.qkv_bias { q + 2.0 * kv } else { 0.0 };
        let proj_bias = if self.proj_bias { h } else { 0.0 };
        let qk_norm = if self.qk_norm {
            2.0 * self.head_dim() as f64
        } else {
            0.0
        };
        let sinks = if self.attention_sinks {
            self.heads as f64
        } else {
            0.0
        };
        weights + qkv_bias + proj_bias + qk_norm + sinks
    }

    /// Parameters of one dense MLP of hidden size `f`: 2hf (+ f + h biases) for GeLU,
    /// 3hf (+ 2f + h biases) for SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer",
    /// eq. 6).
    pub fn mlp_params(&self, f: u64) -> f64 {
        let (h, f) = (self.hidden as f64, f as f64);
        let up = if self.arch.gated_mlp() { 2.0 * f } else { f };
        let bias = if self.mlp_bias { up + h } else { 0.0 };
        up * h + f * h + bias
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
                    + if m.router_bias { m.experts as f64 } else { 0.0 }
                    + m.shared_params(self)
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

    /// Whether layer `i` (0-based) attends through the sliding window.
    pub fn slides(&self, i: u64) -> bool {
        self.attention_window.is_some_and(|w| w.slides(i))
    }

    /// The sliding window where it shortens attention at sequence length `s`: the window,
    /// when it is shorter than `s` and some layer slides (else every query already sees all
    /// the keys the window allows, and attention is full causal attention).
    pub fn window_at(&self, s: u64) -> Option<SlidingWindow> {
        self.attention_window
            .filter(|w| w.size < s && w.sliding_layers(self.layers) > 0)
    }

    /// All parameters, counted once (a tied embedding counts once).
    pub fn params(&self) -> f64 {
        (0..self.layers).map(|i| self.layer_params(i)).sum::<f64>()
            + self.embedding_params()
            + self.head_params()
    }

    /// Whether the last pipeline stage uses the input embedding too: the output head reuses
    /// it (tied), or multi-token prediction looks tokens up in it. With pp > 1 Megatron keeps
    /// a copy there and all-reduces its gradient with the first stage's
    /// (`LanguageModule.setup_embeddings_and_output_layer`, `_allreduce_word_embedding_grads`,
    /// which covers MTP on the last stage as well).
    pub fn embedding_on_last_stage(&self) -> bool {
        self.tied_embeddings || self.mtp_layers > 0
    }

    /// Weights of the multi-token prediction module ([`ModelSpec::mtp_layers`]): per depth
    /// the two input norms, the 2h × h projection, one layer of the last layer's kind and its
    /// final norm; the embedding and output head are the main model's.
    pub fn mtp_params(&self) -> f64 {
        if self.mtp_layers == 0 {
            return 0.0;
        }
        let h = self.hidden as f64;
        let norm = self.arch.norm_params_per_hidden() * h;
        let depth = 3.0 * norm + 2.0 * h * h + self.layer_params(self.mtp_layer_kind());
        self.mtp_layers as f64 * depth
    }

    /// The layer whose kind (dense or MoE, sliding or not) a multi-token prediction depth's
    /// layer takes: the last (Megatron-Core builds the depth from the decoder's last layer
    /// spec).
    pub fn mtp_layer_kind(&self) -> u64 {
        self.layers.saturating_sub(1)
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

mod check;
mod mla;
mod yaml;

#[cfg(test)]
mod tests;
