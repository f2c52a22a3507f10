//! The numbers behind a report: the parallelisation methods compared at every GPU count
//! (`search::compare` on the cluster cut to that count), time-to-train for the token budget,
//! the knee of the scaling curve, the top plans at the knee and the chosen plan simulated.
//! Pure: no IO.

use super::ReportError;
use crate::calib::Profile;
use crate::cost::{Breakdown, Estimate};
use crate::search::{Comparison, Space, Strategy, compare, search};
use crate::sim::{PlanSim, simulate_plan};
use crate::spec::{ClusterSpec, ModelSpec};

/// A speedup someone expects at a GPU count, checked against the prediction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Claim {
    /// GPUs.
    pub n_gpus: u64,
    /// Claimed speedup over one GPU.
    pub speedup: f64,
}

/// What to study.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// GPU counts, ascending, each a valid cut of the cluster.
    pub gpus: Vec<u64>,
    /// Training tokens.
    pub tokens: f64,
    /// Global batch, sequence length and the plan space, the same at every count.
    pub space: Space,
    /// Price of one GPU-hour, when known.
    pub gpu_hour_price: Option<f64>,
    /// The knee is the largest GPU count up to which every doubling step keeps at least this
    /// marginal scaling efficiency.
    pub knee_efficiency: f64,
    /// How many of the best plans at the knee to break down.
    pub top: usize,
    /// Speedups to check.
    pub claims: Vec<Claim>,
}

/// The methods compared on one GPU count.
#[derive(Clone, Debug)]
pub struct Point {
    /// The cluster cut to this count.
    pub cluster: ClusterSpec,
    /// DP-only, TP-only, PP-only and hybrid.
    pub cmp: Comparison,
}

impl Point {
    /// GPUs.
    pub fn n_gpus(&self) -> u64 {
        self.cmp.n_gpus
    }

    /// The best plan of any kind, if one fits.
    pub fn hybrid(&self) -> Option<&Estimate> {
        self.method("hybrid").best.as_ref()
    }

    /// One method's result.
    pub fn method(&self, name: &str) -> &Strategy {
        self.cmp
            .strategies
            .iter()
            .find(|s| s.name == name)
            .expect("compare returns every method")
    }
}

/// A plan shown in the breakdown and memory charts, with its label.
#[derive(Clone, Debug)]
pub struct Labelled {
    /// `#1`, `#2`, … for the fastest plans, or the method name.
    pub label: String,
    /// The plan priced.
    pub estimate: Estimate,
}

/// Everything a report shows.
#[derive(Clone, Debug)]
pub struct Study {
    /// One per GPU count, ascending.
    pub points: Vec<Point>,
    /// Index of the knee in `points`, if any count has a feasible plan.
    pub knee: Option<usize>,
    /// Fastest plans at the knee, then the best DP-only, TP-only and PP-only plans there.
    pub top: Vec<Labelled>,
    /// The chosen plan (fastest at the knee) simulated, with its timeline.
    pub sim: Option<PlanSim>,
    /// Why the chosen plan could not be simulated.
    pub sim_error: Option<String>,
}

/// Names of the step-time terms, in chart order, with their values.
pub fn terms(b: &Breakdown) -> [(&'static str, f64); 8] {
    [
        ("compute", b.compute_s),
        ("recompute", b.recompute_s),
        ("TP comm", b.tp_comm_s),
        ("PP comm", b.pp_comm_s),
        ("DP comm", b.dp_comm_s),
        ("CP/EP comm", b.other_comm_s),
        ("bubble", b.bubble_s),
        ("optimizer", b.optimizer_s),
    ]
}

/// What a step-time term means when it is the one that limits scaling.
pub fn term_meaning(term: &str) -> &'static str {
    match term {
        "compute" => {
            "per-GPU compute shrinks slower than the GPU count grows (smaller GEMMs \
                      run less efficiently, or work splits unevenly)"
        }
        "recompute" => "activation recomputation (forward work repeated in the backward pass)",
        "TP comm" => "tensor-parallel collectives on the critical path",
        "PP comm" => "pipeline sends between stages",
        "DP comm" => "gradient reduction not hidden behind the backward pass",
        "CP/EP comm" => "context- or expert-parallel collectives",
        "bubble" => "pipeline fill and drain (the bubble)",
        _ => "the optimizer step, which data parallelism does not shrink unless ZeRO shards it",
    }
}

