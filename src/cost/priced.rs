//! Pricing of operator graphs: one pass of some operators by kind (compute, exposed TP and
//! CP/EP communication), the priced graphs of a model under one sharding, and where the
//! numbers came from (measured, interpolated, extrapolated, preset).

use super::step::overlap_exposed_s;
use super::{Machine, Placement};
use crate::calib::Source;
use crate::graph::{Group, Kernel, ModelGraph, Op, OpGraph, Shard};
use crate::spec::{ModelSpec, Plan};
use crate::units::Dtype;
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
    pub(super) fn add(&mut self, o: &PassCost, k: f64) {
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

/// Seconds of priced work per number source, by kernel class. In an `Estimate`: about one
/// step of the slowest-priced stage's work (graph kernels × layers per stage × micro-batches,
/// plus the pipeline and gradient-reduction collectives), so the shares say which
/// sources the step time rests on.
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

    /// Every second multiplied by `k` (a kernel priced once that runs k times a step).
    pub fn scaled(&self, k: f64) -> Provenance {
        let mul = |a: [f64; 4]| a.map(|x| x * k);
        Provenance {
            gemm: mul(self.gemm),
            attention: mul(self.attention),
            memory: mul(self.memory),
            communication: mul(self.communication),
        }
    }

    /// The seconds of both, class by class and source by source.
    pub fn plus(&self, o: &Provenance) -> Provenance {
        let add = |a: [f64; 4], b: [f64; 4]| std::array::from_fn(|i| a[i] + b[i]);
        Provenance {
            gemm: add(self.gemm, o.gemm),
            attention: add(self.attention, o.attention),
            memory: add(self.memory, o.memory),
            communication: add(self.communication, o.communication),
        }
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
    /// What selective recomputation repeats (the framework's policy, `Op::selective_fwd`).
    pub selective_fwd: PassCost,
    /// Sources of the forward and backward seconds of one micro-batch.
    pub provenance: Provenance,
}

fn price_graph(g: &OpGraph, m: &Machine, dtype: Dtype, place: &Placement) -> GraphCost {
    let ops = g.ops();
    let mut provenance = Provenance::default();
    GraphCost {
        fwd: price_pass(&ops, m, dtype, place, Pass::Fwd, &mut provenance),
        bwd: price_pass(&ops, m, dtype, place, Pass::Bwd, &mut provenance),
        selective_fwd: price_pass(
            &ops,
            m,
            dtype,
            place,
            Pass::SelectiveFwd,
            &mut Provenance::default(),
        ),
        provenance,
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
            Pass::SelectiveFwd => &op.selective_fwd,
        };
        let (mut compute, mut overlapped) = (0.0, [0.0f64; 2]);
        for k in kernels {
            let (t, src) = m.kernel_s(op.kernel_dtype(dtype, k), k, place);
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
        // Overlapped communication hides behind the operator's own compute, slowing it.
        let iota = m.cluster.gpu.efficiency.overlap_interference;
        out.tp_s += overlap_exposed_s(overlapped[0], compute, 0.0, iota);
        out.other_s += overlap_exposed_s(overlapped[1], compute, 0.0, iota);
    }
    out
}

/// Forward, backward and selective-recomputation time of one operator for one micro-batch
/// on `place`: the pricing of whole graphs (overlapped collectives hidden behind the
/// operator's own compute) applied to that operator alone, as the search's sharding ILP
/// needs.
pub fn op_cost(
    op: &Op,
    m: &Machine,
    dtype: Dtype,
    place: &Placement,
) -> (PassCost, PassCost, PassCost) {
    let ops = [op];
    let mut prov = Provenance::default();
    (
        price_pass(&ops, m, dtype, place, Pass::Fwd, &mut prov),
        price_pass(&ops, m, dtype, place, Pass::Bwd, &mut prov),
        price_pass(&ops, m, dtype, place, Pass::SelectiveFwd, &mut prov),
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
    /// The dense and MoE layers' prices with sliding-window attention, where the graphs have
    /// them ([`ModelGraph::sliding`]).
    pub sliding: Option<(GraphCost, Option<GraphCost>)>,
    /// Head prices.
    pub head: GraphCost,
    /// One multi-token prediction depth's prices, where the model has depths.
    pub mtp: Option<GraphCost>,
    /// Forward FLOPs per sequence selective recomputation re-runs under the shard's
    /// framework and modules ([`super::flops::selective_recompute_flops_per_sequence`]),
    /// computed once for every plan these graphs price.
    pub selective_flops_per_sequence: f64,
}

impl PricedGraphs {
    /// Builds and prices every graph of `model` under `plan`.
    pub fn new(model: &ModelSpec, plan: &Plan, m: &Machine) -> PricedGraphs {
        let sh = Shard::of(plan);
        let place = Placement::of(plan, m.cluster.gpus_per_node);
        let graphs = ModelGraph::build(model, &sh);
        let embedding = price_graph(&graphs.embedding, m, plan.dtype, &place);
        let dense = price_graph(&graphs.dense, m, plan.dtype, &place);
        let price = |g: &crate::graph::OpGraph| price_graph(g, m, plan.dtype, &place);
        let moe = graphs.moe.as_ref().map(price);
        let sliding = graphs
            .sliding
            .as_ref()
            .map(|(d, moe)| (price(d), moe.as_ref().map(price)));
        let head = price(&graphs.head);
        let mtp = graphs.mtp.as_ref().map(price);
        let selective_flops_per_sequence = super::flops::selective_recompute_flops_per_sequence(
            model,
            plan.seq_len,
            plan.framework,
            plan.recompute_modules,
        );
        PricedGraphs {
            graphs,
            embedding,
            dense,
            moe,
            sliding,
            head,
            mtp,
            selective_flops_per_sequence,
        }
    }

    /// Sources of a step's forward and backward seconds over every stage: each graph's
    /// kernels weighted by how often the step runs them — the embedding and head once per
    /// micro-batch, each layer once per layer and micro-batch (`n_micro`).
    pub fn step_provenance(&self, model: &ModelSpec, n_micro: f64) -> Provenance {
        let layers = (0..model.layers)
            .map(|i| &self.layer(model, i).provenance)
            .fold(Provenance::default(), |acc, p| acc.plus(p));
        let mtp = self.mtp.as_ref().map_or(Provenance::default(), |c| {
            c.provenance.scaled(model.mtp_layers as f64)
        });
        self.embedding
            .provenance
            .plus(&self.head.provenance)
            .plus(&layers)
            .plus(&mtp)
            .scaled(n_micro)
    }

    /// The prices of layer `i`'s graph ([`ModelGraph::layer`]).
    pub(super) fn layer(&self, model: &ModelSpec, i: u64) -> &GraphCost {
        let (dense, moe) = match &self.sliding {
            Some((d, m)) if model.slides(i) => (d, m),
            _ => (&self.dense, &self.moe),
        };
        match moe {
            Some(c) if model.is_moe_layer(i) => c,
            _ => dense,
        }
    }
}

/// Forward and backward time of every operator of one micro-batch, by graph: the embedding,
/// the first (dense) layer, an MoE layer when present, and the head — priced as the step
/// prices them ([`op_cost`]: overlapped collectives hidden behind the operator's compute).
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
    if let Some((dense, moe)) = &g.sliding {
        graphs.push(("sliding layer", dense));
        if let Some(moe) = moe {
            graphs.push(("sliding moe layer", moe));
        }
    }
    if let Some(mtp) = &g.mtp {
        graphs.push(("mtp", mtp));
    }
    graphs.push(("head", &g.head));
    graphs
        .into_iter()
        .flat_map(|(name, graph)| {
            let ops = graph.ops().into_iter().map(move |op| {
                let (f, b, _) = op_cost(op, m, plan.dtype, &place);
                (name, op.name, f.total(), b.total())
            });
            // The framework's passes over the graph's gradients (accumulation, FSDP's
            // reduce-scatter input), once per micro-batch after its backward (what
            // `stage_work` adds per chunk).
            let t = super::grad_passes_s(plan, m, graph.params());
            ops.chain((t > 0.0).then_some((name, "grad_passes", 0.0, t)))
        })
        .collect()
}

/// How many times a micro-batch through the whole model at sequence length `s` runs graph
/// `name` of [`op_times`]: the dense layer graph once per dense layer, the MoE one once per
/// MoE layer (the sliding ones once per such layer that slides, where the window is shorter
/// than `s`), the ends once.
pub fn graph_instances(model: &ModelSpec, s: u64, name: &str) -> f64 {
    let windowed = model.window_at(s).is_some();
    let count = |moe: bool, sliding: bool| {
        (0..model.layers)
            .filter(|&i| model.is_moe_layer(i) == moe && (windowed && model.slides(i)) == sliding)
            .count() as f64
    };
    match name {
        "layer" => count(false, false),
        "moe layer" => count(true, false),
        "sliding layer" => count(false, true),
        "sliding moe layer" => count(true, true),
        "mtp" => model.mtp_layers as f64,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{TpOverlap, load_cluster, load_model};

    /// `estimate --ops` lists what the step is made of: per pass, the layer's operators add
    /// up to the priced layer, overlapped TP collectives (tp_overlap full, sequence
    /// parallel) hidden as the step hides them, not counted in full.
    #[test]
    fn op_times_add_up_to_the_priced_layer() {
        let model = load_model("gpt3-175b").unwrap();
        let cluster = load_cluster("a100x8").unwrap();
        let m = Machine {
            cluster: &cluster,
            profile: None,
        };
        let mut plan = Plan::new(1, 8, 1, 1, 8, 2048);
        plan.sequence_parallel = true;
        plan.tp_overlap = TpOverlap::Full;
        let pg = PricedGraphs::new(&model, &plan, &m);
        let (f, b) = op_times(&model, &plan, &m)
            .into_iter()
            .filter(|r| r.0 == "layer")
            .fold((0.0, 0.0), |(f, b), r| (f + r.2, b + r.3));
        for (got, want) in [(f, pg.dense.fwd.total()), (b, pg.dense.bwd.total())] {
            assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        }
    }

    /// An FP8 plan prices only the Transformer Engine linears at the FP8 rate: Llama 3 8B on
    /// one H100, the LM head and the attention core cost what they cost in BF16, QKV costs
    /// less. (That the attention and head used to run at the FP8 rate made FP8 plans of
    /// small, large-vocabulary models 10-20% too fast.)
    #[test]
    fn fp8_plans_run_only_the_te_linears_in_fp8() {
        let model = load_model("llama3-8b").unwrap();
        let cluster = load_cluster("h100x8").unwrap();
        let m = Machine {
            cluster: &cluster,
            profile: None,
        };
        let mut plan = Plan::new(1, 1, 1, 1, 8, 2048);
        plan.seq_len = 4096;
        let times = |dtype| {
            let mut p = plan.clone();
            p.dtype = dtype;
            op_times(&model, &p, &m)
        };
        let (bf16, fp8) = (times(Dtype::Bf16), times(Dtype::Fp8));
        let get = |rows: &[(&str, &str, f64, f64)], op: &str| {
            let r = rows.iter().find(|r| r.1 == op).unwrap();
            r.2 + r.3
        };
        for op in ["lm_head", "attention"] {
            assert_eq!(get(&fp8, op), get(&bf16, op), "{op}");
        }
        // FP8 runs at 0.57 × 1979 against BF16's 0.64 × 989 TFLOP/s: 1.78× faster GEMMs.
        let ratio = get(&bf16, "qkv") / get(&fp8, "qkv");
        assert!(ratio > 1.6 && ratio < 1.8, "{ratio}");
    }

    /// `numbers_from` weighs each graph by how often the whole step runs it: the same
    /// micro-batches through pp = 1 or pp = 4 run the same kernels, so the GEMM seconds the
    /// shares are taken over are equal (the pipeline depth used to divide the layers' share).
    #[test]
    fn step_provenance_counts_every_stage_once() {
        let model = load_model("gpt2-xl").unwrap();
        let cluster = load_cluster("a100x8").unwrap();
        let m = Machine {
            cluster: &cluster,
            profile: None,
        };
        let gemm_s = |pp: u64| {
            let plan = Plan::new(1, 1, pp, 1, 8, 1024);
            let pg = PricedGraphs::new(&model, &plan, &m);
            let p = pg.step_provenance(&model, plan.n_micro() as f64);
            // The embedding, the head and 48 layers, 8 micro-batches each.
            let one = |g: &GraphCost| g.provenance.gemm.iter().sum::<f64>();
            let want = 8.0 * (one(&pg.embedding) + one(&pg.head) + 48.0 * one(&pg.dense));
            let got: f64 = p.gemm.iter().sum();
            assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
            got
        };
        assert!((gemm_s(1) - gemm_s(4)).abs() <= 1e-12 * gemm_s(1));
    }
}
