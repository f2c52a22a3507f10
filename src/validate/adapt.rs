//! Turns a published run into what the planner needs to predict it: a model, a cluster and a
//! plan, with each framework's documented behaviour (attention kernel, dropout, overlaps,
//! ZeRO flavour, stage partition). Knobs a source leaves unpublished are listed, never
//! silently guessed.

mod model;

use crate::spec::runs::{RunRecord, ZeroField};
use crate::spec::{
    self, AttentionImpl, ClusterSpec, Framework, InterNode, ModelSpec, Plan, Recompute,
    RecomputeModules, Schedule, SpecError, TpOverlap,
};
use crate::units::Dtype;

/// The software stack a run used (framework and vintage), and what the planner must know
/// about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// Megatron-LM of 2021 (SC'21): fp16, materialised softmax, no async TP all-reduce; torch
    /// DDP (overlapped) without pipelining, Megatron's local DDP (after backward) with it.
    Megatron2021,
    /// Megatron-LM of 2022 (Korthikanti et al.): async TP all-reduce in backward, no DP
    /// overlap, materialised softmax.
    Megatron2022,
    /// BigScience Megatron-DeepSpeed (BLOOM): bf16 optimizer with its own ZeRO-1, fused
    /// softmax, DeepSpeed pipeline engine, CUDA 11.5 (no lazy loading).
    MegatronDeepSpeed,
    /// Megatron-Core 2024 with Transformer Engine: flash attention, distributed optimizer,
    /// overlapped grad reduce / param gather and TP communication.
    MegatronCore,
    /// PyTorch FSDP (torchtitan FSDP2, MosaicML Composer): full sharding with prefetch,
    /// flash attention, no dropout.
    Fsdp,
}

impl Stack {
    /// The planner's framework for this stack.
    pub fn framework(self, run: &RunRecord) -> Framework {
        match self {
            Stack::Megatron2021 | Stack::Megatron2022 | Stack::MegatronCore => Framework::Megatron,
            Stack::MegatronDeepSpeed => Framework::DeepSpeed,
            Stack::Fsdp if run.group.starts_with("mosaicml") => Framework::LlmFoundry,
            Stack::Fsdp => Framework::Torchtitan,
        }
    }

    /// The stack a run's group names (its prefix), or why the row cannot be predicted: the
    /// group is how a runs file says which software ran, and guessing one would price the
    /// run as a framework it did not use.
    pub fn of(run: &RunRecord) -> Result<Stack, String> {
        let g = run.group.as_str();
        let stack = [
            ("megatron-sc21", Stack::Megatron2021),
            ("korthikanti", Stack::Megatron2022),
            ("bloom", Stack::MegatronDeepSpeed),
            ("megatron-core", Stack::MegatronCore),
            ("nemo", Stack::MegatronCore),
            ("torchtitan", Stack::Fsdp),
            ("mosaicml", Stack::Fsdp),
        ]
        .into_iter()
        .find(|(prefix, _)| g.starts_with(prefix));
        stack.map(|(_, s)| s).ok_or_else(|| {
            format!(
                "group `{g}` names no software stack the validator knows: it reads the stack from \
                 the group's prefix (megatron-sc21 = Megatron-LM 2021, korthikanti = Megatron-LM \
                 2022, bloom = Megatron-DeepSpeed, megatron-core or nemo = Megatron-Core, \
                 torchtitan, mosaicml = llm-foundry); start the group name with the one that ran"
            )
        })
    }
}

/// A run made predictable.
#[derive(Clone, Debug)]
pub struct Case {
    /// The model.
    pub model: ModelSpec,
    /// The cluster (only the GPUs the run used).
    pub cluster: ClusterSpec,
    /// The plan as published; unpublished knobs at a first guess (see `searched`).
    pub plan: Plan,
    /// Knobs the source does not publish, which the validator searches (fastest that fits).
    pub searched: Vec<&'static str>,
    /// The software stack.
    pub stack: Stack,
}

/// The device preset of a run's GPU name: the A100's memory size read as a whole token
/// (`40GB`, `40 GB`, `-40G`), so that `(400W)` is not 40 GB.
fn device_for(gpu: &str) -> Option<&'static str> {
    let g = gpu.to_ascii_lowercase();
    let forty = g
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|t| t == "40gb" || t == "40g")
        || g.contains("40 gb");
    if g.contains("a100") && forty {
        Some("a100-sxm4-40gb")
    } else if g.contains("a100") {
        Some("a100-sxm4-80gb")
    } else if g.contains("h100") {
        Some("h100-sxm5-80gb")
    } else if g.contains("h200") {
        Some("h200-sxm-141gb")
    } else if g.contains("b200") && !g.contains("gb200") {
        Some("b200-sxm-180gb")
    } else {
        None
    }
}

