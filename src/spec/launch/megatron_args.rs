//! Reading a Megatron-LM command line: shell-style words (quotes, backslash-newlines, `#`
//! comments, a leading `python … pretrain_gpt.py`), `--name value` and `--name=value` pairs,
//! and what planner does with every argument it knows. An argument planner does not know is an
//! error: it might change the plan.

use super::Collect;
use crate::spec::error::closest;

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
    ("--use-flash-attn", false, P),
    ("--grad-reduce-in-bf16", false, P),
    ("--accumulate-allreduce-grads-in-fp32", false, P),
    ("--no-gradient-accumulation-fusion", false, P),
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
    (
        "--account-for-embedding-in-pipeline-split",
        false,
        Un("planner reads uneven stages from --decoder-first/last-pipeline-num-layers only"),
    ),
    (
        "--account-for-loss-in-pipeline-split",
        false,
        Un("planner reads uneven stages from --decoder-first/last-pipeline-num-layers only"),
    ),
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
    ("--mock-data", false), ("--make-vocab-size-divisible-by", true), ("--train-iters", true),
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
    ("--moe-z-loss-coeff", true), ("--rotary-scaling-factor", true), ("--mscale", true),
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
];

/// Arguments argparse reads as lists (`nargs="*"`): the value is every word up to the next
/// argument, joined by spaces.
pub(super) const LIST_ARGS: &[&str] = &["--recompute-modules"];

/// Megatron-LM 2021 spellings: their presence marks a 2021 command line.
pub const SPELLINGS_2021: &[&str] = &[
    "--DDP-impl",
    "--activations-checkpoint-method",
    "--activations-checkpoint-num-layers",
    "--checkpoint-activations",
    "--checkpoint-num-layers",
    "--distribute-checkpointed-activations",
];

/// A parsed command line: arguments in order; the last of a repeated one wins (argparse).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArgMap {
    /// `(name, value)` in command-line order.
    pub args: Vec<(String, Option<String>)>,
    /// The words before the training script (`torchrun --nproc_per_node 8 … pretrain_gpt.py`).
    pub launcher: Vec<String>,
}

impl ArgMap {
    /// The value of the last `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Whether `name` appears.
    pub fn has(&self, name: &str) -> bool {
        self.args.iter().any(|(n, _)| n == name)
    }
}

fn lookup(name: &str) -> Option<(bool, Role)> {
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

/// Splits `text` into words like a POSIX shell does for a plain command line: whitespace,
/// single and double quotes, backslash escapes and line continuations, `#` comments.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur: Option<String> = None;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '#' if cur.is_none() => while chars.next_if(|c| *c != '\n').is_some() {},
            '\\' => match chars.next() {
                Some('\n') | None => {}
                Some(c) => cur.get_or_insert_with(String::new).push(c),
            },
            '\'' | '"' => {
                let word = cur.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some(c) if c == ch => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated {ch} quote")),
                    }
                }
            }
            c if c.is_whitespace() => words.extend(cur.take()),
            c => cur.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(cur);
    Ok(words)
}

