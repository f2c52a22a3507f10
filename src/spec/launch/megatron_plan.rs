//! Megatron-LM arguments → a plan (`planner estimate --megatron-args`), with the model shape
//! and template they carry checked against `--model`. Absent arguments take Megatron-LM's own
//! defaults (`megatron/training/arguments.py`): dp = WORLD_SIZE/(tp·pp·cp), global batch =
//! micro-batch · dp, fp32 without `--bf16`/`--fp16`, no recomputation, dropout 0.1, GeLU,
//! LayerNorm, learned positions, tied embeddings, biases. Both the 2021 spellings (SC'21
//! scripts) and the Megatron-Core ones are read.

mod numerics;

use super::megatron_args::{ArgMap, launcher_world, read};
use super::megatron_flags::SPELLINGS_2021;
use super::megatron_shape::{MOE_ARGS, SHAPE_ARGS, check_experts, check_shape, check_template};
use super::{Collect, MegatronVersion};
use crate::spec::SpecError;
use crate::spec::model::ModelSpec;
use crate::spec::plan::{
    Framework, Plan, Recompute, RecomputeModules, Schedule, SplitAccounts, TpOverlap, chunk_counts,
};
use numerics::{attention, dtype, fp8_recipe, grad_reduce, loss_fusion};

/// A plan read from Megatron-LM arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// The plan.
    pub plan: Plan,
    /// Which spellings the arguments use.
    pub version: MegatronVersion,
    /// Arguments ignored or priced approximately, and defaults that matter.
    pub warnings: Vec<String>,
}

/// Reads Megatron-LM arguments for `model` launched on `n_gpus` ranks. Every argument that
/// cannot be priced, every mismatch with the model, and every bad value is reported at once.
pub fn from_megatron(text: &str, model: &ModelSpec, n_gpus: u64) -> Result<Parsed, SpecError> {
    let mut c = Collect::new("--megatron-args");
    // An open quote leaves no arguments to read: it alone is the problem (the checks below
    // had added "missing" for arguments the line gives; QA).
    let Some(a) = read(text, &mut c) else {
        return Err(SpecError::Invalid(c.into_parts().0));
    };
    let version = if SPELLINGS_2021.iter().any(|s| a.has(s)) {
        MegatronVersion::V2021
    } else {
        MegatronVersion::Core
    };
    check_shape(&a, model, &mut c);
    if SHAPE_ARGS.iter().any(|n| a.has(n)) {
        check_template(&a, model, &mut c);
    } else if MOE_ARGS.iter().any(|n| a.has(n)) {
        // Expert arguments without the shape still describe the model: they must match it.
        check_experts(&a, model, &mut c);
    }
    if a.has("--num-experts") {
        expert_defaults(&a, &mut c);
    }
    let plan = plan(&a, model, n_gpus, version, &mut c);
    let (problems, warnings) = c.into_parts();
    match plan {
        Some(plan) if problems.is_empty() => Ok(Parsed {
            plan,
            version,
            warnings,
        }),
        _ => Err(SpecError::Invalid(problems)),
    }
}

/// A positive whole number, `None` when absent (or bad, which is recorded).
pub(super) fn num(a: &ArgMap, c: &mut Collect, name: &str) -> Option<u64> {
    let v = a.get(name)?;
    match v.parse::<u64>() {
        Ok(n) if (1..=1 << 24).contains(&n) => Some(n),
        _ => {
            c.refuse(
                name,
                format!("expected a whole number from 1 to 16M, found `{v}`"),
                "give a whole number from 1 to 16M",
            );
            None
        }
    }
}

