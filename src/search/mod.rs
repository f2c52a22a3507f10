//! Search (DESIGN.md §4): enumerates every plan for a GPU count and global batch, prunes by a
//! memory lower bound, prices the rest with the closed form (graphs priced once per shard and
//! shared, in parallel with rayon), and ranks them by throughput. Pure: no IO.

use crate::calib::Profile;
use crate::cost::{Estimate, Machine, Placement, PricedGraphs, estimate_priced, memory};
use crate::graph::Shard;
use crate::spec::{
    AttentionImpl, ClusterSpec, Fp8Recipe, Framework, ModelSpec, Plan, Recompute, RecomputeModules,
    Schedule, SplitAccounts, TpOverlap, infeasible::OUT_OF_MEMORY, launch,
};
use crate::units::{Dtype, GIB};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub mod bench;
mod compare;
pub mod ilp;
mod refine;
pub use compare::{Comparison, Strategy, compare};
pub use refine::StageIlp;

/// What to search over.
#[derive(Clone, Debug, PartialEq)]
pub struct Space {
    /// Global batch in sequences.
    pub global_batch: u64,
    /// Sequence length.
    pub seq_len: u64,
    /// GEMM data type.
    pub dtype: Dtype,
    /// Attention kernel.
    pub attention: AttentionImpl,
    /// Recomputation modes to try.
    pub recompute: Vec<Recompute>,
    /// What selective recomputation may re-run under Megatron (each set tried): the
    /// attention core, and for MoE and latent-attention models the recipes' modules
    /// ([`Space::with_recipe_modules`]).
    pub recompute_modules: Vec<RecomputeModules>,
    /// ZeRO stages to try.
    pub zero: Vec<u8>,
    /// Largest micro-batch to try.
    pub max_mbs: u64,
    /// Largest virtual-pipeline factor to try.
    pub max_vpp: u64,
    /// Largest context-parallel size to try.
    pub max_cp: u64,
    /// Overlap DP gradient reduction with backward (the framework option).
    pub overlap_grad_reduce: bool,
    /// TP communication overlap the framework provides.
    pub tp_overlap: TpOverlap,
    /// Weight gradients accumulated inside the GEMM (Megatron-LM's fused wgrad kernels).
    pub grad_accumulation_fusion: bool,
    /// Pipeline sends split over the TP ranks (legacy Megatron-LM, `Plan::p2p_scatter_gather`).
    pub p2p_scatter_gather: bool,
    /// Training framework.
    pub framework: Framework,
    /// Refine stage partitions and per-stage recomputation with ILP 2 (and admit pipeline
    /// depths that do not divide the layers).
    pub stage_ilp: bool,
    /// Solver settings of the ILPs.
    pub ilp: ilp::IlpOptions,
    /// Fraction of device memory a suggested plan leaves free (see [`MEMORY_HEADROOM`]).
    pub memory_headroom: f64,
    /// The model's head size (0: not known), which fused attention caps
    /// ([`crate::spec::plan::MAX_FUSED_HEAD_DIM`]).
    pub head_dim: u64,
    /// FP8 plans under Megatron's distributed optimizer keep FP8 weights and gather them in
    /// FP8 (`Plan::fp8_param_gather`): less memory, and half the gather's bytes for the
    /// linears' weights, than a 16-bit
    /// weight with Transformer Engine's FP8 copy, so such plans are priced with it unless
    /// this is off (`suggest --no-fp8-param-gather`).
    pub fp8_param_gather: bool,
    /// How FP8 plans scale their tensors (`Plan::fp8_recipe`): the run's choice, not searched.
    pub fp8_recipe: Fp8Recipe,
    /// Transformer Engine's fused cross-entropy (`Plan::loss_fusion`), where the framework is
    /// Megatron: the run's choice, not searched.
    pub loss_fusion: bool,
}

