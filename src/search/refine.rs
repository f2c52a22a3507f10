//! ILP 2 inside the search: after every plan is priced with the closed form, the plans whose
//! stage partition or recomputation could still matter are re-solved with ILP 2, cheapest
//! lower bound first, and only while that bound could still beat the k-th best plan (plans
//! it cannot beat are dominated and never solved). The ILP's plan replaces the uniform one
//! when the cost model prices it faster, or when only it fits.

use super::Space;
use super::ilp::{IlpError, IlpReport, partition, stages};
use crate::cost::{Estimate, Machine, PricedGraphs, estimate_priced};
use crate::spec::{ModelSpec, Plan, Recompute};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// ILP 2's outcome for one ranked plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageIlp {
    /// Solver status, objective (pipeline seconds per step), bound and gap.
    pub report: IlpReport,
    /// Whether its partition replaced the uniform one (false: the cost model did not price
    /// it faster, so the uniform plan stands).
    pub adopted: bool,
}

/// A priced plan and the priced graphs it shares with its group.
pub(super) type Priced = (Estimate, Arc<PricedGraphs>);

/// What refinement did.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Refinement {
    /// ILP 2 per plan as finally ranked.
    pub stage_ilp: HashMap<Plan, StageIlp>,
    /// Instances solved (memo hits included).
    pub solved: usize,
    /// Candidates skipped because their lower bound could not beat the k-th best plan.
    pub pruned: usize,
    /// Instances the solver failed on (not infeasible: an error).
    pub failed: usize,
}

/// Plans solved between two updates of the threshold (fixed, so results do not depend on the
/// number of threads).
const ROUND: usize = 8;

/// A lower bound of `e.plan`'s step time under any partition and recomputation: the closed
/// form Σ T_i/v + (m·v − 1)/v · max T_i with max T_i ≥ Σ T_i / p, and Σ T_i no less than
/// today's minus all recomputation (which is at most the forward time).
fn lower_bound(e: &Estimate) -> f64 {
    let p = &e.plan;
    let full = p.recompute == Recompute::Full;
    let work: f64 = e
        .stages
        .iter()
        .map(|s| s.fwd_s + s.bwd_s - if full { s.fwd_s } else { 0.0 })
        .sum();
    let (v, m) = (p.vpp as f64, p.n_micro() as f64);
    work / v + (m * v - 1.0) / v * work / p.pp as f64
}

/// The k-th best step time among plans that fit (∞ with fewer than k).
fn threshold(list: &[Priced], k: usize) -> f64 {
    let mut t: Vec<f64> = list
        .iter()
        .filter(|(e, _)| e.fits)
        .map(|(e, _)| e.step_time_s)
        .collect();
    if t.len() < k.max(1) {
        return f64::INFINITY;
    }
    let k = k.max(1) - 1;
    t.select_nth_unstable_by(k, f64::total_cmp);
    t[k]
}

/// ILP 2's report on one plan and, when adopted, the plan's new estimate.
type Outcome = (IlpReport, Option<Estimate>);

/// Solves ILP 2 for one plan: its report and, when adopted, the new estimate; `None` when the
/// ILP has nothing to choose, `Some(Err)` when the solver failed.
fn solve_one(
    model: &ModelSpec,
    m: &Machine,
    (e, pg): &Priced,
    space: &Space,
) -> Option<Result<Outcome, IlpError>> {
    let problem = stages::problem(model, &e.plan, m, pg)?;
    let part = match partition::solve(&problem, &space.ilp) {
        Ok(p) => p,
        Err(err) => return Some(Err(err)),
    };
    if part.stage_layers.is_empty() {
        return Some(Ok((part.report, None)));
    }
    let plan = stages::apply(model, &e.plan, &part);
    // Full recomputation of no layer is the plan without recomputation, which the search
    // refines on its own when the space has it.
    let twin = plan.recompute != e.plan.recompute && space.recompute.contains(&plan.recompute);
    if plan == e.plan || twin || !plan.check(model, m.cluster).is_empty() {
        return Some(Ok((part.report, None)));
    }
    let new = estimate_priced(model, &plan, m, pg);
    let better = new.fits && (!e.fits || new.step_time_s < e.step_time_s * (1.0 - 1e-9));
    Some(Ok((part.report, better.then_some(new))))
}

