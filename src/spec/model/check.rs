//! The model's cross-field checks: divisibility and ranges, each a [`Problem`] naming the
//! field and the fix.

use super::*;

impl ModelSpec {
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
        } else if self.mla.is_some() {
            // MLA sizes its heads itself, apart from the hidden size.
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
        let d = self.head_dim();
        // (MLA rotates its own rotary channels only: `check_mla`.)
        if self.positions == Positions::Rotary && d % 2 != 0 && d > 0 && self.mla.is_none() {
            let (field, fix) = match self.head_size {
                Some(_) => ("head_dim", "give an even head size"),
                None => (
                    "heads",
                    "choose heads so that hidden/heads is even, or give head_dim",
                ),
            };
            bad(
                field,
                format!(
                    "head size {d} is odd: rotary embeddings rotate pairs of a head's channels"
                ),
                fix.into(),
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
            } else if self.moe_layers() == 0 {
                bad(
                    "moe.first_dense",
                    format!(
                        "{} dense layers first leave no expert layer among {}",
                        m.first_dense, self.layers
                    ),
                    "give fewer dense layers first, or remove `moe`".into(),
                );
            }
            if m.shared_gate && m.shared_ffn_hidden == 0 {
                bad(
                    "moe.shared_gate",
                    "gates shared experts, but the model has none".into(),
                    "add `shared_ffn_hidden: N`, or remove `shared_gate`".into(),
                );
            }
        }
        if let Some(w) = self.attention_window {
            if !self.arch.causal() {
                bad(
                    "sliding_window",
                    format!("{} attention is bidirectional", self.arch.name()),
                    "remove `sliding_window`: planner prices windows on causal attention".into(),
                );
            }
            match w.layers {
                WindowLayers::FullEvery(n) if n < 2 || n > self.layers => bad(
                    "full_attention_every",
                    format!("{n} with {} layers", self.layers),
                    format!(
                        "give n from 2 to {} (every n-th layer attends to the whole sequence); \
                         remove it if every layer slides",
                        self.layers
                    ),
                ),
                WindowLayers::From(i) if i >= self.layers => bad(
                    "sliding_from_layer",
                    format!("{i} with {} layers (0-based): no layer slides", self.layers),
                    format!(
                        "give a layer below {}, or remove `sliding_window`",
                        self.layers
                    ),
                ),
                _ => {}
            }
        }
        if let Some(m) = self.mla {
            self.check_mla(m, &mut bad);
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
}
