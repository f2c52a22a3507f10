//! Every Megatron-LM argument planner knows, and what it does with each: read into the plan,
//! checked against the model, ignored, warned about or refused (`megatron_args` reads a
//! command line with them).

/// What an argument means to planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read into the plan.
    Plan,
    /// Checked against the model of `--model`.
    Model,
    /// Does not change the layout, memory or step time (data, tokenizer, optimizer
    /// hyper-parameters, logging, checkpoints).
    Ignore,
    /// Changes speed or memory a little in a way the cost model does not price: a warning.
    NotModelled(&'static str),
    /// Changes the plan in a way planner cannot express: an error.
    Unsupported(&'static str),
}

use Role::{Ignore, Model, NotModelled as Nm, Plan as P, Unsupported as Un};

/// Every argument planner knows: name, whether it takes a value, role.
pub const KNOWN: &[(&str, bool, Role)] = &[
    // Layout and batch.
    ("--tensor-model-parallel-size", true, P),
    ("--model-parallel-size", true, P),
    ("--pipeline-model-parallel-size", true, P),
    ("--context-parallel-size", true, P),
    ("--expert-model-parallel-size", true, P),
    ("--expert-tensor-parallel-size", true, P),
    ("--num-layers-per-virtual-pipeline-stage", true, P),
    ("--num-virtual-stages-per-pipeline-rank", true, P),
    ("--decoder-first-pipeline-num-layers", true, P),
    ("--decoder-last-pipeline-num-layers", true, P),
    ("--tp-comm-overlap", false, P),
    ("--sequence-parallel", false, P),
    ("--micro-batch-size", true, P),
    ("--global-batch-size", true, P),
    ("--seq-length", true, P),
    ("--make-vocab-size-divisible-by", true, P),
    // Memory.
    ("--recompute-granularity", true, P),
    ("--recompute-method", true, P),
    ("--recompute-num-layers", true, P),
    ("--recompute-modules", true, P),
    ("--recompute-activations", false, P),
    ("--activations-checkpoint-method", true, P),
    ("--activations-checkpoint-num-layers", true, P),
    ("--checkpoint-activations", false, P),
    ("--checkpoint-num-layers", true, P),
    ("--use-distributed-optimizer", false, P),
    ("--use-torch-fsdp2", false, P),
    ("--overlap-grad-reduce", false, P),
    ("--DDP-impl", true, P),
    // Numerics.
    ("--bf16", false, P),
    ("--fp16", false, P),
    ("--fp8-format", true, P),
    ("--fp8-param-gather", false, P),
    ("--fp8-recipe", true, P),
    ("--cross-entropy-loss-fusion", false, P),
    ("--cross-entropy-fusion-impl", true, P),
    ("--use-flash-attn", false, P),
    ("--grad-reduce-in-bf16", false, P),
    ("--accumulate-allreduce-grads-in-fp32", false, P),
    ("--no-gradient-accumulation-fusion", false, P),
    ("--no-scatter-gather-tensors-in-pipeline", false, P),
    ("--attention-backend", true, P),
    ("--transformer-impl", true, P),
    // Model shape and template.
    ("--num-layers", true, Model),
    ("--hidden-size", true, Model),
    ("--num-attention-heads", true, Model),
    ("--ffn-hidden-size", true, Model),
    ("--group-query-attention", false, Model),
    ("--num-query-groups", true, Model),
    ("--kv-channels", true, Model),
    ("--max-position-embeddings", true, Model),
    ("--swiglu", false, Model),
    ("--normalization", true, Model),
    ("--position-embedding-type", true, Model),
    ("--use-rotary-position-embeddings", false, Model),
    ("--untie-embeddings-and-output-weights", false, Model),
    ("--disable-bias-linear", false, Model),
    ("--add-qkv-bias", false, Model),
    ("--qk-layernorm", false, Model),
    ("--multi-latent-attention", false, Model),
    ("--q-lora-rank", true, Model),
    ("--kv-lora-rank", true, Model),
    ("--qk-head-dim", true, Model),
    ("--qk-pos-emb-head-dim", true, Model),
    ("--v-head-dim", true, Model),
    ("--softmax-type", true, Model),
    ("--quick-geglu", false, Model),
    ("--glu-linear-offset", true, Model),
    ("--activation-func-clamp-value", true, Model),
    ("--rotary-base", true, Model),
    ("--window-size", true, Model),
    ("--window-attn-skip-freq", true, Model),
    ("--num-experts", true, Model),
    ("--moe-router-topk", true, Model),
    ("--moe-ffn-hidden-size", true, Model),
    ("--moe-layer-freq", true, Model),
    ("--moe-shared-expert-intermediate-size", true, Model),
    ("--mtp-num-layers", true, Model),
    ("--hidden-dropout", true, Model),
    ("--attention-dropout", true, Model),
    ("--vocab-size", true, Model),
    // Priced without.
    (
        "--overlap-param-gather",
        false,
        Nm(
            "the distributed optimizer's parameter all-gather is priced beside the gradient \
             reduction (overlapped with the last backward under --overlap-grad-reduce, which \
             Megatron requires with it), not with the next forward",
        ),
    ),
    (
        "--no-masked-softmax-fusion",
        false,
        Nm("the softmax is priced fused"),
    ),
    (
        "--no-bias-gelu-fusion",
        false,
        Nm("bias + GeLU is priced fused"),
    ),
    (
        "--no-bias-dropout-fusion",
        false,
        Nm("bias + dropout + add is priced fused"),
    ),
    (
        "--no-bias-swiglu-fusion",
        false,
        Nm("bias + SwiGLU is priced fused"),
    ),
    (
        "--no-rope-fusion",
        false,
        Nm("the rotary embedding is priced fused"),
    ),
    (
        "--reset-attention-mask",
        false,
        Nm("attention is priced causal over the whole sequence, not masked per document"),
    ),
    (
        "--no-contiguous-buffers-in-local-ddp",
        false,
        Nm("the DDP gradient buffer is priced contiguous"),
    ),
    (
        "--empty-unused-memory-level",
        true,
        Nm("the allocator margin is priced without emptying the cache"),
    ),
    // What the expert layers are priced as (`export` writes both).
    ("--moe-grouped-gemm", false, P),
    (
        "--moe-expert-capacity-factor",
        true,
        Nm("routing is priced without token dropping"),
    ),
    ("--moe-token-dispatcher-type", true, P),
    (
        "--moe-pad-expert-input-to-capacity",
        false,
        Nm("expert inputs are priced at the balanced token count, not padded to capacity"),
    ),
    (
        "--moe-router-num-groups",
        true,
        Nm(
            "the all-to-all is priced for tokens spread over every EP rank; group-limited routing sends them to fewer",
        ),
    ),
    (
        "--moe-router-group-topk",
        true,
        Nm(
            "the all-to-all is priced for tokens spread over every EP rank; group-limited routing sends them to fewer",
        ),
    ),
    // Cannot express.
    (
        "--distribute-saved-activations",
        false,
        Un("activations split over TP ranks are not modelled"),
    ),
    (
        "--distribute-checkpointed-activations",
        false,
        Un("activations split over TP ranks are not modelled"),
    ),
    (
        "--pipeline-model-parallel-layout",
        true,
        Un("planner reads uneven stages from --decoder-first/last-pipeline-num-layers only"),
    ),
    ("--account-for-embedding-in-pipeline-split", false, P),
    ("--account-for-loss-in-pipeline-split", false, P),
    (
        "--pipeline-model-parallel-split-rank",
        true,
        Un("encoder-decoder splits are not modelled"),
    ),
    (
        "--cpu-offloading",
        false,
        Un("CPU offloading is not modelled"),
    ),
    (
        "--optimizer-cpu-offload",
        false,
        Un("CPU offloading is not modelled"),
    ),
    (
        "--use-megatron-fsdp",
        false,
        Un("Megatron FSDP sharding strategies are not modelled (ZeRO-3 is --use-torch-fsdp2)"),
    ),
    (
        "--use-custom-fsdp",
        false,
        Un("Megatron FSDP sharding strategies are not modelled (ZeRO-3 is --use-torch-fsdp2)"),
    ),
    (
        "--data-parallel-sharding-strategy",
        true,
        Un("Megatron FSDP sharding strategies are not modelled"),
    ),
    (
        "--num-distributed-optimizer-instances",
        true,
        Un("partial optimizer sharding is not modelled"),
    ),
    (
        "--moe-shared-expert-overlap",
        false,
        Nm(
            "the shared experts are priced after the routed ones, not overlapped with the token exchange",
        ),
    ),
    (
        "--rampup-batch-size",
        true,
        Un("a batch-size ramp changes the plan during training; price each batch size"),
    ),
    (
        "--hierarchical-context-parallel-sizes",
        true,
        Un("hierarchical context parallelism is not modelled"),
    ),
    (
        "--cp-comm-type",
        true,
        Un("only the default p2p ring of context parallelism is modelled"),
    ),
    (
        "--num-layers-per-stage",
        true,
        Un("planner reads uneven stages from --decoder-first/last-pipeline-num-layers only"),
    ),
];

/// Arguments that do not change what planner prices (the `Ignore` role).
#[rustfmt::skip]
const IGNORED: &[(&str, bool)] = &[
    ("--data-path", true), ("--train-data-path", true), ("--valid-data-path", true),
    ("--test-data-path", true), ("--data-cache-path", true), ("--vocab-file", true),
    ("--merge-file", true), ("--tokenizer-type", true), ("--tokenizer-model", true),
    ("--split", true), ("--data-impl", true), ("--dataloader-type", true), ("--num-workers", true),
    ("--mock-data", false), ("--train-iters", true),
    ("--train-samples", true), ("--exit-interval", true), ("--exit-duration-in-mins", true),
    ("--eval-interval", true), ("--eval-iters", true), ("--log-interval", true), ("--save", true),
    ("--load", true), ("--save-interval", true), ("--ckpt-format", true),
    ("--no-load-optim", false), ("--no-load-rng", false), ("--no-save-optim", false),
    ("--no-save-rng", false), ("--finetune", false), ("--use-checkpoint-args", false),
    ("--lr", true), ("--min-lr", true), ("--lr-decay-style", true), ("--lr-decay-iters", true),
    ("--lr-decay-samples", true), ("--lr-warmup-fraction", true), ("--lr-warmup-iters", true),
    ("--lr-warmup-samples", true), ("--weight-decay", true), ("--clip-grad", true),
    ("--adam-beta1", true), ("--adam-beta2", true), ("--adam-eps", true), ("--optimizer", true),
    ("--init-method-std", true), ("--seed", true), ("--loss-scale", true),
    ("--moe-router-load-balancing-type", true), ("--moe-aux-loss-coeff", true),
    ("--moe-z-loss-coeff", true),
    // How the router scores and balances (DeepSeek-V3's recipe sets most): the same GEMM and
    // the same balanced routing are priced.
    ("--moe-router-score-function", true), ("--moe-router-enable-expert-bias", false),
    ("--moe-router-topk-scaling-factor", true), ("--moe-router-dtype", true),
    ("--moe-router-pre-softmax", false), ("--moe-router-bias-update-rate", true),
    ("--moe-token-drop-policy", true), ("--moe-input-jitter-eps", true),
    ("--moe-permute-fusion", false), ("--moe-router-fusion", false),
    ("--moe-per-layer-logging", false), ("--rotary-scaling-factor", true), ("--mscale", true),
    ("--mscale-all-dim", true), ("--mtp-loss-scaling-factor", true),
    ("--initial-loss-scale", true), ("--min-loss-scale", true), ("--loss-scale-window", true),
    ("--hysteresis", true), ("--distributed-backend", true),
    ("--distributed-timeout-minutes", true), ("--tensorboard-dir", true),
    ("--tensorboard-log-interval", true), ("--wandb-project", true), ("--wandb-exp-name", true),
    ("--log-throughput", false), ("--log-timers-to-tensorboard", false),
    ("--log-validation-ppl-to-tensorboard", false), ("--log-memory-to-tensorboard", false),
    ("--timing-log-level", true), ("--use-mcore-models", false), ("--use-legacy-models", false),
    ("--rotary-percent", true),
    ("--norm-epsilon", true), ("--layernorm-epsilon", true),
    ("--attention-softmax-in-fp32", false), ("--apply-query-key-layer-scaling", false),
    ("--no-async-tensor-model-parallel-allreduce", false), ("--no-position-embedding", false),
    // Data and bookkeeping arguments of Megatron-LM scripts (QA: a copied launch line failed
    // on them as unknown).
    ("--eod-mask-loss", false), ("--reset-position-ids", false), ("--manual-gc", false),
    ("--manual-gc-interval", true), ("--exit-signal-handler", false),
    ("--num-dataset-builder-threads", true), ("--no-create-attention-mask-in-dataloader", false),
    ("--data-args-path", true), ("--per-split-data-args-path", true),
    ("--tokenizer-prompt-format", true), ("--full-validation", false),
    ("--multiple-validation-sets", false), ("--mid-level-dataset-surplus", true),
    ("--object-storage-cache-path", true),
    // Delayed scaling's amax history: a few scalars per tensor, the same casts.
    ("--fp8-margin", true), ("--fp8-amax-history-len", true), ("--fp8-amax-compute-algo", true),
    ("--fp8-interval", true),
];

/// Arguments argparse reads as lists (`nargs="*"` or `"+"`, megatron/training/arguments.py):
/// the value is every word up to the next argument, joined by spaces. A weighted blend
/// (`--data-path 0.5 /a 0.5 /b`) and a batch ramp (`--rampup-batch-size 16 16 1000000`) are
/// one argument each.
pub(super) const LIST_ARGS: &[&str] = &[
    "--recompute-modules",
    "--data-path",
    "--train-data-path",
    "--valid-data-path",
    "--test-data-path",
    "--rampup-batch-size",
    "--hierarchical-context-parallel-sizes",
    "--cp-comm-type",
];

/// Megatron-LM 2021 spellings: their presence marks a 2021 command line.
pub const SPELLINGS_2021: &[&str] = &[
    "--DDP-impl",
    "--activations-checkpoint-method",
    "--activations-checkpoint-num-layers",
    "--checkpoint-activations",
    "--checkpoint-num-layers",
    "--distribute-checkpointed-activations",
];

/// Whether `name` takes a value, and its role; `None`: planner does not know it.
pub(super) fn lookup(name: &str) -> Option<(bool, Role)> {
    KNOWN
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, v, r)| (*v, *r))
        .or_else(|| {
            IGNORED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v, Ignore))
        })
}

/// The name of every known argument (for "did you mean").
pub(super) fn known_names() -> impl Iterator<Item = &'static str> {
    KNOWN
        .iter()
        .map(|(n, _, _)| *n)
        .chain(IGNORED.iter().map(|(n, _)| *n))
}
