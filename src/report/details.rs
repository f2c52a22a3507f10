//! The later sections of a report: step-time and memory breakdowns of the top plans at the
//! knee, the chosen plan's simulated timeline, predicted against measured, and how the numbers
//! were made.

use super::charts::{self, Stacked, TERM_COLORS, TimelineChart, VerifyChart};
use super::doc::{Block, Table, pct, sig};
use super::study::{Study, terms};
use super::verify::{Verified, class_label, error};
use super::{Inputs, Rendered, ReportError};
use crate::sim::Simulation;
use crate::units::{fmt_gpus, fmt_tenths};
use plotters::style::RGBColor;

/// Section 3: where the step time goes in the top plans.
pub fn breakdown(
    study: &Study,
    charts_out: &mut Vec<(&'static str, Rendered)>,
) -> Result<Vec<Block>, ReportError> {
    let Some(k) = study.knee else {
        return Ok(Vec::new());
    };
    let n = study.points[k].n_gpus();
    let mut header = vec!["", "plan", "step time (s)"];
    let names = terms(&Default::default()).map(|t| t.0);
    header.extend(names);
    header.push("largest");
    let mut t = Table::new(&header);
    let mut rows = Vec::new();
    for l in &study.top {
        let e = &l.estimate;
        let parts = terms(&e.breakdown);
        let mut r = vec![
            l.label.clone(),
            format!("`{}`", e.plan.short()),
            sig(e.step_time_s, 4),
        ];
        r.extend(parts.iter().map(|p| sig(p.1, 4)));
        r.push(e.bottleneck.to_string());
        t.row(r);
        rows.push((
            format!("{}  {}", l.label, e.plan.short()),
            parts.iter().map(|p| p.1).collect(),
        ));
    }
    let chart = Stacked {
        title: format!(
            "Step-time breakdown at {} (fastest plans, then the best of each method)",
            fmt_gpus(n)
        ),
        unit: "seconds per step".into(),
        parts: names
            .iter()
            .zip(TERM_COLORS)
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
        rows,
        limit: None,
        total_suffix: " s".into(),
    };
    charts_out.push(("breakdown", charts::render(&chart)?));
    Ok(vec![
        Block::Heading(
            2,
            format!("3. Step-time breakdown at the knee ({})", fmt_gpus(n)),
        ),
        Block::Para(
            "The fastest plans (#1, #2, …), then the best DP-only, TP-only and PP-only plans, \
             each split into its cost-model terms: compute and recompute of the slowest stage, \
             exposed TP, PP, DP and CP/EP communication, pipeline bubble, and the optimizer \
             step. The terms add up to the step time. Seconds per step."
                .into(),
        ),
        Block::Figure {
            name: "breakdown",
            alt: "Stacked step-time breakdown per plan".into(),
        },
        Block::Table(t),
    ])
}

/// Memory holders, in chart order, and their colours.
const MEMORY_PARTS: [&str; 5] = ["weights", "grads", "optimizer", "activations", "other"];
const MEMORY_COLORS: [RGBColor; 5] = [
    RGBColor(0, 114, 178),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(170, 170, 170),
];

/// A chart row: its label and one value per part.
type BarRow = (String, Vec<f64>);

/// The memory table and the chart's rows, one per plan shown.
fn memory_table(study: &Study) -> (Table, Vec<BarRow>) {
    let mut t = Table::new(&[
        "",
        "plan",
        "peak (GiB)",
        "weights",
        "grads",
        "optimizer",
        "activations",
        "other",
        "capacity",
        "fits",
    ]);
    let mut rows = Vec::new();
    for l in &study.top {
        let (e, m) = (&l.estimate, &l.estimate.memory_gib);
        let parts = [m.weights, m.grads, m.optimizer, m.activations, m.other];
        let mut r = vec![
            l.label.clone(),
            format!("`{}`", e.plan.short()),
            format!("{:.2}", e.memory_gib_per_gpu),
        ];
        r.extend(parts.iter().map(|x| format!("{x:.2}")));
        r.push(crate::units::fmt_tenths(e.capacity_gib));
        r.push(if e.fits { "yes" } else { "no" }.into());
        t.row(r);
        rows.push((format!("{}  {}", l.label, e.plan.short()), parts.to_vec()));
    }
    (t, rows)
}

/// Section 4: memory per GPU of the same plans against capacity.
pub fn memory(
    study: &Study,
    charts_out: &mut Vec<(&'static str, Rendered)>,
) -> Result<Vec<Block>, ReportError> {
    let (Some(k), Some(first)) = (study.knee, study.top.first()) else {
        return Ok(Vec::new());
    };
    let n = study.points[k].n_gpus();
    let cap = first.estimate.capacity_gib;
    let (t, rows) = memory_table(study);
    let chart = Stacked {
        title: format!("Memory per GPU at {} (fullest rank)", fmt_gpus(n)),
        unit: "GiB per GPU".into(),
        parts: MEMORY_PARTS
            .iter()
            .zip(MEMORY_COLORS)
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
        rows,
        limit: Some((cap, format!("device memory {} GiB", fmt_tenths(cap)))),
        total_suffix: " GiB".into(),
    };
    charts_out.push(("memory", charts::render(&chart)?));
    Ok(vec![
        Block::Heading(
            2,
            format!("4. Memory per GPU at the knee ({})", fmt_gpus(n)),
        ),
        Block::Para(
            "Peak memory of the fullest rank of each plan, by holder: weights in the training \
             type, gradient buffers, optimizer state (Adam moments, and fp32 master weights \
             where training is in 16 or 8 bits; sharded by ZeRO), \
             activations (saved ones and the working set at the peak), and other (CUDA context, \
             NCCL buffers, allocator fragmentation), against the device's memory. GiB."
                .into(),
        ),
        Block::Figure {
            name: "memory",
            alt: "Stacked memory per GPU per plan against capacity".into(),
        },
        Block::Table(t),
    ])
}

/// Per stage of the simulated step: busy, waiting, idle, memory.
fn stage_table(s: &Simulation) -> Table {
    let mut t = Table::new(&[
        "stage",
        "busy (s)",
        "waiting on sends (s)",
        "idle (s)",
        "DP stream busy (s)",
        "peak micro-batches in flight",
        "peak memory (GiB)",
    ]);
    for st in &s.stages {
        t.row(vec![
            st.stage_idx.to_string(),
            sig(st.busy_s, 4),
            sig(st.p2p_s, 4),
            sig(st.idle_s, 4),
            sig(st.dp_comm_s, 4),
            sig(st.peak_in_flight, 3),
            format!("{:.2}", st.peak_memory_gib),
        ]);
    }
    t
}

/// Section 5: the chosen plan's simulated step.
pub fn timeline(
    study: &Study,
    charts_out: &mut Vec<(&'static str, Rendered)>,
) -> Result<Vec<Block>, ReportError> {
    let mut out = vec![Block::Heading(
        2,
        "5. Pipeline timeline of the chosen plan".into(),
    )];
    let Some(ps) = &study.sim else {
        if let Some(e) = &study.sim_error {
            out.push(Block::Para(format!(
                "The chosen plan could not be simulated: {e}."
            )));
            return Ok(out);
        }
        return Ok(Vec::new());
    };
    let (e, s) = (&ps.estimate, &ps.sim);
    let trace = s.trace.as_ref().expect("simulated with a trace");
    let chart = TimelineChart::from_trace(
        format!(
            "Simulated step of {} ({} schedule)",
            e.plan.short(),
            s.schedule.name()
        ),
        trace,
        s.stages.len(),
    );
    charts_out.push(("timeline", charts::render(&chart)?));
    let t = stage_table(s);
    out.extend([
        Block::Para(format!(
            "The discrete-event simulator runs `{}` ({} micro-batch(es) per step, {} model \
             chunk(s) per stage): each stage's passes in Megatron-LM's order, TP collectives inside the \
             passes, blocking sends between stages, gradient reduction on the data-parallel \
             stream, then the optimizer. Simulated step {} s against the closed form's {} s; \
             the busiest stage idles {} of the pipeline phase (bubble), the average stage {}. \
             Operations narrower than half a pixel are not drawn; where passes are narrower than \
             a few pixels, each column of pixels shows the activity that took most of it.",
            e.plan.short(),
            s.n_micro,
            s.vpp,
            sig(s.step_time_s, 4),
            sig(e.step_time_s, 4),
            pct(s.bubble_fraction),
            pct(s.mean_idle_fraction)
        )),
        Block::Figure {
            name: "timeline",
            alt: "Simulated pipeline timeline of the chosen plan".into(),
        },
        Block::Table(t),
    ]);
    Ok(out)
}

/// The predicted-vs-measured table and the chart's rows (step, then each class).
fn verify_table(v: &Verified) -> (Table, Vec<(String, f64, Option<f64>)>) {
    let mut t = Table::new(&["", "predicted (s)", "measured (s)", "error"]);
    let err = |p: f64, m: Option<f64>| {
        m.and_then(|m| error(p, m))
            .map_or("-".into(), |e| crate::units::signed_pct(e, 1))
    };
    let mut rows = vec![("step".to_string(), v.step_s.0, Some(v.step_s.1))];
    rows.extend(v.classes.iter().map(|(n, p, m)| (class_label(n), *p, *m)));
    for (name, p, m) in &rows {
        let measured = m.map_or("not measured".into(), |m| sig(m, 4));
        t.row(vec![name.clone(), sig(*p, 4), measured, err(*p, *m)]);
    }
    if let (Some(p), m) = v.memory_gib {
        t.row(vec![
            "peak memory (GiB)".into(),
            format!("{p:.2}"),
            m.map_or("not measured".into(), |m| format!("{m:.2}")),
            err(p, m),
        ]);
    }
    (t, rows)
}

/// Section 6: predicted against measured, from `planner verify --format json`.
pub fn verified(
    inputs: &Inputs,
    v: &Verified,
    charts_out: &mut Vec<(&'static str, Rendered)>,
) -> Result<Vec<Block>, ReportError> {
    let (t, rows) = verify_table(v);
    let what: Vec<String> = [
        v.plan.as_ref().map(|p| format!("plan `{p}`")),
        v.backend.as_ref().map(|b| format!("{b} backend")),
        v.model.as_ref().map(|m| format!("model `{m}`")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let chart = VerifyChart {
        title: "Predicted against measured, per step and per operation class".into(),
        rows,
    };
    charts_out.push(("verify", charts::render(&chart)?));
    let mut out = vec![
        Block::Heading(2, "6. Predicted against measured".into()),
        Block::Para(format!(
            "From `planner verify --format json` ({}). Error = (predicted − measured) / \
             measured.",
            if what.is_empty() {
                "no plan recorded".into()
            } else {
                what.join(", ")
            }
        )),
    ];
    if let Some(m) = &v.model
        && *m != inputs.model.name
    {
        out.push(Block::Para(format!(
            "**Note:** the verified run is of `{m}`, not `{}`.",
            inputs.model.name
        )));
    }
    out.push(Block::Figure {
        name: "verify",
        alt: "Predicted and measured seconds per class".into(),
    });
    out.push(Block::Table(t));
    if !v.notes.is_empty() {
        out.push(Block::Bullets(v.notes.clone()));
    }
    Ok(out)
}

/// How the numbers were made.
pub fn method_notes() -> Vec<Block> {
    vec![
        Block::Heading(2, "How these numbers were made".into()),
        Block::Bullets(vec![
            "Every plan is priced by the closed-form cost model (`planner estimate`): its operator \
             graphs priced kernel by kernel, composed per pipeline stage, with the schedule's \
             bubble and the exposed part of each collective."
                .into(),
            "Each GPU count's search enumerates every plan of the space, rejects those that break \
             a rule or do not fit memory, and keeps the fastest (`planner compare`, `planner \
             suggest`)."
                .into(),
            "The chosen plan is the fastest at the knee; its timeline comes from the \
             discrete-event simulator (`planner simulate`)."
                .into(),
            "Same inputs give byte-identical files; every file is written to a temporary name \
             and renamed into place."
                .into(),
        ]),
    ]
}