/// Default share of device memory the search keeps free: 6%, the memory estimate's largest
/// measured under-prediction. On the BLOOM-176B topology sweep (bigscience-workshop/
/// bigscience, train/tr11-176B-ml/chronicles.md; 17 runs with `nvidia-smi` peaks on 80 GB
/// A100s, `planner validate --group bloom-176b-topology-sweep`) the estimate is low by up to
/// 4.6 GB (h13312-l82-tp8-pp12-dp4-mbs4: 47.4 predicted, 52 measured); 6% of 80 GiB is 4.8.
/// It does not cover the sweep's one out-of-memory run predicted at 69 GiB, which is the same
/// per-GPU work as a run that peaked at 67 GB. `--memory-headroom 0` plans to the last byte,
/// as `estimate` and `validate` judge.
pub const MEMORY_HEADROOM: f64 = 0.06;

impl Space {
    /// The default space for a model, priced for Megatron: every recompute mode, the ZeRO
    /// stages Megatron runs, micro-batches up to 64, interleaving up to 8 chunks, CP up to 16
    /// when sequences are long.
    pub fn new(global_batch: u64, seq_len: u64) -> Space {
        Space {
            global_batch,
            seq_len,
            dtype: Dtype::Bf16,
            attention: AttentionImpl::Flash,
            recompute: Recompute::ALL.to_vec(),
            recompute_modules: vec![RecomputeModules::CORE_ATTN],
            zero: Framework::Megatron.zero_stages().to_vec(),
            max_mbs: 64,
            max_vpp: 8,
            max_cp: 16,
            overlap_grad_reduce: true,
            tp_overlap: TpOverlap::Backward,
            grad_accumulation_fusion: true,
            p2p_scatter_gather: false,
            framework: Framework::Megatron,
            stage_ilp: true,
            ilp: ilp::IlpOptions::default(),
            memory_headroom: MEMORY_HEADROOM,
            head_dim: 0,
            fp8_param_gather: true,
            fp8_recipe: Fp8Recipe::Delayed,
            loss_fusion: false,
        }
    }

    /// The space priced for `framework`, over the ZeRO stages it runs
    /// ([`Framework::zero_stages`]).
    pub fn for_framework(mut self, framework: Framework) -> Space {
        self.framework = framework;
        self.zero = framework.zero_stages().to_vec();
        self.attention = AttentionImpl::Flash;
        self.fit_attention()
    }

    /// Selective recomputation also as NVIDIA's Megatron-Core recipes for MoE and
    /// latent-attention models run it: the modules that discard an output and re-run no
    /// large GEMM but MLA's up-projections, `mla_up_proj` (DeepSeek-V3, Megatron-Bridge
    /// `deepseek_v3` performance configs), `moe_act` and `layernorm` where the model has
    /// them. Without the attention core: under fused attention it frees only the
    /// log-sum-exp. Nothing for a dense model without MLA, whose norms Transformer Engine
    /// fuses into the linears.
    pub fn with_recipe_modules(mut self, model: &ModelSpec) -> Space {
        let mut set = RecomputeModules::EMPTY;
        if model.mla.is_some() {
            set = set.with(RecomputeModules::MLA_UP_PROJ);
        }
        if model.moe.is_some() {
            set = set.with(RecomputeModules::MOE_ACT);
        }
        if !set.is_empty() {
            set = set.with(RecomputeModules::LAYERNORM);
            if !self.recompute_modules.contains(&set) {
                self.recompute_modules.push(set);
            }
        }
        self
    }

    /// Each recomputation mode the space tries, selective once per module set (Megatron's
    /// alone has them).
    pub fn recompute_choices(&self) -> Vec<(Recompute, RecomputeModules)> {
        self.recompute
            .iter()
            .flat_map(|&rc| match rc {
                Recompute::Selective if self.framework == Framework::Megatron => {
                    self.recompute_modules.iter().map(|&m| (rc, m)).collect()
                }
                _ => vec![(rc, RecomputeModules::CORE_ATTN)],
            })
            .collect()
    }

    /// The space trained in `dtype`.
    pub fn with_dtype(mut self, dtype: Dtype) -> Space {
        self.dtype = dtype;
        self.fit_attention()
    }

    /// The space of a model whose heads are `head_dim` wide.
    pub fn with_head_dim(mut self, head_dim: u64) -> Space {
        self.head_dim = head_dim;
        self.fit_attention()
    }

