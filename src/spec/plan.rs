//! The execution strategy (a plan): how a model is split over a cluster, and which memory and
//! overlap techniques are on. Structural checks (`plan/check.rs`) turn an impossible plan into
//! reasons.

use crate::units::Dtype;
use serde::{Deserialize, Serialize};

pub use super::framework::Framework;
use super::framework::MAKE_VOCAB_SIZE_DIVISIBLE_BY;
pub use super::infeasible::Infeasible;

/// Activation recomputation (Korthikanti et al. 2022, "Reducing Activation Recomputation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Recompute {
    /// Keep every activation.
    None,
    /// Recompute part of each layer (§5): under Megatron the plan's `recompute_modules`, the
    /// attention core (scores, softmax, dropout, context) by default; torchtitan's op-level
    /// policy.
    Selective,
    /// Keep only each layer's input and re-run the whole forward in backward (§4.2).
    Full,
}

impl Recompute {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Recompute::None => "none",
            Recompute::Selective => "selective",
            Recompute::Full => "full",
        }
    }
    /// All modes, cheapest memory last.
    pub const ALL: [Recompute; 3] = [Recompute::None, Recompute::Selective, Recompute::Full];
}

/// How Transformer Engine scales an FP8 tensor (Megatron-LM `--fp8-recipe`; TE
/// `common/recipe`): what a cast costs beside the GEMMs ([`crate::graph`]'s FP8 casts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fp8Recipe {
    /// Delayed scaling (TE `DelayedScaling`, Megatron-LM's default): the scale comes from
    /// earlier steps' amax history and the cast records this tensor's amax as it writes.
    #[default]
    Delayed,
    /// Per-tensor current scaling (TE `Float8CurrentScaling`, NeMo's FP8-CS): the scale comes
    /// from this tensor's own amax, read in a pass of its own before the cast unless the norm
    /// that produced it computed it (TE `Float8CurrentScalingQuantizer::quantize_impl`).
    Tensorwise,
}

impl Fp8Recipe {
    /// The recipes priced.
    pub const ALL: [Fp8Recipe; 2] = [Fp8Recipe::Delayed, Fp8Recipe::Tensorwise];
    /// Name as written on the command line (Megatron-LM's `--fp8-recipe` choices).
    pub fn name(self) -> &'static str {
        match self {
            Fp8Recipe::Delayed => "delayed",
            Fp8Recipe::Tensorwise => "tensorwise",
        }
    }
}

/// Pipeline schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// All forwards, then all backwards (Huang et al. 2019).
    Gpipe,
    /// One-forward-one-backward, PipeDream-flush (Narayanan et al. 2021 §2.2.1).
    #[serde(rename = "1f1b")]
    OneFOneB,
    /// Interleaved 1F1B with `vpp` model chunks per stage (Narayanan et al. 2021 §2.2.2).
    Interleaved,
}

impl Schedule {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Gpipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
            Schedule::Interleaved => "interleaved",
        }
    }
}

/// How the attention core is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionImpl {
    /// Fused, IO-aware kernel that never stores the s×s scores (Dao et al. 2022, 2023).
    Flash,
    /// Batched GEMMs with a materialised softmax (Megatron-LM 2021, `CoreAttention`).
    Unfused,
    /// FlashAttention written in Triton (the kernel MosaicML's llm-foundry used by default):
    /// FlashAttention-2 is 1.3–1.5× faster forward and about 2× faster backward (Dao 2023 §4.1).
    FlashTriton,
}

impl AttentionImpl {
    /// Name as written on the command line (and in plan JSON).
    pub fn name(self) -> &'static str {
        match self {
            AttentionImpl::Flash => "flash",
            AttentionImpl::Unfused => "unfused",
            AttentionImpl::FlashTriton => "flash-triton",
        }
    }
}

