//! What a rank's model chunk holds: its layers, and its parameters (dense and expert; the
//! Transformer Engine linears' among them, for FP8 weights).

use crate::cost::PricedGraphs;
use crate::cost::memory::StageLayout;
use crate::graph::OpGraph;
use crate::spec::{ModelSpec, Plan, Recompute};

/// Layers (with their recomputation) of chunk `c` of stage `st`: `stage_layouts` lists a
/// stage's layers chunk by chunk, `st.chunks` of them in each ([`Plan::chunk_layer_counts`]).
pub fn chunk_layers<'a>(st: &'a StageLayout, plan: &Plan, c: u64) -> &'a [(u64, Recompute)] {
    debug_assert_eq!(st.chunks.len() as u64, plan.vpp.max(1));
    let start: u64 = st.chunks[..c as usize].iter().sum();
    let end = start + st.chunks[c as usize];
    &st.layers[start as usize..end as usize]
}

fn expert_params(g: &OpGraph) -> f64 {
    g.graph
        .node_weights()
        .filter(|o| o.name.starts_with("expert_"))
        .map(|o| o.params)
        .sum()
}

/// `f` (dense, expert) summed over chunk `c`'s layer graphs, and on the last chunk of the
/// last stage over each multi-token prediction depth (whose layer holds experts of its own).
fn chunk_layer_sum(
    model: &ModelSpec,
    plan: &Plan,
    pg: &PricedGraphs,
    layout: &StageLayout,
    c: u64,
    f: impl Fn(&OpGraph) -> (f64, f64),
) -> (f64, f64) {
    let add = |a: (f64, f64), b: (f64, f64), n: f64| (a.0 + n * b.0, a.1 + n * b.1);
    let mut sum = chunk_layers(layout, plan, c)
        .iter()
        .fold((0.0, 0.0), |acc, &(i, _)| {
            add(acc, f(pg.graphs.layer(model, i)), 1.0)
        });
    if let Some(g) = pg
        .graphs
        .mtp
        .as_ref()
        .filter(|_| (layout.stage, c) == (plan.pp - 1, plan.vpp - 1))
    {
        sum = add(sum, f(g), model.mtp_layers as f64);
    }
    sum
}

/// Parameters of one rank's chunk: (dense, expert).
pub fn chunk_params(
    model: &ModelSpec,
    plan: &Plan,
    pg: &PricedGraphs,
    layout: &StageLayout,
    c: u64,
) -> (f64, f64) {
    let split = |g: &OpGraph| {
        let e = expert_params(g);
        (g.params() - e, e)
    };
    let (mut dense, experts) = chunk_layer_sum(model, plan, pg, layout, c, split);
    let st = layout.stage;
    if (st, c) == (0, 0) {
        dense += pg.graphs.embedding.params();
    }
    if (st, c) == (plan.pp - 1, plan.vpp - 1) {
        dense += pg.graphs.head.params();
        if model.embedding_on_last_stage() && plan.pp > 1 {
            // Megatron keeps a copy of the word embeddings on the last stage for a tied head
            // and for multi-token prediction.
            dense += (plan.vocab_rows(model.vocab) * model.hidden) as f64;
        }
    }
    (dense, experts)
}

/// Of [`chunk_params`], the Transformer Engine linears' (`Op::fp8`) parameters, (dense,
/// expert), where the plan keeps them in FP8 and gathers them so (`Plan::fp8_param_gather`):
/// the distributed optimizer's all-gather moves one byte for each of them. Zeros otherwise.
pub fn chunk_fp8_params(
    model: &ModelSpec,
    plan: &Plan,
    pg: &PricedGraphs,
    layout: &StageLayout,
    c: u64,
) -> (f64, f64) {
    if !plan.fp8_param_gather {
        return (0.0, 0.0);
    }
    chunk_layer_sum(model, plan, pg, layout, c, OpGraph::te_params)
}
