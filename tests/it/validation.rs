//! Predictions against published, measured training runs (validation/published-runs.yaml):
//! asserted error bounds per group, so a regression in the cost model fails CI.

use planner::spec::runs::{PUBLISHED_RUNS, parse_runs};
use planner::validate::{GroupSummary, Report, validate};

fn report() -> Report {
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    validate(&runs, None)
}

fn group<'a>(r: &'a Report, name: &str) -> &'a GroupSummary {
    r.groups
        .iter()
        .find(|g| g.group == name)
        .unwrap_or_else(|| panic!("group {name}"))
}

/// Issue 2: every SC'21 Table 1 row within 15% of the published TFLOP/s per GPU (the paper's
/// hardware-FLOP convention, eq. 3), and every published configuration fits in 80 GB.
#[test]
fn sc21_table1_within_15_percent_and_fits() {
    let r = report();
    let rows: Vec<_> = r
        .rows
        .iter()
        .filter(|x| x.group == "megatron-sc21-table1")
        .collect();
    assert_eq!(rows.len(), 10);
    for x in rows {
        assert_eq!(x.metric, "tflops_per_gpu (hardware)", "{}", x.id);
        let e = x.error.unwrap();
        assert!(
            e.abs() <= 0.15,
            "{}: predicted {:?} vs measured {:?} ({:+.1}%)",
            x.id,
            x.predicted,
            x.measured,
            100.0 * e
        );
        assert!(
            x.predicted_fits && x.predicted_memory_gib <= 80.0,
            "{} predicted {:.1} GiB",
            x.id,
            x.predicted_memory_gib
        );
    }
}

/// Issue 3's bounds where the model meets them: Megatron on A100 (SC'21 and the Korthikanti
/// et al. runs added beyond the shared set) within 5% mean and 10% max; torchtitan within 10%
/// mean.
#[test]
fn groups_meeting_the_accuracy_bounds() {
    let r = report();
    for name in ["megatron-sc21-table1", "korthikanti-2022-table5"] {
        let g = group(&r, name);
        assert!(
            g.mean_abs_error <= 0.05,
            "{name}: mean |err| {:.1}%",
            100.0 * g.mean_abs_error
        );
        assert!(
            g.max_abs_error <= 0.10,
            "{name}: max |err| {:.1}%",
            100.0 * g.max_abs_error
        );
        assert_eq!(g.verdicts_correct, g.verdicts, "{name}: memory verdicts");
    }
    let t = group(&r, "torchtitan-a100-64gpu");
    assert!(
        t.mean_abs_error <= 0.10,
        "torchtitan mean |err| {:.1}%",
        100.0 * t.mean_abs_error
    );
    // Throughput ranks within the groups that vary the configuration.
    assert!(group(&r, "korthikanti-2022-table5").spearman.unwrap() >= 0.9);
    assert!(t.spearman.unwrap() >= 0.9);
}

/// Regression guards at today's accuracy for the groups that do not yet meet issue 3's bounds
/// (see the notes): they fail if the model gets worse, not when it gets better.
#[test]
fn groups_not_yet_at_the_bounds_do_not_regress() {
    let r = report();
    let mpt = group(&r, "mosaicml-mpt-a100-80gb");
    assert!(
        mpt.mean_abs_error <= 0.13,
        "MPT mean |err| {:.1}%",
        100.0 * mpt.mean_abs_error
    );
    assert_eq!(mpt.verdicts_correct, mpt.verdicts, "MPT memory verdicts");
    assert!(mpt.spearman.unwrap() >= 0.95);
    // 8.7% (all rows too fast) and ρ 0.69 since DeepSpeed's pipeline transfers are priced as
    // its engine runs them (TP-partitioned tensors gathered by the receiver, receive and send
    // as separate blocking calls). The model had sent the whole tensor from every TP rank,
    // which made the tp = 8 rows slow enough to hide what they are still missing (they remain
    // the +8…+27% rows); it was 5.2% and ρ 0.75 with that error in.
    let bloom = group(&r, "bloom-176b-topology-sweep");
    assert!(
        bloom.mean_abs_error <= 0.09,
        "BLOOM mean |err| {:.1}%",
        100.0 * bloom.mean_abs_error
    );
    assert!(
        bloom.spearman.unwrap() >= 0.65,
        "BLOOM ρ {:?}",
        bloom.spearman
    );
    let main = group(&r, "bloom-176b");
    assert!(
        main.max_abs_error <= 0.06,
        "BLOOM-176B {:.1}%",
        100.0 * main.max_abs_error
    );
    let mc = group(&r, "megatron-core-h100-readme");
    assert!(
        mc.mean_abs_error <= 0.30,
        "Megatron-Core H100 mean |err| {:.1}%",
        100.0 * mc.mean_abs_error
    );
    assert_eq!(
        mc.skipped, 2,
        "the strong-scaling rows publish no layout and are listed as skipped"
    );
    // NeMo's FP8 H100 tables, held out (no constant set from them). The same GPT-3 175B
    // layout (TP4 PP8 VP6, MBS 2, 512 GPUs) measured 842 TFLOP/s on NeMo 24.07 and 932 on
    // 25.02: 10.7% apart, so no prediction is within 5% of both; the model sits between
    // (+3.1% and −7.0%). NeMo 24.07's nine runs: 9.6% mean, all over-predicted, ranks right.
    let newest = group(&r, "nemo-h100-performance-summary");
    assert!(
        newest.max_abs_error <= 0.08,
        "NeMo 25.02 |err| {:.1}%",
        100.0 * newest.max_abs_error
    );
    let nemo = group(&r, "nemo-24.07-h100-performance-summary");
    assert_eq!(nemo.compared, 9);
    assert!(
        nemo.mean_abs_error <= 0.10,
        "NeMo 24.07 mean |err| {:.1}%",
        100.0 * nemo.mean_abs_error
    );
    assert!(
        nemo.spearman.unwrap() >= 0.9,
        "NeMo 24.07 ρ {:?}",
        nemo.spearman
    );
    assert_eq!(
        nemo.verdicts_correct, nemo.verdicts,
        "NeMo 24.07 memory verdicts"
    );
}