fn plan(
    a: &ArgMap,
    model: &ModelSpec,
    n_gpus: u64,
    v: MegatronVersion,
    c: &mut Collect,
) -> Option<Plan> {
    let (tp, pp, cp, ep, etp) = sizes(a, c);
    let dtype = dtype(a, c);
    // Megatron takes the flag on a dense model too (arguments.py only defaults it); it
    // changes nothing there.
    let etp = etp.filter(|e| {
        let dense = model.moe.is_none();
        if dense {
            c.warn(format!(
                "--expert-tensor-parallel-size {e}: the model has no experts; ignored"
            ));
        }
        !dense
    });
    if etp.is_some() && a.get("--moe-token-dispatcher-type") == Some("alltoall_seq") {
        c.refuse(
            "--moe-token-dispatcher-type",
            "alltoall_seq with --expert-tensor-parallel-size unlike tp: Megatron-Core refuses \
             it (\"alltoall_seq dispatcher not support different TP size for MoE and Dense \
             layer\", TransformerConfig)",
            "use --moe-token-dispatcher-type alltoall",
        );
    }
    consistent(a, c);
    let split_accounts = SplitAccounts {
        embedding: a.has("--account-for-embedding-in-pipeline-split"),
        loss: a.has("--account-for-loss-in-pipeline-split"),
    };
    let vpp = vpp(a, c, split_accounts.slots(model.layers), pp);
    let dp = data_parallel(a, c, n_gpus, tp.saturating_mul(pp).saturating_mul(cp));
    let mbs = num(a, c, "--micro-batch-size");
    if !a.has("--micro-batch-size") {
        c.refuse(
            "--micro-batch-size",
            "missing: Megatron-LM needs it",
            "add --micro-batch-size N",
        );
    }
    let seq_len = num(a, c, "--seq-length").unwrap_or_else(|| {
        c.warn(format!(
            "no --seq-length: priced at the model's seq_len {}",
            model.seq_len
        ));
        model.seq_len
    });
    let mbs = mbs?;
    let stage_layers = stages(a, c, model.layers, pp, vpp);
    let ends_given =
        a.has("--decoder-first-pipeline-num-layers") || a.has("--decoder-last-pipeline-num-layers");
    if split_accounts.any() && ends_given {
        // transformer_config.py: the first/last stage counts and the accounting of the
        // embedding or loss in the split are two ways of evening the ends; it takes one.
        c.refuse(
            "--account-for-embedding-in-pipeline-split",
            "given with --decoder-first/last-pipeline-num-layers, which Megatron-Core refuses beside it",
            "keep one way of evening the pipeline's ends",
        );
    }
    // Each stage's layers by the plan's one rule (`Plan::chunk_layer_counts`).
    let counts: Vec<u64> = chunk_counts(
        model.layers,
        pp,
        vpp,
        stage_layers.as_deref(),
        split_accounts,
    )
    .iter()
    .map(|c| c.iter().sum())
    .collect();
    let (recompute, mut recompute_layers) = recompute(a, c, &counts, vpp);
    // Megatron's block method never checkpoints the multi-token prediction layers, even when
    // it covers every layer: kept as per-stage counts, which say block
    // (`cost::stages::mtp_recompute`).
    if model.mtp_layers > 0
        && recompute == Recompute::Full
        && recompute_layers.is_none()
        && vpp == 1
        && a.get("--recompute-method") == Some("block")
    {
        recompute_layers = Some(counts.clone());
    }
    let recompute_modules = modules(a, c, recompute);
    // Megatron's own default, mbs·dp, is one micro-batch per step: a price of mostly pipeline
    // bubble where pp > 1, and rarely what a launch that sets the batch elsewhere runs.
    let global_batch = num(a, c, "--global-batch-size").unwrap_or_else(|| {
        let g = mbs.saturating_mul(dp);
        if !a.has("--global-batch-size") {
            c.warn(format!(
                "no --global-batch-size: priced at Megatron-LM's default, --micro-batch-size · dp \
                 = {mbs} · {dp} = {g} sequences, one micro-batch per step{}; add \
                 --global-batch-size if the launch sets it elsewhere",
                if pp > 1 {
                    ", so the pipeline is mostly bubble"
                } else {
                    ""
                }
            ));
        }
        g
    });
    Some(Plan {
        etp,
        dp,
        tp,
        pp,
        cp,
        ep,
        vpp,
        mbs,
        global_batch,
        seq_len,
        recompute,
        recompute_modules,
        zero: if a.has("--use-torch-fsdp2") {
            3
        } else {
            u8::from(a.has("--use-distributed-optimizer"))
        },
        sequence_parallel: a.has("--sequence-parallel"),
        overlap_grad_reduce: overlap(a, c),
        dtype,
        schedule: if vpp > 1 {
            Schedule::Interleaved
        } else {
            Schedule::OneFOneB
        },
        attention: attention(a, c, v, dtype),
        // Megatron-Core overlaps the input-gradient all-reduce with the weight-gradient GEMM by
        // default; --tp-comm-overlap (Transformer Engine userbuffers) hides the rest; 2021
        // Megatron-LM had neither.
        tp_overlap: if a.has("--tp-comm-overlap") {
            TpOverlap::Full
        } else if v == MegatronVersion::V2021 {
            TpOverlap::None
        } else {
            TpOverlap::Backward
        },
        framework: Framework::Megatron,
        stage_layers,
        recompute_layers,
        // Megatron-LM 2021 accumulated in a backward hook; later versions fuse it by default.
        // `--use-torch-fsdp2` requires `--no-gradient-accumulation-fusion` (arguments.py
        // asserts it), so there the flag says nothing of the plan: FSDP accumulates sharded
        // gradients, priced alike either way, and the plan keeps the default, as priced before
        // export (a QA round trip had read it back as off).
        grad_accumulation_fusion: v != MegatronVersion::V2021
            && (a.has("--use-torch-fsdp2") || !a.has("--no-gradient-accumulation-fusion")),
        // Megatron reduces in fp32 with bf16 (its default, `Plan::grad_reduce_bytes`) unless told to
        // reduce in bf16; fp16 gradients in fp16 unless told to accumulate them in fp32.
        grad_reduce_dtype: grad_reduce(a),
        // Checked against the dtype and the distributed optimizer by `Plan::check`.
        fp8_param_gather: a.has("--fp8-param-gather"),
        fp8_recipe: fp8_recipe(a, c, dtype),
        loss_fusion: loss_fusion(a, c),
        // Legacy Megatron-LM scatters pipeline sends over the TP ranks unless told not to;
        // set where it changes them (tp and pp > 1; the 2021 code has no SP).
        p2p_scatter_gather: v == MegatronVersion::V2021
            && tp > 1
            && pp > 1
            && !a.has("--no-scatter-gather-tensors-in-pipeline"),
        split_accounts,
        vocab_divisor: num(a, c, "--make-vocab-size-divisible-by")
            .unwrap_or(crate::spec::framework::MAKE_VOCAB_SIZE_DIVISIBLE_BY),
    })
}

