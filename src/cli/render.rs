//! Rendering results as tables, JSON and CSV.

use crate::calib::Profile;
use crate::cost::Estimate;
use crate::search::SearchResult;
use crate::units::{fmt_secs, fmt_tenths};
use comfy_table::{Table, presets::ASCII_MARKDOWN};

/// A Markdown-style ASCII table (readable in a terminal, pasteable into reports).
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN);
    t.set_header(header.to_vec());
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

/// Comma-separated values with a header line; a field holding a comma, a quote or a line
/// break is quoted, its quotes doubled (RFC 4180 §2.6-2.7), so plan lines such as
/// `layers=9×2,10` stay one field.
pub fn csv(header: &[&str], rows: Vec<Vec<String>>) -> String {
    fn field(f: &str) -> std::borrow::Cow<'_, str> {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\"")).into()
        } else {
            f.into()
        }
    }
    let line = |r: &[&str]| r.iter().map(|f| field(f)).collect::<Vec<_>>().join(",") + "\n";
    let mut s = line(header);
    for r in rows {
        s += &line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    s
}

/// A progress bar on stderr for long runs (probes, verify), hidden on ranks other than the
/// first under a launcher so one terminal shows one bar.
pub fn progress_bar() -> indicatif::ProgressBar {
    if super::verify_cuda::quiet_rank() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template"),
    );
    bar
}

/// Moves `bar` to an [`crate::exec::Progress`] report.
pub fn show(bar: &indicatif::ProgressBar, p: crate::exec::Progress) {
    bar.set_length(p.total);
    bar.set_position(p.done);
    bar.set_message(p.what);
}

/// An estimate as JSON: its fields plus `numbers_from`, the contract of `estimate` and of
/// `verify`'s `predicted`.
pub fn estimate_json(e: &Estimate) -> serde_json::Value {
    let mut v = serde_json::to_value(e).expect("estimates serialise");
    v["numbers_from"] = e.provenance.summary().into();
    v
}

/// Where each kernel class's seconds came from, one CSV cell.
pub fn numbers_from(e: &Estimate) -> String {
    e.provenance.summary().join("; ")
}

/// Column names of the plan tables (DESIGN.md §9 spelling).
pub const PLAN_HEADER: [&str; 18] = [
    "rank",
    "dp",
    "tp",
    "pp",
    "cp",
    "ep",
    "etp",
    "vpp",
    "mbs",
    "recompute",
    "zero",
    "sp",
    "step_time_s",
    "tokens_per_s",
    "tflops_per_gpu",
    "mfu",
    "memory_gib",
    "bottleneck",
];

/// The flags that price `e` again with `planner estimate --model M --cluster C`: the whole
/// plan ([`Plan::estimate_flags`](crate::spec::Plan::estimate_flags)) and the calibration
/// profile that priced it, if any.
pub fn priced_with(e: &Estimate, profile: Option<&Profile>) -> String {
    let mut f = e.plan.estimate_flags();
    if let Some(p) = profile {
        f += &format!(" --calibration {}", p.name);
    }
    f
}

/// The CSV form of a plan row: the `zero` cell a number (tables print `1+fp8` there for FP8
/// weights), `fp8_param_gather` a column of its own, and `priced_with` ([`priced_with`]: the
/// whole plan as flags, which the columns only sample), appended (CSV headers add
/// [`CSV_COLUMNS`]).
pub fn csv_cells(row: &mut Vec<String>, e: &Estimate, profile: Option<&Profile>) {
    let zero = PLAN_HEADER
        .iter()
        .position(|&h| h == "zero")
        .expect("zero column");
    row[zero] = e.plan.zero.to_string();
    row.push(e.plan.fp8_param_gather.to_string());
    row.push(priced_with(e, profile));
}

/// The columns [`csv_cells`] appends.
pub const CSV_COLUMNS: [&str; 2] = ["fp8_param_gather", "priced_with"];

/// One row of a plan table (`etp` reads `-` where the plan keeps Megatron's default, tp).
pub fn plan_row(i: usize, e: &Estimate) -> Vec<String> {
    let p = &e.plan;
    vec![
        (i + 1).to_string(),
        p.dp.to_string(),
        p.tp.to_string(),
        p.pp.to_string(),
        p.cp.to_string(),
        p.ep.to_string(),
        // Experts split over the TP ranks unless the plan says otherwise (`-`: tp).
        p.etp.map_or("-".to_string(), |e| e.to_string()),
        p.vpp.to_string(),
        p.mbs.to_string(),
        // Selective recomputation names its Megatron-Core modules unless the default.
        format!("{}{}", p.recompute.name(), p.modules_suffix()),
        // The distributed optimizer gathering FP8 weights (`--fp8-param-gather`).
        if p.fp8_param_gather {
            format!("{}+fp8", p.zero)
        } else {
            p.zero.to_string()
        },
        if p.sp() { "yes" } else { "no" }.to_string(),
        format!("{:.3}", e.step_time_s),
        format!("{:.0}", e.tokens_per_s),
        format!("{:.1}", e.tflops_per_gpu),
        format!("{:.3}", e.mfu),
        format!("{:.1}/{}", e.memory_gib_per_gpu, fmt_tenths(e.capacity_gib)),
        e.bottleneck.to_string(),
    ]
}

