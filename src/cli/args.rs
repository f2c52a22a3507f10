//! Command-line arguments, raw (clap) and resolved: the library only ever sees resolved
//! specs and plans (ripgrep's LowArgs → HiArgs split).

use super::CliError;
use crate::calib::{Profile, load_profile};
use crate::search::Space;
use crate::spec::launch::megatron_plan::from_megatron;
use crate::spec::{
    self, AttentionImpl, ClusterSpec, Fp8Recipe, Framework, ModelSpec, Plan, RecomputeModules,
    Schedule, SplitAccounts,
};
use clap::{Args, ValueEnum};

mod values;
pub use values::*;
use values::{counts, zero_stage};

/// Output format of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable table.
    Table,
    /// One JSON document.
    Json,
    /// Comma-separated values.
    Csv,
}

/// `--model` and `--cluster` (preset names or paths) and the cluster's calibration.
#[derive(Args, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sources {
    /// Model: a preset name (see `planner models`), a YAML path, or a Hugging Face config.json.
    #[arg(long)]
    pub model: String,
    /// Cluster: a preset name (see `planner clusters`) or a YAML path.
    #[arg(long)]
    pub cluster: String,
    /// Calibration profile (name under calibrate/ or path); overrides the cluster's.
    #[arg(long)]
    pub calibration: Option<String>,
}

/// [`Sources`] and how many of the cluster's GPUs to use.
#[derive(Args, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// Model, cluster, calibration.
    #[command(flatten)]
    #[serde(flatten)]
    pub src: Sources,
    /// Use only the first N GPUs of the cluster (part of a node, or whole nodes).
    #[arg(long, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub gpus: Option<u64>,
}

/// A model, a cluster and the profile to price them with.
pub struct Resolved {
    /// Model.
    pub model: ModelSpec,
    /// Cluster (cut to `--gpus`).
    pub cluster: ClusterSpec,
    /// Calibration profile, if any.
    pub profile: Option<Profile>,
}

impl Target {
    /// Loads and validates everything named.
    pub fn resolve(&self) -> Result<Resolved, CliError> {
        self.resolve_for(false)
    }

    /// [`resolve`](Self::resolve), where `cpu_stands_in` says the command runs on threads
    /// standing for the devices (`--backend cpu`): a cpu profile is then what it asks for,
    /// not a warning.
    pub fn resolve_for(&self, cpu_stands_in: bool) -> Result<Resolved, CliError> {
        let imported = spec::load_model_noted(&self.src.model)?;
        for n in &imported.notes {
            eprintln!("note: {}: {n}", self.src.model);
        }
        let model = imported.model;
        let mut cluster = spec::load_cluster(&self.src.cluster)?;
        if let Some(n) = self.gpus {
            cluster = cluster.with_gpus(n).ok_or_else(|| {
                CliError::BadInput(format!(
                    "--gpus {n}: the cluster `{}` has {} GPUs in nodes of {}; give at most {} GPUs, \
                     either part of one node or a multiple of {}",
                    cluster.name,
                    cluster.n_gpus(),
                    cluster.gpus_per_node,
                    cluster.n_gpus(),
                    cluster.gpus_per_node
                ))
            })?;
        }
        let name = self
            .src
            .calibration
            .clone()
            .or_else(|| cluster.calibration.clone());
        let profile = name.as_deref().map(load_profile).transpose()?;
        if let (Some(p), Some(n)) = (&profile, &name)
            && let Some(w) = crate::calib::device_mismatch(p, &cluster.gpu.name)
        {
            // A cpu profile stands in for GPUs on purpose (issue 6's calibrate → estimate
            // loop); another GPU's profile prices a device the cluster does not have.
            if p.meta.backend != "cpu" {
                return Err(CliError::BadInput(format!("calibration `{n}`: {w}")));
            }
            if !cpu_stands_in {
                eprintln!("warning: calibration `{n}`: {w}");
            }
        }
        if let (Some(p), Some(n)) = (&profile, &name)
            && let Some(w) = crate::calib::beyond_device(p, &cluster.gpu)
        {
            return Err(CliError::BadInput(format!(
                "calibration `{n}`: {w}: the profile was not measured on this device (or is mis-timed); calibrate on it, or correct the profile"
            )));
        }
        Ok(Resolved {
            model,
            cluster,
            profile,
        })
    }
}

/// The largest size any plan argument may take before it is treated as a typo.
const MAX_SIZE: u64 = 1 << 24;

