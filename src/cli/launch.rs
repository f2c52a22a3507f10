//! Commands that meet users where they are (issue 9): `import-hf`, `export`, `suggest
//! --export`, `estimate --save-plan`. The conversions live in `spec::hf` and `spec::launch`;
//! this file reads and writes files and prints warnings to stderr.

use super::CliError;
use super::args::{FrameworkArg, PlanArgs, Target};
use crate::cost::Estimate;
use crate::search::Space;
use crate::spec::hf::{HfOptions, import};
use crate::spec::launch::{self, LaunchFormat, MegatronVersion};
use crate::spec::{Framework, ModelSpec, Plan, SpecError};
use crate::units::fmt_secs;
use clap::ValueEnum;

/// `--format` of `export` and `--export` of `suggest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LaunchFormatArg {
    /// Megatron-LM command-line arguments.
    Megatron,
    /// torchtitan TOML sections.
    Torchtitan,
    /// DeepSpeed config JSON.
    Deepspeed,
}

/// `--megatron-version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MegatronVersionArg {
    /// Megatron-Core spellings (2023 on).
    Core,
    /// The 2021 spellings of the SC'21 scripts (`--activations-checkpoint-method`, `--DDP-impl`).
    #[value(name = "2021")]
    V2021,
}

impl LaunchFormatArg {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LaunchFormatArg::Megatron => "megatron",
            LaunchFormatArg::Torchtitan => "torchtitan",
            LaunchFormatArg::Deepspeed => "deepspeed",
        }
    }

    /// The format with Megatron-LM's spellings chosen.
    pub fn with(self, v: MegatronVersionArg) -> LaunchFormat {
        match self {
            LaunchFormatArg::Megatron => LaunchFormat::Megatron(match v {
                MegatronVersionArg::Core => MegatronVersion::Core,
                MegatronVersionArg::V2021 => MegatronVersion::V2021,
            }),
            LaunchFormatArg::Torchtitan => LaunchFormat::Torchtitan,
            LaunchFormatArg::Deepspeed => LaunchFormat::Deepspeed,
        }
    }
}

/// `planner import-hf CONFIG`: the model YAML of a Hugging Face config, to `out` or returned.
pub fn import_hf(
    config: &str,
    name: Option<String>,
    seq_len: Option<u64>,
    out: Option<&str>,
) -> Result<String, CliError> {
    let text = std::fs::read_to_string(config).map_err(|source| SpecError::Io {
        path: config.to_string(),
        source,
    })?;
    let imported = import(config, &text, &HfOptions { name, seq_len })?;
    let mut comments = vec![format!("Imported from {config} by `planner import-hf`.")];
    for n in &imported.notes {
        eprintln!("note: {config}: {n}");
        comments.push(format!("Note: {n}"));
    }
    let yaml = imported.model.to_yaml(&comments);
    match out {
        Some(path) => {
            super::write_output("--out", std::path::Path::new(path), yaml.as_bytes())?;
            Ok(String::new())
        }
        None => Ok(yaml),
    }
}

/// `planner export`: the plan of `plan` (flags, `--plan` or `--megatron-args`) in `format`.
pub fn export(
    target: &Target,
    plan: &PlanArgs,
    format: LaunchFormatArg,
    version: MegatronVersionArg,
) -> Result<String, CliError> {
    let r = target.resolve()?;
    let runs = format.with(version).framework();
    let plan = plan.resolve_for(&r.model, &r.cluster, runs)?;
    // A plan priced for another framework is written with a warning — unless the framework
    // that runs the format cannot run it at all (Megatron refuses an MoE with tp > 1 and no
    // sequence parallelism, a ZeRO-3 plan under pipelining is torchtitan's alone): that would
    // be a configuration that fails at launch.
    if plan.framework != runs {
        let as_run = Plan {
            framework: runs,
            // Legacy Megatron's split sends are its own; the format's framework sends its way.
            p2p_scatter_gather: false,
            // So is Megatron's vocabulary padding (torchtitan builds the vocabulary as given).
            vocab_divisor: if runs.pads_vocab() {
                plan.vocab_divisor
            } else {
                crate::spec::framework::MAKE_VOCAB_SIZE_DIVISIBLE_BY
            },
            ..plan.clone()
        };
        let problems = as_run.check(&r.model, &r.cluster);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
            return Err(CliError::BadInput(format!(
                "the plan was priced for {priced}, and {runs} cannot run it:\n{}\n{}price a plan for {runs} (`--framework {runs}`, or `suggest --export {}`)",
                list.join("\n"),
                // llm-foundry has no launch format planner writes.
                if crate::spec::launch::format_of(plan.framework).is_some() {
                    format!("export it for {}, or ", plan.framework.name())
                } else {
                    String::new()
                },
                format.name(),
                priced = plan.framework.name(),
                runs = runs.name(),
            )));
        }
    }
    // A configuration that will run out of memory is still written (the user may know a
    // calibration does not), but said: it had been written silently.
    let e = crate::cost::estimate(&r.model, &r.cluster, &plan, r.profile.as_ref());
    if !e.fits {
        eprintln!(
            "warning: the plan is priced at {:.1} GiB per GPU, above the {:.1} GiB the device \
             offers: it will run out of memory (`planner estimate` with the same flags shows \
             where the memory goes; `planner suggest` finds plans that fit)",
            e.memory_gib_per_gpu, e.capacity_gib
        );
    }
    export_plan(&r.model, &plan, format, version)
}

