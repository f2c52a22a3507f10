//! ILP 1's instance for one plan's transformer layer on its (dp × tp) mesh, priced by the
//! cost model. The dp axis splits the batch as the plan says; along the tp axis each operator
//! may be replicated, split by batch, split by sequence, or split on a GEMM dimension —
//! column (output features, Megatron's `ColumnParallelLinear`), row (reduction dimension,
//! `RowParallelLinear`, whose partial sums are all-reduced or reduce-scattered), heads /
//! features for the operators between them (Shoeybi et al. 2019 §3; with sequence
//! parallelism, Korthikanti et al. 2022 §4.2.2). Each choice is the operator as
//! `graph::transformer_layer` builds it for the matching `Shard`, priced by
//! `cost::op_cost`; re-sharding between layouts follows Alpa's table (Zheng et al. OSDI'22
//! §4.2: all-gather to replicate a split tensor, free slicing the other way, all-to-all
//! between splits), with each forward collective's conjugate in backward.

use super::sharding::{Choice, Edge, OpChoices, ShardingProblem};
use crate::cost::{Estimate, GroupShape, Machine, Placement, memory, op_cost};
use crate::graph::{Coll, Group, Kernel, Op, OpGraph, Shard, transformer_layer};
use crate::spec::{ModelSpec, Plan, Recompute};

/// How a tensor lies on the tp axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Whole on every rank.
    Rep,
    /// Split by sequences of the micro-batch.
    Batch,
    /// Split along the sequence.
    Seq,
    /// Split along features (heads, MLP columns).
    Feat,
}

/// The sharded graphs an operator's choices come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Replicated,
    Batch,
    Sequence,
    Megatron,
    MegatronSp,
}

/// What an operator is, for its choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Weight GEMM whose output features split (QKV, fc1).
    Column,
    /// Weight GEMM whose reduction dimension splits (projection, fc2).
    Row,
    /// Operates per head or per feature (attention core, rotary, activation).
    Split,
    /// Needs whole rows (norms) or only follows its input (residual adds).
    Local,
}

fn role(name: &str) -> Role {
    match name {
        // (MLA's up-projections are column-parallel; its down-projections, duplicated on
        // every rank, stay local.)
        "qkv" | "fc1" | "q_up" | "kv_up" | "q_proj" => Role::Column,
        "proj" | "fc2" => Role::Row,
        "scores" | "softmax" | "attn_dropout" | "context" | "attention" | "qk_norm" | "rope"
        | "gelu" | "swiglu" => Role::Split,
        _ => Role::Local,
    }
}

/// (label, input layout, output layout) of an operator of `role` under `v`, or `None` when the
/// variant gives it nothing new (Megatron keeps norms replicated, or sequence-split with SP).
fn choice_of(role: Role, v: Variant, name: &str) -> Option<(&'static str, Layout, Layout)> {
    use Layout::*;
    Some(match (v, role) {
        (Variant::Replicated, _) => ("replicated", Rep, Rep),
        (Variant::Batch, _) => ("batch", Batch, Batch),
        (Variant::Sequence, _) => ("sequence", Seq, Seq),
        (Variant::Megatron, Role::Column) => ("column", Rep, Feat),
        (Variant::MegatronSp, Role::Column) => ("column+sp", Seq, Feat),
        (Variant::Megatron, Role::Row) => ("row", Feat, Rep),
        (Variant::MegatronSp, Role::Row) => ("row+sp", Feat, Seq),
        (Variant::Megatron, Role::Split) if matches!(name, "gelu" | "swiglu") => {
            ("features", Feat, Feat)
        }
        (Variant::Megatron, Role::Split) => ("heads", Feat, Feat),
        _ => return None,
    })
}

/// ILP 1's instance for a plan, and what each choice means.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSharding {
    /// The instance.
    pub problem: ShardingProblem,
    /// (input, output) layout of every choice, per operator.
    pub layouts: Vec<Vec<(Layout, Layout)>>,
    /// The choice per operator that is the plan's own layout (Megatron's, as the cost model
    /// prices it).
    pub megatron: Vec<usize>,
}