/// How much tensor-parallel communication the framework hides behind GEMMs.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum TpOverlap {
    /// Every TP collective is exposed (Megatron-LM before its async TP all-reduce, 2021).
    None,
    /// The input-gradient collective of column-parallel layers runs during the weight-gradient
    /// GEMM (Megatron-LM `async_tensor_model_parallel_allreduce`, on by default since late 2021).
    #[default]
    Backward,
    /// All TP collectives are pipelined with their GEMMs (Transformer Engine userbuffers,
    /// Megatron-Core `--tp-comm-overlap`).
    Full,
}

impl TpOverlap {
    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            TpOverlap::None => "none",
            TpOverlap::Backward => "backward",
            TpOverlap::Full => "full",
        }
    }
}

/// The widest head fused attention kernels take: FlashAttention-2 "supports all head
/// dimensions up to 256" (Dao-AILab/flash-attention README), as do FlashAttention-3 and
/// cuDNN's fused attention on Hopper.
pub const MAX_FUSED_HEAD_DIM: u64 = 256;

/// One way of laying a model out on a cluster, with its memory and overlap options.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    /// Data-parallel replicas.
    pub dp: u64,
    /// Tensor-parallel ranks (Megatron column/row split).
    pub tp: u64,
    /// Pipeline stages.
    pub pp: u64,
    /// Context-parallel ranks (sequence split in attention, ring exchange of K/V).
    pub cp: u64,
    /// Expert-parallel ranks: the experts are spread over `ep` ranks of each pipeline stage,
    /// `etp` apart ([`Plan::etp`]).
    pub ep: u64,
    /// Expert tensor parallelism: how many ranks split each expert's weights (Megatron-Core
    /// `--expert-tensor-parallel-size`, 1 or tp here). `None`: tp, Megatron-LM's default.
    /// Megatron-Core lays a pipeline stage's tp·cp·dp ranks out for the expert layers as
    /// etp × ep × expert-dp, in that order (`expert_decoder_rank_generator`, order
    /// `tp-ep-dp-pp`): with etp 1 the expert-parallel ranks are adjacent and include the TP
    /// ranks, and each rank computes whole experts on the tokens routed to it, with no
    /// gather over the TP ranks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etp: Option<u64>,
    /// Virtual pipeline stages (model chunks) per pipeline rank; 1 unless interleaved.
    pub vpp: u64,
    /// Micro-batch size in sequences.
    pub mbs: u64,
    /// Global batch in sequences.
    pub global_batch: u64,
    /// Sequence length in tokens.
    pub seq_len: u64,
    /// Activation recomputation.
    pub recompute: Recompute,
    /// What selective recomputation re-runs under Megatron-Core (`--recompute-modules`):
    /// the attention core by default.
    #[serde(default, skip_serializing_if = "RecomputeModules::is_default")]
    pub recompute_modules: RecomputeModules,
    /// ZeRO stage: 0 none, 1 optimizer states (Megatron distributed optimizer), 2 + gradients,
    /// 3 + parameters (FSDP full shard).
    pub zero: u8,
    /// Megatron sequence parallelism in the TP regions outside attention and MLP GEMMs.
    pub sequence_parallel: bool,
    /// Overlap the DP gradient reduction with the backward pass.
    pub overlap_grad_reduce: bool,
    /// GEMM data type.
    pub dtype: Dtype,
    /// Pipeline schedule.
    pub schedule: Schedule,
    /// Attention kernel.
    pub attention: AttentionImpl,
    /// TP communication hidden behind GEMMs.
    #[serde(default)]
    pub tp_overlap: TpOverlap,
    /// Training framework.
    #[serde(default)]
    pub framework: Framework,
    /// Transformer layers per pipeline stage when not uniform (length pp, sum = layers; each
    /// a multiple of vpp, the stage's chunks sharing it evenly).
    #[serde(default)]
    pub stage_layers: Option<Vec<u64>>,
    /// With full recomputation: how many layers of each stage recompute (length pp; the
    /// others keep their activations, Megatron's `--recompute-method block`). `None`: all.
    #[serde(default)]
    pub recompute_layers: Option<Vec<u64>>,
    /// Megatron adds each micro-batch's weight gradients into the fp32 `main_grad` inside the
    /// weight-gradient GEMM (`--gradient-accumulation-fusion`, on by default since 2022);
    /// false: a separate `main_grad.add_(grad)` pass after every backward (Megatron-LM 2021,
    /// `--no-gradient-accumulation-fusion`); priced by `cost::grad_accumulate_bytes`.
    #[serde(default = "yes")]
    pub grad_accumulation_fusion: bool,
    /// Precision of the data-parallel gradient reduction where the run sets it apart from the
    /// framework's default ([`Plan::grad_reduce_bytes`]): Composer's FSDP `mixed_precision:
    /// PURE` reduces in bf16 where its `DEFAULT` reduces in fp32. `None`: the framework's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_reduce_dtype: Option<Dtype>,
    /// FP8 training keeps the Transformer Engine linears' weights in FP8 and the distributed
    /// optimizer all-gathers them in FP8 (Megatron-LM `--fp8-param-gather`, NeMo
    /// `fp8_params`): no 16-bit working copy and no FP8 cache beside it
    /// (`cost::memory::fp8_weight_cache_bytes`), half the gather's bytes for those weights.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fp8_param_gather: bool,
    /// How an FP8 plan scales its tensors ([`Fp8Recipe`]); JSON `fp8_recipe`, delayed where
    /// absent. Only an FP8 plan may name another.
    #[serde(default, skip_serializing_if = "is_delayed")]
    pub fp8_recipe: Fp8Recipe,
    /// Megatron-Core computes the loss with Transformer Engine's fused cross-entropy
    /// (`--cross-entropy-loss-fusion --cross-entropy-fusion-impl te`, which NVIDIA's
    /// Megatron-Bridge recipes set): one kernel on the 16-bit logits that writes their
    /// gradient in place, no fp32 copy (`graph::ends`). JSON `cross_entropy_loss_fusion`.
    #[serde(
        rename = "cross_entropy_loss_fusion",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub loss_fusion: bool,
    /// Megatron-LM before Megatron-Core splits each pipeline send over the TP ranks and
    /// all-gathers it after receipt (`--scatter-gather-tensors-in-pipeline`, on by default in
    /// `megatron/p2p_communication.py`; Narayanan et al. SC'21 §4.1). Megatron-Core sends the
    /// whole (s/cp, b, h) tensor unless sequence parallelism has split it already
    /// (`pipeline_parallel/schedules.py` `get_tensor_shapes`). Read by `cost::p2p_bytes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub p2p_scatter_gather: bool,
    /// Whether the embedding and the loss take a layer's slot in the pipeline split
    /// (Megatron-Core's `--account-for-embedding/loss-in-pipeline-split`; JSON keys of those
    /// names): [`Plan::chunk_layer_counts`].
    #[serde(flatten)]
    pub split_accounts: SplitAccounts,
    /// Megatron-LM pads the vocabulary to a multiple of this times tp
    /// (`--make-vocab-size-divisible-by`, 128 by default; [`Framework::vocab_rows`]); JSON key
    /// of that name. Frameworks that build the vocabulary as given refuse another value.
    #[serde(
        rename = "make_vocab_size_divisible_by",
        default = "default_vocab_divisor",
        skip_serializing_if = "is_default_vocab_divisor"
    )]
    pub vocab_divisor: u64,
}

