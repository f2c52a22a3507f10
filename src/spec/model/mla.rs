//! Multi-head latent attention (DeepSeek-V2/V3): its sizes, its parameters and what it
//! rules out beside it.

use super::{Arch, MAX_HIDDEN, ModelSpec, Positions};
use serde::Serialize;

/// Multi-head latent attention (DeepSeek-V2 §2.1, arXiv:2405.04434): keys and values are
/// projected up from one shared latent of `kv_lora_rank` channels per token, queries from one
/// of `q_lora_rank` (or straight from the hidden state), and each head's query and key carry
/// `qk_nope_dim` channels without position plus `qk_rope_dim` rotary ones (the rotary key is
/// one per token, shared by the heads); values have `v_dim` channels a head. Megatron-Core
/// `MLASelfAttention` (`--multi-latent-attention`, `--q-lora-rank`, `--kv-lora-rank`,
/// `--qk-head-dim`, `--qk-pos-emb-head-dim`, `--v-head-dim`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mla {
    /// Rank of the query's latent (DeepSeek-V3 1536); `None`: queries projected from the
    /// hidden state (DeepSeek-V2-Lite).
    pub q_lora_rank: Option<u64>,
    /// Rank of the key/value latent (512).
    pub kv_lora_rank: u64,
    /// Query/key channels a head without position (128).
    pub qk_nope_dim: u64,
    /// Rotary query/key channels a head (64).
    pub qk_rope_dim: u64,
    /// Value channels a head (128).
    pub v_dim: u64,
}

impl Mla {
    /// Weights of MLA's linears a token passes through, its latent norms left out (NeMo
    /// `flops_formulas.py` `deepseekv3`, `per_layer_mla_params`, counts the same): the
    /// query's down- and up-projections h·r_q + r_q·a·(d_n + d_r) (or h·a·(d_n + d_r)), the
    /// key/value down-projection h·(r_kv + d_r), its up-projection r_kv·a·(d_n + d_v) and the
    /// output a·d_v·h, for hidden size h and a heads. DeepSeek-V3: 187,105,280.
    pub fn linear_params(&self, hidden: u64, heads: u64) -> f64 {
        let (h, a) = (hidden as f64, heads as f64);
        let (dn, dr, dv) = (
            self.qk_nope_dim as f64,
            self.qk_rope_dim as f64,
            self.v_dim as f64,
        );
        let kv = self.kv_lora_rank as f64;
        let q = match self.q_lora_rank {
            Some(r) => h * r as f64 + r as f64 * a * (dn + dr),
            None => h * a * (dn + dr),
        };
        q + h * (kv + dr) + kv * a * (dn + dv) + a * dv * h
    }
}

impl ModelSpec {
    /// What MLA rules out: its heads are all key/value heads, sized by its own fields, its
    /// queries and keys rotary, with no bias, QK-norm or window planner prices beside it.
    pub(super) fn check_mla(&self, m: Mla, bad: &mut impl FnMut(&str, String, String)) {
        let mut refuse = |field: &str, why: &str| {
            bad(
                field,
                format!("{why} under multi-head latent attention (`mla`)"),
                format!("remove `{field}`, or `mla`"),
            )
        };
        if self.arch != Arch::Llama {
            refuse("arch", "only llama models are priced");
        } else if self.positions != Positions::Rotary {
            refuse("positions", "only rotary positions are priced");
        }
        if self.kv_heads != self.heads {
            refuse("kv_heads", "every head has its own key and value");
        }
        if self.head_size.is_some() {
            refuse(
                "head_dim",
                "the head sizes are mla's qk_nope_dim, qk_rope_dim and v_dim",
            );
        }
        if self.qk_norm {
            refuse("qk_norm", "no norm on the query and key heads is priced");
        }
        // (Another arch's default biases are its refusal's to report.)
        if self.arch == Arch::Llama && (self.qkv_bias || self.proj_bias) {
            let field = if self.qkv_bias {
                "qkv_bias"
            } else {
                "proj_bias"
            };
            refuse(field, "attention biases are not priced");
        }
        if self.attention_window.is_some() {
            refuse("sliding_window", "a sliding window is not priced");
        }
        let ranks = [
            ("mla.kv_lora_rank", m.kv_lora_rank),
            ("mla.qk_nope_dim", m.qk_nope_dim),
            ("mla.qk_rope_dim", m.qk_rope_dim),
            ("mla.v_dim", m.v_dim),
            ("mla.q_lora_rank", m.q_lora_rank.unwrap_or(1)),
        ];
        for (field, v) in ranks {
            if v == 0 || v > MAX_HIDDEN {
                bad(
                    field,
                    format!("{v} is not a size"),
                    format!("give a size from 1 to {MAX_HIDDEN}"),
                );
            }
        }
        let d = m.qk_nope_dim + m.qk_rope_dim;
        if self.heads.saturating_mul(d.max(m.v_dim)) > MAX_HIDDEN {
            bad(
                "heads",
                format!(
                    "heads·head size = {}·{} is beyond any model",
                    self.heads,
                    d.max(m.v_dim)
                ),
                format!("keep heads·(qk_nope_dim + qk_rope_dim) ≤ {MAX_HIDDEN}"),
            );
        }
        if d > crate::spec::plan::MAX_FUSED_HEAD_DIM {
            bad(
                "mla.qk_nope_dim",
                format!(
                    "query/key heads of {} + {} = {d} channels: the fused attention kernels MLA is priced in take heads up to {} wide",
                    m.qk_nope_dim,
                    m.qk_rope_dim,
                    crate::spec::plan::MAX_FUSED_HEAD_DIM
                ),
                "give qk_nope_dim + qk_rope_dim ≤ 256 (DeepSeek: 128 + 64)".into(),
            );
        }
        if m.qk_rope_dim % 2 != 0 {
            bad(
                "mla.qk_rope_dim",
                format!(
                    "{} is odd: rotary embeddings rotate pairs of channels",
                    m.qk_rope_dim
                ),
                "give an even size".into(),
            );
        }
    }

    /// Parameters of MLA's attention block (DeepSeek-V2 §2.1.2, eqs. 9-10 and 12-13;
    /// transformers `DeepseekV3Attention`): the query's down-projection h·r_q, its latent's
    /// RMSNorm r_q and up-projection r_q·a·(d_n + d_r) (or h·a·(d_n + d_r) without a query
    /// latent); the key/value down-projection h·(r_kv + d_r), with the rotary key, its
    /// latent's RMSNorm r_kv and up-projection r_kv·a·(d_n + d_v); the output projection
    /// a·d_v·h. DeepSeek-V3: 187,107,328.
    pub(super) fn mla_params(&self, m: Mla) -> f64 {
        let norms = m.q_lora_rank.unwrap_or(0) + m.kv_lora_rank;
        m.linear_params(self.hidden, self.heads) + norms as f64
    }
}
