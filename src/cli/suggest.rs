//! `planner suggest` output: the ranked plans with their per-stage layer and recompute counts
//! and ILP 2's status, and with `--explain` ILP 1's per-operator shardings of the best plans.

use super::args::{Format, Resolved};
use super::render;
use crate::cost::{Estimate, Machine, stage_layouts};
use crate::search::ilp::{IlpReport, layouts, sharding};
use crate::search::{SearchResult, Space, StageIlp};
use crate::spec::{ModelSpec, Recompute};
use crate::units::{fmt_count, fmt_secs};
use serde_json::{Value, json};

/// Why no plan can run whatever its layout, when that is so: a refusal every enumerated plan
/// shares (a framework, type or sequence length the model cannot take: what a flag, not the
/// search, must change), with its fix; else, given the `format` that wrote none of the plans
/// (the search enumerated none it could write), why it cannot write the first that passes
/// the checks. `None` where some layout could run, and
/// the search's tallies say why none did.
pub fn input_refusal(
    r: &Resolved,
    space: &Space,
    format: Option<crate::spec::launch::LaunchFormat>,
) -> Option<String> {
    let (model, cluster) = (&r.model, &r.cluster);
    let plans = crate::search::enumerate(model, cluster, space);
    let (first, rest) = plans.split_first()?;
    let mut common = first.check(model, cluster);
    for p in rest {
        if common.is_empty() {
            break;
        }
        let labels: Vec<&str> = p.check(model, cluster).iter().map(|w| w.label()).collect();
        common.retain(|w| labels.contains(&w.label()));
    }
    if let Some(why) = common.first() {
        return Some(format!(
            "no plan of {} on {} can run: {why}",
            model.name, cluster.name
        ));
    }
    let fits = plans.iter().find(|p| p.check(model, cluster).is_empty())?;
    let why = crate::spec::launch::export(model, fits, format?).err()?;
    Some(format!(
        "--export can write no plan of {}: {why}",
        model.name
    ))
}

/// How many of the best plans `--explain` lays out operator by operator.
const EXPLAINED: usize = 3;

/// A list of counts with repeats folded as plan labels write them and `--stage-layers` /
/// `--recompute-layers` read them back: `9,9,10,11,11,11` → `9×2,10,11×3`.
pub fn runs(v: &[u64]) -> String {
    crate::spec::fold_counts(v, ",")
}

/// (layers per stage, recomputed layers per stage) of a ranked plan: `-` for recomputation
/// other than full (selective recomputes its modules in every layer).
fn stage_counts(model: &ModelSpec, e: &Estimate) -> (Vec<u64>, Option<Vec<u64>>) {
    let st = stage_layouts(model, &e.plan);
    let layers = st.iter().map(|s| s.layers.len() as u64).collect();
    let rc = (e.plan.recompute == Recompute::Full).then(|| {
        st.iter()
            .map(|s| s.layers.iter().filter(|l| l.1 == Recompute::Full).count() as u64)
            .collect()
    });
    (layers, rc)
}

/// ILP 2's status as shown next to a plan.
fn ilp_cell(ilp: Option<&StageIlp>) -> String {
    match ilp {
        None => "-".into(),
        Some(s) if s.adopted => s.report.summary(),
        Some(s) => format!("{}; even kept", s.report.summary()),
    }
}

fn row(model: &ModelSpec, res: &SearchResult, i: usize, e: &Estimate) -> Vec<String> {
    let (layers, rc) = stage_counts(model, e);
    let mut r = render::plan_row(i, e);
    // Interleaved: the embedding and loss slots as the plan label writes them; explicit
    // stages (each a multiple of vpp) as given; the even split `-`.
    r.push(if e.plan.split_accounts.any() {
        format!("split+{}", e.plan.split_accounts.label())
    } else if e.plan.vpp > 1 && e.plan.stage_layers.is_none() {
        "-".into()
    } else {
        runs(&layers)
    });
    r.push(rc.map_or("-".into(), |v| runs(&v)));
    r.push(ilp_cell(res.stage_ilp.get(&e.plan)));
    r
}