/// The network between nodes, read from the run's description. Presets' figures where the
/// fabric is the same (8× HDR on DGX A100, 8× NDR on DGX H100); Omni-Path links are 100 Gb/s
/// each (Intel OPA100) and RoCE is given the default efficiency, having no measurement.
fn network(run: &RunRecord, base: &ClusterSpec) -> Option<InterNode> {
    let text = run
        .hardware
        .interconnect
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let default_eff = spec::hardware::DEFAULT_LINK_EFFICIENCY;
    if text.contains("omni-path") {
        // BLOOM's Jean Zay nodes: "4 OmniPath links" (bigscience tr11 README).
        Some(InterNode {
            fabric: "omni-path".into(),
            nics_per_node: 4,
            nic_gbits_s: 100.0,
            latency_us: 5.0,
            efficiency: default_eff,
        })
    } else if text.contains("roce") {
        Some(InterNode {
            fabric: "roce".into(),
            nics_per_node: 8,
            nic_gbits_s: 200.0,
            latency_us: 5.0,
            efficiency: default_eff,
        })
    } else {
        base.inter_node.clone()
    }
}

/// The Megatron-Core modules a `selective (modules: a, b)` recomputation names (the
/// recipes' `recompute_modules`); the attention core where it names none.
fn recompute_modules_of(text: Option<&str>) -> Result<RecomputeModules, String> {
    let Some((how, rest)) = text.and_then(|t| t.split_once("modules:")) else {
        return Ok(RecomputeModules::default());
    };
    if !how
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("selective")
    {
        return Err(format!(
            "parallel.recompute `{}`: modules are what selective recomputation re-runs; write \
             selective (modules: …), or drop the modules",
            text.unwrap_or_default()
        ));
    }
    let list = rest.split(')').next().unwrap_or_default();
    RecomputeModules::parse(list).map_err(|e| format!("parallel.recompute: {e}"))
}

/// A run's recomputation as written: `full…`, `selective…` or `none…`; anything else (such
/// as `yes`) is a reason to skip the row, not no recomputation.
fn recompute_of(text: Option<&str>) -> Result<Option<Recompute>, String> {
    let Some(raw) = text else { return Ok(None) };
    let t = raw.to_ascii_lowercase();
    Ok(Some(if t.starts_with("full") {
        Recompute::Full
    } else if t.starts_with("selective") {
        Recompute::Selective
    } else if t.starts_with("none") {
        Recompute::None
    } else {
        return Err(format!(
            "parallel.recompute `{raw}`: write full, selective or none (optionally followed by how)"
        ));
    }))
}

