//! Megatron-Core's selective recomputation modules (`--recompute-modules`): which parts of a
//! layer `--recompute-granularity selective` re-runs in backward.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The set of Megatron-Core recomputation modules a selective plan re-runs
/// (`TransformerConfig.recompute_modules`, megatron/core/transformer/transformer_config.py;
/// default `["core_attn"]`). `core_attn`, `mlp`, `moe` and `shared_experts` checkpoint their
/// module (keep its input, re-run it whole); `moe_act`, `layernorm` and `mla_up_proj` discard
/// their output once its consumers ran and re-run the module to restore it
/// (`CheckpointWithoutOutput`). What each frees and re-runs is in `graph::layer::modules`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecomputeModules(u8);

impl RecomputeModules {
    /// The attention core (scores, softmax, context), Korthikanti et al. 2022 §5.
    pub const CORE_ATTN: Self = Self(1);
    /// The routed experts' activation function.
    pub const MOE_ACT: Self = Self(1 << 1);
    /// The norms that are modules of their own: MLA's input norm and an MoE layer's
    /// pre-MLP norm (Transformer Engine fuses the others into the next linear).
    pub const LAYERNORM: Self = Self(1 << 2);
    /// MLA's up-projections and rotary embedding.
    pub const MLA_UP_PROJ: Self = Self(1 << 3);
    /// A dense layer's MLP.
    pub const MLP: Self = Self(1 << 4);
    /// An MoE layer's MLP: router, token exchange, experts.
    pub const MOE: Self = Self(1 << 5);
    /// The shared experts of an MoE layer.
    pub const SHARED_EXPERTS: Self = Self(1 << 6);
    /// No module.
    pub const EMPTY: Self = Self(0);

    /// Every module with its Megatron-Core name, in Megatron's order.
    pub const NAMES: [(&'static str, RecomputeModules); 7] = [
        ("core_attn", Self::CORE_ATTN),
        ("moe_act", Self::MOE_ACT),
        ("layernorm", Self::LAYERNORM),
        ("mla_up_proj", Self::MLA_UP_PROJ),
        ("mlp", Self::MLP),
        ("moe", Self::MOE),
        ("shared_experts", Self::SHARED_EXPERTS),
    ];

    /// Whether every module of `m` is in the set.
    pub fn has(self, m: RecomputeModules) -> bool {
        self.0 & m.0 == m.0
    }

    /// The union of two sets.
    pub fn with(self, m: RecomputeModules) -> RecomputeModules {
        Self(self.0 | m.0)
    }

    /// Whether this is Megatron-Core's default, the attention core alone.
    pub fn is_default(&self) -> bool {
        *self == Self::CORE_ATTN
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The modules' names, in Megatron's order.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(_, m)| self.has(*m))
            .map(|(n, _)| *n)
            .collect()
    }

    /// The module called `name`.
    pub fn by_name(name: &str) -> Option<RecomputeModules> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
    }

    /// A set written as names separated by commas or spaces (`core_attn,mla_up_proj`,
    /// `mla_up_proj moe_act`); the error names the unknown module and the choices.
    pub fn parse(list: &str) -> Result<RecomputeModules, String> {
        let mut set = Self::EMPTY;
        for name in list.split([',', ' ']).filter(|n| !n.is_empty()) {
            match Self::by_name(name) {
                Some(m) => set = set.with(m),
                None => {
                    return Err(format!(
                        "unknown recompute module `{name}`: use {}",
                        choices()
                    ));
                }
            }
        }
        if set.is_empty() {
            return Err(format!("no recompute module given: use {}", choices()));
        }
        Ok(set)
    }
}

/// The module names, for messages.
fn choices() -> String {
    let n: Vec<&str> = RecomputeModules::NAMES.iter().map(|(n, _)| *n).collect();
    n.join(", ")
}

impl Default for RecomputeModules {
    fn default() -> Self {
        Self::CORE_ATTN
    }
}

impl fmt::Display for RecomputeModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl Serialize for RecomputeModules {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RecomputeModules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        RecomputeModules::parse(&names.join(",")).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commas_and_spaces_and_refuses_unknown_names() {
        let m = RecomputeModules::parse("mla_up_proj moe_act,layernorm").unwrap();
        assert_eq!(m.names(), ["moe_act", "layernorm", "mla_up_proj"]);
        assert!(m.has(RecomputeModules::MOE_ACT) && !m.has(RecomputeModules::CORE_ATTN));
        assert_eq!(m.to_string(), "moe_act,layernorm,mla_up_proj");
        let e = RecomputeModules::parse("core_attn,mlp_act").unwrap_err();
        assert!(
            e.contains("`mlp_act`") && e.contains("shared_experts"),
            "{e}"
        );
        assert!(RecomputeModules::parse(" , ").is_err());
        assert!(RecomputeModules::default().is_default());
    }
}
