//! The cost model (DESIGN.md §3): prices a plan's operator graphs on a machine and composes
//! them into step time, throughput, MFU/HFU and peak memory per GPU. Pure: no IO.

pub mod flops;
pub mod memory;
pub mod price;
pub mod step;

pub use memory::{MemoryBytes, StageLayout};
pub use price::{GroupShape, Machine, Placement};

use crate::calib::{Profile, Source};
use crate::graph::{Coll, Group, Kernel, MemClass, ModelGraph, Op, OpGraph, Shard};
use crate::spec::{ClusterSpec, Framework, ModelSpec, Plan, Recompute};
use crate::units::{Dtype, GIB};
use serde::Serialize;

/// Time of one pass (forward, backward, or recomputation) of some operators, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PassCost {
    /// GEMMs, attention and memory-bound kernels.
    pub compute_s: f64,
    /// Exposed tensor-parallel communication.
    pub tp_s: f64,
    /// Exposed context- and expert-parallel communication.
    pub other_s: f64,
}

impl PassCost {
    /// Sum of all parts.
    pub fn total(&self) -> f64 {
        self.compute_s + self.tp_s + self.other_s
    }
    fn add(&mut self, o: &PassCost, k: f64) {
        self.compute_s += k * o.compute_s;
        self.tp_s += k * o.tp_s;
        self.other_s += k * o.other_s;
    }
}

/// Which kernels of an operator a pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Fwd,
    Bwd,
    /// The forward kernels of the operators selective recomputation re-runs.
    SelectiveFwd,
}

/// Seconds of priced work per number source, by kernel class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// GEMM seconds by source (measured, interpolated, extrapolated, preset).
    pub gemm: [f64; 4],
    /// Attention-kernel seconds by source.
    pub attention: [f64; 4],
    /// Memory-bound seconds by source.
    pub memory: [f64; 4],
    /// Communication seconds by source.
    pub communication: [f64; 4],
}

impl Provenance {
    fn record(&mut self, k: &Kernel, t: f64, src: Source) {
        let slot = match k {
            Kernel::Gemm { .. } => &mut self.gemm,
            Kernel::Attention { .. } => &mut self.attention,
            Kernel::Memory { .. } => &mut self.memory,
            Kernel::Comm { .. } => &mut self.communication,
        };
        slot[src as usize] += t;
    }

    /// One line per class: the share of its time from each source, e.g.
    /// `gemm: 100% preset`.
    pub fn summary(&self) -> Vec<String> {
        let names = ["measured", "interpolated", "extrapolated", "preset"];
        [
            ("gemm", &self.gemm),
            ("attention", &self.attention),
            ("memory-bound", &self.memory),
            ("communication", &self.communication),
        ]
        .iter()
        .filter_map(|(name, v)| {
            let total: f64 = v.iter().sum();
            (total > 0.0).then(|| {
                let parts: Vec<String> = v
                    .iter()
                    .zip(names)
                    .filter(|(x, _)| **x > 0.0)
                    .map(|(x, n)| format!("{:.0}% {n}", 100.0 * x / total))
                    .collect();
                format!("{name}: {}", parts.join(", "))
            })
        })
        .collect()
    }
}

/// Prices of one operator graph for one micro-batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct GraphCost {
    /// Forward pass.
    pub fwd: PassCost,
    /// Backward pass.
    pub bwd: PassCost,
    /// Forward of the attention core only (what selective recomputation repeats).
    pub selective_fwd: PassCost,
}

fn price_graph(
    g: &OpGraph,
    m: &Machine,
    dtype: Dtype,
    place: &Placement,
    prov: &mut Provenance,
) -> GraphCost {
    let ops = g.ops();
    GraphCost {
        fwd: price_pass(&ops, m, dtype, place, Pass::Fwd, prov),
        bwd: price_pass(&ops, m, dtype, place, Pass::Bwd, prov),
        selective_fwd: price_pass(
            &ops,
            m,
            dtype,
            place,
            Pass::SelectiveFwd,
            &mut Provenance::default(),
        ),
    }
}

