//! The ILP search end to end (issue 4): `suggest`'s search against the published SC'21
//! configurations, and the command line's ILP output.

use crate::cli::{planner, stderr, stdout};
use planner::cost::estimate;
use planner::search::{Space, search, search_where};
use planner::spec::runs::{PUBLISHED_RUNS, parse_runs};
use planner::spec::{Plan, Recompute};
use planner::validate::adapt::case;

/// Issue 4: for every SC'21 Table 1 row, the search on that model, GPU count and global batch
/// — with the run's framework, precision, attention kernel, TP overlap and gradient-reduction
/// overlap, and full recomputation among the choices — returns a plan that fits and that the
/// cost model prices at least as fast as the published configuration.
#[test]
fn suggest_matches_or_beats_every_sc21_table1_row() {
    let runs = parse_runs("published-runs.yaml", PUBLISHED_RUNS).unwrap();
    let rows: Vec<_> = runs
        .iter()
        .filter(|r| r.group == "megatron-sc21-table1")
        .collect();
    assert_eq!(rows.len(), 10);
    for run in rows {
        let c = case(run).unwrap();
        let published = estimate(&c.model, &c.cluster, &c.plan, None);
        assert!(published.fits, "{}", run.id);
        let mut space = Space::new(c.plan.global_batch, c.plan.seq_len);
        space.dtype = c.plan.dtype;
        space.attention = c.plan.attention;
        space.tp_overlap = c.plan.tp_overlap;
        space.framework = c.plan.framework;
        space.overlap_grad_reduce = c.plan.overlap_grad_reduce;
        // The whole space, and only what Megatron-LM offered in 2021 (no ZeRO, sequence or
        // context parallelism, full recomputation): the second keeps the comparison tight.
        let sc21 = |p: &Plan| {
            p.zero == 0 && !p.sequence_parallel && p.cp == 1 && p.recompute == Recompute::Full
        };
        for (what, r) in [
            ("space", search(&c.model, &c.cluster, None, &space, 1)),
            (
                "2021 knobs",
                search_where(&c.model, &c.cluster, None, &space, 1, &sc21),
            ),
        ] {
            let best = &r.top[0];
            assert!(best.fits && best.n_gpus == c.cluster.n_gpus(), "{}", run.id);
            assert!(
                best.step_time_s <= published.step_time_s * (1.0 + 1e-9),
                "{} ({what}): search best {} ({:.3} s) slower than published {} ({:.3} s)",
                run.id,
                best.plan.short(),
                best.step_time_s,
                c.plan.short(),
                published.step_time_s
            );
        }
    }
}

/// `suggest` shows per-stage layer and recompute counts and ILP 2's status; `--explain` lays
/// out the best plans operator by operator with ILP 1's status and gap.
#[test]
fn suggest_shows_stage_counts_and_explains_shardings() {
    let o = planner(&[
        "suggest",
        "--model",
        "gpt3-175b",
        "--cluster",
        "a100-80g-x1024",
        "--top",
        "3",
        "--explain",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for needle in [
        "stage_layers",
        "recompute_layers",
        "stage_ilp",
        "ILP 2 (stage partition",
    ] {
        assert!(out.contains(needle), "`{needle}` missing:\n{out}");
    }
    // The best plans have a tp axis: ILP 1 lays out every operator (column/row splits).
    assert!(out.contains("| qkv") && out.contains("column"), "{out}");
    assert!(
        out.contains("ILP 1 (microlp") || out.contains("ILP 1 (highs"),
        "{out}"
    );
    let json = planner(&[
        "suggest",
        "--model",
        "gpt3-175b",
        "--cluster",
        "a100-80g-x1024",
        "--top",
        "2",
        "--explain",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(v["stage_ilp"].as_array().unwrap().len(), 2);
    let ex = &v["explain"][0];
    assert!(ex["ilp"]["status"].is_string(), "{ex}");
    assert!(ex["time_s"].as_f64().unwrap() <= ex["own_layout_time_s"].as_f64().unwrap());
    assert_eq!(ex["ops"].as_array().unwrap().len(), 10, "{ex}");
}

#[test]
fn unknown_benchmark_is_exit_2_naming_the_choices() {
    let o = planner(&["bench", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    // Both registries: the search benchmarks and the simulator's.
    assert!(
        err.contains("gpt-1t-10240") && err.contains("sim-gpt3-175b-pp16-m192"),
        "{err}"
    );
}