fn yes() -> bool {
    true
}

fn is_delayed(r: &Fp8Recipe) -> bool {
    *r == Fp8Recipe::Delayed
}

fn default_vocab_divisor() -> u64 {
    MAKE_VOCAB_SIZE_DIVISIBLE_BY
}

fn is_default_vocab_divisor(d: &u64) -> bool {
    *d == MAKE_VOCAB_SIZE_DIVISIBLE_BY
}

impl Plan {
    /// The plan's `--make-vocab-size-divisible-by` where it is not Megatron-LM's default (what
    /// labels, exports and the framework check name); `None` at the default.
    pub fn custom_vocab_divisor(&self) -> Option<u64> {
        Some(self.vocab_divisor).filter(|d| !is_default_vocab_divisor(d))
    }
}

impl Plan {
    /// Bytes per gradient element in the data-parallel reduction: the plan's own reduction
    /// precision where it sets one (`grad_reduce_dtype`), else fp32 for bf16 training
    /// (Megatron-LM forces `accumulate_allreduce_grads_in_fp32` with bf16; DeepSpeed's BF16
    /// optimizer reduces its fp32 accumulation buffers; torchtitan's FSDP2 `reduce_dtype` is
    /// fp32; Composer's default FSDP mixed precision, `DEFAULT`, reduces in fp32 —
    /// mosaicml/composer `get_mixed_precision`) and 16-bit for fp16 (Megatron-LM 2021 reduces
    /// fp16 gradients).
    pub fn grad_reduce_bytes(&self) -> f64 {
        if let Some(d) = self.grad_reduce_dtype {
            return d.bytes();
        }
        match self.dtype {
            Dtype::Fp16 => 2.0,
            _ => 4.0,
        }
    }