/// Argument combinations Megatron-LM's `validate_args` refuses (megatron/training/
/// arguments.py), refused here rather than priced as if they ran; and the one it runs
/// differently from the price, warned.
fn consistent(a: &ArgMap, c: &mut Collect) {
    if a.has("--tp-comm-overlap") && !a.has("--sequence-parallel") {
        c.refuse(
            "--tp-comm-overlap",
            "without --sequence-parallel: \"Tensor parallel communication/GEMM overlap can happen only when sequence parallelism is enabled\"",
            "add --sequence-parallel, or drop --tp-comm-overlap",
        );
    }
    let distributed = a.has("--use-distributed-optimizer");
    if a.has("--overlap-param-gather") && !(distributed && a.has("--overlap-grad-reduce")) {
        c.refuse(
            "--overlap-param-gather",
            "needs --use-distributed-optimizer and --overlap-grad-reduce (Megatron-LM asserts both)",
            "add them, or drop --overlap-param-gather",
        );
    }
    if distributed && a.has("--overlap-grad-reduce") && !a.has("--overlap-param-gather") {
        c.warn(
            "--use-distributed-optimizer with --overlap-grad-reduce but no --overlap-param-gather: \
             Megatron-LM gathers the updated weights after the optimizer step, exposed, while the \
             plan is priced with that all-gather hidden; add --overlap-param-gather to match",
        );
    }
    // `Plan::fp8_param_gather_refusal`, in the arguments' own words (its planner flags
    // cannot be given beside --megatron-args).
    if a.has("--fp8-param-gather") {
        if !a.has("--fp8-format") {
            c.refuse(
                "--fp8-param-gather",
                "without --fp8-format: FP8 weights need FP8 training",
                "add --fp8-format hybrid, or drop --fp8-param-gather",
            );
        }
        if !distributed {
            c.refuse(
                "--fp8-param-gather",
                "without --use-distributed-optimizer: planner prices FP8 weights gathered by the \
                 distributed optimizer only (not under --use-torch-fsdp2)",
                "add --use-distributed-optimizer, or drop --fp8-param-gather",
            );
        }
    }
    let vpp_args = [
        "--num-layers-per-virtual-pipeline-stage",
        "--num-virtual-stages-per-pipeline-rank",
    ];
    if vpp_args.iter().all(|n| a.has(n)) {
        c.refuse(
            vpp_args[1],
            "given with --num-layers-per-virtual-pipeline-stage: Megatron-LM accepts no more than one of them",
            "keep one",
        );
    }
}

