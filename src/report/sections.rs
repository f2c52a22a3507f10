//! Sections 1 and 2 of a report: speedup per method, and time-to-train with the knee, each a
//! chart with its table beside it; and the helpers the summary shares.

use super::charts::{self, Line, METHOD_COLORS, ScalingChart, TrainingChart};
use super::doc::{Block, Table, amount, count, pct, sig, thousands};
use super::study::{Config, Point, Study, limiting, marginal, training};
use super::{Inputs, Rendered, ReportError};
use crate::cost::Estimate;

/// Method names as `compare` spells them, and as the report writes them.
pub const METHODS: [(&str, &str); 4] = [
    ("dp-only", "DP-only"),
    ("tp-only", "TP-only"),
    ("pp-only", "PP-only"),
    ("hybrid", "best hybrid"),
];

/// Why `method` has no plan at `p` (`compare` words it for a reader).
pub fn why_none(p: &Point, method: &str) -> String {
    p.method(method).why_none.clone().unwrap_or_default()
}

/// Where `method` has no plan, as runs of the counts studied: `at 8–32, 1024–4096 GPUs`, or
/// `at any count`; `None` when it has one everywhere.
pub fn no_plan_at(study: &Study, method: &str) -> Option<String> {
    let missing: Vec<bool> = study
        .points
        .iter()
        .map(|p| p.method(method).best.is_none())
        .collect();
    if !missing.iter().any(|m| *m) {
        return None;
    }
    if missing.iter().all(|m| *m) {
        return Some("at any count studied".into());
    }
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < missing.len() {
        if !missing[i] {
            i += 1;
            continue;
        }
        let j = (i..missing.len())
            .take_while(|&j| missing[j])
            .last()
            .unwrap_or(i);
        let (a, b) = (study.points[i].n_gpus(), study.points[j].n_gpus());
        runs.push(match j - i {
            0 => a.to_string(),
            1 => format!("{a}, {b}"),
            _ => format!("{a}–{b}"),
        });
        i = j + 1;
    }
    let noun = if runs == ["1"] { "GPU" } else { "GPUs" };
    Some(format!("at {} {noun}", runs.join(", ")))
}

/// "dp=8 tp=1 …" in backticks, or a dash.
pub fn plan_cell(e: Option<&Estimate>) -> String {
    e.map_or("-".into(), |e| format!("`{}`", e.plan.short()))
}

/// A loss against linear scaling below this share of the step time is not worth naming.
pub const NEAR_LINEAR: f64 = 0.01;

/// The term that limits scaling from `base` to `e`, or a dash when within 1% of linear or
/// better than linear.
pub fn limited_by(base: &Estimate, e: &Estimate) -> String {
    let (term, _, gap) = limiting(base, e);
    if e.n_gpus <= base.n_gpus {
        "-".into()
    } else if gap < -NEAR_LINEAR * e.step_time_s {
        "- (better than linear)".into()
    } else if gap <= NEAR_LINEAR * e.step_time_s {
        "- (within 1% of linear)".into()
    } else {
        term.into()
    }
}

/// One line per method for the speedup chart.
fn scaling_lines(study: &Study) -> Vec<Line> {
    METHODS
        .iter()
        .enumerate()
        .map(|(i, (m, name))| {
            let points = study
                .points
                .iter()
                .map(|p| {
                    let e = p.method(m).best.as_ref();
                    (
                        p.n_gpus(),
                        e.map(|e| (p.cmp.speedup(e), p.cmp.efficiency(e))),
                    )
                })
                .collect();
            let label = match no_plan_at(study, m) {
                None => name.to_string(),
                Some(w) => format!("{name} (no plan {w})"),
            };
            Line {
                label,
                color: METHOD_COLORS[i],
                points,
            }
        })
        .collect()
}