/// Per-step context of the pricing.
struct Ctx<'a> {
    model: &'a ModelSpec,
    plan: &'a Plan,
    m: &'a Machine<'a>,
    place: Placement,
    base: Shard,
}

impl Ctx<'_> {
    fn t(&self) -> u64 {
        self.plan.tp
    }

    fn shard(&self, v: Variant) -> Option<Shard> {
        let (b, s, t) = (self.base.b, self.base.s, self.t());
        let one = Shard {
            tp: 1,
            sp: false,
            ..self.base
        };
        match v {
            Variant::Replicated => Some(one),
            Variant::Batch => (b % t == 0).then_some(Shard { b: b / t, ..one }),
            Variant::Sequence => (s % (t * self.base.cp) == 0).then_some(Shard {
                cp: t * self.base.cp,
                ..one
            }),
            Variant::Megatron => Some(Shard {
                sp: false,
                ..self.base
            }),
            Variant::MegatronSp => (s % t == 0).then_some(Shard {
                sp: true,
                ..self.base
            }),
        }
    }

    fn coll(&self, c: Coll, bytes: f64) -> f64 {
        self.m.collective_s(c, self.place.tp, bytes).0
    }

    /// Seconds per micro-batch (forward + backward) to turn a tensor of `bytes` (whole size)
    /// from layout `a` into layout `b`.
    fn reshard_s(&self, a: Layout, b: Layout, bytes: f64) -> f64 {
        match (a, b) {
            _ if a == b => 0.0,
            // Slicing is free; backward gathers the gradient's slices.
            (Layout::Rep, _) => self.coll(Coll::AllGather, bytes),
            // Forward gathers; backward slices the (complete) gradient.
            (_, Layout::Rep) => self.coll(Coll::AllGather, bytes),
            // Between two splits: all-to-all forward and backward, S = bytes/t per rank.
            _ => 2.0 * self.coll(Coll::AllToAll, bytes / self.t() as f64),
        }
    }
}

/// Whole bytes (over the tp axis; this rank's b·s/cp tokens) of the tensor operator `name`
/// outputs for one micro-batch.
fn out_bytes(model: &ModelSpec, sh: &Shard, name: &str) -> f64 {
    let (tok, s, h) = (sh.tokens() as f64, sh.s as f64, model.hidden as f64);
    let (f, q) = (model.ffn_hidden as f64, model.q_hidden() as f64);
    let elems = match name {
        "scores" | "softmax" | "attn_dropout" => tok * model.heads as f64 * s,
        "qkv" | "qk_norm" | "rope" => tok * (q + 2.0 * model.kv_hidden() as f64),
        "context" | "attention" => tok * model.attn_out_hidden() as f64,
        // MLA's latents and up-projections.
        "q_down" | "q_norm" => tok * model.mla.and_then(|m| m.q_lora_rank).unwrap_or(0) as f64,
        "kv_down" => tok * model.mla.map_or(0, |m| m.kv_lora_rank + m.qk_rope_dim) as f64,
        "kv_norm" => tok * model.mla.map_or(0, |m| m.kv_lora_rank) as f64,
        "q_up" | "q_proj" => tok * q,
        "kv_up" => {
            tok * model
                .mla
                .map_or(0, |m| model.heads * (m.qk_nope_dim + m.v_dim)) as f64
        }
        "fc1" if model.arch.gated_mlp() => tok * 2.0 * f,
        "fc1" | "gelu" | "swiglu" => tok * f,
        _ => tok * h,
    };
    elems * sh.dtype.bytes()
}

/// Time per step and memory per layer of one operator choice.
fn price_choice(cx: &Ctx, op: &Op, v: Variant, first: bool, input: Layout) -> Choice {
    let plan = cx.plan;
    Choice {
        label: "",
        time_s: plan.n_micro() as f64 * micro_s(cx, op, v) + sync_s(cx, op, v),
        mem_bytes: op.params * {
            let (w, g, o) = memory::plan_state_bytes(plan, plan.dp * plan.cp);
            w + g + o
        } + memory::in_flight_chunks(plan, 0) * saved_bytes(cx, op, first, input),
    }
}

