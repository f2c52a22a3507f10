//! Published, measured training runs (the schema of validation/published-runs.yaml): what was
//! run, on what, how, and what was measured — read as typed records, not yet interpreted.

use super::error::{Problem, SpecError};
use super::yaml::parse;
use serde::{Deserialize, Serialize};

/// The public runs shipped with the tool (validation/published-runs.yaml).
pub const PUBLISHED_RUNS: &str = include_str!("../../validation/published-runs.yaml");

/// One published run. Unknown keys are refused here and in every section: a misspelt key
/// (`virtual_stage: 3`) would otherwise be dropped and the row priced without it, silently.
/// Keys the file's authors keep for readers (notes, derived figures, confidence) are known
/// and not read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// How far the source's numbers can be trusted, as the file's authors judge it (not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<String>,
    /// Free text (not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Settings the source leaves open (not read; the validator searches what it needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<Vec<String>>,
    /// Figures the file's authors derived from the source (not read: the validator derives
    /// its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived: Option<serde_json::Value>,
}

/// Citation of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSource {
    /// Title.
    #[serde(default)]
    pub title: Option<String>,
    /// Table or section.
    #[serde(default)]
    pub locator: Option<String>,
    /// The files the numbers were read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_from: Option<Vec<String>>,
}

/// Model shape of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Whether the LM head shares the embedding matrix, where the source settles it (a
    /// parameter count that only one choice reproduces); unset: tied for GPT-style models,
    /// untied for Llama, as their reference implementations do.
    #[serde(default)]
    pub tied_embeddings: Option<bool>,
    /// Routed experts of every layer (a mixture of experts), with `top_k`; `ffn_hidden` is
    /// then each expert's width.
    #[serde(default)]
    pub experts: Option<u64>,
    /// Experts each token is routed to.
    #[serde(default)]
    pub top_k: Option<u64>,
    /// Parameter count as the source states it (not read: the model's shape gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<f64>,
    /// Position embedding, as written (not read: learned, rotary and ALiBi price alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos_emb: Option<String>,
    /// A planner model preset (`planner models`) whose whole shape the row is priced with:
    /// what the fields above cannot say (head size, QK norm, shared experts, dense first
    /// layers, latent attention, windows, sinks). The fields above must agree with it;
    /// `seq_len` is the row's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
}

/// Hardware of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The dense 16-bit peak the source divides by (not read: the device preset's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_tflops_dense_16bit: Option<f64>,
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
#[serde(deny_unknown_fields)]
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
    /// Expert tensor parallelism (Megatron-Core `--expert-tensor-parallel-size`); unset: tp,
    /// Megatron's default (and the only layout before Megatron-Core 0.10).
    #[serde(default)]
    pub etp: Option<u64>,
    /// Virtual pipeline stages.
    #[serde(default)]
    pub virtual_stages: Option<u64>,
    /// Megatron-Core's fused cross-entropy as the run computed it: `te` (Transformer
    /// Engine's kernel, `Plan::loss_fusion`) or `native` (priced unfused); unset: none.
    #[serde(default)]
    pub cross_entropy_fusion: Option<String>,
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
    /// FSDP sharding strategy: only `FULL_SHARD` is priced (ZeRO-3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsdp_sharding: Option<String>,
    /// Activations offloaded to host memory: not priced (a row with it is skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_cpu_offload: Option<bool>,
    /// Megatron-Core's `--account-for-embedding-in-pipeline-split`: the embedding takes a
    /// layer's slot in the first pipeline stage (`Plan::split_accounts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_for_embedding_in_pipeline_split: Option<bool>,
    /// Megatron-Core's `--account-for-loss-in-pipeline-split`: the LM head and loss take a
    /// layer's slot in the last pipeline stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_for_loss_in_pipeline_split: Option<bool>,
    /// Megatron's distributed optimizer (ZeRO-1), where `zero_stage` does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed_optimizer: Option<bool>,
    /// Pipeline schedule, as written (not read: `virtual_stages` says interleaved or 1F1B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Free text (not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Batch of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBatch {
    /// Micro-batch size.
    #[serde(default)]
    pub micro_batch: Option<u64>,
    /// Global batch.
    pub global_batch: u64,
    /// Micro-batches per step per data-parallel rank, as the source states it (checked
    /// against global batch / (micro-batch · dp) where all are known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_accum: Option<u64>,
    /// Tokens per step, as the source states it (not read: global batch × sequence length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_batch: Option<u64>,
}

