//! `planner validate`: predicted vs measured for published runs, with per-group accuracy.

mod explain;

pub use explain::explain;

use super::render::table;
use super::{CliError, Format};
use crate::spec::runs::{PUBLISHED_RUNS, RunRecord, parse_runs};
use crate::validate::{GroupSummary, Report, validate};

/// The runs file's records (the built-in set by default).
fn records(runs: Option<&str>) -> Result<Vec<RunRecord>, CliError> {
    Ok(match runs {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::BadInput(format!("--runs {path}: {e}")))?;
            parse_runs(path, &text)?
        }
        None => parse_runs("validation/published-runs.yaml (built in)", PUBLISHED_RUNS)?,
    })
}

/// Runs the validation and renders it.
pub fn run(runs: Option<&str>, group: Option<&str>, format: Format) -> Result<String, CliError> {
    let records = records(runs)?;
    if records.is_empty() {
        return Err(CliError::BadInput(format!(
            "--runs {}: the file lists no runs; give a list of run records (the schema of validation/published-runs.yaml)",
            runs.unwrap_or("(built in)")
        )));
    }
    if let Some(g) = group
        && !records.iter().any(|r| r.group == g)
    {
        let mut groups: Vec<&str> = records.iter().map(|r| r.group.as_str()).collect();
        groups.dedup();
        return Err(CliError::BadInput(format!(
            "--group {g}: no such group; groups: {}",
            groups.join(", ")
        )));
    }
    let report = validate(&records, group);
    // A runs file whose every row is skipped compared nothing: each row's reason is a field
    // to fix, so it is bad input, not a validation.
    if report.rows.iter().all(|r| r.skipped.is_some()) {
        let reasons: Vec<String> = report
            .rows
            .iter()
            .map(|r| format!("  {}: {}", r.id, r.skipped.as_deref().unwrap_or_default()))
            .collect();
        return Err(CliError::BadInput(format!(
            "no run could be compared; every row was skipped:\n{}",
            reasons.join("\n")
        )));
    }
    Ok(match format {
        Format::Json => super::json(&skipped_as_null(&report)),
        Format::Csv => csv(&report),
        Format::Table => render(&report),
    })
}

use crate::units::fmt_signed_pct as pct;

fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| {
        if v >= 1000.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    })
}

fn verdict(r: &crate::validate::RowResult) -> String {
    let actual = if r.measured_oom { "OOM" } else { "ran" };
    let pred = if r.predicted_fits { "fits" } else { "OOM" };
    format!(
        "{pred} / {actual}{}",
        if r.verdict_ok() { "" } else { " ✗" }
    )
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    for g in &report.groups {
        let rows: Vec<Vec<String>> = report
            .rows
            .iter()
            .filter(|r| r.group == g.group)
            .map(|r| match &r.skipped {
                Some(why) => vec![
                    r.id.clone(),
                    "skipped".into(),
                    why.clone(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
                None => vec![
                    r.id.clone(),
                    r.metric.to_string(),
                    num(r.measured),
                    num(r.predicted),
                    pct(r.error),
                    verdict(r),
                    format!(
                        "{:.1}{}",
                        r.predicted_memory_gib,
                        r.measured_memory_gb
                            .map_or(String::new(), |m| format!(" / {m:.0}"))
                    ),
                    match (r.searched.is_empty(), r.predicted_range) {
                        (true, _) => r.plan.clone(),
                        (false, None) => {
                            format!("{} (searched: {})", r.plan, r.searched.join(", "))
                        }
                        (false, Some((lo, hi))) => format!(
                            "{} (searched: {}; choices that fit predict {}–{})",
                            r.plan,
                            r.searched.join(", "),
                            num(Some(lo)),
                            num(Some(hi))
                        ),
                    },
                ],
            })
            .collect();
        out += &format!("## {}\n\n", g.group);
        out += &table(
            &[
                "run",
                "metric",
                "measured",
                "predicted",
                "error",
                "memory verdict (pred / actual)",
                "GiB pred / GB meas",
                "plan",
            ],
            rows,
        );
        out += "\n\n";
    }
    let rows = report
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                format!(
                    "{}{}",
                    g.compared,
                    if g.skipped > 0 {
                        format!(" (+{} skipped)", g.skipped)
                    } else {
                        String::new()
                    }
                ),
                g.mean_abs_error
                    .map_or("-".into(), |e| format!("{:.1}%", 100.0 * e)),
                g.max_abs_error
                    .map_or("-".into(), |e| format!("{:.1}%", 100.0 * e)),
                g.mean_error
                    .map_or("-".into(), |e| crate::units::signed_pct(e, 1)),
                g.spearman.map_or("-".into(), |r| format!("{r:.2}")),
                format!("{}/{}", g.verdicts_correct, g.verdicts),
            ]
        })
        .collect();
    out += "## summary\n\n";
    out += &table(
        &[
            "group",
            "rows",
            "mean abs err",
            "max abs err",
            "mean err",
            "spearman",
            "memory verdicts",
        ],
        rows,
    );
    out += "\n";
    if report.groups.iter().any(|g| !g.residual.is_empty()) {
        out += "\nwhat dominates the residuals:\n";
    } else {
        out += "\nno speed was compared: the rows are memory verdicts, or skipped with their reasons\n";
    }
    for g in &report.groups {
        for r in &g.residual {
            out += &format!("  {}: {r}\n", g.group);
        }
    }
    let ranged: Vec<&GroupSummary> = report.groups.iter().filter(|g| g.ranged > 0).collect();
    if !ranged.is_empty() {
        out += "\nunpublished knobs (each row is priced at the fastest choice that fits):\n";
        for g in ranged {
            out += &format!(
                "  {}: {} of {} rows have the measured value inside the range their \
                 unpublished knobs' choices predict\n",
                g.group, g.within_range, g.ranged
            );
        }
    }
    out
}

/// The report as JSON, a skipped row's prediction fields null (it was not predicted; the
/// row type holds placeholders there).
fn skipped_as_null(report: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("reports serialise");
    for row in v["rows"].as_array_mut().into_iter().flatten() {
        if !row["skipped"].is_null() {
            for key in [
                "predicted_fits",
                "predicted_memory_gib",
                "step_time_s",
                "breakdown",
            ] {
                row[key] = serde_json::Value::Null;
            }
        }
    }
    v
}

/// A prediction cell: empty for a skipped row.
fn predicted(r: &crate::validate::RowResult, cell: String) -> String {
    if r.skipped.is_some() {
        String::new()
    } else {
        cell
    }
}

fn csv(report: &Report) -> String {
    let rows = report
        .rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.group.clone(),
                r.metric.to_string(),
                num(r.measured),
                num(r.predicted),
                r.error.map_or(String::new(), |e| format!("{e:.4}")),
                predicted(r, r.predicted_fits.to_string()),
                r.measured_oom.to_string(),
                predicted(r, format!("{:.2}", r.predicted_memory_gib)),
                r.skipped.clone().unwrap_or_default(),
            ]
        })
        .collect();
    super::render::csv(
        &[
            "id",
            "group",
            "metric",
            "measured",
            "predicted",
            "error",
            "predicted_fits",
            "measured_oom",
            "predicted_memory_gib",
            "skipped",
        ],
        rows,
    )
}
