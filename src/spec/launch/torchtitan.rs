//! A plan as torchtitan job-config TOML: the `[parallelism]`, `[training]` and
//! `[activation_checkpoint]` sections, key names of torchtitan's TOML job config
//! (`torchtitan/config/job_config.py`, `Parallelism`, `Training`, `ActivationCheckpoint`, 2025).
//!
//! Mapping: dp with ZeRO-0 is `data_parallel_replicate_degree` (DDP); ZeRO-3 is
//! `data_parallel_shard_degree` with `fsdp_reshard_after_forward = "always"` (FSDP2 full
//! shard), ZeRO-2 the same with `"never"` (parameters stay gathered between forward and
//! backward); ZeRO-1 has no torchtitan form. Without PP, `local_batch_size` is the micro-batch
//! and torchtitan accumulates gradients up to `global_batch_size`; with PP, `local_batch_size`
//! is a data-parallel rank's whole batch, cut into `pipeline_parallel_microbatch_size` pieces.
//! Stages are written as one `pipeline_parallel_layers_per_stage`, so uneven stages are
//! refused, and so are per-stage recomputation counts (torchtitan checkpoints every block or
//! every k-th block of the model).

use super::{Collect, Export, partial_recompute, stage_counts};
use crate::spec::SpecError;
use crate::spec::model::ModelSpec;
use crate::spec::plan::{AttentionImpl, Plan, Recompute, Schedule, fold_counts};
use crate::units::{Dtype, fmt_count};

/// Writes `plan` for `model` as torchtitan TOML sections.
pub fn to_torchtitan(model: &ModelSpec, plan: &Plan) -> Result<Export, SpecError> {
    let mut c = Collect::new("export --format torchtitan");
    let parallelism = parallelism(&mut c, model, plan);
    let training = training(&mut c, plan);
    let partial = partial_recompute(model, plan);
    let ac = match plan.recompute {
        Recompute::None => "mode = \"none\"\n".to_string(),
        Recompute::Full => match partial {
            Some(r) if r.iter().all(|&n| n == 0) => "mode = \"none\"\n".to_string(),
            Some(r) => {
                c.refuse(
                    "recompute_layers",
                    format!("{} layers recomputed per stage: torchtitan checkpoints every block (full) or every k-th block of the model (selective k), not the first layers of each stage", fold_counts(&r, ",")),
                    "price full recomputation of every layer, or export --format megatron",
                );
                String::new()
            }
            None => "mode = \"full\"\n".to_string(),
        },
        // torchtitan's op-level policy, as the torchtitan framework prices selective
        // recomputation (`Framework::op_level_selective`); a plan priced for another framework
        // is warned about by `export`.
        Recompute::Selective => "mode = \"selective\"\nselective_ac_option = \"op\"\n".to_string(),
    };
    if plan.attention == AttentionImpl::Unfused {
        c.warn("torchtitan runs SDPA (flash) attention; the plan was priced unfused (pessimistic)");
    }
    // Only DDP's step all-reduce waits on the flag: FSDP reduce-scatters every micro-batch's
    // gradients with its backward either way, and under pipelining after the last one, which
    // nothing overlaps (`cost::dp::schedule`).
    if !plan.overlap_grad_reduce && plan.dp > 1 && plan.zero == 0 {
        c.warn("torchtitan overlaps DDP's gradient all-reduce with backward; the plan was priced without overlap (pessimistic)");
    }
    let mut text = format!(
        "# torchtitan job config sections for {} ({} params): {}\n\
         # Run on {} (NGPU={}); merge into a train config that sets [model], [optimizer] and the data.\n\n",
        model.name,
        fmt_count(model.params()),
        plan.short(),
        crate::units::fmt_gpus(plan.n_gpus()),
        plan.n_gpus()
    );
    text += &format!(
        "[parallelism]\n{parallelism}\n[training]\n{training}\n[activation_checkpoint]\n{ac}"
    );
    if plan.dtype == Dtype::Fp8 {
        text += "\n[model]\nconverters = [\"float8\"]\n";
    }
    c.finish(text)
}