/// tp, pp, cp and ep (1 when absent), and the expert TP size where it differs from tp.
fn sizes(a: &ArgMap, c: &mut Collect) -> (u64, u64, u64, u64, Option<u64>) {
    let tp = num(a, c, "--tensor-model-parallel-size")
        .or_else(|| num(a, c, "--model-parallel-size"))
        .unwrap_or(1);
    let pp = num(a, c, "--pipeline-model-parallel-size").unwrap_or(1);
    let cp = num(a, c, "--context-parallel-size").unwrap_or(1);
    let ep = num(a, c, "--expert-model-parallel-size").unwrap_or(1);
    let etp = num(a, c, "--expert-tensor-parallel-size").filter(|e| *e != tp);
    if let Some(etp) = etp.filter(|e| *e != 1) {
        c.refuse(
            "--expert-tensor-parallel-size",
            format!("{etp} with tp={tp}: planner splits experts over all the TP ranks or none"),
            "use 1, or remove it (Megatron then uses tp)",
        );
    }
    (tp, pp, cp, ep, etp)
}

/// dp = WORLD_SIZE / (tp·pp·cp), WORLD_SIZE being the GPUs priced; a torchrun prefix that
/// starts another number of ranks is an error.
fn data_parallel(a: &ArgMap, c: &mut Collect, n_gpus: u64, model_parallel: u64) -> u64 {
    if n_gpus % model_parallel != 0 {
        // Name the sizes that make up the product (it had always blamed the TP size, also
        // for `--context-parallel-size 3` alone).
        let given: Vec<&str> = [
            "--tensor-model-parallel-size",
            "--pipeline-model-parallel-size",
            "--context-parallel-size",
        ]
        .into_iter()
        .filter(|n| a.get(n).is_some_and(|v| v != "1"))
        .collect();
        let field = if given.is_empty() {
            "--tensor-model-parallel-size".to_string()
        } else {
            given.join(" × ")
        };
        c.refuse(
            &field,
            match model_parallel {
                u64::MAX => "tp·pp·cp overflows: no cluster is that large".to_string(),
                m => {
                    format!("tp·pp·cp = {m} does not divide the {n_gpus} GPUs the arguments run on")
                }
            },
            "change the sizes, or --gpus",
        );
    }
    let dp = (n_gpus / model_parallel).max(1);
    match launcher_world(&a.launcher) {
        Some(w) if w != n_gpus => c.refuse(
            "--megatron-args",
            format!("the launcher starts {w} ranks, but {n_gpus} GPUs are priced"),
            format!("pass --gpus {w}"),
        ),
        Some(_) => {}
        None => c.warn(format!(
            "dp = {n_gpus} GPUs / (tp·pp·cp) = {dp}, as Megatron-LM derives it from WORLD_SIZE: the GPUs priced (--gpus, else the whole cluster) are the ranks launched"
        )),
    }
    dp
}

