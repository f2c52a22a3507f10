//! `planner compare`: DP-only, TP-only, PP-only and the best hybrid side by side.

use super::args::{SearchArgs, Target};
use super::{CliError, Format, json, render};
use crate::search;
use crate::units::fmt_secs;

/// Compares the methods on `target` and renders them.
pub fn run(target: &Target, search: &SearchArgs, format: Format) -> Result<String, CliError> {
    let r = target.resolve()?;
    let space = search.space(&r.model, &r.cluster.gpu, r.cluster.n_gpus())?;
    let (gb, seq) = (space.global_batch, space.seq_len);
    let c = search::compare(&r.model, &r.cluster, r.profile.as_ref(), &space)
        .map_err(CliError::BadInput)?;
    let rows: Vec<Vec<String>> = c
        .strategies
        .iter()
        .map(|s| match &s.best {
            Some(e) => vec![
                s.name.to_string(),
                e.plan.short(),
                // Four significant digits, as the report writes them: three decimals had
                // read a 0.06136 s step as 0.061, 0.6% off the speedup printed beside it.
                crate::report::doc::sig(e.step_time_s, 4),
                format!("{:.2}", c.speedup(e)),
                format!("{:.1}%", 100.0 * c.efficiency(e)),
                format!("{:.1}", e.memory_gib_per_gpu),
                "yes".into(),
                render::numbers_from(e),
            ],
            None => vec![
                s.name.to_string(),
                format!("none: {}", s.why_none.clone().unwrap_or_default()),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "no".into(),
                "-".into(),
            ],
        })
        .collect();
    let header = [
        "method",
        "best plan",
        "step_time_s",
        "speedup",
        "scaling_eff",
        "memory_gib",
        "fits",
        "numbers_from",
    ];
    let output = match format {
        Format::Json => json(&serde_json::json!({
            "model": r.model.name, "cluster": r.cluster.name, "n_gpus": c.n_gpus,
            "global_batch": gb, "seq_len": seq,
            "single_gpu": {"step_time_s": c.single.step_time_s, "fits": c.single.fits, "plan": c.single.plan},
            "methods": c.strategies.iter().map(|s| serde_json::json!({
                "method": s.name,
                "plan": s.best.as_ref().map(|e| &e.plan),
                "step_time_s": s.best.as_ref().map(|e| e.step_time_s),
                "speedup": s.best.as_ref().map(|e| c.speedup(e)),
                "scaling_efficiency": s.best.as_ref().map(|e| c.efficiency(e)),
                "memory_gib_per_gpu": s.best.as_ref().map(|e| e.memory_gib_per_gpu),
                "fits": s.best.is_some(),
                "why_none": s.why_none,
                "numbers_from": s.best.as_ref().map(|e| e.provenance.summary()),
            })).collect::<Vec<_>>(),
        })),
        Format::Csv => {
            // CSV adds the flags that price each method's plan again (`priced_with`), which the
            // table's short label only samples.
            let mut h = header.to_vec();
            h.insert(h.len() - 1, "priced_with");
            let rows = rows
                .into_iter()
                .zip(&c.strategies)
                .map(|(mut row, s)| {
                    let with = s
                        .best
                        .as_ref()
                        .map_or("-".into(), |e| render::priced_with(e, r.profile.as_ref()));
                    row.insert(row.len() - 1, with);
                    row
                })
                .collect();
            render::csv(&h, rows)
        }
        Format::Table => format!(
            "{} on {} ({}), global batch {gb} × {seq}; one GPU: {} per step{}\n\n{}\n\
             numbers from ({}\n",
            r.model.name,
            r.cluster.name,
            crate::units::fmt_gpus(c.n_gpus),
            fmt_secs(c.single.step_time_s),
            if c.single.fits {
                ""
            } else {
                " (does not fit one GPU: speedups are against one GPU with unbounded memory)"
            },
            render::table(
                &header[..header.len() - 1],
                rows.into_iter()
                    .map(|mut r| {
                        r.pop();
                        r
                    })
                    .collect()
            ),
            match c
                .strategies
                .iter()
                .find_map(|s| s.best.as_ref().filter(|_| s.name == "hybrid"))
            {
                Some(e) => format!("the hybrid plan): {}", render::numbers_from(e)),
                None => format!("one GPU): {}", render::numbers_from(&c.single)),
            }
        ),
    };
    if c.strategies.iter().all(|s| s.best.is_none()) {
        let why: Vec<String> = c
            .strategies
            .iter()
            .map(|s| format!("{}: {}", s.name, s.why_none.as_deref().unwrap_or("-")))
            .collect();
        let message = format!(
            "no method fits {} on {} ({}):\n  {}",
            r.model.name,
            r.cluster.name,
            crate::units::fmt_gpus(c.n_gpus),
            why.join("\n  ")
        );
        // JSON and CSV readers get the document, every method unfit with its reason.
        return Err(match format {
            Format::Table => CliError::NoFeasiblePlan(message),
            _ => CliError::NoFeasiblePlanWith { message, output },
        });
    }
    Ok(output)
}
