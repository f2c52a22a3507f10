//! `planner bench`: times the search's named benchmarks (`search::bench`) and prints plans
//! priced per second and wall time against each goal. Run it on a release build.

use super::CliError;
use super::args::Format;
use super::render;
use crate::search::ilp::partition;
use crate::search::{bench, search};
use serde_json::json;
use std::time::Instant;

/// Runs the benchmark called `name` (all when `None`).
pub fn run(name: Option<&str>, format: Format) -> Result<String, CliError> {
    let cases = bench::cases()?;
    let chosen: Vec<_> = cases
        .iter()
        .filter(|c| name.is_none_or(|n| n == c.name))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        return Err(CliError::BadInput(format!(
            "--name {}: no such benchmark; choose one of {}",
            name.unwrap_or_default(),
            names.join(", ")
        )));
    }
    let mut rows = Vec::new();
    for c in chosen {
        let (hits0, _) = partition::memo_counts();
        let t0 = Instant::now();
        let r = search(&c.model, &c.cluster, None, &c.space, c.top_k);
        let wall = t0.elapsed().as_secs_f64();
        let memo_hits = partition::memo_counts().0 - hits0;
        rows.push(json!({
            "name": c.name,
            "what": c.what,
            "enumerated": r.enumerated,
            "priced": r.priced,
            "ilp_solved": r.ilp_solved,
            "ilp_pruned": r.ilp_pruned,
            "ilp_memo_hits": memo_hits,
            "wall_s": wall,
            "plans_priced_per_s": r.priced as f64 / wall.max(1e-9),
            "goal_s": c.goal_s,
            "met": wall <= c.goal_s,
            "best": r.top.first().map(|e| e.plan.short()),
        }));
    }
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&rows).expect("results serialise") + "\n",
        Format::Csv => render::csv(&HEADER, rows.iter().map(cells).collect()),
        Format::Table => render::table(&HEADER, rows.iter().map(cells).collect()) + "\n",
    })
}

const HEADER: [&str; 9] = [
    "name",
    "search",
    "enumerated",
    "priced",
    "ilp_solved",
    "wall_s",
    "plans_priced_per_s",
    "goal_s",
    "met",
];

fn cells(v: &serde_json::Value) -> Vec<String> {
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let num = |k: &str| v[k].as_f64().unwrap_or_default();
    vec![
        text("name"),
        text("what"),
        v["enumerated"].to_string(),
        v["priced"].to_string(),
        v["ilp_solved"].to_string(),
        format!("{:.3}", num("wall_s")),
        format!("{:.0}", num("plans_priced_per_s")),
        v["goal_s"].to_string(),
        if v["met"].as_bool() == Some(true) {
            "yes"
        } else {
            "NO"
        }
        .into(),
    ]
}
