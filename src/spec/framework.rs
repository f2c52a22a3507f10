//! The training framework a plan is priced for: each framework's documented behaviour that
//! the graph, the cost model, the checks and the exporters read (kernels, loss, recomputation
//! policy, ZeRO stages and what it cannot run).

use super::plan::{AttentionImpl, MAX_FUSED_HEAD_DIM, Plan};
use crate::units::Dtype;
use serde::{Deserialize, Serialize};

/// Megatron-LM's default `--make-vocab-size-divisible-by` ([`Framework::vocab_rows`],
/// `Plan::vocab_divisor`).
pub const MAKE_VOCAB_SIZE_DIVISIBLE_BY: u64 = 128;

/// The training framework, which decides kernels, loss, optimizer-state layout and gradient
/// reduction precision — each the documented behaviour of that codebase.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum Framework {
    /// Megatron-LM / Megatron-Core: fused kernels (norms, bias-GeLU, bias-dropout-add,
    /// scale-mask-softmax), cross-entropy on fp32 vocab-parallel logits, fp32 main gradients
    /// (18 bytes/param, 6 + 12/dp with the distributed optimizer).
    #[default]
    Megatron,
    /// Megatron-DeepSpeed: Megatron's kernels; DeepSpeed's BF16 optimizer keeps 16-bit
    /// gradients plus unsharded fp32 accumulation buffers (BigScience tr11 chronicles: "the
    /// additional memory usage is 4bytes x params and it's not sharded").
    #[serde(rename = "deepspeed", alias = "deep-speed")]
    DeepSpeed,
    /// torchtitan (FSDP2): eager PyTorch RMSNorm, rotary embedding and SwiGLU (several
    /// elementwise kernels each, fp32 upcasts), fp32 cross-entropy, sharded fp32 master state.
    Torchtitan,
    /// MosaicML llm-foundry (FSDP): aten LayerNorm and GeLU kernels, flash-attn's fused
    /// cross-entropy, sharded fp32 master state.
    LlmFoundry,
}