fn header() -> Vec<&'static str> {
    let mut h = render::PLAN_HEADER.to_vec();
    h.extend(["stage_layers", "recompute_layers", "stage_ilp"]);
    h
}

/// ILP 1 on one plan: (instance, answer), or why not.
fn shard_plan(
    r: &Resolved,
    e: &Estimate,
    space: &Space,
) -> Result<(layouts::LayerSharding, sharding::Sharding), String> {
    // The memory ILP 1 may fill is the search's: the device less the headroom.
    let cluster = space.planning_cluster(&r.cluster);
    let m = Machine {
        cluster: &cluster,
        profile: r.profile.as_ref(),
    };
    let ls = layouts::problem(&r.model, &e.plan, &m, e).ok_or(if e.plan.tp == 1 {
        "no tp axis: every operator is data parallel (the batch split over dp)"
    } else {
        "not applicable to expert-parallel (MoE) layers"
    })?;
    let s = sharding::solve(&ls.problem, &space.ilp).map_err(|e| e.to_string())?;
    Ok((ls, s))
}

fn report_line(rep: &IlpReport, own_s: f64, best_s: f64) -> String {
    format!(
        "ILP 1 ({}): {}, {} variables, {} constraints; layer time per step {} vs {} for the plan's own layout",
        rep.solver.name(),
        rep.summary(),
        rep.variables,
        rep.constraints,
        fmt_secs(best_s),
        fmt_secs(own_s)
    )
}

/// `--explain` as text: per plan, each operator's chosen sharding next to the plan's own.
fn explain_text(r: &Resolved, res: &SearchResult, space: &Space) -> String {
    let mut s = String::new();
    for (i, e) in res.top.iter().take(EXPLAINED).enumerate() {
        s += &format!(
            "\nplan {}: {} — per-operator sharding on its {}×{} (dp × tp) mesh\n",
            i + 1,
            e.plan.short(),
            e.plan.dp,
            e.plan.tp
        );
        match shard_plan(r, e, space) {
            Err(why) => s += &format!("ILP 1: {why}\n"),
            Ok((ls, sol)) if sol.choice.is_empty() => {
                s += &format!("ILP 1: {}\n", sol.report.summary());
                let _ = ls;
            }
            Ok((ls, sol)) => {
                let rows = ls
                    .problem
                    .ops
                    .iter()
                    .enumerate()
                    .map(|(k, o)| {
                        let c = &o.choices[sol.choice[k]];
                        vec![
                            o.name.to_string(),
                            c.label.to_string(),
                            o.choices[ls.megatron[k]].label.to_string(),
                            fmt_secs(c.time_s),
                        ]
                    })
                    .collect();
                s += &render::table(
                    &["op", "ilp sharding", "plan's layout", "time per step"],
                    rows,
                );
                s += "\n";
                s += &report_line(&sol.report, ls.problem.cost(&ls.megatron).0, sol.time_s);
                s += "\n";
            }
        }
    }
    s
}

/// `--explain` as JSON: one entry per explained plan.
fn explain_json(r: &Resolved, res: &SearchResult, space: &Space) -> Value {
    res.top
        .iter()
        .take(EXPLAINED)
        .map(|e| match shard_plan(r, e, space) {
            Err(why) => json!({"plan": e.plan.short(), "ilp": null, "why": why}),
            Ok((ls, sol)) => json!({
                "plan": e.plan.short(),
                "ilp": sol.report,
                "time_s": sol.time_s,
                "own_layout_time_s": ls.problem.cost(&ls.megatron).0,
                "ops": ls.problem.ops.iter().enumerate().map(|(k, o)| json!({
                    "op": o.name,
                    "sharding": sol.choice.get(k).map(|&c| o.choices[c].label),
                    "plan_layout": o.choices[ls.megatron[k]].label,
                })).collect::<Vec<_>>(),
            }),
        })
        .collect()
}