use crate::spec::infeasible::MAX_MICRO_BATCHES;

/// The flags `--plan` and `--megatron-args` replace.
const PLAN_FLAGS: [&str; 32] = [
    "tp",
    "pp",
    "dp",
    "cp",
    "ep",
    "etp",
    "vpp",
    "micro_batch",
    "global_batch",
    "seq_len",
    "recompute",
    "recompute_modules",
    "sequence_parallel",
    "zero",
    "overlap_grad_reduce",
    "no_grad_accumulation_fusion",
    "dtype",
    "grad_reduce_dtype",
    "fp8_param_gather",
    "fp8_recipe",
    "loss_fusion",
    "p2p_scatter_gather",
    "account_embedding",
    "account_loss",
    "vocab_divisor",
    "schedule",
    "attention",
    "tp_overlap",
    "recompute_num_layers",
    "recompute_layers",
    "framework",
    "stage_layers",
];

/// One plan on the command line: flags, a plan file, or Megatron-LM arguments.
#[derive(Args, Clone, Debug)]
pub struct PlanArgs {
    /// Read the plan from a JSON file (as `--save-plan` writes) instead of the flags below.
    #[arg(long = "plan", value_name = "FILE", conflicts_with_all = PLAN_FLAGS)]
    pub plan_file: Option<String>,
    /// Read the plan from Megatron-LM arguments (one quoted string, 2021 or Megatron-Core
    /// spellings); dp is GPUs/(tp·pp·cp) and model-shape arguments must match --model.
    #[arg(
        long = "megatron-args",
        value_name = "ARGS",
        allow_hyphen_values = true,
        conflicts_with_all = PLAN_FLAGS,
        conflicts_with = "plan_file"
    )]
    pub megatron_args: Option<String>,
    /// Tensor-parallel size.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub tp: u64,
    /// Pipeline-parallel size.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub pp: u64,
    /// Data-parallel size (default: GPUs / (tp·pp·cp)).
    #[arg(long, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub dp: Option<u64>,
    /// Context-parallel size.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub cp: u64,
    /// Expert-parallel size.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub ep: u64,
    /// Expert tensor-parallel size, 1 or tp (default: tp, as Megatron-LM): with 1 each rank
    /// computes whole experts, its expert-parallel ranks taken from the TP ranks too.
    #[arg(long, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub etp: Option<u64>,
    /// Virtual pipeline stages per rank (interleaved 1F1B when > 1).
    #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = size::<u64>)]
    pub vpp: u64,
    /// Micro-batch size in sequences.
    #[arg(
        long = "micro-batch",
        default_value_t = 1,
        allow_negative_numbers = true,
        value_parser = size::<u64>,
    )]
    pub micro_batch: u64,
    /// Global batch in sequences (default: 4 M tokens rounded up to a multiple of dp ×
    /// micro-batch, so it changes with --micro-batch; give it to compare plans).
    #[arg(long = "global-batch", allow_negative_numbers = true, value_parser = size::<u64>)]
    pub global_batch: Option<u64>,
    /// Sequence length (default: the model's).
    #[arg(long = "seq-len", allow_negative_numbers = true, value_parser = size::<u64>)]
    pub seq_len: Option<u64>,
    /// Activation recomputation.
    #[arg(long, value_enum, default_value_t = RecomputeArg::None)]
    pub recompute: RecomputeArg,
    /// With --recompute selective under Megatron: the Megatron-Core modules it re-runs,
    /// comma-separated (core_attn, moe_act, layernorm, mla_up_proj, mlp, moe,
    /// shared_experts; default core_attn, Megatron's `--recompute-modules`).
    #[arg(long = "recompute-modules", num_args = 1.., value_delimiter = ',')]
    pub recompute_modules: Option<Vec<String>>,
    /// Megatron sequence parallelism.
    #[arg(long = "sequence-parallel")]
    pub sequence_parallel: bool,
    /// ZeRO stage (1 = distributed optimizer).
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = zero_stage,
    )]
    pub zero: u8,
    /// Overlap the DP gradient reduction with backward.
    #[arg(long = "overlap-grad-reduce")]
    pub overlap_grad_reduce: bool,
    /// Megatron: accumulate gradients in a separate pass after each micro-batch (2021
    /// Megatron-LM) instead of inside the weight-gradient GEMM.
    #[arg(long = "no-gradient-accumulation-fusion")]
    pub no_grad_accumulation_fusion: bool,
    /// GEMM data type.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    pub dtype: DtypeArg,
    /// Precision of the data-parallel gradient reduction (default: the framework's — fp32
    /// for bf16 training; Composer's FSDP `mixed_precision: PURE` reduces in bf16).
    #[arg(long = "grad-reduce-dtype", value_enum)]
    pub grad_reduce_dtype: Option<DtypeArg>,
    /// With --dtype fp8 under Megatron and --zero 1: keep the linear layers' weights in FP8
    /// and all-gather them in FP8 (Megatron-LM `--fp8-param-gather`), rather than a 16-bit
    /// weight with Transformer Engine's FP8 copy beside it.
    #[arg(long = "fp8-param-gather")]
    pub fp8_param_gather: bool,
    /// With --dtype fp8: how Transformer Engine scales FP8 tensors (Megatron-LM
    /// `--fp8-recipe`); tensorwise (current scaling) reads each tensor's amax before its cast.
    #[arg(long = "fp8-recipe", value_enum, default_value_t = Fp8RecipeArg::Delayed)]
    pub fp8_recipe: Fp8RecipeArg,
    /// Megatron: compute the loss with Transformer Engine's fused cross-entropy
    /// (`--cross-entropy-loss-fusion --cross-entropy-fusion-impl te`, as NVIDIA's
    /// Megatron-Bridge recipes do): no fp32 copy of the logits.
    #[arg(long = "cross-entropy-loss-fusion")]
    pub loss_fusion: bool,
    /// Megatron without sequence parallelism: split each pipeline send over the TP ranks and
    /// all-gather it after receipt, as Megatron-LM before Megatron-Core did
    /// (`--scatter-gather-tensors-in-pipeline`); Megatron-Core sends whole tensors.
    #[arg(long = "p2p-scatter-gather")]
    pub p2p_scatter_gather: bool,
    /// Megatron with pp > 1: the embedding takes a transformer layer's slot in the pipeline
    /// split, the first model chunk building one layer fewer (Megatron-Core
    /// `--account-for-embedding-in-pipeline-split`; (layers + slots) divisible by pp·vpp).
    #[arg(long = "account-for-embedding-in-pipeline-split")]
    pub account_embedding: bool,
    /// Megatron with pp > 1: the LM head and loss take a layer's slot, the last model chunk
    /// building one layer fewer (`--account-for-loss-in-pipeline-split`).
    #[arg(long = "account-for-loss-in-pipeline-split")]
    pub account_loss: bool,
    /// Megatron and DeepSpeed: pad the vocabulary to a multiple of N·tp, as Megatron-LM's
    /// `--make-vocab-size-divisible-by` (default 128); torchtitan and llm-foundry do not pad.
    #[arg(
        long = "make-vocab-size-divisible-by",
        allow_negative_numbers = true,
        value_parser = size::<u64>,
    )]
    pub vocab_divisor: Option<u64>,
    /// Pipeline schedule (default: interleaved when vpp > 1, else 1f1b).
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Attention kernel (default: flash, or unfused where the framework's fused attention
    /// does not take the data type: fp32 except under torchtitan).
    #[arg(long, value_enum)]
    pub attention: Option<AttentionArg>,
    /// TP communication hidden behind GEMMs: none, backward (Megatron async all-reduce),
    /// full (Transformer Engine userbuffers, --tp-comm-overlap).
    #[arg(long = "tp-overlap", value_enum, default_value_t = TpOverlapArg::Backward)]
    pub tp_overlap: TpOverlapArg,
    /// With --recompute full: layers per stage that recompute (the rest keep activations).
    #[arg(
        long = "recompute-num-layers",
        conflicts_with = "recompute_layers",
        allow_negative_numbers = true,
        value_parser = count::<u64>,
    )]
    pub recompute_num_layers: Option<u64>,
    /// With --recompute full: recomputed layers of each stage, comma-separated, runs as N×k
    /// (as a plan label's `rc_layers=` prints them).
    #[arg(long = "recompute-layers", value_parser = counts, allow_negative_numbers = true)]
    pub recompute_layers: Option<Counts>,
    /// Training framework: kernels, loss and optimizer-state layout (default: megatron; under
    /// `export`, the framework its --format runs).
    #[arg(long, value_enum)]
    pub framework: Option<FrameworkArg>,
    /// Transformer layers per pipeline stage, comma-separated, runs as N×k (as a plan label's
    /// `layers=` prints them; default: even split). With --vpp each count is a multiple of
    /// vpp, its stage's chunks sharing it evenly (Megatron-Core's uneven interleaving).
    #[arg(long = "stage-layers", value_parser = counts, allow_negative_numbers = true)]
    pub stage_layers: Option<Counts>,
}

