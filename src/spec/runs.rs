//! Published, measured training runs (the schema of validation/published-runs.yaml): what was
//! run, on what, how, and what was measured — read as typed records, not yet interpreted.

use super::error::{Problem, SpecError};
use super::yaml::parse;
use serde::{Deserialize, Serialize};

/// The public runs shipped with the tool (validation/published-runs.yaml).
pub const PUBLISHED_RUNS: &str = include_str!("../../validation/published-runs.yaml");

/// One published run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique id.
    pub id: String,
    /// Group (one source or sweep).
    pub group: String,
    /// Where the numbers come from.
    #[serde(default)]
    pub source: Option<RunSource>,
    /// Model shape.
    pub model: RunModel,
    /// Hardware.
    pub hardware: RunHardware,
    /// Parallel layout.
    pub parallel: RunParallel,
    /// Batch.
    pub batch: RunBatch,
    /// Precision, as written by the source.
    #[serde(default)]
    pub precision: Option<String>,
    /// What was measured.
    pub measured: RunMeasured,
}

/// Citation of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSource {
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Table or section.
    #[serde(default)]
    pub locator: Option<String>,
}

/// Model shape of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunModel {
    /// Name.
    pub name: String,
    /// Layers.
    pub layers: u64,
    /// Hidden size.
    pub hidden: u64,
    /// Attention heads.
    pub heads: u64,
    /// Key/value heads (GQA), if any.
    #[serde(default)]
    pub kv_heads: Option<u64>,
    /// MLP width.
    #[serde(default)]
    pub ffn_hidden: Option<u64>,
    /// Vocabulary.
    pub vocab: u64,
    /// Sequence length.
    pub seq_len: u64,
    /// Attention kernel, when the source says.
    #[serde(default)]
    pub attention: Option<String>,
}

/// Hardware of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunHardware {
    /// GPU name as written (e.g. `A100-SXM4-80GB`).
    pub gpu: String,
    /// GPUs used.
    pub count: u64,
    /// GPUs per node.
    #[serde(default)]
    pub gpus_per_node: Option<u64>,
    /// Network, as written.
    #[serde(default)]
    pub interconnect: Option<String>,
}

/// A ZeRO stage written as a number or as text (`FSDP2 full shard`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ZeroField {
    /// A stage number.
    Stage(u64),
    /// A description.
    Text(String),
}

/// Parallel layout of a run; `None` where the source does not say.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunParallel {
    /// Tensor parallelism.
    #[serde(default)]
    pub tp: Option<u64>,
    /// Pipeline parallelism.
    #[serde(default)]
    pub pp: Option<u64>,
    /// Data parallelism.
    #[serde(default)]
    pub dp: Option<u64>,
    /// Context parallelism.
    #[serde(default)]
    pub cp: Option<u64>,
    /// Expert parallelism.
    #[serde(default)]
    pub ep: Option<u64>,
    /// Virtual pipeline stages.
    #[serde(default)]
    pub virtual_stages: Option<u64>,
    /// Sequence parallelism.
    #[serde(default)]
    pub sequence_parallel: Option<bool>,
    /// ZeRO stage or FSDP mode.
    #[serde(default)]
    pub zero_stage: Option<ZeroField>,
    /// Recomputation, as written.
    #[serde(default)]
    pub recompute: Option<String>,
    /// DDP implementation (Megatron `torch` or `local`).
    #[serde(default)]
    pub ddp_impl: Option<String>,
    /// FSDP mixed-precision mode (Composer `PURE`/`DEFAULT`).
    #[serde(default)]
    pub fsdp_mixed_precision: Option<String>,
}

/// Batch of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunBatch {
    /// Micro-batch size.
    #[serde(default)]
    pub micro_batch: Option<u64>,
    /// Global batch.
    pub global_batch: u64,
}

/// Measurements of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMeasured {
    /// TFLOP/s per GPU, in `tflops_convention`.
    #[serde(default)]
    pub tflops_per_gpu: Option<f64>,
    /// Model FLOPs utilisation.
    #[serde(default)]
    pub mfu: Option<f64>,
    /// Hardware FLOPs utilisation.
    #[serde(default)]
    pub hfu: Option<f64>,
    /// Seconds per iteration.
    #[serde(default)]
    pub iteration_time_s: Option<f64>,
    /// Tokens per second, whole job.
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    /// `ok` or `OOM`.
    #[serde(default)]
    pub status: Option<String>,
    /// Peak memory per GPU as reported (nvidia-smi), GB.
    #[serde(default)]
    pub peak_memory_gb_per_gpu: Option<f64>,
    /// What the TFLOP/s count.
    #[serde(default)]
    pub tflops_convention: Option<String>,
}

impl RunMeasured {
    /// Whether the run ran out of memory.
    pub fn oom(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("oom"))
    }
}

/// Parses a runs file.
pub fn parse_runs(file: &str, text: &str) -> Result<Vec<RunRecord>, SpecError> {
    let doc = parse(file, text)?;
    let list = doc.as_array().ok_or_else(|| {
        SpecError::Invalid(vec![Problem {
            file: file.into(),
            field: "(document)".into(),
            message: "expected a list of runs".into(),
            fix: "write one `- id: ...` entry per run".into(),
        }])
    })?;
    let mut out = Vec::with_capacity(list.len());
    let mut problems = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match serde_json::from_value::<RunRecord>(v.clone()) {
            Ok(r) => out.push(r),
            Err(e) => problems.push(Problem {
                file: file.into(),
                field: format!(
                    "[{i}] {}",
                    v.get("id").and_then(|x| x.as_str()).unwrap_or("?")
                ),
                message: e.to_string(),
                fix: "see validation/README.md for the run schema".into(),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(SpecError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_set_parses() {
        let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
        assert!(runs.len() >= 111, "{}", runs.len());
        let sc21: Vec<_> = runs
            .iter()
            .filter(|r| r.group == "megatron-sc21-table1")
            .collect();
        assert_eq!(sc21.len(), 10);
        assert_eq!(sc21[0].measured.tflops_per_gpu, Some(137.0));
        // BLOOM's sweep (3) and torchtitan's Llama 2 70B at local batch 2 with op-level
        // selective checkpointing.
        assert_eq!(runs.iter().filter(|r| r.measured.oom()).count(), 4);
    }
}
