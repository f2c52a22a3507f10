//! A plan as a DeepSpeed config JSON (deepspeed.ai/docs/config-json): batch sizes, ZeRO stage
//! and its communication overlap, precision. Tensor and pipeline parallelism are not config
//! keys (they come from Megatron-DeepSpeed arguments or a `PipelineModule`), nor is activation
//! checkpointing (the model code switches it on): those are warnings that say what to set.
//! Uneven stages and per-stage recomputation counts, which neither the config nor the launcher
//! sets, are refused.

use super::{Collect, Export, partial_recompute, uneven_stages};
use crate::spec::SpecError;
use crate::spec::model::ModelSpec;
use crate::spec::plan::{Plan, Recompute, Schedule, fold_counts};
use crate::units::Dtype;
use serde_json::json;

/// Writes `plan` for `model` as a DeepSpeed config.
pub fn to_deepspeed(model: &ModelSpec, plan: &Plan) -> Result<Export, SpecError> {
    let mut c = Collect::new("export --format deepspeed");
    outside_config(&mut c, model, plan);
    if plan.zero == 0 && plan.overlap_grad_reduce && plan.dp > 1 {
        c.refuse(
            "overlap_grad_reduce",
            "DeepSpeed without ZeRO all-reduces gradients after backward",
            "price without --overlap-grad-reduce, or with zero ≥ 1",
        );
    }
    let mut cfg = json!({
        "train_batch_size": plan.global_batch,
        "train_micro_batch_size_per_gpu": plan.mbs,
        "gradient_accumulation_steps": plan.n_micro(),
        "zero_optimization": {"stage": plan.zero, "overlap_comm": plan.overlap_grad_reduce},
    });
    // The reduction precision as priced (`Plan::grad_reduce_bytes`), written out: DeepSpeed's
    // own default follows the training type (`engine.py` `communication_data_type`).
    cfg["communication_data_type"] = json!(match plan.grad_reduce_bytes() {
        b if b >= 4.0 => "fp32",
        _ if plan.dtype == Dtype::Fp16 => "fp16",
        _ => "bf16",
    });
    match plan.dtype {
        Dtype::Bf16 => cfg["bf16"] = json!({"enabled": true}),
        Dtype::Fp16 => cfg["fp16"] = json!({"enabled": true}),
        Dtype::Fp32 => {}
        Dtype::Fp8 | Dtype::Tf32 => c.refuse(
            "dtype",
            format!("{}: DeepSpeed's config sets bf16, fp16 or fp32", plan.dtype),
            "price --dtype bf16, fp16 or fp32",
        ),
    }
    let text = serde_json::to_string_pretty(&cfg).expect("JSON serialises") + "\n";
    c.finish(text)
}

/// What a DeepSpeed config cannot hold: errors for what DeepSpeed lacks, warnings for what
/// is set elsewhere.
fn outside_config(c: &mut Collect, model: &ModelSpec, plan: &Plan) {
    for (on, field, what) in [
        (plan.cp > 1, "cp", "context parallelism"),
        (plan.ep > 1, "ep", "Megatron-style expert parallelism"),
        (
            plan.sp(),
            "sequence_parallel",
            "Megatron sequence parallelism",
        ),
        (plan.vpp > 1, "vpp", "interleaved pipeline schedule"),
        (
            plan.pp > 1 && plan.schedule == Schedule::Gpipe,
            "schedule",
            "GPipe schedule",
        ),
    ] {
        if on {
            c.refuse(
                field,
                format!("DeepSpeed has no {what}"),
                "price the plan without it, or export --format megatron",
            );
        }
    }
    if plan.tp > 1 || plan.pp > 1 {
        c.warn(format!(
            "tp={} pp={} are not DeepSpeed config keys: launch through Megatron-DeepSpeed with --tensor-model-parallel-size {} --pipeline-model-parallel-size {}",
            plan.tp, plan.pp, plan.tp, plan.pp
        ));
    }
    if let Some(d) = plan.custom_vocab_divisor() {
        c.warn(format!(
            "make_vocab_size_divisible_by {d} is not a DeepSpeed config key: launch \
             Megatron-DeepSpeed with --make-vocab-size-divisible-by {d}"
        ));
    }
    if plan.pp == 1 && plan.zero >= 2 {
        c.warn(format!(
            "zero {}: launch Megatron-DeepSpeed with --no-pipeline-parallel; otherwise it builds \
             its pipeline model even at pp 1, and DeepSpeed's pipeline engine refuses ZeRO-2 and 3",
            plan.zero
        ));
    }
    if let Some(v) = uneven_stages(plan) {
        c.refuse(
            "stage_layers",
            format!("{}: DeepSpeed's PipelineModule places stage boundaries by its partition_method, which no config key sets to given counts", fold_counts(v, ",")),
            "export --format megatron, or price a pp that divides the layers",
        );
    }
    let partial = partial_recompute(model, plan).filter(|_| plan.recompute == Recompute::Full);
    let none_recomputed = partial.as_ref().is_some_and(|r| r.iter().all(|&n| n == 0));
    if let Some(r) = partial.as_ref().filter(|_| !none_recomputed) {
        c.refuse(
            "recompute_layers",
            format!("{} layers recomputed per stage: a DeepSpeed config cannot say which layers recompute", fold_counts(r, ",")),
            "price full recomputation of every layer, or export --format megatron",
        );
    } else if plan.recompute != Recompute::None && !none_recomputed {
        c.warn(format!(
            "recompute {}: switch activation checkpointing on in the model code (Megatron-DeepSpeed --recompute-granularity, or gradient_checkpointing_enable()); the config does not",
            plan.recompute.name()
        ));
    }
}