impl PlanArgs {
    /// The plan these arguments describe for `model` on `cluster`, with every structural
    /// problem reported at once (exit 2); priced for Megatron unless `--framework` says.
    pub fn resolve(&self, model: &ModelSpec, cluster: &ClusterSpec) -> Result<Plan, CliError> {
        self.resolve_for(model, cluster, Framework::Megatron)
    }

    /// [`PlanArgs::resolve`], priced for `framework` unless `--framework` says (`export`
    /// prices for the framework its format runs).
    pub fn resolve_for(
        &self,
        model: &ModelSpec,
        cluster: &ClusterSpec,
        framework: Framework,
    ) -> Result<Plan, CliError> {
        let plan = if let Some(path) = &self.plan_file {
            spec::load_plan(path)?
        } else if let Some(text) = &self.megatron_args {
            let parsed = from_megatron(text, model, cluster.n_gpus())?;
            for w in &parsed.warnings {
                eprintln!("warning: --megatron-args: {w}");
            }
            parsed.plan
        } else {
            let fw = self.framework.map_or(framework, Into::into);
            return self.resolve_flags(model, cluster, fw);
        };
        check_plan(&plan, model, cluster)?;
        Ok(plan)
    }

    fn resolve_flags(
        &self,
        model: &ModelSpec,
        cluster: &ClusterSpec,
        fw: Framework,
    ) -> Result<Plan, CliError> {
        let n = cluster.n_gpus();
        let mut bad = Vec::new();
        for (name, v) in [
            ("--tp", Some(self.tp)),
            ("--pp", Some(self.pp)),
            ("--dp", self.dp),
            ("--cp", Some(self.cp)),
            ("--ep", Some(self.ep)),
            ("--etp", self.etp),
            ("--vpp", Some(self.vpp)),
            ("--micro-batch", Some(self.micro_batch)),
            ("--global-batch", self.global_batch),
            ("--seq-len", self.seq_len),
            ("--make-vocab-size-divisible-by", self.vocab_divisor),
        ] {
            match v {
                Some(0) => bad.push(format!("{name} 0: must be at least 1")),
                Some(x) if x > MAX_SIZE => bad.push(format!(
                    "{name} {x}: implausibly large (limit {MAX_SIZE}); check the number"
                )),
                _ => {}
            }
        }
        let modules = self
            .recompute_modules
            .as_ref()
            .map(|names| RecomputeModules::parse(&names.join(",")))
            .transpose()
            .unwrap_or_else(|e| {
                bad.push(format!("--recompute-modules: {e}"));
                None
            });
        if modules.is_some() && self.recompute != RecomputeArg::Selective {
            bad.push(
                "--recompute-modules: the modules are what selective recomputation re-runs; add --recompute selective".to_string(),
            );
        }
        if !bad.is_empty() {
            return Err(CliError::BadInput(bad.join("\n")));
        }
        let seq_len = self.seq_len.unwrap_or(model.seq_len);
        let dp = self.dp.unwrap_or_else(|| {
            (n / self.tp.saturating_mul(self.pp).saturating_mul(self.cp)).max(1)
        });
        let plan = Plan {
            dp,
            tp: self.tp,
            pp: self.pp,
            cp: self.cp,
            ep: self.ep,
            etp: self.etp,
            vpp: self.vpp,
            mbs: self.micro_batch,
            global_batch: self.global_batch.unwrap_or_else(|| {
                crate::search::default_global_batch(seq_len, dp * self.micro_batch)
            }),
            seq_len,
            recompute: self.recompute.into(),
            recompute_modules: modules.unwrap_or_default(),
            zero: self.zero,
            sequence_parallel: self.sequence_parallel,
            overlap_grad_reduce: self.overlap_grad_reduce,
            dtype: self.dtype.into(),
            schedule: match self.schedule {
                Some(ScheduleArg::Gpipe) => Schedule::Gpipe,
                Some(ScheduleArg::OneFOneB) => Schedule::OneFOneB,
                Some(ScheduleArg::Interleaved) => Schedule::Interleaved,
                None if self.vpp > 1 => Schedule::Interleaved,
                None => Schedule::OneFOneB,
            },
            attention: self.attention.map_or_else(
                || {
                    if fw.attention_runs(AttentionImpl::Flash, self.dtype.into(), model.head_dim())
                    {
                        AttentionImpl::Flash
                    } else {
                        AttentionImpl::Unfused
                    }
                },
                Into::into,
            ),
            tp_overlap: self.tp_overlap.into(),
            framework: fw,
            stage_layers: self.stage_layers.clone().map(|c| c.0),
            recompute_layers: match (&self.recompute_layers, self.recompute_num_layers) {
                (Some(c), _) => Some(c.0.clone()),
                (None, n) => n.map(|n| vec![n; self.pp as usize]),
            },
            grad_accumulation_fusion: !self.no_grad_accumulation_fusion,
            grad_reduce_dtype: self.grad_reduce_dtype.map(Into::into),
            fp8_param_gather: self.fp8_param_gather,
            fp8_recipe: self.fp8_recipe.into(),
            loss_fusion: self.loss_fusion,
            p2p_scatter_gather: self.p2p_scatter_gather,
            split_accounts: SplitAccounts {
                embedding: self.account_embedding,
                loss: self.account_loss,
            },
            vocab_divisor: self
                .vocab_divisor
                .unwrap_or(crate::spec::framework::MAKE_VOCAB_SIZE_DIVISIBLE_BY),
        };
        if self.global_batch.is_none() && plan.n_micro() > MAX_MICRO_BATCHES {
            // The batch was derived, not given: say from what, rather than blame the flag.
            return Err(CliError::BadInput(format!(
                "--seq-len {seq_len}: the default global batch, 4,194,304 tokens per step, is {} \
                 sequences, {} micro-batches per step on dp {} (limit {MAX_MICRO_BATCHES}); give \
                 --global-batch (sequences per step) or a longer --seq-len",
                plan.global_batch,
                plan.n_micro(),
                plan.dp
            )));
        }
        check_plan(&plan, model, cluster)?;
        Ok(plan)
    }
}