/// What `suggest` prints for a non-empty result.
pub fn render(
    r: &Resolved,
    res: &SearchResult,
    (gb, seq): (u64, u64),
    elapsed_s: f64,
    format: Format,
    explain: Option<&Space>,
    (sim_json, sim_table): (Value, String),
) -> String {
    let rows = || {
        res.top
            .iter()
            .enumerate()
            .map(|(i, e)| row(&r.model, res, i, e))
            .collect::<Vec<Vec<String>>>()
    };
    match format {
        Format::Json => {
            let mut v = json!({
                "model": r.model.name, "cluster": r.cluster.name, "n_gpus": r.cluster.n_gpus(),
                "global_batch": gb, "seq_len": seq, "plans": res.top,
                "stage_ilp": res.top.iter().map(|e| res.stage_ilp.get(&e.plan)).collect::<Vec<_>>(),
                "enumerated": res.enumerated, "priced": res.priced, "infeasible": res.infeasible,
                "ilp_solved": res.ilp_solved, "ilp_pruned": res.ilp_pruned, "ilp_failed": res.ilp_failed,
                "memory_headroom_gib": res.headroom_gib,
            });
            if let (Some(o), Some(sim)) = (v.as_object_mut(), sim_json.as_object()) {
                o.extend(sim.clone());
            }
            if let Some(space) = explain {
                v["explain"] = explain_json(r, res, space);
            }
            super::json(&v)
        }
        Format::Csv => {
            let mut h = header();
            h.extend(render::CSV_COLUMNS);
            h.push("numbers_from");
            let rows: Vec<Vec<String>> = rows()
                .into_iter()
                .zip(&res.top)
                .map(|(mut row, e): (Vec<String>, &Estimate)| {
                    render::csv_cells(&mut row, e, r.profile.as_ref());
                    row.push(render::numbers_from(e));
                    row
                })
                .collect();
            render::csv(&h, rows)
        }
        Format::Table => {
            let mut modules = if res.top.iter().any(|e| !e.plan.modules_suffix().is_empty()) {
                "; selective(M) is --recompute selective --recompute-modules M"
            } else {
                ""
            }
            .to_string();
            if res.top.iter().any(|e| e.plan.fp8_param_gather) {
                modules += "; zero 1+fp8 is --zero 1 --fp8-param-gather";
            }
            // MFU is of the plan's own dtype's dense peak: FP8's is twice bf16's on Hopper.
            let dtype = res.top[0].plan.dtype;
            if dtype != crate::units::Dtype::Bf16 {
                modules += &format!(
                    "; mfu is of the dense {} peak, {:.0} TFLOP/s",
                    dtype.name(),
                    r.cluster.gpu.peak_flops(dtype) / 1e12
                );
            }
            if res.top.iter().any(|e| e.plan.split_accounts.any()) {
                modules += "; stage_layers split+emb(+loss) is --account-for-embedding-in-pipeline-split (--account-for-loss-in-pipeline-split)";
            }
            let mut s = format!(
                "{} ({} params) on {} ({} × {}), global batch {gb} × {seq} tokens\npriced with {} (give `estimate` these flags to re-price a row{modules})\n\n{}\n\n{}\nnumbers from: {}\n",
                r.model.name,
                fmt_count(r.model.params()),
                r.cluster.name,
                r.cluster.n_gpus(),
                r.cluster.gpu.name,
                res.top[0].plan.label_flags(),
                render::table(&header(), rows()),
                render::search_footer(res, elapsed_s),
                res.top[0].provenance.summary().join("; ")
            );
            s += &sim_table;
            if let Some(space) = explain {
                s += &explain_text(r, res, space);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_fold_repeats() {
        assert_eq!(runs(&[9, 9, 10, 11, 11, 11]), "9×2,10,11×3");
        assert_eq!(runs(&[12; 8]), "12×8");
        assert_eq!(runs(&[7]), "7");
    }
}
