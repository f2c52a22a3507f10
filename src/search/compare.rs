//! The comparison of parallelisation methods this tool exists for: DP-only, TP-only,
//! PP-only and the best hybrid on the same GPUs and global batch, against one GPU.

use super::{Space, search_where};
use crate::calib::Profile;
use crate::cost::{Estimate, estimate};
use crate::spec::{ClusterSpec, ModelSpec, Plan};

/// A predicate selecting the plans of one method.
type PlanFilter = dyn Fn(&Plan) -> bool + Sync;

/// The best plan of one parallelisation method.
#[derive(Clone, Debug)]
pub struct Strategy {
    /// `dp-only`, `tp-only`, `pp-only` or `hybrid`.
    pub name: &'static str,
    /// Its fastest plan that fits, if any.
    pub best: Option<Estimate>,
    /// Why there is none.
    pub why_none: Option<String>,
}

/// All methods on one GPU count.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// GPUs compared on.
    pub n_gpus: u64,
    /// The fastest single-GPU plan (may not fit; then `fits` is false and speedups are
    /// relative to the fastest plan on a hypothetical GPU with unbounded memory).
    pub single: Estimate,
    /// DP-only, TP-only, PP-only, hybrid.
    pub strategies: Vec<Strategy>,
}

impl Comparison {
    /// Speedup of `e` over one GPU processing the same global batch.
    pub fn speedup(&self, e: &Estimate) -> f64 {
        self.single.step_time_s / e.step_time_s
    }
    /// Speedup divided by the GPU count.
    pub fn efficiency(&self, e: &Estimate) -> f64 {
        self.speedup(e) / self.n_gpus as f64
    }
}

/// Why a single-dimension method cannot use `n` GPUs at all, in words a reader can act on:
/// the search never enumerates tensor parallelism beyond twice a node (so no rejection says
/// why there is no TP-only plan on 8 GPUs of 2-GPU nodes), and pipeline stages need a layer
/// each.
fn beyond_reach(method: &str, n: u64, gpus_per_node: u64, layers: u64) -> Option<String> {
    match method {
        "tp-only" if n > gpus_per_node => Some(format!(
            "tp = {n} is beyond one node ({gpus_per_node} GPUs): tensor parallelism stays on a \
             node's NVLink"
        )),
        "pp-only" if n > layers => Some(format!("pp = {n} exceeds the model's {layers} layers")),
        _ => None,
    }
}