/// Refines `list` in place (see the module doc); `top_k` sets the bar a plan must beat; only
/// partitions `keep` accepts are adopted.
pub(super) fn refine(
    model: &ModelSpec,
    m: &Machine,
    list: &mut [Priced],
    top_k: usize,
    space: &Space,
    keep: &(dyn Fn(&Plan) -> bool + Sync),
) -> Refinement {
    let mut order: Vec<(f64, usize)> = list
        .iter()
        .enumerate()
        .filter(|(_, (e, _))| e.plan.recompute_layers.is_none() && stages::applies(model, &e.plan))
        .map(|(i, (e, _))| (lower_bound(e), i))
        .collect();
    order.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then_with(|| list[a.1].0.plan.short().cmp(&list[b.1].0.plan.short()))
    });
    let mut out = Refinement::default();
    let mut bar = threshold(list, top_k);
    let mut next = 0;
    while next < order.len() && order[next].0 < bar {
        let end = (next + ROUND).min(order.len());
        let round: Vec<usize> = order[next..end]
            .iter()
            .take_while(|(lb, _)| *lb < bar)
            .map(|&(_, i)| i)
            .collect();
        next += round.len();
        let results: Vec<(usize, Option<Result<Outcome, IlpError>>)> = round
            .par_iter()
            .map(|&i| (i, solve_one(model, m, &list[i], space)))
            .collect();
        for (i, r) in results {
            let (report, new) = match r {
                None => continue,
                Some(Err(_)) => {
                    // The uniform plan stands; the count is reported.
                    out.failed += 1;
                    continue;
                }
                Some(Ok(x)) => x,
            };
            out.solved += 1;
            // A partition the caller cannot use (one an export format cannot write) is not
            // adopted; the plan keeps its start.
            let new = new.filter(|e| keep(&e.plan));
            let adopted = new.is_some();
            if let Some(new) = new {
                list[i].0 = new;
            }
            out.stage_ilp
                .insert(list[i].0.plan.clone(), StageIlp { report, adopted });
        }
        bar = threshold(list, top_k);
    }
    out.pruned = order.len() - next;
    refine_ends(model, m, list, top_k, keep);
    out
}

/// For the plans ILP 2 cannot model (layers of several kinds) under Megatron, pipelined
/// without interleaving: the fastest of the partitions Megatron-LM launches near the even
/// split ([`stages::end_splits`]) replaces the start split where it fits and `keep` accepts
/// it, for plans whose lower bound could still beat the k-th best.
fn refine_ends(
    model: &ModelSpec,
    m: &Machine,
    list: &mut [Priced],
    top_k: usize,
    keep: &(dyn Fn(&Plan) -> bool + Sync),
) {
    let bar = threshold(list, top_k);
    let candidates: Vec<usize> = (0..list.len())
        .filter(|&i| {
            let p = &list[i].0.plan;
            p.framework == crate::spec::Framework::Megatron
                && p.vpp == 1
                && p.recompute_layers.is_none()
                && !stages::applies(model, p)
                && lower_bound(&list[i].0) < bar
        })
        .collect();
    let better: Vec<(usize, Estimate)> = candidates
        .par_iter()
        .filter_map(|&i| {
            let (e, pg) = &list[i];
            stages::end_splits(model.layers, e.plan.pp)
                .into_iter()
                .map(|n| Plan {
                    stage_layers: Some(n),
                    ..e.plan.clone()
                })
                .filter(|p| *p != e.plan && keep(p) && p.check(model, m.cluster).is_empty())
                .map(|p| estimate_priced(model, &p, m, pg))
                .filter(|n| n.fits && (!e.fits || n.step_time_s < e.step_time_s * (1.0 - 1e-9)))
                .min_by(|a, b| a.step_time_s.total_cmp(&b.step_time_s))
                .map(|n| (i, n))
        })
        .collect();
    for (i, e) in better {
        list[i].0 = e;
    }
}