/// Every row is either predicted or listed as skipped with a reason — none silently dropped.
#[test]
fn no_row_is_silently_dropped() {
    let r = report();
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    assert_eq!(r.rows.len(), runs.len());
    for x in &r.rows {
        assert!(
            x.skipped.as_deref().is_none_or(|s| !s.is_empty()),
            "{}",
            x.id
        );
        assert!(
            x.skipped.is_some() || x.error.is_some() || x.measured_oom,
            "{} has no comparison",
            x.id
        );
    }
}

/// A user's runs file (`planner validate --runs FILE`) with sizes that are zero or do not add
/// up: every such row is skipped with a reason naming the field, the sound row beside them is
/// still predicted, and nothing panics (before, tp: 0 or tp·pp·cp above the GPU count divided
/// by zero, and a run whose searched knobs never checked was priced unchecked).
#[test]
fn malformed_sizes_in_a_runs_file_are_skipped_rows_not_panics() {
    // (id, layers, heads, count, gpus_per_node, tp, pp, dp, micro_batch, global_batch)
    type Row<'a> = (
        &'a str,
        u64,
        u64,
        u64,
        &'a str,
        u64,
        u64,
        &'a str,
        &'a str,
        u64,
    );
    let rows: [Row; 9] = [
        ("sound", 4, 8, 8, "8", 2, 1, "null", "2", 64),
        ("tp-zero", 4, 8, 8, "8", 0, 1, "null", "2", 64),
        ("gpn-zero", 4, 8, 8, "0", 1, 1, "null", "2", 64),
        ("heads-zero", 4, 0, 8, "8", 1, 1, "null", "2", 64),
        ("count-zero", 4, 8, 0, "8", 1, 1, "null", "2", 64),
        ("mp-above-count", 4, 8, 8, "8", 4, 4, "null", "2", 64),
        ("dp-product", 4, 8, 8, "8", 1, 1, "4", "2", 64),
        ("pp-above-layers", 2, 8, 4, "8", 1, 4, "null", "2", 64),
        ("batch-below-dp", 4, 8, 8, "8", 1, 1, "null", "null", 4),
    ];
    let mut yaml = String::new();
    for (id, layers, heads, count, gpn, tp, pp, dp, mbs, gb) in rows {
        yaml += &format!(
            "- id: {id}
  group: user
  model: {{name: tiny, layers: {layers}, hidden: 512, heads: {heads}, vocab: 32000, seq_len: 1024}}
  hardware: {{gpu: A100-SXM4-80GB, count: {count}, gpus_per_node: {gpn}}}
  parallel: {{tp: {tp}, pp: {pp}, dp: {dp}, recompute: full}}
  batch: {{micro_batch: {mbs}, global_batch: {gb}}}
  precision: bf16
  measured: {{iteration_time_s: 1.0}}
"
        );
    }
    let dir = std::env::temp_dir().join(format!("planner-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.yaml");
    std::fs::write(&path, &yaml).unwrap();

    let o = crate::cli::planner(&[
        "validate",
        "--runs",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let err = crate::cli::stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report: serde_json::Value = serde_json::from_str(&crate::cli::stdout(&o)).unwrap();
    let skipped = |id: &str| -> Option<String> {
        let row = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("row {id}"));
        row["skipped"].as_str().map(str::to_string)
    };
    for (id, needle) in [
        ("tp-zero", "parallel.tp is 0"),
        ("gpn-zero", "hardware.gpus_per_node is 0"),
        ("heads-zero", "model.heads is 0"),
        ("count-zero", "hardware.count is 0"),
        (
            "mp-above-count",
            "parallel.tp × pp × cp = 4 × 4 × 1 = 16 does not divide hardware.count = 8",
        ),
        (
            "dp-product",
            "parallel.dp × tp × pp × cp = 4 × 1 × 1 × 1 = 4 but hardware.count is 8",
        ),
        (
            "pp-above-layers",
            "parallel.pp = 4 exceeds model.layers = 2",
        ),
        (
            "batch-below-dp",
            "no choice of the unpublished mbs gives a plan that checks (first guess: ",
        ),
    ] {
        let why = skipped(id).unwrap_or_else(|| panic!("{id} was predicted"));
        assert!(why.contains(needle), "{id}: `{needle}` not in `{why}`");
    }

    // The sound row is priced exactly as `estimate` prices its plan.
    assert_eq!(skipped("sound"), None);
    let runs = parse_runs("runs.yaml", &yaml).unwrap();
    let c = planner::validate::adapt::case(&runs[0]).unwrap();
    assert_eq!(c.plan.n_gpus(), 8);
    assert_eq!((c.plan.tp, c.plan.dp), (2, 4));
    let e = planner::cost::estimate(&c.model, &c.cluster, &c.plan, None);
    let row = &report["rows"][0];
    // JSON text round trip: equal to the last digits serde_json parses back.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(e.step_time_s > 0.0);
    let step = row["step_time_s"].as_f64().unwrap();
    assert!(close(step, e.step_time_s), "{step} vs {}", e.step_time_s);
    let error = row["error"].as_f64().unwrap();
    // Measured iteration time 1 s against the predicted step.
    assert!(close(error, 1.0 / e.step_time_s - 1.0), "{error}");
}
