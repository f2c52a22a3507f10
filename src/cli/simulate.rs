//! `planner simulate`, `estimate --simulate` and the simulated re-ranking `suggest` prints:
//! rendering of the pipeline simulator's results, and the trace file.

use super::args::Resolved;
use super::{CliError, Format, PlanArgs, Target, json, render};
use crate::cost::Estimate;
use crate::sim::{self, PlanSim, Rerank, Simulation};
use crate::spec::Plan;
use crate::units::fmt_secs;
use serde_json::{Value, json};
use std::path::Path;

use crate::units::fmt_pct as pct;

/// The closed form's bubble: fill, drain and waiting on slower stages over the step.
fn closed_form_bubble(e: &Estimate) -> f64 {
    e.breakdown.bubble_s / e.step_time_s
}

/// Most forward and backward passes a trace may hold: about 2 M slices, a few hundred MB of
/// JSON, what Perfetto's UI loads in a browser tab.
const MAX_TRACE_PASSES: u64 = 2_000_000;

/// Simulates the plan of `plan` and renders it; writes the Chrome trace to `trace`.
pub fn run(
    target: &Target,
    plan: &PlanArgs,
    trace: Option<&Path>,
    format: Format,
) -> Result<String, CliError> {
    let r = target.resolve()?;
    let plan = plan.resolve(&r.model, &r.cluster)?;
    // Each stage's passes are a trace slice or more; past a few million slices the file (built
    // in memory) takes gigabytes and no trace viewer opens it.
    let passes = 2 * plan.pp * plan.vpp * plan.n_micro();
    if trace.is_some() && passes > MAX_TRACE_PASSES {
        return Err(CliError::BadInput(format!(
            "--trace: {passes} pipeline passes (2 × pp {} × vpp {} × {} micro-batches) would be a trace of gigabytes, beyond the {MAX_TRACE_PASSES} a trace viewer opens; trace a smaller global batch (--global-batch), the schedule's shape is the same",
            plan.pp,
            plan.vpp,
            plan.n_micro()
        )));
    }
    let ps = simulate(&r, &plan, trace.is_some())?;
    let mut note = String::new();
    if let (Some(path), Some(t)) = (trace, &ps.sim.trace) {
        super::write_output("--trace", path, t.to_json().as_bytes())?;
        note = format!(
            "trace: {} ({} operations; open in https://ui.perfetto.dev)\n",
            path.display(),
            t.slices.len()
        );
    }
    Ok(match format {
        Format::Json => {
            let mut v = sim_json(&ps.sim, &ps.estimate);
            v["model"] = json!(r.model.name);
            v["cluster"] = json!(r.cluster.name);
            v["n_gpus"] = json!(ps.estimate.n_gpus);
            v["plan"] = json!(plan);
            v["numbers_from"] = ps.estimate.provenance.summary().into();
            v["trace"] = json!(trace.map(|p| p.display().to_string()));
            json(&v)
        }
        Format::Csv => render::csv(&STAGE_HEADER, stage_rows(&ps.sim)),
        Format::Table => table(&ps, &r.model.name, &r.cluster.name) + &note,
    })
}

pub(super) fn simulate(r: &Resolved, plan: &Plan, trace: bool) -> Result<PlanSim, CliError> {
    Ok(sim::simulate_plan(
        &r.model,
        &r.cluster,
        r.profile.as_ref(),
        plan,
        trace,
    )?)
}

/// The simulation as JSON, with each stage's peak activations in GiB and the closed form's
/// step time and bubble next to it.
pub fn sim_json(s: &Simulation, e: &Estimate) -> Value {
    let mut v = json!(s);
    for (st, out) in s
        .stages
        .iter()
        .zip(v["stages"].as_array_mut().into_iter().flatten())
    {
        out["peak_activations_gib"] = json!(st.peak_activations_gib());
    }
    // Comparable with the closed form's: both shares of the step.
    v["bubble_share_of_step"] = json!(s.bubble_share_of_step());
    v["closed_form"] = json!({
        "step_time_s": e.step_time_s,
        "bubble_share_of_step": closed_form_bubble(e),
    });
    v
}

const STAGE_HEADER: [&str; 8] = [
    "stage_idx",
    "busy_s",
    "p2p_wait_s",
    "idle_s",
    "dp_comm_s",
    "in_flight",
    "activations_gib",
    "peak_memory_gib",
];

fn stage_rows(s: &Simulation) -> Vec<Vec<String>> {
    s.stages
        .iter()
        .map(|st| {
            vec![
                st.stage_idx.to_string(),
                format!("{:.4}", st.busy_s),
                format!("{:.4}", st.p2p_s),
                format!("{:.4}", st.idle_s),
                format!("{:.4}", st.dp_comm_s),
                // Micro-batch equivalents: chunks over v, a fraction when interleaved.
                match st.peak_in_flight {
                    x if x.fract() == 0.0 => format!("{x}"),
                    x => format!("{x:.2}"),
                },
                format!("{:.2}", st.peak_activations_gib()),
                format!("{:.2}", st.peak_memory_gib),
            ]
        })
        .collect()
}