fn price_pass(
    ops: &[&Op],
    m: &Machine,
    dtype: Dtype,
    place: &Placement,
    pass: Pass,
    prov: &mut Provenance,
) -> PassCost {
    let mut out = PassCost::default();
    for op in ops {
        let kernels = match pass {
            Pass::Fwd => &op.fwd,
            Pass::Bwd => &op.bwd,
            Pass::SelectiveFwd if op.selective => &op.fwd,
            Pass::SelectiveFwd => continue,
        };
        let (mut compute, mut overlapped) = (0.0, [0.0f64; 2]);
        for k in kernels {
            let (t, src) = m.kernel_s(dtype, k, place);
            prov.record(k, t, src);
            match k {
                Kernel::Comm {
                    group,
                    overlapped: ov,
                    ..
                } => {
                    let slot = usize::from(*group != Group::Tp);
                    if *ov {
                        overlapped[slot] += t;
                    } else if slot == 0 {
                        out.tp_s += t;
                    } else {
                        out.other_s += t;
                    }
                }
                _ => compute += t,
            }
        }
        out.compute_s += compute;
        // Overlapped communication hides behind the operator's own compute.
        out.tp_s += (overlapped[0] - compute).max(0.0);
        out.other_s += (overlapped[1] - compute).max(0.0);
    }
    out
}

/// Forward and backward time of one operator for one micro-batch on `place`: the pricing
/// of whole graphs (overlapped collectives hidden behind the operator's own compute) applied
/// to that operator alone, as the search's sharding ILP needs.
pub fn op_cost(op: &Op, m: &Machine, dtype: Dtype, place: &Placement) -> (PassCost, PassCost) {
    let ops = [op];
    let mut prov = Provenance::default();
    (
        price_pass(&ops, m, dtype, place, Pass::Fwd, &mut prov),
        price_pass(&ops, m, dtype, place, Pass::Bwd, &mut prov),
    )
}

/// The priced graphs of a model under one sharding: reusable across plans that share the
/// shard and the TP/CP/EP placement.
#[derive(Clone, Debug)]
pub struct PricedGraphs {
    /// The graphs.
    pub graphs: ModelGraph,
    /// Embedding prices.
    pub embedding: GraphCost,
    /// Dense layer prices.
    pub dense: GraphCost,
    /// MoE layer prices.
    pub moe: Option<GraphCost>,
    /// Head prices.
    pub head: GraphCost,
    /// Sources of the numbers.
    pub provenance: Provenance,
}

impl PricedGraphs {
    /// Builds and prices every graph of `model` under `plan`.
    pub fn new(model: &ModelSpec, plan: &Plan, m: &Machine) -> PricedGraphs {
        let sh = Shard::of(plan);
        let place = Placement::of(plan, m.cluster.gpus_per_node);
        let graphs = ModelGraph::build(model, &sh);
        let mut prov = Provenance::default();
        let embedding = price_graph(&graphs.embedding, m, plan.dtype, &place, &mut prov);
        let dense = price_graph(&graphs.dense, m, plan.dtype, &place, &mut prov);
        let moe = graphs
            .moe
            .as_ref()
            .map(|g| price_graph(g, m, plan.dtype, &place, &mut prov));
        let head = price_graph(&graphs.head, m, plan.dtype, &place, &mut prov);
        PricedGraphs {
            graphs,
            embedding,
            dense,
            moe,
            head,
            provenance: prov,
        }
    }

    fn layer(&self, model: &ModelSpec, i: u64) -> &GraphCost {
        match &self.moe {
            Some(c) if model.is_moe_layer(i) => c,
            _ => &self.dense,
        }
    }
}

/// Where a step's time goes; the parts add up to the step time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Breakdown {
    /// Forward and backward compute of the slowest stage, all micro-batches.
    pub compute_s: f64,
    /// Recomputed forward work.
    pub recompute_s: f64,
    /// Exposed tensor-parallel collectives.
    pub tp_comm_s: f64,
    /// Pipeline sends and receives.
    pub pp_comm_s: f64,
    /// Exposed data-parallel (gradient, ZeRO) communication.
    pub dp_comm_s: f64,
    /// Exposed context- and expert-parallel communication.
    pub other_comm_s: f64,
    /// Pipeline fill and drain, and waiting on slower stages.
    pub bubble_s: f64,
    /// Optimizer step.
    pub optimizer_s: f64,
}

impl Breakdown {
    /// Sum of the parts.
    pub fn total(&self) -> f64 {
        self.compute_s
            + self.recompute_s
            + self.tp_comm_s
            + self.pp_comm_s
            + self.dp_comm_s
            + self.other_comm_s
            + self.bubble_s
            + self.optimizer_s
    }