/// Virtual stages per pipeline rank, from layers per virtual stage or stated directly.
fn vpp(a: &ArgMap, c: &mut Collect, layers: u64, pp: u64) -> u64 {
    if let Some(k) = num(a, c, "--num-layers-per-virtual-pipeline-stage") {
        if layers % pp.saturating_mul(k) != 0 {
            c.refuse("--num-layers-per-virtual-pipeline-stage", format!("{k} layers per virtual stage × pp={pp} does not divide the {layers} layers of the pipeline split"), "pick a divisor of layers/pp");
            return 1;
        }
        return layers / pp.saturating_mul(k);
    }
    num(a, c, "--num-virtual-stages-per-pipeline-rank").unwrap_or(1)
}

/// Layers per stage from `--decoder-first-pipeline-num-layers` and
/// `--decoder-last-pipeline-num-layers`: Megatron-Core gives the first and the last stage the
/// counts stated and splits the remaining layers evenly over the other stages, which must
/// divide them (`megatron/core/transformer/transformer_config.py` `__post_init__`, "Uneven PP";
/// `transformer_block.py` `get_num_layers_to_build`). `None` when neither is given or the split
/// comes out even (the default split).
fn stages(a: &ArgMap, c: &mut Collect, layers: u64, pp: u64, vpp: u64) -> Option<Vec<u64>> {
    const FIRST: &str = "--decoder-first-pipeline-num-layers";
    const LAST: &str = "--decoder-last-pipeline-num-layers";
    let (first, last) = (num(a, c, FIRST), num(a, c, LAST));
    let named = if first.is_some() { FIRST } else { LAST };
    if first.is_none() && last.is_none() {
        return None;
    }
    let refuse = |c: &mut Collect, why: String, fix: &str| {
        c.refuse(named, why, fix);
        None
    };
    if pp < 2 {
        return refuse(
            c,
            format!("with pp={pp}: one stage holds every layer"),
            "remove it, or add --pipeline-model-parallel-size",
        );
    }
    if pp > layers {
        return refuse(
            c,
            format!("with pp={pp} stages for {layers} layers: some stage holds none"),
            "use at most one stage per layer",
        );
    }
    if vpp > 1 && a.has("--num-layers-per-virtual-pipeline-stage") {
        // arguments.py: "please use --num-virtual-stages-per-pipeline-rank to specify virtual
        // pipeline parallel degree when enable uneven pipeline parallelism".
        return refuse(
            c,
            "with --num-layers-per-virtual-pipeline-stage, which Megatron-LM refuses beside uneven stages".to_string(),
            "give the virtual stages as --num-virtual-stages-per-pipeline-rank",
        );
    }
    let given = first.unwrap_or(0).saturating_add(last.unwrap_or(0));
    let middle = pp - u64::from(first.is_some()) - u64::from(last.is_some());
    let rest = layers.checked_sub(given).filter(|&r| match middle {
        0 => r == 0,
        m => r >= m && r % m == 0,
    });
    let Some(rest) = rest else {
        let held = match middle {
            0 => "the two stages must hold them all".to_string(),
            1 => "the other stage must hold the rest, one layer or more".to_string(),
            m => format!("the other {m} stages must share the rest evenly, one layer or more each"),
        };
        return refuse(
            c,
            format!("{given} layers on the first/last stage of a {layers}-layer model: {held}"),
            "give counts whose remainder the middle stages divide",
        );
    };
    let m = rest.checked_div(middle).unwrap_or(0);
    let mut v = vec![m; pp as usize];
    v[0] = first.unwrap_or(m);
    v[pp as usize - 1] = last.unwrap_or(m);
    // Each stage splits its layers evenly over its virtual stages (`transformer_config.py`
    // `__post_init__` asserts the first, last and middle counts divisible by the degree).
    if let Some(odd) = v.iter().find(|&&n| n % vpp.max(1) != 0) {
        return refuse(
            c,
            format!(
                "{odd} layers on a stage with {vpp} virtual stages: Megatron-Core needs every stage's layers divisible by them"
            ),
            "give counts that the virtual stages divide",
        );
    }
    v.iter().any(|&n| n != v[0]).then_some(v)
}