/// Every method at every count: plan, step time, throughput, speedup, memory.
fn scaling_table(study: &Study) -> Table {
    let mut t = Table::new(&[
        "GPUs",
        "method",
        "plan",
        "step time (s)",
        "tokens/s",
        "speedup",
        "efficiency",
        "memory/GPU (GiB)",
        "limited by",
    ]);
    for p in &study.points {
        for (m, name) in METHODS {
            let mut r = vec![p.n_gpus().to_string(), name.into()];
            match p.method(m).best.as_ref() {
                Some(e) => r.extend([
                    plan_cell(Some(e)),
                    sig(e.step_time_s, 4),
                    thousands(e.tokens_per_s),
                    sig(p.cmp.speedup(e), 4),
                    pct(p.cmp.efficiency(e)),
                    format!("{:.1}", e.memory_gib_per_gpu),
                    limited_by(&p.cmp.single, e),
                ]),
                None => {
                    r.push(format!("no feasible plan: {}", why_none(p, m)));
                    r.extend(std::iter::repeat_n("-".to_string(), 6));
                }
            }
            t.row(r);
        }
    }
    t
}

/// Section 1: speedup and efficiency per method, chart and table.
pub fn scaling(
    inputs: &Inputs,
    study: &Study,
    charts_out: &mut Vec<(&'static str, Rendered)>,
) -> Result<Vec<Block>, ReportError> {
    let chart = ScalingChart {
        title: format!(
            "{} on {}: speedup and scaling efficiency by method",
            inputs.model.name, inputs.cluster.name
        ),
        lines: scaling_lines(study),
    };
    charts_out.push(("speedup", charts::render(&chart)?));
    Ok(vec![
        Block::Heading(2, "1. Speedup and scaling efficiency by method".into()),
        Block::Para(
            "For every GPU count the cluster is cut to that many GPUs and the fastest plan that \
             fits is found among DP-only (tp = pp = 1), TP-only (dp = pp = 1), PP-only (dp = tp \
             = 1) and all plans (best hybrid), for the same global batch. Speedup is one GPU's \
             step time over the plan's; efficiency is speedup / GPUs. A line breaks where the \
             method has no feasible plan. The “limited by” column names the step-time term \
             that loses the most time against linear scaling from one GPU."
                .into(),
        ),
        Block::Figure {
            name: "speedup",
            alt: "Speedup and scaling efficiency against GPU count".into(),
        },
        Block::Table(scaling_table(study)),
    ])
}

/// The time-to-train table's header: the cost column only with a price.
fn training_header(cfg: &Config) -> Vec<&'static str> {
    let mut header = vec![
        "GPUs",
        "plan",
        "step time (s)",
        "tokens/s",
        "MFU",
        "days",
        "GPU-hours",
    ];
    if cfg.gpu_hour_price.is_some() {
        header.push("cost ($)");
    }
    header.extend(["marginal efficiency", "what grew most", "knee"]);
    header
}

/// Row `i` of the time-to-train table, and its chart point when a plan fits.
fn training_row(cfg: &Config, study: &Study, i: usize) -> (Vec<String>, Option<(u64, f64, f64)>) {
    let p = &study.points[i];
    let Some(e) = p.hybrid() else {
        let mut r = vec![p.n_gpus().to_string(), "no feasible plan".into()];
        r.extend(std::iter::repeat_n(
            "-".to_string(),
            training_header(cfg).len() - 2,
        ));
        return (r, None);
    };
    let tr = training(e, cfg.tokens, cfg.gpu_hour_price);
    let mut r = vec![
        p.n_gpus().to_string(),
        plan_cell(Some(e)),
        sig(e.step_time_s, 4),
        thousands(e.tokens_per_s),
        pct(e.mfu),
        sig(tr.days, 3),
        amount(tr.gpu_hours),
    ];
    r.extend(tr.cost.map(amount));
    match marginal(&study.points, i) {
        Some((j, eff)) => {
            let prev = study.points[j].hybrid().expect("marginal has a plan");
            r.push(format!("{} (from {})", pct(eff), study.points[j].n_gpus()));
            r.push(limited_by(prev, e));
        }
        None => r.extend(["-".to_string(), "-".to_string()]),
    }
    let knee = if study.knee == Some(i) {
        "**the knee**"
    } else {
        "-"
    };
    r.push(knee.into());
    (r, Some((p.n_gpus(), tr.days, tr.gpu_hours)))
}