fn table(ps: &PlanSim, model: &str, cluster: &str) -> String {
    let (s, e) = (&ps.sim, &ps.estimate);
    let peak = s.stages.iter().fold(&s.stages[0], |a, b| {
        if b.peak_memory_gib > a.peak_memory_gib {
            b
        } else {
            a
        }
    });
    let rows = vec![
        vec![
            "step time".into(),
            fmt_secs(s.step_time_s),
            fmt_secs(e.step_time_s),
        ],
        vec![
            // Both over the whole step (the simulator's own fraction is over the pipeline
            // phase, before the exposed reduction and the optimizer step).
            "bubble (busiest stage, share of the step)".into(),
            pct(s.bubble_share_of_step()),
            pct(closed_form_bubble(e)),
        ],
        vec![
            "idle (mean over stages)".into(),
            pct(s.mean_idle_fraction),
            "-".into(),
        ],
        vec![
            "dp comm past the pipeline".into(),
            fmt_secs(s.dp_exposed_s),
            fmt_secs(ps.closed_form_dp_exposed_s),
        ],
        vec![
            "optimizer".into(),
            fmt_secs(s.optimizer_s),
            fmt_secs(e.breakdown.optimizer_s),
        ],
        vec![
            "peak memory per GPU".into(),
            format!(
                "{:.1} GiB (stage {}){}",
                peak.peak_memory_gib,
                peak.stage_idx,
                if peak.peak_memory_gib > e.capacity_gib {
                    ", OUT OF MEMORY"
                } else {
                    ""
                }
            ),
            format!(
                "{:.1} of {} GiB ({})",
                e.memory_gib_per_gpu,
                crate::units::fmt_tenths(e.capacity_gib),
                if e.fits { "fits" } else { "OUT OF MEMORY" }
            ),
        ],
    ];
    format!(
        "{model} on {cluster} ({}): {}\n{} schedule, {} micro-batches{}\n\n{}\n\n{}\n\
         numbers from: {}\n",
        crate::units::fmt_gpus(e.n_gpus),
        e.plan.short(),
        s.schedule.name(),
        s.n_micro,
        if s.vpp > 1 {
            format!(", {} chunks per stage", s.vpp)
        } else {
            String::new()
        },
        render::table(&["", "simulated", "closed form"], rows),
        render::table(&STAGE_HEADER, stage_rows(s)),
        render::numbers_from(e),
    )
}

/// `estimate --simulate --format csv`: the plan row, the simulated step and bubble, and where
/// the numbers came from.
pub(super) fn estimate_csv(
    s: &Simulation,
    e: &Estimate,
    profile: Option<&crate::calib::Profile>,
) -> String {
    let mut header = render::PLAN_HEADER.to_vec();
    header.extend(render::CSV_COLUMNS);
    header.extend([
        "sim_step_time_s",
        "sim_bubble_share_of_step",
        "numbers_from",
    ]);
    let mut row = render::plan_row(0, e);
    render::csv_cells(&mut row, e, profile);
    row.extend([
        format!("{:.3}", s.step_time_s),
        format!("{:.4}", s.bubble_share_of_step()),
        render::numbers_from(e),
    ]);
    render::csv(&header, vec![row])
}

pub(super) fn sim_line(s: &Simulation, e: &Estimate) -> String {
    let peak = s.peak_memory_gib();
    format!(
        "simulated ({}, {} micro-batches): step {} ({} vs closed form), bubble {} of the \
         step, peak memory {peak:.1} GiB\n",
        s.schedule.name(),
        s.n_micro,
        fmt_secs(s.step_time_s),
        crate::units::signed_pct(s.step_time_s / e.step_time_s - 1.0, 2),
        pct(s.bubble_share_of_step()),
    )
}

/// The top plans re-priced by the simulator, for `suggest`.
pub fn rerank(r: &Resolved, res: &crate::search::SearchResult) -> Result<Rerank, CliError> {
    Ok(sim::rerank(&r.model, &r.cluster, r.profile.as_ref(), res)?)
}

/// `suggest`'s JSON entries for the simulated order.
pub fn rerank_json(rr: &Rerank) -> Value {
    json!(
        rr.plans
            .iter()
            .enumerate()
            .map(|(i, p)| json!({
                "rank": i + 1,
                "closed_form_rank": p.closed_form_rank + 1,
                "plan": p.estimate.plan.short(),
                "step_time_s": p.sim.step_time_s,
                "closed_form_step_time_s": p.estimate.step_time_s,
                "bubble_share_of_step": p.sim.bubble_share_of_step(),
                "peak_memory_gib": p.sim.peak_memory_gib(),
            }))
            .collect::<Vec<_>>()
    )
}

/// `suggest`'s table of the simulated order, and whether it differs from the closed form's.
pub fn rerank_table(rr: &Rerank) -> String {
    let verdict = if rr.order_changed() {
        let moved: Vec<String> = rr
            .plans
            .iter()
            .enumerate()
            .filter(|(i, p)| p.closed_form_rank != *i)
            .map(|(i, p)| format!("#{} → #{}", p.closed_form_rank + 1, i + 1))
            .collect();
        format!(
            "the simulator CHANGES the order: closed-form {}",
            moved.join(", ")
        )
    } else {
        "the simulator keeps the closed form's order".to_string()
    };
    let rows = rr
        .plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                (i + 1).to_string(),
                (p.closed_form_rank + 1).to_string(),
                p.estimate.plan.short(),
                format!("{:.3}", p.sim.step_time_s),
                format!("{:.3}", p.estimate.step_time_s),
                pct(p.sim.bubble_share_of_step()),
                format!("{:.1}", p.sim.peak_memory_gib()),
            ]
        })
        .collect();
    let header = [
        "sim rank",
        "closed-form rank",
        "plan",
        "sim step_time_s",
        "closed-form step_time_s",
        "bubble",
        "sim memory_gib",
    ];
    format!(
        "\nsimulated top {} ({verdict}):\n{}\n",
        rr.plans.len(),
        render::table(&header, rows)
    )
}