/// Forward, backward and recomputation of one choice for one micro-batch.
fn micro_s(cx: &Ctx, op: &Op, v: Variant) -> f64 {
    let plan = cx.plan;
    let mut place = cx.place;
    if v == Variant::Sequence {
        // A sequence split's ring runs over the tp axis and the plan's cp ranks next to it.
        let n = cx.place.tp.n * cx.place.cp.n;
        place.cp = GroupShape {
            n,
            per_node: n.min(cx.m.cluster.gpus_per_node),
        };
    }
    let (f, b, sel) = op_cost(op, cx.m, plan.dtype, &place);
    let rc = match plan.recompute {
        Recompute::Full => f.total(),
        Recompute::Selective => sel.total(),
        Recompute::None => 0.0,
    };
    let kv = (cx.base.tokens() * cx.model.kv_hidden()) as f64 * plan.dtype.bytes();
    let has_ring = op.fwd.iter().any(|k| {
        matches!(
            k,
            Kernel::Comm {
                group: Group::Cp,
                ..
            }
        )
    });
    let gather = if v == Variant::Sequence && matches!(op.name, "scores" | "attention") && !has_ring
    {
        // Sequence-split attention needs every key and value: gather K, V forward and
        // reduce-scatter their gradients backward.
        cx.coll(Coll::AllGather, 2.0 * kv) + cx.coll(Coll::ReduceScatter, 2.0 * kv)
    } else {
        0.0
    };
    f.total() + b.total() + rc + gather
}

/// Gradient reduction of one choice's weights per step: over dp unless the framework overlaps
/// it with backward, and over the tp axis too when the weights are replicated there while the
/// data is split (Alpa §4.2: data-parallel gradient synchronisation).
fn sync_s(cx: &Ctx, op: &Op, v: Variant) -> f64 {
    let grad = op.params * cx.plan.grad_reduce_bytes();
    let mut sync = 0.0;
    if !cx.plan.overlap_grad_reduce {
        sync += cx.m.collective_s(Coll::AllReduce, cx.place.dp, grad).0;
    }
    if matches!(v, Variant::Batch | Variant::Sequence) {
        sync += cx.coll(Coll::AllReduce, grad);
    }
    sync
}

/// Activation bytes one choice keeps per micro-batch (Korthikanti et al. per operator, as the
/// graph counts them); under full recomputation only the layer input, whole or split as the
/// first operator takes it.
fn saved_bytes(cx: &Ctx, op: &Op, first: bool, input: Layout) -> f64 {
    match cx.plan.recompute {
        Recompute::None => op.saved_bytes,
        Recompute::Selective => op.saved_selective_bytes,
        Recompute::Full if first => {
            let x = out_bytes(cx.model, &cx.base, "");
            if input == Layout::Rep {
                x
            } else {
                x / cx.t() as f64
            }
        }
        Recompute::Full => 0.0,
    }
}

/// ILP 1's instance for `plan`'s dense layer, with the memory of its first stage (the one
/// holding the most micro-batches in flight) as the budget: the plan's own Megatron layout
/// gets exactly the slack `est` leaves it (context-parallel ranks split the sequence before
/// the tp axis does). `None` without a tp axis, or with experts.
pub fn problem(
    model: &ModelSpec,
    plan: &Plan,
    m: &Machine,
    est: &Estimate,
) -> Option<LayerSharding> {
    if plan.tp < 2 || plan.ep > 1 || model.moe.is_some() {
        return None;
    }
    let cx = Ctx {
        model,
        plan,
        m,
        place: Placement::of(plan, m.cluster.gpus_per_node),
        base: Shard::of(plan),
    };
    let variants = [
        Variant::Replicated,
        Variant::Batch,
        Variant::Sequence,
        Variant::Megatron,
        Variant::MegatronSp,
    ];
    let graphs: Vec<(Variant, OpGraph)> = variants
        .iter()
        .filter_map(|&v| Some((v, transformer_layer(model, &cx.shard(v)?, false))))
        .collect();
    let names: Vec<&str> = graphs[0].1.graph.node_weights().map(|o| o.name).collect();
    let mut ops = Vec::new();
    let mut layouts = Vec::new();
    let mut megatron = Vec::new();
    for (i, &name) in names.iter().enumerate() {
        let (choices, lay, own) = op_choices(&cx, &graphs, i, name)?;
        megatron.push(own);
        ops.push(OpChoices { name, choices });
        layouts.push(lay);
    }
    let edges = edges(&cx, &graphs[0].1, &names, &layouts);
    let layers0 = est.stages.first()?.layers.max(1) as f64;
    let mut problem = ShardingProblem {
        ops,
        edges,
        mem_budget_bytes: 0.0,
    };
    let own_mem = problem.cost(&megatron).1;
    let slack = m.cluster.gpu.memory_gib * crate::units::GIB - est.stages[0].memory.total();
    problem.mem_budget_bytes = own_mem + slack / layers0;
    Some(LayerSharding {
        problem,
        layouts,
        megatron,
    })
}

