//! How a plan deals the model's transformer layers over its pipeline stages and their model
//! chunks: the one rule the cost model (`cost::stage_layouts`), the checks and the launch
//! configurations read.

use super::Plan;
use serde::{Deserialize, Serialize};

/// Which of the input embedding and the loss take a transformer layer's slot when
/// Megatron-Core splits the layers over the pipeline (`--account-for-embedding-in-pipeline-split`,
/// `--account-for-loss-in-pipeline-split`; megatron/core/transformer/transformer_block.py
/// `get_num_layers_to_build`): the split counts L + e + l slots, and the first model chunk of
/// the first stage (e) and the last chunk of the last stage (l) build one layer fewer, to
/// balance the embedding and the LM head with loss against a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SplitAccounts {
    /// The embedding takes a slot on the first stage.
    #[serde(
        rename = "account_for_embedding_in_pipeline_split",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub embedding: bool,
    /// The LM head and loss take a slot on the last stage.
    #[serde(
        rename = "account_for_loss_in_pipeline_split",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub loss: bool,
}

impl SplitAccounts {
    /// Whether either takes a slot.
    pub fn any(self) -> bool {
        self.embedding || self.loss
    }

    /// Slots the split counts beside `layers`.
    pub fn slots(self, layers: u64) -> u64 {
        layers + u64::from(self.embedding) + u64::from(self.loss)
    }

    /// In words: `embedding`, `loss` or `embedding and loss`.
    pub fn words(self) -> &'static str {
        match (self.embedding, self.loss) {
            (true, true) => "embedding and loss",
            (true, false) => "embedding",
            (false, true) => "loss",
            (false, false) => "",
        }
    }

    /// As a plan label writes it: `emb`, `loss` or `emb+loss`.
    pub fn label(self) -> &'static str {
        match (self.embedding, self.loss) {
            (true, true) => "emb+loss",
            (true, false) => "emb",
            (false, true) => "loss",
            (false, false) => "",
        }
    }
}

impl Plan {
    /// Transformer layers of every model chunk, stage by stage ([`chunk_counts`] of the
    /// plan's stages, virtual stages, `stage_layers` and [`SplitAccounts`]).
    pub fn chunk_layer_counts(&self, layers: u64) -> Vec<Vec<u64>> {
        chunk_counts(
            layers,
            self.pp,
            self.vpp,
            self.stage_layers.as_deref(),
            self.split_accounts,
        )
    }

    /// Transformer layers of each pipeline stage (the sums of [`Plan::chunk_layer_counts`]).
    pub fn stage_layer_counts(&self, layers: u64) -> Vec<u64> {
        self.chunk_layer_counts(layers)
            .iter()
            .map(|c| c.iter().sum())
            .collect()
    }
}

/// Transformer layers of every model chunk, stage by stage (`vpp` chunks each), of a model of
/// `layers` layers on `pp` stages:
/// - `stage_layers` n_i: n_i / v per chunk (Megatron-Core's uneven first and last stages,
///   interleaved or not);
/// - with [`SplitAccounts`]: (L + e + l)/(p·v) slots per chunk, one layer fewer in the first
///   chunk of the first stage (the embedding's slot) and the last chunk of the last (the
///   loss's);
/// - else L/(p·v) each (Narayanan et al. SC'21 §2.2.2).
///
/// Counts a plan's checks refuse (`Plan::check`) come out truncated, never a panic.
pub fn chunk_counts(
    layers: u64,
    pp: u64,
    vpp: u64,
    stage_layers: Option<&[u64]>,
    accounts: SplitAccounts,
) -> Vec<Vec<u64>> {
    let (p, v) = (pp.max(1), vpp.max(1));
    if let Some(n) = stage_layers {
        return (0..p as usize)
            .map(|i| vec![n.get(i).copied().unwrap_or(0) / v; v as usize])
            .collect();
    }
    let per = accounts.slots(layers) / (p * v);
    let mut chunks = vec![vec![per; v as usize]; p as usize];
    if accounts.embedding {
        chunks[0][0] = chunks[0][0].saturating_sub(1);
    }
    if accounts.loss {
        let last = &mut chunks[p as usize - 1][v as usize - 1];
        *last = last.saturating_sub(1);
    }
    chunks
}
