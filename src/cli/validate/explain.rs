//! `planner validate --explain ID [--save-case DIR]`: one published run with what its
//! prediction rests on — the model, cluster and plan it was priced as, the estimate per stage
//! and per operator — so a residual can be traced to a term, and the case can be re-priced
//! with `planner estimate` under other settings.

use super::super::render::{estimate_json, estimate_report, ops_table, table};
use super::super::{CliError, Format, json, launch, write_output};
use super::records;
use crate::cost::{Estimate, Machine, graph_instances, op_times};
use crate::spec::error::closest;
use crate::units::{GIB, fmt_secs};
use crate::validate::{Explained, explain as explain_run};
use std::path::Path;

/// The files `--save-case` writes into its directory.
pub const CASE_FILES: [&str; 3] = ["model.yaml", "cluster.yaml", "plan.json"];

/// Explains run `id` of the runs file; with `save`, writes its case into that directory.
pub fn explain(
    runs: Option<&str>,
    id: &str,
    save: Option<&str>,
    format: Format,
) -> Result<String, CliError> {
    if format == Format::Csv {
        return Err(CliError::BadInput(
            "--explain prints a table or JSON; use --format table or --format json".into(),
        ));
    }
    let records = records(runs)?;
    let Some(run) = records.iter().find(|r| r.id == id) else {
        let hint = closest(id, records.iter().map(|r| r.id.as_str()))
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        return Err(CliError::BadInput(format!(
            "--explain {id}: no run has this id; {hint}`planner validate` lists the ids"
        )));
    };
    let x = explain_run(run).map_err(|why| {
        CliError::BadInput(format!(
            "--explain {id}: the run is skipped: {why}; explain a run that `planner validate` \
             prices, or complete this one in a --runs file"
        ))
    })?;
    let saved = match save {
        Some(dir) => Some(save_case(&x, id, Path::new(dir))?),
        None => None,
    };
    let machine = Machine {
        cluster: &x.case.cluster,
        profile: None,
    };
    let ops = op_times(&x.case.model, &x.estimate.plan, &machine);
    Ok(match format {
        Format::Json => {
            let mut v = serde_json::json!({
                "row": x.row,
                "model": x.case.model,
                "cluster": x.case.cluster,
                "estimate": estimate_json(&x.estimate),
                "residual": crate::validate::row_residual(&x.row),
                "ops": ops.iter().map(|(g, o, f, b)| serde_json::json!({"graph": g, "op": o, "fwd_s": f, "bwd_s": b})).collect::<Vec<_>>(),
            });
            if let Some(cmd) = saved {
                v["reproduce"] = cmd.into();
            }
            json(&v)
        }
        Format::Csv => unreachable!("refused above"),
        Format::Table => {
            let (m, c) = (&x.case.model, &x.case.cluster);
            let mut s = format!("## {id}\n\n{}\n\n", row_line(&x));
            s += &format!(
                "model: {} ({}): {} layers, hidden {}, {} heads ({} kv), ffn {}, vocab {}, seq {}\n",
                m.name,
                m.arch.name(),
                m.layers,
                m.hidden,
                m.heads,
                m.kv_heads,
                m.ffn_hidden,
                m.vocab,
                m.seq_len
            );
            s += &format!(
                "cluster: {} × {} ({} nodes of {}), {}\n\n",
                c.n_gpus(),
                c.gpu.name,
                c.nodes,
                c.gpus_per_node,
                x.estimate.plan.framework.name()
            );
            s += &estimate_report(&x.estimate, m, c);
            s += "\n";
            s += &stages_table(&x.estimate);
            s += "\n\n";
            s += &ops_table(&ops, |g| graph_instances(m, x.estimate.plan.seq_len, g));
            if let Some(cmd) = saved {
                s += &format!("\nreproduce: {cmd}\n");
            }
            s
        }
    })
}

/// The row's headline: what was measured, what is predicted, and the memory verdict.
fn row_line(x: &Explained) -> String {
    let r = &x.row;
    let mut s = match r.error {
        Some(e) => format!(
            "{}: measured {}, predicted {} ({})",
            r.metric,
            super::num(r.measured),
            super::num(r.predicted),
            crate::units::signed_pct(e, 1)
        ),
        None => "measured: memory verdict only".to_string(),
    };
    s += &format!(
        "; memory: predicted {:.1} GiB ({}), {}",
        r.predicted_memory_gib,
        if r.predicted_fits { "fits" } else { "OOM" },
        if r.measured_oom {
            "ran out of memory"
        } else {
            "ran"
        }
    );
    if let Some(gb) = r.measured_memory_gb {
        s += &format!(" at {gb} GB measured");
    }
    for line in crate::validate::row_residual(r) {
        s += &format!("\n{line}");
    }
    if !r.searched.is_empty() {
        s += &format!(
            "\nunpublished knobs searched ({}): priced at the fastest choice that fits",
            r.searched.join(", ")
        );
    }
    s
}

/// Per pipeline stage: layers, a micro-batch's forward and backward, and the rank's memory.
fn stages_table(e: &Estimate) -> String {
    let gib = |b: f64| format!("{:.2}", b / GIB);
    let rows = e
        .stages
        .iter()
        .map(|st| {
            let m = &st.memory;
            vec![
                st.stage_idx.to_string(),
                st.layers.to_string(),
                fmt_secs(st.fwd_s),
                fmt_secs(st.bwd_s),
                gib(m.weights),
                gib(m.grads),
                gib(m.optimizer),
                gib(m.activations),
                gib(m.working),
                gib(m.runtime),
                format!("{:.2}", st.memory_gib),
            ]
        })
        .collect();
    table(
        &[
            "stage",
            "layers",
            "fwd / micro-batch",
            "bwd / micro-batch",
            "weights GiB",
            "grads",
            "optimizer",
            "activations",
            "working",
            "runtime",
            "total",
        ],
        rows,
    )
}

/// Writes the case's model, cluster and plan into `dir` (created if missing); returns the
/// `planner estimate` command that prices them again.
fn save_case(x: &Explained, id: &str, dir: &Path) -> Result<String, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::BadInput(format!(
            "--save-case {}: cannot create it ({e}); give a writable directory",
            dir.display()
        ))
    })?;
    let note = vec![format!(
        "published run `{id}` as `planner validate` prices it"
    )];
    // Validation prices with the presets' figures, never a measured profile: a cluster that
    // named one would be re-priced differently by `estimate`.
    let cluster_spec = crate::spec::ClusterSpec {
        calibration: None,
        ..x.case.cluster.clone()
    };
    let [model, cluster, plan] = CASE_FILES.map(|f| dir.join(f));
    write_output(
        "--save-case",
        &model,
        x.case.model.to_yaml(&note).as_bytes(),
    )?;
    write_output(
        "--save-case",
        &cluster,
        cluster_spec.to_yaml(&note).as_bytes(),
    )?;
    launch::save_plan(&plan.to_string_lossy(), &x.estimate.plan)?;
    Ok(format!(
        "planner estimate --model {} --cluster {} --plan {} --ops",
        shell_word(&model),
        shell_word(&cluster),
        shell_word(&plan)
    ))
}

/// `path` as one shell word: as is when it holds only safe characters, else single-quoted.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:,@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
