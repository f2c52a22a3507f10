//! Re-prices a search's top plans with the simulator and re-ranks them: the closed form ranks
//! thousands of plans, the simulation tells the truth about the few that matter.

use super::{SimError, Simulation, simulate_plan};
use crate::calib::Profile;
use crate::cost::Estimate;
use crate::search::SearchResult;
use crate::spec::{ClusterSpec, ModelSpec};

/// One of the top plans, priced both ways.
#[derive(Clone, Debug)]
pub struct Resimulated {
    /// Its rank by the closed form, from 0.
    pub closed_form_rank: usize,
    /// The closed-form estimate.
    pub estimate: Estimate,
    /// The simulation.
    pub sim: Simulation,
}

/// The top plans in simulated order.
#[derive(Clone, Debug)]
pub struct Rerank {
    /// Fastest simulated step first (ties keep the closed-form order).
    pub plans: Vec<Resimulated>,
}

impl Rerank {
    /// Whether the simulation ordered the plans differently from the closed form.
    pub fn order_changed(&self) -> bool {
        self.plans
            .iter()
            .enumerate()
            .any(|(i, p)| p.closed_form_rank != i)
    }
}

/// Simulates every plan of `result.top` and sorts them by simulated step time.
pub fn rerank(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    result: &SearchResult,
) -> Result<Rerank, SimError> {
    let mut plans = result
        .top
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ps = simulate_plan(model, cluster, profile, &e.plan, false)?;
            Ok(Resimulated {
                closed_form_rank: i,
                estimate: e.clone(),
                sim: ps.sim,
            })
        })
        .collect::<Result<Vec<_>, SimError>>()?;
    plans.sort_by(|a, b| {
        a.sim
            .step_time_s
            .total_cmp(&b.sim.step_time_s)
            .then(a.closed_form_rank.cmp(&b.closed_form_rank))
    });
    Ok(Rerank { plans })
}