/// An operator's choices, their (input, output) layouts, and the plan's own choice.
type OpLayouts = (Vec<Choice>, Vec<(Layout, Layout)>, usize);

/// Operator `i`'s choices from the variant graphs, their (input, output) layouts, and which
/// one is the plan's own layout.
fn op_choices(
    cx: &Ctx,
    graphs: &[(Variant, OpGraph)],
    i: usize,
    name: &'static str,
) -> Option<OpLayouts> {
    let sp = cx.plan.sp();
    let own = |v: Variant| match role(name) {
        Role::Column | Role::Row => {
            v == if sp {
                Variant::MegatronSp
            } else {
                Variant::Megatron
            }
        }
        Role::Split => v == Variant::Megatron,
        Role::Local => {
            v == if sp {
                Variant::Sequence
            } else {
                Variant::Replicated
            }
        }
    };
    let (mut choices, mut lay, mut reference) = (Vec::new(), Vec::new(), None);
    for (v, g) in graphs {
        let op = g.graph.node_weights().nth(i)?;
        let Some((label, inp, out)) = choice_of(role(name), *v, name) else {
            continue;
        };
        if own(*v) {
            reference = Some(choices.len());
        }
        choices.push(Choice {
            label,
            ..price_choice(cx, op, *v, i == 0, inp)
        });
        lay.push((inp, out));
    }
    Some((choices, lay, reference?))
}