/// The term that loses the most time against ideal scaling from `base` to `at`: each term's
/// excess is `term(at) − term(base) · n_base / n_at`; returns the largest with its excess
/// and the whole gap `step(at) − step(base) · n_base / n_at`, in seconds.
pub fn limiting(base: &Estimate, at: &Estimate) -> (&'static str, f64, f64) {
    let k = base.n_gpus as f64 / at.n_gpus as f64;
    let (b, a) = (terms(&base.breakdown), terms(&at.breakdown));
    let (name, excess) = a
        .iter()
        .zip(&b)
        .map(|((n, x), (_, y))| (*n, x - y * k))
        .fold(("compute", f64::MIN), |m, t| if t.1 > m.1 { t } else { m });
    (name, excess, at.step_time_s - base.step_time_s * k)
}

/// Time to train `tokens` with plan `e`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Training {
    /// Wall-clock days.
    pub days: f64,
    /// GPU-hours.
    pub gpu_hours: f64,
    /// GPU-hours × price.
    pub cost: Option<f64>,
}

/// Seconds in a day and in an hour.
const DAY_S: f64 = 86_400.0;
const HOUR_S: f64 = 3_600.0;

/// Days, GPU-hours and cost of training `tokens` with `e`'s plan: whole steps of its global
/// batch (⌈tokens / tokens per step⌉, the step count the report states), each `e`'s step
/// time. (Tokens over tokens/s had priced a run shorter than one step at 1e6 tokens.)
pub fn training(e: &Estimate, tokens: f64, price: Option<f64>) -> Training {
    let per_step = (e.plan.global_batch * e.plan.seq_len) as f64;
    let secs = (tokens / per_step).ceil() * e.step_time_s;
    let gpu_hours = secs / HOUR_S * e.n_gpus as f64;
    Training {
        days: secs / DAY_S,
        gpu_hours,
        cost: price.map(|p| p * gpu_hours),
    }
}

/// Marginal scaling efficiency of `points[i]`'s best plan against the previous count with a
/// feasible plan: (T_prev / T_i) / (n_i / n_prev). `None` for the first feasible count.
pub fn marginal(points: &[Point], i: usize) -> Option<(usize, f64)> {
    let at = points[i].hybrid()?;
    let j = (0..i).rev().find(|&j| points[j].hybrid().is_some())?;
    let prev = points[j].hybrid()?;
    let speedup = prev.step_time_s / at.step_time_s;
    Some((j, speedup / (at.n_gpus as f64 / prev.n_gpus as f64)))
}

/// The knee: walking up the feasible counts, the last one reached while every step's
/// marginal efficiency stays at or above `threshold`.
pub fn knee(points: &[Point], threshold: f64) -> Option<usize> {
    let mut knee = None;
    for i in 0..points.len() {
        if points[i].hybrid().is_none() {
            continue;
        }
        match marginal(points, i) {
            None => knee = Some(i),
            Some((_, e)) if e >= threshold => knee = Some(i),
            Some(_) => break,
        }
    }
    knee
}

/// The fastest plans at `at`, then the best DP-only, TP-only and PP-only plans not among
/// them.
fn top_plans(
    model: &ModelSpec,
    at: &Point,
    profile: Option<&Profile>,
    cfg: &Config,
) -> Vec<Labelled> {
    let r = search(model, &at.cluster, profile, &cfg.space, cfg.top.max(1));
    let mut top: Vec<Labelled> = r
        .top
        .into_iter()
        .enumerate()
        .map(|(i, e)| Labelled {
            label: format!("#{}", i + 1),
            estimate: e,
        })
        .collect();
    for s in at.cmp.strategies.iter().filter(|s| s.name != "hybrid") {
        if let Some(e) = &s.best
            && !top.iter().any(|l| l.estimate.plan == e.plan)
        {
            top.push(Labelled {
                label: s.name.to_string(),
                estimate: e.clone(),
            });
        }
    }
    top
}