/// `plan` for `model` in `format`; warnings go to stderr.
pub fn export_plan(
    model: &ModelSpec,
    plan: &Plan,
    format: LaunchFormatArg,
    version: MegatronVersionArg,
) -> Result<String, CliError> {
    let e = launch::export(model, plan, format.with(version))?;
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    Ok(e.text)
}

/// `suggest --export`: the search space priced as the framework that runs `format`
/// (`LaunchFormat::framework`), unless `--framework` named it already; a different one is
/// refused, since the plan would be exported as it was not priced. Megatron-LM 2021 is
/// searched over what it runs (`Space::for_megatron_2021`).
pub fn space_for_export(
    space: Space,
    format: LaunchFormatArg,
    version: MegatronVersionArg,
    framework: Option<FrameworkArg>,
) -> Result<Space, CliError> {
    let launch = format.with(version);
    let fw = launch.framework();
    let space = match framework.map(Framework::from) {
        None => space.for_framework(fw),
        Some(x) if x == fw => space,
        Some(x) => {
            return Err(CliError::BadInput(format!(
                "--framework {x} prices plans as {x} runs them, but --export {} writes a configuration {fw} runs: drop --framework (suggest then prices for {fw}), or export for the framework you priced",
                format.name(),
                x = x.name(),
                fw = fw.name(),
            )));
        }
    };
    Ok(match launch {
        LaunchFormat::Megatron(MegatronVersion::V2021) => space.for_megatron_2021(),
        _ => space,
    })
}

/// `suggest --export`: the best-ranked of `ranked` that `format` can express (said on stderr
/// when it is not the fastest), or the top plan's problems when none can.
pub fn export_best(
    model: &ModelSpec,
    ranked: &[Estimate],
    format: LaunchFormatArg,
    version: MegatronVersionArg,
) -> Result<String, CliError> {
    let mut first_err = None;
    for (i, e) in ranked.iter().enumerate() {
        match launch::export(model, &e.plan, format.with(version)) {
            Ok(out) => {
                if i > 0 {
                    eprintln!(
                        "warning: the fastest plan ({}, {}) cannot be written for {}; exporting #{} ({}, {}). Its problems: {}",
                        ranked[0].plan.short(),
                        fmt_secs(ranked[0].step_time_s),
                        format.name(),
                        i + 1,
                        e.plan.short(),
                        fmt_secs(e.step_time_s),
                        first_err
                            .map(|x: SpecError| x.to_string())
                            .unwrap_or_default()
                    );
                }
                for w in &out.warnings {
                    eprintln!("warning: {w}");
                }
                return Ok(out.text);
            }
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    let why = first_err.map(|e| e.to_string()).unwrap_or_default();
    Err(CliError::BadInput(format!(
        "none of the {} best plans can be written for {} (raise --top to look further); the fastest one's {why}",
        ranked.len(),
        format.name()
    )))
}

/// Writes `plan` as JSON to `path` (`--save-plan`).
pub fn save_plan(path: &str, plan: &Plan) -> Result<(), CliError> {
    super::write_output(
        "--save-plan",
        std::path::Path::new(path),
        plan.to_json().as_bytes(),
    )?;
    Ok(())
}