/// Measurements of a run. Unknown keys are refused: a misspelt measurement
/// (`iteration_tme_s`) would otherwise leave the row with nothing to compare, silently.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Tokens per second per GPU (as the source reports it; not compared).
    #[serde(default)]
    pub tokens_per_s_per_gpu: Option<f64>,
    /// Samples (sequences) per second (not compared).
    #[serde(default)]
    pub samples_per_s: Option<f64>,
    /// Whole-job PFLOP/s (not compared).
    #[serde(default)]
    pub aggregate_pflops: Option<f64>,
    /// Share of peak FLOP/s (not compared).
    #[serde(default)]
    pub percent_of_peak: Option<f64>,
}

impl RunMeasured {
    /// Whether the run ran out of memory.
    pub fn oom(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("oom"))
    }
}

/// Where in `row` a record's error lies, as ` section.key`, and the message: the section
/// whose own record fails, and within it the key holding the value the message quotes
/// (serde's messages name the value or the missing field, not where it is).
fn locate(row: &serde_json::Value, message: String) -> (String, String) {
    use serde_json::from_value as read;
    type Check = fn(serde_json::Value) -> Result<(), serde_json::Error>;
    let sections: [(&str, Check); 6] = [
        ("model", |v| read::<RunModel>(v).map(drop)),
        ("hardware", |v| read::<RunHardware>(v).map(drop)),
        ("parallel", |v| read::<RunParallel>(v).map(drop)),
        ("batch", |v| read::<RunBatch>(v).map(drop)),
        ("measured", |v| read::<RunMeasured>(v).map(drop)),
        ("source", |v| read::<RunSource>(v).map(drop)),
    ];
    for (name, check) in sections {
        let Some(section) = row.get(name) else {
            continue;
        };
        let Err(e) = check(section.clone()) else {
            continue;
        };
        let e = e.to_string();
        // `invalid type: string "twenty", expected u64`: the key holding "twenty".
        let quoted = e.split('"').nth(1);
        let key = section.as_object().and_then(|o| {
            o.iter()
                .find(|(_, v)| quoted.is_some_and(|q| v.as_str() == Some(q)))
                .map(|(k, _)| k.clone())
        });
        let path = key.map_or(format!(" {name}"), |k| format!(" {name}.{k}"));
        return (path, e);
    }
    (String::new(), message)
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
            Err(e) => {
                let id = v.get("id").and_then(|x| x.as_str()).unwrap_or("?");
                let (path, message) = locate(v, e.to_string());
                problems.push(Problem {
                    file: file.into(),
                    field: format!("[{i}] {id}{path}"),
                    message,
                    fix: "see validation/README.md for the run schema".into(),
                });
            }
        }
    }
    // Ids name rows (`validate --explain ID`): each once.
    let mut seen = std::collections::HashMap::new();
    for (i, r) in out.iter().enumerate() {
        if let Some(first) = seen.insert(r.id.as_str(), i) {
            problems.push(Problem {
                file: file.into(),
                field: format!("[{i}] {}", r.id),
                message: format!("id `{}` is also run [{first}]'s", r.id),
                fix: "give every run its own id".into(),
            });
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

    /// A runs file's mistakes name the row and the field: a misspelt measurement (which had
    /// left the row silently without a figure to compare), a value of the wrong type inside a
    /// section, an id used twice.
    #[test]
    fn mistakes_name_the_row_and_field() {
        let row = |id: &str, layers: &str, measured: &str| {
            format!(
                "- id: {id}\n  group: g\n  model: {{name: m, layers: {layers}, hidden: 64, heads: 4, vocab: 10, seq_len: 8}}\n  hardware: {{gpu: A100, count: 8}}\n  parallel: {{tp: 1, pp: 1}}\n  batch: {{global_batch: 8}}\n  measured: {{{measured}}}\n"
            )
        };
        let fields = |text: &str| -> Vec<String> {
            match parse_runs("r.yaml", text) {
                Err(SpecError::Invalid(p)) => p.into_iter().map(|p| p.field).collect(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            fields(&row("a", "2", "iteration_tme_s: 1.0")),
            ["[0] a measured"]
        );
        assert_eq!(
            fields(&row("a", "two", "iteration_time_s: 1.0")),
            ["[0] a model.layers"]
        );
        let twice = row("a", "2", "iteration_time_s: 1.0").repeat(2);
        assert_eq!(fields(&twice), ["[1] a"]);
    }
}