    /// A plan with the given layout and batch and every option at its default: no
    /// recomputation, ZeRO-0, no sequence parallelism, bf16, 1F1B (interleaved when vpp > 1),
    /// flash attention, Megatron.
    pub fn new(dp: u64, tp: u64, pp: u64, mbs: u64, global_batch: u64, seq_len: u64) -> Plan {
        Plan {
            dp,
            tp,
            pp,
            cp: 1,
            ep: 1,
            etp: None,
            vpp: 1,
            mbs,
            global_batch,
            seq_len,
            recompute: Recompute::None,
            recompute_modules: RecomputeModules::CORE_ATTN,
            zero: 0,
            sequence_parallel: false,
            overlap_grad_reduce: false,
            dtype: Dtype::Bf16,
            schedule: Schedule::OneFOneB,
            attention: AttentionImpl::Flash,
            tp_overlap: TpOverlap::default(),
            framework: Framework::default(),
            stage_layers: None,
            recompute_layers: None,
            grad_accumulation_fusion: true,
            grad_reduce_dtype: None,
            fp8_param_gather: false,
            fp8_recipe: Fp8Recipe::Delayed,
            loss_fusion: false,
            p2p_scatter_gather: false,
            split_accounts: SplitAccounts::default(),
            vocab_divisor: MAKE_VOCAB_SIZE_DIVISIBLE_BY,
        }
    }

    /// Vocabulary rows of the embedding and the output layer on each TP rank, padded as the
    /// plan's framework pads them ([`Framework::vocab_rows`]).
    pub fn vocab_rows(&self, vocab: u64) -> u64 {
        self.framework
            .vocab_rows(vocab, self.tp, self.vocab_divisor)
    }

    /// Micro-batches per step per pipeline: global_batch / (dp · mbs).
    pub fn n_micro(&self) -> u64 {
        self.global_batch / (self.dp * self.mbs).max(1)
    }

    /// GPUs used: dp · tp · pp · cp.
    pub fn n_gpus(&self) -> u64 {
        self.dp * self.tp * self.pp * self.cp
    }

    /// Whether the plan replicates its data-parallel ranks (ZeRO-0, DDP) beside tensor,
    /// pipeline or context parallelism ([`Framework::runs_ddp_beside_model_parallel`]).
    pub fn ddp_beside_model_parallel(&self) -> bool {
        self.zero == 0 && self.dp > 1 && self.tp * self.pp * self.cp > 1
    }

    /// Whether sequence parallelism is in effect (it is a no-op without TP).
    pub fn sp(&self) -> bool {
        self.sequence_parallel && self.tp > 1
    }