/// Recomputation from either spelling, and the layers recomputed per stage when some keep
/// their activations (`None`: all). `counts` holds the layers of each stage.
fn recompute(
    a: &ArgMap,
    c: &mut Collect,
    counts: &[u64],
    vpp: u64,
) -> (Recompute, Option<Vec<u64>>) {
    if a.has("--recompute-activations") {
        return (Recompute::Selective, None);
    }
    let only = |r: Recompute| (r, None);
    match a.get("--recompute-granularity") {
        Some("selective") if a.has("--recompute-method") => {
            // arguments.py: "recompute method is not yet supported for selective
            // recomputing granularity".
            c.refuse(
                "--recompute-method",
                "given with selective granularity, which Megatron-LM refuses",
                "drop --recompute-method (it applies to full granularity)",
            );
            only(Recompute::Selective)
        }
        Some("selective") => only(Recompute::Selective),
        Some("full") => {
            let n = num(a, c, "--recompute-num-layers").unwrap_or(1);
            let method = a.get("--recompute-method");
            full(c, "--recompute-method", method, n, counts, vpp)
        }
        Some(g) => {
            c.refuse(
                "--recompute-granularity",
                format!("`{g}`"),
                "use full or selective",
            );
            only(Recompute::None)
        }
        None if a.has("--activations-checkpoint-method") => {
            let n = num(a, c, "--activations-checkpoint-num-layers").unwrap_or(1);
            let method = a.get("--activations-checkpoint-method");
            full(c, "--activations-checkpoint-method", method, n, counts, vpp)
        }
        None if a.has("--checkpoint-activations") => {
            let n = num(a, c, "--checkpoint-num-layers").unwrap_or(1);
            let arg = "--checkpoint-num-layers";
            full(c, arg, Some("uniform"), n, counts, vpp)
        }
        None => {
            if a.has("--recompute-method") {
                c.warn("--recompute-method without --recompute-granularity full: Megatron-LM recomputes nothing, and neither does the priced plan");
            }
            only(Recompute::None)
        }
    }
}

/// `--recompute-modules` (argparse `nargs="*"`, read as one space-separated value): the
/// Megatron-Core modules selective recomputation re-runs, `core_attn` where absent. Given
/// without selective granularity Megatron-LM ignores it, and so does the plan (said).
fn modules(a: &ArgMap, c: &mut Collect, rc: Recompute) -> RecomputeModules {
    let Some(text) = a.get("--recompute-modules") else {
        return RecomputeModules::default();
    };
    if rc != Recompute::Selective {
        c.warn("--recompute-modules without --recompute-granularity selective: Megatron-LM re-runs no module, and neither does the priced plan");
        return RecomputeModules::default();
    }
    if text.contains(',') {
        // argparse splits words, not commas: Megatron-Core would refuse `a,b` as one name.
        c.refuse(
            "--recompute-modules",
            format!("`{text}`: Megatron-LM reads each word as one module name"),
            "separate the modules with spaces (--recompute-modules mla_up_proj moe_act)",
        );
        return RecomputeModules::default();
    }
    RecomputeModules::parse(text).unwrap_or_else(|e| {
        c.refuse("--recompute-modules", e, "give Megatron-Core module names");
        RecomputeModules::default()
    })
}