/// Reads a Megatron-LM command line into arguments, recording in `c` every word it cannot
/// take (unknown or unsupported arguments, missing values, unexpanded variables) and a warning
/// for each argument priced without.
pub(crate) fn read(text: &str, c: &mut Collect) -> ArgMap {
    let words = match split_words(text) {
        Ok(w) => w,
        Err(e) => {
            c.refuse("--megatron-args", e, "close the quote");
            return ArgMap::default();
        }
    };
    // A launcher prefix such as `torchrun --nproc_per_node 8 … pretrain_gpt.py`.
    let start = words
        .iter()
        .rposition(|w| w.ends_with(".py"))
        .map_or(0, |i| i + 1);
    let mut out = ArgMap {
        args: Vec::new(),
        launcher: words[..start].to_vec(),
    };
    let (mut ignored, mut i) = (Vec::new(), start);
    while i < words.len() {
        let Some((name, value)) = next_arg(&words, &mut i, c) else {
            continue;
        };
        // argparse keeps the last of a repeated argument (scripts append overrides); one given
        // two different values is said, not taken silently.
        if let Some(v0) = out.get(&name)
            && value.as_deref().is_some_and(|v| v != v0)
        {
            c.warn(format!(
                "{name} is given twice ({v0}, then {}): Megatron-LM's argparse keeps the last",
                value.as_deref().unwrap_or_default()
            ));
        }
        if name == "--moe-token-dispatcher-type" && value.as_deref() != Some("alltoall") {
            c.warn(format!(
                "{name} {}: not modelled (tokens are priced as Megatron-Core's all-to-all \
                 dispatcher moves them; the default `allgather` gathers every token over the \
                 TP × EP ranks, ep/top_k times the traffic)",
                value.as_deref().unwrap_or_default()
            ));
        }
        match lookup(&name).map(|(_, r)| r) {
            Some(P | Model) => out.args.push((name, value)),
            Some(Ignore) => ignored.push(name),
            Some(Nm(why)) => {
                c.warn(format!("{name}: not modelled ({why})"));
                out.args.push((name, value));
            }
            Some(Un(why)) => c.refuse(
                &name,
                format!("cannot be priced: {why}"),
                "remove it to price the plan without it",
            ),
            None => unknown(c, &name),
        }
    }
    if !ignored.is_empty() {
        c.warn(format!(
            "ignored (they do not change what is priced): {}",
            ignored.join(" ")
        ));
    }
    out
}

/// The argument at `words[*i]` with its value, advancing `*i`; `None` (recorded in `c`) when
/// the words there are not an argument planner can read.
fn next_arg(words: &[String], i: &mut usize, c: &mut Collect) -> Option<(String, Option<String>)> {
    let unexpanded = |c: &mut Collect, field: &str, v: &str| {
        c.refuse(
            field,
            format!("`{v}` holds an unexpanded shell variable"),
            "pass the expanded command line (e.g. echo it first)",
        )
    };
    let w = &words[*i];
    *i += 1;
    if w.contains('$') {
        unexpanded(c, "--megatron-args", w);
        return None;
    }
    let Some(body) = w.strip_prefix("--") else {
        // A value after a switch (`--sequence-parallel true`) is the likeliest stray word.
        let after_switch = (*i >= 2)
            .then(|| words[*i - 2].as_str())
            .filter(|p| lookup(p).is_some_and(|(v, _)| !v));
        match after_switch {
            Some(p) => c.refuse(
                p,
                format!("takes no value, but `{w}` follows it"),
                format!("write {p} to set it, or leave it out to keep it off"),
            ),
            None => c.refuse(
                "--megatron-args",
                format!("stray word `{w}`"),
                "give arguments as --name value",
            ),
        }
        return None;
    };
    let (name, inline) = match body.split_once('=') {
        Some((n, v)) => (format!("--{n}"), Some(v.to_string())),
        None => (w.clone(), None),
    };
    let next_is_value = words.get(*i).is_some_and(|n| !n.starts_with("--"));
    let known = lookup(&name);
    let wants_value = known.map_or(next_is_value, |(v, _)| v);
    let value = match (wants_value, inline) {
        // argparse refuses a value for a switch (`--sequence-parallel=false` is no "off").
        (false, Some(v)) if known.is_some() => {
            c.refuse(
                &name,
                format!("takes no value, but `={v}` was given"),
                format!("write {name} to set it, or leave it out to keep it off"),
            );
            return None;
        }
        (_, Some(v)) => Some(v),
        (true, None) if next_is_value => {
            *i += 1;
            let mut v = words[*i - 1].clone();
            // argparse `nargs="*"`: every word up to the next argument is one more value.
            while LIST_ARGS.contains(&name.as_str())
                && let Some(more) = words.get(*i).filter(|n| !n.starts_with("--"))
            {
                v = format!("{v} {more}");
                *i += 1;
            }
            Some(v)
        }
        (true, None) => {
            c.refuse(&name, "needs a value", format!("write {name} VALUE"));
            return None;
        }
        (false, None) => None,
    };
    if let Some(v) = value.as_deref().filter(|v| v.contains('$')) {
        unexpanded(c, &name, v);
        return None;
    }
    Some((name, value))
}

