//! What a flag's value may be: the whole-number parsers that word a refusal by the flag
//! (`--tp -2`, `--zero 7`), the per-stage counts of `--stage-layers`, and the value enums of
//! the plan flags with their conversions into `spec` types.

use crate::spec::{AttentionImpl, Fp8Recipe, Framework, Recompute, TpOverlap};
use crate::units::Dtype;
use clap::ValueEnum;

/// A whole-number flag that takes 1 and up (sizes, batches, step and device counts). Such
/// flags also set `allow_negative_numbers`, so that `--tp -2` reaches this parser (clap had
/// read `-2` as an unknown argument) and clap's error names the flag with this reason
/// (`allow_hyphen_values` would also do that, but would read the next flag as the value of
/// one given without it: `--tp --pp 2`). 0 passes here and is refused where the flag is
/// checked ("--tp 0: must be at least 1").
pub(crate) fn size<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    whole(text, "at least 1")
}

/// A whole-number flag that takes 0 and up (`--warmup`, `--recompute-num-layers`), as
/// [`size`].
pub(crate) fn count<T: TryFrom<u64>>(text: &str) -> Result<T, String> {
    whole(text, "0 or more")
}

/// `--zero`: a ZeRO stage, 0 to 3 (a negative one reaches here, as in [`size`]).
pub(super) fn zero_stage(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(z) if z <= 3 => Ok(z),
        _ => Err("expected a ZeRO stage: 0, 1, 2 or 3 (1 = distributed optimizer)".into()),
    }
}

fn whole<T: TryFrom<u64>>(text: &str, takes: &str) -> Result<T, String> {
    match text.parse::<u64>() {
        Ok(v) => T::try_from(v)
            .map_err(|_| format!("too large for this flag; give a whole number, {takes}")),
        Err(_) if text.parse::<i128>().is_ok() => {
            Err(format!("a negative number; give a whole number, {takes}"))
        }
        Err(_) => Err(format!("expected a whole number, {takes}")),
    }
}

/// Per-stage counts of `--stage-layers` and `--recompute-layers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts(pub Vec<u64>);

pub(super) fn counts(text: &str) -> Result<Counts, String> {
    crate::spec::unfold_counts(text).map(Counts)
}

/// `--framework` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FrameworkArg {
    /// Megatron-LM / Megatron-Core.
    Megatron,
    /// Megatron-DeepSpeed.
    Deepspeed,
    /// torchtitan (FSDP2).
    Torchtitan,
    /// MosaicML llm-foundry (FSDP).
    LlmFoundry,
}

impl From<FrameworkArg> for Framework {
    fn from(f: FrameworkArg) -> Self {
        match f {
            FrameworkArg::Megatron => Framework::Megatron,
            FrameworkArg::Deepspeed => Framework::DeepSpeed,
            FrameworkArg::Torchtitan => Framework::Torchtitan,
            FrameworkArg::LlmFoundry => Framework::LlmFoundry,
        }
    }
}

/// `--tp-overlap` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TpOverlapArg {
    /// Every TP collective exposed.
    None,
    /// Input-gradient collectives overlap weight-gradient GEMMs.
    Backward,
    /// All TP collectives pipelined with GEMMs.
    Full,
}

impl From<TpOverlapArg> for TpOverlap {
    fn from(t: TpOverlapArg) -> Self {
        match t {
            TpOverlapArg::None => TpOverlap::None,
            TpOverlapArg::Backward => TpOverlap::Backward,
            TpOverlapArg::Full => TpOverlap::Full,
        }
    }
}

/// `--fp8-recipe` values (Megatron-LM's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Fp8RecipeArg {
    /// Delayed scaling: the scale from earlier steps' amax history (Megatron-LM's default).
    #[default]
    Delayed,
    /// Per-tensor current scaling (NeMo's FP8-CS): each tensor's amax read before its cast.
    Tensorwise,
}

impl From<Fp8RecipeArg> for Fp8Recipe {
    fn from(r: Fp8RecipeArg) -> Self {
        match r {
            Fp8RecipeArg::Delayed => Fp8Recipe::Delayed,
            Fp8RecipeArg::Tensorwise => Fp8Recipe::Tensorwise,
        }
    }
}

/// `--recompute` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecomputeArg {
    /// No recomputation.
    None,
    /// Megatron: the --recompute-modules (default the attention core); torchtitan: its
    /// op-level policy (every other matmul).
    Selective,
    /// Whole layers.
    Full,
}

/// `--dtype` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// bfloat16.
    Bf16,
    /// fp16.
    Fp16,
    /// fp8 GEMMs.
    Fp8,
    /// fp32.
    Fp32,
    /// fp32 tensors with TF32 tensor-core GEMMs (PyTorch `allow_tf32`).
    Tf32,
}

/// `--schedule` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    /// GPipe.
    Gpipe,
    /// 1F1B.
    #[value(name = "1f1b")]
    OneFOneB,
    /// Interleaved 1F1B.
    Interleaved,
}

/// `--attention` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttentionArg {
    /// Flash attention.
    Flash,
    /// Materialised softmax (Megatron-LM 2021).
    Unfused,
    /// FlashAttention in Triton (MosaicML llm-foundry's default kernel).
    FlashTriton,
}

impl From<RecomputeArg> for Recompute {
    fn from(r: RecomputeArg) -> Self {
        match r {
            RecomputeArg::None => Recompute::None,
            RecomputeArg::Selective => Recompute::Selective,
            RecomputeArg::Full => Recompute::Full,
        }
    }
}

impl From<DtypeArg> for Dtype {
    fn from(d: DtypeArg) -> Self {
        match d {
            DtypeArg::Bf16 => Dtype::Bf16,
            DtypeArg::Fp16 => Dtype::Fp16,
            DtypeArg::Fp8 => Dtype::Fp8,
            DtypeArg::Fp32 => Dtype::Fp32,
            DtypeArg::Tf32 => Dtype::Tf32,
        }
    }
}

impl From<AttentionArg> for AttentionImpl {
    fn from(a: AttentionArg) -> Self {
        match a {
            AttentionArg::Flash => AttentionImpl::Flash,
            AttentionArg::Unfused => AttentionImpl::Unfused,
            AttentionArg::FlashTriton => AttentionImpl::FlashTriton,
        }
    }
}