/// Compares the methods on `cluster` (all its GPUs) for `space`'s batch and sequence; an
/// error (the first reason) when no single-GPU plan is valid at all, whatever its memory —
/// the model, batch or sequence length is then wrong for every layout.
pub fn compare(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    space: &Space,
) -> Result<Comparison, String> {
    let n = cluster.n_gpus();
    let methods: [(&'static str, &PlanFilter); 4] = [
        ("dp-only", &|p: &Plan| p.tp == 1 && p.pp == 1 && p.cp == 1),
        ("tp-only", &|p: &Plan| p.dp == 1 && p.pp == 1 && p.cp == 1),
        ("pp-only", &|p: &Plan| p.dp == 1 && p.tp == 1 && p.cp == 1),
        ("hybrid", &|_: &Plan| true),
    ];
    let strategies = methods
        .iter()
        .map(|(name, keep)| {
            let r = search_where(model, cluster, profile, space, 1, *keep);
            let why_none = r.top.is_empty().then(|| {
                let mut reasons: Vec<_> = r.infeasible.iter().collect();
                reasons.sort_by(|a, b| b.1.cmp(a.1));
                // Plans that passed every check and ran out of memory are the binding reason:
                // the others, fixed, would be among them (Mixtral's TP-only plans without
                // sequence parallelism outnumber those with it, which all run out of memory).
                if r.infeasible
                    .contains_key(crate::spec::infeasible::OUT_OF_MEMORY)
                {
                    reasons.retain(|(w, _)| **w == crate::spec::infeasible::OUT_OF_MEMORY);
                }
                beyond_reach(name, n, cluster.gpus_per_node, model.layers).unwrap_or_else(|| {
                    reasons
                        .first()
                        .map_or("no plan of this kind".to_string(), |(w, _)| w.to_string())
                })
            });
            Strategy {
                name,
                best: r.top.into_iter().next(),
                why_none,
            }
        })
        .collect();
    let one = cluster.with_gpus(1).expect("every cluster has one GPU");
    let r = search_where(model, &one, profile, space, 1, &|_| true);
    let single = match r.top.into_iter().next() {
        Some(e) => e,
        None => {
            // Nothing fits one GPU: a GPU with unbounded memory would run the fastest plan
            // (the leanest one recomputes, and made every speedup look superlinear).
            let plans = super::enumerate(model, &one, space);
            let first_reason = plans
                .iter()
                .find_map(|p| p.check(model, &one).into_iter().next());
            // Judged against the memory the search plans with, shown against the device.
            let planning = space.planning_cluster(&one);
            plans
                .into_iter()
                .filter(|p| p.check(model, &one).is_empty())
                .map(|p| Estimate {
                    capacity_gib: one.gpu.memory_gib,
                    ..estimate(model, &planning, &p, profile)
                })
                .min_by(|a, b| {
                    a.step_time_s
                        .total_cmp(&b.step_time_s)
                        .then_with(|| a.plan.short().cmp(&b.plan.short()))
                })
                .ok_or_else(|| {
                    first_reason.map_or("no single-GPU plan to compare against".into(), |w| {
                        format!("no single-GPU plan of {} is valid: {w}", model.name)
                    })
                })?
        }
    };
    Ok(Comparison {
        n_gpus: n,
        single,
        strategies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Recompute, load_cluster, load_model};

    #[test]
    fn a_model_too_big_for_one_gpu_is_measured_against_its_fastest_plan() {
        // 18 B parameters need ~300 GB of model state: nothing fits one 80 GB GPU. With
        // unbounded memory, recomputation only adds work: the baseline recomputes nothing.
        let m = load_model("gpt-18b").unwrap();
        let c = load_cluster("a100x8").unwrap();
        let cmp = compare(&m, &c, None, &Space::new(64, 2048)).unwrap();
        assert!(!cmp.single.fits);
        assert_eq!(cmp.single.plan.recompute, Recompute::None);
        let hybrid = cmp.strategies[3].best.as_ref().unwrap();
        assert!(cmp.efficiency(hybrid) < 1.0, "{}", cmp.efficiency(hybrid));
    }

    /// On 4 nodes of 2 GPUs TP-only would need tp = 8 across nodes, which the search never
    /// enumerates: the reason names the node, not "no plan of this kind" (nothing had been
    /// rejected, so there was no reason to show); a 4-layer model has no PP-only plan on 8.
    #[test]
    fn methods_that_cannot_use_the_gpus_say_why() {
        let m = load_model("gpt2-xl").unwrap();
        let c = load_cluster("a100-4x2").unwrap();
        assert_eq!((c.n_gpus(), c.gpus_per_node), (8, 2));
        let cmp = compare(&m, &c, None, &Space::new(64, 1024)).unwrap();
        let tp = &cmp.strategies[1];
        assert!(tp.best.is_none());
        assert_eq!(
            tp.why_none.as_deref(),
            Some("tp = 8 is beyond one node (2 GPUs): tensor parallelism stays on a node's NVLink")
        );
        assert_eq!(
            beyond_reach("pp-only", 8, 2, 4).as_deref(),
            Some("pp = 8 exceeds the model's 4 layers")
        );
        assert_eq!(beyond_reach("pp-only", 8, 2, 48), None);
        assert_eq!(beyond_reach("dp-only", 8, 2, 4), None);
    }
}
