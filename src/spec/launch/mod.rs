//! Launch configurations of training frameworks, to and from plans: Megatron-LM arguments
//! (written, and read back by `estimate --megatron-args`), torchtitan TOML and DeepSpeed JSON
//! (written). Pure functions. What a format cannot express is an error naming the plan field
//! and the fix; what it expresses only approximately is a warning, never silence.

pub mod deepspeed;
pub mod megatron;
pub mod megatron_args;
pub mod megatron_flags;
pub mod megatron_plan;
mod megatron_shape;
mod megatron_template;
pub mod torchtitan;

use super::error::{Problem, SpecError};
use super::model::ModelSpec;
use super::plan::{Framework, Plan};

/// Which Megatron-LM argument spellings to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MegatronVersion {
    /// Megatron-LM as of 2021 (the SC'21 paper's scripts): `--activations-checkpoint-method`,
    /// `--DDP-impl`, no sequence parallelism, distributed optimizer or flash attention.
    V2021,
    /// Megatron-Core era (2023 on): `--recompute-granularity`, `--use-distributed-optimizer`,
    /// `--overlap-grad-reduce`, `--sequence-parallel`, GQA, SwiGLU, MoE.
    Core,
}

impl MegatronVersion {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MegatronVersion::V2021 => "2021",
            MegatronVersion::Core => "core",
        }
    }
}

/// A launch-configuration format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchFormat {
    /// Megatron-LM command-line arguments.
    Megatron(MegatronVersion),
    /// A torchtitan job-config TOML fragment.
    Torchtitan,
    /// A DeepSpeed config JSON.
    Deepspeed,
}

impl LaunchFormat {
    /// The framework that runs this format's configurations: the one a plan must be priced
    /// for to be exported in it as it was predicted (kernels, checkpointing policy,
    /// optimizer-state layout).
    pub fn framework(self) -> Framework {
        match self {
            LaunchFormat::Megatron(_) => Framework::Megatron,
            LaunchFormat::Torchtitan => Framework::Torchtitan,
            LaunchFormat::Deepspeed => Framework::DeepSpeed,
        }
    }
}

/// The format that launches plans priced for `fw`, if planner writes one (Composer's YAML,
/// which runs llm-foundry, it does not).
pub fn format_of(fw: Framework) -> Option<LaunchFormat> {
    match fw {
        Framework::Megatron => Some(LaunchFormat::Megatron(MegatronVersion::Core)),
        Framework::Torchtitan => Some(LaunchFormat::Torchtitan),
        Framework::DeepSpeed => Some(LaunchFormat::Deepspeed),
        Framework::LlmFoundry => None,
    }
}

/// Whether the framework `plan` was priced for can launch it as priced: its launch format
/// expresses every field (uneven stages only where the framework sets them, per-stage
/// recomputation only in its form, parallelisms and ZeRO stages it has). The search keeps
/// only such plans, so what `suggest` ranks first is what `export` writes.
pub fn runnable(model: &ModelSpec, plan: &Plan) -> bool {
    format_of(plan.framework).is_none_or(|f| export(model, plan, f).is_ok())
}

/// An exported configuration and what it only approximates.
#[derive(Clone, Debug, PartialEq)]
pub struct Export {
    /// The configuration text.
    pub text: String,
    /// Differences between what the framework will run and what planner priced.
    pub warnings: Vec<String>,
}

/// Writes `plan` for `model` in `format`. A plan priced for another framework than the one
/// that runs the format ([`LaunchFormat::framework`]) is written with a warning first: its
/// kernels, checkpointing policy and optimizer-state memory were priced as that framework
/// runs them.
pub fn export(model: &ModelSpec, plan: &Plan, format: LaunchFormat) -> Result<Export, SpecError> {
    let mut out = match format {
        LaunchFormat::Megatron(v) => megatron::to_megatron(model, plan, v),
        LaunchFormat::Torchtitan => torchtitan::to_torchtitan(model, plan),
        LaunchFormat::Deepspeed => deepspeed::to_deepspeed(model, plan),
    }?;
    let (priced, runs) = (plan.framework.name(), format.framework().name());
    if priced != runs {
        out.warnings.insert(
            0,
            format!("the plan was priced as {priced} runs it, and {runs} runs it with other kernels, checkpointing and optimizer-state memory: `estimate --framework {runs}` prices it as it will run (`suggest --export` searches for {runs})"),
        );
    }
    Ok(out)
}

/// Layers of each pipeline stage (every chunk of it): [`Plan::stage_layer_counts`].
pub(crate) fn stage_counts(model: &ModelSpec, plan: &Plan) -> Vec<u64> {
    plan.stage_layer_counts(model.layers)
}

/// `plan.stage_layers` when its stages differ: an even list is the default split.
pub(crate) fn uneven_stages(plan: &Plan) -> Option<&[u64]> {
    plan.stage_layers
        .as_deref()
        .filter(|v| v.iter().any(|&n| n != v[0]))
}

/// `plan.recompute_layers` when some stage keeps the activations of some of its layers (a list
/// that recomputes every layer of every stage is plain full recomputation).
pub(crate) fn partial_recompute(model: &ModelSpec, plan: &Plan) -> Option<Vec<u64>> {
    let r = plan.recompute_layers.as_ref()?;
    let n = stage_counts(model, plan);
    (r.iter().zip(&n).any(|(r, n)| r < n)).then(|| r.clone())
}

/// Problems and warnings of one conversion.
pub(crate) struct Collect {
    file: String,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Collect {
    pub(crate) fn new(file: impl Into<String>) -> Self {
        Collect {
            file: file.into(),
            problems: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records something the conversion cannot do.
    pub(crate) fn refuse(
        &mut self,
        field: &str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(Problem {
            file: self.file.clone(),
            field: field.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// Records an approximation.
    pub(crate) fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }

    /// `text` with the warnings, or every problem.
    pub(crate) fn finish(self, text: String) -> Result<Export, SpecError> {
        if self.problems.is_empty() {
            Ok(Export {
                text,
                warnings: self.warnings,
            })
        } else {
            Err(SpecError::Invalid(self.problems))
        }
    }

    pub(crate) fn into_parts(self) -> (Vec<Problem>, Vec<String>) {
        (self.problems, self.warnings)
    }
}