/// Plans as CSV: the plan table's columns plus `numbers_from`, where each kernel class's
/// seconds came from (measured, interpolated, extrapolated, preset), quoted.
pub fn plan_csv<'a>(
    plans: impl Iterator<Item = &'a Estimate>,
    profile: Option<&Profile>,
) -> String {
    let mut header = PLAN_HEADER.to_vec();
    header.extend(CSV_COLUMNS);
    header.push("numbers_from");
    let rows = plans
        .enumerate()
        .map(|(i, e)| {
            let mut r = plan_row(i, e);
            csv_cells(&mut r, e, profile);
            r.push(numbers_from(e));
            r
        })
        .collect();
    csv(&header, rows)
}

/// The suggest report's footer: how much was searched, what ILP 2 did, and why plans were
/// rejected.
pub fn search_footer(r: &SearchResult, elapsed_s: f64) -> String {
    let mut s = format!(
        "{} plans enumerated, {} priced in {}",
        r.enumerated,
        r.priced,
        fmt_secs(elapsed_s)
    );
    if r.ilp_solved + r.ilp_pruned > 0 {
        s.push_str(&format!(
            "\nILP 2 (stage partition, per-stage recompute) solved for {} plans; {} skipped, their lower bound no faster than the top plans",
            r.ilp_solved, r.ilp_pruned
        ));
    }
    if r.ilp_failed > 0 {
        s.push_str(&format!(
            "\nILP 2 solver failed on {} plans; they keep the even partition",
            r.ilp_failed
        ));
    }
    if r.headroom_gib > 0.0 {
        s.push_str(&format!(
            "\nplans leave {:.1} GiB per GPU free (--memory-headroom); out of memory counts against that",
            r.headroom_gib
        ));
    }
    s.push_str("\nrejected:");
    let mut reasons: Vec<(&&str, &usize)> = r.infeasible.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if reasons.is_empty() {
        s.push_str(" none");
    }
    for (why, n) in reasons {
        s.push_str(&format!("\n  {n:>8}  {why}"));
    }
    s
}