    /// Unfused attention where the framework's fused kernel does not take the data type
    /// ([`Framework::fused_attention_takes`]: fp32 except under torchtitan) or the head size.
    fn fit_attention(mut self) -> Space {
        if !self
            .framework
            .attention_runs(self.attention, self.dtype, self.head_dim)
        {
            self.attention = AttentionImpl::Unfused;
        }
        self
    }

    /// The space Megatron-LM 2021 runs (the SC'21 paper's code): unfused attention, every TP
    /// collective exposed, gradients accumulated in a backward hook, no optimizer sharding
    /// and no selective recomputation (what `export --megatron-version 2021` writes; sequence,
    /// context and expert parallelism, which it lacks too, are left to that filter), and its
    /// default local DDP, which reduces after the backward (`--DDP-impl local`): its pipeline
    /// schedule has none of Megatron-Core's aligned gradient sync
    /// (`cost::stages::GradSync::Aligned`) to price an overlap with.
    pub fn for_megatron_2021(mut self) -> Space {
        self = self.for_framework(Framework::Megatron);
        self.overlap_grad_reduce = false;
        self.attention = AttentionImpl::Unfused;
        self.tp_overlap = TpOverlap::None;
        self.grad_accumulation_fusion = false;
        self.p2p_scatter_gather = true;
        self.zero = vec![0];
        self.recompute.retain(|&r| r != Recompute::Selective);
        self
    }

    /// The cluster as the search sees it: device memory less the headroom.
    pub fn planning_cluster(&self, cluster: &ClusterSpec) -> ClusterSpec {
        let mut c = cluster.clone();
        c.gpu.memory_gib *= 1.0 - self.memory_headroom.clamp(0.0, 1.0);
        c
    }
}

/// Global batch the tool suggests when none is given: 2^22 tokens (GPT-3 and Llama scale,
/// 4 M tokens), rounded up to a multiple of the GPU count.
pub fn default_global_batch(seq_len: u64, n_gpus: u64) -> u64 {
    let seqs = (4u64 << 20).div_ceil(seq_len.max(1)).max(1);
    seqs.div_ceil(n_gpus) * n_gpus
}

fn divisors(n: u64) -> Vec<u64> {
    (1..=n).filter(|d| n % d == 0).collect()
}