impl Framework {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Framework::Megatron => "megatron",
            Framework::DeepSpeed => "deepspeed",
            Framework::Torchtitan => "torchtitan",
            Framework::LlmFoundry => "llm-foundry",
        }
    }

    /// Whether the framework's fused attention `kernel` takes `dtype` inputs. FlashAttention
    /// (Dao 2023; `flash_attn` asserts fp16 or bf16 inputs), Transformer Engine's fused
    /// attention (fp16/bf16, and fp8 on Hopper) and llm-foundry's Triton kernel run 16-bit
    /// tensors only: fp32 (or TF32) training runs the materialised softmax in Megatron-LM,
    /// DeepSpeed and llm-foundry (whose `flash_attn_fn` checks for fp16/bf16 inputs).
    /// torchtitan calls PyTorch's SDPA, whose memory-efficient kernel takes fp32 too
    /// (`torch.nn.functional.scaled_dot_product_attention` backends).
    pub fn fused_attention_takes(self, kernel: AttentionImpl, dtype: Dtype) -> bool {
        match kernel {
            AttentionImpl::Unfused => true,
            _ if dtype.bytes() <= 2.0 => true,
            AttentionImpl::FlashTriton => false,
            AttentionImpl::Flash => self == Framework::Torchtitan,
        }
    }

    /// Whether `kernel` runs a model whose heads are `head_dim` wide, trained in `dtype`:
    /// [`Framework::fused_attention_takes`] the type, and a fused kernel's heads are at most
    /// [`MAX_FUSED_HEAD_DIM`] wide.
    pub fn attention_runs(self, kernel: AttentionImpl, dtype: Dtype, head_dim: u64) -> bool {
        self.fused_attention_takes(kernel, dtype)
            && (kernel == AttentionImpl::Unfused || head_dim <= MAX_FUSED_HEAD_DIM)
    }

    /// Whether the framework trains a sliding attention window: Megatron-Core passes
    /// `--window-size` to Transformer Engine's attention (`TransformerConfig.window_size`),
    /// llm-foundry its `sliding_window_size` to FlashAttention (`flash_attn_fn`); torchtitan's
    /// SDPA and Megatron-DeepSpeed's attention take no window, and would train full causal
    /// attention instead.
    pub fn runs_sliding_window(self) -> bool {
        matches!(self, Framework::Megatron | Framework::LlmFoundry)
    }

    /// Vocabulary rows of the embedding and the output layer on each of `tp` ranks for a
    /// `vocab`-token vocabulary. Megatron-LM, and Megatron-DeepSpeed after it, pad the
    /// vocabulary to a multiple of `--make-vocab-size-divisible-by` (`divisor`, 128 by
    /// default) times tp before splitting it (`_vocab_size_with_padding`,
    /// megatron/training/tokenizer/tokenizer.py; `padded_vocab_size` is what
    /// `VocabParallelEmbedding` and the output layer allocate and compute): GPT-2's 50,257
    /// tokens become 51,200 at tp 8. torchtitan and llm-foundry build the layers at the given
    /// size (torchtitan's tensor-parallel sharding rounds a rank's share up) and ignore
    /// `divisor` ([`pads_vocab`](Self::pads_vocab)).
    pub fn vocab_rows(self, vocab: u64, tp: u64, divisor: u64) -> u64 {
        let tp = tp.max(1);
        if self.pads_vocab() {
            // The readers keep both at most 2^24 (the flag, plan files, `--megatron-args`);
            // saturating, a plan built otherwise still prices rather than panics.
            let divisor = divisor.max(1);
            vocab
                .div_ceil(divisor.saturating_mul(tp))
                .saturating_mul(divisor)
        } else {
            vocab.div_ceil(tp)
        }
    }

    /// Whether the framework pads the vocabulary (Megatron-LM's
    /// `--make-vocab-size-divisible-by`, [`vocab_rows`](Self::vocab_rows)).
    pub fn pads_vocab(self) -> bool {
        matches!(self, Framework::Megatron | Framework::DeepSpeed)
    }

    /// Whether the framework ties the input and output embeddings across pipeline stages
    /// (Megatron-LM keeps a copy on the last stage and all-reduces the pair's gradients);
    /// torchtitan refuses it (`NotImplementedError("Weight tying is not supported with
    /// Pipeline Parallel.")`, pytorch/torchtitan `torchtitan/models/common/decoder.py`).
    pub fn ties_across_stages(self) -> bool {
        self != Framework::Torchtitan
    }

    /// Whether replicated data parallelism (ZeRO-0) runs beside tensor, pipeline or context
    /// parallelism ([`Plan::ddp_beside_model_parallel`]); torchtitan's DDP runs alone
    /// (`apply_ddp`: "DDP has not supported > 1D parallelism", pytorch/torchtitan
    /// `parallelize.py`).
    pub fn runs_ddp_beside_model_parallel(self) -> bool {
        self != Framework::Torchtitan
    }

    /// Whether norms, rotary embedding and gated activations run as single fused kernels
    /// (false: composed of eager PyTorch elementwise ops).
    pub fn fused_kernels(self) -> bool {
        self != Framework::Torchtitan
    }

    /// Whether data parallelism is PyTorch FSDP (torchtitan's FSDP2, Composer's FSDP): ZeRO-2
    /// and 3 shard the parameters at rest, with fp32 master weights as the sharded parameters.
    pub fn fsdp(self) -> bool {
        matches!(self, Framework::Torchtitan | Framework::LlmFoundry)
    }

    /// The parallelisms the framework has no implementation of, as (plan field, what it is):
    /// Composer, which runs llm-foundry, trains with FSDP and has no pipeline or context
    /// parallelism (mosaicml/composer `parallelism_config` holds `fsdp` and `tp` only).
    /// DeepSpeed (Megatron-DeepSpeed's pipeline engine) has no context parallelism, no
    /// interleaved schedule (`deepspeed/runtime/pipe/schedule.py` `TrainSchedule` runs one
    /// chunk per stage) and no expert parallelism of the kind priced here (Megatron-style, its
    /// experts sharded over the data-parallel ranks of the dense layers); its exporter refuses
    /// the same. The size function may depend on the rest of the plan: Megatron-LM has
    /// expert parallelism except under its ZeRO-3 (FSDP2), where the size counts as given.
    /// torchtitan's own expert parallelism is another layout than the one priced.
    pub fn lacks(self) -> &'static [Lack] {
        match self {
            // `--use-torch-fsdp2` asserts expert_model_parallel_size == 1 (Megatron-LM
            // megatron/training/arguments.py); the distributed optimizer (ZeRO-1) runs with it.
            Framework::Megatron => &[(
                "ep",
                |p| if p.zero == 3 { p.ep } else { 1 },
                "expert parallelism under ZeRO-3 (--use-torch-fsdp2 asserts \
                 expert_model_parallel_size == 1; ZeRO-1 runs with it)",
            )],
            // torchtitan's expert parallelism borrows FSDP and TP ranks (dp2ep), a layout
            // not priced here; its exporter refuses it too.
            Framework::Torchtitan => &[(
                "ep",
                |p| p.ep,
                "Megatron-style expert parallelism (its own, dp2ep, borrows FSDP and TP ranks \
                 and is not priced)",
            )],
            Framework::LlmFoundry => &[
                ("pp", |p| p.pp, "pipeline parallelism"),
                ("cp", |p| p.cp, "context parallelism"),
            ],
            Framework::DeepSpeed => &[
                ("cp", |p| p.cp, "context parallelism"),
                ("vpp", |p| p.vpp, "interleaved pipeline schedule"),
                ("ep", |p| p.ep, "Megatron-style expert parallelism"),
            ],
        }
    }

    /// Whether the framework pipelines with sharded data parallelism (ZeRO-2/3 with pp > 1):
    /// torchtitan runs FSDP2 under `torch.distributed.pipelining`, which skips the gradient
    /// reduction until each step's last backward (`stage.py` `_configure_data_parallel_mode`:
    /// `set_requires_gradient_sync(last_backward)`). DeepSpeed's pipeline engine refuses
    /// ZeRO-2/3, Megatron-LM shards only the optimizer state under pipelining, and Composer
    /// has no pipeline parallelism.
    pub fn pipelines_sharded_data(self) -> bool {
        self == Framework::Torchtitan
    }

    /// The ZeRO stages the framework runs: torchtitan's FSDP2 shards parameters with their
    /// optimizer state (`fully_shard`, ZeRO-3), keeps them gathered after the forward
    /// (`reshard_after_forward=False`, ZeRO-2) or replicates (DDP); Composer's FSDP likewise
    /// (`FULL_SHARD`, `SHARD_GRAD_OP`, `NO_SHARD`). Neither shards optimizer state alone
    /// (ZeRO-1). Megatron-LM as priced: the distributed optimizer (`--use-distributed-optimizer`,
    /// ZeRO-1) or FSDP2 (`--use-torch-fsdp2`, ZeRO-3); Megatron-FSDP's `optim_grads` sharding
    /// (ZeRO-2) is not priced (its flags are refused as not modelled). DeepSpeed: ZeRO 1–3.
    pub fn zero_stages(self) -> &'static [u8] {
        match self {
            Framework::Torchtitan | Framework::LlmFoundry => &[0, 2, 3],
            Framework::Megatron => &[0, 1, 3],
            Framework::DeepSpeed => &[0, 1, 2, 3],
        }
    }

    /// Why the framework lacks the ZeRO stages [`Framework::zero_stages`] leaves out.
    pub fn zero_gap(self) -> &'static str {
        match self {
            Framework::Torchtitan | Framework::LlmFoundry => {
                "its FSDP has no optimizer-only sharding"
            }
            Framework::Megatron => {
                "planner prices its distributed optimizer, ZeRO-1, and FSDP2, ZeRO-3; Megatron-FSDP's \
                 optim_grads sharding is not priced"
            }
            Framework::DeepSpeed => "",
        }
    }

    /// Whether the framework trains with FP8 GEMMs: Megatron-LM and llm-foundry through
    /// Transformer Engine (`--fp8-format`, Composer `precision: amp_fp8`), torchtitan through
    /// torchao's Float8 linears; DeepSpeed's config sets bf16, fp16 or fp32 only.
    pub fn trains_fp8(self) -> bool {
        self != Framework::DeepSpeed
    }

    /// Whether selective recomputation is torchtitan's op-level policy (keep the outputs of
    /// matmuls, SDPA and reduce-scatters except every second matmul; re-run the rest) rather
    /// than Megatron-LM's attention-core recomputation (Korthikanti et al. 2022 §5).
    pub fn op_level_selective(self) -> bool {
        self == Framework::Torchtitan
    }

    /// Whether the loss is a fused kernel on 16-bit logits (flash-attn's cross-entropy) rather
    /// than a softmax over an fp32 copy of the logits.
    pub fn fused_loss(self) -> bool {
        self == Framework::LlmFoundry
    }

    /// Bytes per logit the loss holds at its peak besides what it saves for the backward
    /// (the saved fp32 softmax of an unfused loss is counted with the activations), for
    /// `e`-byte logits, `te_fused` where a Megatron plan runs Transformer Engine's fused
    /// cross-entropy (`Plan::loss_fusion`):
    /// - Transformer Engine's fused loss writes the gradient into the logits it saves: 0;
    /// - fused (flash-attn's cross-entropy, llm-foundry): the 16-bit logits, `e`;
    /// - Megatron's `vocab_parallel_cross_entropy` (Megatron-LM and Megatron-DeepSpeed): the
    ///   16-bit logits beside the fp32 copy that becomes the saved softmax, `e + 4`; its
    ///   backward works in place on the softmax and casts it to a 16-bit gradient (`e`);
    /// - torchtitan's eager `cross_entropy(pred.flatten(0, 1).float(), labels)`
    ///   (torchtitan/components/loss.py; train.py deletes `pred` before `loss.backward()`,
    ///   "need to free to before bwd to avoid peaking memory"): forward holds the 16-bit
    ///   logits and their fp32 copy beside the saved fp32 log-softmax output (`e + 4`);
    ///   backward holds that output with the nll's dense fp32 gradient and log-softmax's fp32
    ///   input gradient (8). The peak is the larger, 8 bytes for 16-bit logits.
    pub fn loss_working_bytes(self, e: f64, te_fused: bool) -> f64 {
        match self {
            _ if te_fused => 0.0,
            _ if self.fused_loss() => e,
            Framework::Torchtitan => (e + 4.0).max(8.0),
            _ => e + 4.0,
        }
    }

    /// Cross-entropy passes over the logits that each micro-batch runs for training metrics,
    /// beside its loss. Composer's Trainer updates the model's training metrics after every
    /// micro-batch's backward (mosaicml/composer `composer/trainer/trainer.py`
    /// `_train_microbatch` → `_eval_train_metrics`, @ef6e6918); llm-foundry's MPT defines two,
    /// `LanguageCrossEntropy` and `LanguagePerplexity`, each a `torch.nn.CrossEntropyLoss` over
    /// the whole logits (llmfoundry/models/mpt/modeling_mpt.py `ComposerMPTCausalLM`; on by
    /// default, `use_train_metrics` from PR #642, October 2023, only adds a switch).
    pub fn train_metric_passes(self) -> u64 {
        match self {
            Framework::LlmFoundry => 2,
            _ => 0,
        }
    }

    /// All frameworks.
    pub const ALL: [Framework; 4] = [
        Framework::Megatron,
        Framework::DeepSpeed,
        Framework::Torchtitan,
        Framework::LlmFoundry,
    ];
}

/// A parallelism a framework lacks: the plan field, its size in a plan, what it is.
pub type Lack = (&'static str, fn(&Plan) -> u64, &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    /// Serde writes each framework as the command line spells it (`deepspeed`, once
    /// `deep-speed`), and still reads the old spelling in JSON written before.
    #[test]
    fn serde_spelling_is_the_command_line_name() {
        for f in Framework::ALL {
            let text = serde_json::to_string(&f).unwrap();
            assert_eq!(text, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<Framework>(&text).unwrap(), f);
        }
        let old: Framework = serde_json::from_str("\"deep-speed\"").unwrap();
        assert_eq!(old, Framework::DeepSpeed);
    }
}