/// Full recomputation: `uniform` with 1 layer per unit recomputes every layer; `block` N
/// recomputes the first N layers of every model chunk and keeps the rest
/// (`megatron/core/transformer/transformer_block.py` `_checkpointed_forward`), min(N, n_i) of
/// stage i's n_i layers, read into `recompute_layers` without virtual stages. Groups of layers,
/// and part of a chunk with virtual stages, are not modelled.
fn full(
    c: &mut Collect,
    arg: &str,
    method: Option<&str>,
    n: u64,
    counts: &[u64],
    vpp: u64,
) -> (Recompute, Option<Vec<u64>>) {
    let per_chunk = counts.iter().copied().min().unwrap_or(0) / vpp.max(1);
    let (why, fix) = match method {
        Some("uniform") if n == 1 => return (Recompute::Full, None),
        Some("block") if counts.iter().all(|&k| n >= k / vpp.max(1)) => {
            // Megatron's block method checkpoints the chunk's layers below n
            // (`transformer_block.py` `_checkpointed_forward`: `if layer_idx <
            // recompute_num_layers`): all of them when n exceeds them, as priced — said,
            // since the CLI's `--recompute-num-layers` refuses more than a stage holds.
            let most = counts.iter().map(|&k| k / vpp.max(1)).max().unwrap_or(0);
            if n > most {
                c.warn(format!(
                    "--recompute-num-layers {n} with the block method exceeds the {most} layers of a model chunk: Megatron-LM recomputes every layer, and so does the priced plan"
                ));
            }
            return (Recompute::Full, None);
        }
        Some("block") if vpp == 1 => {
            let r = counts.iter().map(|&k| n.min(k)).collect();
            return (Recompute::Full, Some(r));
        }
        Some("uniform") => (
            format!("uniform over groups of {n} layers: planner prices one checkpoint per layer"),
            "use 1 layer per group".to_string(),
        ),
        Some("block") => (
            format!(
                "block over {n} of the {per_chunk} layers of each of the {vpp} chunks of a stage: planner recomputes part of a stage only without virtual stages"
            ),
            format!("use {per_chunk} layers, or no virtual stages"),
        ),
        Some(m) => (format!("`{m}`"), "use uniform or block".to_string()),
        None => (
            "missing: full recomputation needs a method".to_string(),
            "add --recompute-method uniform --recompute-num-layers 1".to_string(),
        ),
    };
    c.refuse(arg, why, fix);
    (Recompute::None, None)
}

fn overlap(a: &ArgMap, c: &mut Collect) -> bool {
    // PyTorch DDP overlaps its bucketed all-reduce with backward; Megatron's local DDP of 2021
    // reduces after backward.
    let ddp_torch = match a.get("--DDP-impl") {
        None | Some("local") => false,
        Some("torch") => true,
        Some(o) => {
            c.refuse("--DDP-impl", format!("`{o}`"), "use local or torch");
            false
        }
    };
    ddp_torch || a.has("--overlap-grad-reduce")
}

/// A launch line that builds experts without saying how they run gets Megatron-LM's defaults
/// (arguments.py): the `allgather` dispatcher, which gathers every token over the TP × EP
/// ranks, and `SequentialMLP`, one GEMM pair per local expert. planner prices the all-to-all
/// dispatcher and grouped GEMMs (what `export` writes), so each default is said.
fn expert_defaults(a: &ArgMap, c: &mut Collect) {
    if !a.has("--moe-token-dispatcher-type") {
        c.warn(
            "no --moe-token-dispatcher-type: Megatron-LM's default is allgather (every token \
             gathered over the TP × EP ranks, ep/top_k times the traffic), not modelled; priced \
             as --moe-token-dispatcher-type alltoall, which the launch should set",
        );
    }
    if !a.has("--moe-grouped-gemm") {
        c.warn(
            "no --moe-grouped-gemm: Megatron-LM runs each local expert's GEMMs one after another \
             (SequentialMLP), not modelled; priced as grouped GEMMs, which the launch should set \
             with --moe-grouped-gemm",
        );
    }
}
