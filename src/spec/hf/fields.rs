//! Typed access to a `config.json`'s fields for the import, every problem collected.

use crate::spec::error::Problem;
use serde_json::{Map, Value};

/// Typed access to a config's fields, collecting problems.
pub(super) struct Fields<'a> {
    pub(super) file: &'a str,
    pub(super) map: &'a Map<String, Value>,
    pub(super) problems: Vec<Problem>,
}

impl Fields<'_> {
    /// Records a problem once: a key several fields read (`num_hidden_layers` for the layers,
    /// the window pattern and the layer types) is one problem, not one per reader.
    pub(super) fn bad(&mut self, field: &str, message: &str, fix: &str) {
        let p = Problem {
            file: self.file.to_string(),
            field: field.to_string(),
            message: message.to_string(),
            fix: fix.to_string(),
        };
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    /// The first of `names` that is present and not null.
    pub(super) fn get(&self, names: &[&'static str]) -> Option<(&'static str, &Value)> {
        names
            .iter()
            .find_map(|n| self.map.get(*n).filter(|v| !v.is_null()).map(|v| (*n, v)))
    }

    /// An optional positive whole number under any of `names`.
    pub(super) fn count(&mut self, names: &[&'static str], max: u64) -> Option<u64> {
        let (key, v) = self.get(names)?;
        match v.as_u64() {
            Some(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                let msg = format!("expected a whole number from 1 to {max}, found {v}");
                self.bad(
                    key,
                    &msg,
                    "correct it in config.json to the value the model was published with",
                );
                None
            }
        }
    }

    /// A required positive whole number under any of `names`.
    pub(super) fn need(&mut self, names: &[&'static str], max: u64) -> Option<u64> {
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

    pub(super) fn flag(&mut self, key: &'static str) -> Option<bool> {
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

    /// An optional number above 1 and at most `max` under any of `names`.
    pub(super) fn above_one(&mut self, names: &[&'static str], max: f64) -> Option<f64> {
        let (key, v) = self.get(names)?;
        match v.as_f64() {
            Some(x) if x > 1.0 && x <= max => Some(x),
            _ => {
                let msg = format!("expected a number above 1 and at most {max:e}, found {v}");
                self.bad(
                    key,
                    &msg,
                    "correct it in config.json to the value the model was published with",
                );
                None
            }
        }
    }

    pub(super) fn prob(&mut self, key: &'static str) -> Option<f64> {
        let (_, v) = self.get(&[key])?;
        match v.as_f64() {
            Some(p) if (0.0..1.0).contains(&p) => Some(p),
            _ => {
                let msg = format!("expected a probability in [0, 1), found {v}");
                self.bad(
                    key,
                    &msg,
                    "correct it in config.json to the value the model was published with",
                );
                None
            }
        }
    }
}

/// Config keys each model field is read from, in the order the import tries them.
const CONFIG_KEYS: [(&str, &[&str]); 12] = [
    ("hidden", &["hidden_size", "n_embd"]),
    ("layers", &["num_hidden_layers", "n_layer"]),
    ("heads", &["num_attention_heads", "n_head"]),
    ("kv_heads", &["num_key_value_heads"]),
    ("ffn_hidden", &["intermediate_size", "n_inner"]),
    ("vocab", &["vocab_size"]),
    ("moe.top_k", &["num_experts_per_tok"]),
    (
        "moe.experts",
        &["num_local_experts", "num_experts", "n_routed_experts"],
    ),
    ("moe.expert_ffn_hidden", &["moe_intermediate_size"]),
    ("moe.every", &["decoder_sparse_step", "moe_layer_freq"]),
    ("moe.first_dense", &["first_k_dense_replace"]),
    ("qkv_bias", &["attention_bias", "qkv_bias"]),
];

impl Fields<'_> {
    /// The config key `field` was read from (the first of its keys the config holds).
    fn config_key(&self, field: &str) -> Option<&'static str> {
        let (_, keys) = CONFIG_KEYS.iter().find(|(f, _)| *f == field)?;
        keys.iter().copied().find(|k| self.map.contains_key(*k))
    }

    /// `problems` of the imported model, which name the planner's fields, told in the
    /// config's terms: the field becomes the key it was read from, and the message says which
    /// key each planner field it mentions came from (`kv_heads 5` was `num_key_value_heads`).
    pub(super) fn in_config_terms(&self, problems: Vec<Problem>) -> Vec<Problem> {
        problems
            .into_iter()
            .map(|mut p| {
                let named: Vec<String> = p
                    .message
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                    .filter_map(|w| Some(format!("{w} is {}", self.config_key(w)?)))
                    .fold(Vec::new(), |mut v, s| {
                        if !v.contains(&s) {
                            v.push(s);
                        }
                        v
                    });
                if !named.is_empty() {
                    p.message = format!("{} (in the config: {})", p.message, named.join(", "));
                }
                if let Some(k) = self.config_key(&p.field) {
                    p.field = k.to_string();
                }
                // The fix names config keys too (`remove \`qkv_bias\`` is `attention_bias`).
                for (field, _) in CONFIG_KEYS {
                    if let Some(k) = self.config_key(field) {
                        p.fix = p.fix.replace(&format!("`{field}`"), &format!("`{k}`"));
                    }
                }
                p
            })
            .collect()
    }
}
