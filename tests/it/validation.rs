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
/// et al. runs added beyond the shared set) and NeMo's published H100 FP8 run within 5% mean
/// and 10% max; torchtitan within 10% mean.
#[test]
fn groups_meeting_the_accuracy_bounds() {
    let r = report();
    for name in [
        "megatron-sc21-table1",
        "korthikanti-2022-table5",
        "nemo-h100-performance-summary",
    ] {
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
    let bloom = group(&r, "bloom-176b-topology-sweep");
    assert!(
        bloom.mean_abs_error <= 0.20,
        "BLOOM mean |err| {:.1}%",
        100.0 * bloom.mean_abs_error
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