fn parallelism(c: &mut Collect, model: &ModelSpec, plan: &Plan) -> String {
    let (replicate, shard, reshard) = match plan.zero {
        0 => (plan.dp, 1, None),
        2 => (1, plan.dp, Some("never")),
        3 => (1, plan.dp, Some("always")),
        z => {
            c.refuse("zero", format!("ZeRO-{z}: torchtitan shards parameters with their optimizer state (FSDP2) or nothing"), "price zero 0, 2 or 3, or export --format megatron");
            (plan.dp, 1, None)
        }
    };
    if plan.ddp_beside_model_parallel() {
        c.refuse("zero", "ZeRO-0 with dp > 1 beside TP/PP/CP: torchtitan runs DDP alone (\"DDP has not supported > 1D parallelism\", parallelize.py `apply_ddp`)", "price zero 2 or 3 (FSDP), or dp 1");
    }
    if plan.tp > 1 && !plan.sequence_parallel {
        c.refuse("sequence_parallel", "false: torchtitan's tensor parallelism always shards norms and dropout over the sequence (Megatron SP)", "price the plan with --sequence-parallel");
    }
    if plan.ep > 1 {
        c.refuse("ep", "torchtitan's expert parallelism borrows FSDP and TP ranks (dp2ep), a layout planner does not price", "export --format megatron, or price ep 1");
    }
    let split = if plan.pp > 1 {
        let counts = stage_counts(model, plan);
        let keys = if plan.vpp > 1 && super::uneven_stages(plan).is_some() {
            // Megatron-Core's uneven interleaving shortens every chunk of the first and last
            // ranks; torchtitan's first/last "less layers" shorten one virtual stage each.
            None
        } else if plan.vpp > 1 {
            // Virtual stages split evenly; written only where torchtitan makes that split.
            let k = SplitKeys {
                first_less: 0,
                last_less: 0,
                per_stage: model.layers / (plan.pp * plan.vpp),
            };
            let even = vec![k.per_stage; (plan.pp * plan.vpp) as usize];
            (k.per_stage > 0 && torchtitan_split(model.layers, k) == Some(even)).then_some(k)
        } else {
            split_keys(model.layers, &counts)
        };
        if keys.is_none() {
            c.refuse(
                "stage_layers",
                format!("{}: torchtitan splits the layers (and the embedding and output, counted as pipeline_parallel_first/last_stage_less_layers each) evenly, the first stages taking the remainder", fold_counts(&counts, ",")),
                "export --format megatron, or price a split torchtitan makes (e.g. one fewer layer on the first and last stage)",
            );
        }
        keys
    } else {
        None
    };
    let mut s = format!(
        "data_parallel_replicate_degree = {replicate}\ndata_parallel_shard_degree = {shard}\n"
    );
    if let Some(r) = reshard {
        s += &format!("fsdp_reshard_after_forward = \"{r}\"\n");
    }
    s += &format!(
        "tensor_parallel_degree = {}\npipeline_parallel_degree = {}\n",
        plan.tp, plan.pp
    );
    if plan.pp > 1 {
        let schedule = match plan.schedule {
            Schedule::Gpipe => "GPipe",
            Schedule::OneFOneB => "1F1B",
            Schedule::Interleaved => "Interleaved1F1B",
        };
        s += &format!("pipeline_parallel_schedule = \"{schedule}\"\n");
        if let Some(k) = split {
            s += &format!(
                "pipeline_parallel_layers_per_stage = {}\npipeline_parallel_first_stage_less_layers = {}\npipeline_parallel_last_stage_less_layers = {}\n",
                k.per_stage, k.first_less, k.last_less
            );
        }
        s += &format!("pipeline_parallel_microbatch_size = {}\n", plan.mbs);
    }
    s += &format!(
        "context_parallel_degree = {}\nexpert_parallel_degree = {}\n",
        plan.cp, plan.ep
    );
    s
}