/// Every structural problem of `plan`, as one bad-input error naming the fields.
pub fn check_plan(plan: &Plan, model: &ModelSpec, cluster: &ClusterSpec) -> Result<(), CliError> {
    // Sizes that multiply past any cluster are typos; refuse them before anything multiplies.
    let products = [
        ("dp·tp·pp·cp", [plan.dp, plan.tp, plan.pp, plan.cp]),
        ("dp·mbs·pp·vpp", [plan.dp, plan.mbs, plan.pp, plan.vpp]),
    ];
    for (what, sizes) in products {
        let product = sizes.iter().try_fold(1u64, |acc, x| acc.checked_mul(*x));
        if product.is_none_or(|p| p > MAX_SIZE) {
            return Err(CliError::BadInput(format!(
                "plan: {what} = {} is implausibly large (limit {MAX_SIZE}); check the sizes",
                sizes.map(|x| x.to_string()).join("·")
            )));
        }
    }
    if plan.n_micro() > MAX_MICRO_BATCHES {
        return Err(CliError::BadInput(format!(
            "plan: --global-batch {} / (dp {} · micro-batch {}) = {} micro-batches per step: \
             implausibly many (limit {MAX_MICRO_BATCHES}); raise --micro-batch or lower \
             --global-batch",
            plan.global_batch,
            plan.dp,
            plan.mbs,
            plan.n_micro()
        )));
    }
    let why = plan.check(model, cluster);
    if why.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = why
        .iter()
        .map(|w| format!("plan: `{}`: {w}", w.field()))
        .collect();
    Err(CliError::BadInput(format!(
        "the plan cannot run {} on {} ({}):\n  - {}",
        model.name,
        cluster.name,
        crate::units::fmt_gpus(cluster.n_gpus()),
        lines.join("\n  - ")
    )))
}

