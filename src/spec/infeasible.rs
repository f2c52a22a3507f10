//! Why a plan cannot run: `Infeasible` reasons are values (the search tallies them) with the
//! plan field a user would change and a message that says how.

use std::fmt;

/// Most tokens one micro-batch may hold: 2^26 (67 M, 64× a million-token context). Past it
/// the graph's element counts (tokens × widths up to 2^24) leave u64.
pub const MAX_MICRO_BATCH_TOKENS: u64 = 1 << 26;

/// Micro-batches per step beyond which a plan is a typo: 128× the 512 of the longest published
/// pipeline schedule we know (Megatron-LM SC'21 Table 1, 1T model: global batch 3,072 over
/// dp 6, micro-batch 1); the simulator's events grow with them.
pub const MAX_MICRO_BATCHES: u64 = 1 << 16;

/// The label of [`Infeasible::OutOfMemory`], for tallies that count plans the memory estimate
/// rejects without building the value.
pub const OUT_OF_MEMORY: &str = "out of memory";

/// Why a plan cannot run: a value (search tallies these), not an error.
#[derive(Clone, Debug, PartialEq)]
pub enum Infeasible {
    /// A size of zero.
    Zero,
    /// dp·tp·pp·cp differs from the cluster's GPU count.
    GpuCount {
        /// dp·tp·pp·cp.
        product: u64,
        /// GPUs in the cluster.
        gpus: u64,
        /// tp·pp·cp.
        model_parallel: u64,
    },
    /// tp does not divide the (key/value) heads.
    HeadsNotDivisible {
        /// Query heads.
        heads: u64,
        /// Key/value heads.
        kv_heads: u64,
        /// Tensor parallelism.
        tp: u64,
    },
    /// tp does not divide an MLP width (the dense MLP's, or an expert's).
    FfnNotDivisible {
        /// The model field: `ffn_hidden` or `moe.expert_ffn_hidden`.
        field: &'static str,
        /// MLP width.
        ffn: u64,
        /// Tensor parallelism.
        tp: u64,
    },
    /// A TP group would cross nodes.
    TpAcrossNodes {
        /// Tensor parallelism.
        tp: u64,
        /// GPUs per node.
        gpus_per_node: u64,
    },
    /// The embedding or loss counted as a layer of the pipeline split where Megatron-Core
    /// would not split so (`Plan::split_accounts`).
    SplitAccounts {
        /// The plan field (embedding's or loss's).
        field: &'static str,
        /// Why, and the fix.
        why: String,
    },
    /// pp·vpp does not divide the layers.
    LayersNotDivisible {
        /// Layers.
        layers: u64,
        /// Pipeline stages.
        pp: u64,
        /// Chunks per stage.
        vpp: u64,
        /// The framework can count the embedding and the loss as layers of the split
        /// (Megatron-Core's `--account-for-embedding/loss-in-pipeline-split`).
        slots: bool,
    },
    /// An explicit stage partition that does not cover the layers once.
    StageLayers {
        /// Layers per stage given.
        given: Vec<u64>,
        /// Model layers.
        layers: u64,
        /// Pipeline stages.
        pp: u64,
        /// Chunks per stage (an explicit partition needs 1).
        vpp: u64,
    },
    /// Per-stage recompute counts that do not fit the stages (or full recompute is off).
    RecomputeLayers {
        /// Counts given.
        given: Vec<u64>,
        /// Pipeline stages.
        pp: u64,
        /// Layers of each stage.
        per_stage: Vec<u64>,
        /// Whether the plan recomputes fully (the counts say which layers).
        full: bool,
    },
    /// dp·mbs does not divide the global batch.
    BatchNotDivisible {
        /// Global batch.
        global_batch: u64,
        /// Data parallelism.
        dp: u64,
        /// Micro-batch size.
        mbs: u64,
    },
    /// The sequence cannot be split evenly over cp (×2 for causal load balance) and SP.
    SeqNotDivisible {
        /// Sequence length.
        seq_len: u64,
        /// Required divisor.
        by: u64,
    },
    /// Sequence longer than the learned position embeddings.
    SeqBeyondPositions {
        /// Requested length.
        seq_len: u64,
        /// Positions the model has.
        positions: u64,
    },
    /// More tokens in one micro-batch than any run holds: a typo, and past it the graph's
    /// byte and FLOP counts would overflow.
    MicroBatchTokens {
        /// mbs · seq_len.
        tokens: u64,
    },
    /// More micro-batches per step than [`MAX_MICRO_BATCHES`].
    TooManyMicroBatches {
        /// global_batch / (dp · mbs).
        n_micro: u64,
    },
    /// A sliding window shorter than the sequence in a framework that runs none.
    FrameworkWindow {
        /// Framework name.
        framework: &'static str,
        /// The window.
        window: u64,
    },
    /// A sliding window shorter than the sequence under an attention kernel that planner
    /// does not price it in.
    WindowKernel {
        /// Attention kernel name.
        kernel: &'static str,
        /// The window.
        window: u64,
    },
    /// A sliding window shorter than the sequence with context parallelism.
    WindowWithCp {
        /// Context parallelism.
        cp: u64,
        /// The window.
        window: u64,
    },
    /// Multi-head latent attention in a plan planner does not price it under: another
    /// framework than Megatron-LM, another kernel than fused attention, or context
    /// parallelism.
    MlaUnpriced {
        /// The plan field (`framework`, `attention`, `cp`).
        field: &'static str,
        /// Its value.
        given: String,
    },
    /// Multi-token prediction under a framework that does not train it.
    MtpUnpriced {
        /// The framework's name.
        framework: &'static str,
        /// Depths.
        layers: u64,
    },
    /// Megatron-Core recomputation modules the plan cannot have: outside Megatron, or
    /// `mla_up_proj` without latent attention (Megatron-Core refuses it).
    RecomputeModules {
        /// The framework's name.
        framework: &'static str,
        /// The modules given.
        given: String,
        /// A module the model has nothing for: (its name, what it recomputes and why the
        /// model has none of it).
        missing: Option<(&'static str, &'static str)>,
    },
    /// ep does not divide the experts, or etp·ep the ranks of a pipeline stage.
    ExpertsNotDivisible {
        /// Experts.
        experts: u64,
        /// Expert parallelism.
        ep: u64,
        /// Expert tensor parallelism.
        etp: u64,
        /// Ranks of one pipeline stage, tp·cp·dp, which the expert layers lay out as
        /// etp × ep × expert-dp.
        stage_ranks: u64,
    },
    /// Whole experts per rank (etp 1 under tp > 1) in a framework priced only with experts
    /// split over the TP ranks.
    FrameworkEtp {
        /// Framework name.
        framework: &'static str,
    },
    /// An expert tensor-parallel size other than 1 or tp.
    ExpertTp {
        /// Expert tensor parallelism.
        etp: u64,
        /// Tensor parallelism.
        tp: u64,
        /// Whether the model has experts.
        moe: bool,
    },
    /// ep > 1 on a dense model.
    EpWithoutExperts {
        /// Expert parallelism.
        ep: u64,
    },
    /// Interleaving needs pp ≥ 2 and vpp ≥ 2 (and vpp > 1 needs the interleaved schedule).
    InterleavedNeedsChunks {
        /// Pipeline stages.
        pp: u64,
        /// Chunks per stage.
        vpp: u64,
    },
    /// GPipe on one stage: there is no pipeline, and every framework runs gradient
    /// accumulation one micro-batch's forward and backward at a time.
    GpipeNeedsStages {
        /// Pipeline stages.
        pp: u64,
    },
    /// GPipe in a framework whose pipelines run 1F1B (Megatron-LM's
    /// `forward_backward_pipelining_*`, DeepSpeed's `TrainSchedule`).
    FrameworkGpipe {
        /// The framework's name.
        framework: &'static str,
    },
    /// Megatron's interleaved schedule needs the micro-batch count to be a multiple of pp.
    InterleavedMicroBatches {
        /// Micro-batches.
        n_micro: u64,
        /// Pipeline stages.
        pp: u64,
    },
    /// ZeRO stage out of range.
    ZeroStage {
        /// Stage given.
        zero: u8,
    },
    /// ZeRO-2/3 shard gradients that pipeline micro-batches accumulate (DeepSpeed refuses it;
    /// only torchtitan's FSDP pipelines, `Framework::pipelines_sharded_data`).
    ZeroWithPipeline {
        /// Stage.
        zero: u8,
        /// Pipeline stages.
        pp: u64,
    },
    /// Tied input and output embeddings split over pipeline stages, which torchtitan refuses
    /// (`NotImplementedError("Weight tying is not supported with Pipeline Parallel.")`,
    /// pytorch/torchtitan `torchtitan/models/common/decoder.py`).
    TiedWithPipeline {
        /// The framework's name.
        framework: &'static str,
        /// Pipeline stages.
        pp: u64,
    },
    /// Replicated data parallelism (ZeRO-0) beside tensor, pipeline or context parallelism,
    /// which torchtitan's DDP does not run (`apply_ddp`: "DDP has not supported > 1D
    /// parallelism", pytorch/torchtitan `parallelize.py`).
    DdpBesideModelParallel {
        /// The framework's name.
        framework: &'static str,
        /// Data-parallel size.
        dp: u64,
    },
    /// The framework has no implementation of a parallelism the plan uses.
    FrameworkLacks {
        /// The framework's name.
        framework: &'static str,
        /// The plan field.
        field: &'static str,
        /// Its size.
        size: u64,
        /// What the framework lacks.
        what: &'static str,
    },
    /// A ZeRO stage the framework has no implementation of (FSDP has no optimizer-only
    /// sharding: torchtitan and llm-foundry run 0, 2 and 3).
    FrameworkZero {
        /// The framework's name.
        framework: &'static str,
        /// Stage given.
        zero: u8,
        /// Stages it runs.
        stages: &'static [u8],
        /// Why it lacks the others.
        why: &'static str,
    },
    /// A data type the framework does not train in.
    FrameworkDtype {
        /// The framework's name.
        framework: &'static str,
        /// The type.
        dtype: &'static str,
    },
    /// Part of a stage recomputed under interleaving, which no framework runs as priced.
    PartialRecomputeInterleaved {
        /// Virtual stages.
        vpp: u64,
    },
    /// The plan computes in a type the device has no tensor-core rate for (FP8 on an A100).
    DtypeUnsupported {
        /// The type.
        dtype: &'static str,
        /// The device.
        device: String,
    },
    /// Gradients reduced in a type no framework reduces them in: FP8 or TF32, or a 16-bit
    /// type other than the one the plan trains in.
    GradReduceDtype {
        /// The reduction type.
        dtype: &'static str,
        /// The type the plan trains in.
        training: &'static str,
        /// What to write instead.
        allowed: &'static str,
    },
    /// FP8 weights gathered in FP8 (`--fp8-param-gather`) outside what Megatron-LM allows:
    /// FP8 training with its distributed optimizer.
    Fp8ParamGather {
        /// Why not.
        why: &'static str,
    },
    /// An FP8 scaling recipe other than the default on a plan that does not train in FP8.
    Fp8Recipe {
        /// The recipe given.
        recipe: &'static str,
        /// The plan's data type.
        dtype: &'static str,
    },
    /// Transformer Engine's fused cross-entropy is Megatron-Core's option.
    LossFusion {
        /// The plan's framework.
        framework: &'static str,
    },
    /// Scatter/gather of pipeline sends is legacy Megatron-LM's option.
    P2pScatterGather {
        /// The plan's framework.
        framework: &'static str,
    },
    /// Vocabulary padding (`--make-vocab-size-divisible-by`) under a framework that builds
    /// the vocabulary as given.
    VocabPadding {
        /// The plan's framework.
        framework: &'static str,
        /// The divisor given.
        divisor: u64,
    },
    /// Megatron-LM runs a mixture-of-experts model with tensor parallelism only with sequence
    /// parallelism.
    MoeTpNeedsSp {
        /// Tensor parallelism.
        tp: u64,
    },
    /// Context parallelism with the materialised-softmax attention, which has no ring.
    CpNeedsFlash {
        /// Context parallelism.
        cp: u64,
    },
    /// A fused attention kernel given heads wider than it takes.
    FusedAttentionHeadDim {
        /// The model's head size.
        head_dim: u64,
    },
    /// A fused attention kernel given 32-bit tensors it does not take
    /// ([`Framework::fused_attention_takes`](super::Framework::fused_attention_takes)).
    FusedAttentionDtype {
        /// Framework name.
        framework: &'static str,
        /// Attention kernel name.
        kernel: &'static str,
        /// Training type.
        dtype: &'static str,
    },
    /// Peak memory exceeds the device.
    OutOfMemory {
        /// Predicted peak, GiB.
        need_gib: f64,
        /// Device memory, GiB.
        have_gib: f64,
    },
}