/// The knee, its definition, and what lies past it.
fn knee_text(cfg: &Config, study: &Study) -> String {
    let Some(k) = study.knee else {
        return "No count has a plan that fits, so there is no knee.".into();
    };
    let n = study.points[k].n_gpus();
    let ng = crate::units::fmt_gpus(n);
    let last = study.points.iter().rev().find(|p| p.hybrid().is_some());
    let end = if last.map(|p| p.n_gpus()) == Some(n) {
        format!(
            " Scaling has not dropped below that by {ng}, the largest count studied: \
             study larger counts to find where it bends."
        )
    } else {
        // The step that ended the walk, stated as it is (later steps may climb back: the knee
        // is where the first one falls short, not where scaling stops paying for good).
        let next = (k + 1..study.points.len())
            .find(|&j| study.points[j].hybrid().is_some())
            .and_then(|j| Some((j, super::study::marginal(&study.points, j)?.1)));
        match next {
            Some((j, e)) => format!(
                " The step past it, to {}, keeps {} of the ideal speedup; later steps are in the \
                 table below.",
                crate::units::fmt_gpus(study.points[j].n_gpus()),
                pct(e)
            ),
            None => String::new(),
        }
    };
    format!(
        "**The knee is {ng}.** Definition: walking up the GPU counts that have a plan, the \
         marginal efficiency of a step from n₁ to n₂ GPUs is (T(n₁) / T(n₂)) / (n₂ / n₁), the \
         share of the ideal speedup that the extra GPUs deliver; the knee is the largest count \
         reached while every step keeps it ≥ {}.{end}",
        threshold_pct(cfg.knee_efficiency)
    )
}

/// The knee's threshold as a percentage, with as many decimals as it needs to read below
/// 100% when it is (0.9999 had printed as "≥ 100.0%").
fn threshold_pct(x: f64) -> String {
    let one = pct(x);
    if x < 1.0 && one == pct(1.0) {
        format!("{:.2}%", 100.0 * x)
    } else {
        one
    }
}

/// Section 2: time-to-train and GPU-hours with the knee, chart and table.
pub fn time_to_train(
    inputs: &Inputs,
    cfg: &Config,
    study: &Study,
    charts_out: &mut Vec<(&'static str, Rendered)>,
) -> Result<Vec<Block>, ReportError> {
    let mut t = Table::new(&training_header(cfg));
    let mut points = Vec::new();
    for i in 0..study.points.len() {
        let (row, point) = training_row(cfg, study, i);
        t.row(row);
        points.extend(point);
    }
    let chart = TrainingChart {
        title: format!(
            "{} on {}: time to train {} tokens",
            inputs.model.name,
            inputs.cluster.name,
            count(cfg.tokens)
        ),
        points,
        knee: study
            .knee
            .map(|k| (study.points[k].n_gpus(), cfg.knee_efficiency)),
        price: cfg.gpu_hour_price,
    };
    charts_out.push(("time-to-train", charts::render(&chart)?));
    Ok(vec![
        Block::Heading(2, "2. Time to train and GPU-hours".into()),
        Block::Para(format!(
            "Best plan at each count, training {} tokens: days = steps × step time / 86,400 (steps = ⌈tokens / tokens per step⌉); \
             GPU-hours = GPUs × hours{}. “What grew most” names the step-time term that loses \
             the most against linear scaling from the previous count.",
            count(cfg.tokens),
            if cfg.gpu_hour_price.is_some() {
                "; cost = GPU-hours × price"
            } else {
                ""
            }
        )),
        Block::Para(knee_text(cfg, study)),
        Block::Figure {
            name: "time-to-train",
            alt: "Time to train and GPU-hours against GPU count, knee marked".into(),
        },
        Block::Table(t),
    ])
}

#[cfg(test)]
mod tests {
    use super::threshold_pct;

    /// The knee's threshold reads below 100% whenever it is (QA: 0.9999 had printed as
    /// "≥ 100.0%"), and keeps the one-decimal form otherwise.
    #[test]
    fn knee_thresholds_read_as_given() {
        assert_eq!(threshold_pct(0.8), "80.0%");
        assert_eq!(threshold_pct(0.9999), "99.99%");
        assert_eq!(threshold_pct(1.0), "100.0%");
    }
}