/// Every size of a run record within range, and the parallel sizes consistent with the GPU
/// count: a runs file is user input, so a zero or a product that does not add up is a reason
/// to skip the row (naming the field and the fix), never a division by zero further on.
fn check_sizes(run: &RunRecord) -> Result<(), String> {
    use spec::model::{MAX_HIDDEN, MAX_LAYERS, MAX_SEQ, MAX_VOCAB};
    let m = &run.model;
    let p = &run.parallel;
    let mut sizes: Vec<(&str, Option<u64>, u64)> = vec![
        ("model.layers", Some(m.layers), MAX_LAYERS),
        ("model.hidden", Some(m.hidden), MAX_HIDDEN),
        ("model.heads", Some(m.heads), MAX_HIDDEN),
        ("model.kv_heads", m.kv_heads, MAX_HIDDEN),
        ("model.ffn_hidden", m.ffn_hidden, 16 * MAX_HIDDEN),
        ("model.vocab", Some(m.vocab), MAX_VOCAB),
        ("model.seq_len", Some(m.seq_len), MAX_SEQ),
        ("hardware.count", Some(run.hardware.count), MAX_RUN_GPUS),
        ("hardware.gpus_per_node", run.hardware.gpus_per_node, 1024),
        (
            "batch.global_batch",
            Some(run.batch.global_batch),
            u64::from(u32::MAX),
        ),
        (
            "batch.micro_batch",
            run.batch.micro_batch,
            u64::from(u32::MAX),
        ),
    ];
    for (name, v) in [
        ("parallel.tp", p.tp),
        ("parallel.pp", p.pp),
        ("parallel.dp", p.dp),
        ("parallel.cp", p.cp),
        ("parallel.ep", p.ep),
        ("parallel.etp", p.etp),
        ("parallel.virtual_stages", p.virtual_stages),
    ] {
        sizes.push((name, v, MAX_RUN_GPUS));
    }
    // A mixture of experts needs at least one expert and one per token (0 had panicked in the
    // graph, dividing the routed tokens among no local experts).
    sizes.push(("model.experts", run.model.experts, 1 << 16));
    sizes.push(("model.top_k", run.model.top_k, 1 << 16));
    for (name, v, max) in sizes {
        match v {
            Some(0) => {
                return Err(format!(
                    "{name} is 0: sizes count at least one (write 1 for none)"
                ));
            }
            Some(v) if v > max => {
                return Err(format!("{name} = {v} exceeds {max}: is it a typo?"));
            }
            _ => {}
        }
    }
    let n = run.hardware.count;
    let (Some(tp), Some(pp)) = (p.tp, p.pp) else {
        return Ok(()); // `case` says the layout is not published
    };
    let cp = p.cp.unwrap_or(1);
    // Each factor is ≤ 2^20, so the products fit u128 (not always u64).
    let model_parallel = u128::from(tp) * u128::from(pp) * u128::from(cp);
    match p.dp {
        Some(dp) if u128::from(dp) * model_parallel != u128::from(n) => Err(format!(
            "parallel.dp × tp × pp × cp = {dp} × {tp} × {pp} × {cp} = {} but hardware.count is \
             {n}: fix the sizes so that their product is the GPU count",
            u128::from(dp) * model_parallel
        )),
        None if u128::from(n) % model_parallel != 0 => Err(format!(
            "parallel.tp × pp × cp = {tp} × {pp} × {cp} = {model_parallel} does not divide \
             hardware.count = {n}: fix the sizes, or publish parallel.dp"
        )),
        _ if pp > m.layers => Err(format!(
            "parallel.pp = {pp} exceeds model.layers = {}: every stage needs a layer",
            m.layers
        )),
        _ => Ok(()),
    }
}

/// The most GPUs, or ways of one parallel dimension, a run record may name: beyond it a value
/// is a typo, and the products of sizes stay far from overflow.
const MAX_RUN_GPUS: u64 = 1 << 20;

/// The measured figures of a run within physical range, and consistent where two of them
/// say the same thing: a negative or zero time, throughput or memory, an unknown `status`,
/// or an iteration time that disagrees with the tokens per second would be compared as if
/// measured.
fn check_measured(run: &RunRecord) -> Result<(), String> {
    let m = &run.measured;
    // Positive, and within what a training step can measure: a millisecond to a day per
    // step (1e-300 s had been compared at −100%), under 100 PFLOP/s per GPU, utilisations
    // of at most 1.
    for (name, v, lo, hi) in [
        ("measured.tflops_per_gpu", m.tflops_per_gpu, 0.0, 1e5),
        (
            "measured.iteration_time_s",
            m.iteration_time_s,
            1e-3,
            86_400.0,
        ),
        ("measured.tokens_per_s", m.tokens_per_s, 0.0, 1e12),
        (
            "measured.peak_memory_gb_per_gpu",
            m.peak_memory_gb_per_gpu,
            0.0,
            1e5,
        ),
        ("measured.mfu", m.mfu, 0.0, 1.0),
        ("measured.hfu", m.hfu, 0.0, 1.0),
    ] {
        match v {
            Some(x) if !(x.is_finite() && x > 0.0 && x >= lo && x <= hi) => {
                let x = if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e12) {
                    format!("{x:e}")
                } else {
                    x.to_string()
                };
                return Err(format!(
                    "{name} = {x}: a measurement is a positive number up to {hi}{}; fix it or leave it out",
                    if lo > 0.0 {
                        format!(" and at least {lo}")
                    } else {
                        String::new()
                    }
                ));
            }
            _ => {}
        }
    }
    if let Some(s) = m.status.as_deref()
        && !["ok", "oom"].contains(&s.to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "measured.status `{s}`: write ok (the run trained) or OOM (it ran out of memory)"
        ));
    }
    let tokens = (run.batch.global_batch as f64) * (run.model.seq_len as f64);
    if let (Some(t), Some(x)) = (m.iteration_time_s, m.tokens_per_s) {
        let implied = tokens / t;
        if (implied / x - 1.0).abs() > 0.02 {
            return Err(format!(
                "measured.iteration_time_s = {t} implies {implied:.0} tokens/s for {tokens} \
                 tokens per batch, but measured.tokens_per_s = {x}: keep the one the source \
                 reports (the validator compares the iteration time when both are given)"
            ));
        }
    }
    Ok(())
}