/// A single estimate as a readable report, headed by the model's parameter count (and the
/// parameters each token runs through, for a mixture of experts).
pub fn estimate_report(
    e: &Estimate,
    model: &crate::spec::ModelSpec,
    spec: &crate::spec::ClusterSpec,
) -> String {
    let cluster = &spec.name;
    let b = &e.breakdown;
    let m = &e.memory_gib;
    // Model cards count active parameters with the input embedding (Mixtral's 12.9 B) or
    // without it (gpt-oss-20b's 3.61 B, DeepSeek-V2-Lite's 2.4 B): both are shown.
    let active = if model.moe.is_some() {
        format!(
            ", {} active, {} without the input embedding",
            crate::units::fmt_count(model.active_params()),
            crate::units::fmt_count(model.active_params() - model.embedding_params())
        )
    } else {
        String::new()
    };
    let mtp = if model.mtp_layers > 0 {
        format!(
            ", {} more in {} multi-token prediction depth{}",
            crate::units::fmt_count(model.mtp_params()),
            model.mtp_layers,
            if model.mtp_layers == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    };
    let mut s = format!(
        "{} ({} params{active}{mtp}) on {cluster} ({}): {}\n",
        model.name,
        crate::units::fmt_count(model.params()),
        crate::units::fmt_gpus(e.n_gpus),
        e.plan.short()
    );
    if let Some(w) = model.window_at(e.plan.seq_len) {
        s += &format!(
            "sliding attention window: {}, shorter than the {}-token sequence (priced)\n",
            w.describe(),
            e.plan.seq_len
        );
    }
    // The cache `cost::memory::fp8_weight_cache_bytes` counts, and how to be rid of it.
    if e.plan.keeps_fp8_weight_copy() {
        let copy = if spec.gpu.fp8_any_layout {
            "(1 byte a parameter: this GPU's FP8 GEMMs need no transpose)"
        } else {
            "and its transpose (2 bytes a parameter)"
        };
        s += &format!(
            "weights include Transformer Engine's FP8 copy of each linear weight {copy}; with \
             --zero 1 --fp8-param-gather the weights are FP8 themselves and no copy is kept\n"
        );
    }
    s += "\n";
    s += &table(
        &["metric", "value"],
        vec![
            vec!["step time".into(), fmt_secs(e.step_time_s)],
            vec!["tokens/s".into(), format!("{:.0}", e.tokens_per_s)],
            vec![
                "TFLOP/s per GPU (model)".into(),
                format!("{:.1}", e.tflops_per_gpu),
            ],
            vec![
                "TFLOP/s per GPU (hardware)".into(),
                format!("{:.1}", e.hw_tflops_per_gpu),
            ],
            vec![
                "TFLOP/s per GPU (executed)".into(),
                // The conventions above count the full s×s attention (Megatron-LM, SC'21);
                // FlashAttention runs the causal half, which at long context is most of it.
                format!(
                    "{:.1} ({:.1}% of the peak; causal attention as the kernels run it)",
                    e.exec_tflops_per_gpu,
                    100.0 * e.exec_tflops_per_gpu * 1e12 / spec.gpu.peak_flops(e.plan.dtype)
                ),
            ],
            vec![
                "MFU / HFU".into(),
                format!(
                    "{:.1}% / {:.1}% (of the dense {} peak)",
                    100.0 * e.mfu,
                    100.0 * e.hfu,
                    e.plan.dtype.name()
                ),
            ],
            vec![
                "memory per GPU".into(),
                format!(
                    "{:.1} of {} GiB ({})",
                    e.memory_gib_per_gpu,
                    crate::units::fmt_tenths(e.capacity_gib),
                    if e.fits { "fits" } else { "OUT OF MEMORY" }
                ),
            ],
            vec!["bottleneck".into(), e.bottleneck.to_string()],
        ],
    );
    s += "\n\n";
    let pct = |x: f64| format!("{} ({:.1}%)", fmt_secs(x), 100.0 * x / e.step_time_s);
    s += &table(
        &["time", "per step"],
        vec![
            vec!["compute".into(), pct(b.compute_s)],
            vec!["recompute".into(), pct(b.recompute_s)],
            vec!["tp_comm".into(), pct(b.tp_comm_s)],
            vec!["pp_comm".into(), pct(b.pp_comm_s)],
            vec!["dp_comm".into(), pct(b.dp_comm_s)],
            vec!["cp/ep_comm".into(), pct(b.other_comm_s)],
            vec!["bubble".into(), pct(b.bubble_s)],
            vec!["optimizer".into(), pct(b.optimizer_s)],
        ],
    );
    s += "\n\n";
    s += &table(
        &[
            "memory (GiB)",
            "weights",
            "grads",
            "optimizer",
            "activations",
            "other",
            "total",
        ],
        vec![vec![
            "fullest rank".into(),
            format!("{:.2}", m.weights),
            format!("{:.2}", m.grads),
            format!("{:.2}", m.optimizer),
            format!("{:.2}", m.activations),
            format!("{:.2}", m.other),
            format!("{:.2}", e.memory_gib_per_gpu),
        ]],
    );
    s += "\n\nnumbers from: ";
    s += &e.provenance.summary().join("; ");
    s.push('\n');
    s
}

/// Per-operator times of one micro-batch through one instance of each graph, with each
/// operator's share of a micro-batch through the whole model: a graph's rows count as often
/// as the model holds it (`instances`: the layer graph once per layer).
pub fn ops_table(rows: &[(&str, &str, f64, f64)], instances: impl Fn(&str) -> f64) -> String {
    let total: f64 = rows.iter().map(|r| (r.2 + r.3) * instances(r.0)).sum();
    table(
        &["graph", "op", "fwd", "bwd", "share of the model"],
        rows.iter()
            .map(|(g, o, f, b)| {
                vec![
                    g.to_string(),
                    o.to_string(),
                    fmt_secs(*f),
                    fmt_secs(*b),
                    format!("{:.1}%", 100.0 * (f + b) * instances(g) / total),
                ]
            })
            .collect(),
    ) + "\n"
}

#[cfg(test)]
mod tests {
    use super::{csv, ops_table};

    /// An operator's share counts its graph as often as the model holds it: a layer op of 1 s
    /// in a 3-layer model against a head op of 1 s is 3 s of 4, 75%.
    #[test]
    fn op_shares_count_every_layer() {
        let rows = [("layer", "fc1", 0.5, 0.5), ("head", "lm_head", 0.25, 0.75)];
        let t = ops_table(&rows, |g| if g == "layer" { 3.0 } else { 1.0 });
        assert!(t.contains("| 75.0%"), "{t}");
        assert!(t.contains("| 25.0%"), "{t}");
    }

    /// Fields with commas or quotes are quoted (RFC 4180), others left bare.
    #[test]
    fn csv_quotes_fields_that_need_it() {
        let out = csv(
            &["plan", "note"],
            vec![vec!["layers=2,7×6,4".into(), "say \"hi\"".into()]],
        );
        assert_eq!(out, "plan,note\n\"layers=2,7×6,4\",\"say \"\"hi\"\"\"\n");
        assert_eq!(csv(&["a"], vec![vec!["1.5".into()]]), "a\n1.5\n");
    }
}