/// What a search covers: batch, sequence length, data type and the memory a plan leaves free.
#[derive(Args, Clone, Debug)]
pub struct SearchArgs {
    /// Global batch in sequences (default: 4 M tokens rounded up to a multiple of the GPU
    /// count; for `report`, one batch for every count, a multiple of all of them where that
    /// at most doubles it, else of the largest).
    #[arg(long = "global-batch", allow_negative_numbers = true, value_parser = size::<u64>)]
    pub global_batch: Option<u64>,
    /// Sequence length (default: the model's).
    #[arg(long = "seq-len", allow_negative_numbers = true, value_parser = size::<u64>)]
    pub seq_len: Option<u64>,
    /// GEMM data type.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    pub dtype: DtypeArg,
    /// Percent of device memory every suggested plan leaves free, for the estimate's error and
    /// the allocator (0 plans to the last byte).
    #[arg(long = "memory-headroom", value_name = "PERCENT", allow_negative_numbers = true,
          default_value_t = 100.0 * crate::search::MEMORY_HEADROOM)]
    pub memory_headroom: f64,
    /// Framework the plans are priced for (kernels, checkpointing policy, optimizer-state
    /// layout, the ZeRO stages it runs); default: the one `--export` writes for, else megatron.
    #[arg(long, value_enum)]
    pub framework: Option<FrameworkArg>,
    /// FP8 plans under Megatron's distributed optimizer: price a 16-bit weight with
    /// Transformer Engine's FP8 copy beside it, rather than FP8 weights gathered in FP8
    /// (`--fp8-param-gather`, the default the search prices).
    #[arg(long = "no-fp8-param-gather")]
    pub no_fp8_param_gather: bool,
    /// With --dtype fp8: how Transformer Engine scales FP8 tensors (Megatron-LM
    /// `--fp8-recipe`); tensorwise (current scaling) reads each tensor's amax before its cast.
    #[arg(long = "fp8-recipe", value_enum, default_value_t = Fp8RecipeArg::Delayed)]
    pub fp8_recipe: Fp8RecipeArg,
    /// Megatron: price the loss as Transformer Engine's fused cross-entropy
    /// (`--cross-entropy-loss-fusion --cross-entropy-fusion-impl te`).
    #[arg(long = "cross-entropy-loss-fusion")]
    pub loss_fusion: bool,
}