/// The graph's edges (skip connections carry the block input, in the producer's input
/// layout) plus the edge from the layer's output to the next layer's input.
fn edges(cx: &Ctx, g: &OpGraph, names: &[&str], layouts: &[Vec<(Layout, Layout)>]) -> Vec<Edge> {
    let n = names.len();
    let mut pairs: Vec<(usize, usize, bool)> = g
        .graph
        .edge_indices()
        .filter_map(|e| g.graph.edge_endpoints(e))
        .map(|(a, b)| (a.index(), b.index(), b.index() != a.index() + 1))
        .collect();
    pairs.push((n - 1, 0, false));
    let micro = cx.plan.n_micro() as f64;
    pairs
        .into_iter()
        .map(|(from, to, skip)| {
            let bytes = out_bytes(cx.model, &cx.base, if skip { "" } else { names[from] });
            let cost_s = layouts[from]
                .iter()
                .map(|&(inp, out)| {
                    let src = if skip { inp } else { out };
                    layouts[to]
                        .iter()
                        .map(|&(dst, _)| micro * cx.reshard_s(src, dst, bytes))
                        .collect()
                })
                .collect();
            Edge { from, to, cost_s }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{PricedGraphs, estimate};
    use crate::search::ilp::{IlpOptions, IlpStatus, sharding};
    use crate::spec::{ClusterSpec, load_cluster, load_model};

    /// GPT-3 175B at dp=16 tp=8 pp=8 with sequence parallelism (96 micro-batches).
    fn gpt3_plan(overlap_grad_reduce: bool) -> (ModelSpec, Plan) {
        let m = load_model("gpt3-175b").unwrap();
        let mut plan = Plan::new(16, 8, 8, 1, 1536, 2048);
        plan.sequence_parallel = true;
        plan.recompute = Recompute::Selective;
        plan.zero = 1;
        plan.overlap_grad_reduce = overlap_grad_reduce;
        (m, plan)
    }

    fn solve_on(c: &ClusterSpec, m: &ModelSpec, plan: &Plan) -> (LayerSharding, Vec<&'static str>) {
        let mach = Machine {
            cluster: c,
            profile: None,
        };
        let ls = problem(m, plan, &mach, &estimate(m, c, plan, None)).unwrap();
        let s = sharding::solve(&ls.problem, &IlpOptions::default()).unwrap();
        assert!(matches!(
            s.report.status,
            IlpStatus::Optimal | IlpStatus::GapLimit
        ));
        let labels = ls
            .problem
            .ops
            .iter()
            .zip(&s.choice)
            .map(|(o, &k)| o.choices[k].label)
            .collect();
        (ls, labels)
    }

    /// The plan's own layout, priced by ILP 1, is the cost model's layer: with SP every edge
    /// of Megatron's layout is free, and the choices add up to n_micro × (forward + backward +
    /// selective recomputation) of the priced dense layer, plus what the cost model leaves
    /// out: the all-reduce of the two LayerNorms' gradients (2 × 2h fp32) over the TP group
    /// that SP needs (Megatron-LM `finalize_model_grads.py`, `_allreduce_layernorm_grads`).
    #[test]
    fn megatron_layout_costs_what_the_cost_model_says() {
        let (m, plan) = gpt3_plan(true);
        let c = load_cluster("a100-80g-x1024").unwrap();
        let mach = Machine {
            cluster: &c,
            profile: None,
        };
        let ls = problem(&m, &plan, &mach, &estimate(&m, &c, &plan, None)).unwrap();
        let pg = PricedGraphs::new(&m, &plan, &mach);
        let layer = pg.dense.fwd.total() + pg.dense.bwd.total() + pg.dense.selective_fwd.total();
        let (t, _) = ls.problem.cost(&ls.megatron);
        let tp = Placement::of(&plan, 8).tp;
        let norm_grads = 2.0 * 2.0 * 12288.0 * 4.0;
        let sync = 2.0 * mach.collective_s(Coll::AllReduce, tp, norm_grads / 2.0).0;
        let want = plan.n_micro() as f64 * layer + sync;
        assert!((t - want).abs() <= 1e-9 * want, "{t} vs {want}");
    }

    /// Issue 4: on NVLink (300 GB/s per GPU) Megatron's column-then-row split is the optimum of
    /// ILP 1 for GPT-3 whose gradients are reduced after the last backward (Megatron's local
    /// DDP with pipelining, SC'21); on a PCIe-only server (16 GB/s per GPU) the same layer and
    /// plan is better laid out otherwise (the projection keeps its weights and splits the
    /// sequence, paying one gradient all-reduce per step instead of collectives per
    /// micro-batch).
    #[test]
    fn megatron_split_where_links_are_fast_not_where_slow() {
        let (m, plan) = gpt3_plan(false);
        let mut c = load_cluster("a100-80g-x1024").unwrap();
        let (ls, fast) = solve_on(&c, &m, &plan);
        let col = |l: &str| l.starts_with("column");
        let row = |l: &str| l.starts_with("row");
        let at = |name: &str| ls.problem.ops.iter().position(|o| o.name == name).unwrap();
        assert!(col(fast[at("qkv")]) && col(fast[at("fc1")]), "{fast:?}");
        assert!(row(fast[at("proj")]) && row(fast[at("fc2")]), "{fast:?}");
        assert_eq!(
            (fast[at("attention")], fast[at("gelu")]),
            ("heads", "features")
        );
        let own = ls.problem.cost(&ls.megatron).0;
        let best = sharding::solve(&ls.problem, &IlpOptions::default())
            .unwrap()
            .time_s;
        assert!((best - own).abs() <= 1e-6 * own, "{best} vs Megatron {own}");

        c.intra_node.bw_gbytes_s = 16.0;
        let (ls, slow) = solve_on(&c, &m, &plan);
        let own = ls.problem.cost(&ls.megatron).0;
        let best = sharding::solve(&ls.problem, &IlpOptions::default())
            .unwrap()
            .time_s;
        assert!(best < 0.9 * own, "{best} vs Megatron {own}");
        assert!(!row(slow[at("proj")]), "{slow:?}");
    }
}