/// Runs the study: compares the methods at every count, finds the knee, ranks the plans
/// there and simulates the fastest.
pub fn run(
    model: &ModelSpec,
    cluster: &ClusterSpec,
    profile: Option<&Profile>,
    cfg: &Config,
) -> Result<Study, ReportError> {
    let cuts = cfg
        .gpus
        .iter()
        .map(|&n| {
            cluster.with_gpus(n).ok_or_else(|| ReportError::Gpus {
                n,
                cluster: cluster.name.clone(),
                total: cluster.n_gpus(),
                per_node: cluster.gpus_per_node,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let points: Vec<Point> = cuts
        .into_iter()
        .map(|c| {
            Ok(Point {
                cmp: compare(model, &c, profile, &cfg.space).map_err(ReportError::NoPlan)?,
                cluster: c,
            })
        })
        .collect::<Result<_, ReportError>>()?;
    let knee = knee(&points, cfg.knee_efficiency);
    let mut study = Study {
        points,
        knee,
        top: Vec::new(),
        sim: None,
        sim_error: None,
    };
    let Some(k) = knee else {
        return Ok(study);
    };
    let at = &study.points[k];
    let top = top_plans(model, at, profile, cfg);
    let chosen = top[0].estimate.plan.clone();
    match simulate_plan(model, &at.cluster, profile, &chosen, true) {
        Ok(s) => study.sim = Some(s),
        Err(e) => study.sim_error = Some(e.to_string()),
    }
    study.top = top;
    Ok(study)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::estimate;
    use crate::spec::{Plan, load_cluster, load_model};

    #[test]
    fn limiting_term_is_the_largest_excess_over_ideal_scaling() {
        let m = load_model("bert-large").unwrap();
        let one = load_cluster("a100x8").unwrap().with_gpus(1).unwrap();
        let base = estimate(&m, &one, &Plan::new(1, 1, 1, 8, 256, 512), None);
        // Hand-made 4-GPU result: compute scales perfectly, the optimizer does not shrink
        // at all, 0.05 s of gradient reduction shows.
        let mut at = base.clone();
        at.n_gpus = 4;
        at.breakdown = Breakdown {
            compute_s: base.breakdown.compute_s / 4.0,
            optimizer_s: base.breakdown.optimizer_s,
            dp_comm_s: 0.05,
            ..Breakdown::default()
        };
        at.step_time_s = at.breakdown.total();
        let opt_excess = 0.75 * base.breakdown.optimizer_s;
        let (name, excess, gap) = limiting(&base, &at);
        let (want, want_excess) = if opt_excess > 0.05 {
            ("optimizer", opt_excess)
        } else {
            ("DP comm", 0.05)
        };
        assert_eq!(name, want);
        assert!(
            (excess - want_excess).abs() < 1e-12,
            "{excess} vs {want_excess}"
        );
        // The gap to ideal is the sum of every term's excess: here optimizer + DP comm (the
        // base has no recompute, TP, PP or bubble terms on one GPU).
        assert!((gap - (opt_excess + 0.05)).abs() < 1e-9, "{gap}");
    }

    #[test]
    fn training_time_is_whole_steps() {
        let m = load_model("bert-large").unwrap();
        let c = load_cluster("a100x8").unwrap();
        let e = estimate(&m, &c, &Plan::new(8, 1, 1, 8, 256, 512), None);
        let t = training(&e, 1e9, Some(2.0));
        // 1e9 tokens in steps of 256 × 512 = 131,072: 7,629.39, so 7,630 steps; 8 GPUs.
        let secs = 7630.0 * e.step_time_s;
        assert!((t.days - secs / 86_400.0).abs() < 1e-12);
        assert!((t.gpu_hours - 8.0 * secs / 3600.0).abs() < 1e-9);
        assert!((t.cost.unwrap() - 2.0 * t.gpu_hours).abs() < 1e-9);
        // Fewer tokens than one batch still take the one step the report counts.
        assert_eq!(training(&e, 1e3, None).days, e.step_time_s / 86_400.0);
    }
}