/// Every plan of `space` for `model` on `cluster`, valid or not (the search tallies why not).
pub fn enumerate(model: &ModelSpec, cluster: &ClusterSpec, space: &Space) -> Vec<Plan> {
    let n = cluster.n_gpus();
    let mut out = Vec::new();
    let experts = model.moe.as_ref().map_or(1, |m| m.experts);
    let recomputes = space.recompute_choices();
    for tp in divisors(n)
        .into_iter()
        .filter(|&t| t <= cluster.gpus_per_node.max(1) * 2)
    {
        for cp in divisors(n / tp)
            .into_iter()
            .filter(|&c| c <= space.max_cp && (c == 1 || space.seq_len / c >= 1024))
        {
            for pp in divisors(n / (tp * cp))
                .into_iter()
                .filter(|&p| p <= model.layers)
            {
                let dp = n / (tp * cp * pp);
                if space.global_batch % dp != 0 {
                    out.push(bare(space, [dp, tp, pp, cp, 1, 1, 1]));
                    continue;
                }
                let local = space.global_batch / dp;
                // The stage's model chunks: even interleavings, and where pp does not divide
                // the layers, Megatron-Core's with the embedding and loss in the split.
                let mut vpps: Vec<(u64, SplitAccounts)> = if pp > 1 {
                    divisors(model.layers / pp)
                        .into_iter()
                        .filter(|&v| v <= space.max_vpp)
                        .map(|v| (v, SplitAccounts::default()))
                        .collect()
                } else {
                    vec![(1, SplitAccounts::default())]
                };
                vpps.extend(slot_layouts(model.layers, pp, space));
                // Experts split over the TP ranks (Megatron's default, ep out of dp·cp) or
                // whole on each rank (etp 1, ep out of all the stage's tp·cp·dp ranks).
                // Only Megatron-LM is priced with whole experts (`Infeasible::FrameworkEtp`).
                let etps: &[Option<u64>] =
                    if model.moe.is_some() && tp > 1 && space.framework == Framework::Megatron {
                        &[None, Some(1)]
                    } else {
                        &[None]
                    };
                let expert_layouts = etps.iter().flat_map(|&etp| {
                    let per_expert_shard = tp / etp.unwrap_or(tp);
                    divisors(dp * cp * per_expert_shard)
                        .into_iter()
                        .filter(|e| experts % e == 0)
                        .map(move |ep| (etp, ep))
                });
                for (etp, ep) in expert_layouts {
                    for mbs in divisors(local).into_iter().filter(|&b| b <= space.max_mbs) {
                        for &(vpp, accounts) in &vpps {
                            for &(rc, modules) in &recomputes {
                                for &zero in &space.zero {
                                    for sp in [false, true] {
                                        if sp && tp == 1 {
                                            continue;
                                        }
                                        let mut p = bare(space, [dp, tp, pp, cp, ep, vpp, mbs]);
                                        p.etp = etp;
                                        p.recompute = rc;
                                        p.recompute_modules = modules;
                                        p.zero = zero;
                                        p.fp8_param_gather = space.fp8_param_gather
                                            && p.fp8_param_gather_refusal().is_none();
                                        p.sequence_parallel = sp;
                                        p.split_accounts = accounts;
                                        if zero_is_moot(&p, &space.zero) {
                                            continue;
                                        }
                                        out.push(p);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Interleaved layouts Megatron-Core makes for a `pp` that does not divide the layers by
/// counting the embedding and the loss as layers of the split
/// (`--account-for-embedding/loss-in-pipeline-split`; NVIDIA's Llama 3 405B recipes: 126 + 2 =
/// 128 slots): (vpp, accounts) where the slots split over pp·vpp with at least two a chunk,
/// so no chunk holds the embedding or loss alone. Without interleaving ILP 2 balances uneven
/// stages itself; other frameworks have no such split.
fn slot_layouts(layers: u64, pp: u64, space: &Space) -> Vec<(u64, SplitAccounts)> {
    if space.framework != Framework::Megatron || pp < 2 || layers % pp == 0 {
        return Vec::new();
    }
    let both = SplitAccounts {
        embedding: true,
        loss: true,
    };
    let embedding = SplitAccounts {
        embedding: true,
        loss: false,
    };
    [both, embedding]
        .into_iter()
        .filter(|a| a.slots(layers) % pp == 0)
        .flat_map(|a| {
            let per_stage = a.slots(layers) / pp;
            divisors(per_stage)
                .into_iter()
                .filter(move |&v| v > 1 && v <= space.max_vpp && per_stage / v >= 2)
                .map(move |v| (v, a))
        })
        .collect()
}

/// Whether `p`'s ZeRO stage repeats a plan the space already has: with one data-parallel
/// rank per shard group (dp·cp = 1 and one expert replica) Megatron's and DeepSpeed's stages
/// shard over a group of one, so stage z prices as the space's lowest stage does (at most
/// 0.2 GiB more, for ZeRO-3's gathered layers: the search had listed `dp=1 … zero0` and
/// `dp=1 … zero1` as two ranks of one plan). Kept: FSDP frameworks, whose stages lay the
/// state out differently even over one rank (fp32 sharded parameters against an autocast
/// copy), and FP8 weights (`fp8_param_gather`), which only the distributed optimizer has.
fn zero_is_moot(p: &Plan, zeros: &[u8]) -> bool {
    let lowest = zeros.iter().copied().min().unwrap_or(0);
    p.zero > lowest
        && p.dp * p.cp == 1
        && p.expert_dp() == 1
        && matches!(p.framework, Framework::Megatron | Framework::DeepSpeed)
        && !p.fp8_param_gather
}

/// A plan of `space`'s settings with these sizes ([dp, tp, pp, cp, ep, vpp, mbs]), before
/// the recompute, ZeRO and sequence-parallel choices.
fn bare(space: &Space, [dp, tp, pp, cp, ep, vpp, mbs]: [u64; 7]) -> Plan {
    Plan {
        cp,
        ep,
        vpp,
        overlap_grad_reduce: space.overlap_grad_reduce,
        dtype: space.dtype,
        fp8_recipe: space.fp8_recipe,
        loss_fusion: space.loss_fusion && space.framework == Framework::Megatron,
        schedule: if vpp > 1 {
            Schedule::Interleaved
        } else {
            Schedule::OneFOneB
        },
        attention: space.attention,
        tp_overlap: space.tp_overlap,
        grad_accumulation_fusion: space.grad_accumulation_fusion,
        // Set where it changes the sends (the 2021 code has no sequence parallelism).
        p2p_scatter_gather: space.p2p_scatter_gather && tp > 1 && pp > 1,
        framework: space.framework,
        ..Plan::new(dp, tp, pp, mbs, space.global_batch, space.seq_len)
    }
}

/// A lower bound of a plan's per-GPU memory: the model state of an average stage.
pub fn memory_lower_bound_gib(model: &ModelSpec, plan: &Plan) -> f64 {
    let moe = model.moe.as_ref();
    let expert_params = moe.map_or(0.0, |m| {
        model.moe_layers() as f64 * m.experts as f64 * model.mlp_params(m.expert_ffn_hidden)
    });
    let dense = (model.params() - expert_params) / (plan.tp * plan.pp) as f64;
    let experts = expert_params / (plan.etp() * plan.pp * plan.ep) as f64;
    let (w, g, o) = memory::plan_state_bytes(plan, plan.dp * plan.cp);
    let (we, ge, oe) = memory::plan_state_bytes(plan, plan.expert_dp());
    (dense * (w + g + o) + experts * (we + ge + oe)) / GIB
}

/// The outcome of a search.
#[derive(Clone, Debug)]
pub struct SearchResult {
    /// The best plans that fit, fastest first.
    pub top: Vec<Estimate>,
    /// Plans on the (step time, memory) Pareto front among those that fit.
    pub pareto: Vec<Estimate>,
    /// Plans enumerated.
    pub enumerated: usize,
    /// Plans priced by the cost model.
    pub priced: usize,
    /// Why the others were rejected: reason → count.
    pub infeasible: BTreeMap<&'static str, usize>,
    /// ILP 2's outcome for the ranked plans it ran on, keyed by the plan as ranked.
    pub stage_ilp: HashMap<Plan, StageIlp>,
    /// ILP 2 instances solved (memo hits included).
    pub ilp_solved: usize,
    /// ILP 2 candidates never solved: their lower bound could not beat the k-th best plan.
    pub ilp_pruned: usize,
    /// ILP 2 instances the solver failed on (their plans keep the even partition).
    pub ilp_failed: usize,
    /// Device memory the plans leave free, GiB ([`Space::memory_headroom`] of the capacity).
    pub headroom_gib: f64,
}

/// Searches every plan and returns the `top_k` fastest that fit.
pub fn search(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    space: &Space,
    top_k: usize,
) -> SearchResult {
    search_where(model, cluster, profile, space, top_k, &|_| true)
}

/// Like [`search`], over the plans `keep` accepts (e.g. DP-only).
pub fn search_where(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    space: &Space,
    top_k: usize,
    keep: &(dyn Fn(&Plan) -> bool + Sync),
) -> SearchResult {
    let capacity_gib = cluster.gpu.memory_gib;
    let planning = space.planning_cluster(cluster);
    let cluster = &planning;
    let plans = enumerate(model, cluster, space);
    let (groups, mut infeasible, enumerated) = admit(model, cluster, space, plans, keep);
    let machine = Machine { cluster, profile };
    let mut groups: Vec<Vec<Plan>> = groups.into_values().collect();
    groups.sort_by(|a, b| a[0].short().cmp(&b[0].short()));
    let mut estimates: Vec<refine::Priced> = groups
        .par_iter()
        .flat_map_iter(|plans| {
            let priced = Arc::new(PricedGraphs::new(model, &plans[0], &machine));
            plans
                .iter()
                .map(move |p| (estimate_priced(model, p, &machine, &priced), priced.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let priced = estimates.len();
    let refined = if space.stage_ilp {
        let keep = |p: &Plan| keep(p) && launch::runnable(model, p);
        refine::refine(model, &machine, &mut estimates, top_k, space, &keep)
    } else {
        Default::default()
    };
    let (mut fits, oom): (Vec<Estimate>, Vec<Estimate>) = estimates
        .into_iter()
        .map(|(mut e, _)| {
            e.capacity_gib = capacity_gib;
            e
        })
        .partition(|e| e.fits);
    if !oom.is_empty() {
        *infeasible.entry(OUT_OF_MEMORY).or_default() += oom.len();
    }
    fits.sort_by(|a, b| {
        rank(a)
            .partial_cmp(&rank(b))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.plan.short().cmp(&b.plan.short()))
    });
    let pareto = pareto_front(&fits);
    fits.truncate(top_k);
    let mut stage_ilp = refined.stage_ilp;
    stage_ilp.retain(|p, _| fits.iter().any(|e| &e.plan == p));
    SearchResult {
        top: fits,
        pareto,
        enumerated,
        priced,
        infeasible,
        stage_ilp,
        ilp_solved: refined.solved,
        ilp_pruned: refined.pruned,
        ilp_failed: refined.failed,
        headroom_gib: capacity_gib - cluster.gpu.memory_gib,
    }
}

/// Plans by what their graphs' prices depend on.
type Groups = HashMap<(Shard, Placement), Vec<Plan>>;

/// Plans that `keep` accepts and that pass the structural checks and the memory lower bound,
/// grouped by what their graphs' prices depend on (shard and placement), the tally of the
/// others, and how many `keep` accepted. With ILP 2 on, a pipeline depth that does not divide
/// the layers starts from the most even partition (before `keep` judges it).
fn admit(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    space: &Space,
    plans: Vec<Plan>,
    keep: &(dyn Fn(&Plan) -> bool + Sync),
) -> (Groups, BTreeMap<&'static str, usize>, usize) {
    let mut infeasible: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut groups: Groups = HashMap::new();
    let mut kept = 0;
    for mut p in plans {
        if space.stage_ilp
            && p.vpp == 1
            && p.pp <= model.layers
            && model.layers % p.pp != 0
            && p.stage_layers.is_none()
        {
            p.stage_layers = Some(ilp::stages::start_split(model.layers, p.pp, p.framework));
        }
        if !keep(&p) {
            continue;
        }
        kept += 1;
        let why = p.check(model, cluster);
        if let Some(first) = why.first() {
            *infeasible.entry(first.label()).or_default() += 1;
        } else if memory_lower_bound_gib(model, &p) > cluster.gpu.memory_gib {
            *infeasible.entry(OUT_OF_MEMORY).or_default() += 1;
        } else if !launch::runnable(model, &p) {
            // After the cheap bound: writing the launch configuration is the dearer test.
            *infeasible.entry(NOT_LAUNCHABLE).or_default() += 1;
        } else {
            let key = (Shard::of(&p), Placement::of(&p, cluster.gpus_per_node));
            groups.entry(key).or_default().push(p);
        }
    }
    (groups, infeasible, kept)
}

/// The tally label of plans the framework they were priced for cannot launch as priced
/// ([`launch::runnable`]): an uneven split or per-stage recomputation it has no setting for,
/// a parallelism or ZeRO stage it lacks. Kept out of the ranking, so the plan `suggest` ranks
/// first is one `export` writes.
pub const NOT_LAUNCHABLE: &str = "framework cannot launch it as priced";

/// Sort key: faster first, then less memory.
fn rank(e: &Estimate) -> (f64, f64) {
    (e.step_time_s, e.memory_gib_per_gpu)
}

/// Plans no other plan beats on both step time and memory (input sorted by step time).
fn pareto_front(sorted: &[Estimate]) -> Vec<Estimate> {
    let mut best_mem = f64::INFINITY;
    let mut out = Vec::new();
    for e in sorted {
        if e.memory_gib_per_gpu < best_mem - 1e-9 {
            best_mem = e.memory_gib_per_gpu;
            out.push(e.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