impl Infeasible {
    /// Short label for tallies.
    pub fn label(&self) -> &'static str {
        use Infeasible as I;
        match self {
            I::Zero => "zero size",
            I::GpuCount { .. } => "dp·tp·pp·cp ≠ GPUs",
            I::HeadsNotDivisible { .. } => "tp does not divide heads or kv heads",
            I::FfnNotDivisible { .. } => "tp does not divide an MLP width",
            I::TpAcrossNodes { .. } => "tp larger than a node",
            I::LayersNotDivisible { .. } => "pp·vpp does not divide layers",
            I::SplitAccounts { .. } => "embedding/loss slot in a split that cannot take it",
            I::StageLayers { .. } => "stage partition does not cover the layers",
            I::RecomputeLayers { .. } => "recompute layers do not fit the stages",
            I::BatchNotDivisible { .. } => "dp·mbs does not divide global batch",
            I::SeqNotDivisible { .. } => "sequence not divisible by cp/sp",
            I::SeqBeyondPositions { .. } => "sequence beyond position embeddings",
            I::FrameworkWindow { .. } => "sliding window in a framework without one",
            I::WindowKernel { .. } => "sliding window outside FlashAttention",
            I::WindowWithCp { .. } => "sliding window with context parallelism",
            I::MlaUnpriced { .. } => "latent attention outside Megatron's fused kernel, cp 1",
            I::RecomputeModules { .. } => "recompute modules outside Megatron-Core's rules",
            I::MtpUnpriced { .. } => "multi-token prediction outside Megatron",
            I::MicroBatchTokens { .. } => "micro-batch tokens beyond any run",
            I::TooManyMicroBatches { .. } => "micro-batches per step beyond any run",
            I::ExpertsNotDivisible { .. } => "ep does not divide experts or the stage's ranks",
            I::ExpertTp { .. } => "expert tp other than 1 or tp",
            I::FrameworkEtp { .. } => "whole experts in a framework without them",
            I::EpWithoutExperts { .. } => "ep on a dense model",
            I::InterleavedNeedsChunks { .. } => "interleaving needs pp≥2, vpp≥2",
            I::InterleavedMicroBatches { .. } => "interleaved: micro-batches not a multiple of pp",
            I::GpipeNeedsStages { .. } => "gpipe needs pp≥2",
            I::FrameworkGpipe { .. } => "GPipe in a framework without it",
            I::PartialRecomputeInterleaved { .. } => "part of an interleaved stage recomputed",
            I::FrameworkZero { .. } => "ZeRO stage the framework lacks",
            I::FrameworkDtype { .. } => "type the framework does not train in",
            I::DtypeUnsupported { .. } => "type without tensor cores on the device",
            I::GradReduceDtype { .. } => "gradient reduction type",
            I::Fp8ParamGather { .. } => "fp8 weights outside FP8 training with ZeRO-1",
            I::Fp8Recipe { .. } => "fp8 recipe without fp8",
            I::LossFusion { .. } => "fused cross-entropy outside Megatron",
            I::P2pScatterGather { .. } => "pipeline scatter/gather outside Megatron",
            I::VocabPadding { .. } => "vocabulary padding outside Megatron",
            I::ZeroStage { .. } => "zero stage out of range",
            I::ZeroWithPipeline { .. } => "zero 2/3 with pipeline",
            I::FrameworkLacks { .. } => "parallelism the framework lacks",
            I::TiedWithPipeline { .. } => "tied embeddings with pipeline",
            I::DdpBesideModelParallel { .. } => "DDP beside tp/pp/cp",
            I::MoeTpNeedsSp { .. } => "MoE with tp needs sequence parallelism",
            I::CpNeedsFlash { .. } => "cp needs fused attention",
            I::FusedAttentionDtype { .. } => "fused attention on 32-bit tensors",
            I::FusedAttentionHeadDim { .. } => "fused attention beyond head size 256",
            I::OutOfMemory { .. } => OUT_OF_MEMORY,
        }
    }

    /// The plan field a user would change.
    pub fn field(&self) -> &'static str {
        use Infeasible as I;
        match self {
            I::Zero => "plan",
            I::GpuCount { .. } => "dp",
            I::HeadsNotDivisible { .. } | I::FfnNotDivisible { .. } | I::TpAcrossNodes { .. } => {
                "tp"
            }
            I::LayersNotDivisible { .. } => "pp",
            I::SplitAccounts { field, .. } => field,
            I::StageLayers { .. } => "stage_layers",
            I::RecomputeLayers { .. } => "recompute_layers",
            I::BatchNotDivisible { .. } => "global_batch",
            I::SeqNotDivisible { .. } | I::SeqBeyondPositions { .. } => "seq_len",
            I::FrameworkWindow { .. } => "framework",
            I::WindowKernel { .. } => "attention",
            I::WindowWithCp { .. } => "cp",
            I::MlaUnpriced { field, .. } => field,
            I::RecomputeModules { .. } => "recompute_modules",
            I::MtpUnpriced { .. } => "framework",
            I::MicroBatchTokens { .. } | I::TooManyMicroBatches { .. } => "micro_batch",
            I::ExpertsNotDivisible { .. } | I::EpWithoutExperts { .. } => "ep",
            I::ExpertTp { .. } | I::FrameworkEtp { .. } => "etp",
            I::InterleavedNeedsChunks { .. } | I::InterleavedMicroBatches { .. } => "vpp",
            I::GpipeNeedsStages { .. } | I::FrameworkGpipe { .. } => "schedule",
            I::ZeroStage { .. } | I::ZeroWithPipeline { .. } => "zero",
            I::FrameworkLacks { field, .. } => field,
            I::PartialRecomputeInterleaved { .. } => "recompute_layers",
            I::FrameworkZero { .. } | I::DdpBesideModelParallel { .. } => "zero",
            I::TiedWithPipeline { .. } => "pp",
            I::FrameworkDtype { .. } => "dtype",
            I::DtypeUnsupported { .. } => "dtype",
            I::GradReduceDtype { .. } => "grad_reduce_dtype",
            I::Fp8ParamGather { .. } => "fp8_param_gather",
            I::Fp8Recipe { .. } => "fp8_recipe",
            I::LossFusion { .. } => "cross_entropy_loss_fusion",
            I::P2pScatterGather { .. } => "p2p_scatter_gather",
            I::VocabPadding { .. } => "make_vocab_size_divisible_by",
            I::MoeTpNeedsSp { .. } => "sequence_parallel",
            I::CpNeedsFlash { .. }
            | I::FusedAttentionDtype { .. }
            | I::FusedAttentionHeadDim { .. } => "attention",
            I::OutOfMemory { .. } => "memory",
        }
    }
}