impl SearchArgs {
    /// The search space; the default global batch is a multiple of `batch_gpus`.
    pub fn space(
        &self,
        model: &ModelSpec,
        device: &spec::DeviceSpec,
        batch_gpus: u64,
    ) -> Result<Space, CliError> {
        let seq = self.seq_len.unwrap_or(model.seq_len);
        let gb = self
            .global_batch
            .unwrap_or_else(|| crate::search::default_global_batch(seq, batch_gpus));
        let mut bad = Vec::new();
        for (name, v) in [("--global-batch", gb), ("--seq-len", seq)] {
            if v == 0 {
                bad.push(format!("{name} 0: must be at least 1"));
            } else if v > MAX_SIZE {
                bad.push(format!(
                    "{name} {v}: implausibly large (limit {MAX_SIZE}); check the number"
                ));
            }
        }
        if let Some(positions) = model.max_seq_len().filter(|&n| seq > n) {
            bad.push(
                spec::Infeasible::SeqBeyondPositions {
                    seq_len: seq,
                    positions,
                }
                .to_string(),
            );
        }
        if !(0.0..50.0).contains(&self.memory_headroom) {
            bad.push(format!(
                "--memory-headroom {}: give a percent from 0 to below 50 (default {})",
                self.memory_headroom,
                100.0 * crate::search::MEMORY_HEADROOM
            ));
        }
        let dtype: crate::units::Dtype = self.dtype.into();
        if dtype == crate::units::Dtype::Fp8 && device.peak_tflops.fp8.is_none() {
            bad.push(format!(
                "--dtype fp8: {} has no FP8 tensor cores (no fp8 peak in its description); use --dtype bf16, or a device with FP8 (H100, H200)",
                device.name
            ));
        }
        let fp8_recipe: Fp8Recipe = self.fp8_recipe.into();
        if fp8_recipe != Fp8Recipe::Delayed && dtype != crate::units::Dtype::Fp8 {
            bad.push(format!(
                "--fp8-recipe {}: a scaling recipe for FP8 tensors, but --dtype is {}; add --dtype fp8, or drop --fp8-recipe",
                fp8_recipe.name(),
                dtype.name()
            ));
        }
        if !bad.is_empty() {
            return Err(CliError::BadInput(bad.join("\n")));
        }
        let mut space = Space::new(gb, seq)
            .with_head_dim(model.head_dim())
            .with_recipe_modules(model);
        if let Some(f) = self.framework {
            space = space.for_framework(f.into());
        }
        space = space.with_dtype(dtype);
        space.memory_headroom = self.memory_headroom / 100.0;
        space.fp8_param_gather = !self.no_fp8_param_gather;
        space.fp8_recipe = fp8_recipe;
        if self.loss_fusion && space.framework != Framework::Megatron {
            return Err(CliError::BadInput(
                spec::Infeasible::LossFusion {
                    framework: space.framework.name(),
                }
                .to_string(),
            ));
        }
        space.loss_fusion = self.loss_fusion;
        Ok(space)
    }
}