    /// The `planner estimate` flags of what [`Plan::short`] leaves out (framework, dtype and
    /// FP8 recipe, attention kernel, TP overlap, gradient-reduction overlap and accumulation
    /// fusion), so a label can be re-priced as it was ranked.
    pub fn label_flags(&self) -> String {
        let mut f = format!(
            "--global-batch {} --seq-len {} --framework {} --dtype {} --attention {} --tp-overlap {}",
            self.global_batch,
            self.seq_len,
            self.framework.name(),
            self.dtype.name(),
            self.attention.name(),
            self.tp_overlap.name()
        );
        if self.fp8_recipe != Fp8Recipe::Delayed {
            f += &format!(" --fp8-recipe {}", self.fp8_recipe.name());
        }
        if self.loss_fusion {
            f += " --cross-entropy-loss-fusion";
        }
        if self.overlap_grad_reduce {
            f += " --overlap-grad-reduce";
        }
        if !self.grad_accumulation_fusion {
            f += " --no-gradient-accumulation-fusion";
        }
        f
    }

    /// Every field of the plan as `planner estimate` flags: with the model and cluster (and the
    /// calibration profile, where one priced it) they price this plan again. CSV rows carry
    /// it (`priced_with`): the layout columns there do not hold uneven stages, the ILP's
    /// per-stage recomputation, the pipeline split's accounting or the schedule.
    pub fn estimate_flags(&self) -> String {
        let mut f = format!(
            "--dp {} --tp {} --pp {} --cp {} --ep {}",
            self.dp, self.tp, self.pp, self.cp, self.ep
        );
        if let Some(etp) = self.etp {
            f += &format!(" --etp {etp}");
        }
        f += &format!(
            " --vpp {} --micro-batch {} --recompute {}",
            self.vpp,
            self.mbs,
            self.recompute.name()
        );
        if self.recompute == Recompute::Selective && !self.recompute_modules.is_default() {
            f += &format!(" --recompute-modules {}", self.recompute_modules);
        }
        if let Some(l) = &self.recompute_layers {
            f += &format!(" --recompute-layers {}", fold_counts(l, ","));
        }
        f += &format!(" --zero {}", self.zero);
        if self.sequence_parallel {
            f += " --sequence-parallel";
        }
        if let Some(l) = &self.stage_layers {
            f += &format!(" --stage-layers {}", fold_counts(l, ","));
        }
        f += &format!(
            " --schedule {} {}",
            self.schedule.name(),
            self.label_flags()
        );
        if let Some(d) = self.grad_reduce_dtype {
            f += &format!(" --grad-reduce-dtype {}", d.name());
        }
        if self.fp8_param_gather {
            f += " --fp8-param-gather";
        }
        if self.p2p_scatter_gather {
            f += " --p2p-scatter-gather";
        }
        if self.split_accounts.embedding {
            f += " --account-for-embedding-in-pipeline-split";
        }
        if self.split_accounts.loss {
            f += " --account-for-loss-in-pipeline-split";
        }
        if !is_default_vocab_divisor(&self.vocab_divisor) {
            f += &format!(" --make-vocab-size-divisible-by {}", self.vocab_divisor);
        }
        f
    }

    /// `(modules)` after `selective` where the plan recomputes other Megatron-Core modules
    /// than the attention core (`estimate --recompute selective --recompute-modules
    /// modules` re-prices it); empty otherwise.
    pub fn modules_suffix(&self) -> String {
        if self.recompute == Recompute::Selective && !self.recompute_modules.is_default() {
            format!("({})", self.recompute_modules)
        } else {
            String::new()
        }
    }