fn training(c: &mut Collect, plan: &Plan) -> String {
    let local = if plan.pp > 1 {
        plan.mbs * plan.n_micro()
    } else {
        plan.mbs
    };
    let precision = match plan.dtype {
        Dtype::Bf16 | Dtype::Fp8 => "bfloat16",
        Dtype::Fp32 => "float32",
        Dtype::Fp16 | Dtype::Tf32 => {
            c.refuse(
                "dtype",
                format!("{}: torchtitan trains in bfloat16 or float32", plan.dtype),
                "price --dtype bf16 or fp32",
            );
            "bfloat16"
        }
    };
    format!(
        "local_batch_size = {local}\nglobal_batch_size = {}\nseq_len = {}\nmixed_precision_param = \"{precision}\"\n",
        plan.global_batch, plan.seq_len
    )
}

/// The `[parallelism]` keys that make torchtitan split the layers over the stages as a plan
/// does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SplitKeys {
    /// `pipeline_parallel_first_stage_less_layers`: layers the embedding counts for.
    first_less: u64,
    /// `pipeline_parallel_last_stage_less_layers`: layers the norm and output count for.
    last_less: u64,
    /// `pipeline_parallel_layers_per_stage`.
    per_stage: u64,
}

/// torchtitan's split of `layers` over its stages (pytorch/torchtitan
/// `distributed/pipeline_parallel.py`): `ceil((layers + first + last) / per_stage)` stages
/// share the layers plus `first` and `last` (what the embedding and the output count for)
/// evenly, the first stages taking the remainder one each; the first and the last stage then
/// hold `first` and `last` fewer layers. `None` where a stage would hold none.
fn torchtitan_split(layers: u64, k: SplitKeys) -> Option<Vec<u64>> {
    let units = layers + k.first_less + k.last_less;
    let stages = units.div_ceil(k.per_stage.max(1));
    let (base, extra) = (units / stages, units % stages);
    let mut v: Vec<u64> = (0..stages).map(|i| base + u64::from(i < extra)).collect();
    let n = v.len();
    v[0] = v[0].checked_sub(k.first_less)?;
    v[n - 1] = v[n - 1].checked_sub(k.last_less)?;
    v.iter().all(|&x| x > 0).then_some(v)
}

/// The smallest allowances under which torchtitan splits `layers` as `counts` (one stage per
/// pipeline rank), if any: the even split needs none, an uneven one those that leave the other
/// stages even. The split depends on the layers per stage only through the stage count, so
/// `ceil(units / stages)` stands for every value that gives it.
fn split_keys(layers: u64, counts: &[u64]) -> Option<SplitKeys> {
    let (top, stages) = (counts.iter().copied().max()?, counts.len() as u64);
    (0..=top).find_map(|first_less| {
        (0..=top).find_map(|last_less| {
            let units = layers + first_less + last_less;
            let per_stage = units.div_ceil(stages);
            let k = SplitKeys {
                first_less,
                last_less,
                per_stage,
            };
            (units.div_ceil(per_stage) == stages
                && torchtitan_split(layers, k).as_deref() == Some(counts))
            .then_some(k)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchtitan's own splits: Llama 3 405B (126 layers) over 16 stages with the defaults
    /// (embedding and output one layer each) is 7, 8×14, 7, the Llama 3 paper's layout; 32
    /// layers over 4 stages evenly needs both allowances at 0 (with the defaults, 8 layers per
    /// stage made ceil(34/8) = 5 stages, which torchtitan refuses on 4 ranks).
    #[test]
    fn keys_reproduce_the_split() {
        let mut llama405 = vec![8; 16];
        (llama405[0], llama405[15]) = (7, 7);
        assert_eq!(split_keys(126, &llama405).unwrap().per_stage, 8);
        let even = split_keys(32, &[8; 4]).unwrap();
        assert_eq!((even.first_less, even.last_less, even.per_stage), (0, 0, 8));
        let defaults = SplitKeys {
            first_less: 1,
            last_less: 1,
            per_stage: 8,
        };
        assert_eq!(torchtitan_split(32, defaults).unwrap().len(), 5);
        // The remainder goes to the first stages: 10 layers on 3 stages is 4, 3, 3.
        assert!(split_keys(10, &[4, 3, 3]).is_some());
        assert_eq!(split_keys(10, &[3, 3, 4]), None);
    }
}