    /// The largest part, by name.
    pub fn bottleneck(&self) -> &'static str {
        let parts = [
            ("compute", self.compute_s),
            ("recompute", self.recompute_s),
            ("tp_comm", self.tp_comm_s),
            ("pp_comm", self.pp_comm_s),
            ("dp_comm", self.dp_comm_s),
            ("cp/ep_comm", self.other_comm_s),
            ("bubble", self.bubble_s),
            ("optimizer", self.optimizer_s),
        ];
        parts
            .iter()
            .fold(("compute", f64::MIN), |b, p| if p.1 > b.1 { *p } else { b })
            .0
    }
}

/// Peak memory per GPU in GiB by holder, the estimate's contract fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MemoryGib {
    /// Weights.
    pub weights: f64,
    /// Gradients.
    pub grads: f64,
    /// Optimizer state.
    pub optimizer: f64,
    /// Activations (saved ones and the working set at the peak).
    pub activations: f64,
    /// CUDA context, NCCL buffers, allocator fragmentation.
    pub other: f64,
}

impl From<MemoryBytes> for MemoryGib {
    fn from(m: MemoryBytes) -> MemoryGib {
        MemoryGib {
            weights: m.weights / GIB,
            grads: m.grads / GIB,
            optimizer: m.optimizer / GIB,
            activations: (m.activations + m.working) / GIB,
            other: m.runtime / GIB,
        }
    }
}

/// Per-stage detail.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageCost {
    /// Stage index.
    pub stage_idx: u64,
    /// Layers on the stage.
    pub layers: u64,
    /// Forward time per micro-batch.
    pub fwd_s: f64,
    /// Backward time per micro-batch, recomputation included.
    pub bwd_s: f64,
    /// Peak memory of one rank, GiB.
    pub memory_gib: f64,
    /// Memory in detail, bytes.
    pub memory: MemoryBytes,
}

/// A plan priced: the estimate's JSON shape is a contract (DESIGN.md, issue 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// The plan.
    pub plan: Plan,
    /// GPUs used.
    pub n_gpus: u64,
    /// Seconds per training step (one global batch).
    pub step_time_s: f64,
    /// Tokens per second over the whole cluster.
    pub tokens_per_s: f64,
    /// Model TFLOP/s per GPU.
    pub tflops_per_gpu: f64,
    /// Hardware TFLOP/s per GPU (recomputation counted).
    pub hw_tflops_per_gpu: f64,
    /// Model FLOPs utilisation.
    pub mfu: f64,
    /// Hardware FLOPs utilisation.
    pub hfu: f64,
    /// Peak memory per GPU over all ranks, GiB.
    pub memory_gib_per_gpu: f64,
    /// Device memory, GiB.
    pub capacity_gib: f64,
    /// Whether the peak fits the device.
    pub fits: bool,
    /// Where the time goes.
    pub breakdown: Breakdown,
    /// Memory of the fullest rank by holder.
    pub memory_gib: MemoryGib,
    /// The largest breakdown term.
    pub bottleneck: &'static str,
    /// Per stage.
    pub stages: Vec<StageCost>,
    /// Where the numbers came from.
    pub provenance: Provenance,
}

/// Forward and backward time of every operator of one micro-batch, by graph: the embedding,
/// the first (dense) layer, an MoE layer when present, and the head.
pub fn op_times(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
) -> Vec<(&'static str, &'static str, f64, f64)> {
    let sh = Shard::of(plan);
    let place = Placement::of(plan, m.cluster.gpus_per_node);
    let g = ModelGraph::build(model, &sh);
    let mut graphs = vec![("embedding", &g.embedding), ("layer", &g.dense)];
    if let Some(moe) = &g.moe {
        graphs.push(("moe layer", moe));
    }
    graphs.push(("head", &g.head));
    let t = |ks: &[Kernel]| {
        ks.iter()
            .map(|k| m.kernel_s(plan.dtype, k, &place).0)
            .sum::<f64>()
    };
    graphs
        .into_iter()
        .flat_map(|(name, graph)| {
            graph
                .ops()
                .into_iter()
                .map(move |op| (name, op.name, t(&op.fwd), t(&op.bwd)))
        })
        .collect()
}

/// Prices `plan` for `model` on `cluster`, with a measured profile when given.
/// The plan must pass [`Plan::check`]; out of memory is reported through `fits`.
pub fn estimate(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    plan: &Plan,
    profile: Option<&Profile>,
) -> Estimate {
    let m = Machine { cluster, profile };
    let priced = PricedGraphs::new(model, plan, &m);
    estimate_priced(model, plan, &m, &priced)
}