impl fmt::Display for Infeasible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Infeasible as I;
        match self {
            I::Zero => write!(f, "every size must be at least 1"),
            I::GpuCount {
                product,
                gpus,
                model_parallel,
            } if gpus % model_parallel == 0 => write!(
                f,
                "dp·tp·pp·cp = {product} but the cluster has {gpus} GPUs; choose dp = {gpus}/(tp·pp·cp) = {}",
                gpus / model_parallel
            ),
            I::GpuCount {
                product,
                gpus,
                model_parallel,
            } => write!(
                f,
                "dp·tp·pp·cp = {product} but the cluster has {gpus} GPUs, and tp·pp·cp = \
                 {model_parallel} does not divide {gpus}: choose tp, pp and cp whose product \
                 divides it, or another --gpus"
            ),
            I::HeadsNotDivisible {
                heads,
                kv_heads,
                tp,
            } => write!(
                f,
                "tp={tp} does not divide heads={heads} (kv_heads={kv_heads}); use a tp that divides both"
            ),
            I::FfnNotDivisible { field, ffn, tp } => {
                let whole = if field.starts_with("moe.") {
                    ", or --etp 1 (whole experts on each rank)"
                } else {
                    ""
                };
                write!(
                    f,
                    "tp={tp} does not divide {field}={ffn}; use a tp that divides it{whole}"
                )
            }
            I::TpAcrossNodes { tp, gpus_per_node } => write!(
                f,
                "tp={tp} exceeds the {gpus_per_node} GPUs of a node; keep tp ≤ {gpus_per_node} and add pp or dp"
            ),
            I::SplitAccounts { why, .. } => write!(f, "{why}"),
            I::LayersNotDivisible {
                layers,
                pp,
                vpp,
                slots,
            } => {
                let n = pp * vpp;
                // Llama 3.1 405B's 126 layers on pp 8 × vpp 8: 126 + 2 = 128 divides.
                let count_ends = match (layers + 1) % n == 0 {
                    _ if !slots => "",
                    true => {
                        ", or count the embedding as a layer (--account-for-embedding-in-pipeline-split)"
                    }
                    false if (layers + 2) % n == 0 => {
                        ", or count the embedding and the loss as layers (--account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split)"
                    }
                    false => "",
                };
                write!(
                    f,
                    "pp·vpp = {n} does not divide layers={layers}; pick pp (and vpp) dividing {layers}{}{count_ends}",
                    if *vpp == 1 {
                        ", or give each stage its layers (--stage-layers)"
                    } else {
                        ""
                    }
                )
            }
            I::StageLayers {
                given,
                layers,
                pp,
                vpp,
            } => {
                let mut why = Vec::new();
                if given.len() as u64 != *pp {
                    why.push(format!("{} counts for pp={pp}", given.len()));
                }
                match given.iter().try_fold(0u64, |a, &n| a.checked_add(n)) {
                    Some(sum) if sum == *layers => {}
                    Some(sum) => why.push(format!("they sum to {sum}, not layers={layers}")),
                    None => why.push(format!("they sum past any count, not layers={layers}")),
                }
                if given.contains(&0) {
                    why.push("a stage of 0 layers".into());
                }
                let odd: Vec<u64> = given
                    .iter()
                    .copied()
                    .filter(|&n| n % (*vpp).max(1) != 0)
                    .collect();
                if !odd.is_empty() {
                    why.push(format!(
                        "vpp={vpp} does not divide {odd:?} (each stage splits its layers evenly over its {vpp} chunks, as Megatron-Core requires)"
                    ));
                }
                let each = if *vpp > 1 {
                    format!(", each a multiple of vpp={vpp}")
                } else {
                    String::new()
                };
                write!(
                    f,
                    "stage layers {given:?}: {}; give {pp} positive counts summing to {layers}{each}",
                    why.join(", ")
                )
            }
            I::RecomputeLayers {
                given,
                pp,
                per_stage,
                full,
            } => {
                let mut why = Vec::new();
                if !full {
                    why.push("they say which layers full recomputation covers, and recompute is not full".to_string());
                }
                if given.len() as u64 != *pp {
                    why.push(format!("{} counts for pp={pp}", given.len()));
                }
                for (i, (n, of)) in given.iter().zip(per_stage).enumerate() {
                    if n > of {
                        why.push(format!("stage {i} has {of} layers, not {n}"));
                    }
                }
                write!(
                    f,
                    "recompute layers {given:?}: {}; give --recompute full and one count per stage, each at most its stage's layers",
                    why.join(", ")
                )
            }
            I::BatchNotDivisible {
                global_batch,
                dp,
                mbs,
            } => write!(
                f,
                "global batch {global_batch} is not divisible by dp·mbs = {}; pick a global batch that is a multiple of it",
                dp * mbs
            ),
            I::SeqNotDivisible { seq_len, by } => {
                write!(
                    f,
                    "seq_len={seq_len} is not divisible by {by} (cp ×2 for causal balance, × tp with sp); use a seq_len that is a multiple of {by}"
                )
            }
            I::SeqBeyondPositions { seq_len, positions } => write!(
                f,
                "seq_len={seq_len} exceeds the model's {positions} learned positions; use seq_len ≤ {positions} or raise the model's seq_len"
            ),
            I::MicroBatchTokens { tokens } => write!(
                f,
                "micro-batch × seq_len = {tokens} tokens in one micro-batch, beyond the {MAX_MICRO_BATCH_TOKENS} planner prices (a typo?); use a smaller micro-batch or sequence"
            ),
            I::TooManyMicroBatches { n_micro } => write!(
                f,
                "{n_micro} micro-batches per step, beyond the {MAX_MICRO_BATCHES} planner prices (a typo in the global batch?); use a larger micro-batch, more data parallelism or a smaller global batch"
            ),
            I::FrameworkWindow { framework, window } => write!(
                f,
                "{framework} runs no sliding attention window (it would train full causal \
                 attention where the model's layers attend to at most {window} keys); price \
                 for --framework megatron or llm-foundry, or train at --seq-len ≤ {window}"
            ),
            I::WindowKernel { kernel, window } => write!(
                f,
                "attention={kernel} with the model's {window}-key sliding window: planner \
                 prices a window in FlashAttention's kernels only (its window_size, Transformer \
                 Engine's), which skip the blocks outside it; Megatron-LM's local attention \
                 drops the window where its fused softmax runs; price FlashAttention, which \
                 takes 16-bit tensors (--dtype bf16; `estimate --attention flash`), or \
                 --seq-len ≤ {window}"
            ),
            I::WindowWithCp { cp, window } => write!(
                f,
                "cp={cp} with the model's {window}-key sliding window: Transformer Engine \
                 slides a window under context parallelism only with --cp-comm-type a2a or \
                 all_gather (its ring asserts), which planner does not price; use cp 1, or \
                 --seq-len ≤ {window}"
            ),
            I::MtpUnpriced { framework, layers } => write!(
                f,
                "the model predicts {layers} further token(s) (mtp_layers {layers}), which planner prices as Megatron-LM trains them (--mtp-num-layers), not under {framework}; price --framework megatron, or set mtp_layers: 0 in the model YAML to price training without them (`planner import-hf` writes one from a config.json)"
            ),
            I::RecomputeModules {
                framework,
                given,
                missing: Some((module, why)),
            } => write!(
                f,
                "recompute_modules [{given}] under {framework}: {module} recomputes {why}; drop {module}"
            ),
            I::RecomputeModules {
                framework, given, ..
            } => write!(
                f,
                "recompute_modules [{given}] under {framework}: the modules are Megatron-Core's (`--recompute-modules`); {framework}'s selective recomputation is its own policy, so drop recompute_modules or price --framework megatron"
            ),
            I::MlaUnpriced { field, given } => {
                let why = match *field {
                    "framework" => {
                        "planner prices multi-head latent attention as Megatron-Core's MLASelfAttention runs it (duplicated down-projections, column-parallel up-projections); price --framework megatron"
                    }
                    "attention" => {
                        "planner prices multi-head latent attention in a fused kernel (Transformer Engine's, whose query/key and value head sizes may differ), which takes 16-bit tensors; price --dtype bf16 (or fp16, fp8) with FlashAttention (`estimate --attention flash`)"
                    }
                    _ => {
                        "planner does not price context parallelism under multi-head latent attention (its value heads are narrower than its keys); use cp 1"
                    }
                };
                write!(
                    f,
                    "{field}={given} with the model's multi-head latent attention: {why}"
                )
            }
            I::ExpertsNotDivisible {
                experts,
                ep,
                etp,
                stage_ranks,
            } => {
                // Name only the condition that fails (a QA pass read "ep=64 must divide
                // experts=256" where 64 does).
                let stage = format!(
                    "etp·ep={} must divide the {stage_ranks} ranks of a pipeline stage (tp·cp·dp, \
                     which the expert layers lay out as etp × ep × expert-dp)",
                    etp * ep
                );
                match (experts % ep == 0, stage_ranks % (etp * ep) == 0) {
                    (true, _) => write!(f, "{stage}; choose a smaller ep"),
                    (false, true) => write!(
                        f,
                        "ep={ep} must divide experts={experts}; choose an ep that divides it"
                    ),
                    (false, false) => write!(
                        f,
                        "ep={ep} must divide experts={experts}, and {stage}; choose an ep that \
                         divides both"
                    ),
                }
            }
            I::ExpertTp {
                etp, moe: false, ..
            } => write!(f, "etp={etp} on a model without experts; leave --etp out"),
            I::FrameworkEtp { framework } => write!(
                f,
                "etp=1: {framework} is priced with its experts split over the TP ranks (whole \
                 experts per rank, Megatron-LM's --expert-tensor-parallel-size 1, are priced \
                 for Megatron only); leave --etp out, or price for --framework megatron"
            ),
            I::ExpertTp { etp, tp: 1, .. } => write!(
                f,
                "etp={etp} with tp=1: experts are split over the TP ranks or not at all; leave \
                 --etp out (or use 1)"
            ),
            I::ExpertTp { etp, tp, .. } => write!(
                f,
                "etp={etp} with tp={tp}: planner splits experts over all the TP ranks or none \
                 (Megatron-LM's two common settings); use --etp 1 or --etp {tp}"
            ),
            I::EpWithoutExperts { ep } => write!(f, "ep={ep} on a model without experts; use ep=1"),
            I::GpipeNeedsStages { pp } => write!(
                f,
                "schedule=gpipe with pp={pp}: without a pipeline each micro-batch runs its forward \
                 and backward in turn (gradient accumulation), holding one micro-batch, not all; \
                 use --schedule 1f1b, or pp ≥ 2"
            ),
            I::FrameworkGpipe { framework } => write!(
                f,
                "schedule=gpipe: {framework} has no GPipe schedule (its pipelines run 1F1B); use \
                 --schedule 1f1b, or price for --framework torchtitan"
            ),
            I::InterleavedNeedsChunks { pp, vpp } if *pp >= 2 && *vpp >= 2 => write!(
                f,
                "vpp={vpp} with pp={pp} runs only under the interleaved schedule; use --schedule interleaved, or vpp 1"
            ),
            I::InterleavedNeedsChunks { pp, vpp } if *vpp < 2 => write!(
                f,
                "vpp={vpp} with pp={pp}: the interleaved schedule needs vpp ≥ 2 (and pp ≥ 2); set vpp ≥ 2, or use --schedule 1f1b"
            ),
            I::InterleavedNeedsChunks { pp, vpp } => write!(
                f,
                "vpp={vpp} with pp={pp}: interleaving needs pp ≥ 2; use pp ≥ 2, or vpp 1"
            ),
            I::InterleavedMicroBatches { n_micro, pp } => write!(
                f,
                "interleaved schedule needs micro-batches ({n_micro}) to be a multiple of pp={pp}"
            ),
            I::ZeroStage { zero } => write!(f, "zero={zero}; ZeRO stages are 0, 1, 2, 3"),
            I::ZeroWithPipeline { zero, pp } => write!(
                f,
                "ZeRO-{zero} with pp={pp}: gradient/parameter sharding does not combine with this framework's pipelining (torchtitan's FSDP does); use zero ≤ 1"
            ),
            I::TiedWithPipeline { framework, pp } => write!(
                f,
                "pp={pp} with tied embeddings: {framework} does not tie weights across pipeline stages (\"Weight tying is not supported with Pipeline Parallel\"); use pp 1, or price for --framework megatron, which keeps a copy on the last stage"
            ),
            I::DdpBesideModelParallel { framework, dp } => write!(
                f,
                "zero=0 with dp={dp} beside tp/pp/cp: {framework} runs DDP alone (\"DDP has not supported > 1D parallelism\"); use zero 2 or 3 (FSDP), or dp 1"
            ),
            I::FrameworkLacks {
                framework,
                field,
                size,
                what,
            } => write!(
                f,
                "{field}={size}: {framework} has no {what}; use {field} 1, or price for another --framework"
            ),
            I::FrameworkZero {
                framework,
                zero,
                stages,
                why,
            } => write!(
                f,
                "zero={zero}: {framework} runs ZeRO stages {} ({why}); use one of them, or price for another --framework",
                stages
                    .iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            I::FrameworkDtype { framework, dtype } => write!(
                f,
                "dtype={dtype}: {framework} does not train in {dtype} (its config sets bf16, fp16 or fp32); use --dtype bf16, or price for --framework megatron"
            ),
            I::PartialRecomputeInterleaved { vpp } => write!(
                f,
                "part of each stage recomputed with vpp={vpp}: Megatron-LM's block method recomputes the first N layers of every model chunk, not the first layers of a stage; recompute every layer, or use vpp 1"
            ),
            I::DtypeUnsupported { dtype, device } => write!(
                f,
                "dtype={dtype} on {device}: the device has no {dtype} tensor cores (no {dtype} peak in its description); use dtype bf16, or a device with {dtype} (H100, H200)"
            ),
            I::GradReduceDtype {
                dtype,
                training,
                allowed,
            } => write!(
                f,
                "grad_reduce_dtype={dtype} with dtype={training}: gradients are reduced in fp32 or in the 16-bit type the plan trains in; use {allowed}"
            ),
            I::Fp8ParamGather { why } => write!(
                f,
                "Megatron-LM keeps FP8 weights and gathers them in FP8 (--fp8-param-gather) only {why}"
            ),
            I::Fp8Recipe { recipe, dtype } => write!(
                f,
                "{recipe}: a scaling recipe for FP8 tensors, but the plan computes in {dtype}; use --dtype fp8, or drop the recipe"
            ),
            I::LossFusion { framework } => write!(
                f,
                "Transformer Engine's fused cross-entropy is Megatron-Core's option (--cross-entropy-loss-fusion --cross-entropy-fusion-impl te), not {framework}'s; drop --cross-entropy-loss-fusion"
            ),
            I::P2pScatterGather { framework } => write!(
                f,
                "splitting pipeline sends over the TP ranks is Megatron-LM's option (--scatter-gather-tensors-in-pipeline), not {framework}'s; drop --p2p-scatter-gather"
            ),
            I::VocabPadding { framework, divisor } => write!(
                f,
                "--make-vocab-size-divisible-by {divisor}: padding the vocabulary is Megatron-LM's and Megatron-DeepSpeed's (_vocab_size_with_padding); {framework} builds the embedding and output layer at the vocabulary's own size; drop the flag"
            ),
            I::MoeTpNeedsSp { tp } => write!(
                f,
                "tp={tp} on a mixture-of-experts model without sequence parallelism: Megatron-LM refuses it (\"When using expert parallelism and tensor parallelism, sequence parallelism must be used\", TransformerConfig; its arguments.py asserts it for every MoE with tp > 1); add --sequence-parallel, or use tp 1"
            ),
            I::CpNeedsFlash { cp } => write!(
                f,
                "cp={cp} with unfused attention: context parallelism passes K/V around a ring inside the fused attention kernel (Megatron-LM's local DotProductAttention asserts context_parallel_size == 1); use --attention flash, or cp 1"
            ),
            I::FusedAttentionHeadDim { head_dim } => write!(
                f,
                "head_dim={head_dim} with fused attention: FlashAttention and cuDNN's fused \
                 attention take heads up to {} wide; use --attention unfused",
                super::plan::MAX_FUSED_HEAD_DIM
            ),
            I::FusedAttentionDtype {
                framework,
                kernel,
                dtype,
            } => write!(
                f,
                "attention={kernel} with dtype={dtype}: {framework}'s fused attention takes 16-bit \
                 tensors only (FlashAttention and Transformer Engine assert fp16 or bf16); use \
                 --attention unfused, or --dtype bf16"
            ),
            I::OutOfMemory { need_gib, have_gib } => {
                write!(
                    f,
                    "needs {need_gib:.1} GiB per GPU, device has {have_gib:.1} GiB"
                )
            }
        }
    }
}