    /// Why this plan could not keep FP8 weights and gather them in FP8 (Megatron-LM
    /// `--fp8-param-gather`: FP8 training, Megatron, and the distributed optimizer as planner
    /// prices it), or `None` where it could, whatever `fp8_param_gather` says.
    pub fn fp8_param_gather_refusal(&self) -> Option<&'static str> {
        if self.dtype != Dtype::Fp8 {
            Some("under FP8 training; use --dtype fp8, or drop it")
        } else if self.framework != Framework::Megatron {
            Some("in Megatron-LM; use --framework megatron, or drop it")
        } else if self.zero != 1 {
            // Megatron-LM asserts it with the distributed optimizer or torch FSDP2
            // (arguments.py); planner prices the FP8 gather of the distributed optimizer
            // only, not FSDP2's per-micro-batch FP8 gathers.
            Some(
                "with the distributed optimizer as planner prices it (Megatron also takes it with FSDP2, zero 3, which planner does not price with FP8 weights); use --zero 1, or drop it",
            )
        } else {
            None
        }
    }

    /// Whether splitting pipeline sends over the TP ranks would change them: tp and pp > 1,
    /// and no sequence parallelism (which splits them already).
    pub fn p2p_split_matters(&self) -> bool {
        self.tp > 1 && self.pp > 1 && !self.sp()
    }

    /// Whether legacy Megatron's scatter/gather is in effect ([`Plan::p2p_scatter_gather`]
    /// where [`Plan::p2p_split_matters`]): each rank sends 1/tp and the receiver all-gathers
    /// the parts over TP.
    pub fn scatters_p2p(&self) -> bool {
        self.p2p_scatter_gather && self.p2p_split_matters()
    }

    /// Whether the plan keeps Transformer Engine's FP8 copy of each linear weight beside the
    /// 16-bit one (`cost::memory::fp8_weight_cache_bytes`): FP8 Megatron plans whose weights
    /// stay whole on the rank (ZeRO < 3) and are not FP8 themselves.
    pub fn keeps_fp8_weight_copy(&self) -> bool {
        self.dtype == Dtype::Fp8
            && self.framework == Framework::Megatron
            && self.zero < 3
            && !self.fp8_param_gather
    }

    /// Expert tensor parallelism: [`Plan::etp`](Plan#structfield.etp), or tp where unset.
    pub fn etp(&self) -> u64 {
        self.etp.unwrap_or(self.tp)
    }

    /// Expert data parallelism: the ranks of a pipeline stage that hold the same expert
    /// shard and reduce its gradients, tp·cp·dp / (etp·ep) (dp·cp / ep where etp = tp).
    pub fn expert_dp(&self) -> u64 {
        (self.tp * self.cp * self.dp / (self.etp() * self.ep).max(1)).max(1)
    }

    /// A one-line summary such as `dp=8 tp=4 pp=2 mbs=1 rc=full zero1 sp`; `p2p-sg` last where
    /// the plan splits its pipeline sends as legacy Megatron-LM does (`p2p_scatter_gather`).
    pub fn short(&self) -> String {
        let mut s = format!("dp={} tp={} pp={}", self.dp, self.tp, self.pp);
        if self.cp > 1 {
            s += &format!(" cp={}", self.cp);
        }
        if self.ep > 1 {
            s += &format!(" ep={}", self.ep);
        }
        if self.etp() != self.tp {
            s += &format!(" etp={}", self.etp());
        }
        if self.vpp > 1 {
            s += &format!(" vpp={}", self.vpp);
        }
        s += &format!(
            " mbs={} rc={}{} zero{}",
            self.mbs,
            self.recompute.name(),
            self.modules_suffix(),
            self.zero
        );
        if self.fp8_param_gather {
            s += " fp8-params";
        }
        if self.sp() {
            s += " sp";
        }
        if let Some(l) = &self.stage_layers {
            s += &format!(" layers={}", fold_counts(l, ","));
        }
        if let Some(r) = &self.recompute_layers {
            s += &format!(" rc_layers={}", fold_counts(r, ","));
        }
        if self.split_accounts.any() {
            s += &format!(" split+{}", self.split_accounts.label());
        }
        if self.p2p_scatter_gather {
            s += " p2p-sg";
        }
        if let Some(d) = self.custom_vocab_divisor() {
            s += &format!(" vocab-pad={d}");
        }
        s
    }
}

mod check;
mod counts;
mod layout;
pub use counts::{fold_counts, unfold_counts};
pub use layout::{SplitAccounts, chunk_counts};
mod modules;
pub use modules::RecomputeModules;

#[cfg(test)]
mod tests;