/// Stage layouts of a plan: layers split evenly (or as `plan.stage_layers` says), the
/// embedding on the first stage and the head on the last. Interleaving gives stage i the
/// chunks i, i + p, i + 2p, … of L/(p·v) layers each (Narayanan et al. SC'21 §2.2.2). With
/// `plan.recompute_layers`, only the first r_i layers of stage i recompute (Megatron-LM
/// `--recompute-method block`).
pub fn stage_layouts(model: &ModelSpec, plan: &Plan) -> Vec<StageLayout> {
    let counts: Vec<u64> = match &plan.stage_layers {
        Some(v) => v.clone(),
        None => vec![model.layers / plan.pp; plan.pp as usize],
    };
    let per_chunk = counts[0] / plan.vpp;
    let mut first = 0;
    (0..plan.pp)
        .map(|i| {
            let n = counts[i as usize];
            let ids: Vec<u64> = if plan.vpp > 1 {
                (0..plan.vpp)
                    .flat_map(|c| {
                        let start = (c * plan.pp + i) * per_chunk;
                        start..start + per_chunk
                    })
                    .collect()
            } else {
                (first..first + n).collect()
            };
            first += n;
            let r = plan.recompute_layers.as_ref().map_or(n, |v| v[i as usize]);
            let layers = ids
                .into_iter()
                .enumerate()
                .map(|(k, id)| {
                    (
                        id,
                        if (k as u64) < r {
                            plan.recompute
                        } else {
                            Recompute::None
                        },
                    )
                })
                .collect();
            StageLayout {
                stage: i,
                layers,
                embedding: i == 0,
                head: i == plan.pp - 1,
            }
        })
        .collect()
}

/// Bytes per gradient element in the data-parallel reduction: fp32 for bf16 training
/// (Megatron-LM forces `accumulate_allreduce_grads_in_fp32` with bf16; DeepSpeed's BF16
/// optimizer reduces its fp32 accumulation buffers; torchtitan's FSDP2 `reduce_dtype` is fp32),
/// 16-bit for fp16 (Megatron-LM 2021 reduces fp16 gradients) and for llm-foundry, whose
/// benchmarks run FSDP mixed precision `PURE` (reduce in bf16).
pub fn grad_reduce_bytes(framework: Framework, dtype: Dtype) -> f64 {
    match (framework, dtype) {
        (_, Dtype::Fp32 | Dtype::Tf32) => 4.0,
        (_, Dtype::Fp16) | (Framework::LlmFoundry, _) => 2.0,
        _ => 4.0,
    }
}

/// Bytes one parameter's Adam step reads and writes: fp32 gradient (4) for the norm and
/// again for the update, master weight, first and second moment read and written (24), and
/// the 16-bit copy written (2) — Apex/Megatron fused multi-tensor Adam, memory-bound.
pub fn optimizer_bytes_per_param(dtype: Dtype) -> f64 {
    4.0 + 4.0
        + 24.0
        + if matches!(dtype, Dtype::Fp32 | Dtype::Tf32) {
            0.0
        } else {
            2.0
        }
}

