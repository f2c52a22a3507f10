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
    /// relative to that hypothetical GPU with unbounded memory).
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

/// Compares the methods on `cluster` (all its GPUs) for `space`'s batch and sequence.
pub fn compare(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    space: &Space,
) -> Comparison {
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
                reasons
                    .first()
                    .map_or("no plan of this kind".to_string(), |(w, _)| w.to_string())
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
    let single = r.top.into_iter().next().unwrap_or_else(|| {
        // Nothing fits one GPU: take the leanest plan, priced as if memory were unbounded.
        super::enumerate(model, &one, space)
            .into_iter()
            .filter(|p| p.check(model, &one).is_empty())
            .map(|p| estimate(model, &one, &p, profile))
            .min_by(|a, b| a.memory_gib_per_gpu.total_cmp(&b.memory_gib_per_gpu))
            .expect("a single-GPU plan exists")
    });
    Comparison {
        n_gpus: n,
        single,
        strategies,
    }
}
