//! A plan as Megatron-LM command-line arguments (`megatron/training/arguments.py`), in the
//! Megatron-Core spelling or the 2021 one of the SC'21 scripts (`examples/sc21/CONFIG.sh`).
//!
//! Megatron takes no data-parallel size: it derives dp = WORLD_SIZE / (tp·pp·cp), so the
//! header says how many ranks to launch. The vocabulary comes from the tokenizer (padded to a
//! multiple of 128·tp), so it is a comment, not an argument.

use super::megatron_template::{sliding_window, template};
use super::{Collect, Export, MegatronVersion, partial_recompute, stage_counts, uneven_stages};
use crate::spec::model::{Arch, ModelSpec, Positions};
use crate::spec::plan::{
    AttentionImpl, Fp8Recipe, Plan, Recompute, Schedule, TpOverlap, fold_counts,
};
use crate::units::{Dtype, fmt_count};

pub(super) type Args = Vec<(&'static str, Option<String>)>;

/// Megatron-LM's MLP width when `--ffn-hidden-size` is not given: 4h, or for SwiGLU
/// int(4h·2/3 / 64)·64 (`arguments.py`, `validate_args`).
pub fn default_ffn(hidden: u64, swiglu: bool) -> u64 {
    if swiglu {
        (4 * hidden * 2 / 3) / 64 * 64
    } else {
        4 * hidden
    }
}

/// `--moe-layer-freq` for MoE every `every` layers. Megatron puts an expert layer where
/// i % freq == 0 (layer 0 first); planner's MoE layers are i + 1 ≡ 0 (mod every), so for
/// every > 1 the exact pattern is written as a list expression, one entry per layer
/// (Megatron asserts the pattern's length is `--num-layers`): dense layers after the last
/// expert layer when `every` does not divide the layers.
pub fn moe_layer_freq(every: u64, layers: u64) -> String {
    let rest = if every > 1 { layers % every } else { 0 };
    let pattern = if every == 1 {
        "1".into()
    } else {
        format!("([0]*{}+[1])*{}", every - 1, layers / every)
    };
    if rest == 0 {
        pattern
    } else {
        format!("{pattern}+[0]*{rest}")
    }
}

/// `--moe-layer-freq` for `model`'s expert layers: [`moe_layer_freq`] where no dense layers
/// come first, else the per-layer list run-length encoded (DeepSeek-V3's `([0]*3+[1]*58)`,
/// the form its Megatron-LM recipes write).
pub fn moe_layer_pattern(model: &ModelSpec) -> String {
    let Some(m) = &model.moe else {
        return "1".into();
    };
    if m.first_dense == 0 {
        return moe_layer_freq(m.every, model.layers);
    }
    let mut runs: Vec<(bool, u64)> = Vec::new();
    for i in 0..model.layers {
        let e = model.is_moe_layer(i);
        match runs.last_mut() {
            Some((k, n)) if *k == e => *n += 1,
            _ => runs.push((e, 1)),
        }
    }
    let parts: Vec<String> = runs
        .iter()
        .map(|&(e, n)| format!("[{}]*{n}", u8::from(e)))
        .collect();
    format!("({})", parts.join("+"))
}

/// Writes `plan` for `model` as Megatron-LM arguments of `version`.
pub fn to_megatron(
    model: &ModelSpec,
    plan: &Plan,
    version: MegatronVersion,
) -> Result<Export, crate::spec::SpecError> {
    let mut c = Collect::new(format!(
        "export --format megatron --megatron-version {}",
        version.name()
    ));
    let mut a: Args = Vec::new();
    parallel(&mut c, &mut a, model, plan, version);
    memory(&mut c, &mut a, model, plan, version);
    shape(&mut c, &mut a, model, plan, version);
    numerics(&mut c, &mut a, plan, version);
    let text = render(model, plan, version, &a);
    c.finish(text)
}

pub(super) fn arg(a: &mut Args, name: &'static str, value: impl ToString) {
    a.push((name, Some(value.to_string())));
}

pub(super) fn flag(a: &mut Args, name: &'static str) {
    a.push((name, None));
}

/// TP, PP, virtual stages, SP, CP, EP, batch sizes.
fn parallel(c: &mut Collect, a: &mut Args, model: &ModelSpec, plan: &Plan, v: MegatronVersion) {
    let core = v == MegatronVersion::Core;
    arg(a, "--tensor-model-parallel-size", plan.tp);
    arg(a, "--pipeline-model-parallel-size", plan.pp);
    stages(c, a, plan, v);
    let acc = plan.split_accounts;
    if acc.any() {
        if core {
            if acc.embedding {
                flag(a, "--account-for-embedding-in-pipeline-split");
            }
            if acc.loss {
                flag(a, "--account-for-loss-in-pipeline-split");
            }
        } else {
            c.refuse(
                if acc.embedding {
                    "account_for_embedding_in_pipeline_split"
                } else {
                    "account_for_loss_in_pipeline_split"
                },
                "counting the embedding or loss in the pipeline split is not in Megatron-LM 2021 (Megatron-Core only)",
                "use --megatron-version core",
            );
        }
    }
    if plan.vpp > 1 {
        // Uneven stages take the degree itself: Megatron-LM refuses layers per virtual stage
        // beside --decoder-first/last-pipeline-num-layers, and counts them over the layers
        // alone, not the embedding's and loss's slots.
        if uneven_stages(plan).is_some() || acc.any() {
            arg(a, "--num-virtual-stages-per-pipeline-rank", plan.vpp);
        } else {
            let per_chunk = model.layers / (plan.pp * plan.vpp);
            arg(a, "--num-layers-per-virtual-pipeline-stage", per_chunk);
        }
    }
    if plan.pp > 1 && plan.schedule == Schedule::Gpipe {
        c.refuse(
            "schedule",
            "gpipe: Megatron-LM runs 1F1B or interleaved 1F1B only",
            "price the plan with --schedule 1f1b",
        );
    }
    let new = |c: &mut Collect, field: &str, what: &str| {
        c.refuse(
            field,
            format!("{what} is not in Megatron-LM 2021"),
            "use --megatron-version core",
        )
    };
    if plan.sp() {
        if core {
            flag(a, "--sequence-parallel");
        } else {
            new(c, "sequence_parallel", "sequence parallelism (2022)");
        }
    }
    if plan.cp > 1 {
        if core {
            arg(a, "--context-parallel-size", plan.cp);
        } else {
            new(c, "cp", "context parallelism (2023)");
        }
    }
    if plan.ep > 1 {
        if core {
            arg(a, "--expert-model-parallel-size", plan.ep);
        } else {
            new(c, "ep", "expert parallelism (2023)");
        }
    }
    if plan.etp() != plan.tp {
        if core {
            arg(a, "--expert-tensor-parallel-size", plan.etp());
        } else {
            new(c, "etp", "expert tensor parallelism (2024)");
        }
    }
    // Pipeline sends split over the TP ranks (where SP has not split them already): legacy
    // Megatron-LM's default, which Megatron-Core dropped (`cost::p2p_bytes`).
    if plan.p2p_split_matters() {
        match (plan.p2p_scatter_gather, core) {
            (false, false) => flag(a, "--no-scatter-gather-tensors-in-pipeline"),
            (true, true) => c.refuse(
                "p2p_scatter_gather",
                "Megatron-Core sends whole pipeline tensors; splitting them over the TP ranks is Megatron-LM 2021's",
                "price without --p2p-scatter-gather, or use --megatron-version 2021",
            ),
            _ => {}
        }
    }
    tp_overlap(c, a, plan, v);
    arg(a, "--micro-batch-size", plan.mbs);
    arg(a, "--global-batch-size", plan.global_batch);
}

/// How much TP communication the launch hides, as priced (`plan.tp_overlap`): Megatron-Core
/// overlaps the input-gradient collective with the weight-gradient GEMM by default and hides
/// the rest with `--tp-comm-overlap` (Transformer Engine userbuffers, which needs sequence
/// parallelism: `megatron/training/arguments.py`); Megatron-LM 2021 overlaps nothing. A plan
/// priced otherwise would launch faster or slower than priced.
fn tp_overlap(c: &mut Collect, a: &mut Args, plan: &Plan, v: MegatronVersion) {
    if plan.tp == 1 {
        return;
    }
    match (v, plan.tp_overlap) {
        (MegatronVersion::Core, TpOverlap::Full) if plan.sp() => flag(a, "--tp-comm-overlap"),
        (MegatronVersion::Core, TpOverlap::Full) => c.refuse(
            "tp_overlap",
            "full: --tp-comm-overlap needs sequence parallelism",
            "price the plan with --sequence-parallel, or --tp-overlap backward",
        ),
        (MegatronVersion::Core, TpOverlap::None) => c.warn(
            "tp_overlap none: Megatron-Core always overlaps the input-gradient all-reduce with \
             the weight-gradient GEMM, so the launch runs a little faster than priced; price \
             --tp-overlap backward to match",
        ),
        (MegatronVersion::V2021, TpOverlap::Full) => c.refuse(
            "tp_overlap",
            "full (Transformer Engine userbuffers, 2023) is not in Megatron-LM 2021",
            "use --megatron-version core, or price --tp-overlap none",
        ),
        (MegatronVersion::V2021, TpOverlap::Backward) => c.warn(
            "tp_overlap backward: Megatron-LM 2021 runs every TP collective exposed, so the \
             launch runs slower than priced; price --tp-overlap none to match",
        ),
        _ => {}
    }
}

/// Uneven pipeline stages (`plan.stage_layers`). Megatron-Core sets the first and the last
/// stage's layer counts (`--decoder-first-pipeline-num-layers`,
/// `--decoder-last-pipeline-num-layers`) and splits the remaining layers evenly over the middle
/// stages, which must divide them (`megatron/core/transformer/transformer_config.py`
/// `__post_init__`, "Uneven PP"; `transformer_block.py` `get_num_layers_to_build`). With pp = 2
/// the first count alone fixes the split. Any other split has no argument, and Megatron-LM 2021
/// splits evenly only: both are refused.
fn stages(c: &mut Collect, a: &mut Args, plan: &Plan, v: MegatronVersion) {
    let Some(s) = uneven_stages(plan) else {
        return;
    };
    let split = fold_counts(s, ",");
    if v == MegatronVersion::V2021 {
        c.refuse(
            "stage_layers",
            format!("{split}: Megatron-LM 2021 splits the layers evenly over the stages"),
            "use --megatron-version core, or price a pp that divides the layers",
        );
        return;
    }
    let p = s.len();
    let middle = &s[1..p - 1];
    if middle.iter().any(|&n| n != middle[0]) {
        c.refuse(
            "stage_layers",
            format!("{split}: Megatron-Core sets only the first and the last stage's layers and splits the rest evenly over the middle stages"),
            "price a split whose middle stages hold equal layers (--stage-layers F,M,…,M,L), or a pp that divides the layers",
        );
        return;
    }
    match middle.first() {
        None => arg(a, "--decoder-first-pipeline-num-layers", s[0]),
        Some(&m) => {
            if s[0] != m {
                arg(a, "--decoder-first-pipeline-num-layers", s[0]);
            }
            if s[p - 1] != m {
                arg(a, "--decoder-last-pipeline-num-layers", s[p - 1]);
            }
        }
    }
}

/// Full recomputation of some layers of each stage (`plan.recompute_layers`). Megatron's
/// `block` method recomputes the first N layers of each model chunk and keeps the activations
/// of the rest (`megatron/core/transformer/transformer_block.py` `_checkpointed_forward`;
/// Megatron-LM 2021 `transformer.py`, `--activations-checkpoint-method block`): min(N, n_i) on
/// a stage of n_i layers, which is what the cost model prices for the first r_i layers when
/// r_i = min(N, n_i) on every stage. Counts of that form are written (none recomputed: no
/// recomputation argument); others have no Megatron argument, nor do any with virtual stages,
/// where N counts per chunk and the plan per stage.
fn block(c: &mut Collect, a: &mut Args, model: &ModelSpec, plan: &Plan, r: &[u64], core: bool) {
    let n = stage_counts(model, plan);
    let top = r.iter().copied().max().unwrap_or(0);
    let same_n = r.iter().zip(&n).all(|(&r, &n)| r == top.min(n));
    if plan.vpp > 1 || !same_n {
        let why = if plan.vpp > 1 {
            format!(
                " with vpp={}: Megatron-LM's block method recomputes the first N layers of every model chunk, the plan the first layers of every stage",
                plan.vpp
            )
        } else {
            ": Megatron-LM recomputes the first N layers (--recompute-num-layers) of every stage, all of a stage with fewer".to_string()
        };
        c.refuse(
            "recompute_layers",
            format!("{} layers recomputed per stage{why}", fold_counts(r, ",")),
            "price one count for every stage (--recompute-num-layers N), or recompute every layer",
        );
        return;
    }
    if top == 0 {
        return;
    }
    if core {
        arg(a, "--recompute-granularity", "full");
        arg(a, "--recompute-method", "block");
        arg(a, "--recompute-num-layers", top);
    } else {
        arg(a, "--activations-checkpoint-method", "block");
        arg(a, "--activations-checkpoint-num-layers", top);
    }
}

/// Recomputation, optimizer sharding, gradient-reduction overlap.
fn memory(c: &mut Collect, a: &mut Args, model: &ModelSpec, plan: &Plan, v: MegatronVersion) {
    let core = v == MegatronVersion::Core;
    // Per-stage counts of a model with multi-token prediction layers are the block method
    // even where they cover every layer (`cost::stages::mtp_recompute`).
    let block_counts = partial_recompute(model, plan).or_else(|| {
        plan.recompute_layers
            .clone()
            .filter(|_| model.mtp_layers > 0)
    });
    match (plan.recompute, core, block_counts) {
        (Recompute::None, _, _) => {}
        (Recompute::Full, _, Some(r)) => block(c, a, model, plan, &r, core),
        (Recompute::Full, true, None) => {
            arg(a, "--recompute-granularity", "full");
            arg(a, "--recompute-method", "uniform");
            arg(a, "--recompute-num-layers", 1);
        }
        (Recompute::Full, false, None) => arg(a, "--activations-checkpoint-method", "uniform"),
        (Recompute::Selective, true, _) => {
            arg(a, "--recompute-granularity", "selective");
            if !plan.recompute_modules.is_default() {
                // argparse `nargs="*"`: the modules follow as separate words.
                arg(
                    a,
                    "--recompute-modules",
                    plan.recompute_modules.names().join(" "),
                );
            }
        }
        (Recompute::Selective, false, _) if !plan.recompute_modules.is_default() => c.refuse(
            "recompute_modules",
            "Megatron-Core's recompute modules are not in Megatron-LM 2021",
            "use --megatron-version core",
        ),
        (Recompute::Selective, false, _) => c.refuse(
            "recompute",
            "selective recomputation (2022) is not in Megatron-LM 2021",
            "use --megatron-version core, or price --recompute full",
        ),
    }
    match (plan.zero, core) {
        (0, _) => {}
        (1, true) => flag(a, "--use-distributed-optimizer"),
        // `--use-torch-fsdp2` asserts "--use-torch-fsdp2 requires
        // --untie-embeddings-and-output-weights" and "--use-torch-fsdp2 not supported with
        // fp16 yet" (megatron/training/arguments.py `validate_args`).
        (3, true) if model.tied_embeddings => c.refuse(
            "tied_embeddings",
            "true with ZeRO-3: Megatron-LM's --use-torch-fsdp2 requires --untie-embeddings-and-output-weights",
            "write the model with tied_embeddings: false, or price zero 1",
        ),
        (3, true) if plan.dtype == Dtype::Fp16 => c.refuse(
            "dtype",
            "fp16 with ZeRO-3: Megatron-LM's --use-torch-fsdp2 is not supported with fp16",
            "price --dtype bf16, or zero 1",
        ),
        (3, true) => flag(a, "--use-torch-fsdp2"),
        (2, true) => c.refuse("zero", "ZeRO-2: Megatron-LM shards optimizer state (--use-distributed-optimizer, ZeRO-1) or everything (--use-torch-fsdp2, ZeRO-3)", "price zero 1 or 3, or export --format deepspeed"),
        (z, _) => c.refuse("zero", format!("ZeRO-{z}: Megatron-LM 2021 has no optimizer sharding"), "use --megatron-version core, or price zero 0"),
    }
    if core {
        if plan.overlap_grad_reduce {
            flag(a, "--overlap-grad-reduce");
            // The distributed optimizer's all-gather of the updated weights is priced hidden
            // beside the reduction; without this flag Megatron runs it exposed after the
            // optimizer step (it needs the distributed optimizer and --overlap-grad-reduce).
            if plan.zero == 1 {
                flag(a, "--overlap-param-gather");
            }
        }
    } else {
        // PyTorch DDP overlaps the bucketed all-reduce with backward; Megatron's local DDP
        // reduces after backward (Narayanan et al. SC'21 §4.2; CONFIG.sh `--DDP-impl`).
        arg(
            a,
            "--DDP-impl",
            if plan.overlap_grad_reduce {
                "torch"
            } else {
                "local"
            },
        );
    }
    // `--use-torch-fsdp2` asserts `not gradient_accumulation_fusion` (arguments.py); its
    // FSDP accumulates sharded gradients, priced alike either way.
    match (plan.grad_accumulation_fusion, core) {
        (false, true) => flag(a, "--no-gradient-accumulation-fusion"),
        (true, true) if plan.zero == 3 => flag(a, "--no-gradient-accumulation-fusion"),
        (true, false) => c.refuse(
            "grad_accumulation_fusion",
            "Megatron-LM 2021 accumulates gradients in a backward hook, not in the GEMM",
            "price with --no-gradient-accumulation-fusion, or use --megatron-version core",
        ),
        _ => {}
    }
}

/// Model shape and template.
fn shape(c: &mut Collect, a: &mut Args, model: &ModelSpec, plan: &Plan, v: MegatronVersion) {
    arg(a, "--num-layers", model.layers);
    arg(a, "--hidden-size", model.hidden);
    arg(a, "--num-attention-heads", model.heads);
    if model.kv_heads != model.heads {
        flag(a, "--group-query-attention");
        arg(a, "--num-query-groups", model.kv_heads);
    }
    // Megatron-LM's SwiGLU default applies under `--swiglu` only: gpt-oss's `--quick-geglu`
    // keeps 4h.
    let swiglu = model.arch.gated_mlp() && model.swiglu_limit.is_none();
    if model.ffn_hidden != default_ffn(model.hidden, swiglu) {
        arg(a, "--ffn-hidden-size", model.ffn_hidden);
    }
    if let Some(d) = model.head_size {
        // Megatron's head size, hidden/heads unless given.
        arg(a, "--kv-channels", d);
    } else if let Some(m) = model.mla {
        // MLA reads its own sizes; without `--kv-channels` `validate_args` asserts hidden/heads
        // divides, which MLA does not need. DeepSeek-V3's recipes write the unpositioned size.
        arg(a, "--kv-channels", m.qk_nope_dim);
    }
    arg(a, "--seq-length", plan.seq_len);
    if let Some(d) = plan.custom_vocab_divisor() {
        arg(a, "--make-vocab-size-divisible-by", d);
    }
    let positions = match model.positions {
        Positions::Learned => model.seq_len,
        Positions::Rotary => model.seq_len.max(plan.seq_len),
    };
    arg(a, "--max-position-embeddings", positions);
    template(c, a, model, v);
    sliding_window(c, a, model, plan, v);
    if (model.kv_heads != model.heads || model.moe.is_some()) && v == MegatronVersion::V2021 {
        c.refuse(
            "model",
            "grouped-query attention and experts are not in Megatron-LM 2021",
            "use --megatron-version core",
        );
    }
    if let (Some(m), MegatronVersion::Core) = (&model.moe, v) {
        arg(a, "--num-experts", m.experts);
        arg(a, "--moe-router-topk", m.top_k);
        if m.expert_ffn_hidden != model.ffn_hidden {
            arg(a, "--moe-ffn-hidden-size", m.expert_ffn_hidden);
        }
        if m.every > 1 || m.first_dense > 0 {
            arg(a, "--moe-layer-freq", moe_layer_pattern(model));
        }
        if m.shared_ffn_hidden > 0 {
            arg(
                a,
                "--moe-shared-expert-intermediate-size",
                m.shared_ffn_hidden,
            );
        }
        if m.shared_gate {
            // The gate is h weights and an elementwise scaling per layer: the launch is
            // written, and says what to add.
            c.warn(
                "moe.shared_gate: Megatron-LM's arguments.py (@000c4ac) has no flag for the shared experts' sigmoid gate; set TransformerConfig.moe_shared_expert_gate = True in the launcher (without it Megatron trains the model without the gate)",
            );
        }
        // What is priced: the all-to-all dispatcher (Megatron's default is `allgather`) and
        // the local experts as one grouped GEMM (without the flag, SequentialMLP).
        arg(a, "--moe-token-dispatcher-type", "alltoall");
        flag(a, "--moe-grouped-gemm");
        // arguments.py: "Currently GroupedGEMM for MoE only supports bf16 dtype." and
        // "Expert parallelism is not supported with fp16 training."
        if !matches!(plan.dtype, Dtype::Bf16 | Dtype::Fp8) {
            c.refuse(
                "dtype",
                format!("{} with experts: Megatron-LM's grouped expert GEMM runs in bf16 only (and expert parallelism refuses fp16)", plan.dtype.name()),
                "price --dtype bf16",
            );
        }
    }
    if model.dropout != 0.1 {
        // Megatron-LM defaults both to 0.1.
        arg(a, "--attention-dropout", model.dropout);
        arg(a, "--hidden-dropout", model.dropout);
    }
}

/// Precision and attention kernel.
fn numerics(c: &mut Collect, a: &mut Args, plan: &Plan, v: MegatronVersion) {
    let core = v == MegatronVersion::Core;
    match (plan.loss_fusion, core) {
        (true, true) => {
            flag(a, "--cross-entropy-loss-fusion");
            arg(a, "--cross-entropy-fusion-impl", "te");
        }
        (true, false) => c.refuse(
            "cross_entropy_loss_fusion",
            "Megatron-LM 2021 has no fused cross-entropy",
            "use --megatron-version core, or price without --cross-entropy-loss-fusion",
        ),
        (false, _) => {}
    }
    match plan.dtype {
        Dtype::Bf16 => flag(a, "--bf16"),
        Dtype::Fp16 => flag(a, "--fp16"),
        Dtype::Fp8 if core => {
            flag(a, "--bf16");
            arg(a, "--fp8-format", "hybrid");
            if plan.fp8_param_gather {
                flag(a, "--fp8-param-gather");
            }
            // Delayed is Megatron-LM's default; `--fp8-recipe` came with Megatron-Core 0.11.
            if plan.fp8_recipe != Fp8Recipe::Delayed {
                arg(a, "--fp8-recipe", plan.fp8_recipe.name());
            }
        }
        Dtype::Fp8 => c.refuse(
            "dtype",
            "fp8 (Transformer Engine) is not in Megatron-LM 2021",
            "use --megatron-version core",
        ),
        Dtype::Fp32 => {}
        Dtype::Tf32 => c.refuse(
            "dtype",
            "tf32: Megatron-LM has no switch for TF32 GEMMs",
            "price --dtype fp32 or bf16",
        ),
    }
    grad_reduce(c, a, plan, v);
    match (plan.attention, core) {
        (AttentionImpl::Flash, true) => flag(a, "--use-flash-attn"),
        (AttentionImpl::Unfused, true) => arg(a, "--attention-backend", "unfused"),
        (AttentionImpl::Flash, false) => c.refuse(
            "attention",
            "flash attention (2022) is not in Megatron-LM 2021",
            "price --attention unfused, or use --megatron-version core",
        ),
        (AttentionImpl::Unfused, false) => {}
        (AttentionImpl::FlashTriton, _) => c.refuse(
            "attention",
            "FlashAttention in Triton is llm-foundry's kernel, not a Megatron-LM option",
            "price --attention flash",
        ),
    }
}

/// The gradient-reduction precision as priced (`plan.grad_reduce_dtype`; unset: Megatron's
/// default, fp32 for bf16, which `arguments.py` forces through
/// `accumulate_allreduce_grads_in_fp32`, and 16-bit for fp16). `--grad-reduce-in-bf16`
/// (Megatron-Core) reduces bf16 gradients in bf16; `--accumulate-allreduce-grads-in-fp32`
/// reduces fp16 ones in fp32. Any other pairing has no switch.
fn grad_reduce(c: &mut Collect, a: &mut Args, plan: &Plan, v: MegatronVersion) {
    let Some(g) = plan.grad_reduce_dtype else {
        return;
    };
    let training = match plan.dtype {
        Dtype::Fp8 => Dtype::Bf16,
        d => d,
    };
    match (training, g) {
        (Dtype::Bf16, Dtype::Fp32) | (Dtype::Fp16, Dtype::Fp16) => {}
        (Dtype::Bf16, Dtype::Bf16) if v == MegatronVersion::Core => {
            flag(a, "--grad-reduce-in-bf16")
        }
        (Dtype::Bf16, Dtype::Bf16) => c.refuse(
            "grad_reduce_dtype",
            "bf16: Megatron-LM 2021 reduces bf16 gradients in fp32 only",
            "use --megatron-version core, or price --grad-reduce-dtype fp32",
        ),
        (Dtype::Fp16, Dtype::Fp32) => flag(a, "--accumulate-allreduce-grads-in-fp32"),
        (t, g) => c.refuse(
            "grad_reduce_dtype",
            format!(
                "{} with {} training: Megatron-LM reduces in fp32 or in the training type",
                g.name(),
                t.name()
            ),
            "price --grad-reduce-dtype fp32",
        ),
    }
}

/// `v` quoted for a POSIX shell when it holds anything but plain word characters.
fn shell_quote(v: &str) -> String {
    let plain = |ch: char| ch.is_ascii_alphanumeric() || "._-+/=:,".contains(ch);
    if v.chars().all(plain) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

fn render(model: &ModelSpec, plan: &Plan, v: MegatronVersion, a: &Args) -> String {
    let n = plan.n_gpus();
    let script = if model.arch == Arch::Bert {
        "pretrain_bert.py"
    } else {
        "pretrain_gpt.py"
    };
    let padded =
        crate::spec::Framework::Megatron.vocab_rows(model.vocab, plan.tp, plan.vocab_divisor)
            * plan.tp;
    let mut out = format!(
        "# Megatron-LM ({}) arguments for {} ({} params): {}\n\
         # {script} on {n} ranks (WORLD_SIZE={n}); Megatron derives dp = WORLD_SIZE/(tp·pp·cp) = {}.\n\
         # Vocabulary {} comes from the tokenizer (Megatron-LM pads it to {}{}); add data, \
         tokenizer and optimizer arguments.\n",
        v.name(),
        model.name,
        fmt_count(model.params()),
        plan.short(),
        plan.dp,
        model.vocab,
        padded,
        if plan.vocab_rows(model.vocab) * plan.tp == padded {
            ", as priced"
        } else {
            "; the plan was priced unpadded"
        },
    );
    // Megatron-LM asserts the environment too (arguments.py `validate_args`): FSDP2 refuses
    // CUDA_DEVICE_MAX_CONNECTIONS=1, which TP or CP overlap needs on Hopper and earlier.
    // (Megatron-LM 2021 asserted neither.)
    if v == MegatronVersion::Core && plan.zero == 3 {
        out += "# Launch with CUDA_DEVICE_MAX_CONNECTIONS unset or other than 1 (--use-torch-fsdp2 asserts it).\n";
    } else if v == MegatronVersion::Core && (plan.tp > 1 || plan.cp > 1) {
        out += "# Launch with CUDA_DEVICE_MAX_CONNECTIONS=1 (Megatron-LM orders TP/CP communication before compute with it).\n";
    }
    let lines: Vec<String> = a
        .iter()
        .map(|(k, v)| match v {
            // A list argument's values are words of their own.
            Some(v) if super::megatron_flags::LIST_ARGS.contains(k) => {
                let words: Vec<String> = v.split(' ').map(shell_quote).collect();
                format!("{k} {}", words.join(" "))
            }
            Some(v) => format!("{k} {}", shell_quote(v)),
            None => k.to_string(),
        })
        .collect();
    out += &lines.join(" \\\n");
    out.push('\n');
    out
}