/// Ranks a torchrun prefix starts (`--nproc_per_node` × `--nnodes`), when it says: not for an
/// elastic node range (`--nnodes=1:2`), whose world size is decided at launch.
pub fn launcher_world(launcher: &[String]) -> Option<u64> {
    let raw = |names: &[&str]| -> Option<&str> {
        launcher.iter().enumerate().find_map(|(i, w)| {
            let (name, inline) = w
                .split_once('=')
                .map_or((w.as_str(), None), |(n, v)| (n, Some(v)));
            if !names.contains(&name) {
                return None;
            }
            inline.or(launcher.get(i + 1).map(String::as_str))
        })
    };
    let per_node: u64 = raw(&["--nproc_per_node", "--nproc-per-node"])?
        .parse()
        .ok()?;
    let nodes: u64 = match raw(&["--nnodes"]) {
        None => 1,
        Some(v) => v.parse().ok()?,
    };
    Some(per_node * nodes)
}

fn unknown(c: &mut Collect, name: &str) {
    let names = KNOWN
        .iter()
        .map(|(n, _, _)| *n)
        .chain(IGNORED.iter().map(|(n, _)| *n));
    let hint = closest(name, names)
        .map(|n| format!("did you mean `{n}`? "))
        .unwrap_or_default();
    c.refuse(
        name,
        "unknown Megatron-LM argument: it might change the plan",
        format!("{hint}remove it if it changes neither the layout, the memory nor the speed"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_like_a_shell() {
        let w = split_words("python pretrain_gpt.py \\\n  --a 1 # note\n --b='x y' \"--c\" 2\n")
            .unwrap();
        assert_eq!(
            w,
            [
                "python",
                "pretrain_gpt.py",
                "--a",
                "1",
                "--b=x y",
                "--c",
                "2"
            ]
        );
        assert!(split_words("--a 'oops").is_err());
    }

    /// argparse keeps the last of a repeated argument; two different values are said (QA:
    /// `--tensor-model-parallel-size 2 … 4` had been taken as 4 silently), the same value
    /// twice is not.
    #[test]
    fn a_repeated_argument_keeps_the_last_and_says_so() {
        let mut c = Collect::new("--megatron-args");
        let m = read(
            "--tensor-model-parallel-size 2 --micro-batch-size 1 --tensor-model-parallel-size 4 \
             --micro-batch-size 1",
            &mut c,
        );
        assert_eq!(m.get("--tensor-model-parallel-size"), Some("4"));
        let said: Vec<&String> = c.warnings.iter().filter(|w| w.contains("twice")).collect();
        assert_eq!(said.len(), 1, "{:?}", c.warnings);
        assert!(said[0].contains("(2, then 4)"), "{}", said[0]);
    }

    #[test]
    fn torchrun_prefix_gives_the_world_size() {
        let w = |t: &str| launcher_world(&split_words(t).unwrap());
        assert_eq!(
            w("torchrun --nproc_per_node 8 --nnodes=4 --node_rank 0"),
            Some(32)
        );
        assert_eq!(w("torchrun --nproc-per-node=4"), Some(4));
        assert_eq!(w("python"), None);
        // An elastic range fixes no world size (it was read as one node).
        assert_eq!(w("torchrun --nproc_per_node 8 --nnodes=1:2"), None);
    }

    #[test]
    fn unknown_unsupported_and_variables_are_refused_at_once() {
        let mut c = Collect::new("--megatron-args");
        let m = read(
            "torchrun --nproc_per_node 8 pretrain_gpt.py --tensor-model-parallel-size=2 \
             --lr 1e-4 --micro-batch-sise 2 --cpu-offloading --data-path $DATA --fp16",
            &mut c,
        );
        assert_eq!(m.get("--tensor-model-parallel-size"), Some("2"));
        assert!(m.has("--fp16") && !m.has("--lr"));
        let (problems, warnings) = c.into_parts();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["--micro-batch-sise", "--cpu-offloading", "--data-path"]
        );
        assert!(
            problems[0]
                .fix
                .contains("did you mean `--micro-batch-size`"),
            "{}",
            problems[0]
        );
        assert_eq!(
            warnings,
            ["ignored (they do not change what is priced): --lr"]
        );
    }
}