/// Builds the case for `run`, or says why it cannot be predicted.
pub fn case(run: &RunRecord) -> Result<Case, String> {
    check_sizes(run)?;
    check_measured(run)?;
    let fw = Stack::of(run)?;
    let device = device_for(&run.hardware.gpu)
        .ok_or_else(|| format!("no device preset for GPU `{}`", run.hardware.gpu))?;
    let base = spec::load_cluster(match device.as_bytes()[0] {
        b'h' => "h100-x1024",
        b'b' => "b200-x1024",
        _ => "a100-80g-x1024",
    })
    .map_err(|e: SpecError| e.to_string())?;
    let gpn = run.hardware.gpus_per_node.unwrap_or(8);
    let n = run.hardware.count;
    if n > gpn && n % gpn != 0 {
        // It had been priced on whole nodes and refused as "the cluster has 16 GPUs".
        return Err(format!(
            "hardware.count {n} on nodes of {gpn}: a part-filled node is not modelled; give a \
             multiple of hardware.gpus_per_node (or fewer GPUs than one node)"
        ));
    }
    let mut cluster = base.clone();
    cluster.name = format!("{} × {}", n, device);
    cluster.gpu = spec::load_device(device).map_err(|e| e.to_string())?;
    cluster.gpus_per_node = gpn.min(n);
    cluster.nodes = n.div_ceil(gpn);
    cluster.inter_node = network(run, &base);
    if fw == Stack::MegatronDeepSpeed {
        // CUDA 11.5 without lazy loading: 1573 MiB measured by BigScience on A100.
        cluster.cuda_context_gib = 1573.0 / 1024.0;
    }

    let m = &run.model;
    let model = model::model_of(run, fw)?;

    let p = &run.parallel;
    let mut searched = Vec::new();
    let (tp, pp) = match (p.tp, p.pp) {
        (Some(t), Some(q)) => (t, q),
        // The Megatron-Core README's strong-scaling runs publish neither: the validator
        // searches the layout as the planner would choose it for a user (tensor parallelism
        // inside a node, `resolve_plan`), starting from one node of tensor parallelism.
        (None, None) if fw == Stack::MegatronCore => {
            searched.extend(["tp", "pp"]);
            if p.dp.is_none() {
                searched.push("dp");
            }
            (cluster.gpus_per_node, 1)
        }
        _ => return Err("tensor/pipeline parallel sizes not published".into()),
    };
    let cp = p.cp.unwrap_or(1);
    let dp = p.dp.unwrap_or(n / (tp * pp * cp));
    let mbs = run.batch.micro_batch.unwrap_or_else(|| {
        searched.push("mbs");
        1
    });
    if let (Some(ga), Some(b)) = (run.batch.grad_accum, run.batch.micro_batch)
        && !searched.contains(&"dp")
        && ga * b * dp != run.batch.global_batch
    {
        return Err(format!(
            "batch.grad_accum = {ga} with micro_batch {b} and dp {dp} makes a global batch of \
             {}, not batch.global_batch = {}: correct one of them",
            ga * b * dp,
            run.batch.global_batch
        ));
    }
    let recompute = recompute_of(p.recompute.as_deref())?.unwrap_or_else(|| {
        searched.push("recompute");
        Recompute::None
    });
    // Megatron-LM refuses `--tp-comm-overlap` without sequence parallelism (arguments.py:
    // "Tensor parallel communication/GEMM overlap can happen only when sequence parallelism
    // is enabled"), so a run that names it had SP on.
    let tp_comm_overlap = run
        .hardware
        .interconnect
        .as_deref()
        .is_some_and(|t| t.contains("--tp-comm-overlap"));
    let sp = p.sequence_parallel.unwrap_or_else(|| {
        if tp > 1 && tp_comm_overlap {
            return true;
        }
        if tp > 1 && fw == Stack::MegatronCore {
            searched.push("sequence_parallel");
        }
        false
    });
    let vpp = p.virtual_stages.unwrap_or(1);
    if fw == Stack::MegatronCore && (pp > 1 || p.pp.is_none()) && p.virtual_stages.is_none() {
        searched.push("vpp");
    }
    let zero = match &p.zero_stage {
        Some(ZeroField::Stage(z)) => u8::try_from(*z)
            .ok()
            .filter(|z| *z <= 3)
            .ok_or_else(|| format!("parallel.zero_stage = {z}: ZeRO stages are 0 to 3"))?,
        Some(ZeroField::Text(t)) if t.to_ascii_lowercase().contains("full") => 3,
        Some(ZeroField::Text(t)) => {
            return Err(format!(
                "parallel.zero_stage = {t}: write the stage as a number 0 to 3 (text is read \
                 only as FSDP full sharding, ZeRO-3)"
            ));
        }
        _ => match p.distributed_optimizer {
            Some(d) => u8::from(d),
            None if fw == Stack::MegatronCore => 1, // --use-distributed-optimizer in the README
            // The stack shards fully unless told otherwise (torchtitan's
            // `data_parallel_shard_degree = -1`, Composer's `FULL_SHARD`).
            None if fw == Stack::Fsdp => 3,
            None => 0,
        },
    };
    if p.activation_cpu_offload == Some(true) {
        let why = "parallel.activation_cpu_offload = true: activations offloaded to host memory \
                   are not priced";
        return Err(why.into());
    }
    if let Some(s) = p.fsdp_sharding.as_deref()
        && !s.eq_ignore_ascii_case("full_shard")
    {
        return Err(format!(
            "parallel.fsdp_sharding = {s}: only FULL_SHARD (ZeRO-3) is priced"
        ));
    }
    let recompute_layers = match p.recompute.as_deref() {
        // torchtitan: "selective layer" checkpoints every N-th block fully (N = 2 in its
        // configs); "selective op" is its op-level policy, which the planner's selective
        // recomputation prices for the torchtitan framework (`Framework::op_level_selective`).
        Some(r) if r.starts_with("selective layer") && fw == Stack::Fsdp => {
            Some(vec![m.layers / 2])
        }
        _ => None,
    };
    let recompute_modules = recompute_modules_of(p.recompute.as_deref())?;
    let recompute = if recompute_layers.is_some() {
        Recompute::Full
    } else {
        recompute
    };
    // The 16-bit type is bf16 where the source leaves it open ("mixed (16-bit; bf16 assumed)"),
    // read case-insensitively; a precision naming neither is a reason to skip the row.
    let precision = run
        .precision
        .as_deref()
        .unwrap_or("bf16")
        .to_ascii_lowercase();
    let dtype = if precision.starts_with("fp16") {
        Dtype::Fp16
    } else if precision.starts_with("fp8") {
        Dtype::Fp8
    } else if precision.contains("bf16") {
        Dtype::Bf16
    } else {
        return Err(format!(
            "precision `{}`: write bf16, fp16 or fp8 (optionally followed by how)",
            run.precision.as_deref().unwrap_or_default()
        ));
    };
    if dtype == Dtype::Fp8
        && [
            "mxfp8",
            "fp8-mx",
            "block scal",
            "blockwise",
            "subchannel",
            "sub-channel",
        ]
        .iter()
        .any(|b| precision.contains(b))
    {
        return Err(format!(
            "precision `{}`: block-scaled FP8 (MXFP8, sub-channel) is not priced",
            run.precision.as_deref().unwrap_or_default()
        ));
    }
    // Transformer Engine's recipe where the precision names it ("current scaling", NeMo's
    // "FP8-CS"; Megatron-LM's `tensorwise`); delayed, Megatron-LM's and NeMo 24.07's default,
    // where it does not.
    let fp8_recipe = if dtype == Dtype::Fp8
        && ["current scaling", "tensorwise", "fp8-cs"]
            .iter()
            .any(|c| precision.contains(c))
    {
        crate::spec::Fp8Recipe::Tensorwise
    } else {
        crate::spec::Fp8Recipe::Delayed
    };
    let loss_fusion = match p.cross_entropy_fusion.as_deref() {
        None | Some("native") => false,
        Some("te") if fw == Stack::MegatronCore => true,
        Some(o) => {
            return Err(format!(
                "parallel.cross_entropy_fusion `{o}`: write te (Transformer Engine's kernel, \
                 Megatron-Core only) or native"
            ));
        }
    };
    // Whether FP8 runs kept FP8 weights (`--fp8-param-gather`, NeMo `fp8_params`) no source
    // says; Megatron-Core allows it with the distributed optimizer.
    if fw == Stack::MegatronCore && dtype == Dtype::Fp8 && zero == 1 {
        searched.push("fp8_param_gather");
    }
    let plan = Plan {
        dp,
        tp,
        pp,
        cp,
        ep: p.ep.unwrap_or(1),
        etp: p.etp,
        vpp,
        mbs,
        global_batch: run.batch.global_batch,
        seq_len: m.seq_len,
        recompute,
        recompute_modules,
        zero,
        sequence_parallel: sp,
        overlap_grad_reduce: match fw {
            Stack::Megatron2021 => pp == 1 && p.ddp_impl.as_deref() != Some("local"),
            Stack::Megatron2022 | Stack::MegatronDeepSpeed => false,
            Stack::MegatronCore | Stack::Fsdp => true,
        },
        dtype,
        schedule: if vpp > 1 {
            Schedule::Interleaved
        } else {
            Schedule::OneFOneB
        },
        attention: match fw {
            Stack::Megatron2021 | Stack::Megatron2022 | Stack::MegatronDeepSpeed => {
                AttentionImpl::Unfused
            }
            // llm-foundry's benchmark launcher defaults to `--attn_impl triton`
            // (scripts/train/benchmarking/submit_benchmarks.py at the table's commit).
            Stack::Fsdp if run.group.starts_with("mosaicml") => AttentionImpl::FlashTriton,
            Stack::MegatronCore | Stack::Fsdp => AttentionImpl::Flash,
        },
        tp_overlap: match fw {
            Stack::Megatron2021 | Stack::MegatronDeepSpeed => TpOverlap::None,
            Stack::Megatron2022 | Stack::Fsdp => TpOverlap::Backward,
            Stack::MegatronCore => TpOverlap::Full,
        },
        framework: fw.framework(run),
        stage_layers: (fw == Stack::MegatronDeepSpeed && pp > 1)
            .then(|| embedding_partition(m.layers, pp)),
        recompute_layers,
        // Megatron-LM of 2021 added each micro-batch's gradients to `main_grad` in a backward
        // hook (megatron/model/distributed.py `_make_param_hook`); the fused accumulation
        // came later.
        grad_accumulation_fusion: fw != Stack::Megatron2021,
        // The scatter/gather of pipeline sends, on by default before Megatron-Core.
        p2p_scatter_gather: matches!(fw, Stack::Megatron2021 | Stack::Megatron2022)
            && tp > 1
            && pp > 1,
        // Composer's FSDP `mixed_precision: PURE` reduces gradients in the training precision;
        // its DEFAULT (every other llm-foundry row) in fp32, the framework's default.
        grad_reduce_dtype: (p.fsdp_mixed_precision.as_deref() == Some("PURE")).then_some(dtype),
        fp8_param_gather: false,
        fp8_recipe,
        loss_fusion,
        split_accounts: crate::spec::SplitAccounts {
            embedding: p.account_for_embedding_in_pipeline_split == Some(true),
            loss: p.account_for_loss_in_pipeline_split == Some(true),
        },
        // No row sets --make-vocab-size-divisible-by: Megatron's default.
        vocab_divisor: crate::spec::framework::MAKE_VOCAB_SIZE_DIVISIBLE_BY,
    };
    Ok(Case {
        model,
        cluster,
        plan,
        searched,
        stack: fw,
    })
}

/// DeepSpeed's `--pp-partition-method type:transformer|embedding`: the two embedding layers
/// count as partition units like transformer layers, so the first and last stages hold one
/// transformer layer fewer (BigScience tr11 slurm script; DeepSpeed `PipelineModule`
/// `partition_method="type:..."` balances the count of matching layers).
pub fn embedding_partition(layers: u64, pp: u64) -> Vec<u64> {
    let units = layers + 2;
    let base = units / pp;
    let extra = units % pp;
    (0..pp)
        .map(|i| {
            let u = base + u64::from(i < extra);
            u - u64::from(i == 0) - u64::from(i == pp - 1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloom_partition_puts_fewer_layers_next_to_the_embeddings() {
        // 70 layers + 2 embeddings = 72 units over 12 stages: 6 each, first and last 5.
        let v = embedding_partition(70, 12);
        assert_eq!(v[0], 5);
        assert_eq!(v[11], 5);
        assert_eq!(v[5], 6);
        assert_eq!(v.iter().sum::<u64>(), 70);
    }
}