/// Prices a plan from already priced graphs (the search's memoised path).
pub fn estimate_priced(model: &ModelSpec, plan: &Plan, m: &Machine, pg: &PricedGraphs) -> Estimate {
    let cluster = m.cluster;
    let place = Placement::of(plan, cluster.gpus_per_node);
    let sh = Shard::of(plan);
    let n_micro = plan.n_micro();
    let layouts = stage_layouts(model, plan);
    let e = plan.dtype.bytes();

    // Pipeline send/receive of one micro-batch's activations: b·s/cp·h, split over TP ranks
    // (Megatron's scatter/gather optimisation, SC'21 §4.1), each way, per model chunk.
    let p2p_bytes = (sh.tokens() * model.hidden) as f64 * e / plan.tp as f64;
    let p2p_s = if plan.pp > 1 {
        m.collective_s(Coll::SendRecv, place.pp, p2p_bytes).0
    } else {
        0.0
    };

    let largest_layer_params = (0..model.layers)
        .map(|i| pg.graphs.layer(model, i).params())
        .fold(0.0, f64::max);
    let comms = [place.tp, place.cp, place.ep, place.dp, place.pp]
        .iter()
        .filter(|g| g.n > 1)
        .count() as u64;

    struct StageTimes {
        fwd: PassCost,
        bwd: PassCost,
        recompute: PassCost,
        pp_s: f64,
        dense_params: f64,
        expert_params: f64,
    }
    let mut times = Vec::with_capacity(layouts.len());
    let mut stages = Vec::with_capacity(layouts.len());
    for st in &layouts {
        let (mut fwd, mut bwd, mut rc) = (
            PassCost::default(),
            PassCost::default(),
            PassCost::default(),
        );
        let (mut dense_params, mut expert_params) = (0.0, 0.0);
        for &(i, layer_rc) in &st.layers {
            let gc = pg.layer(model, i);
            fwd.add(&gc.fwd, 1.0);
            bwd.add(&gc.bwd, 1.0);
            match layer_rc {
                Recompute::None => {}
                Recompute::Selective => rc.add(&gc.selective_fwd, 1.0),
                Recompute::Full => rc.add(&gc.fwd, 1.0),
            }
            let g = pg.graphs.layer(model, i);
            let experts: f64 = g
                .graph
                .node_weights()
                .filter(|o| o.name.starts_with("expert_"))
                .map(|o| o.params)
                .sum();
            expert_params += experts;
            dense_params += g.params() - experts;
        }
        if st.embedding {
            fwd.add(&pg.embedding.fwd, 1.0);
            bwd.add(&pg.embedding.bwd, 1.0);
            dense_params += pg.graphs.embedding.params();
        }
        if st.head {
            fwd.add(&pg.head.fwd, 1.0);
            bwd.add(&pg.head.bwd, 1.0);
            dense_params += pg.graphs.head.params();
            if model.tied_embeddings && plan.pp > 1 {
                // Megatron keeps a copy of the tied word embeddings on the last stage.
                dense_params += (model.vocab.div_ceil(plan.tp) * model.hidden) as f64;
            }
        }
        // 1F1B exchanges with both neighbours per micro-batch and chunk (Megatron's
        // send_forward_recv_backward / send_backward_recv_forward): two transfers.
        let pp_s = 2.0 * p2p_s * plan.vpp as f64;
        let mem = memory::stage_memory(
            model,
            plan,
            &pg.graphs,
            st,
            dense_params,
            expert_params,
            largest_layer_params,
            comms,
            cluster.cuda_context_gib * GIB,
        );
        stages.push(StageCost {
            stage_idx: st.stage,
            layers: st.layers.len() as u64,
            fwd_s: fwd.total() + pp_s / 2.0,
            bwd_s: bwd.total() + rc.total() + pp_s / 2.0,
            memory_gib: mem.total() / GIB,
            memory: mem,
        });
        times.push(StageTimes {
            fwd,
            bwd,
            recompute: rc,
            pp_s,
            dense_params,
            expert_params,
        });
    }

    // ZeRO-3 gathers each layer's weights forward and backward and reduce-scatters its
    // gradients every micro-batch, prefetched behind compute (FSDP, Zhao et al. 2023 §3.3).
    let grad_b = grad_reduce_bytes(plan.framework, plan.dtype);
    let zero3 = |params: f64, compute_fwd: f64, compute_bwd: f64| -> f64 {
        if plan.zero < 3 {
            return 0.0;
        }
        let ag = m.collective_s(Coll::AllGather, place.dp, params * e).0;
        let rs = m
            .collective_s(Coll::ReduceScatter, place.dp, params * grad_b)
            .0;
        (ag - compute_fwd).max(0.0) + (ag + rs - compute_bwd).max(0.0)
    };
    let per_micro: Vec<f64> = times
        .iter()
        .map(|t| {
            let z3 = zero3(
                t.dense_params,
                t.fwd.compute_s,
                t.bwd.compute_s + t.recompute.compute_s,
            );
            t.fwd.total() + t.bwd.total() + t.recompute.total() + t.pp_s + z3
        })
        .collect();
    let pipeline = step::pipeline_time(plan.schedule, &per_micro, n_micro, plan.vpp);
    let slow = per_micro
        .iter()
        .enumerate()
        .fold(0, |b, (i, t)| if *t > per_micro[b] { i } else { b });
    let bt = &times[slow];
    let z3_slow =
        per_micro[slow] - (bt.fwd.total() + bt.bwd.total() + bt.recompute.total() + bt.pp_s);

    // Data-parallel gradient reduction after the last micro-batch: all-reduce, or
    // reduce-scatter + all-gather of the updated weights with a sharded optimizer. Stage i
    // finishes its last backward Σ_{j<i} b_j before stage 0, and with overlap the reduction
    // also hides behind its own last backward.
    let ep_group = GroupShape {
        n: (place.dp.n / plan.ep).max(1),
        per_node: (place.dp.per_node / plan.ep).max(1),
    };
    let mut dp_exposed: f64 = 0.0;
    let mut slack = 0.0;
    for (st, t) in layouts.iter().zip(&times) {
        let reduce = |params: f64, g: GroupShape| -> f64 {
            match plan.zero {
                0 => m.collective_s(Coll::AllReduce, g, params * grad_b).0,
                1 | 2 => {
                    m.collective_s(Coll::ReduceScatter, g, params * grad_b).0
                        + m.collective_s(Coll::AllGather, g, params * e).0
                }
                _ => 0.0,
            }
        };
        let mut dp = reduce(t.dense_params, place.dp) + reduce(t.expert_params, ep_group);
        if model.tied_embeddings && plan.pp > 1 && (st.embedding || st.head) {
            // First and last stage all-reduce the tied embedding's gradient.
            let emb = (model.vocab.div_ceil(plan.tp) * model.hidden) as f64 * grad_b;
            dp += m
                .collective_s(Coll::AllReduce, GroupShape { n: 2, per_node: 1 }, emb)
                .0;
        }
        let window = if plan.overlap_grad_reduce {
            t.bwd.total() + t.recompute.total()
        } else {
            0.0
        };
        dp_exposed = dp_exposed.max(dp - window - slack);
        slack += t.bwd.total() + t.recompute.total();
    }
    let dp_exposed = dp_exposed.max(0.0);

    // Optimizer step on the rank's optimizer shard.
    let shard = |n: u64| if plan.zero >= 1 { n.max(1) as f64 } else { 1.0 };
    let opt_s = times
        .iter()
        .map(|t| {
            let local = t.dense_params / shard(place.dp.n) + t.expert_params / shard(ep_group.n);
            m.memory_s(
                local * optimizer_bytes_per_param(plan.dtype),
                MemClass::Elementwise,
            )
            .0
        })
        .fold(0.0, f64::max);

    let nm = n_micro as f64;
    let breakdown = Breakdown {
        compute_s: nm * (bt.fwd.compute_s + bt.bwd.compute_s),
        recompute_s: nm * bt.recompute.compute_s,
        tp_comm_s: nm * (bt.fwd.tp_s + bt.bwd.tp_s + bt.recompute.tp_s),
        pp_comm_s: nm * bt.pp_s,
        dp_comm_s: dp_exposed + nm * z3_slow,
        other_comm_s: nm * (bt.fwd.other_s + bt.bwd.other_s + bt.recompute.other_s),
        bubble_s: pipeline - nm * per_micro[slow],
        optimizer_s: opt_s,
    };
    let step = breakdown.total();

    let peak = stages
        .iter()
        .map(|s| s.memory)
        .fold(MemoryBytes::default(), |a, b| {
            if b.total() > a.total() { b } else { a }
        });
    let n_gpus = plan.n_gpus();
    let model_flops = flops::model_flops_per_step(model, plan.seq_len, plan.global_batch);
    let recomputed = layouts
        .iter()
        .flat_map(|st| &st.layers)
        .filter(|(_, rc)| *rc != Recompute::None)
        .count();
    let held = layouts
        .iter()
        .map(|st| st.layers.len())
        .sum::<usize>()
        .max(1);
    let hw_flops = flops::hardware_flops_per_step(
        model,
        plan.seq_len,
        plan.global_batch,
        plan.recompute,
        recomputed as f64 / held as f64,
    );
    let peak_flops = cluster.gpu.peak_flops(plan.dtype);
    let per_gpu = |f: f64| f / step / n_gpus as f64;
    Estimate {
        plan: plan.clone(),
        n_gpus,
        step_time_s: step,
        tokens_per_s: (plan.global_batch * plan.seq_len) as f64 / step,
        tflops_per_gpu: per_gpu(model_flops) / 1e12,
        hw_tflops_per_gpu: per_gpu(hw_flops) / 1e12,
        mfu: per_gpu(model_flops) / peak_flops,
        hfu: per_gpu(hw_flops) / peak_flops,
        memory_gib_per_gpu: peak.total() / GIB,
        capacity_gib: cluster.gpu.memory_gib,
        fits: peak.total() / GIB <= cluster.gpu.memory_gib,
        bottleneck: breakdown.bottleneck(),
        breakdown,
        memory_gib: peak.into(),
        stages,
        provenance: pg.provenance,
    }
}
